//! The chat page in headless Chromium: see `tests/browser/chat.cjs`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `tests/browser/<script>` with node and the cached playwright-core,
/// the hubbub binary and `args`; returns its stdout once it succeeded.
fn node(root: &Path, script: &str, args: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> String {
    let mut command = Command::new("node");
    command
        .env("NODE_PATH", root.join(".cache/node/node_modules"))
        .arg(root.join("tests/browser").join(script))
        .arg(env!("CARGO_BIN_EXE_hubbub"))
        .args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command
        .output()
        .expect("node runs (installed by scripts/test)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
#[ignore = "needs chromium and node playwright-core: run scripts/test"]
fn chat_page_in_headless_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let artifacts = root.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("chat.png");
    // A test certificate for the wss:// part; Chromium trusts it by pin.
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (
        artifacts.join("test-cert.pem"),
        artifacts.join("test-key.pem"),
    );
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let stdout = node(
        &root,
        "chat.cjs",
        &[screenshot.as_os_str()],
        &[("HUBBUB_TEST_CERT", &cert), ("HUBBUB_TEST_KEY", &key)],
    );
    assert!(stdout.contains("browser chat: ok"), "{stdout}");
    // The page over https:// comes over HTTP/2, and Debian's Chromium
    // (156 when this was written; RFC 8441 is on by default since 91) opens
    // the page's WebSocket as a stream of that connection: the server's
    // metrics say which HTTP version carried it.
    let over = stdout
        .lines()
        .find(|l| l.starts_with("page over h2; its WebSocket over "))
        .unwrap_or_else(|| panic!("{stdout}"));
    println!("{over}");
    assert!(over.ends_with("HTTP/2 (RFC 8441)"), "{over}");
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "screenshot written"
    );
}

#[path = "../../hubbub-redis/tests/support/redis.rs"]
#[allow(dead_code)] // restarts are the library tests' business
mod redis_server;

/// Three `hubbub serve --redis` nodes and a page on each: see
/// `tests/browser/cluster.cjs`.
#[test]
#[ignore = "needs chromium, node playwright-core and redis-server: run scripts/test"]
fn cluster_pages_chat_as_one_room_in_headless_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let artifacts = root.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("cluster.png");
    let redis = redis_server::Redis::start(false);
    let url = redis.url();
    let stdout = node(
        &root,
        "cluster.cjs",
        &["--redis".as_ref(), url.as_ref(), screenshot.as_os_str()],
        &[],
    );
    assert!(stdout.contains("browser cluster: ok"), "{stdout}");
}

/// Three `hubbub serve --redis-cluster` nodes on a Redis Cluster of three
/// masters and three replicas, a page on each; the master holding the room
/// is killed mid-chat: see `tests/browser/cluster.cjs`.
#[test]
#[ignore = "needs chromium, node playwright-core and redis-server: run scripts/test"]
fn cluster_pages_chat_through_a_redis_cluster_failover_in_headless_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let artifacts = root.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("redis-cluster.png");
    let cluster = redis_server::Cluster::start(3, 1);
    let urls = cluster.urls().join(",");
    // The page's room is "team", in the JSON format.
    let master = cluster.slot_owners()[&cluster.keyslot("hubbub:{team#json}:o")];
    let pid = cluster.pid(master).to_string();
    let stdout = node(
        &root,
        "cluster.cjs",
        &[
            "--redis-cluster".as_ref(),
            urls.as_ref(),
            screenshot.as_os_str(),
            pid.as_ref(),
        ],
        &[],
    );
    assert!(stdout.contains("browser redis cluster: ok"), "{stdout}");
}
