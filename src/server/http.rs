//! The HTTP toolbox every handler uses: the request as handlers see it, and responses.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use hyper::{Method, Response, StatusCode};
use serde_json::{Map, Value};

use super::body;
use super::errors::{ApiError, ApiResult};

pub type Body = BoxBody<Bytes, Infallible>;
pub type Resp = Response<Body>;

/// One request, as the handlers see it.
pub struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    /// The `{…}` parts of the route, in order, percent-decoded.
    pub params: Vec<String>,
    /// Taken by the handler that reads it.
    pub body: Option<Incoming>,
}

impl Req {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `i`th `{…}` parameter of the route (the router fills in every one its pattern has).
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map_or("", String::as_str)
    }

    /// A boolean query parameter (`true`/`1`/`yes`, `false`/`0`/`no`).
    pub fn query_bool(&self, name: &str, default: bool) -> ApiResult<bool> {
        match self.query(name) {
            None => Ok(default),
            Some("true" | "1" | "yes" | "") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(ApiError::bad_request(format!(
                "query parameter '{name}' must be true or false, not '{other}'"
            ))),
        }
    }

    /// A whole-number query parameter from 0 to `max`.
    pub fn query_number(&self, name: &str, default: i64, max: i64) -> ApiResult<i64> {
        match self.query(name) {
            None => Ok(default),
            Some(t) => match t.parse::<i64>() {
                Ok(n) if (0..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "query parameter '{name}' must be a whole number from 0 to {max}"
                ))),
            },
        }
    }

    /// The whole body, at most `limit` bytes (413 beyond).
    pub async fn read_body(&mut self, limit: u64) -> ApiResult<Bytes> {
        match self.body.take() {
            Some(b) => body::read_limited(&self.headers, b, limit).await,
            None => Ok(Bytes::new()),
        }
    }

    /// The body as a JSON object, whichever encoding it came in.
    pub async fn read_object(&mut self, limit: u64) -> ApiResult<Map<String, Value>> {
        let bytes = self.read_body(limit).await?;
        body::parse_object(&self.headers, bytes).await
    }

    /// The token: `Authorization: Bearer …`, else `?access_token=…`.
    pub fn token(&self) -> Option<String> {
        if let Some(value) = self
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let value = value.trim();
            if let Some(t) = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
            {
                return Some(t.trim().to_string());
            }
        }
        self.query("access_token").map(str::to_string)
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json_response(status: StatusCode, value: &Value) -> Resp {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn bytes_response(content_type: &'static str, bytes: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(full(bytes));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A file streamed from disk in 64 KiB chunks (never read whole into memory), with its length.
pub fn file_response(file: tokio::fs::File, len: u64, content_type: &'static str) -> Resp {
    use tokio::io::AsyncReadExt;
    let stream = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 << 10];
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(buf))),
                    Some(file),
                ))
            }
        }
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

pub fn error_response(e: &ApiError) -> Resp {
    let mut resp = json_response(e.status, &e.body());
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
