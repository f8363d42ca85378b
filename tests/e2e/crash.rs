//! Crash safety: kill -9 in the middle of a publish burst loses nothing that
//! was acknowledged, and delivery resumes to completion.

use crate::padding::padded;
use crate::support::{Body, Options, Server};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
/// Bytes of padding that make a plugin upload take a while.
const PADDING: usize = 4 << 20;
const CYCLES: usize = 10;
const BATCH: usize = 50;
/// Upper bound on batches per cycle, so the publisher stops by itself.
const MAX_BATCHES: usize = 2000;

/// delivery.md: durability — an acknowledged publish survives kill -9; every
/// stored message ends acked or dead-lettered.
#[test]
fn kill9_during_publish_burst_loses_no_acknowledged_message() {
    let mut s = Server::start();
    s.topic("burst", 4);
    s.deploy("noop", "noop");
    s.subscribe(
        "drain",
        json!({"topic": "burst", "plugin": "noop", "concurrency": 8}),
    );
    // The model: every acknowledged publish, id → (partition, offset).
    let mut acknowledged: HashMap<String, (u64, u64)> = HashMap::new();
    for cycle in 0..CYCLES {
        let acked = Arc::new(Mutex::new(Vec::<Value>::new()));
        let publisher = {
            let base = s.base.clone();
            let acked = acked.clone();
            std::thread::spawn(move || publish_until_failure(&base, cycle, &acked))
        };
        // Kill at a random point of the burst, mid-stream.
        let kill_after = (5 + rand::random::<u64>() % 40) as usize * BATCH;
        crate::support::wait_for(LIMIT, "publishes acknowledged", || {
            (acked.lock().unwrap().len() >= kill_after).then_some(())
        });
        s.kill9();
        let sent = publisher.join().expect("publisher thread");
        assert!(sent < MAX_BATCHES, "the publisher was cut off by the kill");
        for r in acked.lock().unwrap().iter() {
            let id = r["id"].as_str().unwrap().to_string();
            let pos = (
                r["partition"].as_u64().unwrap(),
                r["offset"].as_u64().unwrap(),
            );
            assert!(acknowledged.insert(id, pos).is_none(), "ids are unique");
        }
        s.restart();
        let mut by_partition: HashMap<u64, HashMap<u64, String>> = HashMap::new();
        for p in 0..4 {
            for m in s.read_partition("burst", p as u32) {
                by_partition.entry(p).or_default().insert(
                    m["offset"].as_u64().unwrap(),
                    m["id"].as_str().unwrap().to_string(),
                );
            }
        }
        for (id, (p, offset)) in &acknowledged {
            let found = by_partition.get(p).and_then(|m| m.get(offset));
            assert_eq!(
                found,
                Some(id),
                "acknowledged {id} at {p}/{offset} survived cycle {cycle}"
            );
        }
        let stored: usize = by_partition.values().map(|m| m.len()).sum();
        assert!(stored >= acknowledged.len());
        // Everything stored gets finished after the restart.
        s.wait_stats("drain", LIMIT, |st| st["lag"] == 0 && st["in_flight"] == 0);
    }
}

/// delivery.md D16: right after a restart, a backlog is lag, never a false
/// zero: a paused subscription reports exactly what waits, and one killed
/// while draining reports what is left, in its stats and in /metrics.
#[test]
fn stats_right_after_a_restart_count_the_backlog() {
    const TOTAL: u64 = 30_000;
    let mut s = Server::start();
    s.topic("backlog", 4);
    s.deploy("noop", "noop");
    s.subscribe("held", json!({"topic": "backlog", "plugin": "noop"}));
    s.ok("POST", "/v1/subscriptions/held/pause", Body::None);
    for chunk in 0..TOTAL / 1000 {
        let batch = (0..1000)
            .map(|i| crate::support::msg(&format!("k{}", i % 64), &format!("{chunk}-{i}")))
            .collect();
        s.publish("backlog", batch);
    }
    s.subscribe(
        "drain",
        json!({"topic": "backlog", "plugin": "noop", "concurrency": 1, "isolation": "message"}),
    );
    s.wait_stats("drain", LIMIT, |st| st["acked"].as_u64() >= Some(1000));
    s.kill9();
    s.restart();
    // The first reads after the restart.
    let held = s.stats("held");
    let drain = s.stats("drain");
    assert_eq!(held["lag"], TOTAL, "{held}");
    assert_eq!(held["in_flight"], 0, "{held}");
    let lag = drain["lag"].as_u64().expect("lag");
    let acked = drain["acked"].as_u64().expect("acked");
    assert!(
        acked == TOTAL || lag > 0,
        "{acked} of {TOTAL} acked and no lag: {drain}"
    );
    assert_eq!(
        s.metric(r#"switchyard_subscription_lag{subscription="held"}"#),
        TOTAL
    );
    s.wait_stats("drain", LIMIT, |st| st["lag"] == 0 && st["acked"] == TOTAL);
}

fn publish_until_failure(base: &str, cycle: usize, acked: &Mutex<Vec<Value>>) -> usize {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    for batch in 0..MAX_BATCHES {
        let messages: Vec<Value> = (0..BATCH)
            .map(|i| {
                json!({"id": format!("c{cycle}-b{batch}-m{i}"), "key": format!("k{}", i % 16),
                       "payload": "x".repeat(100)})
            })
            .collect();
        let sent = agent
            .post(&format!("{base}/v1/topics/burst/messages"))
            .send_json(json!({ "messages": messages }));
        let Ok(mut resp) = sent else { return batch };
        if resp.status() != 200 && resp.status() != 201 {
            return batch;
        }
        let Ok(body) = resp.body_mut().read_json::<Value>() else {
            return batch;
        };
        acked
            .lock()
            .unwrap()
            .extend(body["results"].as_array().cloned().unwrap_or_default());
    }
    MAX_BATCHES
}

/// delivery.md P6: with a periodic WAL sync, an acknowledged publish still
/// survives a crash of the process (only a machine crash may lose the last
/// interval).
#[test]
fn interval_fsync_survives_a_process_crash() {
    let mut s = Server::start_with(Options {
        fsync_interval_ms: Some(1000),
        ..Options::default()
    });
    s.topic("fast", 1);
    let acked = s.publish("fast", vec![json!({"id": "a", "payload": "kept"})]);
    assert_eq!(acked[0]["offset"], 0);
    s.kill9();
    s.restart();
    let stored = s.read_partition("fast", 0);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["payload"], "kept");
}

/// Bytes of RocksDB files that exist whatever the traffic (see below).
const FIXED_FILES_FLOOR: u64 = 1 << 20;

/// delivery.md R1: under steady load, once every subscription is done with
/// messages and their retention has passed, they are deleted and the data
/// directory stays bounded: after 10 rounds of 20,000 messages it is at most
/// twice its size after round 1.
#[test]
fn retention_keeps_the_data_directory_bounded() {
    let s = Server::start();
    s.ok(
        "PUT",
        "/v1/topics/steady",
        crate::support::Body::Json(json!({"partitions": 4, "retention_ms": 0})),
    );
    s.deploy("noop", "noop");
    s.subscribe(
        "steady",
        json!({"topic": "steady", "plugin": "noop", "isolation": "worker"}),
    );
    let payload = "x".repeat(256);
    let mut sizes = Vec::new();
    for round in 0..10u64 {
        for batch in 0..20 {
            let messages: Vec<Value> = (0..1000)
                .map(|i| json!({"key": format!("k{}", i % 64), "payload": format!("{round}-{batch}-{i}-{payload}")}))
                .collect();
            s.publish("steady", messages);
        }
        let total = (round + 1) * 20_000;
        s.wait_stats("steady", LIMIT, |st| st["acked"] == total);
        // Wait until retention has trimmed every partition up to its head.
        crate::support::wait_for(LIMIT, "retention to trim the log", || {
            let t = s.ok("GET", "/v1/topics/steady", crate::support::Body::None);
            (t["first_offsets"] == t["offsets"]).then_some(())
        });
        sizes.push(crate::support::dir_size(s.data.path()));
    }
    let (first, last) = (sizes[0], *sizes.last().unwrap());
    let files: Vec<String> = std::fs::read_dir(s.data.path())
        .unwrap()
        .flatten()
        .map(|e| {
            format!(
                "{:?} {}",
                e.file_name(),
                e.metadata().map(|m| m.len()).unwrap_or(0)
            )
        })
        .collect();
    // RocksDB keeps files that do not scale with traffic (OPTIONS, MANIFEST,
    // its info log, the plugin blobs, a few small SSTs between compactions):
    // with everything trimmed they dominate, so round 1 is floored at 1 MiB.
    // 200,000 messages (~60 MB) went through.
    let bound = 2 * first.max(FIXED_FILES_FLOOR);
    assert!(
        last <= bound,
        "data directory grew from {first} to {last} bytes: {sizes:?}; files: {files:?}"
    );
    // Trimmed messages are gone from reads; new ones still flow.
    assert!(s.read_partition("steady", 0).is_empty());
}

/// delivery.md D8: under at-most-once a failed attempt is not retried, and
/// across kill -9 restarts no message is ever delivered twice.
#[test]
fn at_most_once_never_delivers_twice() {
    at_most_once_never_delivers_twice_on(&mut Server::start());
}

pub fn at_most_once_never_delivers_twice_on(s: &mut Server) {
    s.topic("amo", 2);
    s.topic("amo.out", 2);
    s.deploy("forwarder", "forwarder");
    s.deploy("flaky", "flaky");
    s.subscribe(
        "once",
        json!({"topic": "amo", "plugin": "forwarder", "delivery": "at-most-once", "concurrency": 8}),
    );
    s.topic("amo-flaky", 1);
    s.subscribe(
        "flaky-once",
        json!({"topic": "amo-flaky", "plugin": "flaky", "delivery": "at-most-once"}),
    );
    s.publish(
        "amo-flaky",
        vec![json!({"payload": "x", "headers": {"succeed-on": "2"}})],
    );
    let st = s.wait_stats("flaky-once", LIMIT, |st| {
        st["failed"] == 1 && st["lag"] == 0
    });
    assert_eq!(st["delivered"], 1, "no retry under at-most-once");
    assert_eq!(st["dead_lettered"], 0);

    let mut published = 0;
    for cycle in 0..3 {
        let batch: Vec<Value> = (0..2000)
            .map(|i| json!({"key": format!("k{}", i % 32), "payload": format!("c{cycle}-{i}")}))
            .collect();
        published += batch.len();
        s.publish("amo", batch);
        // Kill while deliveries are under way.
        crate::support::wait_for(LIMIT, "deliveries under way", || {
            (s.stats("once")["delivered"].as_u64() > Some(0)).then_some(())
        });
        s.kill9();
        s.restart();
        s.wait_stats("once", LIMIT, |st| st["lag"] == 0 && st["in_flight"] == 0);
    }
    let mut seen = std::collections::HashSet::new();
    for p in 0..2 {
        for m in s.read_partition("amo.out", p) {
            let text = m["payload"].as_str().unwrap().to_string();
            assert!(seen.insert(text.clone()), "{text} delivered twice");
        }
    }
    assert!(seen.len() <= published);
}

/// Send one request from another thread (its answer is lost if the server
/// dies first).
fn fire(
    base: &str,
    method: &'static str,
    path: String,
    body: Option<(&'static str, Vec<u8>)>,
) -> std::thread::JoinHandle<()> {
    let url = format!("{base}{path}");
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let request = ureq::http::Request::builder().method(method).uri(&url);
        let _ = match body {
            Some((kind, bytes)) => agent.run(
                request
                    .header("Content-Type", kind)
                    .body(bytes)
                    .expect("a request"),
            ),
            None => agent.run(request.body(()).expect("a request")),
        };
    })
}

/// Kill the server at a random point within `within` of the request `fire`
/// sent (about as long as the request takes), then start it again.
fn kill_during(s: &mut Server, request: std::thread::JoinHandle<()>, within: Duration) {
    let at = rand::random::<u64>() % (within.as_micros() as u64).max(1);
    std::thread::sleep(Duration::from_micros(at));
    s.kill9();
    request.join().expect("request thread");
    s.restart();
}

/// delivery.md D17 and the plugin versions under crashes: kill -9 at random
/// points of creating and deleting subscriptions, deploying and deleting
/// plugins, redriving and purging dead letters; after each restart the change is
/// whole or absent, never half made.
#[test]
fn admin_operations_are_whole_or_absent_after_kill9() {
    const CYCLES: usize = 8;
    let mut s = Server::start();
    s.topic("t", 2);
    s.deploy("noop", "noop");
    s.deploy("poison", "poison");
    let batch = |n: usize, text: &str| {
        (0..n)
            .map(|i| crate::support::msg(&format!("k{i}"), text))
            .collect::<Vec<_>>()
    };
    s.publish("t", batch(20, "ok"));
    // A component of a few MiB (padded), so a deploy takes a while.
    let big = crate::support::plugin("noop");
    // How long each kind of request takes here: kills land within that.
    let timed = |f: &dyn Fn()| {
        let start = std::time::Instant::now();
        f();
        start.elapsed() * 3 / 2
    };
    let sub_time = timed(&|| s.subscribe("cal", json!({"topic": "t", "plugin": "noop"})));
    let plugin_time = timed(&|| {
        s.ok(
            "PUT",
            "/v1/plugins/cal",
            Body::Raw(Some("application/wasm"), padded(&big, 999, PADDING)),
        );
    });
    s.ok("DELETE", "/v1/subscriptions/cal", Body::None);
    let mut outcomes = HashMap::<&str, (usize, usize)>::new();
    // Per operation: (kills after which it had not happened, had happened).
    let mut tally = |op: &'static str, happened: bool| {
        let e = outcomes.entry(op).or_default();
        if happened {
            e.1 += 1
        } else {
            e.0 += 1
        }
    };
    for cycle in 0..CYCLES {
        // Deleting a subscription that has acked everything.
        let name = format!("del{cycle}");
        s.subscribe(&name, json!({"topic": "t", "plugin": "noop"}));
        s.wait_stats(&name, LIMIT, |st| st["acked"] == 20);
        let req = fire(&s.base, "DELETE", format!("/v1/subscriptions/{name}"), None);
        kill_during(&mut s, req, sub_time);
        let (status, info) = s.call(
            "GET",
            &format!("/v1/subscriptions/{name}"),
            None,
            Body::None,
        );
        tally("delete subscription", status != 200);
        if status == 200 {
            assert_eq!(info["stats"]["lag"], 0, "progress kept whole: {info}");
            assert_eq!(info["stats"]["acked"], 20, "{info}");
        } else {
            assert_eq!(status, 404, "{info}");
            // Created again, it starts afresh: all 20 again.
            s.subscribe(&name, json!({"topic": "t", "plugin": "noop"}));
            s.wait_stats(&name, LIMIT, |st| st["acked"] == 20 && st["lag"] == 0);
        }

        // Creating a subscription that starts after what is stored.
        let name = format!("late{cycle}");
        let spec = json!({"topic": "t", "plugin": "noop", "start": "latest"});
        let req = fire(
            &s.base,
            "PUT",
            format!("/v1/subscriptions/{name}"),
            Some(("application/json", spec.to_string().into_bytes())),
        );
        kill_during(&mut s, req, sub_time);
        let (status, info) = s.call(
            "GET",
            &format!("/v1/subscriptions/{name}"),
            None,
            Body::None,
        );
        tally("create subscription", status == 200);
        if status == 200 {
            assert_eq!(
                info["stats"]["lag"], 0,
                "starts after the stored messages: {info}"
            );
        } else {
            assert_eq!(status, 404, "{info}");
        }

        // Deploying a plugin version, then using it.
        let plugin = format!("p{cycle}");
        let padded = padded(&big, cycle as u64, PADDING);
        let req = fire(
            &s.base,
            "PUT",
            format!("/v1/plugins/{plugin}"),
            Some(("application/wasm", padded)),
        );
        kill_during(&mut s, req, plugin_time);
        let (status, info) = s.call("GET", &format!("/v1/plugins/{plugin}"), None, Body::None);
        tally("deploy plugin", status == 200);
        if status == 200 {
            let user = format!("user{cycle}");
            s.subscribe(&user, json!({"topic": "t", "plugin": plugin}));
            s.wait_stats(&user, LIMIT, |st| st["acked"] == 20);
            s.ok("DELETE", &format!("/v1/subscriptions/{user}"), Body::None);
            // Deleting it, then looking again.
            let req = fire(&s.base, "DELETE", format!("/v1/plugins/{plugin}"), None);
            kill_during(&mut s, req, sub_time);
            let (status, info) = s.call("GET", &format!("/v1/plugins/{plugin}"), None, Body::None);
            tally("delete plugin", status != 200);
            if status == 200 {
                let user = format!("again{cycle}");
                s.subscribe(&user, json!({"topic": "t", "plugin": plugin}));
                s.wait_stats(&user, LIMIT, |st| st["acked"] == 20);
                s.ok("DELETE", &format!("/v1/subscriptions/{user}"), Body::None);
            } else {
                assert_eq!(status, 404, "{info}");
            }
        } else {
            assert_eq!(status, 404, "{info}");
        }

        // Purging every dead letter: all or none.
        let name = format!("dead{cycle}");
        let topic = format!("d{cycle}");
        s.topic(&topic, 1);
        s.subscribe(&name, json!({"topic": topic, "plugin": "poison"}));
        s.publish(&topic, batch(20, "dead"));
        s.wait_stats(&name, LIMIT, |st| st["dead_lettered"] == 20);

        // Redriving every dead letter: all go back (and, failing again,
        // are dead-lettered once more) or none; never some, never twice.
        let req = fire(
            &s.base,
            "POST",
            format!("/v1/subscriptions/{name}/dead-letters/redrive"),
            Some(("application/json", b"{}".to_vec())),
        );
        kill_during(&mut s, req, sub_time);
        // Half a redrive would leave fewer than 20 dead letters until the
        // redriven part failed again, and then a count between 20 and 40.
        let count = crate::support::wait_for(LIMIT, "20 dead letters, redriven or not", || {
            let count = s.stats(&name)["dead_lettered"].as_u64();
            let listed = s.dead_letters(&name).len();
            (listed == 20 && matches!(count, Some(20) | Some(40))).then_some(count)
        });
        tally("redrive dead letters", count == Some(40));

        let req = fire(
            &s.base,
            "DELETE",
            format!("/v1/subscriptions/{name}/dead-letters"),
            None,
        );
        kill_during(&mut s, req, sub_time);
        let left = s.dead_letters(&name).len();
        tally("purge dead letters", left == 0);
        assert!(left == 0 || left == 20, "{left} of 20 dead letters left");
    }
    eprintln!("kills that left each operation (undone, done): {outcomes:?}");
}
