//! Messages to send, and frames encoded once for any number of queues.

use std::cell::RefCell;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use hubbub_proto::deflate::Compressor;
use hubbub_proto::{DeflateParams, FrameHeader, OpCode, Utf8Bytes};

/// Payloads up to this size are copied next to their frame header (one
/// allocation, one I/O slice); larger ones stay a separate shared `Bytes`
/// and are never copied.
pub(crate) const COPY_THRESHOLD: usize = 4096;

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

/// Appends an unmasked frame, header then `payload`, to `out`, growing it
/// exactly when it is empty (then by doubling); returns the frame's length.
pub(crate) fn encode_small(out: &mut Vec<u8>, opcode: OpCode, rsv1: bool, payload: &[u8]) -> usize {
    let header = FrameHeader {
        rsv1,
        ..FrameHeader::new(opcode, payload.len() as u64)
    }
    .encode();
    let header = header.as_bytes();
    let len = header.len() + payload.len();
    out.reserve(len);
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    len
}

impl Frame {
    pub(crate) fn new(opcode: OpCode, payload: Bytes) -> Self {
        Self::with_rsv1(opcode, payload, false)
    }

    /// A frame whose RSV1 bit says whether `payload` is compressed.
    pub(crate) fn with_rsv1(opcode: OpCode, payload: Bytes, rsv1: bool) -> Self {
        if payload.len() <= COPY_THRESHOLD {
            let mut frame = Vec::new();
            encode_small(&mut frame, opcode, rsv1, &payload);
            // Sized exactly: no second allocation to become `Bytes`.
            Self {
                head: frame.into(),
                body: None,
            }
        } else {
            let header = FrameHeader {
                rsv1,
                ..FrameHeader::new(opcode, payload.len() as u64)
            }
            .encode();
            Self {
                head: Bytes::copy_from_slice(header.as_bytes()),
                body: Some(payload),
            }
        }
    }

    /// Bytes on the wire.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.body.as_ref().map_or(0, Bytes::len)
    }
}

thread_local! {
    /// Compressors for messages compressed on their own (no context
    /// takeover), one per window and level, reused by every connection this
    /// thread sends for.
    static COMPRESSORS: RefCell<Vec<((u8, u32), Compressor)>> = const { RefCell::new(Vec::new()) };
}

/// Compresses one message on its own with `params`' window and level.
pub(crate) fn compress_alone(params: &DeflateParams, payload: &[u8]) -> Bytes {
    let key = (params.local_max_window_bits, params.level);
    let alone = DeflateParams {
        local_no_context_takeover: true,
        ..*params
    };
    let mut out = Vec::with_capacity(payload.len() / 2 + 16);
    COMPRESSORS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut compressors) => {
            let index = match compressors.iter().position(|(k, _)| *k == key) {
                Some(index) => index,
                None => {
                    compressors.push((key, Compressor::new(&alone)));
                    compressors.len() - 1
                }
            };
            compressors[index].1.compress(payload, &mut out);
        }
        Err(_) => Compressor::new(&alone).compress(payload, &mut out),
    });
    Bytes::from(out)
}

/// A message on its way to one or many connections: encoded once per form
/// that some receiver needs (plain, or compressed on its own for each
/// window and level in use), and the same bytes shared by every queue.
pub(crate) struct Outgoing {
    pub(crate) opcode: OpCode,
    pub(crate) payload: Bytes,
    plain: OnceLock<Frame>,
    /// A std `Mutex`, never held across an `.await`.
    compressed: Mutex<Vec<((u8, u32), Frame)>>,
}

impl Outgoing {
    pub(crate) fn new(message: Message) -> Self {
        let (opcode, payload) = match message {
            Message::Text(text) => (OpCode::Text, text.into_bytes()),
            Message::Binary(data) => (OpCode::Binary, data),
        };
        Self::from_parts(opcode, payload)
    }

    pub(crate) fn from_parts(opcode: OpCode, payload: Bytes) -> Self {
        Self {
            opcode,
            payload,
            plain: OnceLock::new(),
            compressed: Mutex::new(Vec::new()),
        }
    }

    /// The uncompressed frame.
    pub(crate) fn plain(&self) -> &Frame {
        self.plain
            .get_or_init(|| Frame::new(self.opcode, self.payload.clone()))
    }

    /// The frame compressed on its own for `params`, made once.
    pub(crate) fn compressed(&self, params: &DeflateParams) -> Frame {
        let key = (params.local_max_window_bits, params.level);
        let mut cache = self.compressed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, frame)) = cache.iter().find(|(k, _)| *k == key) {
            return frame.clone();
        }
        let frame = Frame::with_rsv1(self.opcode, compress_alone(params, &self.payload), true);
        cache.push((key, frame.clone()));
        frame
    }
}
