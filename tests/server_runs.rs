//! Many executions at once, the live log, and a `kill -9` of the server with nothing lost.

#[path = "server_common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{core_works, temp_data, Server, TOKEN};
use serde_json::json;

#[test]
fn hundred_executions_at_once_all_end_right() {
    let data = temp_data();
    let s = Server::start(data.path(), &["--slots", "4"]);
    let real = core_works();
    let addr = s.addr.clone();
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let body = json!({
                    "environment": "busybox",
                    "command": ["sh", "-c", format!("echo {i}; exit {}", i % 7)],
                    "wait": true,
                })
                .to_string();
                let r = common::request(
                    &addr,
                    "POST",
                    "/api/v1/executions",
                    &[
                        ("Authorization", &format!("Bearer {TOKEN}")),
                        ("Content-Type", "application/json"),
                    ],
                    body.as_bytes(),
                );
                (i, r)
            })
        })
        .collect();
    for t in threads {
        let (i, r) = t.join().expect("client thread");
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        assert_eq!(v["status"], "ended", "{v}");
        if real {
            assert_eq!(v["end_reason"], "normal", "{v}");
            assert_eq!(v["stdout"], format!("{i}\n"));
            assert_eq!(v["exit_code"], i % 7);
        } else {
            assert_eq!(v["end_reason"], "internal-error");
        }
    }
    assert_eq!(
        s.get("/api/v1/executions?limit=1").json()["paging"]["total"],
        100
    );
}

/// Reads a streamed response until `want` shows up in the body (bounded).
fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(want) {
        assert!(
            Instant::now() < deadline,
            "did not see {want:?} in {:?}",
            String::from_utf8_lossy(seen)
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "stream ended before {want:?}: {:?}",
                String::from_utf8_lossy(seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn live_log_follows_and_ends_with_the_execution() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    if !core_works() {
        // Without a core, the log of an ended execution is an empty stream that ends.
        let id = s
            .post_json(
                "/api/v1/executions",
                TOKEN,
                &json!({"environment": "busybox", "command": ["true"], "wait": true}),
            )
            .json()["id"]
            .as_str()
            .expect("id")
            .to_string();
        let r = s.get(&format!("/api/v1/executions/{id}/log"));
        assert_eq!(r.status, 200);
        s.get("/api/v1/executions/exec_nope/log").assert_error(404);
        return;
    }
    let script = "for i in 1 2 3; do echo line$i; sleep 0.4; done; echo bye >&2";
    for sse in [false, true] {
        let id = s
            .post_json(
                "/api/v1/executions",
                TOKEN,
                &json!({"environment": "busybox", "command": ["sh", "-c", script], "start": true}),
            )
            .json()["id"]
            .as_str()
            .expect("id")
            .to_string();
        let mut stream = TcpStream::connect(&s.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let accept = if sse { "text/event-stream" } else { "*/*" };
        write!(
            stream,
            "GET /api/v1/executions/{id}/log HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut seen = Vec::new();
        read_until(&mut stream, &mut seen, "line1");
        // The first line arrives while the program still runs.
        let state = s
            .get(&format!("/api/v1/executions/{id}?include_log=false"))
            .json();
        assert_eq!(state["status"], "running", "{state}");
        stream.read_to_end(&mut seen).expect("read to the end");
        let r = common::parse_response(&seen);
        assert_eq!(r.status, 200);
        let text = r.text();
        if sse {
            assert!(r
                .header("Content-Type")
                .is_some_and(|c| c.starts_with("text/event-stream")));
            let events = common::parse_sse(&text);
            let shown: Vec<(String, String)> = events
                .iter()
                .map(|e| {
                    let data: serde_json::Value = serde_json::from_str(&e.data).expect("JSON data");
                    let what = data["text"].as_str().map_or_else(
                        || data["end_reason"].as_str().unwrap_or_default().to_string(),
                        str::to_string,
                    );
                    (e.event.clone(), what)
                })
                .collect();
            let want = [
                ("stdout", "line1\n"),
                ("stdout", "line2\n"),
                ("stdout", "line3\n"),
                ("stderr", "bye\n"),
                ("end", "normal"),
            ];
            assert_eq!(
                shown,
                want.map(|(a, b)| (a.to_string(), b.to_string())),
                "{text}"
            );
        } else {
            assert_eq!(text, "line1\nline2\nline3\nbye\n");
        }
        // By the time the stream ends, the execution has ended.
        assert_eq!(
            s.get(&format!("/api/v1/executions/{id}")).json()["status"],
            "ended"
        );
    }
}

#[test]
fn kill_9_and_restart_loses_nothing() {
    let data = temp_data();
    let real = core_works();
    let mut s = Server::start(data.path(), &["--slots", "1"]);
    let post = |s: &Server, cmd: &str, start: bool| {
        let r = s.post_json(
            "/api/v1/executions",
            TOKEN,
            &json!({"environment": "busybox", "command": ["sh", "-c", cmd], "start": start}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().expect("id").to_string()
    };
    let pending = post(&s, "echo pending", false);
    let ended = post(&s, "echo ended", false);
    let r = s.post(&format!("/api/v1/executions/{ended}/start?wait=true"));
    assert_eq!(r.status, 200);
    let ended_before = s.get(&format!("/api/v1/executions/{ended}")).json();
    let (running, queued) = if real {
        let running = post(&s, "sleep 60", true);
        s.wait_running(&running);
        let queued: Vec<String> = (0..3)
            .map(|i| post(&s, &format!("echo queued{i}"), true))
            .collect();
        for q in &queued {
            assert_eq!(
                s.get(&format!("/api/v1/executions/{q}")).json()["status"],
                "queued"
            );
        }
        (Some(running), queued)
    } else {
        (None, Vec::new())
    };

    s.kill9();
    let s = Server::start(data.path(), &["--slots", "1"]);

    // Pending stays pending, ended stays as it was.
    assert_eq!(
        s.get(&format!("/api/v1/executions/{pending}")).json()["status"],
        "pending"
    );
    let ended_after = s.get(&format!("/api/v1/executions/{ended}")).json();
    assert_eq!(ended_before, ended_after);
    if let Some(running) = running {
        // What was running ends as internal-error, with a message.
        let v = s.wait_ended(&running, TOKEN);
        assert_eq!(v["end_reason"], "internal-error", "{v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains("server")),
            "{v}"
        );
        // What was queued runs after the restart, oldest first.
        let mut starts = Vec::new();
        for (i, q) in queued.iter().enumerate() {
            let v = s.wait_ended(q, TOKEN);
            assert_eq!(v["end_reason"], "normal", "{v}");
            assert_eq!(v["stdout"], format!("queued{i}\n"));
            starts.push(v["start_date"].as_str().expect("start").to_string());
        }
        let mut sorted = starts.clone();
        sorted.sort();
        assert_eq!(starts, sorted, "queued work runs oldest first");
    }
    // The pending one still works after the restart.
    let r = s
        .post(&format!("/api/v1/executions/{pending}/start?wait=true"))
        .assert_status(200);
    assert_eq!(r.json()["status"], "ended");
}
