//! Limits and switches of the protocol core.

/// Limits and behaviour switches for the handshake and for one connection.
///
/// Every limit has a safe default; raise them only as far as your use needs.
/// The struct is `#[non_exhaustive]`: build it from [`Config::default`] and set
/// fields or use the `with_*` methods.
///
/// ```
/// let config = hubbub_proto::Config::default().with_max_message_size(1 << 20);
/// assert_eq!(config.max_message_size, 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest payload of one received frame, in bytes. A larger frame is
    /// refused with close code 1009 as soon as its header arrives, before any
    /// of its payload is buffered. Default: 16 MiB.
    pub max_frame_size: usize,
    /// Largest received message (all fragments together), in bytes. A message
    /// that would grow past it is refused with close code 1009 as soon as the
    /// frame header that would cross it arrives. Default: 16 MiB.
    pub max_message_size: usize,
    /// Answer every received ping with a pong carrying its payload.
    /// Default: `true`.
    pub auto_pong: bool,
    /// Largest HTTP request or response head of the opening handshake, in
    /// bytes, up to and including the blank line. A larger head is answered
    /// with 431. Default: 16 KiB.
    pub max_handshake_size: usize,
    /// Most header fields in the opening handshake. More are answered with 431.
    /// Default: 64.
    pub max_headers: usize,
    /// permessage-deflate (RFC 7692) settings for the server's
    /// negotiation. Default: enabled, see [`crate::DeflateConfig`].
    pub deflate: crate::DeflateConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            auto_pong: true,
            max_handshake_size: 16 << 10,
            max_headers: 64,
            deflate: crate::DeflateConfig::default(),
        }
    }
}

impl Config {
    /// Sets [`Config::max_frame_size`].
    #[must_use]
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`Config::max_message_size`].
    #[must_use]
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Config::auto_pong`].
    #[must_use]
    pub fn with_auto_pong(mut self, on: bool) -> Self {
        self.auto_pong = on;
        self
    }

    /// Sets [`Config::max_handshake_size`].
    #[must_use]
    pub fn with_max_handshake_size(mut self, bytes: usize) -> Self {
        self.max_handshake_size = bytes;
        self
    }

    /// Sets [`Config::deflate`].
    #[must_use]
    pub fn with_deflate(mut self, deflate: crate::DeflateConfig) -> Self {
        self.deflate = deflate;
        self
    }

    /// Sets [`Config::max_headers`].
    #[must_use]
    pub fn with_max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }
}
