//! API errors: an HTTP status, a stable machine-readable `code` and a message
//! for humans, rendered as `{"error":{"code":"...","message":"..."}}`.
//!
//! Errors are always JSON, whatever the request's `Accept`, so every client can
//! read them. [`BrokerError`]s map to statuses here and nowhere else.

use crate::broker::BrokerError;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// An error answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra header to send, e.g. `Allow` on 405 or `WWW-Authenticate` on 401.
    pub header: Option<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    /// 400 `invalid`: well-formed but unacceptable input.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 400 `malformed`: the body could not be decoded.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", message)
    }

    /// 408 `timeout`: the request did not arrive in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "timeout", message)
    }

    /// 413 `too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 405 with the `Allow` header listing what the resource accepts.
    pub fn method_not_allowed(allow: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method not allowed here; allowed: {allow}"),
        )
        .with_header("allow", allow.to_owned())
    }

    /// 415 for a body in a format the API does not speak.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
            .with_header("www-authenticate", "Bearer".to_owned())
    }

    /// 403: the token is valid but its role may not make this call.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.header = Some((name, value));
        self
    }

    /// The JSON response for this error.
    pub fn into_response(self) -> super::body::Reply {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        };
        // Serializing two strings cannot fail; keep a fallback anyway.
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = Response::new(super::body::full(bytes));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some((name, value)) = self.header {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail<'a> {
    /// Stable and machine-readable: `invalid`, `malformed`, `plugin_rejected`
    /// (400), `unauthorized` (401), `forbidden` (403), `not_found` (404),
    /// `method_not_allowed` (405), `timeout` (408), `conflict` (409),
    /// `too_large` (413), `unsupported_media_type` (415), `internal` (500),
    /// `not_implemented` (501), `unavailable` (503), `out_of_disk` (507).
    #[schema(pattern = "^[a-z_]+$")]
    code: &'a str,
    /// For humans: what was wrong, naming the field or resource.
    message: &'a str,
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        let (status, code) = match &e {
            BrokerError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            BrokerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            BrokerError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            BrokerError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            // DESIGN's status list has no 422: a rejected upload is a bad request.
            BrokerError::PluginRejected(_) => (StatusCode::BAD_REQUEST, "plugin_rejected"),
            BrokerError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            BrokerError::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, "out_of_disk"),
            BrokerError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            BrokerError::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
        };
        Self::new(status, code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(error: BrokerError, status: u16, code: &str) {
        let api = ApiError::from(error);
        assert_eq!((api.status.as_u16(), api.code), (status, code), "{api:?}");
    }

    #[test]
    fn broker_errors_map_to_statuses() {
        let m = || "m".to_owned();
        check(BrokerError::Invalid(m()), 400, "invalid");
        check(BrokerError::NotFound(m()), 404, "not_found");
        check(BrokerError::Conflict(m()), 409, "conflict");
        check(BrokerError::TooLarge(m()), 413, "too_large");
        check(BrokerError::PluginRejected(m()), 400, "plugin_rejected");
        check(BrokerError::Unavailable(m()), 503, "unavailable");
        check(BrokerError::NoSpace(m()), 507, "out_of_disk");
        check(BrokerError::Store(m()), 500, "internal");
        check(BrokerError::Unsupported(m()), 501, "not_implemented");
    }

    #[test]
    fn errors_render_as_json_with_headers() {
        let response = ApiError::unauthorized("no token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(response.headers()["content-type"], "application/json");

        let response = ApiError::method_not_allowed("GET, PUT").into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()["allow"], "GET, PUT");
    }

    #[tokio::test]
    async fn error_body_has_code_and_message() {
        use http_body_util::BodyExt;
        let response = ApiError::invalid("bad \"name\"").into_response();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("full body")
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"error": {"code": "invalid", "message": "bad \"name\""}})
        );
    }
}
