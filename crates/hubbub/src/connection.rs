//! The connection handle: what handlers and other tasks use to send.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use atomic_waker::AtomicWaker;
use bytes::{Bytes, BytesMut};
use hubbub_proto::{
    CloseCode, FrameHeader, MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD, OpCode, Utf8Bytes,
};
use uuid::Uuid;

use crate::config::Backpressure;
use crate::error::{Error, Kind};
use crate::info::ConnectionInfo;

/// Payloads up to this size are copied next to their frame header (one
/// allocation, one I/O slice); larger ones are queued as a separate shared
/// `Bytes` without copying.
const COPY_THRESHOLD: usize = 4096;

/// A handle to one WebSocket connection: cheap to clone, usable from any
/// task or thread, equal and hashed by connection id.
///
/// Sends never wait: a frame is queued and the connection's task writes
/// everything queued in one wake-up with one vectored write. The queue is
/// bounded in bytes ([`crate::ServerConfig::max_queue_bytes`]); see
/// [`crate::Backpressure`].
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
}

/// State shared between the handles and the connection's task.
pub(crate) struct Shared {
    pub(crate) info: ConnectionInfo,
    /// Frames queued by handles; a std `Mutex` because no `.await` ever
    /// happens while it is held, and holds are a few instructions long.
    pub(crate) outbox: Mutex<Outbox>,
    /// Wakes the connection's task when something is queued.
    pub(crate) waker: AtomicWaker,
    /// Bytes queued or being written, for `buffered_amount` and the limit.
    pub(crate) buffered: AtomicUsize,
    pub(crate) max_queue_bytes: usize,
    pub(crate) backpressure: Backpressure,
}

/// What handles have asked the connection's task to do.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Encoded frames, in order.
    pub(crate) frames: VecDeque<Bytes>,
    /// Whether sends are still accepted.
    pub(crate) open: bool,
    /// A close requested by a handle, to send after `frames`.
    pub(crate) close: Option<(CloseCode, String)>,
    /// Drop the connection now, without waiting (shutdown grace expired).
    pub(crate) force: bool,
}

impl Connection {
    pub(crate) fn new(
        info: ConnectionInfo,
        max_queue_bytes: usize,
        backpressure: Backpressure,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                info,
                outbox: Mutex::new(Outbox {
                    open: true,
                    ..Outbox::default()
                }),
                waker: AtomicWaker::new(),
                buffered: AtomicUsize::new(0),
                max_queue_bytes,
                backpressure,
            }),
        }
    }

    /// The connection's unique id.
    pub fn id(&self) -> Uuid {
        self.shared.info.id()
    }

    /// What the opening handshake told about the connection.
    pub fn info(&self) -> &ConnectionInfo {
        &self.shared.info
    }

    /// Whether sends are still accepted: no close was requested, sent or
    /// received, and the connection has not ended.
    pub fn is_open(&self) -> bool {
        self.shared.lock().open
    }

    /// Bytes queued for this connection and not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        self.shared.buffered.load(Ordering::Relaxed)
    }

    /// Queues a text message.
    ///
    /// # Errors
    /// [`Error::is_closed`] once the connection is closing or closed;
    /// [`Error::is_queue_full`] when the queue limit would be passed (with
    /// [`crate::Backpressure::Close`] the connection is also being closed
    /// with 1008).
    pub fn send(&self, text: impl Into<Utf8Bytes>) -> Result<(), Error> {
        self.send_data(OpCode::Text, text.into().into_bytes())
    }

    /// Queues a binary message.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub fn send_binary(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.send_data(OpCode::Binary, data.into())
    }

    /// Queues a ping (payload at most 125 bytes).
    ///
    /// # Errors
    /// As [`Connection::send`], and [`Error::is_invalid_argument`] for a
    /// payload over 125 bytes.
    pub fn ping(&self, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.send_control(OpCode::Ping, payload.into())
    }

    /// Queues an unsolicited pong (payload at most 125 bytes).
    ///
    /// # Errors
    /// As [`Connection::ping`].
    pub fn pong(&self, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.send_control(OpCode::Pong, payload.into())
    }

    /// Starts a normal close (1000). Messages queued before it are sent
    /// first; `on_close` runs when the close handshake ends.
    ///
    /// # Errors
    /// [`Error::is_closed`] if the connection is already closing.
    pub fn close(&self) -> Result<(), Error> {
        self.close_with(CloseCode::NORMAL, "")
    }

    /// Starts a close with `code` and `reason` (at most 123 bytes).
    ///
    /// # Errors
    /// [`Error::is_closed`] if already closing; [`Error::is_invalid_argument`]
    /// for a code that may not be sent (such as 1005 or 1006) or a reason
    /// too long.
    pub fn close_with(&self, code: impl Into<CloseCode>, reason: &str) -> Result<(), Error> {
        let code = code.into();
        if !code.is_sendable() {
            return Err(Error::new(Kind::InvalidCloseCode(code)));
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(Error::new(Kind::PayloadTooLong));
        }
        let mut outbox = self.shared.lock();
        if !outbox.open {
            return Err(Error::new(Kind::Closed));
        }
        outbox.open = false;
        outbox.close = Some((code, reason.to_owned()));
        drop(outbox);
        self.shared.waker.wake();
        Ok(())
    }

    fn send_control(&self, opcode: OpCode, payload: Bytes) -> Result<(), Error> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(Error::new(Kind::PayloadTooLong));
        }
        self.send_data(opcode, payload)
    }

    fn send_data(&self, opcode: OpCode, payload: Bytes) -> Result<(), Error> {
        let header = FrameHeader::new(opcode, payload.len() as u64).encode();
        let header = header.as_bytes();
        let len = header.len() + payload.len();
        let mut outbox = self.shared.lock();
        if !outbox.open {
            return Err(Error::new(Kind::Closed));
        }
        let buffered = self.shared.buffered.load(Ordering::Relaxed);
        if buffered + len > self.shared.max_queue_bytes {
            let max = self.shared.max_queue_bytes;
            if self.shared.backpressure == Backpressure::Close {
                outbox.open = false;
                let dropped: usize = outbox.frames.drain(..).map(|f| f.len()).sum();
                self.shared.buffered.fetch_sub(dropped, Ordering::Relaxed);
                outbox.close = Some((CloseCode::POLICY_VIOLATION, "send queue full".into()));
                drop(outbox);
                self.shared.waker.wake();
                tracing::warn!(id = %self.id(), buffered, max, "send queue full: closing with 1008");
            }
            return Err(Error::new(Kind::QueueFull { buffered, max }));
        }
        if payload.len() <= COPY_THRESHOLD {
            let mut frame = BytesMut::with_capacity(len);
            frame.extend_from_slice(header);
            frame.extend_from_slice(&payload);
            outbox.frames.push_back(frame.freeze());
        } else {
            outbox.frames.push_back(Bytes::copy_from_slice(header));
            outbox.frames.push_back(payload);
        }
        self.shared.buffered.fetch_add(len, Ordering::Relaxed);
        drop(outbox);
        self.shared.waker.wake();
        Ok(())
    }
}

impl Shared {
    /// Locks the outbox; a poisoned lock is recovered, since every update
    /// under it leaves the outbox consistent.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl PartialEq for Connection {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Connection {}

impl Hash for Connection {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id())
            .field("client", &self.info().client_addr())
            .finish()
    }
}
