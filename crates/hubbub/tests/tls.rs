//! `wss://` with rustls: a certificate made by rcgen, a rustls client that
//! trusts it, and a WebSocket exchange over it.

mod common;

use std::sync::Arc;

use common::{Peer, watchdog};
use hubbub::client::Client;
use hubbub::{Server, TlsConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

struct Cert {
    cert_pem: String,
    key_pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn self_signed() -> Cert {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    Cert {
        cert_pem: certified.cert.pem(),
        key_pem: certified.key_pair.serialize_pem(),
        der: certified.cert.der().clone(),
    }
}

fn connector(
    trusted: &Cert,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn wss_echo_over_tls_1_3_and_1_2() {
    watchdog(async {
        let cert = self_signed();
        let tls = TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
        let secure_seen = Arc::new(std::sync::Mutex::new(Vec::<bool>::new()));
        let seen = secure_seen.clone();
        let server = Server::bind_tls("wss://127.0.0.1:0", tls)
            .await
            .unwrap()
            .with_handshake(move |hs| {
                seen.lock().unwrap().push(hs.secure);
                async { hubbub::Decision::accept() }
            });
        let addr = server.local_addr();
        let handle = server.handle();
        let task = tokio::spawn(server.start(|socket| {
            socket.on_message(|conn, text| {
                let _ = conn.send(text);
            });
        }));
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let tls = connector(&cert, &[version])
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
            let mut ws = Peer::with_stream(Client::new("wss://localhost/"), tls).await;
            ws.send("over TLS").unwrap();
            assert_eq!(ws.text().await, "over TLS");
            ws.close().unwrap();
        }
        assert_eq!(*secure_seen.lock().unwrap(), [true, true], "hooks see TLS");
        handle.shutdown();
        task.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn plain_client_on_tls_port_is_dropped_and_server_survives() {
    watchdog(async {
        let cert = self_signed();
        let tls = TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
        let server = Server::bind_tls("wss://127.0.0.1:0", tls).await.unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let task = tokio::spawn(server.start(|_| {}));
        assert!(
            Client::new(format!("ws://{addr}/"))
                .connect(|_| {})
                .await
                .unwrap_err()
                .is_connect()
        );
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = connector(&cert, &[&rustls::version::TLS13])
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert!(
            Client::new("wss://localhost/")
                .connect_on(tls, |_| {})
                .await
                .is_ok()
        );
        handle.shutdown();
        task.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn tls_misconfiguration_is_a_clear_error() {
    assert!(
        TlsConfig::from_pem(b"not pem", b"not pem")
            .unwrap_err()
            .is_tls()
    );
    let err =
        TlsConfig::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
    assert!(
        err.is_tls() && err.to_string().contains("/nonexistent/cert.pem"),
        "{err}"
    );
    let a = self_signed();
    let b = self_signed();
    let mismatched = TlsConfig::from_pem(a.cert_pem.as_bytes(), b.key_pem.as_bytes());
    assert!(mismatched.unwrap_err().is_tls());
    let err = Server::bind("wss://127.0.0.1:0").await.err().unwrap();
    assert!(err.is_invalid_argument(), "{err}");
}

#[tokio::test]
async fn certificate_reload_applies_to_new_connections() {
    watchdog(async {
        let (a, b) = (self_signed(), self_signed());
        let dir = std::env::temp_dir().join(format!("hubbub-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &a.cert_pem).unwrap();
        std::fs::write(&key, &a.key_pem).unwrap();
        let tls = TlsConfig::from_pem_files(&cert, &key).unwrap();
        let server = Server::bind_tls("wss://127.0.0.1:0", tls.clone())
            .await
            .unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let task = tokio::spawn(server.start(|_| {}));
        let handshake = |trusted: &Cert| {
            let connector = connector(trusted, &[&rustls::version::TLS13]);
            async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                    .is_ok()
            }
        };
        assert!(handshake(&a).await);
        assert!(!handshake(&b).await);
        // A broken file keeps the old certificate.
        std::fs::write(&key, "garbage").unwrap();
        assert!(tls.reload().unwrap_err().is_tls());
        assert!(handshake(&a).await);
        std::fs::write(&cert, &b.cert_pem).unwrap();
        std::fs::write(&key, &b.key_pem).unwrap();
        tls.reload().unwrap();
        assert!(handshake(&b).await);
        assert!(!handshake(&a).await);
        handle.shutdown();
        task.await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn one_server_serves_plain_and_tls_side_by_side() {
    watchdog(async {
        let cert = self_signed();
        let tls = TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
        let server = Server::bind("ws://127.0.0.1:0")
            .await
            .unwrap()
            .also_listen("wss://127.0.0.1:0", Some(tls.clone()))
            .await
            .unwrap();
        assert!(
            Server::bind("ws://127.0.0.1:0")
                .await
                .unwrap()
                .also_listen("ws://127.0.0.1:0", Some(tls))
                .await
                .err()
                .unwrap()
                .is_invalid_argument()
        );
        let addrs = server.local_addrs();
        assert_eq!(addrs.len(), 2);
        let handle = server.handle();
        let task = tokio::spawn(server.start(|socket| {
            socket.on_message(|conn, text| {
                let _ = conn.server().broadcast(text);
            });
        }));
        let mut plain = Peer::connect(&format!("ws://{}/", addrs[0])).await;
        let tcp = TcpStream::connect(addrs[1]).await.unwrap();
        let stream = connector(&cert, &[&rustls::version::TLS13])
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut secure = Peer::with_stream(Client::new("wss://localhost/"), stream).await;
        while handle.client_count() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // One server: a message from the TLS side reaches the plain side.
        secure.send("from wss").unwrap();
        assert_eq!(plain.text().await, "from wss");
        assert_eq!(secure.text().await, "from wss");
        handle.shutdown();
        task.await.unwrap().unwrap();
    })
    .await;
}
