//! HTTP/2 on hubbub's own TLS listener (feature `http2`): a TLS connection
//! that chose `h2` by ALPN is served by hyper's HTTP/2 server with the
//! extended CONNECT protocol on (RFC 8441). Each WebSocket is one stream of
//! it, answered by the same code as any upgrade through hyper
//! ([`crate::hyper`]); a `GET` or `HEAD` gets the hub's plain-HTTP answer,
//! as on HTTP/1.1.
//!
//! The limits of one HTTP/2 connection (hyper's defaults are raised or
//! lowered to these, so that one client cannot hold much more than its
//! sockets' own queues):
//!
//! | limit | value |
//! |---|---|
//! | concurrent streams (sockets and requests) | [`MAX_STREAMS`] |
//! | flow-control window per stream | [`STREAM_WINDOW`] |
//! | flow-control window of the connection | `MAX_STREAMS × STREAM_WINDOW`, so that streams whose sockets are not read (a handler waiting, a full stream) never use up the others' window |
//! | header list | `max_handshake_size` of the protocol configuration |
//! | streams reset by the client before they are answered | [`MAX_PENDING_RESETS`] (the "rapid reset" attack) |
//! | keepalive | an HTTP/2 PING every `ping_interval`; the connection is dropped when one is not answered within `idle_timeout` |
//! | first request | within `handshake_timeout` of the TLS handshake, or the connection is dropped |
//! | idle | a connection with no socket open and no request in progress for `handshake_timeout` is closed (GOAWAY), so that connections that hold nothing do not pile up |

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};

use crate::handshake::{Service, check_host, plain_http, upgrade_required};
use crate::hook::text_response;
use crate::hub::HandshakePermit;
use crate::hyper::{Carrier, answer, convert, to_request};
use crate::info::StreamInfo;
use crate::serve::{Hub, counted};
use crate::task::start_background;

/// Streams one HTTP/2 connection may have open at once.
pub const MAX_STREAMS: u32 = 128;

/// The flow-control window of each stream: what a client may send on a
/// socket before the server has read it.
pub const STREAM_WINDOW: u32 = 256 * 1024;

/// Streams a client may reset before the server answers them, at once.
pub const MAX_PENDING_RESETS: usize = 32;

/// The ALPN protocols of a TLS listener that serves HTTP/2 too, in order of
/// preference.
pub(crate) const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

impl Hub {
    /// Serves an HTTP/2 connection (its first bytes are the client's
    /// preface) until it ends, with the limits above: WebSockets opened as
    /// its streams by extended CONNECT (RFC 8441), and plain `GET`/`HEAD`
    /// answered by the hub's HTTP handler. For a stream whose TLS chose
    /// `h2` by ALPN, or cleartext HTTP/2 with prior knowledge (behind a
    /// proxy that terminates TLS). The connection counts as a handshake in
    /// progress until its first request, which must come within
    /// [`crate::ServerConfig::handshake_timeout`].
    ///
    /// ```no_run
    /// # async fn f(hub: hubbub::Hub) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// loop {
    ///     let (stream, peer) = listener.accept().await?;
    ///     tokio::spawn(hub.serve_http2(stream, peer));
    /// }
    /// # }
    /// ```
    pub fn serve_http2<S>(
        &self,
        stream: S,
        from: impl Into<StreamInfo>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let from = from.into();
        let service = self.service().clone();
        let permit = self.handshake_permit(&from);
        async move {
            start_background(&service);
            let Some(permit) = counted(&service, permit, &from) else {
                return;
            };
            let deadline = Instant::now() + service.config.handshake_timeout;
            serve(stream, from, service, deadline, Some(permit)).await;
        }
    }
}

/// Serves one HTTP/2 connection until it ends. `permit` (its place among
/// the handshakes in progress) is given back at its first request, which
/// must come by `deadline`.
pub(crate) async fn serve<S>(
    stream: S,
    from: StreamInfo,
    service: Arc<Service>,
    deadline: Instant,
    permit: Option<HandshakePermit>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &service.config;
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .enable_connect_protocol()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(STREAM_WINDOW.saturating_mul(MAX_STREAMS))
        .max_header_list_size(u32::try_from(config.protocol.max_handshake_size).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .keep_alive_interval(config.ping_interval);
    if let Some(idle) = config.idle_timeout {
        builder.keep_alive_timeout(idle);
    }
    let first = Arc::new(Mutex::new(permit));
    let served = service.clone();
    let waiting = first.clone();
    let activity = Arc::new(Activity::default());
    let active = activity.clone();
    let handler = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        // The first request ends the connection's handshake.
        drop(waiting.lock().unwrap_or_else(|p| p.into_inner()).take());
        let service = served.clone();
        // Held while the request is answered, and by its socket if it
        // opens one.
        let busy = Busy::new(&active);
        async move { Ok::<_, Infallible>(respond(service, request, from, busy).await) }
    });
    let shutdown = service.hub.shutdown.clone();
    let connection = builder.serve_connection(TokioIo::new(Coalesce::new(stream)), handler);
    tokio::pin!(connection);
    let peer = from.peer();
    // Until the first request, the handshake's deadline.
    let ended = tokio::select! {
        ended = &mut connection => Some(ended),
        () = tokio::time::sleep_until(deadline) => None,
        () = shutdown.cancelled() => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None if first.lock().unwrap_or_else(|p| p.into_inner()).is_some() => {
            tracing::debug!(%peer, "HTTP/2: no request before the handshake timeout or the shutdown: dropping connection");
            return;
        }
        // At the hub's shutdown, or once idle, a GOAWAY: no new streams;
        // the connection ends once its sockets (closed with 1001 by the
        // shutdown) have.
        None => {
            let ended = tokio::select! {
                ended = &mut connection => Some(ended),
                () = shutdown.cancelled() => None,
                () = activity.idle_for(config.handshake_timeout) => {
                    tracing::debug!(%peer, "HTTP/2: idle, no socket open: closing");
                    None
                }
            };
            match ended {
                Some(ended) => ended,
                None => {
                    // GOAWAY, then the end once the client has seen it
                    // (hyper waits for a PING's answer) and the sockets
                    // have closed; a client that answers nothing is dropped
                    // after the close timeout (or the shutdown's grace).
                    connection.as_mut().graceful_shutdown();
                    let limit = config.close_timeout.max(config.shutdown_grace);
                    let Ok(ended) = tokio::time::timeout(limit, &mut connection).await else {
                        tracing::debug!(%peer, "HTTP/2: no answer to the GOAWAY: dropping connection");
                        return;
                    };
                    ended
                }
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, "HTTP/2 connection ended: {e}");
    }
}

/// The answer to one request on an HTTP/2 connection.
async fn respond(
    service: Arc<Service>,
    mut request: http::Request<Incoming>,
    from: StreamInfo,
    busy: Busy,
) -> http::Response<Full<Bytes>> {
    let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    let (parts, _body) = request.into_parts();
    let parsed = to_request(&parts);
    if parts.method == http::Method::CONNECT {
        let deadline = Instant::now() + service.config.handshake_timeout;
        let answered = answer(service, parsed, Carrier::of(&parts), on_upgrade, from, busy);
        return timeout_at(deadline, answered)
            .await
            .unwrap_or_else(|_| convert(text_response(503, "handshake timeout")));
    }
    let refused = |response: crate::HttpResponse| {
        service.hub.metrics.rejected(response.status);
        convert(response)
    };
    let request = match parsed {
        Ok(request) => request,
        Err(e) => return refused(e.response()),
    };
    if let Err(response) = check_host(&service, &request, &from) {
        return refused(response);
    }
    let head_only = parts.method == http::Method::HEAD;
    if parts.method != http::Method::GET && !head_only {
        return refused(
            text_response(405, "only GET, HEAD and CONNECT are answered")
                .header("Allow", "GET, HEAD, CONNECT"),
        );
    }
    let mut response = match plain_http(service.http.as_ref(), &request, from.peer()) {
        Some(response) => convert(response),
        None => refused(upgrade_required()),
    };
    if head_only {
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

/// What an HTTP/2 connection has going on: requests being answered and
/// sockets open ([`Busy`] guards), so that an idle one can be closed.
#[derive(Default)]
struct Activity {
    busy: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Activity {
    /// Resolves once nothing has been going on for `quiet`.
    async fn idle_for(&self, quiet: std::time::Duration) {
        use std::sync::atomic::Ordering;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.busy.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    () = tokio::time::sleep(quiet) => {
                        if self.busy.load(Ordering::Acquire) == 0 {
                            return;
                        }
                    }
                    () = &mut changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One request in progress or one socket open on an HTTP/2 connection.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Self {
        activity
            .busy
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        activity.changed.notify_waiters();
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// Most bytes [`Coalesce`] gathers before it writes.
const COALESCE_LIMIT: usize = 64 * 1024;

/// The HTTP/2 connection's transport, gathering what it writes: hyper's
/// HTTP/2 connection flushes each time one of its streams hands it data,
/// which on a busy connection meant a `writev` (and a TLS record) for a
/// few messages. Here a flush first yields once to the runtime, so that the
/// other streams' drivers that are ready run and add their data, and then
/// writes all of it at once. Writes are bounded by [`COALESCE_LIMIT`]; a
/// yield costs one pass of the scheduler, not a timer.
struct Coalesce<S> {
    inner: S,
    buf: Vec<u8>,
    /// Whether the pending flush already yielded once.
    yielded: bool,
}

impl<S> Coalesce<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            yielded: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out what was gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.buf.drain(..n);
        }
        if self.buf.capacity() > COALESCE_LIMIT {
            self.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() >= COALESCE_LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        // Below the limit here: room for at least one byte.
        let n = data.len().min(COALESCE_LIMIT - this.buf.len());
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.buf.is_empty() && !this.yielded {
            // Let the other ready streams add theirs first.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records each write it was given.
    #[derive(Default)]
    struct Recorder(Vec<Vec<u8>>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.0.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Writes are gathered; a flush yields once (waking itself), then
    /// writes them all in one write, in order; the limit bounds a write.
    #[test]
    fn writes_are_gathered_until_a_flush_after_one_yield() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut io = Coalesce::new(Recorder::default());
        let mut pinned = Pin::new(&mut io);
        for part in [&b"ab"[..], b"cd", b"ef"] {
            assert!(matches!(
                pinned.as_mut().poll_write(&mut cx, part),
                Poll::Ready(Ok(2))
            ));
        }
        assert!(
            pinned.as_mut().poll_flush(&mut cx).is_pending(),
            "yields once"
        );
        assert!(pinned.inner.0.is_empty());
        assert!(matches!(
            pinned.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(pinned.inner.0, [b"abcdef".to_vec()]);
        // An empty flush does not yield.
        assert!(matches!(
            pinned.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        // Past the limit, the gathered bytes are written before more are
        // taken.
        let big = vec![7u8; COALESCE_LIMIT];
        assert!(matches!(
            pinned.as_mut().poll_write(&mut cx, &big),
            Poll::Ready(Ok(n)) if n == COALESCE_LIMIT
        ));
        assert!(matches!(
            pinned.as_mut().poll_write(&mut cx, b"x"),
            Poll::Ready(Ok(1))
        ));
        assert_eq!(pinned.inner.0.len(), 2);
        assert_eq!(pinned.inner.0[1].len(), COALESCE_LIMIT);
    }
}
