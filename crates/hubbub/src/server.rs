//! The public front: [`Server`], a builder that binds listeners, takes
//! the configuration, handlers and hooks, and starts the accept loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hubbub_proto::handshake::{HttpResponse, Request};
use tokio::net::TcpListener;

use crate::accept::Listener;
use crate::config::ServerConfig;
use crate::error::{Error, Kind};
use crate::handle::ServerHandle;
use crate::hub::Broker;
use crate::serve::{Hub, HubBuilder};
use crate::socket::Socket;
use crate::tls::TlsConfig;
use crate::url::Target;

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
///
/// The builder methods may be called in any order; a [`ServerHandle`]
/// taken before [`Server::start`] reaches the running server.
pub struct Server {
    /// The listeners, the first one first.
    listeners: Vec<Listener>,
    /// The hub it serves, unless given one ([`Server::serve`]).
    builder: HubBuilder,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs())
            .field("config", self.builder.config())
            .finish_non_exhaustive()
    }
}

/// Parses `ws://host:port` or `wss://host:port` (path ignored) into host,
/// port and whether it is TLS.
fn parse_url(url: &str) -> Result<(String, u16, bool), Error> {
    let target = Target::parse(url)?;
    Ok((target.host, target.port, target.secure))
}

/// A listener on `host:port`. The IPv6 wildcard (`::`) is dual-stack:
/// IPv4 clients connect too, as IPv4-mapped addresses, whatever the
/// system's default (Fleck's `SupportDualStack`).
async fn listen(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    if unbracketed
        .parse::<std::net::Ipv6Addr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_only_v6(false)?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
        socket.listen(1024)?;
        return TcpListener::from_std(socket.into());
    }
    TcpListener::bind((host, port)).await
}

impl Server {
    /// Binds to a `ws://host:port` URL: host names (such as `localhost`)
    /// are resolved, IPv4 and IPv6 work (`ws://[::1]:9001`), and port 0
    /// picks a free port (see [`Server::local_addr`]). `ws://[::]:port`
    /// listens on every address, IPv6 and IPv4 alike (dual-stack, as
    /// Fleck's `SupportDualStack`); `ws://0.0.0.0:port` on IPv4 only.
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
        Self::from_listener(listen(&host, port).await?)
    }

    /// Binds to a `wss://host:port` URL, serving TLS with `tls`.
    ///
    /// # Errors
    /// As [`Server::bind`].
    pub async fn bind_tls(url: &str, tls: TlsConfig) -> Result<Self, Error> {
        let (host, port, _) = parse_url(url)?;
        Ok(Self::from_listener(listen(&host, port).await?)?.with_tls(tls))
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
        self.listeners.push((listen(&host, port).await?, tls));
        Ok(self)
    }

    /// Every address the server listens on, the first one first.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// Serves TLS on this server's first listener (every connection there
    /// is `wss://`).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.listeners[0].1 = Some(tls);
        self
    }

    /// Serves on an already bound tokio listener.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn from_listener(listener: TcpListener) -> Result<Self, Error> {
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listeners: vec![(listener, None)],
            builder: HubBuilder::new(Some(local_addr)),
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
        self.builder = self.builder.with_config(config);
        self
    }

    /// Routes publishes through `broker` (see [`crate::Broker`]), so that
    /// topics span every node attached to it. Without one, topics are this
    /// server's alone. The broker is attached when the server starts (a
    /// second call replaces the first); it gets a [`crate::Node`], which does not
    /// keep the server alive.
    #[must_use]
    pub fn with_broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.builder = self.builder.with_broker(broker);
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
    #[must_use]
    pub fn with_http<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Request) -> HttpResponse + Send + Sync + 'static,
    {
        self.builder = self.builder.with_http(handler);
        self
    }

    /// Runs `hook` on every valid upgrade request before the `101`: it may
    /// accept (adding response headers, choosing the subprotocol, attaching
    /// user data) or reject with any HTTP response. It runs within the
    /// handshake's deadline ([`ServerConfig::handshake_timeout`] from the
    /// accept); past it the client gets 503.
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
    #[must_use]
    pub fn with_handshake<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(crate::HandshakeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = crate::Decision> + Send + 'static,
    {
        self.builder = self.builder.with_handshake(hook);
        self
    }

    /// The bound address of the first listener (the real port when bound
    /// to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.builder.handle().local_addr()
    }

    /// A handle to stop the server or reach its clients.
    pub fn handle(&self) -> ServerHandle {
        self.builder.handle()
    }

    /// Accepts connections until [`ServerHandle::shutdown`]; `setup` runs
    /// once per connection, after its request is parsed and before the
    /// `101` is sent, to attach handlers. Returns when every connection has
    /// ended.
    ///
    /// # Errors
    /// When the listeners cannot be polled (no descriptor left for the
    /// connection sets' `epoll` instances); none once serving.
    pub async fn start<F>(self, setup: F) -> Result<(), Error>
    where
        F: Fn(&mut Socket) + Send + Sync + 'static,
    {
        self.run(setup).await
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
        let hub = self.builder.handle();
        let run = self.run(setup);
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => return result,
            _ = signal => hub.shutdown(),
        }
        run.await
    }

    /// Accepts connections for `hub`, which may also be serving streams
    /// from elsewhere (an axum route, a Unix socket): one registry, one set
    /// of topics for all of them. Returns once the hub shuts down and every
    /// connection accepted here has ended. The configuration, hooks and
    /// broker are the hub's.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), hubbub::Error> {
    /// let hub = hubbub::Hub::new(|socket| {
    ///     socket.on_message(|conn, text| {
    ///         conn.server().broadcast(text);
    ///     });
    /// });
    /// let server = hubbub::Server::bind("ws://127.0.0.1:8181").await?;
    /// tokio::spawn(server.serve(&hub));
    /// // …and hand `hub` to an axum route or any other listener too.
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::is_invalid_argument`] when this `Server` was given a
    /// configuration, HTTP handler, hook or broker of its own: those belong
    /// to the hub ([`crate::HubBuilder`]); as [`Server::start`] when the
    /// listeners cannot be polled.
    pub fn serve(self, hub: &Hub) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let configured = self.builder.is_changed();
        let service = hub.service().clone();
        let listeners = self.listeners;
        async move {
            if configured {
                return Err(Error::new(Kind::InvalidArgument(
                    "Server::serve: configure the Hub (Hub::builder), not the Server".into(),
                )));
            }
            Ok(crate::accept::run(listeners, service).await?)
        }
    }

    async fn run<F>(self, setup: F) -> Result<(), Error>
    where
        F: Fn(&mut Socket) + Send + Sync + 'static,
    {
        let hub = self.builder.build(setup);
        Ok(crate::accept::run(self.listeners, hub.service().clone()).await?)
    }
}
