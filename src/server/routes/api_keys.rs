//! API keys (PIFOP): created, listed and deleted by the master token (the route table says
//! so). A key carries limits: `max_memory` (bytes), `max_time` (seconds, CPU and wall),
//! `max_executions` (at once). Deleting a key deletes the files it kept.

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
    let row = auth::delete_key(app.store.as_ref(), req.param(0)).await?;
    let out = views::api_key(&row);
    // A later key of the same name must not find them.
    app.files.remove_owner(&Principal::Key(row).owner()).await?;
    Ok(json_response(StatusCode::OK, &out))
}
