//! `GET /metrics`: the metrics in Prometheus' text format (OpenMetrics), without a token as
//! Prometheus scrapes (they name routes, environments and counts, never a secret). The
//! gauges that are facts of the store, the scheduler and the warm pool are read now.

use std::sync::Arc;

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;

use crate::app::App;
use crate::server::errors::ApiResult;
use crate::server::http::{full, Req, Resp};
use crate::telemetry::metrics;

pub async fn scrape(app: Arc<App>, _: Req) -> ApiResult<Resp> {
    let depth = app.store.queue_depth().await?;
    for (envid, ready) in app.exec.prepared() {
        app.metrics.set_prepared(&envid, ready as i64);
    }
    let text = app.metrics.encode(
        depth,
        app.exec.slots(),
        app.exec.slots_busy(),
        app.exec.pool_runs(),
    );
    let mut resp = Response::new(full(text));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
