//! Bad input gets the right status and a JSON error body; auth is enforced.

use crate::support::{Body, Options, Server};
use serde_json::json;

/// One request and the status (and error code, when not empty) it must get.
struct Case {
    method: &'static str,
    path: &'static str,
    token: Option<&'static str>,
    body: Body,
    status: u16,
    code: &'static str,
}

fn case(
    method: &'static str,
    path: &'static str,
    body: Body,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        method,
        path,
        token: None,
        body,
        status,
        code,
    }
}

fn as_(token: &'static str, mut c: Case) -> Case {
    c.token = Some(token);
    c
}

fn check(s: &Server, cases: Vec<Case>) {
    for c in cases {
        let (got, value) = s.call(c.method, c.path, c.token, c.body);
        let what = format!("{} {} as {:?}: {value}", c.method, c.path, c.token);
        assert_eq!(got, c.status, "{what}");
        if !c.code.is_empty() {
            assert_eq!(value["error"]["code"], c.code, "{what}");
            let message = value["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.is_empty(), "{what}");
        }
    }
}

fn json(v: serde_json::Value) -> Body {
    Body::Json(v)
}

fn raw(content_type: &'static str, bytes: &[u8]) -> Body {
    Body::Raw(Some(content_type), bytes.to_vec())
}

/// delivery.md P5, S5.
#[test]
fn bad_input_gets_clear_errors() {
    let s = Server::start();
    s.topic("t", 2);
    let big = "x".repeat((1 << 20) + 1);
    let publish = "/v1/topics/t/messages";
    check(
        &s,
        vec![
            case(
                "POST",
                "/v1/topics/nope/messages",
                json(json!({"payload": "x"})),
                404,
                "not_found",
            ),
            case(
                "POST",
                publish,
                raw("application/json", b"{not json"),
                400,
                "malformed",
            ),
            case("POST", publish, json(json!({"messages": []})), 400, ""),
            case(
                "POST",
                publish,
                json(json!({"payload": "x", "payload_base64": "eA=="})),
                400,
                "",
            ),
            case("POST", publish, raw("text/xml", b"<m/>"), 415, ""),
            case(
                "POST",
                publish,
                json(json!({ "payload": big })),
                413,
                "too_large",
            ),
            case(
                "GET",
                "/v1/topics/t/partitions/9/messages",
                Body::None,
                404,
                "not_found",
            ),
            case(
                "PUT",
                "/v1/topics/t",
                json(json!({"partitions": 3})),
                409,
                "conflict",
            ),
            case("PUT", "/v1/topics/bad%2Fname", json(json!({})), 400, ""),
            case(
                "PUT",
                "/v1/plugins/junk",
                raw("application/wasm", b"not wasm at all"),
                400,
                "",
            ),
            // A core module, and a component that does not implement the
            // consumer world, are refused before anything is stored.
            case(
                "PUT",
                "/v1/plugins/core",
                raw("application/wasm", b"\0asm\x01\0\0\0"),
                400,
                "",
            ),
            case(
                "PUT",
                "/v1/plugins/empty",
                raw("application/wasm", b"\0asm\x0d\0\x01\0"),
                400,
                "",
            ),
            case("GET", "/v1/plugins/empty", Body::None, 404, "not_found"),
            case(
                "PUT",
                "/v1/subscriptions/s",
                json(json!({"topic": "t", "plugin": "missing"})),
                404,
                "not_found",
            ),
            case(
                "PUT",
                "/v1/subscriptions/s",
                json(json!({"topic": "t"})),
                400,
                "",
            ),
            case(
                "GET",
                "/v1/subscriptions/none",
                Body::None,
                404,
                "not_found",
            ),
        ],
    );
    // The refusal says why.
    let (_, v) = s.call(
        "PUT",
        "/v1/plugins/empty",
        None,
        raw("application/wasm", b"\0asm\x0d\0\x01\0"),
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("switchyard:plugin/consumer"), "{message}");
    // A consumer that also imports what the host does not provide is refused,
    // naming the import.
    let (status, v) = s.call(
        "PUT",
        "/v1/plugins/greedy",
        None,
        raw("application/wasm", &consumer_importing_more()),
    );
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("my:evil/net"), "{message}");
    // Nothing acknowledged was lost along the way, and the host still serves.
    assert_eq!(
        s.publish("t", vec![json!({"payload": "after errors"})])
            .len(),
        1
    );
    check(&s, vec![case("GET", "/healthz", Body::None, 200, "")]);
}

/// A component of the `consumer` world plus an import of `my:evil/net`
/// (its code is a stub: it is never run).
fn consumer_importing_more() -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    resolve
        .push_dir(crate::support::workspace().join("guest-sdk/wit"))
        .expect("the plugin WIT parses");
    let evil = resolve
        .push_str(
            "evil.wit",
            "package my:evil;
             interface net { connect: func(host: string) -> u32; }
             world greedy { include switchyard:plugin/consumer@0.1.0; import net; }",
        )
        .expect("the test WIT parses");
    let world = resolve
        .select_world(&[evil], Some("greedy"))
        .expect("the world exists");
    let mut module =
        wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embeds");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("a module")
        .validate(true)
        .encode()
        .expect("encodes")
}

#[test]
fn tokens_and_roles_are_enforced() {
    let s = Server::start_with(Options {
        token: Some("admin-secret".into()),
        read_token: Some("reader".into()),
        publish_token: Some("producer".into()),
        ..Options::default()
    });
    let msg = || json(json!({"payload": "x"}));
    check(
        &s,
        vec![
            // `""`: no Authorization header at all.
            as_(
                "",
                case("GET", "/v1/topics", Body::None, 401, "unauthorized"),
            ),
            as_(
                "wrong",
                case("GET", "/v1/topics", Body::None, 401, "unauthorized"),
            ),
            as_(
                "admin-secret",
                case("PUT", "/v1/topics/t", json(json!({})), 201, ""),
            ),
            as_("reader", case("GET", "/v1/topics", Body::None, 200, "")),
            as_(
                "reader",
                case("POST", "/v1/topics/t/messages", msg(), 403, "forbidden"),
            ),
            as_(
                "producer",
                case("POST", "/v1/topics/t/messages", msg(), 200, ""),
            ),
            as_(
                "producer",
                case("PUT", "/v1/topics/u", json(json!({})), 403, "forbidden"),
            ),
            as_("", case("GET", "/healthz", Body::None, 200, "")),
        ],
    );
}
