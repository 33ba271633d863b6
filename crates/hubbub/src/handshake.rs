//! The opening handshake: deciding on an upgrade request, whoever parsed
//! it, and making the upgraded connection's driver.
//!
//! One deadline covers the whole handshake (TLS, the request head, the
//! hook and the `101`): a client cannot stretch it by trickling each part.
//!
//! Three ways in, one decision:
//! - [`handshake`]: raw bytes; this module reads the head, answers plain
//!   HTTP, and writes the `101` or the refusal itself;
//! - [`check_host`], [`validated`] and [`admit`] alone: another HTTP stack
//!   (hyper, axum) parsed the request and writes the answer they return;
//! - [`adopt`]: the upgrade was already answered elsewhere; only the limits
//!   are checked, and a refusal is a close frame.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::BytesMut;
use hubbub_proto::handshake::{
    AcceptResponse, HandshakeError, HttpResponse, Request, RequestParser,
};
use hubbub_proto::{CloseCode, Connection as Proto, DeflateParams, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

use crate::config::{ProtocolOrder, ServerConfig};
use crate::driver::Driver;
use crate::handle::Connection;
use crate::hook::{Accept, Decision, HandshakeRequest, Hook, text_response};
use crate::hub::{AddressSlot, HubState, Member, Permit};
use crate::info::{ConnectionInfo, StreamInfo};
use crate::limits::Refusal;
use crate::socket::{Handlers, Socket, panic_message};

/// How long a refusal (an HTTP error answer) may take to write: it is sent
/// past the deadline too, but never held up by a client that does not read.
const RESPOND_GRACE: Duration = Duration::from_secs(1);

/// A handler for plain HTTP requests on the WebSocket port.
pub(crate) type HttpHandler = Box<dyn Fn(&Request) -> HttpResponse + Send + Sync>;

/// The per-connection setup closure.
pub(crate) type Setup = Box<dyn Fn(&mut Socket) + Send + Sync>;

/// What every handshake of a hub needs: fixed when it is built.
pub(crate) struct Service {
    pub(crate) hub: Arc<HubState>,
    pub(crate) config: ServerConfig,
    /// `config.protocol`, shared by every connection's protocol state.
    pub(crate) protocol: Arc<hubbub_proto::Config>,
    pub(crate) setup: Setup,
    pub(crate) http: Option<HttpHandler>,
    pub(crate) hook: Option<Hook>,
    /// The hub's background tasks (the sweep, the shutdown) are started by
    /// whichever way in serves first, inside the runtime.
    pub(crate) started: Once,
}

/// An upgraded connection, ready to run: its driver and what it holds
/// while it lives.
pub(crate) struct Upgraded<S> {
    pub(crate) driver: Driver<S>,
    pub(crate) span: tracing::Span,
    /// Its place among the open connections.
    pub(crate) _permit: Permit,
    /// Its place in its address's count.
    pub(crate) _slot: Option<AddressSlot>,
}

/// An upgrade the hub agreed to: the connection, set up but not yet
/// registered, and the `101` to answer with.
pub(crate) struct Admitted {
    conn: Connection,
    handlers: Handlers,
    proto: Proto,
    /// The `101` answer.
    pub(crate) response: AcceptResponse,
    permit: Permit,
    slot: Option<AddressSlot>,
}

impl Admitted {
    /// The connection's driver over `stream` (the `101` already sent),
    /// registered with the hub; `leftover` is what came after the request
    /// head.
    pub(crate) fn start<S>(
        self,
        stream: S,
        leftover: BytesMut,
        config: &ServerConfig,
    ) -> Upgraded<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Self {
            conn,
            handlers,
            proto,
            permit,
            slot,
            ..
        } = self;
        // A span per connection costs ~400 B and an enter/exit per poll:
        // only at debug level. Events at info and above carry the id.
        let peer = conn.info().client_addr();
        let span = tracing::debug_span!("conn", id = %conn.id(), %peer);
        tracing::debug!(parent: &span, path = conn.info().path(), "open");
        let hub = conn.member.hub.clone();
        hub.register(&conn.member);
        if hub.shutdown.is_cancelled() {
            // The shutdown began while this one was opening: it may have
            // missed it, so it closes itself.
            let _ = conn.member.close(CloseCode::GOING_AWAY, "server shutdown");
        }
        // Idle connections keep no buffer: only bytes that came after the
        // head.
        let buf = if leftover.is_empty() {
            BytesMut::new()
        } else {
            leftover
        };
        let driver = Driver::new(stream, proto, conn, handlers, buf, config);
        Upgraded {
            driver,
            span,
            _permit: permit,
            _slot: slot,
        }
    }
}

/// Reads the request head within the handshake timeout.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    parser: &mut RequestParser,
    buf: &mut BytesMut,
) -> Result<Option<Request>, HandshakeError> {
    loop {
        if let Some(request) = parser.parse(buf)? {
            return Ok(Some(request));
        }
        buf.reserve(1024);
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Writes a refusal, counted by status.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, response: HttpResponse, hub: &HubState) {
    hub.metrics.rejected(response.status);
    respond(stream, response, false).await;
}

/// Writes an HTTP response (only its head for a `HEAD`) and closes the
/// write side, within [`RESPOND_GRACE`].
async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, response: HttpResponse, head_only: bool) {
    let mut out = BytesMut::new();
    if head_only {
        response.write_head(&mut out);
    } else {
        response.write(&mut out);
    }
    let _ = timeout(RESPOND_GRACE, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await;
}

/// The answer to a plain request on a WebSocket endpoint.
pub(crate) fn upgrade_required() -> HttpResponse {
    HttpResponse::new(426)
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Content-Type", "text/plain; charset=utf-8")
        .body("this is a WebSocket endpoint\n")
}

/// Chooses the subprotocol by the configured order.
fn choose_protocol(request: &Request, config: &ServerConfig) -> Option<String> {
    let offered = request.protocols();
    match config.protocol_order {
        ProtocolOrder::Client => offered
            .into_iter()
            .find(|o| config.protocols.iter().any(|s| s == o)),
        ProtocolOrder::Server => config
            .protocols
            .iter()
            .find(|s| offered.iter().any(|o| o == *s))
            .cloned(),
    }
}

/// Whether the request's `Host` is one this hub answers (a refusal when
/// not).
pub(crate) fn check_host(
    service: &Service,
    request: &Request,
    from: &StreamInfo,
) -> Result<(), HttpResponse> {
    if service
        .config
        .allowed_hosts
        .allows_at(request.host(), from.local_addr())
    {
        return Ok(());
    }
    let peer = from.peer();
    tracing::info!(%peer, host = request.host(), "host not allowed: 403");
    Err(text_response(403, "host not allowed"))
}

/// The `Sec-WebSocket-Accept` value for a valid upgrade request, or the
/// refusal (logged) for one that is not (RFC 6455 §4.2.1).
pub(crate) fn validated(request: &Request, from: &StreamInfo) -> Result<String, HttpResponse> {
    request.validate_upgrade().map_err(|e| {
        tracing::info!(peer = %from.peer(), status = e.status(), "handshake refused: {}", e.reason());
        e.response()
    })
}

/// The opening handshake over raw bytes, to finish by `deadline`: the
/// upgraded connection, or `None` when the request was answered or
/// dropped.
pub(crate) async fn handshake<S>(
    mut stream: S,
    from: StreamInfo,
    service: &Service,
    deadline: Instant,
) -> Option<Upgraded<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Service {
        hub, config, http, ..
    } = service;
    let peer = from.peer();
    let mut parser = RequestParser::new(&config.protocol);
    let mut buf = BytesMut::with_capacity(1024);
    let request = match timeout_at(deadline, read_request(&mut stream, &mut parser, &mut buf)).await
    {
        Err(_) => {
            tracing::debug!(%peer, "handshake timeout: dropping connection");
            return None;
        }
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            tracing::info!(%peer, status = e.status(), "handshake refused: {}", e.reason());
            refuse(&mut stream, e.response(), hub).await;
            return None;
        }
        Ok(Ok(Some(request))) => request,
    };
    if let Err(response) = check_host(service, &request, &from) {
        refuse(&mut stream, response, hub).await;
        return None;
    }
    let head_only = request.method() == "HEAD";
    if !request.is_upgrade() && (request.method() == "GET" || head_only) {
        match plain_http(http.as_ref(), &request, peer) {
            Some(response) => respond(&mut stream, response, head_only).await,
            None => refuse(&mut stream, upgrade_required(), hub).await,
        }
        return None;
    }
    let accept = match validated(&request, &from) {
        Ok(accept) => accept,
        Err(response) => {
            refuse(&mut stream, response, hub).await;
            return None;
        }
    };
    let admitted = match admit(service, request, accept, &from, deadline).await {
        Ok(admitted) => admitted,
        Err(response) => {
            refuse(&mut stream, response, hub).await;
            return None;
        }
    };
    let mut head = BytesMut::new();
    admitted.response.write(&mut head);
    // The 101 is written here, so that the driver starts with nothing
    // queued (an idle connection keeps no write queue).
    match timeout_at(deadline, stream.write_all(&head)).await {
        Ok(Ok(())) => {}
        _ => {
            tracing::debug!(%peer, "could not write the 101: dropping connection");
            return None;
        }
    }
    Some(admitted.start(stream, buf, config))
}

/// The answer of the hub's plain-HTTP handler to a `GET` or `HEAD` that
/// is not an upgrade (a panic in it answers 500), or `None` without one.
pub(crate) fn plain_http(
    http: Option<&HttpHandler>,
    request: &Request,
    peer: SocketAddr,
) -> Option<HttpResponse> {
    let http = http?;
    let response = match catch_unwind(AssertUnwindSafe(|| http(request))) {
        Ok(response) => response,
        Err(panic) => {
            tracing::error!(%peer, "HTTP handler panicked: {}", panic_message(&*panic));
            text_response(500, "internal error")
        }
    };
    tracing::debug!(%peer, path = request.path(), status = response.status, "http");
    Some(response)
}

/// Decides on an upgrade request, whoever parsed it, once its `Host`
/// ([`check_host`]) and the request itself ([`validated`], which gave
/// `accept`) passed: the shutdown, the per-address limits, the `Origin`,
/// the hook and the connection limit, in that order; then the subprotocol
/// and the extension, and the setup closure. A refusal is the HTTP answer
/// to give (already logged; not yet counted).
pub(crate) async fn admit(
    service: &Service,
    request: Request,
    accept: String,
    from: &StreamInfo,
    deadline: Instant,
) -> Result<Admitted, HttpResponse> {
    let Service {
        hub, config, hook, ..
    } = service;
    if hub.shutdown.is_cancelled() {
        tracing::debug!(peer = %from.peer(), "shutting down: 503");
        return Err(text_response(503, "server shutting down"));
    }
    // Behind a trusted proxy, the client is who the proxy says.
    let peer = crate::limits::client_address(from.peer(), &request, &config.trusted_proxies);
    let slot = address_slot(hub, config, peer)
        .map_err(|why| text_response(429, why).header("Retry-After", "1"))?;
    if !config
        .origins
        .allows_on(request.origin(), request.host(), from.is_secure())
    {
        tracing::info!(%peer, origin = request.origin(), "origin not allowed: 403");
        return Err(text_response(403, "origin not allowed"));
    }
    let mut accepted = Accept::default();
    if let Some(hook) = hook {
        accepted = run_hook(hook, &request, peer, from.is_secure(), deadline).await?;
    }
    // A place among the open connections, or 503. Every way out of this
    // function from here on gives it back by dropping it.
    let Some(permit) = hub.permit(config.max_connections) else {
        tracing::warn!(%peer, limit = config.max_connections, "connection limit reached: 503");
        return Err(text_response(503, "too many connections").header("Retry-After", "1"));
    };
    let mut protocol = choose_protocol(&request, config);
    if let Some(chosen) = accepted.protocol.take() {
        if request.protocols().contains(&chosen) {
            protocol = Some(chosen);
        } else {
            tracing::error!(%peer, protocol = chosen, "hook chose a subprotocol the client did not offer");
        }
    }
    if protocol.is_none() && config.require_protocol && !config.protocols.is_empty() {
        tracing::info!(%peer, offered = ?request.protocols(), "no supported subprotocol: 400");
        let body = format!("supported subprotocols: {}\n", config.protocols.join(", "));
        return Err(HttpResponse::new(400)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Sec-WebSocket-Protocol", config.protocols.join(", "))
            .body(body));
    }
    let deflate = hubbub_proto::deflate::negotiate(&request.extensions(), &config.protocol.deflate);
    let local = from
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let info = ConnectionInfo::new(peer, local, request, protocol.clone()).over(from.http);
    let (conn, handlers) = set_up(
        service,
        info,
        deflate.as_ref().map(|(params, _)| *params),
        accepted.data,
    )
    .map_err(|()| text_response(500, "internal error"))?;
    let mut response = AcceptResponse::new(accept);
    if let Some(protocol) = protocol {
        response = response.protocol(protocol);
    }
    for (name, value) in accepted.headers {
        response = response.header(name, value);
    }
    let mut proto = Proto::with_shared_config(Role::Server, service.protocol.clone());
    if let Some((params, answer)) = deflate {
        response = response.extensions(answer);
        proto.set_deflate(params);
    }
    Ok(Admitted {
        conn,
        handlers,
        proto,
        response,
        permit,
        slot,
    })
}

/// Takes in a connection whose upgrade another HTTP stack already
/// answered (with `protocol` and `deflate` as it negotiated them): only
/// the shutdown and the limits are checked, as the `Host`, `Origin` and
/// hook were the answering stack's to check. A refusal is the close code
/// and reason to end the connection with.
pub(crate) fn adopt(
    service: &Service,
    request: Request,
    from: &StreamInfo,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
) -> Result<Admitted, (CloseCode, &'static str)> {
    let Service { hub, config, .. } = service;
    if hub.shutdown.is_cancelled() {
        return Err((CloseCode::GOING_AWAY, "server shutdown"));
    }
    let peer = crate::limits::client_address(from.peer(), &request, &config.trusted_proxies);
    let slot = address_slot(hub, config, peer).map_err(|why| (CloseCode::TRY_AGAIN_LATER, why))?;
    let Some(permit) = hub.permit(config.max_connections) else {
        tracing::warn!(%peer, limit = config.max_connections, "connection limit reached: closing with 1013");
        return Err((CloseCode::TRY_AGAIN_LATER, "too many connections"));
    };
    let local = from
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let info = ConnectionInfo::new(peer, local, request, protocol);
    let (conn, handlers) = set_up(service, info, deflate, Vec::new())
        .map_err(|()| (CloseCode::INTERNAL_ERROR, "internal error"))?;
    let mut proto = Proto::with_shared_config(Role::Server, service.protocol.clone());
    if let Some(params) = deflate {
        proto.set_deflate(params);
    }
    Ok(Admitted {
        conn,
        handlers,
        proto,
        // Answered elsewhere: never written.
        response: AcceptResponse::new(String::new()),
        permit,
        slot,
    })
}

/// Ends a stream whose upgrade was answered elsewhere but that this hub
/// refused: a close frame with `code` and `reason`, then the end of the
/// write side.
pub(crate) async fn close_refused<S: AsyncWrite + Unpin>(
    stream: &mut S,
    config: &ServerConfig,
    (code, reason): (CloseCode, &str),
) {
    let mut proto = Proto::new(Role::Server, config.protocol.clone());
    let mut out = BytesMut::new();
    let _ = proto.close(Some(code), reason, &mut out);
    let _ = timeout(RESPOND_GRACE, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await;
}

/// A place in `peer`'s count, or why not. Clients without an address (the
/// unspecified one) are not counted: they would all be one.
fn address_slot(
    hub: &Arc<HubState>,
    config: &ServerConfig,
    peer: SocketAddr,
) -> Result<Option<AddressSlot>, &'static str> {
    if peer.ip().is_unspecified() {
        return Ok(None);
    }
    match hub.per_address.admit(
        peer.ip(),
        config.max_connections_per_ip,
        config.handshake_rate_per_ip.as_ref(),
        hub.now_ms(),
    ) {
        Ok(()) => Ok(Some(AddressSlot::new(hub.clone(), peer.ip()))),
        Err((refusal, first)) => {
            if first {
                tracing::warn!(ip = %peer.ip(), ?refusal, "refusing upgrades from this address");
            }
            Err(match refusal {
                Refusal::TooManyConnections => "too many connections from your address",
                Refusal::TooManyHandshakes => "too many connection attempts from your address",
            })
        }
    }
}

/// Runs the handshake hook within the deadline: what it accepted with, or
/// the refusal to answer.
async fn run_hook(
    hook: &Hook,
    request: &Request,
    peer: SocketAddr,
    secure: bool,
    deadline: Instant,
) -> Result<Accept, HttpResponse> {
    let asked = HandshakeRequest {
        request: request.clone(),
        peer,
        secure,
    };
    let decision = match catch_unwind(AssertUnwindSafe(|| hook(asked))) {
        Ok(future) => timeout_at(deadline, guarded(future)).await,
        Err(panic) => Ok(Err(panic_message(&*panic))),
    };
    match decision {
        Ok(Ok(Decision::Accept(accept))) => Ok(accept),
        Ok(Ok(Decision::Reject(response))) => {
            tracing::info!(%peer, status = response.status, "handshake hook refused the upgrade");
            Err(response)
        }
        Ok(Err(panic)) => {
            tracing::error!(%peer, "handshake hook panicked: {panic}");
            Err(text_response(500, "internal error"))
        }
        Err(_) => {
            tracing::warn!(%peer, "handshake hook timed out: 503");
            Err(text_response(503, "try again later"))
        }
    }
}

/// The connection's shared state and its handlers, from the setup closure
/// (`Err` when it panicked, logged).
fn set_up(
    service: &Service,
    info: ConnectionInfo,
    deflate: Option<DeflateParams>,
    data: Vec<Box<dyn std::any::Any + Send + Sync>>,
) -> Result<(Connection, Handlers), ()> {
    let peer = info.client_addr();
    let conn = Connection::new(Arc::new(Member::new(
        info,
        service.hub.clone(),
        service.config.max_queue_bytes,
        service.config.backpressure,
        deflate,
    )));
    for value in data {
        conn.member.set_data(value);
    }
    let mut socket = Socket {
        conn: conn.clone(),
        handlers: Handlers::default(),
    };
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (service.setup)(&mut socket))) {
        tracing::error!(%peer, "connection setup panicked: {}", panic_message(&*panic));
        return Err(());
    }
    Ok((conn, socket.handlers))
}

/// Runs the hook's future, turning a panic into its message.
async fn guarded(mut future: crate::hook::HookFuture) -> Result<Decision, String> {
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(decision)) => std::task::Poll::Ready(Ok(decision)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => std::task::Poll::Ready(Err(panic_message(&*panic))),
        },
    )
    .await
}
