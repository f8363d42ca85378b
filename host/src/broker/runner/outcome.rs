//! Turning one attempt's outcome into the subscription's state: progress,
//! a retry timer, a dead letter, the ledger and the counters.

use super::{LaneKey, Pending, Runner};
use crate::broker::backoff;
use crate::broker::log::NewMessage;
use crate::broker::progress::Source;
use crate::broker::spec::{DeliveryGuarantee, LedgerMode};
use crate::broker::subscriptions::Shared;
use crate::broker::worker::{JobDone, Release};
use crate::broker::DeliveryEvent;
use crate::runtime::{HttpCall, Invocation, LogLine, Outcome, Publication};
use crate::store::{
    AttemptRecord, DeadLetter, HttpRecord, LedgerEntry, Op, Redrive, RetryState, StoredMessage,
};
use crate::telemetry::{self, TraceContext};
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) enum Verdict {
    Acked,
    Dead(String),
    /// At-most-once: the attempt failed and the message is not retried.
    Dropped(String),
}

impl Verdict {
    /// The message's final state, as the ledger names it.
    fn state(&self) -> &'static str {
        match self {
            Verdict::Acked => "acked",
            Verdict::Dead(_) => "dead-lettered",
            Verdict::Dropped(_) => "failed",
        }
    }
}

/// One attempt as the harness reports it: the message, the attempt, what
/// became of the message after it, and (if it acked) what it published.
#[derive(Debug, Clone)]
pub(crate) struct Traced {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) message: Arc<StoredMessage>,
    pub(crate) attempt: AttemptRecord,
    /// `retrying`, `acked`, `dead-lettered`, `failed` or `kv-conflict`.
    pub(crate) state: &'static str,
    pub(crate) published: Vec<Publication>,
}

impl Traced {
    /// The message's last recorded attempt, and what became of it.
    fn of(
        source: &Source,
        head: &Pending,
        state: &'static str,
        published: Vec<Publication>,
    ) -> Self {
        let attempt = head
            .history
            .last()
            .cloned()
            .expect("an attempt was recorded");
        Self::with_attempt(source, head, attempt, state, published)
    }

    fn with_attempt(
        source: &Source,
        head: &Pending,
        attempt: AttemptRecord,
        state: &'static str,
        published: Vec<Publication>,
    ) -> Self {
        Self {
            topic: source.topic.name.clone(),
            partition: source.partition,
            offset: head.offset,
            message: head.message.clone(),
            attempt,
            state,
            published,
        }
    }
}

impl Runner {
    /// Apply one attempt's outcome: an ack or a final failure finishes the
    /// message; a failure with attempts left schedules its retry; a job that
    /// came back unrun, or an attempt that read a kv key another changed, is
    /// queued again uncounted.
    pub(super) fn complete(&mut self, done: JobDone<LaneKey>) {
        self.count_returned(&done);
        let now = self.now_ms();
        let JobDone {
            lane,
            offset,
            follows,
            last,
            label,
            started_ms,
            invocation,
            released,
            ..
        } = done;
        let Invocation {
            outcome,
            published,
            kv,
            duration,
            logs,
            http,
            context,
            ..
        } = invocation;
        if released.is_none() {
            self.call_us = self.call_us * 0.9 + duration.as_micros() as f64 * 0.1;
        }
        let Some(head) = self.lanes.head_mut(&lane) else {
            return;
        };
        debug_assert_eq!(head.offset, offset);
        if follows {
            // A run's later attempt is counted once it has run.
            head.attempts += 1;
            self.counters.delivered += 1;
            self.shared.delivered.fetch_add(1, AtomicOrdering::Relaxed);
        }
        if let Some(release) = released {
            self.hand_back(lane, release, now);
            return;
        }
        let at_most_once = self.spec.delivery == DeliveryGuarantee::AtMostOnce;
        let conflict = outcome == Outcome::Ack && self.kv.conflicts(&kv.reads);
        if conflict {
            self.shared
                .kv_conflicts
                .fetch_add(1, AtomicOrdering::Relaxed);
        }
        // At-most-once never runs a plugin twice for a message: a conflict
        // fails the attempt (its writes are dropped) instead of re-running it.
        let rerun = conflict && !at_most_once;
        let outcome = if conflict && at_most_once {
            Outcome::Retry {
                reason: "kv conflict: a key it read was changed by another attempt".into(),
                delay_ms: None,
            }
        } else {
            outcome
        };
        let kind = if rerun { "kv-conflict" } else { outcome.kind() };
        self.shared.attempts.observe(kind, duration);
        let attempt = trace_attempt(
            &self.shared.name,
            head,
            (&label, started_ms, context),
            kind,
            duration,
        );
        if let (true, Some(attempt)) = (telemetry::exporting(), &attempt) {
            let commit = telemetry::start(
                "commit",
                telemetry::Kind::Internal,
                Some(attempt),
                SystemTime::now(),
            );
            self.batch.span(commit);
        }
        let record = AttemptRecord {
            attempt: head.attempts,
            started_ms,
            duration_us: duration.as_micros() as u64,
            outcome: kind.to_string(),
            error: if rerun {
                Some("a kv key it read was changed by another attempt; run again".into())
            } else {
                (outcome != Outcome::Ack).then(|| outcome.describe())
            },
            plugin: Some(label),
            logs: ledger_logs(logs),
            http: ledger_http(http),
        };
        if rerun {
            self.rerun_after_conflict(lane, record);
            return;
        }
        if outcome.is_failure() {
            tracing::debug!(subscription = %self.shared.name, plugin = record.plugin.as_deref().unwrap_or_default(), offset, attempt = head.attempts, outcome = %outcome.describe(), "attempt failed");
        }
        head.history.push(record);
        let verdict = match &outcome {
            Outcome::Ack => Verdict::Acked,
            Outcome::DeadLetter(reason) => Verdict::Dead(reason.clone()),
            failed if at_most_once => Verdict::Dropped(failed.describe()),
            failed if head.attempts >= self.spec.retry.max_attempts => Verdict::Dead(format!(
                "gave up after {} attempts; last: {}",
                head.attempts,
                failed.describe()
            )),
            failed => {
                let delay = match failed {
                    Outcome::Retry {
                        delay_ms: Some(d), ..
                    } => *d,
                    _ => {
                        let roll = rand::Rng::random::<f64>(&mut self.rng);
                        backoff::delay_ms(&self.spec.retry, head.attempts, roll)
                    }
                };
                self.schedule_retry(lane, now.saturating_add(delay), now);
                return;
            }
        };
        let (head, next_due) = self.lanes.finish_head(&lane).expect("checked above");
        // Within a run the lane's next message is already with the worker.
        let next_due = next_due.filter(|_| last);
        emit(&self.shared, &self.sources, &head, verdict.state());
        if let Some(trace) = &mut self.trace {
            let outputs = match verdict {
                Verdict::Acked => published.clone(),
                _ => Vec::new(),
            };
            trace.push(Traced::of(
                &self.sources[head.source],
                &head,
                verdict.state(),
                outputs,
            ));
        }
        if matches!(verdict, Verdict::Acked) {
            if let Some(seq) = self.kv.commit(kv.writes, self.batch.ops_mut()) {
                self.batch.kv_committed(seq);
            }
            self.stage_outputs(&head, published, attempt.as_ref());
        }
        self.finish(head, verdict, now);
        if let Some(due) = next_due {
            self.lanes.schedule(lane, due, now);
        }
    }

    /// A job's result is back: fewer messages and (with its last result)
    /// jobs in flight.
    fn count_returned(&mut self, done: &JobDone<LaneKey>) {
        self.in_flight_messages -= 1 + done.unrun;
        if done.last {
            self.in_flight -= 1;
            if let Some(n) = self.kv_starts.get_mut(&done.kv_start) {
                *n -= 1;
                if *n == 0 {
                    self.kv_starts.remove(&done.kv_start);
                }
            }
        }
    }

    /// A job that never reached a consumer: its attempt is uncounted and the
    /// message queued again, at once or (the host had no room) shortly.
    fn hand_back(&mut self, lane: LaneKey, release: Release, now: u64) {
        let Some(head) = self.lanes.head_mut(&lane) else {
            return;
        };
        head.attempts -= 1;
        self.counters.delivered -= 1;
        self.shared.delivered.fetch_sub(1, AtomicOrdering::Relaxed);
        if self.spec.delivery == DeliveryGuarantee::AtMostOnce {
            // Its progress was committed before it was handed out: keep it
            // owed in a redrive record, so a stop before it runs does not
            // lose it (the next dispatch clears the record).
            let source = &self.sources[head.source];
            self.batch
                .push(redrive_op(&self.shared.name, source, head, 0));
            head.redriven = true;
        }
        match release {
            Release::Unused => self.lanes.retry_now(lane),
            Release::HostBusy => self.host_busy(lane, now),
        }
    }

    /// Another attempt changed a kv key this one read: its writes were
    /// computed from a stale value. Run it again, uncounted (the trace still
    /// shows the attempt).
    fn rerun_after_conflict(&mut self, lane: LaneKey, record: AttemptRecord) {
        let Some(head) = self.lanes.head_mut(&lane) else {
            return;
        };
        if let Some(trace) = &mut self.trace {
            let source = &self.sources[head.source];
            trace.push(Traced::with_attempt(
                source,
                head,
                record,
                "kv-conflict",
                Vec::new(),
            ));
        }
        head.attempts -= 1;
        self.lanes.retry_now(lane);
    }

    /// A failed attempt with attempts left: store its retry state (or, for a
    /// redriven message, its redrive record) and a `retrying` ledger entry,
    /// and run it again at `due`.
    fn schedule_retry(&mut self, lane: LaneKey, due: u64, now: u64) {
        let Some(head) = self.lanes.head_mut(&lane) else {
            return;
        };
        head.due_ms = due;
        let name = &self.shared.name;
        let source = &self.sources[head.source];
        if head.redriven {
            self.batch.push(redrive_op(name, source, head, due));
        } else {
            head.persisted_retry = true;
            self.batch.push(Op::PutRetry {
                subscription: name.clone(),
                topic: source.topic.name.clone(),
                partition: source.partition,
                offset: head.offset,
                state: RetryState {
                    attempts: head.attempts,
                    due_ms: due,
                    history: head.history.clone(),
                },
            });
        }
        self.batch.push(Op::PutLedger {
            subscription: name.clone(),
            id: head.message.id.clone(),
            entry: ledger_entry(source, head, "retrying"),
        });
        self.counters.retried += 1;
        emit(&self.shared, &self.sources, head, "retrying");
        if let Some(trace) = &mut self.trace {
            trace.push(Traced::of(source, head, "retrying", Vec::new()));
        }
        self.lanes.schedule(lane, due, now);
    }

    /// A message the host had no room to run: it waits a moment, its
    /// attempt uncounted, and the wait is counted and (now and then) logged.
    fn host_busy(&mut self, lane: LaneKey, now: u64) {
        let waits = self.shared.host_busy.fetch_add(1, AtomicOrdering::Relaxed) + 1;
        if self
            .host_busy_logged_ms
            .is_none_or(|at| now.saturating_sub(at) >= super::HOST_BUSY_LOG_MS)
        {
            self.host_busy_logged_ms = Some(now);
            tracing::warn!(subscription = %self.shared.name, waits, "the host's plugin instance pool is full; messages wait for room (attempts not counted)");
        }
        self.lanes
            .schedule(lane, now + super::HOST_BUSY_RETRY_MS, now);
    }

    /// Record that a message is finished: progress, ledger, dead letter, counters.
    fn finish(&mut self, head: Pending, verdict: Verdict, now: u64) {
        // Shared, not copied: most finished messages write nothing of their own.
        let shared = self.shared.clone();
        let name = &shared.name;
        let state = verdict.state();
        // A message that needed more than one attempt, failed, logged
        // something or made outbound requests gets a ledger entry; with
        // `ledger: all` every one does.
        let clean = matches!(verdict, Verdict::Acked)
            && head.history.len() == 1
            && head.history[0].logs.is_empty()
            && head.history[0].http.is_empty();
        if self.spec.ledger == LedgerMode::All || !clean {
            self.batch.push(Op::PutLedger {
                subscription: name.clone(),
                id: head.message.id.clone(),
                entry: ledger_entry(&self.sources[head.source], &head, state),
            });
        }
        let source = &mut self.sources[head.source];
        let topic = source.topic.clone();
        let topic = &topic.name;
        let partition = source.partition;
        if head.persisted_retry {
            self.batch.push(Op::ClearRetry {
                subscription: name.clone(),
                topic: topic.clone(),
                partition,
                offset: head.offset,
            });
        }
        if head.redriven {
            self.batch.push(Op::ClearRedrive {
                subscription: name.clone(),
                topic: topic.clone(),
                partition,
                offset: head.offset,
            });
        } else if self.spec.delivery != DeliveryGuarantee::AtMostOnce {
            // Under at-most-once the offset was finished before the plugin ran.
            source.finish(head.offset);
        }
        match verdict {
            Verdict::Acked => {
                self.counters.acked += 1;
            }
            Verdict::Dropped(reason) => {
                self.shared.failed.fetch_add(1, AtomicOrdering::Relaxed);
                tracing::warn!(subscription = %name, topic = %topic, partition, offset = head.offset, reason = %reason, "at-most-once delivery failed; message dropped");
            }
            Verdict::Dead(reason) => {
                self.counters.dead_lettered += 1;
                tracing::info!(subscription = %name, topic = %topic, partition, offset = head.offset, reason = %reason, "message dead-lettered");
                self.batch.push(Op::PutDeadLetter {
                    subscription: name.clone(),
                    letter: DeadLetter {
                        topic: topic.clone(),
                        partition,
                        offset: head.offset,
                        message: (*head.message).clone(),
                        reason,
                        dead_at_ms: now,
                        history: head.history,
                    },
                });
            }
        }
    }
}

impl Runner {
    /// Queue an acked attempt's publications for the batch that records the
    /// ack. Under exactly-once they get ids derived from the source message
    /// (`{subscription}/{topic}/{source id}/{index}`), registered for
    /// deduplication, so that no replay of the source can add them twice and
    /// fan-out subscriptions do not collide; otherwise the host assigns ids.
    /// Each publication carries the attempt's trace context on
    /// (`traceparent`), so its own attempts continue the trace.
    fn stage_outputs(
        &mut self,
        head: &Pending,
        published: Vec<Publication>,
        attempt: Option<&TraceContext>,
    ) {
        let topic = &self.sources[head.source].topic.name;
        let derive = self.spec.delivery == DeliveryGuarantee::ExactlyOnce;
        if published.is_empty() {
            return;
        }
        for (index, p) in published.into_iter().enumerate() {
            let id = derive.then(|| output_id(&self.shared.name, topic, &head.message.id, index));
            let mut headers = p.headers;
            if let Some(context) = attempt {
                telemetry::stamp(&mut headers, context, true);
            }
            self.batch.publish(
                p.topic,
                NewMessage {
                    id,
                    key: p.key,
                    payload: p.payload,
                    headers,
                    delay_ms: None,
                },
            );
        }
    }
}

/// The id of an exactly-once output: `{subscription}/{topic}/{source id}/{index}`.
fn output_id(subscription: &str, topic: &str, source: &str, index: usize) -> String {
    use std::fmt::Write as _;
    let mut id = String::with_capacity(subscription.len() + topic.len() + source.len() + 8);
    for part in [subscription, "/", topic, "/", source, "/"] {
        id.push_str(part);
    }
    // Writing to a String does not fail.
    let _ = write!(id, "{index}");
    id
}

/// Record an attempt as a span of its message's trace (from the message's
/// `traceparent`), and give back its context for what it published: `None`
/// for a message without one while nothing is exported (the test harness),
/// so that its runs repeat exactly.
fn trace_attempt(
    subscription: &str,
    head: &Pending,
    (plugin, started_ms, chosen): (&str, u64, Option<TraceContext>),
    outcome: &'static str,
    duration: std::time::Duration,
) -> Option<TraceContext> {
    let exporting = telemetry::exporting();
    if let (false, Some(chosen)) = (exporting, chosen) {
        // Nothing to record: the attempt's context is the one its call took.
        return Some(chosen);
    }
    let parent = telemetry::of_headers(&head.message.headers);
    if parent.is_none() && !exporting {
        return None;
    }
    let started = UNIX_EPOCH + std::time::Duration::from_millis(started_ms);
    let mut span = telemetry::start_as(
        "attempt",
        telemetry::Kind::Consumer,
        parent.as_ref(),
        started,
        chosen.as_ref(),
    );
    let context = *span.context();
    if exporting {
        span.set_text("switchyard.subscription", subscription);
        span.set_text("switchyard.plugin", plugin);
        span.set_text("switchyard.outcome", outcome);
        span.set_text("messaging.message.id", head.message.id.clone());
        span.set_number("switchyard.attempt", u64::from(head.attempts));
        if outcome != "ack" {
            span.fail(outcome);
        }
        span.end_at(started + duration);
    }
    Some(context)
}

/// Tell `GET .../events` watchers, if any, how an attempt ended.
fn emit(shared: &Shared, sources: &[Source], head: &Pending, state: &'static str) {
    if shared.events.receiver_count() == 0 {
        return;
    }
    let Some(attempt) = head.history.last() else {
        return;
    };
    let source = &sources[head.source];
    let _ = shared.events.send(DeliveryEvent {
        message_id: head.message.id.clone(),
        topic: source.topic.name.clone(),
        partition: source.partition,
        offset: head.offset,
        key: head.message.key.clone(),
        state,
        attempt: attempt.clone(),
    });
}

/// Log lines kept per attempt in the ledger, and the longest line kept.
const LEDGER_LOG_LINES: usize = 20;
const LEDGER_LOG_LINE: usize = 1024;

/// An attempt's log lines as the ledger keeps them: `level: text`, at most
/// [`LEDGER_LOG_LINES`] lines of [`LEDGER_LOG_LINE`] bytes.
fn ledger_logs(logs: Vec<LogLine>) -> Vec<String> {
    capped(
        logs,
        LEDGER_LOG_LINES,
        |line| {
            let mut text = format!("{}: {}", line.level.as_str(), line.message);
            if text.len() > LEDGER_LOG_LINE {
                let mut cut = LEDGER_LOG_LINE;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            text
        },
        |more| format!("… {more} more lines not kept"),
    )
}

/// The first `limit` items, each through `keep`, then (if any were left
/// out) one entry made by `rest` from how many.
fn capped<T, U>(
    items: Vec<T>,
    limit: usize,
    keep: impl FnMut(T) -> U,
    rest: impl FnOnce(usize) -> U,
) -> Vec<U> {
    let total = items.len();
    let mut kept: Vec<U> = items.into_iter().take(limit).map(keep).collect();
    if total > limit {
        kept.push(rest(total - limit));
    }
    kept
}

/// Outbound requests kept per attempt in the ledger.
const LEDGER_HTTP_CALLS: usize = 20;

/// An attempt's outbound requests as the ledger keeps them: at most
/// [`LEDGER_HTTP_CALLS`], then one entry counting the rest.
fn ledger_http(calls: Vec<HttpCall>) -> Vec<HttpRecord> {
    capped(
        calls,
        LEDGER_HTTP_CALLS,
        |c| HttpRecord {
            method: c.method,
            target: c.target,
            status: c.status,
            error: c.error,
            duration_us: c.duration.as_micros() as u64,
            response_bytes: c.response_bytes,
        },
        |more| HttpRecord {
            method: String::new(),
            target: String::new(),
            status: None,
            error: Some(format!("… {more} more requests not kept")),
            duration_us: 0,
            response_bytes: 0,
        },
    )
}

/// The redrive record that keeps `head` owed (its progress is not in the
/// partition's watermark), due again at `due_ms`.
fn redrive_op(subscription: &str, source: &Source, head: &Pending, due_ms: u64) -> Op {
    Op::PutRedrive {
        subscription: subscription.to_string(),
        topic: source.topic.name.clone(),
        partition: source.partition,
        offset: head.offset,
        redrive: Redrive {
            message: (*head.message).clone(),
            attempts: head.attempts,
            due_ms,
            history: head.history.clone(),
        },
    }
}

fn ledger_entry(source: &Source, head: &Pending, state: &str) -> LedgerEntry {
    LedgerEntry {
        topic: source.topic.name.clone(),
        partition: source.partition,
        offset: head.offset,
        state: state.to_string(),
        attempts: head.history.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::LogLevel;

    #[test]
    fn the_ledger_keeps_the_first_log_lines_cut_at_a_char_boundary_and_counts_the_rest() {
        let lines = (0..LEDGER_LOG_LINES + 3)
            .map(|i| LogLine {
                level: LogLevel::Info,
                message: if i == 0 {
                    "é".repeat(LEDGER_LOG_LINE)
                } else {
                    format!("line {i}")
                },
            })
            .collect();
        let kept = ledger_logs(lines);
        assert_eq!(kept.len(), LEDGER_LOG_LINES + 1);
        assert!(kept[0].len() <= LEDGER_LOG_LINE && kept[0].starts_with("info: é"));
        assert_eq!(kept[1], "info: line 1");
        assert_eq!(kept[LEDGER_LOG_LINES], "… 3 more lines not kept");
        assert_eq!(capped(vec![1, 2], 2, |n| n, |more| more), vec![1, 2]);
    }
}
