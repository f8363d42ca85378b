//! Publishes each message to `<topic>.stamps` with the same key and the payload
//! followed by `|` and the wall-clock time of the call in nanoseconds since the
//! Unix epoch, as decimal. Used by the core-path benchmark to measure how long a
//! message takes from its publish to its plugin call. Retries with the error
//! text if the publish fails.

use std::time::{SystemTime, UNIX_EPOCH};
use switchyard_sdk::{Message, Outcome, Plugin};

struct Stamp;

impl Plugin for Stamp {
    fn handle(msg: Message) -> Outcome {
        let to = format!("{}.stamps", msg.topic);
        let payload = stamped(&msg.payload, now_ns());
        match switchyard_sdk::publish(&to, msg.key.as_deref(), &payload, &[]) {
            Ok(()) => Outcome::Ack,
            Err(error) => Outcome::retry(error),
        }
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock reads earlier than that).
/// A `u64` lasts until the year 2554.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `payload`, then `|`, then `ns` in decimal.
fn stamped(payload: &[u8], ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 40);
    out.extend_from_slice(payload);
    out.push(b'|');
    out.extend_from_slice(ns.to_string().as_bytes());
    out
}

switchyard_sdk::export_plugin!(Stamp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_a_bar_and_the_decimal_time() {
        assert_eq!(
            stamped(b"abc", 1_700_000_000_123_456_789),
            b"abc|1700000000123456789"
        );
        assert_eq!(stamped(b"", 0), b"|0");
    }
}
