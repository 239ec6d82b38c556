//! Form bodies (urlencoded), and the one conversion of flat form or multipart fields into
//! the JSON the routes expect.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::{parse_json, ParseLimits, MAX_FIELD_NAME, MAX_NAME_DEPTH};
use crate::server::errors::{ApiError, ApiResult};

/// One field of a form or multipart body.
pub enum Field {
    Text(String),
    /// A multipart part sent as `application/json`: its value as it is.
    Json(Value),
    File {
        filename: String,
        content: Bytes,
    },
}

pub(super) fn too_many_fields(limits: &ParseLimits) -> ApiError {
    ApiError::malformed(format!(
        "the body has more than {} fields; at most that many are accepted",
        limits.max_items
    ))
}

/// A field name within the bounds: not too long, not nested too deep.
pub(super) fn check_name(name: &str) -> ApiResult<()> {
    if name.len() > MAX_FIELD_NAME {
        return Err(ApiError::malformed(format!(
            "a field name is longer than {MAX_FIELD_NAME} bytes"
        )));
    }
    let depth = name.bytes().filter(|&b| b == b'[').count();
    if depth > MAX_NAME_DEPTH {
        return Err(ApiError::malformed(format!(
            "field name '{}…' nests {depth} levels deep; at most {MAX_NAME_DEPTH} are accepted",
            name.chars().take(32).collect::<String>()
        )));
    }
    Ok(())
}

/// The fields of a form body, counted and checked before any is decoded.
pub fn form_fields(body: &[u8], limits: &ParseLimits) -> ApiResult<Vec<(String, Field)>> {
    let count = body.iter().filter(|&&b| b == b'&').count() + 1;
    if count > limits.max_items {
        return Err(too_many_fields(limits));
    }
    let mut out = Vec::with_capacity(count);
    for (k, v) in form_urlencoded::parse(body) {
        check_name(&k)?;
        out.push((k.into_owned(), Field::Text(v.into_owned())));
    }
    Ok(out)
}

/// Keys whose form values are always text (never guessed to be numbers or booleans).
const TEXT_KEYS: &[&str] = &[
    "files",
    "stdin",
    "command",
    "outputs",
    "name",
    "key_name",
    "environment",
    "envid",
    "description",
    "authors",
    "id",
    "project_id",
    "scenario",
    "callback",
    "archive",
];
/// Keys that are lists: repeated fields, `key[]`, or one field holding a JSON array.
const LIST_KEYS: &[&str] = &["command", "outputs"];

/// Turns flat form fields into the JSON the routes expect: `limits[memory_bytes]=1` and
/// `limits.memory_bytes=1` nest, `files[a.txt]=…` names a file, a multipart file part named
/// `files` (or `file`) is a file under its own file name, lists repeat their key, a part sent
/// as `application/json` is its value.
pub fn fields_to_json(fields: Vec<(String, Field)>, limits: &ParseLimits) -> ApiResult<Value> {
    let mut root = Map::new();
    for (key, field) in fields {
        let mut path = split_key(&key);
        if path.is_empty() {
            continue;
        }
        let top = path[0].clone();
        let value = match field {
            Field::Text(text) => {
                if LIST_KEYS.contains(&top.as_str()) {
                    let items = if text.trim_start().starts_with('[') {
                        match parse_json(text.as_bytes(), limits) {
                            Ok(Value::Array(items)) => items,
                            _ => vec![Value::String(text)],
                        }
                    } else {
                        vec![Value::String(text)]
                    };
                    append(&mut root, &top, items)?;
                    continue;
                }
                if TEXT_KEYS.contains(&top.as_str()) {
                    Value::String(text)
                } else {
                    guess_scalar(text)
                }
            }
            Field::Json(value) => {
                if path.len() == 1 && LIST_KEYS.contains(&top.as_str()) {
                    let items = match value {
                        Value::Array(items) => items,
                        one => vec![one],
                    };
                    append(&mut root, &top, items)?;
                    continue;
                }
                value
            }
            Field::File { filename, content } => {
                if path.len() == 1 && (top == "files" || top == "file") {
                    path = vec!["files".into(), filename];
                }
                serde_json::json!({
                    "content": base64::engine::general_purpose::STANDARD.encode(&content),
                    "encoding": "base64",
                })
            }
        };
        insert_path(&mut root, &path, value)?;
    }
    Ok(Value::Object(root))
}

/// Adds items to the list `key` (created on first use).
fn append(root: &mut Map<String, Value>, key: &str, items: Vec<Value>) -> ApiResult<()> {
    let entry = root
        .entry(key.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    match entry {
        Value::Array(list) => {
            list.extend(items);
            Ok(())
        }
        _ => Err(ApiError::malformed(format!(
            "field '{key}' is both a list and a value"
        ))),
    }
}

/// `a[b][c]`, `a.b.c` → `["a", "b", "c"]`; a trailing `[]` is dropped. Only the first part
/// splits on dots, so file names keep theirs (`files[main.py]`).
fn split_key(key: &str) -> Vec<String> {
    let key = key.strip_suffix("[]").unwrap_or(key);
    let (head, rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    let mut parts: Vec<String> = match head.split_once('.') {
        Some((a, b)) => vec![a.to_string(), b.to_string()],
        None => vec![head.to_string()],
    };
    parts.retain(|p| !p.is_empty());
    let mut rest = rest;
    while let Some(stripped) = rest.strip_prefix('[') {
        match stripped.find(']') {
            Some(end) => {
                parts.push(stripped[..end].to_string());
                rest = &stripped[end + 1..];
            }
            None => {
                parts.push(stripped.to_string());
                break;
            }
        }
    }
    parts
}

fn guess_scalar(text: String) -> Value {
    match text.as_str() {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" | "" => return Value::Null,
        _ => {}
    }
    if let Ok(n) = text.parse::<u64>() {
        return Value::from(n);
    }
    if let Ok(x) = text.parse::<f64>() {
        if x.is_finite() {
            return Value::from(x);
        }
    }
    Value::String(text)
}

fn insert_path(root: &mut Map<String, Value>, path: &[String], value: Value) -> ApiResult<()> {
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| ApiError::malformed("an empty field name"))?;
    let mut node = root;
    for part in parents {
        let entry = node
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        node = entry.as_object_mut().ok_or_else(|| {
            ApiError::malformed(format!("field '{part}' is both a value and a group"))
        })?;
    }
    node.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: ParseLimits = ParseLimits {
        max_items: 100,
        stall: Duration::from_secs(1),
    };

    #[test]
    fn form_fields_nest() {
        let v = fields_to_json(
            vec![
                ("environment".into(), Field::Text("busybox".into())),
                ("command".into(), Field::Text("sh".into())),
                ("command".into(), Field::Text("-c".into())),
                ("limits[memory_bytes]".into(), Field::Text("1000".into())),
                ("limits.cpu_time_s".into(), Field::Text("1.5".into())),
                ("files[a.txt]".into(), Field::Text("42".into())),
                ("start".into(), Field::Text("true".into())),
                ("outputs".into(), Field::Json(serde_json::json!(["a", "b"]))),
                (
                    "stdin".into(),
                    Field::Json(serde_json::json!({"content": "x"})),
                ),
            ],
            &LIMITS,
        )
        .unwrap();
        assert_eq!(v["command"], serde_json::json!(["sh", "-c"]));
        assert_eq!(v["limits"]["memory_bytes"], 1000);
        assert_eq!(v["limits"]["cpu_time_s"], 1.5);
        assert_eq!(v["files"]["a.txt"], "42");
        assert_eq!(v["start"], true);
        assert_eq!(v["outputs"], serde_json::json!(["a", "b"]));
        assert_eq!(v["stdin"]["content"], "x");
    }
}
