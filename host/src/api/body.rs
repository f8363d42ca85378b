//! Request and response bodies: size-limited reading, JSON/MessagePack
//! negotiation, decoding and encoding.
//!
//! Request bodies are JSON unless `Content-Type: application/msgpack`;
//! responses are JSON unless `Accept` prefers `application/msgpack`. Errors
//! stay JSON (see [`super::error`]). MessagePack is written with field names
//! (maps, not arrays), so both formats carry the same shape.

use super::error::ApiError;
use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{HeaderMap, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::convert::Infallible;
use std::fmt::Display;
use std::time::Duration;

/// A response body: complete, or streamed (server-sent events).
pub type ReplyBody = UnsyncBoxBody<Bytes, Infallible>;
/// A response.
pub type Reply = Response<ReplyBody>;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> ReplyBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// Largest request body the API reads: 64 MiB, room for a full batch of
/// messages (payloads are capped separately) without letting one request
/// hold an unbounded amount of memory.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

/// After refusing an oversized body, read and discard up to this much more of
/// it so the client sees the 413 instead of a reset connection; beyond it the
/// connection is closed.
const DRAIN_LIMIT: usize = 64 << 20;
/// How long discarding an oversized body may take before the connection is
/// closed instead.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

const JSON: &str = "application/json";
const MSGPACK: &str = "application/msgpack";

/// A body encoding the API speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    MessagePack,
}

impl Format {
    /// The format of a request body, from its `Content-Type` (JSON if absent).
    pub fn of_request(headers: &HeaderMap) -> Result<Format, ApiError> {
        let Some(value) = headers.get(CONTENT_TYPE) else {
            return Ok(Format::Json);
        };
        let value = value.to_str().unwrap_or_default();
        Format::from_media_type(&media_type(value)).ok_or_else(|| {
            ApiError::unsupported_media_type(format!(
                "unsupported Content-Type {value:?}: send {JSON} or {MSGPACK}"
            ))
        })
    }

    /// The format to answer in: MessagePack if `Accept` names it before JSON.
    pub fn for_response(headers: &HeaderMap) -> Format {
        let accept = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for entry in accept {
            let refused = entry.split(';').skip(1).any(|param| {
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                name.trim().eq_ignore_ascii_case("q")
                    && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            if let Some(format) = Format::from_media_type(&media_type(entry)) {
                return format;
            }
        }
        Format::Json
    }

    fn from_media_type(media_type: &str) -> Option<Format> {
        match media_type {
            "application/json" => Some(Format::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Some(Format::MessagePack)
            }
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => JSON,
            Format::MessagePack => MSGPACK,
        }
    }
}

/// `type/subtype` of a header value, lower-cased, without parameters.
fn media_type(value: &str) -> String {
    let essence = value.split(';').next().unwrap_or_default();
    essence.trim().to_ascii_lowercase()
}

/// How long a request's body may go without a byte: what the server set, else
/// [`DEFAULT_BODY_TIMEOUT`].
pub fn body_timeout(parts: &hyper::http::request::Parts) -> Duration {
    parts
        .extensions
        .get::<super::server::BodyTimeout>()
        .map_or(DEFAULT_BODY_TIMEOUT, |t| t.0)
}

/// A body's pause limit when the server set none.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Read a whole body, refusing with 413 as soon as it is known to exceed
/// `limit` (from `Content-Length`, or while reading) — never buffering more —
/// and with 408 when it goes `timeout` without a byte.
pub async fn read<B>(
    body: B,
    headers: &HeaderMap,
    limit: usize,
    what: &str,
    timeout: Duration,
) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Display,
{
    let too_large = || ApiError::too_large(format!("{what} is larger than the {limit}-byte limit"));
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body);
        return Err(too_large());
    }
    let capacity = declared.map_or(0, |n| n as usize);
    let mut buffer = BytesMut::with_capacity(capacity);
    let mut body = body;
    loop {
        let Ok(frame) = tokio::time::timeout(timeout, body.frame()).await else {
            // Dropping the body closes the connection.
            return Err(ApiError::timeout(format!(
                "{what} stopped arriving: no byte for {} s",
                timeout.as_secs_f64()
            )));
        };
        let Some(frame) = frame else { break };
        let frame =
            frame.map_err(|e| ApiError::malformed(format!("cannot read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                drain(body);
                return Err(too_large());
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

/// Discard the rest of a refused body in the background, within limits, so the
/// connection can stay open for the client's next request.
fn drain<B>(mut body: B)
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        let discard = async {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, Bytes::len);
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        };
        // On timeout the body is dropped, which closes the connection.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
    });
}

/// Read a request's body (at most `limit` bytes) and decode it in the format
/// its `Content-Type` names; `None` for an empty or all-blank body.
pub async fn read_optional<T: DeserializeOwned>(
    req: hyper::Request<super::ApiBody>,
    limit: usize,
    what: &str,
) -> Result<Option<T>, ApiError> {
    let (parts, incoming) = req.into_parts();
    let timeout = body_timeout(&parts);
    let bytes = read(incoming, &parts.headers, limit, what, timeout).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    decode(Format::of_request(&parts.headers)?, &bytes).map(Some)
}

/// Decode a request body in `format`; a decoding error is 400 `malformed` and
/// says what is wrong.
pub fn decode<T: DeserializeOwned>(format: Format, bytes: &[u8]) -> Result<T, ApiError> {
    match format {
        Format::Json => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::malformed(format!("malformed JSON body: {e}"))),
        Format::MessagePack => rmp_serde::from_slice(bytes)
            .map_err(|e| ApiError::malformed(format!("malformed MessagePack body: {e}"))),
    }
}

/// Encode `value` as the response body in `format`.
pub fn reply<T: Serialize>(
    status: StatusCode,
    format: Format,
    value: &T,
) -> Result<Reply, ApiError> {
    let bytes = match format {
        Format::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        Format::MessagePack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
    }
    .map_err(|e| ApiError::internal(format!("cannot encode the response: {e}")))?;
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}

/// The answer to a successful DELETE: `{"deleted": "<name>"}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Deleted<'a> {
    pub deleted: &'a str,
}

/// 201 if something was created, else 200.
pub fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Frame;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn check_request(content_type: Option<&'static str>, expected: Result<Format, u16>) {
        let h = headers(content_type.map(|c| ("content-type", c)).as_slice());
        let got = Format::of_request(&h).map_err(|e| e.status.as_u16());
        assert_eq!(got, expected, "{content_type:?}");
    }

    #[test]
    fn request_format_comes_from_content_type() {
        check_request(None, Ok(Format::Json));
        check_request(Some("application/json"), Ok(Format::Json));
        check_request(Some("Application/JSON; charset=utf-8"), Ok(Format::Json));
        check_request(Some("application/msgpack"), Ok(Format::MessagePack));
        check_request(Some("application/x-msgpack"), Ok(Format::MessagePack));
        check_request(Some("application/x-www-form-urlencoded"), Err(415));
        check_request(Some("text/plain"), Err(415));
    }

    fn check_response(accept: &[&'static str], expected: Format) {
        let pairs: Vec<_> = accept.iter().map(|a| ("accept", *a)).collect();
        assert_eq!(
            Format::for_response(&headers(&pairs)),
            expected,
            "{accept:?}"
        );
    }

    #[test]
    fn response_format_comes_from_accept() {
        check_response(&[], Format::Json);
        check_response(&["*/*"], Format::Json);
        check_response(&["application/msgpack"], Format::MessagePack);
        check_response(
            &["text/html, application/msgpack;q=0.9"],
            Format::MessagePack,
        );
        check_response(&["application/json, application/msgpack"], Format::Json);
        check_response(&["application/msgpack;q=0, application/json"], Format::Json);
        check_response(&["text/plain", "application/msgpack"], Format::MessagePack);
    }

    /// A body that arrives in the given chunks.
    struct Chunks(std::collections::VecDeque<&'static [u8]>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let next = self.0.pop_front();
            std::task::Poll::Ready(next.map(|c| Ok(Frame::data(Bytes::from_static(c)))))
        }
    }

    fn chunks(parts: Vec<&'static [u8]>) -> Chunks {
        Chunks(parts.into())
    }

    #[tokio::test]
    async fn bodies_are_limited_while_reading() {
        let body = chunks(vec![b"abc", b"def"]);
        let got = read(body, &HeaderMap::new(), 6, "body", DEFAULT_BODY_TIMEOUT)
            .await
            .expect("fits");
        assert_eq!(&got[..], b"abcdef");

        let body = chunks(vec![b"abc", b"defg"]);
        let err = read(body, &HeaderMap::new(), 6, "body", DEFAULT_BODY_TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);

        let declared = headers(&[("content-length", "1000")]);
        let err = read(
            chunks(vec![b"x"]),
            &declared,
            6,
            "body",
            DEFAULT_BODY_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// A body that sends its first chunk and then nothing, ever.
    struct Stalled(bool);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{")))))
        }
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_is_a_timeout() {
        let pause = Duration::from_millis(50);
        let err = read(Stalled(false), &HeaderMap::new(), 100, "the body", pause)
            .await
            .unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (408, "timeout"));
        assert!(
            err.message.contains("the body stopped arriving"),
            "{}",
            err.message
        );
    }

    #[test]
    fn decoding_errors_are_malformed_and_say_why() {
        let err =
            decode::<crate::broker::TopicSpec>(Format::Json, br#"{"partitions":"x"}"#).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (400, "malformed"));
        assert!(err.message.contains("invalid type"), "{}", err.message);
        let err = decode::<crate::broker::TopicSpec>(Format::MessagePack, b"\xc1").unwrap_err();
        assert_eq!(err.code, "malformed");
    }

    #[tokio::test]
    async fn message_pack_replies_use_field_names() {
        #[derive(Serialize)]
        struct S {
            a: u32,
        }
        let reply = reply(StatusCode::OK, Format::MessagePack, &S { a: 1 }).expect("encodes");
        assert_eq!(reply.headers()["content-type"], MSGPACK);
        let bytes = reply.into_body().collect().await.expect("body").to_bytes();
        // fixmap of one entry, "a", 1 — not the array form rmp-serde defaults to.
        assert_eq!(&bytes[..], b"\x81\xa1a\x01");
    }
}
