//! Per-connection setup: the handlers a connection's events go to.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;

use bytes::Bytes;
use hubbub_proto::Utf8Bytes;

use crate::error::Error;
use crate::handle::Connection;
use crate::info::{CloseInfo, ConnectionInfo};

/// A boxed handler future.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A handler closure, plain or async: a plain one returns `None`, an
/// async one its future.
type HandlerFn<A> = Box<dyn FnMut(&Connection, A) -> Option<BoxFuture> + Send>;
/// The error handler.
type ErrorFn = Box<dyn FnMut(&Connection, &Error) + Send>;

/// One event's handler, if any: 16 bytes.
pub(crate) struct Handler<A>(Option<HandlerFn<A>>);

/// A handler's panic payload, as text for the log.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

impl<A> Handler<A> {
    /// No handler.
    pub(crate) const NONE: Self = Self(None);

    /// A plain closure.
    fn plain(mut f: impl FnMut(&Connection, A) + Send + 'static) -> Self {
        Self(Some(Box::new(move |conn, arg| {
            f(conn, arg);
            None
        })))
    }

    /// A closure that returns a future only when it has to wait (the
    /// `Stream` view: a full inbound channel).
    pub(crate) fn maybe_future(
        f: impl FnMut(&Connection, A) -> Option<BoxFuture> + Send + 'static,
    ) -> Self {
        Self(Some(Box::new(f)))
    }

    /// An async closure.
    fn future<Fut>(mut f: impl FnMut(Connection, A) -> Fut + Send + 'static) -> Self
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self(Some(Box::new(move |conn, arg| {
            Some(Box::pin(f(conn.clone(), arg)))
        })))
    }

    /// Runs the handler. A plain closure runs to completion here; an async
    /// one returns its future for the driver to poll. A panic is caught and
    /// returned as its message.
    pub(crate) fn call(&mut self, conn: &Connection, arg: A) -> Result<Option<BoxFuture>, String> {
        match &mut self.0 {
            None => Ok(None),
            Some(f) => {
                catch_unwind(AssertUnwindSafe(|| f(conn, arg))).map_err(|p| panic_message(&*p))
            }
        }
    }
}

/// The handlers of one connection.
pub(crate) struct Handlers {
    pub(crate) close: Handler<CloseInfo>,
    pub(crate) message: Handler<Utf8Bytes>,
    pub(crate) binary: Handler<Bytes>,
    /// The handlers most connections never set or need once (`on_open`),
    /// boxed when one is set and freed once `on_open` has run if it was
    /// the only one: 8 bytes, not 64, per open connection.
    rare: Option<Box<RareHandlers>>,
}

/// See [`Handlers::rare`].
pub(crate) struct RareHandlers {
    open: Handler<()>,
    pub(crate) ping: Handler<Bytes>,
    pub(crate) pong: Handler<Bytes>,
    pub(crate) error: Option<ErrorFn>,
}

impl Default for Handlers {
    fn default() -> Self {
        Self {
            close: Handler::NONE,
            message: Handler::NONE,
            binary: Handler::NONE,
            rare: None,
        }
    }
}

impl Handlers {
    fn rare(&mut self) -> &mut RareHandlers {
        self.rare.get_or_insert_with(|| {
            Box::new(RareHandlers {
                open: Handler::NONE,
                ping: Handler::NONE,
                pong: Handler::NONE,
                error: None,
            })
        })
    }

    fn close_slot(&mut self) -> &mut Handler<CloseInfo> {
        &mut self.close
    }

    fn message_slot(&mut self) -> &mut Handler<Utf8Bytes> {
        &mut self.message
    }

    fn binary_slot(&mut self) -> &mut Handler<Bytes> {
        &mut self.binary
    }

    fn ping_slot(&mut self) -> &mut Handler<Bytes> {
        &mut self.rare().ping
    }

    fn pong_slot(&mut self) -> &mut Handler<Bytes> {
        &mut self.rare().pong
    }

    /// The ping, pong and error handlers, if any was set.
    pub(crate) fn rare_mut(&mut self) -> Option<&mut RareHandlers> {
        self.rare.as_deref_mut()
    }

    /// Takes `on_open` (it runs once), freeing the rare handlers' box if
    /// nothing else is in it.
    pub(crate) fn take_open(&mut self) -> Handler<()> {
        let Some(rare) = self.rare.as_mut() else {
            return Handler::NONE;
        };
        let open = std::mem::replace(&mut rare.open, Handler::NONE);
        if rare.ping.0.is_none() && rare.pong.0.is_none() && rare.error.is_none() {
            self.rare = None;
        }
        open
    }
}

macro_rules! handler_setters {
    ($(#[$doc:meta])* $sync:ident, $async_name:ident, $slot:ident, $arg:ty) => {
        $(#[$doc])*
        pub fn $sync<F>(&mut self, handler: F)
        where
            F: FnMut(&Connection, $arg) + Send + 'static,
        {
            *self.handlers.$slot() = Handler::plain(handler);
        }

        $(#[$doc])*
        ///
        /// The async form: the connection's next event waits for the
        /// returned future, other connections never do.
        pub fn $async_name<F, Fut>(&mut self, handler: F)
        where
            F: FnMut(Connection, $arg) -> Fut + Send + 'static,
            Fut: Future<Output = ()> + Send + 'static,
        {
            *self.handlers.$slot() = Handler::future(handler);
        }
    };
}

/// The setup of one connection, given to the closure passed to
/// [`crate::Server::start`] after the request is parsed and before the
/// `101` is sent: attach handlers here, as in Fleck's
/// `socket.OnOpen = …`.
///
/// Each event of a connection runs its handler to completion (async ones
/// included) before the next event of that connection is delivered;
/// `on_open` runs before any message and `on_close` exactly once, last.
///
/// Handlers run on the runtime's worker threads. The connections of
/// hubbub's own listeners share a task per worker (a connection set, as an
/// event loop owns its sockets), so a handler that blocks its thread (a
/// synchronous database call, seconds of CPU) delays every connection of
/// its set: give such work to `tokio::task::spawn_blocking` or a task of its
/// own, or await it in an async handler (`on_message_async`), which holds
/// back only its own connection.
pub struct Socket {
    pub(crate) conn: Connection,
    pub(crate) handlers: Handlers,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Socket {
    /// What the opening handshake told about the connection.
    pub fn info(&self) -> &ConnectionInfo {
        self.conn.info()
    }

    /// The connection's handle (also passed to every handler).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Runs when the connection is open, before any message handler.
    pub fn on_open<F>(&mut self, mut handler: F)
    where
        F: FnMut(&Connection) + Send + 'static,
    {
        self.handlers.rare().open = Handler::plain(move |conn, ()| handler(conn));
    }

    /// Runs when the connection is open, before any message handler; the
    /// async form.
    pub fn on_open_async<F, Fut>(&mut self, mut handler: F)
    where
        F: FnMut(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers.rare().open = Handler::future(move |conn, ()| handler(conn));
    }

    handler_setters!(
        /// Runs once when the connection ends, whatever ended it: a close
        /// from either side, a reset, a protocol error, a limit, shutdown
        /// or a handler panic.
        on_close, on_close_async, close_slot, CloseInfo
    );
    handler_setters!(
        /// Runs for each text message.
        on_message, on_message_async, message_slot, Utf8Bytes
    );
    handler_setters!(
        /// Runs for each binary message.
        on_binary, on_binary_async, binary_slot, Bytes
    );
    handler_setters!(
        /// Runs for each ping (already answered with a pong).
        on_ping, on_ping_async, ping_slot, Bytes
    );
    handler_setters!(
        /// Runs for each pong.
        on_pong, on_pong_async, pong_slot, Bytes
    );

    /// Runs when something goes wrong on the connection: a protocol error
    /// from the peer, a socket error, a full send queue, a handler panic.
    /// `on_close` still follows.
    pub fn on_error<F>(&mut self, handler: F)
    where
        F: FnMut(&Connection, &Error) + Send + 'static,
    {
        self.handlers.rare().error = Some(Box::new(handler));
    }
}
