//! Errors, one type per concern.
//!
//! [`ProtocolError`] is what the *peer* did wrong: each maps to the close code
//! the connection sent. [`SendError`] is what the *caller* did wrong, such as
//! sending after close. Handshake failures are in [`crate::handshake`].

use std::fmt;

use crate::close::CloseCode;

/// A violation of RFC 6455 by the peer, or a configured limit it crossed.
///
/// When [`crate::Connection::read`] returns one, the connection has already
/// written a close frame with [`ProtocolError::close_code`] and will read no
/// more; flush the output and close the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame used a reserved opcode (1002).
    ReservedOpcode(u8),
    /// A 64-bit payload length had its most significant bit set (1002).
    LengthOverflow,
    /// An RSV bit was set without an extension that defines it, or RSV1 on
    /// a control or continuation frame (1002).
    ReservedBits,
    /// A client sent an unmasked frame to a server (1002).
    UnmaskedFrame,
    /// A server sent a masked frame to a client (1002).
    MaskedFrame,
    /// A control frame carried more than 125 bytes (1002).
    ControlFrameTooLong,
    /// A control frame had FIN clear (1002).
    FragmentedControlFrame,
    /// A continuation frame arrived with no message to continue (1002).
    UnexpectedContinuation,
    /// A new text or binary frame arrived in the middle of a fragmented
    /// message (1002).
    ExpectedContinuation,
    /// A close frame had a 1-byte payload (1002).
    CloseFrameTooShort,
    /// A close frame carried a code not allowed on the wire (1002).
    InvalidCloseCode(u16),
    /// A close frame's reason was not UTF-8 (1007).
    InvalidCloseReason,
    /// A text message was not UTF-8 (1007).
    InvalidUtf8,
    /// A compressed message was not a valid deflate stream (1007).
    InvalidCompressedData,
    /// A frame's payload passed [`crate::Config::max_frame_size`] (1009).
    FrameTooLarge {
        /// The announced payload length.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message passed [`crate::Config::max_message_size`] (1009).
    MessageTooLarge {
        /// The size the message would have reached.
        size: u64,
        /// The configured limit.
        max: usize,
    },
}

impl ProtocolError {
    /// The close code sent to the peer for this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::InvalidCloseReason | Self::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Self::LengthOverflow => f.write_str("64-bit payload length has its top bit set"),
            Self::ReservedBits => f.write_str("RSV bit set without a negotiated extension"),
            Self::UnmaskedFrame => f.write_str("client frame is not masked"),
            Self::MaskedFrame => f.write_str("server frame is masked"),
            Self::ControlFrameTooLong => f.write_str("control frame payload over 125 bytes"),
            Self::FragmentedControlFrame => f.write_str("control frame is fragmented"),
            Self::UnexpectedContinuation => f.write_str("continuation frame without a message"),
            Self::ExpectedContinuation => {
                f.write_str("new data frame in the middle of a fragmented message")
            }
            Self::CloseFrameTooShort => f.write_str("close frame payload of 1 byte"),
            Self::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            Self::InvalidCloseReason => f.write_str("close reason is not UTF-8"),
            Self::InvalidUtf8 => f.write_str("text message is not UTF-8"),
            Self::InvalidCompressedData => {
                f.write_str("compressed message is not valid deflate data")
            }
            Self::FrameTooLarge { size, max } => {
                write!(f, "frame of {size} bytes exceeds the limit of {max}")
            }
            Self::MessageTooLarge { size, max } => {
                write!(f, "message of {size} bytes exceeds the limit of {max}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A send the connection refused: the caller's mistake, not the peer's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent (or the connection failed): nothing
    /// more may be sent.
    Closed,
    /// A control frame payload over 125 bytes.
    ControlPayloadTooLong,
    /// A close code that may not be sent on the wire (see
    /// [`CloseCode::is_sendable`]).
    InvalidCloseCode(CloseCode),
    /// A whole message, or the first fragment of a new one, while a
    /// fragmented message is still being sent.
    FragmentInProgress,
    /// A continuation fragment of a different kind than the message it
    /// continues.
    FragmentKindMismatch,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the connection is closing or closed"),
            Self::ControlPayloadTooLong => f.write_str("control frame payload over 125 bytes"),
            Self::InvalidCloseCode(code) => write!(f, "close code {code} may not be sent"),
            Self::FragmentInProgress => f.write_str("a fragmented message is still being sent"),
            Self::FragmentKindMismatch => {
                f.write_str("fragment kind differs from the message being sent")
            }
        }
    }
}

impl std::error::Error for SendError {}
