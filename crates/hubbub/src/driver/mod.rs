//! The connection driver: one connection's future (a slot of a connection
//! set, or a task of its own) moving bytes between the socket and
//! `hubbub-proto`, and events to the handlers.
//!
//! Each wake-up: run the pending async handler, take what handles queued,
//! write everything queued in one vectored write, then read into the worker
//! thread's buffer and deliver the events it holds. A connection keeps no
//! read buffer of its own while idle.

mod io;

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hubbub_proto::CloseFrame;
use hubbub_proto::encode::EncodedFrame;
use hubbub_proto::{CloseCode, Connection as Proto, Event, MessageKind, OpCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::config::{Backpressure, ServerConfig};
use crate::error::{Error, Kind};
use crate::handle::Connection;
use crate::hub::Held;
use crate::info::CloseInfo;
use crate::limits::{Bucket, RateLimit};
use crate::metrics::Count;
use crate::outbox::{Drained, Item, estimate};
use crate::socket::{BoxFuture, Handlers, panic_message};

/// How long to keep reading after shutting down the write side, so that
/// unread input does not turn the close into a reset.
const LINGER: Duration = Duration::from_secs(2);

/// Read-and-deliver rounds per wake-up before yielding to other tasks.
const ROUNDS_PER_WAKE: usize = 16;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Exchanging messages, or in the close handshake.
    Running,
    /// Close handshake done (or failed) and flushed: write side shut down,
    /// reading until the peer closes too.
    Lingering,
}

/// Drives one upgraded connection.
pub(crate) struct Driver<S> {
    stream: S,
    proto: Proto,
    conn: Connection,
    handlers: Handlers,
    /// Input not yet consumed by `proto`: a partial frame, or input held
    /// back while an async handler runs. Normally empty: reads go to the
    /// worker thread's buffer.
    leftover: BytesMut,
    /// `leftover` may hold whole events not yet delivered.
    held: bool,
    /// The write side has been shut down.
    shut: bool,
    /// What to write, in order: the queue's items and the protocol's own
    /// replies (all counted in the queue's `buffered` total).
    pending: VecDeque<Item>,
    /// `pending` may hold messages still to compress with this
    /// connection's context.
    deferred: bool,
    /// The front of `pending` is partly written.
    partial: bool,
    running: Option<BoxFuture>,
    /// No more events are delivered (a handler panicked).
    events_stopped: bool,
    deadline: Option<Pin<Box<Sleep>>>,
    /// In milliseconds (4 bytes, not a 16-byte `Duration`: it fits beside
    /// the flags, and every open connection keeps it).
    close_timeout_ms: u32,
    phase: Phase,
    close_fired: bool,
    /// The per-connection message rate limit and its bucket.
    /// Boxed: most servers set no rate, and each connection carries the slot.
    message_rate: Option<Box<(RateLimit, Bucket)>>,
    /// The connection's places (open connections, its address's count),
    /// given back when the driver is dropped, after `on_close`.
    places: Held,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    /// A driver for an upgraded connection over `stream`: `proto` in the
    /// open state, `conn` registered with its hub, and `leftover` the bytes
    /// that came after the request head.
    pub(crate) fn new(
        stream: S,
        proto: Proto,
        conn: Connection,
        handlers: Handlers,
        leftover: BytesMut,
        config: &ServerConfig,
    ) -> Self {
        let now = conn.member.hub.now_ms();
        let message_rate = config
            .message_rate
            .map(|limit| Box::new((limit, Bucket::full(&limit, now))));
        let close_timeout_ms = u32::try_from(config.close_timeout.as_millis()).unwrap_or(u32::MAX);
        let pending = VecDeque::new();
        Self {
            stream,
            proto,
            conn,
            handlers,
            held: !leftover.is_empty(),
            leftover,
            shut: false,
            pending,
            deferred: false,
            partial: false,
            running: None,
            events_stopped: false,
            deadline: None,
            close_timeout_ms,
            phase: Phase::Running,
            close_fired: false,
            message_rate,
            places: Held::default(),
        }
    }

    /// Keeps `held` until the driver is dropped.
    pub(crate) fn hold(&mut self, held: Held) {
        self.places = held;
    }

    /// Runs the connection to its end and fires `on_close` once.
    ///
    /// Not an `async fn`: an `async fn` keeps its argument and the local it
    /// is moved into as two slots of its state, which for the driver (over
    /// 600 bytes) doubled every connection's future. An `async move` block
    /// uses the captured driver in place.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would store the driver twice: see above"
    )]
    pub(crate) fn run(mut self) -> impl Future<Output = ()> + Send
    where
        S: Send,
    {
        async move {
            match self.handlers.take_open().call(&self.conn, ()) {
                Ok(future) => self.running = future,
                Err(panic) => self.handler_panicked(panic),
            }
            let info = poll_fn(|cx| self.poll_drive(cx)).await;
            // Boxed: its state (the close info, an async `on_close`) would
            // otherwise take room in every connection's future for its
            // whole life.
            Box::pin(self.end(info)).await;
        }
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<CloseInfo> {
        self.conn.member.queue.waker.register(cx.waker());
        // Whether to look at the outbox this round. A round that follows a
        // delivering read skips it: that read's `deliver` drained the outbox
        // as it cleared `driving`, and anything queued since woke the task.
        let mut drain = true;
        for _ in 0..ROUNDS_PER_WAKE {
            if let Some(future) = self.running.as_mut() {
                match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(Poll::Pending) => {}
                    Ok(Poll::Ready(())) => self.running = None,
                    Err(panic) => {
                        self.running = None;
                        self.handler_panicked(panic_message(&*panic));
                    }
                }
            }
            if std::mem::replace(&mut drain, true)
                && let Some(why) = self.drain_outbox(false)
            {
                tracing::debug!(id = %self.conn.id(), "dropped: {why}");
                return Poll::Ready(self.unfinished(why));
            }
            if self.running.is_none() && self.held {
                let mut input = std::mem::take(&mut self.leftover);
                self.deliver(&mut input);
                self.held = self.running.is_some() && !input.is_empty();
                self.leftover = input;
                if self.running.is_some() {
                    // A handler future just started: poll it (next round)
                    // before sleeping, or nothing would wake this task.
                    continue;
                }
            }
            if let Err(e) = self.poll_write(cx) {
                return Poll::Ready(self.io_failed(e));
            }
            if let Some(done) = self.poll_closing(cx) {
                return Poll::Ready(done);
            }
            let can_read = self.running.is_none() && !self.held;
            match if can_read {
                self.poll_read(cx)
            } else {
                Poll::Pending
            } {
                Poll::Ready(Ok(true)) => {
                    drain = false;
                    continue;
                }
                Poll::Ready(Ok(false)) => return Poll::Ready(self.peer_gone()),
                Poll::Ready(Err(e)) => return Poll::Ready(self.io_failed(e)),
                Poll::Pending => {}
            }
            if let Some(deadline) = self.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(self.timed_out());
                }
            }
            // Input held back for a handler that finished this round: go
            // round again. Otherwise wait for a wake-up: every send since
            // the last drain woke the task (sends made while events were
            // delivered did not, and `deliver` drained those).
            if self.running.is_some() || !self.held {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Moves what handles queued into `pending`; with `stop_driving`, clears
    /// the queue's `driving` flag under the same lock. Returns why, when the
    /// connection must be dropped at once (shutdown grace expired, a reader
    /// that stalled; the flag stays set for the next drain to see).
    fn drain_outbox(&mut self, stop_driving: bool) -> Option<&'static str> {
        let drained = self
            .conn
            .member
            .queue
            .drain(&mut self.pending, stop_driving);
        self.took(drained)
    }

    /// The close point: stops the queue accepting sends and moves what it
    /// accepted to `pending`, ahead of the close frame that follows.
    fn close_point(&mut self) {
        let drained = self.conn.member.queue.close_point(&mut self.pending);
        self.took(drained);
    }

    /// Acts on what a drain brought besides frames.
    fn took(&mut self, drained: Drained) -> Option<&'static str> {
        self.deferred |= drained.deferred;
        if drained.evicted {
            // Room for the others: drop what is not yet on the wire (but
            // the rest of a frame partly written).
            let keep = usize::from(self.partial);
            self.release_pending(keep);
        }
        if let Some((buffered, max)) = drained.overflow {
            let closing = self.conn.member.queue.policy() == Backpressure::Close;
            self.report(&Error::new(Kind::QueueFull {
                buffered,
                max,
                closing,
            }));
        }
        if let Some((code, reason)) = drained.close {
            self.send_close(code, reason);
        }
        drained.force
    }

    /// Feeds `input` to the protocol and delivers events until it needs
    /// more bytes or an async handler is running; then moves what the
    /// handlers queued into `pending`, in the lock that clears `driving`.
    fn deliver(&mut self, input: &mut BytesMut) {
        self.conn.member.queue.start_driving();
        self.deliver_events(input);
        // A forced drop is seen by the next round's drain.
        let _ = self.drain_outbox(true);
    }

    fn deliver_events(&mut self, input: &mut BytesMut) {
        // After events stop (a handler panicked, the message rate was
        // passed) the protocol still reads, to finish the close handshake.
        // `proto`'s own output (pongs, close frames): rare, so not a buffer
        // every connection keeps.
        let mut replies = BytesMut::new();
        while self.running.is_none() {
            let result = self.proto.read(input, &mut replies);
            if !replies.is_empty() {
                // What handlers queued for earlier events goes out before
                // the protocol's own answer (a pong; or the close reply, or
                // the close for an error in this input, which is the close
                // point).
                if self.proto.is_open() {
                    let _ = self.drain_outbox(false);
                } else {
                    self.close_point();
                }
                self.take_replies(&mut replies);
            }
            match result {
                Ok(Some(event)) if !self.events_stopped => self.dispatch(event),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(
                        id = %self.conn.id(),
                        code = e.close_code().0,
                        "protocol error from client: {e}"
                    );
                    self.report(&Error::new(Kind::Protocol(e)));
                    self.start_deadline(Duration::from_millis(self.close_timeout_ms.into()));
                    break;
                }
            }
        }
    }

    fn dispatch(&mut self, event: Event) {
        let message = match &event {
            Event::Text(text) => Some(text.as_bytes()),
            Event::Binary(data) => Some(data),
            _ => None,
        };
        if let Some(message) = message {
            if !self.within_message_rate() {
                return;
            }
            let metrics = &self.conn.member.hub.metrics;
            metrics.add(Count::MessagesIn, 1);
            metrics.add(Count::BytesIn, message.len() as u64);
            io::hold_received(message);
        }
        let result = match event {
            Event::Text(text) => self.handlers.message.call(&self.conn, text),
            Event::Binary(data) => self.handlers.binary.call(&self.conn, data),
            Event::Ping(data) => match self.handlers.rare_mut() {
                Some(rare) => rare.ping.call(&self.conn, data),
                None => Ok(None),
            },
            Event::Pong(data) => match self.handlers.rare_mut() {
                Some(rare) => rare.pong.call(&self.conn, data),
                None => Ok(None),
            },
            Event::Close(frame) => {
                let code = frame.map_or(CloseCode::NO_STATUS, |f| f.code);
                tracing::debug!(id = %self.conn.id(), code = code.0, "close received");
                Ok(None)
            }
        };
        match result {
            Ok(future) => self.running = future,
            Err(panic) => self.handler_panicked(panic),
        }
    }

    /// Counts a message against the rate limit; past it, closes with 1008
    /// and delivers no more events.
    fn within_message_rate(&mut self) -> bool {
        let Some((limit, bucket)) = self.message_rate.as_deref_mut() else {
            return true;
        };
        if bucket.take(limit, self.conn.member.hub.now_ms()) {
            return true;
        }
        tracing::info!(id = %self.conn.id(), "message rate limit: closing with 1008");
        self.stop_and_close(CloseCode::POLICY_VIOLATION, "message rate limit");
        false
    }

    /// Delivers no more events, refuses further sends, and starts the close
    /// handshake with `code`.
    fn stop_and_close(&mut self, code: CloseCode, reason: &str) {
        self.events_stopped = true;
        // What handlers queued before goes out ahead of the close.
        self.close_point();
        self.send_close(code, reason.to_owned());
    }

    /// Writes this side's close frame (unless one was sent) and starts
    /// waiting for the peer's answer.
    fn send_close(&mut self, code: CloseCode, reason: String) {
        let mut replies = BytesMut::new();
        if self.proto.close(Some(code), &reason, &mut replies).is_ok() {
            self.start_deadline(Duration::from_millis(self.close_timeout_ms.into()));
        }
        self.take_replies(&mut replies);
    }

    /// Moves the protocol's replies to `pending`.
    fn take_replies(&mut self, replies: &mut BytesMut) {
        if !replies.is_empty() {
            let reply = replies.split().freeze();
            self.conn.member.queue.add_own(reply.len());
            self.pending.push_back(Item::Bytes(reply));
        }
    }

    /// Encodes the messages in `pending` that wait for this connection's
    /// compression context, in order.
    fn encode_deferred(&mut self) {
        if !std::mem::take(&mut self.deferred) {
            return;
        }
        let queue = &self.conn.member.queue;
        let mut i = 0;
        while i < self.pending.len() {
            match std::mem::replace(&mut self.pending[i], Item::Bytes(Bytes::new())) {
                other @ (Item::Bytes(_) | Item::Shared(_)) => self.pending[i] = other,
                Item::Deferred(opcode, payload) => {
                    let estimate = estimate(payload.len());
                    let encoded = match opcode {
                        OpCode::Text | OpCode::Binary => {
                            let kind = if opcode == OpCode::Text {
                                MessageKind::Text
                            } else {
                                MessageKind::Binary
                            };
                            self.proto
                                .encode_message(kind, payload)
                                .map(EncodedFrame::into_parts)
                        }
                        control => self
                            .proto
                            .encode_control(control, &payload)
                            .map(|frame| (frame, None)),
                    };
                    match encoded {
                        Ok((head, body)) => {
                            let len = head.len() + body.as_ref().map_or(0, Bytes::len);
                            queue.recharge(estimate, len);
                            self.pending[i] = Item::Bytes(head);
                            if let Some(body) = body {
                                i += 1;
                                self.pending.insert(i, Item::Bytes(body));
                            }
                        }
                        Err(e) => {
                            // Handles check control payloads' length: not
                            // expected.
                            tracing::error!(id = %self.conn.id(), "cannot encode a queued frame: {e}");
                            queue.written(estimate, estimate);
                            self.pending.remove(i);
                            continue;
                        }
                    }
                }
            }
            i += 1;
        }
    }

    fn report(&mut self, error: &Error) {
        if let Some(handler) = self.handlers.rare_mut().and_then(|r| r.error.as_mut()) {
            let conn = &self.conn;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| handler(conn, error))) {
                tracing::error!(id = %conn.id(), "on_error handler panicked: {}", panic_message(&*panic));
            }
        }
    }

    /// A handler panicked: close this connection with 1011, deliver no more
    /// events; other connections are untouched.
    fn handler_panicked(&mut self, message: String) {
        tracing::error!(id = %self.conn.id(), "handler panicked: {message}; closing with 1011");
        self.stop_and_close(CloseCode::INTERNAL_ERROR, "handler panicked");
        self.report(&Error::new(Kind::HandlerPanic(message)));
    }

    fn start_deadline(&mut self, after: Duration) {
        if self.deadline.is_none() {
            self.deadline = Some(Box::pin(tokio::time::sleep(after)));
        }
    }

    /// Once the close handshake is over and flushed: shut the write side,
    /// then linger for the peer's end of stream. Returns the outcome when
    /// the connection is over.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Option<CloseInfo> {
        if !self.proto.is_closed() || !self.pending.is_empty() {
            return None;
        }
        if self.phase == Phase::Running {
            self.phase = Phase::Lingering;
            self.deadline = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        if self.shut {
            return None;
        }
        match Pin::new(&mut self.stream).poll_shutdown(cx) {
            Poll::Ready(Ok(())) => {
                self.shut = true;
                None
            }
            Poll::Ready(Err(_)) => Some(self.outcome()),
            Poll::Pending => None,
        }
    }

    /// The peer closed its side of the TCP connection.
    fn peer_gone(&mut self) -> CloseInfo {
        if self.proto.is_closed() {
            self.outcome()
        } else {
            tracing::debug!(id = %self.conn.id(), "connection dropped without a close frame");
            self.unfinished("connection dropped without a close frame")
        }
    }

    fn io_failed(&mut self, error: std::io::Error) -> CloseInfo {
        if self.proto.is_closed() {
            return self.outcome();
        }
        tracing::debug!(id = %self.conn.id(), "socket error: {error}");
        let info = CloseInfo::abnormal(format!("socket error: {error}"));
        self.report(&Error::new(Kind::Io(error)));
        info
    }

    fn timed_out(&mut self) -> CloseInfo {
        if self.phase == Phase::Lingering {
            return self.outcome();
        }
        tracing::debug!(id = %self.conn.id(), "no close frame from the peer in time");
        self.unfinished("close timeout")
    }

    /// The outcome when the close handshake could not finish: the first
    /// close's code if there was one, else 1006.
    fn unfinished(&self, why: &str) -> CloseInfo {
        let CloseFrame { code, reason } = self.proto.first_close().cloned().unwrap_or(CloseFrame {
            code: CloseCode::ABNORMAL,
            reason: why.to_owned(),
        });
        CloseInfo {
            code,
            reason,
            clean: false,
        }
    }

    /// The outcome once the close handshake is over.
    fn outcome(&self) -> CloseInfo {
        let CloseFrame { code, reason } = self.proto.first_close().cloned().unwrap_or(CloseFrame {
            code: CloseCode::ABNORMAL,
            reason: String::new(),
        });
        let clean = self.proto.close_sent() && self.proto.close_received();
        CloseInfo {
            code,
            reason,
            clean,
        }
    }

    /// Marks the connection ended and fires `on_close`.
    async fn end(&mut self, info: CloseInfo) {
        self.release_pending(0);
        self.conn.member.queue.end();
        self.running = None;
        self.close_fired = true;
        // Out of the registry and its topics before `on_close`, so that the
        // handler sees the others only (a "left" notice, a member count).
        let hub = &self.conn.member.hub;
        hub.unregister(&self.conn.member);
        tracing::debug!(id = %self.conn.id(), code = info.code.0, clean = info.clean, "connection ended");
        hub.metrics.closed(info.code.0);
        match self.handlers.close.call(&self.conn, info) {
            Ok(None) => {}
            Ok(Some(future)) => {
                if let Err(panic) = guarded(future).await {
                    tracing::error!(id = %self.conn.id(), "on_close handler panicked: {panic}");
                }
            }
            Err(panic) => {
                tracing::error!(id = %self.conn.id(), "on_close handler panicked: {panic}")
            }
        }
    }
}

impl<S> Driver<S> {
    /// Drops `pending` but its first `keep` items, off the counts.
    fn release_pending(&mut self, keep: usize) {
        let (mut n, mut charged) = (0, 0);
        for item in self.pending.drain(keep.min(self.pending.len())..) {
            n += match &item {
                Item::Deferred(_, payload) => estimate(payload.len()),
                other => other.bytes().len(),
            };
            charged += item.charged();
        }
        self.conn.member.queue.written(n, charged);
    }
}

impl<S> Drop for Driver<S> {
    fn drop(&mut self) {
        self.fire_close_if_cancelled();
        self.places.release(&self.conn.member);
    }
}

impl<S> Driver<S> {
    /// The task was cancelled before `end` ran (the runtime is shutting
    /// down): `on_close` still runs, once.
    fn fire_close_if_cancelled(&mut self) {
        if self.close_fired {
            return;
        }
        self.close_fired = true;
        self.release_pending(0);
        self.conn.member.queue.end();
        let hub = &self.conn.member.hub;
        hub.unregister(&self.conn.member);
        hub.metrics.closed(CloseCode::ABNORMAL.0);
        let info = CloseInfo::abnormal("connection task cancelled");
        if let Ok(Some(future)) = self.handlers.close.call(&self.conn, info) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(guarded(future));
            }
        }
    }
}

/// Runs a handler future, turning a panic into its message.
async fn guarded(mut future: BoxFuture) -> Result<(), String> {
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic_message(&*panic))),
        },
    )
    .await
}
