//! The default seccomp policy (data: tables of syscalls), compiled with seccompiler.
//!
//! An allow-list, as Docker's default profile is: a syscall the policy does not know (a newer
//! one, say) fails with ENOSYS, so programs fall back to an older equivalent. Three filters are
//! installed, in this order:
//! 1. a prelude that kills the process on any syscall of another ABI (32-bit i386 through
//!    `int 0x80`, and x32, whose numbers carry bit 30): the tables are written for one ABI;
//! 2. `allow`: the allowed syscalls, plus the denied ones (filter 3 decides those: the kernel
//!    takes the strictest action of all filters, and ERRNO would hide a notification); every
//!    other syscall fails with ENOSYS (clone3 among them: its flags are in memory, where a
//!    filter cannot look, and libc falls back to clone);
//! 3. `deny`: the denied syscalls. They reach the supervisor as seccomp user notifications, so
//!    each attempt is counted and reported by name as kernel evidence, and the program gets
//!    EPERM.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::Error;

/// Syscall numbers: libc's, and the newer ones libc does not name yet (numbers from the
/// kernel's syscall tables; x86_64 and the generic table of aarch64 agree on them).
#[allow(non_upper_case_globals)]
mod nr {
    pub use libc::*;
    #[cfg(target_arch = "x86_64")]
    pub const SYS_io_pgetevents: i64 = 333;
    #[cfg(target_arch = "aarch64")]
    pub const SYS_io_pgetevents: i64 = 292;
    pub const SYS_cachestat: i64 = 451;
    pub const SYS_futex_wake: i64 = 454;
    pub const SYS_futex_wait: i64 = 455;
    pub const SYS_futex_requeue: i64 = 456;
    pub const SYS_statmount: i64 = 457;
    pub const SYS_listmount: i64 = 458;
    pub const SYS_open_tree_attr: i64 = 467;
}

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), nr::$name as i64)),*]
    };
}

/// Allowed: what Docker's default profile allows without extra capabilities, less what is in
/// `DENIED` (io_uring, modify_ldt, memfd_secret, personality, ptrace and friends), plus the
/// newer futex and housekeeping calls glibc may use.
const ALLOWED: &[(&str, i64)] = syscalls![
    SYS_accept,
    SYS_accept4,
    SYS_access,
    SYS_alarm,
    SYS_arch_prctl,
    SYS_bind,
    SYS_brk,
    SYS_cachestat,
    SYS_capget,
    SYS_capset,
    SYS_chdir,
    SYS_chmod,
    SYS_chown,
    SYS_clock_getres,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_close,
    SYS_close_range,
    SYS_connect,
    SYS_copy_file_range,
    SYS_creat,
    SYS_dup,
    SYS_dup2,
    SYS_dup3,
    SYS_epoll_create,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_epoll_wait,
    SYS_eventfd,
    SYS_eventfd2,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_fadvise64,
    SYS_fallocate,
    SYS_fanotify_mark,
    SYS_fchdir,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchmodat2,
    SYS_fchown,
    SYS_fchownat,
    SYS_fcntl,
    SYS_fdatasync,
    SYS_fgetxattr,
    SYS_flistxattr,
    SYS_flock,
    SYS_fork,
    SYS_fremovexattr,
    SYS_fsetxattr,
    SYS_fstat,
    SYS_fstatfs,
    SYS_fsync,
    SYS_ftruncate,
    SYS_futex,
    SYS_futex_requeue,
    SYS_futex_wait,
    SYS_futex_waitv,
    SYS_futex_wake,
    SYS_futimesat,
    SYS_getcpu,
    SYS_getcwd,
    SYS_getdents,
    SYS_getdents64,
    SYS_getegid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getgroups,
    SYS_getitimer,
    SYS_getpeername,
    SYS_getpgid,
    SYS_getpgrp,
    SYS_getpid,
    SYS_getppid,
    SYS_getpriority,
    SYS_getrandom,
    SYS_getresgid,
    SYS_getresuid,
    SYS_getrlimit,
    SYS_get_robust_list,
    SYS_getrusage,
    SYS_getsid,
    SYS_getsockname,
    SYS_getsockopt,
    SYS_gettid,
    SYS_gettimeofday,
    SYS_getuid,
    SYS_getxattr,
    SYS_inotify_add_watch,
    SYS_inotify_init,
    SYS_inotify_init1,
    SYS_inotify_rm_watch,
    SYS_io_cancel,
    SYS_ioctl,
    SYS_io_destroy,
    SYS_io_getevents,
    SYS_io_pgetevents,
    SYS_ioprio_get,
    SYS_ioprio_set,
    SYS_io_setup,
    SYS_io_submit,
    SYS_kill,
    SYS_landlock_add_rule,
    SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self,
    SYS_lchown,
    SYS_lgetxattr,
    SYS_link,
    SYS_linkat,
    SYS_listen,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_lremovexattr,
    SYS_lseek,
    SYS_lsetxattr,
    SYS_lstat,
    SYS_madvise,
    SYS_membarrier,
    SYS_memfd_create,
    SYS_mincore,
    SYS_mkdir,
    SYS_mkdirat,
    SYS_mknod,
    SYS_mknodat,
    SYS_mlock,
    SYS_mlock2,
    SYS_mlockall,
    SYS_mmap,
    SYS_mprotect,
    SYS_mq_getsetattr,
    SYS_mq_notify,
    SYS_mq_open,
    SYS_mq_timedreceive,
    SYS_mq_timedsend,
    SYS_mq_unlink,
    SYS_mremap,
    SYS_mseal,
    SYS_msgctl,
    SYS_msgget,
    SYS_msgrcv,
    SYS_msgsnd,
    SYS_msync,
    SYS_munlock,
    SYS_munlockall,
    SYS_munmap,
    SYS_nanosleep,
    SYS_newfstatat,
    SYS_open,
    SYS_openat,
    SYS_openat2,
    SYS_pause,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_pipe,
    SYS_pipe2,
    SYS_pkey_alloc,
    SYS_pkey_free,
    SYS_pkey_mprotect,
    SYS_poll,
    SYS_ppoll,
    SYS_prctl,
    SYS_pread64,
    SYS_preadv,
    SYS_preadv2,
    SYS_prlimit64,
    SYS_process_mrelease,
    SYS_pselect6,
    SYS_pwrite64,
    SYS_pwritev,
    SYS_pwritev2,
    SYS_read,
    SYS_readahead,
    SYS_readlink,
    SYS_readlinkat,
    SYS_readv,
    SYS_recvfrom,
    SYS_recvmmsg,
    SYS_recvmsg,
    SYS_remap_file_pages,
    SYS_removexattr,
    SYS_rename,
    SYS_renameat,
    SYS_renameat2,
    SYS_restart_syscall,
    SYS_rmdir,
    SYS_rseq,
    SYS_rt_sigaction,
    SYS_rt_sigpending,
    SYS_rt_sigprocmask,
    SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn,
    SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait,
    SYS_rt_tgsigqueueinfo,
    SYS_sched_getaffinity,
    SYS_sched_getattr,
    SYS_sched_getparam,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_sched_getscheduler,
    SYS_sched_rr_get_interval,
    SYS_sched_setaffinity,
    SYS_sched_setattr,
    SYS_sched_setparam,
    SYS_sched_setscheduler,
    SYS_sched_yield,
    SYS_seccomp,
    SYS_select,
    SYS_semctl,
    SYS_semget,
    SYS_semop,
    SYS_semtimedop,
    SYS_sendfile,
    SYS_sendmmsg,
    SYS_sendmsg,
    SYS_sendto,
    SYS_setfsgid,
    SYS_setfsuid,
    SYS_setgid,
    SYS_setgroups,
    SYS_setitimer,
    SYS_setpgid,
    SYS_setpriority,
    SYS_setregid,
    SYS_setresgid,
    SYS_setresuid,
    SYS_setreuid,
    SYS_setrlimit,
    SYS_set_robust_list,
    SYS_setsid,
    SYS_setsockopt,
    SYS_set_tid_address,
    SYS_setuid,
    SYS_setxattr,
    SYS_shmat,
    SYS_shmctl,
    SYS_shmdt,
    SYS_shmget,
    SYS_shutdown,
    SYS_sigaltstack,
    SYS_signalfd,
    SYS_signalfd4,
    SYS_socketpair,
    SYS_splice,
    SYS_stat,
    SYS_statfs,
    SYS_statx,
    SYS_symlink,
    SYS_symlinkat,
    SYS_sync,
    SYS_sync_file_range,
    SYS_syncfs,
    SYS_sysinfo,
    SYS_tee,
    SYS_tgkill,
    SYS_time,
    SYS_timer_create,
    SYS_timer_delete,
    SYS_timer_getoverrun,
    SYS_timer_gettime,
    SYS_timer_settime,
    SYS_timerfd_create,
    SYS_timerfd_gettime,
    SYS_timerfd_settime,
    SYS_times,
    SYS_tkill,
    SYS_truncate,
    SYS_umask,
    SYS_uname,
    SYS_unlink,
    SYS_unlinkat,
    SYS_utime,
    SYS_utimensat,
    SYS_utimes,
    SYS_vfork,
    SYS_vmsplice,
    SYS_wait4,
    SYS_waitid,
    SYS_write,
    SYS_writev,
    // Decided by the deny filter from their arguments.
    SYS_clone,
    SYS_socket,
];

/// Denied outright (reported as violations): what Docker's default profile denies, plus the
/// side channels between sandboxes that isolate closes (keyrings, io_uring, …) and what lets
/// a program reach below the kernel's usual abstractions (modify_ldt, memfd_secret).
const DENIED: &[(&str, i64)] = syscalls![
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_chroot,
    SYS_move_mount,
    SYS_open_tree,
    SYS_open_tree_attr,
    SYS_fsopen,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fspick,
    SYS_mount_setattr,
    SYS_statmount,
    SYS_listmount,
    SYS_ptrace,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_process_madvise,
    SYS_kcmp,
    SYS_kexec_load,
    SYS_kexec_file_load,
    SYS_reboot,
    SYS_bpf,
    SYS_perf_event_open,
    SYS_userfaultfd,
    SYS_keyctl,
    SYS_add_key,
    SYS_request_key,
    SYS_init_module,
    SYS_finit_module,
    SYS_delete_module,
    SYS_swapon,
    SYS_swapoff,
    SYS_unshare,
    SYS_setns,
    SYS_open_by_handle_at,
    SYS_name_to_handle_at,
    SYS_acct,
    SYS_quotactl,
    SYS_quotactl_fd,
    SYS_syslog,
    SYS_vhangup,
    SYS_uselib,
    SYS_ustat,
    SYS_sysfs,
    SYS__sysctl,
    SYS_lookup_dcookie,
    SYS_nfsservctl,
    SYS_settimeofday,
    SYS_clock_settime,
    SYS_clock_adjtime,
    SYS_adjtimex,
    SYS_iopl,
    SYS_ioperm,
    SYS_modify_ldt,
    SYS_personality,
    SYS_io_uring_setup,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_mbind,
    SYS_set_mempolicy,
    SYS_set_mempolicy_home_node,
    SYS_get_mempolicy,
    SYS_move_pages,
    SYS_migrate_pages,
    SYS_pidfd_getfd,
    SYS_fanotify_init,
    SYS_memfd_secret,
    SYS_sethostname,
    SYS_setdomainname,
];

/// Namespace flags that `clone` may not carry.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// Socket families that may not be created: AF_VSOCK talks to the hypervisor.
const DENIED_SOCKET_FAMILIES: &[u64] = &[libc::AF_VSOCK as u64];

/// seccompiler emits SECCOMP_RET_TRACE|data for Trace(data); we rewrite these returns to
/// SECCOMP_RET_USER_NOTIF, an action seccompiler does not know.
const NOTIFY_MARK: u32 = 0x5a9d;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

/// The compiled policy: three BPF programs, installed in order by the child.
pub struct CompiledPolicy {
    pub prelude: BpfProgram,
    pub allow: BpfProgram,
    pub deny: BpfProgram,
}

/// A BPF program in the form seccomp(2) takes; points into a [`CompiledPolicy`].
#[derive(Clone, Copy)]
pub struct Filter {
    pub prog: libc::sock_fprog,
}

impl Filter {
    fn new(insns: &[seccompiler::sock_filter]) -> Self {
        Filter {
            prog: libc::sock_fprog {
                // BPF programs have at most 4096 instructions (BPF_MAXINSNS): no truncation.
                len: u16::try_from(insns.len()).unwrap_or(u16::MAX),
                // Same layout: both are the kernel's struct sock_filter.
                filter: insns.as_ptr() as *mut libc::sock_filter,
            },
        }
    }
}

/// The three filters of a policy, in installation order; the last one has a listener.
pub struct Filters {
    pub prelude: Filter,
    pub allow: Filter,
    pub deny: Filter,
}

impl CompiledPolicy {
    /// Pointers to the programs, valid as long as the policy lives (and in a clone of this
    /// process, which has its own copy).
    pub fn filters(&self) -> Filters {
        Filters {
            prelude: Filter::new(&self.prelude),
            allow: Filter::new(&self.allow),
            deny: Filter::new(&self.deny),
        }
    }
}

/// The name of a syscall number, as the policy knows it.
pub fn syscall_name(nr: i32) -> String {
    DENIED
        .iter()
        .chain(ALLOWED)
        .chain(EXTRA_NAMES)
        .find(|(_, n)| *n == nr as i64)
        .map(|(name, _)| name.trim_start_matches("SYS_").to_string())
        .unwrap_or_else(|| format!("syscall {nr}"))
}

const EXTRA_NAMES: &[(&str, i64)] = syscalls![SYS_clone3];

fn arch() -> TargetArch {
    #[cfg(target_arch = "x86_64")]
    return TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
}

/// Compiles `rules`: a matching syscall gets `matched`, every other one `otherwise`.
fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    otherwise: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, Error> {
    let filter = SeccompFilter::new(rules, otherwise, matched, arch())
        .map_err(|e| Error::Seccomp(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| Error::Seccomp(e.to_string()))
}

fn arg_rules(index: u8, values: &[u64], masked: bool) -> Result<Vec<SeccompRule>, Error> {
    values
        .iter()
        .map(|&v| {
            let op = if masked {
                SeccompCmpOp::MaskedEq(v)
            } else {
                SeccompCmpOp::Eq
            };
            let cond = SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, v)
                .map_err(|e| Error::Seccomp(e.to_string()))?;
            SeccompRule::new(vec![cond]).map_err(|e| Error::Seccomp(e.to_string()))
        })
        .collect()
}

/// Compiles the default policy.
pub fn default_policy() -> Result<CompiledPolicy, Error> {
    let mut deny: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    deny.insert(libc::SYS_clone, arg_rules(0, CLONE_NAMESPACE_FLAGS, true)?);
    deny.insert(
        libc::SYS_socket,
        arg_rules(0, DENIED_SOCKET_FAMILIES, false)?,
    );
    let mut deny = compile(
        deny,
        SeccompAction::Allow,
        SeccompAction::Trace(NOTIFY_MARK),
    )?;
    for insn in deny.iter_mut() {
        if insn.code == (libc::BPF_RET | libc::BPF_K) as u16
            && insn.k == SECCOMP_RET_TRACE | NOTIFY_MARK
        {
            insn.k = SECCOMP_RET_USER_NOTIF;
        }
    }
    let allow = compile(
        ALLOWED
            .iter()
            .chain(DENIED)
            .map(|(_, nr)| (*nr, Vec::new()))
            .collect(),
        SeccompAction::Errno(libc::ENOSYS as u32),
        SeccompAction::Allow,
    )?;
    Ok(CompiledPolicy {
        prelude: prelude(),
        allow,
        deny,
    })
}

/// Kills the process on a syscall of another ABI than the native one.
fn prelude() -> BpfProgram {
    use seccompiler::sock_filter;
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH_NATIVE: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH_NATIVE: u32 = 0xc000_00b7;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    vec![
        // A = seccomp_data.arch
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_NATIVE,
            1,
            0,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, SECCOMP_RET_KILL_PROCESS),
        // A = seccomp_data.nr
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jump(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            X32_SYSCALL_BIT,
            0,
            1,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, SECCOMP_RET_KILL_PROCESS),
        stmt(libc::BPF_RET | libc::BPF_K, SECCOMP_RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_compiles_and_marks_notifications() {
        let p = default_policy().unwrap();
        assert!(p.deny.iter().any(
            |i| i.code == (libc::BPF_RET | libc::BPF_K) as u16 && i.k == SECCOMP_RET_USER_NOTIF
        ));
        assert!(!p
            .deny
            .iter()
            .any(|i| i.k == SECCOMP_RET_TRACE | NOTIFY_MARK));
        assert!(!p.allow.is_empty());
        assert_eq!(syscall_name(libc::SYS_mount as i32), "mount");
        assert_eq!(syscall_name(libc::SYS_clone as i32), "clone");
    }
}
