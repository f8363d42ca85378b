//! Topics: `PUT /v1/topics/{topic}` (create, or confirm an identical one),
//! `GET /v1/topics`, `GET /v1/topics/{topic}`, `DELETE /v1/topics/{topic}`.

use super::body::{self, Reply};
use super::error::{ApiError, ErrorBody};
use super::query::Query;
use super::ApiBody;
use super::{Ctx, MAX_SETTINGS_BYTES};
use crate::broker::{TopicInfo, TopicSpec};
use hyper::{Request, StatusCode};
use serde::Serialize;

/// `{"partitions": 4, "retention_ms": ...}`, every field optional; an empty
/// body takes the defaults. 201 if created, 200 if the topic exists (its
/// retention and dedup window set to these), 409 if it exists with another
/// partition count.
#[utoipa::path(put, path = "/v1/topics/{topic}", tag = "topics", params(("topic" = String, Path, description = "Topic name")),
    request_body(content = Option<TopicSpec>, description = "Settings; an empty body takes the defaults"),
    responses(
        (status = 200, description = "The topic exists; retention and dedup window updated", body = TopicInfo),
        (status = 201, description = "Created", body = TopicInfo),
        (status = 409, description = "It exists with another partition count", body = ErrorBody)))]
pub async fn put(ctx: &Ctx, name: &str, req: Request<ApiBody>) -> Result<Reply, ApiError> {
    let spec: TopicSpec = body::read_optional(req, MAX_SETTINGS_BYTES, "the topic settings body")
        .await?
        .unwrap_or_default();
    let (info, created) = ctx.broker.create_topic(name, spec).await?;
    body::reply(body::created_or_ok(created), ctx.format, &info)
}

#[derive(Serialize, utoipa::ToSchema)]
struct TopicList {
    topics: Vec<TopicInfo>,
}

/// `{"topics": [...]}`.
#[utoipa::path(get, path = "/v1/topics", tag = "topics",
    responses((status = 200, description = "Every topic", body = TopicList)))]
pub async fn list(ctx: &Ctx) -> Result<Reply, ApiError> {
    let topics = ctx.broker.topics().await?;
    body::reply(StatusCode::OK, ctx.format, &TopicList { topics })
}

#[utoipa::path(get, path = "/v1/topics/{topic}", tag = "topics", params(("topic" = String, Path, description = "Topic name")),
    responses((status = 200, description = "The topic with its offsets", body = TopicInfo)))]
pub async fn get(ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    let info = ctx.broker.topic(name).await?;
    body::reply(StatusCode::OK, ctx.format, &info)
}

#[derive(Serialize, utoipa::ToSchema)]
struct TopicDeleted<'a> {
    deleted: &'a str,
    /// Subscriptions deleted with it (`?force=true`).
    subscriptions: Vec<String>,
}

/// Delete a topic with its messages. 409 while a subscription names it,
/// unless `?force=true`, which deletes those subscriptions too.
#[utoipa::path(delete, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = String, Path, description = "Topic name"), ("force" = Option<bool>, Query, description = "Delete the subscriptions that consume it too")),
    responses(
        (status = 200, description = "Deleted with its messages", body = TopicDeleted),
        (status = 409, description = "Subscriptions consume it (named in the message)", body = ErrorBody)))]
pub async fn delete(ctx: &Ctx, name: &str, query: Option<&str>) -> Result<Reply, ApiError> {
    let force = Query::parse(query, &["force"])?.flag("force")?;
    let subscriptions = ctx.broker.delete_topic(name, force).await?;
    body::reply(
        StatusCode::OK,
        ctx.format,
        &TopicDeleted {
            deleted: name,
            subscriptions,
        },
    )
}
