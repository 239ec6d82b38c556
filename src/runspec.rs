//! Building a `sandbox::Spec`, in layers, one way for every face: the root source's
//! [`Defaults`] first (an image's Env/WorkingDir/User/Cmd, a bundle's process), then the
//! caller's own settings (the CLI's flags, an execution's request). Each "set this on a spec"
//! rule exists here once.

use std::path::PathBuf;
use std::time::Duration;

use sandbox::{FileIn, Limits, RootFs, Spec, Stdin};

/// How defaults set environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvVars {
    /// Each `KEY=VALUE` replaces a variable of the same name (an image's Env).
    Merge(Vec<String>),
    /// The whole environment (an OCI bundle's process.env).
    Replace(Vec<String>),
}

impl Default for EnvVars {
    fn default() -> Self {
        EnvVars::Merge(Vec::new())
    }
}

/// What a root source contributes to a run, before the caller's own settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    /// The program, when the caller names none.
    pub argv: Vec<String>,
    pub env: EnvVars,
    pub cwd: Option<PathBuf>,
    /// uid and gid inside the sandbox.
    pub user: Option<(u32, u32)>,
    pub hostname: Option<String>,
    /// Replaces every limit.
    pub limits: Option<Limits>,
}

/// Limits the caller sets; `None` keeps what the defaults gave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    pub memory_bytes: Option<u64>,
    pub cpu_time: Option<Duration>,
    pub wall_time: Option<Duration>,
    pub pids: Option<u64>,
    pub output_bytes: Option<u64>,
    pub file_size_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
    pub open_files: Option<u64>,
}

/// The name of a `KEY=VALUE` variable.
fn var_name(kv: &str) -> &str {
    kv.split_once('=').map_or(kv, |(k, _)| k)
}

pub struct SpecBuilder {
    spec: Spec,
}

impl SpecBuilder {
    /// A spec with the core's defaults (limits, environment, user) on `rootfs`, no program.
    pub fn new(rootfs: RootFs) -> SpecBuilder {
        SpecBuilder {
            spec: Spec::new(rootfs, Vec::new()),
        }
    }

    pub fn defaults(mut self, d: &Defaults) -> SpecBuilder {
        if !d.argv.is_empty() {
            self.spec.argv = d.argv.clone();
        }
        match &d.env {
            EnvVars::Merge(vars) => {
                for kv in vars {
                    self = self.setenv(kv);
                }
            }
            EnvVars::Replace(vars) => self.spec.env = vars.clone(),
        }
        if let Some(cwd) = &d.cwd {
            self.spec.cwd = Some(cwd.clone());
        }
        if let Some((uid, gid)) = d.user {
            self.spec.uid = uid;
            self.spec.gid = gid;
        }
        if let Some(h) = &d.hostname {
            self.spec.hostname = h.clone();
        }
        if let Some(limits) = &d.limits {
            self.spec.limits = limits.clone();
        }
        self
    }

    /// The program; an empty `argv` keeps the defaults' one.
    pub fn command(mut self, argv: Vec<String>) -> SpecBuilder {
        if !argv.is_empty() {
            self.spec.argv = argv;
        }
        self
    }

    /// Sets `KEY=VALUE`, replacing a variable of the same name.
    pub fn setenv(mut self, kv: &str) -> SpecBuilder {
        let name = var_name(kv);
        self.spec.env.retain(|e| var_name(e) != name);
        self.spec.env.push(kv.to_string());
        self
    }

    pub fn limits(mut self, o: &LimitOverrides) -> SpecBuilder {
        let l = &mut self.spec.limits;
        for (slot, value) in [
            (&mut l.memory_bytes, o.memory_bytes),
            (&mut l.pids, o.pids),
            (&mut l.output_bytes, o.output_bytes),
            (&mut l.file_size_bytes, o.file_size_bytes),
            (&mut l.disk_bytes, o.disk_bytes),
            (&mut l.open_files, o.open_files),
        ] {
            if value.is_some() {
                *slot = value;
            }
        }
        for (slot, value) in [
            (&mut l.cpu_time, o.cpu_time),
            (&mut l.wall_time, o.wall_time),
        ] {
            if value.is_some() {
                *slot = value;
            }
        }
        self
    }

    pub fn files(mut self, files: impl IntoIterator<Item = FileIn>) -> SpecBuilder {
        self.spec.files.extend(files);
        self
    }

    pub fn stdin(mut self, stdin: Stdin) -> SpecBuilder {
        self.spec.stdin = stdin;
        self
    }

    pub fn cwd(mut self, cwd: PathBuf) -> SpecBuilder {
        self.spec.cwd = Some(cwd);
        self
    }

    /// Files to read back after the run, relative to the work directory.
    pub fn collect(mut self, paths: impl IntoIterator<Item = PathBuf>) -> SpecBuilder {
        self.spec.collect.extend(paths);
        self
    }

    /// The largest file `collect` reads back.
    pub fn collect_max_bytes(mut self, bytes: u64) -> SpecBuilder {
        self.spec.collect_max_bytes = bytes;
        self
    }

    /// The program as it stands (defaults, then the caller's).
    pub fn argv(&self) -> &[String] {
        &self.spec.argv
    }

    pub fn build(self) -> Spec {
        self.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> SpecBuilder {
        SpecBuilder::new(RootFs::Dir("/".into()))
    }

    #[test]
    fn defaults_then_the_callers_settings() {
        let d = Defaults {
            argv: vec!["/bin/true".into()],
            env: EnvVars::Merge(vec!["PATH=/opt/bin".into(), "FOO=1".into()]),
            cwd: Some("/app".into()),
            user: Some((1234, 99)),
            hostname: None,
            limits: None,
        };
        let spec = base().defaults(&d).build();
        assert_eq!(
            spec.env.iter().filter(|e| e.starts_with("PATH=")).count(),
            1
        );
        assert!(spec.env.contains(&"PATH=/opt/bin".to_string()));
        assert_eq!(spec.cwd, Some(PathBuf::from("/app")));
        assert_eq!((spec.uid, spec.gid), (1234, 99));
        assert_eq!(spec.argv, ["/bin/true"]);
        let spec = base()
            .defaults(&d)
            .command(vec!["x".into()])
            .setenv("FOO=2")
            .build();
        assert_eq!(spec.argv, ["x"]);
        assert!(spec.env.contains(&"FOO=2".to_string()) && !spec.env.contains(&"FOO=1".into()));
        // An empty command keeps the defaults' program.
        assert_eq!(base().defaults(&d).command(vec![]).argv(), ["/bin/true"]);
    }

    #[test]
    fn replaced_environment_and_limits() {
        let d = Defaults {
            env: EnvVars::Replace(vec!["ONLY=1".into()]),
            hostname: Some("box".into()),
            limits: Some(Limits::unlimited()),
            ..Defaults::default()
        };
        let spec = base()
            .defaults(&d)
            .limits(&LimitOverrides {
                pids: Some(7),
                cpu_time: Some(Duration::from_secs(1)),
                ..Default::default()
            })
            .build();
        assert_eq!(spec.env, ["ONLY=1"]);
        assert_eq!(spec.hostname, "box");
        assert_eq!(spec.limits.pids, Some(7));
        assert_eq!(spec.limits.cpu_time, Some(Duration::from_secs(1)));
        assert_eq!(spec.limits.memory_bytes, None, "kept from the defaults");
    }
}
