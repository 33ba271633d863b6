//! The crate's uses of `unsafe`, all for the sockets a connection set
//! polls itself (the `set` module's `SetStream`): a socket read into the
//! unfilled, uninitialised part of a [`ReadBuf`], and the registration of
//! the set's `epoll` instance and of the listeners with tokio (tokio's
//! `AsyncFd::register` is `unsafe`: the descriptor must stay open for as
//! long as it is registered).
//!
//! **The read.**
//! The safe way, `ReadBuf::initialize_unfilled`, zeroes the whole unfilled
//! part before every read: the driver reads into a 64 KiB buffer, so that
//! is 64 KiB of `memset` per read, 0.41 µs of server CPU per message and
//! 6 % of the one-in-flight echo row (BENCHMARKS.md, "Why `unsafe`, and
//! only there"). tokio's own `TcpStream` reads into uninitialised memory the same
//! way; a socket the set owns cannot use it without paying for tokio's
//! per-socket state, which is what the set saves.
//!
//! `recv_zeroing`, the safe version, is kept for the test that holds both
//! to the same bytes.
#![allow(
    unsafe_code,
    reason = "a read into uninitialised memory; registering owned descriptors"
)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, ReadBuf};

/// A value that owns its descriptor: it stays open, and `as_raw_fd`
/// returns it, until the value is dropped.
pub(crate) trait OwnsFd: AsRawFd {}

/// A connection set's `epoll` instance.
impl OwnsFd for mio::Poll {}

/// A listener.
impl OwnsFd for mio::net::TcpListener {}

/// `inner`, registered with tokio for reading (a connection set's `epoll`
/// instance, a listener).
pub(crate) fn register<T: OwnsFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `T` owns its descriptor (`OwnsFd`), and the `AsyncFd` drops
    // it only as it is dropped itself: the descriptor stays open and the
    // same for as long as it is registered.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(Into::into)
}

/// Reads once from `socket` into `buf`'s unfilled part; returns how many
/// bytes arrived (0 at the end of the stream).
pub(crate) fn recv(socket: &impl AsFd, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    let sock = socket2::SockRef::from(socket);
    // SAFETY: `recv` only writes into the slice (it never de-initialises a
    // byte that was initialised), as `unfilled_mut` requires.
    let unfilled = unsafe { buf.unfilled_mut() };
    let n = sock.recv(unfilled)?;
    // SAFETY: `recv` returned `n`: the kernel wrote the first `n` bytes of
    // the unfilled part (socket2 documents `recv` as initialising exactly
    // the bytes it reports).
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(n)
}

/// [`recv`] the safe way, zeroing the unfilled part first.
#[cfg(test)]
pub(crate) fn recv_zeroing(socket: &impl AsFd, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    let sock = socket2::SockRef::from(socket);
    let unfilled = buf.initialize_unfilled();
    let n = io::Read::read(&mut &*sock, unfilled)?;
    buf.advance(n);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::mem::MaybeUninit;
    use std::os::unix::net::UnixStream;

    use super::*;

    /// The same bytes, in the same reads, through both: a stream of every
    /// byte value, read in pieces of varying size into buffers that start
    /// uninitialised.
    #[test]
    fn the_unsafe_read_gets_what_the_safe_one_gets() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut got = [Vec::new(), Vec::new()];
        for (which, got) in got.iter_mut().enumerate() {
            let (mut tx, rx) = UnixStream::pair().unwrap();
            let writer = {
                let data = data.clone();
                std::thread::spawn(move || tx.write_all(&data).unwrap())
            };
            let mut size = 1;
            loop {
                let mut storage = vec![MaybeUninit::<u8>::uninit(); size];
                let mut buf = ReadBuf::uninit(&mut storage);
                let n = if which == 0 {
                    recv(&rx, &mut buf).unwrap()
                } else {
                    recv_zeroing(&rx, &mut buf).unwrap()
                };
                assert_eq!(buf.filled().len(), n);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(buf.filled());
                size = size * 3 % 70_001 + 1;
            }
            writer.join().unwrap();
        }
        assert_eq!(got[0], data);
        assert_eq!(got[1], data);
    }
}
