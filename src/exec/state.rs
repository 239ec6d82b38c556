//! The execution state machine, as data: the statuses, the end reasons, and which step may
//! move an execution from which status to which. Pure: the store applies a [`Transition`]
//! atomically (compare-and-set on the status), and only `exec` can make one.
//!
//! ```text
//! create ──► pending ──enqueue──► queued ──claim──► running ──finish/abandon──► ended
//!   └─(start)──────────────────────►┘
//!            pending, queued ──cancel (stopped before it started)──► ended
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::exec::result::ExecutionResult;

/// The PIFOP execution states, plus `queued` for work that waits for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Queued,
    Running,
    Ended,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Pending,
        Status::Queued,
        Status::Running,
        Status::Ended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an execution ended: the core's vocabulary, in the engine's own type (so the stored and
/// served form never follows a rename in the core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    Normal,
    OutOfMemory,
    Timeout,
    OutputLimit,
    Stopped,
    InternalError,
}

impl EndReason {
    pub const ALL: [EndReason; 6] = [
        EndReason::Normal,
        EndReason::OutOfMemory,
        EndReason::Timeout,
        EndReason::OutputLimit,
        EndReason::Stopped,
        EndReason::InternalError,
    ];

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

    pub fn parse(s: &str) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl From<sandbox::EndReason> for EndReason {
    fn from(r: sandbox::EndReason) -> Self {
        match r {
            sandbox::EndReason::Normal => EndReason::Normal,
            sandbox::EndReason::OutOfMemory => EndReason::OutOfMemory,
            sandbox::EndReason::Timeout => EndReason::Timeout,
            sandbox::EndReason::OutputLimit => EndReason::OutputLimit,
            sandbox::EndReason::Stopped => EndReason::Stopped,
            sandbox::EndReason::InternalError => EndReason::InternalError,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an execution says of a failure of the engine or the sandbox (the details are logged).
pub const FAILURE_MESSAGE: &str =
    "the sandbox failed to run this execution (not the program's fault); the server's log says why";

/// How an execution ended: what every waiter, the live log and (later) callbacks and metrics
/// are told, and what the store keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub reason: EndReason,
    pub message: Option<String>,
    /// The measurements; `None` when it never ran (stopped before it started, a crash).
    pub result: Option<ExecutionResult>,
}

impl Ending {
    pub fn internal(message: impl Into<String>) -> Ending {
        Ending {
            reason: EndReason::InternalError,
            message: Some(message.into()),
            result: None,
        }
    }

    /// The engine or the sandbox failed: `detail` goes to the server's log, the execution
    /// says only that (a detail may name host paths, pids or internals).
    pub fn failed(id: &str, detail: impl fmt::Display) -> Ending {
        tracing::error!("execution {id}: {detail}");
        Ending::internal(FAILURE_MESSAGE)
    }

    pub fn stopped_before_start() -> Ending {
        Ending {
            reason: EndReason::Stopped,
            message: Some("stopped before it started".into()),
            result: None,
        }
    }
}

/// The moves of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Start a pending execution: it waits for a slot.
    Enqueue,
    /// A node takes queued work into a slot.
    Claim,
    /// Stopped before it started.
    Cancel,
    /// The run is over.
    Finish,
    /// The node that ran it went away (a crash): it ends as internal-error.
    Abandon,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::Enqueue,
        Step::Claim,
        Step::Cancel,
        Step::Finish,
        Step::Abandon,
    ];

    /// The statuses this step may start from.
    pub fn from(self) -> &'static [Status] {
        match self {
            Step::Enqueue => &[Status::Pending],
            Step::Claim => &[Status::Queued],
            Step::Cancel => &[Status::Pending, Status::Queued],
            Step::Finish | Step::Abandon => &[Status::Running],
        }
    }

    /// The status it leads to.
    pub fn to(self) -> Status {
        match self {
            Step::Enqueue => Status::Queued,
            Step::Claim => Status::Running,
            Step::Cancel | Step::Finish | Step::Abandon => Status::Ended,
        }
    }

    /// Where `status` goes by this step; `None` when the step is refused from there.
    pub fn next(self, status: Status) -> Option<Status> {
        self.from().contains(&status).then(|| self.to())
    }
}

/// What a status change writes besides the status.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `queued_at` = the transition's time.
    Queued,
    /// `started_at` = the transition's time, on `node`.
    Claimed { node: String },
    /// `ended_at` = the transition's time, and how it ended; `stored_bytes` when the run
    /// measured what its execution now keeps on disk (one write for both).
    Ended {
        ending: Box<Ending>,
        stored_bytes: Option<u64>,
    },
}

/// One status change, ready for the store to apply atomically (only when the execution is in
/// one of [`Transition::from`]). Only `exec` makes these, so only `exec` changes a status.
#[derive(Debug, Clone)]
pub struct Transition {
    step: Step,
    at: Micros,
    change: Change,
}

impl Transition {
    pub(in crate::exec) fn enqueue(at: Micros) -> Transition {
        Transition {
            step: Step::Enqueue,
            at,
            change: Change::Queued,
        }
    }

    pub(in crate::exec) fn claim(node: &str, at: Micros) -> Transition {
        Transition {
            step: Step::Claim,
            at,
            change: Change::Claimed {
                node: node.to_string(),
            },
        }
    }

    /// `Cancel`, `Finish` or `Abandon`, with how it ended, and what the execution keeps on
    /// disk when that was measured.
    pub(in crate::exec) fn end(
        step: Step,
        ending: Ending,
        stored_bytes: Option<u64>,
        at: Micros,
    ) -> Transition {
        debug_assert_eq!(step.to(), Status::Ended);
        Transition {
            step,
            at,
            change: Change::Ended {
                ending: Box::new(ending),
                stored_bytes,
            },
        }
    }

    pub fn step(&self) -> Step {
        self.step
    }

    /// The statuses the store must find for the change to apply.
    pub fn from(&self) -> &'static [Status] {
        self.step.from()
    }

    pub fn to(&self) -> Status {
        self.step.to()
    }

    /// When it happens: queued, started or ended at.
    pub fn at(&self) -> Micros {
        self.at
    }

    pub fn change(&self) -> &Change {
        &self.change
    }
}

/// Whether input may still be added: only while the execution can still be started (checked
/// where an upload commits, under the lifecycle's gate, never only before its body arrives).
pub fn takes_input(status: Status) -> bool {
    Step::Enqueue.from().contains(&status)
}

/// The one "must be in this state" guard: `WrongState` saying what was tried and what it is.
pub fn require(status: Status, allowed: &[Status], what: &str) -> Result<()> {
    if allowed.contains(&status) {
        Ok(())
    } else {
        Err(Error::WrongState(format!("{what}; it is {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        use Status::*;
        let allowed = [
            (Step::Enqueue, Pending, Queued),
            (Step::Claim, Queued, Running),
            (Step::Cancel, Pending, Ended),
            (Step::Cancel, Queued, Ended),
            (Step::Finish, Running, Ended),
            (Step::Abandon, Running, Ended),
        ];
        for step in Step::ALL {
            for from in Status::ALL {
                let want = allowed
                    .iter()
                    .find(|(s, f, _)| *s == step && *f == from)
                    .map(|(_, _, to)| *to);
                assert_eq!(step.next(from), want, "{step:?} from {from}");
            }
        }
        // Nothing leaves `ended`.
        assert!(Step::ALL.iter().all(|s| s.next(Ended).is_none()));
    }

    #[test]
    fn names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        for r in EndReason::ALL {
            assert_eq!(EndReason::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::String(r.as_str().into())
            );
        }
        assert_eq!(
            EndReason::from(sandbox::EndReason::OutOfMemory),
            EndReason::OutOfMemory
        );
        assert!(require(Status::Ended, &[Status::Pending], "only pending").is_err());
    }
}
