//! Subscriptions in cluster mode: a subscription created through any host
//! runs on exactly one of them; its host killed with kill -9, or stopped
//! (SIGSTOP) past its lease and woken again, another host takes it over
//! from the subscription's journal, the stale host's commits are fenced,
//! and the plugin's effects stay exactly once: one output per input, each
//! input counted once in kv, per key in order.

use crate::cluster_hosts::host;
use crate::nats::NatsCluster;
use crate::support::{wait_for, Body, Server};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Failover waits for the dead host's lease to expire (10 s) and a beat.
const LIMIT: Duration = Duration::from_secs(90);
const MESSAGES: usize = 3000;
const KEYS: usize = 16;
const BATCH: usize = 50;

/// The host running `name` now, if one says so (of those `asked`).
fn runner_of(hosts: &[Server], name: &str) -> Option<usize> {
    runner_among(hosts, &[0, 1], name)
}

fn runner_among(hosts: &[Server], asked: &[usize], name: &str) -> Option<usize> {
    hosts.iter().enumerate().position(|(i, h)| {
        asked.contains(&i) && h.child_alive() && {
            let (status, info) = h.call(
                "GET",
                &format!("/v1/subscriptions/{name}"),
                None,
                Body::None,
            );
            status == 200 && info["state"] == "running"
        }
    })
}

fn batch(range: std::ops::Range<usize>) -> Vec<Value> {
    range
        .map(|i| json!({ "id": format!("m{i}"), "key": format!("k{}", i % KEYS), "payload": i.to_string() }))
        .collect()
}

/// The outputs on `in.out`.
fn outputs(server: &Server) -> Vec<Value> {
    server.read_all("in.out")
}

#[test]
fn a_subscription_fails_over_through_kill9_and_sigstop_with_effects_exactly_once() {
    let cluster = NatsCluster::start();
    let mut hosts = [host(&cluster), host(&cluster)];
    hosts[0].topic("in", 4);
    hosts[0].topic("in.out", 4);
    // Uploaded through one host: whichever runs the subscription compiles
    // it from the cluster's copy.
    hosts[0].deploy("counter", "counter");
    let spec = json!({ "topic": "in", "plugin": "counter", "delivery": "exactly-once",
                       "ordering": "key", "concurrency": 8 });
    let (status, created) = hosts[1].call(
        "PUT",
        "/v1/subscriptions/count",
        None,
        Body::Json(spec.clone()),
    );
    assert_eq!(status, 201, "{created}");
    // The same settings through the other host: not a new subscription.
    let (status, _) = hosts[0].call("PUT", "/v1/subscriptions/count", None, Body::Json(spec));
    assert_eq!(status, 200);

    let owner = wait_for(LIMIT, "a host to run the subscription", || {
        runner_of(&hosts, "count")
    });
    let other = 1 - owner;
    // Exactly one runs it; the other knows it runs elsewhere.
    let seen = hosts[other].ok("GET", "/v1/subscriptions/count", Body::None);
    assert_eq!(seen["state"], "elsewhere", "{seen}");
    let listed = hosts[other].ok("GET", "/v1/subscriptions", Body::None);
    assert_eq!(listed["subscriptions"][0]["name"], "count");

    // A third of the messages through both hosts; kill -9 the runner once
    // some are delivered, and publish the next third meanwhile.
    let third = MESSAGES / 3;
    for (n, start) in (0..third).step_by(BATCH).enumerate() {
        hosts[n % 2].publish("in", batch(start..start + BATCH));
    }
    wait_for(LIMIT, "deliveries before the kill", || {
        (outputs(&hosts[other]).len() >= third / 4).then_some(())
    });
    hosts[owner].kill9();
    let before = outputs(&hosts[other]).len();
    for start in (third..2 * third).step_by(BATCH) {
        hosts[other].publish("in", batch(start..start + BATCH));
    }
    let started = std::time::Instant::now();
    wait_for(
        LIMIT,
        "the other host to take the subscription over",
        || runner_of(&hosts, "count").filter(|h| *h == other),
    );
    eprintln!(
        "kill -9: {before} outputs before; taken over {:.1} s after the last publish",
        started.elapsed().as_secs_f64()
    );
    hosts[owner].restart();
    wait_for(LIMIT, "the first two thirds delivered", || {
        (outputs(&hosts[other]).len() >= 2 * third).then_some(())
    });

    // The last third, and the runner stopped (SIGSTOP) past its lease
    // while it delivers them; another host takes over, and the stopped
    // one, woken, finds its commits fenced and stops running it.
    let stalled = wait_for(LIMIT, "a host to run the subscription", || {
        runner_of(&hosts, "count")
    });
    let awake = 1 - stalled;
    // Stopped right after a few batches, while it delivers them.
    let mut batches = (2 * third..MESSAGES).step_by(BATCH);
    for start in batches.by_ref().take(5) {
        hosts[awake].publish("in", batch(start..start + BATCH));
    }
    signal(&hosts[stalled], "-STOP");
    for start in batches {
        hosts[awake].publish("in", batch(start..start + BATCH));
    }
    let started = std::time::Instant::now();
    wait_for(
        LIMIT,
        "the awake host to take the subscription over",
        || runner_among(&hosts, &[awake], "count"),
    );
    eprintln!(
        "SIGSTOP: taken over {:.1} s after the stop",
        started.elapsed().as_secs_f64()
    );
    let all = wait_for(LIMIT, "every message delivered", || {
        let all = outputs(&hosts[awake]);
        (all.len() >= MESSAGES).then_some(all)
    });
    signal(&hosts[stalled], "-CONT");
    wait_for(
        LIMIT,
        "the woken host to stop running the subscription",
        || {
            let (status, info) =
                hosts[stalled].call("GET", "/v1/subscriptions/count", None, Body::None);
            (status == 200 && info["state"] == "elsewhere").then_some(())
        },
    );
    let fenced = hosts[stalled].metric("switchyard_cluster_fenced_commits_total");
    eprintln!("SIGSTOP: {fenced} commits of the woken host fenced");
    let other = awake;
    // Whatever the woken host still did is not counted twice.
    assert_eq!(outputs(&hosts[other]).len(), all.len());

    // One output per input, each counted once, per key in order.
    let mut per_source: HashMap<String, usize> = HashMap::new();
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for m in &all {
        let source = m["headers"]["source-id"].as_str().expect("source-id");
        *per_source.entry(source.to_string()).or_default() += 1;
        assert_eq!(m["headers"]["count"], "1", "counted once: {m}");
        let i: usize = m["payload"]
            .as_str()
            .expect("a text payload")
            .parse()
            .expect("a number");
        per_key
            .entry(m["key"].as_str().expect("key").to_string())
            .or_default()
            .push(i);
    }
    assert_eq!(all.len(), MESSAGES, "outputs");
    assert_eq!(per_source.len(), MESSAGES, "distinct sources");
    for (key, order) in &per_key {
        // One key, one partition of in.out: read in offset order.
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{key}: {order:?}");
    }
    // Read where it runs now: the woken host may have it back.
    let runner = wait_for(LIMIT, "a host to run the subscription", || {
        runner_of(&hosts, "count")
    });
    let total = hosts[runner].kv("count", "total");
    assert_eq!(total, vec![("total".to_string(), MESSAGES.to_string())]);

    // Deleting through either host stops the runner wherever it is, and a
    // new subscription of the name starts afresh.
    hosts[owner].ok("DELETE", "/v1/subscriptions/count", Body::None);
    wait_for(LIMIT, "the subscription to stop", || {
        runner_of(&hosts, "count").is_none().then_some(())
    });
    let (status, _) = hosts[other].call("GET", "/v1/subscriptions/count", None, Body::None);
    assert_eq!(status, 404);
    hosts[owner].subscribe(
        "count",
        json!({ "topic": "in", "plugin": "counter", "delivery": "exactly-once" }),
    );
    let runner = wait_for(LIMIT, "the new subscription to run", || {
        runner_of(&hosts, "count")
    });
    wait_for(LIMIT, "the new subscription to count everything", || {
        let total = hosts[runner].kv("count", "total");
        (total == vec![("total".to_string(), MESSAGES.to_string())]).then_some(())
    });
}

/// Send a signal (`-STOP`, `-CONT`) to a host's process.
fn signal(server: &Server, which: &str) {
    let status = std::process::Command::new("kill")
        .args([which, &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {which}");
}
