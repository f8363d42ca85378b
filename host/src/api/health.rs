//! `GET /healthz` (the process is up; never needs a token) and `GET /readyz`
//! (the broker is open and serving).

use super::body::{self, Format, Reply};
use super::error::ApiError;
use super::server::State;
use hyper::StatusCode;
use serde::Serialize;

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// Always 200 `{"status":"ok"}` while the process serves HTTP.
pub fn healthz() -> Result<Reply, ApiError> {
    body::reply(StatusCode::OK, Format::Json, &Status { status: "ok" })
}

/// 200 `{"status":"ready"}` once the broker is open, 503 before.
pub fn readyz(state: &State) -> Result<Reply, ApiError> {
    if state.is_ready() {
        body::reply(StatusCode::OK, Format::Json, &Status { status: "ready" })
    } else {
        Ok(ApiError::unavailable("the broker is still opening").into_response())
    }
}
