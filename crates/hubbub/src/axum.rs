//! WebSockets in an axum 0.8 application (feature `axum`): the [`Upgrade`]
//! extractor, and [`Upgrade::serve`] to hand the connection to a
//! [`Hub`]. A route then reads like axum's own:
//!
//! ```no_run
//! use axum::{Router, extract::State, response::Response, routing::get};
//! use hubbub::Hub;
//!
//! async fn ws(up: hubbub::axum::Upgrade, State(hub): State<Hub>) -> Response {
//!     up.serve(&hub).await
//! }
//!
//! # async fn f() -> std::io::Result<()> {
//! let hub = Hub::new(|socket| {
//!     socket.on_message(|conn, text| {
//!         conn.server().broadcast(text);
//!     });
//! });
//! let app = Router::new().route("/chat", get(ws)).with_state(hub);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(
//!     listener,
//!     app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
//! )
//! .await
//! # }
//! ```
//!
//! With the `http2` feature, an HTTP/2 extended `CONNECT` (RFC 8441) is an
//! upgrade too, on an axum server that serves HTTP/2 (axum's `http2`
//! feature): route it with `any(ws)` (or `get(ws).connect(ws)`), since its
//! method is `CONNECT`.
//!
//! With `ConnectInfo<SocketAddr>` (as above) each connection knows its
//! client's address; with [`Addrs`] (`into_make_service_with_connect_info::<hubbub::axum::Addrs>()`)
//! it also knows the server's own, so that the `Host` check
//! ([`crate::HostPolicy`]) guards a loopback server against DNS rebinding as
//! hubbub's own listener does. Without either, the client's address is
//! unknown (`0.0.0.0:0`) and per-address limits do not apply.

use std::fmt;
use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use hubbub_proto::handshake::{HttpResponse, Request};
use hyper::upgrade::OnUpgrade;
use tokio::net::{TcpListener, TcpStream};

use crate::handshake::upgrade_required;
use crate::hyper::Carrier;
use crate::info::StreamInfo;
use crate::serve::Hub;

/// An extractor for a WebSocket upgrade request: it rejects requests that
/// are not one (with the status and one-line reason hubbub's own listener
/// gives: 405 for a method other than `GET`, 426 for a plain `GET`, 400 for
/// a malformed upgrade), and [`Upgrade::serve`] hands the rest to a hub.
pub struct Upgrade {
    request: Request,
    carrier: Carrier,
    on_upgrade: Option<OnUpgrade>,
    from: StreamInfo,
}

impl fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgrade")
            .field("request", &self.request)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Rejection;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Rejection> {
        let request = crate::hyper::to_request(parts).map_err(|e| Rejection(e.response()))?;
        let carrier = Carrier::of(parts);
        match &carrier {
            Carrier::Http11 => {
                if !request.is_upgrade()
                    && (request.method() == "GET" || request.method() == "HEAD")
                {
                    return Err(Rejection(upgrade_required()));
                }
                request
                    .validate_upgrade()
                    .map_err(|e| Rejection(e.response()))?;
            }
            Carrier::Http2 { protocol } => request
                .validate_extended_connect(protocol.as_deref())
                .map_err(|e| Rejection(e.response()))?,
        }
        let from = if let Some(ConnectInfo(addrs)) = parts.extensions.get::<ConnectInfo<Addrs>>() {
            let from = StreamInfo::new(addrs.peer);
            addrs.local.map_or(from, |local| from.local(local))
        } else if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            StreamInfo::new(*peer)
        } else {
            StreamInfo::default()
        };
        Ok(Self {
            request,
            carrier,
            on_upgrade: parts.extensions.remove::<OnUpgrade>(),
            from,
        })
    }
}

impl Upgrade {
    /// Answers the upgrade with `hub`'s rules (`Host`, per-address limits,
    /// `Origin`, the handshake hook, the connection limit, subprotocol and
    /// permessage-deflate; refusals as on hubbub's own listener) and, once
    /// the `101` is out, serves the connection with the hub's setup, in its
    /// registry and topics alongside every other connection of the hub.
    pub async fn serve(self, hub: &Hub) -> Response {
        crate::hyper::answer(
            hub.service().clone(),
            Ok(self.request),
            self.carrier,
            self.on_upgrade,
            self.from,
            (),
        )
        .await
    }

    /// The upgrade request: path, query, headers, cookies, offered
    /// subprotocols.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Where the connection comes from.
    pub fn from(&self) -> StreamInfo {
        self.from
    }

    /// Replaces where the connection comes from: the server's own address
    /// (for the `Host` check) or TLS (for the same-origin rule, which then
    /// expects `https` pages), which axum does not tell.
    ///
    /// ```no_run
    /// # async fn ws(up: hubbub::axum::Upgrade, hub: hubbub::Hub) -> axum::response::Response {
    /// // Behind axum-server's TLS, on 0.0.0.0:443:
    /// let from = up.from().local("0.0.0.0:443".parse().unwrap()).secure(true);
    /// up.with_from(from).serve(&hub).await
    /// # }
    /// ```
    #[must_use]
    pub fn with_from(mut self, from: StreamInfo) -> Self {
        self.from = from;
        self
    }
}

/// Both addresses of an axum connection, as connect info: serve the app
/// with `into_make_service_with_connect_info::<hubbub::axum::Addrs>()` and
/// [`Upgrade`] takes the client's address and the server's own from it.
/// (For a listener wrapped with `tap_io`, use `SocketAddr`: the server's
/// address is then unknown.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Addrs {
    /// The client's address.
    pub peer: SocketAddr,
    /// The server's address the client connected to.
    pub local: Option<SocketAddr>,
}

impl Addrs {
    fn of(stream: &TcpStream, peer: SocketAddr) -> Self {
        Self {
            peer,
            local: stream.local_addr().ok(),
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Addrs {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Self::of(stream.io(), *stream.remote_addr())
    }
}

/// Why [`Upgrade`] refused a request: its status and one-line reason, as
/// hubbub's own listener answers.
#[derive(Debug)]
pub struct Rejection(HttpResponse);

impl Rejection {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.0.status
    }

    /// The one-line reason (the response body).
    pub fn reason(&self) -> &str {
        std::str::from_utf8(&self.0.body)
            .unwrap_or_default()
            .trim_end()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for Rejection {}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        crate::hyper::convert(self.0)
    }
}
