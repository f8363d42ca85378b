//! Cluster mode's commit primitive on a real 3-node JetStream cluster: an
//! atomic batch is stored whole or not at all; a writer whose expected
//! sequence is stale is fenced, its whole batch refused; a batch holding a
//! message id stored before is refused whole; and commits go on after the
//! stream's leader is killed, with nothing acknowledged lost.

use crate::nats::NatsCluster;
use crate::support::wait_for;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use std::time::Duration;
use switchyard::cluster::batch::{commit, BatchError, Entry};

const LIMIT: Duration = Duration::from_secs(60);

fn entry(subject: &str, id: Option<&str>, payload: &str) -> Entry {
    Entry {
        subject: subject.to_string(),
        id: id.map(str::to_string),
        headers: vec![("switchyard-test".to_string(), "1".to_string())],
        payload: payload.to_string().into(),
        expect: None,
    }
}

/// `entries` with the first fenced at `expect`.
fn fenced(mut entries: Vec<Entry>, expect: u64) -> Vec<Entry> {
    entries[0].expect = Some(expect);
    entries
}

/// A checkpoint of partition 0 and one output.
fn checkpoint_and_output(checkpoint: &str, id: &str, payload: &str) -> Vec<Entry> {
    vec![
        entry("s.ckpt.0", None, checkpoint),
        entry("s.out", Some(id), payload),
    ]
}

/// A runtime for the test's client, and a client of every node.
pub fn connect(cluster: &NatsCluster) -> (tokio::runtime::Runtime, async_nats::Client) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let client = rt
        .block_on(async_nats::connect(cluster.urls.clone()))
        .expect("connecting to the cluster");
    (rt, client)
}

fn messages(rt: &tokio::runtime::Runtime, js: &jetstream::Context) -> u64 {
    rt.block_on(async {
        let mut stream = js.get_stream("SUB_s").await.expect("the stream");
        stream.info().await.expect("stream info").state.messages
    })
}

#[test]
fn atomic_batches_are_whole_fenced_and_survive_a_leader_kill() {
    let cluster = NatsCluster::start();
    let (rt, client) = connect(&cluster);
    let _inside = rt.enter();
    let js = jetstream::new(client.clone());
    rt.block_on(js.create_stream(stream::Config {
        name: "SUB_s".into(),
        subjects: vec!["s.>".into()],
        num_replicas: 3,
        allow_atomic_publish: true,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }))
    .expect("an R3 stream with atomic batches");

    // The owner commits a checkpoint and two outputs: all three stored.
    let first = rt
        .block_on(commit(
            &client,
            fenced(
                vec![
                    entry("s.ckpt.0", None, "watermark 1"),
                    entry("s.out", Some("m1/0"), "a"),
                    entry("s.out", Some("m1/1"), "b"),
                ],
                0,
            ),
        ))
        .expect("the first commit");
    assert_eq!(
        (first.stream.as_str(), first.last_sequence, first.count),
        ("SUB_s", 3, 3)
    );

    let run = |entries, expect| rt.block_on(commit(&client, fenced(entries, expect)));
    // A writer that still expects the checkpoint subject empty is fenced:
    // nothing of its batch is stored.
    let stale = run(checkpoint_and_output("stale", "x/0", "x"), 0);
    assert!(matches!(stale, Err(BatchError::Fenced(_))), "{stale:?}");
    assert_eq!(messages(&rt, &js), 3);

    // The owner, at the checkpoint's sequence, goes on.
    let second =
        run(checkpoint_and_output("watermark 2", "m2/0", "c"), 1).expect("the second commit");
    assert_eq!(second.last_sequence, 5);

    // A batch holding an id stored before is refused whole.
    let again = run(checkpoint_and_output("watermark 3", "m1/0", "a"), 4);
    assert!(matches!(again, Err(BatchError::Duplicate(_))), "{again:?}");
    assert_eq!(messages(&rt, &js), 5);

    // kill -9 the stream's leader: commits go on once another node leads,
    // and nothing acknowledged is lost.
    let leader = rt.block_on(async {
        let mut stream = js.get_stream("SUB_s").await.expect("the stream");
        let info = stream.info().await.expect("stream info");
        info.cluster
            .clone()
            .and_then(|c| c.leader)
            .expect("a leader")
    });
    let n: usize = leader
        .trim_start_matches('n')
        .parse()
        .expect("node names are n1..n3");
    cluster.kill(n);
    let mut unanswered = false;
    let third = wait_for(LIMIT, "a commit under a new leader", || {
        match run(checkpoint_and_output("watermark 3", "m3/0", "d"), 4) {
            Ok(done) => Some(done.last_sequence),
            // No leader yet, or an answer lost while it changed: retried
            // with the same expectation, the batch is stored at most once.
            Err(BatchError::Unanswered(_) | BatchError::Refused { .. }) => {
                unanswered = true;
                None
            }
            // Fenced after a lost answer: the lost attempt was stored.
            Err(BatchError::Fenced(_)) if unanswered => {
                let last = rt.block_on(async {
                    let stream = js.get_stream("SUB_s").await.expect("the stream");
                    stream
                        .get_last_raw_message_by_subject("s.ckpt.0")
                        .await
                        .expect("the checkpoint")
                });
                assert_eq!(&last.payload[..], b"watermark 3");
                Some(last.sequence + 1)
            }
            Err(other) => panic!("{other}"),
        }
    });
    assert_eq!(third, 7);
    cluster.restart(n);
    assert_eq!(messages(&rt, &js), 7);
}

/// Membership and leases on a real cluster: two hosts see each other and
/// agree on every unit's owner; a lease has one holder; a host that stops
/// beating (as a killed one would) drops out within the TTL, its lease
/// passes to the other host, and its own stale renewal is refused.
#[test]
fn hosts_see_each_other_agree_on_owners_and_take_over_a_dead_hosts_lease() {
    use switchyard::cluster::ownership::{owner, Leases, Membership, Timing};
    let cluster = NatsCluster::start();
    let (rt, client) = connect(&cluster);
    let _inside = rt.enter();
    let js = jetstream::new(client);
    let timing = Timing {
        ttl: Duration::from_secs(3),
        beat: Duration::from_millis(500),
        replicas: 3,
    };
    let a = rt
        .block_on(Membership::join(&js, "host-a", timing))
        .expect("a joins");
    let b = rt
        .block_on(Membership::join(&js, "host-b", timing))
        .expect("b joins");
    let both = vec!["host-a".to_string(), "host-b".to_string()];
    for m in [&a, &b] {
        assert_eq!(rt.block_on(m.live()).expect("live hosts"), both);
    }
    let units: Vec<String> = (0..16).map(|p| format!("sub/t/{p}")).collect();
    let owned_by_a = units
        .iter()
        .filter(|u| owner(&both, u) == Some("host-a"))
        .count();
    assert!(
        (1..16).contains(&owned_by_a),
        "both hosts own some: {owned_by_a}"
    );

    let leases_a = rt
        .block_on(Leases::open(&js, "host-a", timing))
        .expect("a's leases");
    let leases_b = rt
        .block_on(Leases::open(&js, "host-b", timing))
        .expect("b's leases");
    let held = rt
        .block_on(leases_a.acquire("sub/t/0"))
        .expect("acquiring")
        .expect("a free lease is taken");
    assert_eq!(
        rt.block_on(leases_b.acquire("sub/t/0")).expect("acquiring"),
        None
    );
    let held = rt
        .block_on(leases_a.renew("sub/t/0", held))
        .expect("renewing")
        .expect("the holder renews");

    // Host a stops beating and renewing, as a killed host would.
    let died = std::time::Instant::now();
    drop(a);
    wait_for(LIMIT, "host a to drop out", || {
        (rt.block_on(b.live()).expect("live hosts") == ["host-b"]).then_some(())
    });
    let gone = died.elapsed();
    let taken = wait_for(LIMIT, "b to take a's lease", || {
        rt.block_on(leases_b.acquire("sub/t/0")).expect("acquiring")
    });
    let took = died.elapsed();
    assert!(taken.revision > held.revision);
    assert_eq!(
        rt.block_on(leases_a.renew("sub/t/0", held))
            .expect("renewing"),
        None,
        "a's lease is lost"
    );
    assert_eq!(owner(&["host-b".to_string()], "sub/t/0"), Some("host-b"));
    eprintln!(
        "a host that stopped beating (ttl {:?}) was gone after {gone:?}, its lease taken after {took:?}",
        timing.ttl
    );
    rt.block_on(b.leave()).expect("b leaves");
}

/// Topic partitions as streams: a publish of several messages is one
/// atomic batch at dense offsets; a retried publish holding an id stored
/// before stores only what is new and finds the rest at their offsets;
/// reading from an offset gives the messages back in order, with their
/// ids, keys, headers and payloads.
#[test]
fn topic_partitions_are_streams_with_dense_offsets_and_producer_ids() {
    use switchyard::cluster::log::{Appended, Record, TopicLog};
    let cluster = NatsCluster::start();
    let (rt, client) = connect(&cluster);
    let _inside = rt.enter();
    let log = TopicLog::new(client, 3);
    rt.block_on(log.create_topic("orders.eu", 2, Duration::from_secs(120)))
        .expect("the topic's streams");
    let record = |id: &str, key: &str| Record {
        id: Some(id.to_string()),
        dedup: true,
        key: Some(key.to_string()),
        headers: vec![("traceparent".to_string(), format!("trace-{id}"))],
        payload: format!("payload of {id}").into(),
        deliver_at_ms: None,
    };
    let fresh = |offset| Appended {
        offset,
        duplicate: false,
    };
    let first = rt
        .block_on(log.append(
            "orders.eu",
            1,
            vec![record("a", "k1"), record("b", "k2"), record("c", "k1")],
        ))
        .expect("appending");
    assert_eq!(first, [fresh(0), fresh(1), fresh(2)]);
    // The producer retries with b again, and d new.
    let retried = rt
        .block_on(log.append("orders.eu", 1, vec![record("b", "k2"), record("d", "k3")]))
        .expect("appending again");
    assert_eq!(
        retried,
        [
            Appended {
                offset: 1,
                duplicate: true
            },
            fresh(3)
        ]
    );
    let single = rt
        .block_on(log.append("orders.eu", 1, vec![record("e", "k1")]))
        .expect("one message");
    assert_eq!(single, [fresh(4)]);
    assert_eq!(
        rt.block_on(log.next_offset("orders.eu", 1)).expect("head"),
        5
    );
    assert_eq!(
        rt.block_on(log.next_offset("orders.eu", 0)).expect("head"),
        0
    );

    let read = rt
        .block_on(log.read("orders.eu", 1, 1, 10))
        .expect("reading");
    let ids: Vec<(u64, &str)> = read
        .iter()
        .map(|m| (m.offset, m.record.id.as_deref().unwrap_or_default()))
        .collect();
    assert_eq!(ids, [(1, "b"), (2, "c"), (3, "d"), (4, "e")]);
    assert_eq!(read[0].record, record("b", "k2"), "stored as published");
    assert!(read[0].timestamp_ms > 0);
    let page = rt.block_on(log.read("orders.eu", 1, 0, 2)).expect("a page");
    assert_eq!(page.len(), 2);
    assert_eq!(page[1].record.id.as_deref(), Some("b"));
}

/// A subscription's journal: entries replay in the order appended; an
/// append from a writer that has not read what another appended since is
/// refused whole, and stores nothing.
#[test]
fn a_journal_replays_in_order_and_fences_a_stale_writer() {
    use switchyard::cluster::journal::{self, JournalError};
    let cluster = NatsCluster::start();
    let (rt, client) = connect(&cluster);
    let _inside = rt.enter();
    let open = || open_journal(&rt, &client, "billing.eu-1");
    let (mut a, none) = open();
    assert!(none.is_empty());
    rt.block_on(a.append(entries(&["e1", "e2"])))
        .expect("a appends");
    rt.block_on(a.append(entries(&["e3"])))
        .expect("a appends again");

    let (mut b, seen) = open();
    assert_eq!(seen, entries(&["e1", "e2", "e3"]));
    rt.block_on(b.append(entries(&["e4"]))).expect("b appends");
    // a has not read e4: its append is refused whole.
    match rt.block_on(a.append(entries(&["e5", "e6"]))) {
        Err(JournalError::Fenced(_)) => {}
        other => panic!("a stale writer's append must be fenced: {other:?}"),
    }
    match rt.block_on(a.append(Vec::new())) {
        Err(JournalError::Size(0)) => {}
        other => panic!("{other:?}"),
    }
    let (_, now) = open();
    assert_eq!(now, entries(&["e1", "e2", "e3", "e4"]));
    // Having read, a appends again.
    assert_eq!(rt.block_on(a.replay()).expect("a replay"), now);
    rt.block_on(a.append(entries(&["e5"])))
        .expect("a appends after reading");

    rt.block_on(journal::delete(&client, "billing.eu-1"))
        .expect("deleted");
    rt.block_on(journal::delete(&client, "billing.eu-1"))
        .expect("deleting again is fine");
    let (_, fresh) = open();
    assert!(fresh.is_empty(), "a journal made again starts empty");
}

/// Fencing, not the lease, keeps a paused owner harmless: host a holds a
/// subscription's lease and appends to its journal; it stalls past its
/// lease (as a SIGSTOP would make it); host b takes the lease, replays and
/// appends; when a wakes and appends from its old view, its append is
/// refused whole, and nothing of it is stored.
#[test]
fn an_owner_paused_past_its_lease_is_fenced() {
    use switchyard::cluster::journal::{Journal, JournalError};
    use switchyard::cluster::ownership::{Leases, Timing};
    let cluster = NatsCluster::start();
    let (rt, client) = connect(&cluster);
    let _inside = rt.enter();
    let js = jetstream::new(client.clone());
    let timing = Timing {
        ttl: Duration::from_secs(2),
        beat: Duration::from_millis(500),
        replicas: 3,
    };
    let open = |host: &str| {
        let leases = rt
            .block_on(Leases::open(&js, host, timing))
            .expect("leases");
        let journal = rt
            .block_on(Journal::open(client.clone(), "fenced", 3))
            .expect("journal");
        (leases, journal)
    };
    let ((leases_a, mut journal_a), (leases_b, mut journal_b)) = (open("host-a"), open("host-b"));
    let unit = "sub.fenced";
    let entry = |what: &'static str| vec![Bytes::from_static(what.as_bytes())];

    rt.block_on(leases_a.acquire(unit))
        .expect("acquiring")
        .expect("a takes the free lease");
    rt.block_on(journal_a.replay()).expect("a replays");
    rt.block_on(journal_a.append(entry("a1")))
        .expect("a appends as owner");

    // a stalls: no renewal, no append. b takes the lease once it expires,
    // replays and appends.
    wait_for(LIMIT, "b to take the expired lease", || {
        rt.block_on(leases_b.acquire(unit)).expect("acquiring")
    });
    let b_reads = rt.block_on(journal_b.replay()).expect("b replays");
    assert_eq!(b_reads, entry("a1"));
    rt.block_on(journal_b.append(entry("b1")))
        .expect("b appends as the new owner");

    // a wakes, still believing it owns the subscription.
    match rt.block_on(journal_a.append(entry("a2 from a stale view"))) {
        Err(JournalError::Fenced(_)) => {}
        other => panic!("a stale owner's append must be fenced: {other:?}"),
    }
    let now = rt.block_on(journal_b.replay()).expect("b replays");
    assert_eq!(now, [entry("a1"), entry("b1")].concat());
    let stored = rt.block_on(async {
        let mut stream = js.get_stream("S_fenced").await.expect("the stream");
        stream.info().await.expect("info").state.messages
    });
    assert_eq!(stored, 2, "a1 and b1; nothing of a2");
}

/// A journal compacted by a snapshot replays as the snapshot and what
/// came after, its earlier entries gone; a stale writer's snapshot is
/// fenced like any append.
#[test]
fn a_compacted_journal_replays_from_its_snapshot_and_fences_a_stale_writer() {
    use switchyard::cluster::journal::JournalError;
    let cluster = NatsCluster::start();
    let (rt, client) = connect(&cluster);
    let _inside = rt.enter();
    let open = || open_journal(&rt, &client, "compacted");
    let (mut a, _) = open();
    rt.block_on(a.append(entries(&["e1", "e2"])))
        .expect("a appends");
    let (mut stale, _) = open();
    rt.block_on(a.compact(entries(&["s1", "s2"])))
        .expect("a compacts");
    rt.block_on(a.append(entries(&["e3"]))).expect("a appends");
    let (_, seen) = open();
    assert_eq!(seen, entries(&["s1", "s2", "e3"]));
    match rt.block_on(stale.compact(entries(&["old"]))) {
        Err(JournalError::Fenced(_)) => {}
        other => panic!("a stale snapshot must be fenced, got {other:?}"),
    }
    let (_, seen) = open();
    assert_eq!(seen, entries(&["s1", "s2", "e3"]));
}

/// Journals no subscription names and components no plugin version names
/// are collected once older than the grace period, and nothing else is.
#[test]
fn leftovers_nothing_names_are_collected_after_a_grace_period() {
    use switchyard::broker::shared::{
        collect_leftovers, PluginRecord, SubscriptionRecord, LEFTOVER_GRACE_MS,
    };
    let cluster = NatsCluster::start();
    let (rt, _client) = connect(&cluster);
    let backend = rt
        .block_on(switchyard::cluster::open(&cluster.urls, 3, "collector"))
        .expect("the cluster's storage");
    let record = SubscriptionRecord {
        spec: serde_json::from_value(serde_json::json!({ "topic": "t", "plugin": "kept" }))
            .expect("a spec"),
        incarnation: 7,
        paused: false,
    };
    let kept_journal = record.journal("live");
    let plugin: PluginRecord = serde_json::from_value(serde_json::json!({
        "versions": [{ "version": 1, "digest": "sha256:kept", "size": 4, "created_ms": 1 }],
        "last_version": 1,
    }))
    .expect("a plugin record");
    rt.block_on(async {
        let subscriptions = &backend.subscriptions;
        assert!(subscriptions.put("live", &record, 0).await.expect("stored"));
        backend.runners.journal(&kept_journal).await.expect("made");
        backend
            .runners
            .journal("gone-0000000000000001")
            .await
            .expect("made");
        assert!(backend
            .meta
            .put_plugin("kept", &plugin, 0)
            .await
            .expect("stored"));
        backend
            .meta
            .put_component("sha256:kept", b"kept".to_vec())
            .await
            .expect("kept");
        backend
            .meta
            .put_component("sha256:gone", b"gone".to_vec())
            .await
            .expect("kept");
    });
    let listed = rt.block_on(backend.subscriptions.list()).expect("listed");
    let now = switchyard_now_ms();
    // Young: nothing goes.
    let young = rt
        .block_on(collect_leftovers(&backend, &listed, now))
        .expect("collected");
    assert_eq!(young, (0, 0));
    // Past the grace period: the leftovers go, what is named stays.
    let later = now + LEFTOVER_GRACE_MS + 60_000;
    let old = rt
        .block_on(collect_leftovers(&backend, &listed, later))
        .expect("collected");
    assert_eq!(old, (1, 1));
    rt.block_on(async {
        let journals: Vec<String> = backend
            .runners
            .journals()
            .await
            .expect("listed")
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(journals, vec![kept_journal.clone()]);
        let components: Vec<String> = backend
            .meta
            .components()
            .await
            .expect("listed")
            .into_iter()
            .map(|(digest, _)| digest)
            .collect();
        assert_eq!(components, vec!["sha256:kept".to_string()]);
        assert!(backend
            .meta
            .component("sha256:kept")
            .await
            .expect("read")
            .is_some());
    });
    let again = rt
        .block_on(collect_leftovers(&backend, &listed, later))
        .expect("collected");
    assert_eq!(again, (0, 0), "nothing more to collect");
}

fn switchyard_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64
}

/// A subscription's journal opened and replayed: the journal and its
/// entries.
fn open_journal(
    rt: &tokio::runtime::Runtime,
    client: &async_nats::Client,
    name: &str,
) -> (switchyard::cluster::journal::Journal, Vec<Bytes>) {
    use switchyard::cluster::journal::Journal;
    let mut journal = rt
        .block_on(Journal::open(client.clone(), name, 3))
        .expect("the journal");
    let entries = rt.block_on(journal.replay()).expect("a replay");
    (journal, entries)
}

/// Journal entries of these texts.
fn entries(texts: &[&'static str]) -> Vec<Bytes> {
    texts
        .iter()
        .map(|t| Bytes::from_static(t.as_bytes()))
        .collect()
}
