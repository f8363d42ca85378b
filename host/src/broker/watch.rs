//! Live views for the API's event streams: a topic's new durable messages
//! ([`TopicWatch`]) and a subscription's attempts as they complete
//! ([`DeliveryEvent`]). Neither touches any subscription's progress.

use super::log::Topic;
use super::shared::SharedLog;
use super::{AttemptRecord, BrokerError};
use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Attempt events a subscription buffers for slow watchers before they
/// miss some (and are told they lagged).
pub const EVENT_BUFFER: usize = 1024;

/// In a shared log, a message is seen on its way in, a moment before it is
/// stored: a watcher looks this long after hearing of one.
const SETTLE: Duration = Duration::from_millis(5);
/// ...and at least this often, for a message heard of before it was stored.
const RECHECK: Duration = Duration::from_secs(1);
/// How many times a partition heard of whose head did not move is read
/// again, 10 ms apart (the copy of the log answering may be behind).
const AGAIN: u32 = 3;

/// A topic's partitions' offsets, woken when new messages become durable.
/// Stops watching when dropped.
pub struct TopicWatch {
    inner: Watched,
}

enum Watched {
    /// The embedded log, which wakes its watchers after each durable append.
    Local {
        topic: Arc<Topic>,
        notify: Arc<Notify>,
    },
    /// A shared log (cluster mode): woken by appends of any host.
    Shared {
        log: Arc<dyn SharedLog>,
        topic: String,
        partitions: u32,
        /// Only polled through `&mut self` (the lock is never taken); it
        /// makes the watch `Sync`, as a stream need not be.
        appends: std::sync::Mutex<BoxStream<'static, Option<u32>>>,
        /// Per partition: to be read at the next [`TopicWatch::heads_heard`]
        /// (`Some(true)`: an append to it was heard of; `Some(false)`: each
        /// of them after a silence).
        heard: Vec<Option<bool>>,
        /// Per partition: the head last read, and how many reads in a row
        /// found it unmoved although an append was heard of (the copy
        /// asked was behind: it is asked again, a few times, soon).
        known: Vec<(u64, u32)>,
    },
}

impl TopicWatch {
    pub(crate) fn new(topic: Arc<Topic>) -> Self {
        let notify = Arc::new(Notify::new());
        topic.watch(notify.clone());
        Self {
            inner: Watched::Local { topic, notify },
        }
    }

    pub(crate) fn shared(
        log: Arc<dyn SharedLog>,
        topic: &str,
        partitions: u32,
        appends: BoxStream<'static, Option<u32>>,
    ) -> Self {
        Self {
            inner: Watched::Shared {
                log,
                topic: topic.to_string(),
                partitions,
                appends: std::sync::Mutex::new(appends),
                heard: vec![Some(false); partitions as usize],
                known: vec![(0, 0); partitions as usize],
            },
        }
    }

    pub fn partitions(&self) -> u32 {
        match &self.inner {
            Watched::Local { topic, .. } => topic.partitions(),
            Watched::Shared { partitions, .. } => *partitions,
        }
    }

    /// Per partition: the oldest offset still stored, and the offset the
    /// next durable message will get.
    pub async fn offsets(&self) -> Result<(Vec<u64>, Vec<u64>), BrokerError> {
        match &self.inner {
            Watched::Local { topic, .. } => {
                let partitions = 0..topic.partitions();
                let firsts = partitions.clone().map(|p| topic.first(p)).collect();
                Ok((firsts, partitions.map(|p| topic.head(p)).collect()))
            }
            Watched::Shared {
                log,
                topic,
                partitions,
                ..
            } => {
                let states = futures_util::future::try_join_all(
                    (0..*partitions).map(|p| log.partition(topic, p)),
                )
                .await?;
                Ok((
                    states.iter().map(|s| s.first).collect(),
                    states.iter().map(|s| s.next).collect(),
                ))
            }
        }
    }

    /// Wait until messages were appended since the last call (in a shared
    /// log: until one was heard of and has had a moment to be stored, or
    /// [`RECHECK`] passed).
    pub async fn changed(&mut self) {
        match &mut self.inner {
            Watched::Local { notify, .. } => notify.notified().await,
            Watched::Shared {
                appends,
                heard,
                known,
                ..
            } => {
                let appends = appends.get_mut().expect("appends lock");
                // A head found unmoved is read again soon, not after RECHECK.
                let again: Vec<usize> = (0..known.len())
                    .filter(|p| (1..=AGAIN).contains(&known[*p].1))
                    .collect();
                let wait = match again.is_empty() {
                    true => RECHECK,
                    false => SETTLE * 2,
                };
                // An append to a partition, or (`None`) to any of them.
                let mut hear = |partition: Option<u32>| match partition
                    .and_then(|p| heard.get_mut(p as usize))
                {
                    Some(heard) => *heard = Some(true),
                    None => heard.iter_mut().for_each(|h| *h = h.or(Some(false))),
                };
                match tokio::time::timeout(wait, appends.next()).await {
                    Ok(Some(partition)) => {
                        hear(partition);
                        tokio::time::sleep(SETTLE).await;
                        // One look covers every append heard of by now.
                        while let Some(Some(partition)) =
                            futures_util::FutureExt::now_or_never(appends.next())
                        {
                            hear(partition);
                        }
                    }
                    // The subscription ended (the connection was lost):
                    // look every RECHECK from now on.
                    Ok(None) => {
                        tokio::time::sleep(RECHECK).await;
                        hear(None);
                    }
                    Err(_) if again.is_empty() => hear(None),
                    Err(_) => {}
                }
                again.into_iter().for_each(|p| hear(Some(p as u32)));
            }
        }
    }

    /// The heads (the offsets the next messages get) of the partitions
    /// heard of since the last call, or of every partition in the embedded
    /// log. In a shared log each is as a copy knows it, perhaps behind for
    /// a moment: the next change looks again.
    pub async fn heads_heard(&mut self) -> Result<Vec<(u32, u64)>, BrokerError> {
        match &mut self.inner {
            Watched::Local { topic, .. } => Ok((0..topic.partitions())
                .map(|p| (p, topic.head(p)))
                .collect()),
            Watched::Shared {
                log,
                topic,
                heard,
                known,
                ..
            } => {
                let wanted: Vec<(u32, bool)> = (0..heard.len() as u32)
                    .filter_map(|p| heard[p as usize].map(|appended| (p, appended)))
                    .collect();
                // On a failure they stay heard of, to be read next time.
                let heads = futures_util::future::try_join_all(
                    wanted.iter().map(|(p, _)| log.head(topic, *p)),
                )
                .await?;
                heard.fill(None);
                for ((p, appended), head) in wanted.iter().zip(&heads) {
                    let (last, unmoved) = &mut known[*p as usize];
                    *unmoved = match (*head > *last, appended) {
                        (true, _) | (false, false) => 0,
                        // After AGAIN tries, it was not behind: the append
                        // heard of was refused, or counted already.
                        (false, true) => (*unmoved + 1) % (AGAIN + 1),
                    };
                    *last = (*last).max(*head);
                }
                Ok(wanted.into_iter().map(|(p, _)| p).zip(heads).collect())
            }
        }
    }
}

impl Drop for TopicWatch {
    fn drop(&mut self) {
        if let Watched::Local { topic, notify } = &self.inner {
            topic.unwatch(notify);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::shared::{SharedAppended, SharedEntry, SharedMessage, SharedPartition};
    use crate::broker::spec::TopicSpec;
    use futures_util::future::BoxFuture;
    use std::sync::Mutex;

    /// A shared log that only tells heads, and records which it was asked.
    #[derive(Debug, Default)]
    struct Heads {
        heads: Mutex<Vec<u64>>,
        asked: Mutex<Vec<u32>>,
    }

    impl Heads {
        fn asked(&self) -> Vec<u32> {
            std::mem::take(&mut *self.asked.lock().unwrap())
        }
    }

    fn unused<T>() -> BoxFuture<'static, Result<T, BrokerError>> {
        Box::pin(async { Err(BrokerError::Unavailable("not in this test".into())) })
    }

    impl SharedLog for Heads {
        fn list(&self) -> BoxFuture<'_, Result<Vec<(String, TopicSpec)>, BrokerError>> {
            unused()
        }
        fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<TopicSpec>, BrokerError>> {
            unused()
        }
        fn put<'a>(
            &'a self,
            _: &'a str,
            _: &'a TopicSpec,
        ) -> BoxFuture<'a, Result<bool, BrokerError>> {
            unused()
        }
        fn delete<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
            unused()
        }
        fn append<'a>(
            &'a self,
            _: &'a str,
            _: u32,
            _: Vec<SharedMessage>,
        ) -> BoxFuture<'a, Result<Vec<SharedAppended>, BrokerError>> {
            unused()
        }
        fn read<'a>(
            &'a self,
            _: &'a str,
            _: u32,
            _: u64,
            _: usize,
        ) -> BoxFuture<'a, Result<Vec<SharedEntry>, BrokerError>> {
            unused()
        }
        fn partition<'a>(
            &'a self,
            _: &'a str,
            _: u32,
        ) -> BoxFuture<'a, Result<SharedPartition, BrokerError>> {
            unused()
        }
        fn trim<'a>(
            &'a self,
            _: &'a str,
            _: u32,
            _: u64,
        ) -> BoxFuture<'a, Result<(), BrokerError>> {
            unused()
        }
        fn reachable(&self) -> Result<(), String> {
            Ok(())
        }
        fn appends<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<BoxStream<'static, Option<u32>>, BrokerError>> {
            unused()
        }
        fn head<'a>(
            &'a self,
            _: &'a str,
            partition: u32,
        ) -> BoxFuture<'a, Result<u64, BrokerError>> {
            self.asked.lock().unwrap().push(partition);
            let head = self.heads.lock().unwrap()[partition as usize];
            Box::pin(async move { Ok(head) })
        }
    }

    /// Only the partitions heard of are read, once per burst; one whose
    /// head did not move is read again soon, a few times, then left for the
    /// recheck.
    #[tokio::test]
    async fn heads_are_read_for_what_was_heard_and_again_while_behind() {
        let log = Arc::new(Heads {
            heads: Mutex::new(vec![5, 7, 0]),
            ..Heads::default()
        });
        let (appends, heard) = tokio::sync::mpsc::unbounded_channel::<Option<u32>>();
        let heard = futures_util::stream::unfold(heard, |mut heard| async move {
            heard.recv().await.map(|p| (p, heard))
        });
        let mut watch = TopicWatch::shared(log.clone(), "t", 3, heard.boxed());
        // At first, every partition.
        assert_eq!(watch.heads_heard().await.unwrap(), [(0, 5), (1, 7), (2, 0)]);
        assert_eq!(log.asked(), [0, 1, 2]);

        // A burst on partitions 1 and 2: one read of each.
        for p in [1, 2, 1, 1] {
            appends.send(Some(p)).unwrap();
        }
        log.heads.lock().unwrap()[1] = 9;
        watch.changed().await;
        assert_eq!(watch.heads_heard().await.unwrap(), [(1, 9), (2, 0)]);
        assert_eq!(log.asked(), [1, 2]);

        // Partition 2's head did not move although an append was heard of:
        // it is read again without another append, AGAIN times at most.
        for _ in 0..AGAIN {
            watch.changed().await;
            assert_eq!(watch.heads_heard().await.unwrap(), [(2, 0)]);
        }
        assert_eq!(log.asked(), vec![2; AGAIN as usize]);
        let quiet = tokio::time::timeout(RECHECK / 2, watch.changed()).await;
        assert!(quiet.is_err(), "left for the recheck after {AGAIN} reads");

        // Once it moves, it is read as soon as it is heard of again.
        log.heads.lock().unwrap()[2] = 1;
        appends.send(Some(2)).unwrap();
        watch.changed().await;
        assert_eq!(watch.heads_heard().await.unwrap(), [(2, 1)]);
    }
}
