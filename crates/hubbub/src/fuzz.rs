//! A fuzz entry point over the whole driver: not part of the public API
//! (feature `__fuzz`, for the cargo-fuzz crate in `fuzz/`; the committed
//! seeds are replayed by this crate's own tests).
//!
//! [`drive`] serves one connection over an in-memory pipe with tokio's
//! clock paused and reads `data` as a script: client bytes (valid masked
//! frames of any kind, or raw garbage) interleaved with what handlers and
//! other tasks do (sends, closes, pings, broadcasts) and with time passing.
//! It checks that nothing panics, that `on_close` runs exactly once, that
//! the queue stays within its bound, that every byte charged to the
//! server's budget is given back once the connection ended, and that
//! everything the server writes after the `101` is a valid frame sequence
//! for a client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use hubbub_proto::handshake::ClientRequest;
use hubbub_proto::{Connection as Proto, FrameHeader, OpCode, Role, apply_mask};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use crate::handle::{Connection, ServerHandle};
use crate::handshake::Service;
use crate::hub::HubState;
use crate::task::serve_stream;
use crate::{Backpressure, DeflateConfig, ServerConfig, StreamInfo};

/// The queue limit of the fuzzed connection: small, so that scripts reach it.
const MAX_QUEUE: usize = 8 * 1024;

/// The queue may pass its limit by the protocol's own replies (a pong and a
/// close at most per read).
const REPLY_SLACK: usize = 2 * (125 + 14);

/// Reads the script.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// A masked client frame.
fn client_frame(fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let header = FrameHeader {
        fin,
        rsv1,
        mask: Some(key),
        ..FrameHeader::new(opcode, payload.len() as u64)
    };
    let mut frame = header.encode().as_bytes().to_vec();
    let start = frame.len();
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[start..], key, 0);
    frame
}

/// Checks the server's output as a client reads it.
struct Checker {
    proto: Proto,
    input: BytesMut,
}

impl Checker {
    /// Reads what the server wrote so far; panics on an invalid frame.
    fn read(&mut self, client: &mut DuplexStream) {
        let mut chunk = [0u8; 4096];
        loop {
            match client.try_read_for_fuzz(&mut chunk) {
                Some(0) | None => break,
                Some(n) => self.input.extend_from_slice(&chunk[..n]),
            }
        }
        let mut ignored = BytesMut::new();
        loop {
            match self.proto.read(&mut self.input, &mut ignored) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("the server wrote an invalid frame: {e}"),
            }
        }
    }
}

/// Non-blocking reads from the client's end of the pipe.
trait TryRead {
    fn try_read_for_fuzz(&mut self, buf: &mut [u8]) -> Option<usize>;
}

impl TryRead for DuplexStream {
    fn try_read_for_fuzz(&mut self, buf: &mut [u8]) -> Option<usize> {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let mut cx = Context::from_waker(Waker::noop());
        let mut read = std::pin::pin!(self.read(buf));
        match read.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(n)) => Some(n),
            Poll::Ready(Err(_)) => Some(0),
            Poll::Pending => None,
        }
    }
}

/// Runs one script. Panics when an invariant breaks.
pub fn drive(data: &[u8]) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
        .block_on(run(Script(data)));
}

async fn run(mut script: Script<'_>) {
    let flags = script.byte().unwrap_or(0);
    let mut deflate = DeflateConfig::default();
    deflate.server_no_context_takeover = flags & 2 == 0;
    deflate.threshold = 16;
    let protocol = hubbub_proto::Config::default()
        .with_max_frame_size(4096)
        .with_max_message_size(8192)
        .with_deflate(deflate);
    let backpressure = if flags & 4 == 0 {
        Backpressure::Close
    } else {
        Backpressure::Refuse
    };
    // With flag 8, a server-wide budget smaller than the queue's limit, so
    // that sends are refused for it and the sweep evicts.
    let budget = if flags & 8 == 0 { 1 << 30 } else { 6 * 1024 };
    let config = ServerConfig::default()
        .with_protocol_config(protocol)
        .with_max_queue_bytes(MAX_QUEUE)
        .with_max_total_queue_bytes(budget)
        .with_stall_timeout(Some(Duration::from_secs(5)))
        .with_backpressure(backpressure)
        .with_close_timeout(Duration::from_secs(2))
        .with_ping_interval(Some(Duration::from_secs(3)))
        .with_idle_timeout(Some(Duration::from_secs(8)));
    let closes = Arc::new(AtomicUsize::new(0));
    let opened: Arc<Mutex<Option<Connection>>> = Arc::default();
    let (closes2, opened2) = (closes.clone(), opened.clone());
    let service = Arc::new(Service {
        hub: HubState::new(None),
        protocol: Arc::new(config.protocol.clone()),
        config: config.clone(),
        setup: Box::new(move |socket| {
            let closes = closes2.clone();
            *opened2.lock().unwrap() = Some(socket.connection().clone());
            socket.on_message(|conn, text| {
                let _ = conn.send(text);
            });
            socket.on_binary(|conn, data| {
                let _ = conn.send_binary(data);
            });
            socket.on_close(move |_, _| {
                closes.fetch_add(1, Ordering::SeqCst);
            });
        }),
        http: None,
        hook: None,
        started: std::sync::Once::new(),
    });
    let hub = service.hub.clone();
    let sweep = crate::keepalive::spawn(&hub, &config);
    let (mut client, server) = tokio::io::duplex(2048);
    let addr: SocketAddr = "127.0.0.1:4000".parse().expect("an address");
    let deadline = Instant::now() + config.handshake_timeout;
    let task = tokio::spawn(serve_stream(
        server,
        StreamInfo::new(addr).local(addr),
        service,
        deadline,
        None,
    ));

    let mut request = ClientRequest::new("localhost", "/");
    if flags & 1 != 0 {
        request = request.extension("permessage-deflate; client_max_window_bits");
    }
    let mut head = BytesMut::new();
    request.write(&mut head);
    let _ = client.write_all(&head).await;
    let mut input = BytesMut::new();
    let response = loop {
        if let Ok(Some(response)) = request.parse_response(&mut input, &Default::default()) {
            break response;
        }
        match client.read_buf(&mut input).await {
            Ok(0) | Err(_) => panic!("no 101 for a valid request"),
            Ok(_) => {}
        }
    };
    let mut checker = Checker {
        proto: Proto::new(Role::Client, Default::default()),
        input,
    };
    if let Some(answer) = response.extensions.first() {
        let params = hubbub_proto::deflate::client_params(answer, 16).expect("a valid answer");
        checker.proto.set_deflate(params);
    }
    let conn = opened.lock().unwrap().clone().expect("the setup ran");
    let handle = ServerHandle::new(hub.clone());

    while let Some(op) = script.byte() {
        let len = usize::from(script.byte().unwrap_or(0));
        // The operation, and one more bit for it.
        let flag = (op / 12) % 2 == 1;
        match op % 12 {
            0 => {
                // With the flag, RSV1: compressed when deflate was
                // negotiated, a protocol error otherwise.
                let frame = client_frame(true, flag, OpCode::Text, script.take(len));
                let _ = client.write_all(&frame).await;
            }
            1 => {
                let frame = client_frame(flag, false, OpCode::Binary, script.take(len));
                let _ = client.write_all(&frame).await;
            }
            2 => {
                let frame = client_frame(flag, false, OpCode::Continuation, script.take(len));
                let _ = client.write_all(&frame).await;
            }
            3 => {
                let opcode = if flag { OpCode::Pong } else { OpCode::Ping };
                let frame = client_frame(true, false, opcode, script.take(len.min(125)));
                let _ = client.write_all(&frame).await;
            }
            4 => {
                let payload = [0x03, 0xe8];
                let frame = client_frame(true, false, OpCode::Close, &payload[..len % 3]);
                let _ = client.write_all(&frame).await;
            }
            5 => {
                let raw = script.take(len).to_vec();
                let _ = client.write_all(&raw).await;
            }
            6 => {
                let _ = conn.send("h".repeat(len * 16));
            }
            7 => {
                let _ = conn.send_binary(vec![op; len * 64]);
            }
            8 => {
                let _ = conn.close_with(4000 + u16::from(op), "script");
            }
            9 => {
                let _ = conn.ping(vec![op; len % 126]);
                handle.broadcast("b".repeat(len * 8));
            }
            10 => tokio::time::sleep(Duration::from_millis(len as u64 * 40)).await,
            _ => checker.read(&mut client),
        }
        tokio::task::yield_now().await;
        assert!(
            conn.buffered_amount() <= MAX_QUEUE + REPLY_SLACK,
            "queue {} over its bound",
            conn.buffered_amount()
        );
        assert!(closes.load(Ordering::SeqCst) <= 1, "on_close twice");
    }
    // Let the connection end: read what is left, answer nothing more; the
    // close and idle timeouts end it within seconds of paused time.
    loop {
        checker.read(&mut client);
        if task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    checker.read(&mut client);
    task.await.expect("the connection task does not panic");
    assert_eq!(closes.load(Ordering::SeqCst), 1, "on_close exactly once");
    assert!(hub.clients.all().is_empty());
    drop(conn);
    assert_eq!(
        hub.budget.used(),
        0,
        "every byte charged to the budget is given back"
    );
    sweep.abort();
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Replays the committed seeds (`fuzz/corpus/driver`) on stable Rust.
    #[test]
    fn fuzz_seeds_driver() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/driver");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus folder") {
            let path = entry.expect("an entry").path();
            super::drive(&std::fs::read(&path).expect("a seed"));
            count += 1;
        }
        assert!(count >= 5, "only {count} seeds in {}", dir.display());
    }

    /// A few hundred random scripts on every run (a fixed sequence, so a
    /// failure reproduces): the fuzzer's invariants, cheaply, without
    /// nightly.
    #[test]
    fn random_scripts_hold_the_invariants() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..400 {
            let len = (next() % 96) as usize;
            let script: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            super::drive(&script);
        }
    }
}
