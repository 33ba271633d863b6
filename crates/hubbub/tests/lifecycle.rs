//! Connection lifecycle guarantees over loopback: handler order, `on_close`
//! exactly once whatever ends a connection, protocol errors, panics, and
//! the order of what goes out.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{echo, raw_client, read_to_end, start, watchdog};
use futures_util::{SinkExt, StreamExt};
use hubbub::CloseCode;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TCode;

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
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        for i in 0..1000 {
            ws.feed(Message::text(i.to_string())).await.unwrap();
        }
        ws.flush().await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("welcome"));
        for i in 0..1000 {
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text(i.to_string())
            );
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn on_close_once_after_clean_close_with_code_and_reason() {
    watchdog(async {
        let server = start(cfg(), echo).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        ws.close(Some(CloseFrame {
            code: TCode::from(4001),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
        while ws.next().await.is_some() {}
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
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        ws.send(Message::binary(vec![0u8; 2000])).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
            other => panic!("expected close, got {other:?}"),
        }
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
        let (mut bad, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        let (mut good, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        bad.send(Message::text("boom")).await.unwrap();
        match bad.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1011),
            other => panic!("expected close, got {other:?}"),
        }
        good.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            good.next().await.unwrap().unwrap(),
            Message::text("still here")
        );
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
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        // One flush: the server reads these together.
        ws.feed(Message::text("a")).await.unwrap();
        ws.feed(Message::Ping("p".into())).await.unwrap();
        ws.feed(Message::text("b")).await.unwrap();
        ws.feed(Message::text("boom")).await.unwrap();
        ws.feed(Message::text("never")).await.unwrap();
        ws.flush().await.unwrap();
        let mut got = Vec::new();
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(text) => got.push(text.to_string()),
                Message::Pong(data) => got.push(format!("pong {}", String::from_utf8_lossy(&data))),
                Message::Close(Some(frame)) => {
                    got.push(format!("close {}", u16::from(frame.code)));
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
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        ws.send(Message::text("x")).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4000);
                assert_eq!(frame.reason.as_str(), "done");
            }
            other => panic!("expected close, got {other:?}"),
        }
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
        let (mut a, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        let (mut b, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        a.send(Message::text("wait")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // If A's pending handler blocked B, B would never be answered and
        // A never released.
        b.send(Message::text("go")).await.unwrap();
        assert_eq!(b.next().await.unwrap().unwrap(), Message::text("go"));
        assert_eq!(a.next().await.unwrap().unwrap(), Message::text("released"));
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
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url("/"))
            .await
            .unwrap();
        // One write: the second text waits behind the first slow handler,
        // then is delivered together with the second binary.
        for message in [
            Message::text("a"),
            Message::binary(vec![1]),
            Message::text("b"),
            Message::binary(vec![2]),
        ] {
            ws.feed(message).await.unwrap();
        }
        ws.flush().await.unwrap();
        let began = std::time::Instant::now();
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                got.push((t.to_string(), began.elapsed()));
            }
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
