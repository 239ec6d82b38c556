//! The JSON the API shows: executions (one program, or a group: one entry per program),
//! kept files, API keys, environments, callbacks, projects, submissions. Times become RFC 3339
//! here. The final objects callbacks send are rendered here too ([`FinalObjects`]), so a
//! callback's body is exactly what `GET` returns.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::app::App;
use crate::auth::Principal;
use crate::callbacks::{DeliveryState, Final, Finals, Subject};
use crate::clock::Micros;
use crate::env::{EnvEntry, Environment};
use crate::error::{Error, Result};
use crate::exec::result::Kept;
use crate::exec::workdir::{ProgramDir, STREAMS};
use crate::exec::{self, ProgramRequest, ProgramResult, Status};
use crate::judge;
use crate::store::{
    ApiKeyRow, AttemptRow, AuditRow, CallbackRow, ExecutionRow, FileRow, ProjectRow, SubmissionRow,
};

/// How much of each stream the execution object shows (the log route has the rest).
pub const INLINE_STREAM_BYTES: usize = 64 * 1024;

/// What a pipe's capture shows inline (all of it is at `…/pipes/{n}`).
const PIPE_INLINE_BYTES: usize = 64 << 10;

/// The measurements of one program, under the names the API has always used.
fn measurements(v: &mut Value, result: Option<&ProgramResult>) {
    let result = result
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or(Value::Null);
    for k in [
        "exit_code",
        "signal",
        "signal_name",
        "timeout",
        "cpu_time_s",
        "wall_time_s",
        "setup_s",
        "peak_memory_bytes",
        "stdout_bytes",
        "stderr_bytes",
        "stdout_truncated",
        "stderr_truncated",
        "oom_kills",
        "pids_limit_hit",
        "seccomp_violations",
    ] {
        v[k] = result.get(k).cloned().unwrap_or(Value::Null);
    }
}

/// `outputs`: each asked-for output, whether it can be downloaded, and why not.
fn outputs(p: &ProgramRequest, result: Option<&ProgramResult>, ended: bool) -> Value {
    let refused = result.map(|r| &r.outputs);
    Value::Array(
        p.outputs
            .iter()
            .map(|path| {
                let error = refused.and_then(|o| o.get(path));
                let available = ended && refused.is_some() && error.is_none();
                json!({ "path": path, "available": available, "error": error })
            })
            .collect(),
    )
}

/// `kept`: path → the file kept (`file_id`, `size`, `sha256`, `expires_date`) or `error`.
fn kept(result: Option<&ProgramResult>) -> Value {
    let mut out = serde_json::Map::new();
    for (path, k) in result.map(|r| &r.kept).into_iter().flatten() {
        let v = match k {
            Kept::File {
                file_id,
                size,
                sha256,
                expires_at,
            } => json!({
                "file_id": file_id,
                "size": size,
                "sha256": sha256,
                "expires_date": Micros(*expires_at).to_rfc3339(),
            }),
            Kept::Refused { error } => json!({ "error": error }),
        };
        out.insert(path.clone(), v);
    }
    Value::Object(out)
}

/// Inputs by reference: path → file id.
fn file_refs(p: &ProgramRequest) -> Value {
    Value::Object(
        p.file_refs
            .iter()
            .map(|r| (r.path.clone(), Value::String(r.file_id.clone())))
            .collect(),
    )
}

/// One program's streams: `stdout_truncated`/`stderr_truncated` say when the object does not
/// show all the program wrote (past its output limit, or past [`INLINE_STREAM_BYTES`]); with
/// `show_log`, the streams' first [`INLINE_STREAM_BYTES`].
async fn streams(v: &mut Value, dir: &ProgramDir, result: Option<&ProgramResult>, show_log: bool) {
    if let Some(r) = result {
        let inline = INLINE_STREAM_BYTES as u64;
        v["stdout_truncated"] = Value::Bool(r.stdout_truncated || r.stdout_bytes > inline);
        v["stderr_truncated"] = Value::Bool(r.stderr_truncated || r.stderr_bytes > inline);
    }
    if show_log {
        let dir = dir.clone();
        let heads = tokio::task::spawn_blocking(move || dir.stream_heads(INLINE_STREAM_BYTES))
            .await
            .unwrap_or_default();
        for (name, head) in STREAMS.into_iter().zip(heads) {
            v[name] = match head {
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
}

/// The execution object; with `include_log`, the streams of an ended one (of each program in
/// a group, and the start of each captured pipe): their first [`INLINE_STREAM_BYTES`].
pub async fn execution(app: &App, row: &ExecutionRow, include_log: bool) -> Value {
    execution_of(&app.exec, row, include_log).await
}

/// [`execution`], from the execution service alone.
pub async fn execution_of(exec: &exec::Service, row: &ExecutionRow, include_log: bool) -> Value {
    let ended = row.status == Status::Ended;
    let show_log = include_log && ended;
    let dir = exec.dir(&row.id);
    let mut v = json!({
        "id": row.id,
        "environment": row.environment,
        "status": row.status,
        "end_reason": row.end_reason,
        "message": row.message,
        "init_date": row.created_at.to_rfc3339(),
        "start_date": row.started_at.map(|t| t.to_rfc3339()),
        "end_date": row.ended_at.map(|t| t.to_rfc3339()),
    });
    let Some(g) = row.request.group() else {
        let p = &row.request.programs()[0];
        let result = row.result.as_ref().and_then(|r| r.program(0));
        measurements(&mut v, result);
        v["command"] = json!(p.command);
        v["limits"] = json!(p.limits);
        v["outputs"] = outputs(p, result, ended);
        v["files_by_reference"] = file_refs(p);
        v["keep"] = json!(p.keep);
        v["kept"] = kept(result);
        streams(&mut v, &dir.program(false, 0), result, show_log).await;
        return v;
    };
    let group = row.result.as_ref().and_then(|r| r.group());
    let mut programs = Vec::with_capacity(g.programs.len());
    for (i, p) in g.programs.iter().enumerate() {
        let end = group.and_then(|r| r.programs.get(i));
        let result = end.and_then(|e| e.result.as_ref());
        let mut pv = json!({
            "index": i,
            "environment": p.environment(&row.environment),
            "command": p.command,
            "limits": p.limits,
            "end_reason": end.map(|e| e.end_reason),
            "message": end.and_then(|e| e.message.clone()),
        });
        measurements(&mut pv, result);
        pv["outputs"] = outputs(p, result, ended);
        pv["files_by_reference"] = file_refs(p);
        pv["keep"] = json!(p.keep);
        pv["kept"] = kept(result);
        streams(&mut pv, &dir.program(true, i), result, show_log).await;
        programs.push(pv);
    }
    let mut pipes = Vec::with_capacity(g.pipes.len());
    for (n, p) in g.pipes.iter().enumerate() {
        let seen = group.and_then(|r| r.pipes.get(n).copied().flatten());
        let mut pv = json!({
            "from": p.from,
            "to": p.to,
            "capture_bytes": p.capture_bytes,
            "bytes": seen.map(|s| s.bytes),
            "truncated": seen.map(|s| s.truncated),
        });
        if show_log && seen.is_some() {
            pv["data"] = read_start(&dir.pipe(n), PIPE_INLINE_BYTES)
                .await
                .map_or(Value::Null, Value::String);
            pv["download"] = Value::String(format!("/api/v1/executions/{}/pipes/{n}", row.id));
        }
        pipes.push(pv);
    }
    v["programs"] = Value::Array(programs);
    v["pipes"] = Value::Array(pipes);
    v["wall_time_s"] = json!(g.wall_time_s);
    v["ends_with"] = json!(g.ends_with);
    v["first_ended"] = json!(group.and_then(|r| r.first_ended));
    v["group_timeout"] = json!(group.map(|r| r.group_timeout));
    v
}

/// The first `max` bytes of a file, as text.
async fn read_start(path: &std::path::Path, max: usize) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let f = tokio::fs::File::open(path).await.ok()?;
    let mut buf = Vec::new();
    f.take(max as u64).read_to_end(&mut buf).await.ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// A kept file.
pub fn file(f: &FileRow) -> Value {
    json!({
        "id": f.id,
        "name": f.name,
        "size": f.size,
        "sha256": f.sha256,
        "execution": f.execution_id,
        "created_date": f.created_at.to_rfc3339(),
        "expires_date": f.expires_at.to_rfc3339(),
    })
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

/// A project: its definition as checked (config inline, tests listed without their data).
pub fn project(p: &ProjectRow) -> Value {
    let scenarios: Vec<&String> = p.def.config.scenarios.keys().collect();
    let default = p.def.config.scenario(None).ok().map(|(name, _)| name);
    let mut v = json!({
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
    });
    if let Some(i) = &p.def.interactor {
        v["interactor"] = json!(i);
    }
    v
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
