//! Grading: the dispatcher claims waiting submissions into free slots, each is graded by the
//! pipeline on a blocking thread with its progress recorded (so that a restart resumes it);
//! at start, what a crash interrupted is resumed or ended.

use std::sync::Arc;

use sandbox::StopHandle;
use tokio::sync::OwnedSemaphorePermit;

use super::Service;
use crate::error::Result;
use crate::ids::valid_project_id;
use crate::judge::config::Stage;
use crate::judge::events::ProgressEvent;
use crate::judge::pipeline::{self, Done, Graded, Grading, Progress};
use crate::judge::project::{ProjectFiles, TestCase};
use crate::judge::report::Final;
use crate::judge::verdict::{StageRecord, TestResult};
use crate::judge::workspace::{top_level, SubmissionDir};
use crate::scheduler::Dispatched;
use crate::store::{StoreError, SubmissionRow};

/// Restarts of the server a submission survives (resumed each time); the next ends it as
/// internal error.
const MAX_RESUMES: i64 = 2;

impl Service {
    /// At start: what a crash interrupted goes back to the queue to resume (or ends as
    /// internal error after too many restarts); files nobody knows go. Returns how many were
    /// resumed and how many ended.
    pub async fn recover(&self) -> Result<(usize, usize)> {
        let (mut resumed, mut ended) = (0, 0);
        for row in self.store.running_submissions(&self.node).await? {
            let dir = self.dirs.of(&row.id);
            if row.attempts >= MAX_RESUMES {
                let grade = Final::internal(format!(
                    "the server stopped {} times while grading this submission; it is not tried again",
                    row.attempts + 1
                ));
                dir.debug(&grade.reason);
                if self.life.abandon(&row.id, grade).await? {
                    ended += 1;
                }
            } else {
                dir.debug("the server stopped while grading this submission; it resumes from its last finished stage and test");
                if self.life.requeue(&row.id).await? {
                    resumed += 1;
                }
            }
        }
        // Those of keys whose deletion a crash interrupted (none is being graded now).
        let orphans = self.store.orphaned_submission_ids().await?;
        if !orphans.is_empty() {
            tracing::warn!(
                "erasing {} submission(s) of deleted API keys",
                orphans.len()
            );
            self.erase_all(orphans).await?;
        }
        for id in self.dirs.ids().await {
            if self.store.get_submission(&id).await?.is_none() {
                let _ = self.dirs.of(&id).remove().await;
            }
        }
        let _ = tokio::fs::remove_dir_all(self.staging()).await;
        if let Ok(entries) = top_level(&self.projects) {
            for (name, _) in entries {
                if valid_project_id(&name) {
                    self.collect_revisions(&name).await;
                }
            }
        }
        Ok((resumed, ended))
    }

    /// Claims waiting submissions into free slots from now on.
    pub fn spawn_dispatcher(self: &Arc<Self>) {
        self.sched.dispatch(self.clone());
    }

    /// Grades a claimed submission in its slot and records its grade.
    async fn run_claimed(self: Arc<Self>, row: SubmissionRow, permit: OwnedSemaphorePermit) {
        let id = row.id.clone();
        let graded = match StopHandle::new() {
            Ok(stop) if self.sched.register(&id, stop.clone()) => Graded::Stopped,
            Ok(stop) => match self.store.submission_progress(&id).await {
                Ok((stages, tests)) => {
                    let s = self.clone();
                    let rt = tokio::runtime::Handle::current();
                    let claimed = row.clone();
                    tokio::task::spawn_blocking(move || {
                        s.grade_blocking(&claimed, Done { stages, tests }, stop, rt)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Graded::Final(Box::new(Final::internal(format!("grading panicked: {e}"))))
                    })
                }
                Err(e) => Graded::Final(Box::new(Final::internal(format!(
                    "reading what was done: {e}"
                )))),
            },
            Err(e) => Graded::Final(Box::new(Final::internal(format!(
                "creating the stop handle: {e}"
            )))),
        };
        let grade = match graded {
            Graded::Final(f) => *f,
            Graded::Stopped => Final::internal("stopped before it was graded (deleted)"),
        };
        if let Err(e) = self.life.finish(&id, grade).await {
            tracing::error!("recording the grade of {id}: {e}");
        }
        self.sched.unregister(&id);
        drop(permit);
        self.collect_revisions(&row.project_id).await;
    }

    fn grade_blocking(
        &self,
        row: &SubmissionRow,
        done: Done,
        stop: StopHandle,
        rt: tokio::runtime::Handle,
    ) -> Graded {
        let root = self.project_dir(&row.project_id, row.project_revision);
        let project = match ProjectFiles::open(&root) {
            Ok(p) => p,
            Err(e) => {
                return Graded::Final(Box::new(Final::internal(format!(
                    "the project's files (revision {}) are gone: {e}",
                    row.project_revision
                ))))
            }
        };
        let dir = self.dirs.of(&row.id);
        let g = Grading {
            pool: self.pool.clone(),
            envs: &self.envs,
            project: &project,
            scenario: &row.scenario,
            dir: &dir,
            stop,
        };
        let mut recorder = Recorder {
            rt,
            svc: self,
            id: &row.id,
            dir: &dir,
            testing: false,
        };
        pipeline::grade(&g, done, &mut recorder)
    }
}

/// Records progress as grading goes (from the blocking thread): in the store, so that a
/// restart resumes from here, and in the progress log, for the live stream.
struct Recorder<'a> {
    rt: tokio::runtime::Handle,
    svc: &'a Service,
    id: &'a str,
    dir: &'a SubmissionDir,
    testing: bool,
}

impl Recorder<'_> {
    fn store<T>(&self, what: &str, r: crate::store::Result<T>) {
        if let Err(e) = r {
            tracing::warn!("submission {}: recording {what}: {e}", self.id);
        }
    }

    fn set_stage(&self, stage: Stage) {
        let r = self
            .rt
            .block_on(self.svc.store.set_submission_stage(self.id, Some(stage)));
        self.store("the stage", r);
    }
}

impl Progress for Recorder<'_> {
    fn executing(&mut self) {
        let r = self.rt.block_on(self.svc.life.execute(self.id));
        self.store("execution", r);
    }

    fn stage_started(&mut self, stage: Stage) {
        self.set_stage(stage);
        self.dir
            .append_progress(&ProgressEvent::StageStarted { stage }.line());
    }

    fn stage_ended(&mut self, record: &StageRecord) {
        let r = self
            .rt
            .block_on(self.svc.store.record_stage(self.id, record));
        self.store("a stage", r);
        self.dir
            .append_progress(&ProgressEvent::stage_ended(record).line());
    }

    fn test_started(&mut self, _test: &TestCase, _index: usize) {
        if !self.testing {
            self.testing = true;
            self.set_stage(Stage::Run);
            self.dir
                .append_progress(&ProgressEvent::StageStarted { stage: Stage::Run }.line());
        }
    }

    fn test_ended(&mut self, result: &TestResult) {
        let r = self
            .rt
            .block_on(self.svc.store.record_test(self.id, result));
        self.store("a test", r);
        self.dir
            .append_progress(&ProgressEvent::test(result).line());
    }
}

impl Dispatched for Service {
    type Work = SubmissionRow;
    type Error = StoreError;

    async fn claim(&self) -> std::result::Result<Option<SubmissionRow>, StoreError> {
        self.life.claim_next(&self.node).await
    }

    async fn run(self: Arc<Self>, row: SubmissionRow, permit: OwnedSemaphorePermit) {
        self.run_claimed(row, permit).await
    }
}
