//! A client of the host's HTTP API, on the same hyper stack the host serves
//! with: what the `switchyard` client commands use. Answers are JSON; an
//! error answer becomes [`ClientError::Api`] with the host's code and message.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client as Http};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

/// Longest one call may take (a Python plugin's upload compiles in ~10 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host answered with an error.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The host could not be reached, or the answer was not readable.
    #[error("{0}")]
    Transport(String),
}

/// A host's API at a base URL (`http://host:port`), with an optional token.
pub struct Client {
    base: String,
    token: Option<String>,
    http: Http<HttpConnector, Full<Bytes>>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(ClientError::Transport(format!(
                "--server {base:?}: use an http:// URL such as http://127.0.0.1:7070"
            )));
        }
        let http = Http::builder(TokioExecutor::new()).build_http();
        Ok(Self { base, token, http })
    }

    /// The base URL calls go to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method path` with an optional body (content type, bytes); the answer's
    /// JSON (`Null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header("accept", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let bytes = match body {
            Some((content_type, bytes)) => {
                request = request.header("content-type", content_type);
                bytes
            }
            None => Vec::new(),
        };
        let request = request
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Transport(format!("{url}: {e}")))?;
        let answer = tokio::time::timeout(CALL_TIMEOUT, async {
            let response = self.http.request(request).await.map_err(|e| {
                ClientError::Transport(format!("cannot reach {}: {}", self.base, source_text(&e)))
            })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport(format!("{url}: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((status, body))
        })
        .await
        .map_err(|_| ClientError::Transport(format!("{url}: no answer in {CALL_TIMEOUT:?}")))?;
        let (status, body) = answer?;
        decode(status, &body)
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
        self.call(method, path, Some(("application/json", bytes)))
            .await
    }
}

/// The innermost cause, which names what went wrong (e.g. connection refused).
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

fn decode(status: StatusCode, body: &[u8]) -> Result<Value, ClientError> {
    let value: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ClientError::Transport(format!(
                "the host answered {status} with a body that is not JSON: {e}"
            ))
        })?
    };
    if status.is_success() {
        return Ok(value);
    }
    let text = |field: &str| value["error"][field].as_str().map(str::to_string);
    Err(ClientError::Api {
        status: status.as_u16(),
        code: text("code").unwrap_or_else(|| status.as_str().to_string()),
        message: text("message").unwrap_or_else(|| status.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_carry_the_hosts_code_and_message() {
        let body = br#"{"error": {"code": "not_found", "message": "topic \"t\" does not exist"}}"#;
        match decode(StatusCode::NOT_FOUND, body) {
            Err(ClientError::Api {
                status,
                code,
                message,
            }) => {
                assert_eq!((status, code.as_str()), (404, "not_found"));
                assert!(message.contains("does not exist"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode(StatusCode::OK, b"").unwrap(), Value::Null);
        assert!(matches!(
            decode(StatusCode::OK, b"<html>"),
            Err(ClientError::Transport(_))
        ));
        assert!(Client::new("https://x", None).is_err());
    }
}
