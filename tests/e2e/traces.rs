//! Traces across the message path: a host with `--otlp-endpoint` exports,
//! to an OTLP/HTTP receiver the test runs on 127.0.0.1, the spans of one
//! message — publish (a child of the producer's `traceparent`), the
//! forwarder's attempt and commit, and the forwarded message's attempt in
//! the next subscription — all in the producer's trace.

use crate::support::{msg, wait_for, Body, Server};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";

/// One exported span, as the test looks at it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace: String,
    span: String,
    parent: String,
    attributes: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Publish one message to `topic` with the producer's `traceparent`
/// (trace [`TRACE`], span [`PRODUCER_SPAN`]) on the request.
fn publish_in_trace(s: &Server, topic: &str, payload: &str) {
    let traceparent = format!("00-{TRACE}-{PRODUCER_SPAN}-01");
    let (status, _, answer) = s.send(
        "POST",
        &format!("/v1/topics/{topic}/messages"),
        None,
        &[("traceparent", &traceparent)],
        Body::Json(msg("k", payload)),
    );
    assert_eq!(status, 200, "{answer}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver that keeps the spans it is sent.
fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let endpoint = crate::otlp::receive(move |body| {
        let Ok(request) = ExportTraceServiceRequest::decode(body.as_slice()) else {
            return;
        };
        let mut kept = kept.lock().unwrap();
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                            (kv.key.clone(), format!("{value:?}"))
                        })
                        .collect();
                    kept.push(Received {
                        name: span.name,
                        trace: hex(&span.trace_id),
                        span: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        attributes,
                    });
                }
            }
        }
    });
    (endpoint, spans)
}

#[test]
fn one_message_is_one_trace_from_publish_through_a_forward() {
    let (endpoint, spans) = receiver();
    let s = Server::start_args(&["--otlp-endpoint", &endpoint]);
    s.topic("orders", 1);
    s.topic("orders.out", 1);
    s.deploy("forwarder", "forwarder");
    s.deploy("noop", "noop");
    s.subscribe("fwd", json!({"topic": "orders", "plugin": "forwarder"}));
    s.subscribe("sink", json!({"topic": "orders.out", "plugin": "noop"}));
    publish_in_trace(&s, "orders", "hello");
    s.wait_stats("sink", Duration::from_secs(60), |st| st["acked"] == 1);

    let all = wait_for(Duration::from_secs(60), "the spans", || {
        let all = spans.lock().unwrap().clone();
        let attempts = all.iter().filter(|s| s.name == "attempt").count();
        let commits = all.iter().filter(|s| s.name == "commit").count();
        (attempts >= 2 && commits >= 2).then_some(all)
    });
    let in_trace: Vec<&Received> = all.iter().filter(|s| s.trace == TRACE).collect();
    let one = |name: &str, subscription: Option<&str>| -> &Received {
        in_trace
            .iter()
            .find(|s| {
                s.name == name
                    && subscription.is_none_or(|sub| {
                        s.attribute("switchyard.subscription")
                            .is_some_and(|v| v.contains(sub))
                    })
            })
            .unwrap_or_else(|| panic!("no {name} span of {subscription:?} in the trace: {all:#?}"))
    };
    let publish = one("publish", None);
    assert_eq!(
        publish.parent, PRODUCER_SPAN,
        "the producer's span is the parent"
    );
    let forward = one("attempt", Some("fwd"));
    assert_eq!(forward.parent, publish.span, "{forward:?}");
    assert!(forward
        .attribute("switchyard.outcome")
        .is_some_and(|o| o.contains("ack")));
    assert!(forward
        .attribute("switchyard.plugin")
        .is_some_and(|p| p.contains("forwarder@1")));
    let commit = in_trace
        .iter()
        .find(|s| s.name == "commit" && s.parent == forward.span)
        .unwrap_or_else(|| panic!("no commit under the forward: {all:#?}"));
    assert_eq!(commit.trace, TRACE);
    let sink = one("attempt", Some("sink"));
    assert_eq!(
        sink.parent, forward.span,
        "the forwarded message continues the trace"
    );

    // The forwarded message carries the forward's context on.
    let out = s.read_all("orders.out");
    assert_eq!(
        out[0]["headers"]["traceparent"],
        format!("00-{TRACE}-{}-01", forward.span)
    );
}

/// Without an exporter, messages still carry a trace context: the
/// producer's span as parent of a new publish span, or a new trace.
#[test]
fn messages_carry_a_trace_context_without_an_exporter() {
    let s = Server::start();
    s.topic("t", 1);
    publish_in_trace(&s, "t", "joined");
    s.publish("t", vec![msg("k", "new")]);
    let own = format!("00-{}-{}-01", "a".repeat(32), "b".repeat(16));
    s.publish(
        "t",
        vec![json!({"payload": "own", "headers": {"traceparent": own}})],
    );
    let read = s.read_all("t");
    let header = |i: usize| {
        read[i]["headers"]["traceparent"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let joined = header(0);
    assert!(joined.starts_with(&format!("00-{TRACE}-")), "{joined}");
    assert!(
        !joined.contains(PRODUCER_SPAN),
        "a span of its own: {joined}"
    );
    let fresh = header(1);
    assert_eq!(fresh.len(), 55, "{fresh}");
    assert!(!fresh.contains(TRACE), "{fresh}");
    assert_eq!(header(2), own, "a message's own context is kept");
}

/// `--trace-context false`: the host neither starts nor continues traces.
/// Messages get no `traceparent`, and one a producer set is an ordinary
/// header that a forward copies as it is.
#[test]
fn trace_context_off_leaves_headers_alone() {
    let s = Server::start_args(&["--trace-context", "false"]);
    s.topic("t", 1);
    s.topic("t.out", 1);
    s.deploy("forwarder", "forwarder");
    s.subscribe("fwd", json!({"topic": "t", "plugin": "forwarder"}));
    publish_in_trace(&s, "t", "header");
    let own = format!("00-{}-{}-01", "a".repeat(32), "b".repeat(16));
    s.publish(
        "t",
        vec![json!({"key": "k", "payload": "own", "headers": {"traceparent": own}})],
    );
    s.wait_stats("fwd", Duration::from_secs(60), |st| st["acked"] == 2);
    let read = s.read_all("t");
    assert_eq!(read[0]["headers"].get("traceparent"), None, "{}", read[0]);
    assert_eq!(read[1]["headers"]["traceparent"], own);
    let out = s.read_all("t.out");
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["headers"].get("traceparent"), None, "{}", out[0]);
    assert_eq!(
        out[1]["headers"]["traceparent"], own,
        "copied, not continued"
    );
}
