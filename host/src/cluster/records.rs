//! Records in the settings bucket [`META_BUCKET`] (topics' settings,
//! plugins' versions), each changed only if it is still at the revision its
//! writer read: create for revision 0, update-by-revision after, delete by
//! revision. A writer that lost a race is told so (`None` or `false`) and
//! reads again.

use super::ClusterError;
use crate::broker::BrokerError;
use async_nats::jetstream::{self, kv};
use futures_util::TryStreamExt as _;
use serde::{de::DeserializeOwned, Serialize};

/// The bucket of topics' settings and plugins' records.
pub const META_BUCKET: &str = "switchyard_meta";

/// The settings bucket's records, MessagePack-encoded.
#[derive(Clone)]
pub(crate) struct Records {
    kv: kv::Store,
}

impl Records {
    /// The bucket on the cluster `js` talks to, with `replicas` copies
    /// (made if missing).
    pub(crate) async fn open(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<Self, ClusterError> {
        let kv = js
            .create_key_value(kv::Config {
                bucket: META_BUCKET.to_string(),
                history: 1,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::new("opening the settings bucket", e))?;
        Ok(Self { kv })
    }

    /// The names after `prefix` of every record whose key starts with it.
    pub(crate) async fn names(&self, prefix: &str) -> Result<Vec<String>, BrokerError> {
        let keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(|e| failed("listing records", e))?
            .try_collect()
            .await
            .map_err(|e| failed("listing records", e))?;
        Ok(keys
            .iter()
            .filter_map(|k| k.strip_prefix(prefix))
            .map(str::to_string)
            .collect())
    }

    /// Every record whose key starts with `prefix`, by the name after it,
    /// with its revision (one deleted since it was listed is skipped).
    pub(crate) async fn all<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T, u64)>, BrokerError> {
        let mut all = Vec::new();
        for name in self.names(prefix).await? {
            if let Some((record, revision)) = self.get(&format!("{prefix}{name}")).await? {
                all.push((name, record, revision));
            }
        }
        Ok(all)
    }

    /// A record and its revision, unless absent or deleted.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64)>, BrokerError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| failed("reading a record", format!("{key}: {e}")))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let record = rmp_serde::from_slice(&entry.value).map_err(|e| {
                    BrokerError::Store(format!("the record {key:?} is corrupt: {e}"))
                })?;
                Ok(Some((record, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Store `record` if the key is still at `revision` (0: it has no
    /// record): its new revision, or `None` if another writer changed it.
    pub(crate) async fn put<T: Serialize>(
        &self,
        key: &str,
        record: &T,
        revision: u64,
    ) -> Result<Option<u64>, BrokerError> {
        let value: bytes::Bytes = rmp_serde::to_vec_named(record)
            .expect("records serialize")
            .into();
        if revision == 0 {
            return match self.kv.create(key, value).await {
                Ok(stored) => Ok(Some(stored)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(failed("storing a record", format!("{key}: {e}"))),
            };
        }
        match self.kv.update(key, value, revision).await {
            Ok(stored) => Ok(Some(stored)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(failed("storing a record", format!("{key}: {e}"))),
        }
    }

    /// Store `record` whatever the key holds (the last writer wins).
    pub(crate) async fn set<T: Serialize>(&self, key: &str, record: &T) -> Result<(), BrokerError> {
        let value: bytes::Bytes = rmp_serde::to_vec_named(record)
            .expect("records serialize")
            .into();
        self.kv
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(|e| failed("storing a record", format!("{key}: {e}")))
    }

    /// Remove a record whatever it holds.
    pub(crate) async fn remove(&self, key: &str) -> Result<(), BrokerError> {
        self.kv
            .delete(key)
            .await
            .map_err(|e| failed("removing a record", format!("{key}: {e}")))
    }

    /// Remove the record if it is still at `revision`; `false` if another
    /// writer changed it since (it owns the key now).
    pub(crate) async fn delete(&self, key: &str, revision: u64) -> Result<bool, BrokerError> {
        let Err(e) = self.kv.delete_expect_revision(key, Some(revision)).await else {
            return Ok(true);
        };
        // Refused if the record changed since; anything else is a failure.
        let now = self
            .kv
            .entry(key)
            .await
            .map_err(|e| failed("reading a record", format!("{key}: {e}")))?;
        match now {
            Some(entry) if entry.revision == revision => {
                Err(failed("removing a record", format!("{key}: {e}")))
            }
            _ => Ok(false),
        }
    }
}

/// A cluster failure, told to callers as unavailability (503): JetStream
/// was unreachable, had no leader or refused; nothing is known to be lost.
pub(crate) fn failed(what: &'static str, error: impl ToString) -> BrokerError {
    BrokerError::Unavailable(ClusterError::new(what, error).to_string())
}
