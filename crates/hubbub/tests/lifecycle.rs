//! Connection lifecycle guarantees over loopback: handler order, `on_close`
//! exactly once whatever ends a connection, protocol errors, panics, and
//! the order of what goes out.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Event, Peer, echo, raw_client, read_to_end, start, watchdog};
use hubbub::CloseCode;
use tokio::io::AsyncWriteExt;

use common::quick as cfg;

#[tokio::test]
async fn on_open_runs_before_any_message_and_messages_stay_in_order() {
    watchdog(async {
        let server = start(cfg(), |socket| {
            let opened = Arc::new(AtomicBool::new(false));
            let flag = opened.clone();
            socket.on_open(move |conn| {
                flag.store(true, Ordering::SeqCst);
                let _ = conn.send("welcome");
            });
            socket.on_message(move |conn, text| {
                assert!(opened.load(Ordering::SeqCst), "message before open");
                let _ = conn.send(text);
            });
        })
        .await;
        // Send right away: the first frame may arrive with the request.
        let mut ws = Peer::connect(&server.url("/")).await;
        for i in 0..1000 {
            ws.send(i.to_string()).unwrap();
        }
        assert_eq!(ws.text().await, "welcome");
        for i in 0..1000 {
            assert_eq!(ws.text().await, i.to_string());
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn on_close_once_after_clean_close_with_code_and_reason() {
    watchdog(async {
        let server = start(cfg(), echo).await;
        let mut ws = Peer::connect(&server.url("/")).await;
        ws.close_with(4001, "bye").unwrap();
        // The server echoes the code back.
        assert_eq!(ws.closed().await, (4001, "bye".into()));
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode(4001));
        assert_eq!(closes[0].reason, "bye");
        assert!(closes[0].clean);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(server.closes.lock().unwrap().len(), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn on_close_fires_on_tcp_reset() {
    watchdog(async {
        let server = start(cfg(), echo).await;
        let (stream, _) = raw_client(server.addr).await;
        #[allow(deprecated, reason = "an abortive close is what this test needs")]
        stream.set_linger(Some(Duration::ZERO)).unwrap();
        drop(stream); // RST
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::ABNORMAL);
        assert!(!closes[0].clean);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn protocol_error_closes_with_1002_and_fires_on_close() {
    watchdog(async {
        let errors = Arc::new(AtomicUsize::new(0));
        let counted = errors.clone();
        let server = start(cfg(), move |socket| {
            let counted = counted.clone();
            socket.on_error(move |_, e| {
                assert!(e.is_protocol());
                counted.fetch_add(1, Ordering::SeqCst);
            });
        })
        .await;
        let (mut stream, _) = raw_client(server.addr).await;
        stream.write_all(b"\x81\x02hi").await.unwrap(); // unmasked
        let reply = read_to_end(&mut stream).await;
        assert_eq!(&reply[..4], b"\x88\x1c\x03\xea"); // close 1002
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::PROTOCOL_ERROR);
        assert_eq!(errors.load(Ordering::SeqCst), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn message_over_limit_closes_with_1009() {
    watchdog(async {
        let config = cfg()
            .with_protocol_config(hubbub::ProtocolConfig::default().with_max_message_size(1000));
        let server = start(config, echo).await;
        let mut ws = Peer::connect(&server.url("/")).await;
        ws.send_binary(vec![0u8; 2000]).unwrap();
        assert_eq!(
            ws.next().await,
            Event::Close(
                1009,
                "message of 1001 bytes exceeds the limit of 1000".into()
            )
        );
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::MESSAGE_TOO_BIG);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn panicking_handler_closes_only_its_connection_with_1011() {
    watchdog(async {
        let server = start(cfg(), |socket| {
            socket.on_message(|conn, text| {
                if text == "boom" {
                    panic!("handler exploded");
                }
                let _ = conn.send(text);
            });
        })
        .await;
        let mut bad = Peer::connect(&server.url("/")).await;
        let mut good = Peer::connect(&server.url("/")).await;
        bad.send("boom").unwrap();
        assert_eq!(bad.closed().await.0, 1011);
        good.send("still here").unwrap();
        assert_eq!(good.text().await, "still here");
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode::INTERNAL_ERROR);
        server.stop().await;
    })
    .await;
}

/// Events that arrive in one read: what the handlers send goes out in the
/// order of the events, around the protocol's own answers (a pong) and
/// ahead of the close that a panic causes.
#[tokio::test]
async fn sends_pongs_and_a_panic_close_keep_the_order_of_one_read() {
    watchdog(async {
        let server = start(cfg(), |socket| {
            socket.on_message(|conn, text| {
                let _ = conn.send(format!("echo {text}"));
                if text == "boom" {
                    panic!("handler exploded after a send");
                }
            });
        })
        .await;
        let mut ws = Peer::connect(&server.url("/")).await;
        // Queued without a yield: the client writes them together, and the
        // server reads them together.
        ws.send("a").unwrap();
        ws.ping("p").unwrap();
        ws.send("b").unwrap();
        ws.send("boom").unwrap();
        ws.send("never").unwrap();
        let mut got = Vec::new();
        loop {
            match ws.next().await {
                Event::Text(text) => got.push(text),
                Event::Pong(data) => got.push(format!("pong {}", String::from_utf8_lossy(&data))),
                Event::Close(code, _) => {
                    got.push(format!("close {code}"));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            got,
            ["echo a", "pong p", "echo b", "echo boom", "close 1011"]
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn send_after_close_is_an_error_not_a_panic() {
    watchdog(async {
        // What the handler saw, checked outside it: a panic inside a
        // handler is caught (and the close already asked for would still
        // go out), so an assert there could not fail the test.
        let results = Arc::new(Mutex::new(Vec::new()));
        let record = results.clone();
        let server = start(cfg(), move |socket| {
            let record = record.clone();
            socket.on_message(move |conn, _| {
                let mut results = record.lock().unwrap();
                results.push(conn.close_with(4000, "done").is_ok());
                results.push(conn.send("late").is_err_and(|e| e.is_closed()));
                results.push(conn.close().is_err_and(|e| e.is_closed()));
                results.push(
                    conn.close_with(1005, "")
                        .is_err_and(|e| e.is_invalid_argument()),
                );
            });
        })
        .await;
        let mut ws = Peer::connect(&server.url("/")).await;
        ws.send("x").unwrap();
        assert_eq!(ws.next().await, Event::Close(4000, "done".into()));
        let closes = server.wait_closes(1).await;
        assert_eq!(closes[0].code, CloseCode(4000));
        assert_eq!(*results.lock().unwrap(), [true; 4]);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn async_handler_never_blocks_other_connections() {
    watchdog(async {
        let gate = Arc::new(tokio::sync::Notify::new());
        let gate2 = gate.clone();
        let server = start(cfg(), move |socket| {
            let gate = gate2.clone();
            socket.on_message_async(move |conn, text| {
                let gate = gate.clone();
                async move {
                    if text == "wait" {
                        gate.notified().await;
                        let _ = conn.send("released");
                    } else {
                        gate.notify_one();
                        let _ = conn.send(text);
                    }
                }
            });
        })
        .await;
        let mut a = Peer::connect(&server.url("/")).await;
        let mut b = Peer::connect(&server.url("/")).await;
        a.send("wait").unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // If A's pending handler blocked B, B would never be answered and
        // A never released.
        b.send("go").unwrap();
        assert_eq!(b.text().await, "go");
        assert_eq!(a.text().await, "released");
        server.stop().await;
    })
    .await;
}

/// A handler's send is written at once even when the next event's async
/// handler is still running: a send made while events are delivered does
/// not wake the connection (the driver drains it itself), so the driver must
/// not go to sleep on an async handler with such sends queued.
#[tokio::test]
async fn a_send_before_a_slow_async_handler_is_not_held_back_by_it() {
    watchdog(async {
        let server = start(cfg(), |socket| {
            socket.on_message(|conn, text| {
                let _ = conn.send(format!("got {text}"));
            });
            // Sends nothing itself: nothing else wakes the connection
            // until it is done.
            socket.on_binary_async(|_, _| async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            });
        })
        .await;
        let mut ws = Peer::connect(&server.url("/")).await;
        // One write: the second text waits behind the first slow handler,
        // then is delivered together with the second binary.
        ws.send("a").unwrap();
        ws.send_binary(vec![1]).unwrap();
        ws.send("b").unwrap();
        ws.send_binary(vec![2]).unwrap();
        let began = std::time::Instant::now();
        let mut got = Vec::new();
        while got.len() < 2 {
            got.push((ws.text().await, began.elapsed()));
        }
        assert_eq!(got[0].0, "got a");
        assert_eq!(got[1].0, "got b");
        // Right after the first slow handler, not after the second.
        assert!(
            got[1].1 < Duration::from_millis(2500),
            "\"got b\" took {:?}",
            got[1].1
        );
    })
    .await;
}
