//! The JSON of a new execution, read once for every face: the body of `POST /executions` and
//! the file of `sandpit run --spec FILE.json` are the same shape and go through
//! [`new_execution`]. Unknown fields are refused, and every error names the field it is about
//! (`'programs[1].limits.pids': …`).
//!
//! ```json
//! {"environment": "c", "command": ["./a.out"], "files": {…}, "stdin": "…", "limits": {…},
//!  "outputs": ["out.txt"], "keep": ["a.out"], "start": true, "wait": true}
//!
//! {"environment": "c",
//!  "programs": [{"command": ["./interactor"], "files": {"interactor": {"file_id": "file_…"}}},
//!               {"environment": "python3", "command": ["python3", "sol.py"], "files": {…}}],
//!  "pipes": [{"from": {"program": 1, "fd": 1}, "to": {"program": 0, "fd": 0}},
//!            {"from": {"program": 0, "fd": 1}, "to": {"program": 1, "fd": 0}, "capture": 65536}],
//!  "wall_time_s": 10, "ends_with": [0], "wait": true}
//! ```
//!
//! A file's content is text, `{"content", "encoding": "base64"|"text", "mode"}`, or a kept
//! file by reference, `{"file_id", "mode"}`.

use std::collections::BTreeMap;

use sandbox::RelPath;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

use crate::callbacks::{AllowList, Callback, CallbackRequest};
use crate::error::{Error, Result};
use crate::exec::request::{
    InputFile, NewExecution, NewFileRef, NewGroup, NewProgram, PipeEnd, PipeRequest,
    RequestedLimits,
};

mod files;
mod typed;

pub use files::{EncodedFileContent, FileContent, Mode};
pub use typed::{null_member, typed};

/// Most programs in a group.
pub const MAX_PROGRAMS: usize = 16;
/// Most pipes in a group.
pub const MAX_PIPES: usize = 64;
/// What `"capture": true` keeps of a pipe's traffic.
pub const DEFAULT_CAPTURE_BYTES: u64 = 1 << 20;
/// The most a pipe's capture may keep.
pub const MAX_CAPTURE_BYTES: u64 = 64 << 20;

/// `"capture": true | false | N` (bytes).
#[derive(Debug, Clone, Copy)]
struct Capture(Option<u64>);

impl<'de> Deserialize<'de> for Capture {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(false) => Ok(Capture(None)),
            Value::Bool(true) => Ok(Capture(Some(DEFAULT_CAPTURE_BYTES))),
            Value::Number(n) => n
                .as_u64()
                .filter(|b| (1..=MAX_CAPTURE_BYTES).contains(b))
                .map(|b| Capture(Some(b)))
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "must be true, false or a number of bytes from 1 to {MAX_CAPTURE_BYTES}"
                    ))
                }),
            _ => Err(de::Error::custom(
                "must be true, false or a number of bytes to keep",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipeBody {
    from: PipeEnd,
    to: PipeEnd,
    capture: Option<Capture>,
}

/// One program of a group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgramBody {
    environment: Option<String>,
    command: Option<Vec<String>>,
    files: Option<BTreeMap<String, FileContent>>,
    stdin: Option<FileContent>,
    limits: Option<RequestedLimits>,
    outputs: Option<Vec<String>>,
    keep: Option<Vec<String>>,
}

/// The whole body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutionBody {
    environment: Option<String>,
    command: Option<Vec<String>>,
    files: Option<BTreeMap<String, FileContent>>,
    stdin: Option<FileContent>,
    limits: Option<RequestedLimits>,
    outputs: Option<Vec<String>>,
    keep: Option<Vec<String>>,
    programs: Option<Vec<ProgramBody>>,
    pipes: Option<Vec<PipeBody>>,
    wall_time_s: Option<f64>,
    ends_with: Option<Vec<usize>>,
    start: Option<bool>,
    wait: Option<bool>,
    callback: Option<CallbackRequest>,
}

fn rel_path(text: &str, what: &str) -> Result<RelPath> {
    RelPath::parse(text).map_err(|e| Error::BadPath(format!("{what}: {e}")))
}

/// `prefix` is `""` for a single program, `"programs[i]."` in a group.
fn program(p: ProgramBody, prefix: &str) -> Result<NewProgram> {
    let command = p
        .command
        .ok_or_else(|| Error::Invalid(format!("'{prefix}command' (an argv array) is required")))?;
    if !matches!(command.first(), Some(program) if !program.is_empty()) {
        return Err(Error::Invalid(format!(
            "'{prefix}command' must name a program"
        )));
    }
    if let Some(env) = &p.environment {
        if env.is_empty() {
            return Err(Error::Invalid(format!(
                "'{prefix}environment' must be an envid"
            )));
        }
    }
    let outputs = p.outputs.unwrap_or_default();
    for path in &outputs {
        rel_path(path, &format!("{prefix}outputs"))?;
    }
    let keep = p.keep.unwrap_or_default();
    for path in &keep {
        rel_path(path, &format!("{prefix}keep"))?;
    }
    let mut files = Vec::new();
    let mut file_refs = Vec::new();
    for (path, content) in p.files.unwrap_or_default() {
        let rel = rel_path(&path, &format!("{prefix}files"))?;
        match content {
            FileContent::Content(c) => {
                let (bytes, mode) = c.decode(&format!("{prefix}files['{path}']"))?;
                files.push(InputFile {
                    path: rel,
                    bytes,
                    mode: mode.unwrap_or(0o644),
                });
            }
            FileContent::ById { file_id, mode } => file_refs.push(NewFileRef {
                path: rel,
                file_id,
                mode,
            }),
        }
    }
    let stdin = match p.stdin {
        Some(c) => Some(c.into_bytes(&format!("{prefix}stdin"))?),
        None => None,
    };
    Ok(NewProgram {
        environment: p.environment,
        command,
        limits: p.limits.unwrap_or_default(),
        outputs,
        keep,
        files,
        file_refs,
        stdin,
    })
}

/// Reads a new execution: one program (`command` …) or a group (`programs`, `pipes`); a
/// callback's host must be on `allow`.
pub fn new_execution(body: Value, allow: &AllowList) -> Result<NewExecution> {
    let b: ExecutionBody = typed(body)?;
    let environment = b.environment.filter(|e| !e.is_empty());
    let wait = b.wait.unwrap_or(false);
    let start = b.start.unwrap_or(false) || wait;
    let callback = match b.callback {
        Some(c) => Some(Callback::accept(c, allow)?),
        None => None,
    };
    let Some(programs) = b.programs else {
        for (given, name) in [
            (b.pipes.is_some(), "pipes"),
            (b.wall_time_s.is_some(), "wall_time_s"),
            (b.ends_with.is_some(), "ends_with"),
        ] {
            if given {
                return Err(Error::Invalid(format!(
                    "'{name}' is for a group of programs: give 'programs' too"
                )));
            }
        }
        let environment = environment
            .ok_or_else(|| Error::Invalid("'environment' (an envid) is required".into()))?;
        let one = program(
            ProgramBody {
                environment: None,
                command: b.command,
                files: b.files,
                stdin: b.stdin,
                limits: b.limits,
                outputs: b.outputs,
                keep: b.keep,
            },
            "",
        )?;
        return Ok(NewExecution {
            environment,
            programs: vec![one],
            group: None,
            start,
            wait,
            callback,
        });
    };
    for (given, name) in [
        (b.command.is_some(), "command"),
        (b.files.is_some(), "files"),
        (b.stdin.is_some(), "stdin"),
        (b.limits.is_some(), "limits"),
        (b.outputs.is_some(), "outputs"),
        (b.keep.is_some(), "keep"),
    ] {
        if given {
            return Err(Error::Invalid(format!(
                "with 'programs', give '{name}' in each program, not beside them"
            )));
        }
    }
    if programs.is_empty() || programs.len() > MAX_PROGRAMS {
        return Err(Error::Invalid(format!(
            "'programs' must hold 1 to {MAX_PROGRAMS} programs"
        )));
    }
    let pipes = b.pipes.unwrap_or_default();
    if pipes.len() > MAX_PIPES {
        return Err(Error::Invalid(format!(
            "'pipes' may hold at most {MAX_PIPES} pipes"
        )));
    }
    if let Some(w) = b.wall_time_s {
        if !(w > 0.0 && w.is_finite()) {
            return Err(Error::Invalid(
                "'wall_time_s' must be a positive number of seconds".into(),
            ));
        }
    }
    let mut out = Vec::with_capacity(programs.len());
    for (i, p) in programs.into_iter().enumerate() {
        let prefix = format!("programs[{i}].");
        let p = program(p, &prefix)?;
        if p.environment.is_none() && environment.is_none() {
            return Err(Error::Invalid(format!(
                "'{prefix}environment' is required (or give 'environment' for every program)"
            )));
        }
        out.push(p);
    }
    let environment = match environment {
        Some(e) => e,
        // Every program names one: the execution is listed under the first's.
        None => out[0].environment.clone().unwrap_or_default(),
    };
    Ok(NewExecution {
        environment,
        programs: out,
        group: Some(NewGroup {
            pipes: pipes
                .into_iter()
                .map(|p| PipeRequest {
                    from: p.from,
                    to: p.to,
                    capture_bytes: p.capture.and_then(|c| c.0),
                })
                .collect(),
            wall_time_s: b.wall_time_s,
            ends_with: b.ends_with.unwrap_or_default(),
        }),
        start,
        wait,
        callback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(v: Value) -> String {
        match new_execution(v, &AllowList::default()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert!(error(json!({"command": ["x"]})).contains("environment"));
        assert!(error(json!({"environment": "e", "command": "x"})).contains("command"));
        assert!(error(json!({"environment": "e", "command": [""]})).contains("command"));
        assert!(
            error(json!({"environment": "e", "command": ["x"], "surprise": 1}))
                .contains("surprise")
        );
        assert!(
            error(json!({"environment": "e", "command": ["x"], "limits": {"pids": "lots"}}))
                .contains("limits.pids")
        );
        assert!(error(
            json!({"environment": "e", "command": ["x"], "files": {"a": {"content": "!", "encoding": "base64"}}})
        )
        .contains("base64"));
        assert!(error(
            json!({"environment": "e", "command": ["x"], "files": {"a": {"content": "x", "mode": "999"}}})
        )
        .contains("permission bits"));
        assert!(
            error(json!({"environment": "e", "command": ["x"], "files": {"../a": "1"}}))
                .contains("leaves")
        );
        assert!(
            error(json!({"environment": "e", "command": ["x"], "keep": ["/etc/passwd"]}))
                .contains("keep")
        );
        assert!(error(
            json!({"environment": "e", "command": ["x"], "files": {"a": {"file_id": "f", "x": 1}}})
        )
        .contains("files"));
        assert!(
            error(json!({"environment": "e", "command": ["x"], "stdin": {"file_id": "f"}}))
                .contains("stdin")
        );
    }

    #[test]
    fn group_errors_name_the_field() {
        let one = json!({"command": ["x"]});
        assert!(
            error(json!({"environment": "e", "command": ["x"], "pipes": []})).contains("programs")
        );
        assert!(error(json!({"environment": "e", "programs": []})).contains("programs"));
        assert!(error(json!({"programs": [one]})).contains("programs[0].environment"));
        assert!(
            error(json!({"environment": "e", "programs": [one, {"command": []}]}))
                .contains("programs[1].command")
        );
        assert!(
            error(json!({"environment": "e", "programs": [one], "limits": {}}))
                .contains("each program")
        );
        assert!(error(json!({"environment": "e", "programs": [one],
            "pipes": [{"from": {"program": 0, "fd": 1}, "to": {"program": 0}}]}))
        .contains("pipes[0].to"));
        assert!(error(json!({"environment": "e", "programs": [one],
            "pipes": [{"from": {"program": 0, "fd": 1}, "to": {"program": 0, "fd": 0}, "capture": -1}]}))
        .contains("pipes[0].capture"));
        assert!(
            error(json!({"environment": "e", "programs": [one], "wall_time_s": 0}))
                .contains("wall_time_s")
        );
    }

    #[test]
    fn a_full_request_reads() {
        let new = new_execution(
            json!({
            "environment": "busybox",
            "command": ["sh", "-c", "cat a"],
            "files": {"a": "text", "bin/b": {"content": "aGk=", "encoding": "base64", "mode": "755"},
                      "c": {"file_id": "file_1", "mode": 420}},
            "stdin": {"content": "in"},
            "limits": {"memory_bytes": 1000, "cpu_time_s": 1.5},
            "outputs": ["out.txt"],
            "keep": ["out.txt"],
            "wait": true,
        }),
            &AllowList::default(),
        )
        .unwrap();
        assert!(new.start && new.wait && new.group.is_none());
        let p = &new.programs[0];
        assert_eq!(p.files[1].bytes, b"hi");
        assert_eq!(p.files[1].mode, 0o755);
        assert_eq!(p.file_refs[0].file_id, "file_1");
        assert_eq!(p.file_refs[0].mode, Some(0o644));
        assert_eq!(p.stdin.as_deref(), Some(&b"in"[..]));
        assert_eq!(p.limits.cpu_time_s, Some(1.5));
        assert_eq!(p.keep, ["out.txt"]);
    }

    #[test]
    fn a_group_reads() {
        let new = new_execution(
            json!({
            "programs": [
                {"environment": "c", "command": ["./i"]},
                {"environment": "python3", "command": ["python3", "s.py"], "stdin": "x"},
            ],
            "pipes": [
                {"from": {"program": 1, "fd": 1}, "to": {"program": 0, "fd": 0}, "capture": true},
                {"from": {"program": 0, "fd": 1}, "to": {"program": 1, "fd": 0}, "capture": 10},
                {"from": {"program": 0, "fd": 3}, "to": {"program": 1, "fd": 3}, "capture": false},
            ],
            "wall_time_s": 5,
            "ends_with": [0],
        }),
            &AllowList::default(),
        )
        .unwrap();
        assert_eq!(new.environment, "c");
        let g = new.group.unwrap();
        let caps: Vec<_> = g.pipes.iter().map(|p| p.capture_bytes).collect();
        assert_eq!(caps, [Some(DEFAULT_CAPTURE_BYTES), Some(10), None]);
        assert_eq!(g.wall_time_s, Some(5.0));
        assert_eq!(g.ends_with, [0]);
        assert_eq!(new.programs[1].environment.as_deref(), Some("python3"));
    }
}
