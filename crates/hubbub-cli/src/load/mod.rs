//! `hubbub load`: a load generator built on `hubbub-proto`'s client role.
//!
//! `echo` keeps K messages in flight on each of N connections for a
//! duration, verifies every echoed byte, and reports throughput, round-trip
//! percentiles and CPU per message; `connections` opens N connections and
//! reports the server's memory per connection.

mod broadcast;
mod client;
mod rooms;
mod stats;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hubbub_proto::{Event, MessageKind};

use client::Client;

/// The load scenarios.
#[derive(Subcommand)]
pub(crate) enum LoadCommand {
    /// N connections, K messages in flight each, every echo verified.
    Echo(EchoLoad),
    /// Opens N connections and reports the server's memory per connection.
    Connections(ConnectionsLoad),
    /// One publisher and N subscribers on a relay server (`hubbub relay`):
    /// deliveries per second and delivery latency, order checked.
    Broadcast(broadcast::BroadcastLoad),
    /// R rooms of M members on relays started with `--rooms`, every member
    /// publishing to its room with W of its own messages in flight:
    /// publishes and deliveries per second, latency, each publisher's
    /// order checked in every room.
    Rooms(rooms::RoomsLoad),
    /// Upgrades per second with C concurrent connectors (each connection is
    /// closed right after its upgrade).
    Handshakes(HandshakesLoad),
}

/// Options of `hubbub load handshakes`.
#[derive(Args)]
pub(crate) struct HandshakesLoad {
    /// The server.
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    url: String,
    /// Concurrent connectors.
    #[arg(short = 'c', long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(short, long, default_value_t = 5.0)]
    duration: f64,
    /// The server's pid, to report its CPU time per upgrade.
    #[arg(long)]
    server_pid: Option<u32>,
}

async fn handshakes(options: HandshakesLoad) -> Result<(), String> {
    let (addr, path) = split_url(&options.url)?;
    let addr = Arc::new((addr, path));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.duration);
    let server_cpu = options.server_pid.and_then(stats::cpu_time);
    let mut tasks = Vec::new();
    for _ in 0..options.concurrency {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = stats::histogram();
            let mut done = 0u64;
            while Instant::now() < deadline {
                let begun = Instant::now();
                let client = Client::connect(&addr.0, &addr.1, false)
                    .await
                    .map_err(|e| format!("upgrade {done}: {e}"))?;
                let _ = histogram.record(begun.elapsed().as_micros().max(1) as u64);
                done += 1;
                client.close().await;
            }
            Ok::<_, String>((done, histogram))
        }));
    }
    let mut histogram = stats::histogram();
    let mut upgrades = 0;
    for task in tasks {
        let (done, h) = task.await.map_err(|e| e.to_string())??;
        upgrades += done;
        histogram.add(&h).map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = upgrades as f64 / elapsed;
    let server_cpu = options
        .server_pid
        .and_then(stats::cpu_time)
        .zip(server_cpu)
        .map(|(b, a)| (b - a).as_secs_f64() * 1e6 / upgrades.max(1) as f64);
    println!(
        "scenario          handshakes, {} concurrent",
        options.concurrency
    );
    println!("upgrades/s        {rate:.0}");
    println!("upgrade p50 (µs)  {}", histogram.value_at_quantile(0.5));
    println!("upgrade p99 (µs)  {}", histogram.value_at_quantile(0.99));
    if let Some(us) = server_cpu {
        println!("server CPU µs/upgrade  {us:.1}");
    }
    let json = serde_json::json!({
        "scenario": "handshakes", "concurrency": options.concurrency, "upgrades": upgrades,
        "seconds": elapsed, "upgrades_per_second": rate,
        "upgrade_p50_us": histogram.value_at_quantile(0.5),
        "upgrade_p99_us": histogram.value_at_quantile(0.99),
        "server_cpu_us_per_upgrade": server_cpu,
    });
    println!("{json}");
    Ok(())
}

/// Options of `hubbub load echo`.
#[derive(Args)]
pub(crate) struct EchoLoad {
    /// The echo server.
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    url: String,
    /// Connections.
    #[arg(short = 'n', long, default_value_t = 100)]
    connections: usize,
    /// Messages in flight per connection.
    #[arg(short = 'k', long, default_value_t = 1)]
    in_flight: usize,
    /// Payload size in bytes.
    #[arg(short, long, default_value_t = 20)]
    size: usize,
    /// Send binary messages (default: text).
    #[arg(long)]
    binary: bool,
    /// Seconds to run.
    #[arg(short, long, default_value_t = 5.0)]
    duration: f64,
    /// Offer permessage-deflate.
    #[arg(long)]
    deflate: bool,
    /// Raw TCP: no WebSocket handshake or frames; every `size` bytes echoed
    /// count as one message (for a byte-echo server: the I/O ceiling).
    #[arg(long, conflicts_with = "deflate")]
    raw: bool,
    /// The server's pid, to report its CPU time per message.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// Options of `hubbub load connections`.
#[derive(Args)]
pub(crate) struct ConnectionsLoad {
    /// The server.
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    url: String,
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    count: usize,
    /// Send one message of this many bytes on each and wait for its echo
    /// (0: stay idle).
    #[arg(long, default_value_t = 0)]
    message: usize,
    /// Offer permessage-deflate.
    #[arg(long)]
    deflate: bool,
    /// The server's pid, to read its memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections per source address: past this many, further connections
    /// come from 127.0.0.2, 127.0.0.3, … (a loopback server only), since one
    /// source address has about 28,000 ephemeral ports.
    #[arg(long, default_value_t = 25_000)]
    per_source: usize,
}

/// The source address of connection `id`: `None` (the kernel's choice) for
/// the first `per_source`, then 127.0.0.2, 127.0.0.3, … for a server on
/// 127.0.0.0/8.
fn source_address(addr: &str, id: usize, per_source: usize) -> Option<std::net::IpAddr> {
    let target: std::net::SocketAddr = addr.parse().ok()?;
    let block = id / per_source.max(1);
    if block == 0 || !target.ip().is_loopback() || !target.is_ipv4() {
        return None;
    }
    let last = u8::try_from(1 + block).ok()?;
    Some(std::net::Ipv4Addr::new(127, 0, 0, last).into())
}

/// Splits `ws://host:port/path` into address and path.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: expected ws://host:port/path"))?;
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((addr.to_owned(), path.to_owned()))
}

/// Fills `buf` with the deterministic ASCII payload of message `seq` on
/// connection `conn` (the alphabet from a letter that depends on both,
/// repeated), so that the echo can be checked byte by byte. Built by
/// doubling: a 1 MiB payload costs a few `memcpy`s, not a million
/// divisions (the generator must not be what a large-message row measures).
fn payload(buf: &mut Vec<u8>, conn: u64, seq: u64, size: usize) {
    const ALPHABET: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";
    let start = (conn.wrapping_mul(31).wrapping_add(seq.wrapping_mul(7)) % 26) as usize;
    buf.clear();
    buf.reserve(size);
    buf.extend_from_slice(&ALPHABET[start..]);
    buf.extend_from_slice(&ALPHABET[..start]);
    // The content has period 26 and `buf.len()` stays a multiple of it
    // until the last copy, so appending a prefix continues the pattern.
    while buf.len() < size {
        let more = buf.len().min(size - buf.len());
        buf.extend_from_within(..more);
    }
    buf.truncate(size);
}

/// Counters shared by every connection task and the progress line.
#[derive(Default)]
struct Progress {
    messages: AtomicU64,
    failed: AtomicBool,
}

struct EchoResult {
    messages: u64,
    histogram: hdrhistogram::Histogram<u64>,
    compressed: bool,
}

async fn echo_connection(
    addr: Arc<(String, String)>,
    id: u64,
    options: Arc<EchoLoad>,
    start: Arc<tokio::sync::Barrier>,
    deadline: Arc<std::sync::OnceLock<Instant>>,
    progress: Arc<Progress>,
) -> Result<EchoResult, String> {
    let connecting = if options.raw {
        Client::raw(&addr.0, options.size).await
    } else {
        Client::connect(&addr.0, &addr.1, options.deflate).await
    };
    // Past the barrier whatever the outcome: a connection that failed
    // must not leave the others (and the run) waiting for it forever.
    start.wait().await;
    let mut client = connecting.map_err(|e| format!("connect: {e}"))?;
    let kind = if options.binary {
        MessageKind::Binary
    } else {
        MessageKind::Text
    };
    let mut histogram = stats::histogram();
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(options.in_flight);
    let mut buf = Vec::with_capacity(options.size);
    let mut seq = 0;
    let mut messages = 0;
    let mut reported = 0;
    let deadline =
        *deadline.get_or_init(|| Instant::now() + Duration::from_secs_f64(options.duration));
    for _ in 0..options.in_flight {
        payload(&mut buf, id, seq, options.size);
        client.queue(kind, &buf).map_err(|e| e.to_string())?;
        in_flight.push_back((seq, Instant::now()));
        seq += 1;
    }
    client.flush().await.map_err(|e| e.to_string())?;
    // Everything that arrived together is checked and answered with one
    // write: the generator must not be the one making a syscall per frame.
    while !in_flight.is_empty() {
        let mut event = client.next().await.map_err(|e| e.to_string())?;
        while let Some(current) = event.take() {
            let data = match current {
                Event::Text(text) => text.into_bytes(),
                Event::Binary(data) => data,
                Event::Ping(_) | Event::Pong(_) => {
                    event = client.buffered().map_err(|e| e.to_string())?;
                    continue;
                }
                Event::Close(frame) => return Err(format!("server closed: {frame:?}")),
            };
            let Some((sent_seq, sent_at)) = in_flight.pop_front() else {
                return Err(format!("connection {id}: an echo nobody asked for"));
            };
            payload(&mut buf, id, sent_seq, options.size);
            if data[..] != buf[..] {
                return Err(format!(
                    "connection {id}: echo of message {sent_seq} differs"
                ));
            }
            let rtt = sent_at.elapsed().as_micros().max(1) as u64;
            let _ = histogram.record(rtt.min(60_000_000));
            messages += 1;
            if Instant::now() < deadline {
                payload(&mut buf, id, seq, options.size);
                client.queue(kind, &buf).map_err(|e| e.to_string())?;
                in_flight.push_back((seq, Instant::now()));
                seq += 1;
            }
            event = client.buffered().map_err(|e| e.to_string())?;
        }
        progress
            .messages
            .fetch_add(messages - reported, Ordering::Relaxed);
        reported = messages;
        client.flush().await.map_err(|e| e.to_string())?;
    }
    let compressed = client.compressed();
    client.close().await;
    Ok(EchoResult {
        messages,
        histogram,
        compressed,
    })
}

async fn echo(options: EchoLoad) -> Result<(), String> {
    let addr = Arc::new(split_url(&options.url)?);
    let options = Arc::new(options);
    let progress = Arc::new(Progress::default());
    let start = Arc::new(tokio::sync::Barrier::new(options.connections + 1));
    let deadline = Arc::new(std::sync::OnceLock::new());
    let mut tasks = Vec::new();
    for id in 0..options.connections {
        tasks.push(tokio::spawn(echo_connection(
            addr.clone(),
            id as u64,
            options.clone(),
            start.clone(),
            deadline.clone(),
            progress.clone(),
        )));
    }
    start.wait().await;
    let began = Instant::now();
    let client_cpu = stats::cpu_time(std::process::id());
    let server_cpu = options.server_pid.and_then(stats::cpu_time);
    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.tick().await;
            loop {
                interval.tick().await;
                let now = progress.messages.load(Ordering::Relaxed);
                eprint!(
                    "\r{:>6.1}s {:>12} msg/s   ",
                    began.elapsed().as_secs_f64(),
                    now - last
                );
                last = now;
                if progress.failed.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
    };
    let mut histogram = stats::histogram();
    let mut messages = 0;
    let mut compressed = 0;
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(result)) => {
                messages += result.messages;
                compressed += usize::from(result.compressed);
                histogram
                    .add(&result.histogram)
                    .map_err(|e| e.to_string())?;
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    ticker.abort();
    eprintln!();
    let client_cpu = stats::cpu_time(std::process::id())
        .zip(client_cpu)
        .map(|(b, a)| (b - a).as_secs_f64());
    let server_cpu = options
        .server_pid
        .and_then(stats::cpu_time)
        .zip(server_cpu)
        .map(|(b, a)| (b - a).as_secs_f64());
    if let Some(first) = errors.first() {
        return Err(format!(
            "{} connections failed; first: {first}",
            errors.len()
        ));
    }
    let rate = messages as f64 / elapsed;
    let per_message = |cpu: Option<f64>| cpu.map(|c| c * 1e6 / messages.max(1) as f64);
    println!(
        "scenario          echo {} conns x {} B {}, {} in flight{}",
        options.connections,
        options.size,
        if options.raw {
            "raw TCP"
        } else if options.binary {
            "binary"
        } else {
            "text"
        },
        options.in_flight,
        if compressed > 0 {
            ", permessage-deflate"
        } else {
            ""
        }
    );
    println!("messages          {messages} in {elapsed:.2} s");
    println!("messages/s        {rate:.0}");
    println!("MB/s (one way)    {:.1}", rate * options.size as f64 / 1e6);
    for (name, q) in [
        ("rtt p50 (µs)", 0.5),
        ("rtt p99 (µs)", 0.99),
        ("rtt p99.9 (µs)", 0.999),
    ] {
        println!("{name:<18}{}", histogram.value_at_quantile(q));
    }
    if let Some(us) = per_message(client_cpu) {
        println!("client CPU µs/msg  {us:.2}");
    }
    if let Some(us) = per_message(server_cpu) {
        println!("server CPU µs/msg  {us:.2}");
    }
    let json = serde_json::json!({
        "scenario": "echo", "connections": options.connections, "size": options.size,
        "in_flight": options.in_flight, "binary": options.binary, "raw": options.raw, "deflate": compressed > 0,
        "messages": messages, "seconds": elapsed, "messages_per_second": rate,
        "mb_per_second": rate * options.size as f64 / 1e6,
        "rtt_p50_us": histogram.value_at_quantile(0.5),
        "rtt_p99_us": histogram.value_at_quantile(0.99),
        "rtt_p999_us": histogram.value_at_quantile(0.999),
        "client_cpu_us_per_message": per_message(client_cpu),
        "server_cpu_us_per_message": per_message(server_cpu),
    });
    println!("{json}");
    Ok(())
}

async fn connections(options: ConnectionsLoad) -> Result<(), String> {
    let (addr, path) = split_url(&options.url)?;
    let before = options.server_pid.and_then(stats::rss_bytes);
    let mut clients = Vec::with_capacity(options.count);
    let mut buf = Vec::new();
    for id in 0..options.count {
        let source = source_address(&addr, id, options.per_source);
        let mut client = Client::connect_from(&addr, &path, options.deflate, source)
            .await
            .map_err(|e| format!("connection {id}: {e}"))?;
        if options.message > 0 {
            payload(&mut buf, id as u64, 0, options.message);
            client
                .queue(MessageKind::Text, &buf)
                .map_err(|e| e.to_string())?;
            client.flush().await.map_err(|e| e.to_string())?;
            match client.next().await.map_err(|e| e.to_string())? {
                Some(Event::Text(_)) => {}
                other => return Err(format!("connection {id}: expected an echo, got {other:?}")),
            }
        }
        clients.push(client);
        if (id + 1) % 1000 == 0 {
            eprint!("\r{} connections open   ", id + 1);
        }
    }
    eprintln!();
    // Let the server settle before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = options.server_pid.and_then(stats::rss_bytes);
    let per_connection = before
        .zip(after)
        .map(|(b, a)| a.saturating_sub(b) as f64 / options.count as f64);
    println!("connections       {}", options.count);
    if let Some(bytes) = per_connection {
        println!("server RSS growth {bytes:.0} B per connection");
    }
    let json = serde_json::json!({
        "scenario": "connections", "connections": options.count, "deflate": options.deflate,
        "message": options.message, "server_rss_before": before, "server_rss_after": after,
        "server_rss_bytes_per_connection": per_connection,
    });
    println!("{json}");
    for client in clients {
        client.close().await;
    }
    Ok(())
}

/// Runs a load scenario on the current runtime.
pub(crate) async fn run(command: LoadCommand) -> Result<(), String> {
    match command {
        LoadCommand::Echo(options) => echo(options).await,
        LoadCommand::Connections(options) => connections(options).await,
        LoadCommand::Broadcast(options) => broadcast::run(options).await,
        LoadCommand::Rooms(options) => rooms::run(options).await,
        LoadCommand::Handshakes(options) => handshakes(options).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(
            split_url("ws://127.0.0.1:9001/x?y").unwrap(),
            ("127.0.0.1:9001".to_owned(), "/x?y".to_owned())
        );
        assert_eq!(split_url("ws://h:1").unwrap().1, "/");
        assert!(split_url("http://h:1/").is_err());
    }

    #[test]
    fn source_addresses_rotate_past_per_source_on_loopback_only() {
        assert_eq!(source_address("127.0.0.1:9", 0, 10), None);
        assert_eq!(source_address("127.0.0.1:9", 9, 10), None);
        assert_eq!(
            source_address("127.0.0.1:9", 10, 10),
            Some("127.0.0.2".parse().unwrap())
        );
        assert_eq!(
            source_address("127.0.0.1:9", 25, 10),
            Some("127.0.0.3".parse().unwrap())
        );
        assert_eq!(source_address("10.0.0.1:9", 25, 10), None);
        assert_eq!(source_address("[::1]:9", 25, 10), None);
    }

    #[test]
    fn payloads_follow_the_alphabet_from_their_seeded_letter() {
        let mut buf = Vec::new();
        for (conn, seq, size) in [(0, 0, 0), (1, 2, 1), (3, 4, 25), (5, 6, 27), (7, 8, 1000)] {
            payload(&mut buf, conn, seq, size);
            let seed = conn * 31 + seq * 7;
            let slow: Vec<u8> = (0..size as u64)
                .map(|i| b'a' + ((seed + i) % 26) as u8)
                .collect();
            assert_eq!(buf, slow, "conn {conn} seq {seq} size {size}");
        }
    }

    #[test]
    fn payloads_are_ascii_and_differ_by_connection_and_sequence() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        payload(&mut a, 1, 2, 100);
        payload(&mut b, 1, 3, 100);
        assert!(a.is_ascii() && a.len() == 100);
        assert_ne!(a, b);
    }
}
