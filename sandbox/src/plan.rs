//! Everything the child needs, prepared by the parent before clone: after clone the child may
//! not allocate (another thread of the parent may have held the allocator's lock), so every
//! string, array and filter is built here.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::rlimits::Rlimit;
use crate::rootfs::{inside_path, RootPlan};
use crate::seccomp::CompiledPolicy;
use crate::spec::Spec;

/// The messages the child side sends on the report socket (16 bytes each).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Report {
    pub kind: u32,
    pub a: i32,
    pub b: i64,
}

pub const REPORT_STEP_FAILED: u32 = 1; // a = step index, b = errno
pub const REPORT_READY: u32 = 2; // mounts done; waiting for the files to be copied in
pub const REPORT_STARTED: u32 = 3; // b = CLOCK_MONOTONIC ns just before the program's fork
pub const REPORT_PROGRAM_FAILED: u32 = 4; // a = stage, b = errno (before exec)
pub const REPORT_SECCOMP_FD: u32 = 5; // carries the listener fd (SCM_RIGHTS)
pub const REPORT_EXITED: u32 = 6; // a = wait status, b = CLOCK_MONOTONIC ns at reaping

/// Stages of the program's own setup, for REPORT_PROGRAM_FAILED.
pub const STAGE_STDIO: i32 = 1;
pub const STAGE_RLIMITS: i32 = 2;
pub const STAGE_CAPS: i32 = 3;
pub const STAGE_IDS: i32 = 4;
pub const STAGE_CWD: i32 = 5;
pub const STAGE_NO_NEW_PRIVS: i32 = 6;
pub const STAGE_SECCOMP: i32 = 7;
pub const STAGE_EXEC: i32 = 8;
pub const STAGE_FORK: i32 = 9;

pub fn stage_name(stage: i32) -> &'static str {
    match stage {
        STAGE_STDIO => "setting up stdin/stdout/stderr",
        STAGE_RLIMITS => "setting rlimits",
        STAGE_CAPS => "dropping capabilities",
        STAGE_IDS => "switching to the sandbox uid/gid",
        STAGE_CWD => "changing to the working directory",
        STAGE_NO_NEW_PRIVS => "setting no_new_privs",
        STAGE_SECCOMP => "installing the seccomp filter",
        STAGE_EXEC => "executing the program",
        STAGE_FORK => "starting the program's process",
        _ => "setting up the program",
    }
}

/// A BPF program in the form seccomp(2) takes.
pub struct Filter {
    pub prog: libc::sock_fprog,
}

impl Filter {
    fn new(insns: &[seccompiler::sock_filter]) -> Self {
        Filter {
            prog: libc::sock_fprog {
                len: insns.len() as u16,
                // Same layout: both are the kernel's struct sock_filter.
                filter: insns.as_ptr() as *mut libc::sock_filter,
            },
        }
    }
}

/// The child's whole plan. Raw pointers point into the owned vectors next to them.
pub struct ChildPlan<'a> {
    pub root: RootPlan,
    /// Send REPORT_READY after the mounts and wait for a go-ahead (files to copy in).
    pub wait_for_files: bool,
    /// Paths to try for execve, in order (PATH lookup done beforehand).
    pub exec_paths: Vec<CString>,
    _argv: Vec<CString>,
    pub argv: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    pub envp: Vec<*const libc::c_char>,
    pub cwd: CString,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub rlimits: Vec<Rlimit>,
    pub last_cap: u8,
    pub prelude: Filter,
    pub enosys: Filter,
    pub deny: Filter,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// The child's end of the report socket.
    pub report: RawFd,
    /// The stack the program's process runs on until it execs (it shares init's memory).
    pub program_stack: Vec<u8>,
    _policy: &'a CompiledPolicy,
}

fn cstring(text: &str, what: &str) -> Result<CString, Error> {
    CString::new(text).map_err(|_| Error::InvalidSpec(format!("{what} contains a NUL byte")))
}

/// The candidates for execve: argv[0] itself when it has a slash, else each PATH entry.
fn exec_candidates(spec: &Spec) -> Result<Vec<CString>, Error> {
    let program = &spec.argv[0];
    if program.contains('/') {
        return Ok(vec![cstring(program, "the program path")?]);
    }
    let path = spec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| cstring(&format!("{}/{program}", d.trim_end_matches('/')), "PATH"))
        .collect()
}

pub struct Fds {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub report: RawFd,
}

impl<'a> ChildPlan<'a> {
    pub fn new(
        spec: &Spec,
        root: RootPlan,
        policy: &'a CompiledPolicy,
        rlimits: Vec<Rlimit>,
        last_cap: u8,
        fds: Fds,
    ) -> Result<Self, Error> {
        if spec.argv.is_empty() || spec.argv[0].is_empty() {
            return Err(Error::InvalidSpec("no program given".into()));
        }
        let argv_store: Vec<CString> = spec
            .argv
            .iter()
            .map(|a| cstring(a, "an argument"))
            .collect::<Result<_, _>>()?;
        for e in &spec.env {
            if !e.contains('=') || e.starts_with('=') {
                return Err(Error::InvalidSpec(format!(
                    "environment entry '{e}' is not KEY=VALUE"
                )));
            }
        }
        let env_store: Vec<CString> = spec
            .env
            .iter()
            .map(|e| cstring(e, "an environment variable"))
            .collect::<Result<_, _>>()?;
        let argv = argv_store
            .iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp = env_store
            .iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let cwd = cwd_of(spec)?;
        Ok(ChildPlan {
            wait_for_files: !spec.files.is_empty(),
            exec_paths: exec_candidates(spec)?,
            _argv: argv_store,
            argv,
            _envp: env_store,
            envp,
            cwd: CString::new(cwd.as_os_str().as_bytes())
                .map_err(|_| Error::InvalidSpec("cwd contains a NUL byte".into()))?,
            uid: spec.uid,
            gid: spec.gid,
            rlimits,
            last_cap,
            prelude: Filter::new(&policy.prelude),
            enosys: Filter::new(&policy.enosys),
            deny: Filter::new(&policy.deny),
            stdin: fds.stdin,
            stdout: fds.stdout,
            stderr: fds.stderr,
            report: fds.report,
            program_stack: vec![0; 256 << 10],
            root,
            _policy: policy,
        })
    }
}

/// The working directory: the spec's (absolute, or relative to the work directory).
pub fn cwd_of(spec: &Spec) -> Result<PathBuf, Error> {
    let workdir = inside_path(&spec.workdir, "work directory")?;
    match &spec.cwd {
        None => Ok(workdir),
        Some(c) if c.is_absolute() => inside_path(c, "cwd"),
        Some(c) => inside_path(&Path::new(&workdir).join(c), "cwd"),
    }
}
