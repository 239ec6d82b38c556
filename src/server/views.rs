//! The JSON the API shows: executions, API keys, environments. Times become RFC 3339 here.

use serde_json::{json, Value};

use crate::app::App;
use crate::env::{EnvEntry, Environment};
use crate::exec::Status;
use crate::store::{ApiKeyRow, AuditRow, ExecutionRow};

/// The execution object; with `include_log`, the streams of an ended one.
pub async fn execution(app: &App, row: &ExecutionRow, include_log: bool) -> Value {
    let result = row
        .result
        .as_ref()
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or(Value::Null);
    let get = |k: &str| result.get(k).cloned().unwrap_or(Value::Null);
    let mut v = json!({
        "id": row.id,
        "environment": row.environment,
        "status": row.status,
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
        "command": row.request.command,
        "limits": row.request.limits,
        "init_date": row.created_at.to_rfc3339(),
        "start_date": row.started_at.map(|t| t.to_rfc3339()),
        "end_date": row.ended_at.map(|t| t.to_rfc3339()),
    });
    let refused = row.result.as_ref().map(|r| &r.outputs);
    let outputs: Vec<Value> = row
        .request
        .outputs
        .iter()
        .map(|path| {
            let error = refused.and_then(|o| o.get(path));
            let available = row.status == Status::Ended && refused.is_some() && error.is_none();
            json!({ "path": path, "available": available, "error": error })
        })
        .collect();
    v["outputs"] = Value::Array(outputs);
    if include_log && row.status == Status::Ended {
        let dir = app.exec.dir(&row.id);
        v["stdout"] = dir
            .read_stream("stdout")
            .await
            .map_or(Value::Null, Value::String);
        v["stderr"] = dir
            .read_stream("stderr")
            .await
            .map_or(Value::Null, Value::String);
    }
    v
}

pub fn api_key(k: &ApiKeyRow) -> Value {
    json!({
        "name": k.name,
        "max_memory": k.max_memory,
        "max_time": k.max_time,
        "max_executions": k.max_executions,
        "created_date": k.created_at.to_rfc3339(),
    })
}

pub fn audit_entry(a: &AuditRow) -> Value {
    json!({
        "request_id": a.request_id,
        "date": a.at.to_rfc3339(),
        "who": a.who,
        "peer": a.peer,
        "method": a.method,
        "route": a.route,
        "target": a.target,
        "status": a.status,
    })
}

/// Pythia gives authors as a list; we keep them as one comma-separated string.
fn authors(text: &str) -> Value {
    Value::Array(
        text.split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| Value::String(a.to_string()))
            .collect(),
    )
}

fn summary(e: &Environment) -> Value {
    json!({ "envid": e.envid, "name": e.name, "authors": authors(&e.authors) })
}

pub fn environment(e: &Environment) -> Value {
    let mut v = summary(e);
    v["description"] = Value::String(e.description.clone());
    v["image_digest"] = Value::String(e.image_digest.clone());
    v
}

/// An environment in a list (no description).
pub fn entry_summary(e: &EnvEntry) -> Value {
    match e {
        EnvEntry::Dir { envid } => json!({ "envid": envid, "name": envid, "authors": [] }),
        EnvEntry::Stored(env) => summary(env),
    }
}

pub fn entry(e: &EnvEntry) -> Value {
    match e {
        EnvEntry::Dir { envid } => json!({
            "envid": envid,
            "name": envid,
            "authors": [],
            "description": "a root file system directory given to the server at start",
        }),
        EnvEntry::Stored(env) => environment(env),
    }
}
