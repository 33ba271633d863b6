//! Receiving: frames and messages from bytes.

use bytes::{Buf, Bytes, BytesMut};

use super::{
    Connection, Deflate, Event, FrameInProgress, InPlace, MessageInProgress, MessageKind, Role,
};
use crate::close::{CloseCode, CloseFrame};
use crate::deflate::{Decompressor, InflateError};
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, OpCode};
use crate::mask::apply_mask;
use crate::utf8::{Utf8Bytes, Utf8Validator};

/// Capacity reserved for a message that arrives in pieces; it grows as data
/// actually arrives, never to a length the peer merely announced.
const INITIAL_MESSAGE_CAPACITY: usize = 4096;

impl Connection {
    /// Consumes bytes from the front of `input` and returns the next event.
    ///
    /// Call it in a loop after every read until it returns `Ok(None)`, which
    /// means it needs more bytes; whatever it left in `input` (at most a
    /// partial frame header or a partial control frame) must be kept and
    /// have the next read appended to it. Payload of a partly received data
    /// frame is moved out of `input` as it arrives, unmasked and (for text)
    /// UTF-8-checked at once, so invalid text fails before the frame ends.
    /// A frame that is whole in `input` and is a whole message is unmasked in
    /// place and returned without a copy.
    ///
    /// Replies the protocol requires (a pong for a ping, the close echo, the
    /// close frame for an error) are appended to `out`.
    ///
    /// After the peer's close frame, or after an error, further input is
    /// discarded.
    ///
    /// # Errors
    /// A [`ProtocolError`] when the peer broke the protocol or a limit. The
    /// close frame carrying its code is already in `out`; flush `out` and
    /// close the transport.
    pub fn read(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Option<Event>, ProtocolError> {
        if self.failed || self.close_received {
            input.clear();
            return Ok(None);
        }
        match self.read_inner(input, out) {
            Ok(event) => Ok(event),
            Err(error) => {
                self.fail(&error, out);
                input.clear();
                Err(error)
            }
        }
    }

    fn read_inner(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Option<Event>, ProtocolError> {
        if self.in_place.is_some() {
            return self.read_in_place(input);
        }
        loop {
            if let Some(message) = &mut self.message {
                if let Some(frame) = &mut message.frame {
                    let take = usize::try_from(frame.remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let piece = &mut input[..take];
                    if let Some(key) = frame.mask {
                        apply_mask(piece, key, frame.offset);
                    }
                    let start = message.buf.len();
                    if message.compressed {
                        let limit = self.config.max_message_size;
                        inflater(&mut self.deflate)
                            .inflate(piece, &mut message.buf, limit)
                            .map_err(|e| inflate_error(e, limit))?;
                    } else {
                        message.buf.extend_from_slice(piece);
                    }
                    if message.kind == MessageKind::Text
                        && !message.utf8.feed(&message.buf[start..])
                    {
                        return Err(ProtocolError::InvalidUtf8);
                    }
                    input.advance(take);
                    frame.remaining -= take as u64;
                    frame.offset += take;
                    if frame.remaining > 0 {
                        return Ok(None);
                    }
                    let fin = frame.fin;
                    message.frame = None;
                    if fin {
                        let mut done = self.message.take().expect("checked above");
                        if done.compressed {
                            let start = done.buf.len();
                            let limit = self.config.max_message_size;
                            inflater(&mut self.deflate)
                                .finish(&mut done.buf, limit)
                                .map_err(|e| inflate_error(e, limit))?;
                            self.release_inflater();
                            if done.kind == MessageKind::Text && !done.utf8.feed(&done.buf[start..])
                            {
                                return Err(ProtocolError::InvalidUtf8);
                            }
                        }
                        return finish_message(*done).map(Some);
                    }
                    continue;
                }
            }

            let Some((header, header_len)) = FrameHeader::parse(input)? else {
                return Ok(None);
            };
            self.check_header(&header)?;
            // `check_header` bounded the length by a `usize` limit.
            let len = header.payload_len as usize;

            if header.opcode.is_control() {
                if input.len() < header_len + len {
                    return Ok(None);
                }
                input.advance(header_len);
                let mut payload = input.split_to(len);
                if let Some(key) = header.mask {
                    apply_mask(&mut payload, key, 0);
                }
                return self
                    .on_control(header.opcode, payload.freeze(), out)
                    .map(Some);
            }

            let kind = match (header.opcode, &self.message) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Continuation, Some(message)) => message.kind,
                (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
                (OpCode::Text, None) => MessageKind::Text,
                (_, None) => MessageKind::Binary,
            };
            let compressed = match (&self.message, header.rsv1) {
                (Some(message), _) => message.compressed,
                (None, rsv1) => rsv1,
            };
            let so_far = self.buffered_message_len() as u64;
            // A compressed message is measured after inflating, as it grows.
            if !compressed && so_far + header.payload_len > self.config.max_message_size as u64 {
                return Err(ProtocolError::MessageTooLarge {
                    size: so_far + header.payload_len,
                    max: self.config.max_message_size,
                });
            }

            if header.fin && self.message.is_none() && input.len() - header_len >= len {
                // The whole message is here: unmask in place, no copy.
                input.advance(header_len);
                let mut payload = input.split_to(len);
                if let Some(key) = header.mask {
                    apply_mask(&mut payload, key, 0);
                }
                if compressed {
                    let limit = self.config.max_message_size;
                    let inflater = inflater(&mut self.deflate);
                    let mut plain = Vec::with_capacity(
                        (len * 4)
                            .clamp(64, INITIAL_MESSAGE_CAPACITY * 16)
                            .min(limit + 1),
                    );
                    inflater
                        .inflate(&payload, &mut plain, limit)
                        .and_then(|()| inflater.finish(&mut plain, limit))
                        .map_err(|e| inflate_error(e, limit))?;
                    self.release_inflater();
                    return whole_message(kind, Bytes::from(plain)).map(Some);
                }
                return whole_message(kind, payload.freeze()).map(Some);
            }

            if header.fin && self.message.is_none() && !compressed {
                // A whole message still arriving: it stays in `input`
                // (only bytes that arrived are held, as when it is gathered
                // piece by piece), unmasked and, for text, validated as it
                // comes, so that invalid UTF-8 still fails early; taken
                // without a copy once whole.
                self.in_place = Some(Box::new(InPlace {
                    kind,
                    header_len,
                    len,
                    done: 0,
                    mask: header.mask,
                    utf8: Utf8Validator::default(),
                }));
                return self.read_in_place(input);
            }
            input.advance(header_len);
            let message = self.message.get_or_insert_with(|| {
                Box::new(MessageInProgress {
                    kind,
                    compressed,
                    buf: Vec::with_capacity(len.min(INITIAL_MESSAGE_CAPACITY)),
                    utf8: Utf8Validator::default(),
                    frame: None,
                })
            });
            message.frame = Some(FrameInProgress {
                remaining: header.payload_len,
                mask: header.mask,
                offset: 0,
                fin: header.fin,
            });
        }
    }

    /// Unmasks and checks what arrived of the in-place message; takes it
    /// once whole.
    fn read_in_place(&mut self, input: &mut BytesMut) -> Result<Option<Event>, ProtocolError> {
        let Some(p) = &mut self.in_place else {
            return Ok(None);
        };
        let arrived = (input.len() - p.header_len).min(p.len);
        if arrived > p.done {
            let piece = &mut input[p.header_len + p.done..p.header_len + arrived];
            if let Some(key) = p.mask {
                apply_mask(piece, key, p.done);
            }
            if p.kind == MessageKind::Text && !p.utf8.feed(piece) {
                return Err(ProtocolError::InvalidUtf8);
            }
            p.done = arrived;
        }
        if p.done < p.len {
            return Ok(None);
        }
        let (kind, header_len, len, complete) = (p.kind, p.header_len, p.len, p.utf8.is_complete());
        self.in_place = None;
        input.advance(header_len);
        let payload = input.split_to(len).freeze();
        match kind {
            MessageKind::Binary => Ok(Some(Event::Binary(payload))),
            MessageKind::Text if complete => {
                Ok(Some(Event::Text(Utf8Bytes::from_validated(payload))))
            }
            MessageKind::Text => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// The checks that need the role, the extensions and the limits.
    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        // RSV1 marks a compressed message, on its first frame only.
        let rsv1_allowed =
            self.deflate.is_some() && matches!(header.opcode, OpCode::Text | OpCode::Binary);
        if (header.rsv1 && !rsv1_allowed) || header.rsv2 || header.rsv3 {
            return Err(ProtocolError::ReservedBits);
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if header.opcode.is_control() {
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if header.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        } else if header.payload_len > self.config.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge {
                size: header.payload_len,
                max: self.config.max_frame_size,
            });
        }
        Ok(())
    }

    fn on_control(
        &mut self,
        opcode: OpCode,
        payload: Bytes,
        out: &mut BytesMut,
    ) -> Result<Event, ProtocolError> {
        match opcode {
            OpCode::Ping => {
                if self.config.auto_pong && !self.close_sent {
                    self.write_frame(
                        FrameHeader::new(OpCode::Pong, payload.len() as u64),
                        &payload,
                        out,
                    );
                }
                Ok(Event::Ping(payload))
            }
            OpCode::Pong => Ok(Event::Pong(payload)),
            _ => {
                let frame = parse_close_payload(&payload)?;
                self.close_received = true;
                if self.first_close.is_none() {
                    self.first_close = Some(Box::new(frame.clone().unwrap_or(CloseFrame {
                        code: CloseCode::NO_STATUS,
                        reason: String::new(),
                    })));
                }
                self.message = None;
                if !self.close_sent {
                    self.write_close(frame.as_ref().map(|f| f.code), "", out);
                    self.close_sent = true;
                }
                Ok(Event::Close(frame))
            }
        }
    }

    /// Fails the connection: writes a close frame with the error's code
    /// unless one was sent, and stops reading.
    fn fail(&mut self, error: &ProtocolError, out: &mut BytesMut) {
        if !self.close_sent {
            let reason = error.to_string();
            self.write_close(Some(error.close_code()), &reason, out);
            self.close_sent = true;
        }
        self.failed = true;
        self.message = None;
        if let Some(decompressor) = self.deflate.as_mut().and_then(|d| d.decompressor.as_mut()) {
            decompressor.reset();
        }
    }
}

impl Connection {
    /// Between messages, a peer that keeps no context needs no
    /// decompressor: free it (tens of KiB) rather than keep it per idle
    /// connection.
    fn release_inflater(&mut self) {
        if let Some(deflate) = self.deflate.as_mut() {
            if deflate.params.remote_no_context_takeover {
                deflate.decompressor = None;
            }
        }
    }
}

/// The connection's decompressor, made on first use. Only called for
/// compressed messages, which `check_header` lets through only when
/// permessage-deflate was negotiated.
fn inflater(deflate: &mut Option<Box<Deflate>>) -> &mut Decompressor {
    let deflate = deflate
        .as_mut()
        .expect("RSV1 is refused unless deflate is negotiated");
    let params = deflate.params;
    deflate
        .decompressor
        .get_or_insert_with(|| Decompressor::new(&params))
}

fn inflate_error(error: InflateError, limit: usize) -> ProtocolError {
    match error {
        InflateError::TooLarge => ProtocolError::MessageTooLarge {
            size: limit as u64 + 1,
            max: limit,
        },
        InflateError::Corrupt => ProtocolError::InvalidCompressedData,
    }
}

fn whole_message(kind: MessageKind, payload: Bytes) -> Result<Event, ProtocolError> {
    match kind {
        MessageKind::Binary => Ok(Event::Binary(payload)),
        MessageKind::Text => match Utf8Bytes::try_from_bytes(payload) {
            Ok(text) => Ok(Event::Text(text)),
            Err(_) => Err(ProtocolError::InvalidUtf8),
        },
    }
}

fn finish_message(message: MessageInProgress) -> Result<Event, ProtocolError> {
    let payload = Bytes::from(message.buf);
    match message.kind {
        MessageKind::Binary => Ok(Event::Binary(payload)),
        MessageKind::Text if message.utf8.is_complete() => {
            Ok(Event::Text(Utf8Bytes::from_validated(payload)))
        }
        MessageKind::Text => Err(ProtocolError::InvalidUtf8),
    }
}

/// Parses a received close payload (RFC 6455 §5.5.1).
fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::CloseFrameTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason =
                std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Some(CloseFrame {
                code,
                reason: reason.to_owned(),
            }))
        }
    }
}
