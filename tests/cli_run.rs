//! `sandpit run` as a user types it: flags, --json, exit statuses, bad arguments.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

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
    assert_eq!(program_stdout(&o), "hi there\n/tmp\n");
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

/// `sandpit run` with the given stdin (and no `--stdin` unless in `args`).
fn run_with_stdin(args: &[&str], stdin: Stdio, input: Option<&[u8]>) -> Output {
    let root = rootfs();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandpit"))
        .arg("--data")
        .arg(data.path())
        .args(["run", "--rootfs", root.to_str().unwrap()])
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = input {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(bytes).unwrap();
        // Dropped: the program sees the end of its input.
    }
    child.wait_with_output().unwrap()
}

/// The program's captured stdout, from a run that must have ended normally; on failure the
/// whole outcome and sandpit's stderr are shown.
fn program_stdout(o: &Output) -> serde_json::Value {
    let v = json(o);
    assert_eq!(
        v["end_reason"],
        "normal",
        "{v}\nsandpit's stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    v["stdout"].clone()
}

#[test]
fn piped_stdin_reaches_the_program_without_a_flag() {
    let o = run_with_stdin(
        &["--json", "--", "/bin/sh", "-c", "tr a-z A-Z; echo end"],
        Stdio::piped(),
        Some(b"from a pipe\n"),
    );
    assert_eq!(program_stdout(&o), "FROM A PIPE\nend\n");

    // A redirected file counts as piped too.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in");
    std::fs::write(&file, "from a file\n").unwrap();
    let o = run_with_stdin(
        &["--json", "--", "/bin/cat"],
        Stdio::from(std::fs::File::open(&file).unwrap()),
        None,
    );
    assert_eq!(program_stdout(&o), "from a file\n");

    // Nothing given: the program reads an empty input, it does not wait.
    let o = run_with_stdin(&["--json", "--", "/bin/cat"], Stdio::null(), None);
    assert_eq!(program_stdout(&o), "");
}

#[test]
fn stdin_flag_wins_over_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in");
    std::fs::write(&file, "from the flag\n").unwrap();
    let o = run_with_stdin(
        &[
            "--json",
            "--stdin",
            file.to_str().unwrap(),
            "--",
            "/bin/cat",
        ],
        Stdio::piped(),
        Some(b"from the pipe\n"),
    );
    assert_eq!(program_stdout(&o), "from the flag\n");
    // --stdin /dev/null: no input even with a pipe open (a `while read` loop's own stdin).
    let o = run_with_stdin(
        &["--json", "--stdin", "/dev/null", "--", "/bin/cat"],
        Stdio::piped(),
        Some(b"not for the program\n"),
    );
    assert_eq!(program_stdout(&o), "");
}

#[test]
fn help_shows_the_default_limits_and_the_stdin_rule() {
    let o = sandpit(&["run", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    // The core's defaults, as the flags take them.
    let d = sandbox::Limits::default();
    let expect = [
        (
            "--memory",
            format!("[default: {}M]", d.memory_bytes.unwrap() >> 20),
        ),
        (
            "--time",
            format!("[default: {}s]", d.cpu_time.unwrap().as_secs()),
        ),
        (
            "--wall-time",
            format!("[default: {}s]", d.wall_time.unwrap().as_secs()),
        ),
        ("--pids", format!("[default: {}]", d.pids.unwrap())),
        (
            "--output",
            format!("[default: {}M]", d.output_bytes.unwrap() >> 20),
        ),
        (
            "--file-size",
            format!("[default: {}M]", d.file_size_bytes.unwrap() >> 20),
        ),
        (
            "--disk",
            format!("[default: {}M]", d.disk_bytes.unwrap() >> 20),
        ),
        (
            "--open-files",
            format!("[default: {}]", d.open_files.unwrap()),
        ),
    ];
    for (flag, default) in expect {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag) && !l.contains(&format!("{flag}-")))
            .unwrap_or_else(|| panic!("{flag} missing from:\n{help}"));
        assert!(line.contains(&default), "{flag}: {line}");
    }
    assert!(help.contains("piped"), "{help}");
}

#[test]
fn a_missing_environment_or_data_dir_names_the_directory() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let cmd = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sandpit"))
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        vec!["--data", &dir, "run", "--env", "python3", "--", "true"],
        vec!["--data", &dir, "env", "show", "python3"],
        vec!["--data", &dir, "env", "rm", "python3"],
    ] {
        let o = cmd(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("no environment 'python3'") && err.contains(&dir),
            "{args:?}: {err}"
        );
    }
    // An empty data directory: `env list` says so (on stderr), naming it.
    let o = cmd(&["--data", &dir, "env", "list"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&dir));

    // A data directory that does not exist is reported, not created.
    let missing = data.path().join("nothing-here");
    let missing_s = missing.display().to_string();
    for args in [
        vec!["--data", &missing_s, "env", "list"],
        vec![
            "--data", &missing_s, "run", "--env", "python3", "--", "true",
        ],
    ] {
        let o = cmd(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("data directory {missing_s} does not exist")),
            "{args:?}: {err}"
        );
        assert!(!missing.exists(), "{args:?} created the data directory");
    }
    // The default is the command line's, make run's and the service's: /var/lib/sandpit.
    let o = Command::new(env!("CARGO_BIN_EXE_sandpit"))
        .args(["--help"])
        .env_remove("SANDPIT_DATA")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("[default: /var/lib/sandpit]"));
}
