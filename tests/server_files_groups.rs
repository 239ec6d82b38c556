//! Files kept by reference and programs wired by pipes, through the real HTTP API on loopback,
//! in the shipped `c` and `python3` environments (SANDPIT_TEST_DATA), as root against the real
//! kernel: compile once and run many, owners and expiry, quotas, and an interactive guessing
//! game with a C interactor and solutions in C and Python.

#[path = "server_common/mod.rs"]
mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{left_behind_settled, temp_data, Resp, Server, TOKEN};
use serde_json::{json, Value};

/// The root directory of a shipped environment (each is one image layer).
fn env_root(envid: &str) -> PathBuf {
    let data = std::env::var_os("SANDPIT_TEST_DATA").map(PathBuf::from).expect(
        "SANDPIT_TEST_DATA is not set: run the tests with `make test` (`make rootfs` imports the environments)",
    );
    let store = sandpit::env::EnvStore::open(&data).expect("open the shipped environments");
    let env = store
        .get(envid)
        .expect("read the environment")
        .unwrap_or_else(|| panic!("no environment '{envid}' in {}", data.display()));
    assert_eq!(env.layers.len(), 1, "{envid}: one layer expected");
    store.images().layer_path(&env.layers[0]).expect("layer")
}

/// A server with the `c` and `python3` environments (and busybox).
fn start(data: &Path, extra: &[&str]) -> Server {
    let c = format!("c={}", env_root("c").display());
    let py = format!("python3={}", env_root("python3").display());
    let mut args = vec!["--rootfs-env", c.as_str(), "--rootfs-env", py.as_str()];
    args.extend_from_slice(extra);
    Server::start(data, &args)
}

fn new_key(s: &Server, name: &str) -> String {
    s.key(name, json!({}))
}

/// A client of one token that remembers every request body it sent.
struct Client<'a> {
    s: &'a Server,
    token: String,
    sent: RefCell<Vec<Vec<u8>>>,
}

impl<'a> Client<'a> {
    fn new(s: &'a Server, token: &str) -> Client<'a> {
        Client {
            s,
            token: token.to_string(),
            sent: RefCell::default(),
        }
    }

    fn req(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let text = body.map(Value::to_string).unwrap_or_default();
        self.sent.borrow_mut().push(text.clone().into_bytes());
        let body = body.map(|_| ("application/json", text.as_bytes()));
        self.s.req(method, path, Some(&self.token), body)
    }

    fn create(&self, body: &Value) -> Resp {
        self.req("POST", "/api/v1/executions", Some(body))
    }

    /// Creates with `wait: true`; the ended execution.
    fn run(&self, mut body: Value) -> Value {
        body["wait"] = json!(true);
        let r = self.create(&body);
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        assert_eq!(v["status"], "ended", "{v}");
        v
    }
}

fn assert_exit(v: &Value, code: i64) {
    assert_eq!(v["end_reason"], "normal", "{v:#}");
    assert_eq!(v["exit_code"], code, "{v:#}");
}

/// Compiles `src` in the `c` environment and keeps the program; its file id.
fn compile(c: &Client, name: &str, src: &str) -> String {
    let v = c.run(json!({
        "environment": "c",
        "command": ["gcc", "-O2", "-o", name, "main.c"],
        "files": { "main.c": src },
        "keep": [name],
    }));
    assert_exit(&v, 0);
    v["kept"][name]["file_id"]
        .as_str()
        .unwrap_or_else(|| panic!("not kept: {v:#}"))
        .to_string()
}

fn blobs(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("files/sha256"))
        .expect("the blob directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Polls `done` (at most 60 s).
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const SQUARE_C: &str = r#"#include <stdio.h>
int main(void) { long n; if (scanf("%ld", &n) != 1) return 3; printf("%ld\n", n * n + 1); return 0; }
"#;

#[test]
fn compile_once_run_many_without_sending_the_binary() {
    let data = temp_data();
    let s = start(data.path(), &[]);
    let key = new_key(&s, "grader");
    let c = Client::new(&s, &key);
    let id = compile(&c, "square", SQUARE_C);
    // 50 runs of the kept program, by reference.
    let mut runs = Vec::new();
    for i in 0..50 {
        let r = c.create(&json!({
            "environment": "c",
            "command": ["./square"],
            "files": { "square": { "file_id": id } },
            "stdin": format!("{i}\n"),
            "start": true,
        }));
        assert_eq!(r.status, 201, "{}", r.text());
        runs.push(r.json()["id"].as_str().expect("id").to_string());
    }
    for (i, run) in runs.iter().enumerate() {
        let v = s.wait_ended(run, &key);
        assert_exit(&v, 0);
        assert_eq!(v["stdout"], format!("{}\n", i * i + 1), "{v:#}");
        assert_eq!(v["files_by_reference"]["square"], id.as_str());
    }
    // The program, as kept: the client downloads it once here, only to know its bytes.
    let r = c.req("GET", &format!("/api/v1/files/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let binary = r.body.clone();
    assert!(binary.starts_with(b"\x7fELF"), "not a program");
    assert_eq!(
        r.header("content-length"),
        Some(binary.len().to_string().as_str())
    );
    // No request carried it, in any encoding.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&binary[..48]);
    for body in c.sent.borrow().iter() {
        assert!(
            !contains(body, &binary[..48]),
            "a request carried the binary"
        );
        assert!(
            !contains(body, b64.as_bytes()),
            "a request carried it as base64"
        );
        assert!(
            !contains(body, b"\\u007fELF"),
            "a request carried it as JSON text"
        );
    }
    // One blob, in a root-only store.
    assert_eq!(blobs(s.data.as_path()).len(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode(&s.data.join("files")), 0o700);
    assert_eq!(mode(&s.data.join("files/sha256")), 0o700);
    let blob = s.data.join("files/sha256").join(&blobs(&s.data)[0]);
    assert_eq!(
        mode(&blob),
        0o555,
        "read-only, for everyone who can reach it"
    );
    assert_eq!(std::fs::read(&blob).expect("blob"), binary);
}

#[test]
fn a_file_by_reference_is_read_only_with_the_asked_x_bits() {
    let data = temp_data();
    let s = start(data.path(), &[]);
    let c = Client::new(&s, TOKEN);
    let id = compile(&c, "square", SQUARE_C);
    let v = c.run(json!({
        "environment": "c",
        "command": ["sh", "-c", "ls -l bin/sq data | cut -c1-10; \
            echo x >> bin/sq 2>/dev/null || echo ro; rm -f data 2>/dev/null || echo kept; \
            echo 3 | ./bin/sq; ./data 2>/dev/null || echo not-executable"],
        "files": {
            "bin/sq": { "file_id": id },
            "data": { "file_id": id, "mode": "644" },
        },
    }));
    assert_exit(&v, 0);
    assert_eq!(
        v["stdout"], "-r-xr-xr-x\n-r--r--r--\nro\nkept\n10\nnot-executable\n",
        "{v:#}"
    );
    // Only regular files are kept: a symlink, a directory or a FIFO in its place is refused.
    let v = c.run(json!({
        "environment": "c",
        "command": ["sh", "-c", "ln -s /etc/passwd link; mkdir dir; mkfifo fifo"],
        "keep": ["link", "dir", "fifo", "missing"],
    }));
    assert_exit(&v, 0);
    for (path, why) in [
        ("link", "symlink"),
        ("dir", "not a regular file"),
        ("fifo", "not a regular file"),
        ("missing", "no such file"),
    ] {
        let error = v["kept"][path]["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{path}: {v:#}");
    }
    // An unknown id, a bad one, another kind of content for stdin: refused before it runs.
    let r = c.create(&json!({"environment": "c", "command": ["true"],
        "files": {"x": {"file_id": "file_00000000000000000000000000000000"}}}));
    let e = r.assert_error(404);
    assert!(e["message"].as_str().unwrap().contains("files['x']"), "{e}");
    c.create(
        &json!({"environment": "c", "command": ["true"], "files": {"x": {"file_id": "../etc"}}}),
    )
    .assert_error(404);
    c.create(&json!({"environment": "c", "command": ["true"], "stdin": {"file_id": id}}))
        .assert_error(400);
    c.create(&json!({"environment": "c", "command": ["true"], "files": {"../x": {"file_id": id}}}))
        .assert_error(400);
}

#[test]
fn only_the_owner_sees_a_file_and_a_deleted_key_takes_its_files() {
    let data = temp_data();
    let s = start(data.path(), &[]);
    let (alice, bob) = (new_key(&s, "alice"), new_key(&s, "bob"));
    let a = Client::new(&s, &alice);
    let b = Client::new(&s, &bob);
    let v = a.run(json!({"environment": "busybox", "command": ["sh", "-c", "echo secret > f"], "keep": ["f"]}));
    let id = v["kept"]["f"]["file_id"]
        .as_str()
        .expect("kept")
        .to_string();
    assert_eq!(v["kept"]["f"]["size"], 7);
    // Alice sees it, lists it, uses it.
    assert_eq!(
        a.req("GET", &format!("/api/v1/files/{id}"), None).body,
        b"secret\n"
    );
    let list = a.req("GET", "/api/v1/files", None).json();
    assert_eq!(list["paging"]["total"], 1, "{list}");
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["name"], "f");
    // To Bob it does not exist: every route, and as an input.
    b.req("GET", &format!("/api/v1/files/{id}"), None)
        .assert_error(404);
    b.req("DELETE", &format!("/api/v1/files/{id}"), None)
        .assert_error(404);
    assert_eq!(
        b.req("GET", "/api/v1/files", None).json()["paging"]["total"],
        0
    );
    let r = b.create(&json!({"environment": "busybox", "command": ["cat", "f"], "files": {"f": {"file_id": id}}}));
    assert_eq!(r.assert_error(404)["error_code"], 1300);
    // The master token may use it.
    let m = Client::new(&s, TOKEN);
    let v = m.run(
        json!({"environment": "busybox", "command": ["cat", "f"], "files": {"f": {"file_id": id}}}),
    );
    assert_eq!(v["stdout"], "secret\n");
    // Deleting the key deletes its files: a new "alice" finds nothing.
    let r = s.delete("/api/v1/api_keys/alice").assert_status(200);
    assert_eq!(r.json()["files_erased"], 1, "{}", r.text());
    m.req("GET", &format!("/api/v1/files/{id}"), None)
        .assert_error(404);
    let again = Client::new(&s, &new_key(&s, "alice"));
    again
        .req("GET", &format!("/api/v1/files/{id}"), None)
        .assert_error(404);
    assert!(
        blobs(&s.data).is_empty(),
        "the blob went with its last file"
    );
}

#[test]
fn an_expired_file_is_not_found_and_swept() {
    let data = temp_data();
    let s = start(data.path(), &["--file-ttl", "2s", "--file-sweep", "1s"]);
    let c = Client::new(&s, TOKEN);
    let v = c.run(
        json!({"environment": "busybox", "command": ["sh", "-c", "echo x > f"], "keep": ["f"]}),
    );
    let id = v["kept"]["f"]["file_id"]
        .as_str()
        .expect("kept")
        .to_string();
    eventually("expiry", || {
        c.req("GET", &format!("/api/v1/files/{id}"), None).status == 404
    });
    c.req("DELETE", &format!("/api/v1/files/{id}"), None)
        .assert_error(404);
    c.create(&json!({"environment": "busybox", "command": ["cat", "f"], "files": {"f": {"file_id": id}}}))
        .assert_error(404);
    assert_eq!(
        c.req("GET", "/api/v1/files", None).json()["paging"]["total"],
        0
    );
    eventually("the sweep", || blobs(&s.data).is_empty());
}

#[test]
fn an_accepted_execution_reads_a_file_deleted_before_it_runs() {
    let data = temp_data();
    let s = start(data.path(), &["--file-sweep", "1s"]);
    let c = Client::new(&s, TOKEN);
    let v = c.run(
        json!({"environment": "busybox", "command": ["sh", "-c", "echo kept > f"], "keep": ["f"]}),
    );
    let id = v["kept"]["f"]["file_id"]
        .as_str()
        .expect("kept")
        .to_string();
    let r = c.create(&json!({"environment": "busybox", "command": ["cat", "f"], "files": {"f": {"file_id": id}}}));
    assert_eq!(r.status, 201, "{}", r.text());
    let pending = r.json()["id"].as_str().expect("id").to_string();
    assert_eq!(
        c.req("DELETE", &format!("/api/v1/files/{id}"), None).status,
        200
    );
    c.req("GET", &format!("/api/v1/files/{id}"), None)
        .assert_error(404);
    assert_eq!(blobs(&s.data).len(), 1, "kept for the pending execution");
    let r = c.req(
        "POST",
        &format!("/api/v1/executions/{pending}/start?wait=true"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_exit(&v, 0);
    assert_eq!(v["stdout"], "kept\n");
    // Once it has ended nothing needs the blob.
    eventually("the sweep", || blobs(&s.data).is_empty());
}

#[test]
fn quotas_refuse_with_a_clear_message() {
    let data = temp_data();
    let s = start(data.path(), &["--file-max-count", "2"]);
    let k1 = Client::new(&s, &new_key(&s, "k1"));
    let v = k1.run(json!({"environment": "busybox",
        "command": ["sh", "-c", "echo 1 > a; echo 2 > b; echo 3 > c"], "keep": ["a", "b", "c"]}));
    assert!(
        v["kept"]["a"]["file_id"].is_string() && v["kept"]["b"]["file_id"].is_string(),
        "{v:#}"
    );
    let why = v["kept"]["c"]["error"].as_str().expect("c refused");
    assert!(
        why.contains("at most 2") && why.contains("--file-max-count"),
        "{why}"
    );
    // At the quota: an execution that asks to keep more is refused before it runs.
    let keep_one =
        json!({"environment": "busybox", "command": ["sh", "-c", "echo > d"], "keep": ["d"]});
    let e = k1.create(&keep_one).assert_error(429);
    assert_eq!(e["error_code"], 1701);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("DELETE /api/v1/files"),
        "{e}"
    );
    // One without `keep` still runs; after a delete, keeping works again.
    assert_eq!(
        k1.create(&json!({"environment": "busybox", "command": ["true"]}))
            .status,
        201
    );
    let a = v["kept"]["a"]["file_id"].as_str().unwrap();
    assert_eq!(
        k1.req("DELETE", &format!("/api/v1/files/{a}"), None).status,
        200
    );
    let v = k1.run(keep_one.clone());
    assert!(v["kept"]["d"]["file_id"].is_string(), "{v:#}");
    // Bytes: kept files count against the key's one storage quota (max_storage_bytes, with
    // its executions): a file over what is left is not kept; an execution that would not
    // fit is refused, 413.
    let k2 = Client::new(&s, &s.key("k2", json!({"max_storage_bytes": 1100})));
    let v = k2.run(json!({"environment": "busybox",
        "command": ["sh", "-c", "head -c 2000 /dev/zero > big; head -c 1000 /dev/zero > fit"],
        "keep": ["big", "fit"]}));
    let why = v["kept"]["big"]["error"].as_str().expect("big refused");
    assert!(
        why.contains("this API key's max_storage_bytes") && why.contains("1100"),
        "{why}"
    );
    assert_eq!(v["kept"]["fit"]["size"], 1000, "{v:#}");
    let mut padded = keep_one.clone();
    padded["files"] = json!({ "pad": "x".repeat(100) });
    let e = k2.create(&padded).assert_error(413);
    assert_eq!(e["error_code"], 1501);
    let why = e["message"].as_str().unwrap();
    assert!(
        why.contains("max_storage_bytes") && why.contains("kept files 1000"),
        "{why}"
    );
    // Deleting the file frees its bytes.
    let fit = v["kept"]["fit"]["file_id"].as_str().unwrap();
    assert_eq!(
        k2.req("DELETE", &format!("/api/v1/files/{fit}"), None)
            .status,
        200
    );
    assert_eq!(k2.create(&padded).status, 201);
    // The master token has no quota.
    let m = Client::new(&s, TOKEN);
    let v = m.run(json!({"environment": "busybox",
        "command": ["sh", "-c", "head -c 5000 /dev/zero > big"], "keep": ["big"]}));
    assert_eq!(v["kept"]["big"]["size"], 5000, "{v:#}");
}

// ---- programs wired by pipes: the guessing game ----

/// Reads guesses, answers `<`, `>` or `=`; at most 20. Exit 0: guessed; 1: wrong answer;
/// 2: the solution went away without guessing.
const INTERACTOR_C: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long secret = argc > 1 ? atol(argv[1]) : 0;
    char line[64];
    for (int i = 0; i < 20; i++) {
        /* On EOF, a pause before ending: a peer's pipes close before its parent hears of its
           end, so without it this program could be reaped first and `first_ended` race. */
        if (!fgets(line, sizeof line, stdin)) { fprintf(stderr, "unexpected eof\n"); usleep(200000); return 2; }
        char *end;
        long g = strtol(line, &end, 10);
        if (end == line || (*end != '\n' && *end != 0)) {
            fprintf(stderr, "wrong answer: not a number\n");
            return 1;
        }
        if (g == secret) { printf("=\n"); fflush(stdout); fprintf(stderr, "ok %d\n", i + 1); return 0; }
        printf(g < secret ? "<\n" : ">\n");
        fflush(stdout);
    }
    fprintf(stderr, "wrong answer: too many guesses\n");
    return 1;
}
"#;

const BINARY_SEARCH_C: &str = r#"#include <stdio.h>
int main(void) {
    long lo = 1, hi = 1000000; char r[8];
    while (lo <= hi) {
        long m = (lo + hi) / 2;
        printf("%ld\n", m); fflush(stdout);
        if (!fgets(r, sizeof r, stdin)) return 3;
        if (r[0] == '=') return 0;
        if (r[0] == '<') lo = m + 1; else hi = m - 1;
    }
    return 4;
}
"#;

const FLOOD_C: &str = r#"#include <string.h>
#include <unistd.h>
int main(void) { char b[4096]; memset(b, 'x', sizeof b); for (;;) write(1, b, sizeof b); }
"#;

/// Binary search, then it lingers: only the group's end stops it.
const BINARY_SEARCH_PY: &str = "import sys, time
lo, hi = 1, 1000000
while lo <= hi:
    m = (lo + hi) // 2
    print(m, flush=True)
    r = sys.stdin.readline()
    if r.startswith('='):
        break
    if r.startswith('<'):
        lo = m + 1
    else:
        hi = m - 1
time.sleep(60)
";

const ALWAYS_ONE_PY: &str = "import sys
for _ in range(20):
    print(1, flush=True)
    sys.stdin.readline()
";

const SILENT_PY: &str = "import time\ntime.sleep(60)\n";

/// The interactor (program 0) against `solution` (program 1): the solution's stdout feeds
/// the interactor's stdin (captured), and back.
fn game(interactor: &str, solution: Value, ends_with: &[usize]) -> Value {
    json!({
        "environment": "c",
        "programs": [
            {"command": ["./interactor", "777"], "files": {"interactor": {"file_id": interactor}},
             "limits": {"wall_time_s": 20}},
            solution,
        ],
        "pipes": [
            {"from": {"program": 1, "fd": 1}, "to": {"program": 0, "fd": 0}, "capture": 4096},
            {"from": {"program": 0, "fd": 1}, "to": {"program": 1, "fd": 0}},
        ],
        "wall_time_s": 30,
        "ends_with": ends_with,
    })
}

#[test]
fn the_guessing_game_ends_right_for_every_kind_of_solution() {
    let data = temp_data();
    // No sandbox kept ready: at the end, every sandbox process or cgroup found was left
    // behind by a run (the pool's own cleanup is tested in the core).
    let s = start(data.path(), &["--prepared", "0"]);
    let c = Client::new(&s, &new_key(&s, "judge"));
    let interactor = compile(&c, "interactor", INTERACTOR_C);
    let search = compile(&c, "search", BINARY_SEARCH_C);
    let flood = compile(&c, "flood", FLOOD_C);
    let py = |src: &str, wall: f64| {
        json!({"environment": "python3", "command": ["python3", "sol.py"],
               "files": {"sol.py": src}, "limits": {"wall_time_s": wall}})
    };

    // Correct, in C: both end by themselves.
    let v = c.run(game(
        &interactor,
        json!({"command": ["./search"], "files": {"search": {"file_id": search}},
               "limits": {"wall_time_s": 10}}),
        &[],
    ));
    assert_eq!(v["end_reason"], "normal", "{v:#}");
    let (i, sol) = (&v["programs"][0], &v["programs"][1]);
    assert_exit(i, 0);
    assert!(i["stderr"].as_str().unwrap().starts_with("ok "), "{i:#}");
    assert_exit(sol, 0);
    assert_eq!(v["group_timeout"], false);
    assert_eq!(sol["stdout"], "", "its stdout is the pipe");
    let captured = v["pipes"][0]["data"].as_str().expect("captured");
    assert!(captured.starts_with("500000\n250000\n"), "{captured}");
    assert!(captured.ends_with("777\n"), "{captured}");
    assert_eq!(v["pipes"][0]["truncated"], false);
    assert_eq!(v["pipes"][1]["bytes"], Value::Null, "not captured");
    let id = v["id"].as_str().unwrap();
    let whole = c.req("GET", &format!("/api/v1/executions/{id}/pipes/0"), None);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.text(), captured);
    c.req("GET", &format!("/api/v1/executions/{id}/pipes/1"), None)
        .assert_error(404);

    // Correct, in Python, then it lingers: the interactor's end ends it (`ends_with`).
    let v = c.run(game(&interactor, py(BINARY_SEARCH_PY, 25.0), &[0]));
    let (i, sol) = (&v["programs"][0], &v["programs"][1]);
    assert_exit(i, 0);
    assert_eq!(sol["end_reason"], "stopped", "{sol:#}");
    assert_eq!(v["first_ended"], 0);
    assert_eq!(v["end_reason"], "normal");

    // Wrong, in Python: twenty guesses of 1; the interactor says so.
    let v = c.run(game(&interactor, py(ALWAYS_ONE_PY, 10.0), &[]));
    let (i, sol) = (&v["programs"][0], &v["programs"][1]);
    assert_exit(i, 1);
    assert!(
        i["stderr"].as_str().unwrap().contains("too many guesses"),
        "{i:#}"
    );
    assert_exit(sol, 0);
    assert_eq!(v["pipes"][0]["data"], "1\n".repeat(20));

    // Never answers: its own wall limit ends it; the interactor sees EOF.
    let v = c.run(game(&interactor, py(SILENT_PY, 2.0), &[]));
    let (i, sol) = (&v["programs"][0], &v["programs"][1]);
    assert_eq!(sol["end_reason"], "timeout", "{sol:#}");
    assert_eq!(sol["timeout"], "wall");
    assert_exit(i, 2);
    assert!(i["stderr"].as_str().unwrap().contains("unexpected eof"));
    assert_eq!(v["first_ended"], 1);
    assert_eq!(v["group_timeout"], false);

    // Floods the pipe: the interactor refuses the first line, and the group ends with it (the
    // flood dies of SIGPIPE on the closed pipe, or is stopped, whichever comes first: never
    // its own limits); the capture keeps its cap.
    let v = c.run(game(
        &interactor,
        json!({"command": ["./flood"], "files": {"flood": {"file_id": flood}},
               "limits": {"wall_time_s": 25}}),
        &[0],
    ));
    let (i, sol) = (&v["programs"][0], &v["programs"][1]);
    assert_exit(i, 1);
    assert!(
        i["stderr"].as_str().unwrap().contains("not a number"),
        "{i:#}"
    );
    let died_of_sigpipe = sol["end_reason"] == "normal" && sol["signal_name"] == "SIGPIPE";
    assert!(died_of_sigpipe || sol["end_reason"] == "stopped", "{sol:#}");
    if died_of_sigpipe {
        // Killed by the interactor's end: reaped within microseconds of it, in either order.
        assert!(matches!(v["first_ended"].as_u64(), Some(0 | 1)), "{v:#}");
    } else {
        assert_eq!(v["first_ended"], 0);
    }
    assert_eq!(v["pipes"][0]["truncated"], true);
    assert!(v["pipes"][0]["bytes"].as_u64().unwrap() > 4096);
    assert_eq!(v["pipes"][0]["data"].as_str().unwrap(), "x".repeat(4096));
    assert_eq!(v["group_timeout"], false);

    // The group's own wall limit ends everything still running.
    let v = c.run(json!({"environment": "busybox",
        "programs": [{"command": ["sleep", "30"]}, {"command": ["sleep", "30"]}],
        "wall_time_s": 1}));
    assert_eq!(v["end_reason"], "timeout", "{v:#}");
    assert_eq!(v["group_timeout"], true);
    for p in v["programs"].as_array().unwrap() {
        assert_eq!(p["end_reason"], "timeout", "{p:#}");
    }

    // Nothing is left behind: no sandbox process, no cgroup. (A run is answered once its
    // verdict is in; the engine ends its sandbox in the background right after.)
    let (processes, cgroups) = left_behind_settled(&s);
    assert_eq!(processes, 0);
    assert!(cgroups.is_empty(), "{cgroups:?}");
}

#[test]
fn a_bad_graph_is_refused_naming_the_edge() {
    let data = temp_data();
    let s = start(data.path(), &[]);
    let c = Client::new(&s, TOKEN);
    let two = json!([{"command": ["true"]}, {"command": ["true"]}]);
    let edge = |fp: usize, ff: i32, tp: usize, tf: i32| json!({"from": {"program": fp, "fd": ff}, "to": {"program": tp, "fd": tf}});
    let refused = |body: Value, says: &[&str]| {
        let r = c.create(&body);
        let e = r.assert_error(400);
        let m = e["message"].as_str().unwrap();
        for s in says {
            assert!(m.contains(s), "'{m}' does not say '{s}'");
        }
    };
    refused(
        json!({"environment": "busybox", "programs": two.clone(),
               "pipes": [edge(0, 1, 1, 0), edge(0, 1, 1, 3)]}),
        &["pipe 1", "fd 1 of program 0"],
    );
    refused(
        json!({"environment": "busybox", "programs": two.clone(), "pipes": [edge(0, 1, 5, 0)]}),
        &["pipe 0", "program 5 does not exist"],
    );
    refused(
        json!({"environment": "busybox", "programs": two.clone(), "ends_with": [2]}),
        &["program 2"],
    );
    refused(
        json!({"environment": "busybox",
               "programs": [{"command": ["true"]}, {"command": ["cat"], "stdin": "x"}],
               "pipes": [edge(0, 1, 1, 0)]}),
        &["programs[1].stdin", "pipe 0"],
    );
    refused(
        json!({"environment": "busybox",
               "programs": [{"command": ["true"]}, {"command": ["true"], "limits": {"pids": 0}}]}),
        &["programs[1].limits.pids"],
    );
    refused(
        json!({"environment": "busybox",
               "programs": [{"command": ["true"]}, {"environment": "nope", "command": ["true"]}]}),
        &["programs[1].environment", "nope"],
    );
    refused(
        json!({"environment": "busybox", "command": ["true"], "pipes": [edge(0, 1, 1, 0)]}),
        &["'pipes'", "programs"],
    );
    // Nothing was created.
    assert_eq!(s.get("/api/v1/executions").json()["paging"]["total"], 0);
}

#[test]
fn a_groups_programs_have_their_own_files_and_outputs() {
    let data = temp_data();
    let s = start(data.path(), &[]);
    let c = Client::new(&s, TOKEN);
    // A pipeline, created pending; each program gets an uploaded input.
    let r = c.create(&json!({"environment": "busybox",
        "programs": [
            {"command": ["sh", "-c", "cat in; echo from-0 > out"], "outputs": ["out"]},
            {"command": ["sh", "-c", "tr a-z A-Z > out"], "outputs": ["out"], "keep": ["out"]},
        ],
        "pipes": [{"from": {"program": 0, "fd": 1}, "to": {"program": 1, "fd": 0}}]}));
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    s.req(
        "PUT",
        &format!("/api/v1/executions/{id}/programs/0/input/in"),
        Some(TOKEN),
        Some(("application/octet-stream", b"piped text\n")),
    )
    .assert_status(200);
    s.req(
        "PUT",
        &format!("/api/v1/executions/{id}/input/in"),
        Some(TOKEN),
        Some(("application/octet-stream", b"x")),
    )
    .assert_error(404);
    s.req(
        "PUT",
        &format!("/api/v1/executions/{id}/programs/2/input/in"),
        Some(TOKEN),
        Some(("application/octet-stream", b"x")),
    )
    .assert_error(404);
    let r = c.req(
        "POST",
        &format!("/api/v1/executions/{id}/start?wait=true"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["end_reason"], "normal", "{v:#}");
    for n in 0..2 {
        assert_exit(&v["programs"][n], 0);
    }
    let out = |n: usize| {
        c.req(
            "GET",
            &format!("/api/v1/executions/{id}/programs/{n}/output/out"),
            None,
        )
    };
    assert_eq!(out(0).body, b"from-0\n");
    assert_eq!(out(1).body, b"PIPED TEXT\n");
    let kept = v["programs"][1]["kept"]["out"]["file_id"]
        .as_str()
        .expect("kept");
    assert_eq!(
        c.req("GET", &format!("/api/v1/files/{kept}"), None).body,
        b"PIPED TEXT\n"
    );
    c.req("GET", &format!("/api/v1/executions/{id}/output/out"), None)
        .assert_error(404);
}
