//! Slots and the dispatcher. As many runs at once as there are slots; everything else waits
//! as `queued` in the store, and the dispatcher claims the oldest queued execution whenever a
//! slot is free (work created while a slot is free and nothing is queued may take the slot
//! at once, [`Scheduler::try_slot`]). The queue lives in the store (never only in memory),
//! so it survives a restart and a fleet of nodes can later claim from the same table. The
//! scheduler knows nothing of executions beyond their ids: what to claim and how to run it
//! are handed in.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox::StopHandle;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Queued work the dispatcher claims and runs in a slot (executions, submissions).
pub trait Dispatched: Send + Sync + 'static {
    type Work: Send + 'static;
    type Error: Display + Send;
    /// The next queued work, claimed for this node; `None` when nothing waits.
    fn claim(&self) -> impl Future<Output = Result<Option<Self::Work>, Self::Error>> + Send;
    /// Runs claimed work in its slot; dropping the permit frees the slot.
    fn run(
        self: Arc<Self>,
        work: Self::Work,
        permit: OwnedSemaphorePermit,
    ) -> impl Future<Output = ()> + Send + 'static;
}

#[derive(Default)]
struct Live {
    /// Stop handles of the runs in progress.
    running: HashMap<String, StopHandle>,
    /// Stops asked for before the run registered its handle.
    stop_requested: HashSet<String>,
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

    /// Slots taken now: by runs, and for a moment by the dispatcher claiming the next.
    pub fn busy(&self) -> usize {
        self.slots.saturating_sub(self.permits.available_permits())
    }

    /// Another scheduler over the same slots, with its own queue to claim from, wake-ups and
    /// stop handles: two kinds of work (executions, submissions) share the machine's slots.
    pub fn sharing_slots(&self) -> Scheduler {
        Scheduler {
            slots: self.slots,
            permits: self.permits.clone(),
            wake: Arc::new(Notify::new()),
            live: Mutex::default(),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot that is free now, without waiting; `None` when every slot is taken or a
    /// dispatcher waits for one (it is first). Work that takes it skips the queue, so it
    /// may only be work that nothing queued is waiting ahead of.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Runs `work` in the slot it holds: what the dispatcher claimed, or work that took a
    /// free slot itself ([`Scheduler::try_slot`]).
    pub fn run_in_slot<Q: Dispatched>(queue: Arc<Q>, work: Q::Work, slot: OwnedSemaphorePermit) {
        tokio::spawn(queue.run(work, slot));
    }

    /// Something was queued: let the dispatcher look.
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// From now on, while a slot is free, claims `queue`'s next work and runs it with its
    /// slot (dropping the permit frees the slot); work queued before a restart too.
    pub fn dispatch<Q: Dispatched>(&self, queue: Arc<Q>) {
        let permits = self.permits.clone();
        let wake = self.wake.clone();
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                match queue.claim().await {
                    Ok(Some(work)) => Self::run_in_slot(queue.clone(), work, permit),
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
        self.kick();
    }

    /// A run begins: records its stop handle. Returns true when a stop was already asked for.
    pub fn register(&self, id: &str, stop: StopHandle) -> bool {
        let mut live = self.live();
        live.running.insert(id.to_string(), stop);
        live.stop_requested.remove(id)
    }

    /// A run is over: forgets its stop handle.
    pub fn unregister(&self, id: &str) {
        let mut live = self.live();
        live.running.remove(id);
        live.stop_requested.remove(id);
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
}
