//! The opening handshake of one accepted socket, then its driver.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use hubbub_proto::handshake::{
    AcceptResponse, HandshakeError, HttpResponse, Request, RequestParser,
};
use hubbub_proto::{Connection as Proto, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

use crate::config::{ProtocolOrder, ServerConfig};
use crate::connection::Connection;
use crate::driver::Driver;
use crate::hook::{Accept, Decision, HandshakeRequest};
use crate::info::ConnectionInfo;
use crate::limits::Refusal;
use crate::server::ConnectionContext;
use crate::socket::{BoxFuture, Handlers, Socket, panic_message};

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
async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: HttpResponse,
    metrics: &crate::metrics::Metrics,
) {
    metrics.rejected(response.status);
    respond(stream, response).await;
}

/// Writes an HTTP response and closes the write side.
async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, response: HttpResponse) {
    let mut out = BytesMut::new();
    response.write(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
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

/// Serves one accepted socket: the opening handshake, then the driver.
///
/// Both phases are boxed futures, so that the task itself stays a few
/// dozen bytes: the handshake's state (timers, parser, buffers) is freed as
/// soon as it is done, and an open connection keeps only its driver.
pub(crate) fn serve_socket<S>(
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    secure: bool,
    ctx: ConnectionContext,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Not an `async fn`: see `handle_connection`. Only the two boxes and
    // the server's handle stay in this future while the connection lives.
    let shared = ctx.2.clone();
    let handshake = Box::pin(handshake(stream, peer, local, secure, ctx));
    async move {
        let Some((driver, span, _slot)) = handshake.await else {
            return;
        };
        // The driver leaves the registry itself, before `on_close` runs.
        run_in(driver, span).await;
        shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The driver's future, boxed, in the connection's span when something
/// records it: a disabled span would still take 40 bytes per connection.
/// (A function, so that the span is moved here and never kept in the
/// connection's task across the wait.)
fn run_in<S>(driver: Driver<S>, span: tracing::Span) -> BoxFuture
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if span.is_disabled() {
        Box::pin(driver.run())
    } else {
        Box::pin(driver.run().instrument(span))
    }
}

/// The opening handshake: a driver for the upgraded connection, or `None`
/// when the request was answered or dropped.
async fn handshake<S>(
    mut stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    secure: bool,
    (setup, config, shared): ConnectionContext,
) -> Option<(Driver<S>, tracing::Span, AddressSlot)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut parser = RequestParser::new(&config.protocol);
    let mut buf = BytesMut::with_capacity(1024);
    let request = match tokio::time::timeout(
        config.handshake_timeout,
        read_request(&mut stream, &mut parser, &mut buf),
    )
    .await
    {
        Err(_) => {
            tracing::debug!(%peer, "handshake timeout: dropping connection");
            return None;
        }
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            tracing::info!(%peer, status = e.status(), "handshake refused: {}", e.reason());
            refuse(&mut stream, e.response(), &shared.metrics).await;
            return None;
        }
        Ok(Ok(Some(request))) => request,
    };
    if !request.is_upgrade() && request.method() == "GET" {
        if let Some(http) = &shared.http {
            let response = match catch_unwind(AssertUnwindSafe(|| http(&request))) {
                Ok(response) => response,
                Err(panic) => {
                    tracing::error!(%peer, "HTTP handler panicked: {}", panic_message(&*panic));
                    HttpResponse::new(500).body("internal error\n")
                }
            };
            tracing::debug!(%peer, path = request.path(), status = response.status, "http");
            respond(&mut stream, response).await;
            return None;
        }
        let response = HttpResponse::new(426)
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Content-Type", "text/plain; charset=utf-8")
            .body("this is a WebSocket endpoint\n");
        refuse(&mut stream, response, &shared.metrics).await;
        return None;
    }
    let accept = match request.validate_upgrade() {
        Ok(accept) => accept,
        Err(e) => {
            tracing::info!(%peer, status = e.status(), "handshake refused: {}", e.reason());
            refuse(&mut stream, e.response(), &shared.metrics).await;
            return None;
        }
    };
    let slot = match shared.per_address.admit(
        peer.ip(),
        config.max_connections_per_ip,
        config.handshake_rate_per_ip.as_ref(),
        shared.now_ms(),
    ) {
        Ok(()) => AddressSlot {
            shared: shared.clone(),
            ip: peer.ip(),
        },
        Err((refusal, first)) => {
            if first {
                tracing::warn!(ip = %peer.ip(), ?refusal, "refusing upgrades from this address: 429");
            }
            let response = HttpResponse::new(429)
                .header("Retry-After", "1")
                .header("Content-Type", "text/plain; charset=utf-8")
                .body(match refusal {
                    Refusal::TooManyConnections => "too many connections from your address\n",
                    Refusal::TooManyHandshakes => {
                        "too many connection attempts from your address\n"
                    }
                });
            refuse(&mut stream, response, &shared.metrics).await;
            return None;
        }
    };
    if let Some(policy) = &config.origins {
        if !policy.allows(request.origin(), request.host()) {
            tracing::info!(%peer, origin = request.origin(), "origin not allowed: 403");
            let response = HttpResponse::new(403)
                .header("Content-Type", "text/plain; charset=utf-8")
                .body("origin not allowed\n");
            refuse(&mut stream, response, &shared.metrics).await;
            return None;
        }
    }
    let mut accepted = Accept::default();
    if let Some(hook) = &shared.hook {
        let asked = HandshakeRequest {
            request: request.clone(),
            peer,
            secure,
        };
        let decision = match catch_unwind(AssertUnwindSafe(|| hook(asked))) {
            Ok(future) => tokio::time::timeout(config.handshake_timeout, guarded(future)).await,
            Err(panic) => Ok(Err(panic_message(&*panic))),
        };
        match decision {
            Ok(Ok(Decision::Accept(accept))) => accepted = accept,
            Ok(Ok(Decision::Reject(response))) => {
                tracing::info!(%peer, status = response.status, "handshake hook refused the upgrade");
                refuse(&mut stream, response, &shared.metrics).await;
                return None;
            }
            Ok(Err(panic)) => {
                tracing::error!(%peer, "handshake hook panicked: {panic}");
                refuse(
                    &mut stream,
                    HttpResponse::new(500).body("internal error\n"),
                    &shared.metrics,
                )
                .await;
                return None;
            }
            Err(_) => {
                tracing::warn!(%peer, "handshake hook timed out: 503");
                refuse(
                    &mut stream,
                    HttpResponse::new(503).body("try again later\n"),
                    &shared.metrics,
                )
                .await;
                return None;
            }
        }
    }
    // Reserve a slot, or answer 503.
    if shared.open.fetch_add(1, Ordering::SeqCst) >= config.max_connections {
        shared.open.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(%peer, limit = config.max_connections, "connection limit reached: 503");
        let response = HttpResponse::new(503)
            .header("Retry-After", "1")
            .body("too many connections\n");
        refuse(&mut stream, response, &shared.metrics).await;
        return None;
    }
    let mut protocol = choose_protocol(&request, &config);
    if let Some(chosen) = accepted.protocol.take() {
        if request.protocols().contains(&chosen) {
            protocol = Some(chosen);
        } else {
            tracing::error!(%peer, protocol = chosen, "hook chose a subprotocol the client did not offer");
        }
    }
    if protocol.is_none() && config.require_protocol && !config.protocols.is_empty() {
        shared.open.fetch_sub(1, Ordering::SeqCst);
        tracing::info!(%peer, offered = ?request.protocols(), "no supported subprotocol: 400");
        let body = format!("supported subprotocols: {}\n", config.protocols.join(", "));
        let response = HttpResponse::new(400)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Sec-WebSocket-Protocol", config.protocols.join(", "))
            .body(body);
        refuse(&mut stream, response, &shared.metrics).await;
        return None;
    }
    let info = ConnectionInfo::new(peer, local, request, protocol.clone());
    let deflate =
        hubbub_proto::deflate::negotiate(&info.request().extensions(), &config.protocol.deflate);
    let conn = Connection::new(
        info,
        config.max_queue_bytes,
        config.backpressure,
        shared.clone(),
        deflate.as_ref().map(|(params, _)| *params),
    );
    for value in accepted.data.drain(..) {
        conn.set_boxed_data(value);
    }
    let mut socket = Socket {
        conn: conn.clone(),
        handlers: Handlers::default(),
    };
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| setup(&mut socket))) {
        shared.open.fetch_sub(1, Ordering::SeqCst);
        tracing::error!(%peer, "connection setup panicked: {}", panic_message(&*panic));
        refuse(
            &mut stream,
            HttpResponse::new(500).body("internal error\n"),
            &shared.metrics,
        )
        .await;
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
    match tokio::time::timeout(config.handshake_timeout, stream.write_all(&head)).await {
        Ok(Ok(())) => {}
        _ => {
            tracing::debug!(%peer, "could not write the 101: dropping connection");
            shared.open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
    }

    // A span per connection costs ~400 B and an enter/exit per poll: only
    // at debug level. Events at info and above carry the id themselves.
    let span = tracing::debug_span!("conn", id = %conn.id(), %peer);
    tracing::debug!(parent: &span, path = conn.info().path(), "open");
    shared.register(&conn);
    // Idle connections keep no buffer: only bytes that came after the head.
    let buf = if buf.is_empty() { BytesMut::new() } else { buf };
    let driver = Driver::new(stream, proto, conn, socket.handlers, buf, &config);
    Some((driver, span, slot))
}

/// A connection's place in its address's count, given back on drop.
pub(crate) struct AddressSlot {
    shared: std::sync::Arc<crate::server::ServerShared>,
    ip: std::net::IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        self.shared.per_address.release(self.ip);
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
