//! The client side: building the upgrade request and checking the answer.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf, BufMut, BytesMut};
use rand::RngCore;

use super::fields::{ExtensionOffer, Headers, parse_extensions};
use super::head::{HeadEnd, HeadFinder};
use crate::config::Config;

/// An upgrade request to send, and the check of the server's answer.
///
/// ```
/// use bytes::BytesMut;
/// use hubbub_proto::Config;
/// use hubbub_proto::handshake::ClientRequest;
///
/// let mut request = ClientRequest::new("localhost:9001", "/chat").protocol("chat.v1");
/// let mut out = BytesMut::new();
/// request.write(&mut out);
/// assert!(out.starts_with(b"GET /chat HTTP/1.1\r\n"));
/// # let _ = Config::default();
/// ```
#[derive(Debug, Clone)]
pub struct ClientRequest {
    host: String,
    target: String,
    key: String,
    protocols: Vec<String>,
    extensions: Vec<String>,
    headers: Vec<(String, String)>,
    finder: HeadFinder,
}

impl ClientRequest {
    /// A request for `target` (path and query) on `host` (with the port if
    /// not the default), with a fresh random key.
    pub fn new(host: impl Into<String>, target: impl Into<String>) -> Self {
        let mut key = [0u8; 16];
        rand::rng().fill_bytes(&mut key);
        Self {
            host: host.into(),
            target: target.into(),
            key: BASE64.encode(key),
            protocols: Vec::new(),
            extensions: Vec::new(),
            headers: Vec::new(),
            finder: HeadFinder::default(),
        }
    }

    /// Uses a fixed key instead of a random one (for tests).
    #[must_use]
    pub fn key(mut self, key: [u8; 16]) -> Self {
        self.key = BASE64.encode(key);
        self
    }

    /// Offers a subprotocol; call again for more, most preferred first.
    #[must_use]
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Offers an extension, written as it goes on the wire (for example
    /// `permessage-deflate; client_max_window_bits`).
    #[must_use]
    pub fn extension(mut self, offer: impl Into<String>) -> Self {
        self.extensions.push(offer.into());
        self
    }

    /// Adds a header field (such as `Origin` or `Cookie`).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Appends the request head to `out`.
    pub fn write(&mut self, out: &mut BytesMut) {
        let mut head = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
            self.target, self.host, self.key
        );
        if !self.protocols.is_empty() {
            head += &format!("Sec-WebSocket-Protocol: {}\r\n", self.protocols.join(", "));
        }
        if !self.extensions.is_empty() {
            head += &format!(
                "Sec-WebSocket-Extensions: {}\r\n",
                self.extensions.join(", ")
            );
        }
        for (name, value) in &self.headers {
            head += &format!("{name}: {value}\r\n");
        }
        head += "\r\n";
        out.put_slice(head.as_bytes());
    }

    /// Parses and checks the server's answer at the front of `buf`.
    ///
    /// Returns `Ok(None)` until the whole head has arrived; then consumes
    /// it, leaving any frames that followed in `buf`.
    ///
    /// # Errors
    /// A [`ClientHandshakeError`] when the answer is not a valid 101 for
    /// this request.
    pub fn parse_response(
        &mut self,
        buf: &mut BytesMut,
        config: &Config,
    ) -> Result<Option<ClientResponse>, ClientHandshakeError> {
        let len = match self.finder.find(buf, config.max_handshake_size) {
            HeadEnd::Partial => return Ok(None),
            HeadEnd::TooLarge => return Err(ClientHandshakeError::TooLarge),
            HeadEnd::Complete(len) => len,
        };
        let mut fields = vec![httparse::EMPTY_HEADER; config.max_headers];
        let mut parsed = httparse::Response::new(&mut fields);
        match parsed.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(ClientHandshakeError::Malformed),
            Err(_) => return Err(ClientHandshakeError::Malformed),
        }
        let status = parsed.code.unwrap_or_default();
        if status != 101 {
            return Err(ClientHandshakeError::Status(status));
        }
        let headers = Headers::from_fields(parsed.headers);
        if !headers.has_token("upgrade", "websocket") || !headers.has_token("connection", "upgrade")
        {
            return Err(ClientHandshakeError::MissingUpgrade);
        }
        if headers.get("sec-websocket-accept").map(str::trim) != Some(&super::accept_key(&self.key))
        {
            return Err(ClientHandshakeError::BadAccept);
        }
        let protocol = headers
            .get("sec-websocket-protocol")
            .map(|p| p.trim().to_owned());
        if let Some(p) = &protocol {
            if !self.protocols.contains(p) {
                return Err(ClientHandshakeError::UnexpectedProtocol(p.clone()));
            }
        }
        let mut extensions = Vec::new();
        for value in headers.get_all("sec-websocket-extensions") {
            parse_extensions(value, &mut extensions);
        }
        for ext in &extensions {
            let offered = self.extensions.iter().any(|offer| {
                offer
                    .split([';', ','])
                    .next()
                    .is_some_and(|name| name.trim().eq_ignore_ascii_case(&ext.name))
            });
            if !offered {
                return Err(ClientHandshakeError::UnexpectedExtension(ext.name.clone()));
            }
        }
        buf.advance(len);
        Ok(Some(ClientResponse {
            protocol,
            extensions,
            headers,
        }))
    }
}

/// A server's valid 101 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    /// The extensions the server accepted, with their parameters.
    pub extensions: Vec<ExtensionOffer>,
    /// Every header field of the answer.
    pub headers: Headers,
}

/// Why a client refused the server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientHandshakeError {
    /// The head passed [`Config::max_handshake_size`].
    TooLarge,
    /// Not a valid HTTP/1.x response.
    Malformed,
    /// A status other than 101.
    Status(u16),
    /// `Upgrade: websocket` or `Connection: upgrade` missing.
    MissingUpgrade,
    /// `Sec-WebSocket-Accept` missing or wrong for the key sent.
    BadAccept,
    /// A subprotocol the client did not offer.
    UnexpectedProtocol(String),
    /// An extension the client did not offer.
    UnexpectedExtension(String),
}

impl fmt::Display for ClientHandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => f.write_str("response head too large"),
            Self::Malformed => f.write_str("malformed HTTP response"),
            Self::Status(status) => write!(f, "server answered {status} instead of 101"),
            Self::MissingUpgrade => f.write_str("response lacks Upgrade/Connection headers"),
            Self::BadAccept => f.write_str("wrong Sec-WebSocket-Accept"),
            Self::UnexpectedProtocol(p) => write!(f, "server chose unoffered subprotocol {p}"),
            Self::UnexpectedExtension(e) => write!(f, "server chose unoffered extension {e}"),
        }
    }
}

impl std::error::Error for ClientHandshakeError {}
