//! Keepalive: one sweep per server pings silent connections and closes
//! idle ones.
//!
//! Each read marks its connection [`ACTIVE`] (a plain atomic store, no
//! clock read); the sweep replaces the mark with its own time and measures
//! silence from there. Silence is never overestimated, and is noticed at
//! most one sweep tick (a quarter of the shortest interval) late. That
//! costs each connection 16 bytes instead of a timer of its own, and the
//! sweep touches each connection a few times per interval.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use hubbub_proto::{CloseCode, OpCode};
use tokio::task::JoinHandle;

use crate::config::ServerConfig;
use crate::hub::{ACTIVE, Hub, Member};

/// Starts the sweep when the configuration asks for pings or an idle
/// timeout.
pub(crate) fn spawn(hub: Arc<Hub>, config: &ServerConfig) -> Option<JoinHandle<()>> {
    let ping = config.ping_interval;
    let idle = config.idle_timeout;
    let shortest = match (ping, idle) {
        (None, None) => return None,
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
    };
    let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    Some(tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = hub.now_ms();
            for member in hub.clients.all() {
                check(&member, now, ping, idle);
            }
        }
    }))
}

fn check(member: &Member, now: u64, ping: Option<Duration>, idle: Option<Duration>) {
    let last_seen = &member.last_seen;
    let mut seen = last_seen.load(Ordering::Relaxed);
    if seen == ACTIVE {
        // Bytes arrived since the last tick: silent from now on at most. (A
        // read that marks it again after this stays marked for the next.)
        let _ = last_seen.compare_exchange(ACTIVE, now, Ordering::Relaxed, Ordering::Relaxed);
        seen = now;
    }
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
