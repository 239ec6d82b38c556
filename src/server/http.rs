//! The HTTP toolbox every handler uses: the request as handlers see it, and responses.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Response, StatusCode};
use serde_json::{Map, Value};

use super::body::{self, Budget, Held, ParseLimits};
use super::errors::{ApiError, ApiResult};
use crate::config::ServerConfig;

pub type Body = BoxBody<Bytes, Infallible>;
pub type Resp = Response<Body>;

/// What every request is bounded by: parsing, and the memory bodies read whole may take.
pub struct RequestBounds {
    pub parse: ParseLimits,
    pub budget: Budget,
}

impl RequestBounds {
    pub fn new(cfg: &ServerConfig) -> RequestBounds {
        let stall = cfg.connections.idle_timeout;
        // Room for every file an execution may hold, each as {content, encoding, mode}.
        let files = usize::try_from(cfg.policy.quotas.max_files).unwrap_or(usize::MAX);
        RequestBounds {
            parse: ParseLimits {
                max_items: files.saturating_mul(8).saturating_add(1000).max(20_000),
                stall,
            },
            budget: Budget::new(cfg.body_memory, stall),
        }
    }
}

/// One request, as the handlers see it.
pub struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    /// The `{…}` parts of the route, in order, percent-decoded.
    pub params: Vec<String>,
    /// Taken by the handler that reads it.
    pub body: Option<Incoming>,
    pub bounds: Arc<RequestBounds>,
    /// The memory its body holds while the request is handled.
    pub held: Held,
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

    /// A boolean query parameter: `true` or `false`, as the OpenAPI document says.
    pub fn query_bool(&self, name: &str, default: bool) -> ApiResult<bool> {
        match self.query(name) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
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

    /// The whole body, at most `limit` bytes (413 beyond), held in memory.
    pub async fn read_body(&mut self, limit: u64) -> ApiResult<Bytes> {
        match self.body.take() {
            Some(b) => {
                body::read_limited(
                    &self.headers,
                    b,
                    limit,
                    self.bounds.parse.stall,
                    &mut self.held,
                )
                .await
            }
            None => Ok(Bytes::new()),
        }
    }

    /// The body as a JSON object, whichever encoding it came in.
    pub async fn read_object(&mut self, limit: u64) -> ApiResult<Map<String, Value>> {
        let bytes = self.read_body(limit).await?;
        body::parse_object(&self.headers, bytes, &self.bounds.parse).await
    }

    /// The token: `Authorization: Bearer …` (the scheme in any case), else
    /// `?access_token=…`.
    pub fn token(&self) -> Option<String> {
        if let Some(value) = self
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if let Some((scheme, token)) = value.trim().split_once(' ') {
                if scheme.eq_ignore_ascii_case("bearer") {
                    return Some(token.trim().to_string());
                }
            }
        }
        self.query("access_token").map(str::to_string)
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A body streamed from `chunks` as they come (each read only when the client takes more).
pub fn stream_body<S>(chunks: S) -> Body
where
    S: futures_util::Stream<Item = Bytes> + Send + 'static,
{
    Unshared {
        chunks: std::sync::Mutex::new(Box::pin(chunks)),
    }
    .boxed()
}

/// A body over a stream that is `Send` but not `Sync` (it awaits the store). A body is only
/// polled through `&mut`, so the mutex is never locked: it only makes the body `Sync`, as a
/// boxed body must be.
struct Unshared<S> {
    chunks: std::sync::Mutex<std::pin::Pin<Box<S>>>,
}

impl<S: futures_util::Stream<Item = Bytes>> hyper::body::Body for Unshared<S> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let chunks = self
            .get_mut()
            .chunks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        chunks
            .as_mut()
            .poll_next(cx)
            .map(|c| c.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

pub fn json_response(status: StatusCode, value: &Value) -> Resp {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A file streamed from disk as it is read (never whole in memory), `len` bytes.
pub fn file_response(content_type: &'static str, file: tokio::fs::File, len: u64) -> Resp {
    use futures_util::StreamExt;
    let chunks = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).map(|chunk| {
        // A read error mid-way can't become a status any more: end the body short, which
        // the client sees as a truncated download (Content-Length says how long it was).
        Ok::<_, Infallible>(hyper::body::Frame::data(chunk.unwrap_or_default()))
    });
    let mut resp = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(chunks)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
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
