//! Write Switchyard consumer plugins in Rust.
//!
//! A plugin is a WebAssembly component that Switchyard calls once per message. It
//! says what became of the message by returning an [`Outcome`], and it may
//! [`publish`] new messages and write to the host's [`log`] while it runs.
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
//! like a retry whose reason is the trap text. Under at-least-once delivery, messages
//! published during an attempt become durable when that attempt acks; a failed
//! attempt's publishes are discarded.
//!
//! # Outside Switchyard
//!
//! The crate also compiles for the machine you build on, so plugin logic can be unit
//! tested with plain `cargo test`. There, [`publish`] returns an error and the
//! [`log`] functions write to standard error.

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
        pub_export_macro: true,
        default_bindings_module: "switchyard_sdk::bindings",
        export_macro_name: "__export_consumer",
    });
}

pub use bindings::switchyard::plugin::types::{LogLevel, Message, Outcome, RetryInfo};

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
/// kept in the given order. Under at-least-once delivery the publish becomes durable
/// when the current message is acknowledged; if the attempt fails (retry, dead
/// letter, trap), its publishes are discarded.
///
/// Errors, as text: the topic does not exist, the payload is over 1 MiB, or the
/// attempt has already published 1,000 messages.
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
}
