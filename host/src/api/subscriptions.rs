//! Subscriptions: `PUT /v1/subscriptions/{name}` (create or update),
//! `DELETE /v1/subscriptions/{name}`,
//! `GET /v1/subscriptions`, `GET /v1/subscriptions/{name}` (with stats) and
//! `GET /v1/subscriptions/{name}/dead-letters?limit=`,
//! `GET|DELETE /v1/subscriptions/{name}/dead-letters/{id}`,
//! `DELETE /v1/subscriptions/{name}/dead-letters` (purge),
//! `POST /v1/subscriptions/{name}/dead-letters/redrive` (`{"ids": [...]}` or
//! empty for all), `POST /v1/subscriptions/{name}/pause` and `.../resume`,
//! `GET /v1/subscriptions/{name}/kv?prefix=&after=&limit=` (the plugin's state).

use super::body::{self, Format, Reply};
use super::cloudevents::{self, CloudEvent};
use super::error::{ApiError, ErrorBody};
use super::query::Query;
use super::wire::{DeadLetterOut, DeadLettersOut, KvOut, LedgerOut};
use super::ApiBody;
use super::{blocking, Ctx, MAX_SETTINGS_BYTES};
use crate::broker::{SubscriptionInfo, SubscriptionSpec};
use hyper::{Request, StatusCode};
use serde::Serialize;

/// Dead letters listed when `limit` is not given.
const DEFAULT_DEAD_LETTER_LIMIT: u64 = 100;
/// Most dead letters one call lists (each carries its payload and history).
const MAX_DEAD_LETTER_LIMIT: u64 = 1000;

/// The body is a subscription spec; 201 if created, 200 if updated.
#[utoipa::path(put, path = "/v1/subscriptions/{name}", tag = "subscriptions", params(("name" = String, Path, description = "Subscription name")),
    request_body(content(
        (SubscriptionSpec = "application/json"),
        (SubscriptionSpec = "application/msgpack"))),
    responses(
        (status = 200, description = "Updated", body = SubscriptionInfo),
        (status = 201, description = "Created", body = SubscriptionInfo),
        (status = 409, description = "A change that cannot be made to a running subscription", body = ErrorBody)))]
pub async fn put(ctx: &Ctx, name: &str, req: Request<ApiBody>) -> Result<Reply, ApiError> {
    let (parts, incoming) = req.into_parts();
    let format = Format::of_request(&parts.headers)?;
    let bytes = body::read(
        incoming,
        &parts.headers,
        MAX_SETTINGS_BYTES,
        "the subscription body",
        body::body_timeout(&parts),
    )
    .await?;
    let spec: SubscriptionSpec = body::decode(format, &bytes)?;
    let (info, created) = ctx.broker.put_subscription(name, spec).await?;
    body::reply(body::created_or_ok(created), ctx.format, &info)
}

#[derive(Serialize, utoipa::ToSchema)]
struct SubscriptionList {
    subscriptions: Vec<SubscriptionInfo>,
}

/// `{"subscriptions": [...]}`.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions",
    responses((status = 200, description = "Every subscription with its stats", body = SubscriptionList)))]
pub async fn list(ctx: &Ctx, headers: &hyper::HeaderMap) -> Result<Reply, ApiError> {
    let subscriptions = ctx.broker.list_subscriptions().await?;
    if !subscriptions.iter().any(|s| s.state == "elsewhere") {
        return body::reply(
            StatusCode::OK,
            ctx.format,
            &SubscriptionList { subscriptions },
        );
    }
    // Cluster mode: those running on other hosts with their stats, as
    // those hosts tell them.
    let listed = super::forward::infos_from_runners(ctx, headers, subscriptions).await?;
    body::reply(
        StatusCode::OK,
        ctx.format,
        &serde_json::json!({ "subscriptions": listed }),
    )
}

#[utoipa::path(get, path = "/v1/subscriptions/{name}", tag = "subscriptions", params(("name" = String, Path, description = "Subscription name")),
    responses((status = 200, description = "The subscription with its stats", body = SubscriptionInfo)))]
pub async fn get(ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    let info = ctx.broker.get_subscription(name).await?;
    body::reply(StatusCode::OK, ctx.format, &info)
}

/// `{"dead_letters": [...]}`.
#[utoipa::path(get, path = "/v1/subscriptions/{name}/dead-letters", tag = "dead-letters",
    params(("name" = String, Path, description = "Subscription name"), ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Most dead letters listed. Default 100")),
    responses((status = 200, description = "The dead letters, oldest first; as CloudEvents (with \
        `deadletterreason`, `deadlettertime` and `attempts`) if `Accept` asks for them", content(
            (DeadLettersOut = "application/json"),
            (Vec<CloudEvent> = "application/cloudevents-batch+json")))))]
pub async fn dead_letters(ctx: &Ctx, name: &str, query: Option<&str>) -> Result<Reply, ApiError> {
    let query = Query::parse(query, &["limit"])?;
    let limit = query.number(
        "limit",
        DEFAULT_DEAD_LETTER_LIMIT,
        1..=MAX_DEAD_LETTER_LIMIT,
    )? as usize;
    let broker = ctx.broker.clone();
    let name = name.to_owned();
    let letters = blocking(move || broker.dead_letters(&name, limit)).await?;
    if ctx.events {
        let events = letters.into_iter().map(cloudevents::dead_letter_event);
        return cloudevents::batch_reply(events.collect());
    }
    body::reply(
        StatusCode::OK,
        ctx.format,
        &DeadLettersOut::new(letters, ctx.format),
    )
}

/// Kv entries listed when `limit` is not given.
const DEFAULT_KV_LIMIT: u64 = 100;
/// Most kv entries one call lists; clients page with `after=<next>`.
const MAX_KV_LIMIT: u64 = 1000;

/// `{"entries": [{"key", "value" | "value_base64"}], "next": <last key> | null}`:
/// the subscription's kv state, in key order; `next` is set when the page is full.
#[utoipa::path(get, path = "/v1/subscriptions/{name}/kv", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name"),
        ("prefix" = Option<String>, Query, description = "Only keys starting with this"),
        ("after" = Option<String>, Query, description = "List keys after this one (the previous page's `next`)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Most entries listed. Default 100")),
    responses((status = 200, description = "The plugin's kv state in key order", body = KvOut)))]
pub async fn kv(ctx: &Ctx, name: &str, query: Option<&str>) -> Result<Reply, ApiError> {
    let query = Query::parse(query, &["prefix", "after", "limit"])?;
    let limit = query.number("limit", DEFAULT_KV_LIMIT, 1..=MAX_KV_LIMIT)? as usize;
    let prefix = query.text("prefix").unwrap_or_default().to_owned();
    let after = query.text("after").map(str::to_owned);
    let (broker, name) = (ctx.broker.clone(), name.to_owned());
    let entries =
        blocking(move || broker.kv_entries(&name, &prefix, after.as_deref(), limit)).await?;
    body::reply(
        StatusCode::OK,
        ctx.format,
        &KvOut::new(entries, limit, ctx.format),
    )
}

#[utoipa::path(post, path = "/v1/subscriptions/{name}/pause", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    responses((status = 200, description = "Paused: no new deliveries; attempts in flight finish", body = SubscriptionInfo)))]
pub async fn pause(ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    set_paused(ctx, name, true).await
}

#[utoipa::path(post, path = "/v1/subscriptions/{name}/resume", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    responses((status = 200, description = "Delivering again", body = SubscriptionInfo)))]
pub async fn resume(ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    set_paused(ctx, name, false).await
}

/// Pause or resume; answers with the subscription.
async fn set_paused(ctx: &Ctx, name: &str, paused: bool) -> Result<Reply, ApiError> {
    let info = ctx.broker.set_paused(name, paused).await?;
    body::reply(StatusCode::OK, ctx.format, &info)
}

/// One dead letter, by message id.
#[utoipa::path(get, path = "/v1/subscriptions/{name}/dead-letters/{id}", tag = "dead-letters",
    params(("name" = String, Path, description = "Subscription name"), ("id" = String, Path, description = "Message id")),
    responses((status = 200, description = "The dead letter with its attempts, or as a CloudEvent \
        if `Accept` asks for one", content(
            (DeadLetterOut = "application/json"),
            (CloudEvent = "application/cloudevents+json")))))]
pub async fn dead_letter(ctx: &Ctx, name: &str, id: &str) -> Result<Reply, ApiError> {
    let (broker, name, id) = (ctx.broker.clone(), name.to_owned(), id.to_owned());
    let letter = blocking(move || broker.dead_letter(&name, &id)).await?;
    if ctx.events {
        return cloudevents::reply(cloudevents::dead_letter_event(letter));
    }
    body::reply(
        StatusCode::OK,
        ctx.format,
        &DeadLetterOut::new(letter, ctx.format),
    )
}

#[derive(Serialize, utoipa::ToSchema)]
struct Purged {
    purged: usize,
}

#[utoipa::path(delete, path = "/v1/subscriptions/{name}/dead-letters", tag = "dead-letters",
    params(("name" = String, Path, description = "Subscription name")),
    responses((status = 200, description = "Every dead letter deleted", body = Purged)))]
pub async fn purge_all(ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    purge(ctx, name, None).await
}

#[utoipa::path(delete, path = "/v1/subscriptions/{name}/dead-letters/{id}", tag = "dead-letters",
    params(("name" = String, Path, description = "Subscription name"), ("id" = String, Path, description = "Message id")),
    responses((status = 200, description = "The dead letter deleted", body = Purged)))]
pub async fn purge_one(ctx: &Ctx, name: &str, id: &str) -> Result<Reply, ApiError> {
    purge(ctx, name, Some(id)).await
}

/// Delete all dead letters, or the one with message id `id` (404 if none).
async fn purge(ctx: &Ctx, name: &str, id: Option<&str>) -> Result<Reply, ApiError> {
    let ids = id.map(|id| vec![id.to_owned()]);
    let purged = ctx.broker.purge_dead_letters(name, ids).await?;
    if let (Some(id), 0) = (id, purged) {
        return Err(ApiError::not_found(format!(
            "subscription {name:?} has no dead letter {id:?}"
        )));
    }
    body::reply(StatusCode::OK, ctx.format, &Purged { purged })
}

/// Body of a redrive: the message ids to send back, or none for all.
#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    ids: Option<Vec<String>>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Redriven {
    redriven: usize,
}

/// Send dead letters back into this subscription only.
#[utoipa::path(post, path = "/v1/subscriptions/{name}/dead-letters/redrive", tag = "dead-letters", params(("name" = String, Path, description = "Subscription name")),
    request_body(content = Option<RedriveBody>, description = "The ids to send back; an empty body sends all"),
    responses((status = 200, description = "How many were sent back to this subscription", body = Redriven)))]
pub async fn redrive(ctx: &Ctx, name: &str, req: Request<ApiBody>) -> Result<Reply, ApiError> {
    let request: RedriveBody = body::read_optional(req, MAX_SETTINGS_BYTES, "the redrive body")
        .await?
        .unwrap_or_default();
    let redriven = ctx.broker.redrive_dead_letters(name, request.ids).await?;
    body::reply(StatusCode::OK, ctx.format, &Redriven { redriven })
}

/// One message's delivery record: state and every attempt.
#[utoipa::path(get, path = "/v1/subscriptions/{name}/messages/{id}", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name"), ("id" = String, Path, description = "Message id")),
    responses((status = 200, description = "The message's delivery record: state and every attempt", body = LedgerOut)))]
pub async fn ledger(ctx: &Ctx, name: &str, id: &str) -> Result<Reply, ApiError> {
    let (broker, sub, message) = (ctx.broker.clone(), name.to_owned(), id.to_owned());
    let entry = blocking(move || broker.ledger(&sub, &message)).await?;
    body::reply(
        StatusCode::OK,
        ctx.format,
        &LedgerOut::new(id.to_owned(), entry),
    )
}

/// Delete a subscription with its progress, ledger and dead letters.
#[utoipa::path(delete, path = "/v1/subscriptions/{name}", tag = "subscriptions", params(("name" = String, Path, description = "Subscription name")),
    responses((status = 200, description = "Deleted with its progress, ledger and dead letters", body = body::Deleted)))]
pub async fn delete(ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    ctx.broker.delete_subscription(name).await?;
    body::reply(StatusCode::OK, ctx.format, &body::Deleted { deleted: name })
}
