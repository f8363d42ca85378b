//! Follows a script in its payload, for testing the delivery engine against a
//! model. Payload `TAG|SCRIPT`, where SCRIPT lists one outcome per attempt —
//! `a` ack, `r` retry, `d` dead-letter, `t` trap — separated by commas; an
//! attempt past the end repeats the last. On ack it publishes `TAG|ATTEMPT`
//! to `<topic>.trace` with the same key, so the order of acknowledgements is
//! observable.

use switchyard_sdk::{Message, Outcome, Plugin};

struct Scripted;

impl Plugin for Scripted {
    fn handle(msg: Message) -> Outcome {
        let text = msg.payload_str().unwrap_or_default();
        let (tag, script) = text.split_once('|').unwrap_or((text, "a"));
        let steps: Vec<&str> = script.split(',').collect();
        let step = steps
            .get(msg.attempt as usize - 1)
            .or(steps.last())
            .copied()
            .unwrap_or("a");
        match step {
            "r" => Outcome::retry(format!("scripted retry at attempt {}", msg.attempt)),
            "d" => Outcome::dead_letter("scripted dead letter"),
            "t" => panic!("scripted trap"),
            _ => {
                let trace = format!("{}.trace", msg.topic);
                let line = format!("{tag}|{}", msg.attempt);
                match switchyard_sdk::publish(&trace, msg.key.as_deref(), line.as_bytes(), &[]) {
                    Ok(()) => Outcome::Ack,
                    Err(e) => Outcome::retry(e),
                }
            }
        }
    }
}

switchyard_sdk::export_plugin!(Scripted);
