//! `hubbub load broadcast`: one publisher, N subscribers on a relay server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use hubbub_proto::{Event, MessageKind};

use super::client::Client;
use super::{split_url, stats};

/// Options of `hubbub load broadcast`.
#[derive(Args)]
pub(crate) struct BroadcastLoad {
    /// A relay server (`hubbub relay`): every message goes to every client.
    /// Repeat it for relays sharing a Redis (`hubbub relay --redis`): the
    /// subscribers are spread over them, the publisher is on the first.
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    url: Vec<String>,
    /// Subscribers.
    #[arg(short = 'n', long, default_value_t = 1000)]
    subscribers: usize,
    /// Payload size in bytes (at least 24).
    #[arg(short, long, default_value_t = 20)]
    size: usize,
    /// Most messages the publisher keeps in flight (sent, not yet back).
    #[arg(short, long, default_value_t = 16)]
    window: usize,
    /// Seconds to publish.
    #[arg(short, long, default_value_t = 5.0)]
    duration: f64,
    /// The server's pid, to report its CPU time per delivery.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// A message: its sequence number and send time (µs since the run's
/// start), padded to `size`.
fn message(seq: u64, sent_us: u64, size: usize) -> String {
    let mut text = format!("{seq}:{sent_us}:");
    while text.len() < size {
        text.push('x');
    }
    text
}

fn parse(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.splitn(3, ':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Reads until `expected()` messages arrived in order (or the deadline);
/// returns the count and the delivery-latency histogram.
async fn subscribe(
    mut client: Client,
    epoch: Instant,
    published: Arc<AtomicU64>,
    finished: Arc<tokio::sync::Notify>,
    stop_at: Arc<std::sync::OnceLock<Instant>>,
) -> Result<(u64, hdrhistogram::Histogram<u64>), String> {
    let mut histogram = stats::histogram();
    let mut next = 0u64;
    loop {
        if let Some(stop) = stop_at.get() {
            if next >= published.load(Ordering::Acquire) || Instant::now() > *stop {
                break;
            }
        }
        let event = tokio::select! {
            event = client.next() => event.map_err(|e| e.to_string())?,
            () = finished.notified() => continue,
            () = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        match event {
            Some(Event::Text(text)) => {
                let (seq, sent_us) = parse(&text).ok_or("malformed message")?;
                if seq != next {
                    return Err(format!("expected message {next}, got {seq}"));
                }
                next += 1;
                let now_us = epoch.elapsed().as_micros() as u64;
                let _ = histogram.record(now_us.saturating_sub(sent_us).max(1));
            }
            Some(_) => {}
            None => return Err("server closed a subscriber".into()),
        }
    }
    client.close().await;
    Ok((next, histogram))
}

pub(crate) async fn run(options: BroadcastLoad) -> Result<(), String> {
    let servers = options
        .url
        .iter()
        .map(|url| split_url(url))
        .collect::<Result<Vec<_>, _>>()?;
    let size = options.size.max(24);
    let mut subscribers = Vec::with_capacity(options.subscribers);
    for i in 0..options.subscribers {
        let (addr, path) = &servers[i % servers.len()];
        subscribers.push(
            Client::connect(addr, path, false)
                .await
                .map_err(|e| format!("subscriber {i}: {e}"))?,
        );
    }
    let (addr, path) = &servers[0];
    let mut publisher = Client::connect(addr, path, false)
        .await
        .map_err(|e| format!("publisher: {e}"))?;
    // Let the relays register everyone (and, through Redis, subscribe)
    // before the first message.
    tokio::time::sleep(Duration::from_millis(if servers.len() > 1 {
        1000
    } else {
        200
    }))
    .await;
    let epoch = Instant::now();
    let published = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(tokio::sync::Notify::new());
    let stop_at = Arc::new(std::sync::OnceLock::new());
    let tasks: Vec<_> = subscribers
        .into_iter()
        .map(|client| {
            tokio::spawn(subscribe(
                client,
                epoch,
                published.clone(),
                finished.clone(),
                stop_at.clone(),
            ))
        })
        .collect();
    let server_cpu = options.server_pid.and_then(stats::cpu_time);
    let deadline = epoch + Duration::from_secs_f64(options.duration);
    let (mut sent, mut back) = (0u64, 0u64);
    while Instant::now() < deadline || back < sent {
        while sent - back < options.window as u64 && Instant::now() < deadline {
            let text = message(sent, epoch.elapsed().as_micros() as u64, size);
            publisher
                .queue(MessageKind::Text, text.as_bytes())
                .map_err(|e| e.to_string())?;
            sent += 1;
        }
        published.store(sent, Ordering::Release);
        publisher.flush().await.map_err(|e| e.to_string())?;
        match publisher.next().await.map_err(|e| e.to_string())? {
            Some(Event::Text(_)) => back += 1,
            Some(_) => {}
            None => return Err("server closed the publisher".into()),
        }
    }
    let publishing = epoch.elapsed().as_secs_f64();
    let _ = stop_at.set(Instant::now() + Duration::from_secs(10));
    finished.notify_waiters();
    let mut histogram = stats::histogram();
    let mut deliveries = 0;
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok((count, h))) => {
                deliveries += count;
                histogram.add(&h).map_err(|e| e.to_string())?;
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let elapsed = epoch.elapsed().as_secs_f64();
    publisher.close().await;
    if let Some(first) = errors.first() {
        return Err(format!(
            "{} subscribers failed; first: {first}",
            errors.len()
        ));
    }
    let expected = sent * options.subscribers as u64;
    if deliveries != expected {
        return Err(format!("{deliveries} deliveries, expected {expected}"));
    }
    let server_cpu = options
        .server_pid
        .and_then(stats::cpu_time)
        .zip(server_cpu)
        .map(|(b, a)| (b - a).as_secs_f64() * 1e6 / deliveries.max(1) as f64);
    let rate = deliveries as f64 / elapsed;
    println!(
        "scenario          broadcast to {} subscribers x {size} B, window {}, {} server(s)",
        options.subscribers,
        options.window,
        servers.len()
    );
    println!("published         {sent} in {publishing:.2} s");
    println!("deliveries/s      {rate:.0}");
    for (name, q) in [("latency p50 (µs)", 0.5), ("latency p99 (µs)", 0.99)] {
        println!("{name:<18}{}", histogram.value_at_quantile(q));
    }
    if let Some(us) = server_cpu {
        println!("server CPU µs/delivery {us:.3}");
    }
    let json = serde_json::json!({
        "scenario": "broadcast", "subscribers": options.subscribers, "size": size,
        "servers": servers.len(),
        "window": options.window, "published": sent, "deliveries": deliveries,
        "seconds": elapsed, "deliveries_per_second": rate,
        "latency_p50_us": histogram.value_at_quantile(0.5),
        "latency_p99_us": histogram.value_at_quantile(0.99),
        "server_cpu_us_per_delivery": server_cpu,
    });
    println!("{json}");
    Ok(())
}
