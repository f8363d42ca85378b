//! Server-sent event streams (read role): `GET /v1/topics/{t}/tail?from=latest|earliest`
//! — each new durable message as `event: message` with the JSON of partition
//! reads, its `id:` a cursor to resume from with `Last-Event-ID` — and
//! `GET /v1/subscriptions/{s}/events`, each completed attempt as it happens
//! (`event:` the message's state: `acked`, `retrying`, `dead-lettered`,
//! `failed`). Neither touches any subscription's progress.
//!
//! Each client has a bounded buffer. A tail reads the log only as fast as its
//! client takes events; a client that takes none for [`LAG_LIMIT`] (or, for
//! subscription events, falls a buffer behind) gets `event: lagged` and the
//! stream ends (resume from the last `id:`). Comments keep idle connections
//! open; every stream ends when the host shuts down.

use super::body::Reply;
use super::error::ApiError;
use super::query::Query;
use super::wire::{AttemptOut, MessageOut};
use super::Ctx;
use crate::broker::{Broker, DeliveryEvent, TopicWatch};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{HeaderMap, Response, StatusCode};
use serde::Serialize;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Events buffered per client (the last slot is kept for `event: lagged`).
/// A tail event is at most about 1.4 MiB (a 1 MiB payload as JSON): with the
/// read chunk below, a slow tail client holds at most ~90 MiB, and typically
/// a few KiB.
const CLIENT_BUFFER: usize = 32;
/// Subscription events a watcher may fall behind before it lags.
const EVENTS_BUFFER: usize = 1024;
/// How long a tail waits for its client to take an event before it lags.
const LAG_LIMIT: Duration = Duration::from_secs(10);
/// An idle stream gets a comment this often, so proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Messages read from a partition at a time: no more than the client's
/// buffer, so a slow client holds at most about two buffers of messages.
const READ_CHUNK: usize = CLIENT_BUFFER;

/// `GET /v1/topics/{t}/tail`.
#[utoipa::path(get, path = "/v1/topics/{topic}/tail", tag = "streams",
    params(("topic" = String, Path, description = "Topic name"),
        ("from" = Option<String>, Query, description = "`latest` (default) or `earliest`"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event's cursor")),
    responses((status = 200, description = "Server-sent events: `message` (data: a message as partition reads show it), `lagged`",
        body = String, content_type = "text/event-stream")))]
pub async fn tail(
    ctx: &Ctx,
    topic: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Reply, ApiError> {
    let query = Query::parse(query, &["from"])?;
    let earliest = match query.text("from").unwrap_or("latest") {
        "latest" => false,
        "earliest" => true,
        other => {
            return Err(ApiError::invalid(format!(
                "from must be latest or earliest, not {other:?}"
            )))
        }
    };
    let watch = ctx.broker.watch_topic(topic).await?;
    let cursor = match headers.get("last-event-id") {
        Some(value) => parse_cursor(value.to_str().unwrap_or(""), watch.partitions())?,
        None if earliest => watch.offsets().await?.0,
        None => watch.offsets().await?.1,
    };
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let feed = TailFeed {
        broker: ctx.broker.clone(),
        topic: topic.to_string(),
        watch,
        cursor,
        tx,
        closing: ctx.closing.clone(),
    };
    tokio::spawn(feed.run());
    Ok(stream(rx))
}

/// `GET /v1/subscriptions/{s}/events`.
#[utoipa::path(get, path = "/v1/subscriptions/{name}/events", tag = "streams", params(("name" = String, Path, description = "Subscription name")),
    responses((status = 200, description = "Server-sent events, one per completed attempt, named after the message's state",
        body = String, content_type = "text/event-stream")))]
pub async fn events(ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    // In cluster mode, a subscription running on another host has its
    // stream relayed from there (`forward`): here it runs here, or 503.
    let events = ctx.broker.subscription_events(name)?;
    let (tx, rx) = mpsc::channel(EVENTS_BUFFER);
    tokio::spawn(feed_events(events, tx, ctx.closing.clone()));
    Ok(stream(rx))
}

/// A cursor is the next offset of every partition, comma-separated.
fn parse_cursor(text: &str, partitions: u32) -> Result<Vec<u64>, ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "Last-Event-ID {text:?} is not a cursor of this topic ({partitions} offsets, comma-separated)"
        ))
    };
    let cursor: Vec<u64> = text
        .split(',')
        .map(|o| o.trim().parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if cursor.len() != partitions as usize {
        return Err(bad());
    }
    Ok(cursor)
}

fn cursor_text(cursor: &[u64]) -> String {
    cursor
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One server-sent event.
fn event(name: &str, id: Option<&str>, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    let id = id.map_or(String::new(), |id| format!("id: {id}\n"));
    Bytes::from(format!("{id}event: {name}\ndata: {json}\n\n"))
}

#[derive(Serialize)]
struct Lagged {
    /// Why the stream ends.
    reason: &'static str,
}

/// `event: lagged`, ending a stream relayed from another host that broke
/// off (`why`).
pub(super) fn broken_off(why: &str) -> Bytes {
    let reason =
        format!("the stream from the host running the subscription broke off ({why}); reconnect");
    event("lagged", None, &serde_json::json!({ "reason": reason }))
}

const LAGGED: Lagged = Lagged {
    reason: "the client fell too far behind; reconnect (with Last-Event-ID to resume)",
};

/// Queue an event unless the client's buffer is nearly full; then queue
/// `event: lagged` in the last slot. `false`: the stream is over. (Live
/// subscription events cannot wait for a slow client.)
fn offer(tx: &mpsc::Sender<Bytes>, bytes: Bytes) -> bool {
    if tx.capacity() <= 1 {
        let _ = tx.try_send(event("lagged", None, &LAGGED));
        return false;
    }
    tx.try_send(bytes).is_ok()
}

/// Queue a keep-alive comment if there is room beyond the slot kept for
/// `event: lagged`. `false`: the client is gone.
fn keep_alive(tx: &mpsc::Sender<Bytes>) -> bool {
    if tx.capacity() > 1 {
        let _ = tx.try_send(Bytes::from_static(b": keep-alive\n\n"));
    }
    !tx.is_closed()
}

struct TailFeed {
    broker: Broker,
    topic: String,
    watch: TopicWatch,
    cursor: Vec<u64>,
    tx: mpsc::Sender<Bytes>,
    closing: watch::Receiver<bool>,
}

impl TailFeed {
    async fn run(mut self) {
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.reset();
        loop {
            match self.catch_up().await {
                Some(true) => continue,
                Some(false) => {}
                None => return,
            }
            tokio::select! {
                () = self.watch.changed() => {}
                _ = keepalive.tick() => {
                    if !keep_alive(&self.tx) {
                        return;
                    }
                }
                _ = self.closing.wait_for(|c| *c) => return,
                () = self.tx.closed() => return,
            }
        }
    }

    /// Queue an event once the client's buffer has room (keeping the last
    /// slot for `event: lagged`). `false`: the stream is over — the client
    /// left, lagged for [`LAG_LIMIT`], or the host is shutting down.
    async fn deliver(&mut self, bytes: Bytes) -> bool {
        let room = tokio::time::timeout(LAG_LIMIT, self.tx.reserve_many(2));
        tokio::select! {
            room = room => match room {
                Ok(Ok(mut permits)) => {
                    if let Some(permit) = permits.next() {
                        permit.send(bytes);
                    }
                    true
                }
                Ok(Err(_)) => false,
                Err(_) => {
                    let _ = self.tx.try_send(event("lagged", None, &LAGGED));
                    false
                }
            },
            _ = self.closing.wait_for(|c| *c) => false,
        }
    }

    /// Send what is new. `Some(true)`: sent some (look again), `Some(false)`:
    /// nothing new, `None`: the stream is over.
    async fn catch_up(&mut self) -> Option<bool> {
        let Ok((firsts, heads)) = self.watch.offsets().await else {
            tracing::warn!(topic = %self.topic, "tail: reading the topic's offsets failed");
            return None;
        };
        let mut sent = false;
        for p in 0..heads.len() {
            // Retention may have deleted what the cursor points at.
            self.cursor[p] = self.cursor[p].max(firsts[p]);
            if self.cursor[p] >= heads[p] {
                continue;
            }
            let from = self.cursor[p];
            let read = self
                .broker
                .read(&self.topic, p as u32, from, READ_CHUNK)
                .await;
            let Ok(entries) = read else {
                tracing::warn!(topic = %self.topic, partition = p, "tail: reading the log failed");
                return None;
            };
            for entry in entries {
                self.cursor[p] = entry.offset + 1;
                let id = cursor_text(&self.cursor);
                let data = MessageOut::of(entry, super::body::Format::Json);
                if !self.deliver(event("message", Some(&id), &data)).await {
                    return None;
                }
                sent = true;
            }
        }
        Some(sent)
    }
}

#[derive(Serialize)]
struct EventOut {
    message_id: String,
    topic: String,
    partition: u32,
    offset: u64,
    key: Option<String>,
    state: &'static str,
    attempt: AttemptOut,
}

async fn feed_events(
    mut events: broadcast::Receiver<DeliveryEvent>,
    tx: mpsc::Sender<Bytes>,
    mut closing: watch::Receiver<bool>,
) {
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(e) => {
                    let name = e.state;
                    let data = EventOut {
                        message_id: e.message_id,
                        topic: e.topic,
                        partition: e.partition,
                        offset: e.offset,
                        key: e.key,
                        state: e.state,
                        attempt: e.attempt.into(),
                    };
                    if !offer(&tx, event(name, None, &data)) {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = tx.try_send(event("lagged", None, &LAGGED));
                    return;
                }
                // The subscription was deleted or changed.
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = keepalive.tick() => {
                if !keep_alive(&tx) {
                    return;
                }
            }
            _ = closing.wait_for(|c| *c) => return,
            () = tx.closed() => return,
        }
    }
}

/// A `text/event-stream` response fed by `rx`.
fn stream(rx: mpsc::Receiver<Bytes>) -> Reply {
    let mut response = Response::new(EventStream { rx }.boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

struct EventStream {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_checked() {
        assert_eq!(parse_cursor("3,0,12", 3).unwrap(), vec![3, 0, 12]);
        assert_eq!(cursor_text(&[3, 0, 12]), "3,0,12");
        assert!(parse_cursor("3,0", 3).is_err());
        assert!(parse_cursor("a,b,c", 3).is_err());
    }

    #[test]
    fn events_are_framed_for_event_source() {
        let e = event("message", Some("1,2"), &serde_json::json!({"a": 1}));
        assert_eq!(&e[..], b"id: 1,2\nevent: message\ndata: {\"a\":1}\n\n");
    }
}
