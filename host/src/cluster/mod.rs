//! Cluster mode's storage on NATS JetStream (docs/cluster.md). This is the
//! only module that names NATS.
//!
//! The commit primitive everything else rests on is an atomic batch to one
//! stream whose first message is fenced by the sequence its writer expects
//! ([`batch`]). On it: topic partitions as streams ([`log`]), a
//! subscription's state as a fenced journal ([`journal`]), and which host
//! runs what: membership, rendezvous placement and leases
//! ([`ownership`]). What `serve --cluster` runs on, behind the broker's
//! seams: the shared log of topics ([`topics`]), plugins and
//! subscriptions' settings ([`meta`], their records in one settings bucket
//! changed by revision: [`records`]), and this host's part in running
//! subscriptions ([`runners`]), with the requests hosts hand each other
//! ([`forward`]).

pub mod batch;
pub mod forward;
pub mod journal;
pub mod log;
pub mod meta;
pub mod ownership;
mod records;
pub mod runners;
pub mod topics;

use crate::broker::shared::SharedBackend;
use std::sync::Arc;

use async_nats::jetstream::stream;

/// Milliseconds since the epoch of a JetStream time, given in
/// nanoseconds since the epoch (0 for any time before it).
fn epoch_ms(nanos: i128) -> u64 {
    (nanos / 1_000_000).max(0) as u64
}

/// What went wrong talking to JetStream.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {error}")]
pub struct ClusterError {
    what: &'static str,
    error: String,
}

impl ClusterError {
    fn new(what: &'static str, error: impl ToString) -> Self {
        Self {
            what,
            error: error.to_string(),
        }
    }
}

/// The settings of every stream cluster mode makes: one name, its
/// subjects, `replicas` copies on file storage, atomic batches and direct
/// reads allowed (a subject's last message is read from any replica).
fn stream_config(name: String, subject: String, replicas: usize) -> stream::Config {
    stream::Config {
        name,
        subjects: vec![subject],
        num_replicas: replicas,
        allow_atomic_publish: true,
        allow_direct: true,
        ..Default::default()
    }
}

/// Make the stream `config` describes, or open it if it exists. A
/// cluster that cannot place it for a moment (a peer taken for offline
/// after a missed heartbeat, a leader election) is asked again up to five
/// times, 0.1 to 0.5 s apart (1.5 s in all), before the failure is the
/// caller's.
async fn get_or_create_stream(
    js: &async_nats::jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, async_nats::jetstream::context::CreateStreamError> {
    use async_nats::jetstream::{context::CreateStreamErrorKind, ErrorCode};
    const TRIES: u32 = 6;
    let mut tries = 1;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Err(e)
                if tries < TRIES
                    && matches!(e.kind(), CreateStreamErrorKind::JetStream(js)
                        if [ErrorCode::CLUSTER_NO_PEERS, ErrorCode::CLUSTER_NOT_AVAILABLE]
                            .contains(&js.error_code())) =>
            {
                tracing::debug!(stream = %config.name, error = %e, "stream not placed yet; asking again");
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(tries))).await;
                tries += 1;
            }
            result => return result,
        }
    }
}

/// Connect to the NATS servers at `urls` (any of a cluster's nodes; the
/// client learns the others and fails over between them) and open the
/// broker's shared storage there: topics ([`topics`]), plugins and
/// subscriptions' settings ([`meta`]), and this host's part in running
/// subscriptions as `host` ([`runners`]), each stream and bucket with
/// `replicas` copies.
pub async fn open(
    urls: &[String],
    replicas: usize,
    host: &str,
) -> Result<SharedBackend, ClusterError> {
    let client = async_nats::ConnectOptions::new()
        .name("switchyard")
        .connect(urls)
        .await
        .map_err(|e| ClusterError::new("connecting to the NATS cluster", e))?;
    // A cluster just started may not have elected its JetStream leader
    // yet, and a bucket just made (perhaps by another host at the same
    // moment) may not be reachable from every node: the buckets and
    // streams are opened again for a while.
    let started = std::time::Instant::now();
    loop {
        match open_storage(&client, replicas, host).await {
            Ok(backend) => return Ok(backend),
            Err(e) if started.elapsed() < OPEN_PATIENCE => {
                tracing::warn!(error = %e, "the cluster's storage cannot be opened yet; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How long a host keeps trying to open the cluster's storage at start.
const OPEN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

async fn open_storage(
    client: &async_nats::Client,
    replicas: usize,
    host: &str,
) -> Result<SharedBackend, ClusterError> {
    let js = async_nats::jetstream::new(client.clone());
    let records = records::Records::open(&js, replicas).await?;
    let timing = ownership::Timing {
        replicas,
        ..Default::default()
    };
    Ok(SharedBackend {
        meta: Arc::new(meta::Meta::open(&js, records.clone(), replicas).await?),
        subscriptions: Arc::new(meta::Subscriptions::new(records.clone())),
        runners: Arc::new(runners::Runners::join(client.clone(), host, timing).await?),
        log: Arc::new(topics::Topics::new(client.clone(), records, replicas)),
    })
}
