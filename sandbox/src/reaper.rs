//! Ending sandboxes off the run's path. Once a program's verdict is in (every process but init
//! gone, the cgroup's counters read), what is left — init's exit, which tears down the pid,
//! mount and network namespaces, its reaping, the cgroup's removal, the id range's release — is
//! work no caller waits for: the engine's reaper thread does it. [`Sandbox::settle`] waits
//! for it; dropping the engine does too.
//!
//! [`Sandbox::settle`]: crate::Sandbox::settle

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

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
        let pending = &self.handle.pending;
        let mut count = pending.count.lock().unwrap_or_else(|e| e.into_inner());
        while *count > 0 {
            count = pending
                .changed
                .wait(count)
                .unwrap_or_else(|e| e.into_inner());
        }
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
