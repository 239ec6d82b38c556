//! `make bench` row for compile once, run many: a C program compiled through the API in the
//! shipped `c` environment and kept (`keep`), then run on 100 inputs by reference
//! (`{"file_id"}`: the sandbox sees the stored file, bound read-only), against sending the
//! program inline (base64) with every test, as a client had to before files were kept.
//! Plain harness: prints table rows.
//!
//! Then the same for a 16 MiB input. Knobs: SANDPIT_BENCH_TESTS (default 100),
//! SANDPIT_BENCH_BIG_TESTS (default 20).

#[path = "../tests/server_common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use base64::Engine;
use common::{temp_data, Server, TOKEN};
use serde_json::{json, Value};

const SQUARE_C: &str = r#"#include <stdio.h>
int main(void) { long n; if (scanf("%ld", &n) != 1) return 3; printf("%ld\n", n * n + 1); return 0; }
"#;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_root(envid: &str) -> PathBuf {
    let data = std::env::var_os("SANDPIT_TEST_DATA")
        .map(PathBuf::from)
        .expect("SANDPIT_TEST_DATA is not set: run `make bench` (it exports it)");
    let store = sandpit::env::EnvStore::open(&data).expect("environments");
    let env = store.get(envid).expect("read").expect("the environment");
    store.images().layer_path(&env.layers[0]).expect("layer")
}

fn run(s: &Server, body: &Value) -> (Value, usize) {
    let text = body.to_string();
    let r = s.req(
        "POST",
        "/api/v1/executions",
        Some(TOKEN),
        Some(("application/json", text.as_bytes())),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    (r.json(), text.len())
}

fn main() {
    let tests = knob("SANDPIT_BENCH_TESTS", 100);
    let data = temp_data();
    let c = format!("c={}", env_root("c").display());
    let s = Server::start(data.path(), &["--rootfs-env", &c]);
    let t = Instant::now();
    let (v, _) = run(
        &s,
        &json!({"environment": "c", "command": ["gcc", "-O2", "-o", "square", "main.c"],
                "files": {"main.c": SQUARE_C}, "keep": ["square"], "wait": true}),
    );
    let compile_s = t.elapsed().as_secs_f64();
    let id = v["kept"]["square"]["file_id"]
        .as_str()
        .unwrap_or_else(|| panic!("not kept: {v}"))
        .to_string();
    let binary = s.get(&format!("/api/v1/files/{id}")).body;
    let inline = base64::engine::general_purpose::STANDARD.encode(&binary);

    // By reference and inline, test after test (so both see the same machine).
    let mut by_ref = (0.0, 0);
    let mut by_value = (0.0, 0);
    for i in 0..tests {
        let stdin = format!("{i}\n");
        for (file, out) in [
            (json!({"file_id": id}), &mut by_ref),
            (
                json!({"content": inline, "encoding": "base64", "mode": "755"}),
                &mut by_value,
            ),
        ] {
            let t = Instant::now();
            let (v, n) = run(
                &s,
                &json!({"environment": "c", "command": ["./square"], "files": {"square": file},
                        "stdin": stdin, "wait": true}),
            );
            out.0 += t.elapsed().as_secs_f64();
            out.1 += n;
            assert_eq!(v["stdout"], format!("{}\n", i * i + 1), "{v}");
        }
    }
    // A large input (16 MiB) kept once and read by every test.
    let big_tests = knob("SANDPIT_BENCH_BIG_TESTS", 20);
    let (v, _) = run(
        &s,
        &json!({"environment": "c", "command": ["sh", "-c", "head -c 16777216 /dev/urandom > big"],
                "keep": ["big"], "wait": true}),
    );
    let big_id = v["kept"]["big"]["file_id"]
        .as_str()
        .expect("kept")
        .to_string();
    let big = base64::engine::general_purpose::STANDARD
        .encode(s.get(&format!("/api/v1/files/{big_id}")).body);
    let mut big_ref = (0.0, 0);
    let mut big_value = (0.0, 0);
    for _ in 0..big_tests {
        for (file, out) in [
            (json!({"file_id": big_id}), &mut big_ref),
            (
                json!({"content": big, "encoding": "base64"}),
                &mut big_value,
            ),
        ] {
            let t = Instant::now();
            let (v, n) = run(
                &s,
                &json!({"environment": "c", "command": ["wc", "-c", "big"], "files": {"big": file},
                        "wait": true}),
            );
            out.0 += t.elapsed().as_secs_f64();
            out.1 += n;
            assert_eq!(v["stdout"], "16777216 big\n", "{v}");
        }
    }
    let per = |(secs, _): (f64, usize)| secs / tests as f64 * 1e3;
    let per_big = |(secs, _): (f64, usize)| secs / big_tests as f64 * 1e3;
    println!();
    println!("| compile once, run {tests} tests (one at a time, wait: true) | per test | bytes sent per test |");
    println!("|---|---|---|");
    println!(
        "| compile and keep (once) | {:.1} ms | {} |",
        compile_s * 1e3,
        SQUARE_C.len()
    );
    println!(
        "| run the kept program by reference | {:.2} ms | {} |",
        per(by_ref),
        by_ref.1 / tests
    );
    println!(
        "| send the program inline (base64, {} bytes) with every test | {:.2} ms | {} |",
        binary.len(),
        per(by_value),
        by_value.1 / tests
    );
    println!(
        "| a 16 MiB input by reference ({big_tests} tests) | {:.2} ms | {} |",
        per_big(big_ref),
        big_ref.1 / big_tests
    );
    println!(
        "| the same input inline (base64) with every test | {:.2} ms | {} |",
        per_big(big_value),
        big_value.1 / big_tests
    );
}
