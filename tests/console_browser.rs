//! The web console in a real browser: Debian's Chromium, headless, driven through the
//! DevTools protocol (a small client over a websocket). It loads the page `sandpit serve`
//! embeds, enters the token, runs programs from the page, watches the output arrive live,
//! stops one, and checks that the page shows the output, the end reason and the
//! measurements, lists the executions, and shows program output as text only. A screenshot
//! is saved under the target directory. Skipped, with the reason printed, only when Chromium
//! is not installed and cannot be.

#[path = "server_common/mod.rs"]
mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{core_works, temp_data, Server, TOKEN};
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium's path, installing Debian's package when it is missing; `None` (with the reason
/// printed) when it can't be had.
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from(CHROMIUM);
    if path.exists() {
        return Some(path);
    }
    eprintln!("console test: installing Debian's chromium (apt-get install chromium)…");
    // The project's apt wrapper waits for apt's locks (another build, unattended-upgrades).
    let apt_sh = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/apt.sh");
    if apt_sh.exists() {
        let _ = Command::new("bash")
            .arg(&apt_sh)
            .args(["install-missing", "chromium"])
            .stdout(Stdio::null())
            .status();
        if path.exists() {
            return Some(path);
        }
    }
    let install = || {
        Command::new("apt-get")
            .args([
                "-o",
                "DPkg::Lock::Timeout=600",
                "install",
                "-y",
                "-q",
                "chromium",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        // The package lists may be missing or old.
        let _ = Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=600", "update", "-q"])
            .stdout(Stdio::null())
            .status();
        install();
    }
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: the console browser test: Chromium is not installed and apt-get could not install it");
        None
    }
}

/// GET on Chromium's DevTools HTTP endpoint (which keeps the connection open: the answer is
/// read by its Content-Length).
fn devtools_get(addr: &str, path: &str) -> Value {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = TcpStream::connect(addr).expect("connect to DevTools");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("write");
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read head");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().expect("length");
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("read body");
    serde_json::from_slice(&body).expect("DevTools JSON")
}

/// The Chromium we started, in a process group of its own: all of it is killed (and the
/// browser reaped) when this is dropped, a failed test too.
struct Chromium(Child);

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.wait();
    }
}

/// A headless Chromium and one page of it. Everything it writes (profile, caches, crash
/// database) stays in a temporary directory of its own.
struct Browser {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    // Dropped in this order: the browser dies before its directory goes.
    _process: Chromium,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(chromium: &Path) -> Browser {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::Builder::new()
            .prefix("sandpit-chromium")
            .tempdir()
            .expect("profile dir");
        let home = profile.path().join("home");
        std::fs::create_dir_all(&home).expect("home dir");
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--remote-debugging-port=0",
                "--window-size=1280,1100",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            // Not the user's ~/.config and ~/.cache, nor /tmp (its singleton socket).
            .env("HOME", &home)
            .env("TMPDIR", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let process = Chromium(child);
        // Chromium writes the port it chose (and the browser's path) into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let addr = format!("127.0.0.1:{port}");
        let targets = devtools_get(&addr, "/json/list");
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .unwrap_or_else(|| panic!("no page among {targets}"));
        let url = page["webSocketDebuggerUrl"]
            .as_str()
            .expect("webSocketDebuggerUrl");
        let (ws, _) = tungstenite::connect(url).expect("DevTools websocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60)))
                .expect("timeout");
        }
        Browser {
            ws,
            next_id: 1,
            _process: process,
            _profile: profile,
        }
    }

    /// One DevTools command; its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send to chromium");
        loop {
            let reply = self.ws.read().expect("read from chromium");
            let Message::Text(text) = reply else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Runs JavaScript in the page; its value (promises awaited). A thrown error fails.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{js}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    fn text_of(&mut self, id: &str) -> String {
        self.eval(&format!("document.getElementById('{id}').textContent"))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until `condition` (JavaScript) is true in the page (at most a minute).
    fn wait_for(&mut self, condition: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.eval(&format!("!!({condition})")) != json!(true) {
            if Instant::now() > deadline {
                let error = self.text_of("error");
                let body = self.eval("document.body.innerText");
                panic!("the page never showed {what} (error box: {error:?}); page:\n{body}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sets a form field as a user typing would.
    fn set_value(&mut self, id: &str, value: &str) {
        let js = format!(
            "(() => {{ const e = document.getElementById('{id}'); e.value = {}; \
             e.dispatchEvent(new Event('input', {{bubbles: true}})); \
             e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
            serde_json::to_string(value).expect("JSON")
        );
        self.eval(&js);
    }

    fn click(&mut self, selector: &str) {
        self.eval(&format!(
            "document.querySelector({}).click(); true",
            serde_json::to_string(selector).expect("JSON")
        ));
    }

    fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("screenshot dir");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Asked to close first, so that its crash handler (outside the group) ends with it.
        let _ = self.ws.send(Message::text(
            json!({"id": 0, "method": "Browser.close"}).to_string(),
        ));
        let _ = self.ws.flush();
    }
}

#[test]
fn the_console_runs_a_program_and_shows_its_output() {
    let Some(chromium) = chromium() else { return };
    if !core_works() {
        return;
    }
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let mut b = Browser::launch(&chromium);
    b.call("Page.enable", json!({}));
    b.call(
        "Page.navigate",
        json!({"url": format!("http://{}/", s.addr)}),
    );
    b.wait_for(
        "document.readyState === 'complete' && document.getElementById('token')",
        "the page",
    );

    // The token, entered in the page, kept in the tab's sessionStorage, not in the field.
    b.set_value("token", TOKEN);
    b.click("#save-token");
    b.wait_for(
        "document.querySelector('#env option[value=\"busybox\"]')",
        "the environments",
    );
    assert_eq!(
        b.eval("sessionStorage.getItem('sandpit.token')"),
        json!(TOKEN)
    );
    assert_eq!(b.eval("document.getElementById('token').value"), json!(""));
    // No grading on this server: no Projects tab.
    assert_eq!(
        b.eval("document.getElementById('projects-tab').hidden"),
        json!(true)
    );

    // Live: the first line shows while the program still runs; then it is stopped.
    b.set_value("env", "busybox");
    b.set_value("code", "echo first-line\nsleep 60\necho never-printed\n");
    b.click("#run");
    b.wait_for(
        "document.getElementById('live-output').textContent.includes('first-line')",
        "the first line, live",
    );
    assert_eq!(
        b.eval("document.getElementById('result').hidden"),
        json!(true),
        "the run was shown as ended while it slept"
    );
    assert_eq!(
        b.eval("document.getElementById('stop').disabled"),
        json!(false)
    );
    let live_id = b.text_of("exec-id");
    assert!(live_id.starts_with("exec_"), "{live_id}");
    b.click("#stop");
    b.wait_for(
        "document.getElementById('end-reason').textContent === 'stopped'",
        "the stopped run's end reason",
    );
    assert!(!b.text_of("live-output").contains("never-printed"));

    // A normal run: output, end reason, measurements; program output stays text.
    b.set_value(
        "code",
        "echo hello-from-the-console\necho $((6*7)) >&2\necho '<img src=x onerror=window.pwned=1>'\n",
    );
    b.click("#run");
    b.wait_for(
        "document.getElementById('end-reason').textContent === 'normal'",
        "the end reason",
    );
    let stdout = b.text_of("stdout");
    assert!(stdout.contains("hello-from-the-console"), "{stdout}");
    assert!(stdout.contains("<img src=x"), "{stdout}");
    assert!(b.text_of("live-output").contains("hello-from-the-console"));
    assert_eq!(b.text_of("stderr").trim(), "42");
    assert_eq!(b.text_of("exit"), "0");
    for id in ["cpu", "wall", "setup"] {
        let t = b.text_of(id);
        assert!(t.ends_with(" s") && t.len() > 2, "{id}: {t}");
    }
    let memory = b.text_of("memory-used");
    assert!(memory.ends_with("B"), "{memory}");
    assert_eq!(b.eval("typeof window.pwned"), json!("undefined"));
    assert_eq!(b.eval("document.querySelectorAll('img').length"), json!(0));
    let run_id = b.text_of("exec-id");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console/console-run.png");
    b.screenshot(&shot);
    eprintln!("console screenshot: {}", shot.display());

    // Recent executions: both runs listed; opening one shows it.
    b.click("#tabs button[data-tab=\"executions\"]");
    b.wait_for(
        &format!(
            "[...document.querySelectorAll('#executions tbody tr')].map(r => r.dataset.id)\
             .includes('{live_id}') && document.querySelector('#executions tbody tr[data-id=\"{run_id}\"]')"
        ),
        "both runs in the list",
    );
    let row = b.eval(&format!(
        "document.querySelector('#executions tbody tr[data-id=\"{live_id}\"]').innerText"
    ));
    assert!(row.as_str().is_some_and(|r| r.contains("stopped")), "{row}");
    b.click(&format!("#executions tbody tr[data-id=\"{live_id}\"]"));
    b.wait_for(
        &format!(
            "document.getElementById('exec-id').textContent === '{live_id}' && \
             document.getElementById('end-reason').textContent === 'stopped'"
        ),
        "the opened execution",
    );
    assert_eq!(
        b.eval("document.getElementById('tab-run').hidden"),
        json!(false)
    );

    // A program group: the group's end reason, and each program's own in a table.
    let r = s.post_json(
        "/api/v1/executions",
        TOKEN,
        &json!({"environment": "busybox", "wait": true, "programs": [
            {"command": ["echo", "group-zero"]},
            {"command": ["sh", "-c", "echo group-one; exit 3"]},
        ]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let group_id = r.json()["id"].as_str().unwrap().to_string();
    b.click("#tabs button[data-tab=\"executions\"]");
    b.wait_for(
        &format!("document.querySelector('#executions tbody tr[data-id=\"{group_id}\"]')"),
        "the group in the list",
    );
    let row = b.eval(&format!(
        "document.querySelector('#executions tbody tr[data-id=\"{group_id}\"]').innerText"
    ));
    assert!(
        row.as_str().is_some_and(|r| r.contains("group of 2")),
        "{row}"
    );
    b.click(&format!("#executions tbody tr[data-id=\"{group_id}\"]"));
    b.wait_for(
        &format!(
            "document.getElementById('exec-id').textContent === '{group_id}' && \
             !document.getElementById('programs').hidden"
        ),
        "the opened group",
    );
    assert_eq!(b.text_of("end-reason"), "normal");
    let rows = b.eval(
        "[...document.querySelectorAll('#programs tbody tr')].map(r => [...r.cells].map(c => c.textContent))",
    );
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][2], "normal");
    assert_eq!(rows[0][3], "0");
    assert_eq!(rows[1][2], "normal");
    assert_eq!(rows[1][3], "3");
    for row in rows {
        for col in [4, 5, 6] {
            let t = row[col].as_str().unwrap();
            assert!(t.ends_with(" s") && t.len() > 2, "{row:?}");
        }
    }
    let stdout = b.text_of("stdout");
    assert!(
        stdout.contains("group-zero") && stdout.contains("group-one"),
        "{stdout}"
    );
    // Opening a single program again hides the group's table.
    b.click("#tabs button[data-tab=\"executions\"]");
    b.wait_for(
        &format!("document.querySelector('#executions tbody tr[data-id=\"{run_id}\"]')"),
        "the run in the list",
    );
    b.click(&format!("#executions tbody tr[data-id=\"{run_id}\"]"));
    b.wait_for(
        &format!(
            "document.getElementById('exec-id').textContent === '{run_id}' && \
             !document.getElementById('result').hidden"
        ),
        "the single run again",
    );
    assert_eq!(
        b.eval("document.getElementById('programs').hidden"),
        json!(true)
    );
    assert_eq!(b.text_of("exit"), "0");

    // A wrong token is refused in words.
    b.click("#forget-token");
    b.set_value("token", "not-the-token");
    b.click("#save-token");
    b.wait_for(
        "!document.getElementById('error').hidden",
        "the refused token",
    );
    assert!(
        b.text_of("error").contains("token"),
        "{}",
        b.text_of("error")
    );
}

#[test]
fn the_console_is_served_with_headers_that_keep_it_to_itself() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let r = s.req("GET", "/", None, None);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r.text().contains("/console/app.js"));
    for (file, media) in [("app.js", "text/javascript"), ("style.css", "text/css")] {
        let r = s.req("GET", &format!("/console/{file}"), None, None);
        assert_eq!(r.status, 200, "{file}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with(media)),
            "{file}"
        );
    }
    s.req("GET", "/console/../sandpit.db", None, None)
        .assert_error(404);
    s.req("GET", "/console/nothing.js", None, None)
        .assert_error(404);
    s.req("POST", "/", None, None).assert_error(405);
}
