//! How the server was started: one value, built by `sandpit serve` from its flags and handed
//! down to the parts that need it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::callbacks;
use crate::exec::admission::Policy;
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
    /// The maximum of every limit, and what a key may hold.
    pub policy: Policy,
    pub connections: ConnectionLimits,
    /// Memory the request bodies read whole (JSON, form, multipart) may take together; a
    /// request that finds none left waits a moment, then gets 503.
    pub body_memory: u64,
    /// Files kept by reference: expiry, per-key quotas, sweeping.
    pub files: FileConfig,
    /// Completion callbacks: the allow-list, retries, timeouts.
    pub callbacks: callbacks::Settings,
}

/// How many connections, and how long each may dawdle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// A request head must arrive whole within this, also on a kept-alive connection between
    /// requests (so an idle connection closes after it too).
    pub header_read_timeout: Duration,
    /// A request body that stalls this long gets 408; a response the client stops reading
    /// for this long ends the connection.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
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
