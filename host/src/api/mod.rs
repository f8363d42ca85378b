//! The HTTP API: a hyper (HTTP/1) server with routing, bearer-token auth,
//! JSON and MessagePack bodies, and errors as `{"error":{"code","message"}}`.
//!
//! This is the only module that knows HTTP and body formats. It turns
//! requests into calls on [`crate::broker::Broker`] and broker types into the
//! API's wire shapes ([`wire`]); it holds no state of its own beyond the
//! connections it serves.
//!
//! Architecture invariant: a bad request is answered with a 4xx and a code —
//! never a panic or a dropped connection — and every 5xx is logged once.
//! API boundary: [`Server`] (start / graceful shutdown) and [`Auth`].
//!
//! Routes:
//!
//! ```text
//! GET  /healthz                                   no token
//! GET  /readyz                                    no token; 503 until the broker is open
//! GET  /v1/topics                                 PUT|GET|DELETE /v1/topics/{topic}[?force=true]
//! POST /v1/topics/{topic}/messages                publish role
//! GET  /v1/topics/{topic}/partitions/{p}/messages?from=&limit=
//! GET  /v1/plugins                                PUT|GET /v1/plugins/{name}
//! GET  /v1/subscriptions                          PUT|GET /v1/subscriptions/{name}
//! GET  /v1/subscriptions/{name}/dead-letters?limit=
//! POST /v1/subscriptions/{name}/lease             consume role (pull subscriptions)
//! POST /v1/subscriptions/{name}/settle            consume role
//! GET  /v1/topics/{topic}/tail?from=latest|earliest   server-sent events
//! GET  /v1/subscriptions/{name}/events            server-sent events
//! ```

mod auth;
mod body;
mod client;
mod cloudevents;
mod error;
mod forward;
#[cfg(test)]
mod fuzz;
mod health;
mod leases;
mod messages;
mod metrics;
mod openapi;
mod plugins;
mod query;
mod router;
mod server;
mod streams;
mod subscriptions;
mod tls;
mod topics;
mod ui;
mod wire;

pub use auth::{Auth, Role};
pub use body::MAX_REQUEST_BYTES;
pub use client::{Client, ClientError};
pub use error::ApiError;
pub use server::{HttpLimits, Server, DRAIN_TIMEOUT};
pub use tls::ServerTls;
pub use wire::{decode_message, MAX_BATCH};

use crate::broker::{Broker, BrokerError};
use body::Format;

/// Largest topic or subscription settings body: 1 MiB, far above any real
/// spec (the plugin `config` map included).
const MAX_SETTINGS_BYTES: usize = 1 << 20;

/// A request's body as handlers read it: from a client's connection, or
/// handed over whole by another host (cluster mode, [`forward`]).
type ApiBody = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

/// What a `/v1` handler works with: the open broker and the format to answer in.
struct Ctx {
    broker: Broker,
    format: Format,
    /// The client asked for CloudEvents (`Accept`).
    events: bool,
    /// Turns true when the server starts shutting down (event streams end).
    closing: tokio::sync::watch::Receiver<bool>,
}

/// Run a synchronous broker call (which may touch the disk) off the async
/// worker threads.
async fn blocking<T, F>(call: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, BrokerError> + Send + 'static,
{
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| ApiError::internal(format!("a broker call failed: {e}")))?
        .map_err(ApiError::from)
}
