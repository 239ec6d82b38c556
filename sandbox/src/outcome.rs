//! What a run did and why it ended: the output of [`crate::Sandbox::run`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cgroup::CgroupStats;
use crate::signals::signal_name;

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
    /// What the sandbox cost before the program started: from the moment the run was asked
    /// for (or a prepared sandbox was taken for it) to the program's start.
    #[serde(default)]
    pub setup_s: f64,
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
    /// More denied syscalls were attempted than the engine reports per run: the counts are
    /// lower bounds, and the later attempts failed with ENOSYS instead of EPERM.
    #[serde(default)]
    pub seccomp_violations_capped: bool,
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
            setup_s: 0.0,
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
            seccomp_violations_capped: false,
            cgroup_version: 0,
            files: BTreeMap::new(),
            message: Some(message),
        }
    }
}

/// Why the supervisor ended the run itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillCause {
    CpuTime,
    WallTime,
    Output,
    Stop,
    SetupFailed,
    /// The wall time limit of the program's group.
    GroupWallTime,
    /// Another program of the group ended, and the group ends with it.
    GroupEnded,
}

/// One stream as the supervisor captured it.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub data: Vec<u8>,
    /// Every byte written, also past the cap.
    pub total: u64,
    pub truncated: bool,
}

/// Everything the verdict is decided from, gathered by the supervisor and the cgroup.
pub(crate) struct Evidence {
    /// Why the sandbox or the program's own setup failed, in words.
    pub setup_error: Option<String>,
    pub killed: Option<KillCause>,
    /// CLOCK_MONOTONIC ns when the program started, and (wait status, ns) when it ended.
    pub started_at: Option<i64>,
    pub exited: Option<(i32, i64)>,
    /// Now, for a run whose end init never reported.
    pub now_ns: i64,
    /// The cgroup's CPU counter when the program started (setup's own CPU time).
    pub cpu_baseline_ns: u64,
    pub cgroup: CgroupStats,
    pub cgroup_version: u8,
    /// Denied syscalls by number, and whether reporting stopped at the cap.
    pub violations: BTreeMap<i32, u64>,
    pub violations_capped: bool,
    pub stdout: Captured,
    pub stderr: Captured,
    pub files: BTreeMap<String, Result<Vec<u8>, String>>,
    /// From the moment the run was asked for to the program's start.
    pub setup_ns: Option<i64>,
}

/// Turns the evidence into an outcome. The precedence: the sandbox's own failure, a stop, the
/// OOM counter, a lost init, CPU, wall, output, and otherwise the program's own end.
pub(crate) fn verdict(e: Evidence, syscall_name: impl Fn(i32) -> String) -> Outcome {
    let wall_ns = match (e.started_at, e.exited) {
        (Some(s), Some((_, end))) => end - s,
        (Some(s), None) => e.now_ns - s,
        _ => 0,
    };
    let stats = e.cgroup;
    let cpu_ns = stats.cpu_ns.saturating_sub(e.cpu_baseline_ns);
    // user/system come from coarser counters: scale them to split the exact total.
    let scale = |part: u64| {
        if stats.cpu_ns == 0 {
            0.0
        } else {
            cpu_ns as f64 * part as f64 / stats.cpu_ns as f64 / 1e9
        }
    };
    let (mut exit_code, mut signal) = (None, None);
    if let Some((status, _)) = e.exited {
        if libc::WIFEXITED(status) {
            exit_code = Some(libc::WEXITSTATUS(status));
        } else if libc::WIFSIGNALED(status) {
            signal = Some(libc::WTERMSIG(status));
        }
    }
    let killed = e.killed;
    let (end_reason, timeout, message) = if let Some(m) = e.setup_error {
        (EndReason::InternalError, None, Some(m))
    } else if killed == Some(KillCause::Stop) {
        (EndReason::Stopped, None, Some("stopped on request".into()))
    } else if killed == Some(KillCause::GroupEnded) {
        (
            EndReason::Stopped,
            None,
            Some("stopped: the program its group ends with ended".into()),
        )
    } else if stats.oom_kills > 0 {
        // Whoever the victim was: the counter moved, so memory ran out.
        (
            EndReason::OutOfMemory,
            None,
            Some(format!(
                "the memory cgroup's OOM killer ended {} process(es)",
                stats.oom_kills
            )),
        )
    } else if e.exited.is_none() && killed.is_none() {
        (
            EndReason::InternalError,
            None,
            Some("the sandbox's init ended without reporting the program's status".into()),
        )
    } else if killed == Some(KillCause::CpuTime) {
        (
            EndReason::Timeout,
            Some(TimeoutKind::Cpu),
            Some("CPU time limit reached".into()),
        )
    } else if killed == Some(KillCause::WallTime) {
        (
            EndReason::Timeout,
            Some(TimeoutKind::Wall),
            Some("wall time limit reached".into()),
        )
    } else if killed == Some(KillCause::GroupWallTime) {
        (
            EndReason::Timeout,
            Some(TimeoutKind::Wall),
            Some("the group's wall time limit reached".into()),
        )
    } else if killed == Some(KillCause::Output) {
        (
            EndReason::OutputLimit,
            None,
            Some("output limit reached".into()),
        )
    } else {
        (EndReason::Normal, None, None)
    };
    Outcome {
        end_reason,
        exit_code,
        signal,
        signal_name: signal.and_then(signal_name).map(str::to_string),
        timeout,
        cpu_time_s: cpu_ns as f64 / 1e9,
        user_time_s: scale(stats.user_ns),
        system_time_s: scale(stats.system_ns),
        wall_time_s: wall_ns.max(0) as f64 / 1e9,
        setup_s: e.setup_ns.unwrap_or(0).max(0) as f64 / 1e9,
        peak_memory_bytes: stats.peak_memory_bytes,
        stdout_bytes: e.stdout.total,
        stderr_bytes: e.stderr.total,
        stdout_truncated: e.stdout.truncated,
        stderr_truncated: e.stderr.truncated,
        stdout: e.stdout.data,
        stderr: e.stderr.data,
        oom_kills: stats.oom_kills,
        pids_limit_hit: stats.pids_limit_hit,
        seccomp_violations: e
            .violations
            .into_iter()
            .map(|(nr, count)| SeccompViolation {
                syscall: syscall_name(nr),
                count,
            })
            .collect(),
        seccomp_violations_capped: e.violations_capped,
        cgroup_version: e.cgroup_version,
        files: e.files,
        message,
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

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_0: i32 = 0;
    const KILLED: i32 = libc::SIGKILL; // wait status of a process killed by SIGKILL

    fn evidence() -> Evidence {
        Evidence {
            setup_error: None,
            killed: None,
            started_at: Some(1_000),
            exited: Some((EXIT_0, 501_000)),
            now_ns: 9_000_000,
            cpu_baseline_ns: 100,
            cgroup: CgroupStats {
                cpu_ns: 2_100,
                user_ns: 1_575,
                system_ns: 525,
                peak_memory_bytes: 4096,
                oom_kills: 0,
                pids_limit_hit: false,
            },
            cgroup_version: 2,
            violations: BTreeMap::new(),
            violations_capped: false,
            stdout: Captured::default(),
            stderr: Captured::default(),
            files: BTreeMap::new(),
            setup_ns: Some(900),
        }
    }

    fn judge(e: Evidence) -> Outcome {
        verdict(e, |nr| format!("nr{nr}"))
    }

    #[test]
    fn a_program_that_ends_by_itself_is_normal_and_measured() {
        let o = judge(evidence());
        assert_eq!(o.end_reason, EndReason::Normal);
        assert_eq!((o.exit_code, o.signal), (Some(0), None));
        assert_eq!(o.wall_time_s, 500_000.0 / 1e9);
        // Setup's CPU is not the program's; user:system 3:1 of the rest.
        assert_eq!(o.cpu_time_s, 2_000.0 / 1e9);
        assert!((o.user_time_s - 1_500.0 / 1e9).abs() < 1e-15);
        assert!((o.system_time_s - 500.0 / 1e9).abs() < 1e-15);
        assert_eq!(o.message, None);
    }

    #[test]
    fn a_signal_is_reported_by_name() {
        let mut e = evidence();
        e.exited = Some((libc::SIGABRT, 2_000));
        let o = judge(e);
        assert_eq!(o.end_reason, EndReason::Normal);
        assert_eq!((o.exit_code, o.signal), (None, Some(libc::SIGABRT)));
        assert_eq!(o.signal_name.as_deref(), Some("SIGABRT"));
    }

    #[test]
    fn the_precedence_of_end_reasons() {
        // Each row adds one more piece of evidence; the strongest one decides.
        let mut e = evidence();
        e.exited = Some((KILLED, 2_000));
        e.killed = Some(KillCause::Output);
        assert_eq!(judge(e).end_reason, EndReason::OutputLimit);

        let mut e = evidence();
        e.killed = Some(KillCause::WallTime);
        let o = judge(e);
        assert_eq!(
            (o.end_reason, o.timeout),
            (EndReason::Timeout, Some(TimeoutKind::Wall))
        );

        let mut e = evidence();
        e.killed = Some(KillCause::CpuTime);
        let o = judge(e);
        assert_eq!(
            (o.end_reason, o.timeout),
            (EndReason::Timeout, Some(TimeoutKind::Cpu))
        );

        // The OOM counter beats a time limit hit at the same moment...
        let mut e = evidence();
        e.killed = Some(KillCause::CpuTime);
        e.cgroup.oom_kills = 2;
        let o = judge(e);
        assert_eq!(o.end_reason, EndReason::OutOfMemory);
        assert_eq!(o.timeout, None);
        // ...and a SIGKILL without the counter is not out-of-memory.
        let mut e = evidence();
        e.exited = Some((KILLED, 2_000));
        assert_eq!(judge(e).end_reason, EndReason::Normal);

        // A stop beats the OOM counter.
        let mut e = evidence();
        e.killed = Some(KillCause::Stop);
        e.cgroup.oom_kills = 1;
        assert_eq!(judge(e).end_reason, EndReason::Stopped);

        // The sandbox's own failure beats everything.
        let mut e = evidence();
        e.killed = Some(KillCause::Stop);
        e.setup_error = Some("mounting /proc: EPERM".into());
        let o = judge(e);
        assert_eq!(o.end_reason, EndReason::InternalError);
        assert_eq!(o.message.as_deref(), Some("mounting /proc: EPERM"));
    }

    #[test]
    fn an_init_killed_by_the_oom_killer_is_still_out_of_memory() {
        let mut e = evidence();
        e.exited = None;
        e.cgroup.oom_kills = 1;
        assert_eq!(judge(e).end_reason, EndReason::OutOfMemory);
    }

    #[test]
    fn an_init_that_vanished_is_the_sandboxs_fault() {
        let mut e = evidence();
        e.exited = None;
        let o = judge(e);
        assert_eq!(o.end_reason, EndReason::InternalError);
        // Wall time runs to now when the end was never seen.
        assert_eq!(o.wall_time_s, (9_000_000 - 1_000) as f64 / 1e9);
        // A run that never started used no time.
        let mut e = evidence();
        e.started_at = None;
        e.exited = None;
        e.killed = Some(KillCause::Stop);
        let o = judge(e);
        assert_eq!((o.end_reason, o.wall_time_s), (EndReason::Stopped, 0.0));
    }

    #[test]
    fn evidence_travels_into_the_outcome() {
        let mut e = evidence();
        e.violations.insert(165, 3);
        e.cgroup.pids_limit_hit = true;
        e.stdout = Captured {
            data: b"hi".to_vec(),
            total: 10,
            truncated: true,
        };
        let o = judge(e);
        assert_eq!(o.seccomp_violations[0].syscall, "nr165");
        assert_eq!(o.seccomp_violations[0].count, 3);
        assert!(o.pids_limit_hit);
        assert_eq!(
            (o.stdout.as_slice(), o.stdout_bytes, o.stdout_truncated),
            (&b"hi"[..], 10, true)
        );
    }
}
