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
    /// False when the store said, with the end, that no callback waits for it; true when it
    /// said some do, or did not say (ends recorded many at once).
    pub callbacks_waiting: bool,
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

/// What listening for one end came to.
#[derive(Debug)]
pub enum Heard<E> {
    /// Its end, as announced.
    Ended(E),
    /// The subscription fell behind: ends were missed, maybe this one (the store tells).
    FellBehind,
    /// The announcements stopped (the server is stopping).
    Closed,
    TimedOut,
}

/// Listens on `ended` for the end of `id` until `deadline`.
pub async fn hear_end<E: EndOf>(
    ended: &mut broadcast::Receiver<E>,
    id: &str,
    deadline: tokio::time::Instant,
) -> Heard<E> {
    loop {
        tokio::select! {
            event = ended.recv() => match event {
                Ok(e) if e.id() == id => return Heard::Ended(e),
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return Heard::FellBehind,
                Err(RecvError::Closed) => return Heard::Closed,
            },
            _ = tokio::time::sleep_until(deadline) => return Heard::TimedOut,
        }
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
        match hear_end(&mut ended, id, deadline).await {
            Heard::Ended(_) => return true,
            // The store says whether it ended meanwhile.
            Heard::FellBehind => {}
            Heard::Closed | Heard::TimedOut => return false,
        }
    }
}

/// Listens on `ended` (subscribed before `id` could end) for the end of `id`, at most
/// `timeout`, and returns it as announced. A listener that falls behind may have missed it:
/// it then waits on the store instead (`in_store`, as for [`wait_ended`]) and returns `None`,
/// and so it does on timeout or when the announcements stop; the caller reads the store.
pub async fn announced_end<E, F, Fut, Err>(
    mut ended: broadcast::Receiver<E>,
    id: &str,
    timeout: Duration,
    in_store: F,
) -> Option<E>
where
    E: EndOf,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, Err>>,
    Err: Display,
{
    let deadline = tokio::time::Instant::now() + timeout;
    match hear_end(&mut ended, id, deadline).await {
        Heard::Ended(e) => Some(e),
        Heard::FellBehind => {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            wait_ended(ended, id, left, in_store).await;
            None
        }
        Heard::Closed | Heard::TimedOut => None,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::broadcast;
    use tokio::time::Instant;

    use super::*;

    fn end(id: &str) -> Ended {
        Ended {
            id: id.into(),
            ending: Arc::new(Ending::internal("x")),
            row: None,
            callbacks_waiting: true,
        }
    }

    #[tokio::test]
    async fn a_listener_hears_its_end_among_others() {
        let (tx, mut rx) = broadcast::channel(4);
        tx.send(end("a")).unwrap();
        tx.send(end("b")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        match hear_end(&mut rx, "b", deadline).await {
            Heard::Ended(e) => assert_eq!(e.id, "b"),
            other => panic!("{other:?}"),
        }
    }

    /// More ends than the channel holds while one listens: it is told it fell behind (its
    /// own end may be among the missed), and hears the next ones.
    #[tokio::test]
    async fn a_listener_that_fell_behind_is_told_so() {
        let (tx, mut rx) = broadcast::channel(2);
        for id in ["x", "y", "z"] {
            tx.send(end(id)).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            hear_end(&mut rx, "w", deadline).await,
            Heard::FellBehind
        ));
        // It goes on from the oldest end the channel still holds.
        assert!(matches!(
            hear_end(&mut rx, "z", deadline).await,
            Heard::Ended(_)
        ));
        tx.send(end("w")).unwrap();
        assert!(matches!(
            hear_end(&mut rx, "w", deadline).await,
            Heard::Ended(_)
        ));
        drop(tx);
        assert!(matches!(
            hear_end(&mut rx, "w", deadline).await,
            Heard::Closed
        ));
    }

    #[tokio::test]
    async fn a_listener_gives_up_at_its_deadline() {
        let (tx, mut rx) = broadcast::channel::<Ended>(2);
        let deadline = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            hear_end(&mut rx, "w", deadline).await,
            Heard::TimedOut
        ));
        drop(tx);
    }

    /// An end heard is returned as announced, without a look at the store.
    #[tokio::test]
    async fn an_announced_end_is_returned_as_heard() {
        let (tx, rx) = broadcast::channel(4);
        tx.send(end("a")).unwrap();
        tx.send(end("w")).unwrap();
        let heard = announced_end(rx, "w", Duration::from_secs(5), || async {
            Err::<bool, _>("the store was read")
        })
        .await;
        assert_eq!(heard.expect("heard").id, "w");
    }

    /// A listener that fell behind returns only once its end came (the caller then reads it
    /// from the store), not at once with nothing.
    #[tokio::test]
    async fn an_announced_end_missed_is_waited_for() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        let (tx, rx) = broadcast::channel(2);
        // Fallen behind before it listens; its own end comes later.
        for id in ["x", "y", "z"] {
            tx.send(end(id)).unwrap();
        }
        let reads = AtomicUsize::new(0);
        let ended = AtomicBool::new(false);
        let waiting = async {
            let heard = announced_end(rx, "w", Duration::from_secs(5), || {
                reads.fetch_add(1, SeqCst);
                let ended = ended.load(SeqCst);
                async move { Ok::<_, String>(ended) }
            })
            .await;
            (heard, ended.load(SeqCst))
        };
        let end_later = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ended.store(true, SeqCst);
            tx.send(end("w")).unwrap();
        };
        let ((heard, after_the_end), ()) = tokio::join!(waiting, end_later);
        assert!(
            heard.is_none(),
            "fell behind: the end is read from the store"
        );
        assert!(after_the_end, "it returned before the end");
        assert!(reads.load(SeqCst) >= 1, "the store was not read");
    }

    /// The store is read again after falling behind: an end missed is still found.
    #[tokio::test]
    async fn wait_ended_reads_the_store_after_falling_behind() {
        let (tx, rx) = broadcast::channel(2);
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let waiting = wait_ended(rx, "w", Duration::from_secs(5), || {
            // The first read finds it running; the second, after the flood, ended.
            let n = reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Ok::<_, String>(n > 0) }
        });
        let flood = async {
            tokio::task::yield_now().await;
            for id in ["x", "w", "y", "z"] {
                tx.send(end(id)).unwrap();
            }
        };
        let (ended, ()) = tokio::join!(waiting, flood);
        assert!(ended);
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
