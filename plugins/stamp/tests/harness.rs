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
    // The plugin reads WASI's wall clock, which in the harness is virtual
    // time: 2026-01-01T00:00:00Z at the start.
    assert_eq!(stamp.parse::<u64>().unwrap(), 1_767_225_600_000_000_000);
    assert_eq!(out[0].key.as_deref(), Some("k"));
}
