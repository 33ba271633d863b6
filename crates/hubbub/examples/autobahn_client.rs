//! hubbub's client under the Autobahn test suite's client cases: the suite
//! (here `kosoku -m fuzzingserver`) is the server, and this program asks it
//! for the number of cases, runs each one (echoing every message back, as
//! the suite expects, with permessage-deflate offered), and asks it to
//! write its reports.
//!
//! `cargo run --release -p hubbub --example autobahn_client -- ws://127.0.0.1:9001`

use futures_util::StreamExt;
use hubbub::client::Client;
use hubbub::{Message, ServerConfig};

const AGENT: &str = "hubbub";

/// Limits as `hubbub echo`'s: the suite sends messages of up to 16 MiB and
/// expects them back whole.
fn config() -> ServerConfig {
    let mut deflate = hubbub::DeflateConfig::default();
    deflate.threshold = 0;
    let protocol = hubbub::ProtocolConfig::default()
        .with_max_message_size(64 << 20)
        .with_max_frame_size(64 << 20)
        .with_deflate(deflate);
    ServerConfig::default()
        .with_protocol_config(protocol)
        .with_max_queue_bytes(256 << 20)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let mut counter = Client::new(format!("{base}/getCaseCount"))
        .connect_stream()
        .await?;
    let count: u32 = match counter.next().await {
        Some(Ok(Message::Text(text))) => text.trim().parse()?,
        other => return Err(format!("no case count: {other:?}").into()),
    };
    drop(counter);
    println!("{count} cases");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={AGENT}");
        let session = Client::new(url)
            .with_config(config())
            .connect(|socket| {
                socket.on_message(|conn, text| {
                    let _ = conn.send(text);
                });
                socket.on_binary(|conn, data| {
                    let _ = conn.send_binary(data);
                });
            })
            .await;
        match session {
            Ok(session) => session.closed().await,
            // Some cases refuse the upgrade on purpose: the suite judges.
            Err(e) => eprintln!("case {case}: {e}"),
        }
    }
    let report = Client::new(format!("{base}/updateReports?agent={AGENT}"))
        .connect(|_| {})
        .await?;
    report.closed().await;
    println!("reports updated");
    Ok(())
}
