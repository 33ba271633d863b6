//! An in-memory client/server pair: random messages under random splits of
//! the byte stream yield the same events as the unsplit stream.

use bytes::{Bytes, BytesMut};
use hubbub_proto::{CloseCode, CloseFrame, Config, Connection, Event, MessageKind, Role};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    /// A message sent as fragments, with a ping between the first two.
    Fragmented(MessageKind, Vec<Vec<u8>>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        ".{0,40}".prop_map(Op::Text),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Op::Binary),
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Op::Ping),
        (".{0,60}", proptest::collection::vec(0usize..60, 1..5)).prop_map(|(text, cuts)| {
            // Split the text's bytes anywhere, even inside a code point.
            let bytes = text.into_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for cut in cuts {
                pieces.push(bytes[last..cut].to_vec());
                last = cut;
            }
            pieces.push(bytes[last..].to_vec());
            Op::Fragmented(MessageKind::Text, pieces)
        }),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..5)
            .prop_map(|pieces| Op::Fragmented(MessageKind::Binary, pieces)),
    ]
}

/// Encodes `ops` from `sender`, returning the wire bytes and the events the
/// receiver must see.
fn encode(sender: &mut Connection, ops: &[Op]) -> (BytesMut, Vec<Event>) {
    let mut wire = BytesMut::new();
    let mut expected = Vec::new();
    for op in ops {
        match op {
            Op::Text(text) => {
                sender.send_text(text, &mut wire).unwrap();
                expected.push(Event::Text(text.as_str().into()));
            }
            Op::Binary(data) => {
                sender.send_binary(data, &mut wire).unwrap();
                expected.push(Event::Binary(Bytes::copy_from_slice(data)));
            }
            Op::Ping(data) => {
                sender.ping(data, &mut wire).unwrap();
                expected.push(Event::Ping(Bytes::copy_from_slice(data)));
            }
            Op::Fragmented(kind, pieces) => {
                let last = pieces.len() - 1;
                for (i, piece) in pieces.iter().enumerate() {
                    sender
                        .send_fragment(*kind, piece, i == last, &mut wire)
                        .unwrap();
                    if i == 0 && last > 0 {
                        sender.ping(b"mid", &mut wire).unwrap();
                        expected.push(Event::Ping(Bytes::from_static(b"mid")));
                    }
                }
                let whole: Vec<u8> = pieces.concat();
                expected.push(match kind {
                    MessageKind::Text => Event::Text(String::from_utf8(whole).unwrap().into()),
                    MessageKind::Binary => Event::Binary(whole.into()),
                });
            }
        }
    }
    sender
        .close(Some(CloseCode(4000)), "done", &mut wire)
        .unwrap();
    expected.push(Event::Close(Some(CloseFrame {
        code: CloseCode(4000),
        reason: "done".into(),
    })));
    (wire, expected)
}

/// Feeds `wire` to `receiver` in pieces cut at `cuts`.
fn decode(receiver: &mut Connection, wire: &[u8], cuts: &[usize]) -> Vec<Event> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(wire.len());
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    let mut events = Vec::new();
    let mut last = 0;
    for cut in cuts {
        input.extend_from_slice(&wire[last..cut]);
        last = cut;
        while let Some(event) = receiver.read(&mut input, &mut out).expect("valid stream") {
            events.push(event);
        }
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn client_to_server_any_split_yields_same_events(
        ops in proptest::collection::vec(op(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut client = Connection::new(Role::Client, Config::default());
        let (wire, expected) = encode(&mut client, &ops);
        let mut whole = Connection::new(Role::Server, Config::default());
        prop_assert_eq!(&decode(&mut whole, &wire, &[]), &expected);
        let mut split = Connection::new(Role::Server, Config::default());
        prop_assert_eq!(&decode(&mut split, &wire, &cuts), &expected);
        prop_assert!(split.is_closed());
    }

    #[test]
    fn server_to_client_any_split_yields_same_events(
        ops in proptest::collection::vec(op(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut server = Connection::new(Role::Server, Config::default());
        let (wire, expected) = encode(&mut server, &ops);
        let mut client = Connection::new(Role::Client, Config::default());
        prop_assert_eq!(&decode(&mut client, &wire, &cuts), &expected);
    }

    #[test]
    fn compressed_both_ways_any_split_yields_same_events(
        ops in proptest::collection::vec(op(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        takeover in any::<bool>(),
    ) {
        let params = hubbub_proto::DeflateParams {
            local_no_context_takeover: !takeover,
            remote_no_context_takeover: !takeover,
            local_max_window_bits: 15,
            threshold: 0,
            level: 1,
        };
        let mut client = Connection::new(Role::Client, Config::default());
        client.set_deflate(params);
        let (wire, expected) = encode(&mut client, &ops);
        let mut server = Connection::new(Role::Server, Config::default());
        server.set_deflate(params);
        prop_assert_eq!(&decode(&mut server, &wire, &cuts), &expected);
        let mut server = Connection::new(Role::Server, Config::default());
        server.set_deflate(params);
        let (wire, expected) = encode(&mut server, &ops);
        let mut client = Connection::new(Role::Client, Config::default());
        client.set_deflate(params);
        prop_assert_eq!(&decode(&mut client, &wire, &cuts), &expected);
    }

    #[test]
    fn byte_at_a_time_matches_whole(ops in proptest::collection::vec(op(), 0..6)) {
        let mut client = Connection::new(Role::Client, Config::default());
        let (wire, expected) = encode(&mut client, &ops);
        let cuts: Vec<usize> = (0..wire.len()).collect();
        let mut server = Connection::new(Role::Server, Config::default());
        prop_assert_eq!(decode(&mut server, &wire, &cuts), expected);
    }
}
