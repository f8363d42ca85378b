//! The core delivery path: ordering, retries, dead letters, sandbox limits.

use crate::support::{msg, Body, Server};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn payload(v: &Value) -> String {
    v["payload"].as_str().expect("text payload").to_string()
}

/// delivery.md: key ordering — same key strictly in offset order, every message once.
#[test]
fn keyed_forwarder_delivers_2000_messages_once_and_in_key_order() {
    let s = Server::start();
    s.topic("orders", 4);
    s.topic("orders.out", 4);
    s.deploy("forwarder", "forwarder");
    s.subscribe(
        "fwd",
        json!({"topic": "orders", "plugin": "forwarder", "ordering": "key", "concurrency": 16}),
    );
    let keys = 40;
    let total = 2000;
    let all: Vec<Value> = (0..total)
        .map(|i| {
            msg(
                &format!("k{}", i % keys),
                &format!("k{}:{}", i % keys, i / keys),
            )
        })
        .collect();
    for chunk in all.chunks(250) {
        let results = s.publish("orders", chunk.to_vec());
        assert_eq!(results.len(), chunk.len());
    }
    s.wait_stats("fwd", LIMIT, |st| st["acked"] == total);

    let mut seen = HashSet::new();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut count = 0;
    for p in 0..4 {
        for m in s.read_partition("orders.out", p) {
            count += 1;
            let text = payload(&m);
            assert!(seen.insert(text.clone()), "duplicate output {text}");
            let (key, seq) = text.split_once(':').unwrap();
            assert_eq!(m["key"], key, "output keeps the key");
            let seq: i64 = seq.parse().unwrap();
            let prev = last.insert(key.to_string(), seq).unwrap_or(-1);
            assert_eq!(seq, prev + 1, "key {key} out of order: {seq} after {prev}");
        }
    }
    assert_eq!(count, total, "every message forwarded exactly once");
    let st = s.stats("fwd");
    assert_eq!(st["dead_lettered"], 0);
    assert_eq!(st["lag"], 0);
}

/// delivery.md: retries — a transient failure is retried until it succeeds.
#[test]
fn flaky_message_succeeds_on_its_third_attempt() {
    flaky_message_succeeds_on_its_third_attempt_on(&Server::start());
}

pub fn flaky_message_succeeds_on_its_third_attempt_on(s: &Server) {
    s.topic("jobs", 1);
    s.deploy("flaky", "flaky");
    s.subscribe(
        "flaky",
        json!({"topic": "jobs", "plugin": "flaky", "retry": {"initial_ms": 10, "max_attempts": 5}}),
    );
    let r = s.publish(
        "jobs",
        vec![json!({"key": "a", "payload": "x", "headers": {"succeed-on": "3"}})],
    );
    let st = s.wait_stats("flaky", LIMIT, |st| st["acked"] == 1);
    assert_eq!(st["delivered"], 3);
    assert_eq!(st["retried"], 2);
    assert_eq!(st["dead_lettered"], 0);
    // delivery.md D26: the ledger has every attempt.
    let id = r[0]["id"].as_str().unwrap();
    let ledger = s.ok(
        "GET",
        &format!("/v1/subscriptions/flaky/messages/{id}"),
        Body::None,
    );
    assert_eq!(ledger["state"], "acked");
    let attempts = ledger["attempts"].as_array().unwrap();
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "ack"]);
    assert!(attempts[0]["error"]
        .as_str()
        .unwrap()
        .contains("flaky: attempt 1"));
    assert!(attempts.iter().all(|a| a["plugin"] == "flaky@1"));
    // Each attempt's log lines and stdout are kept with it.
    assert_eq!(attempts[0]["logs"], json!(["debug: flaky: attempt 1 of 3"]));
    assert_eq!(attempts[1]["logs"], json!(["debug: flaky: attempt 2 of 3"]));
    assert_eq!(
        attempts[2]["logs"],
        json!(["info: flaky: acknowledged on attempt 3"])
    );
    let (status, _) = s.call(
        "GET",
        "/v1/subscriptions/flaky/messages/nope",
        None,
        Body::None,
    );
    assert_eq!(status, 404);
    // The same counters in Prometheus form.
    let (status, metrics) = s.get_text("/metrics");
    assert_eq!(status, 200);
    for line in [
        r#"switchyard_subscription_acked_total{subscription="flaky"} 1"#,
        r#"switchyard_subscription_retried_total{subscription="flaky"} 2"#,
        r#"switchyard_subscription_lag{subscription="flaky"} 0"#,
        r#"switchyard_partition_next_offset{topic="jobs",partition="0"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in:\n{metrics}"
        );
    }
}

/// delivery.md: dead letters — after the last attempt, or at once on
/// `dead-letter`, with every attempt's time and error.
#[test]
fn poison_messages_land_in_dead_letters_with_history() {
    let s = Server::start();
    s.topic("in", 2);
    s.deploy("poison", "poison");
    s.subscribe(
        "p",
        json!({"topic": "in", "plugin": "poison",
               "retry": {"initial_ms": 5, "max_ms": 20, "max_attempts": 3}}),
    );
    s.publish(
        "in",
        vec![
            msg("a", "retry forever"),
            msg("b", "dead on arrival"),
            msg("c", "trap now"),
            msg("d", "fine"),
        ],
    );
    s.wait_stats("p", LIMIT, |st| {
        st["dead_lettered"] == 3 && st["acked"] == 1
    });
    let dead = s.dead_letters("p");
    assert_eq!(dead.len(), 3);
    let by_key = |k: &str| {
        dead.iter()
            .find(|d| d["key"] == k)
            .expect("dead letter")
            .clone()
    };

    let retried = by_key("a");
    let attempts = retried["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{retried}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i as u64 + 1);
        assert_eq!(a["outcome"], "retry");
        assert!(a["error"].as_str().unwrap().contains("always retry"));
        assert!(a["started_ms"].as_u64().unwrap() > 0);
    }
    assert!(retried["reason"].as_str().unwrap().contains("3 attempts"));

    let dead_at_once = by_key("b");
    assert_eq!(dead_at_once["attempts"].as_array().unwrap().len(), 1);
    assert!(dead_at_once["reason"]
        .as_str()
        .unwrap()
        .contains("poison: dead on arrival"));

    let trapped = by_key("c");
    let attempts = trapped["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["outcome"], "trap");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("poison trap"),
        "the guest's panic message is kept: {}",
        attempts[0]["error"]
    );
}

/// delivery.md: timeouts — an endless plugin is interrupted inside wasm and
/// dead-lettered, while other subscriptions keep flowing.
#[test]
fn endless_loop_is_interrupted_while_another_subscription_flows() {
    let s = Server::start();
    s.topic("slow", 1);
    s.topic("fast", 2);
    s.deploy("spin", "spin");
    s.deploy("noop", "noop");
    s.subscribe(
        "spinner",
        json!({"topic": "slow", "plugin": "spin", "timeout_ms": 200, "concurrency": 2,
               "retry": {"initial_ms": 5, "max_attempts": 2}}),
    );
    s.subscribe("quick", json!({"topic": "fast", "plugin": "noop"}));
    s.publish("slow", vec![msg("x", "loop"), msg("y", "loop")]);
    // While the spinners hold their workers, the other subscription flows.
    s.wait_stats("spinner", LIMIT, |st| st["in_flight"].as_u64() > Some(0));
    let batch: Vec<Value> = (0..500).map(|i| msg(&format!("k{i}"), "ok")).collect();
    s.publish("fast", batch);
    s.wait_stats("quick", LIMIT, |st| st["acked"] == 500);

    s.wait_stats("spinner", LIMIT, |st| st["dead_lettered"] == 2);
    for d in s.dead_letters("spinner") {
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2);
        for a in attempts {
            assert_eq!(a["outcome"], "timeout");
            let us = a["duration_us"].as_u64().unwrap();
            assert!(
                us >= 200_000,
                "interrupted only after its timeout ({us} µs)"
            );
        }
    }
}

/// delivery.md: memory limit — a plugin that allocates without bound fails
/// alone; the host and the next message are unaffected.
#[test]
fn memory_hog_is_contained() {
    let s = Server::start();
    s.topic("mem", 1);
    s.deploy("hog", "hog");
    s.subscribe(
        "hog",
        json!({"topic": "mem", "plugin": "hog", "ordering": "partition",
               "retry": {"initial_ms": 5, "max_attempts": 2}}),
    );
    s.publish("mem", vec![msg("a", "hog"), msg("a", "small")]);
    s.wait_stats("hog", LIMIT, |st| {
        st["dead_lettered"] == 1 && st["acked"] == 1
    });
    let dead = s.dead_letters("hog");
    let attempts = dead[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "memory-limit", "{}", dead[0]);
    let (status, _) = s.call("GET", "/healthz", None, Body::None);
    assert_eq!(status, 200);
}

/// Both isolation modes deliver; `worker` reuses instances.
#[test]
fn worker_isolation_delivers_every_message() {
    let s = Server::start();
    s.topic("w", 2);
    s.deploy("flaky", "flaky");
    s.subscribe(
        "w",
        json!({"topic": "w", "plugin": "flaky", "isolation": "worker", "recycle_after": 7,
               "retry": {"initial_ms": 1, "max_attempts": 5}}),
    );
    let batch: Vec<Value> = (0..300)
        .map(|i| json!({"key": format!("k{}", i % 10), "payload": "x", "headers": {"succeed-on": "2"}}))
        .collect();
    s.publish("w", batch);
    let st = s.wait_stats("w", LIMIT, |st| st["acked"] == 300);
    assert_eq!(st["retried"], 300);
    assert_eq!(st["dead_lettered"], 0);
}

/// delivery.md: restart — pending retries keep their attempt counts.
#[test]
fn retry_state_survives_a_restart() {
    retry_state_survives_a_restart_on(&mut Server::start());
}

pub fn retry_state_survives_a_restart_on(s: &mut Server) {
    s.topic("r", 1);
    s.deploy("flaky", "flaky");
    s.subscribe(
        "r",
        json!({"topic": "r", "plugin": "flaky", "retry": {"max_attempts": 5}}),
    );
    // Fails twice, 1.5 s apart, then succeeds on attempt 3.
    s.publish(
        "r",
        vec![json!({"key": "a", "payload": "x",
                    "headers": {"succeed-on": "3", "retry-delay-ms": "1500"}})],
    );
    s.wait_stats("r", LIMIT, |st| st["retried"] == 1);
    s.terminate();
    s.restart();
    let st = s.wait_stats("r", LIMIT, |st| st["acked"] == 1);
    assert_eq!(st["retried"], 2, "attempt count carried over the restart");
    assert_eq!(st["delivered"], 3);
}

/// delivery.md: delays — a delayed message is stored at once and first
/// delivered after its delay, also across a restart.
#[test]
fn delayed_message_waits_even_across_a_restart() {
    delayed_message_waits_even_across_a_restart_on(&mut Server::start());
}

pub fn delayed_message_waits_even_across_a_restart_on(s: &mut Server) {
    s.topic("later", 1);
    s.deploy("noop", "noop");
    s.subscribe("later", json!({"topic": "later", "plugin": "noop"}));
    let published_ms = now_ms();
    let r = s.publish(
        "later",
        vec![
            json!({"payload": "soon", "delay_ms": 1500}),
            json!({"payload": "now"}),
        ],
    );
    assert_eq!(r.len(), 2);
    // Stored at once, readable, and the undelayed message is delivered now.
    assert_eq!(s.read_partition("later", 0).len(), 2);
    s.wait_stats("later", LIMIT, |st| st["acked"] == 1);
    s.terminate();
    s.restart();
    let st = s.wait_stats("later", LIMIT, |st| st["acked"] == 2);
    assert_eq!(st["delivered"], 2);
    assert!(
        now_ms() - published_ms >= 1500,
        "delivered only after the delay"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
