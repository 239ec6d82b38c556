//! The loader's tests: directories load, bad projects are refused by name.

use std::path::Path;

use super::*;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const CONFIG_TEXT: &str = r#"{"version": 2.1, "scenarios": {"default": {"stages": {
    "build": {"command": "gcc -o solution main.c"}, "run": {"command": "./solution"}}}}}"#;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "config.json", CONFIG_TEXT);
    write(
        dir.path(),
        "project.json",
        r#"{"environment": "c", "source": "main.c"}"#,
    );
    for n in ["1", "2", "10"] {
        write(dir.path(), &format!("tests/{n}/input"), "1 2\n");
        write(dir.path(), &format!("tests/{n}/output"), "3\n");
    }
    dir
}

#[test]
fn a_directory_loads_with_its_tests_in_natural_order() {
    let dir = project();
    let p = ProjectFiles::load(dir.path(), &ManifestDefaults::default()).unwrap();
    let names: Vec<&str> = p.def.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["1", "2", "10"]);
    assert_eq!(p.def.checker, CheckerSpec::Tokens {});
    assert_eq!(p.def.environment, "c");
    let l = p.test_limits(&p.def.tests[0]).unwrap();
    assert_eq!((l.cpu_time_s, l.wall_time_s), (2.0, 5.0));
    assert!(p.test_input("1").is_some() && p.test_answer("1").is_some());
    // The canonical form reads back as the same definition.
    p.canonicalize().unwrap();
    assert!(!dir.path().join(CONFIG).exists());
    let again = ProjectFiles::open(dir.path()).unwrap();
    assert_eq!(again.def, p.def);
}

#[test]
fn listed_tests_limits_and_checkers() {
    let dir = project();
    write(
        dir.path(),
        "project.json",
        r#"{"environment": "c", "limits": {"cpu_time_s": 1},
            "tests": [{"name": "1", "group": "small"}, {"name": "2", "weight": 3,
            "limits": {"memory_bytes": 1048576}}, {"name": "10"}],
            "checker": {"type": "floats", "abs": 0.01}}"#,
    );
    let p = ProjectFiles::load(dir.path(), &ManifestDefaults::default()).unwrap();
    assert_eq!(
        p.def.checker,
        CheckerSpec::Floats {
            abs: 0.01,
            rel: 1e-6
        }
    );
    let l = p.test_limits(&p.def.tests[1]).unwrap();
    assert_eq!(
        (l.memory_bytes, l.cpu_time_s, l.wall_time_s),
        (1 << 20, 1.0, 3.0)
    );
}

#[test]
fn bad_projects_are_refused_by_name() {
    let cases: &[(&str, &str, &str)] = &[
        ("project.json", r#"{"source": "main.c"}"#, "environment"),
        (
            "project.json",
            r#"{"environment": "c", "surprise": 1}"#,
            "surprise",
        ),
        (
            "project.json",
            r#"{"environment": "c", "checker": {"type": "magic"}}"#,
            "magic",
        ),
        (
            "project.json",
            r#"{"environment": "c", "checker": {"type": "tokens", "abs": 1}}"#,
            "abs",
        ),
        (
            "project.json",
            r#"{"environment": "c", "tests": [{"name": "1"}, {"name": "2"}, {"name": "10"}, {"name": "1"}]}"#,
            "twice",
        ),
        (
            "project.json",
            r#"{"environment": "c", "tests": [{"name": "1"}]}"#,
            "not one of the tests",
        ),
        (
            "project.json",
            r#"{"environment": "c", "tests": [{"name": "1"}, {"name": "2"}, {"name": "10"}, {"name": "11"}]}"#,
            "expected output",
        ),
        (
            "project.json",
            r#"{"environment": "c", "limits": {"cpu_time_s": -1}}"#,
            "cpu_time_s",
        ),
        (
            "project.json",
            r#"{"environment": "c", "artifacts": ["/etc/passwd"]}"#,
            "artifacts",
        ),
        ("project.json", r#"{"environment": "C!"}"#, "envid"),
        (
            "project.json",
            r#"{"environment": "c", "checker": {"type": "program", "command": []}}"#,
            "command",
        ),
        (
            "config.json",
            r#"{"version": 2.1, "scenarios": {"a": {"stages": {"build": {"command": "x"}}}}}"#,
            "no run stage",
        ),
        ("tests/x y/output", "", "test name"),
        ("checker/answer", "", "answer"),
        ("tests/1/secret", "", "readable"),
    ];
    for (file, text, word) in cases {
        let dir = project();
        write(dir.path(), file, text);
        if file.ends_with("secret") {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.path().join(file);
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if file.starts_with("checker/") {
            write(
                dir.path(),
                "project.json",
                r#"{"environment": "c", "checker": {"type": "program", "command": ["./check"]}}"#,
            );
        }
        let e = ProjectFiles::load(dir.path(), &ManifestDefaults::default()).unwrap_err();
        assert!(e.contains(word), "{file} {text}: {e}");
    }
    // Without any configuration.
    let dir = project();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = ProjectFiles::load(dir.path(), &ManifestDefaults::default()).unwrap_err();
    assert!(e.contains("config.json"), "{e}");
}
