//! `hubbub serve` on a free port, for the binary's tests (included with
//! `#[path]`): the child (killed when dropped), its address, and the rest of
//! its stdout.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A running `hubbub serve`.
pub(crate) struct Serve {
    pub(crate) child: Child,
    /// `host:port` of its `ws://` listener.
    pub(crate) addr: String,
    /// Its stdout after the first line.
    pub(crate) lines: Lines<BufReader<ChildStdout>>,
}

/// Starts `hubbub serve --port 0 <extra>` and reads its address line
/// (`ws://` or, with a certificate, `wss://`).
pub(crate) async fn serve(extra: &[&str]) -> Serve {
    serve_with_env(extra, &[]).await
}

/// As [`serve`], with more environment variables.
pub(crate) async fn serve_with_env(extra: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(["serve", "--port", "0"])
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("hubbub binary");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("startup line");
    let addr = first
        .strip_prefix("chat server on ws://")
        .or_else(|| first.strip_prefix("chat server on wss://"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("address in startup line")
        .to_owned();
    Serve { child, addr, lines }
}
