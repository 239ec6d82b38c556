//! Network namespaces made ahead of time. Creating one costs about 0.5 ms (the largest part of
//! a sandbox's start); a background thread keeps a few ready, each used by exactly one run and
//! then dropped, so no run ever sees another's sockets.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::error::Error;

pub struct NetnsPool {
    ready: Mutex<Option<Receiver<OwnedFd>>>,
    worker: Option<JoinHandle<()>>,
}

/// Makes a fresh network namespace in the calling thread, brings `lo` up and returns it.
fn make_one() -> std::io::Result<OwnedFd> {
    // SAFETY: unshare of the network namespace affects the calling (pool) thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    crate::namespaces::loopback_up().map_err(std::io::Error::from_raw_os_error)?;
    Ok(File::open("/proc/thread-self/ns/net")?.into())
}

impl NetnsPool {
    /// Starts the pool with `size` namespaces kept ready.
    pub fn start(size: usize) -> Result<Self, Error> {
        // Fail early (not root, no netns support) rather than in the background.
        let first = std::thread::spawn(make_one)
            .join()
            .map_err(|_| Error::Setup("network namespace pool thread panicked".into()))?
            .map_err(|e| Error::Setup(format!("creating a network namespace: {e}")))?;
        let (tx, rx) = sync_channel::<OwnedFd>(size.max(1));
        let _ = tx.try_send(first);
        let worker = std::thread::Builder::new()
            .name("sandpit-netns".into())
            .spawn(move || loop {
                match make_one() {
                    // Blocks while the pool is full; fails once the pool is dropped.
                    Ok(ns) => {
                        if tx.send(ns).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("network namespace pool: {e}");
                        return;
                    }
                }
            })
            .map_err(|e| Error::Setup(format!("starting the netns pool: {e}")))?;
        Ok(NetnsPool {
            ready: Mutex::new(Some(rx)),
            worker: Some(worker),
        })
    }

    /// A ready namespace, if one is there (the caller makes its own otherwise).
    pub fn take(&self) -> Option<OwnedFd> {
        let guard = self.ready.lock().ok()?;
        guard.as_ref()?.try_recv().ok()
    }
}

impl Drop for NetnsPool {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.ready.lock() {
            // Dropping the receiver (and the namespaces in it) stops the worker.
            guard.take();
        }
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
