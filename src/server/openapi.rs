//! The OpenAPI document of the whole API, served at `GET /api/v1/openapi.json`, with what
//! this server was configured with filled in (the maximum of every limit, files per
//! execution, the environments there are), so that it is exact for this server. Tests keep it
//! true: every route in [`super::router::ROUTES`] is in it with the security it has, and it
//! has nothing else; schemathesis (`--checks all`) checks it against a live server
//! (`tests/sh/test_schemathesis.sh`).

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::Value;

use super::errors::ApiResult;
use super::http::{json_response, Resp};
use crate::app::App;
use crate::error::blocking;
use crate::exec::admission::Policy;

pub const DOCUMENT: &str = include_str!("openapi.json");

/// The document for a server with `policy` and these environments.
pub fn document(policy: &Policy, envids: &[String]) -> Value {
    let mut doc: Value = serde_json::from_str(DOCUMENT).unwrap_or(Value::Null);
    let schemas = &mut doc["components"]["schemas"];
    let caps = &policy.caps;
    let limits = &mut schemas["Limits"]["properties"];
    limits["memory_bytes"]["maximum"] = caps.memory_bytes.into();
    limits["cpu_time_s"]["maximum"] = caps.cpu_time_s.into();
    limits["wall_time_s"]["maximum"] = caps.wall_time_s.into();
    limits["pids"]["maximum"] = caps.pids.into();
    limits["output_bytes"]["maximum"] = caps.output_bytes.into();
    let new = &mut schemas["NewExecution"]["properties"];
    new["files"]["maxProperties"] = policy.quotas.max_files.into();
    if !envids.is_empty() {
        let envids: Value = envids.iter().map(|e| Value::from(e.as_str())).collect();
        new["environment"]["enum"] = envids.clone();
        schemas["NewExecutionMultipart"]["properties"]["environment"]["enum"] = envids;
    }
    doc
}

pub async fn serve(app: Arc<App>) -> ApiResult<Resp> {
    let envs = app.envs.clone();
    let listed = blocking(move || Ok(envs.list()?)).await?;
    let envids: Vec<String> = listed.iter().map(|e| e.envid().to_string()).collect();
    Ok(json_response(
        StatusCode::OK,
        &document(&app.cfg.policy, &envids),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::router::{Auth, ROUTES};
    use super::DOCUMENT;

    #[test]
    fn the_served_document_has_the_servers_maxima() {
        let policy = crate::exec::admission::Policy::default();
        let doc = super::document(&policy, &["busybox".to_string()]);
        let limits = &doc["components"]["schemas"]["Limits"]["properties"];
        assert_eq!(limits["pids"]["maximum"], policy.caps.pids);
        assert_eq!(limits["output_bytes"]["maximum"], policy.caps.output_bytes);
        let new = &doc["components"]["schemas"]["NewExecution"]["properties"];
        assert_eq!(new["environment"]["enum"], serde_json::json!(["busybox"]));
        assert_eq!(new["files"]["maxProperties"], policy.quotas.max_files);
    }

    #[test]
    fn document_lists_exactly_the_routes_served() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "put", "post", "delete", "patch", "head", "options"]
                    .contains(&method.as_str())
                {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.pattern.to_string()))
            .collect();
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(missing.is_empty(), "served but not documented: {missing:?}");
        assert!(extra.is_empty(), "documented but not served: {extra:?}");
    }

    #[test]
    fn every_operation_has_its_own_id_and_the_servers_errors() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        let mut ids = BTreeSet::new();
        for r in ROUTES {
            let op = &doc["paths"][r.pattern][r.method.as_str().to_lowercase()];
            let shown = format!("{} {}", r.method, r.pattern);
            let id = op["operationId"].as_str().expect(&shown);
            assert!(
                ids.insert(id.to_string()),
                "{shown}: operationId {id} twice"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(responses.contains_key("503"), "{shown}: no 503 documented");
            if !matches!(r.auth, Auth::None) {
                assert!(responses.contains_key("500"), "{shown}: no 500 documented");
            }
            if op.get("requestBody").is_some() {
                for code in ["400", "408", "413"] {
                    assert!(
                        responses.contains_key(code),
                        "{shown}: no {code} documented"
                    );
                }
            }
        }
    }

    #[test]
    fn document_says_which_token_each_route_needs() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert!(
            doc["security"].as_array().is_some_and(|s| !s.is_empty()),
            "a token is the default"
        );
        for r in ROUTES {
            let op = &doc["paths"][r.pattern][r.method.as_str().to_lowercase()];
            let shown = format!("{} {}", r.method, r.pattern);
            let open = op["security"].as_array().is_some_and(|s| s.is_empty());
            let responses = op["responses"].as_object().expect("responses");
            let summary = op["summary"].as_str().unwrap_or_default();
            match r.auth {
                Auth::None => {
                    assert!(open, "{shown}: documented as needing a token");
                    assert!(!responses.contains_key("401"), "{shown}: documents a 401");
                }
                Auth::Key | Auth::Master(_) | Auth::ProjectManager(_) => {
                    assert!(!open, "{shown}: documented as open");
                    assert!(responses.contains_key("401"), "{shown}: no 401 documented");
                }
            }
            let master_only = matches!(r.auth, Auth::Master(_));
            let restricted = matches!(r.auth, Auth::Master(_) | Auth::ProjectManager(_));
            assert_eq!(
                responses.contains_key("403"),
                restricted,
                "{shown}: 403 documented iff restricted"
            );
            if matches!(r.auth, Auth::ProjectManager(_)) {
                assert!(
                    summary.contains("(master token or a key with manage_projects)"),
                    "{shown}: summary says who may"
                );
            }
            assert_eq!(
                summary.contains("(master token)"),
                master_only,
                "{shown}: summary says (master token) iff master only"
            );
        }
    }

    #[test]
    fn every_error_code_is_documented() {
        use super::super::errors::code::*;
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        let text = doc["components"]["schemas"]["Error"]["properties"]["error_code"]["description"]
            .as_str()
            .expect("error code description")
            .to_string();
        for c in [
            MALFORMED_BODY,
            INVALID_INPUT,
            OVER_LIMIT,
            OVER_QUOTA,
            TOO_SLOW,
            UNAVAILABLE,
            BAD_PATH,
            UNAUTHORIZED,
            FORBIDDEN,
            NOT_FOUND,
            NO_ROUTE,
            METHOD_NOT_ALLOWED,
            WRONG_STATE,
            ALREADY_EXISTS,
            OUTPUT_REFUSED,
            IN_USE,
            TOO_LARGE,
            UNSUPPORTED_MEDIA_TYPE,
            TOO_MANY,
            OVER_COUNT_QUOTA,
            INTERNAL,
        ] {
            assert!(
                text.contains(&c.to_string()),
                "error code {c} is not documented"
            );
        }
    }

    /// A form example as it goes on the wire, per the document's `encoding`: lists repeat
    /// their field (`style: form, explode`), objects nest as `name[key]` (`deepObject`).
    fn form_fields(example: &serde_json::Value) -> Vec<(String, String)> {
        use serde_json::Value;
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut out = Vec::new();
        for (k, v) in example.as_object().expect("an object") {
            match v {
                Value::Array(items) => out.extend(items.iter().map(|i| (k.clone(), text(i)))),
                Value::Object(map) => {
                    out.extend(map.iter().map(|(sub, i)| (format!("{k}[{sub}]"), text(i))))
                }
                other => out.push((k.clone(), text(other))),
            }
        }
        out
    }

    #[tokio::test]
    async fn the_examples_are_what_the_server_accepts() {
        use super::super::body::{fields_to_json, parse_object, Field, ParseLimits};
        use super::super::requests::{from_body, new_execution, CreateApiKey};
        use crate::callbacks::AllowList;
        use hyper::header::{HeaderMap, CONTENT_TYPE};

        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        let object = |v: &serde_json::Value| v.as_object().expect("an object").clone();
        let content = &doc["paths"]["/api/v1/executions"]["post"]["requestBody"]["content"];
        let examples = content["application/json"]["examples"]
            .as_object()
            .expect("JSON examples");
        assert!(examples.len() >= 2);
        for (name, ex) in examples {
            new_execution(object(&ex["value"]), &AllowList::default())
                .unwrap_or_else(|e| panic!("example {name}: {}", e.message));
        }
        // The form example, encoded as the document says, through the server's form parser.
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let fields = form_fields(&content["application/x-www-form-urlencoded"]["example"]);
        let wire = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let limits = ParseLimits {
            max_items: 1000,
            stall: std::time::Duration::from_secs(1),
        };
        let map = parse_object(&headers, wire.clone().into(), &limits)
            .await
            .expect(&wire);
        let new = new_execution(map, &AllowList::default())
            .unwrap_or_else(|e| panic!("form example {wire}: {}", e.message));
        assert_eq!(new.programs[0].limits.memory_bytes, Some(64 << 20));
        // The multipart example, as text parts.
        let mut parts = Vec::new();
        for (k, v) in object(&content["multipart/form-data"]["example"]) {
            match v {
                serde_json::Value::Array(items) => parts.extend(
                    items
                        .iter()
                        .map(|i| (k.clone(), Field::Text(i.as_str().unwrap().into()))),
                ),
                serde_json::Value::String(s) => parts.push((k, Field::Text(s))),
                other => parts.push((k, Field::Text(other.to_string()))),
            }
        }
        let map = object(&fields_to_json(parts, &limits).expect("fields"));
        new_execution(map, &AllowList::default())
            .unwrap_or_else(|e| panic!("multipart example: {}", e.message));
        // Projects and submissions.
        let path = |p: &str, m: &str| &doc["paths"][p][m]["requestBody"]["content"];
        for (p, m) in [
            ("/api/v1/projects", "post"),
            ("/api/v1/projects/{id}", "put"),
        ] {
            super::super::requests::project_from_body(object(
                &path(p, m)["application/json"]["example"],
            ))
            .unwrap_or_else(|e| panic!("{m} {p} example: {}", e.message));
        }
        let submission = |v: &serde_json::Value| {
            from_body::<super::super::requests::CreateSubmission>(object(v))
                .and_then(|c| c.into_new(&AllowList::default()))
                .unwrap_or_else(|e| panic!("submission example: {}", e.message))
        };
        submission(&path("/api/v1/submissions", "post")["application/json"]["example"]);
        let batch = &path("/api/v1/submissions/batch", "post")["application/json"]["example"];
        for one in batch["submissions"].as_array().expect("submissions") {
            submission(one);
        }
        // API keys.
        let key = &doc["paths"]["/api/v1/api_keys"]["post"]["requestBody"]["content"];
        from_body::<CreateApiKey>(object(&key["application/json"]["example"]))
            .and_then(CreateApiKey::into_new)
            .unwrap_or_else(|e| panic!("API key example: {}", e.message));
        // The limits example.
        serde_json::from_value::<crate::exec::RequestedLimits>(
            doc["components"]["schemas"]["RequestedLimits"]["example"].clone(),
        )
        .expect("limits example");
    }

    #[test]
    fn every_body_taken_has_an_example() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let Some(content) = op["requestBody"]["content"].as_object() else {
                    continue;
                };
                for (media, m) in content {
                    let raw = [
                        "application/x-tar",
                        "application/zip",
                        "application/octet-stream",
                        "*/*",
                    ];
                    if raw.contains(&media.as_str())
                        || media == "multipart/form-data" && path.ends_with("/environments")
                    {
                        continue; // bytes: no example to give
                    }
                    assert!(
                        m.get("example").is_some() || m.get("examples").is_some(),
                        "{method} {path} {media}: no example"
                    );
                }
            }
        }
    }
}
