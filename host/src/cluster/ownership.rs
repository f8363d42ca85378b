//! Which host runs which partition (docs/cluster.md, "Mapping"):
//!
//! - **Membership**: each host puts its key in the KV bucket
//!   [`HOSTS_BUCKET`] every beat; the bucket's entries expire after the TTL,
//!   so a host that stops beating (killed, paused, cut off) drops out of
//!   [`Membership::live`] within the TTL.
//! - **Placement**: a unit of work (a subscription's partition) belongs to
//!   the live host that ranks highest for it ([`owner`], rendezvous
//!   hashing): every host computes the same answer from the same member
//!   list, and a host joining or leaving moves only the units it gains or
//!   held.
//! - **Leases** ([`Leases`]): the owner takes the unit's key in
//!   [`LEASES_BUCKET`] by create, then renews it by revision; a lease
//!   nobody renews expires with the TTL. A lease keeps two hosts from doing
//!   the same work most of the time; fencing of commits
//!   ([`super::batch`]) is what keeps a stale owner from doing harm.

use super::ClusterError;
use async_nats::jetstream::{self, kv};
use futures_util::TryStreamExt as _;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::watch;

/// The bucket of live hosts.
pub const HOSTS_BUCKET: &str = "switchyard_hosts";
/// The bucket of partition leases.
pub const LEASES_BUCKET: &str = "switchyard_leases";

/// Timing of membership and leases.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a host's entry (or a lease) lives without a renewal.
    pub ttl: Duration,
    /// How often a host renews its entry.
    pub beat: Duration,
    /// Replicas of the buckets (the cluster's size, up to 5).
    pub replicas: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            beat: Duration::from_secs(2),
            replicas: 3,
        }
    }
}

/// A bucket whose entries expire after `timing.ttl`, made if missing.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    timing: Timing,
) -> Result<kv::Store, ClusterError> {
    js.create_key_value(kv::Config {
        bucket: name.to_string(),
        history: 1,
        max_age: timing.ttl,
        num_replicas: timing.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::new("opening a bucket", e))
}

/// This host's place among the live hosts.
pub struct Membership {
    hosts: kv::Store,
    host: String,
    stop: watch::Sender<bool>,
    beat: Option<tokio::task::JoinHandle<()>>,
}

impl Membership {
    /// Announce `host` and keep announcing it every beat until
    /// [`Membership::leave`] (or the value is dropped, which stops the
    /// beat and lets the entry expire, as a crash would).
    pub async fn join(
        js: &jetstream::Context,
        host: &str,
        timing: Timing,
    ) -> Result<Self, ClusterError> {
        let hosts = bucket(js, HOSTS_BUCKET, timing).await?;
        hosts
            .put(host, host.to_string().into())
            .await
            .map_err(|e| ClusterError::new("announcing the host", e))?;
        let (stop, mut stopped) = watch::channel(false);
        let (beating, name) = (hosts.clone(), host.to_string());
        let beat = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(timing.beat) => {}
                }
                if let Err(error) = beating.put(&name, name.clone().into()).await {
                    tracing::warn!(host = %name, %error, "renewing the host's membership failed");
                }
            }
        });
        Ok(Self {
            hosts,
            host: host.to_string(),
            stop,
            beat: Some(beat),
        })
    }

    /// The live hosts, sorted.
    pub async fn live(&self) -> Result<Vec<String>, ClusterError> {
        let keys = self
            .hosts
            .keys()
            .await
            .map_err(|e| ClusterError::new("listing the hosts", e))?;
        let mut hosts: Vec<String> = keys
            .try_collect()
            .await
            .map_err(|e| ClusterError::new("listing the hosts", e))?;
        hosts.sort();
        Ok(hosts)
    }

    /// This host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Leave at once (a clean stop): the others see it gone without
    /// waiting for the TTL.
    pub async fn leave(mut self) -> Result<(), ClusterError> {
        let _ = self.stop.send(true);
        // A beat in flight must not land after the delete.
        if let Some(beat) = self.beat.take() {
            let _ = beat.await;
        }
        self.hosts
            .delete(&self.host)
            .await
            .map_err(|e| ClusterError::new("leaving", e))
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The host among `hosts` that `unit` belongs to: the one with the highest
/// rank for it (rendezvous hashing over SHA-256, the same on every host and
/// every version). `None` without hosts.
pub fn owner<'a>(hosts: &'a [String], unit: &str) -> Option<&'a str> {
    hosts
        .iter()
        .max_by_key(|host| {
            let digest = Sha256::new()
                .chain_update(host.as_bytes())
                .chain_update([0])
                .chain_update(unit.as_bytes())
                .finalize();
            let mut rank = [0; 8];
            rank.copy_from_slice(&digest[..8]);
            (u64::from_be_bytes(rank), host.as_str())
        })
        .map(String::as_str)
}

/// Leases of units of work, held by one host each.
#[derive(Clone)]
pub struct Leases {
    leases: kv::Store,
    host: String,
}

/// A lease this host holds, at the revision it last wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub revision: u64,
}

impl Leases {
    pub async fn open(
        js: &jetstream::Context,
        host: &str,
        timing: Timing,
    ) -> Result<Self, ClusterError> {
        Ok(Self {
            leases: bucket(js, LEASES_BUCKET, timing).await?,
            host: host.to_string(),
        })
    }

    /// Take `unit`'s lease if nobody holds it: `None` if another host does.
    pub async fn acquire(&self, unit: &str) -> Result<Option<Lease>, ClusterError> {
        match self.leases.create(unit, self.host.clone().into()).await {
            Ok(revision) => Ok(Some(Lease { revision })),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(ClusterError::new("taking a lease", e)),
        }
    }

    /// Renew a lease this host holds: `None` if it was lost meanwhile (it
    /// expired, and maybe another host took it).
    pub async fn renew(&self, unit: &str, lease: Lease) -> Result<Option<Lease>, ClusterError> {
        match self
            .leases
            .update(unit, self.host.clone().into(), lease.revision)
            .await
        {
            Ok(revision) => Ok(Some(Lease { revision })),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(ClusterError::new("renewing a lease", e)),
        }
    }

    /// Give up a lease this host holds at `lease`, so the next owner need
    /// not wait for it to expire. Refused if it changed since (another host
    /// holds it now); either way the caller no longer holds it.
    /// The host holding `unit`'s lease, if any.
    pub async fn holder(&self, unit: &str) -> Result<Option<String>, ClusterError> {
        let value = self
            .leases
            .get(unit)
            .await
            .map_err(|e| ClusterError::new("reading a lease", e))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub async fn release(&self, unit: &str, lease: Lease) -> Result<(), ClusterError> {
        self.leases
            .delete_expect_revision(unit, Some(lease.revision))
            .await
            .map_err(|e| ClusterError::new("giving up a lease", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Every host computes the same owner; units spread over the hosts; a
    /// host leaving moves only the units it held, and one joining takes
    /// units only for itself.
    #[test]
    fn rendezvous_moves_only_what_it_must() {
        let three = hosts(&["a", "b", "c"]);
        let two = hosts(&["a", "c"]);
        let units: Vec<String> = (0..3000).map(|i| format!("sub/t/{i}")).collect();
        let mut per_host = std::collections::HashMap::new();
        for unit in &units {
            let before = owner(&three, unit).expect("an owner");
            let reversed: Vec<String> = three.iter().rev().cloned().collect();
            assert_eq!(
                owner(&reversed, unit),
                Some(before),
                "order does not matter"
            );
            *per_host.entry(before).or_insert(0) += 1;
            let after = owner(&two, unit).expect("an owner");
            if before == "b" {
                assert_ne!(after, "b");
            } else {
                assert_eq!(after, before, "{unit} moved although its owner stayed");
            }
        }
        for host in ["a", "b", "c"] {
            let n = per_host[host];
            assert!((800..1200).contains(&n), "{host} got {n} of 3000");
        }
        assert_eq!(owner(&[], "x"), None);
    }
}
