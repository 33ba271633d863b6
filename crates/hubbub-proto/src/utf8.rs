//! Incremental UTF-8 validation and the validated text type.
//!
//! This is the crate's only module with `unsafe`: [`Utf8Bytes::as_str`]
//! borrows already validated bytes as `&str` without checking them a second
//! time. The benchmark `utf8/revalidate` in `benches/proto.rs` measures what
//! the second check would cost per message; the test
//! `as_str_equals_checked_conversion` compares it with the checked
//! conversion.
#![allow(unsafe_code, reason = "one unchecked &str view of validated bytes")]

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// UTF-8 text held in shared [`Bytes`]: cloning it is cheap and does not
/// copy the text.
///
/// Every `Utf8Bytes` is valid UTF-8: the only ways to make one check it.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps `bytes` after checking that they are UTF-8.
    ///
    /// # Errors
    /// Returns the bytes back when they are not valid UTF-8.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, Bytes> {
        if simdutf8::basic::from_utf8(&bytes).is_ok() {
            Ok(Self(bytes))
        } else {
            Err(bytes)
        }
    }

    /// Wraps bytes that the caller has just validated.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }

    /// A static string, without copying it.
    pub const fn from_static(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor of `Utf8Bytes` checks that the bytes are
        // UTF-8 (`try_from_bytes`, `from_validated` after the incremental
        // validator, and the `From` impls from `&str` and `String`), and
        // `Bytes` is immutable, so the bytes are still UTF-8 here.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes, shared.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives up the text type and returns the shared bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Self(Bytes::from(text))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.0
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Validates UTF-8 that arrives in pieces, failing as soon as a byte
/// sequence is certainly invalid rather than at the end of the message.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Validator {
    /// The start of a code point split across pieces.
    pending: [u8; 4],
    pending_len: u8,
}

/// The number of bytes of a code point starting with `lead`, for leads that
/// can begin a valid sequence.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

impl Utf8Validator {
    /// Checks the next piece of text.
    ///
    /// Returns `false` when the text seen so far cannot be the start of valid
    /// UTF-8.
    pub(crate) fn feed(&mut self, mut piece: &[u8]) -> bool {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = sequence_len(self.pending[0]) - have;
            let take = need.min(piece.len());
            self.pending[have..have + take].copy_from_slice(&piece[..take]);
            let have = have + take;
            piece = &piece[take..];
            match std::str::from_utf8(&self.pending[..have]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix, and the piece is used up.
                    self.pending_len = have as u8;
                    return true;
                }
                Err(_) => return false,
            }
        }
        if simdutf8::basic::from_utf8(piece).is_ok() {
            return true;
        }
        match simdutf8::compat::from_utf8(piece) {
            Ok(_) => true,
            Err(e) => match e.error_len() {
                Some(_) => false,
                None => {
                    let tail = &piece[e.valid_up_to()..];
                    self.pending[..tail.len()].copy_from_slice(tail);
                    self.pending_len = tail.len() as u8;
                    true
                }
            },
        }
    }

    /// Whether the text fed so far ends on a code point boundary.
    pub(crate) fn is_complete(&self) -> bool {
        self.pending_len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(pieces: &[&[u8]]) -> Option<bool> {
        let mut v = Utf8Validator::default();
        for p in pieces {
            if !v.feed(p) {
                return None;
            }
        }
        Some(v.is_complete())
    }

    #[test]
    fn as_str_equals_checked_conversion() {
        for text in ["", "a", "héllo", "κόσμε", "𝄞 music", "日本語"] {
            let b = Utf8Bytes::try_from_bytes(Bytes::copy_from_slice(text.as_bytes())).unwrap();
            assert_eq!(b.as_str(), std::str::from_utf8(b.as_bytes()).unwrap());
        }
        assert!(Utf8Bytes::try_from_bytes(Bytes::from_static(b"\xff")).is_err());
    }

    #[test]
    fn utf8_split_code_point_at_every_position_is_valid() {
        let text = "aκ𝄞日z".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                assert_eq!(
                    feed_all(&[&text[..i], &text[i..j], &text[j..]]),
                    Some(true),
                    "{i} {j}"
                );
            }
        }
    }

    #[test]
    fn utf8_incomplete_code_point_at_end_is_not_complete() {
        assert_eq!(feed_all(&[b"ab\xce"]), Some(false));
        assert_eq!(feed_all(&[b"\xf0\x9d", b"\x84"]), Some(false));
    }

    #[test]
    fn utf8_invalid_fails_at_first_certainly_invalid_byte() {
        // Autobahn 6.4.x style: valid prefix, then a byte that makes it
        // invalid; the rest never needs to arrive.
        let mut v = Utf8Validator::default();
        assert!(v.feed("κόσμε".as_bytes()));
        assert!(!v.feed(b"\xf4\x90\x80\x80"));
        // A lead byte that can never start a sequence fails alone.
        assert_eq!(feed_all(&[b"\xf5"]), None);
        // Overlong 3-byte start fails at its second byte, across pieces.
        assert_eq!(feed_all(&[b"\xe0", b"\x80"]), None);
        // Surrogates fail.
        assert_eq!(feed_all(&[b"\xed", b"\xa0\x80"]), None);
        // A continuation byte with nothing to continue fails.
        assert_eq!(feed_all(&[b"a", b"\x80"]), None);
    }

    #[test]
    fn utf8_split_one_byte_at_a_time_matches_std() {
        let samples: [&[u8]; 6] = [
            "hello 𝄞 κόσμε".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xf0\x90\x80",
            b"\xc0\xaf",
            b"\xef\xbf\xbf",
            b"\xf4\x8f\xbf\xbf",
        ];
        for s in samples {
            let pieces: Vec<&[u8]> = s.chunks(1).collect();
            let ours = feed_all(&pieces);
            let std_ok = std::str::from_utf8(s).is_ok();
            assert_eq!(ours == Some(true), std_ok, "{s:?}");
        }
    }
}
