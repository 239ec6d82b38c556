//! The JSON the API shows: executions, API keys, environments, callbacks. Times become RFC
//! 3339 here. The final objects callbacks send are rendered here too ([`FinalObjects`]), so
//! a callback's body is exactly what `GET` returns.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::app::App;
use crate::auth::Principal;
use crate::callbacks::{DeliveryState, Final, Finals, Subject};
use crate::env::{EnvEntry, Environment};
use crate::error::{Error, Result};
use crate::exec::{self, Status};
use crate::store::{ApiKeyRow, AttemptRow, AuditRow, CallbackRow, ExecutionRow};

/// The execution object; with `include_log`, the streams of an ended one.
pub async fn execution(app: &App, row: &ExecutionRow, include_log: bool) -> Value {
    execution_of(&app.exec, row, include_log).await
}

/// [`execution`], from the execution service alone.
pub async fn execution_of(exec: &exec::Service, row: &ExecutionRow, include_log: bool) -> Value {
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
        "setup_s": get("setup_s"),
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
        let dir = exec.dir(&row.id);
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

/// The final objects of callbacks: what `GET /executions/{id}` returns (with the log).
pub struct FinalObjects {
    pub exec: Arc<exec::Service>,
}

#[async_trait]
impl Finals for FinalObjects {
    async fn final_object(&self, subject: &Subject) -> Result<Final> {
        match subject {
            Subject::Execution(id) => match self.exec.get(&Principal::Master, id).await {
                Ok(row) if row.status == Status::Ended => {
                    Ok(Final::Ended(execution_of(&self.exec, &row, true).await))
                }
                Ok(_) => Ok(Final::NotEnded),
                Err(Error::NotFound(_)) => Ok(Final::Gone),
                Err(e) => Err(e),
            },
        }
    }
}

/// A callback and its attempts (never its key, never its body).
pub fn callback(c: &CallbackRow, attempts: &[AttemptRow]) -> Value {
    let date = |t: Option<crate::clock::Micros>| t.map(|t| t.to_rfc3339());
    let attempts: Vec<Value> = attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "date": a.started_at.to_rfc3339(),
                "duration_s": a.duration_us as f64 / 1e6,
                "status_code": a.status_code,
                "error": a.error,
                "next_attempt_date": date(a.next_attempt_at),
            })
        })
        .collect();
    json!({
        "id": c.id,
        "event": c.subject.event(),
        "url": c.url,
        "mode": c.mode.as_str(),
        "state": c.state.as_str(),
        "created_date": c.created_at.to_rfc3339(),
        "ready_date": date(c.sealed_at),
        // While an attempt is under way, `next_attempt_at` is its lease, not a plan.
        "next_attempt_date": date(c.next_attempt_at.filter(|_| c.state == DeliveryState::Pending)),
        "delivered_date": date(c.delivered_at),
        "last_error": c.last_error,
        "attempts": attempts,
    })
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
