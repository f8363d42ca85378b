//! Publishes each message to the topic named by its `forward-to` header, or to
//! `<topic>.out`, with the same key, payload and headers plus a `source` header
//! (`<topic>/<partition>/<offset>`). Retries with the error text if the publish fails.

use switchyard_sdk::{Message, Outcome, Plugin};

struct Forwarder;

impl Plugin for Forwarder {
    fn handle(msg: Message) -> Outcome {
        let to = match msg.header("forward-to") {
            Some(topic) => topic.to_string(),
            None => format!("{}.out", msg.topic),
        };
        let source = format!("{}/{}/{}", msg.topic, msg.partition, msg.offset);
        let mut headers: Vec<(&str, &str)> = msg
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        headers.push(("source", &source));
        match switchyard_sdk::publish(&to, msg.key.as_deref(), &msg.payload, &headers) {
            Ok(()) => Outcome::Ack,
            Err(error) => Outcome::retry(error),
        }
    }
}

switchyard_sdk::export_plugin!(Forwarder);
