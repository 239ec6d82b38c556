//! The JSON the API shows: executions, API keys, environments. Times become RFC 3339 here.

use serde_json::{json, Value};

use crate::app::App;
use crate::env::{EnvEntry, Environment};
use crate::exec::Status;
use crate::store::{ApiKeyRow, ExecutionRow};

/// How much of each stream the execution object shows (the log route has the rest).
pub const INLINE_STREAM_BYTES: usize = 64 * 1024;

/// The execution object; with `include_log`, the streams of an ended one (their first
/// [`INLINE_STREAM_BYTES`]; `stdout_truncated`/`stderr_truncated` say when that is not all
/// the program wrote).
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
        "stdout_truncated": Value::Null,
        "stderr_truncated": Value::Null,
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
    if let Some(r) = &row.result {
        let inline = INLINE_STREAM_BYTES as u64;
        v["stdout_truncated"] = Value::Bool(r.stdout_truncated || r.stdout_bytes > inline);
        v["stderr_truncated"] = Value::Bool(r.stderr_truncated || r.stderr_bytes > inline);
    }
    if include_log && row.status == Status::Ended {
        let dir = app.exec.dir(&row.id);
        for name in ["stdout", "stderr"] {
            v[name] = match dir.stream_head(name, INLINE_STREAM_BYTES).await {
                Some((text, cut)) => {
                    if cut {
                        v[format!("{name}_truncated")] = Value::Bool(true);
                    }
                    Value::String(text)
                }
                None => Value::Null,
            };
        }
    }
    v
}

pub fn api_key(k: &ApiKeyRow) -> Value {
    let q = &k.quota;
    json!({
        "id": k.id,
        "name": k.name,
        "max_memory": q.max_memory,
        "max_time": q.max_time,
        "max_executions": q.max_executions,
        "max_pids": q.max_pids,
        "max_output_bytes": q.max_output_bytes,
        "max_pending": q.max_pending,
        "max_files": q.max_files,
        "max_storage_bytes": q.max_storage_bytes,
        "created_date": k.created_at.to_rfc3339(),
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
