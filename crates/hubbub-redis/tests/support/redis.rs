//! A `redis-server` of the test's own, on a free port, in a fresh
//! directory; stopped by pid when dropped. Shared by the Redis tests of
//! `hubbub-redis` and `hubbub-cli` (included with `#[path]`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of our own; killed when dropped.
#[allow(dead_code)]
pub(crate) struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
    persistent: bool,
}

/// A free port whose cluster bus port (port + 10000) is free too, both
/// below the range the kernel hands out to outgoing connections (which
/// starts at 32768), so that no client of another test can take either
/// between this check and the server binding them.
#[allow(dead_code)]
fn free_cluster_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        // A random number without a dependency: std's randomly keyed hasher.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = 12_000 + (random % 10_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

#[allow(dead_code)]
impl Redis {
    pub(crate) fn start(persistent: bool) -> Self {
        // Below the kernel's range for outgoing connections: no client of
        // another test can hold it (a restart binds it again).
        let port = free_cluster_port();
        let dir = std::env::temp_dir().join(format!("hubbub-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Self::spawn(port, &dir, persistent);
        Self {
            child,
            port,
            dir,
            persistent,
        }
    }

    fn spawn(port: u16, dir: &std::path::Path, persistent: bool) -> Child {
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .spawn()
            .expect("redis-server (needs redis-server: run scripts/test)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server answering (SIGSTOP) without closing its sockets:
    /// commands hang until the client's timeout.
    pub(crate) fn pause(&self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status();
    }

    /// Undoes [`Redis::pause`].
    pub(crate) fn resume(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
    }

    pub(crate) fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port, &self.dir, self.persistent);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of our own: `masters` masters with `replicas` replicas
/// each, every one a `redis-server` on a free port in a fresh directory,
/// joined by `redis-cli --cluster create`; each killed when dropped.
#[allow(dead_code)]
pub(crate) struct Cluster {
    nodes: Vec<(u16, Option<Child>)>,
    dir: PathBuf,
}

#[allow(dead_code)]
impl Cluster {
    pub(crate) fn start(masters: usize, replicas: usize) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hubbub-redis-cluster-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let nodes: Vec<(u16, Option<Child>)> = (0..masters * (1 + replicas))
            .map(|_| {
                let (port, child) = Self::spawn_node(&dir);
                (port, Some(child))
            })
            .collect();
        let ports: Vec<u16> = nodes.iter().map(|(port, _)| *port).collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli (needs redis-server: run scripts/test)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes, dir };
        cluster.wait_ok(Duration::from_secs(20));
        // Every replica in sync with its master.
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in cluster.live() {
            loop {
                let info = Self::cli(port, &["info", "replication"]).unwrap_or_default();
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(Instant::now() < deadline, "replica {port} did not sync");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// A cluster-enabled `redis-server` in a directory of its own under
    /// `dir`, listening: on another port if the one chosen was taken
    /// meanwhile (the server exits).
    fn spawn_node(dir: &std::path::Path) -> (u16, Child) {
        for _ in 0..10 {
            let port = free_cluster_port();
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--cluster-config-file", "nodes.conf"])
                // Replicas sync at once (a replica that never synced is
                // never promoted).
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (needs redis-server: run scripts/test)");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return (port, child);
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server did not start on any of 10 ports");
    }

    /// Every node's URL (the seeds a broker is given).
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    fn cli(port: u16, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn live(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
    }

    /// Waits until every live node says `cluster_state:ok` and agrees on
    /// one live master for every slot.
    pub(crate) fn wait_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ok = self.live().all(|port| {
                Self::cli(port, &["cluster", "info"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            });
            if ok && self.slot_owners().len() == 16384 {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not settle");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port of the live master serving each slot, by a live node's
    /// `CLUSTER SLOTS`.
    pub(crate) fn slot_owners(&self) -> std::collections::HashMap<u16, u16> {
        let mut owners = std::collections::HashMap::new();
        let Some(port) = self.live().next() else {
            return owners;
        };
        let Some(out) = Self::cli(port, &["--no-raw", "cluster", "shards"]) else {
            return owners;
        };
        // `CLUSTER SHARDS` as redis-cli prints it: per shard, "slots" then
        // pairs of numbers, then its nodes with "port", "role", "health".
        let lines: Vec<&str> = out.lines().collect();
        let value = |line: &str| {
            line.rsplit_once(") ")
                .map(|(_, v)| v.trim().trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        let mut i = 0;
        while i < lines.len() {
            if value(lines[i]) == "slots" {
                let mut ranges = Vec::new();
                let mut j = i + 1;
                while j < lines.len() && value(lines[j]).parse::<u16>().is_ok() {
                    ranges.push(value(lines[j]).parse::<u16>().unwrap());
                    j += 1;
                }
                // Find this shard's live master among its nodes.
                let mut master = None;
                let mut k = j;
                let (mut port, mut role) = (0u16, String::new());
                while k < lines.len() && value(lines[k]) != "slots" {
                    match value(lines[k]).as_str() {
                        "port" => port = value(lines[k + 1]).parse().unwrap_or(0),
                        "role" => role = value(lines[k + 1]),
                        "health" if role == "master" && value(lines[k + 1]) == "online" => {
                            master = Some(port);
                        }
                        _ => {}
                    }
                    k += 1;
                }
                if let Some(master) = master {
                    for pair in ranges.chunks(2) {
                        if let [start, end] = pair {
                            for slot in *start..=*end {
                                owners.insert(slot, master);
                            }
                        }
                    }
                }
                i = k;
            } else {
                i += 1;
            }
        }
        owners
    }

    /// The slot of `key`, by the cluster itself.
    pub(crate) fn keyslot(&self, key: &str) -> u16 {
        let port = self.live().next().expect("a live node");
        Self::cli(port, &["cluster", "keyslot", key])
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT")
    }

    /// The node id of the node on `port`.
    pub(crate) fn node_id(port: u16) -> String {
        Self::cli(port, &["cluster", "myid"])
            .map(|s| s.trim().to_owned())
            .expect("CLUSTER MYID")
    }

    /// Moves `slot` from the master on `from` to the master on `to`, keys
    /// and all, as `redis-cli --cluster reshard` does for each slot:
    /// IMPORTING / MIGRATING, MIGRATE the keys, then SETSLOT NODE on every
    /// master.
    pub(crate) fn migrate_slot(&self, slot: u16, from: u16, to: u16) {
        let (slot, from_id, to_id) = (slot.to_string(), Self::node_id(from), Self::node_id(to));
        let ok = |port: u16, args: &[&str]| {
            let out = Self::cli(port, args).unwrap_or_default();
            assert!(!out.starts_with("ERR"), "{args:?} on {port}: {out}");
        };
        ok(to, &["cluster", "setslot", &slot, "importing", &from_id]);
        ok(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
        loop {
            let keys =
                Self::cli(from, &["cluster", "getkeysinslot", &slot, "100"]).unwrap_or_default();
            let keys: Vec<&str> = keys.split_whitespace().collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec![
                "migrate",
                "127.0.0.1",
                "",
                "",
                "0",
                "5000",
                "replace",
                "keys",
            ];
            let to_port = to.to_string();
            args[2] = &to_port;
            args.extend(keys);
            ok(from, &args);
        }
        for port in [to, from] {
            ok(port, &["cluster", "setslot", &slot, "node", &to_id]);
        }
        let masters: std::collections::HashSet<u16> = self.slot_owners().into_values().collect();
        for port in masters {
            let _ = Self::cli(port, &["cluster", "setslot", &slot, "node", &to_id]);
        }
    }

    /// The process id of the node on `port`.
    pub(crate) fn pid(&self, port: u16) -> u32 {
        self.nodes
            .iter()
            .find(|(p, _)| *p == port)
            .and_then(|(_, child)| child.as_ref())
            .map(Child::id)
            .expect("a live node on that port")
    }

    /// Kills the node on `port` with SIGKILL.
    pub(crate) fn kill(&mut self, port: u16) {
        for (p, child) in &mut self.nodes {
            if *p == port {
                if let Some(mut child) = child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
