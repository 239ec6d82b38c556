//! The outbox's owner: arms callbacks when their subject ends, drains due ones with a worker
//! (claimed from the store per attempt, never held only in memory), records every attempt,
//! and lists them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{Notify, Semaphore};

use super::delivery::{self, Outcome};
use super::seal::seal;
use super::{Final, Finals, Settings, Subject};
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::exec::Events;
use crate::judge;
use crate::store::{AfterAttempt, AttemptRow, CallbackRow, ClaimedCallback, Store};
use crate::telemetry::Metrics;

/// A claim outlives its attempt by this much before another claim may take the callback
/// over (a worker that died mid-attempt).
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// The longest the worker sleeps without looking at the store (another node's work, a
/// clock step).
const IDLE_MAX: Duration = Duration::from_secs(30);

pub struct Service {
    store: Arc<dyn Store>,
    settings: Settings,
    finals: Arc<dyn Finals>,
    /// This node's name on its claims.
    node: String,
    /// Something became due (a callback armed, an attempt recorded).
    kick: Notify,
    /// Counts deliveries and failed attempts.
    metrics: Arc<Metrics>,
}

fn after(t: Micros, d: Duration) -> Micros {
    Micros(t.0.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)))
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        settings: Settings,
        finals: Arc<dyn Finals>,
        node: String,
        metrics: Arc<Metrics>,
    ) -> Service {
        Service {
            store,
            settings,
            finals,
            node,
            kick: Notify::new(),
            metrics,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A subject's callbacks with their attempts, oldest first.
    pub async fn list(&self, subject: &Subject) -> Result<Vec<(CallbackRow, Vec<AttemptRow>)>> {
        let mut out = Vec::new();
        for row in self.store.callbacks_of(subject).await? {
            let attempts = self.store.attempts_of(&row.id).await?;
            out.push((row, attempts));
        }
        Ok(out)
    }

    /// Hears every end of an execution from now on and arms its callbacks (an end the store
    /// announced with none waiting costs no look at the outbox). Called before
    /// [`Service::recover`], so no end falls between the two.
    pub fn listen(self: &Arc<Self>, events: &Events) {
        self.hear(events.subscribe(), |e| {
            e.callbacks_waiting.then_some(Subject::Execution(e.id))
        });
    }

    /// The same for submissions.
    pub fn listen_submissions(self: &Arc<Self>, events: &judge::events::Events) {
        self.hear(events.subscribe(), |e| Some(Subject::Submission(e.id)));
    }

    /// `subject` names what an end may have callbacks for (`None`: it has none).
    fn hear<E: Clone + Send + 'static>(
        self: &Arc<Self>,
        mut ended: broadcast::Receiver<E>,
        subject: fn(E) -> Option<Subject>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let result = match ended.recv().await {
                    Ok(e) => match subject(e) {
                        Some(subject) => me.arm(&subject).await,
                        None => Ok(()),
                    },
                    // Fell behind: the store says what ended meanwhile.
                    Err(RecvError::Lagged(_)) => me.sweep(false).await,
                    Err(RecvError::Closed) => return,
                };
                if let Err(e) = result {
                    tracing::error!("arming callbacks: {e}");
                }
            }
        });
    }

    /// At start: attempts a crash interrupted are recorded and due again, callbacks whose
    /// subject ended while nobody listened are armed, and callbacks of subjects that were
    /// never accepted (a crash between the two inserts) go. Returns the interrupted count.
    pub async fn recover(&self) -> Result<u64> {
        let released = self
            .store
            .release_callbacks(&self.node, Micros::now())
            .await?;
        self.sweep(true).await?;
        Ok(released)
    }

    /// The subject ended: its waiting callbacks are sealed and due now.
    pub async fn arm(&self, subject: &Subject) -> Result<()> {
        let waiting: Vec<CallbackRow> = self
            .store
            .callbacks_of(subject)
            .await?
            .into_iter()
            .filter(|c| c.state == super::DeliveryState::Waiting)
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        // Deleted meanwhile: its callbacks went with it.
        if let Final::Ended(object) = self.finals.final_object(subject).await? {
            for row in &waiting {
                self.seal(row, &object).await?;
            }
        }
        Ok(())
    }

    /// Arms every waiting callback whose subject has ended; with `forget_gone`, erases the
    /// ones whose subject does not exist (only at start: later, a create may be between
    /// writing a callback and writing its subject).
    async fn sweep(&self, forget_gone: bool) -> Result<()> {
        for row in self.store.waiting_callbacks().await? {
            match self.finals.final_object(&row.subject).await? {
                Final::Ended(object) => self.seal(&row, &object).await?,
                Final::Gone if forget_gone => self.store.delete_callbacks_of(&row.subject).await?,
                Final::Gone | Final::NotEnded => {}
            }
        }
        Ok(())
    }

    async fn seal(&self, row: &CallbackRow, object: &serde_json::Value) -> Result<()> {
        let json = serde_json::to_vec(object)
            .map_err(|e| Error::Internal(format!("rendering callback {}: {e}", row.id)))?;
        let sealed = match seal(row.mode, row.key.as_ref(), &json) {
            Ok(s) => s,
            Err(e) => {
                // A damaged row; the others go on.
                tracing::error!("callback {} for {}: {e}", row.id, row.subject);
                return Ok(());
            }
        };
        let due = Micros::now();
        if self
            .store
            .seal_callback(&row.id, &sealed.body, sealed.signature.as_deref(), due)
            .await?
        {
            self.kick.notify_one();
        }
        Ok(())
    }

    /// Starts the worker: it claims due callbacks (at most `concurrency` attempts at once)
    /// and sleeps until the next is due or something is armed.
    pub fn spawn_worker(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.work().await });
    }

    async fn work(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let now = Micros::now();
            let lease_until = after(now, self.settings.timeout + LEASE_MARGIN);
            match self
                .store
                .claim_callback(&self.node, now, lease_until)
                .await
            {
                Ok(Some(claimed)) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.deliver(claimed).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    self.idle().await;
                }
                Err(e) => {
                    drop(permit);
                    tracing::error!("claiming a callback: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Until the next callback is due, something is armed or recorded, or [`IDLE_MAX`].
    async fn idle(&self) {
        let wait = match self.store.next_callback_due().await {
            Ok(Some(at)) => {
                let micros = u64::try_from(at.0.saturating_sub(Micros::now().0)).unwrap_or(0);
                Duration::from_micros(micros).min(IDLE_MAX)
            }
            Ok(None) => IDLE_MAX,
            Err(e) => {
                tracing::error!("reading the callback outbox: {e}");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = self.kick.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    /// One attempt of a claimed callback, and its record.
    async fn deliver(&self, c: ClaimedCallback) {
        let n = c.row.attempts;
        let started_at = Micros::now();
        let clock = Instant::now();
        let outcome = delivery::attempt(
            &self.settings.allow,
            self.settings.timeout,
            delivery::Request {
                url: &c.row.url,
                mode: c.row.mode,
                body: c.body.into(),
                signature: c.signature.as_deref(),
                callback_id: &c.row.id,
                event: c.row.subject.event(),
                attempt: n,
            },
        )
        .await;
        let took = clock.elapsed();
        let ended_at = after(started_at, took);
        let last = n >= i64::from(self.settings.max_attempts);
        let (status, error, next) = match outcome {
            Outcome::Delivered { status } => (Some(status), None, AfterAttempt::Delivered),
            Outcome::Refused { error } => (None, Some(error), AfterAttempt::GiveUp),
            Outcome::Failed { status, error, .. } if last => (
                status,
                Some(format!("{error} (given up after {n} attempts)")),
                AfterAttempt::GiveUp,
            ),
            Outcome::Failed {
                status,
                error,
                retry_after,
            } => {
                let delay = delivery::retry_delay(&self.settings, n, retry_after);
                (
                    status,
                    Some(error),
                    AfterAttempt::RetryAt(after(ended_at, delay)),
                )
            }
        };
        match (&next, &error) {
            (AfterAttempt::Delivered, _) => {
                self.metrics.callback_delivered();
                tracing::info!(
                    "callback {} for {}: delivered (attempt {n})",
                    c.row.id,
                    c.row.subject
                )
            }
            (_, Some(e)) => {
                self.metrics.callback_failed();
                tracing::warn!(
                    "callback {} for {}: attempt {n}: {e}",
                    c.row.id,
                    c.row.subject
                )
            }
            _ => {}
        }
        let record = AttemptRow {
            callback_id: c.row.id.clone(),
            attempt: n,
            started_at,
            duration_us: i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
            status_code: status.map(i64::from),
            error,
            next_attempt_at: match next {
                AfterAttempt::RetryAt(at) => Some(at),
                AfterAttempt::Delivered | AfterAttempt::GiveUp => None,
            },
        };
        if let Err(e) = self.store.record_attempt(&record, next).await {
            // The lease runs out and the callback is tried again: at least once, still.
            tracing::error!("recording attempt {n} of callback {}: {e}", c.row.id);
        }
        self.kick.notify_one();
    }
}
