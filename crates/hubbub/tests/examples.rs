//! The examples, run as their users run them: each binary (built by
//! `cargo test` with the others) is started on port 0, and real clients
//! use what it printed.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::watchdog;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A running example, killed when dropped.
struct Example {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where cargo put the example binaries: next to this test's `deps`.
fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

/// Starts example `name` with `args`; its first line of output names the
/// address it listens on (`… on http://ADDR/…`, `… on ws://ADDR`).
fn run(name: &str, args: &[&str]) -> Example {
    let path = example_path(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test -p hubbub` builds the examples (a `--test` filter does not)",
        path.display()
    );
    let mut child = Command::new(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{} runs: {e}", path.display()));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ' ', '\n']).next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{name} printed no address: {line:?}"));
    Example { child, addr }
}

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn text(client: &mut Client) -> String {
    loop {
        match client.next().await.unwrap().unwrap() {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Two clients of the seed's chat at `url`: greeting, join notice, a
/// message to everyone, the leave notice.
async fn seed_chat(url: &str) {
    let (mut a, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(text(&mut a).await, "You have just joined the conversation.");
    let (mut b, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(text(&mut b).await, "You have just joined the conversation.");
    let joined = text(&mut a).await;
    let b_id = joined
        .strip_suffix(" joined the conversation.")
        .unwrap_or_else(|| panic!("{joined}"))
        .to_owned();
    b.send(Message::text("hello there")).await.unwrap();
    let said = format!("{b_id} says: hello there");
    assert_eq!(text(&mut a).await, said);
    assert_eq!(text(&mut b).await, said);
    b.close(None).await.unwrap();
    assert_eq!(text(&mut a).await, format!("{b_id} left the chat room."));
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    reply
}

#[tokio::test]
async fn axum_example_serves_hello_the_page_and_the_chat() {
    let example = run("axum", &["0"]);
    watchdog(async {
        let hello = get(example.addr, "/hello").await;
        assert!(hello.starts_with("HTTP/1.1 200"), "{hello}");
        assert!(hello.ends_with("\r\n\r\nhello"), "{hello}");
        let page = get(example.addr, "/").await;
        assert!(page.contains("<script src=\"/chat.js\">"), "{page}");
        seed_chat(&format!("ws://{}/chat", example.addr)).await;
    })
    .await;
}

#[tokio::test]
async fn hyper_example_serves_the_chat() {
    let example = run("hyper", &["0"]);
    watchdog(async {
        assert!(get(example.addr, "/").await.ends_with("hello"));
        seed_chat(&format!("ws://{}/chat", example.addr)).await;
    })
    .await;
}

#[tokio::test]
async fn stream_example_echoes() {
    let example = run("stream", &["0"]);
    watchdog(async {
        let url = format!("ws://{}/", example.addr);
        let (mut client, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        for i in 0..50 {
            client.send(Message::text(format!("{i}"))).await.unwrap();
        }
        client
            .send(Message::binary(vec![9u8; 70_000]))
            .await
            .unwrap();
        for i in 0..50 {
            assert_eq!(text(&mut client).await, format!("{i}"));
        }
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::binary(vec![9u8; 70_000])
        );
        client.close(None).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn tls_acceptor_example_echoes_over_wss() {
    let dir = std::env::temp_dir().join(format!("hubbub-tls-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let example = run(
        "tls_acceptor",
        &[cert.to_str().unwrap(), key.to_str().unwrap(), "0"],
    );
    watchdog(async {
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certified.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(example.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (mut client, _) = tokio_tungstenite::client_async("wss://localhost/", tls)
            .await
            .unwrap();
        client
            .send(Message::text("over your own TLS"))
            .await
            .unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::text("over your own TLS")
        );
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs chromium and node playwright-core: run scripts/test"]
fn axum_example_chat_page_in_headless_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let artifacts = root.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("axum-chat.png");
    let binary = example_path("axum");
    assert!(
        binary.exists(),
        "{} is built by `cargo test -p hubbub`",
        binary.display()
    );
    let output = Command::new("node")
        .env("NODE_PATH", root.join(".cache/node/node_modules"))
        .arg(root.join("tests/browser/axum_chat.cjs"))
        .arg(&binary)
        .arg(&screenshot)
        .output()
        .expect("node runs (installed by scripts/test)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "axum_chat.cjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("axum browser chat: ok"), "{stdout}");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 5_000);
}
