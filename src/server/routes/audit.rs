//! `GET /audit`: the audit log, newest first, paged — master token only (the route table says
//! so). Every state-changing request is in it (`server/observe.rs` writes it), refused ones
//! too.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::app::App;
use crate::auth::Principal;
use crate::server::errors::ApiResult;
use crate::server::http::{json_response, Req, Resp};
use crate::server::views;

pub async fn list(app: Arc<App>, req: Req, _: Principal) -> ApiResult<Resp> {
    let limit = req.query_number("limit", 50, 1000)?;
    let offset = req.query_number("offset", 0, i64::MAX)?;
    let (rows, total) = app.store.list_audit(limit, offset).await?;
    let items: Vec<Value> = rows.iter().map(views::audit_entry).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "items": items, "paging": { "limit": limit, "offset": offset, "total": total } }),
    ))
}
