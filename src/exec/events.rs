//! What happens to executions, told to whoever listens: every end goes through
//! `lifecycle.rs`, which emits one [`Ended`] here. Waiters (`wait: true`, stop, delete), the
//! live log, and later callbacks and metrics subscribe; none of them polls for an end.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::exec::state::Ending;

/// An execution ended (its end is in the store before this is sent).
#[derive(Debug, Clone)]
pub struct Ended {
    pub id: String,
    pub ending: Arc<Ending>,
}

/// The fan-out. A subscriber that falls behind by more than the buffer gets `Lagged` and
/// re-reads the store.
#[derive(Clone)]
pub struct Events {
    ended: broadcast::Sender<Ended>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            ended: broadcast::channel(1024).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Ended> {
        self.ended.subscribe()
    }

    pub(in crate::exec) fn emit(&self, event: Ended) {
        // No subscriber is not an error: nobody is waiting.
        let _ = self.ended.send(event);
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}
