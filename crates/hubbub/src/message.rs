//! Messages to send, and frames encoded once for any number of queues.

use std::cell::RefCell;
use std::sync::{Mutex, OnceLock};

use std::sync::Arc;

use bytes::Bytes;
use hubbub_proto::encode::{COPY_THRESHOLD, Deflater, EncodedFrame};
use hubbub_proto::{DeflateParams, MessageKind, Utf8Bytes};

use crate::outbox::{Budget, charged};

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

thread_local! {
    /// Compressors for messages compressed on their own (no context
    /// takeover), one per window and level, reused by every connection this
    /// thread sends for.
    static DEFLATER: RefCell<Deflater> = RefCell::new(Deflater::default());
}

/// `payload` compressed on its own with `params`' window and level, as a
/// frame.
pub(crate) fn compress_alone(
    kind: MessageKind,
    payload: &[u8],
    params: &DeflateParams,
) -> EncodedFrame {
    DEFLATER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut deflater) => deflater.frame(kind, payload, params),
        Err(_) => Deflater::default().frame(kind, payload, params),
    })
}

/// A message on its way to one or many connections: encoded once per form
/// that some receiver needs (plain, or compressed on its own for each
/// window and level in use), and the same bytes shared by every queue.
pub(crate) struct Outgoing {
    pub(crate) kind: MessageKind,
    pub(crate) payload: Bytes,
    plain: OnceLock<EncodedFrame>,
    /// A std `Mutex`, never held across an `.await`.
    compressed: Mutex<Vec<((u8, u32), EncodedFrame)>>,
}

impl Outgoing {
    pub(crate) fn new(message: Message) -> Self {
        let (kind, payload) = match message {
            Message::Text(text) => (MessageKind::Text, text.into_bytes()),
            Message::Binary(data) => (MessageKind::Binary, data),
        };
        Self {
            kind,
            payload,
            plain: OnceLock::new(),
            compressed: Mutex::new(Vec::new()),
        }
    }

    /// The uncompressed frame. A large payload, shared by every queue, is
    /// charged to `budget` once while any queue holds it.
    pub(crate) fn plain(&self, budget: &Arc<Budget>) -> &EncodedFrame {
        self.plain.get_or_init(|| {
            let payload = if self.payload.len() > COPY_THRESHOLD {
                charged(self.payload.clone(), budget)
            } else {
                self.payload.clone()
            };
            EncodedFrame::message(self.kind, payload)
        })
    }

    /// The frame compressed on its own with `params`' level and at most
    /// `window` bits (the smallest window in use on the server, so that
    /// every receiver accepts the same bytes: a stream made with a small
    /// window is valid for any larger one), made once. A broadcast thus
    /// has one compressed form (two only if the smallest window changes
    /// while it is delivered), and a large one is charged to `budget` once.
    pub(crate) fn compressed(
        &self,
        params: &DeflateParams,
        window: u8,
        budget: &Arc<Budget>,
    ) -> EncodedFrame {
        let window = window.min(params.local_max_window_bits);
        let level = params.level;
        let mut cache = self.compressed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, frame)) = cache.iter().find(|((w, l), _)| *w <= window && *l == level) {
            return frame.clone();
        }
        let params = DeflateParams {
            local_max_window_bits: window,
            ..*params
        };
        let frame = compress_alone(self.kind, &self.payload, &params);
        let frame = match frame.body() {
            Some(body) => {
                EncodedFrame::new(self.kind.opcode(), charged(body.clone(), budget), true)
            }
            None => frame,
        };
        cache.push(((window, level), frame.clone()));
        frame
    }
}
