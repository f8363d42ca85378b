//! Counts messages in the subscription's key-value state and forwards each one.
//!
//! For each message, in this order:
//!
//! 1. Adds one to the kv counter `total`, and one to the kv counter `seen/{msg.id}`
//!    (both decimal text, via `kv::get_u64`/`kv::set_u64`). An id over 1,019 bytes
//!    makes the key too long, which traps.
//! 2. Publishes the payload unchanged, with the same key, to the topic named by the
//!    `forward-to` header, or else to `<topic>.out`, with the message's headers plus
//!    `source-id` (the message id) and `count` (the new value of `seen/{msg.id}`).
//!    If the publish fails, retries with the publish error as the reason.
//! 3. If the subscription's config sets `fail-every` to a decimal N > 0, retries with
//!    reason `fail-every` on attempt 1 of every message whose offset is a multiple
//!    of N. This comes after the kv writes and the publish, so a test can check that
//!    a failed attempt's effects are discarded: however many attempts a message
//!    took, `seen/{msg.id}` ends at 1 and the forwarded copy carries `count` 1.
//!    A `fail-every` that is 0 or not a decimal number is ignored.
//! 4. Otherwise acks.

use switchyard_sdk::{kv, Message, Outcome, Plugin};

struct Counter;

impl Plugin for Counter {
    fn handle(msg: Message) -> Outcome {
        let count = count(&msg.id);
        if let Err(error) = forward(&msg, count) {
            return Outcome::retry(error);
        }
        let fail_every = switchyard_sdk::config("fail-every");
        if fails_this_attempt(&msg, fail_every.as_deref()) {
            return Outcome::retry("fail-every");
        }
        Outcome::Ack
    }
}

/// Add one to `total` and to `seen/{id}`; the new value of `seen/{id}`.
fn count(id: &str) -> u64 {
    kv::set_u64("total", kv::get_u64("total") + 1);
    let seen_key = format!("seen/{id}");
    let seen = kv::get_u64(&seen_key) + 1;
    kv::set_u64(&seen_key, seen);
    seen
}

/// Publish `msg` onwards with `source-id` and `count` headers added.
fn forward(msg: &Message, count: u64) -> Result<(), String> {
    let to = match msg.header("forward-to") {
        Some(topic) => topic.to_string(),
        None => format!("{}.out", msg.topic),
    };
    let count = count.to_string();
    let mut headers: Vec<(&str, &str)> = msg
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    headers.push(("source-id", &msg.id));
    headers.push(("count", &count));
    switchyard_sdk::publish(&to, msg.key.as_deref(), &msg.payload, &headers)
}

/// Whether the `fail-every` config value (if any) says to fail this attempt: on
/// attempt 1 of a message whose offset is a multiple of it. 0 or a value that is
/// not a decimal number never fails.
fn fails_this_attempt(msg: &Message, fail_every: Option<&str>) -> bool {
    match fail_every.and_then(|n| n.parse::<u64>().ok()) {
        Some(n) if n > 0 => msg.attempt == 1 && msg.offset.is_multiple_of(n),
        _ => false,
    }
}

switchyard_sdk::export_plugin!(Counter);

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, offset: u64, attempt: u32) -> Message {
        Message {
            id: id.into(),
            topic: "orders".into(),
            partition: 0,
            offset,
            key: Some("k".into()),
            payload: b"p".to_vec(),
            headers: Vec::new(),
            timestamp_ms: 0,
            attempt,
        }
    }

    #[test]
    fn counts_total_and_per_id_as_decimal_text() {
        assert_eq!(count("a"), 1);
        assert_eq!(count("b"), 1);
        assert_eq!(count("a"), 2);
        assert_eq!(kv::get("total"), Some(b"3".to_vec()));
        assert_eq!(kv::get("seen/a"), Some(b"2".to_vec()));
        assert_eq!(kv::get("seen/b"), Some(b"1".to_vec()));
    }

    #[test]
    fn counts_before_publishing_and_retries_a_failed_publish() {
        // Outside Switchyard every publish fails, so the outcome is that error.
        let outcome = <Counter as Plugin>::handle(message("a", 0, 1));
        assert!(
            matches!(&outcome, Outcome::Retry(info) if info.reason.contains("orders.out")),
            "{outcome:?}"
        );
        assert_eq!(kv::get_u64("total"), 1);
        assert_eq!(kv::get_u64("seen/a"), 1);
    }

    #[test]
    fn fail_every_fails_attempt_one_of_multiples_only() {
        let check = |offset, attempt, fail_every, expected| {
            assert_eq!(
                fails_this_attempt(&message("a", offset, attempt), fail_every),
                expected,
                "offset {offset}, attempt {attempt}, fail-every {fail_every:?}"
            );
        };
        check(0, 1, Some("3"), true);
        check(6, 1, Some("3"), true);
        check(7, 1, Some("3"), false);
        check(6, 2, Some("3"), false);
        check(5, 1, Some("1"), true);
        check(0, 1, None, false);
        check(0, 1, Some("0"), false);
        check(0, 1, Some("often"), false);
    }
}
