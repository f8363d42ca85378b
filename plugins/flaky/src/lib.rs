//! Retries ("flaky: attempt N") until the attempt number reaches the `succeed-on`
//! header (default 3), then acknowledges. A `retry-delay-ms` header sets the retry delay.
//! Logs each retry at debug level, and prints to stdout when it acknowledges.

use switchyard_sdk::{Message, Outcome, Plugin};

struct Flaky;

impl Plugin for Flaky {
    fn handle(msg: Message) -> Outcome {
        let succeed_on = msg
            .header("succeed-on")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(3);
        if msg.attempt >= succeed_on {
            println!("flaky: acknowledged on attempt {}", msg.attempt);
            return Outcome::Ack;
        }
        let reason = format!("flaky: attempt {}", msg.attempt);
        switchyard_sdk::debug!("{reason} of {succeed_on}");
        match msg.header("retry-delay-ms").and_then(|v| v.parse().ok()) {
            Some(delay_ms) => Outcome::retry_after(reason, delay_ms),
            None => Outcome::retry(reason),
        }
    }
}

switchyard_sdk::export_plugin!(Flaky);
