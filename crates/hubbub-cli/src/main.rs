//! `hubbub`: the chat server (default), an echo server for conformance runs
//! and benchmarks.

#![forbid(unsafe_code)]

mod chat;
mod connect;
mod load;
mod settings;

use settings::{ServeArgs, Settings};

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hubbub::{Server, ServerConfig};

#[derive(Parser)]
#[command(name = "hubbub", version, about = "A fast, strict WebSocket server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The chat server (the default): rooms by path, `/nick NAME`, a JSON
    /// mode (`?format=json`) and the chat page on the same port.
    Serve(Box<ServeArgs>),
    /// Echoes every text and binary message back (for Autobahn and
    /// benchmarks).
    Echo(EchoArgs),
    /// Forwards every text and binary message, unchanged, to every
    /// connected client, sender included (the broadcast benchmark's
    /// server); with `--redis`, to every client of every relay sharing
    /// that Redis.
    Relay(RelayArgs),
    /// Generates load against a server and reports what it measured.
    #[command(subcommand)]
    Load(load::LoadCommand),
    /// An interactive client: sends each line of stdin as a text message,
    /// prints each message received on a line; closes with 1000 at the end
    /// of stdin.
    Connect(connect::ConnectArgs),
}

/// Options of `hubbub relay`.
#[derive(clap::Args)]
struct RelayArgs {
    #[command(flatten)]
    common: EchoArgs,
    /// Relay through this Redis (`redis://127.0.0.1:6379`): every relay
    /// naming it forwards to its own clients what any of them received.
    #[arg(long, value_name = "URL", conflicts_with = "redis_cluster")]
    redis: Option<String>,
    /// Relay through a Redis Cluster, given by some of its nodes
    /// (comma-separated URLs).
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    redis_cluster: Vec<String>,
    /// Relay each client's messages in the room `?room=NAME` of its URL
    /// instead of one shared room (the many-room benchmark); on this node
    /// alone, or through `--redis` / `--redis-cluster`.
    #[arg(long)]
    rooms: bool,
}

#[derive(clap::Args)]
struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, default_value_t = 9001)]
    port: u16,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_message_size: usize,
    /// Most connections at once (a benchmark server: as many as the
    /// open-files limit allows, which caps it anyway; then 503).
    #[arg(long, default_value_t = 1_000_000)]
    max_connections: usize,
    /// Refuse permessage-deflate (compression is on by default, and every
    /// echoed message is compressed, whatever its size).
    #[arg(long)]
    no_deflate: bool,
    /// Let clients keep their compression context between messages (by
    /// default each message is compressed on its own, so that no
    /// decompressor is kept per connection).
    #[arg(long)]
    client_context_takeover: bool,
    /// Serve `wss://` with this PEM certificate chain (with `--tls-key`);
    /// HTTP/2 is offered by ALPN unless `--no-h2`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key for `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// With a certificate: do not offer HTTP/2.
    #[arg(long)]
    no_h2: bool,
}

fn url(bind: &str, port: u16) -> String {
    if bind.contains(':') {
        format!("ws://[{bind}]:{port}")
    } else {
        format!("ws://{bind}:{port}")
    }
}

/// Completes on the first Ctrl-C or SIGTERM (a graceful shutdown starts);
/// a second one ends the process at once.
async fn shutdown_signal() {
    one_signal().await;
    tracing::info!("shutting down gracefully (send the signal again to force)");
    tokio::spawn(async {
        one_signal().await;
        tracing::warn!("second signal: forced shutdown");
        std::process::exit(130);
    });
}

/// Completes on Ctrl-C or SIGTERM.
async fn one_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn serve(args: ServeArgs) -> Result<(), hubbub::Error> {
    let args = match Settings::resolve(&args) {
        Ok(settings) if args.print_config => {
            print!("{}", settings.to_toml());
            return Ok(());
        }
        Ok(settings) => settings,
        Err(e) => return Err(hubbub::Error::from(std::io::Error::other(e))),
    };
    let origins = args.allowed_origins.iter().fold(
        hubbub::OriginPolicy::new().allow_same_origin(true),
        |policy, origin| policy.allow(origin.as_str()),
    );
    let hosts = if args.allowed_hosts.is_empty() {
        hubbub::HostPolicy::LoopbackWhenLocal
    } else {
        hubbub::HostPolicy::Only(args.allowed_hosts.clone())
    };
    let positive = |n: usize| (n > 0).then_some(n);
    let config = ServerConfig::default()
        .with_protocol_config(hubbub::ProtocolConfig::default().with_max_message_size(64 * 1024))
        .with_origins(origins)
        .with_allowed_hosts(hosts)
        .with_max_total_queue_bytes(args.max_queued_bytes)
        .with_max_queue_bytes(args.max_queue_bytes)
        .with_stall_timeout(
            (args.stall_timeout > 0).then(|| Duration::from_secs(args.stall_timeout)),
        )
        .with_message_rate((args.message_rate > 0).then(|| {
            hubbub::RateLimit::new(f64::from(args.message_rate), args.message_burst.max(1))
        }))
        .with_max_handshakes_per_ip(positive(args.max_handshakes_per_ip))
        .with_max_connections_per_ip(positive(args.max_connections_per_ip))
        .with_trusted_proxies(args.trusted_proxies.clone());
    let listen = url(&args.bind, args.port);
    let cannot_listen_here = |e: hubbub::Error| cannot_listen(&listen, &e);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = hubbub::TlsConfig::from_pem_files(cert, key)?.http2(!args.no_h2)?;
            tokio::spawn(reload_certificates(tls.clone()));
            Some(tls)
        }
        _ => {
            // SIGHUP means "reload the certificate"; with none, it must not
            // end the server (the signal's default).
            #[cfg(unix)]
            ignore_hangup();
            None
        }
    };
    let server = match (&tls, args.tls_port) {
        (Some(tls), None) => Server::bind_tls(&listen, tls.clone()).await,
        _ => Server::bind(&listen).await,
    }
    .map_err(cannot_listen_here)?;
    let server = match (tls, args.tls_port) {
        (Some(tls), Some(port)) => {
            let secure = url(&args.bind, port).replacen("ws://", "wss://", 1);
            let server = server
                .also_listen(&secure, Some(tls))
                .await
                .map_err(|e| cannot_listen(&secure, &e))?;
            let addrs = server.local_addrs();
            println!(
                "chat server on ws://{} (page: http://{}/)",
                addrs[0], addrs[0]
            );
            println!(
                "chat server on wss://{} (page: https://{}/)",
                addrs[1], addrs[1]
            );
            server
        }
        (Some(_), None) => {
            let addr = server.local_addr();
            println!("chat server on wss://{addr} (page: https://{addr}/)");
            server
        }
        (None, _) => {
            let addr = server.local_addr();
            println!("chat server on ws://{addr} (page: http://{addr}/)");
            server
        }
    };
    let server = server
        .with_config(config)
        .with_http(chat::http)
        .with_handshake(chat::handshake);
    let redis = match (&args.redis, args.redis_cluster.as_slice()) {
        (Some(url), _) => Some((chat::RedisAt::One(url), url.clone())),
        (None, []) => None,
        (None, urls) => Some((chat::RedisAt::Cluster(urls), urls.join(","))),
    };
    let server = match redis {
        Some((at, named)) => {
            let broker =
                chat::cluster(&at).map_err(|e| hubbub::Error::from(std::io::Error::other(e)))?;
            println!("cluster member through {named} (node {})", broker.node_id());
            server.with_broker(broker)
        }
        None => server,
    };
    let metrics = match &args.metrics {
        Some(at) => Some(metrics_server(at, server.handle()).await?),
        None => None,
    };
    let result = server.start_until(chat::setup, shutdown_signal()).await;
    if let Some((handle, task)) = metrics {
        handle.shutdown();
        let _ = task.await;
    }
    result
}

/// Takes SIGHUP over from its default (terminate) and logs it: a plain
/// server has nothing to reload.
#[cfg(unix)]
fn ignore_hangup() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP ignored: no certificate to reload");
                }
            });
        }
        Err(e) => tracing::warn!("cannot handle SIGHUP: {e}"),
    }
}

/// Reloads the certificate on SIGHUP, and when either file changes
/// (checked every 10 s). A failed reload is logged and the old certificate
/// stays.
async fn reload_certificates(tls: hubbub::TlsConfig) {
    let Some((cert, key)) = tls.files().map(|(c, k)| (c.to_owned(), k.to_owned())) else {
        return;
    };
    let stamp =
        || [&cert, &key].map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok());
    let mut seen = stamp();
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut interval = tokio::time::interval(Duration::from_secs(10));
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        let why = tokio::select! {
            () = hup => "SIGHUP",
            _ = interval.tick() => {
                let now = stamp();
                if now == seen {
                    continue;
                }
                seen = now;
                "the files changed"
            }
        };
        match tls.reload() {
            Ok(()) => tracing::info!("certificate reloaded ({why})"),
            Err(e) => {
                tracing::error!("certificate reload failed ({why}), keeping the old one: {e}")
            }
        }
    }
}

/// A small server of its own answering `GET /metrics` with `of`'s metrics.
/// Where `--metrics` listens: a bare port means 127.0.0.1; an address
/// needs its port (no silent default).
fn metrics_address(at: &str) -> Result<String, String> {
    if let Ok(port) = at.parse::<u16>() {
        return Ok(format!("127.0.0.1:{port}"));
    }
    let has_port = match at.strip_prefix('[') {
        Some(v6) => v6
            .split_once("]:")
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
        None => at
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
    };
    if has_port {
        Ok(at.to_owned())
    } else {
        Err(format!(
            "--metrics {at}: give a port (9100) or an address with a port (127.0.0.1:9100)"
        ))
    }
}

async fn metrics_server(
    at: &str,
    of: hubbub::ServerHandle,
) -> Result<(hubbub::ServerHandle, tokio::task::JoinHandle<()>), hubbub::Error> {
    let at = metrics_address(at).map_err(|e| hubbub::Error::from(std::io::Error::other(e)))?;
    let server = Server::bind(&format!("ws://{at}"))
        .await?
        .with_http(move |request| match request.path() {
            "/metrics" => hubbub::HttpResponse::new(200)
                .header(
                    "Content-Type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(of.metrics()),
            _ => hubbub::HttpResponse::new(404).body("metrics are at /metrics\n"),
        })
        .with_handshake(|_| async { hubbub::Decision::reject(404, "not a WebSocket endpoint") });
    println!("metrics on http://{}/metrics", server.local_addr());
    let handle = server.handle();
    let task = tokio::spawn(async move {
        let _ = server.start(|_| {}).await;
    });
    Ok((handle, task))
}

async fn echo(args: EchoArgs) -> Result<(), hubbub::Error> {
    let protocol = hubbub_proto_config(&args);
    let config = ServerConfig::default()
        .with_protocol_config(protocol)
        .with_max_connections(args.max_connections)
        .with_max_queue_bytes(args.max_message_size.saturating_mul(4))
        .with_close_timeout(Duration::from_secs(5));
    let server = bench_server(&args, config, "echo").await?;
    server
        .start_until(
            |socket| {
                socket.on_message(|conn, text| {
                    let _ = conn.send(text);
                });
                socket.on_binary(|conn, data| {
                    let _ = conn.send_binary(data);
                });
            },
            shutdown_signal(),
        )
        .await
}

/// The listener of `hubbub echo` and `hubbub relay`: `ws://`, or `wss://`
/// (offering HTTP/2 unless `--no-h2`) with a certificate; the first line
/// on stdout says where (`<what> server on ws://…`).
async fn bench_server(
    args: &EchoArgs,
    config: ServerConfig,
    what: &str,
) -> Result<Server, hubbub::Error> {
    let plain = url(&args.bind, args.port);
    let server = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = hubbub::TlsConfig::from_pem_files(cert, key)?.http2(!args.no_h2)?;
            Server::bind_tls(&plain.replacen("ws://", "wss://", 1), tls).await?
        }
        _ => Server::bind(&plain).await?,
    };
    let scheme = if args.tls_cert.is_some() { "wss" } else { "ws" };
    println!("{what} server on {scheme}://{}", server.local_addr());
    Ok(server.with_config(config))
}

async fn relay(args: RelayArgs) -> Result<(), hubbub::Error> {
    const TOPIC: &str = "relay";
    let RelayArgs {
        common: args,
        redis,
        redis_cluster,
        rooms,
    } = args;
    let protocol = hubbub_proto_config(&args);
    let config = ServerConfig::default()
        .with_protocol_config(protocol)
        .with_max_connections(args.max_connections)
        .with_max_queue_bytes(args.max_message_size.saturating_mul(4));
    let server = bench_server(&args, config, "relay").await?;
    let broker = match (redis, redis_cluster.is_empty()) {
        (Some(url), _) => Some(hubbub_redis::RedisBroker::new(
            &url,
            hubbub_redis::RedisConfig::default(),
        )),
        (None, false) => Some(hubbub_redis::RedisBroker::cluster(
            &redis_cluster,
            hubbub_redis::RedisConfig::default(),
        )),
        (None, true) => None,
    };
    let server = match broker {
        Some(broker) => {
            server.with_broker(broker.map_err(|e| hubbub::Error::from(std::io::Error::other(e)))?)
        }
        // Rooms on one node: the hub's own topics.
        None if rooms => server,
        // One node, one room: the registry's broadcast, no topic
        // bookkeeping.
        None => {
            return server
                .start_until(
                    |socket| {
                        socket.on_message(|conn, text| {
                            conn.server().broadcast(text);
                        });
                        socket.on_binary(|conn, data| {
                            conn.server().broadcast(data);
                        });
                    },
                    shutdown_signal(),
                )
                .await;
        }
    };
    server
        .start_until(
            move |socket| {
                // The connection's room: `?room=NAME` with `--rooms`, else
                // the one shared room.
                let room: std::sync::Arc<str> = socket
                    .info()
                    .query()
                    .filter(|_| rooms)
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("room=")))
                    .unwrap_or(TOPIC)
                    .into();
                let (text_room, binary_room) = (room.clone(), room.clone());
                socket.on_open(move |conn| {
                    let _ = conn.subscribe(&room);
                });
                socket.on_message(move |conn, text| {
                    conn.server().publish(&text_room, text);
                });
                socket.on_binary(move |conn, data| {
                    conn.server().publish(&binary_room, data);
                });
            },
            shutdown_signal(),
        )
        .await
}

fn hubbub_proto_config(args: &EchoArgs) -> hubbub::ProtocolConfig {
    let max_message_size = args.max_message_size;
    // The echo server exists for conformance runs and benchmarks: compress
    // every message (threshold 0), as the Autobahn runner expects.
    let mut compression = hubbub::DeflateConfig::default();
    compression.threshold = 0;
    compression.enabled = !args.no_deflate;
    compression.client_no_context_takeover = !args.client_context_takeover;
    hubbub::ProtocolConfig::default()
        .with_max_message_size(max_message_size)
        .with_max_frame_size(max_message_size)
        .with_deflate(compression)
}

/// A bind failure, said once, with what to do about a port in use.
fn cannot_listen(url: &str, e: &hubbub::Error) -> hubbub::Error {
    let hint = match e.io_error().map(std::io::Error::kind) {
        Some(std::io::ErrorKind::AddrInUse) => {
            " (another program listens there: choose another port with --port, or --port 0 for any free one)"
        }
        Some(std::io::ErrorKind::PermissionDenied) => {
            " (ports below 1024 need privileges: choose another with --port)"
        }
        _ => "",
    };
    hubbub::Error::from(std::io::Error::other(format!(
        "cannot listen on {url}: {e}{hint}"
    )))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Some(Command::Connect(_)));
    // Logs go to stderr; stdout carries the address lines and load results.
    // Colours only on a terminal: a log file or a pipe gets plain text.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // The interactive client prints messages, not the log.
                tracing_subscriber::EnvFilter::new(if quiet { "warn" } else { "info" })
            }),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hubbub: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match cli.command {
        Some(Command::Connect(args)) => {
            let code = runtime.block_on(connect::run(args));
            // Reading stdin blocks a thread of the runtime's pool: do not
            // wait for a line that may never come.
            runtime.shutdown_background();
            return code;
        }
        command => Cli { command },
    };
    let result = runtime.block_on(async {
        // No subcommand means `serve`, with its environment variables.
        let command = cli
            .command
            .or_else(|| Cli::parse_from(["hubbub", "serve"]).command)
            .unwrap_or_else(|| Command::Serve(Box::default()));
        match command {
            Command::Serve(args) => serve(*args).await,
            Command::Echo(args) => echo(args).await,
            Command::Relay(args) => relay(args).await,
            Command::Load(command) => load::run(command).await.map_err(|e| {
                eprintln!("hubbub load: {e}");
                hubbub::Error::from(std::io::Error::other(e))
            }),
            Command::Connect(_) => unreachable!("run above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubbub: {e}");
            ExitCode::FAILURE
        }
    }
}
