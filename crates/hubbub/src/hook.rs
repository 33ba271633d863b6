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
        let mut body = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Self::Reject(
            HttpResponse::new(status)
                .header("Content-Type", "text/plain; charset=utf-8")
                .body(body),
        )
    }
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
    /// rule) may upgrade.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
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
        if self.same_origin && host.is_some_and(|h| h.trim().eq_ignore_ascii_case(authority)) {
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

#[cfg(test)]
mod tests {
    use super::OriginPolicy;

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
