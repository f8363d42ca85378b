//! Payload starting with `dead`: dead-letter. `trap`: panic (a trap). `retry`:
//! always retry. `kv-big`: write a kv value over the host's limit (a trap).
//! `kv-key`: write a kv key over the host's limit (a trap). Anything else:
//! acknowledge.

use switchyard_sdk::{kv, Message, Outcome, Plugin};

/// One byte over the host's kv limits.
const TOO_BIG_VALUE: usize = (1 << 20) + 1;
const TOO_LONG_KEY: usize = 1025;

struct Poison;

impl Plugin for Poison {
    fn handle(msg: Message) -> Outcome {
        let payload = msg.payload.as_slice();
        if payload.starts_with(b"dead") {
            Outcome::dead_letter(format!("poison: {}", String::from_utf8_lossy(payload)))
        } else if payload.starts_with(b"trap") {
            panic!("poison trap");
        } else if payload.starts_with(b"kv-big") {
            kv::set("fine", b"written before the trap");
            kv::set("big", &vec![0; TOO_BIG_VALUE]);
            Outcome::Ack
        } else if payload.starts_with(b"kv-key") {
            kv::set(&"k".repeat(TOO_LONG_KEY), b"x");
            Outcome::Ack
        } else if payload.starts_with(b"retry") {
            Outcome::retry("poison: always retry")
        } else {
            Outcome::Ack
        }
    }
}

switchyard_sdk::export_plugin!(Poison);
