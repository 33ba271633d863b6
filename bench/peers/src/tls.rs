//! Load over TLS, for the HTTP/2 rows: N WebSockets as N streams of one
//! HTTP/2 connection (RFC 8441), or as N TLS connections upgraded over
//! HTTP/1.1; the same framing loop on both (hubbub-proto's client role over
//! hyper's upgraded stream), so that only the transport differs.
//!
//! ```text
//! peer tls <h2|h1> URL CA_PEM N K SIZE SECONDS SERVER_PID
//!     echo: N sockets with K binary messages of SIZE bytes in flight each
//! peer tls-open <h2|h1> URL CA_PEM C SECONDS SERVER_PID
//!     C tasks opening and closing sockets: on one HTTP/2 connection, or
//!     each on a new TLS connection
//! ```
//!
//! Prints one JSON line with the rate and the server's CPU time per message
//! (or per socket opened), from `/proc/SERVER_PID/stat`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::Empty;
use hubbub_proto::{Config, Connection, Event, Role};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use crate::client::cpu_time;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Io = TokioIo<hyper::upgrade::Upgraded>;

/// Counts `counter` over a window of `seconds` after a 0.3 s warm-up, then
/// stops the `tasks`; the JSON line with the rate of `what`s
/// (`"<what>s_per_second"`) and the server's CPU time per one.
async fn measured<T>(
    counter: &AtomicU64,
    stop: &AtomicBool,
    tasks: &[tokio::task::JoinHandle<T>],
    seconds: f64,
    pid: u32,
    what: &str,
) -> Result<String, BoxError> {
    let pid = pid.to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (count0, cpu0, t0) = (
        counter.load(Ordering::Relaxed),
        cpu_time(&pid),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let (count1, cpu1) = (counter.load(Ordering::Relaxed), cpu_time(&pid));
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    if tasks.iter().any(tokio::task::JoinHandle::is_finished) {
        return Err(format!("a {what} task ended early").into());
    }
    let count = count1 - count0;
    if count == 0 {
        return Err(format!("no {what} in the window").into());
    }
    Ok(format!(
        "{{\"{what}s_per_second\": {:.1}, \"server_cpu_us_per_{what}\": {:.3}}}",
        count as f64 / elapsed.as_secs_f64(),
        (cpu1 - cpu0).as_secs_f64() * 1e6 / count as f64
    ))
}

/// A TLS connection to `host:port` trusting `ca`, offering `alpn`.
async fn tls_connect(
    addr: &str,
    ca: &[u8],
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, BoxError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?)
}

/// An HTTP/2 connection's request sender.
async fn h2_connection(
    addr: &str,
    ca: &[u8],
) -> Result<hyper::client::conn::http2::SendRequest<Empty<Bytes>>, BoxError> {
    let tls = tls_connect(addr, ca, b"h2").await?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A WebSocket as one stream of an HTTP/2 connection.
async fn open_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    addr: &str,
) -> Result<Io, BoxError> {
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .version(http::Version::HTTP_2)
        .uri(format!("https://{addr}/"))
        .header("sec-websocket-version", "13")
        .body(Empty::new())?;
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("CONNECT answered {}", response.status()).into());
    }
    Ok(TokioIo::new(hyper::upgrade::on(response).await?))
}

/// A WebSocket on a new TLS connection, upgraded over HTTP/1.1.
async fn open_h1(addr: &str, ca: &[u8]) -> Result<Io, BoxError> {
    let tls = tls_connect(addr, ca, b"http/1.1").await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let request = http::Request::get(format!("https://{addr}/"))
        .header("host", addr)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("upgrade answered {}", response.status()).into());
    }
    Ok(TokioIo::new(hyper::upgrade::on(response).await?))
}

/// K binary messages of SIZE bytes in flight; one more for each echo,
/// until `stop`. Counts echoes in `received`.
async fn echo_loop(
    mut io: Io,
    k: usize,
    size: usize,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<(), BoxError> {
    let mut proto = Connection::new(Role::Client, Config::default());
    let payload = vec![7u8; size];
    let mut out = BytesMut::new();
    for _ in 0..k {
        proto.send_binary(&payload, &mut out)?;
    }
    io.write_all(&out).await?;
    out.clear();
    let mut input = BytesMut::with_capacity(64 * 1024);
    while !stop.load(Ordering::Relaxed) {
        if io.read_buf(&mut input).await? == 0 {
            return Err("the server ended the stream".into());
        }
        loop {
            match proto.read(&mut input, &mut out)? {
                Some(Event::Binary(_)) => {
                    received.fetch_add(1, Ordering::Relaxed);
                    proto.send_binary(&payload, &mut out)?;
                }
                Some(_) => {}
                None => break,
            }
        }
        if !out.is_empty() {
            io.write_all(&out).await?;
            out.clear();
        }
    }
    Ok(())
}

/// Closes a WebSocket with 1000 and waits for the server's close.
async fn close(mut io: Io) -> Result<(), BoxError> {
    let mut proto = Connection::new(Role::Client, Config::default());
    let mut out = BytesMut::new();
    proto.close(Some(hubbub_proto::CloseCode::NORMAL), "", &mut out)?;
    io.write_all(&out).await?;
    let mut input = BytesMut::new();
    loop {
        if io.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        if let Some(Event::Close(_)) = proto.read(&mut input, &mut out)? {
            return Ok(());
        }
    }
}

/// `peer tls`: the echo load. Returns the JSON line.
#[expect(
    clippy::too_many_arguments,
    reason = "the command line's arguments, in its order"
)]
pub(crate) async fn echo(
    transport: &str,
    url: &str,
    ca: &[u8],
    n: usize,
    k: usize,
    size: usize,
    seconds: f64,
    pid: u32,
) -> Result<String, BoxError> {
    let addr = url
        .trim_start_matches("wss://")
        .trim_end_matches('/')
        .to_owned();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut sockets = Vec::with_capacity(n);
    if transport == "h2" {
        let mut sender = h2_connection(&addr, ca).await?;
        for _ in 0..n {
            sockets.push(open_h2(&mut sender, &addr).await?);
        }
    } else {
        for _ in 0..n {
            sockets.push(open_h1(&addr, ca).await?);
        }
    }
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|io| tokio::spawn(echo_loop(io, k, size, received.clone(), stop.clone())))
        .collect();
    measured(&received, &stop, &tasks, seconds, pid, "message").await
}

/// `peer tls-open`: sockets opened (and closed) per second.
pub(crate) async fn open(
    transport: &str,
    url: &str,
    ca: &[u8],
    concurrency: usize,
    seconds: f64,
    pid: u32,
) -> Result<String, BoxError> {
    let addr = url
        .trim_start_matches("wss://")
        .trim_end_matches('/')
        .to_owned();
    let opened = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let h2 = transport == "h2";
    let sender = if h2 {
        Some(h2_connection(&addr, ca).await?)
    } else {
        None
    };
    let ca: Arc<[u8]> = ca.into();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (opened, stop, addr, ca) = (opened.clone(), stop.clone(), addr.clone(), ca.clone());
            let mut sender = sender.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let io = match &mut sender {
                        Some(sender) => open_h2(sender, &addr).await?,
                        None => open_h1(&addr, &ca).await?,
                    };
                    close(io).await?;
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), BoxError>(())
            })
        })
        .collect();
    measured(&opened, &stop, &tasks, seconds, pid, "upgrade").await
}
