//! The root filesystem of a run, as a list of explicit steps prepared before clone and
//! executed by the child (bubblewrap-style: every mount spelled out).
//!
//! Layout inside: the image or directory read-only at `/`, a fresh `/proc` (sensitive files
//! masked, `/proc/sys` read-only), a minimal read-only `/dev` (null, zero, full, random,
//! urandom, the fd links, a private `/dev/shm`), and `/tmp` and the work directory as
//! size-limited tmpfs. The old root is detached after `pivot_root`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::spec::EnvSpec;

/// The host's devices bound into every sandbox's `/dev`.
pub(crate) const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

/// One step of the child's setup.
#[derive(Clone, Serialize, Deserialize)]
pub enum Step {
    /// Attaches a detached mount the engine made (the root filesystem) at `target`.
    Attach {
        fd: std::os::fd::RawFd,
        target: CString,
    },
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    Mkdir {
        path: CString,
        mode: libc::mode_t,
    },
    /// Creates an empty file to bind a device node onto.
    Touch {
        path: CString,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// chdir(new root); pivot_root(".", "."); umount2(".", MNT_DETACH); chdir("/").
    PivotRoot {
        new_root: CString,
    },
    Hostname {
        name: CString,
    },
    /// Enters a new cgroup namespace (its root: the run's cgroup).
    UnshareCgroupNs,
}

/// A step, what it does in words (for error messages), and whether failing it is fatal.
#[derive(Clone, Serialize, Deserialize)]
pub struct PlannedStep {
    pub step: Step,
    /// Stays with the engine: the spawner and init need only the step.
    #[serde(skip)]
    pub what: String,
    /// Optional steps may fail with ENOENT (a masked /proc file this kernel lacks).
    pub optional: bool,
}

fn cstr(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidSpec(format!("path {} contains a NUL byte", path.display())))
}

fn cs(text: &str) -> CString {
    // Only called with literals and numbers we format ourselves: no NUL inside.
    CString::new(text).unwrap_or_default()
}

/// A path inside the sandbox, checked: absolute, normal, no `..`.
pub fn inside_path(path: &Path, what: &str) -> Result<PathBuf, Error> {
    if !path.is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "{what} {} must be an absolute path",
            path.display()
        )));
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            _ => {
                return Err(Error::InvalidSpec(format!(
                    "{what} {} may not contain '..'",
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}

/// Joins an absolute path inside the sandbox onto the new root on the host side.
fn under(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}

/// Everything the child mounts, in order.
#[derive(Clone, Serialize, Deserialize)]
pub struct RootPlan {
    pub steps: Vec<PlannedStep>,
}

struct Builder {
    steps: Vec<PlannedStep>,
}

impl Builder {
    fn push(&mut self, step: Step, what: String) {
        self.steps.push(PlannedStep {
            step,
            what,
            optional: false,
        });
    }

    fn optional(&mut self, step: Step, what: String) {
        self.steps.push(PlannedStep {
            step,
            what,
            optional: true,
        });
    }

    fn mount(
        &mut self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<String>,
        what: String,
    ) -> Result<(), Error> {
        let step = Step::Mount {
            source: source.map(cs),
            target: cstr(target)?,
            fstype: fstype.map(cs),
            flags,
            data: data.map(|d| CString::new(d).unwrap_or_default()),
        };
        self.push(step, what);
        Ok(())
    }

    fn bind_source(&mut self, source: &Path, target: &Path, what: String) -> Result<(), Error> {
        let step = Step::Mount {
            source: Some(cstr(source)?),
            target: cstr(target)?,
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
        };
        self.push(step, what);
        Ok(())
    }

    fn mkdir(&mut self, path: &Path, mode: libc::mode_t) -> Result<(), Error> {
        let what = format!("creating directory {}", path.display());
        self.push(
            Step::Mkdir {
                path: cstr(path)?,
                mode,
            },
            what,
        );
        Ok(())
    }
}

/// Options shared by the planning of every run of a `Sandbox`.
pub struct RootOptions<'a> {
    /// The root filesystem, a detached read-only mount the engine made (see `root_mount`).
    pub root_fd: std::os::fd::RawFd,
    /// An empty host directory on which the child attaches the root filesystem.
    pub stage_dir: &'a Path,
    /// An empty host directory over which the child mounts its scratch tmpfs; it goes with the
    /// old root at pivot_root.
    pub scratch_dir: &'a Path,
    /// Whether the child enters its cgroup namespace itself (cgroup v1).
    pub unshare_cgroupns: bool,
}

/// The directories the root filesystem must have to mount on: /proc, /dev, /tmp and the work
/// directory (with its parents). The engine provides them in a layer of their own.
pub fn mount_points(workdir: &Path) -> Vec<PathBuf> {
    let mut points = vec![
        PathBuf::from("/proc"),
        PathBuf::from("/dev"),
        PathBuf::from("/tmp"),
    ];
    let mut prefix = PathBuf::from("/");
    for c in workdir.components().skip(1) {
        prefix.push(c);
        points.push(prefix.clone());
    }
    points
}

/// Plans the root filesystem of `spec`.
pub fn plan(spec: &EnvSpec, opts: &RootOptions) -> Result<RootPlan, Error> {
    let workdir = inside_path(&spec.workdir, "work directory")?;
    if workdir == Path::new("/") || workdir.starts_with("/proc") || workdir.starts_with("/dev") {
        return Err(Error::InvalidSpec(format!(
            "work directory {} is not allowed",
            workdir.display()
        )));
    }
    let mut b = Builder { steps: Vec::new() };
    // Nothing of what follows may propagate back to the host.
    b.mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
        "making / private".into(),
    )?;
    // The root: overlayfs over the image's layers (or the directory) and the mount points,
    // read-only, made by the engine; the host paths behind it are not visible inside.
    let root = opts.stage_dir.to_path_buf();
    b.push(
        Step::Attach {
            fd: opts.root_fd,
            target: cstr(&root)?,
        },
        "attaching the root filesystem".into(),
    );
    b.mount(
        Some("sandpit"),
        opts.scratch_dir,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("size=4k,mode=0755".into()),
        "mounting the scratch tmpfs".into(),
    )?;

    let disk = spec
        .disk_bytes
        .map(|d| format!(",size={d}"))
        .unwrap_or_default();

    // /proc: fresh, for this pid namespace.
    let proc_dir = root.join("proc");
    b.mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
        "mounting /proc".into(),
    )?;
    // Masked as runc masks them, and read-only: a file is covered by a read-only bind of an
    // empty regular file (reads return nothing, writes fail with EROFS; a read-only bind of
    // /dev/null would still take writes: a device ignores the mount's read-only flag), a
    // directory by an empty read-only tmpfs. A bind takes its source mount's flags, so one
    // read-only mount of each serves every mask: one mount per masked path. Each mask is
    // optional: a kernel may lack any of them.
    let masked_ro = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let empty = opts.scratch_dir.join("empty");
    b.push(
        Step::Touch {
            path: cstr(&empty)?,
        },
        "creating the empty file /proc masks are bound from".into(),
    );
    b.bind_source(&empty, &empty, "binding the empty file onto itself".into())?;
    b.mount(
        None,
        &empty,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | masked_ro,
        None,
        "making the empty file's mount read-only".into(),
    )?;
    for f in [
        "kcore",
        "keys",
        "timer_list",
        "timer_stats",
        "sched_debug",
        "latency_stats",
        "sysrq-trigger",
    ] {
        b.optional(
            Step::Mount {
                source: Some(cstr(&empty)?),
                target: cstr(&proc_dir.join(f))?,
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
            },
            format!("masking /proc/{f}"),
        );
    }
    let empty_dir = opts.scratch_dir.join("empty-dir");
    b.mkdir(&empty_dir, 0o555)?;
    b.mount(
        Some("tmpfs"),
        &empty_dir,
        Some("tmpfs"),
        masked_ro,
        Some("mode=0555".into()),
        "mounting the empty read-only tmpfs /proc directories are masked with".into(),
    )?;
    for d in ["acpi", "asound", "scsi"] {
        b.optional(
            Step::Mount {
                source: Some(cstr(&empty_dir)?),
                target: cstr(&proc_dir.join(d))?,
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
            },
            format!("masking /proc/{d}"),
        );
    }
    let proc_sys = proc_dir.join("sys");
    b.bind_source(&proc_sys, &proc_sys, "binding /proc/sys".into())?;
    b.mount(
        None,
        &proc_sys,
        None,
        libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        None,
        "making /proc/sys read-only".into(),
    )?;

    // /dev: a small tmpfs with the harmless devices bound from the host.
    let dev = root.join("dev");
    b.mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("size=64k,mode=0755".into()),
        "mounting /dev".into(),
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        b.push(
            Step::Touch {
                path: cstr(&target)?,
            },
            format!("creating /dev/{name}"),
        );
        b.bind_source(
            &Path::new("/dev").join(name),
            &target,
            format!("binding /dev/{name}"),
        )?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        b.push(
            Step::Symlink {
                target: cs(target),
                link: cstr(&dev.join(link))?,
            },
            format!("linking /dev/{link}"),
        );
    }
    let shm = dev.join("shm");
    b.mkdir(&shm, 0o755)?;
    b.mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(format!("mode=1777{disk}")),
        "mounting /dev/shm".into(),
    )?;
    b.mount(
        None,
        &dev,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("size=64k,mode=0755".into()),
        "making /dev read-only".into(),
    )?;

    // The writable places: /tmp and the work directory.
    b.mount(
        Some("tmpfs"),
        &root.join("tmp"),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(format!("mode=1777{disk}")),
        "mounting /tmp".into(),
    )?;
    b.mount(
        Some("tmpfs"),
        &under(&root, &workdir),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(format!("mode=0755,uid={},gid={}{disk}", spec.uid, spec.gid)),
        format!("mounting the work directory {}", workdir.display()),
    )?;

    let hostname = CString::new(spec.hostname.as_bytes())
        .map_err(|_| Error::InvalidSpec("hostname contains a NUL byte".into()))?;
    if spec.hostname.is_empty() || spec.hostname.len() > 64 {
        return Err(Error::InvalidSpec("hostname must be 1 to 64 bytes".into()));
    }
    b.push(
        Step::Hostname { name: hostname },
        "setting the hostname".into(),
    );
    b.push(
        Step::PivotRoot {
            new_root: cstr(&root)?,
        },
        "pivot_root into the new root".into(),
    );
    if opts.unshare_cgroupns {
        b.push(
            Step::UnshareCgroupNs,
            "entering a new cgroup namespace".into(),
        );
    }
    Ok(RootPlan { steps: b.steps })
}

#[cfg(test)]
mod tests;
