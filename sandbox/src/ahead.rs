//! What a sandbox needs that does not depend on its program, made ahead by a background
//! thread: the network namespace (`netns`) and the run's cgroup (`cgroup`). The engine keeps
//! one of each ready; a sandbox takes it, and its owner tells the thread when to make the
//! next (the namespace at once, the cgroup once the sandbox is ready). A one-shot
//! engine's network namespace thread makes one while the engine starts, and stops.
//!
//! What is ready when the engine stops is dropped (a cgroup removes itself). So it is when
//! the process exits with its engine never dropped (kept in a static): an exit handler waits
//! for the one being made, then drops what is ready, so that no cgroup outlives the process.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::Error;

struct State<T> {
    ready: Option<T>,
    /// The thread is making one now: a take waits for it rather than making a second.
    making: bool,
    /// The next one is asked for ([`Ahead::make_next`]; the first one is from the start).
    wanted: bool,
    closing: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when one is taken, and when the engine stops.
    taken: Condvar,
    /// Signalled when the thread is done making one (made, or failed).
    made: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the thread is not making one (at most `limit`).
    fn idle(&self, limit: Duration) -> MutexGuard<'_, State<T>> {
        let until = Instant::now() + limit;
        let mut state = self.lock();
        while state.making {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            state = self
                .made
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state
    }
}

/// One kind of thing made ahead, and the thread that makes it.
pub(crate) struct Ahead<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Ahead<T> {
    /// Starts thread `name`, which keeps one made by `make` ready, or (not `refill`: an
    /// engine that runs one sandbox) makes the first one only. `what` names it in the log.
    pub(crate) fn start(
        name: &str,
        what: &'static str,
        refill: bool,
        make: impl Fn() -> Result<T, Error> + Send + 'static,
    ) -> Result<Ahead<T>, Error> {
        // The thread is making the first one from now on, before it is even scheduled: a take
        // that comes first waits for it instead of making a second (a one-shot `sandpit run`
        // took before the thread ran, and made two network namespaces: 0.9 ms of the
        // kernel's work for nothing, beside its sandbox's setup).
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ready: None,
                making: true,
                wanted: true,
                closing: false,
            }),
            taken: Condvar::new(),
            made: Condvar::new(),
        });
        closed_at_exit(&shared);
        let filler = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || fill(&filler, refill, what, make))
            .map_err(|e| Error::Setup(format!("starting the {what} thread: {e}")))?;
        Ok(Ahead {
            shared,
            thread: Some(thread),
        })
    }

    /// The one made ahead, or the one being made (it is further along than a new one would
    /// be); `None` when the thread has none to give (it stopped), and the caller makes one.
    /// The thread makes the next one when told to ([`Self::make_next`]).
    pub(crate) fn take(&self) -> Option<T> {
        let mut state = self.shared.lock();
        while state.ready.is_none() && state.making {
            state = self
                .shared
                .made
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        state.ready.take()
    }

    /// Lets the thread make the next one, if none is ready. The caller picks the moment: on
    /// two CPUs a cgroup made beside a sandbox's clone slowed the clone down (clone3 + id
    /// maps 473–480 → 541–586 µs, `phases`, medians of 200), and beside init's mounts the
    /// mounts (about 415 → 480 µs, medians of 300); made once the sandbox is ready, beside
    /// its program, it cost nothing measurable.
    pub(crate) fn make_next(&self) {
        self.shared.lock().wanted = true;
        self.shared.taken.notify_one();
    }

    /// What `look` says of the one ready, once the thread is not making one.
    pub(crate) fn look_ready<R>(&self, look: impl FnOnce(Option<&T>) -> R) -> R {
        look(self.shared.idle(EXIT_WAIT).ready.as_ref())
    }

    #[cfg(test)]
    pub(crate) fn thread_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl<T: Send + 'static> Drop for Ahead<T> {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.taken.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let ready = self.shared.lock().ready.take();
        drop(ready);
    }
}

/// The background thread: makes one whenever none is ready and the next is asked for, until
/// the engine stops; or makes one only (not `refill`).
fn fill<T>(shared: &Shared<T>, refill: bool, what: &str, make: impl Fn() -> Result<T, Error>) {
    loop {
        {
            let mut state = shared.lock();
            // `making` stays set from `start` for the first one.
            while (state.ready.is_some() || !state.wanted) && !state.closing {
                state = shared.taken.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.closing {
                state.making = false;
                drop(state);
                shared.made.notify_all();
                return;
            }
            state.wanted = false;
            state.making = true;
        }
        let made = make();
        let failed = {
            let mut state = shared.lock();
            state.making = false;
            match made {
                Ok(thing) => {
                    state.ready = Some(thing);
                    None
                }
                Err(e) => Some(e),
            }
        };
        shared.made.notify_all();
        if let Some(e) = failed {
            // Taking makes one then, and says why it could not.
            tracing::warn!("making a {what} ahead failed: {e}");
            return;
        }
        if !refill {
            return;
        }
    }
}

/// How long an exit waits for the one being made: a cgroup is made in about 0.1 ms.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// What the exit handler empties: every `Ahead` of this process still alive.
trait Close: Send + Sync {
    fn close(&self);
}

impl<T: Send> Close for Shared<T> {
    /// No more is made, and what is ready (or is being made, once made) is dropped.
    fn close(&self) {
        let ready = {
            self.lock().closing = true;
            self.taken.notify_all();
            self.idle(EXIT_WAIT).ready.take()
        };
        drop(ready);
    }
}

static OPEN: Mutex<Vec<Weak<dyn Close>>> = Mutex::new(Vec::new());
static CLOSE_AT_EXIT: Once = Once::new();
/// The process that registered the handler: a child forked from it that calls exit(3) runs
/// the handler too, and must not remove the parent's cgroups.
static OWNER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn close_all_at_exit() {
    if OWNER.load(std::sync::atomic::Ordering::Relaxed) != std::process::id() {
        return;
    }
    // try_lock: a thread may hold the lock while exit runs; then leave it be.
    let open: Vec<Arc<dyn Close>> = match OPEN.try_lock() {
        Ok(open) => open.iter().filter_map(Weak::upgrade).collect(),
        Err(_) => return,
    };
    for ahead in open {
        ahead.close();
    }
}

fn closed_at_exit<T: Send + 'static>(shared: &Arc<Shared<T>>) {
    let shared: Arc<dyn Close> = shared.clone();
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    open.retain(|o| o.strong_count() > 0);
    open.push(Arc::downgrade(&shared));
    drop(open);
    CLOSE_AT_EXIT.call_once(|| {
        OWNER.store(std::process::id(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: registers a handler that takes only short-held locks and waits at most
        // EXIT_WAIT per kind of thing made ahead.
        unsafe { libc::atexit(close_all_at_exit) };
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A thing that counts how many of its kind are alive.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn counting(alive: &Arc<AtomicUsize>) -> impl Fn() -> Result<Counted, Error> {
        let alive = alive.clone();
        move || {
            alive.fetch_add(1, Ordering::SeqCst);
            Ok(Counted(alive.clone()))
        }
    }

    fn eventually(what: &str, done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("{what}");
    }

    /// An engine that runs many keeps one ready after each take; what is ready when it stops
    /// is dropped.
    #[test]
    fn one_is_kept_ready_and_dropped_with_the_engine() {
        let alive = Arc::new(AtomicUsize::new(0));
        let ahead = Ahead::start("test-ahead", "thing", true, counting(&alive)).unwrap();
        for _ in 0..5 {
            assert!(ahead.take().is_some());
            assert!(
                ahead.take().is_none(),
                "the next was made before it was asked for"
            );
            ahead.make_next();
            eventually("one is ready again", || ahead.look_ready(|r| r.is_some()));
            assert_eq!(alive.load(Ordering::SeqCst), 1, "one alive: the one ready");
        }
        drop(ahead);
        assert_eq!(
            alive.load(Ordering::SeqCst),
            0,
            "the ready one outlived the engine"
        );
    }

    /// A one-shot engine's thread makes one, which the first take gets even when it comes
    /// before the thread ran, and then makes none.
    #[test]
    fn a_one_shot_engine_makes_one_and_no_more() {
        let alive = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let ahead = Ahead::start("test-ahead", "thing", false, counting(&alive)).unwrap();
            let first = ahead.take();
            assert!(first.is_some());
            eventually("the thread stops", || ahead.thread_finished());
            assert!(ahead.take().is_none(), "a second was made");
            drop(first);
            assert_eq!(alive.load(Ordering::SeqCst), 0);
        }
    }

    /// A thread that fails to make one stops; takes then get none (the caller makes its own).
    #[test]
    fn a_thread_that_fails_stops_and_takes_get_none() {
        let ahead: Ahead<Counted> = Ahead::start("test-ahead", "thing", true, || {
            Err(Error::Setup("no".into()))
        })
        .unwrap();
        assert!(ahead.take().is_none());
        eventually("the thread stops", || ahead.thread_finished());
    }

    /// The exit handler's work: the one being made is waited for and dropped, none is made
    /// after, and the engine's own drop later finds nothing to do.
    #[test]
    fn closing_drops_the_one_being_made() {
        let alive = Arc::new(AtomicUsize::new(0));
        let slow = {
            let make = counting(&alive);
            move || {
                std::thread::sleep(Duration::from_millis(50));
                make()
            }
        };
        let ahead = Ahead::start("test-ahead", "thing", true, slow).unwrap();
        ahead.shared.close();
        assert_eq!(
            alive.load(Ordering::SeqCst),
            0,
            "the one being made was left"
        );
        eventually("the thread stops", || ahead.thread_finished());
        assert_eq!(
            alive.load(Ordering::SeqCst),
            0,
            "one was made after closing"
        );
        drop(ahead);
    }
}
