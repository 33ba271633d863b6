//! `hubbub connect URL`: an interactive WebSocket client. Each line of
//! stdin is sent as a text message; each message received is printed on a
//! line of its own (binary as hex, or raw with `--binary-raw`). On a
//! terminal there is a `> ` prompt and received lines are marked `< `; on a
//! pipe only the messages are printed. At the end of stdin it
//! closes with 1000 and exits once the server answered the close.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hubbub::client::Client;
use hubbub::{CloseCode, CloseInfo, ServerConfig};
use tokio::io::AsyncBufReadExt;
use tokio_rustls::rustls;

/// Options of `hubbub connect`.
#[derive(clap::Args)]
pub(crate) struct ConnectArgs {
    /// The server: `ws://host[:port]/path?query` or `wss://…`.
    url: String,
    /// An extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A subprotocol to offer (repeatable, in order of preference).
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// Trust only the certificates in this PEM file (a private CA, a
    /// self-signed server) for `wss://`.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Do not check the server's certificate at all (testing only).
    #[arg(long)]
    insecure: bool,
    /// Ping the server after this many seconds of silence (0: never).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    ping_interval: u64,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
    /// Print binary messages as they are, instead of as hex.
    #[arg(long)]
    binary_raw: bool,
}

/// Prints one received message as a line. On a terminal it is marked
/// `< `, over the prompt, and the `> ` prompt follows it again.
fn print_line(marked: bool, bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if marked {
        let _ = out.write_all(b"\r< ");
    }
    let _ = out.write_all(bytes);
    let _ = out.write_all(b"\n");
    if marked {
        let _ = out.write_all(b"> ");
    }
    let _ = out.flush();
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) async fn run(args: ConnectArgs) -> ExitCode {
    match connect(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hubbub connect: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(args: ConnectArgs) -> Result<ExitCode, String> {
    let marked = std::io::stdout().is_terminal();
    let mut config = ServerConfig::default()
        .with_ping_interval(
            (args.ping_interval > 0).then(|| Duration::from_secs(args.ping_interval)),
        )
        // A person may type nothing for long: only the server's own
        // timeouts end an idle session.
        .with_idle_timeout(None);
    config.protocol.deflate.enabled = !args.no_deflate;
    let mut client = Client::new(&args.url).with_config(config);
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("--header {header:?}: expected 'Name: value'"))?;
        client = client.header(name.trim(), value.trim());
    }
    for protocol in &args.subprotocols {
        client = client.protocol(protocol);
    }
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        client = client
            .ca_pem(&pem)
            .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    }
    if args.insecure {
        client = client.tls(Arc::new(insecure_config()));
    }
    let closed: Arc<Mutex<Option<CloseInfo>>> = Arc::default();
    let record = closed.clone();
    let ended = Arc::new(tokio::sync::Notify::new());
    let end = ended.clone();
    let binary_raw = args.binary_raw;
    let session = client
        .connect(move |socket| {
            socket.on_message(move |_, text| print_line(marked, text.as_bytes()));
            socket.on_binary(move |_, data| {
                if binary_raw {
                    print_line(marked, &data);
                } else {
                    print_line(marked, hex(&data).as_bytes());
                }
            });
            socket.on_close(move |_, info| {
                *record.lock().unwrap() = Some(info);
                // A permit is kept if nobody waits yet.
                end.notify_one();
            });
        })
        .await
        .map_err(|e| e.to_string())?;
    if std::io::stderr().is_terminal() {
        let protocol = session
            .info()
            .protocol()
            .map(|p| format!(", subprotocol {p}"))
            .unwrap_or_default();
        eprintln!("connected to {}{protocol} (end with Ctrl-D)", args.url);
    }
    if marked {
        print!("> ");
        let _ = std::io::stdout().flush();
    }
    let conn = session.connection().clone();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if conn.send(line).is_err() {
                        break;
                    }
                    if marked {
                        print!("> ");
                        let _ = std::io::stdout().flush();
                    }
                }
                // End of input (or an unreadable stdin): close normally.
                Ok(None) | Err(_) => {
                    let _ = conn.close();
                    break;
                }
            },
            () = ended.notified() => break,
        }
    }
    session.closed().await;
    let info = closed.lock().unwrap().clone();
    Ok(match info {
        Some(info) if info.code == CloseCode::NORMAL && info.clean => ExitCode::SUCCESS,
        Some(info) => {
            eprintln!(
                "hubbub connect: connection closed with {}{}{}",
                info.code,
                if info.reason.is_empty() { "" } else { ": " },
                info.reason
            );
            ExitCode::from(2)
        }
        None => ExitCode::from(2),
    })
}

/// A TLS configuration that accepts any certificate (`--insecure`).
fn insecure_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth()
}

/// Accepts every server certificate; signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
