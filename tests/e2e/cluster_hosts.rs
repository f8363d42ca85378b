//! `switchyard serve --cluster`: two hosts on one 3-node JetStream cluster
//! share their topics. Either host creates, lists, updates and deletes
//! them; producers publish through both, retrying with their ids through a
//! kill -9 of a partition's stream leader; both hosts then read back every
//! acknowledged message exactly once, at dense offsets, in per-key order.

use crate::cluster::connect;
use crate::nats::NatsCluster;
use crate::support::{wait_for, Body, Server};
use async_nats::jetstream;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const PARTITIONS: u64 = 4;
const BATCHES: usize = 100;
const BATCH: usize = 20;
const KEYS: usize = 16;

pub fn host(cluster: &NatsCluster) -> Server {
    Server::start_args(&["--cluster", &cluster.urls.join(",")])
}

/// Publish `batch` to `topic` through `server` until it is answered 200,
/// as a producer that retries with its ids does; returns the answer's
/// positions and how many tries it took.
pub fn publish_until_stored_on(
    server: &Server,
    topic: &str,
    batch: &[Value],
) -> (Vec<Value>, usize) {
    let mut tries = 0;
    let answer = wait_for(LIMIT, "a publish to be stored", || {
        tries += 1;
        let (status, body) = server.call(
            "POST",
            &format!("/v1/topics/{topic}/messages"),
            None,
            Body::Json(json!({ "messages": batch })),
        );
        match status {
            200 => Some(body["results"].as_array().expect("results").clone()),
            // The partition's stream has no leader yet: unavailable, retried.
            500 | 503 => None,
            other => panic!("publish answered {other}: {body}"),
        }
    });
    (answer, tries)
}

fn publish_until_stored(server: &Server, batch: &[Value]) -> (Vec<Value>, usize) {
    publish_until_stored_on(server, "orders", batch)
}

#[test]
fn two_hosts_share_topics_and_lose_no_acknowledged_publish_through_a_leader_kill() {
    let cluster = NatsCluster::start();
    let (a, b) = (host(&cluster), host(&cluster));

    // Either host creates; the other sees the same topic.
    let spec = json!({ "partitions": PARTITIONS });
    let (status, created) = a.call("PUT", "/v1/topics/orders", None, Body::Json(spec.clone()));
    assert_eq!(status, 201, "{created}");
    let (status, again) = b.call("PUT", "/v1/topics/orders", None, Body::Json(spec));
    assert_eq!(status, 200, "{again}");
    let (status, other) = b.call(
        "PUT",
        "/v1/topics/orders",
        None,
        Body::Json(json!({ "partitions": 2 })),
    );
    assert_eq!(status, 409, "{other}");
    let listed = b.ok("GET", "/v1/topics", Body::None);
    assert_eq!(listed["topics"][0]["name"], "orders");
    assert_eq!(listed["topics"][0]["partitions"], PARTITIONS);
    // A setting changed on one host is the topic's on every host.
    b.ok(
        "PUT",
        "/v1/topics/orders",
        Body::Json(json!({ "partitions": PARTITIONS, "dedup_window_ms": 600_000 })),
    );
    assert_eq!(
        a.ok("GET", "/v1/topics/orders", Body::None)["dedup_window_ms"],
        600_000
    );

    // Producers publish through both hosts; a third of the way in, the
    // leader of partition 0's stream is killed, and restarted later.
    let (rt, client) = connect(&cluster);
    let _inside = rt.enter();
    let js = jetstream::new(client);
    let mut acknowledged: Vec<String> = Vec::new();
    let mut retried = 0;
    let mut killed = None;
    for n in 0..BATCHES {
        if n == BATCHES / 3 {
            let leader = rt.block_on(async {
                let mut stream = js.get_stream("T_orders_0").await.expect("the stream");
                let info = stream.info().await.expect("stream info");
                info.cluster
                    .clone()
                    .and_then(|c| c.leader)
                    .expect("a leader")
            });
            let node: usize = leader.trim_start_matches('n').parse().expect("n1..n3");
            cluster.kill(node);
            killed = Some(node);
        }
        if n == 2 * BATCHES / 3 {
            cluster.restart(killed.take().expect("a node was killed"));
        }
        let batch: Vec<Value> = (0..BATCH)
            .map(|i| {
                let seq = n * BATCH + i;
                json!({
                    "id": format!("m{seq}"),
                    "key": format!("k{}", seq % KEYS),
                    "payload": format!("payload {seq}"),
                    "headers": { "seq": seq.to_string() },
                })
            })
            .collect();
        let server = if n % 2 == 0 { &a } else { &b };
        let (results, tries) = publish_until_stored(server, &batch);
        retried += tries - 1;
        assert_eq!(results.len(), BATCH);
        for (sent, result) in batch.iter().zip(&results) {
            assert_eq!(sent["id"], result["id"]);
            acknowledged.push(result["id"].as_str().expect("id").to_string());
        }
    }
    eprintln!("{retried} publishes were retried while partition 0 had no leader");

    // A retried publish finds every message where it was stored.
    let first = &acknowledged[..BATCH];
    let batch: Vec<Value> = first
        .iter()
        .map(|id| {
            let seq: usize = id[1..].parse().expect("m<seq>");
            json!({ "id": id, "key": format!("k{}", seq % KEYS), "payload": "again" })
        })
        .collect();
    let (results, _) = publish_until_stored(&b, &batch);
    assert!(
        results.iter().all(|r| r["duplicate"] == true),
        "{results:?}"
    );

    // Both hosts read every acknowledged message exactly once, at dense
    // offsets, each key's messages in the order published.
    for server in [&a, &b] {
        let mut seen: HashSet<String> = HashSet::new();
        let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for p in 0..PARTITIONS as u32 {
            let messages = server.read_partition("orders", p);
            for (i, m) in messages.iter().enumerate() {
                assert_eq!(m["offset"], i as u64, "dense offsets in partition {p}");
                let id = m["id"].as_str().expect("id").to_string();
                let seq: usize = id[1..].parse().expect("m<seq>");
                assert_eq!(m["headers"]["seq"], seq.to_string());
                assert!(seen.insert(id), "stored twice: {m}");
                by_key
                    .entry(m["key"].as_str().expect("key").to_string())
                    .or_default()
                    .push(seq);
            }
        }
        assert_eq!(seen.len(), BATCHES * BATCH, "no duplicates, nothing extra");
        for id in &acknowledged {
            assert!(seen.contains(id), "acknowledged {id} was lost");
        }
        for (key, seqs) in &by_key {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: {seqs:?}");
        }
        let info = server.ok("GET", "/v1/topics/orders", Body::None);
        let offsets: u64 = info["offsets"]
            .as_array()
            .expect("offsets")
            .iter()
            .map(|o| o.as_u64().expect("offset"))
            .sum();
        assert_eq!(offsets, (BATCHES * BATCH) as u64);
    }

    // One message read back as it was published.
    let m = &a.read_partition("orders", 0)[0];
    let seq: usize = m["id"].as_str().expect("id")[1..].parse().expect("m<seq>");
    assert_eq!(m["payload"], format!("payload {seq}"));

    // A live tail on one host shows what is published through the other.
    let mut tail = crate::streams::Stream::open(&b, "/v1/topics/orders/tail", None);
    let live: Vec<Value> = (0..3)
        .map(|i| json!({ "key": "live", "payload": format!("live {i}") }))
        .collect();
    a.publish("orders", live);
    for i in 0..3 {
        let event = tail.next();
        assert_eq!(event.name, "message");
        assert_eq!(event.data["payload"], format!("live {i}"));
        assert!(event.id.is_some(), "a cursor to resume from");
    }
    drop(tail);

    // Deleted on one host, gone on both; created again, it starts empty.
    b.ok("DELETE", "/v1/topics/orders", Body::None);
    let (status, _) = a.call("GET", "/v1/topics/orders", None, Body::None);
    assert_eq!(status, 404);
    let (status, gone) = a.call(
        "POST",
        "/v1/topics/orders/messages",
        None,
        Body::Json(json!({ "messages": [{ "payload": "late" }] })),
    );
    assert_eq!(status, 404, "{gone}");
    // Its streams need every replica's node, and the one restarted above
    // may still be catching up: unavailable (503) is retried, as a client
    // would.
    let mut refusals = Vec::new();
    wait_for(LIMIT, "the topic to be created again", || {
        let (status, body) = a.call(
            "PUT",
            "/v1/topics/orders",
            None,
            Body::Json(json!({ "partitions": 2 })),
        );
        match status {
            201 => Some(()),
            // A refused attempt got as far as storing the topic.
            200 if !refusals.is_empty() => Some(()),
            503 => {
                refusals.push(body);
                None
            }
            other => panic!("created again: {other} {body} (after {refusals:?})"),
        }
    });
    if !refusals.is_empty() {
        eprintln!("creating the topic again was refused first: {refusals:?}");
    }
    let info = b.ok("GET", "/v1/topics/orders", Body::None);
    assert_eq!(info["offsets"], json!([0, 0]));
    let published = b.publish("orders", vec![json!({ "key": "k1", "payload": "fresh" })]);
    let counts: HashMap<u64, usize> = (0..2)
        .map(|p| (p, a.read_partition("orders", p as u32).len()))
        .collect();
    assert_eq!(counts.values().sum::<usize>(), 1, "{published:?}");
}

/// The partition streams of `topic` that exist.
fn streams_of(rt: &tokio::runtime::Runtime, js: &jetstream::Context, topic: &str) -> usize {
    use futures_util::TryStreamExt as _;
    let prefix = format!("T_{topic}_");
    rt.block_on(async {
        let names: Vec<String> = js.stream_names().try_collect().await.expect("stream names");
        names.iter().filter(|n| n.starts_with(&prefix)).count()
    })
}

/// A host killed -9 while it deletes a topic leaves it marked `deleting`:
/// gone for every host, and the next create of the name finishes the
/// deletion first, so the new topic starts empty and no stream of the old
/// one is left behind.
#[test]
fn a_topic_delete_cut_by_kill9_is_finished_by_the_next_create() {
    const BIG: u32 = 48;
    let cluster = NatsCluster::start();
    let (mut a, b) = (host(&cluster), host(&cluster));
    let (rt, client) = connect(&cluster);
    let _inside = rt.enter();
    let js = jetstream::new(client);
    a.ok(
        "PUT",
        "/v1/topics/big",
        Body::Json(json!({ "partitions": BIG })),
    );
    let messages: Vec<Value> = (0..200)
        .map(|i| json!({ "key": format!("k{i}"), "payload": "old" }))
        .collect();
    a.publish("big", messages);
    assert_eq!(streams_of(&rt, &js, "big"), BIG as usize);

    // Delete through a, and kill it once some streams are gone, not all.
    let base = a.base.clone();
    let deleting = std::thread::spawn(move || {
        let client = switchyard::api::Client::new(&base, None, None).expect("a client");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        // The answer never comes: the host is killed midway.
        let _ = runtime.block_on(client.exchange(
            hyper::Method::DELETE,
            "/v1/topics/big",
            &[],
            http_body_util::BodyExt::boxed_unsync(http_body_util::Full::new(bytes::Bytes::new())),
        ));
    });
    wait_for(LIMIT, "the deletion to begin", || {
        (streams_of(&rt, &js, "big") < BIG as usize).then_some(())
    });
    a.kill9();
    deleting.join().expect("the deleting client");
    let left = streams_of(&rt, &js, "big");
    eprintln!("{left} of {BIG} partition streams were left by the cut delete");

    // Gone for every host, though streams are left.
    let (status, _) = b.call("GET", "/v1/topics/big", None, Body::None);
    assert_eq!(status, 404);
    assert!(b.ok("GET", "/v1/topics", Body::None)["topics"]
        .as_array()
        .expect("topics")
        .is_empty());
    // Created again (through the restarted host): empty, and nothing of
    // the old topic's streams remains.
    a.restart();
    let (status, created) = a.call(
        "PUT",
        "/v1/topics/big",
        None,
        Body::Json(json!({ "partitions": 2 })),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["offsets"], json!([0, 0]));
    assert_eq!(streams_of(&rt, &js, "big"), 2);
    assert!(b.read_partition("big", 0).is_empty());
}

/// Every NATS node killed: both hosts say they are not ready, and publishes
/// fail (503) without a false acknowledgement; the nodes back, the hosts
/// are ready again and every message acknowledged before is still there.
#[test]
fn hosts_ride_out_a_restart_of_the_whole_nats_cluster() {
    let cluster = NatsCluster::start();
    let (a, b) = (host(&cluster), host(&cluster));
    a.ok(
        "PUT",
        "/v1/topics/t",
        Body::Json(json!({ "partitions": 2 })),
    );
    let before: Vec<Value> = (0..50)
        .map(|i| json!({ "id": format!("m{i}"), "key": format!("k{i}"), "payload": "p" }))
        .collect();
    b.publish("t", before);

    for n in 1..=3 {
        cluster.kill(n);
    }
    for server in [&a, &b] {
        wait_for(LIMIT, "the host to say it is cut off", || {
            let (status, body) = server.call("GET", "/readyz", None, Body::None);
            (status == 503).then_some(body)
        });
    }
    let (status, refused) = a.call(
        "POST",
        "/v1/topics/t/messages",
        None,
        Body::Json(json!({ "id": "late", "payload": "p" })),
    );
    assert!(status == 503 || status == 500, "{status} {refused}");
    // The host's own metrics are still served, without the topics' series.
    let (status, metrics) = a.get_text("/metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("switchyard_plugin_threads"), "{metrics}");
    assert!(
        !metrics.contains("switchyard_partition_next_offset{"),
        "{metrics}"
    );

    cluster.restart_all();
    for server in [&a, &b] {
        wait_for(LIMIT, "the host to be ready again", || {
            let (status, _) = server.call("GET", "/readyz", None, Body::None);
            (status == 200).then_some(())
        });
    }
    // The producer retries its unacknowledged message; everything is there once.
    let (results, _) = publish_until_stored_on(&a, "t", &[json!({ "id": "late", "payload": "p" })]);
    assert_eq!(results.len(), 1);
    // Every stream has a leader again once each answers a read (503 until).
    let mut ids: Vec<String> = (0..2)
        .flat_map(|p| {
            let path = format!("/v1/topics/t/partitions/{p}/messages?limit=1000");
            wait_for(LIMIT, "the partition to answer reads", || {
                match b.call("GET", &path, None, Body::None) {
                    (200, page) => Some(page["messages"].as_array().expect("messages").clone()),
                    (503, _) => None,
                    (status, body) => panic!("{status} {body}"),
                }
            })
        })
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    expected.push("late".to_string());
    expected.sort();
    assert_eq!(ids, expected);
}

/// Plugins in cluster mode: uploaded through one host, listed by every
/// host, numbered from the shared record (the same bytes again make no new
/// version, through any host), deleted through any host; the component is
/// kept in the cluster under its digest.
#[test]
fn plugins_uploaded_through_one_host_are_every_hosts() {
    use tokio::io::AsyncReadExt as _;
    let cluster = NatsCluster::start();
    let (a, b) = (host(&cluster), host(&cluster));
    let upload = |server: &Server, bytes: &[u8]| {
        server.call(
            "PUT",
            "/v1/plugins/p",
            None,
            Body::Raw(Some("application/wasm"), bytes.to_vec()),
        )
    };
    let (noop, forwarder) = (
        crate::support::plugin("noop"),
        crate::support::plugin("forwarder"),
    );

    let (status, first) = upload(&a, &noop);
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["latest"], 1);
    let listed = b.ok("GET", "/v1/plugins", Body::None);
    assert_eq!(listed["plugins"][0]["name"], "p");
    assert_eq!(listed["plugins"][0]["versions"][0], first["versions"][0]);
    assert!(first["versions"][0]["languages"]
        .as_array()
        .expect("languages")
        .contains(&json!("Rust")));

    let (status, same) = upload(&b, &noop);
    assert_eq!((status, &same["latest"]), (200, &json!(1)), "{same}");
    let (status, second) = upload(&b, &forwarder);
    assert_eq!((status, &second["latest"]), (201, &json!(2)), "{second}");
    let versions = a.ok("GET", "/v1/plugins/p", Body::None)["versions"].clone();
    assert_eq!(versions.as_array().expect("versions").len(), 2);

    // The component is in the cluster, under its digest.
    let digest = first["versions"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let (rt, client) = connect(&cluster);
    let _inside = rt.enter();
    let kept = rt.block_on(async {
        let js = jetstream::new(client);
        let bucket = js
            .get_object_store("switchyard_plugins")
            .await
            .expect("the plugins bucket");
        let mut object = bucket
            .get(format!("wasm/{digest}"))
            .await
            .expect("the component");
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.expect("its bytes");
        bytes
    });
    assert!(kept == noop, "the kept component is the uploaded one");

    // Deleted through either host, for both.
    a.ok("DELETE", "/v1/plugins/p@1", Body::None);
    let left = b.ok("GET", "/v1/plugins/p", Body::None);
    assert_eq!(left["versions"][0]["version"], 2);
    assert_eq!(left["versions"].as_array().expect("versions").len(), 1);
    b.ok("DELETE", "/v1/plugins/p", Body::None);
    let (status, _) = a.call("GET", "/v1/plugins/p", None, Body::None);
    assert_eq!(status, 404);
    let (status, _) = a.call("DELETE", "/v1/plugins/p", None, Body::None);
    assert_eq!(status, 404);
}
