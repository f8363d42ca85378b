//! The forwarder plugin on the host's delivery engine (virtual time).

use switchyard_harness::{build_component, DeliveryGuarantee, Harness, NewMessage};

#[test]
fn forwards_to_the_out_topic_or_the_forward_to_header() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm)
        .delivery(DeliveryGuarantee::ExactlyOnce)
        .build()
        .unwrap();
    h.publish(NewMessage::new("a").id("m1").key("k")).unwrap();
    h.publish(NewMessage::new("b").id("m2").header("forward-to", "audit"))
        .unwrap();
    let out = h.outputs("in.out");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].payload, b"a");
    assert_eq!(out[0].key.as_deref(), Some("k"));
    assert!(out[0].headers.contains(&("source".into(), "in/0/0".into())));
    // No random trace ids: a harness run repeats exactly.
    assert!(
        out[0].headers.iter().all(|(name, _)| name != "traceparent"),
        "{:?}",
        out[0].headers
    );
    // Exactly-once: the output's id is derived from its source.
    assert_eq!(out[0].id.as_deref(), Some("harness/in/m1/0"));
    let audit = h.outputs("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].payload, b"b");
    // The trace shows what each attempt published.
    assert_eq!(h.attempts_of("m2")[0].published[0].topic, "audit");
}
