//! The connection state machine: received bytes in, events out; messages in,
//! frame bytes out.

mod receive;
mod send;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::close::CloseFrame;
use crate::config::Config;
use crate::deflate::{Compressor, Decompressor, DeflateParams};
use crate::frame::OpCode;
use crate::utf8::{Utf8Bytes, Utf8Validator};

/// Which end of the connection this state machine plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts connections: expects masked frames, sends unmasked ones.
    Server,
    /// Opens connections: expects unmasked frames, masks every frame it sends
    /// with a fresh random key.
    Client,
}

/// The kind of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}

impl MessageKind {
    /// The opcode of a message's first frame.
    pub fn opcode(self) -> OpCode {
        match self {
            Self::Text => OpCode::Text,
            Self::Binary => OpCode::Binary,
        }
    }
}

/// Something the peer sent, surfaced by [`Connection::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole text message, validated as UTF-8.
    Text(Utf8Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// A ping. With [`Config::auto_pong`] the pong is already written.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close frame: its code and reason, or `None` when it carried
    /// no code. If this side had not sent a close yet, the echo (same code)
    /// is already written; the close handshake is then complete.
    Close(Option<CloseFrame>),
}

/// The frame whose payload is still arriving.
#[derive(Debug)]
struct FrameInProgress {
    remaining: u64,
    mask: Option<[u8; 4]>,
    /// Bytes of this frame's payload already unmasked.
    offset: usize,
    fin: bool,
}

/// A data message being assembled from frames or from partial reads.
#[derive(Debug)]
struct MessageInProgress {
    kind: MessageKind,
    /// Whether the message is compressed (RSV1 on its first frame); `buf`
    /// then holds the inflated bytes.
    compressed: bool,
    buf: Vec<u8>,
    utf8: Utf8Validator,
    frame: Option<FrameInProgress>,
}

/// A single-frame, uncompressed message arriving into the caller's buffer:
/// its bytes stay there, unmasked and checked as they arrive, and are taken
/// without a copy once whole.
#[derive(Debug)]
struct InPlace {
    kind: MessageKind,
    header_len: usize,
    len: usize,
    /// Payload bytes already unmasked (and, for text, validated).
    done: usize,
    mask: Option<[u8; 4]>,
    utf8: Utf8Validator,
}

/// One WebSocket connection's protocol state, for either [`Role`].
///
/// Feed it received bytes with [`Connection::read`] until it returns
/// `Ok(None)`, send with the `send_*` methods, and write out whatever they
/// append to your output buffer. It never does I/O and never reads a clock:
/// timeouts and keepalive are the driver's.
///
/// ```
/// use bytes::BytesMut;
/// use hubbub_proto::{Config, Connection, Event, Role};
///
/// let mut client = Connection::new(Role::Client, Config::default());
/// let mut server = Connection::new(Role::Server, Config::default());
/// let mut wire = BytesMut::new();
/// client.send_text("hello", &mut wire).unwrap();
///
/// let mut replies = BytesMut::new();
/// match server.read(&mut wire, &mut replies) {
///     Ok(Some(Event::Text(text))) => assert_eq!(text, "hello"),
///     other => panic!("unexpected {other:?}"),
/// }
/// assert!(server.read(&mut wire, &mut replies).unwrap().is_none());
/// ```
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// Shared: every connection of a server has the same (an `Arc`, 8
    /// bytes, where the settings themselves take 56).
    config: Arc<Config>,
    /// Boxed, like `in_place`: only a message that spans reads or frames
    /// needs one, and every idle connection would carry the slots (96 of
    /// this struct's bytes).
    message: Option<Box<MessageInProgress>>,
    in_place: Option<Box<InPlace>>,
    close_sent: bool,
    close_received: bool,
    failed: bool,
    /// The first close of the connection, sent or received (boxed: set
    /// once, late).
    first_close: Option<Box<CloseFrame>>,
    /// The kind of the fragmented message being sent, if any.
    sending: Option<MessageKind>,
    /// Mask keys for the client role.
    rng: Option<Box<StdRng>>,
    /// permessage-deflate, when negotiated.
    deflate: Option<Box<Deflate>>,
}

/// The compression state of a connection that negotiated permessage-deflate.
/// Compressor and decompressor are made on first use.
#[derive(Debug)]
struct Deflate {
    params: DeflateParams,
    compressor: Option<Compressor>,
    decompressor: Option<Decompressor>,
}

impl Connection {
    /// A connection in the open state, after a successful opening handshake.
    pub fn new(role: Role, config: Config) -> Self {
        Self::with_shared_config(role, Arc::new(config))
    }

    /// As [`Connection::new`], with settings that many connections share
    /// (a server's: each connection then keeps a pointer to them).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use hubbub_proto::{Config, Connection, Role};
    ///
    /// let config = Arc::new(Config::default());
    /// let a = Connection::with_shared_config(Role::Server, config.clone());
    /// let b = Connection::with_shared_config(Role::Server, config);
    /// assert_eq!(a.config().max_frame_size, b.config().max_frame_size);
    /// ```
    pub fn with_shared_config(role: Role, config: Arc<Config>) -> Self {
        let rng = match role {
            Role::Client => Some(Box::new(StdRng::from_os_rng())),
            Role::Server => None,
        };
        Self {
            role,
            config,
            message: None,
            in_place: None,
            close_sent: false,
            close_received: false,
            failed: false,
            first_close: None,
            sending: None,
            rng,
            deflate: None,
        }
    }

    /// Turns on permessage-deflate with the negotiated `params` (from
    /// [`crate::deflate::negotiate`] on a server, or
    /// [`crate::deflate::client_params`] on a client). Call it before the
    /// first frame is read or sent.
    pub fn set_deflate(&mut self, params: DeflateParams) {
        self.deflate = Some(Box::new(Deflate {
            params,
            compressor: None,
            decompressor: None,
        }));
    }

    /// The permessage-deflate parameters in force, if negotiated.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref().map(|d| &d.params)
    }

    /// This connection's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether messages may still be sent and received: no close frame was
    /// sent or received and no protocol error happened.
    pub fn is_open(&self) -> bool {
        !self.close_sent && !self.close_received && !self.failed
    }

    /// Whether this side has sent (or written) its close frame.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether the peer's close frame has been received.
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// Whether the connection is finished and, once the output buffer is
    /// flushed, the transport may be closed: either both close frames have
    /// been exchanged, or the connection failed with a protocol error.
    ///
    /// A server closes the TCP connection at this point (RFC 6455 §7.1.1); a
    /// client should give the server a moment to close it first.
    pub fn is_closed(&self) -> bool {
        self.failed || (self.close_sent && self.close_received)
    }

    /// The connection's first close: the close frame this side sent first
    /// (after a protocol error, the one carrying the error's code), or the
    /// peer's if it closed first (code 1005 when its frame had none).
    /// `None` while neither side has closed. It is what the connection
    /// ended with.
    pub fn first_close(&self) -> Option<&CloseFrame> {
        self.first_close.as_deref()
    }

    /// Bytes held for a message still being received (memory accounting).
    pub fn buffered_message_len(&self) -> usize {
        self.message.as_ref().map_or(0, |m| m.buf.len())
    }

    /// When a whole single-frame message is arriving in place at the front
    /// of the input ([`Connection::read`] keeps it there until it is
    /// whole), the input length at which it will be: its header and its
    /// announced payload, already checked against
    /// [`Config::max_message_size`]. A reader that trusts its peer (a
    /// client of the server it chose) can reserve that much at once instead
    /// of growing the buffer as bytes arrive; a server should not, or a
    /// peer could make it hold memory by announcing sizes it never sends.
    pub fn message_end(&self) -> Option<usize> {
        self.in_place.as_ref().map(|p| p.header_len + p.len)
    }
}
