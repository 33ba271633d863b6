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
