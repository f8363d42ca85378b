//! Spins forever on a payload containing `loop`; acknowledges anything else.

use switchyard_sdk::{Message, Outcome, Plugin};

struct Spin;

impl Plugin for Spin {
    fn handle(msg: Message) -> Outcome {
        if msg.payload.windows(4).any(|w| w == b"loop") {
            let mut x = 0u64;
            loop {
                core::hint::black_box(&mut x);
                x = x.wrapping_add(1);
            }
        }
        Outcome::Ack
    }
}

switchyard_sdk::export_plugin!(Spin);
