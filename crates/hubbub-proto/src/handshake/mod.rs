//! The opening handshake (RFC 6455 §4): the server's request parser and
//! responses, and the client's request and response check.
//!
//! ```
//! use bytes::BytesMut;
//! use hubbub_proto::Config;
//! use hubbub_proto::handshake::{AcceptResponse, RequestParser};
//!
//! let mut input = BytesMut::from(
//!     "GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
//!      Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!      Sec-WebSocket-Version: 13\r\n\r\n",
//! );
//! let mut parser = RequestParser::new(&Config::default());
//! let request = parser.parse(&mut input).unwrap().expect("whole head");
//! assert_eq!((request.path(), request.query()), ("/chat", Some("room=1")));
//! let accept = request.validate_upgrade().unwrap();
//! assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
//!
//! let mut out = BytesMut::new();
//! AcceptResponse::new(accept).write(&mut out);
//! assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//! ```

mod client;
mod fields;
mod head;
mod request;
mod response;

pub use client::{ClientHandshakeError, ClientRequest, ClientResponse};
pub use fields::{ExtensionOffer, Headers};
pub use request::{Request, RequestParser};
pub use response::{AcceptResponse, HandshakeError, HttpResponse};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The GUID appended to the key (RFC 6455 §1.3).
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
///
/// ```
/// assert_eq!(
///     hubbub_proto::handshake::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/// );
/// ```
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.digest().bytes())
}
