//! Server metrics in the Prometheus/OpenMetrics text format, on
//! `prometheus-client`.
//!
//! The per-message counters (messages and bytes, in and out) are sharded:
//! each thread adds to a shard of its own, on a cache line of its own, and
//! a scrape sums the shards. A single shared counter would have every
//! worker thread write the same cache line for every message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;

use crate::info::HttpVersion;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The close code a connection ended with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

/// The HTTP version a connection's handshake came over.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabel {
    http: &'static str,
}

/// Why an upgrade was refused (the HTTP status).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    status: String,
}

/// The sharded per-message counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// Messages received.
    MessagesIn,
    /// Message payload bytes received.
    BytesIn,
    /// Messages queued for sending.
    MessagesOut,
    /// Frame bytes queued for sending.
    BytesOut,
}

const COUNTS: [(Count, &str, &str); 4] = [
    (Count::MessagesIn, "messages_in", "Messages received"),
    (Count::BytesIn, "bytes_in", "Message payload bytes received"),
    (
        Count::MessagesOut,
        "messages_out",
        "Messages queued for sending",
    ),
    (
        Count::BytesOut,
        "bytes_out",
        "Frame bytes queued for sending",
    ),
];

/// One thread's counters, alone on their cache lines (128 bytes: adjacent
/// lines are prefetched together on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard([AtomicU64; 4]);

/// Shards per server; threads share one only past this many.
const SHARDS: usize = 16;

/// The next thread's shard.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard index, the same for every server.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// Per-message counters, sharded by thread.
#[derive(Debug)]
pub(crate) struct Sharded {
    shards: Box<[Shard]>,
}

impl Default for Sharded {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl Sharded {
    /// Adds `n` to `count` on this thread's shard.
    pub(crate) fn add(&self, count: Count, n: u64) {
        let shard = SHARD.with(|s| *s);
        self.shards[shard].0[count as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// The sum over every shard.
    pub(crate) fn get(&self, count: Count) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0[count as usize].load(Ordering::Relaxed))
            .sum()
    }
}

/// Encodes the sharded counters at scrape time.
#[derive(Debug)]
struct ShardedCollector(Arc<Sharded>);

impl Collector for ShardedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (count, name, help) in COUNTS {
            let counter = ConstCounter::new(self.0.get(count));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// Every metric of one server.
pub(crate) struct Metrics {
    registry: Registry,
    connections_open: Gauge,
    connections_opened: Counter,
    /// The two series of `connections_opened_by_http`, made once (no
    /// family lookup per connection).
    opened_http11: Counter,
    opened_http2: Counter,
    connections_closed: Family<CodeLabel, Counter>,
    /// Messages and bytes, in and out.
    pub(crate) counts: Arc<Sharded>,
    queue_overflows: Counter,
    handshake_rejections: Family<ReasonLabel, Counter>,
    handshakes_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hubbub");
        // Both series exist from the start (a 0 is a fact too); the
        // counters kept are the family's own.
        let by_http = Family::<HttpLabel, Counter>::default();
        let series = |http: HttpVersion| {
            by_http
                .get_or_create(&HttpLabel {
                    http: http.as_str(),
                })
                .clone()
        };
        let metrics = Self {
            connections_open: Gauge::default(),
            connections_opened: Counter::default(),
            opened_http11: series(HttpVersion::Http11),
            opened_http2: series(HttpVersion::Http2),
            connections_closed: Family::default(),
            counts: Arc::default(),
            queue_overflows: Counter::default(),
            handshake_rejections: Family::default(),
            handshakes_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections_open",
            "Open WebSocket connections",
            metrics.connections_open.clone(),
        );
        registry.register(
            "connections_opened",
            "WebSocket connections opened",
            metrics.connections_opened.clone(),
        );
        registry.register(
            "connections_opened_by_http",
            "WebSocket connections opened, by the HTTP version of their handshake (2: RFC 8441)",
            by_http,
        );
        registry.register(
            "connections_closed",
            "WebSocket connections ended, by close code (1006: dropped without a close frame)",
            metrics.connections_closed.clone(),
        );
        registry.register_collector(Box::new(ShardedCollector(metrics.counts.clone())));
        registry.register(
            "queue_overflows",
            "Sends that hit a connection's queue limit",
            metrics.queue_overflows.clone(),
        );
        registry.register(
            "handshake_rejections",
            "Upgrade requests refused, by HTTP status",
            metrics.handshake_rejections.clone(),
        );
        registry.register(
            "handshakes_dropped",
            "Sockets closed unanswered: too many handshakes in progress (in all or from the address)",
            metrics.handshakes_dropped.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// Adds `n` to a per-message counter.
    pub(crate) fn add(&self, count: Count, n: u64) {
        self.counts.add(count, n);
    }

    /// A connection opened, its handshake over `http`.
    pub(crate) fn opened(&self, http: HttpVersion) {
        self.connections_opened.inc();
        self.connections_open.inc();
        match http {
            HttpVersion::Http11 => self.opened_http11.inc(),
            HttpVersion::Http2 => self.opened_http2.inc(),
        };
    }

    /// A connection ended with `code`. Codes a client may choose (3000 to
    /// 4999) are counted by thousand ("3xxx", "4xxx"), so that clients
    /// cannot make thousands of series.
    pub(crate) fn closed(&self, code: u16) {
        self.connections_open.dec();
        let code = match code {
            3000..=3999 => "3xxx".to_owned(),
            4000..=4999 => "4xxx".to_owned(),
            code => code.to_string(),
        };
        self.connections_closed
            .get_or_create(&CodeLabel { code })
            .inc();
    }

    /// A send hit a queue's limit.
    pub(crate) fn overflowed(&self) {
        self.queue_overflows.inc();
    }

    /// A socket was closed unanswered (too many handshakes in progress).
    pub(crate) fn dropped_handshake(&self) {
        self.handshakes_dropped.inc();
    }

    /// An upgrade was refused with `status`.
    pub(crate) fn rejected(&self, status: u16) {
        self.handshake_rejections
            .get_or_create(&ReasonLabel {
                status: status.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_counts_from_many_threads_sum_at_scrape() {
        let metrics = Arc::new(Metrics::default());
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        metrics.add(Count::MessagesIn, 1);
                        metrics.add(Count::BytesOut, 3);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = metrics.encode();
        assert!(text.contains("hubbub_messages_in_total 20000\n"), "{text}");
        assert!(text.contains("hubbub_bytes_out_total 60000\n"), "{text}");
        assert!(text.contains("hubbub_messages_out_total 0\n"), "{text}");
    }

    #[test]
    fn client_chosen_close_codes_make_two_series_at_most() {
        let metrics = Metrics::default();
        metrics.opened(HttpVersion::Http11);
        for code in [1000, 1000, 3001, 3999, 4000, 4777, 4999] {
            metrics.closed(code);
        }
        let text = metrics.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("hubbub_connections_closed_total{"))
            .count();
        assert_eq!(series, 3, "{text}");
        assert!(text.contains("code=\"4xxx\"} 3"), "{text}");
    }
}
