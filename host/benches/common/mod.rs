//! What the benchmarks that start the real `switchyard` binary share: the
//! workload's messages, the plugin directory, and CPU and machine facts from
//! `/proc`. Each bench includes it with `mod common;`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Exact size of every published payload.
pub const PAYLOAD_BYTES: usize = 256;
/// Distinct message keys, spread round-robin.
pub const KEYS: u64 = 64;
/// Clock ticks per second of `/proc` CPU times (USER_HZ: 100 on every
/// mainstream Linux build).
pub const USER_HZ: f64 = 100.0;

/// Where `./dev.sh` builds the wasm plugins.
pub struct PluginDir(PathBuf);

impl PluginDir {
    /// Beside the host's target directory, found from this executable's path
    /// (`<target>/release/deps/<bench>-…`). Exits, naming `bench` and the
    /// `./dev.sh` command that builds the plugins, if one of `needed` is
    /// missing.
    pub fn find(bench: &str, command: &str, needed: &[&str]) -> PluginDir {
        let exe = std::env::current_exe().expect("bench executable path");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("bench binary lives in <target>/<profile>/deps");
        let dir = target.join("wasm-plugins/wasm32-wasip2/release");
        for name in needed {
            let path = dir.join(format!("{name}.wasm"));
            if !path.is_file() {
                eprintln!(
                    "{bench}: plugin {} is missing; run the benchmark with `{command}`, \
                     which builds the plugins first",
                    path.display()
                );
                std::process::exit(2);
            }
        }
        PluginDir(dir)
    }

    pub fn bytes(&self, name: &str) -> Vec<u8> {
        let path = self.0.join(format!("{name}.wasm"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }
}

pub fn key(seq: u64) -> String {
    format!("k{}", seq % KEYS)
}

/// `head` padded with dots to exactly [`PAYLOAD_BYTES`].
pub fn payload(head: String) -> String {
    let mut text = head;
    assert!(text.len() <= PAYLOAD_BYTES, "payload head too long");
    text.extend(std::iter::repeat_n('.', PAYLOAD_BYTES - text.len()));
    text
}

pub fn unix_ns() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_nanos()).expect("ns fit in u64 until 2554")
}

/// utime + stime of a `/proc/.../stat` file (0 if it is gone), and the name.
pub fn stat_ticks(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces, so split at the last ')'.
    let (head, rest) = text.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file are the 12th and 13th after the ')'.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// Includes the threads that have already exited.
pub fn process_ticks(path: &str) -> u64 {
    stat_ticks(Path::new(path)).map_or(0, |(_, ticks)| ticks)
}

/// Busy ticks of all CPUs (everything but idle and iowait) from `/proc/stat`.
pub fn machine_busy_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return 0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum()
}

pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The filesystem type holding `path` (the longest matching mount point),
/// since a tmpfs data directory would make every WAL sync free.
pub fn filesystem_of(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let path = path.canonicalize().ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (mount, kind) = (*fields.get(1)?, *fields.get(2)?);
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{kind} at {mount}")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, description)| description)
}

/// (status, body) of an answered request; panics if it was not answered.
pub fn read_response(
    method: &str,
    path: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> (u16, String) {
    let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
    (status, text)
}
