//! The examples, run as their users run them: each binary (built by
//! `cargo test` with the others) is started on port 0, and clients (hubbub's
//! own; the interop tests keep independent ones) use what it printed.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::watchdog;
use futures_util::{SinkExt, StreamExt};
use hubbub::Message;
use hubbub::client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

type Ws = hubbub::WebSocket;

async fn text<S: futures_util::Stream<Item = Result<Message, hubbub::Error>> + Unpin>(
    client: &mut S,
) -> String {
    match client.next().await.unwrap().unwrap() {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn connect(url: &str) -> Ws {
    Client::new(url).connect_stream().await.unwrap()
}

/// Two clients of the seed's chat at `url`: greeting, join notice, a
/// message to everyone, the leave notice.
async fn seed_chat(url: &str) {
    let mut a = connect(url).await;
    assert_eq!(text(&mut a).await, "You have just joined the conversation.");
    let mut b = connect(url).await;
    assert_eq!(text(&mut b).await, "You have just joined the conversation.");
    let joined = text(&mut a).await;
    let b_id = joined
        .strip_suffix(" joined the conversation.")
        .unwrap_or_else(|| panic!("{joined}"))
        .to_owned();
    b.send(Message::Text("hello there".into())).await.unwrap();
    let said = format!("{b_id} says: hello there");
    assert_eq!(text(&mut a).await, said);
    assert_eq!(text(&mut b).await, said);
    b.close().await.unwrap();
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
        let client = connect(&url).await;
        // Sends and reads at once, as a real client does: both directions
        // are bounded, so a client that sends everything before reading
        // would be held back by its own unread echoes.
        let (mut sink, mut stream) = client.split();
        let sender = tokio::spawn(async move {
            for i in 0..50 {
                sink.send(Message::Text(format!("{i}").into()))
                    .await
                    .unwrap();
            }
            sink.send(Message::Binary(vec![9u8; 70_000].into()))
                .await
                .unwrap();
            sink
        });
        for i in 0..50 {
            assert_eq!(text(&mut stream).await, format!("{i}"));
        }
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            Message::Binary(vec![9u8; 70_000].into())
        );
        let mut client = sender.await.unwrap().reunite(stream).unwrap();
        client.close().await.unwrap();
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
        let url = format!("wss://localhost:{}/", example.addr.port());
        let mut client = Client::new(url)
            .ca_pem(certified.cert.pem().as_bytes())
            .unwrap()
            .connect_stream()
            .await
            .unwrap();
        client
            .send(Message::Text("over your own TLS".into()))
            .await
            .unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Text("over your own TLS".into())
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
