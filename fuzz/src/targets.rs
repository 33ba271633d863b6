//! Fuzz entry points over hubbub-proto's public API.
//!
//! The cargo-fuzz targets in `fuzz_targets/` call these, and the stable test
//! `crates/hubbub-proto/tests/fuzz_seeds.rs` replays the committed seeds in
//! `corpus/` through the same functions, so CI keeps them compiling and
//! passing without nightly.

use bytes::BytesMut;
use hubbub_proto::handshake::{ClientRequest, RequestParser};
use hubbub_proto::{Config, Connection, Event, Role};

/// Small limits, so that inputs reach them.
fn config() -> Config {
    Config::default()
        .with_max_frame_size(4096)
        .with_max_message_size(8192)
        .with_max_handshake_size(2048)
        .with_max_headers(16)
}

/// Splits `data` into pieces whose sizes come from the first byte.
fn pieces(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((&step, rest)) => (usize::from(step).max(1), rest),
        None => (1, data),
    }
}

/// Feeds `data` to the server's request parser in pieces and exercises
/// everything a parsed request exposes, and the client's response check.
pub fn handshake(data: &[u8]) {
    let config = config();
    let (step, data) = pieces(data);
    let mut parser = RequestParser::new(&config);
    let mut buf = BytesMut::new();
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        match parser.parse(&mut buf) {
            Ok(None) => assert!(buf.len() < config.max_handshake_size),
            Ok(Some(request)) => {
                let _ = (request.cookies(), request.protocols(), request.extensions());
                let _ = (
                    request.path(),
                    request.query(),
                    request.host(),
                    request.origin(),
                );
                let mut out = BytesMut::new();
                if let Err(e) = request.validate_upgrade() {
                    e.response().write(&mut out);
                    assert!(out.starts_with(b"HTTP/1.1 "));
                }
                break;
            }
            Err(e) => {
                assert!([400, 405, 426, 431].contains(&e.status()));
                break;
            }
        }
    }
    let mut client = ClientRequest::new("h", "/");
    let _ = client.parse_response(&mut BytesMut::from(data), &config);
}

/// Feeds `data` to a connection of `role` in pieces, checking invariants.
pub fn connection(role: Role, data: &[u8]) {
    let config = config();
    let (step, data) = pieces(data);
    let mut conn = Connection::new(role, config.clone());
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    for chunk in data.chunks(step) {
        input.extend_from_slice(chunk);
        loop {
            match conn.read(&mut input, &mut out) {
                Ok(Some(event)) => {
                    if let Event::Text(text) = &event {
                        assert!(std::str::from_utf8(text.as_bytes()).is_ok());
                    }
                    if let Event::Text(_) | Event::Binary(_) = event {
                        let _ = conn.send_binary(b"reply", &mut out);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(conn.is_closed());
                    break;
                }
            }
            assert!(conn.buffered_message_len() <= config.max_message_size);
        }
        // Input left over is at most one frame that is still arriving (a
        // whole message is left in place until it is complete).
        assert!(input.len() <= 14 + config.max_frame_size.max(125) || conn.is_closed());
    }
}

/// The server role.
pub fn server(data: &[u8]) {
    connection(Role::Server, data);
}

/// The client role.
pub fn client(data: &[u8]) {
    connection(Role::Client, data);
}
