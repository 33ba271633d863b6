//! The chat page in headless Chromium: see `tests/browser/chat.cjs`.

use std::path::PathBuf;
use std::process::Command;

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
    let output = Command::new("node")
        .env("HUBBUB_TEST_CERT", &cert)
        .env("HUBBUB_TEST_KEY", &key)
        .env("NODE_PATH", root.join(".cache/node/node_modules"))
        .arg(root.join("tests/browser/chat.cjs"))
        .arg(env!("CARGO_BIN_EXE_hubbub"))
        .arg(&screenshot)
        .output()
        .expect("node runs (installed by scripts/test)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("browser chat: ok"), "{stdout}");
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
    let output = Command::new("node")
        .env("NODE_PATH", root.join(".cache/node/node_modules"))
        .arg(root.join("tests/browser/cluster.cjs"))
        .arg(env!("CARGO_BIN_EXE_hubbub"))
        .arg(redis.url())
        .arg(&screenshot)
        .output()
        .expect("node runs (installed by scripts/test)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser cluster test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("browser cluster: ok"), "{stdout}");
}
