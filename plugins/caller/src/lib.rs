//! Test plugin for outbound-request limits: makes config `count` (default 1)
//! GET requests to config `url`, then acks if every one got a 2xx answer and
//! otherwise retries with a tally such as `2xx:3 denied:7`.

use std::collections::BTreeMap;
use switchyard_sdk::http::{ErrorKind, Request};
use switchyard_sdk::{config, Message, Outcome, Plugin};

struct Caller;

impl Plugin for Caller {
    fn handle(_msg: Message) -> Outcome {
        let url = config("url").unwrap_or_default();
        let count: u32 = config("count").and_then(|c| c.parse().ok()).unwrap_or(1);
        let mut tally: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..count {
            let what = match Request::get(&url).send() {
                Ok(r) => format!("{}xx", r.status / 100),
                Err(e) if e.kind() == ErrorKind::Denied => "denied".into(),
                Err(e) => format!("{:?}", e.kind()).to_lowercase(),
            };
            *tally.entry(what).or_default() += 1;
        }
        let all_ok = tally.len() == 1 && tally.contains_key("2xx");
        let text = tally
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        if all_ok {
            Outcome::Ack
        } else {
            Outcome::retry(text)
        }
    }
}

switchyard_sdk::export_plugin!(Caller);
