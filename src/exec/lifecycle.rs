//! The only code that changes an execution's status. Each method makes one [`Transition`] of
//! the state machine (`state.rs`) and has the store apply it atomically; every end is then
//! announced once, on [`Events`], with how it ended. Leaving `pending` (a start, a stop) and
//! adding input to a pending execution pass one gate, so an upload commits only into an
//! execution that is still pending when it commits.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::clock::Micros;
use crate::error::{Error, Result as DomainResult};
use crate::exec::events::{Ended, Events};
use crate::exec::state::{takes_input, Ending, Status, Step, Transition};
use crate::store::{ExecutionRow, Result, Store};

/// How a new execution enters the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// It waits for a start.
    Pending,
    /// It waits for a slot.
    Queued,
    /// It runs at once on this node, which holds a free slot for it: no trip through the
    /// queue and the dispatcher.
    Claimed(&'a str),
}

#[derive(Clone)]
pub struct Lifecycle {
    store: Arc<dyn Store>,
    events: Events,
    /// Held by every step out of `pending` and by every input commit.
    pending_gate: Arc<Mutex<()>>,
}

impl Lifecycle {
    pub fn new(store: Arc<dyn Store>, events: Events) -> Lifecycle {
        Lifecycle {
            store,
            events,
            pending_gate: Arc::default(),
        }
    }

    /// Runs `commit` (adding input) while the execution is pending, and keeps it pending until
    /// `commit` is done: no start or stop passes meanwhile. `WrongState` when it is not
    /// pending, `NotFound` when it is gone (a commit never brings a deleted one back).
    pub async fn while_pending<T, F, Fut>(&self, id: &str, commit: F) -> DomainResult<T>
    where
        F: FnOnce(ExecutionRow) -> Fut,
        Fut: std::future::Future<Output = DomainResult<T>>,
    {
        let _gate = self.pending_gate.lock().await;
        let row = self
            .store
            .get_execution(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no execution '{id}'")))?;
        if !takes_input(row.status) {
            return Err(Error::WrongState(format!(
                "input can be added only while the execution is pending; it is {}",
                row.status
            )));
        }
        commit(row).await
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Records a new execution as `entry` says. `None` when its owner is a key that was
    /// deleted meanwhile (nothing is recorded). One to be claimed at once is queued instead
    /// when queued executions wait (they go first): the row returned says which it is.
    pub async fn create(
        &self,
        mut row: ExecutionRow,
        entry: Entry<'_>,
    ) -> Result<Option<ExecutionRow>> {
        let now = Micros::now();
        row.created_at = now;
        (row.status, row.queued_at, row.started_at, row.node) = match entry {
            Entry::Pending => (Status::Pending, None, None, None),
            Entry::Queued => (Status::Queued, Some(now), None, None),
            // Claimed from a queue it never waited in: queued and started at once.
            Entry::Claimed(node) => (Status::Running, Some(now), Some(now), Some(node.into())),
        };
        if self.store.insert_execution(&row).await? {
            return Ok(Some(row));
        }
        if !matches!(entry, Entry::Claimed(_)) {
            return Ok(None);
        }
        // Refused as claimed (queued work waits, or the key is gone): queued behind.
        (row.status, row.started_at, row.node) = (Status::Queued, None, None);
        Ok(self.store.insert_execution(&row).await?.then_some(row))
    }

    /// pending → queued; false when it was not pending.
    pub async fn enqueue(&self, id: &str) -> Result<bool> {
        let _gate = self.pending_gate.lock().await;
        let queued = self
            .store
            .transition(id, &Transition::enqueue(Micros::now()))
            .await?;
        Ok(queued.is_some())
    }

    /// The oldest queued execution → running on `node`.
    pub async fn claim_next(&self, node: &str) -> Result<Option<ExecutionRow>> {
        self.store
            .claim_next(&Transition::claim(node, Micros::now()))
            .await
    }

    /// pending or queued → ended (`stopped`); false when it had already started or ended.
    pub async fn cancel(&self, id: &str) -> Result<bool> {
        let _gate = self.pending_gate.lock().await;
        self.end(id, Step::Cancel, Ending::stopped_before_start(), None)
            .await
    }

    /// running → ended, as the run ended, with what the execution now keeps on disk (when it
    /// could be measured); false when it was not running.
    pub async fn finish(
        &self,
        id: &str,
        ending: Ending,
        stored_bytes: Option<u64>,
    ) -> Result<bool> {
        self.end(id, Step::Finish, ending, stored_bytes).await
    }

    /// After a crash: what `node` was running → ended (`internal-error`). Returns their ids.
    pub async fn abandon_running(&self, node: &str) -> Result<Vec<String>> {
        let ending = Ending::internal(
            "the server stopped while this execution was running; it was not finished",
        );
        let t = Transition::end(Step::Abandon, ending.clone(), None, Micros::now());
        let ids = self.store.abandon_running(node, &t).await?;
        let ending = Arc::new(ending);
        for id in &ids {
            self.events.emit(Ended {
                id: id.clone(),
                ending: ending.clone(),
                row: None,
                callbacks_waiting: true,
            });
        }
        Ok(ids)
    }

    /// Removes an ended execution's row; false when there is no such ended execution.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        self.store.delete_ended_execution(id).await
    }

    async fn end(
        &self,
        id: &str,
        step: Step,
        ending: Ending,
        stored_bytes: Option<u64>,
    ) -> Result<bool> {
        let t = Transition::end(step, ending.clone(), stored_bytes, Micros::now());
        let Some(ended) = self.store.transition(id, &t).await? else {
            return Ok(false);
        };
        self.events.emit(Ended {
            id: id.to_string(),
            ending: Arc::new(ending),
            row: Some(Arc::new(ended.row)),
            callbacks_waiting: ended.callbacks_waiting,
        });
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::request::{ExecutionRequest, Limits, ProgramRequest};
    use crate::exec::state::EndReason;
    use crate::store::{Executions, Queue, SqliteStore};

    fn row(id: &str) -> ExecutionRow {
        ExecutionRow {
            id: id.into(),
            owner: "master".into(),
            environment: "busybox".into(),
            status: Status::Pending,
            request: ExecutionRequest::Program(ProgramRequest {
                environment: None,
                command: vec!["true".into()],
                limits: Limits {
                    memory_bytes: 1 << 20,
                    cpu_time_s: 1.0,
                    wall_time_s: 1.0,
                    pids: 1,
                    output_bytes: 1,
                },
                outputs: vec![],
                keep: vec![],
                file_refs: vec![],
            }),
            end_reason: None,
            message: None,
            result: None,
            created_at: Micros(0),
            started_at: None,
            ended_at: None,
            queued_at: None,
            node: None,
            stored_bytes: 0,
        }
    }

    /// A lifecycle on a fresh in-memory store, with one execution brought to `status` by the
    /// lifecycle itself.
    async fn with_one(status: Status) -> (Lifecycle, Arc<SqliteStore>) {
        let store = Arc::new(SqliteStore::in_memory().await.expect("store"));
        let life = Lifecycle::new(store.clone(), Events::new());
        life.create(row("e"), Entry::Pending).await.expect("create");
        match status {
            Status::Pending => {}
            Status::Queued => assert!(life.enqueue("e").await.expect("enqueue")),
            Status::Running => {
                assert!(life.enqueue("e").await.expect("enqueue"));
                assert!(life.claim_next("n1").await.expect("claim").is_some());
            }
            Status::Ended => assert!(life.cancel("e").await.expect("cancel")),
        }
        (life, store)
    }

    async fn status_of(store: &SqliteStore) -> Status {
        store
            .get_execution("e")
            .await
            .expect("get")
            .expect("row")
            .status
    }

    /// Applies `step` to the execution through the lifecycle; true when it applied.
    async fn apply(life: &Lifecycle, step: Step) -> bool {
        match step {
            Step::Enqueue => life.enqueue("e").await.expect("enqueue"),
            Step::Claim => life.claim_next("n1").await.expect("claim").is_some(),
            Step::Cancel => life.cancel("e").await.expect("cancel"),
            Step::Finish => life
                .finish("e", Ending::internal("done"), None)
                .await
                .expect("finish"),
            Step::Abandon => !life
                .abandon_running("n1")
                .await
                .expect("abandon")
                .is_empty(),
        }
    }

    #[tokio::test]
    async fn every_transition_allowed_and_refused() {
        for from in Status::ALL {
            for step in Step::ALL {
                let (life, store) = with_one(from).await;
                let mut ended = life.events().subscribe();
                let applied = apply(&life, step).await;
                let want = step.next(from);
                assert_eq!(applied, want.is_some(), "{step:?} from {from}");
                assert_eq!(
                    status_of(&store).await,
                    want.unwrap_or(from),
                    "{step:?} from {from}"
                );
                // An end is announced exactly when one happened.
                let announced = ended.try_recv().is_ok();
                assert_eq!(
                    announced,
                    want == Some(Status::Ended),
                    "{step:?} from {from}"
                );
            }
        }
    }

    #[tokio::test]
    async fn times_and_endings_are_recorded() {
        let (life, store) = with_one(Status::Running).await;
        let r = store.get_execution("e").await.unwrap().unwrap();
        assert!(r.queued_at.is_some() && r.started_at.is_some());
        assert_eq!(r.node.as_deref(), Some("n1"));
        let mut ended = life.events().subscribe();
        assert!(life
            .finish("e", Ending::internal("boom"), Some(42))
            .await
            .unwrap());
        let event = ended.try_recv().expect("announced");
        assert_eq!(event.id, "e");
        assert_eq!(event.ending.reason, EndReason::InternalError);
        let r = store.get_execution("e").await.unwrap().unwrap();
        // The announcement carries the row as the end left it: listeners need not read it.
        let announced = event.row.expect("the ended row");
        assert_eq!(*announced, r);
        assert_eq!(r.end_reason, Some(EndReason::InternalError));
        assert_eq!(r.message.as_deref(), Some("boom"));
        assert!(r.ended_at >= r.started_at);
        assert_eq!(r.stored_bytes, 42, "the size rides on the finish");
        // Created started: queued at once, in queue order.
        let started = life.create(row("s"), Entry::Queued).await.unwrap().unwrap();
        assert_eq!(started.status, Status::Queued);
        assert!(started.queued_at.is_some());
    }

    #[tokio::test]
    async fn a_claim_stamped_before_the_queueing_starts_when_it_was_queued() {
        let store = Arc::new(SqliteStore::in_memory().await.unwrap());
        let life = Lifecycle::new(store.clone(), Events::new());
        life.create(row("e"), Entry::Queued).await.unwrap();
        let queued = store.get_execution("e").await.unwrap().unwrap().queued_at;
        let queued = queued.expect("queued_at");
        // A claimer that took its time a microsecond before the row was queued.
        let early = Transition::claim("n1", Micros(queued.0 - 1));
        let r = store.claim_next(&early).await.unwrap().expect("claimed");
        assert_eq!(r.started_at, Some(queued));
    }

    #[tokio::test]
    async fn one_claimed_as_created_runs_at_once_unless_queued_work_waits() {
        let store = Arc::new(SqliteStore::in_memory().await.unwrap());
        let life = Lifecycle::new(store.clone(), Events::new());
        // Nothing queued: it is recorded running on the node, queued and started as created.
        let now = life.create(row("now"), Entry::Claimed("n1")).await;
        let now = now.unwrap().expect("recorded");
        assert_eq!(now.status, Status::Running);
        assert_eq!(now.node.as_deref(), Some("n1"));
        assert_eq!(now.queued_at, Some(now.created_at));
        assert_eq!(now.started_at, Some(now.created_at));
        assert_eq!(store.get_execution("now").await.unwrap(), Some(now));
        // Its run ends as any claimed run does.
        assert!(life
            .finish("now", Ending::internal("done"), None)
            .await
            .unwrap());
        // Work queued before it goes first: it is queued behind, for the dispatcher.
        life.create(row("old"), Entry::Queued).await.unwrap();
        let late = life.create(row("late"), Entry::Claimed("n1")).await;
        let late = late.unwrap().expect("recorded");
        assert_eq!(late.status, Status::Queued);
        assert_eq!((late.node, late.started_at), (None, None));
        assert_eq!(
            store.get_execution("late").await.unwrap().unwrap().status,
            Status::Queued
        );
        let first = life.claim_next("n1").await.unwrap().expect("claimed");
        assert_eq!(first.id, "old");
        assert_eq!(
            life.claim_next("n1").await.unwrap().expect("claimed").id,
            "late"
        );
        // A deleted key's execution is recorded in neither way.
        let mut orphan = row("orphan");
        orphan.owner = "key:gone".into();
        assert_eq!(
            life.create(orphan, Entry::Claimed("n1")).await.unwrap(),
            None
        );
        assert_eq!(store.get_execution("orphan").await.unwrap(), None);
    }

    #[tokio::test]
    async fn only_ended_executions_are_deleted() {
        for from in Status::ALL {
            let (life, store) = with_one(from).await;
            let deleted = life.delete("e").await.unwrap();
            assert_eq!(deleted, from == Status::Ended, "{from}");
            assert_eq!(store.get_execution("e").await.unwrap().is_none(), deleted);
        }
    }

    #[tokio::test]
    async fn abandon_ends_only_what_the_node_ran() {
        let store = Arc::new(SqliteStore::in_memory().await.unwrap());
        let life = Lifecycle::new(store.clone(), Events::new());
        for id in ["a", "b", "c"] {
            life.create(row(id), Entry::Queued).await.unwrap();
        }
        life.claim_next("n1").await.unwrap();
        life.claim_next("n2").await.unwrap();
        assert_eq!(life.abandon_running("n1").await.unwrap(), ["a"]);
        let status = |id: &'static str| {
            let store = store.clone();
            async move { store.get_execution(id).await.unwrap().unwrap().status }
        };
        assert_eq!(status("a").await, Status::Ended);
        assert_eq!(status("b").await, Status::Running);
        assert_eq!(status("c").await, Status::Queued);
    }

    /// The callbacks' listener looks at the outbox only for ends the store announced with a
    /// callback still waiting: one already delivered, or another execution's, does not count.
    #[tokio::test]
    async fn an_end_says_whether_a_callback_waits_for_it() {
        use crate::callbacks::{DeliveryState, Mode, Subject};
        use crate::store::{CallbackRow, Callbacks};
        let store = Arc::new(SqliteStore::in_memory().await.unwrap());
        let life = Lifecycle::new(store.clone(), Events::new());
        let callback = |id: &str, of: &str, state| CallbackRow {
            id: id.into(),
            subject: Subject::Execution(of.into()),
            url: "http://127.0.0.1:9/".into(),
            mode: Mode::Plain,
            key: None,
            state,
            attempts: 0,
            created_at: Micros(0),
            sealed_at: None,
            next_attempt_at: None,
            delivered_at: None,
            last_error: None,
        };
        store
            .insert_callback(&callback("cb1", "waits", DeliveryState::Waiting))
            .await
            .unwrap();
        store
            .insert_callback(&callback("cb2", "delivered", DeliveryState::Delivered))
            .await
            .unwrap();
        store
            .insert_callback(&callback("cb3", "elsewhere", DeliveryState::Waiting))
            .await
            .unwrap();
        let mut ended = life.events().subscribe();
        for (id, waiting) in [("waits", true), ("delivered", false), ("none", false)] {
            life.create(row(id), Entry::Claimed("n1"))
                .await
                .unwrap()
                .expect("created");
            assert!(life.finish(id, Ending::internal("x"), None).await.unwrap());
            let event = ended.try_recv().expect("announced");
            assert_eq!(event.id, id);
            assert_eq!(event.callbacks_waiting, waiting, "{id}");
        }
        // An end recorded with others (after a crash) does not say: it counts as waiting.
        life.create(row("crashed"), Entry::Claimed("n1"))
            .await
            .unwrap()
            .expect("created");
        assert_eq!(life.abandon_running("n1").await.unwrap(), ["crashed"]);
        assert!(ended.try_recv().expect("announced").callbacks_waiting);
    }
}
