//! The noop plugin on the host's delivery engine (virtual time).

use switchyard_harness::{build_component, Harness, NewMessage};

#[test]
fn acknowledges_every_message_at_the_first_attempt() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm).partitions(2).build().unwrap();
    for i in 0..10 {
        h.publish(NewMessage::new(format!("m{i}")).key(&format!("k{i}")))
            .unwrap();
    }
    assert_eq!(h.attempts().len(), 10);
    assert!(h
        .attempts()
        .iter()
        .all(|a| a.outcome == "ack" && a.attempt == 1));
    assert!(h.dead_letters().is_empty());
}
