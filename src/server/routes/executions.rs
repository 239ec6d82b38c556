//! Executions (the PIFOP lifecycle): create (optionally start and wait), upload input while
//! `pending`, start, stop, get (with `include_log`), list, download an output, delete; for a
//! group, the same per program (`…/programs/{n}/…`) and the captured traffic of its pipes.
//! The execution domain (`crate::exec`) does the work.

use std::sync::Arc;

use hyper::StatusCode;
use sandbox::RelPath;
use serde_json::json;

use crate::app::App;
use crate::auth::Principal;
use crate::error::blocking;
use crate::server::errors::{ApiError, ApiResult};
use crate::server::http::{bytes_response, file_response, json_response, Req, Resp};
use crate::server::observe;
use crate::server::requests::{new_execution, Mode};
use crate::server::views;

/// The `{path}` of the route (its last parameter); a path that leaves the work dir is a 400,
/// once the execution is known to exist for the caller (404 first).
async fn path_param(app: &App, req: &Req, who: &Principal) -> ApiResult<RelPath> {
    match RelPath::parse(req.params.last().map_or("", String::as_str)) {
        Ok(rel) => Ok(rel),
        Err(e) => {
            app.exec.get(who, req.param(0)).await?;
            Err(ApiError::bad_path(e.to_string()))
        }
    }
}

pub async fn create(app: Arc<App>, mut req: Req, who: Principal) -> ApiResult<Resp> {
    let body = req.read_object(app.cfg.max_body).await?;
    let new = new_execution(body, &app.cfg.callbacks.allow)?;
    let row = app.exec.create(&who, new).await?;
    let mut resp = json_response(
        StatusCode::CREATED,
        &views::execution(&app, &row, true).await,
    );
    observe::set_target(&mut resp, row.id);
    Ok(resp)
}

pub async fn get(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let include_log = req.query_bool("include_log", true)?;
    let row = app.exec.get(&who, req.param(0)).await?;
    Ok(json_response(
        StatusCode::OK,
        &views::execution(&app, &row, include_log).await,
    ))
}

pub async fn list(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let limit = req.query_number("limit", 20, 100)?;
    let offset = req.query_number("offset", 0, i64::MAX)?;
    let (rows, total) = app.exec.list(&who, limit, offset).await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(views::execution(&app, row, false).await);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "items": items, "paging": { "limit": limit, "offset": offset, "total": total } }),
    ))
}

/// `{n}` of `…/programs/{n}/…`: `None` on the routes of one program.
fn program_param(req: &Req) -> ApiResult<Option<usize>> {
    if req.params.len() < 3 {
        return Ok(None);
    }
    req.param(1)
        .parse()
        .map(Some)
        .map_err(|_| ApiError::not_found(format!("no program '{}'", req.param(1))))
}

pub async fn upload_input(app: Arc<App>, mut req: Req, who: Principal) -> ApiResult<Resp> {
    let id = req.param(0).to_string();
    let rel = path_param(&app, &req, &who).await?;
    let dir = app.exec.input_dir(&who, &id, program_param(&req)?).await?;
    let mode = match req.query("mode") {
        None => 0o644,
        Some(m) => {
            Mode::parse(m)
                .ok_or_else(|| {
                    ApiError::bad_request("query parameter 'mode' must be octal bits, e.g. 755")
                })?
                .0
        }
    };
    let bytes = req.read_body(app.cfg.max_body).await?;
    let (size, shown) = (bytes.len(), rel.to_string());
    blocking(move || Ok(dir.write_input(&rel, &bytes, mode)?)).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": id, "path": shown, "size": size }),
    ))
}

pub async fn start(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let wait = req.query_bool("wait", false)?;
    let row = app.exec.start(&who, req.param(0), wait).await?;
    Ok(json_response(
        StatusCode::OK,
        &views::execution(&app, &row, true).await,
    ))
}

pub async fn stop(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let row = app.exec.stop(&who, req.param(0)).await?;
    Ok(json_response(
        StatusCode::OK,
        &views::execution(&app, &row, true).await,
    ))
}

pub async fn delete(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let row = app.exec.delete(&who, req.param(0)).await?;
    Ok(json_response(
        StatusCode::OK,
        &views::execution(&app, &row, false).await,
    ))
}

pub async fn output(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let rel = path_param(&app, &req, &who).await?;
    let bytes = app
        .exec
        .output(&who, req.param(0), program_param(&req)?, &rel)
        .await?;
    Ok(bytes_response("application/octet-stream", bytes))
}

/// `GET /executions/{id}/pipes/{n}`: what passed through a captured pipe (up to its cap).
pub async fn pipe(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let n: usize = match req.param(1).parse() {
        Ok(n) => n,
        Err(_) => {
            app.exec.get(&who, req.param(0)).await?;
            return Err(ApiError::not_found(format!("no pipe '{}'", req.param(1))));
        }
    };
    let file = app.exec.pipe_capture(&who, req.param(0), n).await?;
    let len = file.metadata().await?.len();
    Ok(file_response(file, len, "application/octet-stream"))
}
