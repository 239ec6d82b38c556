//! Environments end to end: the `sandpit env` commands, and programs run through
//! `sandpit run --env/--image/--bundle` in the real sandbox (as root, real kernel).
//! The shipped environments come from `make rootfs` (SANDPIT_TEST_DATA).

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::{
    busybox_rootfs, layer, layer_of_dir, sandpit, shipped_data, write_layout, Craft, Entry,
};
use sandpit::env::EnvStore;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sandpit --data DATA run ARGS… --json -- CMD…`, parsed.
fn run_json(data: &Path, args: &[&str], cmd: &[&str]) -> serde_json::Value {
    let out = sandpit()
        .arg("--data")
        .arg(data)
        .arg("run")
        .args(args)
        .arg("--json")
        .arg("--")
        .args(cmd)
        .output()
        .expect("spawn sandpit");
    assert!(
        out.status.success(),
        "sandpit run {args:?} -- {cmd:?} failed ({}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

fn assert_normal(o: &serde_json::Value) {
    assert_eq!(o["end_reason"], "normal", "{o}");
    assert_eq!(o["exit_code"], 0, "{o}");
}

fn env_cmd(data: &Path, args: &[&str]) -> Output {
    sandpit()
        .arg("--data")
        .arg(data)
        .arg("env")
        .args(args)
        .output()
        .expect("spawn sandpit")
}

/// A two-layer test image on top of the busybox rootfs: a whiteout and an opaque dir above.
fn busybox_image(dir: &Path) -> String {
    let upper = layer(&[
        Entry::Dir("data/"),
        Entry::File("data/.wh.gone", vec![], 0o644),
        Entry::File("data/new", b"new\n".to_vec(), 0o644),
        Entry::Dir("opq/"),
        Entry::File("opq/.wh..wh..opq", vec![], 0o644),
        Entry::File("opq/fresh", b"fresh\n".to_vec(), 0o644),
        Entry::File("etc/motd", b"v2\n".to_vec(), 0o644),
    ]);
    let middle = layer(&[
        Entry::Dir("data/"),
        Entry::File("data/gone", b"gone\n".to_vec(), 0o644),
        Entry::File("data/keep", b"keep\n".to_vec(), 0o644),
        Entry::Dir("opq/"),
        Entry::File("opq/stale", b"stale\n".to_vec(), 0o644),
        Entry::File("etc/motd", b"v1\n".to_vec(), 0o644),
    ]);
    let craft = Craft {
        gzip: true,
        env: vec!["PATH=/bin:/usr/bin".into(), "GREETING=from-image".into()],
        cmd: vec!["/bin/sh".into(), "-c".into(), "echo $GREETING; pwd".into()],
        workdir: Some("/tmp".into()),
        ..Default::default()
    };
    write_layout(
        dir,
        &[layer_of_dir(&busybox_rootfs()), middle, upper],
        &craft,
    )
}

#[test]
fn env_commands() {
    let data = tempfile::tempdir().expect("tempdir");
    let img = tempfile::tempdir().expect("tempdir");
    let digest = busybox_image(img.path());
    let out = env_cmd(
        data.path(),
        &[
            "import",
            &img.path().display().to_string(),
            "--envid",
            "bb",
            "--name",
            "BusyBox test",
            "--description",
            "d",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "bb");
    let out = env_cmd(data.path(), &["list"]);
    assert_eq!(text(&out.stdout), "bb\tBusyBox test\n");
    let out = env_cmd(data.path(), &["show", "bb"]);
    let env: serde_json::Value = serde_json::from_slice(&out.stdout).expect("show prints JSON");
    assert_eq!(env["image_digest"], digest.as_str());
    assert_eq!(env["layers"].as_array().map(|a| a.len()), Some(3));
    assert_eq!(env["defaults"]["cwd"], "/tmp");

    // Bad input: exit 2 and one line.
    for args in [
        &["show", "nope"][..],
        &["show", "../etc"],
        &["rm", "nope"],
        &["import", "/nonexistent"],
    ] {
        let out = env_cmd(data.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            text(&out.stderr).lines().count(),
            1,
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = env_cmd(
        data.path(),
        &["import", &img.path().display().to_string(), "--envid", "bb"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "duplicate envid: {}",
        text(&out.stderr)
    );

    // rm is refused while a run holds the environment (a lease held by this process).
    let store = EnvStore::open(data.path()).expect("open");
    let lease = store.acquire("bb").expect("acquire");
    let out = env_cmd(data.path(), &["rm", "bb"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );
    drop(lease);
    let out = env_cmd(data.path(), &["rm", "bb"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&env_cmd(data.path(), &["list"]).stdout).is_empty());
    assert!(store.images().stored_layers().expect("layers").is_empty());
}

#[test]
fn run_needs_exactly_one_root() {
    let data = tempfile::tempdir().expect("tempdir");
    for args in [
        &[][..],
        &["--env", "a", "--rootfs", "/"],
        &["--image", "/x", "--bundle", "/y"],
    ] {
        let out = sandpit()
            .arg("--data")
            .arg(data.path())
            .arg("run")
            .args(args)
            .args(["--", "true"])
            .output()
            .expect("spawn");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            text(&out.stderr).lines().count(),
            1,
            "{}",
            text(&out.stderr)
        );
    }
    let out = sandpit()
        .arg("--data")
        .arg(data.path())
        .args(["run", "--env", "missing", "--", "true"])
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no environment 'missing'"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn multi_layer_image_runs_with_its_merged_view_and_defaults() {
    let data = tempfile::tempdir().expect("tempdir");
    let img = tempfile::tempdir().expect("tempdir");
    busybox_image(img.path());
    let image = img.path().display().to_string();
    let o = run_json(
        data.path(),
        &["--image", &image],
        &[
            "/bin/sh",
            "-c",
            "echo D:$(ls /data); echo O:$(ls /opq); cat /etc/motd",
        ],
    );
    assert_normal(&o);
    assert_eq!(o["stdout"], "D:keep new\nO:fresh\nv2\n", "{o}");
    // No command given: the image's Cmd, Env and WorkingDir apply.
    let out = sandpit()
        .arg("--data")
        .arg(data.path())
        .args(["run", "--image", &image, "--json"])
        .output()
        .expect("spawn");
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_normal(&o);
    assert_eq!(o["stdout"], "from-image\n/tmp\n", "{o}");
    // The second run reused the stored image: one record, three layers.
    let store = EnvStore::open(data.path()).expect("open");
    assert_eq!(store.images().images().expect("images").len(), 1);
    assert_eq!(store.images().stored_layers().expect("layers").len(), 3);
}

#[test]
fn a_run_cannot_alter_its_image() {
    let data = shipped_data();
    let store = EnvStore::open(&data).expect("open");
    let layers = store
        .get("python3")
        .expect("get")
        .expect("python3 env")
        .layers;
    let top = store
        .images()
        .layer_path(&layers[layers.len() - 1])
        .expect("layer path");
    let passwd_before = fs::read(top.join("etc/passwd")).expect("image /etc/passwd");
    let vandal =
        "rm -rf /bin/ls /usr/bin/python3* 2>/dev/null; echo pwned > /etc/passwd 2>/dev/null; \
                  mkdir -p /tmp/x; echo done";
    let o = run_json(&data, &["--env", "python3"], &["/bin/sh", "-c", vandal]);
    assert_eq!(o["end_reason"], "normal", "{o}");
    let o = run_json(
        &data,
        &["--env", "python3"],
        &[
            "/bin/sh",
            "-c",
            "ls /bin/ls && head -1 /etc/passwd && python3 -c 'print(1)'",
        ],
    );
    assert_normal(&o);
    let out = o["stdout"].as_str().unwrap_or_default();
    let first = String::from_utf8_lossy(&passwd_before)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(out.starts_with(&format!("/bin/ls\n{first}\n")), "{o}");
    assert!(out.ends_with("1\n"), "{o}");
    assert_eq!(
        fs::read(top.join("etc/passwd")).expect("read"),
        passwd_before
    );
    assert!(top.join("bin/ls").exists() || top.join("usr/bin/ls").exists());
}

#[test]
fn python_program_runs_in_the_python3_environment_with_limits() {
    let data = shipped_data();
    let dir = tempfile::tempdir().expect("tempdir");
    let prog = dir.path().join("prog.py");
    fs::write(
        &prog,
        "import sys, json\nprint(json.dumps({'v': sys.version_info[0], 's': sum(range(100))}))\n",
    )
    .expect("write");
    // The program comes on stdin (python3 -): no file needs copying in.
    let stdin = prog.display().to_string();
    let o = run_json(
        &data,
        &[
            "--env",
            "python3",
            "--memory",
            "128M",
            "--time",
            "5s",
            "--wall-time",
            "20s",
            "--pids",
            "32",
            "--stdin",
            &stdin,
        ],
        &["python3", "-"],
    );
    assert_normal(&o);
    assert_eq!(o["stdout"], "{\"v\": 3, \"s\": 4950}\n", "{o}");
    // The memory limit holds.
    let o = run_json(
        &data,
        &[
            "--env",
            "python3",
            "--memory",
            "64M",
            "--time",
            "5s",
            "--wall-time",
            "20s",
        ],
        &["python3", "-c", "x = bytearray(256 << 20); print(len(x))"],
    );
    assert_ne!(
        o["end_reason"], "normal",
        "256 MiB under a 64 MiB limit: {o}"
    );
}

#[test]
fn c_program_compiles_and_runs_in_the_c_environment() {
    let data = shipped_data();
    let dir = tempfile::tempdir().expect("tempdir");
    // The sources come in a shell script on stdin that writes them into the work dir.
    let script = dir.path().join("build.sh");
    fs::write(
        &script,
        r#"set -e
cat > hello.c <<'END'
#include <stdio.h>
int main(void){long s=0;for(int i=0;i<1000;i++)s+=i;printf("hello %ld\n",s);return 0;}
END
cat > hi.cpp <<'END'
#include <iostream>
#include <vector>
int main(){std::vector<int> v{1,2,3};std::cout<<"c++ "<<v.size()<<std::endl;}
END
printf 'hello: hello.c\n\tgcc -O2 -o hello hello.c\n' > Makefile
make -s hello
./hello
g++ -O1 -o hi hi.cpp
./hi
"#,
    )
    .expect("write");
    let stdin = script.display().to_string();
    let o = run_json(
        &data,
        &[
            "--env",
            "c",
            "--memory",
            "512M",
            "--time",
            "20s",
            "--wall-time",
            "60s",
            "--pids",
            "64",
            "--stdin",
            &stdin,
        ],
        &["/bin/sh", "-s"],
    );
    assert_normal(&o);
    assert_eq!(o["stdout"], "hello 499500\nc++ 3\n", "{o}");
}

#[test]
fn bundle_runs_with_its_process_and_limits() {
    let bundle = tempfile::tempdir().expect("tempdir");
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": busybox_rootfs(), "readonly": true},
        "process": {
            "terminal": false,
            "user": {"uid": 1234, "gid": 1234},
            "args": ["/bin/sh", "-c", "echo $FOO; id -u; pwd"],
            "env": ["PATH=/bin", "FOO=bar"],
            "cwd": "/tmp"
        },
        "hostname": "bundled",
        "hooks": {"prestart": [{"path": "/bin/false"}]},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}],
            "resources": {"memory": {"limit": 67108864}, "pids": {"limit": 16}}
        }
    });
    fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec(&config).expect("json"),
    )
    .expect("write");
    let data = tempfile::tempdir().expect("tempdir");
    let out = sandpit()
        .arg("--data")
        .arg(data.path())
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg("--json")
        .output()
        .expect("spawn");
    assert!(
        text(&out.stderr).contains("hooks"),
        "unsupported fields must be reported: {}",
        text(&out.stderr)
    );
    let o: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    assert_normal(&o);
    assert_eq!(o["stdout"], "bar\n1234\n/tmp\n", "{o}");
}

#[test]
fn the_layer_store_is_root_owned_and_writable_by_root_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    // An image whose files are world-writable or owned by real host users (nobody, uid 1000).
    let img = tempfile::tempdir().expect("tempdir");
    let planted = layer(&[
        Entry::Owned("ww.txt", b"world-writable\n".to_vec(), 0o666, 0, 0),
        Entry::Owned("nobody.txt", b"nobody's\n".to_vec(), 0o644, 65534, 65534),
        Entry::Owned("user.txt", b"user's\n".to_vec(), 0o664, 1000, 1000),
        Entry::Owned("suid", b"#!/bin/sh\n".to_vec(), 0o6777, 1000, 1000),
    ]);
    write_layout(
        img.path(),
        &[layer_of_dir(&busybox_rootfs()), planted],
        &Craft::default(),
    );
    // World-traversable, so that only the store's own modes stand between `nobody` and it.
    let data = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(data.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let store = EnvStore::open(data.path()).expect("open");
    store
        .import(
            img.path(),
            sandpit::env::NewEnvironment {
                envid: Some("owned".into()),
                ..Default::default()
            },
        )
        .expect("import");

    let layers = data.path().join("layers");
    let mut files = 0;
    let mut walk = vec![layers.clone()];
    while let Some(dir) = walk.pop() {
        for e in fs::read_dir(&dir).expect("read_dir").flatten() {
            let m = fs::symlink_metadata(e.path()).expect("lstat");
            assert_eq!((m.uid(), m.gid()), (0, 0), "{}", e.path().display());
            if !m.file_type().is_symlink() {
                assert_eq!(
                    m.mode() & 0o6022,
                    0,
                    "{:o} {}",
                    m.mode(),
                    e.path().display()
                );
            }
            if m.is_dir() {
                walk.push(e.path());
            } else if m.is_file() {
                files += 1;
            }
        }
    }
    assert!(files >= 5, "{files} files in the store");

    // As host user nobody: appending to any file and creating a file in any directory of the
    // data directory fails; reading works (so it is the modes that stop the writes).
    let script = r#"cd "$1" || exit 9
find . -type f | while read -r f; do printf planted 2>/dev/null >> "$f" && echo "APPENDED $f"; done
find . -type d | while read -r d; do ( : > "$d/planted" ) 2>/dev/null && echo "CREATED $d"; done
cat layers/sha256/*/ww.txt layers/sha256/*/user.txt
"#;
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", script, "sh"])
        .arg(data.path())
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("APPENDED") && !stdout.contains("CREATED"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("world-writable\nuser's\n"),
        "nobody could not read the store: {stdout}{}",
        text(&out.stderr)
    );

    // The next sandbox of the environment reads the files as the image has them.
    let o = run_json(
        data.path(),
        &["--env", "owned"],
        &["/bin/cat", "/ww.txt", "/nobody.txt", "/user.txt"],
    );
    assert_normal(&o);
    assert_eq!(o["stdout"], "world-writable\nnobody's\nuser's\n", "{o}");
}

/// `sandpit --data DATA run --spec FILE [--json]` of `spec`.
fn run_spec(data: &Path, spec: &serde_json::Value, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spec.json");
    fs::write(&file, spec.to_string()).expect("write spec");
    sandpit()
        .arg("--data")
        .arg(data)
        .arg("run")
        .arg("--spec")
        .arg(&file)
        .args(extra)
        .output()
        .expect("spawn sandpit")
}

#[test]
fn a_spec_runs_a_group_with_one_outcome_per_program() {
    let data = shipped_data();
    // A pipeline across two environments: busybox writes, python3 reads; the pipe captured.
    let spec = serde_json::json!({
        "environment": "busybox",
        "programs": [
            {"command": ["sh", "-c", "echo hello; echo there"]},
            {"environment": "python3",
             "command": ["python3", "-c", "import sys; print(sys.stdin.read().upper(), end='')"]},
        ],
        "pipes": [{"from": {"program": 0, "fd": 1}, "to": {"program": 1, "fd": 0}, "capture": true}],
        "wall_time_s": 30,
    });
    let out = run_spec(&data, &spec, &["--json"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["end_reason"], "normal", "{v:#}");
    assert_eq!(v["group_timeout"], false);
    let programs = v["programs"].as_array().expect("programs");
    assert_eq!(programs.len(), 2);
    for p in programs {
        assert_normal(p);
    }
    assert_eq!(programs[0]["stdout"], "", "its stdout is the pipe");
    assert_eq!(programs[1]["stdout"], "HELLO\nTHERE\n");
    assert_eq!(v["pipes"][0]["data"], "hello\nthere\n");
    assert_eq!(v["pipes"][0]["bytes"], 12);
    // Without --json: each program's line, the group's, and the streams pass through.
    let out = run_spec(&data, &spec, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO\nTHERE\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("program 0: normal") && err.contains("program 1: normal"),
        "{err}"
    );
    assert!(err.contains("group: normal"), "{err}");
}

#[test]
fn a_spec_of_one_program_and_bad_specs() {
    let data = shipped_data();
    let one = serde_json::json!({
        "environment": "busybox",
        "command": ["sh", "-c", "cat in; cat"],
        "files": {"in": "from a file\n"},
        "stdin": "from stdin\n",
        "limits": {"memory_bytes": 67108864},
    });
    let out = run_spec(&data, &one, &["--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_normal(&v);
    assert_eq!(v["stdout"], "from a file\nfrom stdin\n");
    // Refused before anything runs, exit 2, the reason on stderr.
    let two = serde_json::json!([{"command": ["true"]}, {"command": ["true"]}]);
    let edge = |fp: usize, ff: i32, tp: usize, tf: i32| serde_json::json!({"from": {"program": fp, "fd": ff}, "to": {"program": tp, "fd": tf}});
    for (spec, says) in [
        (
            serde_json::json!({"environment": "busybox", "programs": two.clone(),
                "pipes": [edge(0, 1, 1, 0), edge(0, 1, 1, 4)]}),
            "pipe 1",
        ),
        (
            serde_json::json!({"environment": "busybox", "command": ["true"],
                "files": {"a": {"file_id": "file_1"}}}),
            "file store",
        ),
        (
            serde_json::json!({"environment": "busybox", "command": ["true"], "keep": ["a"]}),
            "'keep'",
        ),
        (
            serde_json::json!({"environment": "nope", "programs": two.clone()}),
            "programs[0].environment",
        ),
        (
            serde_json::json!({"environment": "busybox", "command": ["true"], "surprise": 1}),
            "surprise",
        ),
    ] {
        let out = run_spec(&data, &spec, &["--json"]);
        assert_eq!(out.status.code(), Some(2), "{spec}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(says),
            "{spec}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
    // --spec takes no other way of saying what to run.
    let out = run_spec(&data, &one, &["--env", "busybox"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn an_image_in_a_data_directory_on_tmpfs_imports_and_runs() {
    // tmpfs before Linux 6.6 keeps no `user.*` xattrs; the layers' opaque directories use
    // `trusted.*`, which it does. The tmpfs lives in a private mount namespace of its own.
    let img = tempfile::tempdir().expect("tempdir");
    busybox_image(img.path());
    let mnt = tempfile::tempdir().expect("tempdir");
    let script = format!(
        "mount -t tmpfs -o size=512m sandpit-test {mnt} && \
         {bin} --data {mnt}/data env import {img} --envid bb && \
         {bin} --data {mnt}/data run --env bb --json -- /bin/sh -c 'echo O:$(ls /opq); cat /etc/motd'",
        mnt = mnt.path().display(),
        bin = env!("CARGO_BIN_EXE_sandpit"),
        img = img.path().display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = stdout.lines().last().unwrap_or_default();
    let o: serde_json::Value = serde_json::from_str(json).expect("json");
    assert_normal(&o);
    assert_eq!(o["stdout"], "O:fresh\nv2\n", "{o}");
}
