//! Topic lifecycle: deleting a topic (refused while a subscription names
//! it, unless forced), what goes with it, a topic created again under the
//! same name, and a delete cut by kill -9 (delivery.md L1).

use crate::support::{dir_size, msg, wait_for, Body, Server};
use serde_json::{json, Value};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn offsets(s: &Server, topic: &str) -> Vec<u64> {
    s.ok("GET", &format!("/v1/topics/{topic}"), Body::None)["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| o.as_u64().expect("offset"))
        .collect()
}

#[test]
fn deleting_a_topic_takes_its_messages_and_named_subscriptions_with_it() {
    let s = Server::start();
    s.topic("orders.eu", 2);
    s.topic("orders.us", 2);
    s.deploy("noop", "noop");
    s.subscribe("eu", json!({"topic": "orders.eu", "plugin": "noop"}));
    s.subscribe("all", json!({"topic": "orders.*", "plugin": "noop"}));
    let batch = |n: usize| {
        (0..n)
            .map(|i| msg(&format!("k{i}"), "x"))
            .collect::<Vec<_>>()
    };
    s.publish("orders.eu", batch(50));
    s.publish("orders.us", batch(30));
    s.wait_stats("all", LIMIT, |st| st["acked"] == 80);
    s.wait_stats("eu", LIMIT, |st| st["acked"] == 50);

    // A subscription names it: refused, naming the subscription, and
    // nothing changed.
    let (status, refused) = s.call("DELETE", "/v1/topics/orders.eu", None, Body::None);
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
    let text = refused["error"]["message"].as_str().expect("message");
    assert!(text.contains("\"eu\"") || text.contains(" eu"), "{text}");
    assert!(text.contains("force=true"), "{text}");
    assert_eq!(s.read_all("orders.eu").len(), 50);
    let (status, bad) = s.call("DELETE", "/v1/topics/orders.eu?force=yes", None, Body::None);
    assert_eq!(status, 400, "{bad}");

    // Forced: the topic and the subscription naming it go; the pattern
    // subscription goes on with its other topic.
    let deleted = s.ok("DELETE", "/v1/topics/orders.eu?force=true", Body::None);
    assert_eq!(deleted["deleted"], "orders.eu");
    assert_eq!(deleted["subscriptions"], json!(["eu"]));
    let (status, _) = s.call("GET", "/v1/topics/orders.eu", None, Body::None);
    assert_eq!(status, 404);
    let (status, _) = s.call("GET", "/v1/subscriptions/eu", None, Body::None);
    assert_eq!(status, 404);
    let (status, gone) = s.call(
        "POST",
        "/v1/topics/orders.eu/messages",
        None,
        Body::Json(json!({"messages": [{"payload": "late"}]})),
    );
    assert_eq!(status, 404, "{gone}");
    let (status, _) = s.call("DELETE", "/v1/topics/orders.eu", None, Body::None);
    assert_eq!(status, 404, "deleting again");
    s.publish("orders.us", batch(5));
    s.wait_stats("all", LIMIT, |st| st["acked"] == 85 && st["lag"] == 0);

    // Created again, it starts empty at offset 0: no old message, no old
    // id, no old progress.
    s.topic("orders.eu", 2);
    assert_eq!(offsets(&s, "orders.eu"), vec![0, 0]);
    assert!(s.read_all("orders.eu").is_empty());
    let again = s.publish(
        "orders.eu",
        vec![json!({"id": "orders.eu-0-0", "key": "k0", "payload": "new"})],
    );
    assert_eq!(again[0]["offset"], 0, "{again:?}");
    assert_eq!(again[0]["duplicate"], false, "{again:?}");
    // The pattern subscription picks the new topic up from its start.
    s.wait_stats("all", LIMIT, |st| st["acked"] == 86 && st["lag"] == 0);
    s.subscribe("eu", json!({"topic": "orders.eu", "plugin": "noop"}));
    let eu = s.wait_stats("eu", LIMIT, |st| st["acked"] == 1 && st["lag"] == 0);
    assert_eq!(eu["delivered"], 1, "{eu}");

    // The same after a restart.
    let mut s = s;
    s.terminate();
    s.restart();
    assert_eq!(s.read_all("orders.eu").len(), 1);
    assert_eq!(s.read_all("orders.us").len(), 35);
}

/// A deleted topic's space is given back: its messages, ids and the
/// subscriptions' records of it are compacted away.
#[test]
fn a_deleted_topics_space_is_reclaimed() {
    let s = Server::start();
    s.topic("bulk", 4);
    let kib = "x".repeat(1024);
    for round in 0..40 {
        let messages: Vec<Value> = (0..1000)
            .map(|i| json!({"id": format!("r{round}-{i}"), "key": format!("k{i}"), "payload": kib}))
            .collect();
        s.publish("bulk", messages);
    }
    let full = dir_size(s.data.path());
    assert!(full > 40 << 20, "40 MiB of messages stored: {full} bytes");
    // The topic's size is estimated per partition, memtable included, and
    // exported as a metric.
    s.topic("small", 1);
    s.publish("small", vec![msg("k", "one small message")]);
    let bytes = |topic: &str| -> Vec<u64> {
        let t = s.ok("GET", &format!("/v1/topics/{topic}"), Body::None);
        serde_json::from_value(t["bytes"].clone()).expect("bytes per partition")
    };
    // Sizes are measured every 5 s.
    let (bulk, small) = wait_for(LIMIT, "the topics' sizes", || {
        let (bulk, small) = (bytes("bulk"), bytes("small"));
        (bulk.len() == 4 && small.len() == 1 && small[0] > 0).then_some((bulk, small))
    });
    assert!(bulk.iter().all(|b| *b > 1 << 20), "{bulk:?}");
    assert!(small[0] < 1 << 20, "{small:?}");
    let (status, metrics) = s.get_text("/metrics");
    assert_eq!(status, 200);
    let series = "switchyard_partition_bytes{topic=\"bulk\",partition=\"0\"} ";
    let exported: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"));
    assert!(exported > 1 << 20, "{exported}");
    s.ok("DELETE", "/v1/topics/bulk", Body::None);
    let after = wait_for(LIMIT, "the deleted topic's space to come back", || {
        let size = dir_size(s.data.path());
        (size < full / 4).then_some(size)
    });
    eprintln!(
        "data directory: {} MiB with the topic, {} MiB after deleting it",
        full >> 20,
        after >> 20
    );
}

/// A delete of a 100,000-message topic cut by kill -9 at a random point:
/// after the restart the topic is whole (every message readable) or gone
/// (and created again, empty), never between. 10 cycles.
#[test]
fn a_topic_delete_cut_by_kill9_leaves_it_whole_or_gone() {
    const CYCLES: usize = 10;
    const MESSAGES: usize = 100_000;
    const BATCH: usize = 2_000;
    let mut s = Server::start();
    // How long a delete takes here: kills land within about that.
    s.topic("warm", 4);
    s.publish("warm", vec![msg("k", "x")]);
    let started = std::time::Instant::now();
    s.ok("DELETE", "/v1/topics/warm", Body::None);
    let within = (started.elapsed() * 3 / 2).as_micros().max(1) as u64;
    let mut outcomes = (0, 0);
    for cycle in 0..CYCLES {
        let topic = format!("big{cycle}");
        s.topic(&topic, 4);
        for first in (0..MESSAGES).step_by(BATCH) {
            let messages: Vec<Value> = (first..first + BATCH)
                .map(|i| json!({"key": format!("k{}", i % 64), "payload": format!("m{i}")}))
                .collect();
            s.publish(&topic, messages);
        }
        let url = format!("{}/v1/topics/{topic}", s.base);
        let request = std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into();
            agent.delete(&url).call().map(|r| r.status().as_u16()).ok()
        });
        std::thread::sleep(Duration::from_micros(rand::random::<u64>() % within));
        s.kill9();
        let answered = request.join().expect("request thread");
        s.restart();
        let (status, info) = s.call("GET", &format!("/v1/topics/{topic}"), None, Body::None);
        match status {
            200 => {
                outcomes.0 += 1;
                assert_ne!(answered, Some(200), "a delete answered 200 was undone");
                let total: u64 = info["offsets"]
                    .as_array()
                    .expect("offsets")
                    .iter()
                    .map(|o| o.as_u64().unwrap())
                    .sum();
                assert_eq!(total, MESSAGES as u64, "{info}");
                assert_eq!(s.read_all(&topic).len(), MESSAGES, "every message readable");
            }
            404 => {
                outcomes.1 += 1;
                s.topic(&topic, 4);
                assert!(s.read_all(&topic).is_empty(), "nothing of the old topic");
                assert_eq!(offsets(&s, &topic), vec![0; 4]);
            }
            other => panic!("GET {topic} -> {other} {info}"),
        }
    }
    eprintln!("topic deletes cut by kill -9 within {within} µs: (whole, gone) = {outcomes:?}");
}

/// `PUT` on an existing topic changes its retention and dedup window (200,
/// kept across a restart); a different partition count is refused.
#[test]
fn a_topics_retention_and_dedup_window_can_change_but_not_its_partitions() {
    let mut s = Server::start();
    s.topic("t", 2);
    s.deploy("noop", "noop");
    s.subscribe("sub", json!({"topic": "t", "plugin": "noop"}));
    let id = |n: u32| vec![json!({"id": "same", "key": "k", "payload": format!("v{n}")})];
    s.publish("t", id(1));
    assert_eq!(
        s.publish("t", id(2))[0]["duplicate"],
        true,
        "a 2 min window"
    );
    s.wait_stats("sub", LIMIT, |st| st["acked"] == 1);

    // No dedup window, and retention of 1 ms: finished messages go.
    let (status, changed) = s.call(
        "PUT",
        "/v1/topics/t",
        None,
        Body::Json(json!({"partitions": 2, "retention_ms": 1, "dedup_window_ms": 0})),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["retention_ms"], 1, "{changed}");
    assert_eq!(changed["dedup_window_ms"], 0, "{changed}");
    assert_eq!(
        s.publish("t", id(3))[0]["duplicate"],
        false,
        "no window now"
    );
    s.wait_stats("sub", LIMIT, |st| st["acked"] == 2 && st["lag"] == 0);
    wait_for(LIMIT, "retention to delete the finished messages", || {
        s.read_all("t").is_empty().then_some(())
    });

    let (status, refused) = s.call(
        "PUT",
        "/v1/topics/t",
        None,
        Body::Json(json!({"partitions": 3})),
    );
    assert_eq!(status, 409, "{refused}");
    let text = refused["error"]["message"].as_str().expect("message");
    assert!(text.contains("partition count cannot change"), "{text}");

    s.terminate();
    s.restart();
    let info = s.ok("GET", "/v1/topics/t", Body::None);
    assert_eq!(
        (
            info["partitions"].clone(),
            info["retention_ms"].clone(),
            info["dedup_window_ms"].clone()
        ),
        (json!(2), json!(1), json!(0)),
        "{info}"
    );
}
