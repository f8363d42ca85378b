//! The stamp plugin on the host's delivery engine.

use switchyard_harness::{build_component, Harness, NewMessage};

#[test]
fn republishes_with_the_call_time_appended() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::new(&wasm).unwrap();
    h.publish(NewMessage::new("0000000001:123:").key("k"))
        .unwrap();
    let out = h.outputs("in.stamps");
    assert_eq!(out.len(), 1);
    let text = String::from_utf8(out[0].payload.clone()).unwrap();
    let (sent, stamp) = text.rsplit_once('|').unwrap();
    assert_eq!(sent, "0000000001:123:");
    // The plugin reads the wall clock (WASI clocks are granted): a time in ns.
    assert!(stamp.parse::<u64>().unwrap() > 1_600_000_000_000_000_000);
    assert_eq!(out[0].key.as_deref(), Some("k"));
}
