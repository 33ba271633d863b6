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
    /// A relay server started with `--rooms` (`hubbub relay --rooms
    /// --redis …` or `--redis-cluster …`). Repeat it for relays sharing a
    /// Redis: each room's members are spread over them.
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
    members: usize,
    size: usize,
    window: usize,
    epoch: Instant,
    deadline: Instant,
    /// What each member (`room * members + member`) sent, once it stopped.
    totals: std::sync::Mutex<HashMap<usize, u64>>,
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
        epoch,
        deadline,
        ref totals,
    } = *run;
    let mut seen = Seen {
        sent: 0,
        from: vec![0; members],
        histogram: stats::histogram(),
    };
    let drain_until = deadline + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        if now < deadline {
            while seen.sent - seen.from[me] < window as u64 {
                let text = message(me, seen.sent, epoch.elapsed().as_micros() as u64, size);
                client
                    .queue(MessageKind::Text, text.as_bytes())
                    .map_err(|e| e.to_string())?;
                seen.sent += 1;
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
            deadline - now
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
    let epoch = Instant::now();
    let run = std::sync::Arc::new(Run {
        members,
        size,
        window: options.window.max(1),
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
    let seconds = options.duration;
    println!(
        "scenario          {rooms} rooms x {members} members, every member publishing ({size} B, window {}), {} server(s)",
        options.window,
        servers.len()
    );
    println!("publishes/s       {:.0}", sent as f64 / seconds);
    println!("deliveries/s      {:.0}", deliveries as f64 / seconds);
    for (name, q) in [("latency p50 (µs)", 0.5), ("latency p99 (µs)", 0.99)] {
        println!("{name:<18}{}", histogram.value_at_quantile(q));
    }
    Ok(())
}
