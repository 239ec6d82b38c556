//! The route table: every route served, with the token it needs and its handler. One table
//! drives the router and the OpenAPI test (paths, methods and security), so the document
//! can't drift from what is served. Authentication happens here, once, before any handler.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, Request, StatusCode};
use tracing::Instrument;

use super::errors::{code, ApiError, ApiResult};
use super::http::{error_response, Req, RequestBounds, Resp};
use super::observe::{self, Arrival, Routed};
use super::openapi;
use super::routes::{
    api_keys, audit, callbacks, console, environments, executions, files, live_log, metrics,
    projects, submissions,
};
use crate::app::App;
use crate::auth::{authenticate, Principal};
use crate::clock::Micros;

type Reply = Pin<Box<dyn Future<Output = ApiResult<Resp>> + Send>>;

/// The token a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// None at all.
    None,
    /// The master token or any API key.
    Key,
    /// The master token only; the text says what a key may not do ("create API keys").
    Master(&'static str),
    /// The master token, or an API key allowed to manage projects (`manage_projects`).
    ProjectManager(&'static str),
}

#[derive(Clone, Copy)]
enum Handler {
    Open(fn(Arc<App>, Req) -> Reply),
    Authed(fn(Arc<App>, Req, Principal) -> Reply),
}

pub struct Route {
    pub method: Method,
    /// `{name}` is one segment; a last `{path}` is the rest of the path, slashes included.
    pub pattern: &'static str,
    pub auth: Auth,
    handler: Handler,
}

const fn open(method: Method, pattern: &'static str, f: fn(Arc<App>, Req) -> Reply) -> Route {
    Route {
        method,
        pattern,
        auth: Auth::None,
        handler: Handler::Open(f),
    }
}

const fn key(
    method: Method,
    pattern: &'static str,
    f: fn(Arc<App>, Req, Principal) -> Reply,
) -> Route {
    Route {
        method,
        pattern,
        auth: Auth::Key,
        handler: Handler::Authed(f),
    }
}

const fn master(
    method: Method,
    pattern: &'static str,
    what: &'static str,
    f: fn(Arc<App>, Req, Principal) -> Reply,
) -> Route {
    Route {
        method,
        pattern,
        auth: Auth::Master(what),
        handler: Handler::Authed(f),
    }
}

const fn manager(
    method: Method,
    pattern: &'static str,
    what: &'static str,
    f: fn(Arc<App>, Req, Principal) -> Reply,
) -> Route {
    Route {
        method,
        pattern,
        auth: Auth::ProjectManager(what),
        handler: Handler::Authed(f),
    }
}

/// A handler function as a table entry.
macro_rules! h {
    ($f:path) => {
        |a, r, w| Box::pin($f(a, r, w))
    };
}

/// Every route served. The OpenAPI document lists exactly these.
#[rustfmt::skip]
pub static ROUTES: &[Route] = &[
    open(Method::GET, "/", |a, r| Box::pin(console::index(a, r))),
    open(Method::GET, "/console/{file}", |a, r| Box::pin(console::asset(a, r))),
    open(Method::GET, "/metrics", |a, r| Box::pin(metrics::scrape(a, r))),
    open(Method::GET, "/api/v1/openapi.json", |a, _| Box::pin(openapi::serve(a))),
    master(Method::GET, "/api/v1/audit", "read the audit log", h!(audit::list)),
    master(Method::GET, "/api/v1/api_keys", "list API keys", h!(api_keys::list)),
    master(Method::POST, "/api/v1/api_keys", "create API keys", h!(api_keys::create)),
    master(Method::DELETE, "/api/v1/api_keys/{name}", "delete API keys", h!(api_keys::delete)),
    key(Method::GET, "/api/v1/environments", h!(environments::list)),
    master(Method::POST, "/api/v1/environments", "import environments", h!(environments::import)),
    key(Method::GET, "/api/v1/environments/{envid}", h!(environments::get)),
    master(Method::DELETE, "/api/v1/environments/{envid}", "delete environments", h!(environments::delete)),
    key(Method::GET, "/api/v1/executions", h!(executions::list)),
    key(Method::POST, "/api/v1/executions", h!(executions::create)),
    key(Method::GET, "/api/v1/executions/{id}", h!(executions::get)),
    key(Method::DELETE, "/api/v1/executions/{id}", h!(executions::delete)),
    key(Method::PUT, "/api/v1/executions/{id}/input/{path}", h!(executions::upload_input)),
    key(Method::POST, "/api/v1/executions/{id}/input/{path}", h!(executions::upload_input)),
    key(Method::POST, "/api/v1/executions/{id}/start", h!(executions::start)),
    key(Method::POST, "/api/v1/executions/{id}/stop", h!(executions::stop)),
    key(Method::GET, "/api/v1/executions/{id}/output/{path}", h!(executions::output)),
    key(Method::GET, "/api/v1/executions/{id}/log", h!(live_log::follow)),
    key(Method::GET, "/api/v1/executions/{id}/callbacks", h!(callbacks::of_execution)),
    key(Method::PUT, "/api/v1/executions/{id}/programs/{n}/input/{path}", h!(executions::upload_input)),
    key(Method::POST, "/api/v1/executions/{id}/programs/{n}/input/{path}", h!(executions::upload_input)),
    key(Method::GET, "/api/v1/executions/{id}/programs/{n}/output/{path}", h!(executions::output)),
    key(Method::GET, "/api/v1/executions/{id}/pipes/{n}", h!(executions::pipe)),
    key(Method::GET, "/api/v1/files", h!(files::list)),
    key(Method::GET, "/api/v1/files/{id}", h!(files::download)),
    key(Method::DELETE, "/api/v1/files/{id}", h!(files::delete)),
    key(Method::GET, "/api/v1/projects", h!(projects::list)),
    manager(Method::POST, "/api/v1/projects", "create projects", h!(projects::create)),
    key(Method::GET, "/api/v1/projects/{id}", h!(projects::get)),
    manager(Method::PUT, "/api/v1/projects/{id}", "replace projects", h!(projects::replace)),
    manager(Method::DELETE, "/api/v1/projects/{id}", "delete projects", h!(projects::delete)),
    key(Method::GET, "/api/v1/submissions", h!(submissions::list)),
    key(Method::POST, "/api/v1/submissions", h!(submissions::create)),
    key(Method::POST, "/api/v1/submissions/batch", h!(submissions::batch)),
    key(Method::GET, "/api/v1/submissions/{id}", h!(submissions::get)),
    key(Method::DELETE, "/api/v1/submissions/{id}", h!(submissions::delete)),
    key(Method::GET, "/api/v1/submissions/{id}/progress", h!(submissions::progress)),
    key(Method::GET, "/api/v1/submissions/{id}/callbacks", h!(callbacks::of_submission)),
];

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
            let decoded: Option<Vec<String>> = rest.iter().map(|s| percent_decode(s)).collect();
            params.push(decoded?.join("/"));
            return Some(params);
        }
        let seg = segs.get(i)?;
        if p.starts_with('{') {
            if seg.is_empty() {
                return None;
            }
            params.push(percent_decode(seg)?);
        } else if p != seg {
            return None;
        }
    }
    (segs.len() == pat.len()).then_some(params)
}

/// Checks the token the route needs, then calls its handler. Notes who asked in `routed`.
async fn call(app: Arc<App>, route: &Route, req: Req, routed: &mut Routed) -> ApiResult<Resp> {
    let f = match route.handler {
        Handler::Open(f) => return f(app, req).await,
        Handler::Authed(f) => f,
    };
    let token = req.token();
    let who = authenticate(app.store.as_ref(), &app.master_token, token.as_deref()).await?;
    routed.who = Some(who.owner());
    match route.auth {
        Auth::Master(what) if !who.is_master() => {
            return Err(ApiError::forbidden(format!(
                "only the master token may {what}"
            )));
        }
        Auth::ProjectManager(what) if !who.may_manage_projects() => {
            return Err(ApiError::forbidden(format!(
                "only the master token or an API key with manage_projects may {what}"
            )));
        }
        _ => {}
    }
    f(app, req, who).await
}

/// Answers one request; `peer` is the client's address. Every request gets an id (the
/// answer's `X-Request-Id`), a log line and its metrics; a state-changing one an audit row
/// (`observe.rs`).
pub async fn dispatch(
    app: Arc<App>,
    bounds: &Arc<RequestBounds>,
    req: Request<Incoming>,
    peer: Option<SocketAddr>,
) -> Resp {
    let arrival = Arrival {
        id: observe::new_request_id(),
        at: Micros::now(),
        started: Instant::now(),
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        peer,
    };
    // What handlers log carries the request id.
    let span = tracing::info_span!("request", request_id = %arrival.id);
    async move {
        let mut routed = Routed::default();
        let mut resp = route(app.clone(), bounds, req, &mut routed).await;
        observe::finish(&app, arrival, routed, &mut resp).await;
        resp
    }
    .instrument(span)
    .await
}

/// Most parameters a query string may have (the routes take at most a handful).
const MAX_QUERY_PAIRS: usize = 64;

fn parse_query(query: Option<&str>) -> ApiResult<Vec<(String, String)>> {
    let Some(q) = query else {
        return Ok(Vec::new());
    };
    if q.bytes().filter(|&b| b == b'&').count() >= MAX_QUERY_PAIRS {
        return Err(ApiError::bad_request(format!(
            "the query string has more than {MAX_QUERY_PAIRS} parameters"
        )));
    }
    Ok(form_urlencoded::parse(q.as_bytes()).into_owned().collect())
}

async fn route(
    app: Arc<App>,
    bounds: &Arc<RequestBounds>,
    req: Request<Incoming>,
    routed: &mut Routed,
) -> Resp {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = match parse_query(parts.uri.query()) {
        Ok(q) => q,
        Err(e) => return error_response(&e),
    };
    // HEAD is GET without the body (hyper sends none).
    let method = if parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method.clone()
    };
    // A path that a route matches with fewer parameters is that route's: `/submissions/batch`
    // is not a submission's id, so its methods alone are allowed there.
    let fewest = ROUTES
        .iter()
        .filter_map(|r| match_route(r.pattern, &path).map(|p| p.len()))
        .min();
    let mut allowed = Vec::new();
    for route in ROUTES {
        let Some(params) = match_route(route.pattern, &path) else {
            continue;
        };
        if Some(params.len()) != fewest {
            continue;
        }
        if method != route.method {
            allowed.push(route.method.as_str());
            if route.method == Method::GET {
                allowed.push("HEAD");
            }
            continue;
        }
        routed.route = Some(route.pattern);
        routed.target = params.first().cloned();
        let req = Req {
            method,
            headers: parts.headers,
            query,
            params,
            body: Some(body),
            bounds: bounds.clone(),
            held: bounds.budget.hold(),
        };
        return match call(app, route, req, routed).await {
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

#[cfg(test)]
mod tests {
    use super::{match_route, Auth, Handler, ROUTES};

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
        assert_eq!(match_route("/a/{id}", "/a/%zz"), None);
    }

    #[test]
    fn open_routes_are_exactly_the_ones_without_auth() {
        for r in ROUTES {
            let open = matches!(r.handler, Handler::Open(_));
            assert_eq!(open, r.auth == Auth::None, "{} {}", r.method, r.pattern);
        }
    }
}
