//! Pull subscriptions (delivery.md Q1–Q5): consumers outside the host lease
//! messages over HTTP and settle them.

use crate::support::{msg, wait_for, Body, Options, Server};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn pull(s: &Server, name: &str, topic: &str, extra: Value) {
    let mut spec = json!({"topic": topic, "mode": "pull", "ordering": "key",
                          "retry": {"max_attempts": 5, "initial_ms": 20, "max_ms": 20}});
    for (k, v) in extra.as_object().expect("an object") {
        spec[k] = v.clone();
    }
    s.subscribe(name, spec);
}

fn lease(s: &Server, sub: &str, body: Value) -> Vec<Value> {
    let v = s.ok(
        "POST",
        &format!("/v1/subscriptions/{sub}/lease"),
        Body::Json(body),
    );
    v["leases"].as_array().expect("leases").clone()
}

fn settle(s: &Server, sub: &str, body: Value) -> Vec<String> {
    let v = s.ok(
        "POST",
        &format!("/v1/subscriptions/{sub}/settle"),
        Body::Json(body),
    );
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["result"].as_str().expect("a result").to_string())
        .collect()
}

fn id_of(lease: &Value) -> String {
    lease["lease_id"].as_str().expect("a lease id").to_string()
}

/// Q1: 10,000 keyed messages, four concurrent consumers: every message once,
/// each key in order.
#[test]
fn four_consumers_keep_key_order_and_lose_nothing() {
    four_consumers_keep_key_order_and_lose_nothing_on(Arc::new(Server::start()));
}

pub fn four_consumers_keep_key_order_and_lose_nothing_on(s: Arc<Server>) {
    s.topic("orders", 4);
    pull(&s, "workers", "orders", json!({"concurrency": 64}));
    const KEYS: usize = 100;
    const PER_KEY: usize = 100;
    for round in 0..PER_KEY / 10 {
        let batch: Vec<Value> = (0..KEYS * 10)
            .map(|i| {
                let (key, n) = (i % KEYS, round * 10 + i / KEYS);
                json!({"id": format!("k{key}-{n}"), "key": format!("k{key}"), "payload": n.to_string()})
            })
            .collect();
        s.publish("orders", batch);
    }
    let last: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(180);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (s, last, seen) = (s.clone(), last.clone(), seen.clone());
            std::thread::spawn(move || {
                while seen.lock().unwrap().len() < KEYS * PER_KEY {
                    assert!(
                        Instant::now() < deadline,
                        "consumers did not finish in time"
                    );
                    let leases = lease(&s, "workers", json!({"max": 100, "wait_ms": 200}));
                    let mut acks = Vec::new();
                    for l in &leases {
                        let m = &l["message"];
                        let key = m["key"].as_str().unwrap().to_string();
                        let n: i64 = m["payload"].as_str().unwrap().parse().unwrap();
                        {
                            let mut last = last.lock().unwrap();
                            let prev = last.insert(key.clone(), n).unwrap_or(-1);
                            assert_eq!(n, prev + 1, "key {key} out of order");
                        }
                        let fresh = seen
                            .lock()
                            .unwrap()
                            .insert(m["id"].as_str().unwrap().into());
                        assert!(fresh, "{} delivered twice", m["id"]);
                        assert_eq!(m["attempt"], 1);
                        acks.push(id_of(l));
                    }
                    if !acks.is_empty() {
                        let results = settle(&s, "workers", json!({"ack": acks}));
                        assert!(results.iter().all(|r| r == "acked"), "{results:?}");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a consumer failed");
    }
    assert_eq!(seen.lock().unwrap().len(), KEYS * PER_KEY);
    let st = s.wait_stats("workers", WAIT, |st| st["acked"] == (KEYS * PER_KEY) as u64);
    assert_eq!(st["lag"], 0);
    assert_eq!(st["retried"], 0);
}

/// Q2, Q3: an unsettled lease expires into a failed attempt; stale and forged
/// lease ids fail per item; settle can retry, extend and dead-letter.
#[test]
fn leases_expire_and_settle_per_item() {
    leases_expire_and_settle_per_item_on(&Server::start());
}

pub fn leases_expire_and_settle_per_item_on(s: &Server) {
    s.topic("jobs", 1);
    pull(s, "jobs", "jobs", json!({"lease_ms": 300, "ledger": "all"}));
    s.publish("jobs", vec![msg("a", "one")]);
    let first = lease(s, "jobs", json!({"max": 5, "wait_ms": 5000}));
    assert_eq!(first.len(), 1);
    let id = first[0]["message"]["id"].as_str().unwrap().to_string();
    assert_eq!(first[0]["message"]["attempt"], 1);
    assert_eq!(first[0]["message"]["payload"], "one");
    // Not settled: it comes back as attempt 2 once the lease runs out.
    let again = lease(s, "jobs", json!({"wait_ms": 10000}));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["message"]["id"], id.as_str());
    assert_eq!(again[0]["message"]["attempt"], 2);
    let forged = format!("{}x", id_of(&again[0]));
    let results = settle(
        s,
        "jobs",
        json!({"ack": [id_of(&first[0]), forged, "not-a-lease"],
               "extend": [{"lease_id": id_of(&again[0]), "lease_ms": 60000}]}),
    );
    assert_eq!(results, ["expired", "unknown", "unknown", "extended"]);
    let results = settle(
        s,
        "jobs",
        json!({"retry": [{"lease_id": id_of(&again[0]), "delay_ms": 50, "reason": "busy"}]}),
    );
    assert_eq!(results, ["retried"]);
    let third = lease(s, "jobs", json!({"wait_ms": 10000}));
    assert_eq!(third[0]["message"]["attempt"], 3);
    let results = settle(
        s,
        "jobs",
        json!({"dead_letter": [{"lease_id": id_of(&third[0]), "reason": "cannot parse"}]}),
    );
    assert_eq!(results, ["dead_lettered"]);
    // Settling the same way again answers the same.
    let results = settle(
        s,
        "jobs",
        json!({"dead_letter": [{"lease_id": id_of(&third[0])}]}),
    );
    assert_eq!(results, ["dead_lettered"]);
    s.wait_stats("jobs", WAIT, |st| st["dead_lettered"] == 1);
    let dead = s.dead_letters("jobs");
    assert_eq!(dead[0]["reason"], "cannot parse");
    let history: Vec<String> = dead[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(history[0].contains("lease expired"), "{history:?}");
    assert!(history[1].contains("busy"), "{history:?}");
    // A paused subscription leases nothing; resumed, it does.
    s.ok("POST", "/v1/subscriptions/jobs/pause", Body::None);
    s.publish("jobs", vec![msg("b", "two")]);
    assert!(lease(s, "jobs", json!({"wait_ms": 300})).is_empty());
    s.ok("POST", "/v1/subscriptions/jobs/resume", Body::None);
    let resumed = lease(s, "jobs", json!({"wait_ms": 10000}));
    assert_eq!(resumed[0]["message"]["payload"], "two");
    assert_eq!(resumed[0]["message"]["attempt"], 1);
    // A push subscription is not leased.
    s.deploy("noop", "noop");
    s.subscribe("pushed", json!({"topic": "jobs", "plugin": "noop"}));
    let (status, body) = s.call(
        "POST",
        "/v1/subscriptions/pushed/lease",
        None,
        Body::Json(json!({})),
    );
    assert_eq!(status, 409, "{body}");
    let (status, _) = s.call(
        "POST",
        "/v1/subscriptions/jobs/lease",
        None,
        Body::Json(json!({"max": 0})),
    );
    assert_eq!(status, 400);
}

/// Q4: kill -9 while leases are out loses no acknowledged message.
#[test]
fn kill9_with_leases_out_loses_nothing() {
    let mut s = Server::start();
    s.topic("t", 2);
    pull(&s, "p", "t", json!({"concurrency": 256}));
    let ids: HashSet<String> = (0..500).map(|i| format!("m{i}")).collect();
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "key": id, "payload": "x"}))
        .collect();
    s.publish("t", batch);
    let mut leased = Vec::new();
    while leased.len() < 200 {
        leased.extend(lease(&s, "p", json!({"max": 100, "wait_ms": 2000})));
    }
    let acked: Vec<String> = leased[..100].iter().map(id_of).collect();
    let results = settle(&s, "p", json!({"ack": acked}));
    assert!(results.iter().all(|r| r == "acked"));
    s.kill9();
    s.restart();
    let mut seen: HashSet<String> = leased[..100]
        .iter()
        .map(|l| l["message"]["id"].as_str().unwrap().to_string())
        .collect();
    wait_for(WAIT, "every message after the restart", || {
        let leases = lease(&s, "p", json!({"max": 200, "wait_ms": 200}));
        let acks: Vec<String> = leases.iter().map(id_of).collect();
        for l in &leases {
            seen.insert(l["message"]["id"].as_str().unwrap().to_string());
        }
        if !acks.is_empty() {
            settle(&s, "p", json!({"ack": acks}));
        }
        (seen == ids && s.stats("p")["lag"] == 0).then_some(())
    });
}

/// Q5: the consume role leases and settles, and nothing more.
#[test]
fn the_consume_role_leases_and_settles() {
    let s = Server::start_with(Options {
        token: Some("admin-t".into()),
        publish_token: Some("pub-t".into()),
        consume_token: Some("con-t".into()),
        ..Options::default()
    });
    s.topic("t", 1);
    pull(&s, "p", "t", json!({}));
    s.publish("t", vec![msg("k", "v")]);
    let call = |token: &str, path: &str, body: Value| {
        s.call("POST", path, Some(token), Body::Json(body)).0
    };
    assert_eq!(call("pub-t", "/v1/subscriptions/p/lease", json!({})), 403);
    let (status, body) = s.call(
        "POST",
        "/v1/subscriptions/p/lease",
        Some("con-t"),
        Body::Json(json!({"wait_ms": 5000})),
    );
    assert_eq!(status, 200, "{body}");
    let lease_id = id_of(&body["leases"][0]);
    assert_eq!(
        call(
            "con-t",
            "/v1/subscriptions/p/settle",
            json!({"ack": [lease_id]})
        ),
        200
    );
    assert_eq!(
        call("con-t", "/v1/topics/t/messages", json!({"payload": "x"})),
        403
    );
    let (status, _) = s.call("GET", "/v1/subscriptions/p", Some("con-t"), Body::None);
    assert_eq!(status, 200);
}
