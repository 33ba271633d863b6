//! The server side: the 101 answer, HTTP answers, and handshake errors.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

/// A refused opening handshake: the HTTP status and a one-line reason.
///
/// [`HandshakeError::response`] gives the answer to send before closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeError {
    status: u16,
    reason: Cow<'static, str>,
}

impl HandshakeError {
    /// An error with any status and reason, for handshake hooks.
    pub fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_request(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, reason)
    }

    pub(crate) fn head_too_large() -> Self {
        Self::new(431, "request head too large")
    }

    pub(crate) fn too_many_headers() -> Self {
        Self::new(431, "too many header fields")
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(405, "only GET can upgrade to WebSocket")
    }

    pub(crate) fn unsupported_version() -> Self {
        Self::new(
            426,
            "unsupported Sec-WebSocket-Version; this server speaks 13",
        )
    }

    /// The HTTP status: 400, 405, 426 or 431 from the parser.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The one-line reason, also sent as the response body.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The response to send: the status, `Sec-WebSocket-Version: 13` for
    /// 426, `Allow: GET` for 405, and the reason as a plain-text body.
    pub fn response(&self) -> HttpResponse {
        let mut response = HttpResponse::new(self.status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(format!("{}\n", self.reason));
        match self.status {
            426 => response = response.header("Sec-WebSocket-Version", "13"),
            405 => response = response.header("Allow", "GET"),
            _ => {}
        }
        response
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for HandshakeError {}

/// The standard reason phrase of a status code.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        501 => "Not Implemented",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Appends a header line; CR and LF in the name or value are replaced by
/// spaces so that a field can never split into two.
fn put_field(out: &mut BytesMut, name: &str, value: &str) {
    let clean = |s: &str| s.replace(['\r', '\n'], " ");
    let _ = write!(Writer(out), "{}: {}\r\n", clean(name), clean(value));
}

struct Writer<'a>(&'a mut BytesMut);

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// A plain HTTP response: for refusals, and for pages served on the same
/// port. It always carries `Content-Length` and `Connection: close`.
///
/// ```
/// use bytes::BytesMut;
/// use hubbub_proto::handshake::HttpResponse;
/// let mut out = BytesMut::new();
/// HttpResponse::new(403).body("forbidden origin\n").write(&mut out);
/// assert!(out.starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
/// assert!(out.ends_with(b"\r\n\r\nforbidden origin\n"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Extra header fields, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header field.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Appends the response to `out`.
    pub fn write(&self, out: &mut BytesMut) {
        self.write_head(out);
        out.put_slice(&self.body);
    }

    /// Appends the response without its body, as the answer to a `HEAD`
    /// (`Content-Length` still gives the body's length).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use hubbub_proto::handshake::HttpResponse;
    /// let mut out = BytesMut::new();
    /// HttpResponse::new(200).body("page").write_head(&mut out);
    /// assert!(out.ends_with(b"Content-Length: 4\r\nConnection: close\r\n\r\n"));
    /// ```
    pub fn write_head(&self, out: &mut BytesMut) {
        let _ = write!(
            Writer(out),
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("connection")
            {
                continue;
            }
            put_field(out, name, value);
        }
        put_field(out, "Content-Length", &self.body.len().to_string());
        out.put_slice(b"Connection: close\r\n\r\n");
    }
}

/// The `101 Switching Protocols` answer that completes the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptResponse {
    accept: String,
    protocol: Option<String>,
    extensions: Option<String>,
    headers: Vec<(String, String)>,
}

impl AcceptResponse {
    /// The answer for the `Sec-WebSocket-Accept` value `accept` (from
    /// [`super::Request::validate_upgrade`]).
    pub fn new(accept: String) -> Self {
        Self {
            accept,
            protocol: None,
            extensions: None,
            headers: Vec::new(),
        }
    }

    /// Names the chosen subprotocol (one the client offered).
    #[must_use]
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Sets the `Sec-WebSocket-Extensions` answer.
    #[must_use]
    pub fn extensions(mut self, value: impl Into<String>) -> Self {
        self.extensions = Some(value.into());
        self
    }

    /// Adds a header field (such as `Set-Cookie`).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The response's header fields, in order (`Upgrade`, `Connection`,
    /// `Sec-WebSocket-Accept`, then the chosen subprotocol and extensions,
    /// then the added fields): for an HTTP stack that writes the `101`
    /// itself.
    ///
    /// ```
    /// use hubbub_proto::handshake::AcceptResponse;
    /// let response = AcceptResponse::new("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()).protocol("chat");
    /// let fields: Vec<_> = response.fields().collect();
    /// assert_eq!(fields[2], ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    /// assert_eq!(fields[3], ("Sec-WebSocket-Protocol", "chat"));
    /// ```
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", self.accept.as_str()),
        ]
        .into_iter()
        .chain(self.negotiated_fields())
    }

    /// The fields after the three of the HTTP/1.1 upgrade: the agreed
    /// subprotocol and extensions, and any extra headers. They are the
    /// whole answer (with status 200) to a WebSocket opened over HTTP/2
    /// (RFC 8441), which has no `Upgrade`, `Connection` or accept value.
    pub fn negotiated_fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.protocol
            .as_deref()
            .map(|p| ("Sec-WebSocket-Protocol", p))
            .into_iter()
            .chain(
                self.extensions
                    .as_deref()
                    .map(|e| ("Sec-WebSocket-Extensions", e)),
            )
            .chain(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// Appends the response to `out`.
    pub fn write(&self, out: &mut BytesMut) {
        out.put_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        put_field(out, "Sec-WebSocket-Accept", &self.accept);
        if let Some(protocol) = &self.protocol {
            put_field(out, "Sec-WebSocket-Protocol", protocol);
        }
        if let Some(extensions) = &self.extensions {
            put_field(out, "Sec-WebSocket-Extensions", extensions);
        }
        for (name, value) in &self.headers {
            put_field(out, name, value);
        }
        out.put_slice(b"\r\n");
    }
}
