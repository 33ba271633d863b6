//! What is known about a connection, and how it ended.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use hubbub_proto::CloseCode;
use hubbub_proto::handshake::{Headers, Request};
use uuid::Uuid;

/// Where a stream handed to a [`crate::Hub`] comes from: the client's
/// address, the server's own address when known, and whether the stream
/// is TLS.
///
/// A `SocketAddr` converts into one (local address unknown, not TLS):
///
/// ```
/// use hubbub::StreamInfo;
/// let peer: std::net::SocketAddr = "192.0.2.7:50000".parse().unwrap();
/// let from = StreamInfo::from(peer).local("192.0.2.1:443".parse().unwrap()).secure(true);
/// assert_eq!(from.peer(), peer);
/// assert!(from.is_secure());
/// ```
///
/// A stream without addresses (a Unix socket, an in-memory pipe) uses
/// [`StreamInfo::default`]: the unspecified address `0.0.0.0:0`, for which
/// the per-address limits are not applied (every such client would count
/// as one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    peer: SocketAddr,
    local: Option<SocketAddr>,
    secure: bool,
    /// The HTTP version that carried the handshake (set by the hyper
    /// integration, which sees the request's).
    pub(crate) http: HttpVersion,
}

/// The HTTP version that carried a connection's opening handshake
/// ([`ConnectionInfo::http_version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/1.1: the `Upgrade` of RFC 6455; the connection is the TCP (or
    /// TLS) stream itself.
    #[default]
    Http11,
    /// HTTP/2: an extended `CONNECT` (RFC 8441); the connection is one
    /// stream among others on a shared HTTP/2 connection.
    Http2,
}

impl HttpVersion {
    /// `"1.1"` or `"2"`, as the metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http11 => "1.1",
            Self::Http2 => "2",
        }
    }
}

impl Default for StreamInfo {
    fn default() -> Self {
        Self::new(SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

impl From<SocketAddr> for StreamInfo {
    fn from(peer: SocketAddr) -> Self {
        Self::new(peer)
    }
}

impl StreamInfo {
    /// A stream from `peer`, to an unknown local address, without TLS.
    pub fn new(peer: SocketAddr) -> Self {
        Self {
            peer,
            local: None,
            secure: false,
            http: HttpVersion::Http11,
        }
    }

    /// The server address the client connected to: with it, the `Host`
    /// check ([`crate::HostPolicy`]) compares ports and knows whether the
    /// server is on loopback.
    #[must_use]
    pub fn local(mut self, local: SocketAddr) -> Self {
        self.local = Some(local);
        self
    }

    /// Whether the stream is TLS (`wss://`): the same-origin rule then
    /// expects `https` pages.
    #[must_use]
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The server's address, if known.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Whether the stream is TLS.
    pub fn is_secure(&self) -> bool {
        self.secure
    }
}

/// Everything known about a connection from its opening handshake.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    id: Uuid,
    client_addr: Addr,
    local_addr: Addr,
    request: Request,
    /// The cookies and offered subprotocols, parsed from the request's
    /// fields when first asked for (16 bytes here until then, not 48).
    parsed: OnceLock<Box<Parsed>>,
    protocol: Option<Box<str>>,
    http: HttpVersion,
    /// A client's: the header fields of the server's `101`.
    response: Option<Box<Headers>>,
}

/// A socket address in 20 bytes, not `SocketAddr`'s 32 (an IPv6 address's
/// flow label and scope id are dropped: 24 bytes per connection).
#[derive(Debug, Clone, Copy)]
struct Addr {
    ip: IpAddr,
    port: u16,
}

impl From<SocketAddr> for Addr {
    fn from(addr: SocketAddr) -> Self {
        Self {
            ip: addr.ip(),
            port: addr.port(),
        }
    }
}

impl From<Addr> for SocketAddr {
    fn from(addr: Addr) -> Self {
        SocketAddr::new(addr.ip, addr.port)
    }
}

/// What [`ConnectionInfo`] parses from the request on demand.
#[derive(Debug, Clone)]
struct Parsed {
    cookies: Vec<(String, String)>,
    requested_protocols: Vec<String>,
}

impl ConnectionInfo {
    fn parsed(&self) -> &Parsed {
        self.parsed.get_or_init(|| {
            Box::new(Parsed {
                cookies: self.request.cookies(),
                requested_protocols: self.request.protocols(),
            })
        })
    }

    pub(crate) fn new(
        client_addr: SocketAddr,
        local_addr: SocketAddr,
        request: Request,
        protocol: Option<String>,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            client_addr: client_addr.into(),
            local_addr: local_addr.into(),
            parsed: OnceLock::new(),
            request,
            protocol: protocol.map(String::into_boxed_str),
            http: HttpVersion::Http11,
            response: None,
        }
    }

    /// The info of a connection whose handshake came over `http`.
    pub(crate) fn over(mut self, http: HttpVersion) -> Self {
        self.http = http;
        self
    }

    /// A client connection's info also keeps the server's answer.
    pub(crate) fn with_response(mut self, headers: Headers) -> Self {
        self.response = Some(Box::new(headers));
        self
    }

    /// A unique id (UUID v4); it prints lowercase and hyphenated, like
    /// Fleck's `Guid`.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The id, borrowed (the registry's key).
    pub(crate) fn id_ref(&self) -> &Uuid {
        &self.id
    }

    /// The client's IP address.
    pub fn client_ip(&self) -> IpAddr {
        self.client_addr.ip
    }

    /// The client's port.
    pub fn client_port(&self) -> u16 {
        self.client_addr.port
    }

    /// The client's address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr.into()
    }

    /// The server address the client connected to (`0.0.0.0:0` when the
    /// stream was handed over without it: see [`StreamInfo::local`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr.into()
    }

    /// The `Host` header.
    pub fn host(&self) -> Option<&str> {
        self.request.host()
    }

    /// The `Origin` header.
    pub fn origin(&self) -> Option<&str> {
        self.request.origin()
    }

    /// The request path, such as `/chat`.
    pub fn path(&self) -> &str {
        self.request.path()
    }

    /// The query string without `?`.
    pub fn query(&self) -> Option<&str> {
        self.request.query()
    }

    /// Every request header, repeats kept, case-insensitive lookup.
    pub fn headers(&self) -> &Headers {
        self.request.headers()
    }

    /// The cookies the client sent, in order.
    pub fn cookies(&self) -> &[(String, String)] {
        &self.parsed().cookies
    }

    /// The value of cookie `name`, if sent.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The subprotocols the client offered, in its order.
    pub fn requested_protocols(&self) -> &[String] {
        &self.parsed().requested_protocols
    }

    /// The subprotocol agreed on, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The HTTP version that carried the handshake: HTTP/2 for a WebSocket
    /// opened as a stream of an HTTP/2 connection (RFC 8441), HTTP/1.1
    /// otherwise.
    pub fn http_version(&self) -> HttpVersion {
        self.http
    }

    /// The whole parsed request (for HTTP/2, method `CONNECT`, with the
    /// `:authority` as its `Host`).
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// On a client's connection (`hubbub::client`), the header fields of
    /// the server's `101 Switching Protocols` answer (cookies it set, its
    /// `Sec-WebSocket-Extensions`, anything a proxy added); `None` on a
    /// server's connection.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), hubbub::Error> {
    /// let session = hubbub::client::Client::new("ws://127.0.0.1:8181/")
    ///     .connect(|_| {})
    ///     .await?;
    /// let answer = session.info().response_headers().unwrap();
    /// println!("server: {:?}", answer.get("Server"));
    /// # Ok(()) }
    /// ```
    pub fn response_headers(&self) -> Option<&Headers> {
        self.response.as_deref()
    }
}

/// How a connection ended, given to `on_close`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseInfo {
    /// The close code: the peer's if it closed first (1005 when its frame
    /// had none), the server's if it closed first (1001 on shutdown, 1002,
    /// 1007 or 1009 on a protocol error, 1008 on a full queue, 1011 after a
    /// handler panic), or 1006 when the connection dropped without a close
    /// frame.
    pub code: CloseCode,
    /// The reason that came with the code.
    pub reason: String,
    /// Whether both close frames were exchanged.
    pub clean: bool,
}

impl CloseInfo {
    pub(crate) fn abnormal(reason: impl Into<String>) -> Self {
        Self {
            code: CloseCode::ABNORMAL,
            reason: reason.into(),
            clean: false,
        }
    }
}
