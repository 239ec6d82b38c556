//! OCI runtime bundles (`config.json` + `rootfs/`, as crun and runc take them): what sandpit
//! honours (process args, env, cwd, user, hostname, memory and pids limits) and what it
//! reports as unsupported instead of ignoring silently.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec as RuntimeSpec};
use sandbox::Limits;

use crate::runspec::{Defaults, EnvVars};

/// Mount destinations a default `crun spec` / `runc spec` config has; sandpit provides its
/// own equivalents, so these are not reported.
const DEFAULT_MOUNTS: [&str; 7] = [
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
];

/// What a bundle contributes to a run.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub rootfs: PathBuf,
    pub argv: Vec<String>,
    pub env: Option<Vec<String>>,
    pub cwd: Option<PathBuf>,
    pub uid: u32,
    pub gid: u32,
    pub hostname: Option<String>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// Fields of config.json that sandpit does not honour, one line each.
    pub unsupported: Vec<String>,
}

impl Bundle {
    /// What the bundle contributes to a run (before the user's own flags): its process, its
    /// hostname, and its memory and pids limits over the core's defaults.
    pub fn defaults(&self) -> Defaults {
        let limits = (self.memory_bytes.is_some() || self.pids.is_some()).then(|| {
            let d = Limits::default();
            Limits {
                memory_bytes: self.memory_bytes.or(d.memory_bytes),
                pids: self.pids.or(d.pids),
                ..d
            }
        });
        Defaults {
            argv: self.argv.clone(),
            env: match &self.env {
                Some(env) => EnvVars::Replace(env.clone()),
                None => EnvVars::default(),
            },
            cwd: self.cwd.clone(),
            user: Some((self.uid, self.gid)),
            hostname: self.hostname.clone(),
            limits,
        }
    }
}

/// Reads `DIR/config.json`.
pub fn load(dir: &Path) -> Result<Bundle, String> {
    let config = dir.join("config.json");
    let rs =
        RuntimeSpec::load(&config).map_err(|e| format!("--bundle {}: {e}", config.display()))?;
    let mut unsupported = Vec::new();
    let mut note = |field: &str, why: &str| unsupported.push(format!("{field}: {why}"));

    let root = rs
        .root()
        .as_ref()
        .ok_or_else(|| format!("--bundle {}: no root in config.json", dir.display()))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    if !rootfs.is_dir() {
        return Err(format!(
            "--bundle {}: root {} is not a directory",
            dir.display(),
            rootfs.display()
        ));
    }
    if root.readonly() == Some(false) {
        note(
            "root.readonly=false",
            "the root is always read-only (the work dir and /tmp are writable)",
        );
    }

    let mut b = Bundle {
        rootfs,
        argv: Vec::new(),
        env: None,
        cwd: None,
        uid: sandbox::DEFAULT_UID,
        gid: sandbox::DEFAULT_UID,
        hostname: rs.hostname().clone(),
        memory_bytes: None,
        pids: None,
        unsupported: Vec::new(),
    };
    if let Some(p) = rs.process() {
        b.argv = p.args().clone().unwrap_or_default();
        b.env = p.env().clone();
        if !p.cwd().as_os_str().is_empty() {
            b.cwd = Some(p.cwd().clone());
        }
        b.uid = p.user().uid();
        b.gid = p.user().gid();
        if p.user()
            .additional_gids()
            .as_ref()
            .is_some_and(|g| !g.is_empty())
        {
            note("process.user.additionalGids", "not supported");
        }
        if p.user().umask().is_some() {
            note("process.user.umask", "not supported");
        }
        if p.terminal() == Some(true) {
            note("process.terminal", "no terminal is given to the program");
        }
        if p.capabilities().is_some() {
            note(
                "process.capabilities",
                "all capabilities are always dropped",
            );
        }
        if p.rlimits().as_ref().is_some_and(|r| !r.is_empty()) {
            note(
                "process.rlimits",
                "use sandpit's limits (--file-size, --open-files, --time)",
            );
        }
        if p.apparmor_profile().is_some() || p.selinux_label().is_some() {
            note("process.apparmorProfile/selinuxLabel", "not supported");
        }
        if p.oom_score_adj().is_some() || p.scheduler().is_some() || p.io_priority().is_some() {
            note("process.oomScoreAdj/scheduler/ioPriority", "not supported");
        }
    } else {
        note("process", "missing: give the program after --");
    }
    if rs.hooks().is_some() {
        note("hooks", "hooks are never run");
    }
    for m in rs.mounts().iter().flatten() {
        let dest = m.destination().to_string_lossy();
        if !DEFAULT_MOUNTS.contains(&dest.as_ref()) {
            note(
                &format!("mounts[{dest}]"),
                "extra mounts are not supported (use --copy-in)",
            );
        }
    }
    if rs.domainname().is_some() {
        note("domainname", "not supported");
    }
    if let Some(linux) = rs.linux() {
        if let Some(res) = linux.resources() {
            if let Some(mem) = res.memory() {
                if let Some(limit) = mem.limit().filter(|l| *l > 0) {
                    b.memory_bytes = Some(limit as u64);
                }
                if mem.swap().is_some() || mem.reservation().is_some() || mem.kernel().is_some() {
                    note(
                        "linux.resources.memory (swap/reservation/kernel)",
                        "only limit is honoured; swap is counted in it",
                    );
                }
            }
            if let Some(p) = res.pids() {
                if p.limit() > 0 {
                    b.pids = Some(p.limit() as u64);
                }
            }
            if res.cpu().is_some() {
                note("linux.resources.cpu", "not supported (use --time)");
            }
            if res.block_io().is_some()
                || res.hugepage_limits().is_some()
                || res.network().is_some()
                || res.rdma().is_some()
                || res.unified().is_some()
            {
                note(
                    "linux.resources (blockIO/hugepages/network/rdma/unified)",
                    "not supported",
                );
            }
            // A device cgroup that only denies everything is what sandpit does anyway.
            if res
                .devices()
                .iter()
                .flatten()
                .any(|d| d.allow() || d.typ().is_some() || d.major().is_some())
            {
                note(
                    "linux.resources.devices",
                    "not supported (the sandbox has a fixed minimal /dev)",
                );
            }
        }
        for ns in linux.namespaces().iter().flatten() {
            if ns.path().is_some() {
                note(
                    &format!("linux.namespaces[{:?}].path", ns.typ()),
                    "joining existing namespaces is not supported",
                );
            }
        }
        let kinds: Vec<LinuxNamespaceType> = linux
            .namespaces()
            .iter()
            .flatten()
            .map(|n| n.typ())
            .collect();
        if !kinds.contains(&LinuxNamespaceType::Network) {
            note(
                "linux.namespaces",
                "no network namespace asked for, but the sandbox always has its own",
            );
        }
        if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
            note("linux.devices", "not supported");
        }
        if linux.seccomp().is_some() {
            note(
                "linux.seccomp",
                "sandpit's own seccomp policy applies instead",
            );
        }
        if linux.uid_mappings().is_some() || linux.gid_mappings().is_some() {
            note("linux.uidMappings/gidMappings", "sandpit maps ids itself");
        }
        if linux.sysctl().as_ref().is_some_and(|s| !s.is_empty()) {
            note("linux.sysctl", "not supported");
        }
        if linux.cgroups_path().is_some() {
            note("linux.cgroupsPath", "sandpit places its cgroups itself");
        }
        if linux.intel_rdt().is_some()
            || linux.personality().is_some()
            || linux.time_offsets().is_some()
        {
            note("linux.intelRdt/personality/timeOffsets", "not supported");
        }
    }
    b.unsupported = unsupported;
    Ok(b)
}
