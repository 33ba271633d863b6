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
//! Streams handed to a [`Hub`](crate::Hub) by the caller (hyper, axum, a
//! Unix socket) and client connections keep a task each: the caller
//! spawns them, and nothing here would be shared.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;
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

/// The sets of one group of listeners.
pub(crate) struct Sets {
    sets: Box<[Arc<Shared>]>,
    tasks: Vec<JoinHandle<()>>,
    next: usize,
}

impl Sets {
    /// One set per worker thread of the current runtime (at least one).
    pub(crate) fn start() -> Self {
        let workers = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        let sets: Box<[Arc<Shared>]> = (0..workers).map(|_| Arc::new(Shared::default())).collect();
        let tasks = sets
            .iter()
            .map(|shared| {
                // The set keeps its own fairness (`POLLS_PER_PASS`): tokio's
                // per-task budget would make every socket past the 128th of
                // a pass report "not ready" and cost a spurious round trip.
                tokio::spawn(tokio::task::unconstrained(Set::new(shared.clone())))
            })
            .collect();
        Self {
            sets,
            tasks,
            next: 0,
        }
    }

    /// Hands a connection's future to the next set, round robin.
    #[cfg(test)]
    pub(crate) fn spawn(&mut self, future: BoxFuture) {
        self.add(Job::Running(future));
    }

    /// Hands a connection's opening to the next set, round robin; the
    /// future it ends with takes its place in the slot.
    pub(crate) fn open(&mut self, opening: Opening) {
        self.add(Job::Opening(opening));
    }

    fn add(&mut self, job: Job) {
        let shared = &self.sets[self.next];
        self.next = (self.next + 1) % self.sets.len();
        shared.live.fetch_add(1, Ordering::Relaxed);
        lock(&shared.incoming).push(job);
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
    pub(crate) async fn finish(mut self, limit: std::time::Duration) -> usize {
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
    incoming: Mutex<Vec<Job>>,
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
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            let first = {
                let mut ready = lock(&self.shared.ready);
                let first = ready.is_empty();
                if crate::outbox::waking_for_output() {
                    ready.output.push(self.index);
                } else {
                    ready.input.push(self.index);
                }
                first
            };
            // The set takes the whole lists at once: whoever made them
            // non-empty wakes the set, and a broadcast to many slots of
            // one set wakes it once.
            if first {
                self.shared.waker.wake();
            }
        }
    }
}

/// An occupied slot: the connection's future and its waker.
struct Slot {
    job: Job,
    flag: Arc<SlotWaker>,
    waker: Waker,
}

/// A set's task: the slab and what is left of the current pass.
struct Set {
    shared: Arc<Shared>,
    slots: Vec<Option<Slot>>,
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
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            slots: Vec::new(),
            free: Vec::new(),
            input: VecDeque::new(),
            output: VecDeque::new(),
            spare: Ready::default(),
            yielding: None,
        }
    }

    fn insert(&mut self, job: Job) {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(None);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 connections per set")
            }
        };
        let flag = Arc::new(SlotWaker {
            shared: self.shared.clone(),
            index,
            queued: AtomicBool::new(true),
        });
        let waker = Waker::from(flag.clone());
        self.slots[index as usize] = Some(Slot { job, flag, waker });
        self.output.push_back(index);
    }

    /// Polls one slot; frees it when its connection has ended (or
    /// panicked).
    fn poll_slot(&mut self, index: u32) {
        let Some(Some(slot)) = self.slots.get_mut(index as usize) else {
            // Woken by a waker of a connection that has ended.
            return;
        };
        slot.flag.queued.store(false, Ordering::Release);
        let mut cx = Context::from_waker(&slot.waker);
        let done = match catch_unwind(AssertUnwindSafe(|| slot.job.poll(&mut cx))) {
            Ok(Poll::Pending) => false,
            Ok(Poll::Ready(())) => true,
            Err(panic) => {
                tracing::error!("connection task panicked: {}", panic_message(&*panic));
                true
            }
        };
        if done {
            let slot = self.slots[index as usize].take();
            if catch_unwind(AssertUnwindSafe(|| drop(slot))).is_err() {
                tracing::error!("connection task panicked as it was dropped");
            }
            self.free.push(index);
            self.shared.live.fetch_sub(1, Ordering::Relaxed);
        }
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
        for job in incoming {
            this.insert(job);
        }
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
        let mut sets = Sets::start();
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
        let mut sets = Sets::start();
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
        let mut sets = Sets::start();
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
        let mut sets = Sets::start();
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
