//! Socket reads into the worker thread's buffer, and vectored writes.

use std::cell::RefCell;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use hubbub_proto::Role;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Driver, Phase};
use crate::outbox::Item;

/// Size of each worker thread's read buffer.
const READ_BUFFER: usize = 64 * 1024;

/// Room a client leaves past the end of a message it reserved for: the
/// start of the next frame, and a short read that tells the socket has
/// nothing more for now.
const SLACK: usize = 4096;

/// Most slices in one vectored write.
const MAX_SLICES: usize = 64;

thread_local! {
    /// The worker thread's read buffer, shared by every connection that
    /// thread drives: one read at a time, no `.await` while borrowed.
    static READ_BUF: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    /// Reads once into the thread's buffer and delivers what arrived.
    /// `Ok(true)`: bytes arrived; `Ok(false)`: end of stream.
    pub(super) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        if !self.leftover.is_empty() {
            // A partial frame is waiting: read straight after it.
            let mut input = std::mem::take(&mut self.leftover);
            match self.announced_end() {
                // Room past the message's end too: a read that fills the
                // buffer exactly leaves the socket marked readable, and the
                // next read is a wasted call that finds nothing.
                Some(end) => input.reserve(end.saturating_sub(input.len()) + SLACK),
                // Grow by doubling: a large message left whole in the buffer
                // is copied O(1) times as it arrives, not once per read, and
                // memory follows what arrived, not what was announced.
                None => input.reserve(input.len().max(4096)),
            }
            let result = self.poll_read_with(cx, &mut input);
            // Keep the allocation only while a partial frame needs it.
            self.leftover = if input.is_empty() {
                BytesMut::new()
            } else {
                input
            };
            return result;
        }
        READ_BUF.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                // Reclaims the allocation when no message still points
                // into it.
                buf.reserve(READ_BUFFER);
                let result = self.poll_read_with(cx, &mut buf);
                if !buf.is_empty() {
                    if let Some(end) = self.announced_end() {
                        self.leftover.reserve(end + SLACK);
                    }
                    self.leftover.extend_from_slice(&buf);
                    buf.clear();
                }
                result
            }
            Err(_) => {
                let mut buf = BytesMut::with_capacity(READ_BUFFER);
                let result = self.poll_read_with(cx, &mut buf);
                self.leftover = buf;
                result
            }
        })
    }

    /// In the client role, where a whole message arriving in the buffer
    /// will end: a client trusts the server it chose with the length it
    /// announced (within `max_message_size`), and makes room for the whole
    /// message at once instead of copying it as it grows. A server does
    /// not: its memory follows what arrived, not what was announced.
    fn announced_end(&self) -> Option<usize> {
        match self.proto.role() {
            Role::Client => self.proto.message_end(),
            Role::Server => None,
        }
    }

    /// Reads once, appending to `buf`, and delivers the events in `buf`.
    /// What is left in `buf` is a partial frame or input held back.
    fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<std::io::Result<bool>> {
        let n = match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(n)) => n,
        };
        if n == 0 {
            return Poll::Ready(Ok(false));
        }
        // "Bytes arrived": the keepalive sweep turns it into its own time
        // (reading the clock here cost 4 % of the user time on small
        // messages).
        self.conn
            .member
            .last_seen
            .store(crate::hub::ACTIVE, Ordering::Relaxed);
        if self.phase == Phase::Lingering || self.proto.close_received() {
            buf.clear();
            return Poll::Ready(Ok(true));
        }
        self.deliver(buf);
        self.held = self.running.is_some() && !buf.is_empty();
        Poll::Ready(Ok(true))
    }

    /// Writes as much of `pending` as the socket takes, in vectored writes.
    pub(super) fn poll_write(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        self.encode_deferred();
        let mut wrote = false;
        while let Some(front) = self.pending.front() {
            let front = front.bytes();
            // One buffer, the common case for a reply: a plain write
            // (`send`), cheaper in the kernel than a one-element `writev`,
            // and no slice array to fill.
            let written = if self.pending.len() == 1 {
                Pin::new(&mut self.stream).poll_write(cx, front)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.pending.len().min(MAX_SLICES);
                for (slice, item) in slices.iter_mut().zip(self.pending.iter()) {
                    *slice = IoSlice::new(item.bytes());
                }
                Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..count])
            };
            let n = match written {
                Poll::Pending => break,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => n,
            };
            wrote = true;
            self.consume(n);
        }
        if wrote {
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.stream).poll_flush(cx) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drops `n` written bytes from the front of `pending`.
    fn consume(&mut self, n: usize) {
        let (mut left, mut charged) = (n, 0);
        while left > 0 {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            let is_charged = front.charged() > 0;
            let (Item::Bytes(bytes) | Item::Shared(bytes)) = front else {
                break;
            };
            let take = left.min(bytes.len());
            bytes.advance(take);
            left -= take;
            if is_charged {
                charged += take;
            }
            self.partial = !bytes.is_empty();
            if bytes.is_empty() {
                self.pending.pop_front();
            }
        }
        self.conn.member.queue.written(n, charged);
        self.conn.member.wrote();
    }
}
