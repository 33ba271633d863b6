//! hubbub's client against hubbub's server (and, in `interop.rs`, against
//! other servers): messages both ways with and without permessage-deflate,
//! TLS with a given CA, the Stream/Sink view, closes both ways, and a typed
//! error for every way a connect fails.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{echo, start, watchdog};
use futures_util::{SinkExt, StreamExt};
use hubbub::client::Client;
use hubbub::{CloseCode, CloseInfo, Decision, Message, Server, ServerConfig};
use tokio::sync::mpsc;

/// Connects to `url` with handlers that forward every message to a channel.
async fn connect(
    client: Client,
) -> (
    hubbub::client::Session,
    mpsc::UnboundedReceiver<Message>,
    Arc<Mutex<Option<CloseInfo>>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let closed: Arc<Mutex<Option<CloseInfo>>> = Arc::default();
    let record = closed.clone();
    let binary = tx.clone();
    let session = client
        .connect(move |socket| {
            socket.on_message(move |_, text| {
                let _ = tx.send(Message::Text(text));
            });
            socket.on_binary(move |_, data| {
                let _ = binary.send(Message::Binary(data));
            });
            socket.on_close(move |_, info| *record.lock().unwrap() = Some(info));
        })
        .await
        .unwrap();
    (session, rx, closed)
}

#[tokio::test]
async fn echo_with_and_without_deflate_in_order() {
    watchdog(async {
        let server = start(ServerConfig::default(), echo).await;
        for deflate in [true, false] {
            let mut config = ServerConfig::default();
            config.protocol.deflate.enabled = deflate;
            let (session, mut rx, closed) =
                connect(Client::new(server.url("/client?q=1")).with_config(config)).await;
            assert_eq!(session.deflate().is_some(), deflate);
            let big = "compressible text ".repeat(20_000);
            for i in 0..100 {
                session.send(format!("m{i}")).unwrap();
            }
            session.send(big.clone()).unwrap();
            session.send_binary(vec![1u8, 2, 3]).unwrap();
            for i in 0..100 {
                assert_eq!(
                    rx.recv().await.unwrap(),
                    Message::Text(format!("m{i}").into())
                );
            }
            assert_eq!(rx.recv().await.unwrap(), Message::Text(big.into()));
            assert_eq!(
                rx.recv().await.unwrap(),
                Message::Binary(vec![1u8, 2, 3].into())
            );
            session.close_with(4001, "bye").unwrap();
            let conn = session.connection().clone();
            session.closed().await;
            assert!(!conn.is_open());
            let info = closed.lock().unwrap().clone().unwrap();
            assert_eq!((info.code, info.clean), (CloseCode(4001), true));
        }
        let closes = server.wait_closes(2).await;
        assert!(closes.iter().all(|c| c.code == CloseCode(4001) && c.clean));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_server_closing_ends_the_client_with_its_code() {
    watchdog(async {
        let server = start(ServerConfig::default(), |socket| {
            socket.on_message(|conn, _| {
                let _ = conn.close_with(4002, "enough");
            });
        })
        .await;
        let (session, _rx, closed) = connect(Client::new(server.url("/"))).await;
        session.send("anything").unwrap();
        session.closed().await;
        let info = closed.lock().unwrap().clone().unwrap();
        assert_eq!(info.code, CloseCode(4002));
        assert_eq!(info.reason, "enough");
        assert!(info.clean);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn stream_and_sink_view() {
    watchdog(async {
        let server = start(ServerConfig::default(), echo).await;
        let mut ws = Client::new(server.url("/")).connect_stream().await.unwrap();
        for i in 0..20 {
            ws.send(Message::Text(format!("{i}").into())).await.unwrap();
        }
        for i in 0..20 {
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::Text(format!("{i}").into())
            );
        }
        ws.close().await.unwrap();
        assert!(ws.next().await.is_none(), "ends after a clean close");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn every_failure_is_a_typed_error_that_says_what_happened() {
    watchdog(async {
        // A bad URL.
        let e = Client::new("http://example.com/")
            .connect(|_| {})
            .await
            .unwrap_err();
        assert!(e.is_invalid_argument(), "{e}");
        // Nothing listening.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Client::new(format!("ws://127.0.0.1:{port}/"))
            .connect(|_| {})
            .await
            .unwrap_err();
        assert!(e.is_connect(), "{e}");
        assert!(e.to_string().contains("refused"), "{e}");
        // A refusal with a status and a reason.
        let server = Server::bind("ws://127.0.0.1:0")
            .await
            .unwrap()
            .with_handshake(|_| async { Decision::reject(401, "log in first") });
        let addr = server.local_addr();
        let handle = server.handle();
        tokio::spawn(server.start(|_| {}));
        let e = Client::new(format!("ws://{addr}/"))
            .connect(|_| {})
            .await
            .unwrap_err();
        assert!(e.is_handshake(), "{e}");
        assert_eq!(e.status(), Some(401));
        assert!(e.to_string().contains("log in first"), "{e}");
        handle.shutdown();
        // A server that never answers: the connect timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let e = Client::new(format!("ws://{addr}/"))
            .connect_timeout(Duration::from_millis(200))
            .connect(|_| {})
            .await
            .unwrap_err();
        assert!(e.is_connect() && e.to_string().contains("timed out"), "{e}");
        // A subprotocol the client did not offer.
        let server = start(ServerConfig::default().with_protocols(["chat.v2"]), |_| {}).await;
        let session = Client::new(server.url("/"))
            .protocol("chat.v1")
            .protocol("chat.v2")
            .connect(|_| {})
            .await
            .unwrap();
        assert_eq!(session.info().protocol(), Some("chat.v2"));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn wss_with_a_given_ca() {
    watchdog(async {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let tls = hubbub::TlsConfig::from_pem(
            certified.cert.pem().as_bytes(),
            certified.key_pair.serialize_pem().as_bytes(),
        )
        .unwrap();
        let server = Server::bind_tls("wss://127.0.0.1:0", tls).await.unwrap();
        let port = server.local_addr().port();
        let handle = server.handle();
        tokio::spawn(server.start(echo));
        let url = format!("wss://localhost:{port}/secure");
        // Without the CA, the certificate is refused and the error says so.
        let untrusted = Client::new(&url)
            .ca_pem(
                rcgen::generate_simple_self_signed(vec!["other".to_owned()])
                    .unwrap()
                    .cert
                    .pem()
                    .as_bytes(),
            )
            .unwrap();
        let e = untrusted.connect(|_| {}).await.unwrap_err();
        assert!(e.is_tls(), "{e}");
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
        let client = Client::new(&url)
            .ca_pem(certified.cert.pem().as_bytes())
            .unwrap();
        let (session, mut rx, _) = connect(client).await;
        session.send("over TLS").unwrap();
        assert_eq!(rx.recv().await.unwrap(), Message::Text("over TLS".into()));
        drop(session);
        handle.shutdown();
    })
    .await;
}

#[tokio::test]
async fn a_persistent_connection_comes_back_and_refuses_sends_while_down() {
    use hubbub::client::Reconnect;
    use std::sync::atomic::{AtomicUsize, Ordering};
    watchdog(async {
        let server = start(ServerConfig::default(), |socket| {
            socket.on_message(|conn, text| {
                if &*text == "restart" {
                    let _ = conn.close_with(1012, "restarting");
                } else {
                    let _ = conn.send(text);
                }
            });
        })
        .await;
        let opens = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let counted = opens.clone();
        let persistent = Client::new(server.url("/"))
            .connect_persistent(
                Reconnect::new().initial_delay(Duration::from_millis(300)),
                move |socket| {
                    let opens = counted.clone();
                    socket.on_open(move |_| {
                        opens.fetch_add(1, Ordering::SeqCst);
                    });
                    let tx = tx.clone();
                    socket.on_message(move |_, text| {
                        let _ = tx.send(text.to_string());
                    });
                },
            )
            .await
            .unwrap();
        persistent.send("first").unwrap();
        assert_eq!(rx.recv().await.unwrap(), "first");
        persistent.send("restart").unwrap();
        // Down: refused with a clear error, not queued for later.
        let refused = loop {
            match persistent.send("while down") {
                Err(e) => break e,
                Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        assert!(refused.is_disconnected(), "{refused}");
        // Back: on_open ran again, and sends work.
        while opens.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        loop {
            if persistent.send("second").is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(rx.recv().await.unwrap(), "second");
        persistent.close();
        persistent.closed().await;
        assert_eq!(opens.load(Ordering::SeqCst), 2);
        server.stop().await;
    })
    .await;
}

/// A minimal HTTP CONNECT proxy on 127.0.0.1:0 that records each target.
async fn connect_proxy() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let mut header = String::new();
                let mut authorized = false;
                loop {
                    header.clear();
                    reader.read_line(&mut header).await.unwrap();
                    authorized |= header.starts_with("Proxy-Authorization: Basic ");
                    if header == "\r\n" {
                        break;
                    }
                }
                let target = line.split_whitespace().nth(1).unwrap().to_owned();
                record
                    .lock()
                    .unwrap()
                    .push(format!("{target} auth={authorized}"));
                let mut upstream = tokio::net::TcpStream::connect(&target).await.unwrap();
                let mut client = reader.into_inner();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn through_an_http_connect_proxy() {
    watchdog(async {
        let server = start(ServerConfig::default(), echo).await;
        let (proxy, seen) = connect_proxy().await;
        let (session, mut rx, _) = connect(
            Client::new(server.url("/via-proxy")).proxy(format!("http://ann:secret@{proxy}")),
        )
        .await;
        session.send("tunnelled").unwrap();
        assert_eq!(rx.recv().await.unwrap(), Message::Text("tunnelled".into()));
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [format!("{} auth=true", server.addr)]
        );
        // A proxy that is not there: the error names it.
        let gone = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = Client::new(server.url("/"))
            .proxy(format!("http://{gone}"))
            .connect(|_| {})
            .await
            .unwrap_err();
        assert!(e.is_connect() && e.to_string().contains("proxy"), "{e}");
        drop(session);
        server.stop().await;
    })
    .await;
}
