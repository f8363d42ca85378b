//! Traces of the message path: W3C Trace Context carried on every message
//! (its `traceparent` header), and spans for publishes, attempts and commits,
//! exported over OTLP/HTTP when an endpoint is configured.
//!
//! This is the only module that names OpenTelemetry. Without an exporter no
//! span is recorded: [`start`] only makes the ids a message carries on.

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, IdGenerator, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The message header that carries a message's trace context.
pub const TRACEPARENT: &str = "traceparent";

/// How often finished spans are sent.
const EXPORT_DELAY: Duration = Duration::from_millis(500);

static EXPORT: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

/// Whether messages carry trace contexts (see [`carry`]).
static CARRY: AtomicBool = AtomicBool::new(true);

/// A W3C trace context: which trace, which span in it, and whether it is
/// sampled (`traceparent: 00-<trace id>-<span id>-<flags>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl TraceContext {
    /// Parse a `traceparent` value; `None` if it is not a valid version-00
    /// context (all-zero ids are invalid).
    pub fn parse(value: &str) -> Option<Self> {
        // `00-` 32 hex digits `-` 16 hex digits `-` 2 hex digits.
        let text = value.trim().as_bytes();
        if text.len() != 55 || &text[..3] != b"00-" || text[35] != b'-' || text[52] != b'-' {
            return None;
        }
        let mut trace_id = [0; 16];
        let mut span_id = [0; 8];
        let mut flags = [0; 1];
        hex(&text[3..35], &mut trace_id)?;
        hex(&text[36..52], &mut span_id)?;
        hex(&text[53..], &mut flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The `traceparent` value.
    pub fn header(&self) -> String {
        let mut out = String::with_capacity(55);
        self.write_header(&mut out);
        out
    }

    /// Append the `traceparent` value to `out`.
    pub fn write_header(&self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        text[35] = b'-';
        text[52] = b'-';
        let hex = |out: &mut [u8], bytes: &[u8]| {
            for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
                pair[0] = DIGITS[usize::from(b >> 4)];
                pair[1] = DIGITS[usize::from(b & 15)];
            }
        };
        hex(&mut text[3..35], &self.trace_id);
        hex(&mut text[36..52], &self.span_id);
        text[53] = b'0';
        text[54] = if self.sampled { b'1' } else { b'0' };
        out.push_str(std::str::from_utf8(&text).expect("hex digits and dashes"));
    }

    /// A new span in `parent`'s trace, or the first span of a new trace.
    pub fn next(parent: Option<&TraceContext>) -> Self {
        let span_id = nonzero(rand::random);
        match parent {
            Some(p) => Self { span_id, ..*p },
            None => Self {
                trace_id: nonzero(rand::random),
                span_id,
                sampled: true,
            },
        }
    }

    fn of(span: &SpanContext) -> Self {
        Self {
            trace_id: span.trace_id().to_bytes(),
            span_id: span.span_id().to_bytes(),
            sampled: span.is_sampled(),
        }
    }

    fn remote(&self) -> Context {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            flags,
            true,
            TraceState::default(),
        ))
    }
}

fn nonzero<const N: usize>(random: impl Fn() -> [u8; N]) -> [u8; N] {
    loop {
        let id = random();
        if id != [0; N] {
            return id;
        }
    }
}

/// Decode lowercase or uppercase hex into `out` (exactly its length).
fn hex(digits: &[u8], out: &mut [u8]) -> Option<()> {
    if digits.len() != out.len() * 2 {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(())
}

/// The trace context a message carries, if its `traceparent` header is
/// valid and the host carries trace contexts at all ([`carrying`]).
pub fn of_headers(headers: &[(String, String)]) -> Option<TraceContext> {
    if !carrying() {
        return None;
    }
    headers
        .iter()
        .find(|(n, _)| n == TRACEPARENT)
        .and_then(|(_, v)| TraceContext::parse(v))
}

/// Give a message the `traceparent` header of `context`: in place of any it
/// has (`replace`, for a plugin's publications, which continue the
/// attempt's trace), or only if it has no valid one (a producer's own
/// context wins).
pub fn stamp(headers: &mut Vec<(String, String)>, context: &TraceContext, replace: bool) {
    match headers.iter_mut().find(|(n, _)| n == TRACEPARENT) {
        Some((_, v)) if replace || TraceContext::parse(v).is_none() => {
            v.clear();
            context.write_header(v);
        }
        Some(_) => {}
        None => headers.push((TRACEPARENT.to_string(), context.header())),
    }
}

/// What a span is to the message path.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Publishing messages.
    Producer,
    /// Handing a message to a consumer.
    Consumer,
    /// Work of the host's own (a commit).
    Internal,
}

/// A span: its context, and the recording if traces are exported.
pub struct Span {
    context: TraceContext,
    recording: Option<opentelemetry_sdk::trace::Span>,
}

impl Span {
    /// The context that messages and child spans carry on.
    pub fn context(&self) -> &TraceContext {
        &self.context
    }

    pub fn set_text(&mut self, key: &'static str, value: impl Into<String>) {
        if let Some(span) = &mut self.recording {
            span.set_attribute(KeyValue::new(key, value.into()));
        }
    }

    pub fn set_number(&mut self, key: &'static str, value: u64) {
        if let Some(span) = &mut self.recording {
            span.set_attribute(KeyValue::new(key, value.min(i64::MAX as u64) as i64));
        }
    }

    /// Mark the span failed, with why.
    pub fn fail(&mut self, why: impl Into<String>) {
        if let Some(span) = &mut self.recording {
            span.set_status(Status::error(why.into()));
        }
    }

    /// End now.
    pub fn end(self) {
        self.end_at(SystemTime::now());
    }

    /// End at `at` (a span recorded after the fact).
    pub fn end_at(self, at: SystemTime) {
        if let Some(mut span) = self.recording {
            span.end_with_timestamp(at);
        }
    }
}

/// Whether the host starts and continues trace contexts on messages (the
/// default). Set once at start, before any message moves.
pub fn carry(on: bool) {
    CARRY.store(on, Ordering::Relaxed);
}

/// See [`carry`].
pub fn carrying() -> bool {
    CARRY.load(Ordering::Relaxed)
}

/// Whether spans are exported (else [`start`] records nothing).
pub fn exporting() -> bool {
    EXPORT.get().is_some()
}

/// Start a span named `name` at `at`, a child of `parent` (a new trace if
/// `None`).
pub fn start(
    name: &'static str,
    kind: Kind,
    parent: Option<&TraceContext>,
    at: SystemTime,
) -> Span {
    start_as(name, kind, parent, at, None)
}

/// [`start`], with the span id already chosen (`chosen`, a
/// [`TraceContext::next`] of `parent`) because the span's context was
/// handed on before the span is recorded: an attempt's, to the plugin's
/// outbound requests.
pub fn start_as(
    name: &'static str,
    kind: Kind,
    parent: Option<&TraceContext>,
    at: SystemTime,
    chosen: Option<&TraceContext>,
) -> Span {
    let Some((_, tracer)) = EXPORT.get() else {
        return Span {
            context: chosen
                .copied()
                .unwrap_or_else(|| TraceContext::next(parent)),
            recording: None,
        };
    };
    if let Some(chosen) = chosen {
        CHOSEN.set(Some(chosen.span_id));
    }
    let parent_cx = parent.map_or_else(Context::new, TraceContext::remote);
    let kind = match kind {
        Kind::Producer => SpanKind::Producer,
        Kind::Consumer => SpanKind::Consumer,
        Kind::Internal => SpanKind::Internal,
    };
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_start_time(at)
        .start_with_context(tracer, &parent_cx);
    CHOSEN.set(None);
    Span {
        context: TraceContext::of(span.span_context()),
        recording: Some(span),
    }
}

thread_local! {
    /// The id the next span started on this thread takes (see [`start_as`]).
    static CHOSEN: std::cell::Cell<Option<[u8; 8]>> = const { std::cell::Cell::new(None) };
}

/// Random ids, except a span id chosen beforehand ([`start_as`]).
#[derive(Debug)]
struct Ids;

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        TraceId::from_bytes(nonzero(rand::random))
    }

    fn new_span_id(&self) -> SpanId {
        SpanId::from_bytes(CHOSEN.take().unwrap_or_else(|| nonzero(rand::random)))
    }
}

/// Export spans to `endpoint` from now on. Call it once, inside a Tokio
/// runtime (the exporter sends from a task). A URL without a path gets
/// the OTLP/HTTP traces path `/v1/traces`.
pub fn export(endpoint: &str) -> Result<(), String> {
    let url = match endpoint.trim_end_matches('/') {
        base if base.matches('/').count() <= 2 => format!("{base}/v1/traces"),
        _ => endpoint.to_string(),
    };
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(EXPORT_DELAY)
        .build();
    let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_batch_config(batch)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_id_generator(Ids)
        .with_span_processor(processor)
        .with_resource(Resource::builder().with_service_name("switchyard").build())
        .build();
    let tracer = provider.tracer("switchyard");
    EXPORT
        .set((provider, tracer))
        .map_err(|_| "traces are already exported".to_string())?;
    tracing::info!(endpoint = %url, "exporting traces over OTLP/HTTP");
    Ok(())
}

/// Send what is still buffered and stop exporting (at shutdown).
pub fn flush() {
    if let Some((provider, _)) = EXPORT.get() {
        if let Err(e) = provider.force_flush() {
            tracing::warn!(error = %e, "flushing traces failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_refuses_what_is_not_one() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(text).expect("valid");
        assert_eq!(ctx.header(), text);
        assert!(ctx.sampled);
        let unsampled = TraceContext::parse(&text.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.sampled);
        let upper = TraceContext::parse(&format!(" {} ", text.to_uppercase())).expect("valid");
        assert_eq!(upper, ctx, "upper case and surrounding spaces");
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn without_an_exporter_spans_only_make_ids() {
        let parent = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        let child = start("attempt", Kind::Consumer, Some(&parent), SystemTime::now());
        assert_eq!(child.context().trace_id, parent.trace_id);
        assert_ne!(child.context().span_id, parent.span_id);
        assert!(child.recording.is_none());
        let root = start("publish", Kind::Producer, None, SystemTime::now());
        assert_ne!(root.context().trace_id, parent.trace_id);
        let again = TraceContext::parse(&root.context().header()).expect("its own header parses");
        assert_eq!(&again, root.context());
    }
}
