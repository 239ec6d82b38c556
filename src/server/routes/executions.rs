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
use crate::exec::workdir::DEFAULT_INPUT_MODE;
use crate::server::body::{self, Received};
use crate::server::errors::{code, ApiError, ApiResult};
use crate::server::http::{file_response, json_response, Req, Resp};
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

/// `PUT …/input/{path}`: the body is received into scratch space as it arrives (never whole
/// in memory), then committed, if the execution is still pending at that moment.
pub async fn upload_input(app: Arc<App>, mut req: Req, who: Principal) -> ApiResult<Resp> {
    let rel = path_param(&app, &req, &who).await?;
    let mode = match req.query("mode") {
        None => DEFAULT_INPUT_MODE,
        Some(m) => {
            Mode::parse(m)
                .ok_or_else(|| {
                    ApiError::bad_request("query parameter 'mode' must be octal bits, e.g. 755")
                })?
                .0
        }
    };
    let target = app
        .exec
        .input_target(&who, req.param(0), program_param(&req)?)
        .await?;
    let max_body = app.cfg.max_body;
    let limit = max_body.min(target.max_bytes);
    let (mut file, path) = app.exec.dirs().scratch_file().await?;
    let received = Received { path };
    let incoming = req
        .body
        .take()
        .ok_or_else(|| ApiError::malformed("no body"))?;
    let size = body::save_to_file(
        &req.headers,
        incoming,
        limit,
        req.bounds.parse.stall,
        &mut file,
        || {
            if limit < max_body {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    code::OVER_QUOTA,
                    format!(
                        "the file does not fit in what this API key may keep on the server \
                         ({limit} bytes left of its max_storage_bytes): delete executions or \
                         files it no longer needs"
                    ),
                )
            } else {
                ApiError::too_large(max_body)
            }
        },
    )
    .await?;
    drop(file);
    let shown = rel.to_string();
    app.exec
        .commit_input(&who, &target, rel, received.path.clone(), size, mode)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": target.id, "path": shown, "size": size }),
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
    let (file, len) = app
        .exec
        .output(&who, req.param(0), program_param(&req)?, &rel)
        .await?;
    Ok(file_response("application/octet-stream", file, len))
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
    Ok(file_response("application/octet-stream", file, len))
}
