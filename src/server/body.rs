//! Request bodies: JSON, form (urlencoded) and multipart, as in the Sphere Engine API, all
//! turned into one JSON value so that each route has one parser. Every parser is bounded
//! before it allocates: in size (413 beyond the configured limit), in the time a body may
//! stall (408), in nesting depth and in the number of values or fields (400 saying which
//! bound). Other content types get 415, malformed JSON 400 saying where.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyDataStream, BodyExt};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::errors::{ApiError, ApiResult};

/// How deep JSON may nest (the request bodies need 3 levels).
pub const MAX_DEPTH: usize = 32;
/// Longest field name of a form or multipart body (bytes).
pub const MAX_FIELD_NAME: usize = 1024;
/// How many levels a form field name may nest (`limits[pids]` is 2).
pub const MAX_NAME_DEPTH: usize = 4;

/// The bounds of parsing, set from the server's settings.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Values in a JSON body; fields of a form or multipart body.
    pub max_items: usize,
    /// How long a body may go without a byte arriving.
    pub stall: Duration,
}

/// The declared length, when there is one that parses.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The next piece of a body, within the stall bound.
async fn next_frame(body: &mut Incoming, stall: Duration) -> ApiResult<Option<Bytes>> {
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => {
                return Err(ApiError::too_slow(format!(
                    "the body stalled: nothing arrived for {} s",
                    stall.as_secs()
                )))
            }
            Ok(None) => return Ok(None),
            Ok(Some(frame)) => {
                frame.map_err(|e| ApiError::malformed(format!("reading the body: {e}")))?
            }
        };
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

/// The memory all bodies read whole may take together (in KiB permits).
#[derive(Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    /// How long a request waits for memory before it gets 503.
    wait: Duration,
}

impl Budget {
    pub fn new(bytes: u64, wait: Duration) -> Budget {
        let kib = (bytes / 1024).clamp(1, u64::from(u32::MAX >> 3)) as usize;
        Budget {
            permits: Arc::new(Semaphore::new(kib)),
            wait,
        }
    }

    pub fn hold(&self) -> Held {
        Held {
            budget: self.clone(),
            permit: None,
        }
    }
}

/// What one request holds of the [`Budget`]: given back when it is dropped (the request is
/// done).
pub struct Held {
    budget: Budget,
    permit: Option<OwnedSemaphorePermit>,
}

impl Held {
    /// Holds enough for `bytes` in all; 503 when that much does not free up in time (or
    /// could never: more than the whole budget).
    async fn grow_to(&mut self, bytes: u64) -> ApiResult<()> {
        let want = bytes.div_ceil(1024);
        let have = self.permit.as_ref().map_or(0, |p| p.num_permits() as u64);
        if want <= have {
            return Ok(());
        }
        let busy = || {
            ApiError::unavailable(
                "the server is short of memory for request bodies (other large requests \
                 hold it): try again in a moment",
                1,
            )
        };
        let more = u32::try_from(want - have).map_err(|_| busy())?;
        let acquire = self.budget.permits.clone().acquire_many_owned(more);
        let permit = match tokio::time::timeout(self.budget.wait, acquire).await {
            Ok(Ok(p)) => p,
            _ => return Err(busy()),
        };
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }
}

/// Reads the whole body, refusing more than `limit` bytes (before reading, when the length is
/// declared; while reading, when it is chunked), holding memory for it in `held` before the
/// buffer grows.
pub async fn read_limited(
    headers: &HeaderMap,
    mut body: Incoming,
    limit: u64,
    stall: Duration,
    held: &mut Held,
) -> ApiResult<Bytes> {
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut buf = Vec::new();
    if let Some(n) = declared {
        held.grow_to(n).await?;
        buf.reserve_exact(n as usize);
    }
    while let Some(data) = next_frame(&mut body, stall).await? {
        let len = buf.len() as u64 + data.len() as u64;
        if len > limit {
            return Err(ApiError::too_large(limit));
        }
        if !matches!(declared, Some(n) if len <= n) {
            held.grow_to(len).await?;
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// Streams the body into `file` (large uploads), refusing more than `limit` bytes (and saying
/// `too_large` of it). Returns the bytes written.
pub async fn save_to_file(
    headers: &HeaderMap,
    mut body: Incoming,
    limit: u64,
    stall: Duration,
    file: &mut tokio::fs::File,
    too_large: impl Fn() -> ApiError,
) -> ApiResult<u64> {
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut written = 0u64;
    while let Some(data) = next_frame(&mut body, stall).await? {
        written += data.len() as u64;
        if written > limit {
            return Err(too_large());
        }
        file.write_all(&data).await?;
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
pub async fn parse_object(
    headers: &HeaderMap,
    body: Bytes,
    limits: &ParseLimits,
) -> ApiResult<Map<String, Value>> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    let media = media_type(headers);
    let value = match media.as_str() {
        "application/json" | "" => parse_json(&body, limits)?,
        "application/x-www-form-urlencoded" | "text/plain" if looks_like_json(&body) => {
            parse_json(&body, limits).map_err(|e| {
                ApiError::malformed(format!(
                    "{} (the body was sent as {media}; send JSON with \
                     'Content-Type: application/json')",
                    e.message
                ))
            })?
        }
        "application/x-www-form-urlencoded" => fields_to_json(form_fields(&body, limits)?, limits)?,
        "multipart/form-data" => {
            let stream =
                futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
            fields_to_json(multipart_fields(headers, stream, limits).await?, limits)?
        }
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

/// The shape of a JSON text, found without allocating: its deepest nesting and how many
/// values it has at most (containers and separators, outside strings).
fn json_shape(text: &[u8]) -> (usize, usize) {
    let (mut depth, mut deepest, mut items) = (0usize, 0usize, 1usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
                items += 1;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' => items += 1,
            _ => {}
        }
    }
    (deepest, items)
}

/// JSON within the bounds (checked before anything is built), with the place of a syntax
/// error in the message.
pub fn parse_json(body: &[u8], limits: &ParseLimits) -> ApiResult<Value> {
    let (depth, items) = json_shape(body);
    if depth > MAX_DEPTH {
        return Err(ApiError::malformed(format!(
            "the JSON nests {depth} levels deep; at most {MAX_DEPTH} are accepted"
        )));
    }
    if items > limits.max_items {
        return Err(ApiError::malformed(format!(
            "the JSON has more than {} values; at most that many are accepted",
            limits.max_items
        )));
    }
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
    /// A multipart part sent as `application/json`: its value as it is.
    Json(Value),
    File {
        filename: String,
        content: Bytes,
    },
}

fn too_many_fields(limits: &ParseLimits) -> ApiError {
    ApiError::malformed(format!(
        "the body has more than {} fields; at most that many are accepted",
        limits.max_items
    ))
}

/// A field name within the bounds: not too long, not nested too deep.
fn check_name(name: &str) -> ApiResult<()> {
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

/// The fields of a multipart body (the one multipart parser), counted and checked as they
/// come.
pub async fn multipart_fields<S>(
    headers: &HeaderMap,
    stream: S,
    limits: &ParseLimits,
) -> ApiResult<Vec<(String, Field)>>
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let mut multipart = multipart_reader(headers, stream)?;
    let mut out = Vec::new();
    let bad = |e: multer::Error| ApiError::malformed(format!("multipart body: {e}"));
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        if out.len() >= limits.max_items {
            return Err(too_many_fields(limits));
        }
        let name = field.name().unwrap_or_default().to_string();
        check_name(&name)?;
        let json = field
            .content_type()
            .is_some_and(|m| m.essence_str() == "application/json");
        match field.file_name().map(str::to_string) {
            Some(filename) => {
                let content = field.bytes().await.map_err(bad)?;
                out.push((name, Field::File { filename, content }));
            }
            None if json => {
                let bytes = field.bytes().await.map_err(bad)?;
                out.push((name, Field::Json(parse_json(&bytes, limits)?)));
            }
            None => out.push((name, Field::Text(field.text().await.map_err(bad)?))),
        }
    }
    Ok(out)
}

fn multipart_reader<S>(headers: &HeaderMap, stream: S) -> ApiResult<multer::Multipart<'static>>
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::malformed(format!("multipart body: {e}")))?;
    Ok(multer::Multipart::new(stream, boundary))
}

/// A multipart body streamed as it arrives: the part named `file_part` goes into `file` (at
/// most `limit` bytes), the other parts (small text fields) are returned. False in the
/// second value when there was no such part.
pub async fn save_multipart(
    headers: &HeaderMap,
    body: Incoming,
    limit: u64,
    limits: &ParseLimits,
    file_part: &str,
    file: &mut tokio::fs::File,
) -> ApiResult<(Vec<(String, String)>, bool)> {
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let stall = limits.stall;
    let stream = BodyDataStream::new(body)
        .map_err(|e| std::io::Error::other(format!("reading the body: {e}")))
        .into_stream();
    let stream = tokio_stream_timeout(stream, stall);
    let mut multipart = multipart_reader(headers, stream)?;
    let bad = |e: multer::Error| match e {
        multer::Error::StreamReadFailed(inner) if inner.to_string().contains("stalled") => {
            ApiError::too_slow(inner.to_string())
        }
        e => ApiError::malformed(format!("multipart body: {e}")),
    };
    let (mut fields, mut saved, mut got_file) = (Vec::new(), 0u64, false);
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        check_name(&name)?;
        if name == file_part {
            got_file = true;
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                saved += chunk.len() as u64;
                if saved > limit {
                    return Err(ApiError::too_large(limit));
                }
                file.write_all(&chunk).await?;
            }
            continue;
        }
        if fields.len() >= limits.max_items {
            return Err(too_many_fields(limits));
        }
        let mut text = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            if text.len() + chunk.len() > MAX_TEXT_FIELD {
                return Err(ApiError::malformed(format!(
                    "field '{name}' is longer than {MAX_TEXT_FIELD} bytes"
                )));
            }
            text.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(text)
            .map_err(|_| ApiError::malformed(format!("field '{name}' is not UTF-8 text")))?;
        fields.push((name, text));
    }
    file.flush().await?;
    Ok((fields, got_file))
}

/// Longest text field of a streamed multipart body.
const MAX_TEXT_FIELD: usize = 64 * 1024;

/// A stream whose every item must arrive within `stall`.
fn tokio_stream_timeout<S>(
    stream: S,
    stall: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    futures_util::stream::unfold(stream, move |mut s| async move {
        use futures_util::StreamExt;
        match tokio::time::timeout(stall, s.next()).await {
            Ok(Some(item)) => Some((item, s)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::other(format!(
                    "the body stalled: nothing arrived for {} s",
                    stall.as_secs()
                ))),
                s,
            )),
        }
    })
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

/// A path on the host that a body was saved to, removed when dropped (an upload that failed
/// or was refused leaves nothing behind).
pub struct Received {
    pub path: std::path::PathBuf,
}

impl Drop for Received {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl AsRef<Path> for Received {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
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
            let map = parse_object(&headers(ct), body.clone(), &LIMITS)
                .await
                .unwrap();
            assert_eq!(map["environment"], "busybox", "{ct}");
            assert_eq!(map["start"], true, "{ct}");
        }
        // A real form stays a form.
        let form = Bytes::from_static(b"environment=busybox&start=true");
        let map = parse_object(&headers("application/x-www-form-urlencoded"), form, &LIMITS)
            .await
            .unwrap();
        assert_eq!(map["environment"], "busybox");
        // Broken JSON sent as a form says what to send.
        let e = parse_object(
            &headers("application/x-www-form-urlencoded"),
            Bytes::from_static(b"{\"environment\": "),
            &LIMITS,
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
            let e = parse_object(&headers(ct), Bytes::from_static(body), &LIMITS)
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
        let e = parse_json(b"{\n  \"a\": ,\n}", &LIMITS).unwrap_err();
        assert!(e.message.contains("line 2"), "{}", e.message);
    }

    #[test]
    fn parsers_are_bounded_before_they_build() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse_json(deep.as_bytes(), &LIMITS)
            .unwrap_err()
            .message
            .contains("nests"));
        // Brackets inside strings are text, not nesting.
        let text = format!("{{\"a\": \"{}\"}}", "[".repeat(1000));
        assert!(parse_json(text.as_bytes(), &LIMITS).is_ok());
        let many = format!("[{}0]", "0,".repeat(200));
        assert!(parse_json(many.as_bytes(), &LIMITS)
            .unwrap_err()
            .message
            .contains("values"));
        // The name that crashed the server (20,000 levels, ~60 KB) and a short deep one.
        for (levels, says) in [(20_000, "longer"), (MAX_NAME_DEPTH + 1, "nests")] {
            let name = format!("x{}=1", "[a]".repeat(levels));
            let e = form_fields(name.as_bytes(), &LIMITS)
                .err()
                .expect("refused");
            assert!(e.message.contains(says), "{}", e.message);
        }
        let fields = "a=1&".repeat(200);
        assert!(form_fields(fields.as_bytes(), &LIMITS).is_err());
    }
}
