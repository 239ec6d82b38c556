//! The JSON the API shows: executions, API keys, environments, callbacks, projects,
//! submissions. Times become RFC 3339 here. The final objects callbacks send are rendered here
//! too ([`FinalObjects`]), so a callback's body is exactly what `GET` returns.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::app::App;
use crate::auth::Principal;
use crate::callbacks::{DeliveryState, Final, Finals, Subject};
use crate::env::{EnvEntry, Environment};
use crate::error::{Error, Result};
use crate::exec::{self, Status};
use crate::judge;
use crate::store::{ApiKeyRow, AttemptRow, CallbackRow, ExecutionRow, ProjectRow, SubmissionRow};

/// How much of each stream the execution object shows (the log route has the rest).
pub const INLINE_STREAM_BYTES: usize = 64 * 1024;

/// The execution object; with `include_log`, the streams of an ended one (their first
/// [`INLINE_STREAM_BYTES`]; `stdout_truncated`/`stderr_truncated` say when that is not all
/// the program wrote).
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
        let dir = exec.dir(&row.id);
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

/// The final objects of callbacks: what `GET /executions/{id}` (with the log) and
/// `GET /submissions/{id}` return.
pub struct FinalObjects {
    pub exec: Arc<exec::Service>,
    pub judge: Arc<judge::Service>,
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
            Subject::Submission(id) => match self.judge.get(&Principal::Master, id).await {
                Ok(row) if !row.status.executing() => {
                    Ok(Final::Ended(submission_of(&self.judge, &row, true).await))
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
        "manage_projects": k.manage_projects,
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

/// A project: its definition as checked (config inline, tests listed without their data).
pub fn project(p: &ProjectRow) -> Value {
    let scenarios: Vec<&String> = p.def.config.scenarios.keys().collect();
    let default = p.def.config.scenario(None).ok().map(|(name, _)| name);
    json!({
        "id": p.id,
        "name": p.def.name,
        "environment": p.def.environment,
        "revision": p.revision,
        "scenarios": scenarios,
        "default_scenario": default,
        "config": p.def.config,
        "source": p.def.source,
        "artifacts": p.def.artifacts,
        "limits": p.def.limits,
        "tests": p.def.tests,
        "checker": p.def.checker,
        "created_date": p.created_at.to_rfc3339(),
        "updated_date": p.updated_at.to_rfc3339(),
    })
}

/// A submission. With `detail`: the per-test table, the stages, the HwScore report, the
/// streams and the debug log (as far as it got while it is still being graded).
pub async fn submission(app: &App, s: &SubmissionRow, detail: bool) -> Value {
    submission_of(&app.judge, s, detail).await
}

/// What `GET /submissions/{id}` shows (`detail`), or a list's row.
pub async fn submission_of(judge: &judge::Service, s: &SubmissionRow, detail: bool) -> Value {
    let (stages, tests) = if detail {
        judge.progress_of(&s.id).await.unwrap_or_default()
    } else {
        Default::default()
    };
    let mut v = judge::view::grade_json(s.status, s.grade.as_ref(), &stages, &tests);
    if !detail {
        for key in ["tests", "stages", "report"] {
            v.remove(key);
        }
    }
    v.insert("id".into(), json!(s.id));
    v.insert(
        "project".into(),
        json!({ "id": s.project_id, "revision": s.project_revision }),
    );
    v.insert("scenario".into(), json!(s.scenario));
    v.insert("stage".into(), json!(s.stage));
    v.insert("attempts".into(), json!(s.attempts));
    v.insert("init_date".into(), json!(s.created_at.to_rfc3339()));
    v.insert(
        "start_date".into(),
        json!(s.started_at.map(|t| t.to_rfc3339())),
    );
    v.insert("end_date".into(), json!(s.ended_at.map(|t| t.to_rfc3339())));
    if detail {
        let dir = judge.dir(&s.id);
        let (streams, debug_log) =
            crate::error::blocking(move || Ok(judge::view::streams_json(&dir)))
                .await
                .unwrap_or((Value::Null, Value::Null));
        v.insert("streams".into(), streams);
        v.insert("debug_log".into(), debug_log);
    }
    Value::Object(v)
}
