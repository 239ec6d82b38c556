//! Completion callbacks over real HTTP: receivers on loopback (a small hyper server in the
//! test) get the final object plain, HMAC-signed, AES-GCM- and Railgun-CBC-encrypted, and
//! check it; delivery survives a restart of the receiver and a `kill -9` of the server;
//! hosts off the allow-list are refused; every attempt is listed.

#[path = "server_common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::Aes256Gcm;
use bytes::Bytes;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::Sha256;

use common::{temp_data, Server, TOKEN};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A callback receiver on 127.0.0.1: records every request; answers 500 ("busy") to the
/// first `busy` ones, then 200. It can be created down (connections refused) and started
/// later on the same port.
struct Receiver {
    rt: tokio::runtime::Runtime,
    port: u16,
    /// While down: the port, bound but not listening, so connections are refused and no other
    /// socket of a test running alongside can take it.
    reserved: Option<tokio::net::TcpSocket>,
    got: Arc<Mutex<Vec<Received>>>,
    busy: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Not listening yet: its port is bound and held, so connections to it are refused.
    fn down() -> Receiver {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let port = socket.local_addr().expect("addr").port();
        Receiver {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
            port,
            reserved: Some(socket),
            got: Arc::default(),
            busy: Arc::default(),
            task: None,
        }
    }

    fn up() -> Receiver {
        let mut r = Receiver::down();
        r.start();
        r
    }

    fn start(&mut self) {
        let socket = self.reserved.take().expect("the receiver is down");
        let listener = {
            let _runtime = self.rt.enter();
            socket.listen(64).expect("listen on the receiver's port")
        };
        let (got, busy) = (self.got.clone(), self.busy.clone());
        self.task = Some(self.rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (got, busy) = (got.clone(), busy.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (got, busy) = (got.clone(), busy.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            got.lock().unwrap().push(Received {
                                path: parts.uri.path().to_string(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_string())
                                    })
                                    .collect(),
                                body: body.to_vec(),
                            });
                            let refuse = busy
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                            let (status, text) = if refuse { (500, "busy") } else { (200, "OK") };
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(text)));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn allow(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (at most 60 s) until `n` requests have arrived.
    fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} callbacks arrived",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

const HMAC_SECRET: &str = "a-shared-hmac-secret-for-tests";
const AES_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const COMM_KEY: &str = "railgun-comm-key";

fn aes_key() -> Vec<u8> {
    (0..32).collect()
}

/// Railgun's rule: COMM_KEY padded with NUL bytes to 32.
fn railgun_key() -> Vec<u8> {
    let mut k = COMM_KEY.as_bytes().to_vec();
    k.resize(32, 0);
    k
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn gcm_open(key: &[u8], body: &[u8]) -> Result<Vec<u8>, aes_gcm::Error> {
    Aes256Gcm::new_from_slice(key)
        .unwrap()
        .decrypt(GenericArray::from_slice(&body[..12]), &body[12..])
}

fn railgun_open(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut buf = body[16..].to_vec();
    cbc::Decryptor::<aes::Aes256>::new_from_slices(key, &body[..16])
        .unwrap()
        .decrypt_padded_mut::<Pkcs7>(&mut buf)
        .expect("Railgun body decrypts and unpads")
        .to_vec()
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("the callback body is JSON")
}

/// The execution's callbacks (`GET …/callbacks`).
fn callbacks(s: &Server, id: &str) -> Vec<Value> {
    let r = s.get(&format!("/api/v1/executions/{id}/callbacks"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["items"].as_array().expect("items").clone()
}

/// Polls the execution's one callback (at most 60 s) until `done` says so.
fn wait_callback(s: &Server, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let items = callbacks(s, id);
        assert_eq!(items.len(), 1, "{items:?}");
        if done(&items[0]) {
            return items[0].clone();
        }
        assert!(Instant::now() < deadline, "{what}: {}", items[0]);
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn create(s: &Server, command: &str, callback: Value, wait: bool) -> String {
    s.create_id(
        TOKEN,
        &json!({
            "environment": "busybox",
            "command": ["sh", "-c", command],
            "wait": wait,
            "start": true,
            "callback": callback,
        }),
    )
}

#[test]
fn every_mode_arrives_and_verifies() {
    let receiver = Receiver::up();
    let data = temp_data();
    let s = Server::start(data.path(), &["--callback-allow", &receiver.allow()]);
    let cases = [
        ("plain", json!({"url": receiver.url("/plain")})),
        (
            "hmac",
            json!({"url": receiver.url("/hmac?tenant=1"), "secret": HMAC_SECRET}),
        ),
        (
            "aes-gcm",
            json!({"url": receiver.url("/aes-gcm"), "mode": "aes-gcm", "secret": AES_KEY_HEX}),
        ),
        (
            "railgun-cbc",
            json!({"url": receiver.url("/railgun-cbc"), "mode": "railgun-cbc", "secret": COMM_KEY}),
        ),
    ];
    let ids: Vec<(&str, String)> = cases
        .iter()
        .map(|(mode, cb)| {
            let cmd = format!("echo out-{mode}; echo err-{mode} >&2; exit 3");
            (*mode, create(&s, &cmd, cb.clone(), true))
        })
        .collect();
    let got = receiver.wait_for(4);
    assert_eq!(got.len(), 4, "one request each: {got:?}");
    for (mode, id) in &ids {
        let r = got
            .iter()
            .find(|r| r.path == format!("/{mode}"))
            .unwrap_or_else(|| panic!("no callback for {mode}: {got:?}"));
        let cb = wait_callback(&s, id, "delivered", |c| c["state"] == "delivered");
        // What GET returns, with the log: exactly the final object.
        let want = s.get(&format!("/api/v1/executions/{id}")).json();
        assert_eq!(want["stdout"], format!("out-{mode}\n"));
        assert_eq!(want["exit_code"], 3);
        assert_eq!(r.header("x-sandpit-callback"), cb["id"].as_str(), "{mode}");
        assert_eq!(r.header("x-sandpit-event"), Some("execution.ended"));
        assert_eq!(r.header("x-sandpit-attempt"), Some("1"));
        let object = match *mode {
            "plain" => {
                assert_eq!(r.header("content-type"), Some("application/json"));
                assert_eq!(r.header("x-sphere-engine-signature"), None);
                json_of(&r.body)
            }
            "hmac" => {
                assert_eq!(r.header("content-type"), Some("application/json"));
                let sig = r.header("x-sphere-engine-signature").expect("signed");
                assert_eq!(sig, hmac_hex(HMAC_SECRET.as_bytes(), &r.body));
                let mut forged = r.body.clone();
                forged[10] ^= 1;
                assert_ne!(sig, hmac_hex(HMAC_SECRET.as_bytes(), &forged));
                assert_ne!(sig, hmac_hex(b"another-secret-of-some-length", &r.body));
                json_of(&r.body)
            }
            "aes-gcm" => {
                assert_eq!(r.header("content-type"), Some("application/octet-stream"));
                assert!(!String::from_utf8_lossy(&r.body).contains(id), "encrypted");
                assert!(gcm_open(&[7u8; 32], &r.body).is_err(), "another key fails");
                let mut tampered = r.body.clone();
                tampered[30] ^= 1;
                assert!(
                    gcm_open(&aes_key(), &tampered).is_err(),
                    "tampering is caught"
                );
                json_of(&gcm_open(&aes_key(), &r.body).expect("decrypts"))
            }
            "railgun-cbc" => {
                assert_eq!(r.header("content-type"), Some("application/octet-stream"));
                assert_eq!((r.body.len() - 16) % 16, 0, "IV, then whole blocks");
                json_of(&railgun_open(&railgun_key(), &r.body))
            }
            _ => unreachable!(),
        };
        assert_eq!(object, want, "{mode}: the body is what GET returns");
        // Attempts: one, answered 200; the secret shows nowhere.
        assert_eq!(cb["mode"], *mode);
        let attempts = cb["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{cb}");
        assert_eq!(attempts[0]["status_code"], 200);
        assert_eq!(attempts[0]["error"], Value::Null);
        assert_eq!(attempts[0]["next_attempt_date"], Value::Null);
        assert!(cb["delivered_date"].is_string() && cb["ready_date"].is_string());
        for text in [
            s.get(&format!("/api/v1/executions/{id}/callbacks")).text(),
            s.get(&format!("/api/v1/executions/{id}")).text(),
            s.get("/api/v1/executions").text(),
        ] {
            for secret in [HMAC_SECRET, AES_KEY_HEX, COMM_KEY] {
                assert!(!text.contains(secret), "{mode}: a secret is shown");
            }
        }
    }
    // Without a callback: an empty list. Deleting an execution erases its callbacks.
    let bare = s.create_id(
        TOKEN,
        &json!({"environment": "busybox", "command": ["true"], "wait": true}),
    );
    assert!(callbacks(&s, &bare).is_empty());
    let (_, first) = &ids[0];
    s.delete(&format!("/api/v1/executions/{first}"))
        .assert_status(200);
    s.get(&format!("/api/v1/executions/{first}/callbacks"))
        .assert_error(404);
    assert_eq!(receiver.received().len(), 4, "nothing more was sent");
}

#[test]
fn delivery_survives_a_receiver_restart() {
    let mut receiver = Receiver::down();
    let data = temp_data();
    let s = Server::start(
        data.path(),
        &[
            "--callback-allow",
            &receiver.allow(),
            "--callback-backoff",
            "100ms",
            "--callback-backoff-max",
            "400ms",
        ],
    );
    let id = create(
        &s,
        "echo restarted",
        json!({"url": receiver.url("/hook"), "secret": HMAC_SECRET}),
        true,
    );
    // The receiver is down: attempts fail, each with its error and the next one planned.
    let cb = wait_callback(&s, &id, "two failed attempts", |c| {
        c["attempts"].as_array().unwrap().len() >= 2
    });
    for a in cb["attempts"].as_array().unwrap() {
        assert_eq!(a["status_code"], Value::Null, "{a}");
        assert!(
            a["error"].as_str().is_some_and(|e| e.contains("refused")),
            "{a}"
        );
        assert!(a["next_attempt_date"].as_str().unwrap() > a["date"].as_str().unwrap());
    }
    // It comes back, busy at first (500), then takes the callback.
    receiver.busy.store(1, Ordering::SeqCst);
    receiver.start();
    let cb = wait_callback(&s, &id, "delivered", |c| c["state"] == "delivered");
    let got = receiver.wait_for(2);
    assert_eq!(got.len(), 2, "a 500, then the delivery: {got:?}");
    assert_eq!(got[0].body, got[1].body, "every retry sends the same bytes");
    assert_eq!(
        got[0].header("x-sandpit-callback"),
        got[1].header("x-sandpit-callback")
    );
    let sig = got[1].header("x-sphere-engine-signature").unwrap();
    assert_eq!(sig, hmac_hex(HMAC_SECRET.as_bytes(), &got[1].body));
    assert_eq!(
        json_of(&got[1].body),
        s.get(&format!("/api/v1/executions/{id}")).json()
    );
    let attempts = cb["attempts"].as_array().unwrap();
    let n = attempts.len();
    assert!(n >= 4, "{cb}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1);
    }
    let busy = &attempts[n - 2];
    assert_eq!(busy["status_code"], 500, "{cb}");
    assert_eq!(busy["error"], "HTTP 500: busy");
    assert_eq!(
        got[0].header("x-sandpit-attempt"),
        Some((n - 1).to_string().as_str())
    );
    let last = &attempts[n - 1];
    assert_eq!(last["status_code"], 200);
    assert_eq!(last["error"], Value::Null);
    assert_eq!(cb["last_error"], Value::Null);
    assert_eq!(cb["next_attempt_date"], Value::Null);
    // /metrics counts them, before each attempt is recorded: one delivery, the rest failed.
    let metrics = s.get("/metrics").text();
    let line = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .to_string()
    };
    assert_eq!(line("sandpit_callback_deliveries_total"), "1");
    assert_eq!(line("sandpit_callback_failures_total"), (n - 1).to_string());
}

#[test]
fn kill_9_with_pending_callbacks_delivers_after_restart() {
    let mut receiver = Receiver::down();
    let data = temp_data();
    let allow = receiver.allow();
    let flags = [
        "--callback-allow",
        allow.as_str(),
        "--callback-backoff",
        "100ms",
        "--callback-backoff-max",
        "300ms",
    ];
    let mut s = Server::start(data.path(), &flags);
    // One ended, its callback failing; one still running, its callback waiting.
    let ended = create(
        &s,
        "echo before-the-crash",
        json!({"url": receiver.url("/ended"), "mode": "aes-gcm", "secret": AES_KEY_HEX}),
        true,
    );
    wait_callback(&s, &ended, "a failed attempt", |c| {
        c["state"] == "pending" && !c["attempts"].as_array().unwrap().is_empty()
    });
    let running = create(
        &s,
        "sleep 60",
        json!({"url": receiver.url("/running")}),
        false,
    );
    s.wait_running(&running);
    assert_eq!(callbacks(&s, &running)[0]["state"], "waiting");

    s.kill9();
    receiver.start();
    let s = Server::start(data.path(), &flags);

    let got = receiver.wait_for(2);
    let at = |path: &str| {
        got.iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("nothing at {path}: {got:?}"))
    };
    let object = json_of(&gcm_open(&aes_key(), &at("/ended").body).expect("decrypts"));
    assert_eq!(object["stdout"], "before-the-crash\n");
    assert_eq!(object, s.get(&format!("/api/v1/executions/{ended}")).json());
    let cb = wait_callback(&s, &ended, "delivered", |c| c["state"] == "delivered");
    assert!(cb["attempts"].as_array().unwrap().len() >= 2, "{cb}");
    // The running one ended with the crash (internal-error); its callback says so.
    let object = json_of(&at("/running").body);
    assert_eq!(object["id"], running.as_str());
    assert_eq!(object["end_reason"], "internal-error");
    assert_eq!(
        object,
        s.get(&format!("/api/v1/executions/{running}")).json()
    );
    wait_callback(&s, &running, "delivered", |c| c["state"] == "delivered");
}

#[test]
fn hosts_off_the_allow_list_are_refused() {
    let receiver = Receiver::up();
    // Nothing is allowed by default.
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let r = s.post_json(
        "/api/v1/executions",
        TOKEN,
        &json!({"environment": "busybox", "command": ["true"], "callback": {"url": receiver.url("/")}}),
    );
    let e = r.assert_error(400);
    assert!(
        e["message"].as_str().unwrap().contains("--callback-allow"),
        "{e}"
    );
    drop(s);

    let data = temp_data();
    let port = receiver.port;
    let s = Server::start(
        data.path(),
        &[
            "--callback-allow",
            &receiver.allow(),
            "--callback-allow",
            &format!("localhost:{port}"),
        ],
    );
    let refused = [
        (
            json!({"url": format!("http://127.0.0.1:{}/", port + 1)}),
            "allow-list",
        ),
        (
            json!({"url": format!("http://127.0.0.2:{port}/")}),
            "allow-list",
        ),
        (
            json!({"url": format!("http://[::1]:{port}/")}),
            "allow-list",
        ),
        (
            json!({"url": format!("http://10.0.0.1:{port}/")}),
            "allow-list",
        ),
        (
            json!({"url": "http://169.254.169.254/latest/meta-data/"}),
            "allow-list",
        ),
        (
            json!({"url": format!("http://0x7f000001:{port}/")}),
            "allow-list",
        ),
        (
            json!({"url": format!("https://127.0.0.1:{port}/")}),
            "https",
        ),
        (
            json!({"url": format!("http://u:p@127.0.0.1:{port}/")}),
            "user info",
        ),
        (
            json!({"url": format!("ftp://127.0.0.1:{port}/")}),
            "http://",
        ),
        (
            json!({"url": receiver.url("/"), "mode": "rot13"}),
            "callback.mode",
        ),
        (
            json!({"url": receiver.url("/"), "mode": "aes-gcm"}),
            "needs one",
        ),
        (
            json!({"url": receiver.url("/"), "mode": "aes-gcm", "secret": "short"}),
            "32 bytes",
        ),
        (
            json!({"url": receiver.url("/"), "secret": "short"}),
            "at least 16",
        ),
        (json!({"url": receiver.url("/"), "surprise": 1}), "surprise"),
        (json!({"mode": "plain"}), "url"),
    ];
    for (callback, why) in refused {
        let r = s.post_json(
            "/api/v1/executions",
            TOKEN,
            &json!({"environment": "busybox", "command": ["true"], "callback": callback}),
        );
        let e = r.assert_error(400);
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(why), "{callback}: {message}");
    }
    assert_eq!(
        s.get("/api/v1/executions").json()["paging"]["total"],
        0,
        "a refused callback creates nothing"
    );
    // A name on the list that resolves to an address nobody listed (`localhost` →
    // 127.0.0.1, not public) is refused at delivery, once, and nothing is sent.
    let data2 = temp_data();
    let s2 = Server::start(
        data2.path(),
        &["--callback-allow", &format!("localhost:{port}")],
    );
    let id = create(
        &s2,
        "true",
        json!({"url": format!("http://localhost:{port}/rebound")}),
        true,
    );
    let cb = wait_callback(&s2, &id, "refused", |c| c["state"] == "failed");
    let attempts = cb["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "a refusal is not retried: {cb}");
    let error = attempts[0]["error"].as_str().unwrap();
    assert!(
        error.contains("refused") && error.contains("127.0.0.1"),
        "{error}"
    );
    assert_eq!(attempts[0]["status_code"], Value::Null);
    // With the address listed as well, the same name is delivered to.
    let id = create(
        &s,
        "true",
        json!({"url": format!("http://localhost:{port}/named")}),
        true,
    );
    wait_callback(&s, &id, "delivered", |c| c["state"] == "delivered");
    let got = receiver.received();
    assert!(got.iter().all(|r| r.path != "/rebound"), "{got:?}");
    assert_eq!(got.iter().filter(|r| r.path == "/named").count(), 1);
    // A bad allow-list entry stops the server from starting.
    let out = Command::new(env!("CARGO_BIN_EXE_sandpit"))
        .arg("--data")
        .arg(data2.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--callback-allow",
            "::1",
        ])
        .output()
        .expect("run sandpit");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("brackets"));
}

/// Form bodies carry the callback as `callback[url]`, `callback[mode]`, `callback[secret]`
/// (a secret of digits stays text).
#[test]
fn a_form_body_carries_a_callback() {
    let receiver = Receiver::up();
    let data = temp_data();
    let s = Server::start(data.path(), &["--callback-allow", &receiver.allow()]);
    let url = receiver.url("/form");
    let secret = "1234567890123456";
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("environment", "busybox")
        .append_pair("command", "true")
        .append_pair("wait", "true")
        .append_pair("callback[url]", &url)
        .append_pair("callback[secret]", secret)
        .finish();
    s.post_bytes(
        "/api/v1/executions",
        TOKEN,
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    )
    .assert_status(201);
    let got = receiver.wait_for(1);
    assert_eq!(
        got[0].header("x-sphere-engine-signature").unwrap(),
        hmac_hex(secret.as_bytes(), &got[0].body)
    );
}
