//! Subscriptions in cluster mode: a subscription created through any host
//! runs on exactly one of them. The fault campaign: the NATS node leading
//! the subscription's journal killed with kill -9 (and restarted), the
//! host running it killed with kill -9 (and restarted), then stopped
//! (SIGSTOP) past its lease and woken again; each time another host takes
//! it over from the journal, the stale host's commits are fenced, and the
//! plugin's effects stay exactly once: one output per input, each input
//! counted once in kv, per key in order.
//!
//! `SWITCHYARD_FAULT_MESSAGES` (default 3,000) and `SWITCHYARD_FAULT_SEED`
//! (default 1: where in the run each fault strikes) make the long form:
//! `./dev.sh cluster-faults` runs 20,000 messages for seeds 1 to 5.

use crate::cluster::connect;
use crate::cluster_hosts::{host, publish_until_stored_on};
use crate::nats::NatsCluster;
use crate::streams::Stream;
use crate::support::{wait_for, Body, Server};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const KEYS: usize = 16;
const BATCH: usize = 50;

/// A setting of the campaign from the environment.
fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A seeded choice in `range` (splitmix64 of the seed and a salt).
fn pick(seed: usize, salt: u64, range: std::ops::Range<usize>) -> usize {
    let mut z = (seed as u64).wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    range.start + (z % (range.end - range.start) as u64) as usize
}

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
            // Another host's answer is handed over; it names the runner.
            let state = info["state"].as_str().unwrap_or_default();
            status == 200 && ["running", "paused"].contains(&state) && info["host"] == host_name(h)
        }
    })
}

/// A host's name among the live hosts.
pub fn host_name(server: &Server) -> String {
    let host = server.ok("GET", "/v1/host", Body::None);
    host["host"].as_str().expect("a host name").to_string()
}

fn batch(range: std::ops::Range<usize>) -> Vec<Value> {
    range
        .map(|i| json!({ "id": format!("m{i}"), "key": format!("k{}", i % KEYS), "payload": i.to_string() }))
        .collect()
}

/// The outputs on `in.out` (4 partitions), or `None` while the cluster
/// cannot answer (a node was just killed: 503).
fn try_outputs(server: &Server) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for partition in 0..4 {
        let mut from = 0u64;
        loop {
            let (status, page) = server.call(
                "GET",
                &format!(
                    "/v1/topics/in.out/partitions/{partition}/messages?from={from}&limit=1000"
                ),
                None,
                Body::None,
            );
            match status {
                200 => {}
                503 => return None,
                other => panic!("reading in.out answered {other}: {page}"),
            }
            let batch = page["messages"].as_array().expect("messages").clone();
            let Some(last) = batch.last() else { break };
            from = last["offset"].as_u64().expect("offset") + 1;
            out.extend(batch);
        }
    }
    Some(out)
}

/// The outputs (none while the cluster cannot answer).
fn outputs(server: &Server) -> Vec<Value> {
    try_outputs(server).unwrap_or_default()
}

#[test]
fn a_subscription_fails_over_through_kill9_and_sigstop_with_effects_exactly_once() {
    let messages = setting("SWITCHYARD_FAULT_MESSAGES", 3000) / (3 * BATCH) * (3 * BATCH);
    let seed = setting("SWITCHYARD_FAULT_SEED", 1);
    // Failover waits for the dead host's lease to expire (10 s) and a beat;
    // delivery of a long run takes longer.
    let limit = Duration::from_secs(90 + messages as u64 / 100);
    eprintln!("campaign: {messages} messages, seed {seed}");
    let cluster = NatsCluster::start();
    // Journals compacted every 64 KiB: snapshots taken all through the faults.
    let compacting = || {
        Server::start_args(&[
            "--cluster",
            &cluster.urls.join(","),
            "--cluster-journal-compact-kib",
            "64",
        ])
    };
    let mut hosts = [compacting(), compacting()];
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

    let owner = wait_for(limit, "a host to run the subscription", || {
        runner_of(&hosts, "count")
    });
    let other = 1 - owner;
    // Exactly one runs it; the other answers for it from there.
    let seen = hosts[other].ok("GET", "/v1/subscriptions/count", Body::None);
    assert_eq!(seen["state"], "running", "{seen}");
    assert_eq!(seen["host"], host_name(&hosts[owner]), "{seen}");
    let listed = hosts[other].ok("GET", "/v1/subscriptions", Body::None);
    assert_eq!(listed["subscriptions"][0]["name"], "count");

    // A third of the messages through both hosts, by producers that retry
    // with their ids; the NATS node leading the subscription's journal is
    // killed partway, and restarted once the host was killed too.
    let third = messages / 3;
    let batches = third / BATCH;
    let node_kill_at = pick(seed, 1, 1..batches);
    let mut killed_node = None;
    for (n, start) in (0..third).step_by(BATCH).enumerate() {
        if n == node_kill_at {
            let node = journal_leader(&cluster);
            cluster.kill(node);
            killed_node = Some(node);
        }
        publish_until_stored_on(&hosts[n % 2], "in", &batch(start..start + BATCH));
    }
    // kill -9 the running host once some are delivered, and publish the
    // next third meanwhile.
    let delivered_first = third * pick(seed, 2, 1..8) / 8;
    wait_for(limit, "deliveries before the kill", || {
        (outputs(&hosts[other]).len() >= delivered_first).then_some(())
    });
    hosts[owner].kill9();
    let before = outputs(&hosts[other]).len();
    for start in (third..2 * third).step_by(BATCH) {
        publish_until_stored_on(&hosts[other], "in", &batch(start..start + BATCH));
    }
    let started = std::time::Instant::now();
    wait_for(
        limit,
        "the other host to take the subscription over",
        || runner_of(&hosts, "count").filter(|h| *h == other),
    );
    eprintln!(
        "kill -9: {before} outputs before; taken over {:.1} s after the last publish",
        started.elapsed().as_secs_f64()
    );
    hosts[owner].restart();
    if let Some(node) = killed_node {
        cluster.restart(node);
    }
    wait_for(limit, "the first two thirds delivered", || {
        (outputs(&hosts[other]).len() >= 2 * third).then_some(())
    });

    // The last third, and the runner stopped (SIGSTOP) past its lease
    // while it delivers them; another host takes over, and the stopped
    // one, woken, finds its commits fenced and stops running it.
    let stalled = wait_for(limit, "a host to run the subscription", || {
        runner_of(&hosts, "count")
    });
    let awake = 1 - stalled;
    // Stopped right after a few batches, while it delivers them.
    let mut rest = (2 * third..messages).step_by(BATCH);
    for start in rest.by_ref().take(pick(seed, 3, 2..8)) {
        publish_until_stored_on(&hosts[awake], "in", &batch(start..start + BATCH));
    }
    signal(&hosts[stalled], "-STOP");
    for start in rest {
        publish_until_stored_on(&hosts[awake], "in", &batch(start..start + BATCH));
    }
    let started = std::time::Instant::now();
    wait_for(
        limit,
        "the awake host to take the subscription over",
        || runner_among(&hosts, &[awake], "count"),
    );
    eprintln!(
        "SIGSTOP: taken over {:.1} s after the stop",
        started.elapsed().as_secs_f64()
    );
    let all = wait_for(limit, "every message delivered", || {
        let all = outputs(&hosts[awake]);
        (all.len() >= messages).then_some(all)
    });
    signal(&hosts[stalled], "-CONT");
    wait_for(
        limit,
        "the woken host to stop running the subscription",
        || {
            runner_among(&hosts, &[stalled], "count")
                .is_none()
                .then_some(())
        },
    );
    let fenced = hosts[stalled].metric("switchyard_cluster_fenced_commits_total");
    eprintln!("SIGSTOP: {fenced} commits of the woken host fenced");
    let other = awake;
    // Whatever the woken host still did is not counted twice.
    let again = wait_for(limit, "the outputs read again", || {
        try_outputs(&hosts[other])
    });
    assert_eq!(again.len(), all.len());

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
    assert_eq!(all.len(), messages, "outputs");
    assert_eq!(per_source.len(), messages, "distinct sources");
    for (key, order) in &per_key {
        // One key, one partition of in.out: read in offset order.
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{key}: {order:?}");
    }
    // Read where it runs now: the woken host may have it back.
    let runner = wait_for(limit, "a host to run the subscription", || {
        runner_of(&hosts, "count")
    });
    let total = hosts[runner].kv("count", "total");
    assert_eq!(total, vec![("total".to_string(), messages.to_string())]);
    // The journal was compacted: its early entries are gone.
    let compactions: u64 = hosts
        .iter()
        .map(|h| h.metric("switchyard_cluster_journal_compactions_total"))
        .sum();
    let (first, kept, last) = journal_state(&cluster);
    eprintln!("journal: {compactions} compactions on the live hosts; entries {first}..={last}, {kept} kept");
    assert!(
        first > 1 && kept < last,
        "never compacted: {first}..={last}"
    );

    // Its topic cannot go while it consumes it.
    let (status, refused) = hosts[owner].call("DELETE", "/v1/topics/in", None, Body::None);
    assert_eq!(status, 409, "{refused}");

    // Deleting through either host stops the runner wherever it is, and a
    // new subscription of the name starts afresh.
    hosts[owner].ok("DELETE", "/v1/subscriptions/count", Body::None);
    wait_for(limit, "the subscription to stop", || {
        runner_of(&hosts, "count").is_none().then_some(())
    });
    let (status, _) = hosts[other].call("GET", "/v1/subscriptions/count", None, Body::None);
    assert_eq!(status, 404);
    hosts[owner].subscribe(
        "count",
        json!({ "topic": "in", "plugin": "counter", "delivery": "exactly-once" }),
    );
    let runner = wait_for(limit, "the new subscription to run", || {
        runner_of(&hosts, "count")
    });
    wait_for(limit, "the new subscription to count everything", || {
        let total = hosts[runner].kv("count", "total");
        (total == vec![("total".to_string(), messages.to_string())]).then_some(())
    });
    // Forced, the topic goes with the subscription.
    hosts[1 - runner].ok("DELETE", "/v1/topics/in?force=true", Body::None);
    for server in &hosts {
        let (status, _) = server.call("GET", "/v1/subscriptions/count", None, Body::None);
        assert_eq!(status, 404);
    }
}

/// Subscription `name` as a list of subscriptions shows it.
fn listed_as(listed: &Value, name: &str) -> Value {
    listed["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} is listed: {listed}"))
        .clone()
}

/// Send a signal (`-STOP`, `-CONT`) to a host's process.
fn signal(server: &Server, which: &str) {
    let status = std::process::Command::new("kill")
        .args([which, &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {which}");
}

/// The subscription's journal stream as JetStream describes it.
fn journal_info(cluster: &NatsCluster) -> async_nats::jetstream::stream::Info {
    use futures_util::TryStreamExt as _;
    let (rt, client) = connect(cluster);
    let _inside = rt.enter();
    let js = async_nats::jetstream::new(client);
    rt.block_on(async {
        let names: Vec<String> = js.stream_names().try_collect().await.expect("stream names");
        let name = names
            .into_iter()
            .find(|n| n.starts_with("S_count-"))
            .expect("the subscription's journal");
        let mut stream = js.get_stream(name).await.expect("the journal stream");
        stream.info().await.expect("stream info").clone()
    })
}

/// The journal's first and last sequence and how many entries it keeps.
fn journal_state(cluster: &NatsCluster) -> (u64, u64, u64) {
    let state = journal_info(cluster).state;
    (state.first_sequence, state.messages, state.last_sequence)
}

/// The NATS node (1 to 3) leading the subscription's journal stream.
fn journal_leader(cluster: &NatsCluster) -> usize {
    let leader = journal_info(cluster)
        .cluster
        .and_then(|c| c.leader)
        .expect("a leader");
    leader.trim_start_matches('n').parse().expect("n1..n3")
}

/// Any host answers for a subscription (docs/cluster.md, "Any host
/// answers"): its stats, kv and dead letters are read, it is paused and
/// resumed, its dead letters redriven and purged, and it is pulled from,
/// all through a host that does not run it; what was changed so survives
/// a kill -9 of the host running it.
#[test]
fn any_host_reads_changes_and_pulls_a_subscription_running_on_another() {
    let limit = Duration::from_secs(90);
    let cluster = NatsCluster::start();
    let mut hosts = [host(&cluster), host(&cluster)];
    hosts[0].topic("jobs", 2);
    hosts[0].topic("jobs.out", 2);
    hosts[0].deploy("counter", "counter");
    hosts[0].deploy("poison", "poison");
    let retry = json!({"initial_ms": 5, "max_ms": 10, "max_attempts": 2});
    hosts[0].subscribe(
        "count",
        json!({ "topic": "jobs", "plugin": "counter", "delivery": "exactly-once" }),
    );
    hosts[0].subscribe(
        "dead",
        json!({ "topic": "jobs", "plugin": "poison", "retry": retry }),
    );
    hosts[0].subscribe("pulled", json!({ "topic": "jobs", "mode": "pull" }));
    let runner = |name: &str| wait_for(limit, "a host to run it", || runner_of(&hosts, name));
    let (count_far, dead_far, pulled_far) = (
        1 - runner("count"),
        1 - runner("dead"),
        1 - runner("pulled"),
    );

    // Stats and kv, through the host that does not run it.
    // Payloads `poison` retries until they are dead-lettered.
    let retried = |range: std::ops::Range<usize>| -> Vec<Value> {
        range
            .map(|i| json!({ "id": format!("m{i}"), "key": format!("k{i}"), "payload": format!("retry {i}") }))
            .collect()
    };
    hosts[count_far].publish("jobs", retried(0..10));
    let st = hosts[count_far].wait_stats("count", limit, |st| st["acked"] == 10);
    assert_eq!(st["lag"], 0);
    let total = hosts[count_far].kv("count", "total");
    assert_eq!(total, vec![("total".to_string(), "10".to_string())]);
    // The list through it shows each subscription as its host tells it.
    let listed = hosts[count_far].ok("GET", "/v1/subscriptions", Body::None);
    let count = listed_as(&listed, "count");
    assert_eq!(count["state"], "running", "{count}");
    assert_eq!(count["host"], host_name(&hosts[1 - count_far]), "{count}");
    assert_eq!(count["stats"]["acked"], 10, "{count}");

    // Paused through it: the runner delivers nothing new at once.
    let paused = hosts[count_far].ok("POST", "/v1/subscriptions/count/pause", Body::None);
    assert_eq!(paused["state"], "paused", "{paused}");
    hosts[count_far].publish("jobs", retried(10..15));
    let st = hosts[count_far].wait_stats("count", limit, |st| st["lag"] == 5);
    assert_eq!(st["acked"], 10);

    // Its host stopped for a moment (less than its lease): the other host
    // answers itself after a short wait, with the lag estimated from the
    // stored watermarks — maybe more than the true 5, never a zero.
    signal(&hosts[1 - count_far], "-STOP");
    let count = hosts[count_far].ok("GET", "/v1/subscriptions/count", Body::None);
    let listed = hosts[count_far].ok("GET", "/v1/subscriptions", Body::None);
    signal(&hosts[1 - count_far], "-CONT");
    for info in [&count, &listed_as(&listed, "count")] {
        assert_eq!(info["state"], "elsewhere", "{info}");
        let lag = info["stats"]["lag"].as_u64().expect("a lag");
        assert!((5..=15).contains(&lag), "{info}");
    }

    // Dead letters read, redriven and purged through it.
    let dead = &hosts[dead_far];
    dead.wait_stats("dead", limit, |st| st["dead_lettered"] == 15);
    let one = dead.ok("GET", "/v1/subscriptions/dead/dead-letters/m3", Body::None);
    assert_eq!(one["attempts"].as_array().expect("attempts").len(), 2);
    let redriven = dead.ok(
        "POST",
        "/v1/subscriptions/dead/dead-letters/redrive",
        Body::Json(json!({ "ids": ["m3"] })),
    );
    assert_eq!(redriven["redriven"], 1);
    dead.wait_stats("dead", limit, |st| st["dead_lettered"] == 16);
    let purged = dead.ok(
        "DELETE",
        "/v1/subscriptions/dead/dead-letters/m4",
        Body::None,
    );
    assert_eq!(purged["purged"], 1);
    assert_eq!(dead.dead_letters("dead").len(), 14);

    // Leased through one host, settled through the other.
    let leased = hosts[pulled_far].ok(
        "POST",
        "/v1/subscriptions/pulled/lease",
        Body::Json(json!({ "max": 15, "wait_ms": 5000 })),
    );
    let ids: Vec<Value> = leased["leases"]
        .as_array()
        .expect("leases")
        .iter()
        .map(|l| l["lease_id"].clone())
        .collect();
    assert!(!ids.is_empty(), "{leased}");
    let settled = hosts[1 - pulled_far].ok(
        "POST",
        "/v1/subscriptions/pulled/settle",
        Body::Json(json!({ "ack": ids })),
    );
    let results = settled["results"].as_array().expect("results");
    assert!(results.iter().all(|r| r["result"] == "acked"), "{settled}");
    let acked = ids.len() as u64;
    hosts[pulled_far].wait_stats("pulled", limit, |st| st["acked"] == acked);

    // An event stream through the host not running it is relayed from the
    // one that does: a dead letter redriven shows its two attempts.
    let mut events = Stream::open(dead, "/v1/subscriptions/dead/events", None);
    let redriven = dead.ok(
        "POST",
        "/v1/subscriptions/dead/dead-letters/redrive",
        Body::Json(json!({ "ids": ["m5"] })),
    );
    assert_eq!(redriven["redriven"], 1);
    let first = events.next();
    assert_eq!(
        (first.name.as_str(), &first.data["message_id"]),
        ("retrying", &json!("m5"))
    );
    let second = events.next();
    assert_eq!(second.name, "dead-lettered", "{second:?}");
    assert_eq!(second.data["message_id"], "m5", "{second:?}");
    drop(events);
    dead.wait_stats("dead", limit, |st| st["dead_lettered"] == 17);

    // The host running `count` is killed: the other takes it over paused,
    // with the dead letters and pulls as they were left.
    let killed = 1 - count_far;
    let mut events = Stream::open(&hosts[count_far], "/v1/subscriptions/count/events", None);
    hosts[killed].kill9();
    let survivor = &hosts[count_far];
    // The stream relayed from the killed host breaks off, and says so.
    let broken = events.next();
    assert_eq!(broken.name, "lagged", "{broken:?}");
    assert!(
        broken.data["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("broke off"),
        "{broken:?}"
    );
    for name in ["count", "dead", "pulled"] {
        wait_for(limit, "the survivor to run everything", || {
            runner_among(&hosts, &[count_far], name)
        });
    }
    let count = survivor.ok("GET", "/v1/subscriptions/count", Body::None);
    assert_eq!(count["state"], "paused", "{count}");
    assert_eq!(count["stats"]["acked"], 10);
    assert_eq!(survivor.dead_letters("dead").len(), 14);
    let st = survivor.stats("pulled");
    assert_eq!(st["acked"], acked);
    // Resumed on the survivor: the five held back are delivered once.
    survivor.ok("POST", "/v1/subscriptions/count/resume", Body::None);
    survivor.wait_stats("count", limit, |st| st["acked"] == 15 && st["lag"] == 0);
    let total = survivor.kv("count", "total");
    assert_eq!(total, vec![("total".to_string(), "15".to_string())]);
    hosts[killed].restart();
}

/// Retention in cluster mode (docs/cluster.md, C12): messages older than
/// the topic's retention are trimmed from the shared log once every
/// subscription of the topic committed them as finished, and never
/// before — a paused subscription holds its topic whole.
#[test]
fn retention_trims_what_every_subscription_finished_and_nothing_else() {
    let limit = Duration::from_secs(90);
    let cluster = NatsCluster::start();
    let s = host(&cluster);
    let spec = json!({ "partitions": 1, "retention_ms": 0 });
    s.ok("PUT", "/v1/topics/held", Body::Json(spec.clone()));
    s.ok("PUT", "/v1/topics/free", Body::Json(spec));
    s.deploy("noop", "noop");
    s.subscribe(
        "fast",
        json!({ "topic": "held", "plugin": "noop", "ledger": "all" }),
    );
    s.subscribe("slow", json!({ "topic": "held", "plugin": "noop" }));
    s.ok("POST", "/v1/subscriptions/slow/pause", Body::None);
    s.publish("held", batch(0..20));
    s.wait_stats("fast", limit, |st| st["acked"] == 20);
    // A topic nobody consumes, published after: once it is trimmed, a
    // sweep ran past every message of `held` too.
    s.publish("free", batch(20..30));
    let first_of = |topic: &str| {
        let page = s.ok(
            "GET",
            &format!("/v1/topics/{topic}/partitions/0/messages?from=0&limit=100"),
            Body::None,
        );
        let messages = page["messages"].as_array().expect("messages").clone();
        (
            messages.first().map(|m| m["offset"].clone()),
            messages.len(),
        )
    };
    wait_for(limit, "the unconsumed topic to be trimmed", || {
        (first_of("free").1 == 0).then_some(())
    });
    assert_eq!(
        first_of("held"),
        (Some(json!(0)), 20),
        "what the paused subscription has not finished is kept"
    );
    let record = |id: &str| {
        let path = format!("/v1/subscriptions/fast/messages/{id}");
        s.call("GET", &path, None, Body::None).0
    };
    assert_eq!(record("m0"), 200, "`fast` keeps a record of every message");
    // Resumed, it finishes them: then they go.
    s.ok("POST", "/v1/subscriptions/slow/resume", Body::None);
    s.wait_stats("slow", limit, |st| st["acked"] == 20);
    wait_for(limit, "the finished messages to be trimmed", || {
        (first_of("held").1 == 0).then_some(())
    });
    // Their records go with them, at the next sweep of the host running
    // `fast`.
    wait_for(limit, "the trimmed messages' records to go", || {
        (0..20)
            .all(|i| record(&format!("m{i}")) == 404)
            .then_some(())
    });
    // Offsets go on from where they were.
    let next = s.publish("held", batch(30..31));
    assert_eq!(next[0]["offset"], 20);
}

/// A lease whose answer is too large for hosts to hand each other is
/// refused (502), and the messages it would have leased are handed back
/// at once: leased where the subscription runs, they are at attempt 1.
#[test]
fn a_lease_too_large_to_hand_over_is_refused_without_spending_an_attempt() {
    let limit = Duration::from_secs(60);
    let cluster = NatsCluster::start();
    let hosts = [host(&cluster), host(&cluster)];
    hosts[0].topic("big", 1);
    hosts[0].subscribe(
        "p",
        json!({ "topic": "big", "mode": "pull", "ordering": "none", "concurrency": 16 }),
    );
    // Nine messages of 1 MiB: more than the 8 MiB NATS carries at once.
    for i in 0..9 {
        let payload = "x".repeat(1 << 20);
        hosts[0].publish(
            "big",
            vec![json!({ "id": format!("b{i}"), "payload": payload })],
        );
    }
    let owner = wait_for(limit, "a host to run it", || runner_of(&hosts, "p"));
    let far = &hosts[1 - owner];
    // All nine handed to the lease desk: one lease may take them all.
    far.wait_stats("p", limit, |st| st["in_flight"] == 9);
    let body = json!({ "max": 9, "wait_ms": 5000 });
    let (status, refused) = far.call(
        "POST",
        "/v1/subscriptions/p/lease",
        None,
        Body::Json(body.clone()),
    );
    assert_eq!(status, 502, "{refused}");
    assert_eq!(refused["error"]["code"], "answer_too_large");
    // The refused leases are back (as the runner takes them back).
    let mut leases: Vec<Value> = Vec::new();
    wait_for(limit, "all nine leased where the subscription runs", || {
        let leased = hosts[owner].ok(
            "POST",
            "/v1/subscriptions/p/lease",
            Body::Json(body.clone()),
        );
        leases.extend(leased["leases"].as_array().expect("leases").iter().cloned());
        (leases.len() >= 9).then_some(())
    });
    assert_eq!(leases.len(), 9);
    assert!(
        leases.iter().all(|l| l["message"]["attempt"] == 1),
        "no attempt spent on the refused lease"
    );
    let ids: Vec<Value> = leases.iter().map(|l| l["lease_id"].clone()).collect();
    let settled = far.ok(
        "POST",
        "/v1/subscriptions/p/settle",
        Body::Json(json!({ "ack": ids })),
    );
    let results = settled["results"].as_array().expect("results");
    assert!(results.iter().all(|r| r["result"] == "acked"), "{settled}");
    far.wait_stats("p", limit, |st| st["acked"] == 9);
}
