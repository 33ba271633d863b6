//! The `Stream`/`Sink` view of a connection, for code written the
//! tokio-tungstenite or axum way: [`Socket::stream`] in the setup closure
//! turns the connection's events into a [`WebSocket`].
//!
//! Both directions stay bounded. Inbound, messages wait in a small channel;
//! when it is full the connection stops reading from its socket (the
//! driver waits, as for an async handler) until the stream is polled.
//! Outbound, the sink waits for room in the connection's queue
//! ([`crate::ServerConfig::max_queue_bytes`]) instead of failing, and
//! `flush` waits until the queue is written.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use tokio::sync::mpsc;

use crate::error::{Error, Kind};
use crate::handle::Connection;
use crate::info::CloseInfo;
use crate::message::Message;
use crate::outbox::estimate;
use crate::socket::{Handler, Socket};
use hubbub_proto::CloseCode;

/// Messages the stream holds before the connection stops reading.
const INBOUND: usize = 16;

/// A connection as a [`Stream`] of incoming messages and a [`Sink`] of
/// outgoing ones (see [`Socket::stream`]). The [`Connection`] handle, its
/// info, topics and user data stay available through
/// [`WebSocket::connection`].
///
/// The stream yields text and binary messages (pings are answered and
/// closes handled by the server) and ends after the close handshake; when
/// the connection ended any other way (a drop, a protocol error, a limit)
/// its last item is an error saying how ([`Error::close_info`]).
///
/// Dropping it closes the connection with 1000 (as dropping
/// tokio-tungstenite's stream ends its connection), unless it is closed
/// already: nothing would read what comes next.
pub struct WebSocket {
    conn: Connection,
    inbound: mpsc::Receiver<Message>,
    ended: Arc<Mutex<Option<CloseInfo>>>,
    /// A message given to the sink that did not fit in the queue yet.
    pending: Option<Message>,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Socket {
    /// The connection as a [`WebSocket`]: a `Stream` of messages and a
    /// `Sink` for replies, for code that reads the futures way. It takes
    /// the place of the `on_message`, `on_binary` and `on_close` handlers
    /// (`on_open`, `on_ping`, `on_pong` and `on_error` still run); spawn a
    /// task that drives it.
    ///
    /// ```
    /// use futures_util::{SinkExt, StreamExt};
    ///
    /// let hub = hubbub::Hub::new(|socket| {
    ///     let mut ws = socket.stream();
    ///     tokio::spawn(async move {
    ///         while let Some(Ok(message)) = ws.next().await {
    ///             if ws.send(message).await.is_err() {
    ///                 break;
    ///             }
    ///         }
    ///     });
    /// });
    /// # drop(hub);
    /// ```
    pub fn stream(&mut self) -> WebSocket {
        let (tx, inbound) = mpsc::channel(INBOUND);
        let ended: Arc<Mutex<Option<CloseInfo>>> = Arc::default();
        let text = tx.clone();
        self.handlers.message = Handler::maybe_future(move |_, text_message| {
            forward(&text, Message::Text(text_message))
        });
        self.handlers.binary =
            Handler::maybe_future(move |_, data| forward(&tx, Message::Binary(data)));
        let slot = ended.clone();
        self.handlers.close = Handler::maybe_future(move |_, info| {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
            None
        });
        WebSocket {
            conn: self.conn.clone(),
            inbound,
            ended,
            pending: None,
        }
    }
}

/// Hands a message to the stream: at once when the channel has room, else
/// as a future the driver waits for (reading nothing meanwhile). A stream
/// that was dropped takes nothing.
fn forward(tx: &mpsc::Sender<Message>, message: Message) -> Option<crate::socket::BoxFuture> {
    match tx.try_send(message) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => None,
        Err(mpsc::error::TrySendError::Full(message)) => {
            let tx = tx.clone();
            Some(Box::pin(async move {
                let _ = tx.send(message).await;
            }))
        }
    }
}

impl Drop for WebSocket {
    fn drop(&mut self) {
        // A message given to the sink but never flushed is dropped with it.
        if self.conn.is_open() {
            let _ = self.conn.close();
        }
    }
}

impl WebSocket {
    /// The connection's handle: its id, info, topics, user data, and
    /// sends that do not wait.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Tries to queue the pending message; ready when it is queued (or
    /// failed).
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let Some(message) = self.pending.take() else {
            return Poll::Ready(Ok(()));
        };
        let queue = &self.conn.member.queue;
        if !queue.is_open() {
            return Poll::Ready(Err(Error::new(Kind::Closed)));
        }
        let len = match &message {
            Message::Text(text) => text.len(),
            Message::Binary(data) => data.len(),
        };
        if queue.poll_room(cx, estimate(len)).is_pending() {
            self.pending = Some(message);
            return Poll::Pending;
        }
        Poll::Ready(self.conn.send_message(message))
    }
}

impl Stream for WebSocket {
    type Item = Result<Message, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inbound.poll_recv(cx) {
            Poll::Ready(Some(message)) => Poll::Ready(Some(Ok(message))),
            Poll::Ready(None) => {
                // Every sender is gone with the connection's handlers: it
                // ended, and `on_close` left how.
                let info = self.ended.lock().unwrap_or_else(|p| p.into_inner()).take();
                Poll::Ready(match info {
                    Some(info) if !ended_well(&info) => Some(Err(Error::new(Kind::Ended(info)))),
                    _ => None,
                })
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A close handshake that completed with a code saying all is well.
fn ended_well(info: &CloseInfo) -> bool {
    info.clean
        && [
            CloseCode::NORMAL,
            CloseCode::GOING_AWAY,
            CloseCode::NO_STATUS,
        ]
        .contains(&info.code)
}

impl Sink<Message> for WebSocket {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.pending.is_none() && !this.conn.is_open() {
            return Poll::Ready(Err(Error::new(Kind::Closed)));
        }
        this.poll_pending(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Error> {
        let this = self.get_mut();
        if this.pending.is_some() {
            return Err(Error::new(Kind::InvalidArgument(
                "Sink::start_send without poll_ready".into(),
            )));
        }
        this.pending = Some(message);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        // Everything queued is written (or the connection is closing).
        this.conn
            .member
            .queue
            .poll_room(cx, usize::MAX)
            .map(|()| Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        // Already closing is fine: the close is what was asked for.
        let _ = this.conn.close();
        this.conn
            .member
            .queue
            .poll_room(cx, usize::MAX)
            .map(|()| Ok(()))
    }
}
