//! hubbub on a plain hyper 1.x server: `/chat` is the seed's chat, every
//! other path answers `hello`.
//!
//! `cargo run --release -p hubbub --features hyper --example hyper -- PORT`
//! (default 3001) listens on 127.0.0.1.

#[path = "shared/seed_chat.rs"]
mod seed_chat;

use std::convert::Infallible;

use http_body_util::Full;
use hubbub::{Bytes, Hub, StreamInfo};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    let hub = Hub::new(seed_chat::setup());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let local = listener.local_addr()?;
    println!("hyper server on http://{local}/ with the chat at ws://{local}/chat");
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let hub = hub.clone();
            async move {
                let response: Response<Full<Bytes>> = if request.uri().path() == "/chat" {
                    // Both addresses: the Host check then knows this is a
                    // loopback server, as on hubbub's own listener.
                    hubbub::hyper::upgrade(&hub, request, StreamInfo::new(peer).local(local)).await
                } else {
                    Response::new(Full::from("hello"))
                };
                Ok::<_, Infallible>(response)
            }
        });
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
        });
    }
}
