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
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use hubbub_proto::encode::{COPY_THRESHOLD, EncodedFrame, append_frame};
use hubbub_proto::{CloseCode, OpCode};

use crate::config::Backpressure;
use crate::error::{Error, Kind};

/// A queued item, in order.
#[derive(Debug)]
pub(crate) enum Item {
    /// Encoded frame bytes, charged to the server's [`Budget`] by this
    /// queue.
    Bytes(Bytes),
    /// The payload of a large frame shared by many queues (a broadcast):
    /// charged to the budget once, by its owner, for all of them.
    Shared(Bytes),
    /// A frame only the driver's protocol state can encode, in order of
    /// sending: a message to compress with the connection's own context,
    /// or, for a client, any frame (every one is masked with a fresh key).
    Deferred(OpCode, Bytes),
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
    /// What is set rarely (an overflow, a forced drop, a waiting sender),
    /// boxed when first set: 8 bytes, not 56, in every idle connection.
    rare: Option<Box<Rare>>,
    /// `items` holds a message to compress since the last drain.
    deferred: bool,
    /// The queue was dropped to make room (the server's budget): the
    /// driver drops what it holds too before closing.
    evicted: bool,
}

/// The queue's rarely set state.
#[derive(Debug, Default)]
struct Rare {
    /// A send overflowed since the last drain (for `on_error`).
    overflow: Option<(usize, usize)>,
    /// Drop the connection now, and why (shutdown grace expired, a reader
    /// that stalled).
    force: Option<&'static str>,
    /// A sender waiting for room (a `Sink`; see [`Queue::poll_room`]).
    room: Option<std::task::Waker>,
}

impl Inner {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    fn take_room(&mut self) -> Option<std::task::Waker> {
        self.rare.as_mut().and_then(|r| r.room.take())
    }
}

impl Item {
    /// The bytes to write (a message to compress has none yet: the driver
    /// encodes it first).
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Self::Bytes(bytes) | Self::Shared(bytes) => bytes,
            Self::Deferred(..) => &[],
        }
    }

    /// The bytes this item costs the server's budget.
    pub(crate) fn charged(&self) -> usize {
        match self {
            Self::Bytes(bytes) => bytes.len(),
            Self::Shared(_) => 0,
            Self::Deferred(_, payload) => estimate(payload.len()),
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

    /// Drops everything queued; returns the bytes dropped and what of them
    /// was charged to the budget (estimates for messages not yet
    /// compressed).
    fn clear(&mut self) -> (usize, usize) {
        let (mut dropped, mut charged) = (self.tail.len(), self.tail.len());
        for item in self.items.drain(..) {
            dropped += match &item {
                Item::Deferred(_, payload) => estimate(payload.len()),
                other => other.bytes().len(),
            };
            charged += item.charged();
        }
        self.tail = Vec::new();
        (dropped, charged)
    }
}

/// The server-wide bound on bytes queued for sending, over every
/// connection: frames copied into a queue count for that queue, a large
/// frame shared by many queues (a broadcast) counts once.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    /// Set when the server starts (its configuration may come late).
    max: AtomicUsize,
    /// Told when a send is refused for the budget: the sweep then makes
    /// room (see `keepalive`).
    pub(crate) exhausted: tokio::sync::Notify,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            exhausted: tokio::sync::Notify::new(),
        })
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The bound.
    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Sets the bound.
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Charges `n` bytes if they fit.
    fn try_charge(&self, n: usize) -> Result<(), usize> {
        let used = self.used.fetch_add(n, Ordering::Relaxed);
        if used + n > self.max() {
            self.used.fetch_sub(n, Ordering::Relaxed);
            self.exhausted.notify_one();
            return Err(used);
        }
        Ok(())
    }

    /// Charges `n` bytes that must go out anyway (the protocol's replies).
    fn charge(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

/// `bytes` charged to `budget` for as long as any queue holds them: the
/// payload of a frame many queues share, counted once.
pub(crate) fn charged(bytes: Bytes, budget: &Arc<Budget>) -> Bytes {
    /// Owns the payload and its charge.
    struct Charged(Bytes, Arc<Budget>);
    impl AsRef<[u8]> for Charged {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    impl Drop for Charged {
        fn drop(&mut self) {
            self.1.release(self.0.len());
        }
    }
    budget.charge(bytes.len());
    Bytes::from_owner(Charged(bytes, budget.clone()))
}

/// What the driver took from the queue.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    /// A close a handle asked for, to send after the items.
    pub(crate) close: Option<(CloseCode, String)>,
    /// The send queue overflowed: `(buffered, max)`.
    pub(crate) overflow: Option<(usize, usize)>,
    /// Drop the connection at once, for this reason.
    pub(crate) force: Option<&'static str>,
    /// Drop what was already taken too (see `Queue::evict`).
    pub(crate) evicted: bool,
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
    /// A sender waits for room: the next write wakes it (`Inner::room`).
    room_wanted: AtomicBool,
    /// Bytes queued or being written (the driver adds what it writes on
    /// its own, such as pongs), for `buffered_amount` and the limit.
    buffered: AtomicUsize,
    max_bytes: usize,
    policy: Backpressure,
    /// The server's bound over every queue.
    budget: Arc<Budget>,
}

thread_local! {
    /// Set while a queue wakes its driver: a connection set files such a
    /// wake as output (polled in turn), not as input (polled first).
    static WAKING_FOR_OUTPUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the wake in progress on this thread comes from a queue (a send,
/// a close request), not from the connection's socket or a timer.
pub(crate) fn waking_for_output() -> bool {
    WAKING_FOR_OUTPUT.with(std::cell::Cell::get)
}

impl Queue {
    /// Wakes the driver, marked as output (see [`waking_for_output`]).
    fn wake_driver(&self) {
        WAKING_FOR_OUTPUT.with(|flag| {
            flag.set(true);
            self.waker.wake();
            flag.set(false);
        });
    }

    /// An empty, open queue of at most `max_bytes`, within `budget`.
    pub(crate) fn new(max_bytes: usize, policy: Backpressure, budget: Arc<Budget>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                tail: Vec::new(),
                state: State::Open,
                rare: None,
                deferred: false,
                evicted: false,
            }),
            waker: AtomicWaker::new(),
            driving: AtomicBool::new(false),
            room_wanted: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            max_bytes,
            policy,
            budget,
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
            // Unmasked, so the header is 2 or 4 bytes here: the exact size,
            // so that the budget is charged once (no estimate to give back).
            let len = payload.len() + if payload.len() < 126 { 2 } else { 4 };
            self.push_with(len, len, |inner| {
                append_frame(&mut inner.tail, opcode, false, &payload)
            })
        } else {
            self.push_encoded(&EncodedFrame::new(opcode, payload, false), false)
        }
    }

    /// Queues an encoded frame: a small one is copied (cheaper than sharing,
    /// whose reference count every receiver's thread would take and drop on
    /// one cache line), a large one shared. With `shared`, a large frame's
    /// payload is charged to the budget by its owner (see [`charged`]), once
    /// for every queue.
    pub(crate) fn push_encoded(&self, frame: &EncodedFrame, shared: bool) -> Result<usize, Error> {
        let charge = match frame.body() {
            Some(_) if shared => frame.head().len(),
            _ => frame.len(),
        };
        self.push_with(frame.len(), charge, |inner| match frame.body() {
            None => {
                inner.tail.extend_from_slice(frame.head());
                frame.len()
            }
            Some(body) => {
                inner.flush_tail();
                inner.items.push_back(Item::Bytes(frame.head().clone()));
                let body = body.clone();
                inner.items.push_back(if shared {
                    Item::Shared(body)
                } else {
                    Item::Bytes(body)
                });
                frame.len()
            }
        })
    }

    /// Queues a frame for the driver to encode (see [`Item::Deferred`]).
    /// The limit is checked against its uncompressed size.
    pub(crate) fn push_deferred(&self, opcode: OpCode, payload: Bytes) -> Result<usize, Error> {
        let len = estimate(payload.len());
        self.push_with(len, len, |inner| {
            inner.flush_tail();
            inner.items.push_back(Item::Deferred(opcode, payload));
            inner.deferred = true;
            len
        })
    }

    /// Runs `push` (which queues and returns the bytes queued) under the
    /// lock, if `estimate` bytes fit the limit and `charge` bytes the
    /// server's budget; at the limit, applies the policy; past the budget,
    /// refuses.
    fn push_with(
        &self,
        estimate: usize,
        charge: usize,
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
            inner.rare().overflow = Some((buffered, max));
            if closing {
                self.discard(&mut inner);
                inner.state = State::CloseRequested(Box::new((
                    CloseCode::POLICY_VIOLATION,
                    "send queue full".into(),
                )));
            }
            drop(inner);
            self.wake_driver();
            return Err(Error::new(Kind::QueueFull {
                buffered,
                max,
                closing,
            }));
        }
        if let Err(used) = self.budget.try_charge(charge) {
            let max = self.budget.max();
            drop(inner);
            return Err(Error::new(Kind::OverBudget { used, max }));
        }
        let len = push(&mut inner);
        debug_assert!(len <= estimate, "a frame larger than its estimate");
        self.buffered.fetch_add(len, Ordering::Relaxed);
        if len < charge {
            // The estimate was a bound: give back what the frame did not use.
            self.budget.release(charge - len);
        }
        // The driver, when it is the one running this (a handler answering
        // an event), drains the queue before it yields: waking it would
        // only cost it a poll.
        let wake = !self.driving.load(Ordering::Relaxed);
        drop(inner);
        if wake {
            self.wake_driver();
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
        self.wake_driver();
        Ok(())
    }

    /// Asks the driver to drop the connection at once, for `why`.
    pub(crate) fn force(&self, why: &'static str) {
        self.lock().rare().force = Some(why);
        self.wake_driver();
    }

    /// Drops what is queued (the driver drops what it holds too) and asks
    /// the driver to close with `code`: room for the others when the
    /// server's budget is spent. Returns whether it was open.
    pub(crate) fn evict(&self, code: CloseCode, reason: &str) -> bool {
        let mut inner = self.lock();
        if inner.state != State::Open {
            return false;
        }
        self.discard(&mut inner);
        inner.evicted = true;
        inner.state = State::CloseRequested(Box::new((code, reason.to_owned())));
        drop(inner);
        self.wake_driver();
        true
    }

    /// Drops what `inner` holds, off the counts.
    fn discard(&self, inner: &mut Inner) {
        let (dropped, charged) = inner.clear();
        self.buffered.fetch_sub(dropped, Ordering::Relaxed);
        self.budget.release(charged);
    }

    /// Ready once `need` more bytes fit under the limit (or nothing is
    /// buffered, whatever `need`), or sends are no longer accepted;
    /// otherwise the next write wakes `cx`. For senders that wait instead
    /// of failing (the `Sink` view).
    pub(crate) fn poll_room(&self, cx: &mut std::task::Context<'_>, need: usize) -> Poll<()> {
        let fits = || {
            let buffered = self.buffered.load(Ordering::SeqCst);
            buffered == 0 || buffered.saturating_add(need) <= self.max_bytes
        };
        if fits() {
            return Poll::Ready(());
        }
        let mut inner = self.lock();
        if inner.state == State::Closed {
            return Poll::Ready(());
        }
        inner.rare().room = Some(cx.waker().clone());
        self.room_wanted.store(true, Ordering::SeqCst);
        drop(inner);
        // A write between the first look and the flag did not wake us.
        if fits() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Wakes a sender waiting for room, if any (one load when none).
    fn wake_room(&self) {
        if self.room_wanted.load(Ordering::SeqCst) && self.room_wanted.swap(false, Ordering::SeqCst)
        {
            let waker = self.lock().take_room();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
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
            overflow: inner.rare.as_mut().and_then(|r| r.overflow.take()),
            force: inner.rare.as_ref().and_then(|r| r.force),
            deferred: std::mem::take(&mut inner.deferred),
            evicted: std::mem::take(&mut inner.evicted),
        }
    }

    /// Counts `n` bytes the driver queued itself (the protocol's replies,
    /// which go out whatever the limits).
    pub(crate) fn add_own(&self, n: usize) {
        self.buffered.fetch_add(n, Ordering::Relaxed);
        self.budget.charge(n);
    }

    /// A message compressed by the driver: its estimate becomes its size.
    pub(crate) fn recharge(&self, estimate: usize, len: usize) {
        self.buffered.fetch_add(len, Ordering::Relaxed);
        self.buffered.fetch_sub(estimate, Ordering::Relaxed);
        self.budget.charge(len);
        self.budget.release(estimate);
    }

    /// Takes `n` written or dropped bytes off the total, `charged` of them
    /// off the budget.
    pub(crate) fn written(&self, n: usize, charged: usize) {
        // SeqCst, as `poll_room`'s flag and load: a waiter either sees this
        // or is seen by the `wake_room` load below.
        self.buffered.fetch_sub(n, Ordering::SeqCst);
        self.budget.release(charged);
        self.wake_room();
    }

    /// The connection ended: nothing more is accepted, and what is queued
    /// is dropped.
    pub(crate) fn end(&self) {
        let mut inner = self.lock();
        inner.state = State::Closed;
        self.discard(&mut inner);
        let waiting = inner.take_room();
        drop(inner);
        if let Some(waker) = waiting {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(items: &VecDeque<Item>) -> Vec<u8> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::Bytes(b) | Item::Shared(b) => out.extend_from_slice(b),
                Item::Deferred(..) => out.extend_from_slice(b"<deflate>"),
            }
        }
        out
    }

    #[test]
    fn small_frames_share_one_buffer_and_large_ones_are_not_copied() {
        let queue = Queue::new(1 << 20, Backpressure::Close, Budget::new(usize::MAX / 2));
        queue.push(OpCode::Text, Bytes::from_static(b"a")).unwrap();
        queue.push(OpCode::Text, Bytes::from_static(b"b")).unwrap();
        let large = Bytes::from(vec![7u8; 10_000]);
        queue
            .push_encoded(
                &EncodedFrame::new(OpCode::Binary, large.clone(), false),
                false,
            )
            .unwrap();
        queue.push(OpCode::Ping, Bytes::new()).unwrap();
        let mut out = VecDeque::new();
        let drained = queue.drain(&mut out, false);
        assert!(drained.close.is_none() && drained.force.is_none());
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
            let queue = Queue::new(100, policy, Budget::new(usize::MAX / 2));
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
        let queue = Queue::new(1 << 20, Backpressure::Close, Budget::new(usize::MAX / 2));
        queue
            .push(OpCode::Text, Bytes::from_static(b"before"))
            .unwrap();
        queue
            .push_deferred(OpCode::Text, Bytes::from_static(b"squeeze"))
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
        let queue = Queue::new(1 << 20, Backpressure::Close, Budget::new(usize::MAX / 2));
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
        let queue = Arc::new(Queue::new(
            1 << 30,
            Backpressure::Close,
            Budget::new(usize::MAX / 2),
        ));
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

    #[test]
    fn the_budget_bounds_every_queue_together_and_counts_shared_payloads_once() {
        let budget = Budget::new(20_000);
        let queues: Vec<_> = (0..3)
            .map(|_| Queue::new(1 << 20, Backpressure::Close, budget.clone()))
            .collect();
        // A 9,000-byte broadcast payload shared by all three: charged once.
        let body = charged(Bytes::from(vec![1u8; 9_000]), &budget);
        let frame = EncodedFrame::new(OpCode::Binary, body, false);
        for queue in &queues {
            queue.push_encoded(&frame, true).unwrap();
        }
        drop(frame);
        assert_eq!(
            budget.used(),
            9_000 + 3 * 4,
            "the payload once, three headers"
        );
        // Copies count for each queue: 8 KiB more passes the budget.
        queues[0]
            .push(OpCode::Binary, Bytes::from(vec![0u8; 4_000]))
            .unwrap();
        queues[1]
            .push(OpCode::Binary, Bytes::from(vec![0u8; 4_000]))
            .unwrap();
        let err = queues[2]
            .push(OpCode::Binary, Bytes::from(vec![0u8; 4_000]))
            .unwrap_err();
        assert!(err.is_over_budget() && !err.is_queue_full(), "{err}");
        assert!(queues[2].is_open(), "refused, not closed");
        // Written and ended queues give their share back; the payload goes
        // back when the last queue lets go of it.
        for queue in &queues {
            let mut out = VecDeque::new();
            queue.drain(&mut out, false);
            let (n, charged) = out.iter().fold((0, 0), |(n, c), item| {
                (n + item.bytes().len(), c + item.charged())
            });
            queue.written(n, charged);
            assert_eq!(queue.buffered(), 0);
        }
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn eviction_drops_the_queue_and_asks_for_a_close() {
        let budget = Budget::new(1 << 20);
        let queue = Queue::new(1 << 20, Backpressure::Refuse, budget.clone());
        queue
            .push(OpCode::Binary, Bytes::from(vec![0u8; 5_000]))
            .unwrap();
        assert!(queue.evict(CloseCode::TRY_AGAIN_LATER, "server busy"));
        assert_eq!((queue.buffered(), budget.used()), (0, 0));
        let mut out = VecDeque::new();
        let drained = queue.drain(&mut out, false);
        assert!(out.is_empty() && drained.evicted);
        assert_eq!(
            drained.close,
            Some((CloseCode::TRY_AGAIN_LATER, "server busy".into()))
        );
        assert!(!queue.evict(CloseCode::TRY_AGAIN_LATER, "again"), "once");
    }
}
