//! Slots and the queue. As many runs at once as there are slots; everything else waits as
//! `queued` in the store, and a dispatcher claims the oldest queued execution whenever a slot
//! is free. The queue lives in the store (never only in memory), so it survives a restart and
//! a fleet of nodes can later claim from the same table.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox::StopHandle;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::store::{ExecutionRow, Status, Store};

#[derive(Default)]
struct Live {
    /// Stop handles of the runs in progress.
    running: HashMap<String, StopHandle>,
    /// Stops asked for before the run registered its handle.
    stop_requested: HashSet<String>,
    /// Who waits for an execution to end.
    waiters: HashMap<String, watch::Sender<bool>>,
}

pub struct Scheduler {
    slots: usize,
    permits: Arc<Semaphore>,
    wake: Arc<Notify>,
    live: Mutex<Live>,
}

impl Scheduler {
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        Scheduler {
            slots,
            permits: Arc::new(Semaphore::new(slots)),
            wake: Arc::new(Notify::new()),
            live: Mutex::default(),
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something was queued: let the dispatcher look.
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// Claims queued executions while slots are free and hands each to `run` with its slot.
    pub fn spawn_dispatcher<F, Fut>(&self, store: Arc<dyn Store>, node: String, run: F)
    where
        F: Fn(ExecutionRow, OwnedSemaphorePermit) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let permits = self.permits.clone();
        let wake = self.wake.clone();
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let now = crate::server::executions::now_rfc3339();
                match store.claim_next(&node, &now).await {
                    Ok(Some(row)) => {
                        tokio::spawn(run(row, permit));
                    }
                    Ok(None) => {
                        drop(permit);
                        wake.notified().await;
                    }
                    Err(e) => {
                        tracing::error!("claiming queued work: {e}");
                        drop(permit);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }

    /// A run begins: records its stop handle. Returns true when a stop was already asked for.
    pub fn register(&self, id: &str, stop: StopHandle) -> bool {
        let mut live = self.live();
        live.running.insert(id.to_string(), stop);
        live.stop_requested.remove(id)
    }

    /// A run is over and its end is in the store: wake whoever waits, free the slot's record.
    pub fn finished(&self, id: &str) {
        let mut live = self.live();
        live.running.remove(id);
        live.stop_requested.remove(id);
        if let Some(tx) = live.waiters.remove(id) {
            let _ = tx.send(true);
        }
    }

    /// Asks a running execution to stop (or remembers to, if it has not registered yet).
    pub fn stop(&self, id: &str) {
        let mut live = self.live();
        match live.running.get(id) {
            Some(handle) => handle.stop(),
            None => {
                live.stop_requested.insert(id.to_string());
            }
        }
    }

    /// Waits until the store says the execution ended (or is gone), at most `timeout`.
    /// Returns false on timeout.
    pub async fn wait_ended(&self, store: &dyn Store, id: &str, timeout: Duration) -> bool {
        let mut rx = {
            let mut live = self.live();
            live.waiters
                .entry(id.to_string())
                .or_insert_with(|| watch::channel(false).0)
                .subscribe()
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match store.get_execution(id).await {
                Ok(Some(row)) if row.status != Status::Ended => {}
                Ok(_) => return true,
                Err(e) => tracing::warn!("waiting for {id}: {e}"),
            }
            // Woken by `finished`, or re-check now and then (the end may come from elsewhere:
            // a stop of a queued execution, a delete).
            let tick = tokio::time::sleep(Duration::from_millis(500));
            tokio::select! {
                _ = rx.changed() => {}
                _ = tick => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
        }
    }
}
