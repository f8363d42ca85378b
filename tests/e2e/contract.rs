//! The API's OpenAPI document as a contract: every JSON answer the suite
//! receives through [`crate::support::Server::call`] is checked against the
//! schema the document gives for its path, method, status and content type,
//! so the document cannot drift from what the server sends.

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

/// The document and the validators compiled from it so far.
pub struct Contract {
    document: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
    /// `(METHOD, template)` of every documented answer checked so far.
    checked: Mutex<BTreeSet<(String, String)>>,
}

static CONTRACT: OnceLock<Contract> = OnceLock::new();

/// The contract, taken from the first server that asks (every server of
/// the suite is the same binary).
pub fn get(fetch: impl FnOnce() -> Value) -> &'static Contract {
    CONTRACT.get_or_init(|| Contract {
        document: fetch(),
        validators: Mutex::new(HashMap::new()),
        checked: Mutex::new(BTreeSet::new()),
    })
}

impl Contract {
    /// The document's path template for a request path: literal segments
    /// before parameters (`.../dead-letters/redrive` before `.../{id}`).
    fn template(&self, path: &str) -> Option<&str> {
        let segments: Vec<&str> = path.split('/').collect();
        let paths = self.document["paths"].as_object()?;
        paths
            .keys()
            .filter_map(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut params = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') {
                        params += 1;
                    } else if part != segment {
                        return None;
                    }
                }
                Some((params, template.as_str()))
            })
            .min()
            .map(|(_, template)| template)
    }

    /// Check one answer: panics naming what the document does not allow.
    pub fn check(&self, method: &str, path: &str, status: u16, content_type: &str, body: &Value) {
        let path = path.split('?').next().unwrap_or(path);
        let media = content_type.split(';').next().unwrap_or("").trim();
        let error = "#/components/schemas/Error".to_string();
        let Some(template) = self.template(path) else {
            assert_eq!(
                status, 404,
                "{method} {path}: not in the document, yet {status}"
            );
            self.validate(&error, body, &format!("{method} {path} {status}"));
            return;
        };
        let operation = &self.document["paths"][template][method.to_ascii_lowercase()];
        if operation.is_null() {
            assert_eq!(
                status, 405,
                "{method} {template}: not in the document, yet {status}"
            );
            self.validate(&error, body, &format!("{method} {path} {status}"));
            return;
        }
        let answer = &operation["responses"][status.to_string()];
        assert!(
            answer.is_object(),
            "{method} {template}: status {status} is not documented; body {body}"
        );
        let schema = &answer["content"][media]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} {status}: content type {media:?} is not documented"
        );
        let pointer = match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => reference.to_string(),
            None => format!(
                "#/paths/{}/{}/responses/{status}/content/{}/schema",
                escape(template),
                method.to_ascii_lowercase(),
                escape(media)
            ),
        };
        self.validate(&pointer, body, &format!("{method} {path} {status}"));
        self.checked
            .lock()
            .unwrap()
            .insert((method.to_string(), template.to_string()));
    }

    /// Every operation whose answers are JSON, as `(METHOD, template)`.
    pub fn json_operations(&self) -> BTreeSet<(String, String)> {
        let mut operations = BTreeSet::new();
        for (template, item) in self.document["paths"].as_object().into_iter().flatten() {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let success = operation["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(status, _)| status.starts_with('2'));
                let json = success
                    .into_iter()
                    .any(|(_, answer)| answer["content"]["application/json"].is_object());
                if json {
                    operations.insert((method.to_ascii_uppercase(), template.clone()));
                }
            }
        }
        operations
    }

    /// The operations whose answers were checked so far.
    pub fn checked(&self) -> BTreeSet<(String, String)> {
        self.checked.lock().unwrap().clone()
    }

    /// Validate `body` against the schema at `pointer` in the document.
    fn validate(&self, pointer: &str, body: &Value, what: &str) {
        let validator = {
            let mut validators = self.validators.lock().unwrap();
            validators
                .entry(pointer.to_string())
                .or_insert_with(|| {
                    let mut root = self.document.clone();
                    let object = root.as_object_mut().expect("the document is an object");
                    object.insert(
                        "$schema".into(),
                        json!("https://json-schema.org/draft/2020-12/schema"),
                    );
                    object.insert("$ref".into(), json!(pointer));
                    Arc::new(
                        jsonschema::validator_for(&root)
                            .unwrap_or_else(|e| panic!("schema {pointer}: {e}")),
                    )
                })
                .clone()
        };
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the body does not match {pointer}:\n{}\nbody: {body}",
            errors.join("\n")
        );
    }
}

/// A JSON pointer token (RFC 6901), percent-encoded for use in a URI fragment.
fn escape(token: &str) -> String {
    token
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}
