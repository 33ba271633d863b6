//! Socket reads into the worker thread's buffer, and vectored writes.

use std::cell::{Cell, RefCell};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
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

/// Smallest buffer worth keeping for the next large message.
const SPARE_MIN: usize = 128 * 1024;

/// Largest buffer a worker thread keeps: what glibc's allocator would keep
/// of a freed block of this size anyway (its trim threshold follows its
/// mmap threshold, up to twice the largest block freed).
const SPARE_MAX: usize = 4 * 1024 * 1024;

thread_local! {
    /// The worker thread's read buffer, shared by every connection that
    /// thread drives: one read at a time, no `.await` while borrowed.
    static READ_BUF: RefCell<BytesMut> = RefCell::new(BytesMut::new());

    /// The allocation of a large payload this thread wrote, or delivered
    /// to a handler that let it go, once nobody else held it (see
    /// [`recycle`]), kept for the next large message to arrive (see
    /// [`grow`]): one per thread, at most [`SPARE_MAX`].
    static SPARE: Cell<Option<BytesMut>> = const { Cell::new(None) };

    /// A large message just handed to a handler, held until the thread's
    /// next read (whichever connection's): if the handler kept no copy by
    /// then, its memory becomes the spare.
    static RECEIVED: Cell<Option<Bytes>> = const { Cell::new(None) };
}

/// Remembers a message handed to a handler, to recycle its memory at the
/// thread's next read (see [`RECEIVED`]); small ones are not worth it.
pub(super) fn hold_received(message: &Bytes) {
    if message.len() >= SPARE_MIN {
        RECEIVED.set(Some(message.clone()));
    }
}

/// Makes room for `additional` more bytes in `input`: in the thread's spare
/// buffer when `input` would have to move, the request is a large one (at
/// least [`READ_BUFFER`]) and the spare is large enough (the data moves
/// once, as a reallocation would move it), else as [`BytesMut::reserve`]
/// does.
///
/// A large message arrives into the same memory each time, still mapped and
/// warm, instead of a fresh block from the allocator (and, on the server,
/// the copies of growing one by doubling). Measured on the 1 MiB echo: see
/// BENCHMARKS.md, "The 1 MiB echo row".
fn grow(input: &mut BytesMut, additional: usize) {
    if input.capacity() - input.len() >= additional {
        return;
    }
    let want = input.len() + additional;
    // A small partial frame (the end of a read of small messages) would
    // take the whole spare and, once done, free it.
    if want < READ_BUFFER {
        input.reserve(additional);
        return;
    }
    if let Some(mut spare) = SPARE.take() {
        if spare.capacity() >= want {
            spare.extend_from_slice(input);
            *input = spare;
            return;
        }
        SPARE.set(Some(spare));
    }
    input.reserve(additional);
}

/// Keeps a payload's allocation (written, or received and let go of by its
/// handler) as the thread's spare when nobody else holds it and its size is
/// worth keeping; of two, the larger stays (it serves more messages).
fn recycle(payload: Bytes) {
    let Ok(mut buf) = payload.try_into_mut() else {
        return;
    };
    buf.clear();
    // Asking for one byte more than is left past the written end rewinds
    // to the allocation's start (it is ours alone: no allocation, no copy).
    if buf.try_reclaim(buf.capacity() + 1) && (SPARE_MIN..=SPARE_MAX).contains(&buf.capacity()) {
        let spare = SPARE.take();
        SPARE.set(match spare {
            Some(kept) if kept.capacity() > buf.capacity() => Some(kept),
            _ => Some(buf),
        });
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    /// Reads once into the thread's buffer and delivers what arrived.
    /// `Ok(true)`: bytes arrived; `Ok(false)`: end of stream.
    pub(super) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        // The last large message this thread delivered: its read is over
        // (its buffer's handle gone), so it is unique if its handler let
        // it go.
        if let Some(message) = RECEIVED.take() {
            recycle(message);
        }
        if !self.leftover.is_empty() {
            // A partial frame is waiting: read straight after it.
            let mut input = std::mem::take(&mut self.leftover);
            let additional = match self.announced_end() {
                // Room past the message's end too: a read that fills the
                // buffer exactly leaves the socket marked readable, and the
                // next read is a wasted call that finds nothing.
                Some(end) => end.saturating_sub(input.len()) + SLACK,
                // Room left: read into it. Full: grow by doubling, so a
                // large message left whole in the buffer is copied O(1)
                // times as it arrives, not once per read, and memory
                // follows what arrived, not what was announced.
                None if input.capacity() - input.len() >= SLACK => 0,
                None => input.len().max(4096),
            };
            grow(&mut input, additional);
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
                    let additional = match self.announced_end() {
                        Some(end) => end + SLACK,
                        // A read that took most of the buffer and left a
                        // frame unfinished: more of a large message is on
                        // its way; room for it to double (the spare, if the
                        // thread has one), so it moves once, not twice.
                        None if buf.len() >= READ_BUFFER / 2 => 2 * buf.len(),
                        None => buf.len(),
                    };
                    grow(&mut self.leftover, additional);
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
            // Written in more than one call, or one large one: a large
            // buffer, whose memory may serve the next large message.
            let large = self.partial || take >= SPARE_MIN;
            self.partial = !bytes.is_empty();
            if bytes.is_empty()
                && let Some(Item::Bytes(done)) = self.pending.pop_front()
                && large
            {
                recycle(done);
            }
        }
        self.conn.member.queue.written(n, charged);
        self.conn.member.wrote();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A written payload of `len` bytes as the driver holds it at the end:
    /// split from a receive buffer (grown by doubling: as much room again
    /// past it), frozen, advanced to its end.
    fn written(len: usize) -> (Bytes, *const u8) {
        let mut input = BytesMut::with_capacity(2 * len + 100);
        let start = input.as_ptr();
        input.extend_from_slice(&[7; 14]);
        input.resize(14 + len, 1);
        input.advance(14);
        let mut payload = input.split_to(len).freeze();
        drop(input);
        payload.advance(len);
        (payload, start)
    }

    #[test]
    fn a_written_large_payload_receives_the_next_large_message_in_place() {
        SPARE.take();
        let (payload, start) = written(1 << 20);
        recycle(payload);
        let mut input = BytesMut::new();
        input.extend_from_slice(&[3; 100]);
        grow(&mut input, 1 << 20);
        // The whole allocation, from its start, with what was there.
        assert_eq!(input.as_ptr(), start);
        assert!(input.capacity() >= (1 << 20) + 100);
        assert_eq!(&input[..], &[3; 100][..]);
        // Taken: the thread has no spare until a payload is recycled.
        let mut other = BytesMut::new();
        grow(&mut other, 1 << 20);
        assert_ne!(other.as_ptr(), start);
    }

    #[test]
    fn a_payload_still_held_elsewhere_or_of_the_wrong_size_is_not_kept() {
        SPARE.take();
        let (payload, _) = written(1 << 20);
        let held = payload.clone();
        recycle(payload);
        assert!(SPARE.take().is_none());
        drop(held);

        let (small, _) = written(SPARE_MIN / 4);
        recycle(small);
        assert!(SPARE.take().is_none());

        let (huge, _) = written(SPARE_MAX);
        recycle(huge);
        assert!(SPARE.take().is_none());
    }

    #[test]
    fn a_small_partial_frame_leaves_the_spare_for_a_large_message() {
        SPARE.take();
        let (payload, start) = written(1 << 20);
        recycle(payload);
        let mut partial = BytesMut::new();
        grow(&mut partial, 10);
        assert_ne!(partial.as_ptr(), start);
        let mut large = BytesMut::new();
        grow(&mut large, 2 * READ_BUFFER);
        assert_eq!(large.as_ptr(), start);
    }

    #[test]
    fn a_spare_too_small_for_the_request_stays_for_a_later_one() {
        SPARE.take();
        let (payload, start) = written(256 << 10);
        recycle(payload);
        let mut input = BytesMut::new();
        grow(&mut input, 1 << 20);
        assert_ne!(input.as_ptr(), start);
        let mut next = BytesMut::new();
        grow(&mut next, 128 << 10);
        assert_eq!(next.as_ptr(), start);
    }
}
