//! The API under attack, over real HTTP on loopback: each test tries one class of issue 10
//! (numbered as there) and checks the answer, and that the server still serves afterwards.
//! Figures (RSS, the latency of a request among idle connections) are printed with
//! `--nocapture`; they are resource bounds, not timings.

#[path = "server_common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{parse_sse, temp_data, Resp, Server, TOKEN};
use serde_json::{json, Value};

fn create(s: &Server, token: &str, body: Value) -> Resp {
    s.post_json("/api/v1/executions", token, &body)
}

fn busybox(command: &[&str]) -> Value {
    json!({"environment": "busybox", "command": command})
}

/// A connection that sends `head` (and nothing more, unless the test does).
fn raw(s: &Server, head: &[u8]) -> TcpStream {
    let mut c = TcpStream::connect(&s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    c.write_all(head).expect("write");
    c
}

/// Reads until the server closes the connection (or `limit` passes: then panics).
fn read_until_closed(c: &mut TcpStream, limit: Duration) -> Vec<u8> {
    c.set_read_timeout(Some(limit)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the connection stayed open ({e})"),
        }
    }
}

/// The server still serves: a request on a new connection gets its answer.
fn still_serves(s: &Server) {
    let r = s.get("/api/v1/environments");
    assert_eq!(r.status, 200, "{}", r.text());
}

fn head_request(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{extra}\r\n")
        .into_bytes()
}

// 1. Every parser is bounded before it allocates.

#[test]
fn deeply_nested_and_overlong_bodies_are_400_and_the_server_lives() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    // A run in progress must not notice.
    let running = s.create_id(
        TOKEN,
        &json!({"environment": "busybox", "command": ["sleep", "2"], "start": true}),
    );
    let form = |body: Vec<u8>| {
        s.post_bytes(
            "/api/v1/executions",
            TOKEN,
            "application/x-www-form-urlencoded",
            &body,
        )
    };
    // The form that crashed the server: one field name nested 20,000 levels (~60 KB).
    let crash = format!("x{}=1", "[a]".repeat(20_000)).into_bytes();
    form(crash).assert_error(400);
    // Short but deep names; and more fields than any request needs.
    form(format!("limits{}=1", "[a]".repeat(10)).into_bytes()).assert_error(400);
    form("a=1&".repeat(100_000).into_bytes()).assert_error(400);
    // JSON nested 100,000 deep, and 200,000 values in a flat list.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    s.post_bytes(
        "/api/v1/executions",
        TOKEN,
        "application/json",
        deep.as_bytes(),
    )
    .assert_refused(400, "nests");
    let wide = format!("{{\"command\": [{}\"x\"]}}", "\"x\",".repeat(200_000));
    s.post_bytes(
        "/api/v1/executions",
        TOKEN,
        "application/json",
        wide.as_bytes(),
    )
    .assert_refused(400, "values");
    // Multipart: a deep field name, and a JSON part nested too deep.
    let boundary = "bNdRy";
    let part = |name: &str, ct: &str, value: &str| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n{ct}\r\n{value}\r\n")
    };
    let ct = format!("multipart/form-data; boundary={boundary}");
    for body in [
        format!(
            "{}--{boundary}--\r\n",
            part(&format!("x{}", "[a]".repeat(50)), "", "1")
        ),
        format!(
            "{}--{boundary}--\r\n",
            part(
                "limits",
                "Content-Type: application/json\r\n",
                &"[".repeat(50_000)
            )
        ),
    ] {
        s.req(
            "POST",
            "/api/v1/executions",
            Some(TOKEN),
            Some((&ct, body.as_bytes())),
        )
        .assert_error(400);
    }
    // A query string with thousands of parameters.
    let q: String = (0..5000).map(|i| format!("p{i}=1&")).collect();
    s.get(&format!("/api/v1/executions?{q}")).assert_error(400);
    still_serves(&s);
    let v = s.wait_ended(&running, TOKEN);
    assert_eq!(v["end_reason"], "normal", "{v}");
}

// 2. Connections are bounded in time and number.

#[test]
fn silent_and_half_sent_connections_are_closed_and_the_cap_refuses_clearly() {
    let data = temp_data();
    let s = Server::start(
        data.path(),
        &["--max-connections", "8", "--header-read-timeout", "1s"],
    );
    let mut silent: Vec<TcpStream> = (0..4).map(|_| raw(&s, b"")).collect();
    let mut half: Vec<TcpStream> = (0..4)
        .map(|_| raw(&s, b"GET /api/v1/environments HTTP/1.1\r\nHost: x\r\n"))
        .collect();
    // All 8 taken: one more is answered 503, clearly, and closed.
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = raw(&s, &head_request("/api/v1/environments", ""));
    let refused = common::parse_response(&read_until_closed(&mut extra, Duration::from_secs(30)));
    refused.assert_refused(503, "connections");
    assert!(refused.header("Retry-After").is_some());
    // Silent and half-sent requests are closed by the header-read timeout (1 s here; before,
    // they stayed open for minutes).
    for c in silent.iter_mut().chain(half.iter_mut()) {
        read_until_closed(c, Duration::from_secs(30));
    }
    // A kept-alive connection that goes idle between requests is closed the same way.
    let mut kept = raw(&s, &head_request("/api/v1/environments", ""));
    let mut buf = [0u8; 4096];
    assert!(kept.read(&mut buf).expect("response") > 0);
    read_until_closed(&mut kept, Duration::from_secs(30));
    still_serves(&s);
}

/// This process's soft limit of open files, set to `soft` (the hard one kept); returns the
/// one before.
fn set_fd_soft_limit(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write a live struct of this process.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let before = lim.rlim_cur;
        lim.rlim_cur = soft.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        before
    }
}

#[test]
fn a_request_is_served_while_300_connections_sit_idle() {
    let data = temp_data();
    // The server starts with 256 open files allowed (as where 300 silent sockets made a
    // normal request time out); the hard limit is the host's.
    let before = set_fd_soft_limit(256);
    let s = Server::start(data.path(), &[]);
    set_fd_soft_limit(before);
    // The fd limit was raised for the connection cap (1024 by default), as far as the hard
    // limit allows.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.pid())).expect("limits");
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("Max open files");
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(soft >= 1024.min(hard), "{limits}");
    let idle: Vec<TcpStream> = (0..300).map(|_| raw(&s, b"")).collect();
    let t = Instant::now();
    let r = s.get("/api/v1/executions?limit=1");
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    eprintln!(
        "FIGURE: a request with 300 idle connections held took {:.1} ms (fd limit {soft})",
        took.as_secs_f64() * 1e3
    );
    drop(idle);
}

#[test]
fn a_stalled_body_gets_408_and_an_unread_response_frees_its_connection() {
    let data = temp_data();
    let s = Server::start(
        data.path(),
        &["--idle-timeout", "1s", "--max-connections", "4"],
    );
    // A body that stops half-way.
    let mut c = raw(
        &s,
        format!(
            "POST /api/v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"environment\""
        )
        .as_bytes(),
    );
    let r = common::parse_response(&read_until_closed(&mut c, Duration::from_secs(30)));
    assert_eq!(r.assert_error(408)["error_code"], 1800);
    // Readers that never read a large output: each connection is ended after the idle
    // timeout, so the connection cap (4) is free again.
    let id = s.create_id(
        TOKEN,
        &json!({"environment": "busybox", "command": ["sh", "-c", "head -c 16000000 /dev/zero > big"],
                "outputs": ["big"], "wait": true}),
    );
    let path = format!("/api/v1/executions/{id}/output/big");
    let stalled: Vec<TcpStream> = (0..4).map(|_| raw(&s, &head_request(&path, ""))).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut probe = raw(
            &s,
            &head_request("/api/v1/environments", "Connection: close\r\n"),
        );
        let r = common::parse_response(&read_until_closed(&mut probe, Duration::from_secs(30)));
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503);
        assert!(
            Instant::now() < deadline,
            "stalled readers kept their connections"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stalled);
}

// 3. Every limit has a server-wide maximum; keys can cap each; no integer wraps.

#[test]
fn every_limit_has_a_maximum_and_keys_cap_each() {
    let data = temp_data();
    let s = Server::start(
        data.path(),
        &[
            "--max-output",
            "1M",
            "--max-pids",
            "100",
            "--max-memory",
            "512M",
            "--max-cpu-time",
            "20s",
            "--max-wall-time",
            "30s",
        ],
    );
    let over = |token: &str, limits: Value, says: &str| {
        let mut body = busybox(&["true"]);
        body["limits"] = limits.clone();
        let v = create(&s, token, body).assert_error(400);
        let m = v["message"].as_str().unwrap_or("").to_string();
        assert!(m.contains(says), "{limits} → {v}");
        v
    };
    // The server's maxima hold for the master token too.
    for (limits, says) in [
        (json!({"pids": 100_000}), "limits.pids"),
        (json!({"output_bytes": 512u64 << 20}), "limits.output_bytes"),
        (
            json!({"output_bytes": 2_000_000_000u64}),
            "limits.output_bytes",
        ),
        (json!({"memory_bytes": 1u64 << 30}), "limits.memory_bytes"),
        (json!({"cpu_time_s": 21}), "limits.cpu_time_s"),
        (json!({"wall_time_s": 1e300}), "limits.wall_time_s"),
    ] {
        let v = over(TOKEN, limits, says);
        assert_eq!(v["error_code"], 1002, "{v}");
        assert!(
            v["message"].as_str().unwrap_or("").contains("server"),
            "{v}"
        );
    }
    // Integers that do not fit are refused, never wrapped.
    for (pids, says) in [
        ("18446744073709551615", "limits.pids"),
        ("18446744073709551616", "limits.pids"),
        ("-1", "limits.pids"),
        ("0", "limits.pids"),
        ("2.5", "limits.pids"),
    ] {
        let body = format!(
            "{{\"environment\": \"busybox\", \"command\": [\"true\"], \"limits\": {{\"pids\": {pids}}}}}"
        );
        let v = s
            .post_bytes(
                "/api/v1/executions",
                TOKEN,
                "application/json",
                body.as_bytes(),
            )
            .assert_error(400);
        assert!(
            v["message"].as_str().unwrap_or("").contains(says),
            "{pids} → {v}"
        );
    }
    // A key caps each, below the server; defaults are held to the key's caps.
    let key = s.key(
        "k",
        json!({"max_memory": "64M", "max_time": 5, "max_pids": 8, "max_output_bytes": "64K"}),
    );
    over(
        &key,
        json!({"output_bytes": 512u64 << 20}),
        "max_output_bytes",
    );
    over(&key, json!({"output_bytes": 128 << 10}), "max_output_bytes");
    over(&key, json!({"pids": 9}), "max_pids");
    over(&key, json!({"memory_bytes": 65 << 20}), "max_memory");
    let r = create(&s, &key, busybox(&["true"]));
    assert_eq!(r.status, 201, "{}", r.text());
    let limits = r.json()["limits"].clone();
    assert_eq!(
        limits,
        json!({"memory_bytes": 64 << 20, "cpu_time_s": 5.0, "wall_time_s": 5.0, "pids": 8,
               "output_bytes": 64 << 10})
    );
    // A key's cap above the server's is the server's.
    let big = s.key("big", json!({"max_output_bytes": "1G"}));
    over(&big, json!({"output_bytes": 2 << 20}), "server");
    // The caps bound the run: output stops at the key's 64 KiB.
    let mut body = busybox(&["yes"]);
    body["wait"] = json!(true);
    let r = create(&s, &key, body);
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["end_reason"], "output-limit", "{v}");
    assert!(v["stdout"].as_str().expect("stdout").len() <= 64 << 10);
    still_serves(&s);
}

// 4. Responses stream from disk; memory per request is bounded.

/// Reads a response slowly: `chunk` bytes at a time with a pause, `total` bytes at most.
fn slow_read(mut c: TcpStream, chunk: usize, total: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    while out.len() < total {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("slow read: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

#[test]
fn slow_readers_of_a_large_output_cost_little_memory() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    // 32 MiB of stdout (NUL bytes: six-fold in JSON before) and a 32 MiB output file.
    let id = s.create_id(
        TOKEN,
        &json!({
            "environment": "busybox",
            "command": ["sh", "-c", "head -c 33554432 /dev/zero; head -c 33554432 /dev/zero > big"],
            "limits": {"output_bytes": 40 << 20},
            "outputs": ["big"],
            "wait": true,
        }),
    );
    let v = s.get(&format!("/api/v1/executions/{id}")).json();
    assert_eq!(v["end_reason"], "normal", "{v}");
    assert_eq!(v["stdout_bytes"], 32 << 20);
    // The execution shows the first 64 KiB, says so, and the log route has the rest.
    assert_eq!(v["stdout"].as_str().expect("stdout").len(), 64 << 10);
    assert_eq!(v["stdout_truncated"], true);
    let (before, _) = s.rss_kib();
    let paths = [
        format!("/api/v1/executions/{id}/output/big"),
        format!("/api/v1/executions/{id}"),
        format!("/api/v1/executions/{id}/log?stream=stdout"),
        format!("/api/v1/executions/{id}/log"),
    ];
    let readers: Vec<_> = (0..20)
        .map(|i| {
            let c = raw(
                &s,
                &head_request(&paths[i % paths.len()], "Connection: close\r\n"),
            );
            std::thread::spawn(move || slow_read(c, 16 * 1024, 4 << 20))
        })
        .collect();
    let mut peak = before;
    while !readers.iter().all(|r| r.is_finished()) {
        peak = peak.max(s.rss_kib().0);
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in readers {
        r.join().expect("reader");
    }
    let (_, hwm) = s.rss_kib();
    eprintln!(
        "FIGURE: 20 slow readers of a 32 MiB output: server RSS {} MiB before, peak {} MiB while reading (VmHWM over the whole test, the run included: {} MiB)",
        before >> 10,
        peak >> 10,
        hwm >> 10
    );
    // Built whole, this was 20 × 32 MiB (or 6 × that for the JSON); streamed, a few MiB.
    assert!(
        peak < before + (64 << 10),
        "RSS grew from {before} KiB to {peak} KiB"
    );
    // A download is whole and exact.
    let r = s.get(&format!("/api/v1/executions/{id}/output/big"));
    assert_eq!(r.header("Content-Length"), Some("33554432"));
    assert!(r.body.len() == 32 << 20 && r.body.iter().all(|&b| b == 0));
    let log = s.get(&format!("/api/v1/executions/{id}/log?stream=stdout"));
    assert_eq!(log.body.len(), 32 << 20);
    still_serves(&s);
}

#[test]
fn a_huge_json_body_is_refused_in_bounded_memory() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let (_, hwm_before) = s.rss_kib();
    // 3 million entries in `files`: ~33 MiB of JSON.
    let mut body = String::with_capacity(34 << 20);
    body.push_str("{\"environment\": \"busybox\", \"command\": [\"true\"], \"files\": {");
    for i in 0..3_000_000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("\"{i}\":\"\""));
    }
    body.push_str("}}");
    s.post_bytes(
        "/api/v1/executions",
        TOKEN,
        "application/json",
        body.as_bytes(),
    )
    .assert_refused(400, "values");
    let (_, hwm_after) = s.rss_kib();
    eprintln!(
        "FIGURE: a refused {} MiB JSON body with 3M entries: server peak RSS {} MiB before, {} MiB after",
        body.len() >> 20,
        hwm_before >> 10,
        hwm_after >> 10
    );
    // The body itself (33 MiB) is read; nothing is built from it (before: +429 MiB).
    assert!(
        hwm_after < hwm_before + (body.len() as u64 >> 10) + (24 << 10),
        "peak RSS grew from {hwm_before} KiB to {hwm_after} KiB"
    );
    still_serves(&s);
}

#[test]
fn bodies_read_whole_share_a_memory_budget() {
    let data = temp_data();
    let s = Server::start(
        data.path(),
        &["--body-memory", "1M", "--idle-timeout", "2s"],
    );
    // One request holds 900 KiB of the budget while its body trickles in (a byte every
    // 200 ms: never stalled)...
    let total = 900 << 10;
    let mut slow = raw(
        &s,
        format!(
            "POST /api/v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let head = b"{\"environment\": \"busybox\", \"command\": [\"true\"], \"files\": {\"a\": \"";
    slow.write_all(head).expect("write");
    let (finish, finished) = std::sync::mpsc::channel::<()>();
    let trickler = std::thread::spawn(move || {
        let mut sent = head.len();
        while finished.recv_timeout(Duration::from_millis(200)).is_err() {
            slow.write_all(b"x").expect("trickle");
            sent += 1;
        }
        let rest = format!("{}\"}}}}", "x".repeat(total - sent - 3));
        slow.write_all(rest.as_bytes()).expect("rest");
        common::parse_response(&read_until_closed(&mut slow, Duration::from_secs(30)))
    });
    std::thread::sleep(Duration::from_millis(300));
    // ...so another large one finds none left: it waits a moment (the idle timeout), then
    // gets 503.
    let other = json!({"environment": "busybox", "command": ["true"], "files": {"b": "y".repeat(300 << 10)}});
    let r = create(&s, TOKEN, other.clone());
    assert_eq!(r.assert_error(503)["error_code"], 1900);
    // Small requests still pass; the first one finishes; then the large one fits.
    still_serves(&s);
    finish.send(()).expect("finish");
    let r = trickler.join().expect("trickler");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(create(&s, TOKEN, other).status, 201);
}

// 5. A key's executions belong to its id, never reused; deleting it erases them.

#[test]
fn deleting_a_key_erases_its_executions_and_a_new_key_of_its_name_inherits_nothing() {
    let data = temp_data();
    let s = Server::start(data.path(), &["--slots", "1"]);
    let alice = s.key("alice", json!({}));
    let ended = s.create_id(
        &alice,
        &json!({"environment": "busybox", "command": ["sh", "-c", "echo secret > out.txt"],
                "outputs": ["out.txt"], "wait": true}),
    );
    let running = s.create_id(
        &alice,
        &json!({"environment": "busybox", "command": ["sleep", "30"], "start": true}),
    );
    s.wait_running(&running);
    // The only slot is taken: this one waits, queued.
    let queued = s.create_id(
        &alice,
        &json!({"environment": "busybox", "command": ["sh", "-c", "echo ran > /tmp/x"], "start": true}),
    );
    let pending = s.create_id(
        &alice,
        &json!({"environment": "busybox", "command": ["true"], "files": {"a.txt": "secret"}}),
    );
    let r = s.delete("/api/v1/api_keys/alice").assert_status(200);
    assert_eq!(r.json()["executions_erased"], 4);
    for id in [&ended, &running, &queued, &pending] {
        s.get(&format!("/api/v1/executions/{id}")).assert_error(404);
        assert!(!data.path().join("executions").join(id).exists());
    }
    // A new key of the same name sees none of it.
    let alice2 = s.key("alice", json!({}));
    let list = s
        .req("GET", "/api/v1/executions", Some(&alice2), None)
        .json();
    assert_eq!(list["paging"]["total"], 0, "{list}");
    s.req(
        "GET",
        &format!("/api/v1/executions/{ended}/output/out.txt"),
        Some(&alice2),
        None,
    )
    .assert_error(404);
    // The slot is free again: nothing of alice's runs any more.
    let r = create(
        &s,
        TOKEN,
        json!({"environment": "busybox", "command": ["true"], "wait": true}),
    );
    assert_eq!(r.json()["end_reason"], "normal");
    assert_eq!(s.get("/api/v1/executions").json()["paging"]["total"], 1);
}

// 6. An upload commits only while the execution is pending.

/// Sends an upload's head and the first bytes of its body; the rest comes later.
fn start_upload(s: &Server, id: &str, path: &str, total: usize) -> TcpStream {
    let mut c = raw(
        s,
        format!(
            "PUT /api/v1/executions/{id}/input/{path} HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {total}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    c.write_all(&vec![b'x'; total / 2]).expect("first half");
    c
}

fn finish_upload(mut c: TcpStream, total: usize) -> Resp {
    c.write_all(&vec![b'x'; total - total / 2])
        .expect("second half");
    common::parse_response(&read_until_closed(&mut c, Duration::from_secs(60)))
}

#[test]
fn a_slow_upload_never_lands_in_a_started_or_deleted_execution() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    // Started (and ended) while the body was on its way: 409, and the run never saw it.
    let id = s.create_id(TOKEN, &busybox(&["sh", "-c", "ls late.txt"]));
    let upload = start_upload(&s, &id, "late.txt", 1000);
    std::thread::sleep(Duration::from_millis(300));
    let r = s.post(&format!("/api/v1/executions/{id}/start?wait=true"));
    assert_eq!(r.json()["exit_code"], 1, "{}", r.text());
    finish_upload(upload, 1000).assert_error(409);
    assert!(!data
        .path()
        .join("executions")
        .join(&id)
        .join("input/late.txt")
        .exists());
    // Deleted while the body was on its way: refused, and the directory stays gone.
    let id = s.create_id(TOKEN, &busybox(&["true"]));
    let upload = start_upload(&s, &id, "sub/dir/f.txt", 1000);
    std::thread::sleep(Duration::from_millis(300));
    s.delete(&format!("/api/v1/executions/{id}"))
        .assert_status(200);
    finish_upload(upload, 1000).assert_error(404);
    assert!(!data.path().join("executions").join(&id).exists());
    // Nothing is left of either upload in the scratch space.
    let scratch = std::fs::read_dir(data.path().join("tmp")).map_or(0, |d| d.count());
    assert_eq!(scratch, 0);
    still_serves(&s);
}

// 7. Storage per key is bounded: pending executions, files per execution, bytes stored.

#[test]
fn a_keys_storage_is_bounded() {
    let data = temp_data();
    let s = Server::start(data.path(), &["--max-files", "5"]);
    let key = s.key(
        "q",
        json!({"max_executions": 1, "max_pending": 2, "max_files": 3, "max_storage_bytes": 10000}),
    );
    let files = |n: usize, size: usize| -> Value {
        (0..n)
            .map(|i| (format!("f{i}"), Value::String("x".repeat(size))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let with_files = |n: usize, size: usize| {
        let mut b = busybox(&["true"]);
        b["files"] = files(n, size);
        b
    };
    // Files per execution: the key's 3.
    let v = create(&s, &key, with_files(4, 1)).assert_error(413);
    assert_eq!(v["error_code"], 1501);
    assert!(
        v["message"].as_str().unwrap_or("").contains("max_files"),
        "{v}"
    );
    // Pending executions: the key's 2, then 429.
    let first = s.create_id(&key, &with_files(3, 1000));
    s.create_id(&key, &with_files(1, 1000));
    let r = create(&s, &key, busybox(&["true"]));
    assert_eq!(r.assert_error(429)["error_code"], 1700);
    assert!(r.header("Retry-After").is_some());
    // An upload past the 3 files: 413.
    let put = |id: &str, path: &str, bytes: &[u8]| {
        s.req(
            "PUT",
            &format!("/api/v1/executions/{id}/input/{path}"),
            Some(&key),
            Some(("application/octet-stream", bytes)),
        )
    };
    put(&first, "f9", b"x").assert_error(413);
    // Replacing one of its files is fine.
    assert_eq!(put(&first, "f0", b"y").status, 200);
    // Bytes stored: ~3000 of 10000 used; 8000 more do not fit, in an upload or a create.
    let v = put(&first, "f1", &[b'z'; 8000]).assert_error(413);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_storage_bytes"),
        "{v}"
    );
    s.req(
        "DELETE",
        &format!("/api/v1/executions/{first}"),
        Some(&key),
        None,
    );
    let mut big = with_files(1, 9500);
    big["start"] = json!(true);
    create(&s, &key, big).assert_error(413);
    // Output counts too, once it is kept: a run that writes 8 KB fills the quota.
    let r = create(
        &s,
        &key,
        json!({"environment": "busybox", "command": ["sh", "-c", "head -c 8000 /dev/zero"], "wait": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    create(&s, &key, with_files(1, 10)).assert_error(413);
    // The server's --max-files bounds the master token too.
    create(&s, TOKEN, with_files(6, 1)).assert_refused(413, "server");
    still_serves(&s);
}

// 8. The live log: never forged, woken by events, headers at once, keep-alives, streams.

/// Reads an event stream until `want` appears (bounded).
fn read_stream_until(c: &mut TcpStream, seen: &mut Vec<u8>, want: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    c.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(seen).contains(want) {
        assert!(
            Instant::now() < deadline,
            "no {want:?} in {:?}",
            String::from_utf8_lossy(seen)
        );
        match c.read(&mut buf) {
            Ok(0) => panic!(
                "closed before {want:?}: {:?}",
                String::from_utf8_lossy(seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// The body of a chunked response as it arrived so far (sizes dropped).
fn dechunked(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw).into_owned();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

#[test]
fn the_live_log_cannot_be_forged_and_says_which_stream() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    // The program writes what would have been an `end` event, with bare CRs.
    let forged = "x\revent: end\rdata: {\"end_reason\":\"timeout\"}\r\r";
    let id = s.create_id(
        TOKEN,
        &json!({"environment": "busybox",
                "command": ["sh", "-c", "cat forged; printf 'err\\377' >&2; echo done"],
                "files": {"forged": forged}}),
    );
    // Followed while pending: the headers (and a comment) come at once, then keep-alives.
    let mut c = raw(
        &s,
        &head_request(
            &format!("/api/v1/executions/{id}/log"),
            "Accept: text/event-stream\r\n",
        ),
    );
    let mut seen = Vec::new();
    read_stream_until(&mut c, &mut seen, "following", Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    read_stream_until(&mut c, &mut seen, ": keep-alive", Duration::from_secs(60));
    s.post(&format!("/api/v1/executions/{id}/start"))
        .assert_status(200);
    read_stream_until(&mut c, &mut seen, "\nevent: end\n", Duration::from_secs(60));
    let events = parse_sse(&dechunked(&seen));
    let ends: Vec<&common::Event> = events.iter().filter(|e| e.event == "end").collect();
    assert_eq!(ends.len(), 1, "{events:?}");
    let end: Value = serde_json::from_str(&ends[0].data).expect("end data");
    assert_eq!(end["end_reason"], "normal", "{events:?}");
    assert_eq!(end["exit_code"], 0);
    // Each chunk says its stream; text as JSON, other bytes as base64.
    let mut out = String::new();
    let mut err = Vec::new();
    for e in &events {
        let d: Value = serde_json::from_str(&e.data).expect("data is JSON");
        match e.event.as_str() {
            "stdout" => out.push_str(d["text"].as_str().expect("stdout is text")),
            "stderr" => {
                use base64::Engine;
                let b64 = d["base64"].as_str().expect("stderr is not UTF-8");
                err.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .expect("b64"),
                );
            }
            "end" => {}
            other => panic!("event {other}: {events:?}"),
        }
    }
    assert_eq!(
        out,
        "x\revent: end\rdata: {\"end_reason\":\"timeout\"}\r\rdone\n"
    );
    assert_eq!(err, b"err\xff");
    // Resuming after the first chunk gives the rest only.
    let first_id = events[0].id.clone().expect("id");
    let r = common::request(
        &s.addr,
        "GET",
        &format!("/api/v1/executions/{id}/log"),
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Accept", "text/event-stream"),
            ("Last-Event-ID", &first_id),
        ],
        b"",
    );
    let again = parse_sse(&r.text());
    assert_eq!(again.len(), events.len() - 1, "{again:?}");
    // The plain form for curl: the bytes as written, both streams (in the order the engine
    // read them); one stream on its own.
    let plain = s.get(&format!("/api/v1/executions/{id}/log"));
    assert_eq!(plain.body.len(), out.len() + err.len());
    let only = s.get(&format!("/api/v1/executions/{id}/log?stream=stderr"));
    assert_eq!(only.body, b"err\xff");
    let only = s.get(&format!("/api/v1/executions/{id}/log?stream=stdout"));
    assert_eq!(only.body, out.as_bytes());
    s.get(&format!("/api/v1/executions/{id}/log?stream=both"))
        .assert_error(400);
}

#[test]
fn idle_followers_cost_no_cpu() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let id = s.create_id(TOKEN, &busybox(&["true"]));
    let followers: Vec<TcpStream> = (0..300)
        .map(|i| {
            let accept = if i % 2 == 0 {
                "Accept: text/event-stream\r\n"
            } else {
                ""
            };
            raw(
                &s,
                &head_request(&format!("/api/v1/executions/{id}/log"), accept),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let after = stat.rsplit_once(')').expect("stat").1;
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    };
    let before = ticks(s.pid());
    std::thread::sleep(Duration::from_secs(5));
    let used = ticks(s.pid()) - before;
    eprintln!("FIGURE: 300 idle followers for 5 s cost the server {used} CPU ticks (1/100 s)");
    // Polling every 50 ms cost half a core (~250 ticks here); waiting on events, nothing.
    assert!(used < 50, "{used} ticks");
    // They all end with the execution.
    s.delete(&format!("/api/v1/executions/{id}"));
    for mut f in followers {
        read_until_closed(&mut f, Duration::from_secs(30));
    }
}

// 9. User mistakes are the user's; errors never show the host.

#[test]
fn a_program_that_cannot_start_is_told_as_a_shell_would() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let run = |command: Value, files: Value| {
        let r = create(
            &s,
            TOKEN,
            json!({"environment": "busybox", "command": command, "files": files, "wait": true}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    };
    let v = run(json!(["no-such-program"]), json!({}));
    assert_eq!(
        (v["end_reason"].clone(), v["exit_code"].clone()),
        (json!("normal"), json!(127)),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap_or("").contains("not found"),
        "{v}"
    );
    let v = run(
        json!(["./script.sh"]),
        json!({"script.sh": "#!/bin/sh\necho hi\n"}),
    );
    assert_eq!(
        (v["end_reason"].clone(), v["exit_code"].clone()),
        (json!("normal"), json!(126)),
        "{v}"
    );
    let v = run(
        json!(["./data.bin"]),
        json!({"data.bin": {"content": "AAECAw==", "encoding": "base64", "mode": "755"}}),
    );
    assert_eq!(v["exit_code"], 126, "{v}");
    // What can be known wrong before anything runs is a 400.
    create(&s, TOKEN, busybox(&["echo", "a\u{0}b"])).assert_refused(400, "NUL");
    let v = create(
        &s,
        TOKEN,
        json!({"environment": "busybox", "command": ["true"],
                                     "limits": {"pids": 1_000_000_000}}),
    )
    .assert_error(400);
    let pid = s.pid().to_string();
    let shown = v["message"].as_str().unwrap_or("").to_string();
    assert!(!shown.contains('/') && !shown.contains(&pid), "{shown}");
    // Upload paths the file system refuses are the caller's mistake.
    let id = s.create_id(
        TOKEN,
        &json!({"environment": "busybox", "command": ["true"], "files": {"a.txt": "1"}}),
    );
    let put = |path: &str| {
        s.req(
            "PUT",
            &format!("/api/v1/executions/{id}/input/{path}"),
            Some(TOKEN),
            Some(("application/octet-stream", b"x")),
        )
    };
    for path in [&"n".repeat(300), "a.txt/below"] {
        let v = put(path).assert_error(400);
        let m = v["message"].as_str().unwrap_or("").to_string();
        assert!(!m.contains(data.path().to_str().expect("utf-8")), "{m}");
    }
    still_serves(&s);
}

// 10. Host files are root's only.

fn assert_private(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).expect("metadata");
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
        if meta.is_dir() {
            stack.extend(
                std::fs::read_dir(&p)
                    .expect("dir")
                    .map(|e| e.expect("entry").path()),
            );
        }
    }
}

#[test]
fn data_files_are_root_only() {
    let data = temp_data();
    // The data directory starts open, as an older sandpit left it.
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let s = Server::start(data.path(), &[]);
    let id = s.create_id(
        TOKEN,
        &json!({"environment": "busybox",
                "command": ["sh", "-c", "stat -c %a up.sh a.txt; echo out > out.txt"],
                "files": {"a.txt": {"content": "1", "mode": "750"}},
                "outputs": ["out.txt"]}),
    );
    s.req(
        "PUT",
        &format!("/api/v1/executions/{id}/input/up.sh?mode=755"),
        Some(TOKEN),
        Some(("application/octet-stream", b"#!/bin/sh\n")),
    )
    .assert_status(200);
    let r = s.post(&format!("/api/v1/executions/{id}/start?wait=true"));
    // In the sandbox the files have the modes asked for; on the host, root's only.
    assert_eq!(r.json()["stdout"], "755\n750\n", "{}", r.text());
    // The data directory lets nobody else in; the database, the executions' files and the
    // scratch space are root's only (image layers below keep the modes of their content).
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(data.path()), 0o700);
    for name in ["sandpit.db", "sandpit.db-wal", "sandpit.db-shm"] {
        assert_eq!(mode(&data.path().join(name)), 0o600, "{name}");
    }
    assert_private(&data.path().join("executions"));
    assert!(data
        .path()
        .join("executions")
        .join(&id)
        .join("output/out.txt")
        .is_file());
}

// 11. The server does what its OpenAPI document says (schemathesis checks the whole document
// in tests/sh/test_schemathesis.sh; these are the answers it found wrong, one by one).

#[test]
fn the_server_answers_as_its_document_says() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    // HEAD is GET without a body, on every GET route.
    let mut c = raw(
        &s,
        format!(
            "HEAD /api/v1/environments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let answer =
        String::from_utf8_lossy(&read_until_closed(&mut c, Duration::from_secs(30))).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert!(body.is_empty(), "HEAD answered a body: {body}");
    // The scheme of `Authorization` in any case (RFC 7235).
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let r = common::request(
            &s.addr,
            "GET",
            "/api/v1/environments",
            &[("Authorization", &format!("{scheme} {TOKEN}"))],
            b"",
        );
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
    }
    // A boolean query parameter is true or false: empty or null is a 400 (documented).
    let id = s.create_id(TOKEN, &busybox(&["echo", "hi"]));
    for q in ["include_log=", "include_log=null"] {
        s.get(&format!("/api/v1/executions/{id}?{q}"))
            .assert_error(400);
    }
    s.req(
        "POST",
        &format!("/api/v1/executions/{id}/start?wait=null"),
        Some(TOKEN),
        None,
    )
    .assert_error(400);
    s.req(
        "POST",
        "/api/v1/submissions?wait=null",
        Some(TOKEN),
        Some(("application/json", b"{\"project_id\": \"p\"}")),
    )
    .assert_error(400);
    s.get("/api/v1/submissions/sub_nope/progress?format=null")
        .assert_error(400);
    // `program` of a single execution: its one program, 0.
    let r = s.req(
        "POST",
        &format!("/api/v1/executions/{id}/start?wait=true"),
        Some(TOKEN),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.get(&format!("/api/v1/executions/{id}/log?program=0"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hi\n");
    s.get(&format!("/api/v1/executions/{id}/log?program=1"))
        .assert_error(400);
    // Allow lists the methods of the route the path is: /submissions/batch is not an id.
    let r = s.req("OPTIONS", "/api/v1/submissions/batch", Some(TOKEN), None);
    r.assert_error(405);
    assert_eq!(r.header("Allow"), Some("POST"));
    let r = s.req("PATCH", "/api/v1/submissions/sub_x", Some(TOKEN), None);
    r.assert_error(405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD, DELETE"));
    // Limits are an object (serde alone would read a list of them in order), and no field of
    // a project takes null, however deep.
    let v = create(
        &s,
        TOKEN,
        json!({"environment": "busybox", "command": ["true"], "limits": [null, null]}),
    )
    .assert_error(400);
    assert!(
        v["message"].as_str().unwrap_or("").contains("limits"),
        "{v}"
    );
    let project = json!({
        "environment": "busybox",
        "config": {"version": 2.1, "scenarios": {"default": {"default": true,
            "stages": {"run": {"command": "/bin/sh main.sh"}}}}},
        "tests": [{"name": "01", "stdin": "1\n", "expected": "1\n", "limits": {"pids": null}}],
    });
    let v = s
        .post_json("/api/v1/projects", TOKEN, &project)
        .assert_error(400);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("'tests[0].limits.pids' may not be null"),
        "{v}"
    );
    // `key_name` is another name for `name`: one of them, not both (each checked).
    s.post_json(
        "/api/v1/api_keys",
        TOKEN,
        &json!({"name": "a", "key_name": ".tER*"}),
    )
    .assert_error(400);
    // A multipart part sent as application/json is its JSON value.
    let boundary = "bNdRy";
    let part = |name: &str, ct: &str, value: &str| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n{ct}\r\n{value}\r\n")
    };
    let json_part = "Content-Type: application/json\r\n";
    let body = format!(
        "{}{}{}{}--{boundary}--\r\n",
        part("environment", "", "busybox"),
        part("command", json_part, "[\"echo\", \"from JSON parts\"]"),
        part("limits", json_part, "{\"pids\": 8}"),
        part("wait", "", "true"),
    );
    let r = s.req(
        "POST",
        "/api/v1/executions",
        Some(TOKEN),
        Some((
            &format!("multipart/form-data; boundary={boundary}"),
            body.as_bytes(),
        )),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["limits"]["pids"], 8, "{v}");
    assert_eq!(v["stdout"], "from JSON parts\n", "{v}");
    still_serves(&s);
}
