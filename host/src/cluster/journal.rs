//! A subscription's state as a journal on JetStream (docs/cluster.md, "A
//! subscription's state"): stream `S_<sub>`, subject `s.<sub>.journal`,
//! one message per piece of a commit. The host running the subscription
//! keeps the state itself in its own store and appends each change it
//! makes here first; a host taking the subscription over replays the
//! journal into its store and goes on from there.
//!
//! Every append is one atomic batch (ADR-50) whose first message expects
//! the journal's last sequence as this writer knows it: a writer that lost
//! the subscription (paused past its lease, cut off, or behind for any
//! reason) has its whole append refused ([`JournalError::Fenced`]) and
//! must replay before it writes again.

use super::batch::{self, BatchError, Entry, MAX_BATCH};
use super::log::{token, untoken};
use super::ClusterError;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt as _;

/// Why an append was not stored. In every case none of it was, except
/// [`JournalError::Unanswered`], whose outcome is unknown until a replay.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another writer appended since this one last read or wrote.
    #[error("fenced: another host wrote the subscription's journal ({0})")]
    Fenced(String),
    #[error("an append holds 1 to {MAX_BATCH} entries, not {0}")]
    Size(usize),
    #[error("the journal refused an append: {0}")]
    Refused(String),
    #[error("no answer from JetStream: {0}")]
    Unanswered(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// One subscription's journal, as one writer sees it.
pub struct Journal {
    client: async_nats::Client,
    stream: stream::Stream,
    subject: String,
    /// The sequence of the last entry this writer read or wrote (0: none).
    last: u64,
}

fn stream_name(subscription: &str) -> String {
    format!("S_{}", token(subscription))
}

impl Journal {
    /// The journal of `subscription`, made if missing, with `replicas`
    /// copies. Read it ([`Journal::replay`]) before appending.
    pub async fn open(
        client: async_nats::Client,
        subscription: &str,
        replicas: usize,
    ) -> Result<Self, ClusterError> {
        let prefix = format!("s.{}", token(subscription));
        let config =
            super::stream_config(stream_name(subscription), format!("{prefix}.>"), replicas);
        let stream = super::get_or_create_stream(&jetstream::new(client.clone()), config)
            .await
            .map_err(|e| ClusterError::new("opening a subscription's journal", e))?;
        Ok(Self {
            client,
            stream,
            subject: format!("{prefix}.journal"),
            last: 0,
        })
    }

    /// Every entry, in the order appended; later appends expect the last.
    pub async fn replay(&mut self) -> Result<Vec<Bytes>, ClusterError> {
        let failed = |e: &dyn std::fmt::Display| {
            ClusterError::new("replaying a subscription's journal", e.to_string())
        };
        let state = self
            .stream
            .info()
            .await
            .map_err(|e| failed(&e))?
            .state
            .clone();
        let mut entries = Vec::with_capacity(state.messages as usize);
        if state.messages == 0 {
            self.last = 0;
            return Ok(entries);
        }
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| failed(&e))?;
        let mut messages = consumer.messages().await.map_err(|e| failed(&e))?;
        let mut last = 0;
        let mut target = state.last_sequence;
        loop {
            while last < target {
                let message = match messages.next().await {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => return Err(failed(&e)),
                    None => return Err(failed(&"the journal's reader ended early")),
                };
                last = message.info().map_err(|e| failed(&e))?.stream_sequence;
                entries.push(message.message.payload);
            }
            // Appended to since the replay began (a stale writer's last
            // commit, or a snapshot whose purge moved the reader past the
            // end it aimed at): read on to the journal's end as it is now,
            // so a replay ends between appends, never inside a snapshot.
            let now = self
                .stream
                .info()
                .await
                .map_err(|e| failed(&e))?
                .state
                .last_sequence;
            if now <= last {
                break;
            }
            target = now;
        }
        self.last = last;
        Ok(entries)
    }

    /// Append `entries`, a snapshot of the whole state, as one batch
    /// (fenced as [`Journal::append`] is), then purge every entry before
    /// it. The purge may fail or come late (this host stalled, and another
    /// appended since): what it drops is superseded either way.
    pub async fn compact(&mut self, entries: Vec<Bytes>) -> Result<(), JournalError> {
        let count = entries.len() as u64;
        self.append(entries).await?;
        let first = self.last + 1 - count;
        if let Err(e) = self.stream.purge().sequence(first).await {
            tracing::warn!(journal = %self.stream.cached_info().config.name, error = %e, "dropping a journal's entries before its snapshot failed; the next snapshot drops them");
        }
        Ok(())
    }

    /// Append `entries` (the pieces of one or more commits, in order) as
    /// one atomic batch, if nobody appended since this writer last read or
    /// wrote.
    pub async fn append(&mut self, entries: Vec<Bytes>) -> Result<(), JournalError> {
        if entries.is_empty() || entries.len() > MAX_BATCH {
            return Err(JournalError::Size(entries.len()));
        }
        let mut batch: Vec<Entry> = entries
            .into_iter()
            .map(|payload| Entry {
                subject: self.subject.clone(),
                id: None,
                headers: Vec::new(),
                payload,
                expect: None,
            })
            .collect();
        batch[0].expect = Some(self.last);
        match batch::commit(&self.client, batch).await {
            Ok(done) => {
                self.last = done.last_sequence;
                Ok(())
            }
            Err(BatchError::Fenced(e)) => Err(JournalError::Fenced(e)),
            Err(BatchError::Unanswered(e)) => Err(JournalError::Unanswered(e)),
            Err(e) => Err(JournalError::Refused(e.to_string())),
        }
    }
}

/// Delete `subscription`'s journal, if it has one.
/// Every journal on the cluster, with when its stream was made (ms since
/// the epoch).
pub async fn list(client: &async_nats::Client) -> Result<Vec<(String, u64)>, ClusterError> {
    let js = jetstream::new(client.clone());
    let mut streams = js.streams();
    let mut journals = Vec::new();
    while let Some(info) = streams.next().await {
        let info = info.map_err(|e| ClusterError::new("listing the journals", e))?;
        if let Some(token) = info.config.name.strip_prefix("S_") {
            let created = super::epoch_ms(info.created.unix_timestamp_nanos());
            journals.push((untoken(token), created));
        }
    }
    Ok(journals)
}

pub async fn delete(client: &async_nats::Client, subscription: &str) -> Result<(), ClusterError> {
    let js = jetstream::new(client.clone());
    let name = stream_name(subscription);
    let Err(e) = js.delete_stream(&name).await else {
        return Ok(());
    };
    match js.get_stream(&name).await {
        Err(gone)
            if matches!(gone.kind(), jetstream::context::GetStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            Ok(())
        }
        _ => Err(ClusterError::new("deleting a subscription's journal", e)),
    }
}
