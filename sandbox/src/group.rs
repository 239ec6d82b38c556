//! Several programs at once, each in its own sandbox with its own limits and outcome, wired by
//! pipes the caller describes as edges (program *i*'s fd → program *j*'s fd): an interactive
//! problem's solution and interactor, a pipeline.
//!
//! The pipes are plain kernel pipes between the sandboxes: no byte passes through the engine
//! unless the caller asks to capture a pipe's traffic. When a program ends, every process of
//! its sandbox ends, so its peers see EOF on the pipes it held. A group wall limit ends them
//! all; a program the group `ends_with` ends the others when it ends.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::Sandbox;
use crate::error::Error;
use crate::io::Io;
use crate::outcome::{KillCause, Outcome};
use crate::prepared::{Prepared, Ran, Wiring};
use crate::spec::Spec;
use crate::sys;

/// Most programs in one group.
pub const MAX_PROGRAMS: usize = 64;
/// The highest fd number a pipe may be given at.
pub const MAX_PIPE_FD: i32 = 1023;

/// One end of a pipe: a program of the group and the fd it has the pipe at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PipeEnd {
    /// Index into [`Group::programs`].
    pub program: usize,
    pub fd: i32,
}

/// A pipe: what `from` writes to its fd, `to` reads from its fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipe {
    pub from: PipeEnd,
    pub to: PipeEnd,
    /// Keep a copy of the traffic, up to this many bytes (the engine then relays the bytes).
    #[serde(default)]
    pub capture_bytes: Option<u64>,
}

/// Programs run together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    pub programs: Vec<Spec>,
    pub pipes: Vec<Pipe>,
    /// Wall-clock time of the whole group, from the moment every sandbox is ready.
    pub wall_time: Option<Duration>,
    /// When one of these programs ends, the others are stopped (e.g. the interactor: once it
    /// has its verdict, the solution has nothing left to do).
    pub ends_with: Vec<usize>,
}

/// The traffic kept of a captured pipe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeCapture {
    /// The first `capture_bytes` bytes.
    pub data: Vec<u8>,
    /// Every byte that passed.
    pub bytes: u64,
    pub truncated: bool,
}

/// What a group did: one outcome per program, in the order of [`Group::programs`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupOutcome {
    pub programs: Vec<Outcome>,
    /// The program that ended first, by when its sandbox's init reaped it. A program ended by
    /// another's end (EOF on a pipe) can be reaped within microseconds of it, in either order:
    /// the kernel closes an exiting process's files before it tells the parent.
    pub first_ended: Option<usize>,
    /// The group's own wall limit ended it.
    pub group_timeout: bool,
    /// One per pipe, in the order of [`Group::pipes`]; `None` for pipes not captured.
    pub pipes: Vec<Option<PipeCapture>>,
}

impl Group {
    /// Checks the graph: every pipe names programs that exist and fds in range, and no fd of a
    /// program is given two pipes. The error names the pipe.
    pub fn validate(&self) -> Result<(), Error> {
        let n = self.programs.len();
        if n == 0 || n > MAX_PROGRAMS {
            return Err(Error::InvalidSpec(format!(
                "a group has 1 to {MAX_PROGRAMS} programs, not {n}"
            )));
        }
        let mut used: std::collections::HashMap<PipeEnd, usize> = Default::default();
        for (k, pipe) in self.pipes.iter().enumerate() {
            for end in [pipe.from, pipe.to] {
                if end.program >= n {
                    return Err(Error::InvalidSpec(format!(
                        "pipe {k}: program {} does not exist (the group has {n})",
                        end.program
                    )));
                }
                if !(0..=MAX_PIPE_FD).contains(&end.fd) {
                    return Err(Error::InvalidSpec(format!(
                        "pipe {k}: fd {} is not between 0 and {MAX_PIPE_FD}",
                        end.fd
                    )));
                }
                if let Some(other) = used.insert(end, k) {
                    return Err(Error::InvalidSpec(format!(
                        "pipe {k}: fd {} of program {} is already given pipe {other}",
                        end.fd, end.program
                    )));
                }
            }
        }
        if let Some(bad) = self.ends_with.iter().find(|i| **i >= n) {
            return Err(Error::InvalidSpec(format!(
                "ends_with: program {bad} does not exist (the group has {n})"
            )));
        }
        Ok(())
    }
}

/// Relays a captured pipe's bytes from `from` to `to`, keeping the first `cap` of them. A
/// reader that is gone closes the writer's pipe too (the writer then gets SIGPIPE, as with a
/// plain pipe).
fn relay(from: OwnedFd, to: OwnedFd, cap: u64) -> PipeCapture {
    // A write to a pipe whose reader is gone raises SIGPIPE in the writing thread: blocked
    // here, it stays pending and the write fails with EPIPE instead of killing the engine.
    // SAFETY: sigset operations on a local set; affects this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let mut capture = PipeCapture::default();
    let (mut from, mut to) = (std::fs::File::from(from), std::fs::File::from(to));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        capture.bytes += n as u64;
        let room = cap.saturating_sub(capture.data.len() as u64) as usize;
        capture.data.extend_from_slice(&buf[..n.min(room)]);
        capture.truncated |= n > room;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    capture
}

/// Runs `group`; `ios[i]` is program *i*'s.
pub(crate) fn run(engine: &Sandbox, group: &Group, ios: Vec<Io>) -> Result<GroupOutcome, Error> {
    group.validate()?;
    for (i, spec) in group.programs.iter().enumerate() {
        crate::prepared::check_program(spec).map_err(|e| match e {
            Error::InvalidSpec(m) => Error::InvalidSpec(format!("program {i}: {m}")),
            other => other,
        })?;
    }
    let n = group.programs.len();
    if ios.len() != n {
        return Err(Error::InvalidSpec(format!(
            "a group of {n} programs needs {n} Io values, not {}",
            ios.len()
        )));
    }
    // Every sandbox first: no program starts while a peer could not be set up.
    let mut prepared: Vec<Prepared> = Vec::with_capacity(n);
    for spec in &group.programs {
        match engine.prepare(&spec.env_spec()) {
            Ok(p) => prepared.push(p),
            Err(Error::SandboxFailed(message)) => {
                return Ok(GroupOutcome {
                    programs: vec![Outcome::internal_error(message); n],
                    first_ended: None,
                    group_timeout: false,
                    pipes: vec![None; group.pipes.len()],
                })
            }
            Err(e) => return Err(e),
        }
    }
    let setup = |e: std::io::Error| Error::Setup(format!("wiring the group: {e}"));
    let mut wiring: Vec<Wiring> = (0..n).map(|_| Wiring::default()).collect();
    let mut relays = Vec::new();
    for (k, pipe) in group.pipes.iter().enumerate() {
        let (read, write) = sys::pipe().map_err(setup)?;
        match pipe.capture_bytes {
            None => {
                wiring[pipe.from.program].fds.push((pipe.from.fd, write));
                wiring[pipe.to.program].fds.push((pipe.to.fd, read));
            }
            Some(cap) => {
                let (relay_read, relay_write) = sys::pipe().map_err(setup)?;
                wiring[pipe.from.program].fds.push((pipe.from.fd, write));
                wiring[pipe.to.program].fds.push((pipe.to.fd, relay_read));
                relays.push((k, read, relay_write, cap));
            }
        }
    }
    // The group's own reasons to end a program: its wall limit (one eventfd for all) and the
    // end of a program it ends with (one per program, so that the others can be told alone).
    let wall = sys::eventfd().map_err(setup)?;
    let ended: Vec<OwnedFd> = (0..n)
        .map(|_| sys::eventfd())
        .collect::<Result<_, _>>()
        .map_err(setup)?;
    for (i, w) in wiring.iter_mut().enumerate() {
        w.stops.push((wall.as_raw_fd(), KillCause::GroupWallTime));
        w.stops.push((ended[i].as_raw_fd(), KillCause::GroupEnded));
    }
    let signal = |fd: &OwnedFd| {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live value to our eventfd.
        unsafe { libc::write(fd.as_raw_fd(), &one as *const u64 as *const _, 8) };
    };

    let mut results: Vec<Option<Result<Ran, Error>>> = (0..n).map(|_| None).collect();
    let mut order = Vec::with_capacity(n);
    let mut group_timeout = false;
    let mut captures: Vec<Option<PipeCapture>> = vec![None; group.pipes.len()];
    std::thread::scope(|scope| {
        let relayed: Vec<_> = relays
            .into_iter()
            .map(|(k, read, write, cap)| (k, scope.spawn(move || relay(read, write, cap))))
            .collect();
        let (tx, rx) = mpsc::channel();
        for (i, ((p, io), w)) in prepared.into_iter().zip(ios).zip(wiring).enumerate() {
            let (tx, spec) = (tx.clone(), &group.programs[i]);
            scope.spawn(move || {
                let _ = tx.send((i, p.run_wired(spec, io, w)));
            });
        }
        drop(tx);
        let mut deadline = group.wall_time.map(|w| Instant::now() + w);
        while order.len() < n {
            let got = match deadline {
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match got {
                Ok((i, result)) => {
                    results[i] = Some(result);
                    order.push(i);
                    if group.ends_with.contains(&i) {
                        for (j, fd) in ended.iter().enumerate() {
                            if j != i {
                                signal(fd);
                            }
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    group_timeout = true;
                    signal(&wall);
                    deadline = None;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        for (k, handle) in relayed {
            captures[k] = handle.join().ok();
        }
    });
    let mut programs = Vec::with_capacity(n);
    let mut ends = Vec::with_capacity(n);
    for r in results {
        let ran = r.unwrap_or_else(|| {
            Ok(
                Outcome::internal_error("the program's supervisor ended without an outcome".into())
                    .into(),
            )
        })?;
        ends.push(ran.ended_at);
        programs.push(ran.outcome);
    }
    // By the programs' own end times (init's clock), not by which supervisor finished first.
    let first_ended = ends
        .iter()
        .enumerate()
        .filter_map(|(i, at)| at.map(|at| (at, i)))
        .min()
        .map(|(_, i)| i)
        .or_else(|| order.first().copied());
    Ok(GroupOutcome {
        programs,
        first_ended,
        group_timeout,
        pipes: captures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RootFs;

    /// (program, fd) → (program, fd)
    type Edge = ((usize, i32), (usize, i32));

    fn group(n: usize, pipes: &[Edge]) -> Group {
        Group {
            programs: (0..n)
                .map(|_| Spec::new(RootFs::Dir("/".into()), vec!["true".into()]))
                .collect(),
            pipes: pipes
                .iter()
                .map(|&((fp, ff), (tp, tf))| Pipe {
                    from: PipeEnd {
                        program: fp,
                        fd: ff,
                    },
                    to: PipeEnd {
                        program: tp,
                        fd: tf,
                    },
                    capture_bytes: None,
                })
                .collect(),
            wall_time: None,
            ends_with: vec![],
        }
    }

    fn refused(g: &Group) -> String {
        match g.validate() {
            Err(Error::InvalidSpec(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_interactive_pair_and_a_pipeline_are_valid() {
        group(2, &[((0, 1), (1, 0)), ((1, 1), (0, 0))])
            .validate()
            .unwrap();
        group(3, &[((0, 1), (1, 0)), ((1, 1), (2, 0)), ((0, 5), (2, 7))])
            .validate()
            .unwrap();
    }

    #[test]
    fn bad_graphs_name_the_pipe() {
        let m = refused(&group(2, &[((0, 1), (1, 0)), ((0, 1), (1, 3))]));
        assert!(
            m.starts_with("pipe 1: fd 1 of program 0 is already given pipe 0"),
            "{m}"
        );
        let m = refused(&group(2, &[((0, 1), (2, 0))]));
        assert!(m.starts_with("pipe 0: program 2 does not exist"), "{m}");
        let m = refused(&group(1, &[((0, -1), (0, 0))]));
        assert!(m.starts_with("pipe 0: fd -1"), "{m}");
        let m = refused(&group(1, &[((0, 1), (0, 4096))]));
        assert!(m.starts_with("pipe 0: fd 4096"), "{m}");
        assert!(refused(&group(0, &[])).contains("1 to 64 programs"));
        let mut g = group(2, &[]);
        g.ends_with = vec![2];
        assert!(refused(&g).starts_with("ends_with: program 2"));
    }
}
