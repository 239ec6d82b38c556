//! Start, stop, delete and erase; and waiting for an execution's end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::exec::admission::admit;
use crate::exec::events::{self, Ended};
use crate::exec::state::{require, Status};
use crate::store::{ExecutionRow, StoreError};

use super::Service;

/// How long `stop` and `DELETE` wait for a running execution to end.
pub(super) const STOP_WAIT: Duration = Duration::from_secs(15);
/// How long `wait` may take at most (the longest run plus a long queue).
pub(super) const WAIT_MAX: Duration = Duration::from_secs(7 * 86_400);

impl Service {
    pub async fn start(&self, who: &Principal, id: &str, wait: bool) -> Result<ExecutionRow> {
        let row = self.get(who, id).await?;
        require(
            row.status,
            &[Status::Pending],
            "only a pending execution can be started",
        )?;
        // Before it is queued: its end cannot come before this hears.
        let ended = wait.then(|| self.events().subscribe());
        {
            let _guard = self.admission.lock().await;
            admit(self.store.as_ref(), &who.owner(), &who.quota()).await?;
            if !self.life.enqueue(&row.id).await? {
                return Err(Error::WrongState(
                    "the execution is no longer pending".into(),
                ));
            }
        }
        self.sched.kick();
        if let Some(ended) = ended {
            if let Some(ended) = self.ended_row(ended, &row.id, WAIT_MAX).await {
                return Ok(ended.as_ref().clone());
            }
        }
        self.get(who, &row.id).await
    }

    pub async fn stop(&self, who: &Principal, id: &str) -> Result<ExecutionRow> {
        let row = self.get(who, id).await?;
        require(
            row.status,
            &[Status::Pending, Status::Queued, Status::Running],
            "only an execution that has not ended can be stopped",
        )?;
        self.stop_and_wait(&row).await?;
        self.get(who, &row.id).await
    }

    /// Stops it when it has not ended, then erases it, every byte. Returns it as it was last.
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<ExecutionRow> {
        let row = self.get(who, id).await?;
        if row.status != Status::Ended {
            self.stop_and_wait(&row).await?;
        }
        let row = self.get(who, &row.id).await?;
        self.life.delete(&row.id).await?;
        self.dirs.of(&row.id).remove().await?;
        Ok(row)
    }

    /// Stops and erases every execution of `owner` (a deleted key's: its id is never used
    /// again, so nothing of it stays reachable). Returns how many.
    pub async fn erase_owned(&self, owner: &str) -> Result<usize> {
        let ids = self.store.execution_ids_of(owner).await?;
        self.erase_all(ids).await
    }

    pub(super) async fn erase_all(&self, ids: Vec<String>) -> Result<usize> {
        let erased = futures_util::future::join_all(
            ids.iter().map(|id| self.delete(&Principal::Master, id)),
        )
        .await;
        for r in erased {
            match r {
                // Gone already: someone else erased it.
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ids.len())
    }
    /// Ends the execution: at once when it has not started, through its stop handle when it
    /// runs.
    pub(super) async fn stop_and_wait(&self, row: &ExecutionRow) -> Result<()> {
        if matches!(row.status, Status::Pending | Status::Queued)
            && self.life.cancel(&row.id).await?
        {
            return Ok(());
        }
        // Running (or it just began): ask the run to stop, then wait for its end.
        self.sched.stop(&row.id);
        if !self.wait_ended(&row.id, STOP_WAIT).await {
            return Err(Error::Internal(format!(
                "execution '{}' did not end within {} s of being stopped",
                row.id,
                STOP_WAIT.as_secs()
            )));
        }
        Ok(())
    }

    /// Waits until the execution has ended (or is gone), at most `timeout`; false on timeout.
    pub async fn wait_ended(&self, id: &str, timeout: Duration) -> bool {
        self.wait_ended_on(self.events().subscribe(), id, timeout)
            .await
    }

    /// Waits, at most `timeout`, for the end of `id` on `ended`, a subscription made before
    /// the execution could end (before it was queued), so the store need not be read first.
    /// Returns the row its end left; `None` on timeout, or when the subscription fell behind
    /// (the caller reads the store, which then holds the end).
    pub(super) async fn ended_row(
        &self,
        ended: broadcast::Receiver<Ended>,
        id: &str,
        timeout: Duration,
    ) -> Option<Arc<ExecutionRow>> {
        events::announced_end(ended, id, timeout, || self.ended_in_store(id))
            .await
            .and_then(|e| e.row)
    }

    async fn wait_ended_on(
        &self,
        ended: broadcast::Receiver<Ended>,
        id: &str,
        timeout: Duration,
    ) -> bool {
        events::wait_ended(ended, id, timeout, || self.ended_in_store(id)).await
    }

    /// Whether the store has `id` ended (or gone).
    async fn ended_in_store(&self, id: &str) -> std::result::Result<bool, StoreError> {
        let row = self.store.get_execution(id).await?;
        Ok(row.is_none_or(|r| r.status == Status::Ended))
    }
}
