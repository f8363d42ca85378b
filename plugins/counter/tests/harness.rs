//! The counter plugin on the host's delivery engine: kv state, config, and
//! effects committed only with an ack.

use switchyard_harness::{build_component, DeliveryGuarantee, Harness, NewMessage, Ordering};

#[test]
fn counts_each_message_once_in_kv_at_any_concurrency() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm)
        .delivery(DeliveryGuarantee::ExactlyOnce)
        .ordering(Ordering::None)
        .concurrency(8)
        .config("fail-every", "4")
        .build()
        .unwrap();
    let batch = (0..40)
        .map(|i| NewMessage::new(format!("p{i}")).id(&format!("m{i}")))
        .collect();
    h.publish_all(batch).unwrap();
    h.run();
    // Concurrent attempts all read `total`: the engine re-ran the stale ones.
    assert!(h.attempts().iter().any(|a| a.state == "kv-conflict"));
    assert_eq!(h.kv("total").as_deref(), Some(&b"40"[..]));
    assert_eq!(h.kv_entries("seen/").len(), 40);
    assert!(h.kv_entries("seen/").iter().all(|(_, v)| v == b"1"));
    let out = h.outputs("in.out");
    assert_eq!(out.len(), 40);
    assert!(out
        .iter()
        .all(|m| m.headers.contains(&("count".into(), "1".into()))));
    // fail-every 4: offsets 0, 4, … failed their first attempt, and that
    // attempt's kv writes and publication left no trace.
    let retried = h.attempts().iter().filter(|a| a.outcome == "retry").count();
    assert_eq!(retried, 10);
}
