//! The delivery-semantics suite on cluster mode: the same tests that run
//! on the embedded store (`semantics.rs`, `exactly_once.rs`), each against
//! a host in cluster mode on its own 3-node JetStream cluster, for the
//! clauses cluster mode claims (docs/cluster.md, "Guarantees"): producer
//! ids (P7), ordering modes and per-key order through retries, traps and
//! dead letters (D3–D6), fan-out and competing consumers (D9), header
//! filters (D11), a deleted subscription starting afresh (D17),
//! at-most-once never delivering twice across kill -9 (D8), and
//! exactly-once effects (D18–D22), wildcard subscriptions following topics
//! created later and across a host restart (D14), pause and resume across
//! a restart (D12), dead letters redriven and purged (D13), and pull
//! consumers (Q1–Q3), retries with backoff and their ledger (D26), retry
//! state and delayed messages across a restart.

use crate::cluster_hosts::host;
use crate::nats::NatsCluster;
use crate::support::Server;
use crate::{core_path, crash, exactly_once, pull, semantics};

/// Run a test body against a host in cluster mode.
fn on_cluster(body: impl FnOnce(&mut Server)) {
    let cluster = NatsCluster::start();
    let mut server = host(&cluster);
    body(&mut server);
}

#[test]
fn publish_with_a_known_id_is_deduplicated() {
    on_cluster(semantics::publish_with_a_known_id_is_deduplicated_on);
}

#[test]
fn partition_and_unordered_modes_deliver_everything_once() {
    on_cluster(|s| semantics::partition_and_unordered_modes_deliver_everything_once_on(s));
}

#[test]
fn fan_out_and_competing_consumers() {
    on_cluster(|s| semantics::fan_out_and_competing_consumers_on(s));
}

#[test]
fn header_filter_skips_other_messages() {
    on_cluster(|s| semantics::header_filter_skips_other_messages_on(s));
}

#[test]
fn deleted_subscription_starts_afresh_when_recreated() {
    on_cluster(|s| semantics::deleted_subscription_starts_afresh_when_recreated_on(s));
}

#[test]
fn runs_of_a_key_keep_its_order_through_retries_traps_and_dead_letters() {
    on_cluster(|s| {
        semantics::runs_of_a_key_keep_its_order_through_retries_traps_and_dead_letters_on(s)
    });
}

#[test]
fn at_most_once_never_delivers_twice() {
    on_cluster(crash::at_most_once_never_delivers_twice_on);
}

#[test]
fn exactly_once_commits_effects_with_the_ack() {
    on_cluster(|s| exactly_once::exactly_once_commits_effects_with_the_ack_on(s));
}

#[test]
fn wildcard_subscriptions_follow_new_topics() {
    on_cluster(semantics::wildcard_subscriptions_follow_new_topics_on);
}

#[test]
fn pause_and_resume() {
    on_cluster(semantics::pause_and_resume_on);
}

#[test]
fn dead_letters_redrive_into_one_subscription_and_purge() {
    on_cluster(|s| semantics::dead_letters_redrive_into_one_subscription_and_purge_on(s));
}

#[test]
fn pull_consumers_keep_key_order_and_lose_nothing() {
    let cluster = NatsCluster::start();
    pull::four_consumers_keep_key_order_and_lose_nothing_on(std::sync::Arc::new(host(&cluster)));
}

#[test]
fn pull_leases_expire_and_settle_per_item() {
    on_cluster(|s| pull::leases_expire_and_settle_per_item_on(s));
}

#[test]
fn flaky_message_succeeds_on_its_third_attempt() {
    on_cluster(|s| core_path::flaky_message_succeeds_on_its_third_attempt_on(s));
}

#[test]
fn retry_state_survives_a_restart() {
    on_cluster(core_path::retry_state_survives_a_restart_on);
}

#[test]
fn delayed_message_waits_even_across_a_restart() {
    on_cluster(core_path::delayed_message_waits_even_across_a_restart_on);
}
