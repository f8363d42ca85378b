//! A NATS JetStream cluster on 127.0.0.1 for cluster mode's tests and its
//! benchmark, started and stopped by `scripts/nats-cluster` (the script
//! `./dev.sh cluster` uses): 3 nodes, free ports, a file store each under a
//! temp dir, `sync_interval: always`. Stopped, by PID, when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct NatsCluster {
    dir: tempfile::TempDir,
    pub urls: Vec<String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/nats-cluster")
}

fn run(args: &[&str]) {
    let out = Command::new(script())
        .args(args)
        .output()
        .expect("running scripts/nats-cluster");
    if !out.status.success() && args.len() > 1 {
        // Leave no node running behind a failed step.
        let _ = Command::new(script()).args(["stop", args[1]]).status();
    }
    assert!(
        out.status.success(),
        "scripts/nats-cluster {args:?} failed (NATS_SERVER={:?}; ./dev.sh test installs nats-server): {}",
        std::env::var("NATS_SERVER").ok(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NatsCluster {
    /// Three nodes, each healthy with JetStream.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("cluster dir");
        let path = dir.path().to_str().expect("a UTF-8 temp path").to_string();
        run(&["start", &path, "3"]);
        let urls = std::fs::read_to_string(dir.path().join("urls"))
            .expect("the cluster's urls")
            .lines()
            .map(str::to_string)
            .collect();
        Self { dir, urls }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("a UTF-8 temp path")
    }

    /// The running nodes' process ids.
    pub fn pids(&self) -> Vec<u32> {
        (1..=3)
            .filter_map(|n| std::fs::read_to_string(self.dir.path().join(format!("n{n}.pid"))).ok())
            .filter_map(|pid| pid.trim().parse().ok())
            .collect()
    }

    /// kill -9 node `n` (`n1`.. by server name).
    pub fn kill(&self, n: usize) {
        run(&["kill", self.path(), &n.to_string()]);
    }

    /// Start node `n` again on its ports and store; returns once healthy.
    pub fn restart(&self, n: usize) {
        run(&["restart", self.path(), &n.to_string()]);
    }

    /// Start every node again (after all were killed); returns once all
    /// are healthy.
    pub fn restart_all(&self) {
        run(&["restart", self.path(), "1", "2", "3"]);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", self.path()]).status();
    }
}
