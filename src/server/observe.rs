//! What the server notes about every request once it is answered: its id (made here, echoed
//! as `X-Request-Id`), one log line (method, route, path, status, duration, who), the HTTP
//! metrics (by route pattern and status) and, for a state-changing request, a row in the
//! audit log. The query string and the headers are never logged: tokens travel there.

use std::net::SocketAddr;
use std::time::Instant;

use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;

use super::http::Resp;
use crate::app::App;
use crate::clock::Micros;
use crate::store::AuditRow;
use crate::telemetry::metrics::{method_label, NO_ROUTE};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `who` of a request without a valid token (a key's owner is `key:<name>`, never this).
pub const ANONYMOUS: &str = "anonymous";

/// A fresh request id.
pub fn new_request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

/// The id a handler acted on when the path does not name it (the one it created); a
/// handler puts it on its response, and the audit log takes it from there.
#[derive(Debug, Clone)]
pub struct Target(pub String);

pub fn set_target(resp: &mut Resp, id: impl Into<String>) {
    resp.extensions_mut().insert(Target(id.into()));
}

/// Does this method change state (and so go to the audit log)?
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A request as it came in.
pub struct Arrival {
    pub id: String,
    pub at: Micros,
    pub started: Instant,
    pub method: Method,
    pub path: String,
    pub peer: Option<SocketAddr>,
}

/// What the router learned while answering it.
#[derive(Debug, Default)]
pub struct Routed {
    /// The pattern of the route that answered (`None`: no route did).
    pub route: Option<&'static str>,
    /// The principal's owner name, once a token was accepted.
    pub who: Option<String>,
    /// The first `{…}` of the path (the resource acted on).
    pub target: Option<String>,
}

/// Logs, counts and (for a state-changing request) audits an answered request, and puts its
/// id on the answer.
pub async fn finish(app: &App, arrival: Arrival, routed: Routed, resp: &mut Resp) {
    let status = resp.status().as_u16();
    let seconds = arrival.started.elapsed().as_secs_f64();
    let route = routed.route.unwrap_or(NO_ROUTE);
    let method = method_label(&arrival.method);
    let who = routed.who.as_deref().unwrap_or(ANONYMOUS);
    app.metrics.http_request(method, route, status, seconds);
    tracing::info!(
        target: "sandpit::http",
        request_id = %arrival.id,
        method = %arrival.method,
        route,
        path = %arrival.path,
        status,
        duration_ms = seconds * 1e3,
        who,
        "request"
    );
    if routed.route.is_some() && changes_state(&arrival.method) {
        let target = resp
            .extensions()
            .get::<Target>()
            .map(|t| t.0.clone())
            .or(routed.target);
        let row = AuditRow {
            request_id: arrival.id.clone(),
            at: arrival.at,
            who: who.to_string(),
            peer: arrival.peer.map(|p| p.ip().to_string()),
            method: arrival.method.to_string(),
            route: route.to_string(),
            target,
            status,
        };
        if let Err(e) = app.store.insert_audit(&row).await {
            app.metrics.audit_failed();
            tracing::error!(
                target: "sandpit::http",
                request_id = %arrival.id,
                "storing the audit row: {e}"
            );
        }
    }
    if let Ok(v) = HeaderValue::from_str(&arrival.id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
}
