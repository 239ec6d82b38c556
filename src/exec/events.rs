//! What happens to executions, told to whoever listens: every end goes through
//! `lifecycle.rs`, which emits one [`Ended`] here; every chunk a run writes to its log is
//! announced on that execution's output channel ([`OutputProgress`]). Waiters (`wait: true`,
//! stop, delete), the live log, and later callbacks and metrics subscribe; none of them polls.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use crate::exec::state::Ending;
use crate::store::ExecutionRow;

/// An execution ended (its end is in the store before this is sent).
#[derive(Debug, Clone)]
pub struct Ended {
    pub id: String,
    pub ending: Arc<Ending>,
    /// The row as the end left it in the store (none for ends recorded many at once, after
    /// a crash): listeners need not read it again.
    pub row: Option<Arc<ExecutionRow>>,
}

/// An end announced on a broadcast channel: an execution's, a submission's.
pub trait EndOf: Clone {
    /// The id of what ended.
    fn id(&self) -> &str;
}

impl EndOf for Ended {
    fn id(&self) -> &str {
        &self.id
    }
}

/// Waits until `id` has ended (or is gone), at most `timeout`; false on timeout. `ended` is
/// subscribed before the store is first read, so no end slips in between; `in_store` reads
/// the store: true when it has ended or is gone. A subscriber that falls behind reads the
/// store again.
pub async fn wait_ended<E, F, Fut, Err>(
    mut ended: broadcast::Receiver<E>,
    id: &str,
    timeout: Duration,
    mut in_store: F,
) -> bool
where
    E: EndOf,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, Err>>,
    Err: Display,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match in_store().await {
            Ok(false) => {}
            Ok(true) => return true,
            Err(e) => {
                tracing::warn!("waiting for {id}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = tokio::time::sleep_until(deadline) => return false,
                }
            }
        }
        loop {
            tokio::select! {
                event = ended.recv() => match event {
                    Ok(e) if e.id() == id => return true,
                    Ok(_) => {}
                    // Fell behind: the store says whether it ended meanwhile.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return false,
                },
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }
}

/// One execution's output channel: the length of its log that is written whole. Followers
/// wait on it (a `watch`: a slow follower sees the latest length, never a backlog).
struct Output {
    length: watch::Sender<u64>,
    /// A run holds the channel (else only followers do, waiting for the run to begin).
    writing: bool,
}

/// The fan-out. A subscriber that falls behind by more than the buffer gets `Lagged` and
/// re-reads the store.
#[derive(Clone)]
pub struct Events {
    ended: broadcast::Sender<Ended>,
    outputs: Arc<Mutex<HashMap<String, Output>>>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            ended: broadcast::channel(1024).0,
            outputs: Arc::default(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Ended> {
        self.ended.subscribe()
    }

    fn outputs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Output>> {
        self.outputs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the log of `id`: the value is the length written whole so far, and changes as
    /// the run appends. Before the run begins it is 0. Call [`Events::unfollow`] when done.
    pub fn follow_output(&self, id: &str) -> watch::Receiver<u64> {
        self.outputs()
            .entry(id.to_string())
            .or_insert_with(|| Output {
                length: watch::channel(0).0,
                writing: false,
            })
            .length
            .subscribe()
    }

    /// A follower is done: the channel goes once nobody follows and no run writes.
    pub fn unfollow(&self, id: &str, rx: watch::Receiver<u64>) {
        drop(rx);
        let mut outputs = self.outputs();
        if outputs
            .get(id)
            .is_some_and(|o| !o.writing && o.length.receiver_count() == 0)
        {
            outputs.remove(id);
        }
    }

    /// The run of `id` begins writing its log (from length 0).
    pub(in crate::exec) fn output(&self, id: &str) -> OutputProgress {
        let mut outputs = self.outputs();
        let o = outputs.entry(id.to_string()).or_insert_with(|| Output {
            length: watch::channel(0).0,
            writing: true,
        });
        o.writing = true;
        o.length.send_replace(0);
        OutputProgress {
            length: o.length.clone(),
        }
    }

    pub(in crate::exec) fn emit(&self, event: Ended) {
        // The run is over: its output channel closes (followers read to the end of the log).
        self.outputs().remove(&event.id);
        // No subscriber is not an error: nobody is waiting.
        let _ = self.ended.send(event);
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

/// The writing end of an execution's output channel, held by its log's sinks.
pub struct OutputProgress {
    length: watch::Sender<u64>,
}

impl OutputProgress {
    /// The log is now `length` bytes long, every record whole.
    pub fn appended(&self, length: u64) {
        self.length.send_replace(length);
    }
}
