//! The library's one public error type.

use std::fmt;
use std::io;

use hubbub_proto::{CloseCode, ProtocolError};

/// An error from hubbub: opaque, with `is_*` predicates for what callers
/// branch on, and a message that says what happened.
pub struct Error {
    kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    /// The connection is closing or closed.
    Closed,
    /// The send queue is full; `closing` when the policy closes the
    /// connection for it.
    QueueFull {
        buffered: usize,
        max: usize,
        closing: bool,
    },
    /// The server's budget for queued bytes is spent.
    OverBudget { used: usize, max: usize },
    /// A control payload over 125 bytes, or a close reason over 123.
    PayloadTooLong,
    /// A close code that may not be sent.
    InvalidCloseCode(CloseCode),
    /// A bad server URL or address.
    InvalidUrl(String),
    /// An API used in a way it cannot work.
    InvalidArgument(String),
    /// A socket error.
    Io(io::Error),
    /// The peer broke the protocol.
    Protocol(ProtocolError),
    /// A handler panicked.
    HandlerPanic(String),
    /// A TLS certificate or key problem.
    Tls(String),
    /// The connection ended abnormally (the `Stream` view's last item).
    Ended(crate::info::CloseInfo),
    /// A client could not reach the server: resolution, refusal, timeout.
    Connect(String),
    /// A reconnecting client is between connections.
    Disconnected,
    /// A server refused a client's upgrade, or answered it wrongly.
    Handshake {
        status: Option<u16>,
        message: String,
    },
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Self { kind }
    }

    /// The connection is closing or closed: nothing more can be sent.
    pub fn is_closed(&self) -> bool {
        matches!(self.kind, Kind::Closed | Kind::Ended(_))
    }

    /// How the connection ended, when this error says it ended abnormally
    /// (the last item of a `WebSocket` stream).
    pub fn close_info(&self) -> Option<&crate::CloseInfo> {
        match &self.kind {
            Kind::Ended(info) => Some(info),
            _ => None,
        }
    }

    /// The connection's send queue is full (see
    /// [`crate::ServerConfig::max_queue_bytes`]).
    pub fn is_queue_full(&self) -> bool {
        matches!(self.kind, Kind::QueueFull { .. })
    }

    /// The server-wide budget for queued outbound bytes
    /// ([`crate::ServerConfig::max_total_queue_bytes`]) is spent: the send
    /// was refused, the connection stays open. The server makes room by
    /// closing the connections holding the most bytes (1013).
    pub fn is_over_budget(&self) -> bool {
        matches!(self.kind, Kind::OverBudget { .. })
    }

    /// The caller passed an invalid argument: a control payload over 125
    /// bytes, a close reason over 123 bytes, a close code that may not be
    /// sent, or a bad URL.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(
            self.kind,
            Kind::PayloadTooLong
                | Kind::InvalidCloseCode(_)
                | Kind::InvalidUrl(_)
                | Kind::InvalidArgument(_)
        )
    }

    /// A socket or bind error.
    pub fn is_io(&self) -> bool {
        matches!(self.kind, Kind::Io(_))
    }

    /// The socket or bind error, to look at its kind (such as
    /// `AddrInUse`).
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.kind {
            Kind::Io(e) => Some(e),
            _ => None,
        }
    }

    /// The peer broke the protocol or a limit.
    pub fn is_protocol(&self) -> bool {
        matches!(self.kind, Kind::Protocol(_))
    }

    /// A client could not reach the server (name resolution, connection
    /// refused, timeout).
    pub fn is_connect(&self) -> bool {
        matches!(self.kind, Kind::Connect(_))
    }

    /// A reconnecting client (`client::Persistent`) is between
    /// connections: the message was not sent.
    pub fn is_disconnected(&self) -> bool {
        matches!(self.kind, Kind::Disconnected)
    }

    /// A server refused a client's upgrade (see [`Error::status`]) or
    /// answered it wrongly (a bad `Sec-WebSocket-Accept`, an extension or
    /// subprotocol the client did not offer).
    pub fn is_handshake(&self) -> bool {
        matches!(self.kind, Kind::Handshake { .. })
    }

    /// The HTTP status a server refused a client's upgrade with.
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            Kind::Handshake { status, .. } => *status,
            _ => None,
        }
    }

    /// A TLS certificate or key could not be used.
    pub fn is_tls(&self) -> bool {
        matches!(self.kind, Kind::Tls(_))
    }

    /// A handler panicked.
    pub fn is_handler_panic(&self) -> bool {
        matches!(self.kind, Kind::HandlerPanic(_))
    }

    /// The close code this error led to, when it ends a connection: a
    /// protocol error's, 1011 after a handler panic, 1008 for a full queue
    /// under [`crate::Backpressure::Close`] (none under
    /// [`crate::Backpressure::Refuse`], where nothing closes).
    pub fn close_code(&self) -> Option<CloseCode> {
        match &self.kind {
            Kind::Protocol(e) => Some(e.close_code()),
            Kind::HandlerPanic(_) => Some(CloseCode::INTERNAL_ERROR),
            Kind::QueueFull { closing: true, .. } => Some(CloseCode::POLICY_VIOLATION),
            Kind::Ended(info) => Some(info.code),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Closed => f.write_str("connection is closing or closed"),
            Kind::QueueFull { buffered, max, .. } => {
                write!(
                    f,
                    "send queue full ({buffered} bytes buffered, limit {max})"
                )
            }
            Kind::OverBudget { used, max } => write!(
                f,
                "the server's send budget is spent ({used} bytes queued on all connections, limit {max})"
            ),
            Kind::PayloadTooLong => {
                f.write_str("control payload over 125 bytes or close reason over 123 bytes")
            }
            Kind::InvalidCloseCode(code) => write!(f, "close code {code} may not be sent"),
            Kind::InvalidUrl(why) => write!(f, "invalid server URL: {why}"),
            Kind::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            // The error says what it is ("Address already in use"): a
            // prefix would only repeat "I/O error" in callers' messages.
            Kind::Io(e) => write!(f, "{e}"),
            Kind::Protocol(e) => write!(f, "protocol error: {e}"),
            Kind::HandlerPanic(what) => write!(f, "handler panicked: {what}"),
            Kind::Tls(what) => write!(f, "TLS: {what}"),
            Kind::Connect(why) => f.write_str(why),
            Kind::Disconnected => {
                f.write_str("not connected (reconnecting): the message was not sent")
            }
            Kind::Handshake { message, .. } => write!(f, "upgrade refused: {message}"),
            Kind::Ended(info) => write!(
                f,
                "connection ended with {}{}{}",
                info.code,
                if info.reason.is_empty() { "" } else { ": " },
                info.reason
            ),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.kind, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Io(e) => Some(e),
            Kind::Protocol(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::new(Kind::Io(e))
    }
}
