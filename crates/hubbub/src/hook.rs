//! Deciding on an upgrade before the `101`: the handshake hook and the
//! Origin allow-list.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use hubbub_proto::handshake::{HttpResponse, Request};

/// What a handshake hook sees: the request, who sent it, and whether it
/// came over TLS.
#[derive(Debug, Clone)]
pub struct HandshakeRequest {
    /// The parsed request: path, query, headers, cookies…
    pub request: Request,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (`wss://`).
    pub secure: bool,
}

/// A hook's answer: upgrade (with extras) or refuse with an HTTP response.
#[derive(Debug)]
pub enum Decision {
    /// Upgrade the connection.
    Accept(Accept),
    /// Answer with this response and close.
    Reject(HttpResponse),
}

impl Decision {
    /// Accepts with nothing added.
    pub fn accept() -> Self {
        Self::Accept(Accept::default())
    }

    /// Refuses with `status` and a plain-text `body`.
    pub fn reject(status: u16, body: impl Into<String>) -> Self {
        Self::Reject(text_response(status, body))
    }
}

/// A plain-text response with `status` and a one-line `body` (a newline is
/// added when missing): every refusal the server makes.
pub(crate) fn text_response(status: u16, body: impl Into<String>) -> HttpResponse {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    HttpResponse::new(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(body)
}

/// An accepted upgrade and what to add to it.
#[derive(Default)]
pub struct Accept {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) protocol: Option<String>,
    pub(crate) data: Vec<Box<dyn Any + Send + Sync>>,
}

impl Accept {
    /// Nothing added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header to the `101` response (such as `Set-Cookie`).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Chooses the subprotocol (it must be one the client offered;
    /// otherwise the server's own choice stands and an error is logged).
    #[must_use]
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Attaches typed user data to the connection (see
    /// [`crate::Connection::data`]), such as the authenticated user.
    #[must_use]
    pub fn data<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.data.push(Box::new(value));
        self
    }
}

impl std::fmt::Debug for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accept")
            .field("headers", &self.headers)
            .field("protocol", &self.protocol)
            .field("data", &format_args!("{} value(s)", self.data.len()))
            .finish()
    }
}

/// A boxed hook future.
pub(crate) type HookFuture = Pin<Box<dyn Future<Output = Decision> + Send>>;
/// The stored hook.
pub(crate) type Hook = Arc<dyn Fn(HandshakeRequest) -> HookFuture + Send + Sync>;

/// Which `Origin` headers may open a WebSocket: protection against
/// cross-site WebSocket hijacking, where a page on another site uses the
/// visitor's cookies to connect.
///
/// The default ([`OriginPolicy::new`]) allows pages of the same origin as
/// the request's `Host` and clients that send no `Origin` (browsers always
/// send one); add other sites with [`OriginPolicy::allow`], or allow every
/// origin with [`OriginPolicy::any`]. Patterns are exact origins
/// (`https://example.com`, `http://localhost:8181`) or a wildcard for
/// subdomains (`https://*.example.com`, or `*.example.com` for any scheme).
/// Matching ignores ASCII case.
///
/// ```
/// use hubbub::OriginPolicy;
/// let policy = OriginPolicy::new().allow("https://*.example.com").allow("http://localhost:8181");
/// assert!(policy.allows(Some("https://chat.example.com"), None));
/// assert!(!policy.allows(Some("https://example.com.evil.net"), None));
/// assert!(policy.allows(Some("http://localhost:8181"), None));
/// assert!(policy.allows(Some("http://app.test:80"), Some("app.test:80"))); // same origin
/// assert!(!policy.allows(Some("https://evil.example"), Some("app.test:80")));
/// assert!(policy.allows(None, None)); // no Origin: not a browser
/// assert!(!policy.allow_missing(false).allows(None, None));
/// assert!(OriginPolicy::any().allows(Some("https://evil.example"), Some("app.test")));
/// ```
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    patterns: Vec<String>,
    allow_missing: bool,
    same_origin: bool,
    any: bool,
}

impl Default for OriginPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl OriginPolicy {
    /// Allows pages of the same origin as the request's `Host` and requests
    /// without an `Origin` header; add patterns with [`OriginPolicy::allow`].
    pub fn new() -> Self {
        Self {
            patterns: Vec::new(),
            allow_missing: true,
            same_origin: true,
            any: false,
        }
    }

    /// Allows every origin: for servers whose clients authenticate with
    /// something a cross-site page cannot send (a token in the first
    /// message, not a cookie).
    pub fn any() -> Self {
        Self {
            any: true,
            ..Self::new()
        }
    }

    /// Allows an origin or a `*.` subdomain pattern.
    #[must_use]
    pub fn allow(mut self, pattern: impl Into<String>) -> Self {
        self.patterns
            .push(pattern.into().trim_end_matches('/').to_ascii_lowercase());
        self
    }

    /// Whether a request without `Origin` is allowed. Default: yes (browsers
    /// always send one; other clients usually do not).
    #[must_use]
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }

    /// Whether pages served by this server itself are allowed: an `Origin`
    /// whose host and port equal the request's `Host`. Default: yes.
    #[must_use]
    pub fn allow_same_origin(mut self, allow: bool) -> Self {
        self.same_origin = allow;
        self
    }

    /// Whether a request with `origin` (and `host`, for the same-origin
    /// rule) to a plain (`ws://`) server may upgrade: as
    /// [`OriginPolicy::allows_on`] with `secure` false.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        self.allows_on(origin, host, false)
    }

    /// Whether a request with `origin` (and `host`) may upgrade on a server
    /// that is `secure` (TLS) or not: the same-origin rule compares the
    /// scheme (`https` for TLS, `http` otherwise), the host and the port.
    pub fn allows_on(&self, origin: Option<&str>, host: Option<&str>, secure: bool) -> bool {
        if self.any {
            return true;
        }
        let Some(origin) = origin.map(|o| o.trim().to_ascii_lowercase()) else {
            return self.allow_missing;
        };
        let (scheme, authority) = match origin.split_once("://") {
            Some(parts) => parts,
            None => return false, // "null" or garbage
        };
        let (own_scheme, default_port) = if secure { ("https", 443) } else { ("http", 80) };
        if self.same_origin
            && scheme == own_scheme
            && host.is_some_and(|h| same_authority(authority, h, default_port))
        {
            return true;
        }
        self.patterns.iter().any(|pattern| {
            let (p_scheme, p_host) = match pattern.split_once("://") {
                Some((s, h)) => (Some(s), h),
                None => (None, pattern.as_str()),
            };
            if p_scheme.is_some_and(|s| s != scheme) {
                return false;
            }
            match p_host.strip_prefix("*.") {
                Some(suffix) => authority
                    .strip_suffix(suffix)
                    .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                None => authority == p_host,
            }
        })
    }
}

/// Which `Host` names a server answers: protection against DNS rebinding,
/// where a page on `attacker.test` points that name at 127.0.0.1 and talks
/// to a server on the visitor's own machine as if same-origin.
///
/// ```
/// use hubbub::HostPolicy;
/// let local = "127.0.0.1:8181".parse().unwrap();
/// let policy = HostPolicy::default();
/// assert!(policy.allows(Some("localhost:8181"), local));
/// assert!(policy.allows(Some("[::1]:8181"), local));
/// assert!(!policy.allows(Some("attacker.test:8181"), local));
/// let listed = HostPolicy::Only(vec!["chat.example".into()]);
/// assert!(listed.allows(Some("chat.example:8181"), local));
/// assert!(listed.allows(Some("127.0.0.1:8181"), local));
/// // Bound to another address, the default answers any name.
/// assert!(policy.allows(Some("chat.example"), "192.0.2.7:80".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostPolicy {
    /// On a loopback address, only loopback names (`localhost`,
    /// `127.0.0.1`, `[::1]`, with the server's port or none); elsewhere any
    /// name. The default.
    #[default]
    LoopbackWhenLocal,
    /// Loopback names (on a loopback address) and these names (with the
    /// server's port or none; ASCII case ignored).
    Only(Vec<String>),
    /// Any name.
    Any,
}

impl HostPolicy {
    /// Whether a request with this `Host` header, to a server listening on
    /// `local`, is answered. A request without one has nothing to check.
    pub fn allows(&self, host: Option<&str>, local: SocketAddr) -> bool {
        self.allows_at(host, Some(local))
    }

    /// As [`HostPolicy::allows`], for a server whose own address may be
    /// unknown (a stream handed over by another HTTP stack): then the port
    /// is not checked and the server is taken as not on loopback.
    pub(crate) fn allows_at(&self, host: Option<&str>, local: Option<SocketAddr>) -> bool {
        let Some(host) = host.map(str::trim) else {
            return true;
        };
        let (name, port) = split_host(host);
        let on_loopback = local.is_some_and(|l| l.ip().is_loopback());
        if let (Some(port), Some(local)) = (port, local)
            && port != local.port()
            && !matches!(self, Self::Any)
        {
            return false;
        }
        let loopback_name = name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match self {
            Self::Any => true,
            Self::LoopbackWhenLocal => !on_loopback || loopback_name,
            Self::Only(names) => {
                (on_loopback && loopback_name)
                    || names
                        .iter()
                        .any(|n| split_host(n).0.eq_ignore_ascii_case(name))
            }
        }
    }
}

/// A `Host` value's name (brackets of an IPv6 address removed) and port.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(v6) = host.strip_prefix('[') {
        return match v6.split_once(']') {
            Some((name, rest)) => (name, rest.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (host, None),
    }
}

/// Whether an `Origin`'s authority names the same host and port as a
/// `Host` header, with the scheme's default port filled in on either side.
fn same_authority(origin_authority: &str, host: &str, default_port: u16) -> bool {
    let (a_name, a_port) = split_host(origin_authority);
    let (b_name, b_port) = split_host(host.trim());
    a_name.eq_ignore_ascii_case(b_name)
        && a_port.unwrap_or(default_port) == b_port.unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::{HostPolicy, OriginPolicy};

    #[test]
    fn loopback_servers_answer_loopback_names_only() {
        let local = "127.0.0.1:8181".parse().unwrap();
        let policy = HostPolicy::default();
        for ok in [
            "localhost:8181",
            "LOCALHOST",
            "127.0.0.1:8181",
            "[::1]:8181",
            "127.0.0.2",
        ] {
            assert!(policy.allows(Some(ok), local), "{ok}");
        }
        for bad in [
            "attacker.test:8181",
            "attacker.test",
            "localhost:9999",
            "localhost.attacker.test",
        ] {
            assert!(!policy.allows(Some(bad), local), "{bad}");
        }
        assert!(HostPolicy::Any.allows(Some("attacker.test:1"), local));
    }

    #[test]
    fn origin_patterns_match_exactly_or_by_subdomain() {
        let policy = OriginPolicy::new()
            .allow_same_origin(false)
            .allow("https://*.example.com")
            .allow("http://localhost:8181/")
            .allow("*.any-scheme.org");
        assert!(policy.allows(Some("https://a.example.com"), None));
        assert!(policy.allows(Some("HTTPS://A.B.Example.COM"), None));
        assert!(!policy.allows(Some("https://example.com"), None));
        assert!(!policy.allows(Some("http://a.example.com"), None));
        assert!(!policy.allows(Some("https://evilexample.com"), None));
        assert!(!policy.allows(Some("https://a.example.com.evil.net"), None));
        assert!(policy.allows(Some("http://localhost:8181"), None));
        assert!(!policy.allows(Some("http://localhost:8182"), None));
        assert!(policy.allows(Some("ws://x.any-scheme.org"), None));
        assert!(!policy.allows(Some("null"), None));
    }

    #[test]
    fn same_origin_compares_with_host() {
        let policy = OriginPolicy::default();
        assert!(policy.allows(Some("http://127.0.0.1:8181"), Some("127.0.0.1:8181")));
        assert!(policy.allows(Some("http://example.com"), Some("example.com:80")));
        assert!(
            !policy.allows(Some("https://127.0.0.1:8181"), Some("127.0.0.1:8181")),
            "scheme"
        );
        assert!(policy.allows_on(Some("https://127.0.0.1:8181"), Some("127.0.0.1:8181"), true));
        assert!(
            !policy.allows(Some("http://127.0.0.1:8182"), Some("127.0.0.1:8181")),
            "port"
        );
        assert!(
            !OriginPolicy::new()
                .allow_same_origin(false)
                .allows(Some("http://127.0.0.1:8181"), Some("127.0.0.1:8181"))
        );
        assert!(!policy.allows(Some("http://evil.net"), Some("127.0.0.1:8181")));
        assert!(policy.allows(None, Some("x")));
        assert!(!policy.clone().allow_missing(false).allows(None, Some("x")));
    }
}
