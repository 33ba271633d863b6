//! hubbub inside an axum app: the app keeps its own router, port and
//! routes, and hubbub serves the WebSocket route.
//!
//! `cargo run --release -p hubbub --features axum --example axum -- PORT`
//! (default 3000) listens on 127.0.0.1: `GET /hello` answers `hello`, the
//! chat page is at `http://127.0.0.1:PORT/`, and `ws://127.0.0.1:PORT/chat`
//! is the seed's chat (try `python3 -m websockets ws://127.0.0.1:3000/chat`
//! from two terminals).

#[path = "shared/seed_chat.rs"]
mod seed_chat;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hubbub::Hub;

/// The WebSocket route: the extractor checks the upgrade, the hub answers
/// it with its own rules and serves the connection.
async fn chat(up: hubbub::axum::Upgrade, State(hub): State<Hub>) -> Response {
    up.serve(&hub).await
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        include_str!("shared/chat.html"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("shared/chat.js"),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("not a port: {port}"),
            )
        })?,
        None => 3000,
    };
    let hub = Hub::new(seed_chat::setup());
    let app = Router::new()
        .route("/", get(page))
        .route("/chat.js", get(script))
        .route("/hello", get(|| async { "hello" }))
        .route("/chat", get(chat))
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("axum app on http://{addr}/ with the chat at ws://{addr}/chat");
    let stopping = hub.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<hubbub::axum::Addrs>(),
    )
    .with_graceful_shutdown(async move {
        let _ = tokio::signal::ctrl_c().await;
        // WebSockets are the hub's: close them with 1001 too.
        stopping.shutdown();
    })
    .await?;
    hub.closed().await;
    Ok(())
}
