//! The HTTP API over loopback: every route, every error code, the lifecycle, API key limits.

#[path = "server_common/mod.rs"]
mod common;

use common::{core_works, temp_data, Server, TOKEN};
use serde_json::{json, Value};

fn create(s: &Server, token: &str, body: Value) -> common::Resp {
    s.post_json("/api/v1/executions", token, &body)
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str().is_some_and(|t| {
        t.len() >= 20 && t.as_bytes()[4] == b'-' && t.as_bytes()[10] == b'T' && t.ends_with('Z')
    })
}

#[test]
fn openapi_is_served_without_a_token() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let r = s.req("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["paths"]["/api/v1/executions"]["post"].is_object());
}

#[test]
fn auth_errors() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    // 401: none, wrong.
    let v = s
        .req("GET", "/api/v1/executions", None, None)
        .assert_error(401);
    assert_eq!(v["error_code"], 1100);
    s.req("GET", "/api/v1/executions", Some("nope"), None)
        .assert_error(401);
    // ?access_token= works.
    s.req(
        "GET",
        &format!("/api/v1/executions?access_token={TOKEN}"),
        None,
        None,
    )
    .assert_status(200);
    // A key may not manage keys or environments: 403.
    let key = s
        .post_json("/api/v1/api_keys", TOKEN, &json!({"name": "k1"}))
        .json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    let v = s
        .req("GET", "/api/v1/api_keys", Some(&key), None)
        .assert_error(403);
    assert_eq!(v["error_code"], 1200);
    s.req("DELETE", "/api/v1/environments/busybox", Some(&key), None)
        .assert_error(403);
    s.req(
        "POST",
        "/api/v1/environments",
        Some(&key),
        Some(("application/x-tar", b"x")),
    )
    .assert_error(403);
    // A key sees its own executions only.
    let mine = create(
        &s,
        &key,
        json!({"environment": "busybox", "command": ["true"]}),
    );
    assert_eq!(mine.status, 201, "{}", mine.text());
    let id = mine.json()["id"].as_str().expect("id").to_string();
    let theirs = create(
        &s,
        TOKEN,
        json!({"environment": "busybox", "command": ["true"]}),
    );
    let their_id = theirs.json()["id"].as_str().expect("id").to_string();
    assert_eq!(
        s.req("GET", &format!("/api/v1/executions/{id}"), Some(&key), None)
            .status,
        200
    );
    s.req(
        "GET",
        &format!("/api/v1/executions/{their_id}"),
        Some(&key),
        None,
    )
    .assert_error(404);
    let list = s.req("GET", "/api/v1/executions", Some(&key), None).json();
    assert_eq!(list["paging"]["total"], 1, "{list}");
    // Master sees both.
    assert_eq!(s.get("/api/v1/executions").json()["paging"]["total"], 2);
}

#[test]
fn api_keys_routes() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let r = s.post_json(
        "/api/v1/api_keys",
        TOKEN,
        &json!({"name": "grader", "max_memory": 67108864, "max_time": 2, "max_executions": 1}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let k = r.json();
    assert!(k["key"].as_str().is_some_and(|t| t.starts_with("apikey_")));
    assert_eq!(k["max_memory"], 67108864);
    // PIFOP style: in the query.
    s.post("/api/v1/api_keys?key_name=q&max_executions=2")
        .assert_status(201);
    // Duplicate: 409. Bad name / bad limit: 400.
    s.post_json("/api/v1/api_keys", TOKEN, &json!({"name": "grader"}))
        .assert_error(409);
    s.post_json("/api/v1/api_keys", TOKEN, &json!({"name": "a b"}))
        .assert_error(400);
    s.post_json(
        "/api/v1/api_keys",
        TOKEN,
        &json!({"name": "x", "max_memory": -1}),
    )
    .assert_error(400);
    s.post_json("/api/v1/api_keys", TOKEN, &json!({}))
        .assert_error(400);
    let list = s.get("/api/v1/api_keys").json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["grader", "q"]);
    assert!(
        list["items"][0].get("key").is_none(),
        "secrets are never listed"
    );
    assert_eq!(s.delete("/api/v1/api_keys/q").status, 200);
    s.delete("/api/v1/api_keys/q").assert_error(404);
    // A deleted key no longer authenticates.
    let key = k["key"].as_str().expect("key");
    assert_eq!(
        s.req("GET", "/api/v1/executions", Some(key), None).status,
        200
    );
    s.delete("/api/v1/api_keys/grader");
    s.req("GET", "/api/v1/executions", Some(key), None)
        .assert_error(401);
}

#[test]
fn key_limits_400_and_429() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let key = s
        .post_json(
            "/api/v1/api_keys",
            TOKEN,
            &json!({"name": "lim", "max_memory": "64M", "max_time": 2, "max_executions": 1}),
        )
        .json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    // Over the key's maxima: 400, error code 1002, saying which maximum.
    for (limits, says) in [
        (json!({"memory_bytes": 128 << 20}), "max_memory"),
        (json!({"cpu_time_s": 5}), "max_time"),
        (json!({"wall_time_s": 3}), "max_time"),
    ] {
        let body = json!({"environment": "busybox", "command": ["true"], "limits": limits});
        let v = create(&s, &key, body).assert_refused(400, says);
        assert_eq!(v["error_code"], 1002, "{v}");
    }
    // Within the limits, defaults are clamped to the key's maxima.
    let ok = create(
        &s,
        &key,
        json!({"environment": "busybox", "command": ["true"]}),
    );
    assert_eq!(ok.status, 201, "{}", ok.text());
    assert_eq!(ok.json()["limits"]["memory_bytes"], 64 << 20);
    assert_eq!(ok.json()["limits"]["wall_time_s"], 2.0);
    if !core_works() {
        return;
    }
    // One running at once: the second start gets 429 with Retry-After.
    let first = create(
        &s,
        &key,
        json!({"environment": "busybox", "command": ["sleep", "1.5"], "start": true}),
    );
    assert_eq!(first.status, 201, "{}", first.text());
    let second = create(
        &s,
        &key,
        json!({"environment": "busybox", "command": ["true"], "start": true}),
    );
    let v = second.assert_error(429);
    assert_eq!(v["error_code"], 1700);
    assert!(second
        .header("Retry-After")
        .is_some_and(|v| v.parse::<u64>().is_ok()));
    let pending_id = ok.json()["id"].as_str().expect("id").to_string();
    s.req(
        "POST",
        &format!("/api/v1/executions/{pending_id}/start"),
        Some(&key),
        None,
    )
    .assert_error(429);
    // Once the first has ended, there is room again.
    s.wait_ended(first.json()["id"].as_str().expect("id"), &key);
    let r = s
        .req(
            "POST",
            &format!("/api/v1/executions/{pending_id}/start?wait=true"),
            Some(&key),
            None,
        )
        .assert_status(200);
    assert_eq!(r.json()["end_reason"], "normal");
}

#[test]
fn body_and_route_errors() {
    let data = temp_data();
    let s = Server::start(data.path(), &["--max-body", "4K"]);
    // Malformed JSON: 400 saying where.
    let r = s.req(
        "POST",
        "/api/v1/executions",
        Some(TOKEN),
        Some((
            "application/json",
            b"{\n \"environment\": \"busybox\",\n \"command\": [\"true\",]\n}",
        )),
    );
    let v = r.assert_error(400);
    assert_eq!(v["error_code"], 1000);
    assert!(
        v["message"].as_str().unwrap_or("").contains("line 3"),
        "{v}"
    );
    // Wrong content type: 415.
    let v = s
        .post_bytes("/api/v1/executions", TOKEN, "text/plain", b"hello")
        .assert_error(415);
    assert_eq!(v["error_code"], 1600);
    // Too large: 413.
    let big =
        json!({"environment": "busybox", "command": ["true"], "files": {"a": "x".repeat(8000)}});
    let v = create(&s, TOKEN, big).assert_error(413);
    assert_eq!(v["error_code"], 1500);
    // Bad input: 400 with what is wrong.
    for (body, says) in [
        (json!({"command": ["true"]}), "environment"),
        (json!({"environment": "busybox"}), "command"),
        (
            json!({"environment": "busybox", "command": "true"}),
            "command",
        ),
        (json!({"environment": "nope", "command": ["true"]}), "nope"),
        (
            json!({"environment": "busybox", "command": ["true"], "files": {"../x": "1"}}),
            "leaves",
        ),
        (
            json!({"environment": "busybox", "command": ["true"], "files": {"/etc/x": "1"}}),
            "leaves",
        ),
        (
            json!({"environment": "busybox", "command": ["true"], "outputs": ["../../etc/passwd"]}),
            "leaves",
        ),
        (
            json!({"environment": "busybox", "command": ["true"], "limits": {"memory_bytes": "lots"}}),
            "limits",
        ),
        (
            json!({"environment": "busybox", "command": ["true"], "limits": {"cpu_time_s": 0}}),
            "cpu_time_s",
        ),
        (
            json!({"environment": "busybox", "command": ["true"], "files": {"a": {"content": "!!", "encoding": "base64"}}}),
            "base64",
        ),
        (
            json!({"environment": "busybox", "command": ["true"], "surprise": 1}),
            "surprise",
        ),
    ] {
        let v = create(&s, TOKEN, body.clone()).assert_error(400);
        assert!(
            v["message"].as_str().unwrap_or("").contains(says),
            "{body} → {v}"
        );
    }
    // Unknown route 404, wrong method 405, unknown execution 404.
    assert_eq!(
        s.get("/api/v1/nothing").assert_error(404)["error_code"],
        1301
    );
    let r = s.req("PATCH", "/api/v1/executions", Some(TOKEN), None);
    r.assert_error(405);
    assert!(r.header("Allow").is_some_and(|a| a.contains("POST")));
    assert_eq!(
        s.get("/api/v1/executions/exec_nope").assert_error(404)["error_code"],
        1300
    );
    s.post("/api/v1/executions/exec_nope/start")
        .assert_error(404);
    s.delete("/api/v1/executions/exec_nope").assert_error(404);
    s.get("/api/v1/executions?limit=1000").assert_error(400);
    s.get("/api/v1/executions/x?include_log=maybe")
        .assert_error(400);
}

#[test]
fn form_and_multipart_bodies() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let form = b"environment=busybox&command=sh&command=-c&command=cat+a.txt&files%5Ba.txt%5D=from+a+form&limits%5Bmemory_bytes%5D=67108864";
    let r = s
        .post_bytes(
            "/api/v1/executions",
            TOKEN,
            "application/x-www-form-urlencoded",
            form,
        )
        .assert_status(201);
    let v = r.json();
    assert_eq!(v["status"], "pending");
    assert_eq!(v["command"], json!(["sh", "-c", "cat a.txt"]));
    assert_eq!(v["limits"]["memory_bytes"], 67108864);
    let form_id = v["id"].as_str().expect("id").to_string();

    let boundary = "XyZbOuNdArY";
    let mut mp = Vec::new();
    for (name, value) in [
        ("environment", "busybox"),
        ("command", "[\"sh\", \"-c\", \"cat up.txt\"]"),
    ] {
        mp.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    mp.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"up.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nfrom multipart\r\n--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = s
        .req("POST", "/api/v1/executions", Some(TOKEN), Some((&ct, &mp)))
        .assert_status(201);
    let mp_id = r.json()["id"].as_str().expect("id").to_string();
    assert!(data
        .path()
        .join("executions")
        .join(&mp_id)
        .join("input/up.txt")
        .is_file());
    if !core_works() {
        return;
    }
    for (id, want) in [(form_id, "from a form"), (mp_id, "from multipart")] {
        let r = s
            .post(&format!("/api/v1/executions/{id}/start?wait=true"))
            .assert_status(200);
        assert_eq!(r.json()["stdout"], want);
    }
}

#[test]
fn environments_routes() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let list = s.get("/api/v1/environments").json();
    let busybox = list
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["envid"] == "busybox")
        .expect("busybox listed")
        .clone();
    assert!(busybox["name"].is_string() && busybox["authors"].is_array());
    assert!(busybox.get("description").is_none());
    let one = s.get("/api/v1/environments/busybox").json();
    assert!(one["description"].is_string());
    s.get("/api/v1/environments/nope").assert_error(404);
    s.post_bytes("/api/v1/environments", TOKEN, "text/plain", b"x")
        .assert_error(415);
    s.post_bytes(
        "/api/v1/environments?envid=bad",
        TOKEN,
        "application/x-tar",
        b"not a tar",
    )
    .assert_error(400);
    s.delete("/api/v1/environments/nope").assert_error(404);
    s.delete("/api/v1/environments/busybox").assert_error(403);
}

#[test]
fn lifecycle_pending_upload_start_download_delete() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let script = "cat in/data.txt > out.txt; echo done; echo oops >&2; ln -s /etc/passwd link.txt; mkfifo fifo; exit 3";
    let r = create(
        &s,
        TOKEN,
        json!({
            "environment": "busybox",
            "command": ["sh", "-c", script],
            "outputs": ["out.txt", "link.txt", "fifo", "missing.txt"],
            "limits": {"memory_bytes": 64 << 20, "cpu_time_s": 2, "wall_time_s": 5},
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "pending");
    assert!(is_rfc3339(&v["init_date"]), "{v}");
    assert!(v["start_date"].is_null());
    let id = v["id"].as_str().expect("id").to_string();
    let base = format!("/api/v1/executions/{id}");
    // Upload while pending; a path that leaves the work dir is refused.
    s.req(
        "PUT",
        &format!("{base}/input/in/data.txt"),
        Some(TOKEN),
        Some(("application/octet-stream", b"hello output")),
    )
    .assert_status(200);
    s.req(
        "PUT",
        &format!("{base}/input/..%2F..%2Fescape"),
        Some(TOKEN),
        Some(("application/octet-stream", b"x")),
    )
    .assert_error(400);
    // Downloads before the end: 409.
    s.get(&format!("{base}/output/out.txt")).assert_error(409);
    // Start.
    let r = s.post(&format!("{base}/start")).assert_status(200);
    assert!(["queued", "running", "ended"].contains(&r.json()["status"].as_str().unwrap_or("")));
    // Now too late to upload or start again.
    s.req(
        "PUT",
        &format!("{base}/input/late.txt"),
        Some(TOKEN),
        Some(("application/octet-stream", b"x")),
    )
    .assert_error(409);
    s.post(&format!("{base}/start")).assert_error(409);
    let v = s.wait_ended(&id, TOKEN);
    assert!(
        is_rfc3339(&v["start_date"]) && is_rfc3339(&v["end_date"]),
        "{v}"
    );
    if core_works() {
        assert_eq!(v["end_reason"], "normal", "{v}");
        assert_eq!(v["exit_code"], 3);
        assert_eq!(v["stdout"], "done\n");
        assert_eq!(v["stderr"], "oops\n");
        assert!(
            v["cpu_time_s"].is_f64()
                && v["wall_time_s"].is_f64()
                && v["peak_memory_bytes"].is_u64(),
            "{v}"
        );
        let no_log = s.get(&format!("{base}?include_log=false")).json();
        assert!(no_log.get("stdout").is_none());
        let r = s.get(&format!("{base}/output/out.txt"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello output");
        // A symlink or FIFO in place of an output is never followed: a clear error.
        for bad in ["link.txt", "fifo"] {
            let v = s.get(&format!("{base}/output/{bad}")).assert_error(409);
            assert_eq!(v["error_code"], 1402, "{v}");
        }
        s.get(&format!("{base}/output/missing.txt"))
            .assert_error(409);
    } else {
        assert_eq!(v["end_reason"], "internal-error", "{v}");
        assert!(v["message"].is_string());
    }
    // Paths that leave the work dir, and outputs not asked for.
    s.get(&format!("{base}/output/../../etc/passwd"))
        .assert_error(400);
    s.get(&format!("{base}/output/%2e%2e/%2e%2e/etc/passwd"))
        .assert_error(400);
    s.get(&format!("{base}/output/other.txt")).assert_error(404);
    // Stop after the end: 409. Delete: gone, every byte.
    s.post(&format!("{base}/stop")).assert_error(409);
    assert_eq!(s.req("DELETE", &base, Some(TOKEN), None).status, 200);
    s.get(&base).assert_error(404);
    s.get(&format!("{base}/output/out.txt")).assert_error(404);
    assert!(!data.path().join("executions").join(&id).exists());
}

#[test]
fn stop_and_delete_of_waiting_and_running_executions() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    // Pending: stop ends it at once.
    let id = s.create_id(
        TOKEN,
        &json!({"environment": "busybox", "command": ["true"]}),
    );
    let r = s
        .post(&format!("/api/v1/executions/{id}/stop"))
        .assert_status(200);
    assert_eq!(r.json()["status"], "ended");
    assert_eq!(r.json()["end_reason"], "stopped");
    if !core_works() {
        return;
    }
    // Running: stop ends it as `stopped`, promptly.
    let id = s.create_id(
        TOKEN,
        &json!({"environment": "busybox", "command": ["sleep", "30"], "start": true}),
    );
    s.wait_running(&id);
    let r = s
        .post(&format!("/api/v1/executions/{id}/stop"))
        .assert_status(200);
    assert_eq!(r.json()["end_reason"], "stopped");
    // Ended by the stop, not by its own end 30 s later (the engine's clock, not the test's).
    assert!(
        r.json()["wall_time_s"].as_f64().unwrap() < 30.0,
        "{}",
        r.text()
    );
    // Running: DELETE stops it and erases it.
    let id = s.create_id(
        TOKEN,
        &json!({"environment": "busybox", "command": ["sleep", "30"], "start": true}),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(s.delete(&format!("/api/v1/executions/{id}")).status, 200);
    s.get(&format!("/api/v1/executions/{id}")).assert_error(404);
    assert!(!data.path().join("executions").join(&id).exists());
}

#[test]
fn environment_import_run_and_delete() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let archive = common::busybox_oci_archive(data.path());
    let bytes = std::fs::read(&archive).expect("archive");
    s.post_bytes(
        "/api/v1/environments?envid=bb&name=BusyBox&authors=Ann,Bob&description=tiny",
        TOKEN,
        "application/x-tar",
        &bytes,
    )
    .assert_status(201);
    let v = s.get("/api/v1/environments/bb").json();
    assert_eq!(v["name"], "BusyBox");
    assert_eq!(v["authors"], json!(["Ann", "Bob"]));
    assert_eq!(v["description"], "tiny");
    assert!(s
        .get("/api/v1/environments")
        .json()
        .as_array()
        .expect("list")
        .iter()
        .any(|e| e["envid"] == "bb"));
    // The same id again: 409.
    s.post_bytes(
        "/api/v1/environments?envid=bb",
        TOKEN,
        "application/x-tar",
        &bytes,
    )
    .assert_error(409);
    // Multipart works too.
    let boundary = "b0undary";
    let mut mp = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"envid\"\r\n\r\nbb2\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"bb.tar\"\r\n\r\n").into_bytes();
    mp.extend_from_slice(&bytes);
    mp.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = s.req(
        "POST",
        "/api/v1/environments",
        Some(TOKEN),
        Some((&format!("multipart/form-data; boundary={boundary}"), &mp)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = create(
        &s,
        TOKEN,
        json!({"environment": "bb", "command": ["sh", "-c", "echo imported"], "wait": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    if core_works() {
        assert_eq!(r.json()["stdout"], "imported\n", "{}", r.text());
        // In use while a run holds it: 409.
        let run = create(
            &s,
            TOKEN,
            json!({"environment": "bb", "command": ["sleep", "2"], "start": true}),
        );
        let id = run.json()["id"].as_str().expect("id").to_string();
        s.wait_running(&id);
        s.delete("/api/v1/environments/bb").assert_error(409);
        s.wait_ended(&id, TOKEN);
    }
    assert_eq!(s.delete("/api/v1/environments/bb").status, 200);
    s.get("/api/v1/environments/bb").assert_error(404);
    s.delete("/api/v1/environments/bb").assert_error(404);
}

/// A stop that comes between the claim and the program's start (while the core still sets
/// the sandbox up) ends it at once too.
#[test]
fn stop_right_after_start() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    if !core_works() {
        return;
    }
    for _ in 0..3 {
        let id = s.create_id(
            TOKEN,
            &json!({"environment": "busybox", "command": ["sleep", "30"]}),
        );
        s.post(&format!("/api/v1/executions/{id}/start"));
        let r = s
            .post(&format!("/api/v1/executions/{id}/stop"))
            .assert_status(200);
        assert_eq!(r.json()["end_reason"], "stopped");
        // Ended by the stop (before its program started, or while it ran), not by its own end.
        let wall = r.json()["wall_time_s"].as_f64().unwrap_or(0.0);
        assert!(wall < 30.0, "{}", r.text());
    }
}
