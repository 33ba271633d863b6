//! `hubbub serve` attacked as someone on the same network would: bounds on
//! what a few clients can make the server hold, checked on the real binary
//! (its resident memory from `/proc`), not by timing.

#![cfg(target_os = "linux")]

use std::time::Duration;

use bytes::BytesMut;
use hubbub_proto::handshake::ClientRequest;
use hubbub_proto::{Config, Connection, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "../../hubbub/tests/common/peer.rs"]
mod peer;

#[path = "support/serve.rs"]
#[expect(
    dead_code,
    reason = "shared with the chat tests; stdout is not read here"
)]
mod support;

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A new client of `addr` is greeted and can talk: the server still serves.
async fn still_serves(stream: TcpStream, addr: &str) {
    let client = hubbub::client::Client::new(format!("ws://{addr}/fresh"));
    let mut ws = peer::Peer::with_stream(client, stream).await;
    assert_eq!(ws.text().await, "You have just joined the conversation.");
    ws.send("hello").unwrap();
}

/// A raw client: the upgrade, offering permessage-deflate when `deflate`,
/// and the protocol state to send with.
async fn connect(addr: &str, path: &str, deflate: bool) -> (TcpStream, Connection) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = ClientRequest::new(addr, path);
    if deflate {
        request = request.extension("permessage-deflate; client_max_window_bits");
    }
    let mut head = BytesMut::new();
    request.write(&mut head);
    stream.write_all(&head).await.unwrap();
    let mut input = BytesMut::new();
    let response = loop {
        if let Some(response) = request
            .parse_response(&mut input, &Config::default())
            .unwrap()
        {
            break response;
        }
        assert!(stream.read_buf(&mut input).await.unwrap() > 0, "no 101");
    };
    let mut proto = Connection::new(Role::Client, Config::default());
    if deflate {
        let answer = response.extensions.first().expect("deflate accepted");
        proto.set_deflate(hubbub_proto::deflate::client_params(answer, 0).unwrap());
    }
    (stream, proto)
}

/// In each of 25 rooms a JSON member never reads, and another member sends
/// 40 tiny compressed messages that inflate to 64 KiB of U+0001, which the
/// JSON format escapes to 384 KiB each: 310 KB uploaded would have the
/// server hold ~375 MiB for the silent readers. The queue limits and the
/// server-wide budget keep it to tens of MiB, and the server keeps serving.
/// (With the limits before them, 16 MiB per connection and no budget, the
/// same run grew the server by 308 MiB.)
#[tokio::test]
async fn compressed_floods_to_silent_readers_stay_within_the_budget() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let chat = support::serve(&["--max-queued-bytes", "33554432"]).await;
        let pid = chat.child.id().unwrap();
        let before = rss_kib(pid);
        let bomb = "\u{1}".repeat(64 * 1024);
        let mut held = Vec::new();
        let mut uploaded = 0;
        for room in 0..25 {
            let (reader, _) = connect(&chat.addr, &format!("/pin{room}?format=json"), false).await;
            let (mut sender, mut proto) = connect(&chat.addr, &format!("/pin{room}"), true).await;
            let mut frames = BytesMut::new();
            for _ in 0..40 {
                proto.send_text(&bomb, &mut frames).unwrap();
            }
            uploaded += frames.len();
            sender.write_all(&frames).await.unwrap();
            held.push((reader, sender));
        }
        assert!(
            uploaded < 1 << 20,
            "the attack uploads little: {uploaded} bytes"
        );
        // Let the server take all of it in.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let grown_mib = rss_kib(pid).saturating_sub(before) / 1024;
        eprintln!("uploaded {uploaded} bytes; server RSS grew {grown_mib} MiB");
        assert!(
            grown_mib < 96,
            "server RSS grew {grown_mib} MiB for {uploaded} bytes uploaded (budget 32 MiB)"
        );
        // Still serving.
        still_serves(TcpStream::connect(&chat.addr).await.unwrap(), &chat.addr).await;
        drop(held);
    })
    .await
    .expect("watchdog");
}

/// Silent sockets from one address, under a low open-files limit: past 16
/// handshakes in progress from that address the server closes new ones at
/// once, so they cannot use up its descriptors, and a client from another
/// address is served while they are still open.
#[tokio::test]
async fn silent_sockets_cannot_starve_other_clients_of_descriptors() {
    use tokio::io::AsyncBufReadExt;
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n 128 && exec {} serve --port 0 --metrics 127.0.0.1:0",
                env!("CARGO_BIN_EXE_hubbub")
            ))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().unwrap();
        let addr = first
            .strip_prefix("chat server on ws://")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned();
        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
        let second = lines.next_line().await.unwrap().unwrap();
        let metrics = second
            .strip_prefix("metrics on http://")
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .unwrap()
            .to_owned();

        // 300 silent sockets from 127.0.0.1 (each says nothing).
        let mut silent = Vec::new();
        for _ in 0..300 {
            if let Ok(stream) = TcpStream::connect(&addr).await {
                silent.push(stream);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The server closed all but the 16 it lets one address hold.
        let mut open = 0;
        for stream in &mut silent {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(5), stream.read(&mut byte)).await {
                Err(_) => open += 1,     // still waiting for the request
                Ok(Ok(0) | Err(_)) => {} // closed by the server
                Ok(Ok(_)) => panic!("a silent socket got an answer"),
            }
        }
        assert!(open <= 16, "{open} silent sockets held open");
        // Counted, so that an operator sees it.
        let mut scrape = TcpStream::connect(&metrics).await.unwrap();
        let get = format!("GET /metrics HTTP/1.1\r\nHost: {metrics}\r\n\r\n");
        scrape.write_all(get.as_bytes()).await.unwrap();
        let mut text = String::new();
        scrape.read_to_string(&mut text).await.unwrap();
        let dropped: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("hubbub_handshakes_dropped_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no handshakes_dropped in:\n{text}"));
        assert!(dropped + open >= 290, "{dropped} dropped, {open} open");

        // A client from another address is served at once, while the
        // silent ones are still within the 10 s handshake timeout.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let stream = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        still_serves(stream, &addr).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        drop(silent);
        child.kill().await.unwrap();
    })
    .await
    .expect("watchdog");
}
