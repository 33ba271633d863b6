//! Replays the committed fuzz seeds through the fuzz entry points on stable
//! Rust, so that the targets keep compiling and the seeds keep passing.

#[path = "../../../fuzz/src/targets.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the cargo-fuzz crate"
)]
mod targets;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus folder") {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(
        count >= 3,
        "{target}: only {count} seeds in {}",
        dir.display()
    );
}

#[test]
fn fuzz_seeds_handshake() {
    replay("handshake", targets::handshake);
}

#[test]
fn fuzz_seeds_server() {
    replay("server", targets::server);
}

#[test]
fn fuzz_seeds_client() {
    replay("client", targets::client);
}
