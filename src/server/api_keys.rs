//! API keys (PIFOP): created, listed and deleted by the master token. A key carries limits:
//! `max_memory` (bytes), `max_time` (seconds, CPU and wall), `max_executions` (at once).

use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::auth::{hash_token, new_token};
use super::errors::{code, ApiError, ApiResult};
use super::{json_response, App, Req, Resp};
use crate::store::ApiKeyRow;

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub fn key_json(k: &ApiKeyRow) -> Value {
    json!({
        "name": k.name,
        "max_memory": k.max_memory,
        "max_time": k.max_time,
        "max_executions": k.max_executions,
        "created_date": k.created_date,
    })
}

/// A field from the body, or else from the query string (PIFOP passes them in the query).
fn field(body: &Map<String, Value>, req: &Req, name: &str) -> Option<Value> {
    body.get(name)
        .cloned()
        .filter(|v| !v.is_null())
        .or_else(|| req.query(name).map(|s| Value::String(s.to_string())))
}

/// A size in bytes: a number, or text like `256M`.
fn size_field(v: Option<Value>, name: &str) -> ApiResult<Option<i64>> {
    let bytes = match v {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => crate::units::parse_size(&s).ok(),
        Some(_) => None,
    };
    match bytes {
        Some(b) if b > 0 && b <= i64::MAX as u64 => Ok(Some(b as i64)),
        _ => Err(ApiError::bad_request(format!(
            "'{name}' must be a positive number of bytes (or e.g. \"256M\")"
        ))),
    }
}

fn seconds_field(v: Option<Value>, name: &str) -> ApiResult<Option<f64>> {
    let secs = match v {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => crate::units::parse_duration(&s)
            .ok()
            .map(|d| d.as_secs_f64()),
        Some(_) => None,
    };
    match secs {
        Some(s) if s > 0.0 && s.is_finite() => Ok(Some(s)),
        _ => Err(ApiError::bad_request(format!(
            "'{name}' must be a positive number of seconds (or e.g. \"2s\")"
        ))),
    }
}

fn count_field(v: Option<Value>, name: &str) -> ApiResult<Option<i64>> {
    let n = match v {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    match n {
        Some(n) if n >= 1 && n <= i64::MAX as u64 => Ok(Some(n as i64)),
        _ => Err(ApiError::bad_request(format!(
            "'{name}' must be a whole number of at least 1"
        ))),
    }
}

pub async fn create(app: &App, mut req: Req) -> ApiResult<Resp> {
    req.auth(app).await?.require_master("create API keys")?;
    let fields = req.read_object(app.cfg.max_body).await?;
    for key in fields.keys() {
        if ![
            "name",
            "key_name",
            "max_memory",
            "max_time",
            "max_executions",
        ]
        .contains(&key.as_str())
        {
            return Err(ApiError::bad_request(format!("unknown field '{key}'")));
        }
    }
    let name = match field(&fields, &req, "name").or_else(|| field(&fields, &req, "key_name")) {
        Some(Value::String(s)) => s,
        _ => return Err(ApiError::bad_request("'name' is required")),
    };
    if !valid_name(&name) || name == "master" {
        return Err(ApiError::bad_request(
            "'name' must be 1-64 letters, digits, '-', '_' or '.' (and not 'master')",
        ));
    }
    let token = new_token("apikey_");
    let row = ApiKeyRow {
        name: name.clone(),
        token_hash: hash_token(&token),
        max_memory: size_field(field(&fields, &req, "max_memory"), "max_memory")?,
        max_time: seconds_field(field(&fields, &req, "max_time"), "max_time")?,
        max_executions: count_field(field(&fields, &req, "max_executions"), "max_executions")?,
        created_date: super::executions::now_rfc3339(),
    };
    if !app.store.insert_api_key(&row).await? {
        return Err(ApiError::conflict(
            code::ALREADY_EXISTS,
            format!("an API key named '{name}' already exists"),
        ));
    }
    let mut out = key_json(&row);
    out["key"] = Value::String(token);
    Ok(json_response(StatusCode::CREATED, &out))
}

pub async fn list(app: &App, req: Req) -> ApiResult<Resp> {
    req.auth(app).await?.require_master("list API keys")?;
    let keys: Vec<Value> = app
        .store
        .list_api_keys()
        .await?
        .iter()
        .map(key_json)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": keys })))
}

pub async fn delete(app: &App, req: Req) -> ApiResult<Resp> {
    req.auth(app).await?.require_master("delete API keys")?;
    let name = &req.params[0];
    match app.store.delete_api_key(name).await? {
        Some(row) => Ok(json_response(StatusCode::OK, &key_json(&row))),
        None => Err(ApiError::not_found(format!("no API key named '{name}'"))),
    }
}
