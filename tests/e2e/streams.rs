//! Live streams (delivery.md T1–T2): a topic's tail and a subscription's
//! attempt events, as server-sent events.

use crate::support::{Body, Server};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

/// One server-sent event.
#[derive(Debug)]
pub struct Event {
    pub id: Option<String>,
    pub name: String,
    pub data: Value,
}

/// An open event stream.
pub struct Stream {
    lines: BufReader<Box<dyn Read + Send>>,
}

impl Stream {
    pub fn open(s: &Server, path: &str, last_event_id: Option<&str>) -> Stream {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut req = agent.get(&format!("{}{path}", s.base));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.call().expect("opening the stream");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let reader: Box<dyn Read + Send> = Box::new(resp.into_body().into_reader());
        Stream {
            lines: BufReader::new(reader),
        }
    }

    /// Whether the server ended the stream (reads to the end).
    fn ended(&mut self) -> bool {
        let mut rest = String::new();
        self.lines.read_to_string(&mut rest).is_ok()
    }

    /// The next event (comments skipped).
    pub fn next(&mut self) -> Event {
        let (mut id, mut name, mut data) = (None, String::new(), String::new());
        loop {
            let mut line = String::new();
            let n = self.lines.read_line(&mut line).expect("reading the stream");
            assert!(n > 0, "the stream ended");
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if name.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).expect("JSON data");
                return Event { id, name, data };
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => id = Some(value.to_string()),
                "event" => name = value.to_string(),
                "data" => data.push_str(value),
                _ => {}
            }
        }
    }
}

fn publish(s: &Server, ids: &[&str]) {
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "key": "same", "payload": format!("p-{id}")}))
        .collect();
    s.publish("t", batch);
}

/// T1: a tail sees what is published after it connected, and resumes after
/// the last event it saw with `Last-Event-ID`; `from=earliest` starts at the
/// oldest message.
#[test]
fn tail_streams_new_messages_and_resumes() {
    let s = Server::start();
    s.topic("t", 2);
    publish(&s, &["m0", "m1"]);
    let mut live = Stream::open(&s, "/v1/topics/t/tail", None);
    publish(&s, &["m2", "m3", "m4"]);
    let events: Vec<Event> = (0..3).map(|_| live.next()).collect();
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.data["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m2", "m3", "m4"]);
    assert!(events.iter().all(|e| e.name == "message"));
    assert_eq!(events[0].data["payload"], "p-m2");
    // Resume after m3: m4 comes first.
    let after_m3 = events[1].id.clone().expect("an id");
    let mut resumed = Stream::open(&s, "/v1/topics/t/tail", Some(&after_m3));
    assert_eq!(resumed.next().data["id"], "m4");
    let mut all = Stream::open(&s, "/v1/topics/t/tail?from=earliest", None);
    let ids: Vec<String> = (0..5)
        .map(|_| all.next().data["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["m0", "m1", "m2", "m3", "m4"]);
    // Tails never touch progress: a bad cursor or mode is a 400.
    let (status, _) = s.call("GET", "/v1/topics/t/tail?from=middle", None, Body::None);
    assert_eq!(status, 400);
    let (status, _) = s.call("GET", "/v1/topics/nope/tail", None, Body::None);
    assert_eq!(status, 404);
    // Open streams end when the host shuts down, without holding it up.
    let mut s = s;
    s.terminate();
    assert!(live.ended() && resumed.ended() && all.ended());
    assert!(
        !s.log().contains("gave up waiting for HTTP requests"),
        "{}",
        s.log()
    );
}

/// T2: a subscription's attempts stream as they complete.
#[test]
fn subscription_events_show_attempts_as_they_happen() {
    let s = Server::start();
    s.topic("t", 1);
    s.deploy("poison", "poison");
    s.subscribe(
        "jobs",
        json!({"topic": "t", "plugin": "poison",
               "retry": {"max_attempts": 2, "initial_ms": 10, "max_ms": 10}}),
    );
    let mut events = Stream::open(&s, "/v1/subscriptions/jobs/events", None);
    s.publish("t", vec![json!({"id": "m1", "payload": "retry"})]);
    let first = events.next();
    assert_eq!(first.name, "retrying");
    assert_eq!(first.data["message_id"], "m1");
    assert_eq!(first.data["attempt"]["attempt"], 1);
    let second = events.next();
    assert_eq!(second.name, "dead-lettered");
    assert_eq!(second.data["attempt"]["attempt"], 2);
}
