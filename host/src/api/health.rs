//! `GET /healthz` (the process is up; never needs a token) and `GET /readyz`
//! (the broker is open and serving).

use super::body::{self, Format, Reply};
use super::error::ApiError;
use super::server::State;
use hyper::StatusCode;
use serde::Serialize;

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Health)]
struct Status {
    status: &'static str,
}

/// Always 200 `{"status":"ok"}` while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process serves HTTP", body = Status)))]
pub fn healthz() -> Result<Reply, ApiError> {
    body::reply(StatusCode::OK, Format::Json, &Status { status: "ok" })
}

/// 200 `{"status":"ready"}` once the broker is open, 503 before (and, in
/// cluster mode, while the host is cut off from the NATS cluster).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "The broker is open and serving", body = Status)))]
pub fn readyz(state: &State) -> Result<Reply, ApiError> {
    match state.opened().map(|b| b.reachable()) {
        Some(Ok(())) => body::reply(StatusCode::OK, Format::Json, &Status { status: "ready" }),
        Some(Err(why)) => Ok(ApiError::unavailable(why).into_response()),
        None => Ok(ApiError::unavailable("the broker is still opening").into_response()),
    }
}

/// The host as the caller sees it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Host)]
struct HostOut {
    /// The host's version.
    version: &'static str,
    /// Milliseconds since the host started serving.
    uptime_ms: u64,
    /// The caller's role: `read`, `publish`, `consume` or `admin` (every
    /// caller is admin when the host has no tokens).
    role: &'static str,
    /// Cluster mode: this host's name among the live hosts (subscriptions
    /// name the host running them so).
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
}

#[utoipa::path(get, path = "/v1/host", tag = "host",
    responses((status = 200, description = "Version, uptime and the caller's role", body = HostOut)))]
pub fn host(ctx: &super::Ctx, state: &State, role: super::auth::Role) -> Result<Reply, ApiError> {
    let out = HostOut {
        version: env!("CARGO_PKG_VERSION"),
        uptime_ms: state.started.elapsed().as_millis() as u64,
        role: role.name(),
        host: ctx.broker.host_name(),
    };
    body::reply(StatusCode::OK, ctx.format, &out)
}
