//! The only code that changes a submission's status. Each method makes one [`Transition`] of
//! the state machine (`state.rs`), has the store apply it atomically, writes it to the
//! submission's progress log, and announces every end once, on [`Events`].

use std::sync::Arc;

use super::events::{Events, ProgressEvent, SubmissionEnded};
use super::report::Final;
use super::state::{Status, Step, Transition};
use super::workspace::SubmissionDirs;
use crate::clock::Micros;
use crate::store::{Result, Store, SubmissionRow};

#[derive(Clone)]
pub struct Lifecycle {
    store: Arc<dyn Store>,
    events: Events,
    dirs: SubmissionDirs,
}

impl Lifecycle {
    pub fn new(store: Arc<dyn Store>, events: Events, dirs: SubmissionDirs) -> Lifecycle {
        Lifecycle {
            store,
            events,
            dirs,
        }
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    fn progress(&self, id: &str, event: &ProgressEvent) {
        self.dirs.of(id).append_progress(&event.line());
    }

    /// Records a new submission, waiting in the queue; `None` when its owner is a key that
    /// no longer exists.
    pub async fn create(&self, mut row: SubmissionRow) -> Result<Option<SubmissionRow>> {
        let now = Micros::now();
        row.status = Status::Waiting;
        row.created_at = now;
        row.queued_at = Some(now);
        if !self.store.insert_submission(&row).await? {
            return Ok(None);
        }
        self.progress(&row.id, &ProgressEvent::status(Status::Waiting));
        Ok(Some(row))
    }

    /// The oldest waiting submission → preparation on `node`.
    pub async fn claim_next(&self, node: &str) -> Result<Option<SubmissionRow>> {
        let row = self
            .store
            .claim_next_submission(&Transition::claim(node, Micros::now()))
            .await?;
        if let Some(r) = &row {
            self.progress(&r.id, &ProgressEvent::status(Status::Preparation));
        }
        Ok(row)
    }

    /// preparation → execution.
    pub async fn execute(&self, id: &str) -> Result<bool> {
        let done = self
            .store
            .submission_transition(id, &Transition::execute(Micros::now()))
            .await?;
        if done {
            self.progress(id, &ProgressEvent::status(Status::Execution));
        }
        Ok(done)
    }

    /// Graded: its final status.
    pub async fn finish(&self, id: &str, grade: Final) -> Result<bool> {
        self.end(id, Step::Finish, grade).await
    }

    /// Interrupted by the server's stops too often: ends as it says.
    pub async fn abandon(&self, id: &str, grade: Final) -> Result<bool> {
        self.end(id, Step::Abandon, grade).await
    }

    /// Interrupted by a stop of the server: back to the queue (in its old place), to resume.
    pub async fn requeue(&self, id: &str) -> Result<bool> {
        let done = self
            .store
            .submission_transition(id, &Transition::requeue(Micros::now()))
            .await?;
        if done {
            self.progress(id, &ProgressEvent::status(Status::Waiting));
        }
        Ok(done)
    }

    async fn end(&self, id: &str, step: Step, grade: Final) -> Result<bool> {
        let status = grade.status;
        let line = ProgressEvent::Ended {
            status,
            status_name: status.name(),
            score: grade.score,
            reason: &grade.reason,
        }
        .line();
        let done = self
            .store
            .submission_transition(id, &Transition::end(step, grade, Micros::now()))
            .await?;
        if done {
            // In the log before it is announced: a follower that hears of the end reads
            // the whole log.
            self.dirs.of(id).append_progress(&line);
            self.events.emit(SubmissionEnded {
                id: id.to_string(),
                status,
            });
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, SubmissionFilter, Submissions};

    fn sub(id: &str) -> SubmissionRow {
        SubmissionRow {
            id: id.into(),
            owner: "master".into(),
            project_id: "p".into(),
            project_revision: 1,
            scenario: "default".into(),
            status: Status::Waiting,
            stage: None,
            attempts: 0,
            grade: None,
            created_at: Micros(1),
            queued_at: None,
            started_at: None,
            ended_at: None,
            node: None,
        }
    }

    #[tokio::test]
    async fn claim_requeue_execute_finish_delete() {
        let store = Arc::new(SqliteStore::in_memory().await.unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let dirs = SubmissionDirs::new(tmp.path().to_path_buf());
        let life = Lifecycle::new(store.clone(), Events::new(), dirs.clone());
        let mut ended = life.events().subscribe();
        for id in ["a", "b"] {
            std::fs::create_dir_all(dirs.of(id).path()).unwrap();
        }
        life.create(sub("a")).await.unwrap();
        life.create(sub("b")).await.unwrap();
        let claimed = life.claim_next("n1").await.unwrap().unwrap();
        assert_eq!(
            (claimed.id.as_str(), claimed.status),
            ("a", Status::Preparation)
        );
        assert_eq!(store.active_revisions("p").await.unwrap(), [1]);
        // Not deletable while it is being graded; not finished twice; only from 1 or 3.
        assert!(!store.delete_idle_submission("a").await.unwrap());
        assert!(!life.execute("b").await.unwrap());
        assert!(life.requeue("a").await.unwrap());
        let a = store.get_submission("a").await.unwrap().unwrap();
        assert_eq!((a.status, a.attempts), (Status::Waiting, 1));
        assert!(a.started_at.is_some(), "kept from its first start");
        // Back in its old place: first again.
        assert_eq!(life.claim_next("n1").await.unwrap().unwrap().id, "a");
        assert!(life.execute("a").await.unwrap());
        assert_eq!(store.running_submissions("n1").await.unwrap().len(), 1);
        assert!(life.finish("a", Final::internal("boom")).await.unwrap());
        assert!(!life.finish("a", Final::internal("again")).await.unwrap());
        let event = ended.try_recv().expect("announced");
        assert_eq!(
            (event.id.as_str(), event.status),
            ("a", Status::InternalError)
        );
        assert!(ended.try_recv().is_err(), "once");
        let a = store.get_submission("a").await.unwrap().unwrap();
        assert_eq!(a.status, Status::InternalError);
        assert_eq!(a.grade.unwrap().reason, "Internal error: boom");
        let log = std::fs::read_to_string(dirs.of("a").progress()).unwrap();
        let events: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let statuses: Vec<&serde_json::Value> = events.iter().map(|e| &e["status"]).collect();
        assert_eq!(statuses, [0, 1, 0, 1, 3, 20]);
        assert_eq!(events.last().unwrap()["event"], "ended");
        let (rows, total) = store
            .list_submissions(
                &SubmissionFilter {
                    status: Some(Status::Waiting),
                    ..Default::default()
                },
                10,
                0,
            )
            .await
            .unwrap();
        assert_eq!((rows.len(), total, rows[0].id.as_str()), (1, 1, "b"));
        assert_eq!(store.count_active_submissions("master").await.unwrap(), 1);
        assert!(store.delete_idle_submission("a").await.unwrap());
        assert!(store.get_submission("a").await.unwrap().is_none());
    }
}
