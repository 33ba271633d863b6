//! Frame headers (RFC 6455 §5.2): parsing and encoding.

use crate::error::ProtocolError;

/// The opcode of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// `0x0`: the next fragment of a message.
    Continuation,
    /// `0x1`: the first frame of a text message.
    Text,
    /// `0x2`: the first frame of a binary message.
    Binary,
    /// `0x8`: close.
    Close,
    /// `0x9`: ping.
    Ping,
    /// `0xA`: pong.
    Pong,
}

impl OpCode {
    /// The opcode for a 4-bit value, or `None` for a reserved one.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// The 4-bit value on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// The largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// A parsed or to-be-encoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether this is the final fragment of its message.
    pub fin: bool,
    /// The RSV1 bit (used by permessage-deflate).
    pub rsv1: bool,
    /// The RSV2 bit.
    pub rsv2: bool,
    /// The RSV3 bit.
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, when the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A final, unmasked frame header with no RSV bits.
    pub fn new(opcode: OpCode, payload_len: u64) -> Self {
        Self {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// Parses the header at the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header; it
    /// never consumes or allocates. On success returns the header and its
    /// length in bytes; the caller advances past it.
    ///
    /// # Errors
    /// A reserved opcode, or a 64-bit length with its top bit set, is a
    /// [`ProtocolError`] (close code 1002). Other checks (RSV bits, masking,
    /// control frame rules, limits) belong to the connection, which knows the
    /// role and the negotiated extensions.
    ///
    /// ```
    /// use hubbub_proto::{FrameHeader, OpCode};
    /// let (header, len) = FrameHeader::parse(&[0x81, 0x05]).unwrap().unwrap();
    /// assert_eq!((header.opcode, header.payload_len, len), (OpCode::Text, 5, 2));
    /// assert!(FrameHeader::parse(&[0x81]).unwrap().is_none());
    /// ```
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0F))?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut pos) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                    if len >> 63 != 0 {
                        return Err(ProtocolError::LengthOverflow);
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        let mask = if masked {
            let Some(key) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        Ok(Some((
            Self {
                fin: b0 & 0x80 != 0,
                rsv1: b0 & 0x40 != 0,
                rsv2: b0 & 0x20 != 0,
                rsv3: b0 & 0x10 != 0,
                opcode,
                mask,
                payload_len,
            },
            pos,
        )))
    }

    /// Encodes the header in its minimal form.
    ///
    /// ```
    /// use hubbub_proto::{FrameHeader, OpCode};
    /// let header = FrameHeader::new(OpCode::Binary, 300).encode();
    /// assert_eq!(header.as_bytes(), &[0x82, 126, 0x01, 0x2C]);
    /// ```
    pub fn encode(&self) -> EncodedHeader {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        bytes[0] = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = if self.payload_len < 126 {
            bytes[1] = mask_bit | self.payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(self.payload_len) {
            bytes[1] = mask_bit | 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = mask_bit | 127;
            bytes[2..10].copy_from_slice(&self.payload_len.to_be_bytes());
            10
        };
        if let Some(key) = self.mask {
            bytes[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        EncodedHeader {
            bytes,
            len: len as u8,
        }
    }
}

/// An encoded frame header, at most [`MAX_HEADER_LEN`] bytes, on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl EncodedHeader {
    /// The header bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for EncodedHeader {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_use_minimal_encoding_at_each_boundary() {
        for (len, expect) in [
            (0u64, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (u64::MAX >> 1, 10),
        ] {
            let h = FrameHeader::new(OpCode::Binary, len);
            let enc = h.encode();
            assert_eq!(enc.as_bytes().len(), expect, "len {len}");
            let (parsed, used) = FrameHeader::parse(enc.as_bytes()).unwrap().unwrap();
            assert_eq!((parsed, used), (h, expect));
        }
    }

    #[test]
    fn header_roundtrip_with_mask_and_rsv_bits() {
        let h = FrameHeader {
            fin: false,
            rsv1: true,
            rsv2: false,
            rsv3: true,
            opcode: OpCode::Text,
            mask: Some([9, 8, 7, 6]),
            payload_len: 70000,
        };
        let enc = h.encode();
        assert_eq!(enc.as_bytes().len(), 14);
        assert_eq!(FrameHeader::parse(enc.as_bytes()).unwrap(), Some((h, 14)));
    }

    #[test]
    fn header_parse_incomplete_returns_none_at_every_prefix() {
        let h = FrameHeader {
            mask: Some([1, 2, 3, 4]),
            ..FrameHeader::new(OpCode::Binary, 1 << 20)
        };
        let enc = h.encode();
        for cut in 0..enc.as_bytes().len() {
            assert_eq!(FrameHeader::parse(&enc.as_bytes()[..cut]).unwrap(), None);
        }
    }

    #[test]
    fn header_64bit_length_with_top_bit_is_protocol_error() {
        let mut bytes = vec![0x82, 0xFF];
        bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        assert_eq!(
            FrameHeader::parse(&bytes),
            Err(ProtocolError::LengthOverflow)
        );
    }

    #[test]
    fn header_reserved_opcodes_are_protocol_errors() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0x80, 0, 0, 0, 0]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }
}
