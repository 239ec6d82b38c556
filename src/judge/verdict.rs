//! What one run of a submission came to: a test's verdict and row of the per-test table, and a
//! stage's record. Both keep the kernel evidence of the run (`ProgramResult`: end reason,
//! exit or signal, CPU and wall time, peak memory, OOM kills, the pids limit, denied calls).

use serde::{Deserialize, Serialize};

use super::config::Stage;
use crate::exec::result::{ProgramResult, Timeout};
use crate::exec::EndReason;

/// A test's verdict. `memory-limit` is one of its own, although Sphere's status codes have
/// none (the submission's status then uses the closest code and says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Accepted,
    /// Some of the test's points (a checker's `points`).
    Partial,
    WrongAnswer,
    PresentationError,
    /// A time limit ended it; `timeout` says which (`cpu` or `wall`).
    TimeLimit,
    /// The cgroup's OOM killer ended it (kernel evidence: `oom_kills`).
    MemoryLimit,
    OutputLimit,
    /// It exited non-zero or died of a signal (`exit_code` / `signal_name`).
    RuntimeError,
    /// The checker failed (exit 3, a crash, a timeout): the project's fault, never the
    /// submission's.
    CheckerError,
    /// The sandbox failed: never the submission's fault.
    InternalError,
    /// The submission was stopped (deleted) while it ran.
    Stopped,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Partial => "partial",
            Verdict::WrongAnswer => "wrong-answer",
            Verdict::PresentationError => "presentation-error",
            Verdict::TimeLimit => "time-limit",
            Verdict::MemoryLimit => "memory-limit",
            Verdict::OutputLimit => "output-limit",
            Verdict::RuntimeError => "runtime-error",
            Verdict::CheckerError => "checker-error",
            Verdict::InternalError => "internal-error",
            Verdict::Stopped => "stopped",
        }
    }

    /// For people: "wrong answer".
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Partial => "partially correct",
            Verdict::WrongAnswer => "wrong answer",
            Verdict::PresentationError => "presentation error",
            Verdict::TimeLimit => "time limit exceeded",
            Verdict::MemoryLimit => "memory limit exceeded",
            Verdict::OutputLimit => "output limit exceeded",
            Verdict::RuntimeError => "runtime error",
            Verdict::CheckerError => "checker error",
            Verdict::InternalError => "internal error",
            Verdict::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the per-test table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// 1-based, in the project's order.
    pub index: usize,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub weight: f64,
    pub verdict: Verdict,
    /// Points earned, 0 to `weight`.
    pub score: f64,
    /// CPU seconds.
    pub time: f64,
    pub wall_time: f64,
    /// Peak bytes.
    pub memory: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<String>,
    /// What the checker said (testlib writes its verdict line to stderr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker_message: Option<String>,
    /// How the program's run ended, and why (the core's message).
    pub end_reason: EndReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The run's measurements and kernel evidence; none when it never ran.
    pub evidence: Option<ProgramResult>,
}

/// How one stage ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: Stage,
    pub end_reason: EndReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    pub time: f64,
    pub wall_time: f64,
    pub memory: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub evidence: Option<ProgramResult>,
}

impl StageRecord {
    /// Ended by itself with exit status 0.
    pub fn succeeded(&self) -> bool {
        self.end_reason == EndReason::Normal && self.exit_code == Some(0)
    }

    /// "exit code 2", "signal SIGSEGV", "timeout (cpu)", "out-of-memory".
    pub fn how(&self) -> String {
        how(
            self.end_reason,
            self.exit_code,
            self.signal_name.as_deref(),
            self.timeout,
        )
    }
}

/// How a run ended, in a few words.
pub fn how(
    reason: EndReason,
    exit_code: Option<i32>,
    signal: Option<&str>,
    timeout: Option<Timeout>,
) -> String {
    match reason {
        EndReason::Normal => match (exit_code, signal) {
            (_, Some(sig)) => format!("killed by {sig}"),
            (Some(code), None) => format!("exit code {code}"),
            (None, None) => "ended".into(),
        },
        EndReason::Timeout => match timeout {
            Some(Timeout::Cpu) => "CPU time limit exceeded".into(),
            Some(Timeout::Wall) => "wall time limit exceeded".into(),
            None => "time limit exceeded".into(),
        },
        EndReason::OutOfMemory => "memory limit exceeded".into(),
        EndReason::OutputLimit => "output limit exceeded".into(),
        EndReason::Stopped => "stopped".into(),
        EndReason::InternalError => "the sandbox failed".into(),
    }
}

/// The verdict a run alone gives, before any checker: `None` when it ended by itself with
/// exit status 0 (its output goes to the checker).
pub fn of_run(reason: EndReason, exit_code: Option<i32>, signal: Option<i32>) -> Option<Verdict> {
    match reason {
        EndReason::Normal if signal.is_none() && exit_code == Some(0) => None,
        EndReason::Normal => Some(Verdict::RuntimeError),
        EndReason::Timeout => Some(Verdict::TimeLimit),
        EndReason::OutOfMemory => Some(Verdict::MemoryLimit),
        EndReason::OutputLimit => Some(Verdict::OutputLimit),
        EndReason::Stopped => Some(Verdict::Stopped),
        EndReason::InternalError => Some(Verdict::InternalError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_give_their_verdicts_from_the_end_reason() {
        assert_eq!(of_run(EndReason::Normal, Some(0), None), None);
        assert_eq!(
            of_run(EndReason::Normal, Some(1), None),
            Some(Verdict::RuntimeError)
        );
        assert_eq!(
            of_run(EndReason::Normal, None, Some(11)),
            Some(Verdict::RuntimeError)
        );
        assert_eq!(
            of_run(EndReason::OutOfMemory, None, Some(9)),
            Some(Verdict::MemoryLimit)
        );
        assert_eq!(
            of_run(EndReason::Timeout, None, Some(9)),
            Some(Verdict::TimeLimit)
        );
        assert_eq!(
            of_run(EndReason::OutputLimit, None, None),
            Some(Verdict::OutputLimit)
        );
        assert_eq!(
            serde_json::to_value(Verdict::MemoryLimit).unwrap(),
            "memory-limit"
        );
        assert_eq!(
            how(
                EndReason::Timeout,
                None,
                Some("SIGKILL"),
                Some(Timeout::Wall)
            ),
            "wall time limit exceeded"
        );
        assert_eq!(how(EndReason::Normal, Some(3), None, None), "exit code 3");
    }
}
