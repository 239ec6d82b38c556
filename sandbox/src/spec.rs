//! What to run and under which limits: the input of [`crate::Sandbox::run`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the work directory lives inside the sandbox, unless the spec says otherwise.
pub const DEFAULT_WORKDIR: &str = "/work";
/// The uid (and gid) the program runs as inside the sandbox, unless the spec says otherwise.
pub const DEFAULT_UID: u32 = 1000;

/// The root filesystem of a run. It is always mounted read-only; the work directory and /tmp
/// are fresh tmpfs mounts on top of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootFs {
    /// A directory that already holds a whole root filesystem.
    Dir(PathBuf),
    /// Layers of an OCI image, lowest first, merged by overlayfs (read-only).
    Layers(Vec<PathBuf>),
}

/// Resource limits. `None` means "no limit of this kind" (the sandbox still isolates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Memory of the whole sandbox (cgroup), swap included, in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU time (user + system) of the whole process tree.
    #[serde(with = "opt_secs")]
    pub cpu_time: Option<Duration>,
    /// Wall-clock time from the program's start.
    #[serde(with = "opt_secs")]
    pub wall_time: Option<Duration>,
    /// Number of processes and threads alive at once (pids cgroup).
    pub pids: Option<u64>,
    /// Bytes of stdout and of stderr (each) kept; writing more ends the run (`output-limit`).
    pub output_bytes: Option<u64>,
    /// Largest file the program may write (RLIMIT_FSIZE).
    pub file_size_bytes: Option<u64>,
    /// Size of each writable tmpfs (the work directory and /tmp).
    pub disk_bytes: Option<u64>,
    /// Open file descriptors per process (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
    /// Stack size per process (RLIMIT_STACK); `None` keeps the system default.
    pub stack_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Some(256 << 20),
            cpu_time: Some(Duration::from_secs(10)),
            wall_time: Some(Duration::from_secs(30)),
            pids: Some(64),
            output_bytes: Some(16 << 20),
            file_size_bytes: Some(64 << 20),
            disk_bytes: Some(64 << 20),
            open_files: Some(256),
            stack_bytes: None,
        }
    }
}

impl Limits {
    /// No limit at all: only isolation. Useful as a base to set a few limits on.
    pub fn unlimited() -> Self {
        Limits {
            memory_bytes: None,
            cpu_time: None,
            wall_time: None,
            pids: None,
            output_bytes: None,
            file_size_bytes: None,
            disk_bytes: None,
            open_files: None,
            stack_bytes: None,
        }
    }
}

/// A file placed into the sandbox before the program starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIn {
    /// Path inside the sandbox. Relative paths are relative to the work directory; absolute
    /// paths must lie in the work directory or in /tmp.
    pub path: PathBuf,
    /// Where the bytes come from.
    pub source: FileSource,
    /// Permission bits (e.g. 0o755 for a program); default 0o644.
    pub mode: Option<u32>,
}

/// The content of a [`FileIn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileSource {
    /// A file or a directory (copied recursively) on the host.
    Host(PathBuf),
    /// Bytes given in memory.
    Bytes(Vec<u8>),
    /// A host file or directory made visible read-only at the path, without a copy (a bind
    /// mount: large inputs, files kept by reference, a build's outputs shared by its tests).
    /// Owner and modes are the host's; `mode` does not apply.
    Bind(PathBuf),
}

/// What the program reads on its standard input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stdin {
    /// /dev/null.
    #[default]
    Null,
    /// A host file.
    File(PathBuf),
    /// Bytes given in memory.
    Bytes(Vec<u8>),
}

/// Everything that describes one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub rootfs: RootFs,
    /// argv; `argv[0]` is looked up in `PATH` when it has no slash.
    pub argv: Vec<String>,
    /// Environment variables, `KEY=VALUE`. Nothing of the host's environment leaks in.
    pub env: Vec<String>,
    /// Working directory inside the sandbox; default: the work directory.
    pub cwd: Option<PathBuf>,
    /// The writable work directory inside the sandbox (a tmpfs).
    pub workdir: PathBuf,
    /// uid and gid of the program inside the sandbox.
    pub uid: u32,
    pub gid: u32,
    pub limits: Limits,
    pub stdin: Stdin,
    /// Files put into the sandbox before the program starts.
    pub files: Vec<FileIn>,
    /// Files (relative to the work directory) read back after the run, see
    /// [`crate::Outcome::files`]. Symlinks, FIFOs and devices are never followed.
    pub collect: Vec<PathBuf>,
    /// Largest file read back by `collect`.
    pub collect_max_bytes: u64,
    /// Hostname inside the sandbox.
    pub hostname: String,
}

impl Spec {
    /// A spec with default limits that runs `argv` in `rootfs`.
    pub fn new(rootfs: RootFs, argv: Vec<String>) -> Self {
        Spec {
            rootfs,
            argv,
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                "HOME=/tmp".into(),
                "LANG=C.UTF-8".into(),
            ],
            cwd: None,
            workdir: PathBuf::from(DEFAULT_WORKDIR),
            uid: DEFAULT_UID,
            gid: DEFAULT_UID,
            limits: Limits::default(),
            stdin: Stdin::Null,
            files: Vec::new(),
            collect: Vec::new(),
            collect_max_bytes: 64 << 20,
            hostname: "sandpit".into(),
        }
    }
}

/// The part of a [`Spec`] a sandbox is made of, before any program is known: two specs with the
/// same `EnvSpec` can run in sandboxes prepared alike (see [`crate::Sandbox::prepare`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvSpec {
    pub rootfs: RootFs,
    pub workdir: PathBuf,
    pub hostname: String,
    /// The owner of the work directory; the program runs as this user.
    pub uid: u32,
    pub gid: u32,
    /// Size of each writable tmpfs.
    pub disk_bytes: Option<u64>,
}

impl Spec {
    /// The environment this spec runs in.
    pub fn env_spec(&self) -> EnvSpec {
        EnvSpec {
            rootfs: self.rootfs.clone(),
            workdir: self.workdir.clone(),
            hostname: self.hostname.clone(),
            uid: self.uid,
            gid: self.gid,
            disk_bytes: self.limits.disk_bytes,
        }
    }
}

/// (De)serialises an optional duration as fractional seconds.
pub(crate) mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        match v {
            Some(x) => Duration::try_from_secs_f64(x).map(Some).map_err(|_| {
                serde::de::Error::custom(
                    "a duration must be a finite, non-negative number of seconds that fits in 64 bits",
                )
            }),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_that_do_not_fit_are_refused_not_panicking() {
        for bad in ["1e20", "-1", "1e400"] {
            let text = format!("{{\"cpu_time\": {bad}}}");
            assert!(serde_json::from_str::<Limits>(&text).is_err(), "{bad}");
        }
        let l: Limits = serde_json::from_str("{\"cpu_time\": 1.5, \"wall_time\": null}").unwrap();
        assert_eq!(l.cpu_time, Some(Duration::from_millis(1500)));
        assert_eq!(l.wall_time, None);
    }
}
