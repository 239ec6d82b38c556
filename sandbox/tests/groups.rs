//! Programs wired by pipes: each in its own sandbox, with its own outcome.

mod common;

use std::time::Duration;

use common::*;
use sandbox::{EndReason, Error, Group, Io, Pipe, PipeEnd, Spec, TimeoutKind};

fn pipe(from: (usize, i32), to: (usize, i32)) -> Pipe {
    Pipe {
        from: PipeEnd {
            program: from.0,
            fd: from.1,
        },
        to: PipeEnd {
            program: to.0,
            fd: to.1,
        },
        capture_bytes: None,
    }
}

/// Program 0's stdout feeds program 1's stdin and back: an interactive pair.
fn pair(a: Spec, b: Spec) -> Group {
    Group {
        programs: vec![a, b],
        pipes: vec![pipe((0, 1), (1, 0)), pipe((1, 1), (0, 0))],
        wall_time: Some(Duration::from_secs(20)),
        ends_with: vec![],
    }
}

fn ios(n: usize) -> Vec<Io> {
    (0..n).map(|_| Io::default()).collect()
}

#[test]
fn an_interactor_and_a_solution_talk_through_pipes() {
    // The interactor asks three questions; the solution answers each with the number + 1.
    let interactor = sh(
        "for q in 1 5 41; do echo $q; read a; [ $a -eq $((q+1)) ] || \
                         { echo wrong >&2; exit 1; }; done; echo accepted >&2",
    );
    // The pause after EOF: an exiting process's pipes close before its parent hears of the
    // exit, so without it both ends can be reaped within microseconds, in either order.
    let solution = sh("while read q; do echo $((q+1)); done; sleep 0.2");
    let g = pair(interactor, solution);
    let o = engine().run_group(&g, ios(2)).unwrap();
    let (i, s) = (&o.programs[0], &o.programs[1]);
    assert_eq!(
        (i.end_reason, i.exit_code),
        (EndReason::Normal, Some(0)),
        "{i:?}"
    );
    assert_eq!(String::from_utf8_lossy(&i.stderr), "accepted\n");
    // The interactor's end closed the solution's stdin: it ended by itself.
    assert_eq!(
        (s.end_reason, s.exit_code),
        (EndReason::Normal, Some(0)),
        "{s:?}"
    );
    // Piped streams are not captured.
    assert!(i.stdout.is_empty() && s.stdout.is_empty());
    assert_eq!(o.first_ended, Some(0));
    assert!(!o.group_timeout);
}

#[test]
fn a_peer_sees_eof_when_a_program_ends() {
    let g = Group {
        programs: vec![sh("echo hi"), sh("cat; sleep 0.2; echo eof-seen")],
        pipes: vec![pipe((0, 1), (1, 0))],
        wall_time: Some(Duration::from_secs(20)),
        ends_with: vec![],
    };
    let o = engine().run_group(&g, ios(2)).unwrap();
    assert_eq!(stdout(&o.programs[1]), "hi\neof-seen\n");
    assert_eq!(o.first_ended, Some(0));
}

#[test]
fn pipes_can_be_given_at_any_fd() {
    let g = Group {
        programs: vec![sh("echo to-five >&5"), sh("cat <&7")],
        pipes: vec![pipe((0, 5), (1, 7))],
        wall_time: Some(Duration::from_secs(20)),
        ends_with: vec![],
    };
    let o = engine().run_group(&g, ios(2)).unwrap();
    assert_eq!(stdout(&o.programs[1]), "to-five\n", "{:?}", o.programs[1]);
}

#[test]
fn the_group_wall_limit_ends_them_all() {
    let mut a = sh("sleep 30");
    a.limits.wall_time = Some(Duration::from_secs(60));
    let mut g = pair(a.clone(), a);
    g.wall_time = Some(Duration::from_millis(300));
    let o = engine().run_group(&g, ios(2)).unwrap();
    assert!(o.group_timeout);
    for p in &o.programs {
        assert_eq!(p.end_reason, EndReason::Timeout, "{p:?}");
        assert_eq!(p.timeout, Some(TimeoutKind::Wall));
        assert!(p.message.as_deref().unwrap().contains("group"), "{p:?}");
    }
}

#[test]
fn the_group_ends_with_its_interactor() {
    // The interactor decides after one line; the solution would go on forever.
    let interactor = sh("read a; echo verdict-ok >&2");
    let solution = sh("echo 1; sleep 30");
    let mut g = pair(interactor, solution);
    g.ends_with = vec![0];
    let o = engine().run_group(&g, ios(2)).unwrap();
    assert_eq!(o.programs[0].end_reason, EndReason::Normal);
    assert_eq!(
        o.programs[1].end_reason,
        EndReason::Stopped,
        "{:?}",
        o.programs[1]
    );
    assert_eq!(o.first_ended, Some(0));
    assert!(!o.group_timeout);
}

#[test]
fn each_program_keeps_its_own_limits() {
    // A solution that floods its stdout into an interactor that reads nothing: the flood
    // blocks on the full pipe, and its own CPU limit is not what ends it — its wall limit is.
    let interactor = sh("sleep 1; exit 3");
    let mut flood = prog_spec("burn", &["0"]);
    flood.limits.cpu_time = Some(Duration::from_millis(200));
    let g = pair(interactor, flood);
    let o = engine().run_group(&g, ios(2)).unwrap();
    assert_eq!(o.programs[0].exit_code, Some(3));
    assert_eq!(o.programs[1].end_reason, EndReason::Timeout);
    assert_eq!(o.programs[1].timeout, Some(TimeoutKind::Cpu));
}

#[test]
fn captured_traffic_is_kept_up_to_the_cap() {
    let mut g = Group {
        programs: vec![sh("seq 1 1000"), sh("wc -l")],
        pipes: vec![pipe((0, 1), (1, 0))],
        wall_time: Some(Duration::from_secs(20)),
        ends_with: vec![],
    };
    g.pipes[0].capture_bytes = Some(10);
    let o = engine().run_group(&g, ios(2)).unwrap();
    assert_eq!(stdout(&o.programs[1]).trim(), "1000");
    let c = o.pipes[0].as_ref().unwrap();
    assert_eq!(c.data, b"1\n2\n3\n4\n5\n");
    assert!(c.truncated);
    assert_eq!(
        c.bytes,
        (1..=1000)
            .map(|i: u32| i.to_string().len() as u64 + 1)
            .sum()
    );
}

#[test]
fn bad_groups_are_refused_before_anything_runs() {
    let g = Group {
        programs: vec![sh("true"), sh("true")],
        pipes: vec![pipe((0, 1), (1, 0)), pipe((1, 1), (1, 0))],
        ..Default::default()
    };
    match engine().run_group(&g, ios(2)) {
        Err(Error::InvalidSpec(m)) => assert!(m.starts_with("pipe 1:"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut bad = sh("true");
    bad.argv.clear();
    let g = Group {
        programs: vec![sh("true"), bad],
        ..Default::default()
    };
    match engine().run_group(&g, ios(2)) {
        Err(Error::InvalidSpec(m)) => assert!(m.starts_with("program 1:"), "{m}"),
        other => panic!("{other:?}"),
    }
}
