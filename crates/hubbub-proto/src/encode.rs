//! Outbound frames for the server role (unmasked): encoded once and shared.
//!
//! A server sends the same message to many connections (a broadcast, a
//! topic publish). [`EncodedFrame`] is that message as frame bytes, header
//! and payload, behind reference counts: every queue it goes to shares the
//! same bytes. [`Deflater`] makes the compressed form of a message for
//! receivers that negotiated permessage-deflate without context takeover,
//! once per window size and level. Frames of a connection that keeps its
//! compression context are made by [`crate::Connection::encode_message`],
//! which owns that context.
//!
//! ```
//! use bytes::Bytes;
//! use hubbub_proto::encode::EncodedFrame;
//! use hubbub_proto::MessageKind;
//!
//! let frame = EncodedFrame::message(MessageKind::Text, Bytes::from_static(b"hi"));
//! assert_eq!(&frame.head()[..], &[0x81, 0x02, b'h', b'i']); // small: one buffer
//! assert!(frame.body().is_none());
//! assert_eq!(frame.len(), 4);
//! ```

use bytes::Bytes;

use crate::connection::MessageKind;
use crate::deflate::{Compressor, DeflateParams};
use crate::frame::{FrameHeader, OpCode};

/// Payloads up to this size are copied next to their frame header (one
/// buffer, one I/O slice); larger ones stay a separate shared [`Bytes`] and
/// are never copied.
pub const COPY_THRESHOLD: usize = 4096;

/// Appends an unmasked frame (header, then `payload`) to `out`; returns its
/// length on the wire. `rsv1` marks a compressed data frame. `out` grows
/// exactly when it is empty, by doubling after that.
///
/// ```
/// use hubbub_proto::OpCode;
/// let mut out = Vec::new();
/// let n = hubbub_proto::encode::append_frame(&mut out, OpCode::Pong, false, b"ok");
/// assert_eq!((n, &out[..]), (4, &[0x8a, 0x02, b'o', b'k'][..]));
/// ```
pub fn append_frame(out: &mut Vec<u8>, opcode: OpCode, rsv1: bool, payload: &[u8]) -> usize {
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

/// One whole frame: a small one in one buffer, a large one as its header
/// and the payload it shares (never copied). Cloning shares both. Frames
/// made here are unmasked (the server's); a client's come masked from
/// [`crate::Connection::encode_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    head: Bytes,
    body: Option<Bytes>,
}

impl EncodedFrame {
    /// A frame with `opcode` and `payload`; `rsv1` marks a compressed data
    /// frame. Payloads up to [`COPY_THRESHOLD`] are copied after the
    /// header; larger ones are shared.
    pub fn new(opcode: OpCode, payload: Bytes, rsv1: bool) -> Self {
        if payload.len() <= COPY_THRESHOLD {
            let mut frame = Vec::new();
            append_frame(&mut frame, opcode, rsv1, &payload);
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

    /// A whole frame already encoded in one buffer (a masked one, say).
    pub(crate) fn whole(frame: Bytes) -> Self {
        Self {
            head: frame,
            body: None,
        }
    }

    /// A frame as its header and a payload buffer (a large masked one).
    pub(crate) fn parts(head: Bytes, body: Bytes) -> Self {
        Self {
            head,
            body: Some(body),
        }
    }

    /// An uncompressed data message of `kind`.
    pub fn message(kind: MessageKind, payload: Bytes) -> Self {
        Self::new(kind.opcode(), payload, false)
    }

    /// The header, and for a small frame the payload after it.
    pub fn head(&self) -> &Bytes {
        &self.head
    }

    /// The shared payload of a large frame (`None` when it is in `head`).
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// The frame's buffers, in order: the head, then the body if any.
    pub fn into_parts(self) -> (Bytes, Option<Bytes>) {
        (self.head, self.body)
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.as_ref().map_or(0, Bytes::len)
    }

    /// Whether the frame has no bytes (never true for a real frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Compresses whole messages on their own (permessage-deflate without
/// context takeover on the sending side), keeping one compressor per window
/// size and level so that many messages reuse them.
///
/// A stream made with a window of N bits is valid for any receiver that
/// accepts N or more, and every frame made here is independent of the
/// others, so one `Deflater` can serve every connection of a thread.
///
/// ```
/// use bytes::Bytes;
/// use hubbub_proto::encode::Deflater;
/// use hubbub_proto::{DeflateParams, MessageKind};
///
/// let params = DeflateParams {
///     local_no_context_takeover: true,
///     remote_no_context_takeover: true,
///     local_max_window_bits: 15,
///     threshold: 0,
///     level: 1,
/// };
/// let text = Bytes::from("hello ".repeat(100));
/// let frame = Deflater::default().frame(MessageKind::Text, &text, &params);
/// assert_eq!(frame.head()[0], 0xc1); // FIN, RSV1, text
/// assert!(frame.len() < 100);
/// ```
#[derive(Debug, Default)]
pub struct Deflater {
    compressors: Vec<((u8, u32), Compressor)>,
}

impl Deflater {
    /// The message compressed on its own with `params`' window and level,
    /// as one frame with RSV1 set.
    pub fn frame(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        params: &DeflateParams,
    ) -> EncodedFrame {
        let key = (params.local_max_window_bits, params.level);
        let index = match self.compressors.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                let alone = DeflateParams {
                    local_no_context_takeover: true,
                    ..*params
                };
                self.compressors.push((key, Compressor::new(&alone)));
                self.compressors.len() - 1
            }
        };
        let mut out = Vec::with_capacity(payload.len() / 2 + 16);
        self.compressors[index].1.compress(payload, &mut out);
        EncodedFrame::new(kind.opcode(), Bytes::from(out), true)
    }
}
