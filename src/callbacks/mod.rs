//! Completion callbacks: when an execution or a submission ends, its final object —
//! exactly what its `GET` returns — is POSTed to the URL the caller gave at creation.
//!
//! - [`target`]: the callback as asked for (`{url, mode, secret}`) and as accepted;
//! - [`allow`]: the operator's allow-list of callback hosts (`--callback-allow`), checked at
//!   creation and again, on the resolved addresses, at every attempt;
//! - [`seal`]: the body on the wire: plain JSON, JSON signed with HMAC-SHA256 (Sphere's
//!   `X-Sphere-Engine-Signature`), AES-256-GCM, or Railgun's AES-256-CBC;
//! - [`delivery`]: one attempt over HTTP, and the retry schedule;
//! - [`service`]: the outbox in the store and the worker that drains it.
//!
//! Delivery is durable and at least once. The callback's row is written before its subject
//! (state `waiting`); when the subject ends its final object is rendered, sealed, and the row
//! becomes `pending` (the key is erased then); a worker claims due rows one attempt at a time
//! (`delivering`, with a lease), records every attempt, and retries with exponential backoff
//! until a 2xx answer (`delivered`) or the last attempt (`failed`). Nothing is held only in
//! memory: a restart finds what was waiting, pending or in flight in the store.
//!
//! A new kind of subject (submissions) adds a [`Subject`] variant, renders its final object in
//! [`Finals`], writes its callback's row with [`target::Callback::row`] before the subject's
//! own, and calls [`service::Service::arm`] when it ends.

pub mod allow;
pub mod delivery;
pub mod seal;
pub mod service;
pub mod target;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use allow::AllowList;
pub use service::Service;
pub use target::{Callback, CallbackRequest, Mode, Secret};

/// What a callback reports the end of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Execution(String),
    Submission(String),
}

impl Subject {
    /// An execution's kind, as the store keeps it.
    pub const EXECUTION: &'static str = "execution";
    /// A submission's kind, as the store keeps it.
    pub const SUBMISSION: &'static str = "submission";

    /// The kind, as the store keeps it.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Execution(_) => Subject::EXECUTION,
            Subject::Submission(_) => Subject::SUBMISSION,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Subject::Execution(id) | Subject::Submission(id) => id,
        }
    }

    /// Reads the stored kind and id back; `None` for a kind this build does not know.
    pub fn from_parts(kind: &str, id: String) -> Option<Subject> {
        match kind {
            Subject::EXECUTION => Some(Subject::Execution(id)),
            Subject::SUBMISSION => Some(Subject::Submission(id)),
            _ => None,
        }
    }

    /// The event a delivery announces (`X-Sandpit-Event`).
    pub fn event(&self) -> &'static str {
        match self {
            Subject::Execution(_) => "execution.ended",
            Subject::Submission(_) => "submission.ended",
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.id())
    }
}

/// Where a callback is in its life (the outbox's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Its subject has not ended.
    Waiting,
    /// Sealed; the next attempt is due at `next_attempt_at`.
    Pending,
    /// An attempt is under way (claimed until `next_attempt_at`, the lease).
    Delivering,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: every attempt failed, or the allow-list refused the receiver.
    Failed,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 5] = [
        DeliveryState::Waiting,
        DeliveryState::Pending,
        DeliveryState::Delivering,
        DeliveryState::Delivered,
        DeliveryState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Waiting => "waiting",
            DeliveryState::Pending => "pending",
            DeliveryState::Delivering => "delivering",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subject as a callback sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Final {
    /// It has not ended yet.
    NotEnded,
    /// It has ended: its final object, exactly as its `GET` shows it.
    Ended(serde_json::Value),
    /// It does not exist (deleted, or never accepted).
    Gone,
}

/// Renders final objects. The HTTP layer implements it (the final object is what its `GET`
/// returns), so this module never imports the server.
#[async_trait]
pub trait Finals: Send + Sync {
    async fn final_object(&self, subject: &Subject) -> crate::error::Result<Final>;
}

/// How callbacks are delivered: the server's settings (`sandpit serve --callback-…`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The hosts callbacks may go to (nothing by default).
    pub allow: AllowList,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles after every failure …
    pub backoff_first: Duration,
    /// … up to this.
    pub backoff_max: Duration,
    /// One attempt, from connecting to the answer's status line.
    pub timeout: Duration,
    /// Deliveries under way at once.
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow: AllowList::default(),
            max_attempts: 15,
            backoff_first: Duration::from_secs(2),
            backoff_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            concurrency: 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
        }
        let s = Subject::Execution("exec_1".into());
        assert_eq!(Subject::from_parts(s.kind(), "exec_1".into()), Some(s));
        assert_eq!(Subject::from_parts("nope", "x".into()), None);
    }
}
