//! WebSockets on a hyper 1.x server (feature `hyper`): [`upgrade`] answers
//! an upgrade request with the hub's rules and serves the connection once
//! hyper hands it over.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use http_body_util::Full;
//! use hubbub::Bytes;
//! use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
//! use hyper_util::rt::TokioIo;
//!
//! # async fn f() -> std::io::Result<()> {
//! let hub = hubbub::Hub::new(|socket| {
//!     socket.on_message(|conn, text| {
//!         let _ = conn.send(text);
//!     });
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! loop {
//!     let (stream, peer) = listener.accept().await?;
//!     let hub = hub.clone();
//!     let service = service_fn(move |request: Request<Incoming>| {
//!         let hub = hub.clone();
//!         async move {
//!             let response: Response<Full<Bytes>> = if request.uri().path() == "/ws" {
//!                 hubbub::hyper::upgrade(&hub, request, peer).await
//!             } else {
//!                 Response::new(Full::from("hello"))
//!             };
//!             Ok::<_, Infallible>(response)
//!         }
//!     });
//!     tokio::spawn(
//!         http1::Builder::new()
//!             .serve_connection(TokioIo::new(stream), service)
//!             .with_upgrades(),
//!     );
//! }
//! # }
//! ```

use bytes::{Bytes, BytesMut};
use hubbub_proto::handshake::{HandshakeError, Headers, HttpResponse, Request};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::task::{serve_after, start_background};
use std::sync::Arc;

use crate::handshake::{Service, admit, check_host, upgrade_required, validated};
use crate::hook::text_response;
use crate::info::{HttpVersion, StreamInfo};
use crate::serve::Hub;

/// Answers `request` on a hyper server: validates the upgrade with the
/// same rules, statuses and one-line reasons as hubbub's own listener
/// (400, 403, 405, 426, 429, 431, 503), checks the `Host` and `Origin`,
/// runs the handshake hook, negotiates permessage-deflate and the
/// subprotocol, and returns the `101`; the connection is served, with the
/// hub's setup and handlers, once hyper's upgrade completes. Return the
/// response from the hyper service as it is.
///
/// `from` is the client's address (a `SocketAddr` converts), with the
/// server's own and whether it is TLS when known (see [`StreamInfo`]).
///
/// The hyper connection must be served with upgrades on
/// (`serve_connection(…).with_upgrades()`): without, the answer is 500 and
/// an error is logged.
///
/// With the `http2` feature, an HTTP/2 extended `CONNECT` (RFC 8441) is
/// answered too, on a hyper HTTP/2 server built with
/// `enable_connect_protocol()`: `200` with the negotiated subprotocol and
/// extension, 501 for a `:protocol` other than `websocket`, 400 for a
/// missing `:protocol`, `:authority` or `Sec-WebSocket-Version: 13`; the
/// connection's [`crate::ConnectionInfo::http_version`] says HTTP/2.
pub async fn upgrade<B, R>(
    hub: &Hub,
    mut request: http::Request<R>,
    from: impl Into<StreamInfo>,
) -> http::Response<B>
where
    B: From<Bytes>,
{
    let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    let (parts, _body) = request.into_parts();
    let request = to_request(&parts);
    answer(
        hub.service().clone(),
        request,
        Carrier::of(&parts),
        on_upgrade,
        from.into(),
        (),
    )
    .await
}

/// How the upgrade request came: an HTTP/1.1 `Upgrade`, or an HTTP/2
/// extended `CONNECT` (RFC 8441) with its `:protocol`.
#[derive(Debug, Clone)]
pub(crate) enum Carrier {
    Http11,
    #[cfg_attr(
        not(feature = "http2"),
        expect(dead_code, reason = "made only with http2")
    )]
    Http2 {
        protocol: Option<String>,
    },
}

impl Carrier {
    /// The carrier of a request hyper parsed. Without the `http2` feature,
    /// an HTTP/2 request is handled as HTTP/1.1 and refused (no `Upgrade`).
    pub(crate) fn of(parts: &http::request::Parts) -> Self {
        #[cfg(feature = "http2")]
        if parts.version == http::Version::HTTP_2 {
            let protocol = parts
                .extensions
                .get::<hyper::ext::Protocol>()
                .map(|p| String::from_utf8_lossy(p.as_ref()).into_owned());
            return Self::Http2 { protocol };
        }
        let _ = parts;
        Self::Http11
    }
}

/// The request head as hubbub-proto's [`Request`], or the refusal for one
/// it would not take (a target or fields it cannot hold).
pub(crate) fn to_request(parts: &http::request::Parts) -> Result<Request, HandshakeError> {
    let mut headers = Headers::default();
    for (name, value) in &parts.headers {
        headers.append(name.as_str(), value.as_bytes());
    }
    // HTTP/2 carries the host as `:authority`, in the URI.
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        if let Some(authority) = parts.uri.authority() {
            headers.append("host", authority.as_str().as_bytes());
        }
    }
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let minor =
        if parts.version == http::Version::HTTP_10 || parts.version == http::Version::HTTP_09 {
            0
        } else {
            1
        };
    Request::from_parts(parts.method.as_str(), target, minor, headers)
}

/// Whether the head is larger than hubbub's own listener takes
/// ([`hubbub_proto::Config::max_handshake_size`] and `max_headers`).
fn too_large(request: &Request, config: &hubbub_proto::Config) -> bool {
    let size = request.target().len()
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.len() + value.len() + 4)
            .sum::<usize>();
    size > config.max_handshake_size || request.headers().len() > config.max_headers
}

/// The answer to an upgrade request another stack parsed, and the task
/// that serves the connection once `on_upgrade` resolves; `hold` is kept
/// as long as that connection lives (an HTTP/2 connection counts its
/// sockets with it).
pub(crate) async fn answer<B: From<Bytes>, H: Send + 'static>(
    service: Arc<Service>,
    request: Result<Request, HandshakeError>,
    carrier: Carrier,
    on_upgrade: Option<OnUpgrade>,
    mut from: StreamInfo,
    hold: H,
) -> http::Response<B> {
    start_background(&service);
    let state = &service.hub;
    let refused = |response: HttpResponse| {
        state.metrics.rejected(response.status);
        convert(response)
    };
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            tracing::info!(peer = %from.peer(), status = e.status(), "handshake refused: {}", e.reason());
            return refused(e.response());
        }
    };
    if too_large(&request, &service.config.protocol) {
        tracing::info!(peer = %from.peer(), "handshake refused: request head too large");
        return refused(text_response(431, "request head too large"));
    }
    if let Err(response) = check_host(&service, &request, &from) {
        return refused(response);
    }
    let accept = match &carrier {
        Carrier::Http11 => {
            if !request.is_upgrade() && (request.method() == "GET" || request.method() == "HEAD") {
                return refused(upgrade_required());
            }
            match validated(&request, &from) {
                Ok(accept) => accept,
                Err(response) => return refused(response),
            }
        }
        Carrier::Http2 { protocol } => {
            if let Err(e) = request.validate_extended_connect(protocol.as_deref()) {
                tracing::info!(peer = %from.peer(), status = e.status(), "HTTP/2 handshake refused: {}", e.reason());
                return refused(e.response());
            }
            from.http = HttpVersion::Http2;
            // HTTP/2 has no key to answer.
            String::new()
        }
    };
    // Checked before `admit`, which runs the setup closure.
    let Some(on_upgrade) = on_upgrade else {
        tracing::error!(
            "this connection cannot be upgraded: serve it with hyper's `with_upgrades()` (HTTP/1.1), \
             or with `enable_connect_protocol()` (HTTP/2)"
        );
        return refused(text_response(500, "this connection cannot be upgraded"));
    };
    let deadline = Instant::now() + service.config.handshake_timeout;
    let admitted = match admit(&service, request, accept, &from, deadline).await {
        Ok(admitted) => admitted,
        Err(response) => return refused(response),
    };
    let mut response = http::Response::builder();
    match carrier {
        Carrier::Http11 => {
            response = response.status(http::StatusCode::SWITCHING_PROTOCOLS);
            for (name, value) in admitted.response.fields() {
                response = response.header(name, value);
            }
        }
        // RFC 8441 §5: a 2xx, and no Upgrade, Connection or accept value
        // (connection-specific fields are not allowed in HTTP/2).
        Carrier::Http2 { .. } => {
            response = response.status(http::StatusCode::OK);
            for (name, value) in admitted.response.negotiated_fields() {
                response = response.header(name, value);
            }
        }
    }
    let response = match response.body(B::from(Bytes::new())) {
        Ok(response) => response,
        Err(e) => {
            // A header the hook added that HTTP cannot carry.
            tracing::error!(peer = %from.peer(), "cannot build the 101: {e}");
            return refused(text_response(500, "internal error"));
        }
    };
    let peer = from.peer();
    let connection = serve_after(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let stream = TokioIo::new(upgraded);
                Some(admitted.start(stream, BytesMut::new(), &service.config))
            }
            // The client left between the 101 and the upgrade: the
            // connection never opened (no on_open, no on_close).
            Err(e) => {
                tracing::debug!(%peer, "upgrade did not complete: {e}");
                None
            }
        }
    });
    tokio::spawn(async move {
        connection.await;
        drop(hold);
    });
    response
}

/// An [`HttpResponse`] as an `http` one (fields HTTP cannot carry are
/// dropped; hyper sets `Content-Length` itself).
pub(crate) fn convert<B: From<Bytes>>(response: HttpResponse) -> http::Response<B> {
    let mut out = http::Response::new(B::from(response.body));
    *out.status_mut() = http::StatusCode::from_u16(response.status)
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &response.headers {
        if name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            out.headers_mut().append(name, value);
        }
    }
    out
}
