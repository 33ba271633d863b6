//! The client: connect to a `ws://` or `wss://` URL and get the same
//! programming model as the server (a setup closure with `on_open`,
//! `on_message`, … and a [`Connection`] handle), or the `Stream`/`Sink`
//! view ([`Client::connect_stream`]).
//!
//! ```no_run
//! # async fn f() -> Result<(), hubbub::Error> {
//! use hubbub::client::Client;
//!
//! let session = Client::new("ws://127.0.0.1:9001/chat")
//!     .header("Authorization", "Bearer 123")
//!     .protocol("chat.v1")
//!     .connect(|socket| {
//!         socket.on_message(|_conn, text| println!("< {text}"));
//!         socket.on_close(|_conn, info| println!("closed: {} {}", info.code, info.reason));
//!     })
//!     .await?;
//! session.send("hello")?;
//! session.close()?;
//! session.closed().await;
//! # Ok(()) }
//! ```
//!
//! The connection is the same driver the server runs, in the client role:
//! every frame it sends is masked with a fresh key, and the same limits
//! hold (message and frame size, inflate bounded while it inflates, a
//! bounded send queue, keepalive pings, the close handshake).

use std::net::SocketAddr;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hubbub_proto::handshake::{ClientHandshakeError, ClientRequest, Headers, Request};
use hubbub_proto::{Connection as Proto, Role, deflate};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_rustls::rustls;

use crate::config::ServerConfig;
use crate::driver::Driver;
use crate::error::{Error, Kind};
use crate::handle::Connection;
use crate::handshake::Upgraded;
use crate::hub::{HubState, Member};
use crate::info::ConnectionInfo;
use crate::socket::{Handlers, Socket, panic_message};
use crate::stream::WebSocket;
use crate::task::serve_after;
use crate::url::Target;

/// A WebSocket client for one URL: its request (headers, subprotocols,
/// permessage-deflate), TLS and limits, then [`Client::connect`].
#[derive(Clone)]
pub struct Client {
    url: String,
    headers: Vec<(String, String)>,
    protocols: Vec<String>,
    config: ServerConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    proxy: ProxySetting,
}

/// Where the connection goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProxySetting {
    /// `HTTPS_PROXY` (`wss://`) or `HTTP_PROXY` (`ws://`), unless `NO_PROXY`
    /// names the host.
    FromEnv,
    /// This proxy (`http://[user:password@]host:port`).
    Url(String),
    /// Straight to the server.
    Direct,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("protocols", &self.protocols)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `url` (`ws://host[:port]/path?query` or `wss://…`; IPv6
    /// literals in brackets), offering permessage-deflate, with a 10 s
    /// connect timeout and the library's default limits.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: Vec::new(),
            protocols: Vec::new(),
            config: ServerConfig::default(),
            tls: None,
            connect_timeout: Duration::from_secs(10),
            proxy: ProxySetting::FromEnv,
        }
    }

    /// Connects through this HTTP proxy (`http://[user:password@]host:port`)
    /// with `CONNECT`, instead of the one the environment names.
    #[must_use]
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = ProxySetting::Url(url.into());
        self
    }

    /// Connects straight to the server, whatever `HTTPS_PROXY`/`HTTP_PROXY`
    /// say. (By default, those are used, unless `NO_PROXY` names the host.)
    #[must_use]
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxySetting::Direct;
        self
    }

    /// Adds a request header (an auth token, a cookie, an `Origin`).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Offers a subprotocol (in order of preference); the agreed one is
    /// `conn.info().protocol()`.
    #[must_use]
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// The limits and timeouts of the connection: the protocol's
    /// (`protocol`: message and frame size, permessage-deflate, which
    /// [`hubbub_proto::DeflateConfig::enabled`] turns off), the send queue
    /// (`max_queue_bytes`, `backpressure`), keepalive (`ping_interval`,
    /// `idle_timeout`), `close_timeout` and `handshake_timeout`.
    #[must_use]
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// How long the TCP connection, TLS and the upgrade may take together.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// TLS with this rustls configuration (custom roots, a client
    /// certificate, ALPN…). Without one, `wss://` trusts the system's roots
    /// (and Mozilla's bundled ones with the `webpki-roots` feature).
    #[must_use]
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// TLS trusting only the certificates in `pem` (a private CA, a
    /// self-signed server).
    ///
    /// # Errors
    /// [`Error::is_tls`] when `pem` holds no usable certificate.
    pub fn ca_pem(self, pem: &[u8]) -> Result<Self, Error> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::new(Kind::Tls(format!("CA file: {e}"))))?;
            roots
                .add(cert)
                .map_err(|e| Error::new(Kind::Tls(format!("CA certificate: {e}"))))?;
        }
        if roots.is_empty() {
            return Err(Error::new(Kind::Tls(
                "no certificate in the CA file".into(),
            )));
        }
        Ok(self.tls(Arc::new(client_config(roots)?)))
    }

    /// Connects: TCP (or TLS), the upgrade, then the connection runs in a
    /// task of its own with the handlers `setup` attaches (as the server's
    /// setup closure does; `on_open` runs first). Returns once the upgrade
    /// is done.
    ///
    /// # Errors
    /// A typed error that says what failed: [`Error::is_invalid_argument`]
    /// for a bad URL, [`Error::is_connect`] (resolution, refused, timeout),
    /// [`Error::is_tls`] (with the certificate's fault),
    /// [`Error::is_handshake`] (the HTTP status and the body's first line,
    /// a wrong `Sec-WebSocket-Accept`, an extension or subprotocol not
    /// offered).
    pub async fn connect<F>(self, setup: F) -> Result<Session, Error>
    where
        F: FnOnce(&mut Socket),
    {
        let target = Target::parse(&self.url)?;
        let deadline = self.connect_timeout;
        let connector = self.tls.clone();
        let proxy = match &self.proxy {
            ProxySetting::Direct => None,
            ProxySetting::Url(url) => Some(url.clone()),
            ProxySetting::FromEnv => proxy_from_env(&target, |name| std::env::var(name).ok()),
        };
        let proxy = proxy.map(|url| Proxy::parse(&url)).transpose()?;
        match timeout(deadline, open(&target, proxy.as_ref(), connector)).await {
            Err(_) => Err(connect_error(&target, "timed out")),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Stream::Plain(tcp))) => {
                let peers = tcp.peers();
                self.upgrade(tcp, peers, &target, setup).await
            }
            Ok(Ok(Stream::Tls(tls))) => {
                let peers = tls.peers();
                self.upgrade(*tls, peers, &target, setup).await
            }
        }
    }

    /// Opens the WebSocket on a stream the caller already has: a Unix
    /// socket, an in-memory pipe, a TLS or SSH tunnel. The URL gives the
    /// `Host` and the path; the stream is used as it is (a `wss://` URL
    /// does not add TLS: wrap the stream first), and the proxy setting
    /// does not apply. The connection's addresses are reported as
    /// unspecified (`0.0.0.0:0`). Otherwise as [`Client::connect`].
    ///
    /// ```
    /// # async fn run() -> Result<(), hubbub::Error> {
    /// use hubbub::client::Client;
    ///
    /// let hub = hubbub::Hub::new(|socket| {
    ///     socket.on_message(|conn, text| {
    ///         let _ = conn.send(text);
    ///     });
    /// });
    /// let (near, far) = tokio::io::duplex(64 * 1024);
    /// let from = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    /// tokio::spawn(async move { hub.serve_stream(far, from).await });
    /// let session = Client::new("ws://localhost/echo")
    ///     .connect_on(near, |socket| {
    ///         socket.on_message(|conn, text| {
    ///             println!("{text}");
    ///             let _ = conn.close();
    ///         });
    ///     })
    ///     .await?;
    /// session.send("over a pipe")?;
    /// session.closed().await;
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`Client::connect`], less the connect errors.
    pub async fn connect_on<S, F>(self, stream: S, setup: F) -> Result<Session, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnOnce(&mut Socket),
    {
        let target = Target::parse(&self.url)?;
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        self.upgrade(stream, (unknown, unknown), &target, setup)
            .await
    }

    /// [`Client::connect_on`] as a [`WebSocket`].
    ///
    /// # Errors
    /// As [`Client::connect_on`].
    pub async fn connect_stream_on<S>(self, stream: S) -> Result<WebSocket, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut ws = None;
        let _session = self
            .connect_on(stream, |socket| ws = Some(socket.stream()))
            .await?;
        ws.ok_or_else(|| Error::new(Kind::Closed))
    }

    /// Connects and returns the connection as a [`WebSocket`] (a `Stream`
    /// of messages and a `Sink`), as tokio-tungstenite's `connect_async`.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_stream(self) -> Result<WebSocket, Error> {
        let mut ws = None;
        let _session = self.connect(|socket| ws = Some(socket.stream())).await?;
        ws.ok_or_else(|| Error::new(Kind::Closed))
    }

    /// The upgrade over an open stream, within the connect timeout.
    async fn upgrade<S, F>(
        &self,
        mut stream: S,
        (peer, local): (SocketAddr, SocketAddr),
        target: &Target,
        setup: F,
    ) -> Result<Session, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnOnce(&mut Socket),
    {
        let config = &self.config;
        let mut request = ClientRequest::new(target.host_header(), target.path.clone());
        for protocol in &self.protocols {
            request = request.protocol(protocol.clone());
        }
        let deflate = &config.protocol.deflate;
        if deflate.enabled {
            // The window the server may set; and, as `DeflateConfig` says
            // for the client side, no context kept between messages (less
            // memory, and a server may then ask for it: RFC 7692 7.1.1.1).
            request = request.extension(if deflate.client_no_context_takeover {
                "permessage-deflate; client_max_window_bits; client_no_context_takeover"
            } else {
                "permessage-deflate; client_max_window_bits"
            });
        }
        for (name, value) in &self.headers {
            request = request.header(name.clone(), value.clone());
        }
        let mut out = BytesMut::new();
        request.write(&mut out);
        let exchange = async {
            stream.write_all(&out).await?;
            let mut input = BytesMut::with_capacity(1024);
            loop {
                match request.parse_response(&mut input, &config.protocol) {
                    Ok(Some(response)) => return Ok(Ok((response, input))),
                    Ok(None) => {}
                    Err(e) => return Ok(Err((e, input))),
                }
                if stream.read_buf(&mut input).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection during the handshake",
                    ));
                }
            }
        };
        let (response, leftover) = match timeout(self.connect_timeout, exchange).await {
            Err(_) => return Err(connect_error(target, "timed out during the handshake")),
            Ok(Err(e)) => return Err(connect_error(target, &e.to_string())),
            Ok(Ok(Err((e, input)))) => {
                return Err(Error::new(Kind::Handshake {
                    status: match e {
                        ClientHandshakeError::Status(status) => Some(status),
                        _ => None,
                    },
                    message: refusal_message(&e, &mut stream, input).await,
                }));
            }
            Ok(Ok(Ok(done))) => done,
        };
        let mut proto = Proto::new(Role::Client, config.protocol.clone());
        let mut params = None;
        if let Some(answer) = response
            .extensions
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case("permessage-deflate"))
        {
            let Some(accepted) = deflate::client_params(answer, config.protocol.deflate.threshold)
            else {
                return Err(Error::new(Kind::Handshake {
                    status: None,
                    message: "the server's permessage-deflate parameters are not acceptable".into(),
                }));
            };
            proto.set_deflate(accepted);
            params = Some(accepted);
        }
        let mut headers = Headers::default();
        headers.append("Host", target.host_header().as_bytes());
        for (name, value) in &self.headers {
            headers.append(name, value.as_bytes());
        }
        if !self.protocols.is_empty() {
            headers.append(
                "Sec-WebSocket-Protocol",
                self.protocols.join(", ").as_bytes(),
            );
        }
        let sent = Request::from_parts("GET", &target.path, 1, headers)
            .map_err(|e| Error::new(Kind::InvalidUrl(format!("{}: {e}", self.url))))?;
        let info = ConnectionInfo::new(peer, local, sent, response.protocol.clone())
            .with_response(response.headers);
        let hub = HubState::new(Some(local));
        let keepalive = crate::keepalive::spawn(&hub, config);
        let conn = Connection::new(Arc::new(Member::new_client(
            info,
            hub.clone(),
            config.max_queue_bytes,
            config.backpressure,
            params,
        )));
        let mut socket = Socket {
            conn: conn.clone(),
            handlers: Handlers::default(),
        };
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| setup(&mut socket))) {
            keepalive.abort();
            return Err(Error::new(Kind::HandlerPanic(panic_message(&*panic))));
        }
        // A client's own hub always has room for it.
        let Some(permit) = hub.permit(usize::MAX) else {
            keepalive.abort();
            return Err(Error::new(Kind::Closed));
        };
        hub.register(&conn.member);
        let span = tracing::debug_span!("client", id = %conn.id(), %peer);
        let driver = Driver::new(
            stream,
            proto,
            conn.clone(),
            socket.handlers,
            leftover,
            config,
        );
        let upgraded = Upgraded {
            driver,
            span,
            _permit: permit,
            _slot: None,
        };
        let task = tokio::spawn(async move {
            serve_after(async move { Some(upgraded) }).await;
            keepalive.abort();
        });
        Ok(Session { conn, task })
    }
}

/// The default TLS configuration: the given roots, TLS 1.3 and 1.2, ring.
fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(Kind::Tls(e.to_string())))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The roots `wss://` trusts without [`Client::tls`]: the system's
/// (`rustls-native-certs`) and, with the `webpki-roots` feature, Mozilla's
/// bundled set as well (for containers with no CA certificates installed).
fn default_roots() -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    #[cfg(feature = "webpki-roots")]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if roots.is_empty() {
        return Err(Error::new(Kind::Tls(
            "no trusted root certificates found on this system: give a CA with Client::ca_pem, \
             or build with the webpki-roots feature"
                .into(),
        )));
    }
    Ok(roots)
}

/// A plain or TLS stream to the server.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Both ends' addresses of a stream.
trait Peers {
    fn peers(&self) -> (SocketAddr, SocketAddr);
}

impl Peers for TcpStream {
    fn peers(&self) -> (SocketAddr, SocketAddr) {
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        (
            self.peer_addr().unwrap_or(unknown),
            self.local_addr().unwrap_or(unknown),
        )
    }
}

impl Peers for tokio_rustls::client::TlsStream<TcpStream> {
    fn peers(&self) -> (SocketAddr, SocketAddr) {
        self.get_ref().0.peers()
    }
}

/// An HTTP proxy to tunnel through with `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proxy {
    host: String,
    port: u16,
    /// `Proxy-Authorization: Basic …` from the URL's user and password.
    authorization: Option<String>,
}

impl Proxy {
    fn parse(url: &str) -> Result<Self, Error> {
        use base64::Engine as _;
        let invalid = |why: &str| Error::new(Kind::InvalidUrl(format!("proxy {url}: {why}")));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| invalid("expected http://[user:password@]host:port"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((credentials, host_port)) => (Some(credentials), host_port),
            None => (None, authority),
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => {
                (host, port.parse().map_err(|_| invalid("bad port"))?)
            }
            _ => (host_port, 80),
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authorization: credentials.map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
        })
    }

    /// Opens the tunnel to `target` over `tcp` (connected to the proxy).
    async fn tunnel(&self, tcp: &mut TcpStream, target: &Target) -> Result<(), Error> {
        let authority = if target.host.contains(':') {
            format!("[{}]:{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(credentials) = &self.authorization {
            request += &format!("Proxy-Authorization: Basic {credentials}\r\n");
        }
        request += "\r\n";
        let failed = |why: String| {
            Error::new(Kind::Connect(format!(
                "cannot connect to {authority} through the proxy {}:{}: {why}",
                self.host, self.port
            )))
        };
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Byte by byte, so as not to read past the head into the tunnel.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 << 10 {
                return Err(failed("answer head too large".into()));
            }
            let byte = tcp.read_u8().await.map_err(|e| failed(e.to_string()))?;
            head.push(byte);
        }
        let text = String::from_utf8_lossy(&head);
        let status_line = text.lines().next().unwrap_or_default();
        match status_line.split_whitespace().nth(1) {
            Some(status) if status.starts_with('2') => Ok(()),
            _ => Err(failed(format!("the proxy answered {status_line:?}"))),
        }
    }
}

/// The proxy the environment names for `target`: `HTTPS_PROXY` for
/// `wss://`, `HTTP_PROXY` for `ws://` (either case), unless `NO_PROXY`
/// lists the host, a domain it ends with, or `*`, or the host is loopback.
fn proxy_from_env(target: &Target, var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let either = |name: &str| {
        var(name)
            .or_else(|| var(&name.to_ascii_lowercase()))
            .filter(|v| !v.trim().is_empty())
    };
    let proxy = either(if target.secure {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    })?;
    let host = target.host.to_ascii_lowercase();
    // Loopback is never proxied from the environment.
    if host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        return None;
    }
    let excluded = either("NO_PROXY").is_some_and(|list| {
        list.split(',').map(str::trim).any(|entry| {
            let entry = entry.trim_start_matches('.').to_ascii_lowercase();
            entry == "*" || host == entry || host.ends_with(&format!(".{entry}"))
        })
    });
    (!excluded).then_some(proxy)
}

/// The TCP connection (through `proxy` if any), and TLS for `wss://`.
async fn open(
    target: &Target,
    proxy: Option<&Proxy>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Stream, Error> {
    let tcp = match proxy {
        None => TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| connect_error(target, &e.to_string()))?,
        Some(proxy) => {
            let mut tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
                .await
                .map_err(|e| {
                    Error::new(Kind::Connect(format!(
                        "cannot connect to the proxy {}:{}: {e}",
                        proxy.host, proxy.port
                    )))
                })?;
            proxy.tunnel(&mut tcp, target).await?;
            tcp
        }
    };
    let _ = tcp.set_nodelay(true);
    if !target.secure {
        return Ok(Stream::Plain(tcp));
    }
    let config = match tls {
        Some(config) => config,
        None => Arc::new(client_config(default_roots()?)?),
    };
    let name = rustls_pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
        Error::new(Kind::Tls(format!(
            "{}: not a valid server name: {e}",
            target.host
        )))
    })?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| Error::new(Kind::Tls(format!("{}:{}: {e}", target.host, target.port))))?;
    Ok(Stream::Tls(Box::new(tls)))
}

fn connect_error(target: &Target, why: &str) -> Error {
    Error::new(Kind::Connect(format!(
        "cannot connect to {}:{}: {why}",
        target.host, target.port
    )))
}

/// What to say about a refused upgrade: for a status, the body's first
/// line (read for up to a second).
async fn refusal_message<S: AsyncRead + Unpin>(
    error: &ClientHandshakeError,
    stream: &mut S,
    mut input: BytesMut,
) -> String {
    let ClientHandshakeError::Status(_) = error else {
        return error.to_string();
    };
    let body_line = |input: &BytesMut| {
        let text = String::from_utf8_lossy(input);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())?;
        body.lines()
            .next()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
    };
    let _ = timeout(Duration::from_secs(1), async {
        while body_line(&input).is_none() && input.len() < 16 << 10 {
            match stream.read_buf(&mut input).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    match body_line(&input) {
        Some(line) => format!("{error}: {line}"),
        None => error.to_string(),
    }
}

/// An open client connection: its [`Connection`] handle (this derefs to
/// it) and the task that runs it. The handlers drive the connection, as on
/// a server: dropping the `Session` leaves it running until it is closed
/// ([`Connection::close`]) or the server ends it.
#[derive(Debug)]
pub struct Session {
    conn: Connection,
    task: JoinHandle<()>,
}

impl Deref for Session {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl Session {
    /// The connection's handle (cheap to clone, usable from any task).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Waits until the connection has ended and `on_close` has run.
    pub async fn closed(self) {
        let _ = self.task.await;
    }
}

/// When and how often a [`Client::connect_persistent`] connection is made
/// again after it drops: exponential backoff with jitter.
///
/// ```
/// use std::time::Duration;
/// let policy = hubbub::client::Reconnect::new()
///     .initial_delay(Duration::from_millis(200))
///     .max_delay(Duration::from_secs(10))
///     .max_attempts(Some(20));
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Reconnect {
    initial: Duration,
    max: Duration,
    attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self::new()
    }
}

impl Reconnect {
    /// From 500 ms, doubling to at most 30 s, each delay drawn between half
    /// and all of it (so that many clients do not return at once), forever.
    pub fn new() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            attempts: None,
        }
    }

    /// The first delay.
    #[must_use]
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial = delay;
        self
    }

    /// The longest delay.
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max = delay;
        self
    }

    /// Gives up after this many failed attempts in a row (`None`: never).
    #[must_use]
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.attempts = attempts;
        self
    }

    /// The delay before attempt `n` (0 for the first retry): half to all
    /// of `initial · 2ⁿ`, at most `max`.
    fn delay(&self, n: u32) -> Duration {
        let full = self.initial.saturating_mul(1u32 << n.min(20)).min(self.max);
        let random = uuid::Uuid::new_v4().as_u64_pair().0;
        let fraction = 0.5 + (random % 1000) as f64 / 2000.0;
        full.mul_f64(fraction)
    }
}

/// A connection that is made again when it drops (see [`Reconnect`]): its
/// setup runs for each connection (so `on_open` runs again), and sends
/// while it is down are refused with [`Error::is_disconnected`], never
/// queued for later or lost in silence.
#[derive(Debug, Clone)]
pub struct Persistent {
    shared: Arc<PersistentState>,
}

#[derive(Debug)]
struct PersistentState {
    current: std::sync::Mutex<Option<Connection>>,
    stop: tokio_util::sync::CancellationToken,
    done: tokio_util::sync::CancellationToken,
}

impl Persistent {
    /// The connection now, if connected.
    pub fn connection(&self) -> Option<Connection> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn with<R>(&self, f: impl FnOnce(&Connection) -> Result<R, Error>) -> Result<R, Error> {
        match self.connection() {
            Some(conn) if conn.is_open() => f(&conn),
            _ => Err(Error::new(Kind::Disconnected)),
        }
    }

    /// Sends a text message on the current connection.
    ///
    /// # Errors
    /// [`Error::is_disconnected`] while reconnecting; otherwise as
    /// [`Connection::send`].
    pub fn send(&self, text: impl Into<hubbub_proto::Utf8Bytes>) -> Result<(), Error> {
        let text = text.into();
        self.with(|conn| conn.send(text))
    }

    /// Sends a binary message on the current connection.
    ///
    /// # Errors
    /// As [`Persistent::send`].
    pub fn send_binary(&self, data: impl Into<bytes::Bytes>) -> Result<(), Error> {
        let data = data.into();
        self.with(|conn| conn.send_binary(data))
    }

    /// Stops reconnecting and closes the current connection (1000).
    pub fn close(&self) {
        self.shared.stop.cancel();
        if let Some(conn) = self.connection() {
            let _ = conn.close();
        }
    }

    /// Waits until it stopped for good: after [`Persistent::close`], or
    /// when the attempts ran out.
    pub async fn closed(&self) {
        self.shared.done.cancelled().await;
    }
}

impl Client {
    /// Connects, and connects again with `policy` whenever the connection
    /// drops (whatever ended it, but [`Persistent::close`]). `setup` runs
    /// for each connection. Returns once the first connection is open.
    ///
    /// # Errors
    /// As [`Client::connect`], for the first attempt.
    pub async fn connect_persistent<F>(
        self,
        policy: Reconnect,
        setup: F,
    ) -> Result<Persistent, Error>
    where
        F: Fn(&mut Socket) + Send + Sync + 'static,
    {
        let setup = Arc::new(setup);
        let first = {
            let setup = setup.clone();
            self.clone().connect(move |socket| setup(socket)).await?
        };
        let shared = Arc::new(PersistentState {
            current: std::sync::Mutex::new(Some(first.connection().clone())),
            stop: tokio_util::sync::CancellationToken::new(),
            done: tokio_util::sync::CancellationToken::new(),
        });
        let state = shared.clone();
        tokio::spawn(async move {
            let mut session = first;
            'connected: loop {
                tokio::select! {
                    () = state.stop.cancelled() => {
                        session.closed().await;
                        break;
                    }
                    () = session.wait() => {}
                }
                *state.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let mut failures = 0;
                loop {
                    if state.stop.is_cancelled()
                        || policy.attempts.is_some_and(|max| failures >= max)
                    {
                        break 'connected;
                    }
                    let delay = policy.delay(failures);
                    tokio::select! {
                        () = state.stop.cancelled() => break 'connected,
                        () = tokio::time::sleep(delay) => {}
                    }
                    let setup = setup.clone();
                    match self.clone().connect(move |socket| setup(socket)).await {
                        Ok(next) => {
                            tracing::info!(url = %self.url, "reconnected");
                            *state.current.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(next.connection().clone());
                            session = next;
                            continue 'connected;
                        }
                        Err(e) => {
                            failures += 1;
                            tracing::info!(url = %self.url, failures, "reconnect failed: {e}");
                        }
                    }
                }
            }
            state.done.cancel();
        });
        Ok(Persistent { shared })
    }
}

impl Session {
    /// Waits until the connection has ended, keeping the session.
    async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the feature, Mozilla's roots are trusted whatever the system
    /// has (the tests build with it).
    #[cfg(feature = "webpki-roots")]
    #[test]
    fn the_webpki_roots_feature_adds_the_bundled_roots() {
        let roots = default_roots().unwrap();
        let bundled = webpki_roots::TLS_SERVER_ROOTS;
        assert!(bundled.iter().all(|anchor| roots.roots.contains(anchor)));
    }

    #[test]
    fn urls_and_proxies_parse() {
        let t = Target::parse("wss://[::1]:9443/chat?room=a").unwrap();
        assert_eq!(
            (t.secure, t.host.as_str(), t.port, t.path.as_str()),
            (true, "::1", 9443, "/chat?room=a")
        );
        assert_eq!(t.host_header(), "[::1]:9443");
        let t = Target::parse("ws://example.com?x=1").unwrap();
        assert_eq!(
            (t.port, t.path.as_str(), t.host_header().as_str()),
            (80, "/?x=1", "example.com")
        );
        assert!(Target::parse("http://example.com/").is_err());
        assert!(Target::parse("ws://:80/").is_err());
        let p = Proxy::parse("http://ann:secret@proxy.test:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.test", 3128));
        assert_eq!(p.authorization.as_deref(), Some("YW5uOnNlY3JldA=="));
        assert!(Proxy::parse("socks5://proxy.test:1080").is_err());
    }

    #[test]
    fn the_environment_names_the_proxy_unless_no_proxy_lists_the_host() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let secure = Target::parse("wss://api.example.com/").unwrap();
        let plain = Target::parse("ws://api.example.com/").unwrap();
        let vars: &[(&str, &str)] = &[("HTTPS_PROXY", "http://p:1"), ("http_proxy", "http://q:2")];
        assert_eq!(
            proxy_from_env(&secure, env(vars)).as_deref(),
            Some("http://p:1")
        );
        assert_eq!(
            proxy_from_env(&plain, env(vars)).as_deref(),
            Some("http://q:2")
        );
        let vars: &[(&str, &str)] = &[
            ("HTTPS_PROXY", "http://p:1"),
            ("NO_PROXY", "localhost, .example.com"),
        ];
        assert_eq!(proxy_from_env(&secure, env(vars)), None);
        let vars: &[(&str, &str)] = &[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "example.org")];
        assert_eq!(
            proxy_from_env(&secure, env(vars)).as_deref(),
            Some("http://p:1")
        );
        assert_eq!(proxy_from_env(&secure, env(&[])), None);
        let local = Target::parse("wss://127.0.0.1:9/").unwrap();
        let vars: &[(&str, &str)] = &[("HTTPS_PROXY", "http://p:1")];
        assert_eq!(
            proxy_from_env(&local, env(vars)),
            None,
            "loopback is never proxied"
        );
    }
}
