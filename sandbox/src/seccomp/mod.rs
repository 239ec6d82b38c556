//! The default seccomp policy (data: tables of syscalls), compiled to classic BPF.
//!
//! An allow-list, as Docker's default profile is: a syscall the policy does not know (a newer
//! one, say) fails with ENOSYS, so programs fall back to an older equivalent. One filter,
//! installed with a listener, decides in this order:
//! 1. a syscall of another ABI (32-bit i386 through `int 0x80`, and x32, whose numbers carry
//!    bit 30: the tables are written for one ABI) kills the process;
//! 2. a syscall neither allowed nor denied fails with ENOSYS (clone3 among them: its flags are
//!    in memory, where a filter cannot look, and libc falls back to clone);
//! 3. the denied syscalls, `clone` with a namespace flag and `socket` of a denied family reach
//!    the supervisor as seccomp user notifications, so each attempt is counted and reported by
//!    name as kernel evidence, and the program gets EPERM;
//! 4. the rest is allowed.
//!
//! It is a search over ranges of syscall numbers ([`bpf`]): attaching a filter costs in
//! proportion to its length, on every sandbox's start, and each filter attached costs on its
//! own (the kernel allocates, checks, converts and JITs it, and builds its action cache): one
//! filter instead of two (an allow-list, then the denied ones with the listener) cut the
//! seccomp(2) time of each program from 121 to 97 µs (`perf trace -s`, medians of 100).

use crate::error::Error;

mod bpf;
mod tables;

use bpf::{jump, load, ret, Arg0};
use tables::{ALLOWED, CLONE_NAMESPACE_FLAGS, DENIED, DENIED_SOCKET_FAMILIES, EXTRA_NAMES};

const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// A classic BPF program, as seccomp(2) takes it.
pub type BpfProgram = Vec<libc::sock_filter>;

/// The compiled policy: the BPF program the child installs.
pub struct CompiledPolicy {
    pub program: BpfProgram,
}

/// A BPF program in the form seccomp(2) takes; points into a [`CompiledPolicy`].
#[derive(Clone, Copy)]
pub struct Filter {
    pub prog: libc::sock_fprog,
}

impl Filter {
    fn new(insns: &[libc::sock_filter]) -> Self {
        Filter {
            prog: libc::sock_fprog {
                // The program is far below BPF_MAXINSNS (4096): no truncation.
                len: u16::try_from(insns.len()).unwrap_or(u16::MAX),
                filter: insns.as_ptr() as *mut libc::sock_filter,
            },
        }
    }
}

impl CompiledPolicy {
    /// A pointer to the program, valid as long as the policy lives (and in a clone of this
    /// process, which has its own copy).
    pub fn filter(&self) -> Filter {
        Filter::new(&self.program)
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

fn numbers(table: &[(&str, i64)]) -> Vec<u32> {
    table.iter().map(|(_, nr)| *nr as u32).collect()
}

fn too_long(which: &str) -> Error {
    Error::Seccomp(format!(
        "the {which} filter needs jumps longer than BPF has"
    ))
}

/// Compiles the default policy.
pub fn default_policy() -> Result<CompiledPolicy, Error> {
    let mut known = numbers(ALLOWED);
    known.extend(numbers(DENIED));
    let mut program = native_abi_only();
    program.extend(
        bpf::only(&known, SECCOMP_RET_ERRNO | libc::ENOSYS as u32)
            .ok_or_else(|| too_long("known syscalls'"))?,
    );
    // The flags clone takes are in the low word of its first argument (the kernel reads no
    // more of it), as is socket's int family.
    let clone_flags = CLONE_NAMESPACE_FLAGS.iter().fold(0, |all, f| all | f);
    let checked = [
        (libc::SYS_clone as u32, Arg0::AnyBitOf(clone_flags)),
        (libc::SYS_socket as u32, Arg0::OneOf(DENIED_SOCKET_FAMILIES)),
    ];
    program.extend(
        bpf::by_number_and_arg0(
            &numbers(DENIED),
            &checked,
            SECCOMP_RET_USER_NOTIF,
            SECCOMP_RET_ALLOW,
        )
        .ok_or_else(|| too_long("denied syscalls'"))?,
    );
    Ok(CompiledPolicy { program })
}

/// Kills the process on a syscall of another ABI than the native one; leaves the syscall
/// number in A.
fn native_abi_only() -> BpfProgram {
    use libc::{BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K};
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH_NATIVE: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH_NATIVE: u32 = 0xc000_00b7;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    vec![
        load(4),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_NATIVE, 1, 0),
        ret(SECCOMP_RET_KILL_PROCESS),
        load(0),
        jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1),
        ret(SECCOMP_RET_KILL_PROCESS),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscalls_are_named_as_the_tables_say() {
        assert_eq!(syscall_name(libc::SYS_mount as i32), "mount");
        assert_eq!(syscall_name(libc::SYS_clone as i32), "clone");
    }

    /// The filter, run by an interpreter for every syscall number, decides as the tables say.
    #[test]
    fn the_filter_decides_every_number_as_the_tables_say() {
        use bpf::interpret::run;
        let p = default_policy().unwrap().program;
        let native = native_abi_only()[1].k;
        let listed = |table: &[(&str, i64)], nr: u32| table.iter().any(|(_, n)| *n == nr as i64);
        for nr in 0..1024u32 {
            let want = if listed(DENIED, nr)
                && ![libc::SYS_clone, libc::SYS_socket].contains(&(nr as i64))
            {
                SECCOMP_RET_USER_NOTIF
            } else if listed(ALLOWED, nr) || listed(DENIED, nr) {
                SECCOMP_RET_ALLOW
            } else {
                SECCOMP_RET_ERRNO | libc::ENOSYS as u32
            };
            assert_eq!(
                run(&p, nr, native, [0; 6]),
                want,
                "{}",
                syscall_name(nr as i32)
            );
            // Another ABI: i386 through int 0x80, or x32's numbers.
            assert_eq!(run(&p, nr, 0x4000_0003, [0; 6]), SECCOMP_RET_KILL_PROCESS);
            assert_eq!(
                run(&p, nr | 0x4000_0000, native, [0; 6]),
                SECCOMP_RET_KILL_PROCESS
            );
        }
        let clone = libc::SYS_clone as u32;
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(
            run(&p, clone, native, [thread, 0, 0, 0, 0, 0]),
            SECCOMP_RET_ALLOW
        );
        for flags in CLONE_NAMESPACE_FLAGS {
            let args = [thread | *flags as u64, 0, 0, 0, 0, 0];
            assert_eq!(run(&p, clone, native, args), SECCOMP_RET_USER_NOTIF);
        }
        let socket = libc::SYS_socket as u32;
        let vsock = [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0];
        assert_eq!(run(&p, socket, native, vsock), SECCOMP_RET_USER_NOTIF);
        let inet = [libc::AF_INET as u64, 1, 0, 0, 0, 0];
        assert_eq!(run(&p, socket, native, inet), SECCOMP_RET_ALLOW);
        // The point of the ranges: a short filter (seccompiler's lines were 1,100 and 429).
        assert!(p.len() < 200, "{}", p.len());
    }
}
