//! Request bodies: JSON, form (urlencoded) and multipart, as in the Sphere Engine API, all
//! turned into one JSON value so that each route has one parser. Bodies over the configured
//! size get 413, other content types 415, malformed JSON 400 saying where.

use std::path::Path;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::errors::{ApiError, ApiResult};

/// The declared length, when there is one that parses.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads the whole body, refusing more than `limit` bytes (before reading, when the length is
/// declared; while reading, when it is chunked).
pub async fn read_limited(headers: &HeaderMap, mut body: Incoming, limit: u64) -> ApiResult<Bytes> {
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::malformed(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() as u64 + data.len() as u64 > limit {
                return Err(ApiError::too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Streams the body into a file (large uploads), refusing more than `limit` bytes.
pub async fn save_to_file(
    headers: &HeaderMap,
    mut body: Incoming,
    limit: u64,
    path: &Path,
) -> ApiResult<u64> {
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut file = tokio::fs::File::create(path).await?;
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::malformed(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            written += data.len() as u64;
            if written > limit {
                return Err(ApiError::too_large(limit));
            }
            file.write_all(&data).await?;
        }
    }
    file.flush().await?;
    Ok(written)
}

/// The media type without parameters, lower case ("" when there is none).
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Does the body look like a JSON object (its first byte that is not white space is `{`)?
/// No form field of ours starts with `{`, so a form can't be mistaken for JSON.
fn looks_like_json(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Parses a body into a JSON object, whatever of the three encodings it came in.
/// An empty body is an empty object. A JSON object sent without `Content-Type`, or with the
/// type `curl -d` (form) or a browser's `fetch` of a string (`text/plain`) puts on it, is read
/// as JSON: that is what its sender meant.
pub async fn parse_object(headers: &HeaderMap, body: Bytes) -> ApiResult<Map<String, Value>> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    let media = media_type(headers);
    let value = match media.as_str() {
        "application/json" | "" => parse_json(&body)?,
        "application/x-www-form-urlencoded" | "text/plain" if looks_like_json(&body) => {
            parse_json(&body).map_err(|e| {
                ApiError::malformed(format!(
                    "{} (the body was sent as {media}; send JSON with \
                     'Content-Type: application/json')",
                    e.message
                ))
            })?
        }
        "application/x-www-form-urlencoded" => {
            let pairs = form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), Field::Text(v.into_owned())))
                .collect();
            fields_to_json(pairs)?
        }
        "multipart/form-data" => fields_to_json(multipart_fields(headers, body).await?)?,
        other => {
            return Err(ApiError::unsupported(format!(
                "content type '{other}' is not accepted here: send JSON with \
                 'Content-Type: application/json' (or a form: \
                 application/x-www-form-urlencoded, multipart/form-data)"
            )))
        }
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::malformed("the body must be a JSON object")),
    }
}

/// JSON, with the place of a syntax error in the message.
pub fn parse_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::malformed(format!(
            "malformed JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

/// One field of a form or multipart body.
pub enum Field {
    Text(String),
    File { filename: String, content: Bytes },
}

/// The fields of a multipart body (the one multipart parser).
pub async fn multipart_fields(headers: &HeaderMap, body: Bytes) -> ApiResult<Vec<(String, Field)>> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::malformed(format!("multipart body: {e}")))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut out = Vec::new();
    let bad = |e: multer::Error| ApiError::malformed(format!("multipart body: {e}"));
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        match field.file_name().map(str::to_string) {
            Some(filename) => {
                let content = field.bytes().await.map_err(bad)?;
                out.push((name, Field::File { filename, content }));
            }
            None => out.push((name, Field::Text(field.text().await.map_err(bad)?))),
        }
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
];
/// Keys that are lists: repeated fields, `key[]`, or one field holding a JSON array.
const LIST_KEYS: &[&str] = &["command", "outputs"];

/// Turns flat form fields into the JSON the routes expect: `limits[memory_bytes]=1` and
/// `limits.memory_bytes=1` nest, `files[a.txt]=…` names a file, a multipart file part named
/// `files` (or `file`) is a file under its own file name, lists repeat their key.
pub fn fields_to_json(fields: Vec<(String, Field)>) -> ApiResult<Value> {
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
                    let items = match serde_json::from_str::<Value>(&text) {
                        Ok(Value::Array(items)) if text.trim_start().starts_with('[') => items,
                        _ => vec![Value::String(text)],
                    };
                    let entry = root
                        .entry(top.clone())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(list) = entry {
                        list.extend(items);
                    }
                    continue;
                }
                if TEXT_KEYS.contains(&top.as_str()) {
                    Value::String(text)
                } else {
                    guess_scalar(text)
                }
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
    use super::*;

    #[test]
    fn form_fields_nest() {
        let v = fields_to_json(vec![
            ("environment".into(), Field::Text("busybox".into())),
            ("command".into(), Field::Text("sh".into())),
            ("command".into(), Field::Text("-c".into())),
            ("limits[memory_bytes]".into(), Field::Text("1000".into())),
            ("limits.cpu_time_s".into(), Field::Text("1.5".into())),
            ("files[a.txt]".into(), Field::Text("42".into())),
            ("start".into(), Field::Text("true".into())),
        ])
        .unwrap();
        assert_eq!(v["command"], serde_json::json!(["sh", "-c"]));
        assert_eq!(v["limits"]["memory_bytes"], 1000);
        assert_eq!(v["limits"]["cpu_time_s"], 1.5);
        assert_eq!(v["files"]["a.txt"], "42");
        assert_eq!(v["start"], true);
    }

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if !content_type.is_empty() {
            h.insert(CONTENT_TYPE, content_type.parse().unwrap());
        }
        h
    }

    #[tokio::test]
    async fn json_is_read_as_json_whatever_the_type_says() {
        let body = Bytes::from_static(b" {\"environment\": \"busybox\", \"start\": true}");
        for ct in [
            "",
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain;charset=UTF-8",
        ] {
            let map = parse_object(&headers(ct), body.clone()).await.unwrap();
            assert_eq!(map["environment"], "busybox", "{ct}");
            assert_eq!(map["start"], true, "{ct}");
        }
        // A real form stays a form.
        let form = Bytes::from_static(b"environment=busybox&start=true");
        let map = parse_object(&headers("application/x-www-form-urlencoded"), form)
            .await
            .unwrap();
        assert_eq!(map["environment"], "busybox");
        // Broken JSON sent as a form says what to send.
        let e = parse_object(
            &headers("application/x-www-form-urlencoded"),
            Bytes::from_static(b"{\"environment\": "),
        )
        .await
        .unwrap_err();
        assert!(
            e.message.contains("Content-Type: application/json"),
            "{}",
            e.message
        );
        // Text that is not JSON, and other types: 415 saying what to send.
        for (ct, body) in [("text/plain", &b"hello"[..]), ("application/xml", b"<a/>")] {
            let e = parse_object(&headers(ct), Bytes::from_static(body))
                .await
                .unwrap_err();
            assert_eq!(e.status, hyper::StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
            assert!(
                e.message.contains("Content-Type: application/json"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn json_errors_say_where() {
        let e = parse_json(b"{\n  \"a\": ,\n}").unwrap_err();
        assert!(e.message.contains("line 2"), "{}", e.message);
    }
}
