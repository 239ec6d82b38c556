//! Everything the child side needs, prepared by the engine: after clone the child may not
//! allocate (another thread of the engine may have held the allocator's lock), so every string,
//! array and filter is built here.
//!
//! Two plans, as go-judge separates an environment from the process run in it:
//! - [`EnvPlan`]: how init builds the sandbox (mounts, hostname, …). Built before clone3; init
//!   gets its own copy of it with the rest of the engine's memory.
//! - [`ProgramPlan`]: what to run (argv, environment, cwd, ids, rlimits). Written later, when the
//!   program is known, into an [`Arena`]: a slot of a shared mapping made when the engine
//!   starts, so that the engine's writes are visible to init at the same addresses.

use std::ffi::{c_char, CString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::report::MAX_FDS;
use crate::rlimits::Rlimit;
use crate::rootfs::{inside_path, RootPlan};
use crate::seccomp::Filter;
use crate::spec::Spec;

/// How init builds the sandbox. Raw pointers point into memory that init's copy keeps alive.
pub struct EnvPlan {
    pub root: RootPlan,
    /// The root filesystem as a detached mount (see `root_mount`).
    pub root_fd: RawFd,
    /// The child's end of the report socket.
    pub report: RawFd,
    /// Where the engine writes each program's plan.
    pub program: *const ProgramPlan,
    pub consts: InitConsts,
}

/// What every init of an engine shares, known once the engine has started: the same in the
/// engine and in the spawner forked from it.
#[derive(Clone, Copy)]
pub struct InitConsts {
    pub last_cap: u8,
    /// Point into the engine's compiled policy (and into the spawner's copy of it).
    pub filter: Filter,
    pub engine_image: EngineImage,
    /// The engine's arena region (see [`Arenas::bounds`]).
    pub arenas: (usize, usize),
    /// The stack (start, length) the program's process runs on until it execs: it shares
    /// init's memory, and each init has its own copy of this one, made for all at the start.
    pub program_stack: (usize, usize),
}

// SAFETY: the pointer in `filter` points into the engine's compiled policy, which is never
// written after it is compiled and lives as long as the engine; `program_stack` is used only
// by the program's process, in its init's copy. Any thread may hold and copy these values.
unsafe impl Send for InitConsts {}
// SAFETY: as above.
unsafe impl Sync for InitConsts {}

/// The bytes of [`InitConsts::program_stack`] a program's process may use.
pub const PROGRAM_STACK_BYTES: usize = 256 << 10;

/// Where the engine's command line and environment strings lie in its memory (and so in
/// init's copy of it): `[start, end)` of each, from /proc/self/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineImage {
    pub args: (usize, usize),
    pub environ: (usize, usize),
}

impl EngineImage {
    /// Reads this process's own.
    pub fn of_this_process() -> EngineImage {
        std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| EngineImage::parse(&stat))
            .unwrap_or_default()
    }

    /// Fields 48 to 51 of /proc/PID/stat, counted after the command name (which may hold
    /// spaces and parentheses: the last ')' ends it).
    fn parse(stat: &str) -> Option<EngineImage> {
        let rest = &stat[stat.rfind(')')? + 1..];
        // After ')' come fields 3, 4, …; field n is at index n - 3.
        let fields: Vec<usize> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let at = |n: usize| fields.get(n - 3).copied();
        Some(EngineImage {
            args: (at(48)?, at(49)?),
            environ: (at(50)?, at(51)?),
        })
    }
}

/// Most rlimits a program gets.
pub const MAX_RLIMITS: usize = 8;

/// What to run. Lives in the arena; every pointer points into the arena.
#[repr(C)]
pub struct ProgramPlan {
    /// NULL-terminated.
    pub argv: *const *const c_char,
    /// NULL-terminated, `KEY=VALUE`.
    pub envp: *const *const c_char,
    /// Paths to try for execve, in order (the PATH lookup done beforehand); NULL-terminated.
    pub exec_paths: *const *const c_char,
    pub cwd: *const c_char,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub rlimits: [Rlimit; MAX_RLIMITS],
    pub n_rlimits: usize,
    /// Where the read-only binds that come with `Run` go, in order; NULL-terminated.
    pub binds: *const *const c_char,
    /// The first `n_fds` descriptors that come with `Run` become these fds of the program
    /// (0, 1 and 2 first; then pipes of a group); the rest are the binds.
    pub fd_targets: [i32; MAX_FDS],
    pub n_fds: usize,
}

/// Bytes of argv, environment and paths one program may have (Linux's own ARG_MAX is 2 MiB
/// with the default stack limit).
pub const ARENA_BYTES: usize = 4 << 20;

/// One shared anonymous mapping of every arena an engine may use at once, made when the engine
/// starts: a process forked from the engine afterwards (the spawner, and every init) sees each
/// arena at the same address, so the pointers the engine writes are valid there too.
pub struct Arenas {
    region: Arc<Region>,
}

struct Region {
    base: *mut u8,
    slots: usize,
    free: Mutex<Vec<usize>>,
}

// SAFETY: the mapping is plain memory owned by the region; each arena is written by one owner
// only (see `Arena`), and `free` is behind a lock.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Arenas {
    /// Maps `slots` arenas (address space only: a page is backed once written).
    pub fn new(slots: usize) -> std::io::Result<Arenas> {
        let len = slots
            .checked_mul(ARENA_BYTES)
            .filter(|_| slots > 0)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Arenas {
            region: Arc::new(Region {
                base: base as *mut u8,
                slots,
                // Lowest first: the end of the list is taken first.
                free: Mutex::new((0..slots).rev().collect()),
            }),
        })
    }

    /// Where the region lies: (start, length in bytes).
    pub fn bounds(&self) -> (usize, usize) {
        (self.region.base as usize, self.region.slots * ARENA_BYTES)
    }

    /// A free arena, or an error when every one is in use (that many sandboxes exist).
    pub fn take(&self) -> Result<Arena, Error> {
        let index = self
            .region
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .ok_or_else(|| {
                Error::SandboxFailed(
                    "every program arena is in use: too many sandboxes exist at once".into(),
                )
            })?;
        Ok(Arena {
            // SAFETY: index < slots, so the arena lies inside the mapping.
            base: unsafe { self.region.base.add(index * ARENA_BYTES) },
            len: ARENA_BYTES,
            index,
            region: self.region.clone(),
        })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value made; no arena is left (each holds
        // the region), and inits keep their own reference.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.slots * ARENA_BYTES) };
    }
}

/// One program's arena, owned by one sandbox: the engine writes it only before telling init
/// to read it (the socket message orders the two).
pub struct Arena {
    base: *mut u8,
    len: usize,
    index: usize,
    region: Arc<Region>,
}

// SAFETY: see `Arena`: one owner writes, init reads only after the owner's message.
unsafe impl Send for Arena {}
// SAFETY: as above; `&Arena` gives no write access.
unsafe impl Sync for Arena {}

impl Arena {
    /// Where the program plan lives (the start of the arena).
    pub fn plan(&self) -> *const ProgramPlan {
        self.base as *const ProgramPlan
    }

    /// Lays out the program of `spec` in the arena, replacing what was there. `binds` are the
    /// inside paths of its read-only binds, in the order their descriptors travel.
    pub fn write_program(
        &self,
        spec: &Spec,
        rlimits: &[Rlimit],
        fd_targets: &[i32],
        binds: &[PathBuf],
    ) -> Result<(), Error> {
        if fd_targets.len() + binds.len() > MAX_FDS {
            return Err(Error::InvalidSpec(format!(
                "at most {MAX_FDS} descriptors and read-only binds per program"
            )));
        }
        let mut targets = [-1; MAX_FDS];
        targets[..fd_targets.len()].copy_from_slice(fd_targets);
        let program = ProgramParts::new(spec)?;
        if rlimits.len() > MAX_RLIMITS {
            return Err(Error::InvalidSpec("too many rlimits".into()));
        }
        let mut w = Writer {
            arena: self,
            used: std::mem::size_of::<ProgramPlan>(),
        };
        let argv = w.strings(&program.argv)?;
        let envp = w.strings(&program.env)?;
        let exec_paths = w.strings(&program.exec_paths)?;
        let cwd = w.bytes(program.cwd.as_bytes_with_nul())? as *const c_char;
        let bind_targets = binds
            .iter()
            .map(|b| {
                CString::new(b.as_os_str().as_bytes())
                    .map_err(|_| Error::InvalidSpec("a file path contains a NUL byte".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let binds = w.strings(&bind_targets)?;
        let mut fixed = [Rlimit {
            resource: 0,
            value: 0,
        }; MAX_RLIMITS];
        fixed[..rlimits.len()].copy_from_slice(rlimits);
        let plan = ProgramPlan {
            argv,
            envp,
            exec_paths,
            cwd,
            uid: spec.uid,
            gid: spec.gid,
            rlimits: fixed,
            n_rlimits: rlimits.len(),
            binds,
            fd_targets: targets,
            n_fds: fd_targets.len(),
        };
        // SAFETY: the arena starts page-aligned and is larger than a ProgramPlan; nothing else
        // writes it while the engine does (init reads it only after the Run message).
        unsafe { std::ptr::write(self.base as *mut ProgramPlan, plan) };
        Ok(())
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // Nothing of this program's arguments stays behind for the next owner, and the pages
        // go back to the system.
        // SAFETY: punches out exactly this arena's pages of the shared mapping; the sandbox
        // that used it is over (its program exec'd or never started).
        unsafe { libc::madvise(self.base as *mut libc::c_void, self.len, libc::MADV_REMOVE) };
        let mut free = self.region.free.lock().unwrap_or_else(|p| p.into_inner());
        free.push(self.index);
    }
}

/// A bump writer into the arena.
struct Writer<'a> {
    arena: &'a Arena,
    used: usize,
}

impl Writer<'_> {
    fn reserve(&mut self, len: usize, align: usize) -> Result<*mut u8, Error> {
        let start = self.used.div_ceil(align) * align;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.arena.len)
            .ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "the program's arguments and environment take more than {} MiB",
                    ARENA_BYTES >> 20
                ))
            })?;
        self.used = end;
        // SAFETY: start..end lies inside the mapping (checked above).
        Ok(unsafe { self.arena.base.add(start) })
    }

    fn bytes(&mut self, data: &[u8]) -> Result<*const u8, Error> {
        let at = self.reserve(data.len(), 1)?;
        // SAFETY: `at` has room for data.len() bytes (reserve) and does not overlap `data`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), at, data.len()) };
        Ok(at)
    }

    /// Copies the strings and a NULL-terminated array of pointers to them.
    fn strings(&mut self, items: &[CString]) -> Result<*const *const c_char, Error> {
        let mut ptrs = Vec::with_capacity(items.len() + 1);
        for item in items {
            ptrs.push(self.bytes(item.as_bytes_with_nul())? as *const c_char);
        }
        ptrs.push(std::ptr::null());
        let size = ptrs.len() * std::mem::size_of::<*const c_char>();
        let at = self.reserve(size, std::mem::align_of::<*const c_char>())?;
        // SAFETY: `at` is aligned for pointers and has room for ptrs.len() of them.
        unsafe {
            std::ptr::copy_nonoverlapping(ptrs.as_ptr(), at as *mut *const c_char, ptrs.len())
        };
        Ok(at as *const *const c_char)
    }
}

/// The program's strings, checked.
struct ProgramParts {
    argv: Vec<CString>,
    env: Vec<CString>,
    exec_paths: Vec<CString>,
    cwd: CString,
}

fn cstring(text: &str, what: &str) -> Result<CString, Error> {
    CString::new(text).map_err(|_| Error::InvalidSpec(format!("{what} contains a NUL byte")))
}

impl ProgramParts {
    fn new(spec: &Spec) -> Result<Self, Error> {
        if spec.argv.is_empty() || spec.argv[0].is_empty() {
            return Err(Error::InvalidSpec("no program given".into()));
        }
        let argv = spec
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
        let env = spec
            .env
            .iter()
            .map(|e| cstring(e, "an environment variable"))
            .collect::<Result<_, _>>()?;
        let cwd = cwd_of(spec)?;
        Ok(ProgramParts {
            argv,
            env,
            exec_paths: exec_candidates(spec)?,
            cwd: CString::new(cwd.as_os_str().as_bytes())
                .map_err(|_| Error::InvalidSpec("cwd contains a NUL byte".into()))?,
        })
    }
}

/// Checks the program's argv, environment and cwd without laying them out.
pub fn check_program(spec: &Spec) -> Result<(), Error> {
    ProgramParts::new(spec).map(drop)
}

/// The candidates for execve: argv[0] itself when it has a slash, else each PATH entry.
pub fn exec_candidates(spec: &Spec) -> Result<Vec<CString>, Error> {
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

/// The working directory: the spec's (absolute, or relative to the work directory).
pub fn cwd_of(spec: &Spec) -> Result<PathBuf, Error> {
    let workdir = inside_path(&spec.workdir, "work directory")?;
    match &spec.cwd {
        None => Ok(workdir),
        Some(c) if c.is_absolute() => inside_path(c, "cwd"),
        Some(c) => inside_path(&Path::new(&workdir).join(c), "cwd"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RootFs;
    use std::ffi::CStr;

    fn spec(argv: &[&str]) -> Spec {
        Spec::new(
            RootFs::Dir("/".into()),
            argv.iter().map(|s| s.to_string()).collect(),
        )
    }

    /// Reads a NULL-terminated string array back.
    fn read(list: *const *const c_char) -> Vec<String> {
        let mut out = Vec::new();
        // SAFETY: the test reads what write_program laid out in a live arena.
        unsafe {
            let mut p = list;
            while !(*p).is_null() {
                out.push(CStr::from_ptr(*p).to_string_lossy().into_owned());
                p = p.add(1);
            }
        }
        out
    }

    #[test]
    fn the_engines_strings_are_found_in_its_stat() {
        let me = EngineImage::of_this_process();
        assert!(me.args.0 > 0 && me.args.0 < me.args.1, "{me:?}");
        assert!(me.environ.0 >= me.args.1, "{me:?}");
        let mut stat = "1 (a) b) c".to_string();
        for n in 4..=52 {
            stat.push_str(&format!(" {n}"));
        }
        let parsed = EngineImage::parse(&stat).unwrap();
        assert_eq!((parsed.args, parsed.environ), ((48, 49), (50, 51)));
        assert_eq!(EngineImage::parse("1 (a) 3 4"), None);
    }

    #[test]
    fn the_arena_holds_the_whole_program() {
        let arenas = Arenas::new(1).unwrap();
        let arena = arenas.take().unwrap();
        let mut s = spec(&["python3", "-c", "print(1)"]);
        s.env = vec!["PATH=/usr/bin:relative:/bin/".into(), "A=b".into()];
        s.cwd = Some("sub".into());
        let limits = [Rlimit {
            resource: libc::RLIMIT_CORE,
            value: 0,
        }];
        arena
            .write_program(&s, &limits, &[0, 1, 2], &["/work/in".into()])
            .unwrap();
        // SAFETY: written just above.
        let plan = unsafe { &*arena.plan() };
        assert_eq!(read(plan.argv), ["python3", "-c", "print(1)"]);
        assert_eq!(read(plan.envp), ["PATH=/usr/bin:relative:/bin/", "A=b"]);
        assert_eq!(read(plan.exec_paths), ["/usr/bin/python3", "/bin/python3"]);
        // SAFETY: as above.
        let cwd = unsafe { CStr::from_ptr(plan.cwd) };
        assert_eq!(cwd.to_str().unwrap(), "/work/sub");
        assert_eq!((plan.uid, plan.n_rlimits), (1000, 1));
        assert_eq!(plan.rlimits[0], limits[0]);
        assert_eq!(read(plan.binds), ["/work/in"]);
        assert_eq!((plan.n_fds, &plan.fd_targets[..3]), (3, &[0, 1, 2][..]));
    }

    #[test]
    fn arenas_are_disjoint_and_come_back_empty() {
        let arenas = Arenas::new(2).unwrap();
        let a = arenas.take().unwrap();
        let b = arenas.take().unwrap();
        assert_eq!(b.plan() as usize - a.plan() as usize, ARENA_BYTES);
        assert!(matches!(arenas.take(), Err(Error::SandboxFailed(_))));
        a.write_program(&spec(&["/bin/true"]), &[], &[0, 1, 2], &[])
            .unwrap();
        let at = a.plan() as usize;
        drop(a);
        let again = arenas.take().unwrap();
        assert_eq!(again.plan() as usize, at);
        // SAFETY: reads the start of a live arena, as plain bytes.
        let first = unsafe { std::slice::from_raw_parts(at as *const u8, 4096) };
        assert!(
            first.iter().all(|b| *b == 0),
            "the last program's plan is still there"
        );
        // The region outlives the engine's handle while an arena is out.
        drop(arenas);
        again
            .write_program(&spec(&["/bin/true"]), &[], &[0, 1, 2], &[])
            .unwrap();
    }

    #[test]
    fn bad_programs_are_refused_before_anything_runs() {
        let arenas = Arenas::new(1).unwrap();
        let arena = arenas.take().unwrap();
        assert!(arena
            .write_program(&spec(&[]), &[], &[0, 1, 2], &[])
            .is_err());
        assert!(arena
            .write_program(&spec(&["a\0b"]), &[], &[0, 1, 2], &[])
            .is_err());
        let mut s = spec(&["true"]);
        s.env = vec!["NOEQUALS".into()];
        assert!(arena.write_program(&s, &[], &[0, 1, 2], &[]).is_err());
        s.env = vec![];
        s.cwd = Some("../escape".into());
        assert!(arena.write_program(&s, &[], &[0, 1, 2], &[]).is_err());
        let huge = "x".repeat(ARENA_BYTES);
        assert!(arena
            .write_program(&spec(&["true", &huge]), &[], &[0, 1, 2], &[])
            .is_err());
        // The arena is still usable after a refusal.
        arena
            .write_program(&spec(&["/bin/true"]), &[], &[0, 1, 2], &[])
            .unwrap();
        // SAFETY: written just above.
        assert_eq!(read(unsafe { (*arena.plan()).exec_paths }), ["/bin/true"]);
    }
}
