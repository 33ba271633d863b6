//! Real peers over loopback: Python `websockets` and Node `ws` clients
//! against the server. They need the tools `scripts/test` installs.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::{echo, start, watchdog};
use hubbub::{CloseCode, ServerConfig};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// Runs a client program against an echo server and checks how the server
/// saw the connection end.
async fn run_peer(mut command: tokio::process::Command) {
    watchdog(async {
        let server = start(ServerConfig::default(), echo).await;
        let output = command
            .arg(server.url("/interop"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .expect("peer program runs (installed by scripts/test)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "peer failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains(": ok"), "{stdout}");
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode(4001));
        assert_eq!(closes[0].reason, "bye");
        assert!(closes[0].clean, "{:?}", closes[0]);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs python websockets: run scripts/test"]
async fn python_websockets_client_exchanges_all_message_kinds() {
    let python = std::env::var_os("HUBBUB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/venv/bin/python"));
    let mut command = tokio::process::Command::new(python);
    command.arg(peer_script("python_client.py"));
    run_peer(command).await;
}

#[tokio::test]
#[ignore = "needs node ws: run scripts/test"]
async fn node_ws_client_exchanges_all_message_kinds() {
    let mut command = tokio::process::Command::new("node");
    command
        .env("NODE_PATH", workspace().join(".cache/node/node_modules"))
        .arg(peer_script("node_client.cjs"));
    run_peer(command).await;
}
