//! Grading over real HTTP: the shipped examples with correct and wrong solutions, every
//! submission status (11, 12, 13, 14, 15, 20 by a broken environment, 22 by broken
//! checkers), the per-test verdicts (memory-limit among them), the HwScore report, the
//! streams, the live progress, projects and their permissions, and submissions that survive a
//! kill -9 of the server. The server runs as a child process on loopback; the c and python3
//! environments come from SANDPIT_TEST_DATA (linked into each test's data directory, never
//! written there).

#[path = "server_common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{request, Server, TOKEN};
use serde_json::{json, Value};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// A fresh data directory whose environments are the shipped ones (c, python3, busybox).
fn data_with_envs() -> tempfile::TempDir {
    let shipped = PathBuf::from(
        std::env::var_os("SANDPIT_TEST_DATA")
            .expect("SANDPIT_TEST_DATA is not set: `make rootfs` imports the environments"),
    );
    assert!(
        shipped.join("envs/c.json").is_file() && shipped.join("envs/python3.json").is_file(),
        "SANDPIT_TEST_DATA={} lacks the c or python3 environment",
        shipped.display()
    );
    let data = common::temp_data();
    for part in ["envs", "images", "layers"] {
        std::os::unix::fs::symlink(shipped.join(part), data.path().join(part)).expect("link");
    }
    data
}

/// A tar of a directory (its contents at the archive's root).
fn tar_of(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).expect("tar");
    b.into_inner().expect("tar")
}

fn tar_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, *data).expect("tar");
    }
    b.into_inner().expect("tar")
}

/// Asserts a submission's status code and score (the object shown when they differ).
fn assert_graded(v: &Value, status: u64, score: f64) {
    assert_eq!(
        (v["status"].clone(), v["score"].clone()),
        (json!(status), json!(score)),
        "{v}"
    );
}

/// Creates an example project from its directory, as a tar; the id is the example's name.
fn create_example(s: &Server, name: &str) -> Value {
    let r = s.post_bytes(
        &format!("/api/v1/projects?id={name}"),
        TOKEN,
        "application/x-tar",
        &tar_of(&examples().join(name)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn solution(example: &str, file: &str) -> String {
    std::fs::read_to_string(examples().join(example).join("solutions").join(file))
        .expect("solution")
}

/// Submits files and waits for the grade (201 or the test fails).
fn submit(s: &Server, project: &str, files: Value) -> Value {
    let r = s.post_json(
        "/api/v1/submissions",
        TOKEN,
        &json!({ "project_id": project, "files": files, "wait": true }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["executing"], false, "{v}");
    v
}

fn verdicts(v: &Value) -> Vec<String> {
    v["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .map(|t| t["verdict"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Σ weight × score of the HwScore partials is the score.
fn assert_hwscore(v: &Value) {
    let report = &v["report"];
    assert_eq!(report["accepted"], v["status"] == 15, "{v}");
    assert!(report["result"]["text"].is_string(), "{report}");
    assert!(report["result"]["kwargs"].is_object(), "{report}");
    let partials = report["partials"].as_array().expect("partials");
    let sum: f64 = partials
        .iter()
        .map(|p| {
            for key in [
                "name", "typeName", "score", "weight", "time", "brief", "detail",
            ] {
                assert!(!p[key].is_null(), "partial without {key}: {p}");
            }
            p["weight"].as_f64().unwrap() * p["score"].as_f64().unwrap()
        })
        .sum();
    if let Some(score) = v["score"].as_f64() {
        if !partials.is_empty() {
            assert!(
                (sum - score).abs() < 0.01,
                "Σ weight × score {sum} ≠ {score}"
            );
        }
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_c_example_grades_correct_and_wrong_solutions() {
    let data = data_with_envs();
    let s = Server::start(data.path(), &[]);
    let p = create_example(&s, "aplusb-c");
    assert_eq!(p["environment"], "c");
    assert_eq!(p["tests"].as_array().unwrap().len(), 10);
    assert_eq!(p["revision"], 1);

    let ok = submit(
        &s,
        "aplusb-c",
        json!({ "correct.c": solution("aplusb-c", "correct.c") }),
    );
    assert_eq!(
        (ok["status"].clone(), ok["status_name"].clone()),
        (json!(15), json!("ok")),
        "{ok}"
    );
    assert_eq!(ok["score"], 100.0);
    assert_eq!(verdicts(&ok), vec!["accepted"; 10]);
    assert!(ok["time"].as_f64().unwrap() > 0.0 && ok["memory"].as_u64().unwrap() > 0);
    let t = &ok["tests"][0];
    for key in ["name", "verdict", "time", "memory", "score", "evidence"] {
        assert!(!t[key].is_null(), "test row without {key}: {t}");
    }
    assert_eq!(t["evidence"]["oom_kills"], 0);
    assert_hwscore(&ok);
    assert_eq!(ok["report"]["compile_error"], Value::Null);
    let streams = &ok["streams"];
    assert!(streams["stage_build_output"].is_string(), "{streams}");
    assert!(streams["stage_build_error"].is_string(), "{streams}");
    let report = streams["tests_report"]
        .as_array()
        .expect("tests_report array");
    assert_eq!(report.len(), 10);
    for e in report {
        assert_eq!(e["status"], "ok");
        assert!(e["name"].is_string() && e["classname"].is_string() && e["time"].is_number());
    }
    assert_eq!(ok["stages"][0]["stage"], "build");

    let wrong = submit(
        &s,
        "aplusb-c",
        json!({ "main.c": solution("aplusb-c", "wrong.c") }),
    );
    assert_eq!(wrong["status"], 14, "{wrong}");
    assert_eq!(wrong["score"], 60.0);
    assert!(
        wrong["reason"].as_str().unwrap().contains("test 07"),
        "{wrong}"
    );
    assert_eq!(&verdicts(&wrong)[6..], vec!["wrong-answer"; 4]);
    assert!(wrong["tests"][6]["checker_message"].as_str().is_some());
    assert_hwscore(&wrong);
    let failures: Vec<&Value> = wrong["streams"]["tests_report"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "failure")
        .collect();
    assert_eq!(failures.len(), 4);
    assert!(failures.iter().all(|e| e["failure"].is_string()));
}

#[test]
fn the_python_float_and_unit_test_examples() {
    let data = data_with_envs();
    let s = Server::start(data.path(), &[]);
    // a+b in Python, given as JSON (project.json's fields and the files inline).
    let dir = examples().join("aplusb-python");
    let mut body: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("project.json")).unwrap()).unwrap();
    body["config"] =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    body["id"] = json!("aplusb-python");
    let tests: Vec<Value> = (1..=10)
        .map(|i| {
            let t = dir.join(format!("tests/{i:02}"));
            json!({
                "name": format!("{i:02}"),
                "stdin": std::fs::read_to_string(t.join("input")).unwrap(),
                "expected": std::fs::read_to_string(t.join("output")).unwrap(),
            })
        })
        .collect();
    body["tests"] = Value::Array(tests);
    let r = s.post_json("/api/v1/projects", TOKEN, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let ok = submit(
        &s,
        "aplusb-python",
        json!({ "main.py": solution("aplusb-python", "correct.py") }),
    );
    assert_graded(&ok, 15, 100.0);
    assert_hwscore(&ok);
    // The source as a multipart upload (a file part named `files`).
    let boundary = "sandpit-test-boundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"project_id\"\r\n\r\naplusb-python\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"wait\"\r\n\r\ntrue\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"mine.py\"\r\n\
         Content-Type: text/x-python\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(solution("aplusb-python", "wrong.py").as_bytes());
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = s.post_bytes(
        "/api/v1/submissions",
        TOKEN,
        &format!("multipart/form-data; boundary={boundary}"),
        &form,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let wrong = r.json();
    assert_graded(&wrong, 14, 10.0);

    // Floats within 1e-6: pi × r².
    create_example(&s, "circle-area");
    let ok = submit(
        &s,
        "circle-area",
        json!({ "a.py": solution("circle-area", "correct.py") }),
    );
    assert_eq!(ok["status"], 15, "{ok}");
    let wrong = submit(
        &s,
        "circle-area",
        json!({ "a.py": solution("circle-area", "wrong.py") }),
    );
    assert_graded(&wrong, 14, 20.0);
    assert!(wrong["tests"][0]["checker_message"]
        .as_str()
        .unwrap()
        .contains("allowed"));

    // Unit tests: the run stage writes a JUnit XML report, the test stage turns it into
    // Sphere's tests report. The source as a tar body, Sphere's workspace/ folder inside.
    create_example(&s, "unit-tests");
    let tar = tar_bytes(&[(
        "workspace/calc.py",
        solution("unit-tests", "correct.py").as_bytes(),
    )]);
    let r = s.post_bytes(
        "/api/v1/submissions?project_id=unit-tests&wait=true",
        TOKEN,
        "application/x-tar",
        &tar,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let ok = r.json();
    assert_graded(&ok, 15, 100.0);
    let report = ok["streams"]["tests_report"]
        .as_array()
        .expect("tests_report");
    assert_eq!(report.len(), 6);
    assert!(report
        .iter()
        .all(|e| e["status"] == "ok" && e["classname"].is_string()));
    assert!(ok["streams"]["stage_run_error"]
        .as_str()
        .unwrap()
        .contains("Ran 6 tests"));
    let wrong = submit(
        &s,
        "unit-tests",
        json!({ "calc.py": solution("unit-tests", "wrong.py") }),
    );
    assert_eq!(wrong["status"], 14, "{wrong}");
    assert!((wrong["score"].as_f64().unwrap() - 66.667).abs() < 0.01);
    let failed: Vec<&Value> = wrong["streams"]["tests_report"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "failure")
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed
        .iter()
        .all(|e| e["failure"].as_str().is_some_and(|f| f.contains("Error"))));
    assert_hwscore(&wrong);
    assert_eq!(wrong["report"]["partials"][0]["typeName"], "UnitTests");
    // The project keeps its read-only files: a submission may not replace them.
    let r = s.post_json(
        "/api/v1/submissions",
        TOKEN,
        &json!({ "project_id": "unit-tests", "files": {
            "calc.py": "", "test_calc.py": "import sys; sys.exit(0)" } }),
    );
    let e = r.assert_error(400);
    assert!(e["message"].as_str().unwrap().contains("read-only"), "{e}");
}

/// A one-test C project whose checker is `checker`, for the status codes; its tests may use
/// `cpu_time_s` of CPU.
fn status_project(
    s: &Server,
    id: &str,
    checker: Value,
    checker_files: Value,
    env: &str,
    cpu_time_s: u64,
) {
    let build = if env == "c" {
        json!({"command": "gcc -O2 -o solution main.c", "timeout": 30})
    } else {
        json!(null)
    };
    let run = if env == "c" {
        "./solution"
    } else {
        "sh main.sh"
    };
    let mut checker = checker;
    if checker_files.is_object() {
        checker["files"] = checker_files;
    }
    let r = s.post_json(
        "/api/v1/projects",
        TOKEN,
        &json!({
            "id": id,
            "environment": env,
            "source": if env == "c" { "main.c" } else { "main.sh" },
            "artifacts": ["solution"],
            // A wall limit well over the CPU limit: on a loaded host a busy loop still
            // reaches its CPU limit first.
            "limits": {"cpu_time_s": cpu_time_s, "wall_time_s": 15, "memory_bytes": 67108864, "output_bytes": 1048576},
            "config": {"version": 2.1, "scenarios": {"default": {"stages": {"build": build, "run": {"command": run}}}}},
            "tests": [
                {"name": "one", "stdin": "1 2\n", "expected": "3\n"},
                {"name": "two", "stdin": "2 2\n", "expected": "4\n", "weight": 3},
            ],
            "checker": checker,
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

const C_OK: &str = "#include <stdio.h>\nint main(void){long long a,b;scanf(\"%lld %lld\",&a,&b);printf(\"%lld\\n\",a+b);return 0;}\n";

#[test]
fn every_status_code_and_verdict() {
    let data = data_with_envs();
    let broken = tempfile::Builder::new()
        .prefix("sandpit-broken-env")
        .tempdir_in("/var/tmp")
        .unwrap();
    let broken_env = format!("broken={}", broken.path().display());
    let s = Server::start(data.path(), &["--rootfs-env", &broken_env]);
    status_project(&s, "status", json!({"type": "tokens"}), Value::Null, "c", 1);
    let grade = |src: &str| submit(&s, "status", json!({ "main.c": src }));

    let v = grade(C_OK);
    assert_eq!(v["status"], 15, "{v}");

    // 11: the build fails; the compiler's output is the report's compile_error.
    let v = grade("int main(void) { this is not C }\n");
    assert_eq!(
        (v["status"].clone(), v["status_name"].clone()),
        (json!(11), json!("build error")),
        "{v}"
    );
    assert!(
        v["report"]["compile_error"]
            .as_str()
            .unwrap()
            .contains("error"),
        "{v}"
    );
    assert!(v["streams"]["stage_build_error"]
        .as_str()
        .unwrap()
        .contains("error"));
    assert_eq!(v["tests"].as_array().unwrap().len(), 0);
    assert_eq!(v["score"], 0.0);

    // 12: a crash, by signal and by exit status.
    let v = grade("int main(void){ volatile int *p = 0; *p = 1; return 0; }\n");
    assert_eq!(v["status"], 12, "{v}");
    assert_eq!(v["tests"][0]["verdict"], "runtime-error");
    assert_eq!(v["tests"][0]["signal_name"], "SIGSEGV");
    let v = grade("int main(void){ return 3; }\n");
    assert_eq!(
        (v["status"].clone(), v["tests"][0]["exit_code"].clone()),
        (json!(12), json!(3)),
        "{v}"
    );

    // memory-limit: its own verdict (kernel evidence: the OOM kill), status 12 saying why.
    // Its project allows 10 s of CPU: under emulation, faulting in 64 MiB took 0.72 s of
    // system time, and with 1 s the hog ran out of CPU first (CI, 2026-11-24).
    status_project(
        &s,
        "memory",
        json!({"type": "tokens"}),
        Value::Null,
        "c",
        10,
    );
    let v = submit(
        &s,
        "memory",
        json!({"main.c": "#include <stdlib.h>\n#include <string.h>\nint main(void){ for(;;){ char *p = malloc(1<<20); if(!p) return 9; memset(p, 1, 1<<20);} }\n"}),
    );
    assert_eq!(v["status"], 12, "{v}");
    let t = &v["tests"][0];
    assert_eq!(t["verdict"], "memory-limit", "{t}");
    assert!(t["evidence"]["oom_kills"].as_u64().unwrap() >= 1, "{t}");
    assert!(
        v["reason"].as_str().unwrap().contains("Memory limit"),
        "{v}"
    );
    assert!(v["reason"].as_str().unwrap().contains("closest"), "{v}");

    // output-limit: more than the test's output limit.
    let v = grade("#include <stdio.h>\nint main(void){ for(;;) fputs(\"spam spam spam spam\\n\", stdout); }\n");
    assert_eq!(
        (v["status"].clone(), v["tests"][0]["verdict"].clone()),
        (json!(12), json!("output-limit")),
        "{v}"
    );

    // 13: CPU time and wall time.
    let v = grade("int main(void){ for(;;); }\n");
    assert_eq!(v["status"], 13, "{v}");
    assert_eq!(
        (
            v["tests"][0]["verdict"].clone(),
            v["tests"][0]["timeout"].clone()
        ),
        (json!("time-limit"), json!("cpu"))
    );
    let v = grade("#include <unistd.h>\nint main(void){ sleep(30); return 0; }\n");
    assert_eq!(
        (v["status"].clone(), v["tests"][0]["timeout"].clone()),
        (json!(13), json!("wall")),
        "{v}"
    );

    // 14: a wrong answer on the heavier test: 1 of 4 points.
    let v = grade("#include <stdio.h>\nint main(void){int a,b;scanf(\"%d %d\",&a,&b);printf(\"%d\\n\",a==1?3:5);return 0;}\n");
    assert_graded(&v, 14, 25.0);
    assert_eq!(verdicts(&v), ["accepted", "wrong-answer"]);

    // presentation-error: the exact checker, whitespace differs.
    status_project(&s, "exact", json!({"type": "exact"}), Value::Null, "c", 1);
    let v = submit(
        &s,
        "exact",
        json!({"main.c": "#include <stdio.h>\nint main(void){long long a,b;scanf(\"%lld %lld\",&a,&b);printf(\"%lld  \\n\",a+b);return 0;}\n"}),
    );
    assert_eq!(
        (v["status"].clone(), v["tests"][0]["verdict"].clone()),
        (json!(14), json!("presentation-error")),
        "{v}"
    );

    // A testlib checker: points for a partial answer (exit 7, `points X` on stderr).
    let checker = "import sys\nout = open(sys.argv[2]).read().split()\nans = open(sys.argv[3]).read().split()\n\
                   if out == ans:\n    sys.exit(0)\n\
                   if out and out[0] == 'half':\n    sys.stderr.write('points 0.5 half of it\\n'); sys.exit(7)\n\
                   sys.stderr.write('wrong answer expected %s\\n' % ans); sys.exit(1)\n";
    status_project(
        &s,
        "points",
        json!({"type": "program", "command": ["python3", "check.py"], "environment": "python3"}),
        json!({"check.py": checker}),
        "c",
        1,
    );
    let v = submit(
        &s,
        "points",
        json!({"main.c": "#include <stdio.h>\nint main(void){puts(\"half\");return 0;}\n"}),
    );
    assert_eq!(v["status"], 14, "{v}");
    assert_eq!(verdicts(&v), ["partial", "partial"]);
    assert_eq!(v["tests"][1]["score"], 0.5);
    assert_eq!(v["score"], 25.0, "0.5 + 0.5 of 4 points → 25");
    let v = submit(&s, "points", json!({"main.c": C_OK}));
    assert_eq!(v["status"], 15, "{v}");

    // 22: a checker that fails (exit 3), crashes, or runs out of time is the project's error,
    // with its output in debug_log; never the submission's.
    for (id, code) in [
        (
            "fails",
            "import sys\nsys.stderr.write('FAIL the answer file is broken\\n')\nsys.exit(3)\n",
        ),
        (
            "crashes",
            "import os\nprint('about to crash', flush=True)\nos.abort()\n",
        ),
        ("hangs", "import time\ntime.sleep(60)\n"),
    ] {
        status_project(
            &s,
            id,
            json!({"type": "program", "command": ["python3", "check.py"], "environment": "python3",
                   "limits": {"cpu_time_s": 1}}),
            json!({"check.py": code}),
            "c",
            1,
        );
        let v = submit(&s, id, json!({"main.c": C_OK}));
        assert_eq!(
            (v["status"].clone(), v["status_name"].clone()),
            (json!(22), json!("project error")),
            "{id}: {v}"
        );
        assert_eq!(v["tests"][0]["verdict"], "checker-error", "{id}");
        assert_eq!(v["score"], Value::Null, "{id}");
        let log = v["debug_log"].as_str().unwrap_or_default();
        assert!(log.contains("checker"), "{id}: {log}");
        if id == "fails" {
            assert!(log.contains("the answer file is broken"), "{log}");
        }
        if id == "crashes" {
            assert!(
                log.contains("about to crash") && log.contains("SIGABRT"),
                "{log}"
            );
        }
    }

    // 20: a deliberately broken environment (an empty root file system).
    let r = s.post_json(
        "/api/v1/projects",
        TOKEN,
        &json!({"id": "broken", "environment": "broken",
                "config": {"version": 2.1, "scenarios": {"default": {"stages": {"run": {"command": "/bin/sh main.sh"}}}}},
                "tests": [{"name": "1", "stdin": "", "expected": ""}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = submit(&s, "broken", json!({"main.sh": "echo"}));
    assert_eq!(
        (v["status"].clone(), v["status_name"].clone()),
        (json!(20), json!("internal error")),
        "{v}"
    );
    assert_eq!(v["tests"][0]["verdict"], "internal-error");
    assert_eq!(v["score"], Value::Null);
}

#[test]
fn live_progress_listing_batch_and_delete() {
    let data = data_with_envs();
    let s = Server::start(data.path(), &["--slots", "1"]);
    create_example(&s, "aplusb-c");
    // Created without waiting: followed live until it ends.
    let r = s.post_json(
        "/api/v1/submissions",
        TOKEN,
        &json!({"project_id": "aplusb-c", "files": {"main.c": solution("aplusb-c", "correct.c")}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    assert_eq!(created["executing"], true);
    assert!(created["status"] == 0 || created["status"] == 1 || created["status"] == 3);
    let id = created["id"].as_str().unwrap().to_string();
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        &s.addr,
        "GET",
        &format!("/api/v1/submissions/{id}/progress"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().contains("ndjson"));
    let events: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"stage_started") && kinds.contains(&"stage_ended"),
        "{kinds:?}"
    );
    let tests: Vec<&Value> = events.iter().filter(|e| e["event"] == "test").collect();
    assert_eq!(tests.len(), 10, "{kinds:?}");
    assert_eq!(tests[2]["index"], 3);
    assert_eq!(tests[2]["verdict"], "accepted");
    assert_eq!(events.last().unwrap()["event"], "ended");
    assert_eq!(events.last().unwrap()["status"], 15);
    // As server-sent events, ending with `end`.
    let r = request(
        &s.addr,
        "GET",
        &format!("/api/v1/submissions/{id}/progress"),
        &[("Authorization", &auth), ("Accept", "text/event-stream")],
        b"",
    );
    let text = r.text();
    assert!(text.contains("data: {\"event\":\"test\""), "{text}");
    assert!(
        text.trim_end()
            .ends_with("data: {\"status\":15,\"status_name\":\"ok\"}"),
        "{text}"
    );

    // A batch: two accepted, one refused, in order.
    let r = s.post_json(
        "/api/v1/submissions/batch",
        TOKEN,
        &json!({"submissions": [
            {"project_id": "aplusb-c", "files": {"main.c": solution("aplusb-c", "wrong.c")}},
            {"project_id": "nope", "files": {"main.c": ""}},
            {"project_id": "aplusb-c", "files": {"main.c": solution("aplusb-c", "correct.c")}},
        ]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let items = r.json()["items"].as_array().unwrap().clone();
    assert!(items[0]["id"].is_string() && items[2]["id"].is_string());
    assert!(
        items[1]["error_code"].is_u64() && items[1]["message"].as_str().unwrap().contains("nope")
    );
    for item in [&items[0], &items[2]] {
        let id = item["id"].as_str().unwrap();
        wait_until("the batch's submission ends", 120, || {
            s.get(&format!("/api/v1/submissions/{id}")).json()["executing"] == false
        });
    }
    let r = s.post_json(
        "/api/v1/submissions/batch",
        TOKEN,
        &json!({"submissions": [{"project_id": "nope"}]}),
    );
    r.assert_error(400);
    let too_many: Vec<Value> = (0..21).map(|_| json!({"project_id": "aplusb-c"})).collect();
    s.post_json(
        "/api/v1/submissions/batch",
        TOKEN,
        &json!({"submissions": too_many}),
    )
    .assert_error(400);

    // Lists: by project and status, paged.
    let all = s.get("/api/v1/submissions?project=aplusb-c").json();
    assert_eq!(all["paging"]["total"], 3);
    let fails = s
        .get("/api/v1/submissions?project=aplusb-c&status=14")
        .json();
    assert_eq!(fails["paging"]["total"], 1);
    assert_eq!(fails["items"][0]["score"], 60.0);
    assert!(
        fails["items"][0].get("tests").is_none(),
        "lists carry no per-test table"
    );
    let page = s.get("/api/v1/submissions?limit=1&offset=1").json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    s.get("/api/v1/submissions?status=2").assert_error(400);
    assert_eq!(
        s.get("/api/v1/submissions?project=elsewhere").json()["paging"]["total"],
        0
    );

    // Delete: the submission and its files go.
    s.delete(&format!("/api/v1/submissions/{id}"))
        .assert_status(200);
    s.get(&format!("/api/v1/submissions/{id}"))
        .assert_error(404);
    assert!(!data.path().join("submissions").join(&id).exists());
    // Deleting one being graded stops it first.
    let r = s.post_json(
        "/api/v1/submissions",
        TOKEN,
        &json!({"project_id": "aplusb-c", "files": {"main.c": "#include <unistd.h>\nint main(void){sleep(30);return 0;}\n"}}),
    );
    let slow = r.json()["id"].as_str().unwrap().to_string();
    wait_until("the slow submission runs its tests", 60, || {
        s.get(&format!("/api/v1/submissions/{slow}")).json()["stage"] == "run"
    });
    // 200: it stopped (a stop that does not take within its wait is a 500).
    s.delete(&format!("/api/v1/submissions/{slow}"))
        .assert_status(200);
    s.get(&format!("/api/v1/submissions/{slow}"))
        .assert_error(404);
}

#[test]
fn projects_crud_errors_and_permissions() {
    let data = data_with_envs();
    // Port 9 (discard): nothing answers there, so a callback waits to be delivered.
    let s = Server::start(data.path(), &["--callback-allow", "127.0.0.1:9"]);
    let key = |name: &str, manage: bool| {
        let r = s.post_json(
            "/api/v1/api_keys",
            TOKEN,
            &json!({"name": name, "manage_projects": manage}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["manage_projects"], manage);
        r.json()["key"].as_str().unwrap().to_string()
    };
    let user = key("student", false);
    let teacher = key("teacher", true);
    let tar = tar_of(&examples().join("aplusb-python"));
    // A key without manage_projects may not create, replace or delete projects.
    let e = s
        .post_bytes("/api/v1/projects", &user, "application/x-tar", &tar)
        .assert_error(403);
    assert!(e["message"].as_str().unwrap().contains("manage_projects"));
    let r = s.post_bytes(
        "/api/v1/projects?id=apb",
        &teacher,
        "application/x-tar",
        &tar,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    s.post_bytes(
        "/api/v1/projects?id=apb",
        &teacher,
        "application/x-tar",
        &tar,
    )
    .assert_error(409);
    // Every key lists and reads them.
    let r = s.req("GET", "/api/v1/projects", Some(&user), None);
    assert_eq!(r.json()["paging"]["total"], 1);
    let r = s.req("GET", "/api/v1/projects/apb", Some(&user), None);
    assert_eq!(r.json()["default_scenario"], "default");
    s.req(
        "PUT",
        "/api/v1/projects/apb",
        Some(&user),
        Some(("application/x-tar", &tar)),
    )
    .assert_error(403);
    s.req("DELETE", "/api/v1/projects/apb", Some(&user), None)
        .assert_error(403);
    // PUT replaces (a new revision), or creates under that id.
    let r = s.req(
        "PUT",
        "/api/v1/projects/apb",
        Some(&teacher),
        Some(("application/x-tar", &tar)),
    );
    assert_eq!(
        (r.status, r.json()["revision"].clone()),
        (200, json!(2)),
        "{}",
        r.text()
    );
    s.req(
        "PUT",
        "/api/v1/projects/apb2",
        Some(TOKEN),
        Some(("application/x-tar", &tar)),
    )
    .assert_status(201);
    // Only the current revision is kept on disk (no submission uses the old one).
    let revisions: Vec<String> = std::fs::read_dir(data.path().join("projects/apb"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(revisions, ["2"]);
    // A key's submissions are its own.
    let r = s.post_json(
        "/api/v1/submissions",
        &user,
        &json!({"project_id": "apb", "files": {"main.py": solution("aplusb-python", "correct.py")}, "wait": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let mine = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["project"]["revision"], 2);
    s.req(
        "GET",
        &format!("/api/v1/submissions/{mine}"),
        Some(&teacher),
        None,
    )
    .assert_error(404);
    assert_eq!(s.get(&format!("/api/v1/submissions/{mine}")).status, 200);
    let r = s.req("GET", "/api/v1/submissions", Some(&teacher), None);
    assert_eq!(r.json()["paging"]["total"], 0);

    // Bad projects: a clear 400 naming what is wrong.
    let base = json!({"environment": "busybox",
        "config": {"version": 2.1, "scenarios": {"default": {"stages": {"run": {"command": "cat"}}}}},
        "tests": [{"name": "1", "stdin": "x", "expected": "x"}]});
    let bad = |patch: Value, word: &str| {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let e = s
            .post_json("/api/v1/projects", TOKEN, &body)
            .assert_error(400);
        assert!(
            e["message"].as_str().unwrap().contains(word),
            "{patch}: {e}"
        );
    };
    bad(json!({"environment": "nowhere"}), "nowhere");
    bad(
        json!({"config": {"version": 3, "scenarios": {}}}),
        "version",
    );
    bad(
        json!({"config": {"version": 2.1, "scenarios": {"a": {"network": true, "stages": {"run": {"command": "x"}}}}}}),
        "network",
    );
    bad(
        json!({"tests": [{"name": "1", "stdin": "x"}]}),
        "expected output",
    );
    bad(
        json!({"tests": [{"name": "../1", "expected": "x"}]}),
        "test name",
    );
    bad(json!({"checker": {"type": "regex"}}), "regex");
    bad(json!({"files": {"../escape": "x"}}), "leaves");
    bad(json!({"surprise": true}), "surprise");
    bad(json!({"id": "Not An Id"}), "project id");
    // A hostile archive.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_link_name("/etc/passwd").unwrap();
    h.set_path("workspace/link").unwrap();
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let e = s
        .post_bytes(
            "/api/v1/projects?environment=busybox",
            TOKEN,
            "application/x-tar",
            &b.into_inner().unwrap(),
        )
        .assert_error(400);
    assert!(
        e["message"].as_str().unwrap().contains("symbolic link"),
        "{e}"
    );
    // Submissions to nothing, or with nothing.
    s.post_json("/api/v1/submissions", TOKEN, &json!({"files": {}}))
        .assert_error(400);
    s.post_json(
        "/api/v1/submissions",
        TOKEN,
        &json!({"project_id": "gone", "files": {}}),
    )
    .assert_error(400);
    s.post_json(
        "/api/v1/submissions",
        TOKEN,
        &json!({"project_id": "apb", "scenario": "other"}),
    )
    .assert_error(400);

    // Delete: gone for everyone; its submissions keep their grades.
    s.req("DELETE", "/api/v1/projects/apb", Some(&teacher), None)
        .assert_status(200);
    s.get("/api/v1/projects/apb").assert_error(404);
    assert!(!data.path().join("projects/apb").exists());
    assert_eq!(
        s.get(&format!("/api/v1/submissions/{mine}")).json()["status"],
        15
    );

    // Deleting a key erases its submissions, their callbacks and files (its id is never used
    // again); a new key of its name sees none of it. The projects a key made stay.
    let r = s.post_json(
        "/api/v1/submissions",
        &user,
        &json!({"project_id": "apb2", "files": {"main.py": solution("aplusb-python", "wrong.py")},
                "callback": {"url": "http://127.0.0.1:9/graded"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let called = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(sql_count(&data, "SELECT COUNT(*) FROM callbacks"), 1);
    let r = s.delete("/api/v1/api_keys/student").assert_status(200);
    assert_eq!(r.json()["submissions_erased"], 2, "{}", r.text());
    for id in [&mine, &called] {
        s.get(&format!("/api/v1/submissions/{id}"))
            .assert_error(404);
        s.get(&format!("/api/v1/submissions/{id}/callbacks"))
            .assert_error(404);
        assert!(!data.path().join("submissions").join(id).exists());
    }
    for table in [
        "submissions",
        "submission_stages",
        "submission_tests",
        "callbacks",
    ] {
        assert_eq!(
            sql_count(&data, &format!("SELECT COUNT(*) FROM {table}")),
            0,
            "{table}"
        );
    }
    let student2 = key("student", false);
    let r = s.req("GET", "/api/v1/submissions", Some(&student2), None);
    assert_eq!(r.json()["paging"]["total"], 0);
    s.req(
        "PUT",
        "/api/v1/projects/apb3",
        Some(&teacher),
        Some(("application/x-tar", &tar)),
    )
    .assert_status(201);
    let r = s.delete("/api/v1/api_keys/teacher");
    assert_eq!(r.json()["submissions_erased"], 0, "{}", r.text());
    assert_eq!(s.get("/api/v1/projects/apb3").status, 200);
}

/// A count from the server's database (read while it runs: SQLite's WAL lets a reader in).
fn sql_count(data: &tempfile::TempDir, query: &str) -> i64 {
    let url = format!(
        "sqlite://{}?mode=ro",
        data.path().join("sandpit.db").display()
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&url).await.expect("open");
            let n: i64 = sqlx::query_scalar(query)
                .fetch_one(&mut c)
                .await
                .expect(query);
            c.close().await.expect("close");
            n
        })
}

/// A busybox project whose second test takes a while: time to kill the server mid-grading.
fn slow_project(s: &Server) {
    let r = s.post_json(
        "/api/v1/projects",
        TOKEN,
        &json!({"id": "slow", "environment": "busybox",
        "artifacts": ["built"],
        "limits": {"cpu_time_s": 5, "wall_time_s": 20},
        "config": {"version": 2.1, "scenarios": {"default": {"stages": {
            "build": {"command": "echo built > built"},
            "run": {"command": "sh main.sh"}}}}},
        "tests": [
            {"name": "fast", "stdin": "fast\n", "expected": "fast built\n"},
            {"name": "slow", "stdin": "slow\n", "expected": "slow built\n"},
        ]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

const SLOW_SH: &str = "read w; [ \"$w\" = slow ] && sleep 4; echo \"$w $(cat built)\"\n";

#[test]
fn submissions_survive_kill_9_and_resume_from_the_last_finished_stage() {
    let data = data_with_envs();
    let mut s = Server::start(data.path(), &["--slots", "1"]);
    slow_project(&s);
    let create = |s: &Server| {
        let r = s.post_json(
            "/api/v1/submissions",
            TOKEN,
            &json!({"project_id": "slow", "files": {"main.sh": SLOW_SH}}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_string()
    };
    let running = create(&s);
    let waiting = create(&s);
    // Killed while the second test runs: the build and the first test are done.
    wait_until("the first test ends", 60, || {
        s.get(&format!("/api/v1/submissions/{running}")).json()["tests"]
            .as_array()
            .is_some_and(|t| t.len() == 1)
    });
    s.kill9();
    let s = Server::start(data.path(), &["--slots", "1"]);
    for id in [&running, &waiting] {
        wait_until("it is graded after the restart", 120, || {
            s.get(&format!("/api/v1/submissions/{id}")).json()["executing"] == false
        });
    }
    let v = s.get(&format!("/api/v1/submissions/{running}")).json();
    assert_eq!(v["status"], 15, "{v}");
    assert_eq!(v["attempts"], 1);
    assert_eq!(verdicts(&v), ["accepted", "accepted"]);
    assert_eq!(
        v["stages"].as_array().unwrap().len(),
        1,
        "the build ran once: {v}"
    );
    let log = v["debug_log"].as_str().unwrap();
    assert!(
        log.contains("resumed") && log.contains("[build]") && log.contains("1 test"),
        "{log}"
    );
    let v = s.get(&format!("/api/v1/submissions/{waiting}")).json();
    assert_eq!(
        (v["status"].clone(), v["attempts"].clone()),
        (json!(15), json!(0)),
        "{v}"
    );
}

#[test]
fn a_submission_interrupted_too_often_ends_as_internal_error() {
    let data = data_with_envs();
    let mut s = Server::start(data.path(), &["--slots", "1"]);
    slow_project(&s);
    let r = s.post_json(
        "/api/v1/submissions",
        TOKEN,
        &json!({"project_id": "slow", "files": {"main.sh": SLOW_SH}}),
    );
    let id = r.json()["id"].as_str().unwrap().to_string();
    for attempt in 0..3 {
        wait_until("the slow test runs", 60, || {
            let v = s.get(&format!("/api/v1/submissions/{id}")).json();
            v["attempts"] == attempt
                && v["stage"] == "run"
                && v["tests"].as_array().is_some_and(|t| t.len() == 1)
        });
        s.kill9();
        s = Server::start(data.path(), &["--slots", "1"]);
    }
    wait_until("it ends", 30, || {
        s.get(&format!("/api/v1/submissions/{id}")).json()["executing"] == false
    });
    let v = s.get(&format!("/api/v1/submissions/{id}")).json();
    assert_eq!(v["status"], 20, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("3 times"), "{v}");
    assert!(v["debug_log"].as_str().unwrap().contains("not tried again"));
}

/// One HTTP request a loopback receiver got: its headers (lower-case names) and body.
struct Delivery {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A callback receiver on 127.0.0.1: answers 200 to the first request and hands it over.
fn receive_one() -> (u16, std::sync::mpsc::Receiver<Delivery>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let Some((k, v)) = line.trim_end().split_once(':') else {
                break;
            };
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let mut w = stream;
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK")
            .unwrap();
        let _ = tx.send(Delivery { headers, body });
    });
    (port, rx)
}

#[test]
fn a_submission_callback_arrives_signed_with_the_final_object() {
    use hmac::{Hmac, Mac};
    let data = data_with_envs();
    let (port, got) = receive_one();
    let allow = format!("127.0.0.1:{port}");
    let s = Server::start(data.path(), &["--callback-allow", &allow]);
    create_example(&s, "aplusb-python");
    let secret = "a-shared-secret-for-submissions";
    let r = s.post_json(
        "/api/v1/submissions",
        TOKEN,
        &json!({"project_id": "aplusb-python",
                "files": {"main.py": solution("aplusb-python", "wrong.py")},
                "callback": {"url": format!("http://127.0.0.1:{port}/graded"), "secret": secret}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let d = got
        .recv_timeout(Duration::from_secs(120))
        .expect("the callback arrives");
    let header = |name: &str| {
        d.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("x-sandpit-event").as_deref(),
        Some("submission.ended")
    );
    // Sphere's webhook scheme: HMAC-SHA256 of the raw body, in hex.
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&d.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(header("x-sphere-engine-signature"), Some(want));
    // The body is the final object: what GET returns.
    let object: Value = serde_json::from_slice(&d.body).expect("JSON body");
    let v = s.get(&format!("/api/v1/submissions/{id}")).json();
    assert_eq!(object, v);
    assert_graded(&object, 14, 10.0);
    wait_until("the attempt is recorded as delivered", 30, || {
        let items = s.get(&format!("/api/v1/submissions/{id}/callbacks")).json();
        items["items"][0]["state"] == "delivered"
    });
    // A host off the allow-list is refused at creation, and nothing is graded.
    let e = s
        .post_json(
            "/api/v1/submissions",
            TOKEN,
            &json!({"project_id": "aplusb-python", "files": {"main.py": ""},
                    "callback": {"url": "http://10.1.2.3/x"}}),
        )
        .assert_error(400);
    assert!(e["message"].as_str().unwrap().contains("10.1.2.3"), "{e}");
    assert_eq!(s.get("/api/v1/submissions").json()["paging"]["total"], 1);
    // Deleting the submission deletes its callbacks.
    s.delete(&format!("/api/v1/submissions/{id}"))
        .assert_status(200);
}

/// The guessing game's interactor in busybox sh: `interactor.sh input output answer`; tells
/// the solution n, answers each guess with <, > or =, and gives as many guesses as binary
/// search needs. testlib's exit codes: 0 ok, 1 wrong answer, 2 presentation error.
const GUESS_INTERACTOR: &str = r#"read n secret < "$1"
limit=0
while [ $((1 << limit)) -le "$n" ]; do limit=$((limit + 1)); done
echo "$n"
g=0
while :; do
  if ! read x; then echo "wrong output format: unexpected end of file after $g guesses" >&2; exit 2; fi
  g=$((g + 1))
  case "$x" in ''|*[!0-9]*) echo "wrong output format: guess $g is not a number" >&2; exit 2;; esac
  if [ "$x" -lt 1 ] || [ "$x" -gt "$n" ]; then echo "wrong answer: guess $g is outside 1..$n" >&2; exit 1; fi
  if [ "$x" -eq "$secret" ]; then
    echo "="; echo "$g" > "$2"; echo "ok: found $secret in $g guesses" >&2; exit 0
  fi
  if [ "$g" -ge "$limit" ]; then echo "wrong answer: no guesses left after $g" >&2; exit 1; fi
  if [ "$secret" -lt "$x" ]; then echo "<"; else echo ">"; fi
done
"#;

/// Binary search: accepted.
const GUESS_CORRECT: &str = r#"read n
lo=1; hi=$n
while :; do
  mid=$(( (lo + hi) / 2 ))
  echo "$mid"
  read r
  case "$r" in
    "=") exit 0;;
    "<") hi=$((mid - 1));;
    ">") lo=$((mid + 1));;
  esac
done
"#;

/// Guesses 1, 2, 3…: right on a secret of 1, out of guesses on a large one.
const GUESS_LINEAR: &str = r#"read n
i=1
while :; do echo "$i"; read r; [ "$r" = "=" ] && exit 0; i=$((i + 1)); done
"#;

/// Reads n, then waits for an answer to a guess it never made.
const GUESS_SILENT: &str = "read n\nread never\n";

/// Reads n and leaves.
const GUESS_QUITS: &str = "read n\nexit 0\n";

fn guessing_project(id: &str, interactor: Value) -> Value {
    json!({
        "id": id,
        "environment": "busybox",
        "source": "main.sh",
        "limits": {"cpu_time_s": 1, "wall_time_s": 2, "memory_bytes": 67108864},
        "config": {"version": 2.1, "scenarios": {"default": {"stages": {
            "run": {"command": "/bin/sh main.sh"}}}}},
        "tests": [
            {"name": "small", "stdin": "10 1\n"},
            {"name": "large", "stdin": "1000 777\n", "weight": 2},
        ],
        "interactor": interactor,
    })
}

/// An interactive problem given as JSON (the interactor's files in the body), graded over
/// HTTP with a correct solution, a wrong one, one that never answers and one that quits
/// early; the per-test verdicts come from the interactor's exit codes, the solution's own
/// limits first. Bad interactor input is a 400 naming it, and nothing is left running.
#[test]
fn an_interactive_project_in_json_is_judged_by_its_interactor() {
    let data = data_with_envs();
    // No sandbox kept ready: every sandbox process or cgroup found at the end was left by a
    // test's run.
    let s = Server::start(data.path(), &["--prepared", "0"]);
    let interactor = json!({"command": ["/bin/sh", "interactor.sh"], "files": {"interactor.sh": GUESS_INTERACTOR}});

    for (bad, word) in [
        (
            json!({"command": ["sh", "i.sh"], "files": ["i.sh"]}),
            "interactor.files",
        ),
        (
            json!({"command": ["sh", "i.sh"], "files": {"../i.sh": "x"}}),
            "interactor.files",
        ),
        (
            json!({"command": ["sh", "i.sh"], "files": {"/i.sh": "x"}}),
            "interactor.files",
        ),
        (
            json!({"command": ["sh", "i.sh"], "files": {"i.sh": {"content": "!", "encoding": "base64"}}}),
            "interactor.files",
        ),
        (
            json!({"command": ["sh", "input"], "files": {"input": "x"}}),
            "input, output or answer",
        ),
        (json!({"command": [], "files": {"i.sh": "x"}}), "command"),
        (json!({"files": {"i.sh": "x"}}), "command"),
        (
            json!({"command": ["sh", "i.sh"], "surprise": 1}),
            "surprise",
        ),
        (
            json!({"command": ["sh", "i.sh"], "environment": "nope"}),
            "nope",
        ),
    ] {
        let r = s.post_json(
            "/api/v1/projects",
            TOKEN,
            &guessing_project("bad", bad.clone()),
        );
        let e = r.assert_error(400);
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains(word), "{bad}: {e}");
    }

    let r = s.post_json(
        "/api/v1/projects",
        TOKEN,
        &guessing_project("guess", interactor),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let p = r.json();
    assert_eq!(
        p["interactor"]["command"],
        json!(["/bin/sh", "interactor.sh"]),
        "{p}"
    );
    assert!(
        p["interactor"]["files"].is_null(),
        "the files are not echoed: {p}"
    );

    let grade = |src: &str| submit(&s, "guess", json!({ "main.sh": src }));
    let message = |v: &Value, i: usize| {
        v["tests"][i]["checker_message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    let ok = grade(GUESS_CORRECT);
    assert_eq!(
        (ok["status"].clone(), ok["score"].clone()),
        (json!(15), json!(100.0)),
        "{ok}"
    );
    assert_eq!(verdicts(&ok), ["accepted", "accepted"]);
    assert!(message(&ok, 1).contains("found 777"), "{ok}");
    assert_hwscore(&ok);
    // One partial for the test cases, a line of detail per test with the interactor's word.
    let detail = ok["report"]["partials"][0]["detail"]
        .as_array()
        .expect("detail");
    assert_eq!(detail.len(), 2, "{ok}");
    assert_eq!(detail[1]["kwargs"]["test"], "large");
    assert!(
        detail[1]["kwargs"]["message"]
            .as_str()
            .unwrap()
            .contains("found 777"),
        "{ok}"
    );
    assert_eq!(ok["report"]["accepted"], true);

    // Wrong: out of guesses on the large test, by the interactor's exit 1.
    let wrong = grade(GUESS_LINEAR);
    assert_eq!(wrong["status"], 14, "{wrong}");
    assert_eq!(verdicts(&wrong), ["accepted", "wrong-answer"]);
    assert!(message(&wrong, 1).contains("no guesses left"), "{wrong}");
    let score = wrong["score"].as_f64().unwrap();
    assert!((score - 100.0 / 3.0).abs() < 0.01, "{wrong}");
    assert_hwscore(&wrong);
    assert_eq!(wrong["report"]["accepted"], false);
    assert!(
        wrong["reason"].as_str().unwrap().contains("large"),
        "{wrong}"
    );

    // Never answers: its own wall limit ends it, the interactor then reads the end of file
    // and ends too; the verdict is the solution's time limit, not the interactor's word.
    let silent = grade(GUESS_SILENT);
    assert_eq!(silent["status"], 13, "{silent}");
    assert_eq!(verdicts(&silent), ["time-limit", "time-limit"]);
    for t in silent["tests"].as_array().unwrap() {
        assert_eq!(t["timeout"], "wall", "{t}");
        let wall = t["wall_time"].as_f64().unwrap();
        assert!(
            (2.0..12.0).contains(&wall),
            "ended by its 2 s wall limit: {t}"
        );
        assert_eq!(t["score"], 0.0);
    }
    assert_hwscore(&silent);

    // Quits after reading n: the interactor reads the end of file (exit 2).
    let quits = grade(GUESS_QUITS);
    assert_eq!(quits["status"], 14, "{quits}");
    assert_eq!(
        verdicts(&quits),
        ["presentation-error", "presentation-error"]
    );
    assert!(message(&quits, 0).contains("end of file"), "{quits}");
    assert_eq!(
        quits["tests"][0]["exit_code"], 0,
        "the solution exited by itself"
    );
    assert_hwscore(&quits);

    // Every program of every test ended: no sandbox process, no cgroup of the server's
    // (once the engine's background teardown of the last one is through).
    let (processes, cgroups) = common::left_behind_settled(&s);
    assert_eq!(processes, 0, "sandboxed processes left running");
    assert!(cgroups.is_empty(), "{cgroups:?}");
}

/// A zip of files (deflated).
fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    zip_with(entries, |_| {})
}

/// A zip of files, then of what `extra` adds.
fn zip_with(
    entries: &[(&str, &[u8])],
    extra: impl FnOnce(&mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>),
) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
    for (path, data) in entries {
        w.start_file(*path, opts).expect("zip");
        w.write_all(data).expect("zip");
    }
    extra(&mut w);
    w.finish().expect("zip").into_inner()
}

/// A zip of a directory's files (its contents at the archive's root).
fn zip_of(dir: &Path) -> Vec<u8> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).expect("dir").flatten() {
            if e.file_type().expect("type").is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(e.path()).expect("read")));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    let entries: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), &d[..])).collect();
    zip_bytes(&entries)
}

/// Rewrites the uncompressed size every header of a zip declares.
fn declare_size(mut zip: Vec<u8>, size: u32) -> Vec<u8> {
    for (sig, at) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
        let mut i = 0;
        while let Some(off) = zip[i..].windows(4).position(|w| w == sig) {
            let field = i + off + at;
            zip[field..field + 4].copy_from_slice(&size.to_le_bytes());
            i += off + 4;
        }
    }
    zip
}

/// Projects and submissions may be zips: told from tars by their content (whatever type the
/// request says), under the same rules: a path leaving the directory, an absolute path, a
/// link, too many entries and a zip bomb (declared, or lying about its size) are each a 400
/// that says why, and nothing of them is kept.
#[test]
fn zip_uploads_are_read_by_content_under_the_tar_rules() {
    let data = data_with_envs();
    let s = Server::start(data.path(), &["--max-upload", "1M"]);
    let zip = zip_of(&examples().join("aplusb-c"));
    for (id, media) in [
        ("zipped", "application/zip"),
        ("sniffed", "application/octet-stream"),
        ("named-tar", "application/x-tar"),
    ] {
        let r = s.post_bytes(&format!("/api/v1/projects?id={id}"), TOKEN, media, &zip);
        assert_eq!(r.status, 201, "{media}: {}", r.text());
        assert_eq!(r.json()["tests"].as_array().unwrap().len(), 10);
    }
    // A submission as a zip body, and as a zip in the JSON's `archive` (Sphere's workspace/
    // folder as its root).
    let correct = solution("aplusb-c", "correct.c");
    let r = s.post_bytes(
        "/api/v1/submissions?project_id=zipped&wait=true",
        TOKEN,
        "application/zip",
        &zip_bytes(&[("main.c", correct.as_bytes())]),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["status"], 15, "{}", r.text());
    use base64::Engine as _;
    let inner = zip_bytes(&[("workspace/main.c", correct.as_bytes())]);
    let r = s.post_json(
        "/api/v1/submissions",
        TOKEN,
        &json!({"project_id": "sniffed", "wait": true, "archive": {
            "content": base64::engine::general_purpose::STANDARD.encode(inner), "encoding": "base64"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["status"], 15, "{}", r.text());
    let submissions_before = s
        .req("GET", "/api/v1/submissions", Some(TOKEN), None)
        .json()["paging"]["total"]
        .clone();

    let project_files: Vec<(String, Vec<u8>)> = [
        "project.json",
        "config.json",
        "tests/1/input",
        "tests/1/output",
    ]
    .iter()
    .map(|f| {
        (
            f.to_string(),
            std::fs::read(
                examples()
                    .join("aplusb-c")
                    .join(f.replace("tests/1", "tests/01")),
            )
            .expect("example file"),
        )
    })
    .collect();
    let project_with = |extra: &[(&str, &[u8])]| {
        let mut entries: Vec<(&str, &[u8])> = project_files
            .iter()
            .map(|(p, d)| (p.as_str(), &d[..]))
            .collect();
        entries.extend_from_slice(extra);
        zip_bytes(&entries)
    };
    let zeros = vec![0u8; 2 << 20];
    let many: Vec<(String, Vec<u8>)> = (0..10_001)
        .map(|i| (format!("f/{i}"), Vec::new()))
        .collect();
    let many: Vec<(&str, &[u8])> = many.iter().map(|(p, d)| (p.as_str(), &d[..])).collect();
    let link = zip_with(&[("main.c", b"int main;")], |w| {
        w.add_symlink(
            "lib.h",
            "/etc/shadow",
            zip::write::SimpleFileOptions::default(),
        )
        .expect("zip")
    });
    // (what, route, body, words the 400 says)
    let project = "/api/v1/projects";
    let submission = "/api/v1/submissions?project_id=zipped";
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "traversal",
            project,
            project_with(&[("workspace/../../x", b"1")]),
            "leaves",
        ),
        (
            "traversal",
            submission,
            zip_bytes(&[("../main.c", b"1")]),
            "leaves",
        ),
        (
            "absolute",
            project,
            project_with(&[("/etc/cron.d/x", b"1")]),
            "leaves",
        ),
        (
            "absolute",
            submission,
            zip_bytes(&[("/main.c", b"1")]),
            "leaves",
        ),
        ("symlink", submission, link.clone(), "symbolic link"),
        (
            "too many entries",
            submission,
            zip_bytes(&many),
            "more than 10000 entries",
        ),
        (
            "bomb",
            project,
            project_with(&[("workspace/zeros", &zeros)]),
            "more than 1048576 bytes",
        ),
        (
            "lying bomb",
            project,
            declare_size(project_with(&[("workspace/zeros", &zeros)]), 1),
            "the archive",
        ),
        (
            "not a zip",
            submission,
            b"PK\x03\x04 and then nothing".to_vec(),
            "not a readable zip",
        ),
    ];
    for (what, route, body, word) in cases {
        let r = s.post_bytes(route, TOKEN, "application/zip", &body);
        assert_eq!(r.status, 400, "{what} at {route}: {}", r.text());
        r.assert_refused(400, word);
    }
    // A zip bomb past a submission's 256 MiB, declared and lying: refused, nothing kept.
    let big = vec![0u8; 257 << 20];
    let bomb = zip_bytes(&[("main.c", &big)]);
    drop(big);
    assert!(bomb.len() < 2 << 20, "{} bytes compressed", bomb.len());
    for body in [bomb.clone(), declare_size(bomb, 10)] {
        s.post_bytes(submission, TOKEN, "application/zip", &body)
            .assert_refused(400, "the archive");
    }
    let after = s
        .req("GET", "/api/v1/submissions", Some(TOKEN), None)
        .json()["paging"]["total"]
        .clone();
    assert_eq!(
        after, submissions_before,
        "a refused archive made no submission"
    );
    let left: Vec<_> = std::fs::read_dir(data.path().join("submissions"))
        .expect("submissions")
        .flatten()
        .collect();
    assert_eq!(
        left.len(),
        2,
        "only the two graded submissions' files: {left:?}"
    );
    let staging = data.path().join("projects/.staging");
    let staged = std::fs::read_dir(&staging).map_or(0, |d| d.count());
    assert_eq!(staged, 0, "a refused project left nothing staged");
}
