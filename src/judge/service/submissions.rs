//! Submissions: admitted against the key's quota, their files put in place and queued; read,
//! listed, waited for, stopped and erased.

use std::time::Duration;

use super::{invalid, Service};
use crate::auth::Principal;
use crate::callbacks::{Callback, Subject};
use crate::clock::Micros;
use crate::error::{blocking, Error, Result};
use crate::exec::events;
use crate::exec::request::InputFile;
use crate::ids::{new_submission_id, valid_project_id, valid_submission_id};
use crate::judge::state::Status;
use crate::judge::submission;
use crate::judge::verdict::{StageRecord, TestResult};
use crate::store::{StoreError, SubmissionFilter, SubmissionRow};

/// How long a `DELETE` waits for a submission being graded to stop.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// How long `wait` may take at most.
const WAIT_MAX: Duration = Duration::from_secs(7 * 86_400);
/// Most submissions in one batch.
pub const MAX_BATCH: usize = 20;

/// A new submission, parsed by a face.
pub struct NewSubmission {
    pub project_id: String,
    pub scenario: Option<String>,
    pub files: Vec<InputFile>,
    /// An archive (tar or zip) of files, besides `files`.
    pub archive: Option<Vec<u8>>,
    /// Answer once it has been graded.
    pub wait: bool,
    /// Where its final object goes when it ends (accepted against the allow-list).
    pub callback: Option<Callback>,
}
impl Service {
    /// `TooMany` when the owner already has `max_executions` executions and submissions
    /// queued or running.
    async fn admit(&self, who: &Principal) -> Result<()> {
        if let Some(max) = who.quota().max_executions {
            let owner = who.owner();
            let active = self.store.count_active(&owner).await?
                + self.store.count_active_submissions(&owner).await?;
            let active = u64::try_from(active).unwrap_or(0);
            if active >= max {
                return Err(Error::TooMany {
                    message: format!(
                        "this API key may have {max} execution(s) and submission(s) waiting or \
                         running at once (max_executions); {active} are"
                    ),
                    retry_after: 1,
                });
            }
        }
        Ok(())
    }

    /// Accepts a submission: its files in place, in the queue.
    async fn accept(&self, who: &Principal, new: NewSubmission) -> Result<SubmissionRow> {
        let unknown = || {
            invalid(format!(
                "project '{}' does not exist (see GET /api/v1/projects)",
                new.project_id
            ))
        };
        if !valid_project_id(&new.project_id) {
            return Err(unknown());
        }
        let project = self
            .store
            .get_project(&new.project_id)
            .await?
            .ok_or_else(unknown)?;
        let scenario = project
            .def
            .config
            .scenario(new.scenario.as_deref())
            .map_err(invalid)?
            .0
            .to_string();
        self.admit(who).await?;
        let id = new_submission_id();
        let dir = self.dirs.of(&id);
        let (writer, def) = (dir.clone(), project.def.clone());
        let (files, archive) = (new.files, new.archive);
        let written = blocking(move || {
            writer.create(&files)?;
            if let Some(tar) = &archive {
                submission::unpack_source(&writer, tar).map_err(invalid)?;
            }
            submission::normalize(&def, &writer).map_err(invalid)
        })
        .await;
        if let Err(e) = written {
            let _ = dir.remove().await;
            return Err(e);
        }
        // The callback's row first: the submission cannot end before its callback exists.
        let subject = Subject::Submission(id.clone());
        let callback = new.callback.map(|c| c.row(subject.clone(), Micros::now()));
        if let Some(c) = &callback {
            if let Err(e) = self.store.insert_callback(c).await {
                let _ = dir.remove().await;
                return Err(e.into());
            }
        }
        let created = {
            let _admitted = self.admission.lock().await;
            let _held = self.revisions.lock().await;
            match self.admit(who).await {
                Err(e) => Err(e),
                Ok(()) => match self.store.get_project(&new.project_id).await? {
                    None => Err(unknown()),
                    Some(now) => {
                        let row = SubmissionRow {
                            id: id.clone(),
                            owner: who.owner(),
                            project_id: now.id,
                            project_revision: now.revision,
                            scenario,
                            status: Status::Waiting,
                            stage: None,
                            attempts: 0,
                            grade: None,
                            created_at: Micros::now(),
                            queued_at: None,
                            started_at: None,
                            ended_at: None,
                            node: None,
                        };
                        match self.life.create(row).await {
                            Ok(Some(row)) => Ok(row),
                            Ok(None) => Err(Error::Unauthorized("the API key was deleted".into())),
                            Err(e) => Err(Error::from(e)),
                        }
                    }
                },
            }
        };
        match created {
            Ok(row) => {
                self.sched.kick();
                Ok(row)
            }
            Err(e) => {
                if callback.is_some() {
                    let _ = self.store.delete_callbacks_of(&subject).await;
                }
                let _ = dir.remove().await;
                Err(e)
            }
        }
    }

    pub async fn submit(&self, who: &Principal, new: NewSubmission) -> Result<SubmissionRow> {
        let wait = new.wait;
        let row = self.accept(who, new).await?;
        if wait {
            self.wait_ended(&row.id, WAIT_MAX).await;
        }
        Ok(self.store.get_submission(&row.id).await?.unwrap_or(row))
    }

    /// Several submissions, each accepted or refused on its own, in order.
    pub async fn submit_batch(
        &self,
        who: &Principal,
        items: Vec<NewSubmission>,
    ) -> Vec<Result<SubmissionRow>> {
        let mut out = Vec::with_capacity(items.len());
        for new in items {
            out.push(self.accept(who, new).await);
        }
        out
    }

    /// A submission the principal may see; `NotFound` otherwise.
    pub async fn get(&self, who: &Principal, id: &str) -> Result<SubmissionRow> {
        let missing = || Error::NotFound(format!("no submission '{id}'"));
        if !valid_submission_id(id) {
            return Err(missing());
        }
        who.seen(self.store.get_submission(id).await?)
            .ok_or_else(missing)
    }

    /// Newest first: a key's own, or everyone's for the master token.
    pub async fn list(
        &self,
        who: &Principal,
        project: Option<&str>,
        status: Option<Status>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SubmissionRow>, i64)> {
        let owner = who.listed_owner();
        let filter = SubmissionFilter {
            owner: owner.as_deref(),
            project,
            status,
        };
        Ok(self.store.list_submissions(&filter, limit, offset).await?)
    }

    /// The stages and tests finished so far.
    pub async fn progress_of(&self, id: &str) -> Result<(Vec<StageRecord>, Vec<TestResult>)> {
        Ok(self.store.submission_progress(id).await?)
    }

    /// Stops it when it is being graded, then erases it, every byte. Returns it as it was.
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<SubmissionRow> {
        let row = self.get(who, id).await?;
        if !self.store.delete_idle_submission(&row.id).await? {
            self.sched.stop(&row.id);
            if !self.wait_ended(&row.id, STOP_WAIT).await {
                return Err(Error::Internal(format!(
                    "submission '{id}' did not stop within {} s",
                    STOP_WAIT.as_secs()
                )));
            }
            self.store.delete_idle_submission(&row.id).await?;
        }
        self.dirs.of(&row.id).remove().await?;
        self.collect_revisions(&row.project_id).await;
        Ok(row)
    }

    /// Stops and erases every submission of `owner`, with its callbacks (a deleted key's: its
    /// id is never used again, so nothing of it stays reachable). Returns how many.
    pub async fn erase_owned(&self, owner: &str) -> Result<usize> {
        let ids = self.store.submission_ids_of(owner).await?;
        self.erase_all(ids).await
    }

    pub(super) async fn erase_all(&self, ids: Vec<String>) -> Result<usize> {
        for id in &ids {
            match self.delete(&Principal::Master, id).await {
                // Gone already: someone else erased it.
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ids.len())
    }

    /// Waits until the submission has ended (or is gone), at most `timeout`; false on timeout.
    pub async fn wait_ended(&self, id: &str, timeout: Duration) -> bool {
        let ended = self.events().subscribe();
        events::wait_ended(ended, id, timeout, || async {
            let row = self.store.get_submission(id).await?;
            Ok::<_, StoreError>(row.is_none_or(|r| !r.status.executing()))
        })
        .await
    }
}
