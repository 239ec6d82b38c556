//! What the engine needs from the host, checked in one place: [`crate::Sandbox::new`] refuses
//! to start on a host that fails a required check, and `sandpit doctor` prints every check.

use std::fs;
use std::path::Path;

use cgroups_rs::fs::hierarchies;

use crate::cgroup;
use crate::error::Error;

/// The oldest kernel sandpit is tested on (Debian 12's 6.1). Kernels from [`MIN_KERNEL`] on
/// have every feature the engine uses and run, with a warning from `sandpit doctor`.
pub const TESTED_KERNEL: (u32, u32) = (6, 1);
/// Older kernels lack a feature the engine uses and are refused.
pub const MIN_KERNEL: (u32, u32) = (5, 19);

/// The kernel features the engine relies on, with the release that brought each.
const FEATURES: &[(&str, (u32, u32))] = &[
    ("pidfd_send_signal", (5, 1)),
    ("clone3 with CLONE_PIDFD", (5, 3)),
    ("waitid(P_PIDFD)", (5, 4)),
    ("openat2", (5, 6)),
    ("clone3 with CLONE_INTO_CGROUP", (5, 7)),
    ("close_range", (5, 9)),
    ("overlayfs in user namespaces (userxattr)", (5, 11)),
    ("cgroup.kill", (5, 14)),
    ("cgroup v2 memory.peak", (5, 19)),
];

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// Fine as it is.
    Fine,
    /// Runs work, but something is worth knowing or changing.
    Warning,
    /// Runs fail (or would run without a limit they were given).
    Wrong,
}

/// One host check: what was looked at, what was found, how to fix it.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: CheckStatus,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn fine(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: CheckStatus::Fine,
            detail: detail.into(),
            fix: None,
        }
    }

    fn bad(
        name: &'static str,
        status: CheckStatus,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The running kernel's release string and (major, minor).
pub fn kernel_release() -> (String, (u32, u32)) {
    // SAFETY: a zeroed utsname is a valid out-parameter; uname fills NUL-terminated fields.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let release = if unsafe { libc::uname(&mut u) } == 0 {
        // SAFETY: the kernel NUL-terminated the field.
        unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    (release.clone(), parse_release(&release))
}

fn parse_release(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The kernel version against the features the engine uses.
pub fn kernel_check() -> Check {
    let (release, version) = kernel_release();
    kernel_check_of(&release, version)
}

fn kernel_check_of(release: &str, version: (u32, u32)) -> Check {
    let missing: Vec<String> = FEATURES
        .iter()
        .filter(|(_, since)| version < *since)
        .map(|(what, (a, b))| format!("{what} ({a}.{b})"))
        .collect();
    let (ta, tb) = TESTED_KERNEL;
    if !missing.is_empty() {
        Check::bad(
            "kernel",
            CheckStatus::Wrong,
            format!("Linux {release} lacks {}", missing.join(", ")),
            format!("boot Linux {ta}.{tb} or newer (Debian 12's own kernel is 6.1)"),
        )
    } else if version < TESTED_KERNEL {
        Check::bad(
            "kernel",
            CheckStatus::Warning,
            format!("Linux {release} has every feature sandpit uses, but is older than {ta}.{tb}, the oldest tested"),
            format!("boot Linux {ta}.{tb} or newer"),
        )
    } else {
        Check::fine("kernel", format!("Linux {release}"))
    }
}

/// seccomp user notification, asked of the kernel (`SECCOMP_GET_ACTION_AVAIL`).
pub fn seccomp_notify_check() -> Check {
    const SECCOMP_GET_ACTION_AVAIL: libc::c_ulong = 2;
    const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
    let action = SECCOMP_RET_USER_NOTIF;
    // SAFETY: the kernel reads one u32 from a live value.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if ret == 0 {
        Check::fine("seccomp user notification", "available")
    } else {
        Check::bad(
            "seccomp user notification",
            CheckStatus::Wrong,
            format!("unavailable: {}", std::io::Error::last_os_error()),
            "a kernel built with CONFIG_SECCOMP_FILTER, 5.0 or newer",
        )
    }
}

/// pidfds, asked of the kernel (`pidfd_open` on this process).
pub fn pidfd_check() -> Check {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if fd >= 0 {
        // SAFETY: closing the fd just opened.
        unsafe { libc::close(fd as i32) };
        Check::fine("pidfd", "available")
    } else {
        Check::bad(
            "pidfd",
            CheckStatus::Wrong,
            format!("pidfd_open failed: {}", std::io::Error::last_os_error()),
            "Linux 5.3 or newer",
        )
    }
}

/// The checks `Sandbox::new` requires; the first failure is the error.
pub(crate) fn require() -> Result<(), Error> {
    for check in [kernel_check(), seccomp_notify_check(), pidfd_check()] {
        if check.status == CheckStatus::Wrong {
            return Err(Error::Setup(format!(
                "{}: {}; {}",
                check.name,
                check.detail,
                check.fix.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn user_namespaces_check() -> Check {
    let max =
        read_trimmed("/proc/sys/user/max_user_namespaces").and_then(|v| v.parse::<u64>().ok());
    let apparmor = read_trimmed("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    match max {
        Some(0) => Check::bad(
            "user namespaces",
            CheckStatus::Wrong,
            "user.max_user_namespaces is 0",
            "sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d/)",
        ),
        None => Check::bad(
            "user namespaces",
            CheckStatus::Wrong,
            "the kernel has no user namespaces",
            "a kernel built with CONFIG_USER_NS",
        ),
        Some(n) => Check::fine(
            "user namespaces",
            match apparmor.as_deref() {
                Some("1") => format!(
                    "up to {n}; AppArmor restricts unprivileged user namespaces, which does not \
                     apply to sandpit (it runs as root)"
                ),
                _ => format!("up to {n}"),
            },
        ),
    }
}

fn overlay_check() -> Check {
    let listed = fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"));
    let module = Path::new("/sys/module/overlay").exists()
        || Path::new("/lib/modules")
            .join(kernel_release().0)
            .join("kernel/fs/overlayfs")
            .exists();
    if listed || module {
        Check::fine(
            "overlayfs in user namespaces",
            "overlay available (mounted with userxattr)",
        )
    } else {
        Check::bad(
            "overlayfs in user namespaces",
            CheckStatus::Wrong,
            "no overlay file system: image runs fail (directory root filesystems still work)",
            "modprobe overlay (a kernel built with CONFIG_OVERLAY_FS)",
        )
    }
}

fn cgroup_check(parent: Option<&Path>) -> (Check, Option<Check>) {
    if !hierarchies::is_cgroup2_unified_mode() {
        let missing: Vec<&str> = ["memory", "pids", "cpuacct"]
            .into_iter()
            .filter(|c| {
                !fs::read_to_string("/proc/cgroups")
                    .unwrap_or_default()
                    .lines()
                    .any(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.first() == Some(c) && f.get(3) == Some(&"1")
                    })
            })
            .collect();
        let version = if missing.is_empty() {
            Check::fine("cgroups", "v1 (memory, pids, cpuacct)")
        } else {
            Check::bad(
                "cgroups",
                CheckStatus::Wrong,
                format!("v1 without {}", missing.join(", ")),
                "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1), the default of Debian 12 and Ubuntu 22.04 on",
            )
        };
        return (version, None);
    }
    let version = Check::fine("cgroups", "v2 (unified)");
    let own = cgroup::own_v2_cgroup()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into());
    let placement = match cgroup::plan_v2(parent) {
        Ok(plan) => {
            let how = if plan.is_root {
                "the root cgroup: runs go right below it".to_string()
            } else if plan.move_self {
                format!(
                    "{}: the engine moves into its own leaf below it and enables memory and pids",
                    plan.base.display()
                )
            } else {
                format!("runs go below {}", plan.base.display())
            };
            Check::fine("cgroup delegation", format!("engine in {own}; {how}"))
        }
        Err(e) => Check::bad(
            "cgroup delegation",
            CheckStatus::Wrong,
            e.to_string(),
            "in a service: Delegate=yes; from a shell: systemd-run --scope -p Delegate=yes sandpit …, or --cgroup-parent",
        ),
    };
    (version, Some(placement))
}

fn swap_check() -> Check {
    let swap_on = fs::read_to_string("/proc/swaps")
        .map(|s| s.lines().count() > 1)
        .unwrap_or(false);
    if !swap_on {
        return Check::fine(
            "swap accounting",
            "no swap in use: memory limits cannot leak into swap",
        );
    }
    let accounted = if hierarchies::is_cgroup2_unified_mode() {
        Path::new(hierarchies::UNIFIED_MOUNTPOINT)
            .join("memory.swap.max")
            .exists()
            || cgroup::own_v2_cgroup().is_ok_and(|own| {
                Path::new(hierarchies::UNIFIED_MOUNTPOINT)
                    .join(own.strip_prefix("/").unwrap_or(&own))
                    .join("memory.swap.current")
                    .exists()
            })
    } else {
        Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
    };
    if accounted {
        Check::fine(
            "swap accounting",
            "swap is on and accounted: runs get no swap",
        )
    } else {
        Check::bad(
            "swap accounting",
            CheckStatus::Warning,
            "swap is on but not accounted per cgroup: a run can page out beyond its memory limit",
            "boot with swapaccount=1, or swapoff -a",
        )
    }
}

fn core_pattern_check() -> Check {
    let pattern = read_trimmed("/proc/sys/kernel/core_pattern").unwrap_or_default();
    if let Some(handler) = pattern.strip_prefix('|') {
        Check::bad(
            "core dumps",
            CheckStatus::Warning,
            format!(
                "core_pattern pipes to {handler}: the kernel starts it, as root on the host, for \
                 every crashing sandboxed program, even with a zero core size limit"
            ),
            "sysctl -w kernel.core_pattern=core (or make sure the handler is cheap and safe)",
        )
    } else {
        Check::fine(
            "core dumps",
            format!("core_pattern is {pattern:?}: no handler runs"),
        )
    }
}

fn root_check() -> Check {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Check::fine("privileges", "running as root")
    } else {
        Check::bad(
            "privileges",
            CheckStatus::Wrong,
            "not root",
            "run sandpit as root",
        )
    }
}

/// Every check, in the order `sandpit doctor` prints them. `cgroup_parent` as the engine
/// would be given it.
pub fn checks(cgroup_parent: Option<&Path>) -> Vec<Check> {
    let (cgroups, delegation) = cgroup_check(cgroup_parent);
    let mut all = vec![
        root_check(),
        kernel_check(),
        pidfd_check(),
        seccomp_notify_check(),
        user_namespaces_check(),
        overlay_check(),
        cgroups,
    ];
    all.extend(delegation);
    all.extend([swap_check(), core_pattern_check()]);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse() {
        assert_eq!(parse_release("6.1.0-56-amd64"), (6, 1));
        assert_eq!(parse_release("5.15.0-100-generic"), (5, 15));
        assert_eq!(parse_release("6.18.44-fc-v782"), (6, 18));
    }

    #[test]
    fn an_old_kernel_is_refused_naming_what_it_lacks() {
        let c = kernel_check_of("5.15.0-100-generic", (5, 15));
        assert_eq!(c.status, CheckStatus::Wrong);
        assert!(c.detail.contains("memory.peak (5.19)"), "{}", c.detail);
        assert!(!c.detail.contains("openat2"), "{}", c.detail);
        let c = kernel_check_of("5.4.0", (5, 4));
        assert!(c.detail.contains("openat2 (5.6)"), "{}", c.detail);
        assert_eq!(
            kernel_check_of("6.0.0", (6, 0)).status,
            CheckStatus::Warning
        );
        assert_eq!(
            kernel_check_of("6.1.0-56-amd64", (6, 1)).status,
            CheckStatus::Fine
        );
    }

    #[test]
    fn this_kernel_passes_the_start_checks() {
        require().unwrap();
    }
}
