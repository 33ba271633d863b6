//! The server side: parsing an upgrade request.

use bytes::{Buf, BytesMut};

use super::fields::{ExtensionOffer, Headers, parse_cookies, parse_extensions};
use super::head::{HeadEnd, HeadFinder};
use super::response::HandshakeError;
use crate::config::Config;

/// Parses an HTTP/1.x request head as it arrives.
///
/// Keep one per connection until it returns a request; the cost over all
/// calls is linear in the head's length however it is split.
#[derive(Debug, Clone)]
pub struct RequestParser {
    finder: HeadFinder,
    max_size: usize,
    max_headers: usize,
}

impl RequestParser {
    /// A parser with the limits of `config`
    /// ([`Config::max_handshake_size`], [`Config::max_headers`]).
    pub fn new(config: &Config) -> Self {
        Self {
            finder: HeadFinder::default(),
            max_size: config.max_handshake_size,
            max_headers: config.max_headers,
        }
    }

    /// Parses the request head at the front of `buf`.
    ///
    /// Returns `Ok(None)`, consuming and allocating nothing, until the blank
    /// line has arrived. Then consumes the head and returns it; bytes after
    /// the head (a first frame sent in the same packet) stay in `buf`.
    ///
    /// Any well-formed HTTP/1.x request is returned, upgrade or not, so that
    /// a server can answer a plain `GET` too; call
    /// [`Request::validate_upgrade`] to check the WebSocket part.
    ///
    /// # Errors
    /// 431 when the head is longer than the limit or has too many fields, 400
    /// when it is not valid HTTP/1.x.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, HandshakeError> {
        let len = match self.finder.find(buf, self.max_size) {
            HeadEnd::Partial => return Ok(None),
            HeadEnd::TooLarge => return Err(HandshakeError::head_too_large()),
            HeadEnd::Complete(len) => len,
        };
        let mut fields = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut parsed = httparse::Request::new(&mut fields);
        match parsed.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(HandshakeError::bad_request("incomplete request head"));
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::too_many_headers()),
            Err(e) => {
                return Err(HandshakeError::bad_request(format!(
                    "malformed request: {e}"
                )));
            }
        }
        let request = Request::from_parsed(&parsed)?;
        buf.advance(len);
        Ok(Some(request))
    }
}

/// A parsed request head: what the client asked for, with every field kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Where the method ends in the request line (the method and the
    /// target, back to back, kept in `headers`' buffer: one allocation for
    /// the whole head).
    method_end: u32,
    /// The path's range in `line`.
    path: (u32, u32),
    /// The query's range in `line`, without the `?`.
    query: Option<(u32, u32)>,
    minor_version: u8,
    headers: Headers,
}

impl Request {
    fn from_parsed(parsed: &httparse::Request<'_, '_>) -> Result<Self, HandshakeError> {
        let (method, target) = (
            parsed.method.unwrap_or_default(),
            parsed.path.unwrap_or_default(),
        );
        let fields = parsed.headers.iter().map(|f| (f.name, f.value));
        Self::with_line(
            method,
            target,
            parsed.version.unwrap_or_default(),
            Headers::with_line(&[method, target], fields),
        )
    }

    /// A request another HTTP stack parsed: its method, target (origin
    /// form `/path?query`, or absolute form), HTTP/1.x minor version and
    /// header fields.
    ///
    /// ```
    /// use hubbub_proto::handshake::{Headers, Request};
    /// let mut headers = Headers::default();
    /// headers.append("Host", b"example.com");
    /// let request = Request::from_parts("GET", "/chat?room=a", 1, headers).unwrap();
    /// assert_eq!((request.path(), request.query()), ("/chat", Some("room=a")));
    /// assert_eq!(request.host(), Some("example.com"));
    /// ```
    ///
    /// # Errors
    /// 400 for a target that is neither form, or one over 4 GiB.
    pub fn from_parts(
        method: &str,
        target: &str,
        minor_version: u8,
        headers: Headers,
    ) -> Result<Self, HandshakeError> {
        let headers = Headers::with_line(&[method, target], headers.iter());
        Self::with_line(method, target, minor_version, headers)
    }

    /// The request of `headers`, which keeps `method` and `target` as its
    /// line.
    fn with_line(
        method: &str,
        target: &str,
        minor_version: u8,
        headers: Headers,
    ) -> Result<Self, HandshakeError> {
        // The head is at most the parser's size limit: offsets fit in u32.
        let too_long = || HandshakeError::bad_request("request line too long");
        let method_end = u32::try_from(method.len()).map_err(|_| too_long())?;
        let at = |offset: usize| u32::try_from(method.len() + offset).map_err(|_| too_long());
        // Where the path starts in the target, and where it ends.
        let start = if target.starts_with('/') {
            0
        } else if let Some((scheme, rest)) = target.split_once("://") {
            // Absolute form: drop scheme and authority; "/" when no path.
            match rest.find('/') {
                Some(i) => scheme.len() + 3 + i,
                None => target.len(),
            }
        } else {
            return Err(HandshakeError::bad_request("invalid request target"));
        };
        let (path, query) = match target[start..].find('?') {
            Some(q) => (
                (at(start)?, at(start + q)?),
                Some((at(start + q + 1)?, at(target.len())?)),
            ),
            None => ((at(start)?, at(target.len())?), None),
        };
        Ok(Self {
            method_end,
            path,
            query,
            minor_version,
            headers,
        })
    }

    /// The method, such as `GET`.
    pub fn method(&self) -> &str {
        &self.headers.line()[..self.method_end as usize]
    }

    /// The request target as sent.
    pub fn target(&self) -> &str {
        &self.headers.line()[self.method_end as usize..]
    }

    /// The path part of the target, such as `/chat`.
    pub fn path(&self) -> &str {
        match &self.headers.line()[self.path.0 as usize..self.path.1 as usize] {
            // An absolute-form target without a path.
            "" => "/",
            path => path,
        }
    }

    /// The query, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.query
            .map(|(start, end)| &self.headers.line()[start as usize..end as usize])
    }

    /// The HTTP minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub fn http_minor_version(&self) -> u8 {
        self.minor_version
    }

    /// Every header field.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first value of header `name` (case-insensitive), if UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The `Host` field.
    pub fn host(&self) -> Option<&str> {
        self.headers.get("host")
    }

    /// The `Origin` field.
    pub fn origin(&self) -> Option<&str> {
        self.headers.get("origin")
    }

    /// The cookies of every `Cookie` field, as name and value, in order.
    pub fn cookies(&self) -> Vec<(String, String)> {
        parse_cookies(self.headers.get_all("cookie"))
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> Vec<String> {
        self.headers
            .list("sec-websocket-protocol")
            .map(str::to_owned)
            .collect()
    }

    /// The extensions the client offered, in order; malformed offers are
    /// left out.
    pub fn extensions(&self) -> Vec<ExtensionOffer> {
        let mut offers = Vec::new();
        for value in self.headers.get_all("sec-websocket-extensions") {
            parse_extensions(value, &mut offers);
        }
        offers
    }

    /// Whether the request asks for a WebSocket upgrade at all
    /// (`Upgrade: websocket`), as opposed to a plain HTTP request.
    pub fn is_upgrade(&self) -> bool {
        self.headers.has_token("upgrade", "websocket")
    }

    /// Checks the request against RFC 6455 §4.2.1 and returns the
    /// `Sec-WebSocket-Accept` value to answer with.
    ///
    /// # Errors
    /// 405 for a method other than `GET`; 400 (with a one-line reason) for
    /// HTTP/1.0, a missing `Host`, a missing `Upgrade: websocket` or
    /// `Connection: upgrade` token, a key that is not 16 base64-encoded
    /// bytes, or a missing version; 426 (offering version 13) for another
    /// version.
    pub fn validate_upgrade(&self) -> Result<String, HandshakeError> {
        use base64::Engine as _;
        if self.method() != "GET" {
            return Err(HandshakeError::method_not_allowed());
        }
        if self.minor_version < 1 {
            return Err(HandshakeError::bad_request("HTTP/1.1 or later is required"));
        }
        if self.host().is_none_or(|h| h.trim().is_empty()) {
            return Err(HandshakeError::bad_request("missing Host header"));
        }
        if !self.is_upgrade() {
            return Err(HandshakeError::bad_request("missing Upgrade: websocket"));
        }
        if !self.headers.has_token("connection", "upgrade") {
            return Err(HandshakeError::bad_request("missing Connection: upgrade"));
        }
        if self.headers.count("sec-websocket-key") != 1 {
            return Err(HandshakeError::bad_request(
                "expected exactly one Sec-WebSocket-Key header",
            ));
        }
        let key = self.headers.get("sec-websocket-key").unwrap_or("").trim();
        match base64::engine::general_purpose::STANDARD.decode(key) {
            Ok(decoded) if decoded.len() == 16 => {}
            _ => {
                return Err(HandshakeError::bad_request(
                    "Sec-WebSocket-Key is not 16 bytes of base64",
                ));
            }
        }
        if !self.speaks_version_13()? {
            return Err(HandshakeError::unsupported_version());
        }
        Ok(super::accept_key(key))
    }

    /// Checks a WebSocket opened over HTTP/2 (RFC 8441): an extended
    /// `CONNECT` whose `:protocol` pseudo-header (which the HTTP/2 layer
    /// hands over apart from the fields) is `websocket`, with an
    /// `:authority` (seen here as the `Host`) and `Sec-WebSocket-Version:
    /// 13`. There is no key and no accept value on HTTP/2; the answer is a
    /// `200` with the negotiated fields
    /// ([`super::AcceptResponse::negotiated_fields`]).
    ///
    /// # Errors
    /// 405 for another method, 501 for a `:protocol` that is not
    /// `websocket`, 400 for a missing `:protocol` or `:authority`, or a
    /// missing or other `Sec-WebSocket-Version`.
    pub fn validate_extended_connect(&self, protocol: Option<&str>) -> Result<(), HandshakeError> {
        if self.method() != "CONNECT" {
            return Err(HandshakeError::new(
                405,
                "only an extended CONNECT opens a WebSocket over HTTP/2",
            ));
        }
        match protocol {
            None => return Err(HandshakeError::bad_request("missing :protocol")),
            Some(p) if !p.eq_ignore_ascii_case("websocket") => {
                return Err(HandshakeError::new(
                    501,
                    format!("unsupported :protocol {p:?}; this server speaks websocket"),
                ));
            }
            Some(_) => {}
        }
        if self.host().is_none_or(|h| h.trim().is_empty()) {
            return Err(HandshakeError::bad_request("missing :authority"));
        }
        if !self.speaks_version_13()? {
            // No Upgrade to require on HTTP/2: 400, not 426.
            return Err(HandshakeError::bad_request(
                "unsupported Sec-WebSocket-Version; this server speaks 13",
            ));
        }
        Ok(())
    }

    /// Whether `Sec-WebSocket-Version` lists 13; an error when it is
    /// missing.
    fn speaks_version_13(&self) -> Result<bool, HandshakeError> {
        if self.headers.count("sec-websocket-version") == 0 {
            return Err(HandshakeError::bad_request("missing Sec-WebSocket-Version"));
        }
        Ok(self
            .headers
            .list("sec-websocket-version")
            .any(|v| v == "13"))
    }
}
