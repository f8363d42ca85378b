//! Bodies of pull consumers' calls: `POST .../lease` and `POST .../settle`.

use super::output::MessageOut;
use crate::api::body::Format;
use crate::broker::{Lease, LogEntry, Settle, Settled};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Messages one lease call returns when `max` is not given.
pub const DEFAULT_MAX: usize = 10;

/// `POST /v1/subscriptions/{s}/lease`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseIn {
    /// Most messages to lease (1 to 1,000). Default 10.
    #[serde(default)]
    pub max: Option<usize>,
    /// How long the leases last; default the subscription's `lease_ms`.
    #[serde(default)]
    pub lease_ms: Option<u64>,
    /// Wait up to this long (at most 20,000) for a message. Default 0.
    #[serde(default)]
    pub wait_ms: u64,
}

/// One leased message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct LeaseOut {
    lease_id: String,
    expires_ms: u64,
    message: LeasedMessage,
}

/// A leased message: the shape of partition reads, plus its topic and attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct LeasedMessage {
    topic: String,
    /// 1 on the first delivery.
    attempt: u32,
    #[serde(flatten)]
    message: MessageOut,
}

/// The answer to a lease call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeasesOut {
    leases: Vec<LeaseOut>,
}

impl LeasesOut {
    pub fn new(leases: Vec<Lease>, format: Format) -> Self {
        let leases = leases
            .into_iter()
            .map(|l| {
                let m = l.message;
                let letter = &*m.message;
                let entry = LogEntry {
                    id: letter.id().to_string(),
                    partition: m.partition,
                    offset: m.offset,
                    key: letter.key().map(str::to_string),
                    payload: letter.payload().to_vec(),
                    headers: letter.headers().to_vec(),
                    timestamp_ms: letter.timestamp_ms(),
                };
                LeaseOut {
                    lease_id: l.lease_id,
                    expires_ms: l.expires_ms,
                    message: LeasedMessage {
                        topic: m.topic.to_string(),
                        attempt: m.attempt,
                        message: MessageOut::of(entry, format),
                    },
                }
            })
            .collect();
        Self { leases }
    }

    /// The lease ids handed out.
    pub fn ids(&self) -> Vec<String> {
        self.leases.iter().map(|l| l.lease_id.clone()).collect()
    }
}

/// `POST /v1/subscriptions/{s}/settle`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettleIn {
    /// Lease ids of messages handled.
    #[serde(default)]
    pub ack: Vec<String>,
    #[serde(default)]
    pub retry: Vec<RetryIn>,
    #[serde(default)]
    pub dead_letter: Vec<DeadLetterIn>,
    #[serde(default)]
    pub extend: Vec<ExtendIn>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryIn {
    pub lease_id: String,
    /// Wait this long before the next attempt instead of the backoff.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterIn {
    pub lease_id: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendIn {
    pub lease_id: String,
    /// The lease now ends this long from now.
    pub lease_ms: u64,
}

impl SettleIn {
    /// Every item, in the order ack, retry, dead_letter, extend.
    pub fn items(self) -> Vec<(String, Settle)> {
        let mut items: Vec<(String, Settle)> =
            self.ack.into_iter().map(|id| (id, Settle::Ack)).collect();
        items.extend(self.retry.into_iter().map(|r| {
            let reason = r.reason.unwrap_or_else(|| "retry requested".into());
            (
                r.lease_id,
                Settle::Retry {
                    reason,
                    delay_ms: r.delay_ms,
                },
            )
        }));
        items.extend(self.dead_letter.into_iter().map(|d| {
            let reason = d.reason.unwrap_or_else(|| "dead-letter requested".into());
            (d.lease_id, Settle::DeadLetter(reason))
        }));
        items.extend(self.extend.into_iter().map(|e| {
            (
                e.lease_id,
                Settle::Extend(Duration::from_millis(e.lease_ms)),
            )
        }));
        items
    }
}

/// One settle item's result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SettledOut {
    lease_id: String,
    /// `acked`, `retried`, `dead_lettered`, `extended`, `expired` or `unknown`.
    result: &'static str,
}

/// The answer to a settle call, one result per item in request order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettlesOut {
    results: Vec<SettledOut>,
}

impl SettlesOut {
    pub fn new(ids: Vec<String>, results: Vec<Settled>) -> Self {
        let results = ids
            .into_iter()
            .zip(results)
            .map(|(lease_id, r)| SettledOut {
                lease_id,
                result: r.as_str(),
            })
            .collect();
        Self { results }
    }
}
