//! How the server was started: one value, built by `sandpit serve` from its flags and handed
//! down to the parts that need it.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::callbacks;
use crate::files::FileConfig;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The data directory (absolute).
    pub data: PathBuf,
    pub slots: usize,
    /// Sandboxes kept prepared ahead per environment in use.
    pub prepared: usize,
    /// Largest request body (JSON, form, multipart, input upload).
    pub max_body: u64,
    /// Largest environment upload (an OCI archive).
    pub max_upload: u64,
    /// Environments served from a plain root filesystem directory (envid → dir).
    pub dir_envs: Vec<(String, PathBuf)>,
    /// This node's name in the store (the single server: "local").
    pub node: String,
    /// Files kept by reference: expiry, per-key quotas, sweeping.
    pub files: FileConfig,
    /// Completion callbacks: the allow-list, retries, timeouts.
    pub callbacks: callbacks::Settings,
}

impl ServerConfig {
    /// Where executions keep their files: `DATA/executions/<id>/`.
    pub fn executions_dir(&self) -> PathBuf {
        self.data.join("executions")
    }

    /// Where kept files live: `DATA/files/`.
    pub fn files_dir(&self) -> PathBuf {
        self.data.join("files")
    }

    /// Where projects keep their files: `DATA/projects/<id>/<revision>/`.
    pub fn projects_dir(&self) -> PathBuf {
        self.data.join("projects")
    }

    /// Where submissions keep their files: `DATA/submissions/<id>/`.
    pub fn submissions_dir(&self) -> PathBuf {
        self.data.join("submissions")
    }

    /// Scratch space for uploads; emptied at start.
    pub fn tmp_dir(&self) -> PathBuf {
        self.data.join("tmp")
    }
}
