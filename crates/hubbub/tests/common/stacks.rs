//! hubbub mounted in other stacks, for the tests: a real axum app and a
//! real hyper server on 127.0.0.1:0, and hubbub's own listener, each
//! serving a given hub.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{any, get};
use hubbub::{Hub, Server};
use tokio::net::TcpListener;

async fn ws(up: hubbub::axum::Upgrade, State(hub): State<Hub>) -> Response {
    up.serve(&hub).await
}

/// A real axum app on 127.0.0.1:0: `GET /hello` and the hub at `/chat`
/// (any method, so that the extractor itself answers a `POST`).
pub async fn axum_app(hub: &Hub) -> SocketAddr {
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/chat", any(ws))
        .with_state(hub.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<hubbub::axum::Addrs>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// hubbub's own listener on 127.0.0.1:0, serving `hub`.
pub async fn own_listener(hub: &Hub) -> SocketAddr {
    let server = Server::bind("ws://127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(hub));
    addr
}

/// A real hyper 1.x server on 127.0.0.1:0 answering `/ws` and `/chat`
/// with the hub, and `hello` elsewhere.
pub async fn hyper_server(hub: &Hub) -> SocketAddr {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = hub.clone();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let hub = hub.clone();
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let hub = hub.clone();
                async move {
                    let response: hyper::Response<Full<bytes::Bytes>> =
                        if matches!(request.uri().path(), "/ws" | "/chat") {
                            hubbub::hyper::upgrade(
                                &hub,
                                request,
                                hubbub::StreamInfo::new(peer).local(addr),
                            )
                            .await
                        } else {
                            hyper::Response::new(Full::from("hello"))
                        };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades(),
            );
        }
    });
    addr
}

/// A real hyper 1.x HTTP/2 server (cleartext, prior knowledge) on
/// 127.0.0.1:0 with the extended CONNECT protocol on (RFC 8441): WebSockets
/// at any path through `hubbub::hyper::upgrade`, and `hello` for a `GET`.
pub async fn hyper_h2_server(hub: &Hub) -> SocketAddr {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = hub.clone();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let hub = hub.clone();
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let hub = hub.clone();
                async move {
                    let response: hyper::Response<Full<bytes::Bytes>> =
                        if request.method() == hyper::Method::GET {
                            hyper::Response::new(Full::from("hello"))
                        } else {
                            hubbub::hyper::upgrade(
                                &hub,
                                request,
                                hubbub::StreamInfo::new(peer).local(addr),
                            )
                            .await
                        };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .enable_connect_protocol()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}
