//! Settings of topics and subscriptions as operators write them (JSON/MessagePack
//! bodies of `PUT /v1/topics/{t}` and `PUT /v1/subscriptions/{s}`), with their
//! defaults and validation.

use super::BrokerError;
use crate::runtime::EgressRules;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default retention: 7 days, the usual log-broker default.
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Most concurrent deliveries (and worker threads) of one subscription.
pub const MAX_CONCURRENCY: u32 = 256;
/// Longest per-attempt timeout: 5 minutes.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// Most attempts per message.
pub const MAX_ATTEMPTS: u32 = 1000;

/// A topic's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Number of partitions, fixed at creation (1 to 1024). Default 1.
    #[serde(default = "one")]
    pub partitions: u32,
    /// How long a message is kept after every subscription is done with it.
    /// Default 7 days.
    #[serde(default = "default_retention")]
    pub retention_ms: u64,
    /// How long a producer-given message `id` is remembered: publishing the
    /// same id again within this window stores nothing and answers with the
    /// original position (`"duplicate": true`). 0 turns deduplication off.
    /// Default 2 minutes.
    #[serde(default = "default_dedup_window")]
    pub dedup_window_ms: u64,
}

/// Default publish-deduplication window: 2 minutes.
pub const DEFAULT_DEDUP_WINDOW_MS: u64 = 120_000;
/// Longest deduplication window: 7 days.
pub const MAX_DEDUP_WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;

fn default_dedup_window() -> u64 {
    DEFAULT_DEDUP_WINDOW_MS
}

fn one() -> u32 {
    1
}
fn default_retention() -> u64 {
    DEFAULT_RETENTION_MS
}

impl Default for TopicSpec {
    fn default() -> Self {
        Self {
            partitions: 1,
            retention_ms: DEFAULT_RETENTION_MS,
            dedup_window_ms: DEFAULT_DEDUP_WINDOW_MS,
        }
    }
}

impl TopicSpec {
    pub(crate) fn validate(&self) -> Result<(), BrokerError> {
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(BrokerError::Invalid(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}, got {}",
                self.partitions
            )));
        }
        if self.dedup_window_ms > MAX_DEDUP_WINDOW_MS {
            return Err(BrokerError::Invalid(format!(
                "dedup_window_ms must be at most {MAX_DEDUP_WINDOW_MS} (7 days)"
            )));
        }
        Ok(())
    }
}

/// Topic names: `[A-Za-z0-9._-]{1,249}`, as in Kafka.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    validate_name("topic", name, 249)
}

/// A subscription's `topic`: a topic name, or a pattern over dot-separated
/// segments — `*` matches exactly one segment, a final `>` one or more
/// (`orders.*` matches `orders.eu` but not `orders.eu.x`; `orders.>` both).
pub fn validate_topic_pattern(pattern: &str) -> Result<(), BrokerError> {
    if !is_pattern(pattern) {
        return validate_topic_name(pattern);
    }
    let segments: Vec<&str> = pattern.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        let ok = match *segment {
            "*" => true,
            ">" => i == segments.len() - 1,
            s => !s.is_empty() && validate_topic_name(s).is_ok(),
        };
        if !ok {
            return Err(BrokerError::Invalid(format!(
                "invalid topic pattern {pattern:?}: segments are names, `*` (one segment) \
                 or a final `>` (one or more segments)"
            )));
        }
    }
    if pattern.len() > 249 {
        return Err(BrokerError::Invalid("topic pattern longer than 249".into()));
    }
    Ok(())
}

/// Whether `topic` is a pattern rather than a topic name.
pub fn is_pattern(topic: &str) -> bool {
    topic.split('.').any(|s| s == "*" || s == ">")
}

/// Whether topic `name` matches `pattern` (a name matches only itself).
pub fn topic_matches(pattern: &str, name: &str) -> bool {
    if !is_pattern(pattern) {
        return pattern == name;
    }
    let mut want = pattern.split('.');
    let mut have = name.split('.');
    loop {
        match (want.next(), have.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(w), Some(h)) if w == h => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Subscription and plugin names: `[A-Za-z0-9._-]{1,128}`.
pub fn validate_resource_name(kind: &str, name: &str) -> Result<(), BrokerError> {
    validate_name(kind, name, 128)
}

fn validate_name(kind: &str, name: &str, max: usize) -> Result<(), BrokerError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(BrokerError::Invalid(format!(
            "invalid {kind} name {name:?}: use 1 to {max} of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// How a subscription's messages reach their consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The host calls the subscription's plugin.
    #[default]
    Push,
    /// Consumers outside the host lease messages (`POST .../lease`) and
    /// settle them (`POST .../settle`).
    Pull,
}

impl Mode {
    fn is_push(&self) -> bool {
        *self == Mode::Push
    }
}

/// Default lease of a pull subscription: 30 s, as SQS's visibility timeout.
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// Longest lease: 12 hours, as SQS's.
pub const MAX_LEASE_MS: u64 = 12 * 3600 * 1000;

/// When progress is committed relative to the plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryGuarantee {
    /// Progress is committed before the plugin runs; no retries.
    AtMostOnce,
    /// Progress is committed after `ack`; a crash redelivers.
    #[default]
    AtLeastOnce,
    /// The plugin's effects (publications, kv writes) are committed in the
    /// same atomic write as the ack; a crash re-runs the attempt and the
    /// effects still appear once.
    ExactlyOnce,
}

/// Which messages of a subscription must be handled one at a time, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Ordering {
    /// Any order, full concurrency; a retry blocks nothing else.
    None,
    /// Same key strictly in offset order; keys run concurrently. Unkeyed
    /// messages are unordered.
    #[default]
    Key,
    /// Each partition strictly in offset order.
    Partition,
}

/// How plugin instances are shared between messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A fresh instance per message: no state leaks between messages.
    #[default]
    Message,
    /// Each worker reuses one instance, recycled every `recycle_after` messages
    /// and after any failed attempt. Faster; a plugin's globals persist across
    /// messages of one worker.
    Worker,
}

/// Backoff curve between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Backoff {
    Fixed,
    #[default]
    Exponential,
}

/// Retry policy of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySpec {
    /// Attempts per message, counting the first; then it is dead-lettered. Default 5.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Delay before the second attempt. Default 100 ms.
    pub initial_ms: u64,
    /// Longest delay between attempts. Default 60 s.
    pub max_ms: u64,
    /// Growth per attempt under exponential backoff. Default 2.0.
    pub multiplier: f64,
    /// Spread each delay randomly over [delay/2, delay]. Default true.
    pub jitter: bool,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Backoff::Exponential,
            initial_ms: 100,
            max_ms: 60_000,
            multiplier: 2.0,
            jitter: true,
        }
    }
}

/// Where a new subscription starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// From the oldest retained message.
    #[default]
    Earliest,
    /// Only messages published after the subscription is created.
    Latest,
}

/// A subscription's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// The topic to consume, or a pattern: `orders.*` (one more segment) or
    /// `orders.>` (any depth), including topics created later.
    pub topic: String,
    /// Plugin name (follows the latest version) or `name@N` (pinned).
    /// Required unless `mode` is `pull`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plugin: String,
    /// `push` (default): the host calls the plugin. `pull`: consumers outside
    /// the host lease messages over HTTP and settle them.
    #[serde(default, skip_serializing_if = "Mode::is_push")]
    pub mode: Mode,
    /// Pull only: how long a leased message stays leased unless it is
    /// settled or extended; then it comes back as a failed attempt. Default
    /// 30,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    #[serde(default)]
    pub delivery: DeliveryGuarantee,
    #[serde(default)]
    pub ordering: Ordering,
    /// Most messages in flight at once (1 to 256). Default 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Per-attempt time limit, enforced inside wasm. Default 5000 ms.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default)]
    pub isolation: Isolation,
    /// Under `worker` isolation, messages per instance before it is replaced.
    /// Default 10,000.
    #[serde(default = "default_recycle")]
    pub recycle_after: u32,
    /// Which messages get a delivery record (`GET .../messages/{id}`):
    /// `failures` (default) those with a failed attempt; `all` every message,
    /// at the cost of one more write per message.
    #[serde(default)]
    pub ledger: LedgerMode,
    /// Only messages matching the filter are delivered; the others are
    /// skipped (counted as `filtered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Plugin configuration: a string map handed to the plugin.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub start: Start,
    /// Outbound HTTP the plugin may make. Absent: every request is denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressSpec>,
}

/// Where a subscription's plugin may send HTTP requests, and the limits of
/// each attempt's requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressSpec {
    /// Allowed destinations, `scheme://host[:port]`: `https://api.example.com`,
    /// `http://127.0.0.1:8080`, `https://*.example.org` (any subdomain),
    /// port `*` for any port. A non-public address is reachable only if the
    /// operator allowed its range (`--egress-allow-cidr`).
    pub allow: Vec<String>,
    /// Time limit of one request, to the end of its response body (also
    /// bounded by the attempt's `timeout_ms`). Default 10,000.
    #[serde(default = "default_egress_timeout")]
    pub timeout_ms: u64,
    /// Largest response body a plugin may read. Default 1 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Most requests one attempt may make. Default 16.
    #[serde(default = "default_max_requests")]
    pub max_requests: u32,
}

fn default_egress_timeout() -> u64 {
    crate::runtime::egress::DEFAULT_TIMEOUT_MS
}
fn default_max_response_bytes() -> u64 {
    crate::runtime::egress::DEFAULT_MAX_RESPONSE_BYTES
}
fn default_max_requests() -> u32 {
    crate::runtime::egress::DEFAULT_MAX_REQUESTS
}

/// Which messages a subscription keeps a delivery record of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LedgerMode {
    /// Messages with at least one failed attempt (retried, dead-lettered, failed).
    #[default]
    Failures,
    /// Every message.
    All,
}

/// Which messages a subscription delivers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Every listed header must be present with exactly this value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Filter {
    /// Whether a message with these headers passes.
    pub fn matches(&self, headers: &[(String, String)]) -> bool {
        self.headers
            .iter()
            .all(|(name, value)| headers.iter().any(|(n, v)| n == name && v == value))
    }
}

fn default_concurrency() -> u32 {
    16
}
fn default_timeout() -> u64 {
    5000
}
fn default_recycle() -> u32 {
    10_000
}

impl SubscriptionSpec {
    pub(crate) fn validate(&self) -> Result<(), BrokerError> {
        validate_topic_pattern(&self.topic)?;
        let bad = |m: String| Err(BrokerError::Invalid(m));
        match self.mode {
            Mode::Push => {
                if self.plugin.is_empty() {
                    return bad("a subscription needs a plugin (or \"mode\": \"pull\")".into());
                }
                let (plugin, _) = parse_plugin_ref(&self.plugin)?;
                validate_resource_name("plugin", plugin)?;
                if self.lease_ms.is_some() {
                    return bad("lease_ms is for pull subscriptions".into());
                }
            }
            Mode::Pull => {
                if !self.plugin.is_empty() {
                    return bad("a pull subscription has no plugin".into());
                }
                if self.delivery != DeliveryGuarantee::AtLeastOnce {
                    return bad("pull subscriptions are at-least-once".into());
                }
                if self.egress.is_some() {
                    return bad("egress is for plugins; a pull subscription has none".into());
                }
                if self.lease_ms.is_some_and(|l| l == 0 || l > MAX_LEASE_MS) {
                    return bad(format!("lease_ms must be between 1 and {MAX_LEASE_MS}"));
                }
            }
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return bad(format!(
                "concurrency must be between 1 and {MAX_CONCURRENCY}"
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return bad(format!("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"));
        }
        let r = &self.retry;
        if r.max_attempts == 0 || r.max_attempts > MAX_ATTEMPTS {
            return bad(format!(
                "retry.max_attempts must be between 1 and {MAX_ATTEMPTS}"
            ));
        }
        if r.max_ms < r.initial_ms {
            return bad("retry.max_ms must be at least retry.initial_ms".into());
        }
        if !(1.0..=100.0).contains(&r.multiplier) {
            return bad("retry.multiplier must be between 1.0 and 100.0".into());
        }
        if self.recycle_after == 0 {
            return bad("recycle_after must be at least 1".into());
        }
        self.egress_rules()?;
        Ok(())
    }

    /// How long a pull subscription's lease lasts unless a lease call says.
    pub(crate) fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ms.unwrap_or(DEFAULT_LEASE_MS))
    }

    /// The egress settings, checked (`None`: no outbound requests).
    pub(crate) fn egress_rules(&self) -> Result<Option<EgressRules>, BrokerError> {
        self.egress
            .as_ref()
            .map(|e| {
                EgressRules::new(&e.allow, e.timeout_ms, e.max_response_bytes, e.max_requests)
                    .map_err(BrokerError::Invalid)
            })
            .transpose()
    }
}

/// Split `name` or `name@N` into the name and the pinned version.
pub fn parse_plugin_ref(reference: &str) -> Result<(&str, Option<u32>), BrokerError> {
    match reference.split_once('@') {
        None => Ok((reference, None)),
        Some((name, version)) => match version.parse::<u32>() {
            Ok(v) if v > 0 => Ok((name, Some(v))),
            _ => Err(BrokerError::Invalid(format!(
                "invalid plugin reference {reference:?}: use `name` or `name@N` with N ≥ 1"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_defaults_follow_the_design() {
        let spec: SubscriptionSpec =
            serde_json::from_str(r#"{"topic":"orders","plugin":"billing"}"#).unwrap();
        assert_eq!(spec.delivery, DeliveryGuarantee::AtLeastOnce);
        assert_eq!(spec.ordering, Ordering::Key);
        assert_eq!(spec.concurrency, 16);
        assert_eq!(spec.timeout_ms, 5000);
        assert_eq!(spec.retry.max_attempts, 5);
        assert_eq!(spec.isolation, Isolation::Message);
        assert_eq!(spec.start, Start::Earliest);
        spec.validate().unwrap();
    }

    #[test]
    fn names_and_references_are_checked() {
        assert!(validate_topic_name("orders.eu-1_x").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert_eq!(parse_plugin_ref("p@3").unwrap(), ("p", Some(3)));
        assert_eq!(parse_plugin_ref("p").unwrap(), ("p", None));
        assert!(parse_plugin_ref("p@0").is_err());
        assert!(parse_plugin_ref("p@x").is_err());
    }

    #[test]
    fn topic_patterns_match_like_nats_subjects() {
        let check = |pattern: &str, name: &str, expected: bool| {
            assert_eq!(
                topic_matches(pattern, name),
                expected,
                "{pattern} vs {name}"
            );
        };
        check("orders", "orders", true);
        check("orders", "orders.eu", false);
        check("orders.*", "orders.eu", true);
        check("orders.*", "orders.eu.x", false);
        check("orders.*", "orders", false);
        check("orders.>", "orders.eu", true);
        check("orders.>", "orders.eu.x", true);
        check("orders.>", "orders", false);
        check("*.created", "orders.created", true);
        check("*.created", "orders.paid", false);
        assert!(validate_topic_pattern("orders.>").is_ok());
        assert!(validate_topic_pattern("orders.>.x").is_err());
        assert!(validate_topic_pattern("orders..*").is_err());
        assert!(validate_topic_pattern("or/ders.*").is_err());
    }

    #[test]
    fn header_filters_need_every_listed_header() {
        let f: Filter =
            serde_json::from_str(r#"{"headers":{"type":"order.created","v":"2"}}"#).unwrap();
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert!(f.matches(&h(&[("type", "order.created"), ("v", "2"), ("x", "y")])));
        assert!(!f.matches(&h(&[("type", "order.created")])));
        assert!(!f.matches(&h(&[("type", "order.paid"), ("v", "2")])));
        assert!(Filter::default().matches(&[]));
    }

    #[test]
    fn pull_subscriptions_have_no_plugin() {
        let parse = |json: &str| serde_json::from_str::<SubscriptionSpec>(json).unwrap();
        let pull = parse(r#"{"topic":"orders","mode":"pull","lease_ms":1000}"#);
        pull.validate().unwrap();
        assert_eq!(pull.lease(), std::time::Duration::from_secs(1));
        for bad in [
            r#"{"topic":"orders"}"#,
            r#"{"topic":"orders","mode":"pull","plugin":"p"}"#,
            r#"{"topic":"orders","mode":"pull","delivery":"exactly-once"}"#,
            r#"{"topic":"orders","mode":"pull","lease_ms":0}"#,
            r#"{"topic":"orders","plugin":"p","lease_ms":10}"#,
        ] {
            assert!(parse(bad).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<SubscriptionSpec>(
            r#"{"topic":"orders","plugin":"p","concurency":3}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("concurency"));
    }
}
