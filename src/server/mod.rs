//! `sandpit serve`: the HTTP execution API on hyper. One route table ([`ROUTES`]) drives both
//! the router and the OpenAPI test, so the document can't drift from what is served.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sandbox::Sandbox;
use tokio::net::TcpListener;

use crate::env::EnvStore;
use crate::scheduler::Scheduler;
use crate::store::Store;

pub mod api_keys;
pub mod auth;
pub mod body;
pub mod environments;
pub mod errors;
pub mod executions;
pub mod live_log;
pub mod openapi;

use errors::{code, ApiError, ApiResult};

pub type Body = BoxBody<Bytes, Infallible>;
pub type Resp = Response<Body>;

/// How the server was started.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub slots: usize,
    /// Largest request body (JSON, form, multipart, input upload).
    pub max_body: u64,
    /// Largest environment upload (an OCI archive).
    pub max_upload: u64,
    /// Environments served from a plain root filesystem directory (envid → dir).
    pub dir_envs: Vec<(String, PathBuf)>,
    /// This node's name in the store (the single server: "local").
    pub node: String,
}

/// Everything a request handler needs.
pub struct App {
    pub cfg: ServerConfig,
    pub store: Arc<dyn Store>,
    pub envs: Arc<EnvStore>,
    pub engine: Arc<Sandbox>,
    pub master_token: String,
    pub sched: Scheduler,
    /// Serialises "count the key's executions, then queue one" so max_executions holds.
    pub admission: tokio::sync::Mutex<()>,
}

impl App {
    pub fn executions_dir(&self) -> PathBuf {
        self.cfg.data.join("executions")
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
}

impl Req {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
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

    /// The whole body, at most `limit` bytes (413 beyond).
    pub async fn read_body(&mut self, limit: u64) -> ApiResult<Bytes> {
        match self.body.take() {
            Some(b) => body::read_limited(&self.headers, b, limit).await,
            None => Ok(Bytes::new()),
        }
    }

    /// The body as a JSON object, whichever encoding it came in.
    pub async fn read_object(
        &mut self,
        limit: u64,
    ) -> ApiResult<serde_json::Map<String, serde_json::Value>> {
        let bytes = self.read_body(limit).await?;
        body::parse_object(&self.headers, bytes).await
    }

    pub async fn auth(&self, app: &App) -> ApiResult<auth::Principal> {
        auth::authenticate(app, &self.headers, &self.query).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handler {
    OpenApi,
    ListKeys,
    CreateKey,
    DeleteKey,
    ListEnvs,
    ImportEnv,
    GetEnv,
    DeleteEnv,
    ListExecs,
    CreateExec,
    GetExec,
    DeleteExec,
    UploadInput,
    Start,
    Stop,
    Output,
    Log,
}

/// Every route served: method, path pattern (`{name}` is one segment; a last `{path}` is the
/// rest of the path, slashes included), handler. The OpenAPI document lists exactly these.
pub const ROUTES: &[(&str, &str, Handler)] = &[
    ("GET", "/api/v1/openapi.json", Handler::OpenApi),
    ("GET", "/api/v1/api_keys", Handler::ListKeys),
    ("POST", "/api/v1/api_keys", Handler::CreateKey),
    ("DELETE", "/api/v1/api_keys/{name}", Handler::DeleteKey),
    ("GET", "/api/v1/environments", Handler::ListEnvs),
    ("POST", "/api/v1/environments", Handler::ImportEnv),
    ("GET", "/api/v1/environments/{envid}", Handler::GetEnv),
    ("DELETE", "/api/v1/environments/{envid}", Handler::DeleteEnv),
    ("GET", "/api/v1/executions", Handler::ListExecs),
    ("POST", "/api/v1/executions", Handler::CreateExec),
    ("GET", "/api/v1/executions/{id}", Handler::GetExec),
    ("DELETE", "/api/v1/executions/{id}", Handler::DeleteExec),
    (
        "PUT",
        "/api/v1/executions/{id}/input/{path}",
        Handler::UploadInput,
    ),
    (
        "POST",
        "/api/v1/executions/{id}/input/{path}",
        Handler::UploadInput,
    ),
    ("POST", "/api/v1/executions/{id}/start", Handler::Start),
    ("POST", "/api/v1/executions/{id}/stop", Handler::Stop),
    (
        "GET",
        "/api/v1/executions/{id}/output/{path}",
        Handler::Output,
    ),
    ("GET", "/api/v1/executions/{id}/log", Handler::Log),
];

fn percent_decode(s: &str) -> Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(())?;
            let hex = std::str::from_utf8(hex).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// Matches a path against a pattern; returns the decoded parameters.
fn match_route(pattern: &str, path: &str) -> Option<Vec<String>> {
    let pat: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut params = Vec::new();
    for (i, p) in pat.iter().enumerate() {
        if *p == "{path}" && i == pat.len() - 1 {
            let rest = segs.get(i..)?;
            if rest.is_empty() || rest.iter().all(|s| s.is_empty()) {
                return None;
            }
            let decoded: Result<Vec<String>, ()> = rest.iter().map(|s| percent_decode(s)).collect();
            params.push(decoded.ok()?.join("/"));
            return Some(params);
        }
        let seg = segs.get(i)?;
        if p.starts_with('{') {
            if seg.is_empty() {
                return None;
            }
            params.push(percent_decode(seg).ok()?);
        } else if p != seg {
            return None;
        }
    }
    (segs.len() == pat.len()).then_some(params)
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Resp {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
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

async fn dispatch(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let mut allowed = Vec::new();
    for (method, pattern, handler) in ROUTES {
        let Some(params) = match_route(pattern, &path) else {
            continue;
        };
        if parts.method.as_str() != *method {
            allowed.push(*method);
            continue;
        }
        let req = Req {
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            query,
            params,
            body: Some(body),
        };
        return match call(app, *handler, req).await {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        };
    }
    if allowed.is_empty() {
        error_response(&ApiError::new(
            StatusCode::NOT_FOUND,
            code::NO_ROUTE,
            format!("no route {path}"),
        ))
    } else {
        let mut resp = error_response(&ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            code::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {path}", parts.method),
        ));
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            resp.headers_mut().insert(ALLOW, v);
        }
        resp
    }
}

async fn call(app: Arc<App>, handler: Handler, req: Req) -> ApiResult<Resp> {
    match handler {
        Handler::OpenApi => Ok(openapi::serve()),
        Handler::ListKeys => api_keys::list(&app, req).await,
        Handler::CreateKey => api_keys::create(&app, req).await,
        Handler::DeleteKey => api_keys::delete(&app, req).await,
        Handler::ListEnvs => environments::list(&app, req).await,
        Handler::ImportEnv => environments::import(&app, req).await,
        Handler::GetEnv => environments::get(&app, req).await,
        Handler::DeleteEnv => environments::delete(&app, req).await,
        Handler::ListExecs => executions::list(&app, req).await,
        Handler::CreateExec => executions::create(&app, req).await,
        Handler::GetExec => executions::get(&app, req).await,
        Handler::DeleteExec => executions::delete(&app, req).await,
        Handler::UploadInput => executions::upload_input(&app, req).await,
        Handler::Start => executions::start(&app, req).await,
        Handler::Stop => executions::stop(&app, req).await,
        Handler::Output => executions::output(&app, req).await,
        Handler::Log => live_log::follow(app, req).await,
    }
}

/// Serves until the process ends. Prints `listening on http://ADDR` once the socket is bound.
pub async fn serve(app: Arc<App>, listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment, keep serving.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(dispatch(app, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection: {e}");
            }
        });
    }
}

/// Environments served from plain directories, by id.
pub fn dir_env_map(cfg: &ServerConfig) -> HashMap<&str, &PathBuf> {
    cfg.dir_envs.iter().map(|(k, v)| (k.as_str(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::match_route;

    #[test]
    fn routes_match() {
        assert_eq!(
            match_route("/api/v1/executions/{id}", "/api/v1/executions/e1"),
            Some(vec!["e1".into()])
        );
        assert_eq!(
            match_route(
                "/api/v1/executions/{id}/output/{path}",
                "/api/v1/executions/e1/output/a/b%20c"
            ),
            Some(vec!["e1".into(), "a/b c".into()])
        );
        assert_eq!(
            match_route("/api/v1/executions/{id}", "/api/v1/executions/"),
            None
        );
        assert_eq!(
            match_route("/api/v1/executions", "/api/v1/executions/x"),
            None
        );
    }
}
