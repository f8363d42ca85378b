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

/// 200 `{"status":"ready"}` once the broker is open, 503 before.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "The broker is open and serving", body = Status)))]
pub fn readyz(state: &State) -> Result<Reply, ApiError> {
    if state.is_ready() {
        body::reply(StatusCode::OK, Format::Json, &Status { status: "ready" })
    } else {
        Ok(ApiError::unavailable("the broker is still opening").into_response())
    }
}
