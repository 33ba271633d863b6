//! The sweep: one task per hub that pings silent connections, closes
//! idle ones, drops readers that stalled, and makes room when the server's
//! budget for queued bytes is spent.
//!
//! Each read marks its connection [`ACTIVE`] (a plain atomic store, no
//! clock read), and so does each write; the sweep replaces the marks with
//! its own time and measures silence (or a stall) from there. Neither is
//! ever overestimated, and each is noticed at most one sweep tick (a quarter
//! of the shortest interval, at most 5 s) late. That costs each connection
//! 24 bytes instead of timers of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hubbub_proto::{CloseCode, OpCode};
use tokio::task::JoinHandle;

use crate::config::ServerConfig;
use crate::hub::{ACTIVE, HubState, Member};

/// The intervals the sweep keeps.
#[derive(Clone, Copy)]
struct Intervals {
    ping: Option<Duration>,
    idle: Option<Duration>,
    stall: Option<Duration>,
}

/// Starts the hub's sweep (it also sets the budget's bound). The task
/// keeps only a weak reference: it ends once the hub is gone.
pub(crate) fn spawn(hub: &Arc<HubState>, config: &ServerConfig) -> JoinHandle<()> {
    hub.budget.set_max(config.max_total_queue_bytes);
    let intervals = Intervals {
        ping: config.ping_interval,
        idle: config.idle_timeout,
        stall: config.stall_timeout,
    };
    let shortest = [intervals.ping, intervals.idle, intervals.stall]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(20));
    let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let weak = Arc::downgrade(hub);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(hub) = weak.upgrade() else { return };
            let refused = tokio::select! {
                _ = interval.tick() => false,
                () = hub.budget.exhausted.notified() => true,
            };
            let now = hub.now_ms();
            let members = hub.clients.all();
            for member in &members {
                check(member, now, intervals);
            }
            make_room(&hub, members, refused);
        }
    })
}

/// Replaces an activity mark with `now`; returns when activity was last
/// seen.
fn since(mark: &AtomicU64, now: u64) -> u64 {
    let at = mark.load(Ordering::Relaxed);
    if at == ACTIVE {
        // Activity since the last tick: quiet from now on at most. (A mark
        // made after this stays for the next tick.)
        let _ = mark.compare_exchange(ACTIVE, now, Ordering::Relaxed, Ordering::Relaxed);
        return now;
    }
    at
}

/// When a send was `refused` for the budget (or the budget is passed),
/// closes the connections holding the most bytes (1013), dropping their
/// queues, until half the budget is free.
fn make_room(hub: &HubState, mut members: Vec<Arc<Member>>, refused: bool) {
    let budget = &hub.budget;
    if !refused && budget.used() <= budget.max() {
        return;
    }
    let target = budget.max() / 2;
    members.sort_by_key(|m| std::cmp::Reverse(m.queue.buffered()));
    // What the evicted hold is given back as their drivers drop it: count
    // it as freed now, so as not to evict more than needed.
    let mut freed = 0;
    for member in members {
        let held = member.queue.buffered();
        if budget.used().saturating_sub(freed) <= target || held == 0 {
            break;
        }
        if member.queue.evict(
            CloseCode::TRY_AGAIN_LATER,
            "server busy: send queue dropped",
        ) {
            freed += held;
            tracing::warn!(
                id = %member.id(),
                held,
                used = budget.used(),
                max = budget.max(),
                "server send budget spent: closing the largest queue with 1013"
            );
        }
    }
}

fn check(member: &Member, now: u64, intervals: Intervals) {
    let Intervals { ping, idle, stall } = intervals;
    if let Some(stall) = stall {
        let progress = since(&member.last_progress, now);
        if member.queue.buffered() == 0 {
            // Nothing waiting: not stalled, whatever the last write.
            member.last_progress.store(now, Ordering::Relaxed);
        } else if now.saturating_sub(progress) >= stall.as_millis() as u64 {
            tracing::info!(
                id = %member.id(),
                queued = member.queue.buffered(),
                "stalled reader: nothing written for {stall:?}; dropping"
            );
            member.queue.force("stalled reader: no write progress");
            return;
        }
    }
    let seen = since(&member.last_seen, now);
    let silent = now.saturating_sub(seen);
    if let Some(idle) = idle {
        if silent >= idle.as_millis() as u64 {
            if member.close(CloseCode::GOING_AWAY, "idle timeout").is_ok() {
                tracing::info!(id = %member.id(), silent_ms = silent, "idle timeout: closing with 1001");
            }
            return;
        }
    }
    if let Some(ping) = ping {
        let interval = ping.as_millis() as u64;
        let since_ping = now.saturating_sub(member.last_ping.load(Ordering::Relaxed));
        if silent >= interval && since_ping >= interval {
            member.last_ping.store(now, Ordering::Relaxed);
            let _ = member.send_control(OpCode::Ping, Bytes::new());
        }
    }
}
