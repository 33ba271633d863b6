//! Helpers shared by the integration tests: a server on 127.0.0.1:0 that
//! records what happened, and a watchdog.

#![allow(dead_code, unreachable_pub, reason = "each test file uses a subset")]

pub mod peer;
pub mod stacks;

#[allow(unused_imports, reason = "each test file uses a subset")]
pub use peer::{Event, Peer, uncompressed_client};

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
    request: ClientRequest,
) -> (
    TcpStream,
    BytesMut,
    Result<ClientResponse, ClientHandshakeError>,
) {
    upgrade_on(TcpStream::connect(addr).await.unwrap(), request).await
}

/// [`upgrade`] on a stream the caller connected (with its own socket
/// options).
#[allow(dead_code)]
pub async fn upgrade_on(
    mut stream: TcpStream,
    mut request: ClientRequest,
) -> (
    TcpStream,
    BytesMut,
    Result<ClientResponse, ClientHandshakeError>,
) {
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
    let server = Server::bind("ws://127.0.0.1:0").await.unwrap();
    start_on(server, config, setup).await
}

/// [`start`] on a server the caller made (from its own listener).
pub async fn start_on<F>(server: Server, config: ServerConfig, setup: F) -> TestServer
where
    F: Fn(&mut Socket) + Send + Sync + 'static,
{
    let server = server.with_config(config);
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
