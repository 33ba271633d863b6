//! # hubbub-proto: the WebSocket protocol (RFC 6455) without I/O
//!
//! This crate does **no I/O and reads no clock**. It turns received bytes
//! into events and messages into bytes; the caller (the `hubbub` server, a
//! test, a fuzzer) owns the sockets, the buffers and the timers.
//!
//! ```text
//!  socket bytes ──▶ RequestParser ──▶ Request ──validate_upgrade──▶ AcceptResponse bytes ──▶ socket
//!  socket bytes ──▶ Connection::read ──▶ Event (Text, Binary, Ping, Pong, Close)
//!                        └──▶ replies (pong, close echo, error close) ──▶ out buffer ──▶ socket
//!  send_text / send_binary / ping / close ──▶ out buffer ──▶ socket
//! ```
//!
//! Incomplete input is never an error: parsers return `Ok(None)` and keep
//! what they need. Peer violations are [`ProtocolError`]s, each with the close
//! code already sent; caller mistakes are [`SendError`]s.
//!
//! ```
//! use bytes::BytesMut;
//! use hubbub_proto::{CloseCode, Config, Connection, Event, Role};
//!
//! let mut server = Connection::new(Role::Server, Config::default());
//! // A masked text frame "Hello" (RFC 6455 §5.7), then a close 1000, as they
//! // might arrive in one read.
//! let mut input = BytesMut::from(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58][..]);
//! input.extend_from_slice(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
//! let mut out = BytesMut::new();
//!
//! let Ok(Some(Event::Text(text))) = server.read(&mut input, &mut out) else { panic!() };
//! assert_eq!(text, "Hello");
//! let Ok(Some(Event::Close(Some(frame)))) = server.read(&mut input, &mut out) else { panic!() };
//! assert_eq!(frame.code, CloseCode::NORMAL);
//! assert_eq!(&out[..], &[0x88, 0x02, 0x03, 0xe8]); // the echo
//! assert!(server.is_closed());
//! ```

mod close;
mod config;
mod connection;
pub mod deflate;
pub mod encode;
mod error;
mod frame;
pub mod handshake;
mod mask;
mod utf8;

pub use close::{CloseCode, CloseFrame, MAX_CLOSE_REASON};
pub use config::Config;
pub use connection::{Connection, Event, MessageKind, Role};
pub use deflate::{DeflateConfig, DeflateParams};
pub use error::{ProtocolError, SendError};
pub use frame::{EncodedHeader, FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
pub use mask::apply_mask;
pub use utf8::Utf8Bytes;
