//! Payload starting with `dead`: dead-letter. `trap`: panic (a trap). `retry`:
//! always retry. Anything else: acknowledge.

use switchyard_sdk::{Message, Outcome, Plugin};

struct Poison;

impl Plugin for Poison {
    fn handle(msg: Message) -> Outcome {
        let payload = msg.payload.as_slice();
        if payload.starts_with(b"dead") {
            Outcome::dead_letter(format!("poison: {}", String::from_utf8_lossy(payload)))
        } else if payload.starts_with(b"trap") {
            panic!("poison trap");
        } else if payload.starts_with(b"retry") {
            Outcome::retry("poison: always retry")
        } else {
            Outcome::Ack
        }
    }
}

switchyard_sdk::export_plugin!(Poison);
