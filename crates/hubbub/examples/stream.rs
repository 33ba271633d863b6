//! An echo server written with `StreamExt`/`SinkExt`, the way
//! tokio-tungstenite and axum code reads: each connection is a `Stream` of
//! messages and a `Sink` for replies, both bounded.
//!
//! `cargo run --release -p hubbub --example stream -- PORT` (default 9002)
//! listens on ws://127.0.0.1:PORT.

use futures_util::{SinkExt, StreamExt};
use hubbub::Server;

#[tokio::main]
async fn main() -> Result<(), hubbub::Error> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(9002);
    let server = Server::bind(&format!("ws://127.0.0.1:{port}")).await?;
    println!("stream echo on ws://{}", server.local_addr());
    server
        .start_until(
            |socket| {
                let mut ws = socket.stream();
                tokio::spawn(async move {
                    // Ends after the close handshake; an abnormal end is
                    // one last error.
                    while let Some(Ok(message)) = ws.next().await {
                        if ws.send(message).await.is_err() {
                            break;
                        }
                    }
                });
            },
            tokio::signal::ctrl_c(),
        )
        .await
}
