//! The opening handshake of one stream, ending in a driver for the
//! upgraded connection (or an HTTP answer).
//!
//! One deadline covers the whole handshake (TLS, the request head, the
//! hook and the `101`): a client cannot stretch it by trickling each part.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hubbub_proto::handshake::{
    AcceptResponse, HandshakeError, HttpResponse, Request, RequestParser,
};
use hubbub_proto::{Connection as Proto, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

use crate::config::{ProtocolOrder, ServerConfig};
use crate::driver::Driver;
use crate::handle::Connection;
use crate::hook::{Accept, Decision, HandshakeRequest, Hook, text_response};
use crate::hub::{Hub, Member, Permit};
use crate::info::ConnectionInfo;
use crate::limits::Refusal;
use crate::socket::{Handlers, Socket, panic_message};

/// How long a refusal (an HTTP error answer) may take to write: it is sent
/// past the deadline too, but never held up by a client that does not read.
const RESPOND_GRACE: Duration = Duration::from_secs(1);

/// A handler for plain HTTP requests on the WebSocket port.
pub(crate) type HttpHandler = Box<dyn Fn(&Request) -> HttpResponse + Send + Sync>;

/// The per-connection setup closure.
pub(crate) type Setup = Box<dyn Fn(&mut Socket) + Send + Sync>;

/// What every handshake of a running server needs: fixed when it starts.
pub(crate) struct Service {
    pub(crate) hub: Arc<Hub>,
    pub(crate) config: ServerConfig,
    pub(crate) setup: Setup,
    pub(crate) http: Option<HttpHandler>,
    pub(crate) hook: Option<Hook>,
}

/// An upgraded connection, ready to run: its driver and what it holds
/// while it lives.
pub(crate) struct Upgraded<S> {
    pub(crate) driver: Driver<S>,
    pub(crate) span: tracing::Span,
    /// Its place among the open connections.
    pub(crate) _permit: Permit,
    /// Its place in its address's count.
    pub(crate) _slot: AddressSlot,
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

/// Answers a refused request, counted by status.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, response: HttpResponse, hub: &Hub) {
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

/// The opening handshake, to finish by `deadline`: the upgraded
/// connection, or `None` when the request was answered or dropped.
pub(crate) async fn handshake<S>(
    mut stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    secure: bool,
    service: &Service,
    deadline: Instant,
) -> Option<Upgraded<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Service {
        hub,
        config,
        setup,
        http,
        hook,
    } = service;
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
    if !config.allowed_hosts.allows(request.host(), local) {
        tracing::info!(%peer, host = request.host(), "host not allowed: 403");
        refuse(&mut stream, text_response(403, "host not allowed"), hub).await;
        return None;
    }
    let head_only = request.method() == "HEAD";
    if !request.is_upgrade() && (request.method() == "GET" || head_only) {
        if let Some(http) = http {
            let response = match catch_unwind(AssertUnwindSafe(|| http(&request))) {
                Ok(response) => response,
                Err(panic) => {
                    tracing::error!(%peer, "HTTP handler panicked: {}", panic_message(&*panic));
                    text_response(500, "internal error")
                }
            };
            tracing::debug!(%peer, path = request.path(), status = response.status, "http");
            respond(&mut stream, response, head_only).await;
            return None;
        }
        let response = HttpResponse::new(426)
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Content-Type", "text/plain; charset=utf-8")
            .body("this is a WebSocket endpoint\n");
        refuse(&mut stream, response, hub).await;
        return None;
    }
    let accept = match request.validate_upgrade() {
        Ok(accept) => accept,
        Err(e) => {
            tracing::info!(%peer, status = e.status(), "handshake refused: {}", e.reason());
            refuse(&mut stream, e.response(), hub).await;
            return None;
        }
    };
    // Behind a trusted proxy, the client is who the proxy says.
    let peer = crate::limits::client_address(peer, &request, &config.trusted_proxies);
    let slot = match hub.per_address.admit(
        peer.ip(),
        config.max_connections_per_ip,
        config.handshake_rate_per_ip.as_ref(),
        hub.now_ms(),
    ) {
        Ok(()) => AddressSlot {
            hub: hub.clone(),
            ip: peer.ip(),
        },
        Err((refusal, first)) => {
            if first {
                tracing::warn!(ip = %peer.ip(), ?refusal, "refusing upgrades from this address: 429");
            }
            let why = match refusal {
                Refusal::TooManyConnections => "too many connections from your address",
                Refusal::TooManyHandshakes => "too many connection attempts from your address",
            };
            let response = text_response(429, why).header("Retry-After", "1");
            refuse(&mut stream, response, hub).await;
            return None;
        }
    };
    if !config
        .origins
        .allows_on(request.origin(), request.host(), secure)
    {
        tracing::info!(%peer, origin = request.origin(), "origin not allowed: 403");
        refuse(&mut stream, text_response(403, "origin not allowed"), hub).await;
        return None;
    }
    let mut accepted = Accept::default();
    if let Some(hook) = hook {
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
            Ok(Ok(Decision::Accept(accept))) => accepted = accept,
            Ok(Ok(Decision::Reject(response))) => {
                tracing::info!(%peer, status = response.status, "handshake hook refused the upgrade");
                refuse(&mut stream, response, hub).await;
                return None;
            }
            Ok(Err(panic)) => {
                tracing::error!(%peer, "handshake hook panicked: {panic}");
                refuse(&mut stream, text_response(500, "internal error"), hub).await;
                return None;
            }
            Err(_) => {
                tracing::warn!(%peer, "handshake hook timed out: 503");
                refuse(&mut stream, text_response(503, "try again later"), hub).await;
                return None;
            }
        }
    }
    // A place among the open connections, or 503. Every way out of this
    // function from here on gives it back by dropping it.
    let Some(permit) = hub.permit(config.max_connections) else {
        tracing::warn!(%peer, limit = config.max_connections, "connection limit reached: 503");
        let response = text_response(503, "too many connections").header("Retry-After", "1");
        refuse(&mut stream, response, hub).await;
        return None;
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
        let response = HttpResponse::new(400)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Sec-WebSocket-Protocol", config.protocols.join(", "))
            .body(body);
        refuse(&mut stream, response, hub).await;
        return None;
    }
    let info = ConnectionInfo::new(peer, local, request, protocol.clone());
    let deflate =
        hubbub_proto::deflate::negotiate(&info.request().extensions(), &config.protocol.deflate);
    let conn = Connection::new(Arc::new(Member::new(
        info,
        hub.clone(),
        config.max_queue_bytes,
        config.backpressure,
        deflate.as_ref().map(|(params, _)| *params),
    )));
    for value in accepted.data.drain(..) {
        conn.member.set_data(value);
    }
    let mut socket = Socket {
        conn: conn.clone(),
        handlers: Handlers::default(),
    };
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| setup(&mut socket))) {
        tracing::error!(%peer, "connection setup panicked: {}", panic_message(&*panic));
        refuse(&mut stream, text_response(500, "internal error"), hub).await;
        return None;
    }
    let mut response = AcceptResponse::new(accept);
    if let Some(protocol) = protocol {
        response = response.protocol(protocol);
    }
    for (name, value) in accepted.headers.drain(..) {
        response = response.header(name, value);
    }
    let mut proto = Proto::new(Role::Server, config.protocol.clone());
    if let Some((params, answer)) = deflate {
        response = response.extensions(answer);
        proto.set_deflate(params);
    }
    let mut head = BytesMut::new();
    response.write(&mut head);
    // The 101 is written here, so that the driver starts with nothing
    // queued (an idle connection keeps no write queue).
    match timeout_at(deadline, stream.write_all(&head)).await {
        Ok(Ok(())) => {}
        _ => {
            tracing::debug!(%peer, "could not write the 101: dropping connection");
            return None;
        }
    }

    // A span per connection costs ~400 B and an enter/exit per poll: only
    // at debug level. Events at info and above carry the id themselves.
    let span = tracing::debug_span!("conn", id = %conn.id(), %peer);
    tracing::debug!(parent: &span, path = conn.info().path(), "open");
    hub.register(&conn.member);
    // Idle connections keep no buffer: only bytes that came after the head.
    let buf = if buf.is_empty() { BytesMut::new() } else { buf };
    let driver = Driver::new(stream, proto, conn, socket.handlers, buf, config);
    Some(Upgraded {
        driver,
        span,
        _permit: permit,
        _slot: slot,
    })
}

/// A connection's place in its address's count, given back on drop.
pub(crate) struct AddressSlot {
    hub: Arc<Hub>,
    ip: std::net::IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        self.hub.per_address.release(self.ip);
    }
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
