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

mod tables;

use tables::{ALLOWED, CLONE_NAMESPACE_FLAGS, DENIED, DENIED_SOCKET_FAMILIES, EXTRA_NAMES};

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
