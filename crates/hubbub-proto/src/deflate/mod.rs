//! permessage-deflate (RFC 7692): negotiation, and the compressor and
//! decompressor a connection uses.
//!
//! The backend is `flate2` on the pure-Rust `zlib-rs`. It cannot compress
//! with an 8-bit window (zlib raises 8 to 9, which would break a peer that
//! asked for 8), so an offer that demands `server_max_window_bits=8` is
//! declined cleanly and the next offer, or no compression, is used.
//! Decompression always uses a 15-bit window, which reads any smaller one.

mod codec;

pub(crate) use codec::{Compressor, Decompressor, InflateError};

use crate::handshake::ExtensionOffer;

/// The extension's registered name.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The smallest window this backend can compress with.
const MIN_COMPRESS_WINDOW: u8 = 9;

/// The server's permessage-deflate settings.
///
/// ```
/// let config = hubbub_proto::DeflateConfig::default();
/// assert!(config.enabled && config.server_no_context_takeover && config.client_no_context_takeover);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Accept the extension when a client offers it. Default: on.
    pub enabled: bool,
    /// Largest LZ77 window the server compresses with, 9–15. Default: 15.
    pub server_max_window_bits: u8,
    /// Compress each message on its own (no context kept between
    /// messages). Costs some ratio on small related messages; in exchange
    /// no compressor is kept per connection and a broadcast is compressed
    /// once for every such receiver. Default: on.
    pub server_no_context_takeover: bool,
    /// Ask clients to compress each message on its own, so that no
    /// decompressor is kept per connection between messages: about 7.5 KiB
    /// instead of 34 KiB per connection that has sent a compressed message
    /// (BENCHMARKS.md). Turn it off to let clients keep their context, which
    /// compresses streams of small related messages better. Default: on.
    pub client_no_context_takeover: bool,
    /// Messages shorter than this are sent uncompressed (allowed by RFC 7692
    /// §6): compressing a few bytes costs more than it saves. Default: 64.
    pub threshold: usize,
    /// zlib compression level, 0–9. Default: 1 (fast; most of the gain on
    /// text).
    pub level: u32,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            server_max_window_bits: 15,
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            threshold: 64,
            level: 1,
        }
    }
}

impl DeflateConfig {
    /// A configuration with the extension off.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// The parameters in force on a connection, from this endpoint's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// This endpoint resets its compressor after each message.
    pub local_no_context_takeover: bool,
    /// The peer resets its compressor after each message (so this endpoint
    /// may reset its decompressor).
    pub remote_no_context_takeover: bool,
    /// The window this endpoint compresses with.
    pub local_max_window_bits: u8,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
    /// Compression level.
    pub level: u32,
}

/// One offer's parameters, validated.
#[derive(Debug, Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value.
    client_max_window_bits: Option<Option<u8>>,
}

fn window_bits(value: Option<&str>) -> Option<u8> {
    let value = value?;
    // A value is 1*DIGIT without leading zeros, 8 to 15.
    if value.starts_with('0') {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

impl Offer {
    /// Validates one offer; `None` for an unknown, repeated or malformed
    /// parameter (the offer is then declined).
    fn parse(offer: &ExtensionOffer) -> Option<Self> {
        let mut parsed = Self::default();
        let mut seen = Vec::new();
        for (name, value) in &offer.params {
            let name = name.to_ascii_lowercase();
            if seen.contains(&name) {
                return None;
            }
            match name.as_str() {
                "server_no_context_takeover" if value.is_none() => {
                    parsed.server_no_context_takeover = true;
                }
                "client_no_context_takeover" if value.is_none() => {
                    parsed.client_no_context_takeover = true;
                }
                "server_max_window_bits" => {
                    parsed.server_max_window_bits = Some(window_bits(value.as_deref())?);
                }
                "client_max_window_bits" => {
                    parsed.client_max_window_bits = Some(match value {
                        None => None,
                        Some(_) => Some(window_bits(value.as_deref())?),
                    });
                }
                _ => return None,
            }
            seen.push(name);
        }
        Some(parsed)
    }
}

/// The server's choice: the first offer it can honour, the parameters in
/// force, and the `Sec-WebSocket-Extensions` value to answer with.
///
/// Offers with unknown or malformed parameters, or that ask for a window
/// this backend cannot compress with, are skipped. Returns `None` when no
/// offer is acceptable (or the extension is disabled): the connection then
/// runs without compression.
///
/// ```
/// use hubbub_proto::handshake::ExtensionOffer;
/// use hubbub_proto::{DeflateConfig, deflate::negotiate};
/// let offer = ExtensionOffer {
///     name: "permessage-deflate".into(),
///     params: vec![("client_max_window_bits".into(), None)],
/// };
/// let (params, answer) = negotiate(&[offer], &DeflateConfig::default()).unwrap();
/// assert_eq!(
///     answer,
///     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
/// );
/// assert!(params.local_no_context_takeover);
/// ```
pub fn negotiate(
    offers: &[ExtensionOffer],
    config: &DeflateConfig,
) -> Option<(DeflateParams, String)> {
    if !config.enabled {
        return None;
    }
    offers
        .iter()
        .filter(|offer| offer.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .find_map(|offer| accept(&Offer::parse(offer)?, config))
}

fn accept(offer: &Offer, config: &DeflateConfig) -> Option<(DeflateParams, String)> {
    let configured = config.server_max_window_bits.clamp(MIN_COMPRESS_WINDOW, 15);
    let window = match offer.server_max_window_bits {
        Some(bits) if bits < MIN_COMPRESS_WINDOW => return None,
        Some(bits) => bits.min(configured),
        None => configured,
    };
    let server_no_context = offer.server_no_context_takeover || config.server_no_context_takeover;
    let client_no_context = offer.client_no_context_takeover || config.client_no_context_takeover;
    let mut answer = String::from(EXTENSION_NAME);
    if server_no_context {
        answer += "; server_no_context_takeover";
    }
    if client_no_context {
        answer += "; client_no_context_takeover";
    }
    if offer.server_max_window_bits.is_some() || window < 15 {
        answer += &format!("; server_max_window_bits={window}");
    }
    if let Some(Some(bits)) = offer.client_max_window_bits {
        answer += &format!("; client_max_window_bits={bits}");
    }
    let params = DeflateParams {
        local_no_context_takeover: server_no_context,
        remote_no_context_takeover: client_no_context,
        local_max_window_bits: window,
        threshold: config.threshold,
        level: config.level.min(9),
    };
    Some((params, answer))
}

/// The client's view of a server's answer: the parameters in force for a
/// client that offered `permessage-deflate` (with `client_max_window_bits`
/// and nothing else), or `None` when the answer is not acceptable.
pub fn client_params(answer: &ExtensionOffer, threshold: usize) -> Option<DeflateParams> {
    if !answer.name.eq_ignore_ascii_case(EXTENSION_NAME) {
        return None;
    }
    let offer = Offer::parse(answer)?;
    let window = match offer.client_max_window_bits {
        Some(Some(bits)) if bits < MIN_COMPRESS_WINDOW => return None,
        Some(Some(bits)) => bits,
        _ => 15,
    };
    Some(DeflateParams {
        local_no_context_takeover: offer.client_no_context_takeover,
        remote_no_context_takeover: offer.server_no_context_takeover,
        local_max_window_bits: window,
        threshold,
        level: 1,
    })
}

#[cfg(test)]
mod tests;
