//! `hubbub serve`'s settings: flags, then environment variables, then the
//! TOML file named by `--config`, then defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The flags of `hubbub serve`; each can also come from `HUBBUB_*`
/// environment variables or the `--config` file.
#[derive(clap::Args, Default)]
pub(crate) struct ServeArgs {
    /// A TOML file with any of the settings below (keys as the flags, with
    /// `_` for `-`; `allowed_origins` is a list).
    #[arg(long, env = "HUBBUB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (use 0.0.0.0 to accept other machines) [default:
    /// 127.0.0.1].
    #[arg(long, env = "HUBBUB_BIND")]
    bind: Option<String>,
    /// Port to listen on [default: 8181].
    #[arg(long, env = "HUBBUB_PORT")]
    port: Option<u16>,
    /// Also let pages from ORIGIN connect (repeatable, or comma-separated in
    /// HUBBUB_ALLOWED_ORIGIN; `https://*.example.com` for subdomains). The
    /// chat's own page, and clients that send no Origin, are always
    /// allowed; other sites get 403.
    #[arg(
        long = "allowed-origin",
        env = "HUBBUB_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Also answer requests whose Host names NAME (repeatable). On a
    /// loopback address only loopback names are answered by default, so
    /// that a page on another name rebound to 127.0.0.1 (DNS rebinding)
    /// gets 403; elsewhere any name is.
    #[arg(
        long = "allowed-host",
        env = "HUBBUB_ALLOWED_HOST",
        value_name = "NAME",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// Most bytes queued for sending over all connections together
    /// (against slow readers pinning memory); past it the connections
    /// holding the most are closed with 1013 [default: 134217728 (128 MiB)].
    #[arg(long, env = "HUBBUB_MAX_QUEUED_BYTES", value_name = "BYTES")]
    max_queued_bytes: Option<usize>,
    /// Most bytes queued for one connection; past it that connection is
    /// closed with 1008 [default: 1048576 (1 MiB; a message is at most
    /// 64 KiB)].
    #[arg(long, env = "HUBBUB_MAX_QUEUE_BYTES", value_name = "BYTES")]
    max_queue_bytes: Option<usize>,
    /// Close a connection with bytes queued that reads none of them for
    /// this many seconds (a stalled reader; its pings do not count)
    /// [default: 30].
    #[arg(long, env = "HUBBUB_STALL_TIMEOUT", value_name = "SECONDS")]
    stall_timeout: Option<u64>,
    /// Messages per second one connection may send on average (against
    /// floods; 0: no limit); past it the sender is closed with 1008
    /// ("message rate limit") [default: 20].
    #[arg(long, env = "HUBBUB_MESSAGE_RATE", value_name = "PER_SECOND")]
    message_rate: Option<u32>,
    /// Messages one connection may send at once after a quiet spell
    /// [default: 50].
    #[arg(long, env = "HUBBUB_MESSAGE_BURST", value_name = "MESSAGES")]
    message_burst: Option<u32>,
    /// Handshakes in progress from one address (against silent sockets
    /// holding descriptors); past it that address's new sockets are closed
    /// at once [default: 16].
    #[arg(long, env = "HUBBUB_MAX_HANDSHAKES_PER_IP", value_name = "N")]
    max_handshakes_per_ip: Option<usize>,
    /// Open connections from one address (0: no limit; more get 429).
    /// Many users can share an address behind a NAT or a proxy: behind a
    /// proxy of your own, name it with --trusted-proxy [default: 0].
    #[arg(long, env = "HUBBUB_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// A reverse proxy in front of the server (repeatable): for
    /// connections from it, the client's address is taken from
    /// X-Forwarded-For or Forwarded (and from nobody else's).
    #[arg(
        long = "trusted-proxy",
        env = "HUBBUB_TRUSTED_PROXY",
        value_name = "IP",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Serve `wss://` and `https://` with this PEM certificate chain (with
    /// `--tls-key`).
    #[arg(long, env = "HUBBUB_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for `--tls-cert`.
    #[arg(long, env = "HUBBUB_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// With a certificate: serve TLS on this port and keep plain `ws://` on
    /// `--port` (otherwise `--port` itself is TLS).
    #[arg(long, env = "HUBBUB_TLS_PORT")]
    tls_port: Option<u16>,
    /// With a certificate: do not offer HTTP/2 (by ALPN `h2`). By default
    /// a TLS client may choose it, and then opens its WebSockets as
    /// streams of one HTTP/2 connection (RFC 8441).
    #[arg(long)]
    no_h2: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics: a port (9100, on
    /// 127.0.0.1) or an address with a port (0.0.0.0:9100).
    #[arg(long, env = "HUBBUB_METRICS", value_name = "ADDR")]
    metrics: Option<String>,
    /// Join a cluster through this Redis (`redis://127.0.0.1:6379`): rooms
    /// span every `hubbub serve` that names the same Redis, with history,
    /// resume after a reconnect and member counts across the nodes.
    #[arg(long, env = "HUBBUB_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// Join a cluster through a Redis Cluster, given by some of its nodes
    /// (`redis://127.0.0.1:7000,redis://127.0.0.1:7001,…`): each room lives
    /// on the shard that owns its hash slot, with sharded pub/sub (Redis
    /// 7); a master that fails over or a slot that moves is followed.
    #[arg(
        long,
        env = "HUBBUB_REDIS_CLUSTER",
        value_name = "URLS",
        value_delimiter = ','
    )]
    redis_cluster: Vec<String>,
    /// Print the effective settings (as TOML) and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
}

/// The effective settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Settings {
    pub(crate) bind: String,
    pub(crate) port: u16,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) max_queued_bytes: usize,
    pub(crate) max_queue_bytes: usize,
    pub(crate) stall_timeout: u64,
    pub(crate) message_rate: u32,
    pub(crate) message_burst: u32,
    pub(crate) max_handshakes_per_ip: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) trusted_proxies: Vec<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls_port: Option<u16>,
    pub(crate) no_h2: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metrics: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) redis: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) redis_cluster: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1".into(),
            port: 8181,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_queued_bytes: 128 << 20,
            max_queue_bytes: 1 << 20,
            stall_timeout: 30,
            message_rate: 20,
            message_burst: 50,
            max_handshakes_per_ip: 16,
            max_connections_per_ip: 0,
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_port: None,
            no_h2: false,
            metrics: None,
            redis: None,
            redis_cluster: Vec::new(),
        }
    }
}

impl Settings {
    /// Flags and environment (clap has merged those) over the file over
    /// the defaults.
    ///
    /// # Errors
    /// A message naming the file for an unreadable or invalid file, or an
    /// unknown key; and for a certificate without a key or the reverse.
    pub(crate) fn resolve(args: &ServeArgs) -> Result<Self, String> {
        let file = match &args.config {
            None => Self::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("config file {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?
            }
        };
        let settings = Self {
            bind: args.bind.clone().unwrap_or(file.bind),
            port: args.port.unwrap_or(file.port),
            allowed_origins: if args.allowed_origins.is_empty() {
                file.allowed_origins
            } else {
                args.allowed_origins.clone()
            },
            allowed_hosts: if args.allowed_hosts.is_empty() {
                file.allowed_hosts
            } else {
                args.allowed_hosts.clone()
            },
            max_queued_bytes: args.max_queued_bytes.unwrap_or(file.max_queued_bytes),
            max_queue_bytes: args.max_queue_bytes.unwrap_or(file.max_queue_bytes),
            stall_timeout: args.stall_timeout.unwrap_or(file.stall_timeout),
            message_rate: args.message_rate.unwrap_or(file.message_rate),
            message_burst: args.message_burst.unwrap_or(file.message_burst),
            max_handshakes_per_ip: args
                .max_handshakes_per_ip
                .unwrap_or(file.max_handshakes_per_ip),
            max_connections_per_ip: args
                .max_connections_per_ip
                .unwrap_or(file.max_connections_per_ip),
            trusted_proxies: if args.trusted_proxies.is_empty() {
                file.trusted_proxies
            } else {
                args.trusted_proxies.clone()
            },
            tls_cert: args.tls_cert.clone().or(file.tls_cert),
            tls_key: args.tls_key.clone().or(file.tls_key),
            tls_port: args.tls_port.or(file.tls_port),
            no_h2: args.no_h2 || file.no_h2,
            metrics: args.metrics.clone().or(file.metrics),
            redis: args.redis.clone().or(file.redis),
            redis_cluster: if args.redis_cluster.is_empty() {
                file.redis_cluster
            } else {
                args.redis_cluster.clone()
            },
        };
        if settings.redis.is_some() && !settings.redis_cluster.is_empty() {
            return Err("give either --redis (one Redis) or --redis-cluster, not both".into());
        }
        if settings.max_queue_bytes > settings.max_queued_bytes {
            return Err(format!(
                "--max-queue-bytes ({}) is larger than --max-queued-bytes ({}), the total",
                settings.max_queue_bytes, settings.max_queued_bytes
            ));
        }
        if settings.tls_port.is_some() && settings.tls_cert.is_none() {
            return Err("--tls-port needs --tls-cert and --tls-key".into());
        }
        if settings.tls_cert.is_some() != settings.tls_key.is_some() {
            return Err(
                "a TLS certificate needs its key, and a key its certificate: \
                        give both --tls-cert and --tls-key"
                    .into(),
            );
        }
        Ok(settings)
    }

    /// The settings as TOML.
    pub(crate) fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("hubbub-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hubbub.toml");
        std::fs::write(
            &path,
            "port = 9000\nbind = \"0.0.0.0\"\nallowed_origins = [\"https://a.example\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            port: Some(9001),
            ..ServeArgs::default()
        };
        let settings = Settings::resolve(&args).unwrap();
        assert_eq!(settings.port, 9001);
        assert_eq!(settings.bind, "0.0.0.0");
        assert_eq!(settings.allowed_origins, ["https://a.example"]);
        assert_eq!(
            toml::from_str::<Settings>(&settings.to_toml()).unwrap(),
            settings
        );

        std::fs::write(&path, "prot = 1\n").unwrap();
        let err = Settings::resolve(&args).err().unwrap();
        assert!(err.contains("hubbub.toml") && err.contains("prot"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);

        let half = ServeArgs {
            tls_cert: Some("cert.pem".into()),
            ..ServeArgs::default()
        };
        assert!(Settings::resolve(&half).unwrap_err().contains("--tls-key"));

        let both = ServeArgs {
            redis: Some("redis://127.0.0.1:6379".into()),
            redis_cluster: vec!["redis://127.0.0.1:7000".into()],
            ..ServeArgs::default()
        };
        assert!(Settings::resolve(&both).unwrap_err().contains("not both"));
    }
}
