//! Messages: `POST /v1/topics/{topic}/messages` (publish one or a batch) and
//! `GET /v1/topics/{topic}/partitions/{p}/messages?from=&limit=` (read).

use super::body::{self, Format, Reply, MAX_REQUEST_BYTES};
use super::cloudevents::{self, CloudEvent};
use super::error::ApiError;
use super::query::Query;
use super::wire::{MessagesOut, PublishBody, PublishedOut};
use super::ApiBody;
use super::Ctx;
use hyper::{Request, StatusCode};
use serde::Serialize;

/// Messages returned by a read when `limit` is not given.
const DEFAULT_READ_LIMIT: u64 = 100;
/// Most messages one read returns, bounding one response's size and the time
/// it holds a RocksDB iterator; clients page with `next`.
const MAX_READ_LIMIT: u64 = 1000;

#[derive(Serialize, utoipa::ToSchema)]
struct BatchResults {
    results: Vec<PublishedOut>,
}

/// The answer to a publish: one position, or a batch's in order.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum PublishAnswer {
    One(PublishedOut),
    Batch(BatchResults),
}

/// Answers once the messages are durable: the position for a single
/// message, `{"results": [...]}` in order for a batch.
/// CloudEvents (structured, batch or binary mode) are taken as messages too.
/// A W3C `traceparent` header makes the publish part of that trace.
#[utoipa::path(post, path = "/v1/topics/{topic}/messages", tag = "messages",
    params(("topic" = String, Path, description = "Topic name"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context: the publish and the \
            messages' attempts join this trace (else each publish starts one)")),
    request_body(description = "One message or `{\"messages\": [...]}`; or CloudEvents: structured, \
        a batch, or binary mode (any content type with `ce-specversion`, `ce-id`, `ce-source` and \
        `ce-type` headers; the body is the payload)",
        content(
            (PublishBody = "application/json"),
            (PublishBody = "application/msgpack"),
            (CloudEvent = "application/cloudevents+json"),
            (Vec<CloudEvent> = "application/cloudevents-batch+json"))),
    responses(
        (status = 200, description = "Durable: the position of the message, or of each message of a batch in order", body = PublishAnswer)))]
pub async fn publish(ctx: &Ctx, topic: &str, req: Request<ApiBody>) -> Result<Reply, ApiError> {
    let (parts, incoming) = req.into_parts();
    let events = cloudevents::mode(&parts.headers);
    let format = match events {
        Some(_) => Format::Json,
        None => Format::of_request(&parts.headers)?,
    };
    let bytes = body::read(
        incoming,
        &parts.headers,
        MAX_REQUEST_BYTES,
        "the request body",
        body::body_timeout(&parts),
    )
    .await?;
    let (messages, batch) = match events {
        Some(mode) => (
            cloudevents::messages(mode, &parts.headers, bytes.to_vec())?,
            mode == cloudevents::Mode::Batch,
        ),
        None => {
            let publish: PublishBody = body::decode(format, &bytes)?;
            drop(bytes);
            publish.into_messages()?
        }
    };
    let parent = parts
        .headers
        .get(crate::telemetry::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::telemetry::TraceContext::parse);
    let published = ctx.broker.publish_traced(topic, messages, parent).await?;
    if batch {
        let results = published.into_iter().map(PublishedOut::from).collect();
        let answer = PublishAnswer::Batch(BatchResults { results });
        body::reply(StatusCode::OK, ctx.format, &answer)
    } else {
        let one = published
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("the broker returned no position for the message"))?;
        let answer = PublishAnswer::One(PublishedOut::from(one));
        body::reply(StatusCode::OK, ctx.format, &answer)
    }
}

/// `{"messages": [...], "next": <offset after the last one>}`, or with
/// `Accept: application/cloudevents-batch+json` the messages as CloudEvents.
#[utoipa::path(get, path = "/v1/topics/{topic}/partitions/{partition}/messages", tag = "messages",
    params(("topic" = String, Path, description = "Topic name"), ("partition" = u32, Path, description = "Partition number"),
        ("from" = Option<u64>, Query, description = "First offset to read. Default 0"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Most messages returned. Default 100")),
    responses(
        (status = 200, description = "The messages from `from` on, and the offset to ask for next", content(
            (MessagesOut = "application/json"),
            (Vec<CloudEvent> = "application/cloudevents-batch+json")))))]
pub async fn read(
    ctx: &Ctx,
    topic: &str,
    partition: &str,
    query: Option<&str>,
) -> Result<Reply, ApiError> {
    let partition: u32 = partition
        .parse()
        .map_err(|_| ApiError::invalid(format!("partition must be a number, got {partition:?}")))?;
    let query = Query::parse(query, &["from", "limit"])?;
    let from = query.number("from", 0, 0..=u64::MAX)?;
    let limit = query.number("limit", DEFAULT_READ_LIMIT, 1..=MAX_READ_LIMIT)? as usize;
    let entries = ctx.broker.read(topic, partition, from, limit).await?;
    if ctx.events {
        let events = entries
            .iter()
            .map(|e| cloudevents::event(topic, e))
            .collect();
        return cloudevents::batch_reply(events);
    }
    body::reply(
        StatusCode::OK,
        ctx.format,
        &MessagesOut::new(entries, from, ctx.format),
    )
}
