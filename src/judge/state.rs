//! The submission state machine, as data: Sphere Engine's status codes and which step may move
//! a submission from which status to which. Pure: the store applies a [`Transition`]
//! atomically (compare-and-set on the status); only `judge` makes them.
//!
//! ```text
//! create ──► 0 waiting ──claim──► 1 preparation ──execute──► 3 execution
//!                ▲                      │                        │
//!                └────── requeue ───────┴── (server restart) ────┤
//!                                       └──── finish / abandon ──┴──► 11 12 13 14 15 20 22
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use super::report::Final;
use crate::clock::Micros;

/// Sphere's submission status codes (`executing` while 0, 1 or 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Waiting,
    Preparation,
    Execution,
    BuildError,
    RuntimeError,
    TimeLimitExceeded,
    Fail,
    Ok,
    InternalError,
    ProjectError,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Waiting,
        Status::Preparation,
        Status::Execution,
        Status::BuildError,
        Status::RuntimeError,
        Status::TimeLimitExceeded,
        Status::Fail,
        Status::Ok,
        Status::InternalError,
        Status::ProjectError,
    ];

    /// The final statuses.
    pub const FINAL: [Status; 7] = [
        Status::BuildError,
        Status::RuntimeError,
        Status::TimeLimitExceeded,
        Status::Fail,
        Status::Ok,
        Status::InternalError,
        Status::ProjectError,
    ];

    pub fn code(self) -> u8 {
        match self {
            Status::Waiting => 0,
            Status::Preparation => 1,
            Status::Execution => 3,
            Status::BuildError => 11,
            Status::RuntimeError => 12,
            Status::TimeLimitExceeded => 13,
            Status::Fail => 14,
            Status::Ok => 15,
            Status::InternalError => 20,
            Status::ProjectError => 22,
        }
    }

    pub fn from_code(code: i64) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|s| i64::from(s.code()) == code)
    }

    /// Sphere's name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Preparation => "preparation",
            Status::Execution => "execution",
            Status::BuildError => "build error",
            Status::RuntimeError => "runtime error",
            Status::TimeLimitExceeded => "time limit exceeded",
            Status::Fail => "fail",
            Status::Ok => "ok",
            Status::InternalError => "internal error",
            Status::ProjectError => "project error",
        }
    }

    /// Still being processed (Sphere's `executing`).
    pub fn executing(self) -> bool {
        matches!(
            self,
            Status::Waiting | Status::Preparation | Status::Execution
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.name())
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = i64::deserialize(d)?;
        Status::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("{code} is not a submission status")))
    }
}

/// The moves of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// A node takes a waiting submission into a slot: its workspace is being laid out.
    Claim,
    /// Its stages run.
    Execute,
    /// Graded: a final status.
    Finish,
    /// The server stopped while it ran: back to the queue, to resume from its last finished
    /// stage and test.
    Requeue,
    /// The server stopped while it ran, too often: it ends as internal error.
    Abandon,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::Claim,
        Step::Execute,
        Step::Finish,
        Step::Requeue,
        Step::Abandon,
    ];

    pub fn from(self) -> &'static [Status] {
        match self {
            Step::Claim => &[Status::Waiting],
            Step::Execute => &[Status::Preparation],
            Step::Finish | Step::Requeue | Step::Abandon => {
                &[Status::Preparation, Status::Execution]
            }
        }
    }
}

/// What a status change writes besides the status.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `started_at` = the transition's time, on `node`.
    Claimed {
        node: String,
    },
    Executing,
    /// The final status, `ended_at`, and the grade.
    Ended(Box<Final>),
    /// Back to waiting (the queue keeps its place); one more attempt counted.
    Requeued,
}

/// One status change, ready for the store to apply atomically.
#[derive(Debug, Clone)]
pub struct Transition {
    step: Step,
    at: Micros,
    change: Change,
}

impl Transition {
    pub(in crate::judge) fn claim(node: &str, at: Micros) -> Transition {
        Transition {
            step: Step::Claim,
            at,
            change: Change::Claimed {
                node: node.to_string(),
            },
        }
    }

    pub(in crate::judge) fn execute(at: Micros) -> Transition {
        Transition {
            step: Step::Execute,
            at,
            change: Change::Executing,
        }
    }

    /// `Finish` or `Abandon`, with the grade.
    pub(in crate::judge) fn end(step: Step, grade: Final, at: Micros) -> Transition {
        debug_assert!(matches!(step, Step::Finish | Step::Abandon));
        Transition {
            step,
            at,
            change: Change::Ended(Box::new(grade)),
        }
    }

    pub(in crate::judge) fn requeue(at: Micros) -> Transition {
        Transition {
            step: Step::Requeue,
            at,
            change: Change::Requeued,
        }
    }

    pub fn step(&self) -> Step {
        self.step
    }

    pub fn from(&self) -> &'static [Status] {
        self.step.from()
    }

    /// The status it leads to.
    pub fn to(&self) -> Status {
        match &self.change {
            Change::Claimed { .. } => Status::Preparation,
            Change::Executing => Status::Execution,
            Change::Ended(grade) => grade.status,
            Change::Requeued => Status::Waiting,
        }
    }

    pub fn at(&self) -> Micros {
        self.at
    }

    pub fn change(&self) -> &Change {
        &self.change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_names_and_executing() {
        let codes: Vec<u8> = Status::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [0, 1, 3, 11, 12, 13, 14, 15, 20, 22]);
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code().into()), Some(s));
            assert_eq!(s.executing(), !Status::FINAL.contains(&s), "{s}");
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.code())
            );
        }
        assert_eq!(Status::from_code(2), None);
        assert_eq!(Status::ProjectError.name(), "project error");
        assert!(serde_json::from_str::<Status>("21").is_err());
    }

    #[test]
    fn steps_start_where_they_may() {
        assert_eq!(Step::Claim.from(), [Status::Waiting]);
        assert_eq!(Step::Execute.from(), [Status::Preparation]);
        for step in [Step::Finish, Step::Requeue, Step::Abandon] {
            assert_eq!(step.from(), [Status::Preparation, Status::Execution]);
        }
        for final_status in Status::FINAL {
            assert!(Step::ALL.iter().all(|s| !s.from().contains(&final_status)));
        }
    }
}
