//! The engine's parts, put together once by `sandpit serve` and shared by every face (the
//! HTTP API today; later the grading pipeline and a fleet node).

use std::sync::Arc;

use crate::callbacks;
use crate::config::ServerConfig;
use crate::env::Catalog;
use crate::exec;
use crate::files::FileStore;
use crate::judge;
use crate::store::Store;

pub struct App {
    pub cfg: ServerConfig,
    pub store: Arc<dyn Store>,
    /// The environments: the one resolver from envid to root filesystem and defaults.
    pub envs: Arc<Catalog>,
    /// The execution domain: create, start, stop, run, end.
    pub exec: Arc<exec::Service>,
    /// Files kept by reference.
    pub files: Arc<FileStore>,
    /// Grading: projects and submissions.
    pub judge: Arc<judge::Service>,
    /// Completion callbacks: the outbox and its worker.
    pub callbacks: Arc<callbacks::Service>,
    pub master_token: String,
}
