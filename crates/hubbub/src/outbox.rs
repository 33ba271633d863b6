//! One connection's outbound queue: what handles (from any thread) have
//! asked to send, in order, bounded in bytes, with the policy at the bound.
//!
//! Handles push; the connection's driver takes everything at once
//! ([`Queue::drain`]) and writes it. The queue never encodes frames itself:
//! it holds frames `hubbub-proto` encoded, and messages that only the
//! driver's protocol state can encode (compressed with the connection's own
//! context).
//!
//! Closing is a point in the queue's order: [`Queue::close_point`] stops
//! accepting and takes what was accepted in one step under the lock, so
//! everything accepted goes out before the close frame and nothing after it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use hubbub_proto::encode::{COPY_THRESHOLD, EncodedFrame, append_frame};
use hubbub_proto::{CloseCode, MessageKind, OpCode};

use crate::config::Backpressure;
use crate::error::{Error, Kind};

/// A queued item, in order.
#[derive(Debug)]
pub(crate) enum Item {
    /// Encoded frame bytes.
    Bytes(Bytes),
    /// A message to compress with the connection's own context (only the
    /// driver's protocol state can: the context is in order of sending).
    Deflate(MessageKind, Bytes),
}

/// Whether sends are accepted.
#[derive(Debug, PartialEq, Eq)]
enum State {
    Open,
    /// A handle asked to close: the driver sends this after the queue.
    CloseRequested(Box<(CloseCode, String)>),
    /// The close point was taken (or the connection ended).
    Closed,
}

/// The queue's contents, under [`Queue`]'s lock.
#[derive(Debug)]
struct Inner {
    items: VecDeque<Item>,
    /// Small frames since the last large one, encoded back to back: one
    /// allocation and one I/O slice per batch. Taken whole by the driver,
    /// so an idle connection keeps none.
    tail: Vec<u8>,
    state: State,
    /// A send overflowed since the last drain (for `on_error`).
    overflow: Option<(usize, usize)>,
    /// Drop the connection now (shutdown grace expired).
    force: bool,
    /// `items` holds a message to compress since the last drain.
    deferred: bool,
}

impl Item {
    /// The bytes to write (a message to compress has none yet: the driver
    /// encodes it first).
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Self::Bytes(bytes) => bytes,
            Self::Deflate(..) => &[],
        }
    }
}

impl Inner {
    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            let tail = Bytes::from(std::mem::take(&mut self.tail));
            self.items.push_back(Item::Bytes(tail));
        }
    }

    /// Drops everything queued; returns the bytes dropped (estimates for
    /// messages not yet compressed).
    fn clear(&mut self) -> usize {
        let items: usize = self
            .items
            .drain(..)
            .map(|item| match item {
                Item::Bytes(bytes) => bytes.len(),
                Item::Deflate(_, payload) => estimate(payload.len()),
            })
            .sum();
        let dropped = items + self.tail.len();
        self.tail = Vec::new();
        dropped
    }
}

/// What the driver took from the queue.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    /// A close a handle asked for, to send after the items.
    pub(crate) close: Option<(CloseCode, String)>,
    /// The send queue overflowed: `(buffered, max)`.
    pub(crate) overflow: Option<(usize, usize)>,
    /// Drop the connection at once.
    pub(crate) force: bool,
    /// The items hold messages to compress with the connection's context.
    pub(crate) deferred: bool,
}

/// A frame's length on the wire, at most: the queue limit needs no exact
/// figure before compression.
pub(crate) fn estimate(payload: usize) -> usize {
    payload + hubbub_proto::MAX_HEADER_LEN
}

/// One connection's outbound queue, shared by its handles and its driver.
#[derive(Debug)]
pub(crate) struct Queue {
    /// A std `Mutex`: no `.await` ever happens while it is held, and holds
    /// are a few instructions long.
    inner: Mutex<Inner>,
    /// Wakes the driver when something is queued.
    pub(crate) waker: AtomicWaker,
    /// The driver is delivering events and drains the queue before it
    /// yields, so a send need not wake it. Set by the driver without the
    /// lock; read by senders, and cleared by the driver's last drain, under
    /// the lock: a sender that sees it set holds the lock before that
    /// drain, so its item is drained; one that sees it clear wakes the
    /// driver.
    driving: AtomicBool,
    /// Bytes queued or being written (the driver adds what it writes on
    /// its own, such as pongs), for `buffered_amount` and the limit.
    buffered: AtomicUsize,
    max_bytes: usize,
    policy: Backpressure,
}

impl Queue {
    /// An empty, open queue of at most `max_bytes`.
    pub(crate) fn new(max_bytes: usize, policy: Backpressure) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                tail: Vec::new(),
                state: State::Open,
                overflow: None,
                force: false,
                deferred: false,
            }),
            waker: AtomicWaker::new(),
            driving: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            max_bytes,
            policy,
        }
    }

    /// A poisoned lock is recovered: every update under it leaves the
    /// queue consistent.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether sends are accepted.
    pub(crate) fn is_open(&self) -> bool {
        self.lock().state == State::Open
    }

    /// Bytes queued or being written.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// The limit policy.
    pub(crate) fn policy(&self) -> Backpressure {
        self.policy
    }

    /// Queues a frame no other connection shares (`payload` is copied when
    /// small). Returns the bytes queued.
    pub(crate) fn push(&self, opcode: OpCode, payload: Bytes) -> Result<usize, Error> {
        if payload.len() <= COPY_THRESHOLD {
            self.push_with(estimate(payload.len()), |inner| {
                append_frame(&mut inner.tail, opcode, false, &payload)
            })
        } else {
            self.push_encoded(&EncodedFrame::new(opcode, payload, false))
        }
    }

    /// Queues an encoded frame: a small one is copied (cheaper than sharing,
    /// whose reference count every receiver's thread would take and drop on
    /// one cache line), a large one shared.
    pub(crate) fn push_encoded(&self, frame: &EncodedFrame) -> Result<usize, Error> {
        self.push_with(frame.len(), |inner| match frame.body() {
            None => {
                inner.tail.extend_from_slice(frame.head());
                frame.len()
            }
            Some(body) => {
                inner.flush_tail();
                inner.items.push_back(Item::Bytes(frame.head().clone()));
                inner.items.push_back(Item::Bytes(body.clone()));
                frame.len()
            }
        })
    }

    /// Queues a message for the driver to compress with the connection's
    /// context. The limit is checked against its uncompressed size.
    pub(crate) fn push_deflate(&self, kind: MessageKind, payload: Bytes) -> Result<usize, Error> {
        let len = estimate(payload.len());
        self.push_with(len, |inner| {
            inner.flush_tail();
            inner.items.push_back(Item::Deflate(kind, payload));
            inner.deferred = true;
            len
        })
    }

    /// Runs `push` (which queues and returns the bytes queued) under the
    /// lock, if `estimate` bytes fit the limit; at the limit, applies the
    /// policy.
    fn push_with(
        &self,
        estimate: usize,
        push: impl FnOnce(&mut Inner) -> usize,
    ) -> Result<usize, Error> {
        let mut inner = self.lock();
        if inner.state != State::Open {
            return Err(Error::new(Kind::Closed));
        }
        let buffered = self.buffered.load(Ordering::Relaxed);
        if buffered + estimate > self.max_bytes {
            let max = self.max_bytes;
            let closing = self.policy == Backpressure::Close;
            inner.overflow = Some((buffered, max));
            if closing {
                let dropped = inner.clear();
                self.buffered.fetch_sub(dropped, Ordering::Relaxed);
                inner.state = State::CloseRequested(Box::new((
                    CloseCode::POLICY_VIOLATION,
                    "send queue full".into(),
                )));
            }
            drop(inner);
            self.waker.wake();
            return Err(Error::new(Kind::QueueFull {
                buffered,
                max,
                closing,
            }));
        }
        let len = push(&mut inner);
        self.buffered.fetch_add(len, Ordering::Relaxed);
        // The driver, when it is the one running this (a handler answering
        // an event), drains the queue before it yields: waking it would
        // only cost it a poll.
        let wake = !self.driving.load(Ordering::Relaxed);
        drop(inner);
        if wake {
            self.waker.wake();
        }
        Ok(len)
    }

    /// Asks the driver to close with `code` and `reason` after what is
    /// queued.
    ///
    /// # Errors
    /// [`Error::is_closed`] once closing.
    pub(crate) fn request_close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let mut inner = self.lock();
        if inner.state != State::Open {
            return Err(Error::new(Kind::Closed));
        }
        inner.state = State::CloseRequested(Box::new((code, reason.to_owned())));
        drop(inner);
        self.waker.wake();
        Ok(())
    }

    /// Asks the driver to drop the connection at once.
    pub(crate) fn force(&self) {
        self.lock().force = true;
        self.waker.wake();
    }

    /// The driver starts delivering events (see the field).
    pub(crate) fn start_driving(&self) {
        self.driving.store(true, Ordering::Relaxed);
    }

    /// Moves what was queued to `into`, in order, and takes a close request;
    /// with `stop_driving`, clears the driving flag in the same lock.
    pub(crate) fn drain(&self, into: &mut VecDeque<Item>, stop_driving: bool) -> Drained {
        self.take(into, stop_driving, false)
    }

    /// The close point: stops accepting sends and moves what was accepted
    /// to `into`, in one step (a close request is taken too, but the caller
    /// is closing anyway).
    pub(crate) fn close_point(&self, into: &mut VecDeque<Item>) -> Drained {
        self.take(into, false, true)
    }

    fn take(&self, into: &mut VecDeque<Item>, stop_driving: bool, close: bool) -> Drained {
        let mut inner = self.lock();
        if stop_driving {
            self.driving.store(false, Ordering::Relaxed);
        }
        inner.flush_tail();
        if into.is_empty() {
            // The usual case: the queues trade places, nothing is moved.
            std::mem::swap(into, &mut inner.items);
        } else {
            into.extend(inner.items.drain(..));
        }
        let state = if close || inner.state != State::Open {
            std::mem::replace(&mut inner.state, State::Closed)
        } else {
            State::Open
        };
        Drained {
            close: match state {
                State::CloseRequested(close) => Some(*close),
                _ => None,
            },
            overflow: inner.overflow.take(),
            force: inner.force,
            deferred: std::mem::take(&mut inner.deferred),
        }
    }

    /// Adds `n` bytes the driver queued itself (or the difference a
    /// compression made).
    pub(crate) fn add_buffered(&self, n: usize) {
        self.buffered.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes `n` written (or dropped) bytes off the total.
    pub(crate) fn sub_buffered(&self, n: usize) {
        self.buffered.fetch_sub(n, Ordering::Relaxed);
    }

    /// The connection ended: nothing more is accepted, and what is queued
    /// is dropped.
    pub(crate) fn end(&self) {
        let mut inner = self.lock();
        inner.state = State::Closed;
        inner.clear();
        self.buffered.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(items: &VecDeque<Item>) -> Vec<u8> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::Bytes(b) => out.extend_from_slice(b),
                Item::Deflate(..) => out.extend_from_slice(b"<deflate>"),
            }
        }
        out
    }

    #[test]
    fn small_frames_share_one_buffer_and_large_ones_are_not_copied() {
        let queue = Queue::new(1 << 20, Backpressure::Close);
        queue.push(OpCode::Text, Bytes::from_static(b"a")).unwrap();
        queue.push(OpCode::Text, Bytes::from_static(b"b")).unwrap();
        let large = Bytes::from(vec![7u8; 10_000]);
        queue
            .push_encoded(&EncodedFrame::new(OpCode::Binary, large.clone(), false))
            .unwrap();
        queue.push(OpCode::Ping, Bytes::new()).unwrap();
        let mut out = VecDeque::new();
        let drained = queue.drain(&mut out, false);
        assert!(drained.close.is_none() && !drained.force);
        assert_eq!(out.len(), 4, "tail, head, body, tail");
        let Item::Bytes(body) = &out[2] else { panic!() };
        assert_eq!(body.as_ptr(), large.as_ptr());
        let all = bytes(&out);
        assert_eq!(&all[..4], &[0x81, 1, b'a', 0x81][..]);
        assert_eq!(queue.buffered(), all.len());
    }

    #[test]
    fn the_limit_closes_under_close_and_refuses_under_refuse() {
        for policy in [Backpressure::Close, Backpressure::Refuse] {
            let queue = Queue::new(100, policy);
            queue
                .push(OpCode::Binary, Bytes::from(vec![0u8; 60]))
                .unwrap();
            let err = queue
                .push(OpCode::Binary, Bytes::from(vec![0u8; 60]))
                .unwrap_err();
            assert!(err.is_queue_full());
            let mut out = VecDeque::new();
            let drained = queue.drain(&mut out, false);
            assert_eq!(drained.overflow, Some((62, 100)));
            match policy {
                Backpressure::Close => {
                    assert_eq!(err.close_code(), Some(CloseCode::POLICY_VIOLATION));
                    assert!(out.is_empty(), "the queue is dropped");
                    assert_eq!(queue.buffered(), 0);
                    assert_eq!(
                        drained.close,
                        Some((CloseCode::POLICY_VIOLATION, "send queue full".into()))
                    );
                    assert!(
                        queue
                            .push(OpCode::Text, Bytes::new())
                            .unwrap_err()
                            .is_closed()
                    );
                }
                Backpressure::Refuse => {
                    assert_eq!(err.close_code(), None, "nothing closes");
                    assert_eq!(out.len(), 1);
                    assert!(drained.close.is_none());
                    assert!(queue.is_open());
                }
            }
        }
    }

    #[test]
    fn the_close_point_takes_what_was_accepted_and_refuses_the_rest() {
        let queue = Queue::new(1 << 20, Backpressure::Close);
        queue
            .push(OpCode::Text, Bytes::from_static(b"before"))
            .unwrap();
        queue
            .push_deflate(MessageKind::Text, Bytes::from_static(b"squeeze"))
            .unwrap();
        let mut out = VecDeque::new();
        queue.close_point(&mut out);
        assert_eq!(bytes(&out), b"\x81\x06before<deflate>");
        assert!(!queue.is_open());
        assert!(
            queue
                .push(OpCode::Text, Bytes::new())
                .unwrap_err()
                .is_closed()
        );
        assert!(
            queue
                .request_close(CloseCode::NORMAL, "")
                .unwrap_err()
                .is_closed()
        );
    }

    #[test]
    fn a_requested_close_comes_after_the_queue_once() {
        let queue = Queue::new(1 << 20, Backpressure::Close);
        queue.push(OpCode::Text, Bytes::from_static(b"x")).unwrap();
        queue.request_close(CloseCode::NORMAL, "bye").unwrap();
        assert!(
            queue
                .push(OpCode::Text, Bytes::new())
                .unwrap_err()
                .is_closed()
        );
        let mut out = VecDeque::new();
        let drained = queue.drain(&mut out, false);
        assert_eq!(out.len(), 1);
        assert_eq!(drained.close, Some((CloseCode::NORMAL, "bye".into())));
        assert!(queue.drain(&mut out, false).close.is_none());
    }

    #[test]
    fn sends_from_many_threads_keep_each_senders_order() {
        let queue = std::sync::Arc::new(Queue::new(1 << 30, Backpressure::Close));
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for i in 0..500u16 {
                        let [hi, lo] = i.to_be_bytes();
                        queue
                            .push(OpCode::Binary, Bytes::from(vec![t, hi, lo]))
                            .unwrap();
                    }
                })
            })
            .collect();
        let mut out = VecDeque::new();
        for thread in threads {
            thread.join().unwrap();
        }
        queue.drain(&mut out, false);
        let all = bytes(&out);
        let mut next = [0u16; 4];
        for frame in all.chunks(5) {
            assert_eq!(&frame[..2], &[0x82, 3]);
            let t = usize::from(frame[2]);
            assert_eq!(u16::from_be_bytes([frame[3], frame[4]]), next[t]);
            next[t] += 1;
        }
        assert_eq!(next, [500; 4]);
    }
}
