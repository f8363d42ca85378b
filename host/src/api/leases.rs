//! Pull consumers (consume role): `POST /v1/subscriptions/{name}/lease`
//! (`{"max", "lease_ms", "wait_ms"}` → `{"leases": [...]}`, long-polling up to
//! `wait_ms`, at most 20 s) and `POST /v1/subscriptions/{name}/settle`
//! (`{"ack": [ids], "retry": [...], "dead_letter": [...], "extend": [...]}` →
//! a result per item).

use super::body::{self, Reply, ReplyBody};
use super::error::{ApiError, ErrorBody};
use super::wire::{LeaseIn, LeasesOut, SettleIn, SettlesOut, DEFAULT_LEASE_MAX};
use super::ApiBody;
use super::{Ctx, MAX_SETTINGS_BYTES};
use crate::broker::{Broker, MAX_DELAY_MS, MAX_LEASE_BATCH, MAX_WAIT};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::{Request, StatusCode};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Largest settle body: room for a thousand items of each kind with reasons.
const MAX_SETTLE_BYTES: usize = 4 << 20;

#[utoipa::path(post, path = "/v1/subscriptions/{name}/lease", tag = "pull", params(("name" = String, Path, description = "Subscription name")),
    request_body(content = Option<LeaseIn>, description = "An empty body takes the defaults"),
    responses(
        (status = 200, description = "The leased messages (none if `wait_ms` passed first)", body = LeasesOut),
        (status = 409, description = "Not a pull subscription", body = ErrorBody)))]
pub async fn lease(ctx: &Ctx, name: &str, req: Request<ApiBody>) -> Result<Reply, ApiError> {
    let handed_limit = req
        .extensions()
        .get::<super::forward::AnswerLimit>()
        .map(|l| l.0);
    let input: LeaseIn = body::read_optional(req, MAX_SETTINGS_BYTES, "the lease body")
        .await?
        .unwrap_or_default();
    let max = input.max.unwrap_or(DEFAULT_LEASE_MAX);
    if !(1..=MAX_LEASE_BATCH).contains(&max) {
        return Err(ApiError::invalid(format!(
            "max must be between 1 and {MAX_LEASE_BATCH}"
        )));
    }
    let max_lease = crate::broker::MAX_LEASE_MS;
    if input.lease_ms.is_some_and(|l| l == 0 || l > max_lease) {
        return Err(ApiError::invalid(format!(
            "lease_ms must be between 1 and {max_lease}"
        )));
    }
    // Waits longer than 20 s are cut to 20 s, as SQS does.
    let wait = Duration::from_millis(input.wait_ms).min(MAX_WAIT);
    // A shutdown ends the wait with nothing leased.
    let mut closing = ctx.closing.clone();
    let leases = tokio::select! {
        leases = ctx.broker.lease(name, max, input.lease_ms.map(Duration::from_millis), wait) => leases?,
        _ = closing.wait_for(|c| *c) => Vec::new(),
    };
    let out = LeasesOut::new(leases, ctx.format);
    let ids = out.ids();
    let mut reply = body::reply(StatusCode::OK, ctx.format, &out)?;
    // Handed over by another host: leases that would not get back are
    // handed back at once, no attempt counted.
    let size = hyper::body::Body::size_hint(reply.body()).exact();
    if let (Some(limit), Some(size)) = (handed_limit, size) {
        if size as usize > limit {
            ctx.broker.release(name, &ids);
            return Err(super::forward::too_large(size as usize, limit));
        }
    }
    if !ids.is_empty() {
        let (parts, inner) = reply.into_parts();
        let guarded = Handout {
            inner,
            broker: ctx.broker.clone(),
            subscription: name.to_string(),
            ids,
            sent: false,
        };
        reply = Reply::from_parts(parts, http_body_util::BodyExt::boxed_unsync(guarded));
    }
    Ok(reply)
}

#[utoipa::path(post, path = "/v1/subscriptions/{name}/settle", tag = "pull", params(("name" = String, Path, description = "Subscription name")),
    request_body(content = SettleIn),
    responses(
        (status = 200, description = "A result per item, in request order", body = SettlesOut),
        (status = 409, description = "Not a pull subscription", body = ErrorBody)))]
pub async fn settle(ctx: &Ctx, name: &str, req: Request<ApiBody>) -> Result<Reply, ApiError> {
    let input: SettleIn = body::read_optional(req, MAX_SETTLE_BYTES, "the settle body")
        .await?
        .unwrap_or_default();
    if input
        .retry
        .iter()
        .any(|r| r.delay_ms.is_some_and(|d| d > MAX_DELAY_MS))
    {
        return Err(ApiError::invalid(format!(
            "retry.delay_ms must be at most {MAX_DELAY_MS}"
        )));
    }
    let max_lease = crate::broker::MAX_LEASE_MS;
    if input
        .extend
        .iter()
        .any(|e| e.lease_ms == 0 || e.lease_ms > max_lease)
    {
        return Err(ApiError::invalid(format!(
            "extend.lease_ms must be between 1 and {max_lease}"
        )));
    }
    let items = input.items();
    let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
    let results = ctx.broker.settle(name, items)?;
    body::reply(StatusCode::OK, ctx.format, &SettlesOut::new(ids, results))
}

/// A lease response's body: if it is dropped before its bytes were taken
/// for sending (the client went away), its leases go back unused, without
/// counting an attempt.
struct Handout {
    inner: ReplyBody,
    broker: Broker,
    subscription: String,
    ids: Vec<String>,
    sent: bool,
}

impl hyper::body::Body for Handout {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &frame {
            self.sent = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Handout {
    fn drop(&mut self) {
        if !self.sent {
            tracing::info!(subscription = %self.subscription, leases = self.ids.len(), "lease response not delivered; releasing its leases");
            self.broker.release(&self.subscription, &self.ids);
        }
    }
}
