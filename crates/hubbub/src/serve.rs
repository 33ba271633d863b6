//! The public [`Hub`]: a server's setup, configuration and shared state,
//! without a listener of its own. Any stream can be handed to it; hubbub's
//! own [`crate::Server`], the hyper and axum integrations are its users.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Once};

use bytes::BytesMut;
use hubbub_proto::DeflateParams;
use hubbub_proto::handshake::{HttpResponse, Request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::handle::ServerHandle;
use crate::handshake::{HttpHandler, Service, adopt, close_refused, handshake};
use crate::hook::Hook;
use crate::hub::{Broker, HandshakePermit, HubState, Node};
use crate::info::StreamInfo;
use crate::socket::Socket;
use crate::task::{serve_after, start_background};

/// A WebSocket server without a port of its own: the setup closure, the
/// configuration, and everything connections share (the registry, topics,
/// broker, limits, keepalive, metrics, shutdown). Hand it streams, from any
/// listener, TLS acceptor or HTTP stack; every connection gets the same
/// handlers, [`crate::Connection`] handle and guarantees as those hubbub
/// accepts itself.
///
/// Cheap to clone (one `Arc`), and it dereferences to its
/// [`ServerHandle`]: `hub.broadcast(…)`, `hub.publish(…)`,
/// `hub.shutdown()`.
///
/// ```
/// use hubbub::{Hub, StreamInfo};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(|socket| {
///     socket.on_message(|conn, text| {
///         let _ = conn.send(text);
///     });
/// });
/// // Any AsyncRead + AsyncWrite: here one end of an in-memory pipe.
/// let (server_end, client_end) = tokio::io::duplex(4096);
/// tokio::spawn(hub.serve_stream(server_end, StreamInfo::default()));
/// # drop(client_end);
/// # }
/// ```
#[derive(Clone)]
pub struct Hub {
    service: Arc<Service>,
    handle: ServerHandle,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("clients", &self.handle.client_count())
            .field("config", &self.service.config)
            .finish_non_exhaustive()
    }
}

impl Deref for Hub {
    type Target = ServerHandle;

    fn deref(&self) -> &ServerHandle {
        &self.handle
    }
}

impl Hub {
    /// A hub with the default configuration; `setup` runs once per
    /// connection, after its request is accepted and before the `101`, to
    /// attach handlers (as with [`crate::Server::start`]).
    pub fn new<F>(setup: F) -> Self
    where
        F: Fn(&mut Socket) + Send + Sync + 'static,
    {
        Self::builder().build(setup)
    }

    /// A builder, to set the configuration, hooks and broker first.
    ///
    /// ```
    /// use hubbub::{Hub, OriginPolicy, ServerConfig};
    /// let config = ServerConfig::default().with_origins(OriginPolicy::new().allow("https://app.example"));
    /// let hub = Hub::builder().with_config(config).build(|_socket| {});
    /// assert_eq!(hub.client_count(), 0);
    /// ```
    pub fn builder() -> HubBuilder {
        HubBuilder::new(None)
    }

    /// A handle to the hub: broadcast, publish, clients, metrics, shutdown.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The configuration every connection of this hub follows.
    pub fn config(&self) -> &ServerConfig {
        &self.service.config
    }

    /// Serves a stream from its first byte: reads the request head, answers
    /// the handshake (or a refusal, with the same statuses as hubbub's own
    /// listener: 400, 403, 405, 426, 429, 431, 503), then runs the
    /// connection until it ends. The handshake counts against
    /// [`ServerConfig::max_handshakes`] and must finish within
    /// [`ServerConfig::handshake_timeout`]. Plain `GET` requests get the
    /// hub's HTTP handler ([`HubBuilder::with_http`]) or `426`.
    ///
    /// The future holds the hub's state, not `self`: spawn it.
    pub fn serve_stream<S>(
        &self,
        stream: S,
        from: impl Into<StreamInfo>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let from = from.into();
        let service = self.service.clone();
        let permit = self.handshake_permit(&from);
        // Everything but the running connection is in the boxed opening,
        // freed once the handshake is over (see `serve_after`).
        serve_after(async move {
            start_background(&service);
            let permit = counted(&service, permit, &from)?;
            let deadline = Instant::now() + service.config.handshake_timeout;
            let upgraded = handshake(stream, from, &service, deadline).await;
            drop(permit);
            upgraded
        })
    }

    /// A place among the handshakes in progress for a stream `from` (the
    /// per-address count does not apply to unknown addresses).
    pub(crate) fn handshake_permit(&self, from: &StreamInfo) -> Option<HandshakePermit> {
        let config = &self.service.config;
        let ip = from.peer().ip();
        let per_ip = config
            .max_handshakes_per_ip
            .filter(|_| !ip.is_unspecified());
        self.service
            .hub
            .handshake_permit(ip, config.max_handshakes, per_ip)
    }

    /// Serves a stream whose upgrade another HTTP stack already answered
    /// with a `101`: `request` is the upgrade request it answered,
    /// `protocol` and `deflate` what it negotiated (the stream then speaks
    /// WebSocket frames from its first byte). That stack was in charge of
    /// the `Host`, `Origin` and authentication checks, and the hook does not
    /// run; the hub still applies its shutdown, connection and per-address
    /// limits, and refuses by closing with 1013 (or 1001 while shutting
    /// down).
    ///
    /// For hyper and axum, prefer the integrations (features `hyper` and
    /// `axum`), which answer the handshake with the hub's own rules.
    pub fn serve_upgraded<S>(
        &self,
        stream: S,
        upgrade: Upgraded,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = self.service.clone();
        serve_after(async move {
            start_background(&service);
            let Upgraded {
                request,
                from,
                protocol,
                deflate,
            } = upgrade;
            let mut stream = stream;
            match adopt(&service, request, &from, protocol, deflate) {
                Ok(admitted) => Some(admitted.start(stream, BytesMut::new(), &service.config)),
                Err(refusal) => {
                    tracing::info!(peer = %from.peer(), code = refusal.0.0, "refused an upgraded stream: {}", refusal.1);
                    close_refused(&mut stream, &service.config, refusal).await;
                    None
                }
            }
        })
    }

    /// Waits until a shutdown was asked for ([`ServerHandle::shutdown`])
    /// and every connection has ended (their `on_close` handlers included):
    /// for applications that serve without [`crate::Server::start`], which
    /// waits by itself.
    pub async fn closed(&self) {
        self.service.hub.shutdown.cancelled().await;
        self.service.hub.emptied().await;
    }

    /// The state the crate's integrations reach.
    pub(crate) fn service(&self) -> &Arc<Service> {
        &self.service
    }
}

/// An upgrade another HTTP stack answered: what [`Hub::serve_upgraded`]
/// needs to know of it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Upgraded {
    /// The request the stack answered (see [`Request::from_parts`]).
    pub request: Request,
    /// Where the stream comes from.
    pub from: StreamInfo,
    /// The subprotocol the `101` named.
    pub protocol: Option<String>,
    /// The permessage-deflate parameters the `101` agreed to.
    pub deflate: Option<DeflateParams>,
}

impl Upgraded {
    /// An upgrade of `request` from `from`, without subprotocol or
    /// compression.
    pub fn new(request: Request, from: impl Into<StreamInfo>) -> Self {
        Self {
            request,
            from: from.into(),
            protocol: None,
            deflate: None,
        }
    }

    /// The subprotocol the `101` named.
    #[must_use]
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// The permessage-deflate parameters the `101` agreed to.
    #[must_use]
    pub fn deflate(mut self, params: DeflateParams) -> Self {
        self.deflate = Some(params);
        self
    }
}

/// Builds a [`Hub`]: the configuration, HTTP handler, handshake hook and
/// broker, then the setup closure. A [`ServerHandle`] taken from the
/// builder reaches the hub it builds.
pub struct HubBuilder {
    hub: Arc<HubState>,
    config: ServerConfig,
    http: Option<HttpHandler>,
    hook: Option<Hook>,
    broker: Option<Arc<dyn Broker>>,
    /// Whether anything was set (see `Server::serve`).
    changed: bool,
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("config", &self.config)
            .field("http", &self.http.is_some())
            .field("hook", &self.hook.is_some())
            .field("broker", &self.broker.is_some())
            .finish()
    }
}

impl HubBuilder {
    /// A builder for a hub whose handles report `local_addr`.
    pub(crate) fn new(local_addr: Option<std::net::SocketAddr>) -> Self {
        Self {
            hub: HubState::new(local_addr),
            config: ServerConfig::default(),
            http: None,
            hook: None,
            broker: None,
            changed: false,
        }
    }

    /// Whether any setting was changed from the default.
    pub(crate) fn is_changed(&self) -> bool {
        self.changed
    }

    /// Replaces the configuration.
    #[must_use]
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self.changed = true;
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Answers plain HTTP `GET` and `HEAD` requests that reach the hub
    /// itself (through [`Hub::serve_stream`] or hubbub's own listener);
    /// without one they get `426 Upgrade Required`. See
    /// [`crate::Server::with_http`].
    #[must_use]
    pub fn with_http<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Request) -> HttpResponse + Send + Sync + 'static,
    {
        self.http = Some(Box::new(handler));
        self.changed = true;
        self
    }

    /// Runs `hook` on every valid upgrade request before the `101`. See
    /// [`crate::Server::with_handshake`].
    #[must_use]
    pub fn with_handshake<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(crate::HandshakeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = crate::Decision> + Send + 'static,
    {
        self.hook = Some(Arc::new(move |request| Box::pin(hook(request))));
        self.changed = true;
        self
    }

    /// Routes publishes through `broker`. See
    /// [`crate::Server::with_broker`].
    #[must_use]
    pub fn with_broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self.changed = true;
        self
    }

    /// A handle to the hub this builds.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle::new(self.hub.clone())
    }

    /// The hub, with `setup` to run once per connection. The broker, if
    /// any, is attached here.
    pub fn build<F>(self, setup: F) -> Hub
    where
        F: Fn(&mut Socket) + Send + Sync + 'static,
    {
        let Self {
            hub,
            mut config,
            http,
            hook,
            broker,
            ..
        } = self;
        if let Some(limit) = open_files_limit() {
            // Keep some descriptors for handshakes in progress, the
            // listener, the runtime and the log, and one per connection set
            // (an `epoll` instance per runtime worker): past the cap,
            // upgrades get 503 instead of the process running out of
            // descriptors.
            let sets = tokio::runtime::Handle::try_current()
                .map_or(1, |runtime| runtime.metrics().num_workers());
            let reserve = (limit / 4).min(64) + sets as u64;
            let usable = limit.saturating_sub(reserve) as usize;
            tracing::info!(limit, "open-files limit");
            if config.max_connections > usable {
                tracing::warn!(
                    max_connections = config.max_connections,
                    usable,
                    "max_connections is above what the open-files limit allows; using {usable}"
                );
                config.max_connections = usable;
            }
        }
        if let Some(broker) = broker
            && hub.topics.broker.set(broker.clone()).is_ok()
        {
            broker.attach(Node::new(&hub));
        }
        let handle = ServerHandle::new(hub.clone());
        Hub {
            service: Arc::new(Service {
                hub,
                protocol: Arc::new(config.protocol.clone()),
                config,
                setup: Box::new(setup),
                http,
                hook,
                started: Once::new(),
            }),
            handle,
        }
    }
}

/// The soft limit on open files of this process, from `/proc` (Linux).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The permit, or (counted and logged) `None` when there was none: the
/// stream is then dropped unanswered.
pub(crate) fn counted(
    service: &Service,
    permit: Option<HandshakePermit>,
    from: &StreamInfo,
) -> Option<HandshakePermit> {
    if permit.is_none() {
        service.hub.metrics.dropped_handshake();
        tracing::debug!(peer = %from.peer(), "too many handshakes in progress: stream dropped");
    }
    permit
}
