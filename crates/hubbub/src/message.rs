//! Messages to send, and frames encoded once for any number of queues.

use bytes::{Bytes, BytesMut};
use hubbub_proto::{FrameHeader, OpCode, Utf8Bytes};

/// Payloads up to this size are copied next to their frame header (one
/// allocation, one I/O slice); larger ones stay a separate shared `Bytes`
/// and are never copied.
const COPY_THRESHOLD: usize = 4096;

/// A whole message to send: text or binary.
///
/// ```
/// use hubbub::Message;
/// assert!(matches!(Message::from("hi"), Message::Text(_)));
/// assert!(matches!(Message::from(vec![1u8, 2]), Message::Binary(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// UTF-8 text.
    Text(Utf8Bytes),
    /// Bytes.
    Binary(Bytes),
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::Text(text.into())
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::Text(text.into())
    }
}

impl From<Utf8Bytes> for Message {
    fn from(text: Utf8Bytes) -> Self {
        Self::Text(text)
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Self {
        Self::Binary(data)
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Self::Binary(data.into())
    }
}

impl From<&[u8]> for Message {
    fn from(data: &[u8]) -> Self {
        Self::Binary(Bytes::copy_from_slice(data))
    }
}

/// A frame encoded once (server frames are unmasked), shared by reference
/// count with every queue it goes to.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) head: Bytes,
    pub(crate) body: Option<Bytes>,
}

impl Frame {
    pub(crate) fn new(opcode: OpCode, payload: Bytes) -> Self {
        let header = FrameHeader::new(opcode, payload.len() as u64).encode();
        let header = header.as_bytes();
        if payload.len() <= COPY_THRESHOLD {
            let mut frame = BytesMut::with_capacity(header.len() + payload.len());
            frame.extend_from_slice(header);
            frame.extend_from_slice(&payload);
            Self {
                head: frame.freeze(),
                body: None,
            }
        } else {
            Self {
                head: Bytes::copy_from_slice(header),
                body: Some(payload),
            }
        }
    }

    pub(crate) fn message(message: Message) -> Self {
        match message {
            Message::Text(text) => Self::new(OpCode::Text, text.into_bytes()),
            Message::Binary(data) => Self::new(OpCode::Binary, data),
        }
    }

    /// Bytes on the wire.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.body.as_ref().map_or(0, Bytes::len)
    }
}
