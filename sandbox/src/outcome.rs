//! What a run did and why it ended: the output of [`crate::Sandbox::run`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a run ended. Decided from kernel evidence, never guessed from a signal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// The program ended by itself: see `exit_code` / `signal`.
    Normal,
    /// The cgroup's OOM killer ended it (`oom_kills` > 0).
    OutOfMemory,
    /// A time limit ended it; `timeout` says which.
    Timeout,
    /// It wrote more than the output limit.
    OutputLimit,
    /// It was asked to stop.
    Stopped,
    /// The sandbox itself failed; `message` says what. Never the program's fault.
    InternalError,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Normal => "normal",
            EndReason::OutOfMemory => "out-of-memory",
            EndReason::Timeout => "timeout",
            EndReason::OutputLimit => "output-limit",
            EndReason::Stopped => "stopped",
            EndReason::InternalError => "internal-error",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which time limit was crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutKind {
    Cpu,
    Wall,
}

/// A system call that the seccomp policy denied, as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompViolation {
    /// The syscall's name (or its number, when it has no name in the table).
    pub syscall: String,
    /// How many times it was attempted.
    pub count: u64,
}

/// Everything measured about one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub end_reason: EndReason,
    /// Exit status, when the program exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that ended the program (number), when one did.
    pub signal: Option<i32>,
    /// The signal's name (e.g. `SIGABRT`).
    pub signal_name: Option<String>,
    pub timeout: Option<TimeoutKind>,
    /// user + system CPU time of the whole process tree (cgroup accounting).
    pub cpu_time_s: f64,
    pub user_time_s: f64,
    pub system_time_s: f64,
    /// From the program's start to the end of its last process.
    pub wall_time_s: f64,
    /// Peak memory of the sandbox's cgroup.
    pub peak_memory_bytes: u64,
    /// Bytes the program wrote to stdout / stderr (all of them, also past the limit).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// The captured streams, at most `limits.output_bytes` each.
    #[serde(with = "lossy_bytes")]
    pub stdout: Vec<u8>,
    #[serde(with = "lossy_bytes")]
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Kernel evidence: OOM kills counted by the cgroup during this run.
    pub oom_kills: u64,
    /// Kernel evidence: the pids cgroup refused a fork at least once.
    pub pids_limit_hit: bool,
    /// Kernel evidence: syscalls the seccomp policy denied.
    pub seccomp_violations: Vec<SeccompViolation>,
    /// Which cgroup version measured this run (1 or 2).
    pub cgroup_version: u8,
    /// Files read back after the run (`Spec::collect`): path → result.
    #[serde(skip)]
    pub files: BTreeMap<String, Result<Vec<u8>, String>>,
    /// For `internal-error`: what failed. Otherwise a short explanation of the end reason.
    pub message: Option<String>,
}

impl Outcome {
    pub(crate) fn internal_error(message: String) -> Self {
        Outcome {
            end_reason: EndReason::InternalError,
            exit_code: None,
            signal: None,
            signal_name: None,
            timeout: None,
            cpu_time_s: 0.0,
            user_time_s: 0.0,
            system_time_s: 0.0,
            wall_time_s: 0.0,
            peak_memory_bytes: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            oom_kills: 0,
            pids_limit_hit: false,
            seccomp_violations: Vec::new(),
            cgroup_version: 0,
            files: BTreeMap::new(),
            message: Some(message),
        }
    }
}

/// Output streams are bytes; in JSON they are text (invalid UTF-8 replaced).
mod lossy_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}
