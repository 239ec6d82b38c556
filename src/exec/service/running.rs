//! Running: the dispatcher claims queued executions into free slots, a claimed one runs on a
//! blocking thread, keeps what it asked to keep and records its end; at start, what a crash
//! left is ended or erased.

use std::sync::Arc;

use sandbox::StopHandle;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Principal;
use crate::error::Result;
use crate::exec::admission::{storage_left, storage_quota};
use crate::exec::runner::{self, RunEnd};
use crate::exec::state::Ending;
use crate::files::Room;
use crate::scheduler::Dispatched;
use crate::store::{ExecutionRow, StoreError};

use super::Service;

impl Service {
    /// At start: what a crash left running ends as internal-error, the executions of keys
    /// whose deletion a crash interrupted are erased, and the files of executions that were
    /// never accepted (a crash between writing them and the insert) go.
    pub async fn recover(&self) -> Result<usize> {
        let ids = self.life.abandon_running(&self.node).await?;
        let orphans = self.store.orphaned_execution_ids().await?;
        if !orphans.is_empty() {
            tracing::warn!("erasing {} execution(s) of deleted API keys", orphans.len());
            self.erase_all(orphans).await?;
        }
        for id in self.dirs.ids().await {
            if self.store.get_execution(&id).await?.is_none() {
                let _ = self.dirs.of(&id).remove().await;
            }
        }
        Ok(ids.len())
    }

    /// Claims queued work into free slots from now on (work queued before a restart too).
    pub fn spawn_dispatcher(self: &Arc<Self>) {
        self.sched.dispatch(self.clone());
    }

    /// Runs a claimed execution in its slot, keeps the files it asked to keep, and records
    /// its end.
    async fn run_claimed(self: Arc<Self>, row: ExecutionRow, permit: OwnedSemaphorePermit) {
        let id = row.id.clone();
        // What the execution keeps on disk once it ran, recorded with its end.
        let mut stored_bytes = None;
        let ending = match StopHandle::new() {
            // Stopped before its slot came: it never starts.
            Ok(stop) if self.sched.register(&id, stop.clone()) => Ending::stopped_before_start(),
            Ok(stop) => {
                let s = self.clone();
                let claimed = row.clone();
                let progress = self.events().output(&id);
                let joined = tokio::task::spawn_blocking(move || {
                    let dir = s.dirs.of(&claimed.id);
                    let end =
                        runner::run(&s.pool, &s.envs, &s.files, &dir, &claimed, stop, progress);
                    (end, dir.size_on_disk())
                })
                .await;
                match joined {
                    Ok((mut end, size)) => {
                        stored_bytes = size
                            .map_err(|e| tracing::error!("measuring the size of {id}: {e}"))
                            .ok();
                        if let Some(env) = end.pooled.take() {
                            self.pooled
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(row.environment.clone(), env);
                        }
                        self.keep_files(&row, end, stored_bytes).await
                    }
                    Err(e) => Ending::failed(&id, format!("the run panicked: {e}")),
                }
            }
            Err(e) => Ending::failed(&id, format!("creating the stop handle: {e}")),
        };
        if let Err(e) = self.life.finish(&id, ending, stored_bytes).await {
            tracing::error!("recording the end of {id}: {e}");
        }
        self.sched.unregister(&id);
        drop(permit);
    }

    /// Keeps what the run left to keep, and says so in each program's result.
    async fn keep_files(
        &self,
        row: &ExecutionRow,
        end: RunEnd,
        stored_bytes: Option<u64>,
    ) -> Ending {
        let RunEnd {
            mut ending, keep, ..
        } = end;
        if keep.iter().all(|(_, items)| items.is_empty()) {
            return ending;
        }
        // The room for kept files is what the quota leaves after this execution's own
        // outputs: recorded now, before the end records it again.
        if let Some(bytes) = stored_bytes {
            if let Err(e) = self.store.set_stored_bytes(&row.id, bytes).await {
                tracing::error!("recording the size of {}: {e}", row.id);
            }
        }
        let mut room = match self.storage_room(&row.owner).await {
            Ok(room) => room,
            Err(e) => {
                tracing::error!("execution {}: the storage quota of its key: {e}", row.id);
                Some(Room {
                    left: 0,
                    max: 0,
                    whose: "the server could not read this API key's quota".into(),
                })
            }
        };
        for (i, items) in keep {
            if items.is_empty() {
                continue;
            }
            let paths: Vec<String> = items.iter().map(|k| k.path.clone()).collect();
            let kept = self
                .files
                .keep(&row.owner, room.as_mut(), &row.id, items)
                .await;
            if let Some(result) = ending.result.as_mut().and_then(|r| r.program_mut(i)) {
                result.kept.extend(paths.into_iter().zip(kept));
            }
        }
        ending
    }

    /// What `owner`'s storage quota leaves for kept files (`None`: the master token's, no
    /// quota). The key's own quota is read again: the run may have outlived a change.
    async fn storage_room(&self, owner: &str) -> Result<Option<Room>> {
        if owner == Principal::Master.owner() {
            return Ok(None);
        }
        let key = match owner.strip_prefix("key:") {
            Some(id) => self.store.api_key_by_id(id).await?,
            None => None,
        };
        // A key deleted meanwhile keeps nothing (the file store refuses it by name).
        let quota = key.map(|k| k.quota).unwrap_or_default();
        let usage = self.store.usage(owner).await?;
        let (max, whose) = storage_quota(&quota, &self.policy.quotas);
        Ok(Some(Room {
            left: storage_left(&usage, &quota, &self.policy.quotas),
            max,
            whose,
        }))
    }
}

impl Dispatched for Service {
    type Work = ExecutionRow;
    type Error = StoreError;

    async fn claim(&self) -> std::result::Result<Option<ExecutionRow>, StoreError> {
        self.life.claim_next(&self.node).await
    }

    async fn run(self: Arc<Self>, row: ExecutionRow, permit: OwnedSemaphorePermit) {
        self.run_claimed(row, permit).await
    }
}
