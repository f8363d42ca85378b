//! Power loss: the data directory on a filesystem that keeps written but
//! unsynced data in memory (`lazyfs.rs`). Each cycle kills the host with
//! SIGKILL at a random point of a publish and exactly-once forwarding load,
//! then drops every unsynced write, as a power cut would, and restarts.
//! With a synced WAL no acknowledged message is lost and no output is
//! duplicated; the control run with `--fsync-interval-ms 1000` must lose
//! acknowledged messages, which proves the check can fail (delivery.md D1,
//! D18; docs/operations.md, "Faults").

use crate::exactly_once::{message, publish_chunks};
use crate::lazyfs::LazyFs;
use crate::support::{wait_for, Body, Options, Server};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
/// Messages a producer sends per cycle, in chunks.
const PER_CYCLE: usize = 300;
const CHUNK: usize = 20;

/// What a campaign saw.
#[derive(Debug, Default)]
struct Report {
    /// Messages acknowledged to the producer (again, after a loss).
    acknowledged: usize,
    /// Acknowledged messages missing after a restart, summed over the cuts.
    lost: usize,
    /// Unsynced bytes the filesystem dropped at the cuts.
    dropped_bytes: u64,
}

/// delivery.md D1 (durability) and D18 (exactly-once) across power loss:
/// 20 cuts at random points, 0 acknowledged messages lost, every message
/// forwarded and counted exactly once.
#[test]
fn power_loss_loses_no_acknowledged_message_and_duplicates_no_output() {
    let cycles = std::env::var("SWITCHYARD_POWER_LOSS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let report = campaign(None, cycles, true);
    eprintln!("power loss, synced WAL: {report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert!(
        report.dropped_bytes > 0,
        "the cuts dropped data: {report:?}"
    );
}

/// The control: syncing only every second, power loss does lose
/// acknowledged messages, and the same check sees it.
#[test]
fn power_loss_with_interval_fsync_loses_acknowledged_messages() {
    let report = campaign(Some(1000), 5, false);
    eprintln!("power loss, --fsync-interval-ms 1000: {report:?}");
    assert!(report.lost > 0, "the check detects losses: {report:?}");
}

/// Run `cycles` cuts against one host. `strict` fails at the first lost
/// message and checks the exactly-once outputs at the end.
fn campaign(fsync_interval_ms: Option<u64>, cycles: usize, strict: bool) -> Report {
    let backing = tempfile::tempdir().expect("backing dir");
    let data = Arc::new(tempfile::tempdir().expect("mount point"));
    let fs = LazyFs::mount(data.path(), backing.path());
    let mut s = Server::start_on(
        data.clone(),
        Options {
            fsync_interval_ms,
            ..Options::default()
        },
    );
    let topic = json!({"partitions": 4, "dedup_window_ms": 3_600_000});
    s.ok("PUT", "/v1/topics/in", Body::Json(topic.clone()));
    s.ok("PUT", "/v1/topics/in.out", Body::Json(topic));
    s.deploy("counter", "counter");
    s.subscribe(
        "tally",
        json!({"topic": "in", "plugin": "counter", "delivery": "exactly-once",
               "ordering": "none", "concurrency": 4,
               "retry": {"initial_ms": 1, "max_ms": 20}}),
    );
    // Whatever the setup left unsynced is made durable: cuts then only
    // test the load.
    s.terminate();
    s.restart();

    let mut report = Report::default();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut sent: Vec<String> = Vec::new();
    for cycle in 0..cycles {
        let ids: Vec<String> = (0..PER_CYCLE).map(|i| format!("c{cycle}-m{i}")).collect();
        sent.extend(ids.iter().cloned());
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let publisher = {
            let (base, ids, acked) = (s.base.clone(), ids.clone(), acked.clone());
            std::thread::spawn(move || publish_chunks(&base, &ids, CHUNK, &acked))
        };
        // Cut at a random point of the publishing, with delivery under way.
        let cut_after = CHUNK + rand::random::<u64>() as usize % (PER_CYCLE - CHUNK);
        wait_for(LIMIT, "publishes acknowledged", || {
            let acked = acked.lock().unwrap().len();
            (acked >= cut_after || publisher.is_finished()).then_some(())
        });
        s.kill9();
        report.dropped_bytes += fs.drop_unsynced();
        publisher.join().expect("publisher thread");
        acknowledged.extend(acked.lock().unwrap().iter().cloned());
        s.restart();

        let stored: HashSet<String> = s
            .read_all("in")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_string())
            .collect();
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !stored.contains(*id))
            .collect();
        if strict {
            assert!(lost.is_empty(), "cycle {cycle} lost {lost:?}");
        }
        report.lost += lost.len();
        // The producer sends what it lost again (same ids): acknowledged
        // once more, and at risk again at the next cut.
        report.acknowledged += lost.len();
        for chunk in lost.chunks(CHUNK) {
            let messages: Vec<Value> = chunk.iter().map(|id| message(id)).collect();
            s.publish("in", messages);
        }
    }
    report.acknowledged += acknowledged.len();

    if strict {
        // Producers retry everything they sent: deduplicated by id.
        for chunk in sent.chunks(CHUNK) {
            s.publish("in", chunk.iter().map(|id| message(id)).collect());
        }
        s.wait_stats("tally", LIMIT, |st| st["lag"] == 0 && st["in_flight"] == 0);
        let forwarded = forwarded(&s);
        let duplicated: Vec<_> = forwarded.iter().filter(|(_, n)| **n > 1).collect();
        assert!(duplicated.is_empty(), "duplicate outputs: {duplicated:?}");
        let missing: Vec<_> = sent
            .iter()
            .filter(|id| !forwarded.contains_key(*id))
            .collect();
        assert!(missing.is_empty(), "never forwarded: {missing:?}");
        let total = s.kv("tally", "total");
        assert_eq!(
            total,
            vec![("total".to_string(), sent.len().to_string())],
            "each message counted once"
        );
    }
    drop(s);
    drop(fs);
    report
}

/// Outputs of the forwarding subscription: source id → how many outputs.
fn forwarded(s: &Server) -> BTreeMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for m in s.read_all("in.out") {
        let source = m["headers"]["source-id"]
            .as_str()
            .expect("source-id header");
        *counts.entry(source.to_string()).or_default() += 1;
    }
    counts.into_iter().collect()
}
