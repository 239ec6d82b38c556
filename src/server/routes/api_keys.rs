//! API keys (PIFOP): created, listed and deleted by the master token (the route table says
//! so). A key carries limits: `max_memory` (bytes), `max_time` (seconds, CPU and wall),
//! `max_executions` (at once), `max_pids`, `max_output_bytes`, and quotas: `max_pending`,
//! `max_files` (per execution), `max_storage_bytes`; and `manage_projects` (may create,
//! replace and delete projects). Deleting a key stops and erases its executions, its
//! submissions (with their callbacks) and the files it kept (their blobs too, once nothing
//! needs them): its id is never used again, so nothing of it stays reachable. Its projects stay: they are shared (anyone may submit to them, and keys that
//! manage projects manage every project).

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::app::App;
use crate::auth::{self, Principal};
use crate::server::errors::ApiResult;
use crate::server::http::{json_response, Req, Resp};
use crate::server::observe;
use crate::server::requests::{from_body, CreateApiKey};
use crate::server::views;

pub async fn create(app: Arc<App>, mut req: Req, _: Principal) -> ApiResult<Resp> {
    let mut fields = req.read_object(app.cfg.max_body).await?;
    // PIFOP passes the fields in the query: they count where the body has none.
    for name in CreateApiKey::FIELDS {
        if matches!(fields.get(*name), None | Some(Value::Null)) {
            if let Some(v) = req.query(name) {
                fields.insert(name.to_string(), Value::String(v.to_string()));
            }
        }
    }
    let new = from_body::<CreateApiKey>(fields)?.into_new()?;
    let (row, token) = auth::create_key(app.store.as_ref(), new).await?;
    let mut out = views::api_key(&row);
    out["key"] = Value::String(token);
    let mut resp = json_response(StatusCode::CREATED, &out);
    observe::set_target(&mut resp, row.name);
    Ok(resp)
}

pub async fn list(app: Arc<App>, _: Req, _: Principal) -> ApiResult<Resp> {
    let keys: Vec<Value> = app
        .store
        .list_api_keys()
        .await?
        .iter()
        .map(views::api_key)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": keys })))
}

pub async fn delete(app: Arc<App>, req: Req, _: Principal) -> ApiResult<Resp> {
    // The key stops authenticating first, so it can make nothing new meanwhile.
    let row = auth::delete_key(app.store.as_ref(), req.param(0)).await?;
    let owner = auth::key_owner(&row.id);
    let erased = app.exec.erase_owned(&owner).await?;
    let submissions_erased = app.judge.erase_owned(&owner).await?;
    let files_erased = app.files.remove_owner(&owner).await?;
    let mut out = views::api_key(&row);
    out["executions_erased"] = Value::from(erased);
    out["submissions_erased"] = Value::from(submissions_erased);
    out["files_erased"] = Value::from(files_erased);
    Ok(json_response(StatusCode::OK, &out))
}
