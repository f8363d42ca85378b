//! Which host runs which subscription, on JetStream
//! ([`crate::broker::shared::SharedRunners`]): this host's membership,
//! rendezvous placement over the live hosts and leases
//! ([`super::ownership`]), and subscriptions' journals ([`super::journal`]).

use super::forward;
use super::journal::{self, Journal, JournalError};
use super::ownership::{self, Lease, Leases, Membership, Timing};
use super::records::failed;
use super::ClusterError;
use crate::broker::shared::{
    AnswerStream, Answerer, AppendError, SharedJournal, SharedRunners, StreamAnswerer,
};
use crate::broker::BrokerError;
use futures_util::future::BoxFuture;
use std::time::Duration;

/// This host's part in running subscriptions.
pub struct Runners {
    client: async_nats::Client,
    replicas: usize,
    host: String,
    /// Until this host leaves.
    membership: tokio::sync::Mutex<Option<Membership>>,
    leases: Leases,
    timing: Timing,
}

impl std::fmt::Debug for Runners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runners")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Runners {
    /// Join the live hosts as `host` and open the leases.
    pub(crate) async fn join(
        client: async_nats::Client,
        host: &str,
        timing: Timing,
    ) -> Result<Self, ClusterError> {
        let js = async_nats::jetstream::new(client.clone());
        let membership = Membership::join(&js, host, timing).await?;
        let leases = Leases::open(&js, host, timing).await?;
        Ok(Self {
            client,
            replicas: timing.replicas,
            host: host.to_string(),
            membership: tokio::sync::Mutex::new(Some(membership)),
            leases,
            timing,
        })
    }
}

impl SharedRunners for Runners {
    fn host(&self) -> &str {
        &self.host
    }

    fn beat(&self) -> Duration {
        self.timing.beat
    }

    fn live(&self) -> BoxFuture<'_, Result<Vec<String>, BrokerError>> {
        Box::pin(async move {
            match &*self.membership.lock().await {
                Some(membership) => membership
                    .live()
                    .await
                    .map_err(|e| failed("listing the live hosts", e)),
                None => Err(BrokerError::Unavailable(
                    "this host has left the cluster".to_string(),
                )),
            }
        })
    }

    fn leave(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            match self.membership.lock().await.take() {
                Some(membership) => membership
                    .leave()
                    .await
                    .map_err(|e| failed("leaving the cluster", e)),
                None => Ok(()),
            }
        })
    }

    fn owner(&self, live: &[String], unit: &str) -> Option<String> {
        ownership::owner(live, unit).map(str::to_string)
    }

    fn acquire<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<Option<u64>, BrokerError>> {
        Box::pin(async move {
            let lease = self
                .leases
                .acquire(unit)
                .await
                .map_err(|e| failed("taking a lease", e))?;
            Ok(lease.map(|l| l.revision))
        })
    }

    fn renew<'a>(
        &'a self,
        unit: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, BrokerError>> {
        Box::pin(async move {
            let lease = self
                .leases
                .renew(unit, Lease { revision })
                .await
                .map_err(|e| failed("renewing a lease", e))?;
            Ok(lease.map(|l| l.revision))
        })
    }

    fn release<'a>(
        &'a self,
        unit: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.leases
                .release(unit, Lease { revision })
                .await
                .map_err(|e| failed("giving up a lease", e))
        })
    }

    fn journal<'a>(
        &'a self,
        subscription: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn SharedJournal>, BrokerError>> {
        Box::pin(async move {
            let journal = Journal::open(self.client.clone(), subscription, self.replicas)
                .await
                .map_err(|e| failed("opening a subscription's journal", e))?;
            Ok(Box::new(journal) as Box<dyn SharedJournal>)
        })
    }

    fn delete_journal<'a>(
        &'a self,
        subscription: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            journal::delete(&self.client, subscription)
                .await
                .map_err(|e| failed("deleting a subscription's journal", e))
        })
    }
    fn journals(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, BrokerError>> {
        Box::pin(async move {
            journal::list(&self.client)
                .await
                .map_err(|e| failed("listing the journals", e))
        })
    }

    fn holder<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<Option<String>, BrokerError>> {
        Box::pin(async move {
            self.leases
                .holder(unit)
                .await
                .map_err(|e| failed("reading a lease", e))
        })
    }

    fn ask<'a>(
        &'a self,
        host: &'a str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, BrokerError>> {
        Box::pin(async move {
            forward::ask(&self.client, host, request, timeout)
                .await
                .map_err(|e| BrokerError::Unavailable(e.to_string()))
        })
    }

    fn answer(&self, answerer: Answerer) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            forward::answer(&self.client, &self.host, answerer)
                .await
                .map_err(|e| failed("answering other hosts", e))
        })
    }

    fn ask_stream<'a>(
        &'a self,
        host: &'a str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<AnswerStream, BrokerError>> {
        use futures_util::StreamExt as _;
        Box::pin(async move {
            let pieces = forward::ask_stream(&self.client, host, request, timeout)
                .await
                .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
            Ok(pieces
                .map(|piece| piece.map_err(|e| BrokerError::Unavailable(e.to_string())))
                .boxed())
        })
    }

    fn answer_streams(&self, answerer: StreamAnswerer) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            forward::answer_streams(&self.client, &self.host, answerer)
                .await
                .map_err(|e| failed("streaming answers to other hosts", e))
        })
    }

    fn max_message(&self) -> usize {
        self.client.server_info().max_payload
    }
}

impl SharedJournal for Journal {
    fn replay(&mut self) -> BoxFuture<'_, Result<Vec<Vec<u8>>, BrokerError>> {
        Box::pin(async move {
            let entries = Journal::replay(self)
                .await
                .map_err(|e| failed("replaying a subscription's journal", e))?;
            Ok(entries.into_iter().map(|b| b.to_vec()).collect())
        })
    }

    fn append(&mut self, entries: Vec<Vec<u8>>) -> BoxFuture<'_, Result<(), AppendError>> {
        Box::pin(async move {
            let entries = entries.into_iter().map(bytes::Bytes::from).collect();
            Journal::append(self, entries).await.map_err(appended)
        })
    }

    fn compact(&mut self, entries: Vec<Vec<u8>>) -> BoxFuture<'_, Result<(), AppendError>> {
        Box::pin(async move {
            let entries = entries.into_iter().map(bytes::Bytes::from).collect();
            Journal::compact(self, entries).await.map_err(appended)
        })
    }
}

fn appended(e: JournalError) -> AppendError {
    match e {
        JournalError::Fenced(e) => AppendError::Fenced(e),
        other => AppendError::Failed(other.to_string()),
    }
}
