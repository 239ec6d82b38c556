//! What a run measured, in the engine's own serialisation: the store keeps it and the API
//! shows it under these names, whatever the core's `Outcome` calls its fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// The measurements of one run (the streams and outputs are files, see `workdir.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionResult {
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
}

impl ExecutionResult {
    /// The measurements of an outcome, with the outputs that were refused.
    pub fn from_outcome(o: &sandbox::Outcome, refused: BTreeMap<String, String>) -> Self {
        ExecutionResult {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let r: ExecutionResult = serde_json::from_str(text).unwrap();
        assert_eq!(r.timeout, Some(Timeout::Cpu));
        assert_eq!(r.seccomp_violations[0].syscall, "mount");
        assert_eq!(r.outputs["link.txt"], "a symlink, refused");
        let again: ExecutionResult =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }
}
