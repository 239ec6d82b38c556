//! Classic BPF for seccomp filters that decide by syscall number (and, for a few syscalls, by
//! their first argument): a binary search over ranges of numbers, not one comparison per
//! syscall in a line as seccompiler (used before) emits. Attaching a filter costs in proportion
//! to its length (the kernel checks, converts and JITs it, then runs it for every syscall
//! number to build its action cache, with interrupts off): seccompiler's 1,100 + 429
//! instructions cost 0.8 ms of every sandbox's start; as ranges they are under a hundred, and
//! a syscall reads about ten of them.

use libc::sock_filter;

pub(super) fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

pub(super) fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Loads the 32-bit word at `offset` of seccomp_data into A (0: the number, 4: the arch,
/// 16: the low word of the first argument).
pub(super) fn load(offset: u32) -> sock_filter {
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

pub(super) fn ret(k: u32) -> sock_filter {
    stmt(libc::BPF_RET | libc::BPF_K, k)
}

/// Where a conditional jump goes: `n` instructions further, or to one of the two returns.
#[derive(Clone, Copy)]
enum Target {
    Skip(usize),
    Member,
    Other,
}

struct Jump {
    op: u32,
    k: u32,
    taken: Target,
    not_taken: Target,
}

/// Sorted, merged ranges of syscall numbers (inclusive).
fn ranges(numbers: &[u32]) -> Vec<(u32, u32)> {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for n in sorted {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// The search tree over `ranges`, laid out so that every jump goes forward.
fn tree(ranges: &[(u32, u32)]) -> Vec<Jump> {
    use libc::{BPF_JGE, BPF_JGT, BPF_JMP, BPF_K};
    if let [(lo, hi)] = ranges {
        let mut code = Vec::with_capacity(2);
        if *lo > 0 {
            code.push(Jump {
                op: BPF_JMP | BPF_JGE | BPF_K,
                k: *lo,
                taken: Target::Skip(0),
                not_taken: Target::Other,
            });
        }
        code.push(Jump {
            op: BPF_JMP | BPF_JGT | BPF_K,
            k: *hi,
            taken: Target::Other,
            not_taken: Target::Member,
        });
        return code;
    }
    let (left, right) = ranges.split_at(ranges.len() / 2);
    let split = right[0].0;
    let left = tree(left);
    let right = tree(right);
    let mut code = Vec::with_capacity(1 + left.len() + right.len());
    code.push(Jump {
        op: BPF_JMP | BPF_JGE | BPF_K,
        k: split,
        taken: Target::Skip(left.len()),
        not_taken: Target::Skip(0),
    });
    code.extend(left);
    code.extend(right);
    code
}

/// With the syscall number in A: returns `member` for the numbers given, `other` for the rest.
/// None when the program would need a jump longer than classic BPF's 255 (never for the
/// syscall tables: a few hundred numbers make well under a hundred ranges).
pub(super) fn by_number(numbers: &[u32], member: u32, other: u32) -> Option<Vec<sock_filter>> {
    let ranges = ranges(numbers);
    if ranges.is_empty() {
        return Some(vec![ret(other)]);
    }
    let code = tree(&ranges);
    let mut out = lay_out(&code, code.len(), code.len() + 1)?;
    out.push(ret(member));
    out.push(ret(other));
    Some(out)
}

/// With the syscall number in A: returns `other` for the numbers not given; the numbers given
/// go on to the instruction after this part, A unchanged.
pub(super) fn only(numbers: &[u32], other: u32) -> Option<Vec<sock_filter>> {
    let ranges = ranges(numbers);
    if ranges.is_empty() {
        return Some(vec![ret(other)]);
    }
    let code = tree(&ranges);
    let mut out = lay_out(&code, code.len() + 1, code.len())?;
    out.push(ret(other));
    Some(out)
}

/// The search tree's jumps as instructions, its two ends at `member_at` and `other_at`.
fn lay_out(code: &[Jump], member_at: usize, other_at: usize) -> Option<Vec<sock_filter>> {
    let mut out = Vec::with_capacity(code.len() + 2);
    for (i, jump) in code.iter().enumerate() {
        let offset = |t: Target| -> Option<u8> {
            let skip = match t {
                Target::Skip(n) => n,
                Target::Member => member_at - i - 1,
                Target::Other => other_at - i - 1,
            };
            u8::try_from(skip).ok()
        };
        out.push(self::jump(
            jump.op,
            jump.k,
            offset(jump.taken)?,
            offset(jump.not_taken)?,
        ));
    }
    Some(out)
}

/// What decides, by its first argument's low word, for a syscall of [`by_number_and_arg0`].
pub(super) enum Arg0 {
    /// `member` when any of these bits is set (clone's flags).
    AnyBitOf(u32),
    /// `member` when it is one of these values (socket's family).
    OneOf(&'static [u32]),
}

/// With the syscall number in A: `member` for `numbers`, and for each of `checked` what its
/// first argument says; `other` for everything else.
pub(super) fn by_number_and_arg0(
    numbers: &[u32],
    checked: &[(u32, Arg0)],
    member: u32,
    other: u32,
) -> Option<Vec<sock_filter>> {
    use libc::{BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K};
    let plain = by_number(numbers, member, other)?;
    let blocks: Vec<Vec<sock_filter>> = checked
        .iter()
        .map(|(_, test)| {
            let mut block = vec![load(16)];
            match test {
                Arg0::AnyBitOf(mask) => block.extend([
                    jump(BPF_JMP | BPF_JSET | BPF_K, *mask, 0, 1),
                    ret(member),
                    ret(other),
                ]),
                Arg0::OneOf(values) => {
                    // Each match jumps over the ones after it and the `other` return.
                    for (j, v) in values.iter().enumerate() {
                        let over = u8::try_from(values.len() - j).ok()?;
                        block.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *v, over, 0));
                    }
                    block.extend([ret(other), ret(member)]);
                }
            }
            Some(block)
        })
        .collect::<Option<_>>()?;
    let mut out = Vec::new();
    let mut block_at = checked.len() + plain.len();
    for (i, ((nr, _), block)) in checked.iter().zip(&blocks).enumerate() {
        let skip = u8::try_from(block_at - i - 1).ok()?;
        out.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *nr, skip, 0));
        block_at += block.len();
    }
    out.extend(plain);
    out.extend(blocks.into_iter().flatten());
    Some(out)
}

#[cfg(test)]
pub(super) mod interpret {
    //! A classic-BPF interpreter for the instructions seccomp filters use: the tests run the
    //! compiled filters for every syscall number and compare with the tables.

    use libc::sock_filter;

    /// Runs `prog` on seccomp_data {nr, arch, args}: the filter's return value.
    pub fn run(prog: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                16..=63 => {
                    let arg = args[(off as usize - 16) / 8];
                    if off.is_multiple_of(8) {
                        arg as u32
                    } else {
                        (arg >> 32) as u32
                    }
                }
                _ => panic!("load at {off}"),
            }
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = &prog[pc];
            let code = i.code as u32;
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = word(i.k),
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= i.k,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += i.k as usize,
                c if c & 0x07 == libc::BPF_JMP => {
                    let taken = match c & 0xf0 {
                        x if x == libc::BPF_JEQ => a == i.k,
                        x if x == libc::BPF_JGE => a >= i.k,
                        x if x == libc::BPF_JGT => a > i.k,
                        x if x == libc::BPF_JSET => a & i.k != 0,
                        _ => panic!("jump {c:#x}"),
                    };
                    pc += if taken { i.jt } else { i.jf } as usize;
                }
                _ => panic!("instruction {code:#x}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_gets_the_right_return_and_every_jump_goes_forward() {
        let sets: [&[u32]; 5] = [
            &[],
            &[0],
            &[5],
            &[0, 1, 2, 7, 9, 10, 11, 300],
            &(0..460)
                .filter(|n| n % 17 != 0 && !(200..230).contains(n))
                .collect::<Vec<_>>(),
        ];
        for set in sets {
            let mut prog = vec![load(0)];
            prog.extend(by_number(set, 1, 2).expect("fits"));
            for nr in 0..600u32 {
                let want = if set.contains(&nr) { 1 } else { 2 };
                assert_eq!(
                    interpret::run(&prog, nr, 0, [0; 6]),
                    want,
                    "nr {nr} in {set:?}"
                );
            }
            assert_eq!(interpret::run(&prog, u32::MAX, 0, [0; 6]), 2);
        }
    }

    #[test]
    fn the_first_argument_decides_for_the_checked_numbers() {
        let checked = [(56, Arg0::AnyBitOf(0x30)), (41, Arg0::OneOf(&[3, 40, 7]))];
        let mut prog = vec![load(0)];
        prog.extend(by_number_and_arg0(&[1, 2, 3, 57], &checked, 1, 2).expect("fits"));
        let run = |nr, arg0| interpret::run(&prog, nr, 0, [arg0, 0, 0, 0, 0, 0]);
        for nr in [1, 2, 3, 57] {
            assert_eq!(run(nr, 0), 1);
        }
        for nr in [0, 4, 40, 55, 58] {
            assert_eq!(run(nr, 0x30), 2);
        }
        assert_eq!(run(56, 0x41), 2);
        assert_eq!(run(56, 0x11), 1);
        assert_eq!(run(56, 0x1_0000_0000), 2, "the high word is not the flags");
        for family in [3, 40, 7] {
            assert_eq!(run(41, family), 1);
        }
        for family in [0, 2, 4, 41] {
            assert_eq!(run(41, family), 2);
        }
    }

    #[test]
    fn a_set_too_scattered_for_short_jumps_is_refused() {
        let scattered: Vec<u32> = (0..400).map(|n| n * 2).collect();
        assert!(by_number(&scattered, 1, 2).is_none());
    }
}
