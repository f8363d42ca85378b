//! Cluster mode's storage on NATS JetStream (docs/cluster.md). This is the
//! only module that names NATS.
//!
//! Built so far: the commit primitive everything else rests on, an atomic
//! batch to one stream whose first message is fenced by the sequence its
//! writer expects ([`batch`]), and which host runs what: membership,
//! rendezvous placement and leases ([`ownership`]), and topic partitions
//! as streams ([`log`]).

pub mod batch;
pub mod log;
pub mod ownership;
