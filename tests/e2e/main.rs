//! End-to-end tests: each starts the real `switchyard` binary on a free port
//! with a temporary data directory and real wasm plugins, and talks HTTP to it.
//! See tests/README.md for the test tiers.

mod contract;
mod lazyfs;
// Shared with the cluster benchmark, which also reads the nodes' CPU.
#[allow(dead_code)]
#[path = "../../host/benches/common/nats_cluster.rs"]
mod nats;
mod origin;
#[path = "../../host/benches/common/otlp.rs"]
mod otlp;
#[path = "../../host/benches/common/padding.rs"]
mod padding;
mod support;

mod api_errors;
mod authorization;
mod capacity;
mod cli_client;
mod cli_test;
mod cloudevents;
mod cluster;
mod cluster_hosts;
mod cluster_semantics;
mod cluster_subscriptions;
mod config_file;
mod core_path;
mod crash;
mod dashboard;
mod disk_full;
mod egress;
mod exactly_once;
mod examples;
mod metrics;
mod model;
mod new_project;
mod openapi;
mod power_loss;
mod pull;
mod semantics;
mod slow_clients;
mod streams;
mod tls_server;
mod topics;
mod traces;
mod versions;
