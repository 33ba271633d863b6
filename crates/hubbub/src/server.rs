//! The server: binding, the accept loop, and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::ServerConfig;
use crate::connection::Connection;
use crate::error::{Error, Kind};
use crate::message::{Message, Outgoing};
use crate::registry::{Clients, Topics};
use crate::socket::{BoxFuture, Socket};
use crate::tls::TlsConfig;
use crate::upgrade::serve_socket;
use hubbub_proto::handshake::{HttpResponse, Request};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use uuid::Uuid;

/// A WebSocket server bound to an address, Fleck style:
/// [`Server::bind`] then [`Server::start`] with a per-connection setup.
///
/// ```no_run
/// # async fn example() -> Result<(), hubbub::Error> {
/// let server = hubbub::Server::bind("ws://127.0.0.1:8181").await?;
/// server
///     .start(|socket| {
///         socket.on_open(|conn| println!("open {}", conn.id()));
///         socket.on_message(|conn, text| {
///             let _ = conn.send(text);
///         });
///         socket.on_close(|conn, info| println!("closed {} with {}", conn.id(), info.code));
///     })
///     .await
/// # }
/// ```
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsConfig>,
    /// More listeners served by the same server, each plain or TLS.
    extra: Vec<(TcpListener, Option<TlsConfig>)>,
    local_addr: SocketAddr,
    config: ServerConfig,
    shared: Arc<ServerShared>,
}

/// State shared by the accept loop, the connections and [`ServerHandle`]s.
pub(crate) struct ServerShared {
    pub(crate) local_addr: SocketAddr,
    /// The server's start: connections' activity times are milliseconds
    /// since then.
    epoch: std::time::Instant,
    /// Open connections by id.
    pub(crate) clients: Clients,
    /// Subscribers by topic.
    pub(crate) topics: Topics,
    /// Answers plain HTTP requests (not upgrades).
    pub(crate) http: Option<HttpHandler>,
    /// Decides on upgrades before the `101`.
    pub(crate) hook: Option<crate::hook::Hook>,
    /// Per-address connection counts and handshake buckets.
    pub(crate) per_address: crate::limits::PerAddress,
    /// Counters for the metrics endpoint.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Upgraded connections not yet ended (the limit counts these).
    pub(crate) open: AtomicUsize,
    stopping: AtomicBool,
    stop: Notify,
}

/// A handler for plain HTTP requests on the WebSocket port.
pub(crate) type HttpHandler = Arc<dyn Fn(&Request) -> HttpResponse + Send + Sync>;

impl ServerShared {
    /// Milliseconds since the server started (a coarse, cheap clock for
    /// keepalive).
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn register(&self, conn: &Connection) {
        self.clients.insert(conn);
        self.metrics.connections_opened.inc();
        self.metrics.connections_open.inc();
    }

    /// Forgets a connection that ended, with its subscriptions.
    pub(crate) fn unregister(&self, conn: &Connection) {
        if self.clients.remove(conn.id()) {
            self.metrics.connections_open.dec();
        }
        let topics: Vec<Box<str>> = conn
            .shared
            .topics()
            .take()
            .map(|topics| topics.into_iter().collect())
            .unwrap_or_default();
        for topic in topics {
            self.topics.unsubscribe(&topic, conn.id());
        }
    }
}

/// A handle to a running [`Server`]: stop it, or reach its clients, from
/// any task or thread.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<ServerShared>,
}

impl ServerHandle {
    pub(crate) fn from_shared(shared: Arc<ServerShared>) -> Self {
        Self { shared }
    }

    /// Sends `message` to every open connection. The frame is encoded once
    /// and shared by every queue. Returns how many connections took it (a
    /// full queue follows its [`crate::Backpressure`] policy and does not
    /// delay the others).
    pub fn broadcast(&self, message: impl Into<Message>) -> usize {
        self.shared
            .clients
            .broadcast(&Outgoing::new(message.into()), None)
    }

    /// As [`ServerHandle::broadcast`], to every connection but `except`.
    pub fn broadcast_except(&self, message: impl Into<Message>, except: &Connection) -> usize {
        let message = Outgoing::new(message.into());
        self.shared.clients.broadcast(&message, Some(except.id()))
    }

    /// Sends `message` to every subscriber of `topic`, encoded once.
    /// Returns how many subscribers took it.
    ///
    /// With a [`crate::Broker`] ([`Server::with_broker`]) the message goes
    /// through the broker to every node, this one included, and the count
    /// returned is this node's subscribers at this moment.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> usize {
        self.publish_from(topic, message.into(), None)
    }

    /// As [`ServerHandle::publish`], to every subscriber but `except`.
    pub fn publish_except(
        &self,
        topic: &str,
        message: impl Into<Message>,
        except: &Connection,
    ) -> usize {
        self.publish_from(topic, message.into(), Some(except.id()))
    }

    fn publish_from(&self, topic: &str, message: Message, except: Option<Uuid>) -> usize {
        match self.shared.topics.broker.get() {
            Some(broker) => {
                broker.publish(topic, message, except);
                self.shared.topics.subscriber_count(topic)
            }
            None => self.publish_local(topic, message, except),
        }
    }

    /// Sends `message` to this node's subscribers of `topic` but `except`,
    /// whether or not a broker is attached (a broker delivers with this).
    /// Returns how many subscribers took it.
    pub fn publish_local(
        &self,
        topic: &str,
        message: impl Into<Message>,
        except: Option<Uuid>,
    ) -> usize {
        self.shared
            .topics
            .publish(topic, &Outgoing::new(message.into()), except)
    }

    /// How many connections of this node are subscribed to `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.shared.topics.subscriber_count(topic)
    }

    /// The connections subscribed to `topic`, at this moment.
    pub fn subscribers(&self, topic: &str) -> Vec<Connection> {
        self.shared.topics.subscribers(topic)
    }

    /// The server's metrics in the Prometheus/OpenMetrics text format:
    /// connections open, opened, and closed by close code; messages and
    /// bytes in and out; queue overflows; handshake rejections by status.
    /// Serve it where your scraper looks (`hubbub serve --metrics ADDR`
    /// does).
    pub fn metrics(&self) -> String {
        self.shared.metrics.encode()
    }

    /// The topics with at least one subscriber.
    pub fn topics(&self) -> Vec<String> {
        self.shared.topics.names()
    }

    /// Starts a graceful shutdown: stop accepting, close every connection
    /// with 1001, wait up to [`ServerConfig::shutdown_grace`], then drop the
    /// rest. [`Server::start`] returns once every connection has ended.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.stop.notify_waiters();
        self.shared.stop.notify_one();
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The open connections, at this moment.
    pub fn clients(&self) -> Vec<Connection> {
        self.shared.clients.read().values().cloned().collect()
    }

    /// How many connections are open.
    pub fn client_count(&self) -> usize {
        self.shared.clients.read().len()
    }
}

/// Parses `ws://host:port` (path ignored) into host and port.
/// Parses `ws://host:port` or `wss://host:port` (path ignored) into host,
/// port and whether it is TLS.
fn parse_url(url: &str) -> Result<(String, u16, bool), Error> {
    let invalid = |why: &str| Error::new(Kind::InvalidUrl(format!("{url}: {why}")));
    let (rest, secure) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(invalid("expected ws://host:port or wss://host:port")),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, port) = v6.split_once(']').ok_or_else(|| invalid("unclosed ["))?;
        (host, port.strip_prefix(':').unwrap_or(""))
    } else {
        authority.rsplit_once(':').unwrap_or((authority, ""))
    };
    if host.is_empty() {
        return Err(invalid("missing host"));
    }
    let port = match (port.is_empty(), secure) {
        (true, false) => 80,
        (true, true) => 443,
        _ => port.parse().map_err(|_| invalid("bad port"))?,
    };
    Ok((host.to_owned(), port, secure))
}

impl Server {
    /// Binds to a `ws://host:port` URL: host names (such as `localhost`)
    /// are resolved, IPv4 and IPv6 work (`ws://[::1]:9001`), and port 0
    /// picks a free port (see [`Server::local_addr`]).
    ///
    /// # Errors
    /// An invalid URL ([`Error::is_invalid_argument`]), or a resolution or
    /// bind failure ([`Error::is_io`]), such as a port in use.
    pub async fn bind(url: &str) -> Result<Self, Error> {
        let (host, port, secure) = parse_url(url)?;
        if secure {
            return Err(Error::new(Kind::InvalidUrl(format!(
                "{url}: wss:// needs a certificate: use Server::bind_tls"
            ))));
        }
        let listener = TcpListener::bind((host.as_str(), port)).await?;
        Self::from_listener(listener)
    }

    /// Binds to a `wss://host:port` URL, serving TLS with `tls`.
    ///
    /// # Errors
    /// As [`Server::bind`].
    pub async fn bind_tls(url: &str, tls: TlsConfig) -> Result<Self, Error> {
        let (host, port, _) = parse_url(url)?;
        let listener = TcpListener::bind((host.as_str(), port)).await?;
        Ok(Self::from_listener(listener)?.with_tls(tls))
    }

    /// Also listens on `url` (`ws://` or, with `tls`, `wss://`): one server,
    /// one set of handlers, clients and topics, on several addresses, such
    /// as plain and TLS side by side.
    ///
    /// ```no_run
    /// # async fn f(tls: hubbub::TlsConfig) -> Result<(), hubbub::Error> {
    /// let server = hubbub::Server::bind("ws://0.0.0.0:8080")
    ///     .await?
    ///     .also_listen("wss://0.0.0.0:8443", Some(tls))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Server::bind`]; a `wss://` URL without `tls`, or `tls` with a
    /// `ws://` URL, is an invalid argument.
    pub async fn also_listen(mut self, url: &str, tls: Option<TlsConfig>) -> Result<Self, Error> {
        let (host, port, secure) = parse_url(url)?;
        if secure != tls.is_some() {
            return Err(Error::new(Kind::InvalidUrl(format!(
                "{url}: use wss:// with a TLS configuration and ws:// without"
            ))));
        }
        let listener = TcpListener::bind((host.as_str(), port)).await?;
        self.extra.push((listener, tls));
        Ok(self)
    }

    /// Every address the server listens on, the first one first.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.local_addr)
            .chain(self.extra.iter().filter_map(|(l, _)| l.local_addr().ok()))
            .collect()
    }

    /// Serves TLS on this server's listener (every connection is `wss://`).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Serves on an already bound tokio listener.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn from_listener(listener: TcpListener) -> Result<Self, Error> {
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            tls: None,
            extra: Vec::new(),
            local_addr,
            config: ServerConfig::default(),
            shared: Arc::new(ServerShared {
                local_addr,
                epoch: std::time::Instant::now(),
                clients: Clients::default(),
                topics: Topics::default(),
                http: None,
                hook: None,
                per_address: crate::limits::PerAddress::default(),
                metrics: crate::metrics::Metrics::default(),
                open: AtomicUsize::new(0),
                stopping: AtomicBool::new(false),
                stop: Notify::new(),
            }),
        })
    }

    /// Serves on an already bound std listener (made non-blocking here).
    ///
    /// # Errors
    /// When the listener cannot be handed to tokio.
    pub fn from_std_listener(listener: std::net::TcpListener) -> Result<Self, Error> {
        listener.set_nonblocking(true)?;
        Self::from_listener(TcpListener::from_std(listener)?)
    }

    /// Replaces the configuration.
    #[must_use]
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Routes publishes through `broker` (see [`crate::Broker`]), so that
    /// topics span every node attached to it. Without one, topics are this
    /// server's alone.
    ///
    /// # Panics
    /// If a broker was already attached.
    pub fn with_broker(self, broker: Arc<dyn crate::Broker>) -> Self {
        broker.attach(self.handle());
        if self.shared.topics.broker.set(broker).is_err() {
            panic!("Server::with_broker called twice");
        }
        self
    }

    /// Answers plain HTTP requests on the same port (a `GET` that is not a
    /// WebSocket upgrade, such as a browser loading the page that then
    /// connects). Without one they get `426 Upgrade Required`.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), hubbub::Error> {
    /// use hubbub::HttpResponse;
    /// let server = hubbub::Server::bind("ws://127.0.0.1:8181").await?.with_http(|request| {
    ///     if request.path() == "/" {
    ///         HttpResponse::new(200).header("Content-Type", "text/html").body("<h1>hi</h1>")
    ///     } else {
    ///         HttpResponse::new(404).body("not found")
    ///     }
    /// });
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// If called after [`Server::handle`] was taken (set handlers first).
    #[must_use]
    pub fn with_http<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Request) -> HttpResponse + Send + Sync + 'static,
    {
        Arc::get_mut(&mut self.shared)
            .expect("with_http must be called before handle()")
            .http = Some(Arc::new(handler));
        self
    }

    /// Runs `hook` on every valid upgrade request before the `101`: it may
    /// accept (adding response headers, choosing the subprotocol, attaching
    /// user data) or reject with any HTTP response. It runs within the
    /// handshake timeout.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), hubbub::Error> {
    /// use hubbub::{Accept, Decision};
    /// #[derive(Clone)]
    /// struct User(String);
    /// let server = hubbub::Server::bind("ws://127.0.0.1:8181").await?.with_handshake(|hs| async move {
    ///     match hs.request.cookies().into_iter().find(|(name, _)| name == "session") {
    ///         Some((_, token)) => Decision::Accept(Accept::new().data(User(token))),
    ///         None => Decision::reject(401, "log in first"),
    ///     }
    /// });
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// If called after [`Server::handle`] was taken (set hooks first).
    #[must_use]
    pub fn with_handshake<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(crate::HandshakeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = crate::Decision> + Send + 'static,
    {
        Arc::get_mut(&mut self.shared)
            .expect("with_handshake must be called before handle()")
            .hook = Some(Arc::new(move |request| Box::pin(hook(request))));
        self
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to stop the server or reach its clients.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle::from_shared(self.shared.clone())
    }

    /// Accepts connections until [`ServerHandle::shutdown`]; `setup` runs
    /// once per connection, after its request is parsed and before the
    /// `101` is sent, to attach handlers. Returns when every connection has
    /// ended.
    ///
    /// # Errors
    /// None today once bound; the `Result` is kept for listener failures
    /// that cannot be retried.
    pub async fn start<F>(self, setup: F) -> Result<(), Error>
    where
        F: Fn(&mut Socket) + Send + Sync + 'static,
    {
        let shared = self.shared.clone();
        let stopped = async move {
            while !shared.stopping.load(Ordering::SeqCst) {
                shared.stop.notified().await;
            }
        };
        self.run(setup, stopped).await
    }

    /// As [`Server::start`], and also shuts down gracefully when `signal`
    /// completes (for example `tokio::signal::ctrl_c()`).
    ///
    /// # Errors
    /// As [`Server::start`].
    pub async fn start_until<F, S>(self, setup: F, signal: S) -> Result<(), Error>
    where
        F: Fn(&mut Socket) + Send + Sync + 'static,
        S: Future + Send,
    {
        let handle = self.handle();
        let shared = self.shared.clone();
        let stopped = async move {
            tokio::select! {
                _ = signal => handle.shutdown(),
                () = async {
                    while !shared.stopping.load(Ordering::SeqCst) {
                        shared.stop.notified().await;
                    }
                } => {}
            }
        };
        self.run(setup, stopped).await
    }

    async fn run<F>(self, setup: F, stopped: impl Future<Output = ()>) -> Result<(), Error>
    where
        F: Fn(&mut Socket) + Send + Sync + 'static,
    {
        let setup = Arc::new(setup);
        let mut config = self.config;
        if let Some(limit) = open_files_limit() {
            // Keep some descriptors for handshakes in progress, the
            // listener, the runtime and the log: past the cap, upgrades get
            // 503 instead of the process running out of descriptors.
            let usable = limit.saturating_sub((limit / 4).min(64)) as usize;
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
        let config = Arc::new(config);
        let mut tasks = JoinSet::new();
        let mut backoff = Duration::from_millis(10);
        tracing::info!(addr = %self.local_addr, "listening");
        let keepalive = crate::keepalive::spawn(self.shared.clone(), &config);
        let address_sweep = config.handshake_rate_per_ip.map(|rate| {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(crate::limits::SWEEP_EVERY);
                loop {
                    interval.tick().await;
                    shared.per_address.sweep(Some(&rate), shared.now_ms());
                }
            })
        });
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => break,
                (which, accepted) = accept_any(&self.listener, &self.extra) => match accepted {
                    Ok((stream, peer)) => {
                        backoff = Duration::from_millis(10);
                        let ctx = (setup.clone(), config.clone(), self.shared.clone());
                        let tls = match which {
                            None => self.tls.clone(),
                            Some(i) => self.extra[i].1.clone(),
                        };
                        tasks.spawn(handle_connection(stream, peer, ctx, tls));
                    }
                    Err(e) => {
                        // EMFILE and friends: wait instead of spinning.
                        tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(self.listener);
        drop(self.extra);
        for task in [keepalive, address_sweep].into_iter().flatten() {
            task.abort();
        }
        let clients: Vec<Connection> = self.shared.clients.read().values().cloned().collect();
        tracing::info!(connections = clients.len(), "shutting down");
        for conn in &clients {
            let _ = conn.close_with(hubbub_proto::CloseCode::GOING_AWAY, "server shutdown");
        }
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            let left: Vec<Connection> = self.shared.clients.read().values().cloned().collect();
            tracing::warn!(
                connections = left.len(),
                "grace period over: dropping connections"
            );
            for conn in &left {
                conn.shared.lock().force = true;
                conn.shared.waker.wake();
            }
            // Handshakes still in progress are simply dropped.
            let leftover = tokio::time::timeout(Duration::from_secs(1), async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if leftover.is_err() {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
        tracing::info!("server stopped");
        Ok(())
    }
}

/// The soft limit on open files of this process, from `/proc` (Linux).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Waits for a connection on any listener; `None` names the first one.
async fn accept_any(
    first: &TcpListener,
    extra: &[(TcpListener, Option<TlsConfig>)],
) -> (Option<usize>, std::io::Result<(TcpStream, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(result) = first.poll_accept(cx) {
            return std::task::Poll::Ready((None, result));
        }
        for (i, (listener, _)) in extra.iter().enumerate() {
            if let std::task::Poll::Ready(result) = listener.poll_accept(cx) {
                return std::task::Poll::Ready((Some(i), result));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// What each connection task needs from the server.
pub(crate) type ConnectionContext = (
    Arc<dyn Fn(&mut Socket) + Send + Sync>,
    Arc<ServerConfig>,
    Arc<ServerShared>,
);

/// The connection task's future, boxed: the task itself then holds one
/// pointer, where an `async` block here would keep every captured argument
/// (socket, addresses, TLS settings, context: ~290 bytes, a 512-byte task
/// cell) for the connection's whole life. The TLS handshake's large state
/// is a box of its own, so plain connections never carry it.
fn handle_connection<F>(
    stream: TcpStream,
    peer: SocketAddr,
    (setup, config, shared): (Arc<F>, Arc<ServerConfig>, Arc<ServerShared>),
    tls: Option<TlsConfig>,
) -> BoxFuture
where
    F: Fn(&mut Socket) + Send + Sync + 'static,
{
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let setup: Arc<dyn Fn(&mut Socket) + Send + Sync> = setup;
    let timeout = config.handshake_timeout;
    let ctx: ConnectionContext = (setup, config, shared);
    match tls {
        None => Box::pin(serve_socket(stream, peer, local, false, ctx)),
        Some(tls) => Box::pin(serve_tls(stream, peer, local, timeout, tls, ctx)),
    }
}

/// The TLS handshake (within the handshake timeout), then the connection.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    timeout: Duration,
    tls: TlsConfig,
    ctx: ConnectionContext,
) {
    match tokio::time::timeout(timeout, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_socket(stream, peer, local, true, ctx).await,
        Ok(Err(e)) => tracing::info!(%peer, "TLS handshake failed: {e}"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timeout: dropping connection"),
    }
}
