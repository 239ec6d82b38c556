//! `sandpit run` as a user types it: flags, --json, exit statuses, bad arguments.

use std::path::PathBuf;
use std::process::{Command, Output};

fn rootfs() -> PathBuf {
    let p = std::env::var_os("SANDPIT_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/build/rootfs/busybox"))
        });
    assert!(
        p.join("bin/busybox").exists(),
        "run `make rootfs` first: {}",
        p.display()
    );
    p
}

fn sandpit(args: &[&str]) -> Output {
    let data = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_sandpit"))
        .arg("--data")
        .arg(data.path())
        .args(args)
        .output()
        .unwrap()
}

fn run(args: &[&str]) -> Output {
    let root = rootfs();
    let mut all = vec!["run", "--rootfs", root.to_str().unwrap()];
    all.extend_from_slice(args);
    sandpit(&all)
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn json_outcome_has_the_documented_fields() {
    let o = run(&[
        "--json",
        "--memory",
        "64M",
        "--time",
        "1s",
        "--",
        "/bin/sh",
        "-c",
        "echo hi; echo err >&2; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v = json(&o);
    for key in [
        "end_reason",
        "exit_code",
        "signal",
        "timeout",
        "cpu_time_s",
        "wall_time_s",
        "peak_memory_bytes",
        "stdout_bytes",
        "stderr_bytes",
        "stdout",
        "stderr",
    ] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }
    assert_eq!(v["end_reason"], "normal");
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["timeout"], serde_json::Value::Null);
}

#[test]
fn without_json_streams_pass_through_and_the_exit_code_is_the_programs() {
    let o = run(&["--", "/bin/sh", "-c", "echo out; exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(o.stdout, b"out\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("sandpit: normal, exit 7"));
}

#[test]
fn timeouts_are_reported_with_their_kind() {
    let o = run(&["--json", "--wall-time", "200ms", "--", "/bin/sleep", "5"]);
    let v = json(&o);
    assert_eq!(v["end_reason"], "timeout");
    assert_eq!(v["timeout"], "wall");
}

#[test]
fn copy_in_stdin_and_stdout_files() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.sh");
    std::fs::write(&script, "read line; echo got $line; cat /work/sub/data").unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, "payload\n").unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, "hello\n").unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "--copy-in",
        &format!("{}:s.sh", script.display()),
        "--copy-in",
        &format!("{}:sub/data", data.display()),
        "--stdin",
        input.to_str().unwrap(),
        "--stdout",
        out.to_str().unwrap(),
        "--",
        "/bin/sh",
        "s.sh",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out).unwrap(),
        "got hello\npayload\n"
    );
}

#[test]
fn setenv_and_cwd() {
    let o = run(&[
        "--json",
        "--setenv",
        "GREETING=hi there",
        "--cwd",
        "/tmp",
        "--",
        "/bin/sh",
        "-c",
        "echo $GREETING; pwd",
    ]);
    assert_eq!(json(&o)["stdout"], "hi there\n/tmp\n");
}

#[test]
fn bad_arguments_get_one_line_and_status_2() {
    for args in [
        vec!["--memory", "12Q", "--", "/bin/true"],
        vec!["--time", "soon", "--", "/bin/true"],
        vec!["--copy-in", "nocolon", "--", "/bin/true"],
        vec!["--setenv", "NOEQUALS", "--", "/bin/true"],
        vec!["--stdin", "/nonexistent/file", "--", "/bin/true"],
        vec![],
    ] {
        let o = run(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.trim().is_empty(), "{args:?}");
    }
    let o = sandpit(&["run", "--rootfs", "/nonexistent", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_sandbox_that_cannot_start_the_program_exits_125() {
    let o = run(&["--", "/no/such/program"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("internal-error"));
}
