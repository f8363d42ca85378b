//! Allocates memory without bound on a payload containing `hog`, until the memory
//! limit stops it; acknowledges anything else.

use switchyard_sdk::{Message, Outcome, Plugin};

struct Hog;

impl Plugin for Hog {
    fn handle(msg: Message) -> Outcome {
        if msg.payload.windows(3).any(|w| w == b"hog") {
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            loop {
                chunks.push(vec![0xA5; 1 << 20]);
                core::hint::black_box(&mut chunks);
            }
        }
        Outcome::Ack
    }
}

switchyard_sdk::export_plugin!(Hog);
