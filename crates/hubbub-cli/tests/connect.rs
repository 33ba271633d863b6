//! `hubbub connect`, as people use it: lines in, messages out, the exit
//! status telling how the connection ended.

use std::process::Stdio;
use std::time::Duration;

use hubbub::{Server, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[path = "support/serve.rs"]
#[allow(dead_code)] // the tests here need the address only
mod support;

/// Runs `hubbub connect ARGS` with `input` on stdin; returns (exit code,
/// stdout, stderr).
async fn connect(args: &[&str], input: &str) -> (i32, String, String) {
    run(args, input, true).await
}

/// As [`connect`]; with `end_input` false, stdin stays open (the server
/// ends the session).
async fn run(args: &[&str], input: &str, end_input: bool) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    let _open = (!end_input).then_some(stdin);
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("hubbub connect exits")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A server on 127.0.0.1:0 with `setup`; returns its address.
async fn server(
    config: ServerConfig,
    setup: impl Fn(&mut hubbub::Socket) + Send + Sync + 'static,
) -> std::net::SocketAddr {
    let server = Server::bind("ws://127.0.0.1:0")
        .await
        .unwrap()
        .with_config(config);
    let addr = server.local_addr();
    tokio::spawn(server.start(setup));
    addr
}

fn echo(socket: &mut hubbub::Socket) {
    socket.on_message(|conn, text| {
        let _ = conn.send(text);
    });
    socket.on_binary(|conn, data| {
        let _ = conn.send_binary(data);
    });
}

#[tokio::test]
async fn lines_in_messages_out_in_order_and_exit_0() {
    let addr = server(ServerConfig::default(), echo).await;
    let (code, stdout, stderr) = connect(&[&format!("ws://{addr}/")], "a\nb\n").await;
    assert_eq!((code, stdout.as_str()), (0, "a\nb\n"), "{stderr}");
    // On a pipe, nothing else: no prompt, no markers.
    assert_eq!(stderr, "");
}

#[tokio::test]
async fn headers_subprotocols_binary_as_hex_and_the_servers_close_code() {
    let addr = server(
        ServerConfig::default().with_protocols(["chat.v1"]),
        |socket| {
            socket.on_open(|conn| {
                let token = conn
                    .info()
                    .headers()
                    .get("x-token")
                    .unwrap_or("none")
                    .to_owned();
                let _ = conn.send(format!("token {token}"));
                let _ = conn.send(format!(
                    "protocol {}",
                    conn.info().protocol().unwrap_or("none")
                ));
                let _ = conn.send_binary(vec![0xde, 0xad, 0xbe, 0xef]);
                let _ = conn.close_with(4001, "go away");
            });
        },
    )
    .await;
    let (code, stdout, stderr) = run(
        &[
            &format!("ws://{addr}/"),
            "-H",
            "X-Token: secret",
            "--subprotocol",
            "chat.v1",
        ],
        "",
        false,
    )
    .await;
    assert_eq!(stdout, "token secret\nprotocol chat.v1\ndeadbeef\n");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("4001") && stderr.contains("go away"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_connect_error_says_what_failed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, stdout, stderr) = connect(&[&format!("ws://127.0.0.1:{port}/")], "x\n").await;
    assert_ne!(code, 0);
    assert_eq!(stdout, "");
    assert!(stderr.contains("cannot connect"), "{stderr}");
    let (code, _, stderr) = connect(&["http://127.0.0.1/"], "").await;
    assert_ne!(code, 0);
    assert!(stderr.contains("ws://"), "{stderr}");
}

#[tokio::test]
async fn wss_with_ca_and_insecure() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("hubbub-connect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let tls = hubbub::TlsConfig::from_pem(
        certified.cert.pem().as_bytes(),
        certified.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let server = Server::bind_tls("wss://127.0.0.1:0", tls).await.unwrap();
    let url = format!("wss://localhost:{}/", server.local_addr().port());
    tokio::spawn(server.start(echo));
    let (code, stdout, stderr) = connect(&[&url, "--ca", ca.to_str().unwrap()], "secure\n").await;
    assert_eq!((code, stdout.as_str()), (0, "secure\n"), "{stderr}");
    let (code, stdout, stderr) = connect(&[&url, "--insecure"], "anyway\n").await;
    assert_eq!((code, stdout.as_str()), (0, "anyway\n"), "{stderr}");
    // Without either, the self-signed certificate is refused, and said so.
    let (code, _, stderr) = connect(&[&url], "").await;
    assert_ne!(code, 0);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `hubbub connect` in the chat of `hubbub serve` over `wss://`.
#[tokio::test]
async fn talks_in_hubbub_serves_chat_over_wss() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("hubbub-connect-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let chat = support::serve(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    let port = chat.addr.rsplit_once(':').unwrap().1;
    let url = format!("wss://localhost:{port}/lobby");
    let (code, stdout, stderr) =
        connect(&[&url, "--ca", cert.to_str().unwrap()], "hi there\n").await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0], "You have just joined the conversation.",
        "{stdout}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(" says: hi there")),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
