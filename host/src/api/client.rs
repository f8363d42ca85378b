//! A client of the host's HTTP API, on the same hyper stack the host serves
//! with: what the `switchyard` client commands use. `http://` or `https://`
//! (rustls, trusting the webpki roots and an optional CA file). Answers are
//! JSON; an error answer becomes [`ClientError::Api`] with the host's code
//! and message.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::Arc;
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

/// A host's API at a base URL (`http://host:port` or `https://..`), with an
/// optional token. Each call opens its own connection.
pub struct Client {
    base: String,
    host: String,
    port: u16,
    /// `Some` for HTTPS.
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<String>,
}

impl Client {
    /// `ca_pem`: certificates (PEM) to trust besides the webpki roots.
    pub fn new(
        base: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        let bad = |why: &str| {
            ClientError::Transport(format!(
                "--server {base:?}: {why}; use a URL such as http://127.0.0.1:7070"
            ))
        };
        let uri: Uri = base.parse().map_err(|_| bad("not a URL"))?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("http") => (None, 80),
            Some("https") => {
                let config = super::tls::client_config(ca_pem).map_err(ClientError::Transport)?;
                (Some(config), 443)
            }
            _ => return Err(bad("the scheme must be http or https")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(default_port);
        Ok(Self {
            base,
            host,
            port,
            tls,
            token,
        })
    }

    /// A connection to the host, ready for one or more requests.
    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            ClientError::Transport(format!("cannot reach {}: {e}", self.base))
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unreachable(&e))?;
        let _ = tcp.set_nodelay(true);
        macro_rules! handshake {
            ($io:expr) => {{
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new($io))
                    .await
                    .map_err(|e| unreachable(&e))?;
                tokio::spawn(connection);
                sender
            }};
        }
        Ok(match &self.tls {
            None => handshake!(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| unreachable(&e))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(&e))?;
                handshake!(tls)
            }
        })
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
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port))
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
            let mut sender = self.connect().await?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ClientError::Transport(format!("{url}: {}", source_text(&e))))?;
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
        assert!(Client::new("ftp://x", None, None).is_err());
        assert!(Client::new("http://127.0.0.1:7070", None, None).is_ok());
        assert!(Client::new("https://localhost", None, Some(b"not pem")).is_err());
    }
}
