//! Client benchmarks: N connections to an echo server, each keeping K
//! messages of S bytes in flight for D seconds, with hubbub's client,
//! tokio-tungstenite's or tokio-websockets'. Prints one JSON line: messages
//! per second (echoes received) and the client's CPU time per message.
//!
//! ```text
//! peer client <hubbub|tungstenite|tokio-websockets> URL N K SIZE SECONDS
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every connection shares: the count and the stop flag.
struct Run {
    received: AtomicU64,
    stop: AtomicBool,
}

/// A process's user + system CPU time, from `/proc/PROCESS/stat`
/// (`PROCESS`: `self` or a pid).
pub(crate) fn cpu_time(process: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // Linux reports CPU time in clock ticks of 1/100 s.
    Duration::from_millis(ticks * 10)
}

async fn hubbub_conn(
    url: String,
    k: usize,
    payload: Vec<u8>,
    run: Arc<Run>,
) -> Result<(), BoxError> {
    let payload = hubbub::Bytes::from(payload);
    let echo = payload.clone();
    let counter = run.clone();
    // As the other clients: no compression, messages up to 64 MiB.
    let mut protocol = hubbub::ProtocolConfig::default()
        .with_max_message_size(64 << 20)
        .with_max_frame_size(64 << 20);
    protocol.deflate.enabled = false;
    let config = hubbub::ServerConfig::default()
        .with_protocol_config(protocol)
        .with_max_queue_bytes(256 << 20);
    let session = hubbub::client::Client::new(url)
        .with_config(config)
        .connect(move |socket| {
            socket.on_binary(move |conn, _| {
                counter.received.fetch_add(1, Ordering::Relaxed);
                if !counter.stop.load(Ordering::Relaxed) {
                    let _ = conn.send_binary(echo.clone());
                }
            });
        })
        .await?;
    for _ in 0..k {
        session.send_binary(payload.clone())?;
    }
    while !run.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The echo loop of a client whose connection is a `Sink` and a `Stream`
/// of messages: K messages out, then one more for each echo received.
async fn sink_stream_echo<M, W, R, E>(
    mut write: W,
    mut read: R,
    k: usize,
    message: impl Fn() -> M,
    is_binary: fn(&M) -> bool,
    run: Arc<Run>,
) -> Result<(), BoxError>
where
    W: futures_util::Sink<M> + Unpin,
    W::Error: std::error::Error + Send + Sync + 'static,
    R: futures_util::Stream<Item = Result<M, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    for _ in 0..k {
        write.feed(message()).await?;
    }
    write.flush().await?;
    while let Some(received) = read.next().await {
        if is_binary(&received?) {
            run.received.fetch_add(1, Ordering::Relaxed);
            if run.stop.load(Ordering::Relaxed) {
                break;
            }
            write.send(message()).await?;
        }
    }
    Ok(())
}

async fn tungstenite_conn(
    url: String,
    k: usize,
    payload: Vec<u8>,
    run: Arc<Run>,
) -> Result<(), BoxError> {
    use tokio_tungstenite::tungstenite::Message;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    let (write, read) = ws.split();
    let payload = hubbub::Bytes::from(payload);
    let message = move || Message::Binary(payload.clone());
    sink_stream_echo(write, read, k, message, Message::is_binary, run).await
}

async fn tokio_websockets_conn(
    url: String,
    k: usize,
    payload: Vec<u8>,
    run: Arc<Run>,
) -> Result<(), BoxError> {
    use tokio_websockets::{ClientBuilder, Config, Limits, Message};
    let (ws, _) = ClientBuilder::new()
        .uri(&url)?
        .config(Config::default().frame_size(usize::MAX))
        .limits(Limits::unlimited())
        .connect()
        .await?;
    let (write, read) = ws.split();
    let payload = hubbub::Bytes::from(payload);
    let message = move || Message::binary(payload.clone());
    sink_stream_echo(write, read, k, message, Message::is_binary, run).await
}

/// Runs the benchmark; returns the JSON line.
pub(crate) async fn run(
    library: &str,
    url: &str,
    n: usize,
    k: usize,
    size: usize,
    seconds: f64,
) -> Result<String, BoxError> {
    let run = Arc::new(Run {
        received: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (url, run, payload) = (url.to_owned(), run.clone(), vec![7u8; size]);
        let library = library.to_owned();
        tasks.push(tokio::spawn(async move {
            match library.as_str() {
                "hubbub" => hubbub_conn(url, k, payload, run).await,
                "tungstenite" => tungstenite_conn(url, k, payload, run).await,
                _ => tokio_websockets_conn(url, k, payload, run).await,
            }
        }));
    }
    // Warm up, then measure a window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (count0, cpu0, t0) = (
        run.received.load(Ordering::Relaxed),
        cpu_time("self"),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let (count1, cpu1, elapsed) = (
        run.received.load(Ordering::Relaxed),
        cpu_time("self"),
        t0.elapsed(),
    );
    run.stop.store(true, Ordering::Relaxed);
    for task in &tasks {
        if task.is_finished() {
            return Err("a connection ended early".into());
        }
    }
    let messages = count1 - count0;
    if messages == 0 {
        return Err("no echo received".into());
    }
    let per_second = messages as f64 / elapsed.as_secs_f64();
    let cpu_us = (cpu1 - cpu0).as_secs_f64() * 1e6 / messages as f64;
    Ok(format!(
        "{{\"messages_per_second\": {per_second:.1}, \"client_cpu_us_per_message\": {cpu_us:.3}}}"
    ))
}
