//! Your own TLS: a tokio-rustls acceptor you configure (certificates,
//! versions, ALPN, client auth) hands each stream to a hub, which speaks
//! WebSocket over it (`wss://`).
//!
//! `cargo run --release -p hubbub --example tls_acceptor -- CERT.pem KEY.pem [PORT]`
//! (default 9443) listens on 127.0.0.1 and echoes.

use std::sync::Arc;

use hubbub::{Hub, StreamInfo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(cert), Some(key)) = (args.next(), args.next()) else {
        return Err("usage: tls_acceptor CERT.pem KEY.pem [PORT]".into());
    };
    let port: u16 = args.next().map_or(Ok(9443), |p| p.parse())?;
    let chain = CertificateDer::pem_file_iter(&cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let hub = Hub::new(|socket| {
        socket.on_message(|conn, text| {
            let _ = conn.send(text);
        });
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let local = listener.local_addr()?;
    println!("TLS echo on wss://{local}");
    loop {
        let (tcp, peer) = listener.accept().await?;
        let (acceptor, hub) = (acceptor.clone(), hub.clone());
        tokio::spawn(async move {
            // Your acceptor, your timeouts: bound the TLS handshake too.
            let accepted =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await;
            match accepted {
                Ok(Ok(tls)) => {
                    let from = StreamInfo::new(peer).local(local).secure(true);
                    hub.serve_stream(tls, from).await;
                }
                Ok(Err(e)) => eprintln!("{peer}: TLS handshake failed: {e}"),
                Err(_) => eprintln!("{peer}: TLS handshake timed out"),
            }
        });
    }
}
