//! hubbub's own client for tests, with every event recorded. Shared by the
//! integration tests of every crate (`#[path]`-included).

#![allow(dead_code, unreachable_pub, reason = "each test file uses a subset")]

use std::time::Duration;

use hubbub::{ServerConfig, Socket};

/// hubbub's client without permessage-deflate, for tests where the bytes
/// on the wire must be the bytes sent (filling socket buffers).
pub async fn uncompressed_client(url: &str) -> hubbub::WebSocket {
    let mut config = ServerConfig::default();
    config.protocol.deflate.enabled = false;
    hubbub::client::Client::new(url)
        .with_config(config)
        .connect_stream()
        .await
        .unwrap()
}

/// What a [`Peer`] saw, in the order it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    /// A ping (the client has answered it).
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The end: the close code (1006 for a drop) and reason.
    Close(u16, String),
}

/// hubbub's client with every event recorded: for tests that look at
/// pongs and close frames, which the `Stream` view hides.
pub struct Peer {
    pub session: hubbub::client::Session,
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
}

impl std::ops::Deref for Peer {
    type Target = hubbub::Connection;
    fn deref(&self) -> &hubbub::Connection {
        self.session.connection()
    }
}

impl Peer {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Self {
        Self::with(hubbub::client::Client::new(url)).await
    }

    /// Connects with a configured client.
    pub async fn with(client: hubbub::client::Client) -> Self {
        Self::try_with(client).await.unwrap()
    }

    /// Opens the WebSocket on a given stream.
    pub async fn with_stream<S>(client: hubbub::client::Client, stream: S) -> Self
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (setup, events) = Self::recorder();
        let session = client.connect_on(stream, setup).await.unwrap();
        Self { session, events }
    }

    /// Connects with a configured client; the error when that fails.
    pub async fn try_with(client: hubbub::client::Client) -> Result<Self, hubbub::Error> {
        let (setup, events) = Self::recorder();
        let session = client.connect(setup).await?;
        Ok(Self { session, events })
    }

    /// A setup that records every event, and where they go.
    fn recorder() -> (
        impl FnOnce(&mut Socket),
        tokio::sync::mpsc::UnboundedReceiver<Event>,
    ) {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let setup = move |socket: &mut Socket| {
            let t = tx.clone();
            socket.on_message(move |_, text| {
                let _ = t.send(Event::Text(text.to_string()));
            });
            let t = tx.clone();
            socket.on_binary(move |_, data| {
                let _ = t.send(Event::Binary(data.to_vec()));
            });
            let t = tx.clone();
            socket.on_ping(move |_, data| {
                let _ = t.send(Event::Ping(data.to_vec()));
            });
            let t = tx.clone();
            socket.on_pong(move |_, data| {
                let _ = t.send(Event::Pong(data.to_vec()));
            });
            let t = tx.clone();
            socket.on_close(move |_, info| {
                let _ = t.send(Event::Close(info.code.0, info.reason.to_string()));
            });
        };
        (setup, events)
    }

    /// The next event; panics when there is none left.
    pub async fn next(&mut self) -> Event {
        self.events.recv().await.expect("no event after the close")
    }

    /// The next text message, skipping pings and pongs; panics on
    /// anything else.
    pub async fn text(&mut self) -> String {
        loop {
            match self.next().await {
                Event::Text(text) => return text,
                Event::Ping(_) | Event::Pong(_) => {}
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Skips messages until the close; its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            if let Event::Close(code, reason) = self.next().await {
                return (code, reason);
            }
        }
    }

    /// Waits up to `wait` for an event; `None` when none came.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Event> {
        tokio::time::timeout(wait, self.events.recv())
            .await
            .ok()
            .flatten()
    }
}
