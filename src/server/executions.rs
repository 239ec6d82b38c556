//! Executions (the PIFOP lifecycle): create (optionally start and wait), upload input while
//! `pending`, start, stop, get (with `include_log`), list, download an output, delete.
//!
//! On disk, `DATA/executions/<id>/` holds `input/` (files put into the work directory),
//! `stdin`, `log` (stdout and stderr as they were written), `stdout`, `stderr` (the captured
//! streams) and `output/` (the files collected after the run by the core, which never follows
//! a symlink, FIFO or device). Outputs are served from that copy only, never from the
//! sandbox's own file system.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use sandbox::{FileIn, FileSource, Io, Spec, Stdin, StopHandle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::auth::Principal;
use super::errors::{code, ApiError, ApiResult};
use super::{dir_env_map, full, json_response, App, Req, Resp};
use crate::store::{ExecutionRow, Finish, Status};

/// How long `stop` and `DELETE` wait for a running execution to end.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// How long `wait` may take at most (the longest run plus a long queue).
const WAIT_MAX: Duration = Duration::from_secs(7 * 86_400);
/// Longest time limit anyone may ask for.
const MAX_SECONDS: f64 = 86_400.0;

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Limits as the API names them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsIn {
    pub memory_bytes: Option<u64>,
    pub cpu_time_s: Option<f64>,
    pub wall_time_s: Option<f64>,
    pub pids: Option<u64>,
    pub output_bytes: Option<u64>,
}

/// What is kept of a request in the store (files are on disk).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRequest {
    pub command: Vec<String>,
    /// The effective limits: asked for, else the defaults, within the key's maxima.
    pub limits: LimitsIn,
    pub outputs: Vec<String>,
}

/// A relative path inside the work directory, or why not.
pub fn safe_rel_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() || text.len() > 1024 || text.contains('\0') {
        return Err(format!("'{text}' is not a usable path"));
    }
    let path = Path::new(text);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "path '{text}' leaves the work directory (use a relative path without '..')"
                ))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("'{text}' is not a usable path"));
    }
    Ok(out)
}

fn valid_id(id: &str) -> bool {
    id.len() <= 64 && !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn exec_dir(app: &App, id: &str) -> PathBuf {
    app.executions_dir().join(id)
}

/// Loads an execution the principal may see; 404 otherwise (others' executions don't exist
/// for a key).
async fn load(app: &App, who: &Principal, id: &str) -> ApiResult<ExecutionRow> {
    let missing = || ApiError::not_found(format!("no execution '{id}'"));
    if !valid_id(id) {
        return Err(missing());
    }
    match app.store.get_execution(id).await? {
        Some(row) if who.may_see(&row.owner) => Ok(row),
        _ => Err(missing()),
    }
}

/// For other modules: an execution the principal may see.
pub async fn get_visible(app: &App, who: &Principal, id: &str) -> ApiResult<ExecutionRow> {
    load(app, who, id).await
}

async fn read_text(path: &Path) -> Option<String> {
    tokio::fs::read(path)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The execution object.
pub async fn exec_json(app: &App, row: &ExecutionRow, include_log: bool) -> Value {
    let request: Option<StoredRequest> = serde_json::from_str(&row.request).ok();
    let result: Map<String, Value> = row
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    let get = |k: &str| result.get(k).cloned().unwrap_or(Value::Null);
    let mut v = json!({
        "id": row.id,
        "environment": row.environment,
        "status": row.status.as_str(),
        "end_reason": row.end_reason,
        "message": row.message,
        "exit_code": get("exit_code"),
        "signal": get("signal"),
        "signal_name": get("signal_name"),
        "timeout": get("timeout"),
        "cpu_time_s": get("cpu_time_s"),
        "wall_time_s": get("wall_time_s"),
        "peak_memory_bytes": get("peak_memory_bytes"),
        "stdout_bytes": get("stdout_bytes"),
        "stderr_bytes": get("stderr_bytes"),
        "stdout_truncated": get("stdout_truncated"),
        "stderr_truncated": get("stderr_truncated"),
        "oom_kills": get("oom_kills"),
        "pids_limit_hit": get("pids_limit_hit"),
        "seccomp_violations": get("seccomp_violations"),
        "command": request.as_ref().map(|r| r.command.clone()),
        "limits": request.as_ref().map(|r| r.limits.clone()),
        "init_date": row.init_date,
        "start_date": row.start_date,
        "end_date": row.end_date,
    });
    let outputs: Vec<Value> = request
        .as_ref()
        .map(|r| r.outputs.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|path| {
            let error = result
                .get("outputs")
                .and_then(|o| o.get(&path))
                .cloned()
                .unwrap_or(Value::Null);
            let available = row.status == Status::Ended && row.result.is_some() && error.is_null();
            json!({ "path": path, "available": available, "error": error })
        })
        .collect();
    v["outputs"] = Value::Array(outputs);
    if include_log && row.status == Status::Ended {
        let dir = exec_dir(app, &row.id);
        v["stdout"] = read_text(&dir.join("stdout"))
            .await
            .map_or(Value::Null, Value::String);
        v["stderr"] = read_text(&dir.join("stderr"))
            .await
            .map_or(Value::Null, Value::String);
    }
    v
}

/// Bytes of a file given in the request: text, or `{content, encoding: base64|text, mode}`.
fn file_content(what: &str, v: &Value) -> ApiResult<(Vec<u8>, Option<u32>)> {
    match v {
        Value::String(s) => Ok((s.clone().into_bytes(), None)),
        Value::Object(o) => {
            for k in o.keys() {
                if !["content", "encoding", "mode"].contains(&k.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "{what}: unknown field '{k}'"
                    )));
                }
            }
            let content = o.get("content").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!("{what}: 'content' must be a string"))
            })?;
            let bytes = match o.get("encoding").and_then(Value::as_str) {
                None | Some("text" | "utf-8" | "utf8") => content.as_bytes().to_vec(),
                Some("base64") => base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .map_err(|e| ApiError::bad_request(format!("{what}: bad base64: {e}")))?,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "{what}: encoding '{other}' is not known (use base64 or text)"
                    )))
                }
            };
            let mode = match o.get("mode") {
                None | Some(Value::Null) => None,
                Some(m) => Some(parse_mode(m).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{what}: 'mode' must be permission bits, e.g. \"755\" or 493"
                    ))
                })?),
            };
            Ok((bytes, mode))
        }
        _ => Err(ApiError::bad_request(format!(
            "{what}: give the content as a string or as {{\"content\", \"encoding\"}}"
        ))),
    }
}

/// `"755"` (octal text) or a number.
fn parse_mode(v: &Value) -> Option<u32> {
    let m = match v {
        Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok()?,
        Value::Number(n) => u32::try_from(n.as_u64()?).ok()?,
        _ => return None,
    };
    (m <= 0o777).then_some(m)
}

/// Writes a file we own (the parents are ours too, so no link is ever followed).
fn write_owned(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Checks one limit against the key's maximum; fills in the default when not asked for.
fn within<T: PartialOrd + Copy + std::fmt::Display>(
    asked: Option<T>,
    default: T,
    max: Option<T>,
    field: &str,
    key_limit: &str,
) -> ApiResult<T> {
    match (asked, max) {
        (Some(a), Some(m)) if a > m => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            code::OVER_KEY_LIMIT,
            format!("limits.{field} = {a} is over this API key's {key_limit} of {m}"),
        )),
        (Some(a), _) => Ok(a),
        (None, Some(m)) if default > m => Ok(m),
        (None, _) => Ok(default),
    }
}

fn effective_limits(asked: &LimitsIn, who: &Principal) -> ApiResult<LimitsIn> {
    let d = sandbox::Limits::default();
    let secs = |x: Option<Duration>| x.map_or(MAX_SECONDS, |d| d.as_secs_f64());
    for (name, v) in [
        ("cpu_time_s", asked.cpu_time_s),
        ("wall_time_s", asked.wall_time_s),
    ] {
        if let Some(x) = v {
            if !(x > 0.0 && x <= MAX_SECONDS) {
                return Err(ApiError::bad_request(format!(
                    "limits.{name} must be more than 0 and at most {MAX_SECONDS} seconds"
                )));
            }
        }
    }
    for (name, v) in [
        ("memory_bytes", asked.memory_bytes),
        ("pids", asked.pids),
        ("output_bytes", asked.output_bytes),
    ] {
        if v == Some(0) {
            return Err(ApiError::bad_request(format!(
                "limits.{name} must be more than 0"
            )));
        }
    }
    let (max_mem, max_time) = match who {
        Principal::Master => (None, None),
        Principal::Key(k) => (k.max_memory.map(|m| m as u64), k.max_time),
    };
    Ok(LimitsIn {
        memory_bytes: Some(within(
            asked.memory_bytes,
            d.memory_bytes.unwrap_or(256 << 20),
            max_mem,
            "memory_bytes",
            "max_memory",
        )?),
        cpu_time_s: Some(within(
            asked.cpu_time_s,
            secs(d.cpu_time),
            max_time,
            "cpu_time_s",
            "max_time",
        )?),
        wall_time_s: Some(within(
            asked.wall_time_s,
            secs(d.wall_time),
            max_time,
            "wall_time_s",
            "max_time",
        )?),
        pids: Some(asked.pids.or(d.pids).unwrap_or(64)),
        output_bytes: Some(asked.output_bytes.or(d.output_bytes).unwrap_or(16 << 20)),
    })
}

/// 429 when the key already has `max_executions` queued or running.
async fn admit(app: &App, who: &Principal) -> ApiResult<()> {
    if let Principal::Key(k) = who {
        if let Some(max) = k.max_executions {
            let active = app.store.count_active(&who.owner()).await?;
            if active >= max {
                return Err(ApiError::too_many(
                    format!(
                        "this API key may have {max} execution(s) queued or running at once \
                         (max_executions); {active} are"
                    ),
                    1,
                ));
            }
        }
    }
    Ok(())
}

fn environment_exists(app: &App, envid: &str) -> ApiResult<bool> {
    if dir_env_map(&app.cfg).contains_key(envid) {
        return Ok(true);
    }
    Ok(app
        .envs
        .get(envid)
        .map_err(super::environments::env_error)?
        .is_some())
}

pub async fn create(app: &App, mut req: Req) -> ApiResult<Resp> {
    let who = req.auth(app).await?;
    let mut body = req.read_object(app.cfg.max_body).await?;
    const KNOWN: &[&str] = &[
        "environment",
        "command",
        "files",
        "stdin",
        "limits",
        "outputs",
        "start",
        "wait",
    ];
    if let Some(k) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown field '{k}'")));
    }
    let environment = match body.remove("environment") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => {
            return Err(ApiError::bad_request(
                "'environment' (an envid) is required",
            ))
        }
    };
    let command: Vec<String> = match body.remove("command") {
        Some(v @ Value::Array(_)) => serde_json::from_value(v)
            .map_err(|_| ApiError::bad_request("'command' must be an array of strings (argv)"))?,
        _ => {
            return Err(ApiError::bad_request(
                "'command' (an argv array) is required",
            ))
        }
    };
    if command.is_empty() || command[0].is_empty() {
        return Err(ApiError::bad_request("'command' must name a program"));
    }
    let limits: LimitsIn = match body.remove("limits") {
        None | Some(Value::Null) => LimitsIn::default(),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| ApiError::bad_request(format!("'limits': {e}")))?,
    };
    let outputs: Vec<String> = match body.remove("outputs") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v)
            .map_err(|_| ApiError::bad_request("'outputs' must be an array of paths"))?,
    };
    for path in &outputs {
        safe_rel_path(path).map_err(|e| ApiError::bad_path(format!("outputs: {e}")))?;
    }
    let flag = |v: Option<Value>, name: &str| match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(ApiError::bad_request(format!(
            "'{name}' must be true or false"
        ))),
    };
    let wait = flag(body.remove("wait"), "wait")?;
    let start = flag(body.remove("start"), "start")? || wait;
    let mut files = Vec::new();
    match body.remove("files") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (path, v) in &map {
                let rel =
                    safe_rel_path(path).map_err(|e| ApiError::bad_path(format!("files: {e}")))?;
                let (bytes, mode) = file_content(&format!("files['{path}']"), v)?;
                files.push((rel, bytes, mode));
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "'files' must be an object: {\"path\": content}",
            ))
        }
    }
    let stdin = match body.remove("stdin") {
        None | Some(Value::Null) => None,
        Some(v) => Some(file_content("stdin", &v)?.0),
    };
    if !environment_exists(app, &environment)? {
        return Err(ApiError::bad_request(format!(
            "environment '{environment}' does not exist (see GET /api/v1/environments)"
        )));
    }
    let limits = effective_limits(&limits, &who)?;
    if start {
        admit(app, &who).await?;
    }

    let id = format!("exec_{}", uuid::Uuid::new_v4().simple());
    let dir = exec_dir(app, &id);
    let write_dir = dir.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(write_dir.join("input"))?;
        for (rel, bytes, mode) in files {
            write_owned(
                &write_dir.join("input").join(rel),
                &bytes,
                mode.unwrap_or(0o644),
            )?;
        }
        if let Some(bytes) = stdin {
            write_owned(&write_dir.join("stdin"), &bytes, 0o644)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| ApiError::internal(format!("writing files: {e}")))?
    .map_err(|e| {
        // Our own directory: what fails here is a path that is both a file and a folder.
        let dir = dir.clone();
        tokio::spawn(async move { tokio::fs::remove_dir_all(dir).await });
        ApiError::bad_request(format!(
            "files: {e} (a path is used both as a file and as a directory?)"
        ))
    })?;

    let request = StoredRequest {
        command,
        limits,
        outputs,
    };
    let mut row = ExecutionRow {
        id: id.clone(),
        owner: who.owner(),
        environment,
        status: Status::Pending,
        request: serde_json::to_string(&request).map_err(|e| ApiError::internal(e.to_string()))?,
        result: None,
        end_reason: None,
        message: None,
        init_date: now_rfc3339(),
        start_date: None,
        end_date: None,
        queued_at: None,
        node: None,
    };
    let inserted = if start {
        let _guard = app.admission.lock().await;
        match admit(app, &who).await {
            Ok(()) => {
                row.status = Status::Queued;
                row.queued_at = Some(now_micros());
                app.store
                    .insert_execution(&row)
                    .await
                    .map_err(ApiError::from)
            }
            Err(e) => Err(e),
        }
    } else {
        app.store
            .insert_execution(&row)
            .await
            .map_err(ApiError::from)
    };
    if let Err(e) = inserted {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Err(e);
    }
    if start {
        app.sched.kick();
    }
    if wait {
        app.sched
            .wait_ended(app.store.as_ref(), &id, WAIT_MAX)
            .await;
    }
    let row = app.store.get_execution(&id).await?.unwrap_or(row);
    Ok(json_response(
        StatusCode::CREATED,
        &exec_json(app, &row, true).await,
    ))
}

pub async fn get(app: &App, req: Req) -> ApiResult<Resp> {
    let who = req.auth(app).await?;
    let include_log = req.query_bool("include_log", true)?;
    let row = load(app, &who, &req.params[0]).await?;
    Ok(json_response(
        StatusCode::OK,
        &exec_json(app, &row, include_log).await,
    ))
}

pub async fn list(app: &App, req: Req) -> ApiResult<Resp> {
    let who = req.auth(app).await?;
    let number = |name: &str, default: i64, max: i64| -> ApiResult<i64> {
        match req.query(name) {
            None => Ok(default),
            Some(t) => match t.parse::<i64>() {
                Ok(n) if (0..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "query parameter '{name}' must be a whole number from 0 to {max}"
                ))),
            },
        }
    };
    let limit = number("limit", 20, 100)?;
    let offset = number("offset", 0, i64::MAX)?;
    let owner = match who {
        Principal::Master => None,
        Principal::Key(_) => Some(who.owner()),
    };
    let (rows, total) = app
        .store
        .list_executions(owner.as_deref(), limit, offset)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(exec_json(app, row, false).await);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "items": items, "paging": { "limit": limit, "offset": offset, "total": total } }),
    ))
}

pub async fn upload_input(app: &App, mut req: Req) -> ApiResult<Resp> {
    let who = req.auth(app).await?;
    let row = load(app, &who, &req.params[0]).await?;
    let rel = safe_rel_path(&req.params[1]).map_err(ApiError::bad_path)?;
    if row.status != Status::Pending {
        return Err(ApiError::conflict(
            code::WRONG_STATE,
            format!(
                "input can be uploaded only while the execution is pending; it is {}",
                row.status.as_str()
            ),
        ));
    }
    let mode = match req.query("mode") {
        None => 0o644,
        Some(m) => parse_mode(&Value::String(m.to_string())).ok_or_else(|| {
            ApiError::bad_request("query parameter 'mode' must be octal bits, e.g. 755")
        })?,
    };
    let bytes = req.read_body(app.cfg.max_body).await?;
    let size = bytes.len();
    let path = exec_dir(app, &row.id).join("input").join(&rel);
    tokio::task::spawn_blocking(move || write_owned(&path, &bytes, mode))
        .await
        .map_err(|e| ApiError::internal(format!("writing input: {e}")))??;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": row.id, "path": rel.to_string_lossy(), "size": size }),
    ))
}

pub async fn start(app: &App, req: Req) -> ApiResult<Resp> {
    let who = req.auth(app).await?;
    let wait = req.query_bool("wait", false)?;
    let row = load(app, &who, &req.params[0]).await?;
    if row.status != Status::Pending {
        return Err(ApiError::conflict(
            code::WRONG_STATE,
            format!(
                "only a pending execution can be started; it is {}",
                row.status.as_str()
            ),
        ));
    }
    {
        let _guard = app.admission.lock().await;
        admit(app, &who).await?;
        if !app.store.enqueue(&row.id, now_micros()).await? {
            return Err(ApiError::conflict(
                code::WRONG_STATE,
                "the execution is no longer pending",
            ));
        }
    }
    app.sched.kick();
    if wait {
        app.sched
            .wait_ended(app.store.as_ref(), &row.id, WAIT_MAX)
            .await;
    }
    let row = load(app, &who, &row.id).await?;
    Ok(json_response(
        StatusCode::OK,
        &exec_json(app, &row, true).await,
    ))
}

/// Ends the execution: at once when it has not started, through its stop handle when it runs.
async fn stop_and_wait(app: &App, row: &ExecutionRow) -> ApiResult<()> {
    if matches!(row.status, Status::Pending | Status::Queued) {
        let how = Finish {
            end_reason: "stopped",
            message: Some("stopped before it started"),
            result: None,
            end_date: &now_rfc3339(),
        };
        if app
            .store
            .finish(&row.id, &[Status::Pending, Status::Queued], &how)
            .await?
        {
            app.sched.finished(&row.id);
            return Ok(());
        }
    }
    // Running (or it just began): ask the run to stop, then wait for its end.
    app.sched.stop(&row.id);
    if !app
        .sched
        .wait_ended(app.store.as_ref(), &row.id, STOP_WAIT)
        .await
    {
        return Err(ApiError::internal(format!(
            "execution '{}' did not end within {} s of being stopped",
            row.id,
            STOP_WAIT.as_secs()
        )));
    }
    Ok(())
}

pub async fn stop(app: &App, req: Req) -> ApiResult<Resp> {
    let who = req.auth(app).await?;
    let row = load(app, &who, &req.params[0]).await?;
    if row.status == Status::Ended {
        return Err(ApiError::conflict(
            code::WRONG_STATE,
            "the execution has already ended",
        ));
    }
    stop_and_wait(app, &row).await?;
    let row = load(app, &who, &row.id).await?;
    Ok(json_response(
        StatusCode::OK,
        &exec_json(app, &row, true).await,
    ))
}

pub async fn delete(app: &App, req: Req) -> ApiResult<Resp> {
    let who = req.auth(app).await?;
    let row = load(app, &who, &req.params[0]).await?;
    if row.status != Status::Ended {
        stop_and_wait(app, &row).await?;
    }
    let row = load(app, &who, &row.id).await?;
    let body = exec_json(app, &row, false).await;
    app.store.delete_execution(&row.id).await?;
    let dir = exec_dir(app, &row.id);
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(json_response(StatusCode::OK, &body))
}

pub async fn output(app: &App, req: Req) -> ApiResult<Resp> {
    let who = req.auth(app).await?;
    let row = load(app, &who, &req.params[0]).await?;
    let rel = safe_rel_path(&req.params[1]).map_err(ApiError::bad_path)?;
    let request: StoredRequest = serde_json::from_str(&row.request)
        .map_err(|e| ApiError::internal(format!("stored request: {e}")))?;
    let name = request
        .outputs
        .iter()
        .find(|o| safe_rel_path(o).ok().as_ref() == Some(&rel))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "'{}' is not one of this execution's outputs (name it in 'outputs' at creation)",
                rel.display()
            ))
        })?;
    if row.status != Status::Ended {
        return Err(ApiError::conflict(
            code::WRONG_STATE,
            format!(
                "outputs are available once the execution has ended; it is {}",
                row.status.as_str()
            ),
        ));
    }
    let result: Map<String, Value> = row
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    if let Some(Value::String(why)) = result.get("outputs").and_then(|o| o.get(name)) {
        return Err(ApiError::conflict(
            code::OUTPUT_REFUSED,
            format!("output '{name}' was not collected: {why}"),
        ));
    }
    let path = exec_dir(app, &row.id).join("output").join(&rel);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut resp = Response::new(full(bytes));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            Ok(resp)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::conflict(
            code::OUTPUT_REFUSED,
            format!("output '{name}' was not collected (the run did not get that far)"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Writes a stream to the execution's live log as the program writes it.
struct LogSink {
    file: Arc<Mutex<std::fs::File>>,
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Input files as the core takes them: every file under `input/`, with its mode.
fn input_files(root: &Path) -> std::io::Result<Vec<FileIn>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            let path = entry.path();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).map_err(std::io::Error::other)?;
                out.push(FileIn {
                    path: rel.to_path_buf(),
                    source: FileSource::Host(path.clone()),
                    mode: Some(meta.permissions().mode() & 0o777),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The end of a run as it goes into the store.
struct Ended {
    end_reason: String,
    message: Option<String>,
    result: Option<String>,
}

fn internal(message: String) -> Ended {
    Ended {
        end_reason: "internal-error".into(),
        message: Some(message),
        result: None,
    }
}

/// One run, on a blocking thread: spec from the stored request and the files on disk, the
/// core's `run`, then the streams and the collected outputs written next to the inputs.
fn run_blocking(app: &App, row: &ExecutionRow, stop: StopHandle) -> Ended {
    let dir = exec_dir(app, &row.id);
    let request: StoredRequest = match serde_json::from_str(&row.request) {
        Ok(r) => r,
        Err(e) => return internal(format!("the stored request is unreadable: {e}")),
    };
    // The lease keeps the environment from being deleted while it runs.
    let mut _lease = None;
    let mut spec = match dir_env_map(&app.cfg).get(row.environment.as_str()) {
        Some(root) => Spec::new(sandbox::RootFs::Dir((*root).clone()), Vec::new()),
        None => match app.envs.acquire(&row.environment) {
            Ok(lease) => {
                let mut spec = Spec::new(lease.rootfs(), Vec::new());
                lease.apply_defaults(&mut spec);
                _lease = Some(lease);
                spec
            }
            Err(e) => return internal(format!("environment '{}': {e}", row.environment)),
        },
    };
    spec.argv = request.command.clone();
    let l = &request.limits;
    spec.limits.memory_bytes = l.memory_bytes.or(spec.limits.memory_bytes);
    if let Some(s) = l.cpu_time_s {
        spec.limits.cpu_time = Some(Duration::from_secs_f64(s));
    }
    if let Some(s) = l.wall_time_s {
        spec.limits.wall_time = Some(Duration::from_secs_f64(s));
    }
    spec.limits.pids = l.pids.or(spec.limits.pids);
    spec.limits.output_bytes = l.output_bytes.or(spec.limits.output_bytes);
    spec.files = match input_files(&dir.join("input")) {
        Ok(f) => f,
        Err(e) => return internal(format!("reading the input files: {e}")),
    };
    if dir.join("stdin").is_file() {
        spec.stdin = Stdin::File(dir.join("stdin"));
    }
    spec.collect = request.outputs.iter().map(PathBuf::from).collect();

    let log = match std::fs::File::create(dir.join("log")) {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => return internal(format!("creating the log: {e}")),
    };
    let io = Io {
        stdout_sink: Some(Box::new(LogSink { file: log.clone() })),
        stderr_sink: Some(Box::new(LogSink { file: log })),
        stop: Some(stop),
    };
    let outcome = match app.engine.run(&spec, io) {
        Ok(o) => o,
        Err(e) => return internal(format!("the sandbox could not run: {e}")),
    };

    let mut write_errors = Vec::new();
    for (name, bytes) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        if let Err(e) = std::fs::write(dir.join(name), bytes) {
            write_errors.push(format!("{name}: {e}"));
        }
    }
    let mut refused = Map::new();
    for wanted in &request.outputs {
        let key = match safe_rel_path(wanted) {
            Ok(p) => p,
            Err(e) => {
                refused.insert(wanted.clone(), Value::String(e));
                continue;
            }
        };
        let found = outcome
            .files
            .iter()
            .find(|(k, _)| safe_rel_path(k).ok().as_ref() == Some(&key));
        match found.map(|(_, v)| v) {
            Some(Ok(bytes)) => {
                if let Err(e) = write_owned(&dir.join("output").join(&key), bytes, 0o644) {
                    refused.insert(wanted.clone(), Value::String(format!("storing it: {e}")));
                }
            }
            Some(Err(why)) => {
                refused.insert(wanted.clone(), Value::String(why.clone()));
            }
            None => {
                refused.insert(
                    wanted.clone(),
                    Value::String("the program did not leave this file".into()),
                );
            }
        }
    }
    let mut result = match serde_json::to_value(&outcome) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    // The streams live in files; the row keeps the measurements.
    result.remove("stdout");
    result.remove("stderr");
    result.insert("outputs".into(), Value::Object(refused));
    let message = match (outcome.message.clone(), write_errors.is_empty()) {
        (m, true) => m,
        (_, false) => Some(format!(
            "storing the streams failed: {}",
            write_errors.join("; ")
        )),
    };
    Ended {
        end_reason: outcome.end_reason.as_str().to_string(),
        message,
        result: serde_json::to_string(&result).ok(),
    }
}

/// Runs a claimed execution in its slot and records its end.
pub async fn run(app: Arc<App>, row: ExecutionRow, permit: OwnedSemaphorePermit) {
    let id = row.id.clone();
    let ended = match StopHandle::new() {
        // Stopped before its slot came: it never starts.
        Ok(stop) if app.sched.register(&id, stop.clone()) => Ended {
            end_reason: "stopped".into(),
            message: Some("stopped before it started".into()),
            result: None,
        },
        Ok(stop) => {
            let worker = app.clone();
            tokio::task::spawn_blocking(move || run_blocking(&worker, &row, stop))
                .await
                .unwrap_or_else(|e| internal(format!("the run panicked: {e}")))
        }
        Err(e) => internal(format!("creating the stop handle: {e}")),
    };
    let how = Finish {
        end_reason: &ended.end_reason,
        message: ended.message.as_deref(),
        result: ended.result.as_deref(),
        end_date: &now_rfc3339(),
    };
    if let Err(e) = app.store.finish(&id, &[Status::Running], &how).await {
        tracing::error!("recording the end of {id}: {e}");
    }
    app.sched.finished(&id);
    drop(permit);
}

/// Marks what a crash left running as ended, and removes the partial outputs of those runs.
pub async fn recover(app: &App) -> Result<usize, crate::store::StoreError> {
    let how = Finish {
        end_reason: "internal-error",
        message: Some("the server stopped while this execution was running; it was not finished"),
        result: None,
        end_date: &now_rfc3339(),
    };
    let ids = app.store.recover_running(&app.cfg.node, &how).await?;
    // Files of executions that were never accepted (a crash between writing them and the
    // insert) have no row: remove them.
    if let Ok(mut dir) = tokio::fs::read_dir(app.executions_dir()).await {
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if valid_id(&name) && app.store.get_execution(&name).await?.is_none() {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            }
        }
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::safe_rel_path;

    #[test]
    fn paths_stay_inside() {
        assert!(safe_rel_path("a/b.txt").is_ok());
        assert!(safe_rel_path("./a").is_ok());
        assert!(safe_rel_path("../a").is_err());
        assert!(safe_rel_path("a/../../b").is_err());
        assert!(safe_rel_path("/etc/passwd").is_err());
        assert!(safe_rel_path("").is_err());
        assert!(safe_rel_path(".").is_err());
    }
}
