//! Delivery semantics beyond the core path: idempotent publishing, ordering
//! modes, fan-out and competing consumers.

use crate::support::{msg, Server};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

/// delivery.md P7: a producer-given id seen on the topic within the dedup
/// window is not stored again, also across a restart; after the window it is.
#[test]
fn publish_with_a_known_id_is_deduplicated() {
    publish_with_a_known_id_is_deduplicated_on(&mut Server::start());
}

pub fn publish_with_a_known_id_is_deduplicated_on(s: &mut Server) {
    s.ok(
        "PUT",
        "/v1/topics/d",
        crate::support::Body::Json(json!({"partitions": 2, "dedup_window_ms": 3000})),
    );
    // The window runs from the host's clock when it stores the message,
    // which is after the request leaves.
    let sent_at = Instant::now();
    let first = s.publish(
        "d",
        vec![
            json!({"id": "order-1", "key": "a", "payload": "one"}),
            json!({"id": "order-1", "key": "a", "payload": "one again, same batch"}),
        ],
    );
    assert_eq!(first[0]["duplicate"], false);
    assert_eq!(first[1]["duplicate"], true);
    assert_eq!(first[1]["offset"], first[0]["offset"]);
    assert_eq!(first[1]["partition"], first[0]["partition"]);
    s.kill9();
    s.restart();
    let again = s.publish(
        "d",
        vec![json!({"id": "order-1", "key": "a", "payload": "retry"})],
    );
    assert_eq!(again[0]["duplicate"], true, "{again:?}");
    assert_eq!(again[0]["offset"], first[0]["offset"]);
    let p = first[0]["partition"].as_u64().unwrap() as u32;
    assert_eq!(s.read_partition("d", p).len(), 1, "stored once");
    // Once the window has passed, the id is new again.
    let later = crate::support::wait_for(LIMIT, "the dedup window to pass", || {
        let r = s.publish(
            "d",
            vec![json!({"id": "order-1", "key": "a", "payload": "new"})],
        );
        (r[0]["duplicate"] == false).then_some(r)
    });
    assert!(sent_at.elapsed() >= Duration::from_millis(3000));
    assert_eq!(later[0]["offset"], 1);
}

/// Publish `count` messages over `keys` keys, payload `key:seq`.
fn publish_sequences(s: &Server, topic: &str, keys: usize, count: usize) {
    let all: Vec<Value> = (0..count)
        .map(|i| {
            msg(
                &format!("k{}", i % keys),
                &format!("k{}:{}", i % keys, i / keys),
            )
        })
        .collect();
    for chunk in all.chunks(200) {
        s.publish(topic, chunk.to_vec());
    }
}

/// Forwarded outputs as key → sequence numbers in output order.
fn outputs(s: &Server, topic: &str, partitions: u32) -> BTreeMap<String, Vec<i64>> {
    let mut by_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for p in 0..partitions {
        for m in s.read_partition(topic, p) {
            let text = m["payload"].as_str().unwrap().to_string();
            let (key, seq) = text.split_once(':').unwrap();
            by_key
                .entry(key.into())
                .or_default()
                .push(seq.parse().unwrap());
        }
    }
    by_key
}

/// delivery.md D4: `partition` ordering forwards every partition in order;
/// `none` delivers everything exactly once, in any order.
#[test]
fn partition_and_unordered_modes_deliver_everything_once() {
    partition_and_unordered_modes_deliver_everything_once_on(&Server::start());
}

pub fn partition_and_unordered_modes_deliver_everything_once_on(s: &Server) {
    s.deploy("forwarder", "forwarder");
    for (topic, ordering) in [("po", "partition"), ("no", "none")] {
        s.topic(topic, 3);
        s.topic(&format!("{topic}.out"), 3);
        s.subscribe(
            topic,
            json!({"topic": topic, "plugin": "forwarder", "ordering": ordering, "concurrency": 8}),
        );
        publish_sequences(s, topic, 12, 600);
    }
    s.wait_stats("po", LIMIT, |st| st["acked"] == 600);
    s.wait_stats("no", LIMIT, |st| st["acked"] == 600);
    let all: Vec<i64> = (0..50).collect();
    let ordered = outputs(s, "po.out", 3);
    assert_eq!(ordered.len(), 12);
    for (key, seqs) in ordered {
        assert_eq!(seqs, all, "partition order keeps key {key} in order");
    }
    let any = outputs(s, "no.out", 3);
    assert_eq!(any.len(), 12);
    for (key, mut seqs) in any {
        seqs.sort();
        assert_eq!(seqs, all, "key {key}: each message exactly once");
    }
}

/// delivery.md D9: publish-subscribe — several subscriptions on one topic each
/// get every message; point-to-point — within one subscription each message
/// goes to exactly one worker.
#[test]
fn fan_out_and_competing_consumers() {
    fan_out_and_competing_consumers_on(&Server::start());
}

pub fn fan_out_and_competing_consumers_on(s: &Server) {
    s.topic("events", 4);
    s.deploy("noop", "noop");
    for name in ["audit", "billing", "search"] {
        s.subscribe(
            name,
            json!({"topic": "events", "plugin": "noop", "concurrency": 16, "ordering": "none"}),
        );
    }
    let batch: Vec<Value> = (0..1000).map(|i| msg(&format!("k{i}"), "e")).collect();
    s.publish("events", batch);
    for name in ["audit", "billing", "search"] {
        let st = s.wait_stats(name, LIMIT, |st| st["acked"] == 1000 && st["lag"] == 0);
        assert_eq!(st["delivered"], 1000, "{name}: each message delivered once");
    }
}

/// delivery.md D11: a header filter skips non-matching messages (counted as
/// filtered, never delivered).
#[test]
fn header_filter_skips_other_messages() {
    header_filter_skips_other_messages_on(&Server::start());
}

pub fn header_filter_skips_other_messages_on(s: &Server) {
    s.topic("orders", 2);
    s.deploy("noop", "noop");
    s.subscribe(
        "created",
        json!({"topic": "orders", "plugin": "noop",
               "filter": {"headers": {"type": "order.created"}}}),
    );
    let batch: Vec<Value> = (0..100)
        .map(|i| {
            let kind = if i % 4 == 0 {
                "order.created"
            } else {
                "order.paid"
            };
            json!({"key": format!("k{i}"), "payload": "x", "headers": {"type": kind}})
        })
        .collect();
    s.publish("orders", batch);
    let st = s.wait_stats("created", LIMIT, |st| st["lag"] == 0 && st["acked"] == 25);
    assert_eq!(st["filtered"], 75);
    assert_eq!(st["delivered"], 25);
}

/// delivery.md D12: a paused subscription delivers nothing new; resumed, it
/// catches up. The pause survives a restart.
#[test]
fn pause_and_resume() {
    pause_and_resume_on(&mut Server::start());
}

pub fn pause_and_resume_on(s: &mut Server) {
    s.topic("p", 1);
    s.deploy("noop", "noop");
    s.subscribe("p", json!({"topic": "p", "plugin": "noop"}));
    // In cluster mode a busy host may place it at a later beat; until then
    // it is `elsewhere`, and so is the answer to a pause.
    wait_placed(s, "p");
    let paused = s.ok(
        "POST",
        "/v1/subscriptions/p/pause",
        crate::support::Body::None,
    );
    assert_eq!(paused["state"], "paused");
    s.publish("p", vec![msg("a", "1"), msg("a", "2")]);
    // The messages are durable and counted as lag, but not delivered.
    let st = s.wait_stats("p", LIMIT, |st| st["lag"] == 2);
    assert_eq!(st["delivered"], 0);
    s.terminate();
    s.restart();
    // Its stats are the runner's once it runs again (in cluster mode, from
    // the host's next beat; until then it is `elsewhere`, lag estimated).
    wait_placed(s, "p");
    let st = s.wait_stats("p", LIMIT, |st| st["lag"] == 2);
    assert_eq!(st["delivered"], 0, "still paused after a restart");
    assert_eq!(
        s.ok("GET", "/v1/subscriptions/p", crate::support::Body::None)["state"],
        "paused"
    );
    let resumed = s.ok(
        "POST",
        "/v1/subscriptions/p/resume",
        crate::support::Body::None,
    );
    assert_eq!(resumed["state"], "running");
    s.wait_stats("p", LIMIT, |st| st["acked"] == 2 && st["lag"] == 0);
}

/// Wait until subscription `name` runs on this host (in cluster mode it is
/// `elsewhere` until a host's beat places it).
fn wait_placed(s: &Server, name: &str) {
    crate::support::wait_for(LIMIT, "the subscription to run here", || {
        let info = s.ok(
            "GET",
            &format!("/v1/subscriptions/{name}"),
            crate::support::Body::None,
        );
        (info["state"] != "elsewhere").then_some(info)
    });
}

/// delivery.md D13: dead letters can be read one by one, redriven into their
/// subscription only (attempts start over), and purged.
#[test]
fn dead_letters_redrive_into_one_subscription_and_purge() {
    dead_letters_redrive_into_one_subscription_and_purge_on(&Server::start());
}

pub fn dead_letters_redrive_into_one_subscription_and_purge_on(s: &Server) {
    use crate::support::Body;
    s.topic("jobs", 2);
    s.deploy("fixme", "poison");
    s.deploy("poison", "poison");
    s.deploy("noop", "noop");
    let retry = json!({"initial_ms": 5, "max_ms": 10, "max_attempts": 2});
    s.subscribe(
        "s1",
        json!({"topic": "jobs", "plugin": "fixme", "retry": retry}),
    );
    s.subscribe("s2", json!({"topic": "jobs", "plugin": "noop"}));
    s.subscribe(
        "s3",
        json!({"topic": "jobs", "plugin": "poison", "retry": retry}),
    );
    s.publish(
        "jobs",
        vec![json!({"id": "m1", "key": "k", "payload": "retry me"})],
    );
    s.wait_stats("s1", LIMIT, |st| st["dead_lettered"] == 1);
    s.wait_stats("s2", LIMIT, |st| st["acked"] == 1);
    s.wait_stats("s3", LIMIT, |st| st["dead_lettered"] == 1);

    let one = s.ok("GET", "/v1/subscriptions/s1/dead-letters/m1", Body::None);
    assert_eq!(one["attempts"].as_array().unwrap().len(), 2);
    // Redriven without a fix: it fails again, with its attempts counted afresh.
    let r = s.ok(
        "POST",
        "/v1/subscriptions/s1/dead-letters/redrive",
        Body::None,
    );
    assert_eq!(r["redriven"], 1);
    s.wait_stats("s1", LIMIT, |st| st["dead_lettered"] == 2);
    let again = s.ok("GET", "/v1/subscriptions/s1/dead-letters/m1", Body::None);
    assert_eq!(again["attempts"].as_array().unwrap().len(), 2, "{again}");
    // Fixed (a new plugin version) and redriven by id: acknowledged.
    s.deploy("fixme", "noop");
    let r = s.ok(
        "POST",
        "/v1/subscriptions/s1/dead-letters/redrive",
        Body::Json(json!({"ids": ["m1"]})),
    );
    assert_eq!(r["redriven"], 1);
    s.wait_stats("s1", LIMIT, |st| st["acked"] == 1);
    assert!(s.dead_letters("s1").is_empty());
    // The other subscriptions never saw it again.
    assert_eq!(s.stats("s2")["delivered"], 1);
    assert_eq!(s.stats("s3")["delivered"], 2);
    assert_eq!(s.dead_letters("s3").len(), 1);
    // Purge one, then all.
    let p = s.ok("DELETE", "/v1/subscriptions/s3/dead-letters/m1", Body::None);
    assert_eq!(p["purged"], 1);
    let (status, _) = s.call(
        "GET",
        "/v1/subscriptions/s3/dead-letters/m1",
        None,
        Body::None,
    );
    assert_eq!(status, 404);
    let p = s.ok("DELETE", "/v1/subscriptions/s3/dead-letters", Body::None);
    assert_eq!(p["purged"], 0);
}

/// delivery.md D14: `orders.*` consumes every topic one segment below
/// `orders`, `orders.>` every topic below it at any depth — including topics
/// created after the subscription.
#[test]
fn wildcard_subscriptions_follow_new_topics() {
    wildcard_subscriptions_follow_new_topics_on(&mut Server::start());
}

pub fn wildcard_subscriptions_follow_new_topics_on(s: &mut Server) {
    s.deploy("noop", "noop");
    s.topic("orders.eu", 2);
    s.subscribe("one", json!({"topic": "orders.*", "plugin": "noop"}));
    s.subscribe("any", json!({"topic": "orders.>", "plugin": "noop"}));
    // Created after the subscriptions.
    s.topic("orders.us", 3);
    s.topic("orders.eu.returns", 1);
    s.topic("billing", 1);
    for topic in ["orders.eu", "orders.us", "orders.eu.returns", "billing"] {
        let batch: Vec<Value> = (0..10).map(|i| msg(&format!("k{i}"), topic)).collect();
        s.publish(topic, batch);
    }
    s.wait_stats("one", LIMIT, |st| st["acked"] == 20 && st["lag"] == 0);
    s.wait_stats("any", LIMIT, |st| st["acked"] == 30 && st["lag"] == 0);
    // After a restart the subscriptions resume on all their topics.
    s.terminate();
    s.restart();
    s.topic("orders.asia", 1);
    s.publish("orders.asia", vec![msg("k", "asia")]);
    s.publish("orders.eu", vec![msg("k", "eu again")]);
    s.wait_stats("one", LIMIT, |st| st["acked"] == 22 && st["lag"] == 0);
    let st = s.wait_stats("any", LIMIT, |st| st["acked"] == 32 && st["lag"] == 0);
    assert_eq!(st["delivered"], 32, "nothing delivered twice");
}

/// Deleting a subscription removes it with its progress and dead letters;
/// recreating the name starts afresh.
#[test]
fn deleted_subscription_starts_afresh_when_recreated() {
    deleted_subscription_starts_afresh_when_recreated_on(&Server::start());
}

pub fn deleted_subscription_starts_afresh_when_recreated_on(s: &Server) {
    s.topic("del", 1);
    s.deploy("poison", "poison");
    let spec = json!({"topic": "del", "plugin": "poison", "retry": {"max_attempts": 1}});
    s.subscribe("d", spec.clone());
    s.publish("del", vec![msg("a", "ok"), msg("a", "dead")]);
    s.wait_stats("d", LIMIT, |st| {
        st["acked"] == 1 && st["dead_lettered"] == 1
    });
    use crate::support::Body;
    let gone = s.ok("DELETE", "/v1/subscriptions/d", Body::None);
    assert_eq!(gone["deleted"], "d");
    let (status, _) = s.call("GET", "/v1/subscriptions/d", None, Body::None);
    assert_eq!(status, 404);
    s.subscribe("d", spec);
    let st = s.wait_stats("d", LIMIT, |st| {
        st["acked"] == 1 && st["dead_lettered"] == 1
    });
    assert_eq!(st["delivered"], 2, "counters and progress started over");
    assert_eq!(
        s.dead_letters("d").len(),
        1,
        "old dead letters were deleted"
    );
}

/// delivery.md D3 with lane runs: a backlog of two keys on a fast plugin is
/// handed to workers as runs of each key's messages; a retry, a trap or a dead
/// letter in the middle of a run hands the rest back, and the key's order,
/// each message's attempt count and exactly one acknowledgement hold, under
/// at-least-once and exactly-once.
#[test]
fn runs_of_a_key_keep_its_order_through_retries_traps_and_dead_letters() {
    runs_of_a_key_keep_its_order_through_retries_traps_and_dead_letters_on(&Server::start());
}

pub fn runs_of_a_key_keep_its_order_through_retries_traps_and_dead_letters_on(s: &Server) {
    const MESSAGES: usize = 2000;
    s.deploy("scripted", "scripted");
    // Message i's script and the attempt it is acked at (None: dead-lettered).
    let script = |i: usize| match i {
        777 => ("d", None),
        i if i % 211 == 50 => ("t,a", Some(2)),
        i if i % 97 == 13 => ("r,a", Some(2)),
        _ => ("a", Some(1)),
    };
    for delivery in ["at-least-once", "exactly-once"] {
        let topic = format!("runs-{delivery}");
        s.topic(&topic, 1);
        s.topic(&format!("{topic}.trace"), 1);
        // The backlog is stored before the subscription starts, so every
        // lane is deep when delivery begins.
        for first in (0..MESSAGES).step_by(500) {
            let batch: Vec<Value> = (first..first + 500)
                .map(|i| msg(&format!("k{}", i % 2), &format!("m{i}|{}", script(i).0)))
                .collect();
            s.publish(&topic, batch);
        }
        s.subscribe(
            &topic,
            json!({"topic": topic, "plugin": "scripted", "ordering": "key", "delivery": delivery,
                   "isolation": "worker", "concurrency": 2,
                   "retry": {"max_attempts": 3, "initial_ms": 1, "max_ms": 4}}),
        );
        let st = s.wait_stats(&topic, LIMIT, |st| {
            st["acked"].as_u64().unwrap_or(0) + st["dead_lettered"].as_u64().unwrap_or(0)
                >= MESSAGES as u64
                && st["lag"] == 0
        });
        assert_eq!(st["acked"], (MESSAGES - 1) as u64, "{delivery}: {st}");
        assert_eq!(st["dead_lettered"], 1, "{delivery}: {st}");
        let mut last: BTreeMap<String, usize> = BTreeMap::new();
        let mut acked = vec![None; MESSAGES];
        for m in s.read_partition(&format!("{topic}.trace"), 0) {
            let text = m["payload"].as_str().expect("text payload");
            let (tag, attempt) = text.split_once('|').expect("TAG|ATTEMPT");
            let i: usize = tag[1..].parse().expect("index");
            let key = m["key"].as_str().expect("key").to_string();
            if let Some(before) = last.insert(key.clone(), i) {
                assert!(before < i, "{delivery}: {key} acked m{i} after m{before}");
            }
            assert!(acked[i].is_none(), "{delivery}: m{i} acked twice");
            acked[i] = Some(attempt.parse::<u32>().expect("attempt"));
        }
        for (i, got) in acked.iter().enumerate() {
            assert_eq!(*got, script(i).1, "{delivery}: m{i}'s acknowledged attempt");
        }
    }
}
