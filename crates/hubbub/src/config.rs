//! Server configuration: limits and policies, each with a safe default.

use std::time::Duration;

/// What happens when a connection's send queue would pass
/// [`ServerConfig::max_queue_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backpressure {
    /// Close the slow connection with 1008 ("send queue full"), dropping what
    /// it had queued. The send that overflowed returns an error. Others are
    /// never slowed. The default.
    #[default]
    Close,
    /// Refuse the send with an error ([`crate::Error::is_queue_full`]) and
    /// keep the connection; the caller decides what to drop.
    Refuse,
}

/// Whose preference picks the subprotocol when several match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolOrder {
    /// The client's first offer that the server speaks (Fleck's rule). The
    /// default.
    #[default]
    Client,
    /// The server's first listed protocol that the client offered.
    Server,
}

/// Limits and policies of a [`crate::Server`].
///
/// ```
/// use std::time::Duration;
/// let config = hubbub::ServerConfig::default()
///     .with_max_connections(1_000)
///     .with_handshake_timeout(Duration::from_secs(5));
/// assert_eq!(config.max_connections, 1_000);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Protocol limits: frame, message and handshake sizes, auto-pong.
    pub protocol: hubbub_proto::Config,
    /// Most open WebSocket connections; further upgrades are answered 503.
    /// Default: 10,000.
    pub max_connections: usize,
    /// A client must complete its upgrade request within this time, or it
    /// is dropped. Default: 10 s.
    pub handshake_timeout: Duration,
    /// Most bytes queued for sending per connection (frames not yet written
    /// to the socket). Default: 16 MiB.
    pub max_queue_bytes: usize,
    /// What to do when a send would pass `max_queue_bytes`. Default: close.
    pub backpressure: Backpressure,
    /// Most bytes queued for sending over every connection together,
    /// counted as encoded (after compression), with a large frame shared by
    /// many connections (a broadcast) counted once. Past it sends are
    /// refused ([`crate::Error::is_over_budget`]) and the server makes room
    /// by closing the connections holding the most bytes with 1013 ("try
    /// again later"), dropping what they had queued, until half the budget
    /// is free. Default: 512 MiB.
    pub max_total_queue_bytes: usize,
    /// Close a connection that has bytes queued and takes none of them for
    /// this long: a reader that stopped reading (its pings and pongs do not
    /// count). It is dropped at once (its queue freed), and `on_close` gets
    /// 1006 with the reason. `None`: never. Default: 30 s.
    pub stall_timeout: Option<Duration>,
    /// After sending a close frame, how long to wait for the peer's before
    /// dropping the connection. Default: 5 s.
    pub close_timeout: Duration,
    /// On shutdown, how long connections get to finish their close
    /// handshake before they are dropped. Default: 5 s.
    pub shutdown_grace: Duration,
    /// Ping a connection that has been silent this long (its pong is
    /// traffic, so a live peer is never idle). `None`: never. Default: 30 s.
    pub ping_interval: Option<Duration>,
    /// Close (1001, "idle timeout") a connection that has shown no traffic
    /// at all for this long: a dead peer, or one that does not answer
    /// pings. Keep it above `ping_interval`. `None`: never. Default: 75 s.
    ///
    /// One sweep per server checks every connection every quarter of the
    /// shorter of the two (at most every 5 s), so the timers cost each
    /// connection 16 bytes, not a timer of its own.
    pub idle_timeout: Option<Duration>,
    /// Which `Origin`s may upgrade; others get 403. Default: pages of the
    /// same origin as the request's `Host`, and clients that send no
    /// `Origin` (not browsers), as [`crate::OriginPolicy::default`]: a page
    /// on another site cannot open a socket with its visitors' cookies
    /// (cross-site WebSocket hijacking). [`crate::OriginPolicy::any`]
    /// allows every origin.
    pub origins: crate::OriginPolicy,
    /// Most handshakes in progress at once (accepted, not yet upgraded or
    /// answered; each holds a descriptor): past it new connections are
    /// closed at once, so that silent sockets cannot starve the others.
    /// Default: 1,024.
    pub max_handshakes: usize,
    /// Most handshakes in progress from one client IP address; past it
    /// that address's new connections are closed at once. `None`: no limit
    /// (the default; see [`ServerConfig::max_connections_per_ip`] on
    /// shared addresses).
    pub max_handshakes_per_ip: Option<usize>,
    /// Which `Host` names the server answers (DNS rebinding protection).
    /// Default: [`crate::HostPolicy::LoopbackWhenLocal`].
    pub allowed_hosts: crate::HostPolicy,
    /// Most open connections from one client IP address; more are answered
    /// 429. `None`: no limit (the default: many users may share an address
    /// behind a NAT or proxy).
    pub max_connections_per_ip: Option<usize>,
    /// Reverse proxies in front of the server: for connections from one of
    /// them, the client's address (for the per-address limits and
    /// [`crate::ConnectionInfo::client_addr`]) is the last address in
    /// `X-Forwarded-For` (or `Forwarded: for=`) that is not itself a listed
    /// proxy. Those headers are ignored from anyone else. Default: none.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Handshakes per second allowed from one client IP address (a token
    /// bucket); more are answered 429. Default: none.
    pub handshake_rate_per_ip: Option<crate::RateLimit>,
    /// Messages per second allowed from one connection; past it the
    /// connection is closed with 1008. Default: none.
    pub message_rate: Option<crate::RateLimit>,
    /// Subprotocols the server speaks, chosen by [`ServerConfig::protocol_order`].
    /// Default: none.
    pub protocols: Vec<String>,
    /// Whose order picks the subprotocol. Default: the client's.
    pub protocol_order: ProtocolOrder,
    /// Answer 400 when the server has protocols and the client offers none
    /// of them (instead of proceeding without one). Default: proceed.
    pub require_protocol: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            protocol: hubbub_proto::Config::default(),
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            max_queue_bytes: 16 << 20,
            backpressure: Backpressure::Close,
            max_total_queue_bytes: 512 << 20,
            stall_timeout: Some(Duration::from_secs(30)),
            close_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            ping_interval: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(75)),
            origins: crate::OriginPolicy::default(),
            max_handshakes: 1024,
            max_handshakes_per_ip: None,
            allowed_hosts: crate::HostPolicy::default(),
            trusted_proxies: Vec::new(),
            max_connections_per_ip: None,
            handshake_rate_per_ip: None,
            message_rate: None,
            protocols: Vec::new(),
            protocol_order: ProtocolOrder::Client,
            require_protocol: false,
        }
    }
}

impl ServerConfig {
    /// Sets [`ServerConfig::protocol`].
    #[must_use]
    pub fn with_protocol_config(mut self, config: hubbub_proto::Config) -> Self {
        self.protocol = config;
        self
    }

    /// Sets [`ServerConfig::max_connections`].
    #[must_use]
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`ServerConfig::handshake_timeout`].
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::max_queue_bytes`].
    #[must_use]
    pub fn with_max_queue_bytes(mut self, bytes: usize) -> Self {
        self.max_queue_bytes = bytes;
        self
    }

    /// Sets [`ServerConfig::backpressure`].
    #[must_use]
    pub fn with_backpressure(mut self, policy: Backpressure) -> Self {
        self.backpressure = policy;
        self
    }

    /// Sets [`ServerConfig::max_total_queue_bytes`].
    #[must_use]
    pub fn with_max_total_queue_bytes(mut self, bytes: usize) -> Self {
        self.max_total_queue_bytes = bytes;
        self
    }

    /// Sets [`ServerConfig::stall_timeout`].
    #[must_use]
    pub fn with_stall_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::close_timeout`].
    #[must_use]
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::shutdown_grace`].
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets [`ServerConfig::ping_interval`].
    #[must_use]
    pub fn with_ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets [`ServerConfig::idle_timeout`].
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::origins`].
    #[must_use]
    pub fn with_origins(mut self, policy: crate::OriginPolicy) -> Self {
        self.origins = policy;
        self
    }

    /// Sets [`ServerConfig::max_handshakes`].
    #[must_use]
    pub fn with_max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max;
        self
    }

    /// Sets [`ServerConfig::max_handshakes_per_ip`].
    #[must_use]
    pub fn with_max_handshakes_per_ip(mut self, max: Option<usize>) -> Self {
        self.max_handshakes_per_ip = max;
        self
    }

    /// Sets [`ServerConfig::allowed_hosts`].
    #[must_use]
    pub fn with_allowed_hosts(mut self, policy: crate::HostPolicy) -> Self {
        self.allowed_hosts = policy;
        self
    }

    /// Sets [`ServerConfig::trusted_proxies`].
    #[must_use]
    pub fn with_trusted_proxies(mut self, proxies: Vec<std::net::IpAddr>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Sets [`ServerConfig::max_connections_per_ip`].
    #[must_use]
    pub fn with_max_connections_per_ip(mut self, max: Option<usize>) -> Self {
        self.max_connections_per_ip = max;
        self
    }

    /// Sets [`ServerConfig::handshake_rate_per_ip`].
    #[must_use]
    pub fn with_handshake_rate_per_ip(mut self, limit: Option<crate::RateLimit>) -> Self {
        self.handshake_rate_per_ip = limit;
        self
    }

    /// Sets [`ServerConfig::message_rate`].
    #[must_use]
    pub fn with_message_rate(mut self, limit: Option<crate::RateLimit>) -> Self {
        self.message_rate = limit;
        self
    }

    /// Sets [`ServerConfig::protocol_order`].
    #[must_use]
    pub fn with_protocol_order(mut self, order: ProtocolOrder) -> Self {
        self.protocol_order = order;
        self
    }

    /// Sets [`ServerConfig::require_protocol`].
    #[must_use]
    pub fn with_require_protocol(mut self, require: bool) -> Self {
        self.require_protocol = require;
        self
    }

    /// Sets [`ServerConfig::protocols`].
    #[must_use]
    pub fn with_protocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }
}
