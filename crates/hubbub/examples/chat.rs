//! The seed's chat server, Fleck's canonical example in Rust:
//! `cargo run -p hubbub --example chat`, then connect to ws://127.0.0.1:8181.
use std::sync::{Arc, Mutex};

use hubbub::{Connection, Server};

#[tokio::main]
async fn main() -> Result<(), hubbub::Error> {
    let all: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let tell = |all: &Mutex<Vec<Connection>>, text: String| {
        for socket in all.lock().unwrap().iter() {
            let _ = socket.send(text.clone());
        }
    };
    let server = Server::bind("ws://127.0.0.1:8181").await?;
    server
        .start(move |socket| {
            let (open, close, message) = (all.clone(), all.clone(), all.clone());
            socket.on_open(move |conn| {
                println!("Open!");
                let _ = conn.send("You have just joined the conversation.");
                open.lock().unwrap().push(conn.clone());
            });
            socket.on_close(move |conn, _| {
                println!("Close!");
                close.lock().unwrap().retain(|s| s != conn);
                tell(&close, format!("{} left the chat room.", conn.id()));
            });
            socket.on_message(move |conn, text| {
                println!("{text}");
                tell(&message, format!("{} says: {text}", conn.id()));
            });
        })
        .await
}
