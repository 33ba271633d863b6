//! Connections without a task each: the connections hubbub accepts on its
//! own listeners live in a few **connection sets**, one per runtime worker,
//! each a slab of connection futures polled as one tokio task.
//!
//! A connection's socket readiness, a send to it, its timer: whatever wakes
//! it marks its slot ready (one flag, and its index pushed on one of the
//! set's two ready lists: output for a wake from its queue, input for any
//! other) and, if those lists were empty, wakes the set's task. The set's
//! task then polls the ready slots one after the other, input first within
//! a share of each pass. So a broadcast to a thousand subscribers wakes each
//! set once, not each subscriber's task; and an idle connection costs a
//! slab entry and a small waker instead of a task cell and a join-set
//! entry.
//!
//! The price, as for every event loop that owns many sockets (uWebSockets'
//! included): a handler that blocks its thread delays every connection of
//! its set, where with a task each only the connections behind it on that
//! worker waited. CPU-heavy work belongs in `spawn_blocking` or a task of
//! its own. A panic stays the connection's own: the set catches it, drops
//! that connection (its `on_close` runs) and goes on with the others.
//!
//! A set also polls its connections' sockets itself: each set has an
//! `epoll` instance of its own (`mio::Poll`), registered with tokio's as
//! one source, and each accepted socket is registered there with its slot's
//! index ([`SetStream`]). A socket's readiness thus costs a byte in its
//! slot's waker, where tokio's own socket state (`ScheduledIo`, 256 bytes
//! allocated cache-aligned, and a registration in the socket) cost every
//! connection about 400 bytes of RSS. One `epoll_wait` on the set's
//! instance takes the events of all its sockets that became ready.
//!
//! Streams handed to a [`Hub`](crate::Hub) by the caller (hyper, axum, a
//! Unix socket) and client connections keep a task each: the caller
//! spawns them, and nothing here would be shared.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use futures_task::{ArcWake, waker_ref};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

use crate::socket::{BoxFuture, panic_message};

/// Slots polled in one pass before the set yields to the runtime's other
/// tasks (the accept loop, the sweeps, the other sets). A pass that stops
/// early keeps the rest for the next one, in order.
const POLLS_PER_PASS: usize = 64;

/// Of a pass's polls, at most this many go to slots woken as input (their
/// socket, a timer) before those woken as output (a send queued for them):
/// input first, so that the writes of a pass carry what the input queued;
/// but output always gets a share, so that neither kind can starve the
/// other.
const INPUT_SHARE: usize = 48;

/// Socket events taken from the set's `epoll` instance per call.
const EVENTS: usize = 256;

/// A socket's readiness, as its slot's waker keeps it: set by an event,
/// cleared by a read or write that found the socket empty or full.
const READABLE: u8 = 1;
const WRITABLE: u8 = 2;
/// How far a readiness's "closed" bit sits from it.
const CLOSED: u8 = 2;
/// The end of the socket's input, or an error: never cleared (an event
/// that says so may have come with the last bytes, and a read that got
/// those bytes and not the end must not wait for another).
const READ_CLOSED: u8 = READABLE << CLOSED;
/// The peer takes no more, or an error: never cleared.
const WRITE_CLOSED: u8 = WRITABLE << CLOSED;

/// The sets of one group of listeners.
pub(crate) struct Sets {
    sets: Box<[Arc<Shared>]>,
    tasks: Vec<JoinHandle<()>>,
    next: usize,
}

impl Sets {
    /// One set per worker thread of the current runtime (at least one).
    /// Fails when an `epoll` instance cannot be made (out of descriptors).
    pub(crate) fn start() -> io::Result<Self> {
        let workers = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        let sets: Box<[Arc<Shared>]> = (0..workers).map(|_| Arc::new(Shared::default())).collect();
        let mut tasks = Vec::with_capacity(workers);
        for shared in sets.iter() {
            let set = Set::new(shared.clone())?;
            // The set keeps its own fairness (`POLLS_PER_PASS`): tokio's
            // per-task budget would make every socket past the 128th of a
            // pass report "not ready" and cost a spurious round trip.
            tasks.push(tokio::spawn(tokio::task::unconstrained(set)));
        }
        Ok(Self {
            sets,
            tasks,
            next: 0,
        })
    }

    /// Hands a connection's future to the next set, round robin.
    #[cfg(test)]
    pub(crate) fn spawn(&mut self, future: BoxFuture) {
        self.add(Incoming::Job(Job::Running(future)));
    }

    /// Hands an accepted socket to the next set, round robin: the set
    /// polls it as a [`SetStream`] and runs the opening `open` makes of
    /// it; the future that opening ends with takes its place in the slot.
    pub(crate) fn accept(&mut self, socket: mio::net::TcpStream, open: Open) {
        self.add(Incoming::Accept(socket, open));
    }

    fn add(&mut self, incoming: Incoming) {
        let shared = &self.sets[self.next];
        self.next = (self.next + 1) % self.sets.len();
        shared.live.fetch_add(1, Ordering::Relaxed);
        lock(&shared.incoming).push(incoming);
        shared.waker.wake();
    }

    /// Connections in all sets, handshakes included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sets
            .iter()
            .map(|s| s.live.load(Ordering::Relaxed))
            .sum()
    }

    /// Takes no more connections; each set ends once its last one has.
    /// Returns when all have, or after `limit`: then the rest are dropped
    /// (each runs `on_close` as its driver is dropped) and it returns the
    /// number dropped.
    pub(crate) async fn finish(mut self, limit: Duration) -> usize {
        for shared in self.sets.iter() {
            shared.closing.store(true, Ordering::Release);
            shared.waker.wake();
        }
        let mut tasks = std::mem::take(&mut self.tasks);
        let all = async {
            for task in &mut tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_ok() {
            return 0;
        }
        let left = self
            .sets
            .iter()
            .map(|s| s.live.load(Ordering::Relaxed))
            .sum();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        left
    }
}

impl Drop for Sets {
    /// Dropped without `finish` (the accept loop's own task was
    /// cancelled): the connections go with it, as a join set's would.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A connection's opening (TLS, the handshake): it ends with the open
/// connection's future, or `None` when the connection did not open.
pub(crate) type Opening = Pin<Box<dyn Future<Output = Option<BoxFuture>> + Send>>;

/// Makes an accepted socket's opening once its set polls it.
pub(crate) type Open = Box<dyn FnOnce(SetStream) -> Opening + Send>;

/// A connection on its way into a set.
enum Incoming {
    /// A future to run as it is.
    #[cfg(test)]
    Job(Job),
    /// An accepted socket, to register with the set's `epoll` instance.
    Accept(mio::net::TcpStream, Open),
}

/// What a slot runs: the opening, then the connection. (The opening's
/// state is freed when it ends: an open connection keeps one box.)
enum Job {
    Opening(Opening),
    Running(BoxFuture),
}

impl Job {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self {
                Self::Running(future) => return future.as_mut().poll(cx),
                Self::Opening(opening) => match opening.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Ready(Some(running)) => *self = Self::Running(running),
                },
            }
        }
    }
}

/// Slots woken since the set last looked, by kind.
#[derive(Default)]
struct Ready {
    /// By their socket, a timer, anything but their queue.
    input: Vec<u32>,
    /// By their queue: a send, a close request
    /// ([`crate::outbox::waking_for_output`]).
    output: Vec<u32>,
}

impl Ready {
    fn is_empty(&self) -> bool {
        self.input.is_empty() && self.output.is_empty()
    }
}

/// What wakers and the accept loop share with a set's task.
#[derive(Default)]
struct Shared {
    /// Slots woken since the set last took these lists.
    ready: Mutex<Ready>,
    /// Connections handed over and not yet in the slab.
    incoming: Mutex<Vec<Incoming>>,
    /// The set's task.
    waker: AtomicWaker,
    /// Connections in the set (and on their way in).
    live: AtomicUsize,
    /// No more connections come: end once empty.
    closing: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// One slot's waker: marks the slot ready and wakes the set.
struct SlotWaker {
    shared: Arc<Shared>,
    index: u32,
    /// On the ready list already (cleared just before the slot is polled,
    /// so that a wake during the poll puts it back).
    queued: AtomicBool,
    /// The readiness of the slot's socket, if the set polls one
    /// ([`READABLE`], [`WRITABLE`]). Only the set's task touches it (its
    /// events, and the slot's poll): atomic only to be shared.
    io: AtomicU8,
}

impl SlotWaker {
    /// Whether the socket is ready for `ready` ([`READABLE`] or
    /// [`WRITABLE`]), or closed that way.
    fn is(&self, ready: u8) -> bool {
        self.io.load(Ordering::Relaxed) & (ready | ready << CLOSED) != 0
    }

    fn clear(&self, ready: u8) {
        self.io.fetch_and(!ready, Ordering::Relaxed);
    }
}

impl ArcWake for SlotWaker {
    fn wake_by_ref(this: &Arc<Self>) {
        if !this.queued.swap(true, Ordering::AcqRel) {
            let first = {
                let mut ready = lock(&this.shared.ready);
                let first = ready.is_empty();
                if crate::outbox::waking_for_output() {
                    ready.output.push(this.index);
                } else {
                    ready.input.push(this.index);
                }
                first
            };
            // The set takes the whole lists at once: whoever made them
            // non-empty wakes the set, and a broadcast to many slots of
            // one set wakes it once.
            if first {
                this.shared.waker.wake();
            }
        }
    }
}

/// An occupied slot: the connection's future and its waker (a `Waker` is
/// made of it for each poll, without touching its count: 16 bytes less per
/// slot than keeping one).
struct Slot {
    job: Job,
    flag: Arc<SlotWaker>,
}

/// Slots in pages of [`PAGE`]: the slab grows a page at a time, so its
/// spare room is under a page, not up to as much again as it holds (a
/// `Vec` doubling: 20 bytes more per connection, on average, at 10,000).
#[derive(Default)]
struct Slab {
    pages: Vec<Box<[Option<Slot>]>>,
    /// Slots made so far (used, or on the free list).
    len: usize,
}

/// Slots per page of a [`Slab`] (16 KiB).
const PAGE: usize = 512;

impl Slab {
    /// A new empty slot's index.
    fn grow(&mut self) -> usize {
        if self.len % PAGE == 0 {
            self.pages.push((0..PAGE).map(|_| None).collect());
        }
        self.len += 1;
        self.len - 1
    }

    /// The slot at `index`, which [`Slab::grow`] made.
    fn entry(&mut self, index: usize) -> &mut Option<Slot> {
        &mut self.pages[index / PAGE][index % PAGE]
    }

    fn get(&self, index: usize) -> Option<&Slot> {
        self.pages.get(index / PAGE)?[index % PAGE].as_ref()
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut Slot> {
        self.pages.get_mut(index / PAGE)?[index % PAGE].as_mut()
    }
}

/// A set's task: the slab and what is left of the current pass.
struct Set {
    shared: Arc<Shared>,
    /// The set's `epoll` instance, for its sockets; tokio polls it as one
    /// source.
    poll: AsyncFd<mio::Poll>,
    events: mio::Events,
    slots: Slab,
    free: Vec<u32>,
    /// Slots woken as input, to poll first (in the order woken).
    input: VecDeque<u32>,
    /// Slots woken as output, and new ones, to poll in turn.
    output: VecDeque<u32>,
    /// The ready lists' spare buffers (they swap places each pass).
    spare: Ready,
    /// A yield in progress: set after a full pass, so that the runtime
    /// polls its I/O driver (and its other tasks run) before the next.
    yielding: Option<BoxFuture>,
}

impl Set {
    fn new(shared: Arc<Shared>) -> io::Result<Self> {
        let poll = crate::sys::register(mio::Poll::new()?)?;
        Ok(Self {
            shared,
            poll,
            events: mio::Events::with_capacity(EVENTS),
            slots: Slab::default(),
            free: Vec::new(),
            input: VecDeque::new(),
            output: VecDeque::new(),
            spare: Ready::default(),
            yielding: None,
        })
    }

    fn insert(&mut self, incoming: Incoming) {
        let index = match self.free.pop() {
            Some(index) => index,
            None => u32::try_from(self.slots.grow()).expect("fewer than 2^32 connections per set"),
        };
        let flag = Arc::new(SlotWaker {
            shared: self.shared.clone(),
            index,
            queued: AtomicBool::new(true),
            // A new socket may have bytes already: try it once.
            io: AtomicU8::new(READABLE | WRITABLE),
        });
        let job = match incoming {
            #[cfg(test)]
            Incoming::Job(job) => job,
            Incoming::Accept(mut socket, open) => {
                let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
                let token = mio::Token(index as usize);
                if let Err(e) =
                    self.poll
                        .get_ref()
                        .registry()
                        .register(&mut socket, token, interest)
                {
                    tracing::warn!("cannot poll an accepted connection: {e}; closed");
                    self.free.push(index);
                    self.shared.live.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                Job::Opening(open(SetStream {
                    socket,
                    slot: flag.clone(),
                }))
            }
        };
        *self.slots.entry(index as usize) = Some(Slot { job, flag });
        self.output.push_back(index);
    }

    /// Polls one slot; frees it when its connection has ended (or
    /// panicked).
    fn poll_slot(&mut self, index: u32) {
        let Some(slot) = self.slots.get_mut(index as usize) else {
            // Woken by a waker of a connection that has ended.
            return;
        };
        slot.flag.queued.store(false, Ordering::Release);
        let waker = waker_ref(&slot.flag);
        let mut cx = Context::from_waker(&waker);
        let done = match catch_unwind(AssertUnwindSafe(|| slot.job.poll(&mut cx))) {
            Ok(Poll::Pending) => false,
            Ok(Poll::Ready(())) => true,
            Err(panic) => {
                tracing::error!("connection task panicked: {}", panic_message(&*panic));
                true
            }
        };
        if done {
            // (Dropping the socket closes it, which takes it out of the
            // `epoll` instance.)
            let slot = self.slots.entry(index as usize).take();
            if catch_unwind(AssertUnwindSafe(|| drop(slot))).is_err() {
                tracing::error!("connection task panicked as it was dropped");
            }
            self.free.push(index);
            self.shared.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes the events of the set's sockets: each marks its slot's
    /// readiness and, once, puts the slot on the input list.
    fn take_events(&mut self, cx: &mut Context<'_>) {
        let Self {
            poll,
            events,
            slots,
            input,
            ..
        } = self;
        loop {
            let mut guard = match poll.poll_read_ready_mut(cx) {
                Poll::Pending => return,
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => {
                    tracing::error!("connection set: polling its sockets failed: {e}");
                    return;
                }
            };
            match guard.get_inner_mut().poll(events, Some(Duration::ZERO)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("connection set: polling its sockets failed: {e}");
                    return;
                }
            }
            let mut taken = 0;
            for event in events.iter() {
                taken += 1;
                let Some(slot) = slots.get(event.token().0) else {
                    continue;
                };
                let mut ready = 0;
                if event.is_readable() {
                    ready |= READABLE;
                }
                if event.is_writable() {
                    ready |= WRITABLE;
                }
                if event.is_read_closed() || event.is_error() {
                    ready |= READ_CLOSED;
                }
                if event.is_write_closed() || event.is_error() {
                    ready |= WRITE_CLOSED;
                }
                slot.flag.io.fetch_or(ready, Ordering::Relaxed);
                if !slot.flag.queued.swap(true, Ordering::AcqRel) {
                    input.push_back(event.token().0 as u32);
                }
            }
            if taken < EVENTS {
                // All taken: tokio reports the instance again when a
                // socket's event arrives after this.
                guard.clear_ready();
            }
        }
    }
}

/// A socket a connection set polls itself: reads and writes go straight to
/// the socket while its slot's waker says it is ready, and a read or write
/// that finds it empty or full clears that and waits for the set's next
/// event for the socket (edge-triggered, as tokio's own sockets).
///
/// Only its slot's future polls it, with the slot's waker: the set wakes
/// the slot, not a waker the stream was given (a combinator that polls it
/// with a waker of its own, and waits for that one, would wait forever;
/// debug builds check).
pub(crate) struct SetStream {
    socket: mio::net::TcpStream,
    slot: Arc<SlotWaker>,
}

impl SetStream {
    /// Checks (in debug builds) that the stream is polled with its slot's
    /// waker.
    fn check_waker(&self, cx: &Context<'_>) {
        debug_assert!(
            std::ptr::eq(cx.waker().data(), Arc::as_ptr(&self.slot).cast()),
            "a SetStream is polled only by its slot's future"
        );
    }

    /// Runs `op` (a read or a write of `want` bytes) while the socket is
    /// ready for it (`ready`: [`READABLE`] or [`WRITABLE`]); `WouldBlock`,
    /// or fewer bytes than wanted (the socket is empty, or its buffer
    /// full), clears that until the set's next event for the socket.
    fn poll_io(
        &self,
        cx: &Context<'_>,
        ready: u8,
        want: usize,
        mut op: impl FnMut(&mio::net::TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if !self.slot.is(ready) {
            self.check_waker(cx);
            return Poll::Pending;
        }
        loop {
            match op(&self.socket) {
                Ok(n) => {
                    // (0 read is the end of the stream: nothing to clear.)
                    if n > 0 && n < want {
                        self.slot.clear(ready);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.slot.clear(ready);
                    self.check_waker(cx);
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining();
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        self.poll_io(cx, READABLE, want, |socket| crate::sys::recv(socket, buf))
            .map_ok(|_| ())
    }
}

impl AsyncWrite for SetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, WRITABLE, buf.len(), |mut socket| socket.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.poll_io(cx, WRITABLE, len, |mut socket| socket.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.shutdown(std::net::Shutdown::Write))
    }
}

impl Future for Set {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(yielding) = this.yielding.as_mut() {
            if yielding.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.yielding = None;
        }
        this.shared.waker.register(cx.waker());
        let incoming = std::mem::take(&mut *lock(&this.shared.incoming));
        for incoming in incoming {
            this.insert(incoming);
        }
        this.take_events(cx);
        {
            let mut ready = lock(&this.shared.ready);
            std::mem::swap(&mut *ready, &mut this.spare);
        }
        this.input.extend(this.spare.input.drain(..));
        this.output.extend(this.spare.output.drain(..));
        // Input first (up to its share), then output, then input again if
        // the pass has room: each kind in the order it was woken.
        let mut polls = 0;
        loop {
            let next = if polls < INPUT_SHARE {
                this.input.pop_front().or_else(|| this.output.pop_front())
            } else {
                this.output.pop_front().or_else(|| this.input.pop_front())
            };
            let Some(index) = next else { break };
            this.poll_slot(index);
            polls += 1;
            if polls == POLLS_PER_PASS {
                // tokio wakes a yielding task after polling its I/O
                // driver: the sockets that became ready meanwhile are
                // first in the next pass.
                let mut yielding: BoxFuture = Box::pin(tokio::task::yield_now());
                if yielding.as_mut().poll(cx).is_pending() {
                    this.yielding = Some(yielding);
                }
                return Poll::Pending;
            }
        }
        if this.shared.closing.load(Ordering::Acquire)
            && this.shared.live.load(Ordering::Relaxed) == 0
        {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    /// Many futures in one set: each runs to its end, woken by timers and
    /// by each other, on as many tasks as the runtime has workers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_set_runs_every_connection_to_its_end() {
        let mut sets = Sets::start().unwrap();
        assert_eq!(sets.sets.len(), 2);
        let done = Arc::new(AtomicU32::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        for i in 0..2000u32 {
            let done = done.clone();
            let notify = notify.clone();
            sets.spawn(Box::pin(async move {
                if i % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(u64::from(i % 7))).await;
                } else {
                    notify.notified().await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }));
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while done.load(Ordering::Relaxed) < 1000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the sleepers ran to their end");
        assert_eq!(sets.len(), 1000, "the waiters are still in");
        assert_eq!(done.load(Ordering::Relaxed), 1000);
        notify.notify_waiters();
        assert_eq!(sets.finish(Duration::from_secs(5)).await, 0);
        assert_eq!(done.load(Ordering::Relaxed), 2000);
    }

    /// A connection that panics is dropped alone; the set goes on, and a
    /// freed slot is used again.
    #[tokio::test]
    async fn a_panic_drops_only_its_own_connection() {
        let mut sets = Sets::start().unwrap();
        let done = Arc::new(AtomicU32::new(0));
        sets.spawn(Box::pin(async { panic!("boom") }));
        for _ in 0..3 {
            let done = done.clone();
            sets.spawn(Box::pin(async move {
                tokio::task::yield_now().await;
                done.fetch_add(1, Ordering::Relaxed);
            }));
        }
        // (No fixed wait: the panic's report, with a backtrace, can take
        // longer than the rest.)
        tokio::time::timeout(Duration::from_secs(5), async {
            while done.load(Ordering::Relaxed) < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the other connections ran to their end");
        assert_eq!(sets.len(), 0);
        assert!(sets.sets[0].ready.lock().unwrap().is_empty());
        assert_eq!(sets.finish(Duration::from_secs(1)).await, 0);
    }

    /// Slots that wake themselves on every poll (a steady stream of new
    /// wakes, more than a pass polls) cannot starve the slots left behind
    /// them: those still run to their end.
    #[tokio::test]
    async fn new_wakes_never_starve_older_slots() {
        let mut sets = Sets::start().unwrap();
        for _ in 0..200 {
            sets.spawn(Box::pin(std::future::poll_fn(|cx| {
                cx.waker().wake_by_ref();
                Poll::<()>::Pending
            })));
        }
        let done = Arc::new(AtomicU32::new(0));
        for _ in 0..10 {
            let done = done.clone();
            let mut polled = false;
            sets.spawn(Box::pin(std::future::poll_fn(move |cx| {
                if polled {
                    done.fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(());
                }
                polled = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            })));
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while done.load(Ordering::Relaxed) < 10 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the slots behind the busy ones ran to their end");
        assert_eq!(sets.finish(Duration::from_millis(10)).await, 200);
    }

    /// Sockets the set polls itself: each echoes 4 MiB (more than the
    /// sockets' buffers hold, so reads find them empty and writes find them
    /// full, and wait for the set's next event), sees the end of its stream
    /// and shuts down; and a reset that comes right behind a few bytes (one
    /// event for both, often) reaches its connection after those bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_set_polls_its_own_sockets_to_the_end_of_their_streams() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sets = Sets::start().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (ended, errors) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let mut clients = Vec::new();
        for _ in 0..5 {
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (socket, _) = listener.accept().unwrap();
            socket.set_nonblocking(true).unwrap();
            let (ended, errors) = (ended.clone(), errors.clone());
            let echo = move |mut stream: SetStream| -> Opening {
                Box::pin(async move {
                    let mut buf = vec![0u8; 3000];
                    loop {
                        let echoed = match stream.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(n) => stream.write_all(&buf[..n]).await,
                            Err(e) => Err(e),
                        };
                        if echoed.is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                            return None;
                        }
                    }
                    stream.shutdown().await.unwrap();
                    ended.fetch_add(1, Ordering::Relaxed);
                    None
                })
            };
            sets.accept(mio::net::TcpStream::from_std(socket), Box::new(echo));
            clients.push(client);
        }
        let reset = clients.pop().unwrap();
        let data: Arc<Vec<u8>> = Arc::new((0..4 << 20).map(|i: u32| (i % 251) as u8).collect());
        let mut echoes = Vec::new();
        for client in clients {
            let data = data.clone();
            echoes.push(tokio::spawn(async move {
                let (mut read, mut write) = client.into_split();
                let sent = data.clone();
                let writer = tokio::spawn(async move {
                    write.write_all(&sent).await.unwrap();
                    write.shutdown().await.unwrap();
                });
                let mut back = Vec::new();
                read.read_to_end(&mut back).await.unwrap();
                writer.await.unwrap();
                assert!(back == *data, "the echo differs");
            }));
        }
        tokio::time::timeout(Duration::from_secs(20), async {
            for echo in echoes {
                echo.await.unwrap();
            }
        })
        .await
        .expect("every echo came back whole");
        let mut reset = reset;
        reset.write_all(b"the last words").await.unwrap();
        #[expect(deprecated, reason = "an abortive close is what this test needs")]
        reset.set_linger(Some(Duration::ZERO)).unwrap();
        drop(reset);
        tokio::time::timeout(Duration::from_secs(5), async {
            while ended.load(Ordering::Relaxed) < 4 || errors.load(Ordering::Relaxed) < 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the ends and the reset reached the connections");
        assert_eq!(sets.finish(Duration::from_secs(1)).await, 0);
    }

    /// Past the limit, `finish` drops what is left (their destructors run)
    /// and says how many.
    #[tokio::test]
    async fn finish_drops_connections_past_the_limit() {
        struct Dropped(Arc<AtomicU32>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut sets = Sets::start().unwrap();
        let dropped = Arc::new(AtomicU32::new(0));
        for _ in 0..5 {
            let guard = Dropped(dropped.clone());
            sets.spawn(Box::pin(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            }));
        }
        tokio::task::yield_now().await;
        assert_eq!(sets.finish(Duration::from_millis(50)).await, 5);
        assert_eq!(dropped.load(Ordering::Relaxed), 5);
    }
}
