//! A smoke run of `hubbub load` against `hubbub echo` and `hubbub relay`,
//! so that the load generator keeps working (numbers are BENCHMARKS.md's).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Starts `hubbub <mode> --port 0`; returns the child and its address.
fn server(mode: &str) -> (std::process::Child, String) {
    server_with(&[mode])
}

/// Starts `hubbub <args…> --port 0`; returns the child and its address.
fn server_with(args: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(args)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit("ws://").next().unwrap().to_owned();
    (child, addr)
}

/// Runs `hubbub load ...` and returns its JSON line.
fn load(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .arg("load")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn load_generator_smoke() {
    let (mut echo, addr) = server("echo");
    let url = format!("ws://{addr}/");
    let pid = echo.id().to_string();
    let result = load(&[
        "echo",
        "--url",
        &url,
        "-n",
        "4",
        "-k",
        "4",
        "-s",
        "100",
        "-d",
        "0.5",
        "--server-pid",
        &pid,
    ]);
    assert!(result["messages"].as_u64().unwrap() > 0, "{result}");
    let result = load(&[
        "echo",
        "--url",
        &url,
        "-n",
        "2",
        "-s",
        "20000",
        "-d",
        "0.3",
        "--deflate",
        "--binary",
    ]);
    assert_eq!(result["deflate"], true, "{result}");
    let result = load(&[
        "connections",
        "--url",
        &url,
        "-n",
        "50",
        "--message",
        "64",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(result["connections"], 50, "{result}");
    echo.kill().unwrap();
    let _ = echo.wait();

    let (mut relay, addr) = server("relay");
    let url = format!("ws://{addr}/");
    let result = load(&[
        "broadcast",
        "--url",
        &url,
        "-n",
        "20",
        "-w",
        "4",
        "-d",
        "0.5",
    ]);
    let published = result["published"].as_u64().unwrap();
    assert!(published > 0);
    assert_eq!(
        result["deliveries"].as_u64().unwrap(),
        published * 20,
        "{result}"
    );
    relay.kill().unwrap();
    let _ = relay.wait();
}

/// `hubbub relay --rooms` on one node keeps rooms apart (each room's
/// messages reach its members only, each publisher's in order: the
/// generator checks it), and `load rooms --rate` paces every member.
#[test]
fn rooms_on_one_relay_at_a_fixed_rate() {
    let (mut relay, addr) = server_with(&["relay", "--rooms"]);
    let url = format!("ws://{addr}/");
    let pid = relay.id().to_string();
    let result = load(&[
        "rooms",
        "--url",
        &url,
        "--rooms",
        "4",
        "--members",
        "3",
        "-w",
        "2",
        "--rate",
        "40",
        "-d",
        "0.5",
        "--server-pid",
        &pid,
    ]);
    let published = result["published"].as_u64().unwrap();
    // 12 members at 40 msg/s for half a second: about 240, never a burst
    // past the pace (one each at the start, spread over a period).
    assert!(published > 0 && published <= 12 * 21, "{result}");
    assert_eq!(
        result["deliveries"].as_u64().unwrap(),
        published * 3,
        "{result}"
    );
    assert!(result["server_cpu_us_per_delivery"].as_f64().is_some());
    relay.kill().unwrap();
    let _ = relay.wait();
}

/// Nothing listens: every mode fails at once with the connect error (the
/// echo run used to wait forever for the connections that never came).
#[test]
fn load_against_a_closed_port_fails_with_the_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/");
    for args in [
        &["echo", "-n", "3", "-d", "0.2"][..],
        &["connections", "-n", "3"],
        &["handshakes", "-c", "2", "-d", "0.2"],
        &["broadcast", "-n", "3", "-d", "0.2"],
    ] {
        let mode = args[0];
        let mut child = Command::new(env!("CARGO_BIN_EXE_hubbub"))
            .arg("load")
            .args(args)
            .args(["--url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > std::time::Duration::from_secs(10) {
                child.kill().unwrap();
                panic!("hubbub load {mode} still running after 10 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{mode}: {stderr}");
        assert!(stderr.contains("refused"), "{mode}: {stderr}");
    }
}
