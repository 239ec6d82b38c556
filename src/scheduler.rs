//! Slots and the dispatcher. As many runs at once as there are slots; everything else waits
//! as `queued` in the store, and the dispatcher claims the oldest queued execution whenever a
//! slot is free. The queue lives in the store (never only in memory), so it survives a restart
//! and a fleet of nodes can later claim from the same table. The scheduler knows nothing of
//! executions beyond their ids: what to claim and how to run it are handed in.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox::StopHandle;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

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

    /// Something was queued: let the dispatcher look.
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// While a slot is free, `claim`s the next queued work and hands it to `run` with its
    /// slot (dropping the permit frees the slot).
    pub fn spawn_dispatcher<T, E, C, CF, R, RF>(&self, claim: C, run: R)
    where
        T: Send + 'static,
        E: Display + Send,
        C: Fn() -> CF + Send + 'static,
        CF: Future<Output = Result<Option<T>, E>> + Send,
        R: Fn(T, OwnedSemaphorePermit) -> RF + Send + 'static,
        RF: Future<Output = ()> + Send + 'static,
    {
        let permits = self.permits.clone();
        let wake = self.wake.clone();
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                match claim().await {
                    Ok(Some(work)) => {
                        tokio::spawn(run(work, permit));
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
