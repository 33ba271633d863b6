//! A minimal WebSocket client on `hubbub-proto`'s client role, for load.

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use hubbub_proto::handshake::ClientRequest;
use hubbub_proto::{Config, Connection, Event, MessageKind, Role, deflate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One client connection.
pub(crate) struct Client {
    stream: TcpStream,
    proto: Connection,
    input: BytesMut,
    out: BytesMut,
    /// Raw TCP mode: no WebSocket at all; every `raw` bytes read back make
    /// one "message" (for measuring a byte-echo server, the I/O ceiling).
    raw: Option<usize>,
}

fn other(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

impl Client {
    /// Connects to `host:port` and upgrades `path`, offering
    /// permessage-deflate when `compress` is set.
    pub(crate) async fn connect(addr: &str, path: &str, compress: bool) -> io::Result<Self> {
        Self::connect_from(addr, path, compress, None).await
    }

    /// Opens the TCP connection, from `source` when given (any port).
    async fn tcp(addr: &str, source: Option<IpAddr>) -> io::Result<TcpStream> {
        let stream = match source {
            None => TcpStream::connect(addr).await?,
            Some(source) => {
                let target: SocketAddr = addr.parse().map_err(other)?;
                let socket = if source.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(source, 0))?;
                socket.connect(target).await?
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// A raw TCP connection: `queue` writes the payload as it is and
    /// `next` returns every `size` bytes read back as one binary message.
    pub(crate) async fn raw(addr: &str, size: usize) -> io::Result<Self> {
        Ok(Self {
            stream: Self::tcp(addr, None).await?,
            proto: Connection::new(Role::Client, Config::default()),
            input: BytesMut::with_capacity(16 * 1024),
            out: BytesMut::new(),
            raw: Some(size.max(1)),
        })
    }

    /// [`Client::connect`] from a given local address (to spread many
    /// connections over several source addresses).
    pub(crate) async fn connect_from(
        addr: &str,
        path: &str,
        compress: bool,
        source: Option<IpAddr>,
    ) -> io::Result<Self> {
        let mut stream = Self::tcp(addr, source).await?;
        let mut request = ClientRequest::new(addr, path);
        if compress {
            request = request.extension("permessage-deflate; client_max_window_bits");
        }
        let mut out = BytesMut::new();
        request.write(&mut out);
        stream.write_all(&out).await?;
        let config = Config::default()
            .with_max_message_size(256 << 20)
            .with_max_frame_size(256 << 20);
        let mut input = BytesMut::with_capacity(16 * 1024);
        let response = loop {
            if stream.read_buf(&mut input).await? == 0 {
                return Err(other("server closed during the handshake"));
            }
            if let Some(response) = request.parse_response(&mut input, &config).map_err(other)? {
                break response;
            }
        };
        let mut proto = Connection::new(Role::Client, config);
        if let Some(answer) = response.extensions.first() {
            let params = deflate::client_params(answer, 0)
                .ok_or_else(|| other("unacceptable permessage-deflate answer"))?;
            proto.set_deflate(params);
        }
        Ok(Self {
            stream,
            proto,
            input,
            out: BytesMut::new(),
            raw: None,
        })
    }

    /// Whether permessage-deflate was negotiated.
    pub(crate) fn compressed(&self) -> bool {
        self.proto.deflate().is_some()
    }

    /// Queues a message (written by [`Client::flush`]).
    pub(crate) fn queue(&mut self, kind: MessageKind, payload: &[u8]) -> io::Result<()> {
        if self.raw.is_some() {
            self.out.extend_from_slice(payload);
            return Ok(());
        }
        self.proto.send(kind, payload, &mut self.out).map_err(other)
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// An event already in the input buffer, without reading the socket
    /// (anything the protocol must answer, a pong say, is queued for the
    /// next [`Client::flush`]).
    pub(crate) fn buffered(&mut self) -> io::Result<Option<Event>> {
        if let Some(size) = self.raw {
            if self.input.len() >= size {
                return Ok(Some(Event::Binary(self.input.split_to(size).freeze())));
            }
            return Ok(None);
        }
        self.proto
            .read(&mut self.input, &mut self.out)
            .map_err(other)
    }

    /// The next event; `None` when the server closed the connection.
    pub(crate) async fn next(&mut self) -> io::Result<Option<Event>> {
        loop {
            if let Some(event) = self.buffered()? {
                self.flush().await?;
                return Ok(Some(event));
            }
            // Grow by doubling, so that a large message is not copied
            // over and over as it arrives.
            self.input.reserve((16 * 1024).max(self.input.len()));
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Starts a normal close and waits for the server's answer.
    pub(crate) async fn close(mut self) {
        if self.raw.is_some() {
            return;
        }
        if self
            .proto
            .close(Some(hubbub_proto::CloseCode::NORMAL), "", &mut self.out)
            .is_ok()
        {
            let _ = self.flush().await;
            while let Ok(Some(_)) = self.next().await {}
        }
    }
}
