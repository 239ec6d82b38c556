//! Per-process limits (setrlimit) derived from the spec, prepared before clone.

use crate::error::Error;
use crate::spec::Limits;

/// One resource limit to set in the program's process (soft = hard).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub value: libc::rlim_t,
}

/// The rlimits of a run. CPU time is enforced from the cgroup by the supervisor; RLIMIT_CPU
/// is only a backstop a second later, in case the supervisor itself is stalled. A limit asked
/// for above what this host lets the engine set is the caller's error, said before anything
/// runs.
pub fn for_limits(limits: &Limits) -> Result<Vec<Rlimit>, Error> {
    let mut out = vec![
        Rlimit {
            resource: libc::RLIMIT_CORE,
            value: 0,
        },
        // Kernel memory a program may pin in queued signals and POSIX message queues: its
        // own quota (the sandbox's user), kept small.
        at_most(libc::RLIMIT_SIGPENDING, 4096),
        at_most(libc::RLIMIT_MSGQUEUE, 1 << 20),
    ];
    let asked = [
        (
            libc::RLIMIT_FSIZE,
            limits.file_size_bytes,
            "file_size_bytes",
        ),
        (libc::RLIMIT_NOFILE, limits.open_files, "open_files"),
        (libc::RLIMIT_STACK, limits.stack_bytes, "stack_bytes"),
    ];
    for (resource, value, name) in asked {
        let Some(value) = value else { continue };
        let hard = hard_limit(resource);
        if value > hard {
            return Err(Error::InvalidSpec(format!(
                "{name} {value} is above what this host allows ({hard})"
            )));
        }
        out.push(Rlimit { resource, value });
    }
    if let Some(cpu) = limits.cpu_time {
        out.push(at_most(libc::RLIMIT_CPU, cpu.as_secs().saturating_add(2)));
    }
    Ok(out)
}

/// The engine's own hard limit of `resource`: raising a limit above it needs
/// CAP_SYS_RESOURCE, which the engine may not have.
fn hard_limit(resource: libc::__rlimit_resource_t) -> libc::rlim_t {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: getrlimit fills a live struct.
    unsafe { libc::getrlimit(resource, &mut current) };
    current.rlim_max
}

/// `value`, or the engine's own hard limit when that is lower.
fn at_most(resource: libc::__rlimit_resource_t, value: libc::rlim_t) -> Rlimit {
    Rlimit {
        resource,
        value: value.min(hard_limit(resource)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_above_the_hosts_are_refused_and_ceilings_are_clamped() {
        let mut l = Limits::unlimited();
        l.open_files = Some(u64::MAX - 1);
        assert!(matches!(for_limits(&l), Err(Error::InvalidSpec(m)) if m.contains("open_files")));
        let l = Limits::default();
        let set = for_limits(&l).unwrap();
        let nofile = set
            .iter()
            .find(|r| r.resource == libc::RLIMIT_NOFILE)
            .unwrap();
        assert_eq!(nofile.value, 256);
        let core = set
            .iter()
            .find(|r| r.resource == libc::RLIMIT_CORE)
            .unwrap();
        assert_eq!(core.value, 0);
        for r in &set {
            assert!(r.value <= hard_limit(r.resource));
        }
    }
}
