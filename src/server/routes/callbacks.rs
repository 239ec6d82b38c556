//! `GET /executions/{id}/callbacks`, `GET /submissions/{id}/callbacks`: their completion callbacks and every attempt
//! (status code, error, time, next attempt). Delivery itself is `crate::callbacks`' work.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::app::App;
use crate::auth::Principal;
use crate::callbacks::Subject;
use crate::server::errors::ApiResult;
use crate::server::http::{json_response, Req, Resp};
use crate::server::views;

pub async fn of_execution(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    // 404 unless the caller may see the execution.
    let row = app.exec.get(&who, req.param(0)).await?;
    list(&app, &Subject::Execution(row.id)).await
}

/// `GET /submissions/{id}/callbacks`.
pub async fn of_submission(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let row = app.judge.get(&who, req.param(0)).await?;
    list(&app, &Subject::Submission(row.id)).await
}

async fn list(app: &App, subject: &Subject) -> ApiResult<Resp> {
    let items: Vec<Value> = app
        .callbacks
        .list(subject)
        .await?
        .iter()
        .map(|(c, attempts)| views::callback(c, attempts))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
}
