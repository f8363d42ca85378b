//! Write Switchyard consumer plugins in Rust.
//!
//! A plugin is a WebAssembly component that Switchyard calls once per message. It
//! says what became of the message by returning an [`Outcome`], and while it runs it
//! may [`publish`] new messages, read and write its subscription's key-value state
//! ([`kv`]), read its subscription's [`config`], make outbound [`http`] requests
//! (where the subscription's `egress` allows them) and write to the host's [`log`].
//!
//! A complete plugin:
//!
//! ```
//! use switchyard_sdk::{Message, Outcome, Plugin};
//!
//! struct Noop;
//!
//! impl Plugin for Noop {
//!     fn handle(_msg: Message) -> Outcome {
//!         Outcome::Ack
//!     }
//! }
//!
//! switchyard_sdk::export_plugin!(Noop);
//! ```
//!
//! Build it as a `cdylib` for the `wasm32-wasip2` target; the result is a
//! component ready to load into Switchyard:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! # Outcomes
//!
//! * [`Outcome::Ack`]: done. The subscription moves past the message.
//! * [`Outcome::retry`] / [`Outcome::retry_after`]: a transient failure. The message
//!   is delivered again (with [`Message::attempt`] one higher) after the
//!   subscription's backoff or the given delay, until the subscription's
//!   `max_attempts` is spent; then it is dead-lettered.
//! * [`Outcome::dead_letter`]: a permanent failure. The message goes to the dead
//!   letters at once with the given reason.
//!
//! A panic (a trap), a timeout or running out of memory counts as a failed attempt,
//! like a retry whose reason is the trap text.
//!
//! An attempt's effects are buffered and take effect only if the attempt acks; a
//! failed attempt's publishes and key-value writes are discarded.
//!
//! * Publishes: committed in the same atomic write as the ack, under every delivery
//!   guarantee. Under exactly-once they get ids derived from the source message
//!   (`{subscription}/{topic}/{source id}/{index}`), registered for deduplication.
//! * Key-value writes ([`kv::set`], [`kv::delete`]): committed in the same atomic
//!   write as the ack, under every delivery guarantee. An attempt that read a key
//!   another attempt changed meanwhile is run again (not counted as an attempt), so
//!   read-modify-write is safe at any concurrency.
//!
//! # Outside Switchyard
//!
//! The crate also compiles for the machine you build on, so plugin logic can be unit
//! tested with plain `cargo test`. There, [`publish`] returns an error, the [`log`]
//! functions write to standard error, [`config`] returns `None`, and [`kv`] works on
//! an in-memory map private to the calling thread (see [`kv`] for what differs).

#![warn(missing_docs)]

use std::str::Utf8Error;

/// Bindings generated from the plugin's WIT world. Used by [`export_plugin!`].
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "consumer",
        ownership: Borrowing { duplicate_if_necessary: false },
        additional_derives: [PartialEq, Eq],
        // WASI types that hold resources cannot derive them.
        additional_derives_ignore: ["stream-error", "error-code"],
        pub_export_macro: true,
        default_bindings_module: "switchyard_sdk::bindings",
        export_macro_name: "__export_consumer",
        // The world imports wasi:http (and through it wasi:io and wasi:clocks).
        generate_all,
    });
}

pub use bindings::switchyard::plugin::types::{LogLevel, Message, Outcome, RetryInfo};

pub mod http;

/// A consumer plugin: implement this and name the type in [`export_plugin!`].
pub trait Plugin {
    /// Handle one delivery of `msg` and say what became of it.
    ///
    /// Called once per delivery attempt; a message that is retried arrives again with
    /// [`Message::attempt`] one higher. A panic counts as a failed attempt.
    fn handle(msg: Message) -> Outcome;
}

impl<T: Plugin> bindings::Guest for T {
    fn handle(msg: Message) -> Outcome {
        <T as Plugin>::handle(msg)
    }
}

/// Export a type that implements [`Plugin`] as the component's `handle` function.
///
/// Use it once per plugin crate, at the top level, with the name of the type:
///
/// ```
/// # use switchyard_sdk::{Message, Outcome, Plugin};
/// # struct MyPlugin;
/// # impl Plugin for MyPlugin { fn handle(_: Message) -> Outcome { Outcome::Ack } }
/// switchyard_sdk::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident) => {
        $crate::bindings::__export_consumer!($ty with_types_in $crate::bindings);
    };
}

/// Publish a message to `topic` from inside [`Plugin::handle`].
///
/// The topic must exist. `key` is the ordering key (`None` for none); `headers` are
/// kept in the given order.
///
/// Publishes are buffered per attempt: they take effect only if the attempt acks,
/// and a failed attempt's publishes (retry, dead letter, trap) are discarded. They
/// are committed in the same atomic write as the ack. Under exactly-once delivery
/// they get ids derived from the source message
/// (`{subscription}/{topic}/{source id}/{index}`), registered for deduplication.
///
/// Errors, as text: the topic does not exist, the payload is over 1 MiB, or the
/// attempt has already published 1,000 messages.
///
/// Outside Switchyard (native builds) it always returns an error.
pub fn publish(
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
    headers: &[(&str, &str)],
) -> Result<(), String> {
    #[cfg(target_arch = "wasm32")]
    {
        bindings::switchyard::plugin::host::publish(topic, key, payload, headers)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (key, payload, headers);
        Err(format!(
            "cannot publish to {topic:?}: not running inside Switchyard"
        ))
    }
}

pub mod kv {
    //! This subscription's key-value state: read, write and delete from inside
    //! [`Plugin::handle`](crate::Plugin::handle).
    //!
    //! Each subscription has its own state; keys are text of 1 to 1,024 bytes, values
    //! are bytes (at most 1 MiB each).
    //!
    //! * Reads ([`get`]) see the attempt's own earlier [`set`]/[`delete`] calls, and
    //!   every write of an acknowledged attempt.
    //! * Writes ([`set`], [`delete`]) are buffered per attempt and committed in the same
    //!   atomic write as the ack, under every delivery guarantee; a failed attempt's
    //!   writes (retry, dead letter, trap) are discarded.
    //! * An attempt that read a key another attempt changed meanwhile is run again (not
    //!   counted as an attempt), so read-modify-write is safe at any concurrency.
    //! * Limits: a key of 1 to 1,024 bytes, a value of at most 1 MiB, at most 1,000 keys
    //!   written and 16 MiB of values per attempt. Breaking a limit traps the attempt.
    //!
    //! [`get_u64`] and [`set_u64`] keep a counter as decimal UTF-8 text (`"42"`), so it
    //! stays readable when the state is inspected from outside the plugin.
    //!
    //! # Outside Switchyard
    //!
    //! On native builds (for `cargo test`) the state is an in-memory map private to the
    //! calling thread, starting empty; the test harness runs each test on its own
    //! thread, so tests do not see each other's state. Writes take effect at once:
    //! there are no attempts, so nothing is ever discarded or re-run, and the
    //! per-attempt limits (1,000 keys, 16 MiB) are not enforced. A key outside 1 to
    //! 1,024 bytes (in any of these calls) or a value over 1 MiB panics, so a unit
    //! test catches what would break a limit inside Switchyard.

    /// Longest key, in bytes.
    #[cfg(not(target_arch = "wasm32"))]
    const MAX_KEY_LEN: usize = 1024;
    /// Largest value, in bytes (1 MiB).
    #[cfg(not(target_arch = "wasm32"))]
    const MAX_VALUE_LEN: usize = 1024 * 1024;

    #[cfg(not(target_arch = "wasm32"))]
    thread_local! {
        /// The native stand-in for the host's state: see the module docs.
        static NATIVE: std::cell::RefCell<std::collections::BTreeMap<String, Vec<u8>>> =
            const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
    }

    /// Panic, as the host would trap, if `key` is not 1 to 1,024 bytes.
    #[cfg(not(target_arch = "wasm32"))]
    fn check_key(key: &str) {
        assert!(
            (1..=MAX_KEY_LEN).contains(&key.len()),
            "kv key is {} bytes; keys are 1 to {MAX_KEY_LEN} bytes",
            key.len()
        );
    }

    /// The value stored under `key`, or `None` if there is none.
    ///
    /// Sees the attempt's own earlier [`set`]/[`delete`] calls, and every write of an
    /// acknowledged attempt. Keys are 1 to 1,024 bytes.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::switchyard::plugin::host::kv_get(key)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            check_key(key);
            NATIVE.with(|state| state.borrow().get(key).cloned())
        }
    }

    /// Store `value` (at most 1 MiB) under `key` (1 to 1,024 bytes).
    ///
    /// Buffered per attempt and committed in the same atomic write as the ack, under
    /// every delivery guarantee; a failed attempt's writes are discarded. At most
    /// 1,000 keys written and 16 MiB of values per attempt. Breaking a limit traps
    /// the attempt.
    pub fn set(key: &str, value: &[u8]) {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::switchyard::plugin::host::kv_set(key, value);
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            check_key(key);
            assert!(
                value.len() <= MAX_VALUE_LEN,
                "kv value is {} bytes; values are at most {MAX_VALUE_LEN} bytes",
                value.len()
            );
            NATIVE.with(|state| state.borrow_mut().insert(key.to_string(), value.to_vec()));
        }
    }

    /// Remove `key` (1 to 1,024 bytes), if present. Buffered like [`set`].
    pub fn delete(key: &str) {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::switchyard::plugin::host::kv_delete(key);
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            check_key(key);
            NATIVE.with(|state| state.borrow_mut().remove(key));
        }
    }

    /// The counter stored under `key` as decimal UTF-8 text; 0 if the key is missing
    /// or its value is not a decimal `u64`.
    pub fn get_u64(key: &str) -> u64 {
        get(key)
            .and_then(|value| std::str::from_utf8(&value).ok()?.parse().ok())
            .unwrap_or(0)
    }

    /// Store the counter `n` under `key` as decimal UTF-8 text. Buffered like [`set`].
    pub fn set_u64(key: &str, n: u64) {
        set(key, n.to_string().as_bytes());
    }
}

/// The value of `name` in the subscription's `config` map, or `None` if it is not
/// set.
///
/// Outside Switchyard (native builds) it always returns `None`.
pub fn config(name: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        bindings::switchyard::plugin::host::config(name)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = name;
        None
    }
}

/// Write lines to the host's log, tagged with the plugin and the current message id.
///
/// Lines over 4 KiB are cut. For formatted lines use the macros [`trace!`](crate::trace),
/// [`debug!`](crate::debug), [`info!`](crate::info), [`warn!`](crate::warn) and
/// [`error!`](crate::error).
pub mod log {
    use super::LogLevel;

    /// Write `message` to the host's log at `level`.
    pub fn log(level: LogLevel, message: &str) {
        #[cfg(target_arch = "wasm32")]
        {
            crate::bindings::switchyard::plugin::host::log(level, message);
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            eprintln!("[{level:?}] {message}");
        }
    }

    /// Write `message` to the host's log at trace level.
    pub fn trace(message: &str) {
        log(LogLevel::Trace, message);
    }

    /// Write `message` to the host's log at debug level.
    pub fn debug(message: &str) {
        log(LogLevel::Debug, message);
    }

    /// Write `message` to the host's log at info level.
    pub fn info(message: &str) {
        log(LogLevel::Info, message);
    }

    /// Write `message` to the host's log at warn level.
    pub fn warn(message: &str) {
        log(LogLevel::Warn, message);
    }

    /// Write `message` to the host's log at error level.
    pub fn error(message: &str) {
        log(LogLevel::Error, message);
    }
}

/// Write a formatted line to the host's log at trace level, like `format!`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::log($crate::LogLevel::Trace, &::std::format!($($arg)+)) };
}

/// Write a formatted line to the host's log at debug level, like `format!`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::log($crate::LogLevel::Debug, &::std::format!($($arg)+)) };
}

/// Write a formatted line to the host's log at info level, like `format!`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::log($crate::LogLevel::Info, &::std::format!($($arg)+)) };
}

/// Write a formatted line to the host's log at warn level, like `format!`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::log($crate::LogLevel::Warn, &::std::format!($($arg)+)) };
}

/// Write a formatted line to the host's log at error level, like `format!`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::log($crate::LogLevel::Error, &::std::format!($($arg)+)) };
}

impl Message {
    /// The value of the first header called `name` (exact, case-sensitive match),
    /// or `None` if the message has no such header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The payload as UTF-8 text, or the error if it is not valid UTF-8.
    pub fn payload_str(&self) -> Result<&str, Utf8Error> {
        std::str::from_utf8(&self.payload)
    }
}

impl Outcome {
    /// Try the message again after the subscription's backoff, recording `reason`.
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry(RetryInfo {
            reason: reason.into(),
            delay_ms: None,
        })
    }

    /// Try the message again after `delay_ms` milliseconds (instead of the
    /// subscription's backoff), recording `reason`.
    pub fn retry_after(reason: impl Into<String>, delay_ms: u64) -> Outcome {
        Outcome::Retry(RetryInfo {
            reason: reason.into(),
            delay_ms: Some(delay_ms),
        })
    }

    /// Move the message to the dead letters at once, with `reason`.
    pub fn dead_letter(reason: impl Into<String>) -> Outcome {
        Outcome::DeadLetter(reason.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(headers: &[(&str, &str)], payload: &[u8]) -> Message {
        Message {
            id: "id-1".into(),
            topic: "orders".into(),
            partition: 0,
            offset: 7,
            key: None,
            payload: payload.to_vec(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            timestamp_ms: 0,
            attempt: 1,
        }
    }

    #[test]
    fn header_finds_the_first_exact_match() {
        let msg = message(&[("a", "1"), ("b", "2"), ("a", "3")], b"");
        assert_eq!(msg.header("a"), Some("1"));
        assert_eq!(msg.header("b"), Some("2"));
        assert_eq!(msg.header("A"), None);
        assert_eq!(msg.header("c"), None);
    }

    #[test]
    fn payload_str_checks_utf8() {
        assert_eq!(message(&[], b"hello").payload_str(), Ok("hello"));
        assert!(message(&[], b"\xff").payload_str().is_err());
    }

    #[test]
    fn outcome_constructors() {
        assert_eq!(
            Outcome::retry("r"),
            Outcome::Retry(RetryInfo {
                reason: "r".into(),
                delay_ms: None
            })
        );
        assert_eq!(
            Outcome::retry_after("r", 250),
            Outcome::Retry(RetryInfo {
                reason: "r".into(),
                delay_ms: Some(250)
            })
        );
        assert_eq!(Outcome::dead_letter("d"), Outcome::DeadLetter("d".into()));
    }

    #[test]
    fn publish_fails_outside_switchyard() {
        assert!(publish("t", None, b"", &[]).is_err());
    }

    #[test]
    fn config_is_unset_outside_switchyard() {
        assert_eq!(config("anything"), None);
    }

    #[test]
    fn kv_set_get_delete_round_trip() {
        assert_eq!(kv::get("a"), None);
        kv::set("a", b"one");
        kv::set("b", b"");
        assert_eq!(kv::get("a"), Some(b"one".to_vec()));
        assert_eq!(kv::get("b"), Some(Vec::new()));
        kv::set("a", b"two");
        assert_eq!(kv::get("a"), Some(b"two".to_vec()));
        kv::delete("a");
        assert_eq!(kv::get("a"), None);
        assert_eq!(kv::get("b"), Some(Vec::new()));
        kv::delete("never-set");
        assert_eq!(kv::get("never-set"), None);
    }

    #[test]
    fn kv_u64_is_decimal_text() {
        assert_eq!(kv::get_u64("n"), 0);
        kv::set_u64("n", 42);
        assert_eq!(kv::get("n"), Some(b"42".to_vec()));
        assert_eq!(kv::get_u64("n"), 42);
        kv::set_u64("n", u64::MAX);
        assert_eq!(kv::get_u64("n"), u64::MAX);
        kv::delete("n");
        assert_eq!(kv::get_u64("n"), 0);
    }

    #[test]
    fn kv_get_u64_reads_unparsable_as_zero() {
        for bad in [
            &b"x"[..],
            b"",
            b"-1",
            b" 1",
            b"1.5",
            b"\xff",
            b"18446744073709551616",
        ] {
            kv::set("n", bad);
            assert_eq!(kv::get_u64("n"), 0, "value {bad:?}");
        }
    }

    #[test]
    fn kv_state_is_per_thread() {
        kv::set("shared", b"here");
        let there = std::thread::spawn(|| kv::get("shared")).join().unwrap();
        assert_eq!(there, None);
        assert_eq!(kv::get("shared"), Some(b"here".to_vec()));
    }

    #[test]
    fn kv_accepts_keys_and_values_at_the_limits() {
        let key = "k".repeat(1024);
        let value = vec![7u8; 1024 * 1024];
        kv::set(&key, &value);
        assert_eq!(kv::get(&key), Some(value));
    }

    #[test]
    #[should_panic(expected = "keys are 1 to 1024 bytes")]
    fn kv_rejects_an_empty_key() {
        kv::set("", b"v");
    }

    #[test]
    #[should_panic(expected = "keys are 1 to 1024 bytes")]
    fn kv_rejects_a_key_over_1024_bytes() {
        kv::get(&"k".repeat(1025));
    }

    #[test]
    #[should_panic(expected = "values are at most 1048576 bytes")]
    fn kv_rejects_a_value_over_1_mib() {
        kv::set("k", &vec![0u8; 1024 * 1024 + 1]);
    }
}
