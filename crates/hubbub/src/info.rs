//! What is known about a connection, and how it ended.

use std::net::{IpAddr, SocketAddr};

use hubbub_proto::CloseCode;
use hubbub_proto::handshake::{Headers, Request};
use uuid::Uuid;

/// Everything known about a connection from its opening handshake.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    id: Uuid,
    client_addr: SocketAddr,
    local_addr: SocketAddr,
    request: Request,
    cookies: Vec<(String, String)>,
    requested_protocols: Vec<String>,
    protocol: Option<String>,
}

impl ConnectionInfo {
    pub(crate) fn new(
        client_addr: SocketAddr,
        local_addr: SocketAddr,
        request: Request,
        protocol: Option<String>,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            client_addr,
            local_addr,
            cookies: request.cookies(),
            requested_protocols: request.protocols(),
            request,
            protocol,
        }
    }

    /// A unique id (UUID v4); it prints lowercase and hyphenated, like
    /// Fleck's `Guid`.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The client's IP address.
    pub fn client_ip(&self) -> IpAddr {
        self.client_addr.ip()
    }

    /// The client's port.
    pub fn client_port(&self) -> u16 {
        self.client_addr.port()
    }

    /// The client's address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The server address the client connected to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
        &self.cookies
    }

    /// The value of cookie `name`, if sent.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The subprotocols the client offered, in its order.
    pub fn requested_protocols(&self) -> &[String] {
        &self.requested_protocols
    }

    /// The subprotocol agreed on, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The whole parsed request.
    pub fn request(&self) -> &Request {
        &self.request
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
