//! What a run measured, in the engine's own serialisation: the store keeps it and the API
//! shows it under these names, whatever the core's `Outcome` calls its fields. One program's
//! measurements are a [`ProgramResult`]; a group's, one [`ProgramEnd`] per program plus what
//! the group itself saw ([`GroupResult`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::exec::state::{EndReason, Ending};

/// Which time limit was crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Timeout {
    Cpu,
    Wall,
}

/// A system call the seccomp policy denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub syscall: String,
    pub count: u64,
}

/// A file kept in the file store after the run (`keep`), or why it was not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Kept {
    File {
        file_id: String,
        size: u64,
        sha256: String,
        /// Microseconds since the epoch.
        expires_at: i64,
    },
    Refused {
        error: String,
    },
}

/// The measurements of one program's run (the streams and outputs are files, see
/// `workdir.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramResult {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub signal_name: Option<String>,
    pub timeout: Option<Timeout>,
    pub cpu_time_s: f64,
    #[serde(default)]
    pub user_time_s: f64,
    #[serde(default)]
    pub system_time_s: f64,
    pub wall_time_s: f64,
    pub peak_memory_bytes: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub oom_kills: u64,
    pub pids_limit_hit: bool,
    pub seccomp_violations: Vec<Violation>,
    #[serde(default)]
    pub cgroup_version: u8,
    /// Seconds the sandbox took to set up before the program started (from the run's request
    /// to the program's start), when the core could tell; metrics observe it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_s: Option<f64>,
    /// Outputs that were not collected: name as asked → why.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// Files kept in the file store: path as asked → the file, or why not.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kept: BTreeMap<String, Kept>,
}

impl ProgramResult {
    /// The measurements of an outcome, with the outputs that were refused.
    pub fn from_outcome(o: &sandbox::Outcome, refused: BTreeMap<String, String>) -> Self {
        ProgramResult {
            exit_code: o.exit_code,
            signal: o.signal,
            signal_name: o.signal_name.clone(),
            timeout: o.timeout.map(|t| match t {
                sandbox::TimeoutKind::Cpu => Timeout::Cpu,
                sandbox::TimeoutKind::Wall => Timeout::Wall,
            }),
            cpu_time_s: o.cpu_time_s,
            user_time_s: o.user_time_s,
            system_time_s: o.system_time_s,
            wall_time_s: o.wall_time_s,
            peak_memory_bytes: o.peak_memory_bytes,
            stdout_bytes: o.stdout_bytes,
            stderr_bytes: o.stderr_bytes,
            stdout_truncated: o.stdout_truncated,
            stderr_truncated: o.stderr_truncated,
            oom_kills: o.oom_kills,
            pids_limit_hit: o.pids_limit_hit,
            seccomp_violations: o
                .seccomp_violations
                .iter()
                .map(|v| Violation {
                    syscall: v.syscall.clone(),
                    count: v.count,
                })
                .collect(),
            cgroup_version: o.cgroup_version,
            // 0 when the core could not tell (the sandbox was never set up).
            setup_s: (o.setup_s > 0.0).then_some(o.setup_s),
            outputs: refused,
            kept: BTreeMap::new(),
        }
    }
}

/// How one program of a group ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramEnd {
    pub end_reason: EndReason,
    pub message: Option<String>,
    /// `None` when it never ran.
    pub result: Option<ProgramResult>,
}

/// What passed through a captured pipe (the bytes are a file, see `workdir.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeResult {
    /// All bytes that passed, also past the capture.
    pub bytes: u64,
    /// More passed than was captured.
    pub truncated: bool,
}

/// A group's end: one entry per program, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupResult {
    pub programs: Vec<ProgramEnd>,
    /// The program that ended first.
    pub first_ended: Option<usize>,
    /// The group's wall-clock limit ended it.
    pub group_timeout: bool,
    /// One per pipe, in order; `None` for a pipe that was not captured.
    pub pipes: Vec<Option<PipeResult>>,
}

/// What an execution measured, as the store keeps it (one program as it always was).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExecutionResult {
    Group(GroupResult),
    Program(ProgramResult),
}

impl ExecutionResult {
    /// The result of program `i` (of a single program: `i` = 0).
    pub fn program(&self, i: usize) -> Option<&ProgramResult> {
        match self {
            ExecutionResult::Group(g) => g.programs.get(i).and_then(|p| p.result.as_ref()),
            ExecutionResult::Program(p) => (i == 0).then_some(p),
        }
    }

    pub fn program_mut(&mut self, i: usize) -> Option<&mut ProgramResult> {
        match self {
            ExecutionResult::Group(g) => g.programs.get_mut(i).and_then(|p| p.result.as_mut()),
            ExecutionResult::Program(p) => (i == 0).then_some(p),
        }
    }

    /// The results of the programs that ran, in order (a single program: its own).
    pub fn programs(&self) -> impl Iterator<Item = &ProgramResult> {
        let (group, single) = match self {
            ExecutionResult::Group(g) => (Some(g), None),
            ExecutionResult::Program(p) => (None, Some(p)),
        };
        group
            .into_iter()
            .flat_map(|g| g.programs.iter().filter_map(|p| p.result.as_ref()))
            .chain(single)
    }

    /// A single program's exit status (a group's are its programs').
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ExecutionResult::Program(p) => p.exit_code,
            ExecutionResult::Group(_) => None,
        }
    }

    pub fn group(&self) -> Option<&GroupResult> {
        match self {
            ExecutionResult::Group(g) => Some(g),
            ExecutionResult::Program(_) => None,
        }
    }
}

/// What the core says when `execve` of the program failed (its errno follows as
/// `… (os error N)`).
const EXEC_FAILED: &str = "the program could not be executed: ";

/// A program that could not be started, told as a shell tells it: 127 when it is not there,
/// 126 when it is there but cannot be executed. `None` for any other failure.
fn exec_failure(message: &str, program: &str) -> Option<(i32, String)> {
    let errno: i32 = message
        .strip_prefix(EXEC_FAILED)?
        .rsplit_once("(os error ")?
        .1
        .strip_suffix(')')?
        .parse()
        .ok()?;
    let (code, why) = match errno {
        libc::ENOENT | libc::ENOTDIR => (127, "was not found in the environment"),
        libc::ENAMETOOLONG => (127, "has a name too long to be found"),
        libc::ELOOP => (127, "was not found (too many symbolic links)"),
        libc::EACCES | libc::EPERM => (126, "cannot be executed: permission denied"),
        libc::ENOEXEC => (126, "cannot be executed: not an executable format"),
        libc::EISDIR => (126, "cannot be executed: it is a directory"),
        libc::ETXTBSY => (126, "cannot be executed: it is being written"),
        libc::E2BIG => (126, "cannot be executed: the arguments are too long"),
        libc::ELIBBAD | libc::ELIBACC => (
            126,
            "cannot be executed: a shared library is missing or damaged",
        ),
        _ => return None,
    };
    Some((code, format!("the program '{program}' {why}")))
}

/// A program with no name: not found, as a shell says (it is never run).
pub fn nameless_program() -> Ending {
    Ending {
        reason: EndReason::Normal,
        message: Some("the program '' was not found in the environment (an empty name)".into()),
        result: Some(ExecutionResult::Program(ProgramResult {
            exit_code: Some(127),
            signal: None,
            signal_name: None,
            timeout: None,
            cpu_time_s: 0.0,
            user_time_s: 0.0,
            system_time_s: 0.0,
            wall_time_s: 0.0,
            setup_s: None,
            peak_memory_bytes: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            oom_kills: 0,
            pids_limit_hit: false,
            seccomp_violations: Vec::new(),
            cgroup_version: 0,
            outputs: BTreeMap::new(),
            kept: BTreeMap::new(),
        })),
    }
}

/// How one program's run ended, as the engine tells it: the core's verdict, except that a
/// program that could not be started ends `normal` with exit status 127/126 and says why,
/// and a failure of the sandbox itself says only that (its details go to the server's log,
/// under execution `id`).
pub fn program_end(
    id: &str,
    program: &str,
    outcome: &sandbox::Outcome,
    refused: BTreeMap<String, String>,
) -> ProgramEnd {
    let mut result = ProgramResult::from_outcome(outcome, refused);
    let reason = EndReason::from(outcome.end_reason);
    if reason != EndReason::InternalError {
        return ProgramEnd {
            end_reason: reason,
            message: outcome.message.clone(),
            result: Some(result),
        };
    }
    let message = outcome.message.as_deref().unwrap_or_default();
    match exec_failure(message, program) {
        Some((code, why)) => {
            result.exit_code = Some(code);
            ProgramEnd {
                end_reason: EndReason::Normal,
                message: Some(why),
                result: Some(result),
            }
        }
        None => {
            let failed = Ending::failed(id, message);
            ProgramEnd {
                end_reason: failed.reason,
                message: failed.message,
                result: Some(result),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_cannot_start_is_told_as_a_shell_would() {
        let errno_text = |e: i32| std::io::Error::from_raw_os_error(e).to_string();
        for (errno, code) in [
            (libc::ENOENT, 127),
            (libc::ENOTDIR, 127),
            (libc::EACCES, 126),
            (libc::ENOEXEC, 126),
        ] {
            let (got, why) =
                exec_failure(&format!("{EXEC_FAILED}{}", errno_text(errno)), "prog").unwrap();
            assert_eq!(got, code, "errno {errno}");
            assert!(why.contains("'prog'"), "{why}");
        }
        // Other failures are the sandbox's own.
        assert_eq!(
            exec_failure(&format!("{EXEC_FAILED}{}", errno_text(libc::ENOMEM)), "p"),
            None
        );
        assert_eq!(
            exec_failure("mounting the root: Permission denied (os error 13)", "p"),
            None
        );
    }

    #[test]
    fn the_stored_form_of_today_reads_back() {
        // As the store kept results before: the core's Outcome serialised, streams removed,
        // `outputs` added (end_reason and message are columns of their own and ignored here).
        let text = r#"{"end_reason":"timeout","exit_code":null,"signal":9,
            "signal_name":"SIGKILL","timeout":"cpu","cpu_time_s":1.01,"user_time_s":1.0,
            "system_time_s":0.01,"wall_time_s":1.2,"peak_memory_bytes":1048576,
            "stdout_bytes":3,"stderr_bytes":0,"stdout_truncated":false,
            "stderr_truncated":false,"oom_kills":0,"pids_limit_hit":false,
            "seccomp_violations":[{"syscall":"mount","count":2}],"cgroup_version":1,
            "message":"cpu time limit","outputs":{"link.txt":"a symlink, refused"}}"#;
        let stored: ExecutionResult = serde_json::from_str(text).unwrap();
        let r = stored.program(0).unwrap();
        assert!(stored.group().is_none() && stored.program(1).is_none());
        assert_eq!(r.timeout, Some(Timeout::Cpu));
        assert_eq!(r.seccomp_violations[0].syscall, "mount");
        assert_eq!(r.outputs["link.txt"], "a symlink, refused");
        assert!(r.kept.is_empty());
        let again: ExecutionResult =
            serde_json::from_str(&serde_json::to_string(&stored).unwrap()).unwrap();
        assert_eq!(again, stored);
    }

    #[test]
    fn a_group_result_round_trips() {
        let mut one: ExecutionResult = serde_json::from_str(
            r#"{"exit_code":0,"signal":null,"signal_name":null,"timeout":null,
            "cpu_time_s":0.1,"wall_time_s":0.2,"peak_memory_bytes":1,"stdout_bytes":0,
            "stderr_bytes":0,"stdout_truncated":false,"stderr_truncated":false,"oom_kills":0,
            "pids_limit_hit":false,"seccomp_violations":[]}"#,
        )
        .unwrap();
        let kept = Kept::File {
            file_id: "file_x".into(),
            size: 3,
            sha256: "ab".into(),
            expires_at: 7,
        };
        let p = one.program_mut(0).unwrap();
        p.kept.insert("a.out".into(), kept.clone());
        p.kept
            .insert("b".into(), Kept::Refused { error: "no".into() });
        let ExecutionResult::Program(p) = one else {
            unreachable!()
        };
        let g = ExecutionResult::Group(GroupResult {
            programs: vec![
                ProgramEnd {
                    end_reason: EndReason::Normal,
                    message: None,
                    result: Some(p),
                },
                ProgramEnd {
                    end_reason: EndReason::InternalError,
                    message: Some("x".into()),
                    result: None,
                },
            ],
            first_ended: Some(0),
            group_timeout: false,
            pipes: vec![
                Some(PipeResult {
                    bytes: 5,
                    truncated: true,
                }),
                None,
            ],
        });
        let again: ExecutionResult =
            serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(again, g);
        assert_eq!(again.program(0).unwrap().kept["a.out"], kept);
        assert!(again.program(1).is_none());
    }
}
