//! The broker's shared plugins on JetStream
//! ([`crate::broker::shared::SharedMeta`]): each plugin's record in the
//! settings bucket ([`super::records`], key `plugin.<name>`, changed by
//! revision), components in the Object Store bucket [`PLUGINS_BUCKET`]
//! under `wasm/<digest>`; and subscriptions' settings
//! ([`crate::broker::shared::SharedSubscriptions`], key `subscription.<name>`).

use super::records::{failed, Records};
use super::ClusterError;
use crate::broker::shared::{
    ListedSubscription, PluginRecord, SharedMeta, SharedSubscriptions, SubscriptionRecord,
    Watermarks,
};
use crate::broker::BrokerError;
use async_nats::jetstream::{self, object_store};
use futures_util::future::BoxFuture;
use tokio::io::AsyncReadExt as _;

/// The Object Store bucket of plugin components.
pub const PLUGINS_BUCKET: &str = "switchyard_plugins";

/// Plugins' records and components on a JetStream cluster.
#[derive(Clone)]
pub struct Meta {
    records: Records,
    objects: object_store::ObjectStore,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta").finish_non_exhaustive()
    }
}

impl Meta {
    /// Plugins in `records`, components in the bucket on the cluster `js`
    /// talks to, with `replicas` copies (made if missing).
    pub(crate) async fn open(
        js: &jetstream::Context,
        records: Records,
        replicas: usize,
    ) -> Result<Self, ClusterError> {
        let objects = js
            .create_object_store(object_store::Config {
                bucket: PLUGINS_BUCKET.to_string(),
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::new("opening the plugins bucket", e))?;
        Ok(Self { records, objects })
    }
}

fn key(name: &str) -> String {
    format!("plugin.{name}")
}

fn object(digest: &str) -> String {
    format!("wasm/{digest}")
}

impl SharedMeta for Meta {
    fn plugin_names(&self) -> BoxFuture<'_, Result<Vec<String>, BrokerError>> {
        Box::pin(self.records.names("plugin."))
    }

    fn plugin<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(PluginRecord, u64)>, BrokerError>> {
        Box::pin(async move { self.records.get(&key(name)).await })
    }

    fn put_plugin<'a>(
        &'a self,
        name: &'a str,
        record: &'a PluginRecord,
        revision: u64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move {
            let stored = self.records.put(&key(name), record, revision).await?;
            Ok(stored.is_some())
        })
    }

    fn delete_plugin<'a>(
        &'a self,
        name: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move { self.records.delete(&key(name), revision).await })
    }

    fn put_component<'a>(
        &'a self,
        digest: &'a str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let name = object(digest);
            // Content-addressed: a component kept before is the same
            // bytes. It is stored again all the same, so that it counts as
            // new and is not collected before the version naming it is
            // recorded (`components`).
            self.objects
                .put(name.as_str(), &mut bytes.as_slice())
                .await
                .map_err(|e| failed("storing a plugin's component", e))?;
            Ok(())
        })
    }

    fn components(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, BrokerError>> {
        Box::pin(async move {
            use futures_util::StreamExt as _;
            let mut listed = self
                .objects
                .list()
                .await
                .map_err(|e| failed("listing plugins' components", e))?;
            let mut all = Vec::new();
            while let Some(info) = listed.next().await {
                let info = info.map_err(|e| failed("listing plugins' components", e))?;
                let Some(digest) = info.name.strip_prefix("wasm/") else {
                    continue;
                };
                if info.deleted {
                    continue;
                }
                let stored = info
                    .modified
                    .map_or(0, |t| super::epoch_ms(t.unix_timestamp_nanos()));
                all.push((digest.to_string(), stored));
            }
            Ok(all)
        })
    }

    fn delete_component<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.objects
                .delete(object(digest))
                .await
                .map_err(|e| failed("removing a plugin's component", e))
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

/// Subscriptions' settings in the settings bucket, key
/// `subscription.<name>`, changed by revision.
#[derive(Clone)]
pub struct Subscriptions {
    records: Records,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions").finish_non_exhaustive()
    }
}

impl Subscriptions {
    pub(crate) fn new(records: Records) -> Self {
        Self { records }
    }
}

/// Where subscriptions' records are kept, by name.
const SUBSCRIPTIONS: &str = "subscription.";

fn subscription_key(name: &str) -> String {
    format!("{SUBSCRIPTIONS}{name}")
}

impl SharedSubscriptions for Subscriptions {
    fn list(&self) -> BoxFuture<'_, Result<Vec<ListedSubscription>, BrokerError>> {
        Box::pin(async move {
            let mut all = self.records.all(SUBSCRIPTIONS).await?;
            all.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(all)
        })
    }

    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(SubscriptionRecord, u64)>, BrokerError>> {
        Box::pin(async move { self.records.get(&subscription_key(name)).await })
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        record: &'a SubscriptionRecord,
        revision: u64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move {
            let stored = self
                .records
                .put(&subscription_key(name), record, revision)
                .await?;
            Ok(stored.is_some())
        })
    }

    fn delete<'a>(
        &'a self,
        name: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move { self.records.delete(&subscription_key(name), revision).await })
    }

    fn put_watermarks<'a>(
        &'a self,
        name: &'a str,
        marks: &'a Watermarks,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { self.records.set(&watermarks_key(name), marks).await })
    }

    fn watermarks(&self) -> BoxFuture<'_, Result<Vec<(String, Watermarks)>, BrokerError>> {
        Box::pin(async move {
            let all = self.records.all(WATERMARKS).await?;
            Ok(all
                .into_iter()
                .map(|(name, marks, _)| (name, marks))
                .collect())
        })
    }

    fn watermarks_of<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Watermarks>, BrokerError>> {
        Box::pin(async move {
            let marks = self.records.get(&watermarks_key(name)).await?;
            Ok(marks.map(|(marks, _)| marks))
        })
    }

    fn delete_watermarks<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { self.records.remove(&watermarks_key(name)).await })
    }
}

/// Where subscriptions' watermarks are kept, by name.
const WATERMARKS: &str = "watermarks.";

fn watermarks_key(name: &str) -> String {
    format!("{WATERMARKS}{name}")
}
