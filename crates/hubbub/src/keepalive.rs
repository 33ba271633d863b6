//! Keepalive: one sweep per server pings silent connections and closes
//! idle ones.
//!
//! Each connection records when bytes last arrived (an atomic store per
//! read); the sweep compares. That costs each connection 16 bytes instead of
//! a timer of its own, and the sweep touches each connection a few times per
//! interval.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use hubbub_proto::CloseCode;
use tokio::task::JoinHandle;

use crate::config::ServerConfig;
use crate::connection::Connection;
use crate::server::ServerShared;

/// Starts the sweep when the configuration asks for pings or an idle
/// timeout.
pub(crate) fn spawn(shared: Arc<ServerShared>, config: &ServerConfig) -> Option<JoinHandle<()>> {
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
            let now = shared.now_ms();
            let clients: Vec<Connection> = shared.clients.read().values().cloned().collect();
            for conn in clients {
                check(&conn, now, ping, idle);
            }
        }
    }))
}

fn check(conn: &Connection, now: u64, ping: Option<Duration>, idle: Option<Duration>) {
    let silent = now.saturating_sub(conn.shared.last_seen.load(Ordering::Relaxed));
    if let Some(idle) = idle {
        if silent >= idle.as_millis() as u64 {
            if conn
                .close_with(CloseCode::GOING_AWAY, "idle timeout")
                .is_ok()
            {
                tracing::info!(id = %conn.id(), silent_ms = silent, "idle timeout: closing with 1001");
            }
            return;
        }
    }
    if let Some(ping) = ping {
        let interval = ping.as_millis() as u64;
        let since_ping = now.saturating_sub(conn.shared.last_ping.load(Ordering::Relaxed));
        if silent >= interval && since_ping >= interval {
            conn.shared.last_ping.store(now, Ordering::Relaxed);
            let _ = conn.ping(Bytes::new());
        }
    }
}
