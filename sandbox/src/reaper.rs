//! Ending sandboxes off the run's path. Once a program's verdict is in (every process but init
//! gone, the cgroup's counters read), what is left — init's exit, which tears down the pid,
//! mount and network namespaces, its reaping, the cgroup's removal, the id range's release — is
//! work no caller waits for: the engine's reaper thread does it. [`Sandbox::settle`] waits
//! for it; dropping the engine does too.
//!
//! [`Sandbox::settle`]: crate::Sandbox::settle

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, Once, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::prepared::Prepared;

/// Sandboxes handed over and not yet ended.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Pending {
    fn add(&self, n: isize) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.saturating_add_signed(n);
        self.changed.notify_all();
    }

    /// Waits until none is pending, or `limit` (`None`: for as long as it takes).
    fn wait_empty(&self, limit: Option<Duration>) {
        let until = limit.map(|l| Instant::now() + l);
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *count > 0 {
            count = match until {
                None => self.changed.wait(count).unwrap_or_else(|e| e.into_inner()),
                Some(until) => {
                    let Some(left) = until.checked_duration_since(Instant::now()) else {
                        return;
                    };
                    self.changed
                        .wait_timeout(count, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// The pending sandboxes of every reaper alive. An engine that is never dropped (kept in a
/// static) still ends what it handed over when the process exits: the exit waits for its
/// reaper (the thread still runs while `exit` calls its handlers), so no cgroup is left.
static LIVE: Mutex<Vec<Weak<Pending>>> = Mutex::new(Vec::new());
static SETTLE_AT_EXIT: Once = Once::new();

/// How long an exit waits for the sandboxes still ending: a sandbox ends in about a
/// millisecond; this bounds an exit from a thread that holds a lock the reaper needs.
const EXIT_WAIT: Duration = Duration::from_secs(2);

extern "C" fn settle_all_at_exit() {
    // try_lock: a thread may hold the lock while exit runs; then leave it be.
    let live: Vec<Arc<Pending>> = match LIVE.try_lock() {
        Ok(live) => live.iter().filter_map(Weak::upgrade).collect(),
        Err(_) => return,
    };
    for pending in live {
        pending.wait_empty(Some(EXIT_WAIT));
    }
}

fn register(pending: &Arc<Pending>) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.retain(|p| p.strong_count() > 0);
    live.push(Arc::downgrade(pending));
    drop(live);
    SETTLE_AT_EXIT.call_once(|| {
        // SAFETY: registers a handler that takes only short-held locks and waits at most
        // EXIT_WAIT per reaper.
        unsafe { libc::atexit(settle_all_at_exit) };
    });
}

/// What a prepared sandbox keeps of the engine's reaper: where to hand itself over.
#[derive(Clone)]
pub(crate) struct Handle {
    // `None` is the engine's "stop once the earlier ones are done".
    queue: Sender<Option<Prepared>>,
    pending: Arc<Pending>,
}

impl Handle {
    /// Ends `sandbox` in the background (inline when the reaper has stopped).
    pub(crate) fn retire(&self, sandbox: Prepared) {
        self.pending.add(1);
        if let Err(returned) = self.queue.send(Some(sandbox)) {
            drop(returned);
            self.pending.add(-1);
        }
    }
}

/// The engine's reaper thread.
pub(crate) struct Reaper {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    pub(crate) fn start() -> std::io::Result<Reaper> {
        let (queue, retired) = channel::<Option<Prepared>>();
        let pending = Arc::new(Pending::default());
        register(&pending);
        let counted = pending.clone();
        let thread = std::thread::Builder::new()
            .name("sandpit-reaper".into())
            .spawn(move || {
                while let Ok(Some(sandbox)) = retired.recv() {
                    drop(sandbox);
                    counted.add(-1);
                }
            })?;
        Ok(Reaper {
            handle: Handle { queue, pending },
            thread: Some(thread),
        })
    }

    pub(crate) fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Returns once every sandbox handed over so far has ended.
    pub(crate) fn settle(&self) {
        self.handle.pending.wait_empty(None);
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Prepared sandboxes still alive elsewhere hold senders: a message, not the channel's
        // end, stops the thread (after what was queued before it).
        let _ = self.handle.queue.send(None);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
