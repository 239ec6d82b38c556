//! Multipart bodies: read whole into fields (small bodies), or streamed with one part saved
//! to a file (environment uploads).

use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::BodyDataStream;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_TYPE};
use tokio::io::AsyncWriteExt;

use super::form::{check_name, too_many_fields};
use super::{declared_length, parse_json, Field, ParseLimits};
use crate::server::errors::{ApiError, ApiResult};

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
