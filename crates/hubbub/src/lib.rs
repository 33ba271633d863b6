//! # hubbub: a WebSocket server with Fleck's simple API
//!
//! Bind a server to `ws://host:port`, give [`Server::start`] a setup closure
//! that attaches handlers to each connection, and send from any handler,
//! task or thread through the cheap [`Connection`] handle.
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use hubbub::{Connection, Server};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), hubbub::Error> {
//!     let all: Arc<Mutex<Vec<Connection>>> = Arc::default();
//!     let server = Server::bind("ws://0.0.0.0:8181").await?;
//!     server
//!         .start(move |socket| {
//!             let (on_open, on_close, on_message) = (all.clone(), all.clone(), all.clone());
//!             socket.on_open(move |conn| on_open.lock().unwrap().push(conn.clone()));
//!             socket.on_close(move |conn, _| on_close.lock().unwrap().retain(|c| c != conn));
//!             socket.on_message(move |conn, message| {
//!                 for client in on_message.lock().unwrap().iter() {
//!                     let _ = client.send(format!("{} says: {message}", conn.id()));
//!                 }
//!             });
//!         })
//!         .await
//! }
//! ```
//!
//! ## How it works
//!
//! ```text
//! socket ─read─▶ worker thread's buffer ─▶ hubbub-proto ─events─▶ handlers (one at a time, in order)
//! handlers / other tasks ─send─▶ bounded per-connection queue ─one vectored write per wake-up─▶ socket
//! ```
//!
//! The protocol itself (handshake parsing, frames, UTF-8, close handshake)
//! is `hubbub-proto`'s; this crate owns sockets, time, handlers and limits.
//! Guarantees: `on_open` runs before any message handler; `on_close` runs
//! exactly once for every connection that opened, whatever ended it; a
//! panicking handler closes only its own connection (1011); every queue is
//! bounded in bytes ([`Backpressure`]).

#![deny(unsafe_code)]

mod accept;
#[cfg(feature = "axum")]
pub mod axum;
pub mod client;
mod config;
mod driver;
#[cfg(test)]
mod driver_tests;
mod error;
#[cfg(any(test, feature = "__fuzz"))]
#[doc(hidden)]
pub mod fuzz;
mod handle;
mod handshake;
mod hook;
#[cfg(feature = "http2")]
pub mod http2;
mod hub;
#[cfg(feature = "hyper")]
pub mod hyper;
mod info;
mod keepalive;
mod limits;
mod message;
mod metrics;
mod outbox;
mod serve;
mod server;
mod set;
mod socket;
mod stream;
mod sys;
mod task;
mod tls;
mod url;

pub use config::{Backpressure, ProtocolOrder, ServerConfig};
pub use error::Error;
pub use handle::{Connection, ServerHandle};
pub use hook::{Accept, Decision, HandshakeRequest, HostPolicy, OriginPolicy};
pub use hub::{Broker, Node};
pub use hubbub_proto::handshake::{Headers, HttpResponse, Request};
pub use hubbub_proto::{
    CloseCode, Config as ProtocolConfig, DeflateConfig, DeflateParams, Utf8Bytes,
};
pub use info::{CloseInfo, ConnectionInfo, HttpVersion, StreamInfo};
pub use limits::RateLimit;
pub use message::Message;
pub use serve::{Hub, HubBuilder, Upgraded};
pub use server::Server;
pub use socket::Socket;
pub use stream::WebSocket;
pub use tls::TlsConfig;

/// Re-exported so that handlers can name payload types without a direct
/// dependency.
pub use bytes::Bytes;
/// Connection ids.
pub use uuid::Uuid;

/// The README's examples, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

/// The guide for people coming from Fleck, tokio-tungstenite and axum
/// (`docs/guide.md`), compiled as doc tests too.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/guide.md")]
struct GuideDoctests;
