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
use std::sync::atomic::{AtomicU64, Ordering};
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
    ) -> Result<hyper::client::conn::http1::SendRequest<RequestBody>, ClientError> {
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
        let (content_type, bytes) = match body {
            Some((content_type, bytes)) => (Some(content_type), bytes),
            None => (None, Vec::new()),
        };
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| ("content-type", c))
            .into_iter()
            .collect();
        let body = Full::new(Bytes::from(bytes)).boxed_unsync();
        let (status, _, answer) = self.exchange(method, path, &headers, body).await?;
        decode(status, &answer)
    }

    /// Send `bytes` (of `content_type`) with `method path`, counting in
    /// `sent` the bytes handed to the connection as they go; the answer's JSON.
    pub async fn upload(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
        sent: Arc<AtomicU64>,
    ) -> Result<Value, ClientError> {
        let body = Counted {
            rest: Bytes::from(bytes),
            sent,
        };
        let headers = [("content-type", content_type)];
        let (status, _, answer) = self
            .exchange(method, path, &headers, body.boxed_unsync())
            .await?;
        decode(status, &answer)
    }

    /// One request with extra headers and any body; the answer's status,
    /// headers and body as they came, whatever the status.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: RequestBody,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port));
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
        {
            request = request.header("accept", "application/json");
        }
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(body)
            .map_err(|e| ClientError::Transport(format!("{url}: {e}")))?;
        tokio::time::timeout(CALL_TIMEOUT, async {
            let mut sender = self.connect().await?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ClientError::Transport(format!("{url}: {}", source_text(&e))))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ClientError::Transport(format!("{url}: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((parts.status, parts.headers, body))
        })
        .await
        .map_err(|_| ClientError::Transport(format!("{url}: no answer in {CALL_TIMEOUT:?}")))?
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

/// A request body.
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// Bytes sent in pieces of this size, so progress can be counted.
const UPLOAD_CHUNK: usize = 256 << 10;

/// A body that counts what the connection has taken of it.
struct Counted {
    rest: Bytes,
    sent: Arc<AtomicU64>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.rest.len().min(UPLOAD_CHUNK);
        let chunk = self.rest.split_to(n);
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
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
