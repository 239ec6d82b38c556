//! What happens to submissions, told to whoever listens. Every end goes through the judge's
//! lifecycle, which emits one [`SubmissionEnded`] here once the end is in the store (waiters,
//! the progress stream; completion callbacks subscribe the same way). Progress is also
//! written as [`ProgressEvent`] lines to the submission's progress log, which the live
//! stream follows.

use serde::Serialize;
use tokio::sync::broadcast;

use super::config::Stage;
use super::state::Status;
use super::verdict::{StageRecord, TestResult, Verdict};
use crate::exec::events::EndOf;
use crate::exec::EndReason;

/// A submission ended (its grade is in the store before this is sent).
#[derive(Debug, Clone)]
pub struct SubmissionEnded {
    pub id: String,
    pub status: Status,
}

impl EndOf for SubmissionEnded {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The fan-out; a subscriber that falls behind gets `Lagged` and re-reads the store.
#[derive(Clone)]
pub struct Events {
    ended: broadcast::Sender<SubmissionEnded>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            ended: broadcast::channel(1024).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SubmissionEnded> {
        self.ended.subscribe()
    }

    pub(in crate::judge) fn emit(&self, event: SubmissionEnded) {
        let _ = self.ended.send(event);
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

/// One line of the progress log (and of the live progress stream).
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent<'a> {
    Status {
        status: Status,
        status_name: &'static str,
    },
    StageStarted {
        stage: Stage,
    },
    StageEnded {
        stage: Stage,
        end_reason: EndReason,
        exit_code: Option<i32>,
        time: f64,
        wall_time: f64,
    },
    Test {
        index: usize,
        name: &'a str,
        verdict: Verdict,
        time: f64,
        memory: u64,
        score: f64,
    },
    Ended {
        status: Status,
        status_name: &'static str,
        score: Option<f64>,
        reason: &'a str,
    },
}

impl ProgressEvent<'_> {
    pub fn status(status: Status) -> ProgressEvent<'static> {
        ProgressEvent::Status {
            status,
            status_name: status.name(),
        }
    }

    pub fn stage_ended(r: &StageRecord) -> ProgressEvent<'_> {
        ProgressEvent::StageEnded {
            stage: r.stage,
            end_reason: r.end_reason,
            exit_code: r.exit_code,
            time: r.time,
            wall_time: r.wall_time,
        }
    }

    pub fn test(t: &TestResult) -> ProgressEvent<'_> {
        ProgressEvent::Test {
            index: t.index,
            name: &t.name,
            verdict: t.verdict,
            time: t.time,
            memory: t.memory,
            score: t.score,
        }
    }

    /// The line (JSON, no newline).
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
