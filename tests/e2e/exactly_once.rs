//! Exactly-once delivery and plugin kv state: an acked attempt's effects
//! (publications, kv writes) are committed with the ack, once; a failed or
//! interrupted attempt leaves no trace, also across kill -9.

use crate::support::{Body, Server};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// The `counter` plugin's outputs on `topic`, by subscription (the first
/// segment of a derived id, or `host` for host-assigned ids), each mapping
/// source id → how many outputs carry it.
fn outputs(s: &Server, topic: &str) -> HashMap<String, HashMap<String, usize>> {
    let mut by_sub: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for m in s.read_all(topic) {
        let id = m["id"].as_str().expect("id");
        let sub = if id.starts_with(&format!("{topic}-")) {
            "host".to_string()
        } else {
            id.split('/').next().expect("derived id").to_string()
        };
        let source = m["headers"]["source-id"]
            .as_str()
            .expect("source-id header");
        *by_sub
            .entry(sub)
            .or_default()
            .entry(source.to_string())
            .or_default() += 1;
    }
    by_sub
}

/// Check a counting subscription's kv state: `total` is `n` and each of the
/// `n` source ids was counted exactly once.
fn assert_counted_once(s: &Server, sub: &str, ids: &[String]) {
    let total = s.kv(sub, "total");
    assert_eq!(
        total,
        vec![("total".to_string(), ids.len().to_string())],
        "{sub}: kv total"
    );
    let seen: BTreeMap<String, String> = s.kv(sub, "seen/").into_iter().collect();
    assert_eq!(seen.len(), ids.len(), "{sub}: one seen/ key per message");
    for id in ids {
        assert_eq!(
            seen.get(&format!("seen/{id}")).map(String::as_str),
            Some("1"),
            "{sub}: {id} counted once"
        );
    }
}

/// delivery.md D18–D21: under exactly-once a plugin's publications and kv
/// writes are committed with the ack, with ids derived from the source
/// message; a failed attempt's effects are discarded; concurrent attempts
/// counting in one kv key lose no update; two subscriptions publishing the
/// same source's outputs to one topic do not collide. Under at-least-once,
/// effects are committed with the ack too, with host-assigned ids (D22).
#[test]
fn exactly_once_commits_effects_with_the_ack() {
    exactly_once_commits_effects_with_the_ack_on(&Server::start());
}

pub fn exactly_once_commits_effects_with_the_ack_on(s: &Server) {
    s.topic("eo", 4);
    s.topic("eo.out", 4);
    s.deploy("counter", "counter");
    // fail-every 5: attempt 1 of every fifth offset publishes and counts,
    // then asks for a retry. Those effects must vanish.
    let spec = |delivery: &str| {
        json!({"topic": "eo", "plugin": "counter", "delivery": delivery, "ordering": "none",
               "concurrency": 8, "retry": {"initial_ms": 1, "max_ms": 5},
               "config": {"fail-every": "5"}})
    };
    s.subscribe("eo-a", spec("exactly-once"));
    s.subscribe("eo-b", spec("exactly-once"));
    s.subscribe("alo", spec("at-least-once"));
    let ids: Vec<String> = (0..400).map(|i| format!("m{i}")).collect();
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "key": format!("k{}", id.len() % 7), "payload": id}))
        .collect();
    s.publish("eo", batch);
    for sub in ["eo-a", "eo-b", "alo"] {
        let st = s.wait_stats(sub, LIMIT, |st| st["acked"] == 400 && st["lag"] == 0);
        // Offsets 0, 5, … 95 of each of the 4 partitions (100 messages each).
        assert_eq!(st["retried"], 80, "{sub}: config fail-every was applied");
        assert_eq!(st["dead_lettered"], 0);
    }
    let outputs = outputs(s, "eo.out");
    for sub in ["eo-a", "eo-b", "host"] {
        let got = outputs
            .get(sub)
            .unwrap_or_else(|| panic!("no outputs of {sub}"));
        assert_eq!(got.len(), 400, "{sub}: an output for every source");
        // At-least-once too: absent a crash, effects are committed once.
        assert!(got.values().all(|n| *n == 1), "{sub}: no duplicate output");
    }
    assert_eq!(outputs.len(), 3);
    // Derived ids, and every output was counted once when it was published.
    for m in s.read_all("eo.out") {
        let source = m["headers"]["source-id"].as_str().unwrap();
        assert_eq!(m["headers"]["count"], "1", "{m}");
        let id = m["id"].as_str().unwrap();
        if !id.starts_with("eo.out-") {
            assert!(
                id == format!("eo-a/eo/{source}/0") || id == format!("eo-b/eo/{source}/0"),
                "derived id {id}"
            );
        }
    }
    for sub in ["eo-a", "eo-b", "alo"] {
        assert_counted_once(s, sub, &ids);
    }
    // Bad listing parameters are refused; an unknown subscription is 404.
    let (status, body) = s.call("GET", "/v1/subscriptions/eo-a/kv?limit=0", None, Body::None);
    assert_eq!(status, 400, "{body}");
    let (status, _) = s.call("GET", "/v1/subscriptions/nope/kv", None, Body::None);
    assert_eq!(status, 404);
    // Paging: `next` continues after the last key listed.
    let page = s.ok(
        "GET",
        "/v1/subscriptions/eo-a/kv?prefix=seen%2F&limit=3",
        Body::None,
    );
    assert_eq!(page["entries"].as_array().unwrap().len(), 3);
    let next = page["next"].as_str().expect("a full page has next");
    let rest = s.ok(
        "GET",
        &format!("/v1/subscriptions/eo-a/kv?prefix=seen%2F&limit=1000&after={next}"),
        Body::None,
    );
    assert_eq!(rest["entries"].as_array().unwrap().len(), 397);
    assert!(rest["next"].is_null());
    // Deleting a subscription deletes its kv state.
    s.ok("DELETE", "/v1/subscriptions/eo-b", Body::None);
    s.subscribe(
        "eo-b",
        json!({"topic": "eo", "plugin": "counter", "start": "latest"}),
    );
    assert!(s.kv("eo-b", "").is_empty());
}

/// delivery.md D23: breaking a kv limit traps the attempt, and its writes
/// are discarded.
#[test]
fn kv_limits_trap_the_attempt() {
    let s = Server::start();
    s.topic("limits", 1);
    s.deploy("poison", "poison");
    s.subscribe(
        "limits",
        json!({"topic": "limits", "plugin": "poison", "delivery": "exactly-once",
               "retry": {"max_attempts": 1}}),
    );
    s.publish(
        "limits",
        vec![
            json!({"id": "big", "payload": "kv-big"}),
            json!({"id": "key", "payload": "kv-key"}),
        ],
    );
    s.wait_stats("limits", LIMIT, |st| st["dead_lettered"] == 2);
    let reasons: BTreeMap<String, String> = s
        .dead_letters("limits")
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        reasons["big"].contains("a value of 1048577 bytes is over the limit of 1048576"),
        "{reasons:?}"
    );
    assert!(
        reasons["key"].contains("a key must be 1 to 1024 bytes (got 1025)"),
        "{reasons:?}"
    );
    assert!(
        s.kv("limits", "").is_empty(),
        "a trapped attempt's writes are discarded"
    );
}

const CYCLES: usize = 10;
const PER_CYCLE: usize = 400;
const CHUNK: usize = 50;

/// delivery.md D18–D21 under crashes: kill -9 at random points while
/// producers publish (and retry with the same ids after the crash) and an
/// exactly-once plugin forwards and counts in kv, over 10 cycles: every
/// message is forwarded exactly once and counted exactly once.
#[test]
fn exactly_once_survives_kill9_without_duplicates_or_losses() {
    let mut s = Server::start();
    // A dedup window longer than the test: producers retry with the same ids.
    let topic = json!({"partitions": 4, "dedup_window_ms": 3_600_000});
    s.ok("PUT", "/v1/topics/in", Body::Json(topic.clone()));
    s.ok("PUT", "/v1/topics/in.out", Body::Json(topic));
    s.deploy("counter", "counter");
    s.subscribe(
        "tally",
        json!({"topic": "in", "plugin": "counter", "delivery": "exactly-once",
               "ordering": "none", "concurrency": 8,
               "retry": {"initial_ms": 1, "max_ms": 20}, "config": {"fail-every": "7"}}),
    );
    let mut ids: Vec<String> = Vec::new();
    for cycle in 0..CYCLES {
        let cycle_ids: Vec<String> = (0..PER_CYCLE).map(|i| format!("c{cycle}-m{i}")).collect();
        ids.extend(cycle_ids.iter().cloned());
        let acked_ids = Arc::new(Mutex::new(Vec::new()));
        let publisher = {
            let (base, cycle_ids, acked) = (s.base.clone(), cycle_ids.clone(), acked_ids.clone());
            std::thread::spawn(move || publish_chunks(&base, &cycle_ids, CHUNK, &acked))
        };
        // Kill at a random point: while publishing, or while delivering.
        let done_before = ids.len() - PER_CYCLE;
        let kill_at = done_before + rand::random::<u64>() as usize % PER_CYCLE;
        crate::support::wait_for(LIMIT, "deliveries under way", || {
            let acked = s.stats("tally")["acked"].as_u64().unwrap_or(0) as usize;
            (acked >= kill_at || acked_ids.lock().unwrap().len() == PER_CYCLE).then_some(())
        });
        s.kill9();
        publisher.join().expect("publisher thread");
        s.restart();
        // The producer retries everything it sent, with the same ids.
        for chunk in cycle_ids.chunks(CHUNK) {
            s.publish("in", chunk.iter().map(|id| message(id)).collect());
        }
    }
    s.wait_stats("tally", LIMIT, |st| {
        st["acked"] == ids.len() as u64 && st["lag"] == 0 && st["in_flight"] == 0
    });
    let outputs = outputs(&s, "in.out");
    let got = &outputs["tally"];
    let duplicated: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicate outputs: {duplicated:?}");
    let lost: Vec<_> = ids.iter().filter(|id| !got.contains_key(*id)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert_eq!(got.len(), ids.len());
    assert_eq!(outputs.len(), 1, "only derived ids");
    assert_counted_once(&s, "tally", &ids);
}

pub(crate) fn message(id: &str) -> Value {
    json!({"id": id, "key": format!("k{}", id.len() % 5), "payload": id})
}

/// Publish `ids` to topic `in` in chunks of `chunk` until done or the
/// server is gone; records the acknowledged ids.
pub(crate) fn publish_chunks(base: &str, ids: &[String], chunk: usize, acked: &Mutex<Vec<String>>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    for chunk in ids.chunks(chunk) {
        let messages: Vec<Value> = chunk.iter().map(|id| message(id)).collect();
        let sent = agent
            .post(&format!("{base}/v1/topics/in/messages"))
            .send_json(json!({ "messages": messages }));
        match sent {
            Ok(resp) if resp.status() == 200 => acked.lock().unwrap().extend(chunk.iter().cloned()),
            _ => return,
        }
    }
}
