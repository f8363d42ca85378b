//! `GET /v1/openapi.json`: the API's OpenAPI 3.1 document, derived from the
//! handlers' `#[utoipa::path]` annotations and the request and response
//! types themselves, so it changes with them.
//!
//! What every route shares is added here rather than repeated on each
//! handler ([`Conventions`]): the bearer token and its 401/403, the error
//! answers each kind of route can give, and MessagePack beside JSON.

use super::body::{self, Reply};
use super::error::{ApiError, ErrorBody};
use super::{health, leases, messages, metrics, plugins, streams, subscriptions, topics, ui};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, RefOr, Response as Answer};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

const JSON: &str = "application/json";
const MSGPACK: &str = "application/msgpack";
/// The security scheme's name in the document.
const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "A durable event router that delivers messages to sandboxed WebAssembly \
            consumers.\n\nBodies are JSON, or MessagePack with `Content-Type`/`Accept: \
            application/msgpack`; errors are always JSON. A path the API does not know is \
            answered 404, and a method a path does not accept 405 with `Allow`, both with the \
            error body.",
    ),
    paths(
        health::healthz,
        health::readyz,
        metrics::render,
        document,
        health::host,
        ui::index,
        ui::asset,
        topics::list,
        topics::get,
        topics::put,
        topics::delete,
        messages::publish,
        messages::read,
        streams::tail,
        plugins::list,
        plugins::get,
        plugins::put,
        plugins::delete,
        subscriptions::list,
        subscriptions::get,
        subscriptions::put,
        subscriptions::delete,
        subscriptions::pause,
        subscriptions::resume,
        subscriptions::kv,
        subscriptions::ledger,
        subscriptions::dead_letters,
        subscriptions::dead_letter,
        subscriptions::purge_all,
        subscriptions::purge_one,
        subscriptions::redrive,
        leases::lease,
        leases::settle,
        streams::events,
    ),
    modifiers(&Conventions),
    tags(
        (name = "health", description = "Liveness, readiness, metrics and this document; no token"),
        (name = "host", description = "The host and the caller's role"),
        (name = "ui", description = "The web dashboard's page and assets; no token (the page asks for one)"),
        (name = "topics", description = "Topics and their partitions"),
        (name = "messages", description = "Publishing and reading messages"),
        (name = "plugins", description = "Consumer components and their versions"),
        (name = "subscriptions", description = "Subscriptions, their state and delivery records"),
        (name = "dead-letters", description = "Messages a subscription gave up on"),
        (name = "pull", description = "Pull consumers: lease and settle (consume role)"),
        (name = "streams", description = "Server-sent events"),
    )
)]
struct Api;

/// The document, as served.
pub fn json() -> &'static [u8] {
    static DOCUMENT: OnceLock<Vec<u8>> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = serde_json::to_value(Api::openapi()).unwrap_or_default();
        merge_flattened(&mut document);
        serde_json::to_vec(&document).unwrap_or_default()
    })
}

/// serde's `flatten` puts one struct's fields beside another's; utoipa
/// writes that as `allOf`. A closed schema in an `allOf` (a request type
/// that refuses unknown fields, flattened into a response) would refuse the
/// fields beside it, so each `allOf` of objects becomes one object with
/// the properties and required fields of all.
fn merge_flattened(document: &mut Value) {
    let Some(schemas) = document["components"]["schemas"].as_object().cloned() else {
        return;
    };
    for (name, schema) in &schemas {
        let Some(parts) = schema["allOf"].as_array() else {
            continue;
        };
        let mut properties = Map::new();
        let mut required = Vec::new();
        for part in parts {
            let part = match part["$ref"].as_str() {
                Some(reference) => {
                    let name = reference.rsplit('/').next().unwrap_or_default();
                    schemas.get(name).cloned().unwrap_or_default()
                }
                None => part.clone(),
            };
            if let Some(p) = part["properties"].as_object() {
                properties.extend(p.clone());
            }
            if let Some(r) = part["required"].as_array() {
                required.extend(r.iter().cloned());
            }
        }
        let mut merged =
            json!({ "type": "object", "properties": properties, "required": required });
        if let Some(description) = schema.get("description") {
            merged["description"] = description.clone();
        }
        document["components"]["schemas"][name] = merged;
    }
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
    responses((status = 200, description = "This document", body = Object)))]
pub fn document() -> Result<Reply, ApiError> {
    let mut response = Response::new(body::full(json()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    Ok(response)
}

/// What every operation shares.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, api: &mut Document) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let (name, schema) = (ErrorBody::name(), ErrorBody::schema());
        components.schemas.insert(name.into_owned(), schema);
        for (path, item) in api.paths.paths.iter_mut() {
            let has_params = path.contains('{');
            // Cluster mode hands these to the host running the subscription.
            let handed = path.starts_with("/v1/subscriptions/{name}");
            let operations = [
                (&mut item.get, false),
                (&mut item.put, true),
                (&mut item.post, true),
                (&mut item.delete, true),
            ];
            for (operation, writes) in operations {
                if let Some(operation) = operation.as_mut() {
                    conventions(operation, has_params, writes, handed);
                }
            }
        }
    }
}

/// Security, error answers and MessagePack for one operation.
fn conventions(operation: &mut Operation, has_params: bool, writes: bool, handed: bool) {
    let public = operation
        .tags
        .as_ref()
        .is_some_and(|tags| tags.iter().any(|t| t == "health" || t == "ui"));
    let with_body = operation.request_body.is_some();
    let mut errors: Vec<(&str, &str)> = vec![
        ("500", "The store failed"),
        ("503", "The host is starting or shutting down"),
    ];
    if public {
        // No token: an empty requirement overrides nothing and asks for none.
        operation.security = Some(Vec::new());
    } else {
        operation.security = Some(vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])]);
        errors.push(("400", "Invalid input: a parameter, the body or a name"));
        errors.push(("401", "No token, or an unknown one"));
        errors.push(("403", "The token's role may not make this call"));
        errors.push((
            "501",
            "Not available in this host's mode (a part of cluster mode not built yet)",
        ));
    }
    if has_params {
        errors.push(("404", "No such resource"));
    }
    if handed {
        errors.push((
            "502",
            "Cluster mode: the host running the subscription answered more than hosts can hand each other (`answer_too_large`)",
        ));
    }
    if with_body {
        errors.push(("408", "The body did not arrive in time"));
        errors.push(("413", "The body is too large"));
        errors.push(("415", "A body format the API does not speak"));
    }
    if writes {
        errors.push(("507", "Free disk space is below the host's reserve"));
    }
    for (status, description) in errors {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_answer(description));
    }
    if public {
        return;
    }
    for (status, answer) in operation.responses.responses.iter_mut() {
        if let (true, RefOr::T(answer)) = (status.starts_with('2'), answer) {
            if let Some(json) = answer.content.get(JSON).cloned() {
                answer.content.entry(MSGPACK.to_owned()).or_insert(json);
            }
        }
    }
    if let Some(RefOr::T(request)) = operation.request_body.as_mut() {
        if let Some(json) = request.content.get(JSON).cloned() {
            request.content.entry(MSGPACK.to_owned()).or_insert(json);
        }
    }
}

fn error_answer(description: &str) -> RefOr<Answer> {
    let content = Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
        ErrorBody::name(),
    ))));
    RefOr::T(
        utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content(JSON, content)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::router::Route;

    fn document() -> Value {
        serde_json::from_slice(json()).expect("the document is JSON")
    }

    /// `/v1/topics/{topic}` with each parameter filled in.
    fn example(template: &str) -> String {
        template
            .split('/')
            .map(|segment| match segment {
                "{partition}" => "0",
                s if s.starts_with('{') => "x",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn every_route_is_documented_with_the_methods_it_accepts() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented = std::collections::BTreeSet::new();
        for (template, item) in paths {
            let concrete = example(template);
            let route = Route::parse(&concrete)
                .unwrap_or_else(|| panic!("{template} is documented but not routed"));
            assert_eq!(route.template(), template, "{concrete} routes elsewhere");
            let mut methods: Vec<String> = ["get", "put", "post", "delete"]
                .into_iter()
                .filter(|m| item.get(*m).is_some())
                .map(str::to_uppercase)
                .collect();
            methods.sort();
            let mut allowed: Vec<String> = route.allow().split(", ").map(str::to_owned).collect();
            allowed.sort();
            assert_eq!(methods, allowed, "{template}");
            documented.insert(template.clone());
        }
        let routed: std::collections::BTreeSet<String> =
            Route::TEMPLATES.iter().map(|t| t.to_string()).collect();
        assert_eq!(documented, routed);
    }

    #[test]
    fn every_answer_has_a_schema_and_every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(
                schemas.contains_key(name),
                "{name} is referenced, not defined"
            );
        }
        for (template, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let Some(responses) = operation.get("responses") else {
                    continue;
                };
                for (status, answer) in responses.as_object().expect("responses") {
                    let content = answer["content"].as_object();
                    let typed =
                        content.is_some_and(|c| c.values().all(|m| m.get("schema").is_some()));
                    assert!(
                        typed,
                        "{method} {template} {status} has no schema: {answer}"
                    );
                }
                let errors = ["500", "503"];
                for status in errors {
                    assert!(
                        responses.get(status).is_some(),
                        "{method} {template} lacks {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn flattened_fields_stand_beside_the_others() {
        let doc = document();
        let info = &doc["components"]["schemas"]["SubscriptionInfo"];
        assert!(info.get("allOf").is_none(), "{info}");
        for field in ["name", "state", "stats", "topic", "delivery", "retry"] {
            assert!(info["properties"][field].is_object(), "{field} in {info}");
        }
        assert!(info.get("additionalProperties").is_none());
        let required = info["required"].as_array().expect("required");
        assert!(required.contains(&json!("topic")) && required.contains(&json!("stats")));
    }

    #[test]
    fn tokens_are_required_except_on_public_routes() {
        let doc = document();
        let security = |path: &str, method: &str| doc["paths"][path][method]["security"].clone();
        assert_eq!(security("/healthz", "get"), serde_json::json!([]));
        assert_eq!(security("/v1/openapi.json", "get"), serde_json::json!([]));
        assert_eq!(
            security("/v1/topics", "get"),
            serde_json::json!([{ "bearer": [] }])
        );
        assert!(doc["paths"]["/v1/topics"]["get"]["responses"]["401"].is_object());
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
    }
}
