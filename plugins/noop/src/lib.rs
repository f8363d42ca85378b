//! Acknowledges every message.

use switchyard_sdk::{Message, Outcome, Plugin};

struct Noop;

impl Plugin for Noop {
    fn handle(_msg: Message) -> Outcome {
        Outcome::Ack
    }
}

switchyard_sdk::export_plugin!(Noop);
