//! The broker's shared plugins on JetStream
//! ([`crate::broker::shared::SharedMeta`]): each plugin's record in the KV
//! bucket [`super::topics::META_BUCKET`] (key `plugin.<name>`, changed by
//! create or update-by-revision), components in the Object Store bucket
//! [`PLUGINS_BUCKET`] under `wasm/<digest>`.

use super::topics::META_BUCKET;
use super::ClusterError;
use crate::broker::shared::{PluginRecord, SharedMeta};
use crate::broker::BrokerError;
use async_nats::jetstream::{self, kv, object_store};
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt as _;
use tokio::io::AsyncReadExt as _;

/// The Object Store bucket of plugin components.
pub const PLUGINS_BUCKET: &str = "switchyard_plugins";

/// Plugins' records and components on a JetStream cluster.
#[derive(Clone)]
pub struct Meta {
    kv: kv::Store,
    objects: object_store::ObjectStore,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta").finish_non_exhaustive()
    }
}

impl Meta {
    /// The buckets on the cluster `client` is connected to, with
    /// `replicas` copies (made if missing).
    pub async fn open(client: async_nats::Client, replicas: usize) -> Result<Self, ClusterError> {
        let js = jetstream::new(client);
        let kv = js
            .create_key_value(kv::Config {
                bucket: META_BUCKET.to_string(),
                history: 1,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::new("opening the settings bucket", e))?;
        let objects = js
            .create_object_store(object_store::Config {
                bucket: PLUGINS_BUCKET.to_string(),
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::new("opening the plugins bucket", e))?;
        Ok(Self { kv, objects })
    }
}

fn key(name: &str) -> String {
    format!("plugin.{name}")
}

fn object(digest: &str) -> String {
    format!("wasm/{digest}")
}

fn failed(what: &'static str, error: impl ToString) -> BrokerError {
    BrokerError::Unavailable(ClusterError::new(what, error).to_string())
}

impl SharedMeta for Meta {
    fn plugin_names(&self) -> BoxFuture<'_, Result<Vec<String>, BrokerError>> {
        Box::pin(async move {
            let keys: Vec<String> = self
                .kv
                .keys()
                .await
                .map_err(|e| failed("listing plugins", e))?
                .try_collect()
                .await
                .map_err(|e| failed("listing plugins", e))?;
            Ok(keys
                .iter()
                .filter_map(|k| k.strip_prefix("plugin."))
                .map(str::to_string)
                .collect())
        })
    }

    fn plugin<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(PluginRecord, u64)>, BrokerError>> {
        Box::pin(async move {
            let entry = self
                .kv
                .entry(key(name))
                .await
                .map_err(|e| failed("reading a plugin's record", e))?;
            match entry {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    let record = rmp_serde::from_slice(&entry.value).map_err(|e| {
                        BrokerError::Store(format!("the record of plugin {name:?} is corrupt: {e}"))
                    })?;
                    Ok(Some((record, entry.revision)))
                }
                _ => Ok(None),
            }
        })
    }

    fn put_plugin<'a>(
        &'a self,
        name: &'a str,
        record: &'a PluginRecord,
        revision: u64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move {
            let value: bytes::Bytes = rmp_serde::to_vec_named(record)
                .expect("plugin records serialize")
                .into();
            if revision == 0 {
                return match self.kv.create(key(name), value).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(failed("storing a plugin's record", e)),
                };
            }
            match self.kv.update(key(name), value, revision).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(failed("storing a plugin's record", e)),
            }
        })
    }

    fn delete_plugin<'a>(
        &'a self,
        name: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move {
            match self
                .kv
                .delete_expect_revision(key(name), Some(revision))
                .await
            {
                Ok(()) => Ok(true),
                Err(e) => {
                    // Refused if another host changed it since; anything
                    // else is a failure.
                    let now = self
                        .kv
                        .entry(key(name))
                        .await
                        .map_err(|e| failed("reading a plugin's record", e))?;
                    match now {
                        Some(entry) if entry.revision == revision => {
                            Err(failed("removing a plugin's record", e))
                        }
                        _ => Ok(false),
                    }
                }
            }
        })
    }

    fn put_component<'a>(
        &'a self,
        digest: &'a str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let name = object(digest);
            // Content-addressed: a component kept before is the same bytes.
            if self.objects.info(&name).await.is_ok() {
                return Ok(());
            }
            self.objects
                .put(name.as_str(), &mut bytes.as_slice())
                .await
                .map_err(|e| failed("storing a plugin's component", e))?;
            Ok(())
        })
    }

    fn component<'a>(
        &'a self,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BrokerError>> {
        Box::pin(async move {
            let mut object = match self.objects.get(object(digest)).await {
                Ok(object) => object,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(failed("reading a plugin's component", e)),
            };
            let mut bytes = Vec::new();
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| failed("reading a plugin's component", e))?;
            Ok(Some(bytes))
        })
    }
}
