//! `hubbub load rooms`: many rooms, every member publishing to its own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Args;
use hubbub_proto::{Event, MessageKind};

use super::client::Client;
use super::{split_url, stats};

/// Options of `hubbub load rooms`.
#[derive(Args)]
pub(crate) struct RoomsLoad {
    /// A relay server started with `--rooms` (`hubbub relay --rooms`, or
    /// with `--redis …` / `--redis-cluster …`; `peer LIBRARY rooms` for the
    /// benchmark's peers). Repeat it for relays sharing a Redis: each
    /// room's members are spread over them.
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    url: Vec<String>,
    /// Rooms.
    #[arg(long, default_value_t = 300)]
    rooms: usize,
    /// Members per room; every one publishes.
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Payload size in bytes (at least 32).
    #[arg(short, long, default_value_t = 32)]
    size: usize,
    /// Most of its own messages each member keeps in flight (sent, not yet
    /// back through its room).
    #[arg(short, long, default_value_t = 1)]
    window: usize,
    /// Seconds to publish.
    #[arg(short, long, default_value_t = 5.0)]
    duration: f64,
    /// Messages per second each member publishes, evenly spaced (still at
    /// most `--window` in flight: a member whose window is full waits, and
    /// the rate reached is what is reported). 0: as fast as the window
    /// allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The server's pid, to report its CPU time per delivery (one server).
    #[arg(long)]
    server_pid: Option<u32>,
}

/// A message: the publisher's number in its room, its sequence number and
/// its send time (µs since the run's start), padded to `size`.
fn message(member: usize, seq: u64, sent_us: u64, size: usize) -> String {
    let mut text = format!("{member}:{seq}:{sent_us}:");
    while text.len() < size {
        text.push('x');
    }
    text
}

fn parse(text: &str) -> Option<(usize, u64, u64)> {
    let mut parts = text.splitn(4, ':');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// What one member saw.
struct Seen {
    sent: u64,
    /// Deliveries from each member of the room (its own included).
    from: Vec<u64>,
    histogram: hdrhistogram::Histogram<u64>,
}

/// What every member shares.
struct Run {
    rooms: usize,
    members: usize,
    size: usize,
    window: usize,
    /// Time between two of a member's publishes (zero: no pacing).
    every: Duration,
    epoch: Instant,
    deadline: Instant,
    /// What each member (`room * members + member`) sent, once it stopped.
    totals: std::sync::Mutex<HashMap<usize, u64>>,
}

impl Run {
    /// Members in all rooms.
    fn count(&self) -> usize {
        (self.rooms * self.members).max(1)
    }
}

/// One member: publishes with `window` of its own in flight until the
/// deadline, reads every delivery of its room checking each publisher's
/// order, then drains until every member's last message arrived (or 10 s).
async fn member(
    mut client: Client,
    room: usize,
    me: usize,
    run: std::sync::Arc<Run>,
) -> Result<Seen, String> {
    let Run {
        members,
        size,
        window,
        every,
        epoch,
        deadline,
        ref totals,
        ..
    } = *run;
    // Members start spread over one period, so that a paced run is not a
    // burst per period.
    let mut next_at = epoch + every.mul_f64((room * members + me) as f64 / run.count() as f64);
    let mut seen = Seen {
        sent: 0,
        from: vec![0; members],
        histogram: stats::histogram(),
    };
    let drain_until = deadline + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        if now < deadline {
            while seen.sent - seen.from[me] < window as u64 && now >= next_at {
                let text = message(me, seen.sent, epoch.elapsed().as_micros() as u64, size);
                client
                    .queue(MessageKind::Text, text.as_bytes())
                    .map_err(|e| e.to_string())?;
                seen.sent += 1;
                if !every.is_zero() {
                    // Behind (a full window): the next one when it frees,
                    // not a burst to catch up.
                    next_at = (next_at + every).max(now);
                }
            }
            client.flush().await.map_err(|e| e.to_string())?;
        } else {
            // Publishing is over: record what this member sent, and stop
            // once every member's messages arrived.
            let expected = {
                let mut totals = totals.lock().unwrap_or_else(|p| p.into_inner());
                totals.insert(room * members + me, seen.sent);
                (0..members)
                    .map(|m| totals.get(&(room * members + m)).copied())
                    .collect::<Option<Vec<u64>>>()
            };
            if expected.as_ref() == Some(&seen.from) {
                break;
            }
            if now > drain_until {
                return Err(format!(
                    "room {room} member {me}: {:?} arrived, {expected:?} sent",
                    seen.from
                ));
            }
        }
        let wait = if now < deadline {
            if every.is_zero() || seen.sent - seen.from[me] >= window as u64 {
                deadline - now
            } else {
                next_at.saturating_duration_since(now).min(deadline - now)
            }
        } else {
            Duration::from_millis(50)
        };
        let event = tokio::select! {
            event = client.next() => event.map_err(|e| e.to_string())?,
            () = tokio::time::sleep(wait) => continue,
        };
        match event {
            Some(Event::Text(text)) => {
                let (from, seq, sent_us) = parse(&text).ok_or("malformed message")?;
                let Some(next) = seen.from.get_mut(from) else {
                    return Err(format!("room {room}: a message from member {from}"));
                };
                if seq != *next {
                    return Err(format!(
                        "room {room} member {me}: from {from} expected {next}, got {seq}"
                    ));
                }
                *next += 1;
                let now_us = epoch.elapsed().as_micros() as u64;
                let _ = seen.histogram.record(now_us.saturating_sub(sent_us).max(1));
            }
            Some(_) => {}
            None => return Err("server closed a member".into()),
        }
    }
    client.close().await;
    Ok(seen)
}

pub(crate) async fn run(options: RoomsLoad) -> Result<(), String> {
    let servers = options
        .url
        .iter()
        .map(|url| split_url(url))
        .collect::<Result<Vec<_>, _>>()?;
    let size = options.size.max(32);
    let (rooms, members) = (options.rooms.max(1), options.members.max(1));
    let mut clients = Vec::with_capacity(rooms * members);
    for r in 0..rooms {
        for m in 0..members {
            let (addr, path) = &servers[(r * members + m) % servers.len()];
            let separator = if path.contains('?') { '&' } else { '?' };
            let path = format!("{path}{separator}room=r{r}");
            clients.push((
                r,
                m,
                Client::connect(addr, &path, false)
                    .await
                    .map_err(|e| format!("room {r} member {m}: {e}"))?,
            ));
        }
    }
    // Let the relays subscribe every room (through Redis) first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server_cpu = options.server_pid.and_then(stats::cpu_time);
    let epoch = Instant::now();
    let every = if options.rate > 0.0 {
        Duration::from_secs_f64(1.0 / options.rate)
    } else {
        Duration::ZERO
    };
    let run = std::sync::Arc::new(Run {
        rooms,
        members,
        size,
        window: options.window.max(1),
        every,
        epoch,
        deadline: epoch + Duration::from_secs_f64(options.duration),
        totals: std::sync::Mutex::new(HashMap::new()),
    });
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(r, m, client)| tokio::spawn(member(client, r, m, run.clone())))
        .collect();
    let mut histogram = stats::histogram();
    let (mut sent, mut deliveries) = (0u64, 0u64);
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(seen)) => {
                sent += seen.sent;
                deliveries += seen.from.iter().sum::<u64>();
                histogram.add(&seen.histogram).map_err(|e| e.to_string())?;
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if let Some(first) = errors.first() {
        return Err(format!("{} members failed; first: {first}", errors.len()));
    }
    let server_cpu = options
        .server_pid
        .and_then(stats::cpu_time)
        .zip(server_cpu)
        .map(|(b, a)| (b - a).as_secs_f64() * 1e6 / deliveries.max(1) as f64);
    let seconds = options.duration;
    let rate = if options.rate > 0.0 {
        format!(", {} msg/s each", options.rate)
    } else {
        String::new()
    };
    println!(
        "scenario          {rooms} rooms x {members} members, every member publishing ({size} B, window {}{rate}), {} server(s)",
        options.window,
        servers.len()
    );
    println!("publishes/s       {:.0}", sent as f64 / seconds);
    println!("deliveries/s      {:.0}", deliveries as f64 / seconds);
    for (name, q) in [("latency p50 (µs)", 0.5), ("latency p99 (µs)", 0.99)] {
        println!("{name:<18}{}", histogram.value_at_quantile(q));
    }
    if let Some(us) = server_cpu {
        println!("server CPU µs/delivery {us:.3}");
    }
    let json = serde_json::json!({
        "scenario": "rooms", "rooms": rooms, "members": members, "size": size,
        "window": options.window, "rate_per_member": options.rate,
        "servers": servers.len(), "published": sent, "deliveries": deliveries,
        "seconds": seconds,
        "publishes_per_second": sent as f64 / seconds,
        "deliveries_per_second": deliveries as f64 / seconds,
        "latency_p50_us": histogram.value_at_quantile(0.5),
        "latency_p99_us": histogram.value_at_quantile(0.99),
        "server_cpu_us_per_delivery": server_cpu,
    });
    println!("{json}");
    Ok(())
}
