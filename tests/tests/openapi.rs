//! `docs/openapi.yaml` describes the API the gateway actually serves.
//!
//! The request schemas must list exactly the fields the API accepts (the
//! list below, cross-checked against `EmitRequest` in
//! `gateway/src/api/mod.rs`): when the API changes, these tests fail until
//! the document is updated. The documented examples are posted to a live
//! gateway and must be accepted; a field the schema does not list must be
//! refused, as `additionalProperties: false` promises.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};
use serde_yaml::Value as Yaml;
use switchboard_testkit::repo_root;

/// Every field `POST /api/v1/emit` accepts.
const EMIT_FIELDS: [&str; 10] = [
    "event",
    "data",
    "args",
    "rooms",
    "users",
    "roles",
    "except",
    "namespace",
    "volatile",
    "broadcast",
];

/// Every `error` reason the API answers with.
const ERROR_REASONS: [&str; 15] = [
    "invalid_json",
    "invalid_request",
    "unreadable_body",
    "missing_api_key",
    "bad_api_key",
    "api_disabled",
    "not_found",
    "method_not_allowed",
    "body_too_large",
    "batch_too_large",
    "bus_unavailable",
    "reserved_event",
    "too_many_failed_keys",
    "body_read_timeout",
    "online_not_tracked",
];

fn doc() -> Yaml {
    let text = std::fs::read_to_string(repo_root().join("docs/openapi.yaml"))
        .expect("read docs/openapi.yaml");
    serde_yaml::from_str(&text).expect("docs/openapi.yaml is valid YAML")
}

/// Follows `$ref: "#/a/b"` within the document.
fn resolve<'a>(root: &'a Yaml, v: &'a Yaml) -> &'a Yaml {
    match v.get("$ref").and_then(Yaml::as_str) {
        Some(r) => {
            let mut cur = root;
            for part in r.trim_start_matches("#/").split('/') {
                cur = cur.get(part).unwrap_or_else(|| panic!("dangling $ref {r}"));
            }
            resolve(root, cur)
        }
        None => v,
    }
}

fn keys(v: &Yaml) -> BTreeSet<String> {
    v.as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn to_json(v: &Yaml) -> Value {
    serde_json::to_value(v).expect("YAML value converts to JSON")
}

fn request_schema<'a>(root: &'a Yaml, path: &str) -> &'a Yaml {
    let op = &root["paths"][path]["post"];
    assert!(op.is_mapping(), "{path}: no POST operation");
    resolve(
        root,
        &op["requestBody"]["content"]["application/json"]["schema"],
    )
}

/// Field names of `pub struct EmitRequest` in the gateway source.
fn emit_request_fields_in_source() -> BTreeSet<String> {
    let src = std::fs::read_to_string(repo_root().join("gateway/src/api/mod.rs"))
        .expect("read gateway/src/api/mod.rs");
    let start = src
        .find("pub struct EmitRequest {")
        .expect("EmitRequest in gateway/src/api/mod.rs");
    let body = &src[start..];
    let body = &body[..body.find("\n}").expect("end of struct")];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .filter(|n| !n.starts_with("struct"))
        .collect()
}

/// String literals right after `StatusCode::X,` in the API source (the
/// `reason` argument of its error constructor).
fn error_reasons_in_source() -> BTreeSet<String> {
    let src = std::fs::read_to_string(repo_root().join("gateway/src/api/mod.rs"))
        .expect("read gateway/src/api/mod.rs");
    let mut out = BTreeSet::new();
    for (i, _) in src.match_indices("StatusCode::") {
        let rest = &src[i + "StatusCode::".len()..];
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_uppercase() || c == '_');
        let Some(rest) = rest.strip_prefix(',') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(lit) = rest.strip_prefix('"') {
            out.insert(lit[..lit.find('"').expect("closing quote")].to_string());
        }
    }
    out
}

#[test]
fn request_schemas_list_exactly_the_accepted_fields() {
    let root = doc();
    assert!(
        root["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.0")),
        "OpenAPI 3.0"
    );

    let expected: BTreeSet<String> = EMIT_FIELDS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        emit_request_fields_in_source(),
        expected,
        "EmitRequest in gateway/src/api/mod.rs changed: update EMIT_FIELDS here AND docs/openapi.yaml"
    );

    let emit = request_schema(&root, "/api/v1/emit");
    assert_eq!(
        keys(&emit["properties"]),
        expected,
        "docs/openapi.yaml EmitRequest properties vs the fields the API accepts"
    );
    assert_eq!(emit["additionalProperties"], Yaml::Bool(false));
    assert_eq!(to_json(&emit["required"]), json!(["event"]));

    let batch = request_schema(&root, "/api/v1/emit/batch");
    assert_eq!(
        keys(&batch["properties"]),
        BTreeSet::from(["messages".to_string()])
    );
    assert_eq!(batch["additionalProperties"], Yaml::Bool(false));
    assert_eq!(to_json(&batch["required"]), json!(["messages"]));
    let items = resolve(&root, &batch["properties"]["messages"]["items"]);
    assert_eq!(items, emit, "batch messages are EmitRequest objects");
    assert_eq!(
        batch["properties"]["messages"]["maxItems"],
        Yaml::from(1000)
    );

    // Responses and security of both publish operations.
    let error = resolve(&root, &root["components"]["schemas"]["Error"]);
    let reasons: BTreeSet<String> = error["properties"]["error"]["enum"]
        .as_sequence()
        .expect("Error.error enum")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect();
    let want: BTreeSet<String> = ERROR_REASONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(reasons, want, "documented error reasons");
    assert_eq!(
        error_reasons_in_source(),
        want,
        "error reasons in gateway/src/api/mod.rs changed: update ERROR_REASONS and docs/openapi.yaml"
    );
    assert_eq!(
        keys(&error["properties"]),
        BTreeSet::from(["ok", "error", "message"].map(String::from))
    );
    for path in ["/api/v1/emit", "/api/v1/emit/batch"] {
        let op = &root["paths"][path]["post"];
        let codes = keys(&op["responses"]);
        for code in ["200", "400", "401", "403", "405", "413", "503"] {
            assert!(codes.contains(code), "{path}: documents {code}");
            if code != "200" {
                let resp = resolve(&root, &op["responses"][code]);
                let schema = resolve(&root, &resp["content"]["application/json"]["schema"]);
                assert_eq!(schema, error, "{path} {code} uses the Error body");
            }
        }
        let sec = to_json(&op["security"]);
        assert_eq!(sec, json!([{"apiKey": []}]), "{path} security");
    }
    let scheme = &root["components"]["securitySchemes"]["apiKey"];
    assert_eq!(scheme["type"].as_str(), Some("http"));
    assert_eq!(scheme["scheme"].as_str(), Some("bearer"));

    for path in ["/healthz", "/readyz", "/metrics"] {
        assert!(
            root["paths"][path]["get"]["responses"]["200"].is_mapping(),
            "{path}: GET 200 documented"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_examples_are_accepted_by_the_live_api() {
    let root = doc();
    let redis = redis();
    let gw = redis_gateway(&redis, &[]).await;

    // The schema-level example (every field but args) and each request example.
    let emit = request_schema(&root, "/api/v1/emit");
    let mut bodies = vec![to_json(&emit["example"])];
    let examples = &root["paths"]["/api/v1/emit"]["post"]["requestBody"]["content"]["application/json"]
        ["examples"];
    for (_, ex) in examples.as_mapping().expect("examples") {
        bodies.push(to_json(&ex["value"]));
    }
    // Each property on its own, with its documented example value.
    for field in EMIT_FIELDS {
        let example = to_json(&emit["properties"][field]["example"]);
        assert!(!example.is_null(), "property {field} has an example");
        let mut body = json!({"event": "schema_check", "broadcast": true});
        body[field] = example;
        bodies.push(body);
    }
    for body in bodies {
        let (status, v) = api_emit(&gw, body.clone()).await;
        assert_eq!(status, 200, "documented body {body} refused: {v}");
        assert_eq!(v["ok"], json!(true));
        assert!(v["receivers"].is_u64(), "{v}");
    }

    let batch = to_json(
        &root["paths"]["/api/v1/emit/batch"]["post"]["requestBody"]["content"]["application/json"]
            ["example"],
    );
    let n = batch["messages"].as_array().expect("messages").len();
    let url = format!("{}/api/v1/emit/batch", gw.url());
    let resp = tokio::task::spawn_blocking(move || {
        switchboard_testkit::net::http_request(
            "POST",
            &url,
            &[
                ("Authorization", &format!("Bearer {API_KEY}")),
                ("Content-Type", "application/json"),
            ],
            Some(batch.to_string().as_bytes()),
            std::time::Duration::from_secs(5),
        )
    })
    .await
    .expect("task")
    .expect("POST batch");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v: Value = serde_json::from_slice(&resp.body).expect("JSON");
    assert_eq!(v["receivers"].as_array().map(Vec::len), Some(n), "{v}");

    // additionalProperties: false holds: a field the schema does not list is refused.
    let (status, v) = api_emit(
        &gw,
        json!({"event": "schema_check", "broadcast": true, "priority": "high"}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["ok"], json!(false));

    // The documented error example has the documented shape.
    let err_example = to_json(&root["components"]["schemas"]["Error"]["example"]);
    let (status, v) = api_emit(&gw, json!({"evnt": "typo"})).await;
    assert_eq!(status, 400);
    assert_eq!(
        v["error"], err_example["error"],
        "documented error example vs live: {v}"
    );

    // Operator endpoints answer as documented.
    let (s, v) = get_json(format!("{}/healthz", gw.url()))
        .await
        .expect("healthz");
    assert_eq!((s, v), (200, json!({"status": "ok"})));
    let (s, v) = get_json(format!("{}/readyz", gw.url()))
        .await
        .expect("readyz");
    assert_eq!(s, 200);
    let readiness = &root["components"]["schemas"]["Readiness"];
    for k in keys(&readiness["properties"]) {
        assert!(v.get(&k).is_some(), "/readyz has {k}: {v}");
    }
    let (s, body) = get(format!("{}/metrics", gw.url())).await.expect("metrics");
    assert_eq!(s, 200);
    assert!(body.contains("# TYPE"), "Prometheus text");
}
