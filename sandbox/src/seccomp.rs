//! The default seccomp policy (data: tables of syscalls), compiled with seccompiler.
//!
//! Three filters are installed, in this order:
//! 1. a prelude that kills the process on any syscall of another ABI (32-bit i386 through
//!    `int 0x80`, and x32, whose numbers carry bit 30): a deny-list is only sound for the ABI
//!    it was written for;
//! 2. `enosys`: syscalls that fail quietly with ENOSYS because libc falls back from them
//!    (clone3: its flags are in memory, where a filter cannot look);
//! 3. `deny`: the denied syscalls. They reach the supervisor as seccomp user notifications, so
//!    each attempt is counted and reported by name as kernel evidence, and the program gets
//!    EPERM.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::Error;

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name as i64)),*]
    };
}

/// Denied outright (reported as violations): what Docker's default profile denies, plus the
/// side channels between sandboxes that isolate closes (keyrings, io_uring, …).
const DENIED: &[(&str, i64)] = syscalls![
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_chroot,
    SYS_move_mount,
    SYS_open_tree,
    SYS_fsopen,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fspick,
    SYS_mount_setattr,
    SYS_ptrace,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
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
    SYS_personality,
    SYS_io_uring_setup,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_mbind,
    SYS_set_mempolicy,
    SYS_move_pages,
    SYS_migrate_pages,
    SYS_pidfd_getfd,
    SYS_fanotify_init,
];

/// Fail with ENOSYS without a report: libc falls back to an allowed equivalent.
const ENOSYS: &[(&str, i64)] = syscalls![SYS_clone3];

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
    pub enosys: BpfProgram,
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
    pub enosys: Filter,
    pub deny: Filter,
}

impl CompiledPolicy {
    /// Pointers to the programs, valid as long as the policy lives (and in a clone of this
    /// process, which has its own copy).
    pub fn filters(&self) -> Filters {
        Filters {
            prelude: Filter::new(&self.prelude),
            enosys: Filter::new(&self.enosys),
            deny: Filter::new(&self.deny),
        }
    }
}

/// The name of a syscall number, as the policy knows it.
pub fn syscall_name(nr: i32) -> String {
    DENIED
        .iter()
        .chain(ENOSYS)
        .chain(EXTRA_NAMES)
        .find(|(_, n)| *n == nr as i64)
        .map(|(name, _)| name.trim_start_matches("SYS_").to_string())
        .unwrap_or_else(|| format!("syscall {nr}"))
}

const EXTRA_NAMES: &[(&str, i64)] = syscalls![SYS_clone, SYS_socket];

fn arch() -> TargetArch {
    #[cfg(target_arch = "x86_64")]
    return TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    action: SeccompAction,
) -> Result<BpfProgram, Error> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch())
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
    let mut deny = compile(deny, SeccompAction::Trace(NOTIFY_MARK))?;
    for insn in deny.iter_mut() {
        if insn.code == (libc::BPF_RET | libc::BPF_K) as u16
            && insn.k == SECCOMP_RET_TRACE | NOTIFY_MARK
        {
            insn.k = SECCOMP_RET_USER_NOTIF;
        }
    }
    let enosys = compile(
        ENOSYS.iter().map(|(_, nr)| (*nr, Vec::new())).collect(),
        SeccompAction::Errno(libc::ENOSYS as u32),
    )?;
    Ok(CompiledPolicy {
        prelude: prelude(),
        enosys,
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
        assert!(!p.enosys.is_empty());
        assert_eq!(syscall_name(libc::SYS_mount as i32), "mount");
        assert_eq!(syscall_name(libc::SYS_clone as i32), "clone");
    }
}
