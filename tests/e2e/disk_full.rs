//! A full disk: the data directory on a small tmpfs. Publishing until it
//! fills gets a clear 507 (never a 500 or a hang), every acknowledged
//! message stays intact, delivery pauses instead of needing space, and once
//! space is back (the filesystem grown, or another file removed) publishing
//! and delivery resume without a restart (docs/operations.md, "Disk full").

use crate::support::{wait_for, Body, Options, Server};
use serde_json::{json, Value};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
/// Payload size: four per publish, each incompressible.
const PAYLOAD: usize = 256 << 10;

/// A tmpfs mounted on a directory for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir,
        );
        Self(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        run("mount", &["-o", &format!("remount,size={size}")], &self.0);
    }

    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.0)
            .output()
            .expect("df");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df output: {text}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn run(program: &str, args: &[&str], path: &Path) {
    let status = Command::new(program)
        .args(args)
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        status.success(),
        "{program} {args:?} {} failed: this test needs root (tmpfs mounts)",
        path.display()
    );
}

/// Text that LZ4 cannot shrink: base64-like characters from a xorshift.
fn noise(seed: u64, len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            CHARS[(x % 64) as usize] as char
        })
        .collect()
}

fn digest(payload: &str) -> u64 {
    let mut h = DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

/// Publish one batch of four; the status and body.
fn publish_batch(s: &Server, batch: u64) -> (u16, Value, Vec<(String, String)>) {
    let messages: Vec<(String, String)> = (0..4)
        .map(|i| {
            let n = batch * 4 + i;
            (format!("m{n}"), noise(n + 1, PAYLOAD))
        })
        .collect();
    let body = json!({"messages": messages.iter().map(|(id, p)| json!({"id": id, "key": id, "payload": p})).collect::<Vec<_>>()});
    let (status, value) = s.call("POST", "/v1/topics/t/messages", None, Body::Json(body));
    (status, value, messages)
}

/// Every stored message of topic `t`: id → payload digest.
fn stored(s: &Server) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for p in 0..4 {
        let mut from = 0u64;
        loop {
            let v = s.ok(
                "GET",
                &format!("/v1/topics/t/partitions/{p}/messages?from={from}&limit=16"),
                Body::None,
            );
            let batch = v["messages"].as_array().expect("messages").clone();
            let Some(last) = batch.last() else { break };
            from = last["offset"].as_u64().expect("offset") + 1;
            for m in batch {
                let id = m["id"].as_str().expect("id").to_string();
                out.insert(id, digest(m["payload"].as_str().expect("text payload")));
            }
        }
    }
    out
}

/// Publish a small message until one is accepted: how a producer retries
/// after a 507. Every refusal on the way is a 507, never a 500.
fn publish_when_accepted(s: &Server, id: &str) {
    wait_for(LIMIT, "a publish to be accepted", || {
        let (status, value) = s.call(
            "POST",
            "/v1/topics/t/messages",
            None,
            Body::Json(json!({"messages": [{"id": id, "key": id, "payload": "small"}]})),
        );
        assert!(matches!(status, 200 | 507), "{status} {value}");
        (status == 200).then_some(())
    });
}

#[test]
fn a_full_disk_refuses_new_data_keeps_what_was_acknowledged_and_recovers_without_restart() {
    let data = Arc::new(tempfile::tempdir().expect("temporary dir"));
    let disk = Tmpfs::mount(data.path(), "256m");
    let s = Server::start_on(
        data.clone(),
        Options {
            args: vec!["--min-free-disk-mib".into(), "128".into()],
            ..Options::default()
        },
    );
    s.topic("t", 4);
    s.deploy("noop", "noop");

    // Publish until refused. 1 GiB is far past the disk's 256 MiB.
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut refusal = None;
    for batch in 0..1024 {
        let started = Instant::now();
        let (status, value, messages) = publish_batch(&s, batch);
        match status {
            200 => acked.extend(messages.iter().map(|(id, p)| (id.clone(), digest(p)))),
            507 => {
                refusal = Some((started.elapsed(), value));
                break;
            }
            other => panic!("publish {batch}: {other} {value}\n{}", s.log()),
        }
    }
    let (took, error) = refusal.expect("the disk filled up and publishing was refused");
    eprintln!(
        "disk full after {} acknowledged messages ({} MiB); refused in {took:?}",
        acked.len(),
        (acked.len() * PAYLOAD) >> 20
    );
    assert_eq!(error["error"]["code"], "out_of_disk", "{error}");
    let text = error["error"]["message"].as_str().expect("message");
    assert!(text.contains("--min-free-disk-mib"), "{text}");
    assert!(acked.len() >= 100, "only {} acknowledged", acked.len());
    // Still refused, and still clearly; the host is not stuck.
    let (status, again, _) = publish_batch(&s, 5000);
    assert_eq!(status, 507, "{again}");
    assert_eq!(
        s.metric("switchyard_disk_reserve_bytes"),
        128 << 20,
        "the reserve is a metric"
    );

    // Every acknowledged message is stored, byte for byte.
    let on_disk = stored(&s);
    for (id, sum) in &acked {
        assert_eq!(on_disk.get(id), Some(sum), "acknowledged message {id}");
    }

    // A subscription made now (metadata fits in the reserve) has the whole
    // backlog but starts nothing while the disk is low.
    s.subscribe("late", json!({"topic": "t", "plugin": "noop"}));
    let info = wait_for(LIMIT, "the subscription to wait for disk", || {
        let v = s.ok("GET", "/v1/subscriptions/late", Body::None);
        (v["state"] == "waiting_for_disk").then_some(v)
    });
    assert_eq!(info["stats"]["delivered"], 0, "{info}");
    assert!(
        info["stats"]["lag"].as_u64() >= Some(acked.len() as u64),
        "{info}"
    );

    // Grow the filesystem: publishing and delivery resume, no restart.
    disk.resize("1g");
    publish_when_accepted(&s, "after-grow");
    let total = acked.len() as u64 + 1;
    let done = s.wait_stats("late", LIMIT, |st| st["acked"].as_u64() == Some(total));
    assert_eq!(done["dead_lettered"], 0, "{done}");

    // Another file takes the space: refused again; removed: accepted again.
    let filler = data.path().join("filler");
    let fill = disk.available().saturating_sub(64 << 20);
    run("fallocate", &["-l", &fill.to_string()], &filler);
    wait_for(LIMIT, "publishing to be refused", || {
        let (status, value) = s.call(
            "POST",
            "/v1/topics/t/messages",
            None,
            Body::Json(json!({"messages": [{"payload": "x"}]})),
        );
        assert!(matches!(status, 200 | 507), "{status} {value}");
        (status == 507).then_some(())
    });
    std::fs::remove_file(&filler).expect("remove the filler");
    publish_when_accepted(&s, "after-free");

    // Nothing acknowledged was lost on the way, and the store never failed.
    let on_disk = stored(&s);
    for (id, sum) in &acked {
        assert_eq!(on_disk.get(id), Some(sum), "acknowledged message {id}");
    }
    assert!(on_disk.contains_key("after-grow") && on_disk.contains_key("after-free"));
    assert!(
        !s.log().contains("store write failed"),
        "the store never hit the full disk: {}",
        s.log()
    );
    drop(s);
    drop(disk);
}
