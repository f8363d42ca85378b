//! Cluster mode's storage on NATS JetStream (docs/cluster.md). This is the
//! only module that names NATS.
//!
//! Built so far: the commit primitive everything else rests on, an atomic
//! batch to one stream whose first message is fenced by the sequence its
//! writer expects ([`batch`]), and which host runs what: membership,
//! rendezvous placement and leases ([`ownership`]), topic partitions as
//! streams ([`log`]), and a subscription's state with its fenced commit
//! ([`state`]).

pub mod batch;
pub mod log;
pub mod ownership;
pub mod state;

use async_nats::jetstream::stream;

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
