//! Live views for the API's event streams: a topic's new durable messages
//! ([`TopicWatch`]) and a subscription's attempts as they complete
//! ([`DeliveryEvent`]). Neither touches any subscription's progress.

use super::log::Topic;
use super::AttemptRecord;
use std::sync::Arc;
use tokio::sync::Notify;

/// Attempt events a subscription buffers for slow watchers before they
/// miss some (and are told they lagged).
pub const EVENT_BUFFER: usize = 1024;

/// A topic's partitions' offsets, woken when new messages become durable.
/// Stops watching when dropped.
pub struct TopicWatch {
    topic: Arc<Topic>,
    notify: Arc<Notify>,
}

impl TopicWatch {
    pub(crate) fn new(topic: Arc<Topic>) -> Self {
        let notify = Arc::new(Notify::new());
        topic.watch(notify.clone());
        Self { topic, notify }
    }

    pub fn partitions(&self) -> u32 {
        self.topic.partitions()
    }

    /// Per partition: the offset the next durable message will get.
    pub fn heads(&self) -> Vec<u64> {
        (0..self.partitions()).map(|p| self.topic.head(p)).collect()
    }

    /// Per partition: the oldest offset still stored.
    pub fn firsts(&self) -> Vec<u64> {
        (0..self.partitions())
            .map(|p| self.topic.first(p))
            .collect()
    }

    /// Wait until messages were appended since the last call.
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

impl Drop for TopicWatch {
    fn drop(&mut self) {
        self.topic.unwatch(&self.notify);
    }
}

/// One completed attempt of a subscription, as it happened.
#[derive(Debug, Clone)]
pub struct DeliveryEvent {
    pub message_id: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<String>,
    /// What became of the message: `acked`, `retrying`, `dead-lettered` or
    /// `failed` (at-most-once).
    pub state: &'static str,
    pub attempt: AttemptRecord,
}
