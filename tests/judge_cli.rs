//! `sandpit judge PROJECT_DIR SOURCE…`: the server's grading pipeline, locally, on the shipped
//! examples (environments from SANDPIT_TEST_DATA); the table, the JSON, the exit statuses.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{sandpit, shipped_data};
use serde_json::Value;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn judge(args: &[&str]) -> Output {
    sandpit()
        .arg("--data")
        .arg(shipped_data())
        .arg("judge")
        .args(args)
        .output()
        .expect("run sandpit judge")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The table's rows whose verdict column is `verdict`.
fn rows_with(table: &str, verdict: &str) -> usize {
    table
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == verdict))
        .count()
}

fn judge_json(project: &str, source: &str) -> (i32, Value) {
    let dir = example(project);
    let src = dir.join("solutions").join(source);
    let out = judge(&[dir.to_str().unwrap(), src.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} / {}", text(&out.stdout), text(&out.stderr)));
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn the_c_example_prints_its_table_and_score() {
    let dir = example("aplusb-c");
    let ok = judge(&[
        dir.to_str().unwrap(),
        dir.join("solutions/correct.c").to_str().unwrap(),
    ]);
    let out = text(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{out}{}", text(&ok.stderr));
    assert_eq!(rows_with(&out, "accepted"), 10, "{out}");
    assert!(
        out.contains("status 15 (ok)") && out.contains("score 100"),
        "{out}"
    );
    assert!(
        text(&ok.stderr).contains("build stage"),
        "progress on stderr"
    );
    let wrong = judge(&[
        dir.to_str().unwrap(),
        &format!("{}:main.c", dir.join("solutions/wrong.c").display()),
    ]);
    let out = text(&wrong.stdout);
    assert_eq!(wrong.status.code(), Some(1), "{out}");
    assert_eq!(rows_with(&out, "wrong-answer"), 4, "{out}");
    assert!(
        out.contains("status 14 (fail): Wrong answer on test 07.") && out.contains("score 60"),
        "{out}"
    );
}

#[test]
fn every_example_as_json() {
    for (project, source, code, status, score) in [
        ("aplusb-python", "correct.py", 0, 15, 100.0),
        ("aplusb-python", "wrong.py", 1, 14, 10.0),
        ("circle-area", "correct.py", 0, 15, 100.0),
        ("circle-area", "wrong.py", 1, 14, 20.0),
        ("unit-tests", "correct.py", 0, 15, 100.0),
        ("unit-tests", "wrong.py", 1, 14, 66.666667),
    ] {
        let (rc, v) = judge_json(project, source);
        assert_eq!(
            (rc, v["status"].as_u64()),
            (code, Some(status)),
            "{project} {source}: {v}"
        );
        assert_eq!(v["score"].as_f64(), Some(score), "{project} {source}");
        assert_eq!(v["executing"], false);
        assert_eq!(v["report"]["accepted"], status == 15);
        assert!(v["streams"]["tests_report"].is_array(), "{project}: {v}");
    }
}

#[test]
fn a_build_error_and_bad_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.c");
    std::fs::write(&broken, "int main(void) { return }\n").unwrap();
    let dir = example("aplusb-c");
    let out = judge(&[dir.to_str().unwrap(), broken.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("status 11 (build error)") && stdout.contains("error"),
        "{stdout}"
    );
    // No such project, no such source, no such scenario: exit 2 and one line.
    for args in [
        vec![tmp.path().to_str().unwrap(), broken.to_str().unwrap()],
        vec![dir.to_str().unwrap(), "/nonexistent/main.c"],
        vec![
            dir.to_str().unwrap(),
            broken.to_str().unwrap(),
            "--scenario",
            "fast",
        ],
    ] {
        let out = judge(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).starts_with("sandpit: "), "{args:?}");
    }
}

/// The interactive example: the solution and the interactor as a group, wired both ways.
#[test]
fn the_guessing_game_is_judged_by_its_interactor() {
    let (rc, v) = judge_json("guessing-game", "correct.c");
    assert_eq!((rc, v["status"].as_u64()), (0, Some(15)), "{v}");
    assert_eq!(v["score"].as_f64(), Some(100.0), "{v}");
    let (rc, v) = judge_json("guessing-game", "wrong.c");
    assert_eq!((rc, v["status"].as_u64()), (1, Some(14)), "{v}");
    assert_eq!(v["score"].as_f64(), Some(40.0), "{v}");
    let tests = v["tests"].as_array().expect("the per-test table");
    let verdicts: Vec<&str> = tests
        .iter()
        .map(|t| t["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        [
            "accepted",
            "wrong-answer",
            "accepted",
            "wrong-answer",
            "wrong-answer"
        ]
    );
    // The interactor's verdict line is the test's message.
    assert!(
        tests[1]["checker_message"]
            .as_str()
            .is_some_and(|m| m.contains("no guesses left")),
        "{v}"
    );

    // A solution that reads n and then never answers: its own (wall) time limit ends it.
    let tmp = tempfile::tempdir().unwrap();
    let silent = tmp.path().join("silent.c");
    std::fs::write(
        &silent,
        "#include <stdio.h>\n#include <unistd.h>\n\
         int main(void) { long long n; scanf(\"%lld\", &n); for (;;) sleep(1); }\n",
    )
    .unwrap();
    let dir = example("guessing-game");
    let out = judge(&[
        dir.to_str().unwrap(),
        &format!("{}:main.c", silent.display()),
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"].as_u64(), Some(13), "{v}");
    assert!(
        v["tests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["verdict"] == "time-limit"),
        "{v}"
    );
}

/// An interactor that fails (testlib's exit 3) is the project's error, never the submission's:
/// even when the solution ended first, with an error of its own. This interactor closes its
/// output first, so the solution (reading EOF) always exits 1 before it; then it fails.
#[test]
fn a_failing_interactor_is_a_project_error() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("game");
    copy_dir(&example("guessing-game"), &project);
    std::fs::write(
        project.join("interactor/interactor.c"),
        "#include <stdio.h>\nint main(void) {\n  fclose(stdout);\n  while (getchar() != EOF) {}\n  \
         fputs(\"FAIL broken test\\n\", stderr);\n  return 3;\n}\n",
    )
    .unwrap();
    let src = example("guessing-game").join("solutions/correct.c");
    let out = judge(&[project.to_str().unwrap(), src.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    assert_eq!(v["status"].as_u64(), Some(22), "{v}");
    assert!(
        v["debug_log"]
            .as_str()
            .is_some_and(|d| d.contains("broken test")),
        "{v}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}
