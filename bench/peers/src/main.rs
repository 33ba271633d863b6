//! The servers hubbub is measured against, each written the way its own
//! examples are fastest, all on tokio's multi-thread runtime (the flavour
//! `hubbub` uses; pinned to one CPU it has one worker) with `TCP_NODELAY`.
//!
//! ```text
//! peer <tungstenite|fastwebsockets|tokio-websockets|axum|hubbub-axum|tcp> <echo|chat|rooms> <port>
//! ```
//!
//! `axum` is axum's own `WebSocketUpgrade`; `hubbub-axum` is hubbub's hub
//! mounted on an axum route (configured as `hubbub echo` and `hubbub relay`
//! are), both served by `axum::serve`.
//!
//! `echo` answers every text or binary message with itself; `chat` sends
//! every text or binary message to every connected client, sender included
//! (what `hubbub relay` does); `rooms` sends it to the clients of the
//! sender's room, the `?room=NAME` of its URL (what `hubbub relay --rooms`
//! does). `tcp echo` writes back every byte it reads,
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

/// Every connected client's queue by room, for the chat servers (`chat`:
/// one room; `rooms`: the room `?room=NAME` of the request's URL).
struct Hub<M> {
    next_id: AtomicU64,
    by_room: bool,
    rooms: Mutex<HashMap<Box<str>, Room<M>>>,
}

/// A room's clients' queues by id.
type Room<M> = HashMap<u64, mpsc::UnboundedSender<M>>;

/// A client's place in the hub: its room and its id.
struct Member {
    room: Box<str>,
    id: u64,
}

impl<M: Clone> Hub<M> {
    fn new(by_room: bool) -> Arc<Self> {
        Arc::new(Self {
            next_id: AtomicU64::new(0),
            by_room,
            rooms: Mutex::new(HashMap::new()),
        })
    }

    /// Joins the room `uri` names (the one room unless `by_room`).
    fn join(&self, uri: &str) -> (Member, mpsc::UnboundedReceiver<M>) {
        let room: Box<str> = if self.by_room {
            uri.split_once('?')
                .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("room=")))
                .unwrap_or("")
                .into()
        } else {
            "".into()
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut rooms = self.rooms.lock().unwrap();
        rooms.entry(room.clone()).or_default().insert(id, tx);
        (Member { room, id }, rx)
    }

    fn leave(&self, member: &Member) {
        let mut rooms = self.rooms.lock().unwrap();
        if let Some(room) = rooms.get_mut(&member.room) {
            room.remove(&member.id);
            if room.is_empty() {
                rooms.remove(&member.room);
            }
        }
    }

    fn broadcast(&self, member: &Member, message: &M) {
        if let Some(room) = self.rooms.lock().unwrap().get(&member.room) {
            for client in room.values() {
                let _ = client.send(message.clone());
            }
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
    uri: &str,
    is_data: fn(&M) -> bool,
) where
    M: Clone + Send + 'static,
    W: futures_util::Sink<M> + Unpin + Send + 'static,
    W::Error: Send,
    R: futures_util::Stream<Item = Result<M, E>> + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    let (member, mut rx) = hub.join(uri);
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
            hub.broadcast(&member, &message);
        }
    }
    hub.leave(&member);
    writer.abort();
}

mod tungstenite_peer {
    use super::*;
    use futures_util::{StreamExt, TryStreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

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
        let mut uri = String::new();
        #[expect(
            clippy::result_large_err,
            reason = "the signature of tungstenite's handshake callback"
        )]
        let callback = |request: &Request, response: Response| {
            uri = request.uri().to_string();
            Ok(response)
        };
        let (write, read) = tokio_tungstenite::accept_hdr_async(stream, callback)
            .await?
            .split();
        sink_stream_chat(write, read, hub, &uri, |m| m.is_text() || m.is_binary()).await;
        Ok(())
    }
}

mod tokio_websockets_peer {
    use super::*;
    use futures_util::{StreamExt, TryStreamExt};
    use tokio_websockets::{Config, Limits, Message, ServerBuilder};

    async fn accept(
        stream: TcpStream,
    ) -> Result<(String, tokio_websockets::WebSocketStream<TcpStream>), BoxError> {
        let (request, ws) = ServerBuilder::new()
            .config(Config::default().frame_size(usize::MAX))
            .limits(Limits::unlimited())
            .accept(stream)
            .await?;
        Ok((request.uri().to_string(), ws))
    }

    pub(crate) async fn echo(stream: TcpStream) -> Result<(), BoxError> {
        let (write, read) = accept(stream).await?.1.split();
        read.try_filter(|m| std::future::ready(m.is_text() || m.is_binary()))
            .forward(write)
            .await?;
        Ok(())
    }

    pub(crate) async fn chat(stream: TcpStream, hub: Arc<Hub<Message>>) -> Result<(), BoxError> {
        let (uri, ws) = accept(stream).await?;
        let (write, read) = ws.split();
        sink_stream_chat(write, read, hub, &uri, |m| m.is_text() || m.is_binary()).await;
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
        uri: String,
    ) -> Result<(), WebSocketError> {
        let ws = fut.await?;
        let (rx, mut tx) = ws.split(tokio::io::split);
        let mut rx = FragmentCollectorRead::new(rx);
        let (member, mut queue) = hub.join(&uri);
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
                    hub.broadcast(
                        &member,
                        &(frame.opcode, Bytes::copy_from_slice(&frame.payload)),
                    );
                }
                _ => {}
            }
        }
        hub.leave(&member);
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
                let uri = request.uri().to_string();
                let (response, fut) = upgrade::upgrade(&mut request)?;
                tokio::spawn(tokio::task::unconstrained(async move {
                    let result = match hub {
                        Some(hub) => chat_client(fut, hub, uri).await,
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
                    sink_stream_chat(write, read, hub, "/", is_data).await;
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
                .with_state(chat.then(|| Hub::new(false)))
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
            ("tungstenite", "chat" | "rooms") => Self::TungsteniteChat(Hub::new(mode == "rooms")),
            ("tokio-websockets", "echo") => Self::TokioWebsocketsEcho,
            ("tokio-websockets", "chat" | "rooms") => {
                Self::TokioWebsocketsChat(Hub::new(mode == "rooms"))
            }
            ("fastwebsockets", "echo") => Self::FastwebsocketsEcho,
            ("fastwebsockets", "chat" | "rooms") => {
                Self::FastwebsocketsChat(Hub::new(mode == "rooms"))
            }
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
    let usage = "usage: peer <tungstenite|fastwebsockets|tokio-websockets|axum|hubbub-axum|tcp> <echo|chat|rooms> <port>";
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
