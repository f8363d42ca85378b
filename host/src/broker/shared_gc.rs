//! Collecting what nothing in the cluster names any more (cluster mode,
//! docs/cluster.md, "Collecting leftovers"): journals of no subscription's
//! incarnation (a host died between deleting a subscription's record and
//! its journal, or lost the race to create one) and plugin components no
//! version names (a plugin or version deleted). Each must be older than
//! [`GRACE_MS`] too: a journal is made before the record naming it, and a
//! component is stored (again, if it was kept) before the version naming
//! it is recorded, so what was listed a moment before those records
//! is never taken for a leftover.

use super::shared::{ListedSubscription, SharedBackend};
use super::BrokerError;
use std::collections::HashSet;

/// How old a leftover must be before it goes: far longer than a create
/// or an upload takes between storing it and naming it.
pub const GRACE_MS: u64 = 10 * 60 * 1000;

/// Delete the journals and components nothing names that are older than
/// [`GRACE_MS`] at `now_ms`, given every subscription (`subscriptions`,
/// listed just before); returns how many of each went.
pub async fn collect_leftovers(
    backend: &SharedBackend,
    subscriptions: &[ListedSubscription],
    now_ms: u64,
) -> Result<(usize, usize), BrokerError> {
    let (runners, meta) = (&*backend.runners, &*backend.meta);
    let old = |made_ms: u64| now_ms.saturating_sub(made_ms) > GRACE_MS;
    let named: HashSet<String> = subscriptions
        .iter()
        .map(|(name, record, _)| record.journal(name))
        .collect();
    let mut journals = 0;
    for (journal, made_ms) in runners.journals().await? {
        if !named.contains(&journal) && old(made_ms) {
            runners.delete_journal(&journal).await?;
            tracing::info!(journal, "a journal no subscription names was deleted");
            journals += 1;
        }
    }
    let named = named_components(meta).await?;
    let unnamed: Vec<String> = meta
        .components()
        .await?
        .into_iter()
        .filter(|(digest, stored_ms)| !named.contains(digest) && old(*stored_ms))
        .map(|(digest, _)| digest)
        .collect();
    // Read again after the listing: a version recorded meanwhile names a
    // component that was kept before and stored again since.
    let named = match unnamed.is_empty() {
        true => named,
        false => named_components(meta).await?,
    };
    let mut components = 0;
    for digest in unnamed {
        if !named.contains(&digest) {
            meta.delete_component(&digest).await?;
            tracing::info!(digest, "a component no plugin version names was removed");
            components += 1;
        }
    }
    Ok((journals, components))
}

/// The digests of the components plugin versions name.
async fn named_components(
    meta: &dyn super::shared::SharedMeta,
) -> Result<HashSet<String>, BrokerError> {
    let mut digests = HashSet::new();
    for name in meta.plugin_names().await? {
        if let Some((record, _)) = meta.plugin(&name).await? {
            digests.extend(record.versions.into_iter().map(|v| v.digest));
        }
    }
    Ok(digests)
}
