//! Helpers shared by the integration tests: a server on 127.0.0.1:0 that
//! records what happened, and a watchdog.

#![allow(dead_code, unreachable_pub, reason = "each test file uses a subset")]

pub mod stacks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use hubbub::{CloseInfo, Server, ServerConfig, ServerHandle, Socket};
use hubbub_proto::Config;
use hubbub_proto::handshake::{ClientHandshakeError, ClientRequest, ClientResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Sends `request` on a new TCP connection to `addr` and reads the answer
/// by hand: the socket, the bytes that came after the response head, and
/// the parsed response (or why it is not a `101`).
pub async fn upgrade(
    addr: SocketAddr,
    mut request: ClientRequest,
) -> (
    TcpStream,
    BytesMut,
    Result<ClientResponse, ClientHandshakeError>,
) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    request.write(&mut out);
    stream.write_all(&out).await.unwrap();
    let mut input = BytesMut::new();
    loop {
        assert!(
            stream.read_buf(&mut input).await.unwrap() > 0,
            "closed during the handshake"
        );
        match request.parse_response(&mut input, &Config::default()) {
            Ok(None) => {}
            Ok(Some(response)) => return (stream, input, Ok(response)),
            Err(e) => return (stream, input, Err(e)),
        }
    }
}

/// A connection from hubbub's own client, as a `Stream` + `Sink` (the
/// tests' convenience client; the interop tests keep independent ones).
pub async fn client(url: &str) -> hubbub::WebSocket {
    hubbub::client::Client::new(url)
        .connect_stream()
        .await
        .unwrap()
}

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

/// Fails the test instead of hanging CI.
pub async fn watchdog<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("watchdog: test took longer than 20 s")
}

/// A running test server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub task: JoinHandle<Result<(), hubbub::Error>>,
    pub closes: Arc<Mutex<Vec<CloseInfo>>>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Waits until `n` connections have fired `on_close`.
    pub async fn wait_closes(&self, n: usize) -> Vec<CloseInfo> {
        loop {
            {
                let closes = self.closes.lock().unwrap();
                if closes.len() >= n {
                    return closes.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) {
        self.handle.shutdown();
        self.task.await.unwrap().unwrap();
    }
}

/// Starts a server whose setup runs `setup` and then records every
/// `on_close` (wrapping any `on_close` that `setup` does not set).
pub async fn start<F>(config: ServerConfig, setup: F) -> TestServer
where
    F: Fn(&mut Socket) + Send + Sync + 'static,
{
    let server = Server::bind("ws://127.0.0.1:0")
        .await
        .unwrap()
        .with_config(config);
    let addr = server.local_addr();
    let handle = server.handle();
    let closes: Arc<Mutex<Vec<CloseInfo>>> = Arc::default();
    let recorded = closes.clone();
    let task = tokio::spawn(server.start(move |socket| {
        let recorded = recorded.clone();
        socket.on_close(move |_, info| recorded.lock().unwrap().push(info));
        setup(socket);
    }));
    TestServer {
        addr,
        handle,
        task,
        closes,
    }
}

/// An echo setup.
pub fn echo(socket: &mut Socket) {
    socket.on_message(|conn, text| {
        let _ = conn.send(text);
    });
    socket.on_binary(|conn, data| {
        let _ = conn.send_binary(data);
    });
}

/// Defaults with a short close timeout and shutdown grace, so that clients
/// that stop reading do not slow the suite down.
pub fn quick() -> ServerConfig {
    ServerConfig::default()
        .with_close_timeout(Duration::from_millis(500))
        .with_shutdown_grace(Duration::from_millis(500))
}

/// Opens a raw TCP connection and completes the upgrade by hand.
pub async fn raw_client(addr: SocketAddr) -> (TcpStream, BytesMut) {
    let (stream, buf, response) = upgrade(addr, ClientRequest::new(addr.to_string(), "/")).await;
    response.unwrap();
    (stream, buf)
}

/// Reads until the server closes the socket; returns everything read.
pub async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all).await;
    all
}
