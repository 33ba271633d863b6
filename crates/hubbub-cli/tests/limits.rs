//! Running out of file descriptors: with a low `ulimit -n`, upgrades past
//! the usable limit get 503, accept errors (EMFILE) are waited out, and the
//! server keeps serving once descriptors are free again.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Sends an upgrade and returns the status (0 when the server dropped it).
fn upgrade(stream: &mut TcpStream) -> u16 {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    if stream.write_all(UPGRADE.as_bytes()).is_err() {
        return 0;
    }
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(n) if n >= 12 => String::from_utf8_lossy(&buf[9..12]).parse().unwrap_or(0),
        _ => 0,
    }
}

#[test]
fn low_descriptor_limit_gives_503_then_recovers() {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 48 && exec {} echo --port 0",
            env!("CARGO_BIN_EXE_hubbub")
        ))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit("ws://").next().unwrap().to_owned();

    let mut clients = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..60 {
        match TcpStream::connect(&addr) {
            Ok(mut stream) => {
                statuses.push(upgrade(&mut stream));
                clients.push(stream);
            }
            Err(_) => statuses.push(0),
        }
    }
    assert!(
        statuses.iter().filter(|&&s| s == 101).count() >= 20,
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "no 503 before running out: {statuses:?}"
    );

    // Silent connections now hold the last descriptors: accept fails with
    // EMFILE, and the server must wait, not spin.
    let mut silent = Vec::new();
    for _ in 0..20 {
        if let Ok(stream) = TcpStream::connect(&addr) {
            silent.push(stream);
        }
    }
    let pid = child.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(pid) - before;
    assert!(
        spent < 30,
        "server busy while out of descriptors: {spent} ticks in 1 s"
    );
    drop(silent);
    drop(clients);
    std::thread::sleep(Duration::from_millis(1500));

    // Descriptors are free again: a new client is served.
    let mut stream = TcpStream::connect(&addr).unwrap();
    assert_eq!(upgrade(&mut stream), 101);
    assert!(child.try_wait().unwrap().is_none(), "the server died");
    child.kill().unwrap();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("open-files limit"), "{log}");
    assert!(
        log.contains("accept failed"),
        "EMFILE was not provoked:\n{log}"
    );
}

/// User + system CPU ticks of a process, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
