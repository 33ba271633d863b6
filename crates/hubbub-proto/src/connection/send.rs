//! Sending: frames from messages.

use bytes::{Bytes, BytesMut};
use rand::RngCore;

use super::{Connection, MessageKind, Role};
use crate::close::{CloseCode, CloseFrame, MAX_CLOSE_REASON, truncate_reason};
use crate::deflate::Compressor;
use crate::encode::{COPY_THRESHOLD, EncodedFrame};
use crate::error::SendError;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, OpCode};
use crate::mask::{apply_mask, masked_copy};

impl Connection {
    /// Appends a whole text message to `out` as one frame.
    ///
    /// # Errors
    /// [`SendError::Closed`] after a close frame was sent, and
    /// [`SendError::FragmentInProgress`] while a fragmented message is being
    /// sent.
    pub fn send_text(&mut self, text: &str, out: &mut BytesMut) -> Result<(), SendError> {
        self.send(MessageKind::Text, text.as_bytes(), out)
    }

    /// Appends a whole binary message to `out` as one frame.
    ///
    /// # Errors
    /// As [`Connection::send_text`].
    pub fn send_binary(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), SendError> {
        self.send(MessageKind::Binary, data, out)
    }

    /// Appends a whole message of `kind` to `out` as one frame. For text,
    /// `payload` must be UTF-8 (a `&str` passed through `as_bytes`). With
    /// permessage-deflate negotiated, a message of at least the threshold is
    /// compressed.
    ///
    /// # Errors
    /// As [`Connection::send_text`].
    pub fn send(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), SendError> {
        self.check_open()?;
        if self.sending.is_some() {
            return Err(SendError::FragmentInProgress);
        }
        if let Some(deflate) = self.deflate.as_mut() {
            if payload.len() >= deflate.params.threshold {
                let params = deflate.params;
                let compressor = deflate
                    .compressor
                    .get_or_insert_with(|| Compressor::new(&params));
                let mut compressed = Vec::with_capacity(payload.len() / 2 + 16);
                compressor.compress(payload, &mut compressed);
                let header = FrameHeader {
                    rsv1: true,
                    ..FrameHeader::new(kind.opcode(), compressed.len() as u64)
                };
                self.write_frame(header, &compressed, out);
                return Ok(());
            }
        }
        self.write_frame(
            FrameHeader::new(kind.opcode(), payload.len() as u64),
            payload,
            out,
        );
        Ok(())
    }

    /// Appends one fragment of a message streamed in pieces: the first call
    /// starts a message of `kind`, later calls continue it (with the same
    /// `kind`), and the call with `fin` set ends it. Control frames may be
    /// sent between fragments. For text, the concatenated payloads must be
    /// UTF-8; a fragment may end inside a code point. Streamed messages are
    /// sent uncompressed even with permessage-deflate (RFC 7692 allows it).
    ///
    /// # Errors
    /// [`SendError::Closed`] after close, and
    /// [`SendError::FragmentKindMismatch`] when `kind` differs from the
    /// message being continued.
    pub fn send_fragment(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        fin: bool,
        out: &mut BytesMut,
    ) -> Result<(), SendError> {
        self.check_open()?;
        let opcode = match self.sending {
            None => kind.opcode(),
            Some(current) if current == kind => OpCode::Continuation,
            Some(_) => return Err(SendError::FragmentKindMismatch),
        };
        let header = FrameHeader {
            fin,
            ..FrameHeader::new(opcode, payload.len() as u64)
        };
        self.write_frame(header, payload, out);
        self.sending = if fin { None } else { Some(kind) };
        Ok(())
    }

    /// A whole message of `kind` as one frame, compressed with this
    /// connection's own context when permessage-deflate is negotiated and
    /// `payload` is at least the threshold.
    ///
    /// In the server role the frame is unmasked, and compressed here only
    /// with context takeover on this side (frames for receivers without it
    /// are best made once for all of them with [`crate::encode::Deflater`]);
    /// otherwise it is [`EncodedFrame::message`]. In the client role every
    /// frame is masked with a fresh key, in one buffer, and compressed
    /// whichever the context mode.
    ///
    /// It neither checks nor changes the close state: a driver that queues
    /// messages apart from the protocol's own replies encodes, in order, the
    /// ones it accepted before its close point.
    ///
    /// # Errors
    /// None today; the `Result` is kept for encodings that can fail.
    pub fn encode_message(
        &mut self,
        kind: MessageKind,
        payload: Bytes,
    ) -> Result<EncodedFrame, SendError> {
        let client = self.role == Role::Client;
        if let Some(deflate) = self.deflate.as_mut() {
            let params = deflate.params;
            if payload.len() >= params.threshold && (client || !params.local_no_context_takeover) {
                let compressor = deflate
                    .compressor
                    .get_or_insert_with(|| Compressor::new(&params));
                let mut out = Vec::with_capacity(payload.len() / 2 + 16);
                compressor.compress(&payload, &mut out);
                if !client {
                    return Ok(EncodedFrame::new(kind.opcode(), out.into(), true));
                }
                let header = FrameHeader {
                    rsv1: true,
                    ..FrameHeader::new(kind.opcode(), out.len() as u64)
                };
                if out.len() > COPY_THRESHOLD {
                    // The compressed bytes are ours: masked where they are.
                    return Ok(self.masked_parts(header, |key| {
                        apply_mask(&mut out, key, 0);
                        out.into()
                    }));
                }
                let mut frame = BytesMut::new();
                self.write_frame(header, &out, &mut frame);
                return Ok(EncodedFrame::whole(frame.freeze()));
            }
        }
        if client {
            let header = FrameHeader::new(kind.opcode(), payload.len() as u64);
            if payload.len() > COPY_THRESHOLD {
                return Ok(
                    self.masked_parts(header, |key| match payload.try_into_mut() {
                        // Nobody else holds the payload (a received message
                        // sent on, say): masked where it is.
                        Ok(mut owned) => {
                            apply_mask(&mut owned, key, 0);
                            owned.freeze()
                        }
                        // Shared: masked into a buffer of its own in one pass
                        // (no copy then mask).
                        Err(shared) => masked_copy(&shared, key).into(),
                    }),
                );
            }
            let mut frame = BytesMut::new();
            self.write_frame(header, &payload, &mut frame);
            return Ok(EncodedFrame::whole(frame.freeze()));
        }
        Ok(EncodedFrame::message(kind, payload))
    }

    /// A ping or pong as one frame (masked in the client role), without
    /// checking or changing the close state (see
    /// [`Connection::encode_message`]).
    ///
    /// # Errors
    /// [`SendError::ControlPayloadTooLong`] over 125 bytes.
    pub fn encode_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<Bytes, SendError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlPayloadTooLong);
        }
        let mut frame = BytesMut::new();
        self.write_frame(
            FrameHeader::new(opcode, payload.len() as u64),
            payload,
            &mut frame,
        );
        Ok(frame.freeze())
    }

    /// Appends a ping with `payload` (at most 125 bytes).
    ///
    /// # Errors
    /// [`SendError::Closed`] after close, [`SendError::ControlPayloadTooLong`].
    pub fn ping(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload, out)
    }

    /// Appends a pong with `payload` (at most 125 bytes), such as an
    /// unsolicited heartbeat.
    ///
    /// # Errors
    /// As [`Connection::ping`].
    pub fn pong(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload, out)
    }

    /// Starts the close handshake: appends a close frame with `code` (or none)
    /// and `reason`. Nothing more can be sent afterwards; keep reading until
    /// [`Connection::is_closed`].
    ///
    /// # Errors
    /// [`SendError::Closed`] if a close frame was already sent,
    /// [`SendError::InvalidCloseCode`] for a code that may not be sent, and
    /// [`SendError::ControlPayloadTooLong`] for a reason over 123 bytes or a
    /// reason without a code.
    pub fn close(
        &mut self,
        code: Option<CloseCode>,
        reason: &str,
        out: &mut BytesMut,
    ) -> Result<(), SendError> {
        if self.close_sent || self.failed {
            return Err(SendError::Closed);
        }
        match code {
            Some(code) if !code.is_sendable() => return Err(SendError::InvalidCloseCode(code)),
            None if !reason.is_empty() => return Err(SendError::ControlPayloadTooLong),
            _ => {}
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SendError::ControlPayloadTooLong);
        }
        self.write_close(code, reason, out);
        self.close_sent = true;
        Ok(())
    }

    fn send_control(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), SendError> {
        self.check_open()?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlPayloadTooLong);
        }
        self.write_frame(FrameHeader::new(opcode, payload.len() as u64), payload, out);
        Ok(())
    }

    fn check_open(&self) -> Result<(), SendError> {
        if self.close_sent || self.failed {
            Err(SendError::Closed)
        } else {
            Ok(())
        }
    }

    /// Writes a close frame; `reason` is cut to fit.
    pub(super) fn write_close(
        &mut self,
        code: Option<CloseCode>,
        reason: &str,
        out: &mut BytesMut,
    ) {
        if self.first_close.is_none() {
            self.first_close = Some(Box::new(CloseFrame {
                code: code.unwrap_or(CloseCode::NO_STATUS),
                reason: truncate_reason(reason).to_owned(),
            }));
        }
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let len = match code {
            None => 0,
            Some(code) => {
                let reason = truncate_reason(reason);
                payload[..2].copy_from_slice(&code.0.to_be_bytes());
                payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
                2 + reason.len()
            }
        };
        self.write_frame(
            FrameHeader::new(OpCode::Close, len as u64),
            &payload[..len],
            out,
        );
    }

    /// Appends one frame, masking it in the client role.
    /// A large client frame as its header and its payload masked with a
    /// fresh key by `mask` (into a buffer of its own, or in place).
    fn masked_parts(
        &mut self,
        mut header: FrameHeader,
        mask: impl FnOnce([u8; 4]) -> Bytes,
    ) -> EncodedFrame {
        let key = self.next_mask();
        header.mask = Some(key);
        EncodedFrame::parts(
            Bytes::copy_from_slice(header.encode().as_bytes()),
            mask(key),
        )
    }

    /// A fresh masking key (the client role's; zeros in the server role,
    /// which never masks).
    fn next_mask(&mut self) -> [u8; 4] {
        self.rng
            .as_mut()
            .map_or([0; 4], |rng| rng.next_u32().to_ne_bytes())
    }

    pub(super) fn write_frame(
        &mut self,
        mut header: FrameHeader,
        payload: &[u8],
        out: &mut BytesMut,
    ) {
        if self.rng.is_some() {
            header.mask = Some(self.next_mask());
        }
        let encoded = header.encode();
        out.reserve(encoded.as_bytes().len() + payload.len());
        out.extend_from_slice(encoded.as_bytes());
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = header.mask {
            apply_mask(&mut out[start..], key, 0);
        }
    }
}
