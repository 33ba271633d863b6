//! The servers hubbub is measured against, each written the way its own
//! examples are fastest, all on tokio's multi-thread runtime (the flavour
//! `hubbub` uses; pinned to one CPU it has one worker) with `TCP_NODELAY`.
//!
//! ```text
//! peer <tungstenite|fastwebsockets|tokio-websockets|axum|hubbub-axum|tcp> <echo|chat> <port>
//! ```
//!
//! `axum` is axum's own `WebSocketUpgrade`; `hubbub-axum` is hubbub's hub
//! mounted on an axum route (configured as `hubbub echo` and `hubbub relay`
//! are), both served by `axum::serve`.
//!
//! `echo` answers every text or binary message with itself; `chat` sends
//! every text or binary message to every connected client, sender included
//! (what `hubbub relay` does). `tcp echo` writes back every byte it reads,
//! with no WebSocket work at all: the ceiling for this I/O pattern.
//!
//! The server prints `listening on ADDR` once it accepts connections.

mod client;
mod tls;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every connected client's queue, for the chat servers.
struct Hub<M> {
    next_id: AtomicU64,
    clients: Mutex<HashMap<u64, mpsc::UnboundedSender<M>>>,
}

impl<M: Clone> Hub<M> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            next_id: AtomicU64::new(0),
            clients: Mutex::new(HashMap::new()),
        })
    }

    fn join(&self) -> (u64, mpsc::UnboundedReceiver<M>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.clients.lock().unwrap().insert(id, tx);
        (id, rx)
    }

    fn leave(&self, id: u64) {
        self.clients.lock().unwrap().remove(&id);
    }

    fn broadcast(&self, message: &M) {
        for client in self.clients.lock().unwrap().values() {
            let _ = client.send(message.clone());
        }
    }
}

/// The chat of the two peers whose streams are a `Sink` and a `Stream` of
/// messages: a writer task per client drains its queue, feeding while
/// messages are ready and flushing when it is empty; the reader sends every
/// data message to every client.
async fn sink_stream_chat<M, W, R, E>(
    mut write: W,
    mut read: R,
    hub: Arc<Hub<M>>,
    is_data: fn(&M) -> bool,
) where
    M: Clone + Send + 'static,
    W: futures_util::Sink<M> + Unpin + Send + 'static,
    W::Error: Send,
    R: futures_util::Stream<Item = Result<M, E>> + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    let (id, mut rx) = hub.join();
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            write.feed(message).await?;
            while let Ok(message) = rx.try_recv() {
                write.feed(message).await?;
            }
            write.flush().await?;
        }
        Ok::<_, W::Error>(())
    });
    while let Some(Ok(message)) = read.next().await {
        if is_data(&message) {
            hub.broadcast(&message);
        }
    }
    hub.leave(id);
    writer.abort();
}

mod tungstenite_peer {
    use super::*;
    use futures_util::{StreamExt, TryStreamExt};
    use tokio_tungstenite::tungstenite::Message;

    pub(crate) async fn echo(stream: TcpStream) -> Result<(), BoxError> {
        let ws = tokio_tungstenite::accept_async(stream).await?;
        let (write, read) = ws.split();
        // `forward` feeds while messages are ready and flushes when the
        // reader would block: the batching path of tungstenite's examples.
        read.try_filter(|m| std::future::ready(m.is_text() || m.is_binary()))
            .forward(write)
            .await?;
        Ok(())
    }

    pub(crate) async fn chat(stream: TcpStream, hub: Arc<Hub<Message>>) -> Result<(), BoxError> {
        let (write, read) = tokio_tungstenite::accept_async(stream).await?.split();
        sink_stream_chat(write, read, hub, |m| m.is_text() || m.is_binary()).await;
        Ok(())
    }
}

mod tokio_websockets_peer {
    use super::*;
    use futures_util::{StreamExt, TryStreamExt};
    use tokio_websockets::{Config, Limits, Message, ServerBuilder};

    async fn accept(
        stream: TcpStream,
    ) -> Result<tokio_websockets::WebSocketStream<TcpStream>, BoxError> {
        let (_request, ws) = ServerBuilder::new()
            .config(Config::default().frame_size(usize::MAX))
            .limits(Limits::unlimited())
            .accept(stream)
            .await?;
        Ok(ws)
    }

    pub(crate) async fn echo(stream: TcpStream) -> Result<(), BoxError> {
        let (write, read) = accept(stream).await?.split();
        read.try_filter(|m| std::future::ready(m.is_text() || m.is_binary()))
            .forward(write)
            .await?;
        Ok(())
    }

    pub(crate) async fn chat(stream: TcpStream, hub: Arc<Hub<Message>>) -> Result<(), BoxError> {
        let (write, read) = accept(stream).await?.split();
        sink_stream_chat(write, read, hub, |m| m.is_text() || m.is_binary()).await;
        Ok(())
    }
}

mod fastwebsockets_peer {
    use super::*;
    use bytes::Bytes;
    use fastwebsockets::{
        FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError, upgrade,
    };
    use http_body_util::Empty;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};

    /// A chat message: the opcode and the payload, shared by every queue.
    pub(crate) type Shared = (OpCode, Bytes);

    async fn echo_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
        let mut ws = FragmentCollector::new(fut.await?);
        loop {
            let frame = ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
                _ => {}
            }
        }
        Ok(())
    }

    async fn chat_client(
        fut: upgrade::UpgradeFut,
        hub: Arc<Hub<Shared>>,
    ) -> Result<(), WebSocketError> {
        let ws = fut.await?;
        let (rx, mut tx) = ws.split(tokio::io::split);
        let mut rx = FragmentCollectorRead::new(rx);
        let (id, mut queue) = hub.join();
        let writer = tokio::spawn(async move {
            while let Some((opcode, payload)) = queue.recv().await {
                let frame = Frame::new(true, opcode, None, Payload::Borrowed(&payload));
                tx.write_frame(frame).await?;
            }
            Ok::<_, WebSocketError>(())
        });
        loop {
            // No obligated writes: the load generator sends no pings, and a
            // close ends the connection.
            let frame = rx
                .read_frame::<_, WebSocketError>(&mut |_| async { Ok(()) })
                .await?;
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => {
                    hub.broadcast(&(frame.opcode, Bytes::copy_from_slice(&frame.payload)));
                }
                _ => {}
            }
        }
        hub.leave(id);
        writer.abort();
        Ok(())
    }

    pub(crate) async fn serve(
        stream: TcpStream,
        hub: Option<Arc<Hub<Shared>>>,
    ) -> Result<(), BoxError> {
        let io = hyper_util::rt::TokioIo::new(stream);
        let service = service_fn(move |mut request: Request<Incoming>| {
            let hub = hub.clone();
            async move {
                let (response, fut) = upgrade::upgrade(&mut request)?;
                tokio::spawn(tokio::task::unconstrained(async move {
                    let result = match hub {
                        Some(hub) => chat_client(fut, hub).await,
                        None => echo_client(fut).await,
                    };
                    if let Err(e) = result {
                        eprintln!("fastwebsockets: {e}");
                    }
                }));
                Ok::<Response<Empty<Bytes>>, WebSocketError>(response)
            }
        });
        http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await?;
        Ok(())
    }
}

mod axum_peer {
    use super::*;
    use axum::Router;
    use axum::extract::State;
    use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
    use axum::response::Response;
    use axum::routing::any;
    use axum::serve::ListenerExt;
    use futures_util::{StreamExt, TryStreamExt};

    fn is_data(message: &Message) -> bool {
        matches!(message, Message::Text(_) | Message::Binary(_))
    }

    async fn echo(socket: WebSocket) {
        let (write, read) = socket.split();
        let _ = read
            .try_filter(|m| std::future::ready(is_data(m)))
            .forward(write)
            .await;
    }

    async fn route(ws: WebSocketUpgrade, State(hub): State<Option<Arc<Hub<Message>>>>) -> Response {
        let ws = ws.max_message_size(64 << 20).max_frame_size(64 << 20);
        ws.on_upgrade(move |socket| async move {
            match hub {
                Some(hub) => {
                    let (write, read) = socket.split();
                    sink_stream_chat(write, read, hub, is_data).await;
                }
                None => echo(socket).await,
            }
        })
    }

    async fn hubbub_route(up: hubbub::axum::Upgrade, State(hub): State<hubbub::Hub>) -> Response {
        up.serve(&hub).await
    }

    /// hubbub's hub as `hubbub echo` (`chat`: `hubbub relay`) configures it.
    fn hubbub_hub(chat: bool) -> hubbub::Hub {
        let mut deflate = hubbub::DeflateConfig::default();
        deflate.threshold = 0;
        let protocol = hubbub::ProtocolConfig::default()
            .with_max_message_size(64 << 20)
            .with_max_frame_size(64 << 20)
            .with_deflate(deflate);
        let config = hubbub::ServerConfig::default()
            .with_protocol_config(protocol)
            .with_max_connections(1_000_000)
            .with_max_queue_bytes(256 << 20);
        hubbub::Hub::builder()
            .with_config(config)
            .build(move |socket| {
                if chat {
                    socket.on_message(|conn, text| {
                        conn.server().broadcast(text);
                    });
                    socket.on_binary(|conn, data| {
                        conn.server().broadcast(data);
                    });
                } else {
                    socket.on_message(|conn, text| {
                        let _ = conn.send(text);
                    });
                    socket.on_binary(|conn, data| {
                        let _ = conn.send_binary(data);
                    });
                }
            })
    }

    pub(crate) async fn run(hubbub: bool, chat: bool, port: u16) -> io::Result<()> {
        let app = if hubbub {
            Router::new()
                .fallback(any(hubbub_route))
                .with_state(hubbub_hub(chat))
        } else {
            Router::new()
                .fallback(any(route))
                .with_state(chat.then(Hub::new))
        };
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on {}", listener.local_addr()?);
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await
    }
}

async fn tcp_echo(mut stream: TcpStream) -> Result<(), BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

#[derive(Clone)]
enum Server {
    TungsteniteEcho,
    TungsteniteChat(Arc<Hub<tokio_tungstenite::tungstenite::Message>>),
    TokioWebsocketsEcho,
    TokioWebsocketsChat(Arc<Hub<tokio_websockets::Message>>),
    FastwebsocketsEcho,
    FastwebsocketsChat(Arc<Hub<fastwebsockets_peer::Shared>>),
    TcpEcho,
}

impl Server {
    fn parse(library: &str, mode: &str) -> Option<Self> {
        Some(match (library, mode) {
            ("tungstenite", "echo") => Self::TungsteniteEcho,
            ("tungstenite", "chat") => Self::TungsteniteChat(Hub::new()),
            ("tokio-websockets", "echo") => Self::TokioWebsocketsEcho,
            ("tokio-websockets", "chat") => Self::TokioWebsocketsChat(Hub::new()),
            ("fastwebsockets", "echo") => Self::FastwebsocketsEcho,
            ("fastwebsockets", "chat") => Self::FastwebsocketsChat(Hub::new()),
            ("tcp", "echo") => Self::TcpEcho,
            _ => return None,
        })
    }

    async fn serve(self, stream: TcpStream) -> Result<(), BoxError> {
        match self {
            Self::TungsteniteEcho => tungstenite_peer::echo(stream).await,
            Self::TungsteniteChat(hub) => tungstenite_peer::chat(stream, hub).await,
            Self::TokioWebsocketsEcho => tokio_websockets_peer::echo(stream).await,
            Self::TokioWebsocketsChat(hub) => tokio_websockets_peer::chat(stream, hub).await,
            Self::FastwebsocketsEcho => fastwebsockets_peer::serve(stream, None).await,
            Self::FastwebsocketsChat(hub) => fastwebsockets_peer::serve(stream, Some(hub)).await,
            Self::TcpEcho => tcp_echo(stream).await,
        }
    }
}

async fn run(server: Server, port: u16) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        stream.set_nodelay(true)?;
        let server = server.clone();
        tokio::spawn(tokio::task::unconstrained(async move {
            // Peers disconnecting mid-run are normal under load; stay quiet.
            let _ = server.serve(stream).await;
        }));
    }
}

/// `peer tls …` and `peer tls-open …` (see `tls.rs`); the exit status.
fn tls_main(args: &[String]) -> i32 {
    let usage = "usage: peer tls <h2|h1> URL CA_PEM N K SIZE SECONDS SERVER_PID\n       \
                 peer tls-open <h2|h1> URL CA_PEM C SECONDS SERVER_PID";
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match args {
        [mode, transport, url, ca, n, k, size, seconds, pid] if mode == "tls" => {
            let (Ok(n), Ok(k), Ok(size), Ok(seconds), Ok(pid), Ok(ca)) = (
                n.parse(),
                k.parse(),
                size.parse(),
                seconds.parse(),
                pid.parse(),
                std::fs::read(ca),
            ) else {
                eprintln!("{usage}");
                return 2;
            };
            runtime.block_on(tls::echo(transport, url, &ca, n, k, size, seconds, pid))
        }
        [mode, transport, url, ca, c, seconds, pid] if mode == "tls-open" => {
            let (Ok(c), Ok(seconds), Ok(pid), Ok(ca)) =
                (c.parse(), seconds.parse(), pid.parse(), std::fs::read(ca))
            else {
                eprintln!("{usage}");
                return 2;
            };
            runtime.block_on(tls::open(transport, url, &ca, c, seconds, pid))
        }
        _ => {
            eprintln!("{usage}");
            return 2;
        }
    };
    runtime.shutdown_background();
    match result {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            eprintln!("peer {}: {e}", args[0]);
            1
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: peer <tungstenite|fastwebsockets|tokio-websockets|axum|hubbub-axum|tcp> <echo|chat> <port>";
    if let [mode, dir] = &args[..]
        && mode == "tls-cert"
    {
        // A self-signed certificate for localhost (the TLS rows' server).
        let dir = std::path::Path::new(dir);
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a certificate");
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("cert.pem written");
        std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem())
            .expect("key.pem written");
        return;
    }
    if matches!(args.first().map(String::as_str), Some("tls" | "tls-open")) {
        std::process::exit(tls_main(&args));
    }
    if args.first().map(String::as_str) == Some("client") {
        let usage = "usage: peer client <hubbub|tungstenite|tokio-websockets> URL N K SIZE SECONDS";
        let [_, library, url, n, k, size, seconds] = &args[..] else {
            eprintln!("{usage}");
            std::process::exit(2);
        };
        let (Ok(n), Ok(k), Ok(size), Ok(seconds)) =
            (n.parse(), k.parse(), size.parse(), seconds.parse())
        else {
            eprintln!("{usage}");
            std::process::exit(2);
        };
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        match runtime.block_on(client::run(library, url, n, k, size, seconds)) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("peer client: {e}");
                std::process::exit(1);
            }
        }
        runtime.shutdown_background();
        return;
    }
    let [library, mode, port] = &args[..] else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    if let ("axum" | "hubbub-axum", "echo" | "chat", Ok(port)) =
        (library.as_str(), mode.as_str(), port.parse())
    {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let result = runtime.block_on(axum_peer::run(
            library == "hubbub-axum",
            mode == "chat",
            port,
        ));
        if let Err(e) = result {
            eprintln!("peer: {e}");
            std::process::exit(1);
        }
        return;
    }
    let (Some(server), Ok(port)) = (Server::parse(library, mode), port.parse()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(server, port)) {
        eprintln!("peer: {e}");
        std::process::exit(1);
    }
}
