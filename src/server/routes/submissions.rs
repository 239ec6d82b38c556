//! Submissions (Sphere Engine Containers): create (JSON with a files map, a multipart form
//! with file parts, or an archive — tar or zip — as the body with `?project_id=`), batch create, get (status 0–22,
//! `executing`, the per-test table, the HwScore report, the streams), list (filters
//! `project`, `status`; paging), delete, and the live progress stream. The judge service
//! (`crate::judge`) does the work.

use std::sync::Arc;

use async_trait::async_trait;
use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;

use crate::app::App;
use crate::auth::Principal;
use crate::judge::events::SubmissionEnded;
use crate::judge::service::{NewSubmission, MAX_BATCH};
use crate::judge::Status;
use crate::server::body;
use crate::server::errors::{ApiError, ApiResult};
use crate::server::http::{json_response, Req, Resp};
use crate::server::requests::{from_body, BatchSubmissions, CreateSubmission};
use crate::server::routes::live_log::{check_format, follow_file, wants_sse, EndWatch};
use crate::server::routes::projects::is_archive;
use crate::server::views;

pub async fn create(app: Arc<App>, mut req: Req, who: Principal) -> ApiResult<Resp> {
    // `?wait=true` answers once graded, whatever the body's encoding.
    let wait_asked = req.query_bool("wait", false)?;
    let mut new = if is_archive(&body::media_type(&req.headers)) {
        let archive = req.read_body(app.cfg.max_body).await?.to_vec();
        NewSubmission {
            project_id: req
                .query("project_id")
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "'project_id' is required (in the query with an archive body)",
                    )
                })?
                .to_string(),
            scenario: req.query("scenario").map(str::to_string),
            files: Vec::new(),
            archive: Some(archive),
            wait: wait_asked,
            // An archive body has no room for one: JSON or a form carries it.
            callback: None,
        }
    } else {
        let map = req.read_object(app.cfg.max_body).await?;
        from_body::<CreateSubmission>(map)?.into_new(&app.cfg.callbacks.allow)?
    };
    new.wait |= wait_asked;
    let row = app.judge.submit(&who, new).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &views::submission(&app, &row, true).await,
    ))
}

/// `{"submissions": [...]}`, each as `POST /submissions` takes it (no `wait`), at most
/// [`MAX_BATCH`]; the answer lists, in order, each submission or why it was refused.
pub async fn batch(app: Arc<App>, mut req: Req, who: Principal) -> ApiResult<Resp> {
    let map = req.read_object(app.cfg.max_body).await?;
    let batch = from_body::<BatchSubmissions>(map)?;
    if batch.submissions.is_empty() || batch.submissions.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "'submissions' holds 1 to {MAX_BATCH} submissions"
        )));
    }
    let mut parsed: Vec<Result<NewSubmission, ApiError>> = Vec::new();
    for (i, item) in batch.submissions.into_iter().enumerate() {
        let one = match item {
            Value::Object(map) => from_body::<CreateSubmission>(map)
                .and_then(|c| c.into_new(&app.cfg.callbacks.allow))
                .and_then(|new| {
                    if new.wait {
                        Err(ApiError::bad_request("'wait' is not available in a batch"))
                    } else {
                        Ok(new)
                    }
                }),
            _ => Err(ApiError::bad_request(format!(
                "'submissions[{i}]' must be an object"
            ))),
        };
        parsed.push(one);
    }
    let (mut order, mut valid) = (Vec::new(), Vec::new());
    for p in parsed {
        match p {
            Ok(new) => {
                order.push(None);
                valid.push(new);
            }
            Err(e) => order.push(Some(e)),
        }
    }
    let mut accepted = app.judge.submit_batch(&who, valid).await.into_iter();
    let mut items = Vec::with_capacity(order.len());
    let mut any = false;
    for refused in order {
        let item = match refused {
            Some(e) => e.body(),
            None => match accepted.next() {
                Some(Ok(row)) => {
                    any = true;
                    views::submission(&app, &row, false).await
                }
                Some(Err(e)) => ApiError::from(e).body(),
                None => ApiError::internal("the batch lost an item").body(),
            },
        };
        items.push(item);
    }
    if !any {
        let first = items
            .first()
            .and_then(|i| i["message"].as_str())
            .unwrap_or_default()
            .to_string();
        let mut e = ApiError::bad_request(format!(
            "no submission of the batch was accepted (the first: {first})"
        ))
        .body();
        e["items"] = Value::Array(items);
        return Ok(json_response(StatusCode::BAD_REQUEST, &e));
    }
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "items": items }),
    ))
}

pub async fn get(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let row = app.judge.get(&who, req.param(0)).await?;
    Ok(json_response(
        StatusCode::OK,
        &views::submission(&app, &row, true).await,
    ))
}

pub async fn list(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let limit = req.query_number("limit", 20, 100)?;
    let offset = req.query_number("offset", 0, i64::MAX)?;
    let status = match req.query("status") {
        None => None,
        Some(text) => Some(
            text.parse::<i64>()
                .ok()
                .and_then(Status::from_code)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "query parameter 'status' must be a submission status code (0, 1, 3, 11-15, 20, 22), not '{text}'"
                    ))
                })?,
        ),
    };
    let (rows, total) = app
        .judge
        .list(&who, req.query("project"), status, limit, offset)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(views::submission(&app, row, false).await);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "items": items, "paging": { "limit": limit, "offset": offset, "total": total } }),
    ))
}

pub async fn delete(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let row = app.judge.delete(&who, req.param(0)).await?;
    Ok(json_response(
        StatusCode::OK,
        &views::submission(&app, &row, false).await,
    ))
}

/// A submission's end: from the judge's events, or from the store when they fell behind.
struct SubmissionEnd {
    app: Arc<App>,
    id: String,
    events: broadcast::Receiver<SubmissionEnded>,
    /// Once known: `Some(status)`, `None` inside when the submission is gone.
    end: Option<Option<Status>>,
}

#[async_trait]
impl EndWatch for SubmissionEnd {
    async fn ended(&mut self) -> Option<String> {
        while self.end.is_none() {
            match self.events.try_recv() {
                Ok(e) if e.id == self.id => self.end = Some(Some(e.status)),
                Ok(_) => {}
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(_) | TryRecvError::Closed) => {
                    match self.app.store.get_submission(&self.id).await {
                        Ok(Some(r)) if !r.status.executing() => self.end = Some(Some(r.status)),
                        Ok(Some(_)) | Err(_) => {}
                        Ok(None) => self.end = Some(None),
                    }
                    break;
                }
            }
        }
        self.end.map(|status| match status {
            Some(s) => json!({ "status": s, "status_name": s.name() }).to_string(),
            None => json!({ "status": null, "status_name": "deleted" }).to_string(),
        })
    }
}

/// `GET /submissions/{id}/progress`: what grading does as it does it (a status, a stage
/// started or ended, each test's verdict), one JSON object a line (`application/x-ndjson`),
/// or one server-sent event each, until the submission ends.
pub async fn progress(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    check_format(&req, &["sse"])?;
    let events = app.judge.events().subscribe();
    let row = app.judge.get(&who, req.param(0)).await?;
    let path = app.judge.dir(&row.id).progress();
    let end = SubmissionEnd {
        end: (!row.status.executing()).then_some(Some(row.status)),
        app,
        id: row.id,
        events,
    };
    Ok(follow_file(
        path,
        wants_sse(&req),
        "application/x-ndjson",
        end,
    ))
}
