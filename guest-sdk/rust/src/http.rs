//! Outbound HTTP from inside [`Plugin::handle`](crate::Plugin::handle): a small
//! blocking client over WASI's `wasi:http/outgoing-handler`.
//!
//! ```no_run
//! use switchyard_sdk::http::Request;
//! use switchyard_sdk::{Message, Outcome};
//!
//! fn handle(msg: Message) -> Outcome {
//!     let sent = Request::post("https://api.example.com/orders")
//!         .header("content-type", "application/json")
//!         .body(msg.payload)
//!         .send();
//!     match sent {
//!         Ok(r) if r.is_success() => Outcome::Ack,
//!         Ok(r) => Outcome::retry(format!("status {}", r.status)),
//!         Err(e) if e.is_transient() => Outcome::retry(e.to_string()),
//!         Err(e) => Outcome::dead_letter(e.to_string()),
//!     }
//! }
//! ```
//!
//! What the host enforces (see the subscription's `egress` settings):
//!
//! * Every request is denied ([`ErrorKind::Denied`]) unless the subscription's
//!   `egress.allow` list names its scheme, host and port.
//! * A destination that resolves to a non-public address (loopback, private
//!   networks, link-local, ...) is refused ([`ErrorKind::Prohibited`]) unless the
//!   operator allowed that range.
//! * Each request ends by the attempt's deadline and the egress `timeout_ms`
//!   ([`ErrorKind::Timeout`]); a response body over `max_response_bytes` fails
//!   ([`ErrorKind::BodyTooLarge`]); an attempt makes at most `max_requests`.
//! * The host adds `idempotency-key: {subscription}/{message id}` unless you set
//!   one. It is the same on every attempt of a message: an outbound request is a
//!   side effect outside the atomic commit, and is repeated when an attempt is
//!   retried or re-run after a crash, whatever the delivery guarantee.
//!
//! Outside Switchyard (native builds) [`Request::send`] returns an error of kind
//! [`ErrorKind::Unavailable`].

use std::fmt;
use std::time::Duration;

/// An outbound request, built and then [sent](Request::send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with any method (`GET`, `POST`, `PATCH`, ...).
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` request.
    pub fn put(url: &str) -> Self {
        Self::new("PUT", url)
    }

    /// Add a header (repeat a name to send it several times).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Give up when connecting, waiting for the answer, or waiting between
    /// body chunks takes longer than this, each (the host's own limits —
    /// the attempt's deadline, the egress `timeout_ms` — may cut it shorter).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Send the request and read the whole response. Blocks the attempt
    /// until the response body has ended or the request failed.
    pub fn send(self) -> Result<Response, Error> {
        let url = Url::parse(&self.url)?;
        #[cfg(target_arch = "wasm32")]
        {
            wasi::send(self, url)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = url;
            Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "cannot send {} {}: not running inside Switchyard",
                    self.method, self.url
                ),
            ))
        }
    }
}

/// A response, read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers, in order; names are lowercase.
    pub headers: Vec<(String, String)>,
    /// The whole response body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What kind of failure a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The subscription's `egress.allow` does not name the destination, or the
    /// attempt made `max_requests` requests already (`HTTP-request-denied`).
    Denied,
    /// The destination resolves only to non-public addresses the operator did
    /// not allow (`destination-IP-prohibited`).
    Prohibited,
    /// The URL is not `http(s)://host[:port]/...`.
    InvalidUrl,
    /// No answer in time: connecting, waiting for the response, or reading it.
    Timeout,
    /// The response body is over the subscription's `max_response_bytes`.
    BodyTooLarge,
    /// The name did not resolve.
    Dns,
    /// The connection was refused, reset or closed early.
    Connection,
    /// TLS failed (e.g. the certificate does not match the host).
    Tls,
    /// Anything else the host reported.
    Other,
    /// Not running inside Switchyard (a native build).
    Unavailable,
}

/// A failed request: its kind and the host's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    detail: String,
}

impl Error {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether trying again later may help (a timeout or a connection,
    /// DNS or TLS failure), as opposed to a refusal by the host's rules.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Timeout
                | ErrorKind::Connection
                | ErrorKind::Dns
                | ErrorKind::Tls
                | ErrorKind::Other
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Error {}

/// The parts of a URL a `wasi:http` request takes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    https: bool,
    authority: String,
    path_and_query: String,
}

impl Url {
    fn parse(url: &str) -> Result<Self, Error> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidUrl,
                format!("invalid URL {url:?}: use http(s)://host[:port]/path"),
            )
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let path_and_query = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(Self {
            https,
            authority: authority.to_string(),
            path_and_query,
        })
    }
}

#[cfg(target_arch = "wasm32")]
mod wasi {
    use super::{Error, ErrorKind, Request, Response, Url};
    use crate::bindings::wasi::http::outgoing_handler;
    use crate::bindings::wasi::http::types::{
        ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions,
        Scheme,
    };
    use crate::bindings::wasi::io::streams::StreamError;

    /// Most bytes one `blocking-write-and-flush` may take.
    const WRITE_CHUNK: usize = 4096;
    /// Bytes asked for per body read.
    const READ_CHUNK: u64 = 64 * 1024;

    pub(super) fn send(request: Request, url: Url) -> Result<Response, Error> {
        let headers = Fields::new();
        // The body's length is known: say so, rather than have it sent chunked.
        let has_length = request
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        let method_with_body = matches!(request.method.as_str(), "POST" | "PUT" | "PATCH");
        if !has_length && (method_with_body || !request.body.is_empty()) {
            let length = request.body.len().to_string();
            headers
                .append("content-length", length.as_bytes())
                .map_err(|e| Error::new(ErrorKind::Other, format!("content-length: {e:?}")))?;
        }
        for (name, value) in &request.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| Error::new(ErrorKind::Other, format!("header {name:?}: {e:?}")))?;
        }
        let outgoing = OutgoingRequest::new(headers);
        let method = match request.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_string()),
        };
        let invalid = |what: &str| Error::new(ErrorKind::InvalidUrl, format!("invalid {what}"));
        outgoing
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        let scheme = if url.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        outgoing
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        outgoing
            .set_authority(Some(&url.authority))
            .map_err(|()| invalid("host"))?;
        outgoing
            .set_path_with_query(Some(&url.path_and_query))
            .map_err(|()| invalid("path"))?;
        let options = request.timeout.map(|t| {
            let options = RequestOptions::new();
            let ns = t.as_nanos().min(u64::MAX as u128) as u64;
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
            let _ = options.set_between_bytes_timeout(Some(ns));
            options
        });
        let body = outgoing
            .body()
            .map_err(|()| Error::new(ErrorKind::Other, "the request body is gone"))?;
        let future = outgoing_handler::handle(outgoing, options).map_err(error)?;
        // Write the body while the host sends. If the host refused the
        // request, the write fails: the response below says why.
        let written = (|| {
            let stream = body
                .write()
                .map_err(|()| Error::new(ErrorKind::Other, "cannot write the request body"))?;
            for chunk in request.body.chunks(WRITE_CHUNK) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(stream_error)?;
            }
            drop(stream);
            OutgoingBody::finish(body, None).map_err(error)
        })();
        future.subscribe().block();
        let incoming = match future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(error(code)),
            Some(Err(())) | None => {
                // No response: the failed write, if any, says why.
                written?;
                return Err(Error::new(
                    ErrorKind::Other,
                    "the response was already taken",
                ));
            }
        };
        // A response came (perhaps early, before the whole body was taken):
        // it is the answer, whatever became of the rest of the body.
        let _ = written;
        let status = incoming.status();
        let headers = incoming
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| {
                (
                    n.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let body = incoming
            .consume()
            .map_err(|()| Error::new(ErrorKind::Other, "the response body is gone"))?;
        let mut bytes = Vec::new();
        {
            let stream = body
                .stream()
                .map_err(|()| Error::new(ErrorKind::Other, "cannot read the response body"))?;
            loop {
                match stream.blocking_read(READ_CHUNK) {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(e) => return Err(stream_error(e)),
                }
            }
        }
        drop(IncomingBody::finish(body));
        Ok(Response {
            status,
            headers,
            body: bytes,
        })
    }

    fn stream_error(e: StreamError) -> Error {
        match e {
            StreamError::LastOperationFailed(e) => {
                match crate::bindings::wasi::http::types::http_error_code(&e) {
                    Some(code) => error(code),
                    None => Error::new(ErrorKind::Connection, e.to_debug_string()),
                }
            }
            StreamError::Closed => Error::new(ErrorKind::Connection, "the connection closed"),
        }
    }

    /// The kind of a `wasi:http` error code, with its WIT name as the detail.
    fn error(code: ErrorCode) -> Error {
        let kind = match &code {
            ErrorCode::HttpRequestDenied => ErrorKind::Denied,
            ErrorCode::DestinationIpProhibited => ErrorKind::Prohibited,
            ErrorCode::HttpRequestUriInvalid => ErrorKind::InvalidUrl,
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout
            | ErrorCode::DnsTimeout => ErrorKind::Timeout,
            ErrorCode::HttpResponseBodySize(_) => ErrorKind::BodyTooLarge,
            ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => ErrorKind::Dns,
            ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionTerminated
            | ErrorCode::ConnectionLimitReached
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::HttpResponseIncomplete => ErrorKind::Connection,
            ErrorCode::TlsProtocolError
            | ErrorCode::TlsCertificateError
            | ErrorCode::TlsAlertReceived(_) => ErrorKind::Tls,
            _ => ErrorKind::Other,
        };
        Error::new(kind, format!("{code:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let u = Url::parse("https://api.example.com:8443/v1/x?y=1#frag").unwrap();
        assert!(u.https);
        assert_eq!(u.authority, "api.example.com:8443");
        assert_eq!(u.path_and_query, "/v1/x?y=1");
        let u = Url::parse("http://h?q").unwrap();
        assert_eq!((u.https, u.path_and_query.as_str()), (false, "/?q"));
        assert_eq!(Url::parse("http://[::1]:80").unwrap().authority, "[::1]:80");
        for bad in ["ftp://x", "x.org/a", "https://", "https://u@h/"] {
            assert_eq!(
                Url::parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidUrl,
                "{bad}"
            );
        }
    }

    #[test]
    fn outside_switchyard_sending_says_so() {
        let err = Request::get("https://example.com/").send().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(!err.is_transient());
    }

    #[test]
    fn responses_answer_headers_in_any_case() {
        let r = Response {
            status: 204,
            headers: vec![("retry-after".into(), "3".into())],
            body: Vec::new(),
        };
        assert!(r.is_success());
        assert_eq!(r.header("Retry-After"), Some("3"));
    }
}
