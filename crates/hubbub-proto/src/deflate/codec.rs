//! The compressor and the bounded decompressor of one connection.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::DeflateParams;

/// The empty stored block that ends a sync flush; RFC 7692 removes it from
/// every compressed message and the receiver appends it back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Most bytes inflated per step: the slack past `max_message_size` that a
/// bomb can make the decompressor allocate before it is refused.
pub(crate) const INFLATE_STEP: usize = 64 * 1024;

/// Compresses messages for one direction of one connection.
pub(crate) struct Compressor {
    inner: Compress,
    no_context_takeover: bool,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("no_context_takeover", &self.no_context_takeover)
            .finish()
    }
}

impl Compressor {
    /// A compressor with the window, level and context rule of `params`.
    pub(crate) fn new(params: &DeflateParams) -> Self {
        Self {
            inner: Compress::new_with_window_bits(
                Compression::new(params.level),
                false,
                params.local_max_window_bits.clamp(9, 15),
            ),
            no_context_takeover: params.local_no_context_takeover,
        }
    }

    /// Compresses one whole message, appending the deflate data without
    /// its trailing `00 00 ff ff` to `out`.
    pub(crate) fn compress(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        loop {
            out.reserve(input.len() / 2 + 64);
            let before = self.inner.total_in();
            let spare = out.capacity() - out.len();
            // Compressing into a Vec cannot fail: the stream is always valid.
            let _ = self.inner.compress_vec(input, out, FlushCompress::Sync);
            input = &input[(self.inner.total_in() - before) as usize..];
            let filled = out.capacity() - out.len() == 0 && spare > 0;
            if input.is_empty() && !filled {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.len() == start {
            // A sync flush with nothing new emits nothing at all; the
            // receiver's appended tail must then complete an empty stored
            // block, whose first byte (the stream is byte-aligned after a
            // flush) is this one (RFC 7692 §7.2.3.6).
            out.push(0x00);
        }
        if self.no_context_takeover {
            self.inner.reset();
        }
    }
}

/// Why inflating a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// The inflated message would pass the limit.
    TooLarge,
    /// The data is not a valid deflate stream.
    Corrupt,
}

/// Inflates messages for one direction of one connection, never growing a
/// message past a limit.
pub(crate) struct Decompressor {
    inner: Decompress,
    no_context_takeover: bool,
    /// The peer ended its stream with a final block: the next message
    /// starts a fresh one.
    ended: bool,
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor")
            .field("no_context_takeover", &self.no_context_takeover)
            .finish()
    }
}

impl Decompressor {
    /// A decompressor for a peer that compresses with `params`'s remote
    /// context rule; its window is 15 bits, which reads any smaller one.
    pub(crate) fn new(params: &DeflateParams) -> Self {
        Self {
            inner: Decompress::new(false),
            no_context_takeover: params.remote_no_context_takeover,
            ended: false,
        }
    }

    /// Inflates the next piece of a message's compressed payload, appending
    /// to `out`, which never grows past `limit` bytes plus
    /// [`INFLATE_STEP`] of capacity.
    ///
    /// # Errors
    /// [`InflateError::TooLarge`] as soon as the output would pass `limit`;
    /// [`InflateError::Corrupt`] for invalid data.
    pub(crate) fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        while !self.ended {
            let room = limit.saturating_sub(out.len());
            let step = (room + 1).min(INFLATE_STEP);
            if out.capacity() - out.len() < step {
                // Grow by doubling, but never past the limit plus one step.
                let target = (out.capacity() * 2)
                    .max(out.len() + step)
                    .min(limit + INFLATE_STEP);
                out.reserve_exact(target.max(out.len() + step) - out.len());
            }
            let (before_in, before_out) = (self.inner.total_in(), self.inner.total_out());
            let spare = out.capacity() - out.len();
            let status = self
                .inner
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let consumed = (self.inner.total_in() - before_in) as usize;
            let produced = (self.inner.total_out() - before_out) as usize;
            input = &input[consumed..];
            if out.len() > limit {
                return Err(InflateError::TooLarge);
            }
            if status == Status::StreamEnd {
                self.ended = true;
                break;
            }
            let output_full = produced == spare;
            if (input.is_empty() && !output_full) || (consumed == 0 && produced == 0) {
                break;
            }
        }
        Ok(())
    }

    /// Ends a message: inflates the `00 00 ff ff` the sender removed and
    /// resets the context when it is not kept.
    ///
    /// # Errors
    /// As [`Decompressor::inflate`].
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        let result = self.inflate(&TAIL, out, limit);
        if self.no_context_takeover || self.ended {
            self.inner.reset(false);
            self.ended = false;
        }
        result
    }

    /// Forgets any partial message (after an error).
    pub(crate) fn reset(&mut self) {
        self.inner.reset(false);
        self.ended = false;
    }
}
