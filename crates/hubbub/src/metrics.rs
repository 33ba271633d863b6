//! Server metrics in the Prometheus/OpenMetrics text format, on
//! `prometheus-client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The close code a connection ended with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabel {
    code: String,
}

/// Why an upgrade was refused (the HTTP status).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    status: String,
}

/// Every metric of one server. Counters are atomics: cheap on the hot path.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) connections_open: Gauge,
    pub(crate) connections_opened: Counter,
    connections_closed: Family<CodeLabel, Counter>,
    pub(crate) messages_in: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) messages_out: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) queue_overflows: Counter,
    handshake_rejections: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hubbub");
        let metrics = Self {
            connections_open: Gauge::default(),
            connections_opened: Counter::default(),
            connections_closed: Family::default(),
            messages_in: Counter::default(),
            bytes_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_out: Counter::default(),
            queue_overflows: Counter::default(),
            handshake_rejections: Family::default(),
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
            "connections_closed",
            "WebSocket connections ended, by close code (1006: dropped without a close frame)",
            metrics.connections_closed.clone(),
        );
        registry.register(
            "messages_in",
            "Messages received",
            metrics.messages_in.clone(),
        );
        registry.register(
            "bytes_in",
            "Message payload bytes received",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "messages_out",
            "Messages queued for sending",
            metrics.messages_out.clone(),
        );
        registry.register(
            "bytes_out",
            "Frame bytes queued for sending",
            metrics.bytes_out.clone(),
        );
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
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub(crate) fn closed(&self, code: u16) {
        self.connections_closed
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

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
