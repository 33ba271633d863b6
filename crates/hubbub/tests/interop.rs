//! Real peers over loopback: Python `websockets` and Node `ws` clients
//! against the server (on its own listener, in a real axum app, on a real
//! hyper server), with and without permessage-deflate. They need the
//! tools `scripts/test` installs.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::{echo, stacks, start, watchdog};
use hubbub::{CloseCode, CloseInfo, Hub, ServerConfig};
use tokio::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// Runs a client program (given the server's URL) against an echo server
/// and checks how the server saw the connection end.
async fn run_peer(program: impl FnOnce(&str) -> Command) {
    watchdog(async {
        let server = start(ServerConfig::default(), echo).await;
        let stdout = run_program(program, &server.url("/interop")).await;
        assert!(stdout.contains(": ok"), "{stdout}");
        let closes = server.wait_closes(1).await;
        assert_closed_with_bye(&closes[0]);
        server.stop().await;
    })
    .await;
}

fn assert_closed_with_bye(info: &CloseInfo) {
    assert_eq!(info.code, CloseCode(4001));
    assert_eq!(info.reason, "bye");
    assert!(info.clean, "{info:?}");
}

/// Runs a peer program against `url`; returns its output once it passed.
async fn run_program(program: impl FnOnce(&str) -> Command, url: &str) -> String {
    let output = program(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("peer program runs (installed by scripts/test)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "peer failed:\n{stdout}\n{stderr}");
    stdout
}

/// Which stack mounts the hub.
#[derive(Clone, Copy)]
enum Front {
    Axum,
    Hyper,
}

/// As [`run_peer`], with the echo hub mounted in a real axum app or hyper
/// server.
async fn run_peer_through(front: Front, program: impl FnOnce(&str) -> Command) {
    watchdog(async {
        let closes: Arc<Mutex<Vec<CloseInfo>>> = Arc::default();
        let recorded = closes.clone();
        let hub = Hub::new(move |socket| {
            echo(socket);
            let recorded = recorded.clone();
            socket.on_close(move |_, info| recorded.lock().unwrap().push(info));
        });
        let url = match front {
            Front::Axum => format!("ws://{}/chat", stacks::axum_app(&hub).await),
            Front::Hyper => format!("ws://{}/ws", stacks::hyper_server(&hub).await),
        };
        let stdout = run_program(program, &url).await;
        assert!(stdout.contains(": ok"), "{stdout}");
        hub.shutdown();
        hub.closed().await;
        let closes = closes.lock().unwrap();
        assert_eq!(closes.len(), 1);
        assert_closed_with_bye(&closes[0]);
    })
    .await;
}

#[tokio::test]
#[ignore = "needs python websockets: run scripts/test"]
async fn python_websockets_client_through_axum_with_deflate() {
    run_peer_through(Front::Axum, python("deflate")).await;
}

#[tokio::test]
#[ignore = "needs python websockets: run scripts/test"]
async fn python_websockets_client_through_hyper() {
    run_peer_through(Front::Hyper, python("plain")).await;
}

#[tokio::test]
#[ignore = "needs node ws: run scripts/test"]
async fn node_ws_client_through_axum() {
    run_peer_through(Front::Axum, node("plain")).await;
}

#[tokio::test]
#[ignore = "needs node ws: run scripts/test"]
async fn node_ws_client_through_hyper_with_deflate() {
    run_peer_through(Front::Hyper, node("deflate")).await;
}

fn python(mode: &'static str) -> impl FnOnce(&str) -> Command {
    move |url| {
        let python = std::env::var_os("HUBBUB_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join(".cache/venv/bin/python"));
        let mut command = Command::new(python);
        command
            .arg(peer_script("python_client.py"))
            .arg(url)
            .arg(mode);
        command
    }
}

fn node(mode: &'static str) -> impl FnOnce(&str) -> Command {
    move |url| {
        let mut command = Command::new("node");
        command
            .env("NODE_PATH", workspace().join(".cache/node/node_modules"))
            .arg(peer_script("node_client.cjs"))
            .arg(url)
            .arg(mode);
        command
    }
}

#[tokio::test]
#[ignore = "needs python websockets: run scripts/test"]
async fn python_websockets_client_exchanges_all_message_kinds() {
    run_peer(python("plain")).await;
}

#[tokio::test]
#[ignore = "needs python websockets: run scripts/test"]
async fn python_websockets_client_with_permessage_deflate() {
    run_peer(python("deflate")).await;
}

#[tokio::test]
#[ignore = "needs node ws: run scripts/test"]
async fn node_ws_client_exchanges_all_message_kinds() {
    run_peer(node("plain")).await;
}

#[tokio::test]
#[ignore = "needs node ws: run scripts/test"]
async fn node_ws_client_with_permessage_deflate() {
    run_peer(node("deflate")).await;
}

#[tokio::test]
#[ignore = "needs python websockets: run scripts/test"]
async fn python_websockets_client_over_tls() {
    watchdog(async {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!("hubbub-interop-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("cert.pem");
        std::fs::write(&ca, certified.cert.pem()).unwrap();
        let tls = hubbub::TlsConfig::from_pem(
            certified.cert.pem().as_bytes(),
            certified.key_pair.serialize_pem().as_bytes(),
        )
        .unwrap();
        let server = hubbub::Server::bind_tls("wss://127.0.0.1:0", tls)
            .await
            .unwrap()
            .with_config(common::quick());
        let port = server.local_addr().port();
        let handle = server.handle();
        let closes = Arc::new(Mutex::new(Vec::new()));
        let recorded = closes.clone();
        let task = tokio::spawn(server.start(move |socket| {
            echo(socket);
            let recorded = recorded.clone();
            socket.on_close(move |_, info| recorded.lock().unwrap().push(info));
        }));
        let mut command = python("deflate")(&format!("wss://localhost:{port}/tls"));
        let output = command.env("HUBBUB_CA", &ca).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        handle.shutdown();
        task.await.unwrap().unwrap();
        let closes = closes.lock().unwrap();
        assert_eq!(closes.len(), 1);
        assert_eq!(closes[0].code, CloseCode(4001));
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// Starts a peer's echo server (its program and arguments); returns the
/// process and its port.
async fn peer_server(mut command: Command) -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("peer server runs (installed by scripts/test)");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().expect("a listening line");
    let port = line
        .strip_prefix("listening on ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    (child, port)
}

/// hubbub's client against a peer's server: the extension agreed, a
/// fragmented message, the server's ping answered, text, binary and 1 MiB
/// echoed, and the server's close code.
async fn client_against(command: Command, deflate: bool, expect_ext: &str) {
    watchdog(async {
        let (_server, port) = peer_server(command).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let closed: Arc<Mutex<Option<CloseInfo>>> = Arc::default();
        let record = closed.clone();
        let mut config = ServerConfig::default();
        config.protocol.deflate.enabled = deflate;
        let binary = tx.clone();
        let session = hubbub::client::Client::new(format!("ws://127.0.0.1:{port}/"))
            .with_config(config)
            .connect(move |socket| {
                socket.on_message(move |_, text| {
                    let _ = tx.send(hubbub::Message::Text(text));
                });
                socket.on_binary(move |_, data| {
                    let _ = binary.send(hubbub::Message::Binary(data));
                });
                socket.on_close(move |_, info| *record.lock().unwrap() = Some(info));
            })
            .await
            .unwrap();
        let mut next = async || rx.recv().await.unwrap();
        assert_eq!(next().await, hubbub::Message::Text(expect_ext.into()));
        assert_eq!(next().await, hubbub::Message::Text("fragmented".into()));
        assert_eq!(next().await, hubbub::Message::Text("pong ok".into()));
        let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let text = "all work and no play ".repeat(500);
        session.send(text.clone()).unwrap();
        session.send_binary(vec![0u8, 1, 255]).unwrap();
        session.send_binary(big.clone()).unwrap();
        assert_eq!(next().await, hubbub::Message::Text(text.into()));
        assert_eq!(
            next().await,
            hubbub::Message::Binary(vec![0u8, 1, 255].into())
        );
        assert_eq!(next().await, hubbub::Message::Binary(big.into()));
        session.send("close-me").unwrap();
        session.closed().await;
        let info = closed.lock().unwrap().clone().unwrap();
        assert_eq!(
            (info.code, info.reason.as_str()),
            (CloseCode(4003), "as asked")
        );
        assert!(info.clean, "{info:?}");
    })
    .await;
}

fn python_server(mode: &str) -> Command {
    let python = std::env::var_os("HUBBUB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/venv/bin/python"));
    let mut command = Command::new(python);
    command.arg(peer_script("python_server.py")).arg(mode);
    command
}

fn node_server(mode: &str) -> Command {
    let mut command = Command::new("node");
    command
        .env("NODE_PATH", workspace().join(".cache/node/node_modules"))
        .arg(peer_script("node_server.cjs"))
        .arg(mode);
    command
}

#[tokio::test]
#[ignore = "needs python websockets: run scripts/test"]
async fn hubbub_client_against_python_websockets_server() {
    client_against(python_server("deflate"), true, "ext: PerMessageDeflate").await;
    client_against(python_server("plain"), true, "ext: none").await;
    client_against(python_server("deflate"), false, "ext: none").await;
}

#[tokio::test]
#[ignore = "needs node ws: run scripts/test"]
async fn hubbub_client_against_node_ws_server() {
    client_against(node_server("deflate"), true, "ext: permessage-deflate").await;
    client_against(node_server("plain"), true, "ext: none").await;
}

/// `hubbub connect` (the CLI) against a Python `wss://` server whose
/// self-signed certificate is given with `--ca`.
#[tokio::test]
#[ignore = "needs python websockets: run scripts/test"]
async fn hubbub_connect_over_tls_against_python_websockets() {
    watchdog(async {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir =
            std::env::temp_dir().join(format!("hubbub-interop-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        let mut command = python_server("deflate");
        command.arg(&cert).arg(&key);
        let (_server, port) = peer_server(command).await;
        // The newest build of the binary (scripts/test builds release).
        let binary = ["release", "debug"]
            .map(|profile| workspace().join("target").join(profile).join("hubbub"))
            .into_iter()
            .filter_map(|path| Some((path.metadata().ok()?.modified().ok()?, path)))
            .max()
            .map(|(_, path)| path)
            .expect("the hubbub binary is built (scripts/test builds it)");
        let mut child = Command::new(binary)
            .args(["connect", &format!("wss://localhost:{port}/"), "--ca"])
            .arg(&cert)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the hubbub binary is built (scripts/test builds it)");
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"one\ntwo\nclose-me\n").await.unwrap();
        let output = child.wait_with_output().await.unwrap();
        drop(stdin);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stdout, "ext: PerMessageDeflate\nfragmented\npong ok\none\ntwo\n",
            "{stderr}"
        );
        // The server closed with 4003: said on stderr, non-zero status.
        assert!(!output.status.success());
        assert!(stderr.contains("4003"), "{stderr}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// hubbub's own TLS listener offering HTTP/2 (ALPN `h2`): `/room` is a
/// room (every text to all; "ready?" is answered "ready" once three are
/// in), `/echo` echoes; messages up to 64 KiB. Runs Node's `http2` client
/// script in `mode` against it and returns its stdout.
async fn node_h2(mode: &str) -> (String, hubbub::ServerHandle) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let tls = hubbub::TlsConfig::from_pem(
        certified.cert.pem().as_bytes(),
        certified.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap()
    .http2(true)
    .unwrap();
    let server = hubbub::Server::bind_tls("wss://127.0.0.1:0", tls)
        .await
        .unwrap()
        .with_config(common::quick().with_protocol_config(
            hubbub::ProtocolConfig::default().with_max_message_size(64 << 10),
        ));
    let port = server.local_addr().port();
    let handle = server.handle();
    tokio::spawn(server.start(|socket| {
        if socket.info().path() == "/echo" {
            echo(socket);
            return;
        }
        socket.on_open(|conn| {
            let _ = conn.subscribe("room");
        });
        socket.on_message(|conn, text| {
            if text == "ready?" {
                let conn = conn.clone();
                tokio::spawn(async move {
                    while conn.server().subscriber_count("room") < 3 {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    let _ = conn.send("ready");
                });
            } else {
                conn.server().publish("room", text);
            }
        });
    }));
    let output = Command::new("node")
        .env("NODE_PATH", workspace().join(".cache/node/node_modules"))
        .arg(peer_script("node_h2.cjs"))
        .arg(format!("https://localhost:{port}"))
        .arg(mode)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains("all ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (stdout, handle)
}

#[tokio::test]
#[ignore = "needs node and node ws: run scripts/test"]
async fn node_http2_streams_chat_with_an_http11_socket() {
    watchdog(async {
        let (stdout, handle) = node_h2("chat").await;
        assert_eq!(stdout.matches("ok:").count(), 3, "{stdout}");
        let metrics = handle.metrics();
        assert!(
            metrics.contains("hubbub_connections_opened_by_http_total{http=\"2\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("hubbub_connections_opened_by_http_total{http=\"1.1\"} 1"),
            "{metrics}"
        );
        handle.shutdown();
    })
    .await;
}

#[tokio::test]
#[ignore = "needs node: run scripts/test"]
async fn node_http2_protocol_cases() {
    watchdog(async {
        let (stdout, handle) = node_h2("protocol").await;
        assert_eq!(stdout.matches("ok:").count(), 8, "{stdout}");
        assert!(handle.metrics().contains("status=\"501\""));
        handle.shutdown();
    })
    .await;
}
