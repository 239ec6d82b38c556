//! Per-process limits (setrlimit) derived from the spec, prepared before clone.

use crate::spec::Limits;

/// One resource limit to set in the program's process (soft = hard).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub value: libc::rlim_t,
}

/// The rlimits of a run. CPU time is enforced from the cgroup by the supervisor; RLIMIT_CPU
/// is only a backstop a second later, in case the supervisor itself is stalled.
pub fn for_limits(limits: &Limits) -> Vec<Rlimit> {
    let mut out = vec![Rlimit {
        resource: libc::RLIMIT_CORE,
        value: 0,
    }];
    if let Some(bytes) = limits.file_size_bytes {
        out.push(Rlimit {
            resource: libc::RLIMIT_FSIZE,
            value: bytes,
        });
    }
    if let Some(n) = limits.open_files {
        out.push(Rlimit {
            resource: libc::RLIMIT_NOFILE,
            value: n,
        });
    }
    if let Some(bytes) = limits.stack_bytes {
        out.push(Rlimit {
            resource: libc::RLIMIT_STACK,
            value: bytes,
        });
    }
    if let Some(cpu) = limits.cpu_time {
        out.push(Rlimit {
            resource: libc::RLIMIT_CPU,
            value: cpu.as_secs().saturating_add(2),
        });
    }
    out
}

/// Sets the prepared limits; returns the index of the first that failed and its errno.
/// Async-signal-safe.
pub fn apply(limits: &[Rlimit]) -> Result<(), (usize, i32)> {
    for (i, l) in limits.iter().enumerate() {
        let r = libc::rlimit {
            rlim_cur: l.value,
            rlim_max: l.value,
        };
        // SAFETY: valid pointer to an rlimit struct.
        if unsafe { libc::setrlimit(l.resource, &r) } != 0 {
            return Err((i, crate::sys::errno()));
        }
    }
    Ok(())
}
