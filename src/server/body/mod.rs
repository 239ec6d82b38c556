//! Request bodies: JSON, form (urlencoded) and multipart, as in the Sphere Engine API, all
//! turned into one JSON value so that each route has one parser. Every parser is bounded
//! before it allocates: in size (413 beyond the configured limit), in the time a body may
//! stall (408), in nesting depth and in the number of values or fields (400 saying which
//! bound). Other content types get 415, malformed JSON 400 saying where.
//!
//! `read.rs` reads a body within its size, time and memory bounds; `json.rs`, `form.rs` and
//! `multipart.rs` parse each encoding; this file picks the parser by content type.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderMap, CONTENT_TYPE};
use serde_json::{Map, Value};

use super::errors::{ApiError, ApiResult};

mod form;
mod json;
mod multipart;
mod read;

pub use form::{fields_to_json, form_fields, Field};
pub use json::parse_json;
pub use multipart::{multipart_fields, save_multipart};
pub use read::{declared_length, read_limited, save_to_file, Budget, Held};

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

/// The media type without parameters, lower case ("" when there is none).
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
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
        "application/x-www-form-urlencoded" | "text/plain" if json::looks_like_json(&body) => {
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
