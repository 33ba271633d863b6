//! `hubbub serve` as a user meets it: the real binary on a free port, real
//! WebSocket clients, and the page over plain HTTP.

use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use hubbub::client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "../../hubbub/tests/common/peer.rs"]
mod peer;
use peer::Peer as Ws;

#[path = "support/serve.rs"]
mod support;
use support::{Serve as Chat, serve as chat_with};

async fn chat() -> Chat {
    chat_with(&[]).await
}

async fn join(chat: &Chat, path: &str) -> Ws {
    Ws::connect(&format!("ws://{}{path}", chat.addr)).await
}

async fn next_text(ws: &mut Ws) -> String {
    tokio::time::timeout(Duration::from_secs(10), ws.text())
        .await
        .expect("no text message within 10 s")
}

async fn watchdog<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("watchdog")
}

#[tokio::test]
async fn seed_chat_greets_broadcasts_and_says_goodbye() {
    watchdog(async {
        let chat = chat().await;
        let mut a = join(&chat, "/").await;
        assert_eq!(
            next_text(&mut a).await,
            "You have just joined the conversation."
        );
        let mut b = join(&chat, "/lobby").await;
        assert_eq!(
            next_text(&mut b).await,
            "You have just joined the conversation."
        );
        let joined = next_text(&mut a).await;
        let b_id = joined
            .strip_suffix(" joined the conversation.")
            .expect(&joined)
            .to_owned();
        assert_eq!(b_id.len(), 36, "{b_id}");

        b.send("hello, all").unwrap();
        assert_eq!(next_text(&mut a).await, format!("{b_id} says: hello, all"));
        assert_eq!(next_text(&mut b).await, format!("{b_id} says: hello, all"));

        b.close().unwrap();
        assert_eq!(
            next_text(&mut a).await,
            format!("{b_id} left the chat room.")
        );
    })
    .await;
}

#[tokio::test]
async fn rooms_are_separate_and_nick_renames() {
    watchdog(async {
        let chat = chat().await;
        let mut lobby = join(&chat, "/").await;
        next_text(&mut lobby).await;
        let mut other = join(&chat, "/other").await;
        next_text(&mut other).await;

        lobby.send("/nick Zed").unwrap();
        let renamed = next_text(&mut lobby).await;
        assert!(renamed.ends_with(" is now known as Zed."), "{renamed}");
        lobby.send("only the lobby hears this").unwrap();
        assert_eq!(
            next_text(&mut lobby).await,
            "Zed says: only the lobby hears this"
        );

        other.send("and this is the other room").unwrap();
        let first = next_text(&mut other).await;
        assert!(
            first.ends_with(" says: and this is the other room"),
            "{first}"
        );

        lobby.send("/nick ").unwrap();
        assert!(
            next_text(&mut lobby)
                .await
                .starts_with("A nickname is 1 to 32 characters")
        );
    })
    .await;
}

#[tokio::test]
async fn json_mode_for_machines() {
    watchdog(async {
        let chat = chat().await;
        let mut plain = join(&chat, "/json-room").await;
        next_text(&mut plain).await;
        let mut machine = join(&chat, "/json-room?format=json").await;
        let welcome: serde_json::Value =
            serde_json::from_str(&next_text(&mut machine).await).unwrap();
        assert_eq!(welcome["type"], "welcome");
        assert_eq!(welcome["room"], "json-room");
        assert_eq!(welcome["count"], 2);
        let id = welcome["id"].as_str().unwrap().to_owned();
        // The plain client hears about the join in plain text.
        assert_eq!(
            next_text(&mut plain).await,
            format!("{id} joined the conversation.")
        );

        plain.send("hi \"machines\" <b>").unwrap();
        let event: serde_json::Value =
            serde_json::from_str(&next_text(&mut machine).await).unwrap();
        assert_eq!(event["type"], "message");
        assert_eq!(event["text"], "hi \"machines\" <b>");
        assert_eq!(event["from"].as_str().unwrap().len(), 36);
        assert!(event["ts"].as_u64().unwrap() > 1_600_000_000_000);
        assert!(
            next_text(&mut plain)
                .await
                .ends_with(" says: hi \"machines\" <b>")
        );

        plain.close().unwrap();
        let left: serde_json::Value = serde_json::from_str(&next_text(&mut machine).await).unwrap();
        assert_eq!(left["type"], "leave");
        assert_eq!(left["count"], 1);
    })
    .await;
}

/// One plain HTTP request; returns the whole response.
async fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn same_port_serves_the_page_for_rooms_and_404_otherwise() {
    watchdog(async {
        let chat = chat().await;
        for path in ["/", "/lobby", "/some-room"] {
            let response = http_get(&chat.addr, path).await;
            assert!(
                response.starts_with("HTTP/1.1 200 OK\r\n"),
                "{path}: {response:.80}"
            );
            assert!(response.contains("Content-Type: text/html; charset=utf-8"));
            assert!(response.contains("<title>hubbub chat</title>"));
        }
        let missing = http_get(&chat.addr, "/a/b").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing:.80}");
    })
    .await;
}

/// The page cannot be framed, runs only its own script (no inline script)
/// and opens sockets to its own origin only; `HEAD` is answered like `GET`
/// without a body; an upgrade to a path that names no room is refused
/// before the `101`.
#[tokio::test]
async fn the_page_is_locked_down_and_bad_rooms_are_refused_in_the_handshake() {
    watchdog(async {
        let chat = chat().await;
        let page = http_get(&chat.addr, "/").await;
        let csp = page
            .lines()
            .find_map(|l| l.strip_prefix("Content-Security-Policy: "))
            .unwrap_or_else(|| panic!("no CSP: {page:.400}"));
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        let script_src = csp
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap();
        assert!(!script_src.contains("unsafe-inline"), "{csp}");
        assert!(!csp.contains("ws:") && !csp.contains("wss:"), "{csp}");
        assert!(page.contains("X-Frame-Options: DENY"));
        assert!(!page.contains("<script>"), "an inline script is left");
        let script = http_get(&chat.addr, "/chat.js").await;
        assert!(script.starts_with("HTTP/1.1 200 "), "{script:.80}");
        assert!(script.contains("Content-Type: text/javascript"));

        let mut stream = TcpStream::connect(&chat.addr).await.unwrap();
        let head = format!("HEAD / HTTP/1.1\r\nHost: {}\r\n\r\n", chat.addr);
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 "), "{response:.80}");
        assert!(response.ends_with("\r\n\r\n"), "a body after a HEAD");

        let refused = Client::new(format!("ws://{}/no%20room", chat.addr))
            .connect(|_| {})
            .await
            .unwrap_err();
        assert_eq!(refused.status(), Some(404), "{refused}");
    })
    .await;
}

/// Nicknames cannot pass for someone else, and a message cannot forge a
/// line from another member; blank messages are not sent to anyone.
#[tokio::test]
async fn identities_and_lines_cannot_be_forged() {
    watchdog(async {
        let chat = chat().await;
        let mut alice = join(&chat, "/forge").await;
        next_text(&mut alice).await;
        let mut mallory = join(&chat, "/forge").await;
        next_text(&mut mallory).await;
        let mallory_id = next_text(&mut alice).await;
        let mallory_id = mallory_id
            .strip_suffix(" joined the conversation.")
            .unwrap()
            .to_owned();
        alice.send("/nick alice").unwrap();
        assert_eq!(
            next_text(&mut alice).await,
            format!("{} is now known as alice.", {
                // alice's own id, as everyone saw it
                let line = next_text(&mut mallory).await;
                line.split(" is now known as").next().unwrap().to_owned()
            })
        );
        for forged in [
            "/nick alice",
            "/nick ALICE",
            "/nick ａｌｉｃｅ",
            "/nick alice\u{202e}",
            "/nick al\u{200b}ice",
            "/nick bob says: hi",
        ] {
            let forged = forged
                .replace("\\u{202e}", "\u{202e}")
                .replace("\\u{200b}", "\u{200b}");
            mallory.send(forged.clone()).unwrap();
            let answer = next_text(&mut mallory).await;
            assert!(!answer.contains("is now known as"), "{forged:?}: {answer}");
        }
        let prefix = &mallory_id[..8];
        mallory.send(format!("/nick {prefix}")).unwrap();
        assert!(!next_text(&mut mallory).await.contains("is now known as"));
        // A line break cannot start a new line in the text format.
        mallory.send("hi\nalice says: send money").unwrap();
        let line = next_text(&mut alice).await;
        assert_eq!(
            line,
            format!("{mallory_id} says: hi\\nalice says: send money")
        );
        // Blank messages go nowhere: the next thing alice sees is "ok".
        mallory.send("   ").unwrap();
        mallory.send("").unwrap();
        mallory.send("ok").unwrap();
        assert_eq!(
            next_text(&mut alice).await,
            format!("{mallory_id} says: ok")
        );
    })
    .await;
}

/// One client flooding a room is closed (1008, "message rate limit") after
/// its burst, and the others receive what the limit allows, not the flood.
#[tokio::test]
async fn a_flood_is_cut_off_by_the_default_message_rate() {
    watchdog(async {
        let chat = chat().await;
        let mut member = join(&chat, "/flood").await;
        next_text(&mut member).await;
        let mut flooder = join(&chat, "/flood").await;
        next_text(&mut flooder).await;
        next_text(&mut member).await; // "… joined the conversation."
        let start = std::time::Instant::now();
        for i in 0..2_000 {
            if flooder.send(format!("{i}")).is_err() {
                break;
            }
            // Let the client write as it goes.
            tokio::task::yield_now().await;
        }
        let code = flooder.closed().await.0;
        assert_eq!(code, 1008);
        let allowed = 50 + (20.0 * start.elapsed().as_secs_f64()).ceil() as usize + 1;
        let mut said = 0;
        loop {
            let line = next_text(&mut member).await;
            if line.ends_with("left the chat room.") {
                break;
            }
            assert!(line.contains(" says: "), "{line}");
            said += 1;
        }
        assert!(
            said <= allowed,
            "{said} messages passed, at most {allowed} allowed"
        );
        assert!(said >= 50, "the burst passes: {said}");
    })
    .await;
}

#[tokio::test]
async fn other_sites_pages_are_refused_unless_allowed() {
    watchdog(async {
        let chat = chat_with(&["--allowed-origin", "https://*.example.com"]).await;
        let url = format!("ws://{}/", chat.addr);
        let connect = |origin: String| {
            Client::new(url.clone())
                .header("Origin", origin)
                .connect(|_| {})
        };
        let refused = connect("https://evil.example.net".into())
            .await
            .unwrap_err();
        assert_eq!(refused.status(), Some(403), "{refused}");
        assert!(connect("https://chat.example.com".into()).await.is_ok());
        // The chat's own page (same origin) and Origin-less clients work.
        assert!(connect(format!("http://{}", chat.addr)).await.is_ok());
        assert!(Client::new(url.clone()).connect(|_| {}).await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn serve_over_tls_with_cert_files() {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    watchdog(async {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!("hubbub-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        let chat = chat_with(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .await;
        let addr = chat.addr.clone();
        let connect = |trusted: rustls::pki_types::CertificateDer<'static>| {
            let addr = addr.clone();
            async move {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(trusted).unwrap();
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
                let tcp = TcpStream::connect(&addr).await.unwrap();
                tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(
                        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                        tcp,
                    )
                    .await
            }
        };
        let tls = connect(certified.cert.der().clone()).await.unwrap();
        let mut ws = Ws::with_stream(Client::new("wss://localhost/"), tls).await;
        assert_eq!(
            next_text(&mut ws).await,
            "You have just joined the conversation."
        );

        // New files and a SIGHUP: new connections get the new certificate.
        let renewed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&cert, renewed.cert.pem()).unwrap();
        std::fs::write(&key, renewed.key_pair.serialize_pem()).unwrap();
        let pid = chat.child.id().unwrap().to_string();
        assert!(signal(&pid, "HUP"));
        let mut reloaded = false;
        for _ in 0..50 {
            if connect(renewed.cert.der().clone()).await.is_ok() {
                reloaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            reloaded,
            "the renewed certificate was not served after SIGHUP"
        );
        assert!(connect(certified.cert.der().clone()).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
        drop(chat);
    })
    .await;
}

/// SIGHUP asks a TLS server to reload its certificate; a plain one has
/// none, and must keep serving (the signal's default would end it).
#[cfg(unix)]
#[tokio::test]
async fn sighup_leaves_a_plain_server_running() {
    watchdog(async {
        let Chat {
            mut child, addr, ..
        } = chat().await;
        let mut ws = Ws::connect(&format!("ws://{addr}/")).await;
        next_text(&mut ws).await;
        let pid = child.id().unwrap().to_string();
        assert!(signal(&pid, "HUP"));
        ws.send("still there?").unwrap();
        assert!(next_text(&mut ws).await.ends_with("says: still there?"));
        // A new client is still served too.
        let mut other = Ws::connect(&format!("ws://{addr}/")).await;
        next_text(&mut other).await;
        assert!(child.try_wait().unwrap().is_none(), "the server exited");
        drop(child);
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_cleanly() {
    watchdog(async {
        let Chat {
            mut child, addr, ..
        } = chat().await;
        let mut ws = Ws::connect(&format!("ws://{addr}/")).await;
        next_text(&mut ws).await;
        let pid = child.id().unwrap().to_string();
        assert!(signal(&pid, "TERM"));
        assert_eq!(ws.closed().await.0, 1001);
        let status = child.wait().await.unwrap();
        assert!(status.success(), "{status}");
    })
    .await;
}

#[tokio::test]
async fn metrics_endpoint_counts_connections_messages_and_refusals() {
    watchdog(async {
        let Chat {
            child,
            addr,
            mut lines,
        } = chat_with(&["--metrics", "127.0.0.1:0"]).await;
        let second = lines.next_line().await.unwrap().unwrap();
        let metrics_addr = second
            .strip_prefix("metrics on http://")
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("{second}"))
            .to_owned();

        let mut ws = Ws::connect(&format!("ws://{addr}/")).await;
        next_text(&mut ws).await;
        ws.send("count me").unwrap();
        next_text(&mut ws).await;
        let evil = Client::new(format!("ws://{addr}/"))
            .header("Origin", "https://evil.example")
            .connect(|_| {})
            .await
            .unwrap_err();
        assert_eq!(evil.status(), Some(403), "{evil}");

        let text = http_get(&metrics_addr, "/metrics").await;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        for line in [
            "hubbub_connections_open 1",
            "hubbub_connections_opened_total 1",
            "hubbub_messages_in_total 1",
            "hubbub_handshake_rejections_total{status=\"403\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("hubbub_messages_out_total"), "{text}");
        drop(child);
    })
    .await;
}

/// Runs the binary to completion; returns (success, stdout, stderr).
fn run_hubbub(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_shows_the_limits_with_their_defaults_and_metrics_needs_a_port() {
    let (ok, help, _) = run_hubbub(&["serve", "--help"], &[]);
    assert!(ok);
    for line in [
        "--max-queued-bytes",
        "134217728 (128 MiB)",
        "--max-queue-bytes",
        "--stall-timeout",
        "--message-rate",
        "[default: 20]",
        "--message-burst",
        "--max-handshakes-per-ip",
        "--max-connections-per-ip",
        "--trusted-proxy",
        "--allowed-host",
    ] {
        assert!(help.contains(line), "{line} missing from:\n{help}");
    }
    let (ok, _, err) = run_hubbub(&["serve", "--port", "0", "--metrics", "localhost"], &[]);
    assert!(!ok);
    assert!(err.contains("give a port"), "{err}");
}

#[test]
fn settings_come_from_flags_environment_and_file_and_errors_are_clear() {
    let dir = std::env::temp_dir().join(format!("hubbub-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hubbub.toml");
    std::fs::write(
        &file,
        "port = 9000\nbind = \"10.0.0.1\"\nallowed_origins = [\"https://a.example\"]\nmetrics = \"127.0.0.1:9100\"\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let (ok, out, err) = run_hubbub(
        &[
            "serve",
            "--config",
            file_arg,
            "--bind",
            "0.0.0.0",
            "--print-config",
        ],
        &[("HUBBUB_PORT", "9100")],
    );
    assert!(ok, "{err}");
    let effective: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(
        effective["port"].as_integer(),
        Some(9100),
        "environment over file"
    );
    assert_eq!(
        effective["bind"].as_str(),
        Some("0.0.0.0"),
        "flag over file"
    );
    assert_eq!(
        effective["metrics"].as_str(),
        Some("127.0.0.1:9100"),
        "file over default"
    );

    std::fs::write(&file, "port = \"not a number\"\n").unwrap();
    let (ok, _, err) = run_hubbub(&["serve", "--config", file_arg], &[]);
    assert!(!ok && err.contains("hubbub.toml"), "{err}");

    let (ok, _, err) = run_hubbub(&["serve", "--port", "not-a-port"], &[]);
    assert!(!ok && err.contains("--port"), "{err}");

    let (ok, _, err) = run_hubbub(
        &[
            "serve",
            "--port",
            "0",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ],
        &[],
    );
    assert!(!ok && err.contains("/nonexistent/c.pem"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (ok, _, err) = run_hubbub(&["serve", "--port", &port], &[]);
    assert!(!ok && err.contains("cannot listen on"), "{err}");
    // Said once, with what to do; and no colour codes in a pipe.
    assert_eq!(err.matches("I/O error").count(), 0, "{err}");
    assert!(
        err.contains("Address already in use") && err.contains("--port"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Logs to a pipe carry no colour codes.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(["serve", "--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stderr.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("INFO"), "{line:?}");
    assert!(!line.contains('\u{1b}'), "ANSI codes in a pipe: {line:?}");
}

/// Sends a signal with the shell's built-in `kill` (no procps needed).
fn signal(pid: &str, name: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("kill -{name} {pid}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// `hubbub serve` with a certificate offers HTTP/2 by ALPN: the page comes
/// over it, and a WebSocket opens as a stream of that same connection
/// (RFC 8441) and joins the chat; `--no-h2` leaves only HTTP/1.1.
#[tokio::test]
async fn serve_over_tls_offers_http2_for_the_page_and_the_sockets() {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    watchdog(async {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!("hubbub-h2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        let tls_args = [
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        // A TLS connection offering h2 and http/1.1; what the server chose.
        let handshake = |addr: String| {
            let der = certified.cert.der().clone();
            async move {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(der).unwrap();
                let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                let tcp = TcpStream::connect(&addr).await.unwrap();
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(
                        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                        tcp,
                    )
                    .await
                    .unwrap();
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                (tls, alpn)
            }
        };

        let chat = chat_with(&tls_args).await;
        let (tls, alpn) = handshake(chat.addr.clone()).await;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let get = http::Request::get(format!(
            "https://localhost{}/",
            &chat.addr[chat.addr.rfind(':').unwrap()..]
        ))
        .version(http::Version::HTTP_2)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
        let page = sender.send_request(get).await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.version(), http::Version::HTTP_2);
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        // A socket on the same connection: the chat greets it.
        let mut connect = http::Request::builder()
            .method(http::Method::CONNECT)
            .version(http::Version::HTTP_2)
            .uri(format!(
                "https://localhost{}/lobby",
                &chat.addr[chat.addr.rfind(':').unwrap()..]
            ))
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        connect
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        let answer = sender.send_request(connect).await.unwrap();
        assert_eq!(answer.status(), 200);
        let upgraded = hyper::upgrade::on(answer).await.unwrap();
        let mut stream = hyper_util::rt::TokioIo::new(upgraded);
        let mut got = Vec::new();
        let greeting = b"You have just joined the conversation.";
        while got.len() < 2 + greeting.len() {
            let mut buf = [0u8; 256];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got[0], 0x81, "a text frame");
        assert_eq!(&got[2..2 + greeting.len()], greeting);
        drop(chat);

        // --no-h2: the server picks HTTP/1.1.
        let mut args = tls_args.to_vec();
        args.push("--no-h2");
        let chat = chat_with(&args).await;
        let (_tls, alpn) = handshake(chat.addr.clone()).await;
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
