//! The judge service: what a face (the HTTP API) asks of projects and submissions. Projects
//! are checked by the one loader and kept on disk by revision (`DATA/projects/<id>/<rev>/`, a
//! new one on each replacement; an old one goes once no submission still uses it).
//! Submissions wait in the store's queue, share the execution slots, are graded by the
//! [`pipeline`](super::pipeline) on a blocking thread, and record each finished stage and
//! test, so that after a restart of the server they resume where they were.
//!
//! | concern | where |
//! |---|---|
//! | projects: staged, checked, placed by revision, collected | [`projects`] |
//! | submissions: admitted, accepted, read, waited for, deleted | [`submissions`] |
//! | grading: the dispatcher, a claimed submission graded, progress recorded, recovery | [`grading`] |

mod grading;
mod projects;
mod submissions;

use std::path::PathBuf;
use std::sync::Arc;

use sandbox::Pool;

use super::events::Events;
use super::lifecycle::Lifecycle;
use super::workspace::{SubmissionDir, SubmissionDirs};
use crate::env::Catalog;
use crate::error::Error;
use crate::scheduler::Scheduler;
use crate::store::Store;

pub use projects::{InlineProject, InlineTest, NewProject, ProjectInput};
pub use submissions::{NewSubmission, MAX_BATCH};

pub struct Service {
    life: Lifecycle,
    store: Arc<dyn Store>,
    envs: Arc<Catalog>,
    pool: Arc<Pool>,
    sched: Scheduler,
    dirs: SubmissionDirs,
    projects: PathBuf,
    node: String,
    max_upload: u64,
    /// Serialises "count the owner's work, then queue one".
    admission: tokio::sync::Mutex<()>,
    /// Held while a submission takes its project's revision, and while revisions go.
    revisions: tokio::sync::Mutex<()>,
}

/// What the service runs with.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub envs: Arc<Catalog>,
    /// The engine's warm pool, shared with executions.
    pub pool: Arc<Pool>,
    /// Shares the execution slots.
    pub sched: Scheduler,
    pub submissions_dir: PathBuf,
    pub projects_dir: PathBuf,
    pub node: String,
    /// Largest project archive.
    pub max_upload: u64,
}

fn invalid(e: String) -> Error {
    Error::Invalid(e)
}
impl Service {
    pub fn new(p: Parts) -> Service {
        let dirs = SubmissionDirs::new(p.submissions_dir);
        Service {
            life: Lifecycle::new(p.store.clone(), Events::new(), dirs.clone()),
            store: p.store,
            envs: p.envs,
            pool: p.pool,
            sched: p.sched,
            dirs,
            projects: p.projects_dir,
            node: p.node,
            max_upload: p.max_upload,
            admission: tokio::sync::Mutex::new(()),
            revisions: tokio::sync::Mutex::new(()),
        }
    }

    pub fn events(&self) -> &Events {
        self.life.events()
    }

    pub fn dir(&self, id: &str) -> SubmissionDir {
        self.dirs.of(id)
    }

    fn staging(&self) -> PathBuf {
        self.projects.join(".staging")
    }

    fn project_dir(&self, id: &str, revision: i64) -> PathBuf {
        self.projects.join(id).join(revision.to_string())
    }
}
