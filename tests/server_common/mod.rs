//! Shared by the server tests: start the real `sandpit serve` on 127.0.0.1 (any free port,
//! a temp data dir) and talk to it with a tiny HTTP/1.1 client. Tests kill only the server
//! processes they started, by their own child handle.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "test-master-token";

pub fn rootfs() -> PathBuf {
    std::env::var_os("SANDPIT_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/rootfs/busybox"))
}

pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub data: PathBuf,
}

impl Server {
    /// Starts a server on a data dir; `extra` are more `serve` options.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Self::spawn(data, extra, None)
    }

    /// Starts a server whose log (stderr) goes to the file `log`; `extra` are more options
    /// (global ones such as `--log-format` too: they may follow the subcommand).
    pub fn start_with_log(data: &Path, extra: &[&str], log: &Path) -> Server {
        Self::spawn(data, extra, Some(log))
    }

    /// `log`: the file the server's stderr goes to; none: only warnings, on the test's
    /// stderr (not a line per request), unless the caller's `SANDPIT_LOG` says otherwise.
    /// Either way a server that fails to start is reported with what it said.
    fn spawn(data: &Path, extra: &[&str], log: Option<&Path>) -> Server {
        let root = rootfs();
        assert!(
            root.join("bin").is_dir(),
            "no busybox rootfs at {} (run `make rootfs`)",
            root.display()
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandpit"));
        cmd.arg("--data")
            .arg(data)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--rootfs-env")
            .arg(format!("busybox={}", root.display()))
            .args(extra)
            .env("SANDPIT_MASTER_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => std::fs::File::create(path).expect("log file").into(),
                None => Stdio::piped(),
            });
        if log.is_some() {
            // The server's own default: its log is what the caller tests.
            cmd.env_remove("SANDPIT_LOG");
        } else if std::env::var_os("SANDPIT_LOG").is_none() {
            cmd.env("SANDPIT_LOG", "warn");
        }
        let mut child = cmd.spawn().expect("start sandpit serve");
        // The server's stderr, passed on to the test's, its first lines kept for a failed start.
        let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        if let Some(stderr) = child.stderr.take() {
            let said = said.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("{line}");
                    let mut said = said.lock().unwrap_or_else(|e| e.into_inner());
                    if said.len() < 20 {
                        said.push(line);
                    }
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(e) => {
                // Its last words reach the pipe before its exit status.
                std::thread::sleep(Duration::from_millis(200));
                let status = child.try_wait();
                let said = match log {
                    Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
                    None => said.lock().unwrap_or_else(|e| e.into_inner()).join(" | "),
                };
                panic!(
                    "the server did not say where it listens ({e}): exit {status:?}; it said: {}",
                    said.trim()
                );
            }
        };
        Server {
            child: Some(child),
            addr,
            data: data.to_path_buf(),
        }
    }

    /// The server's process id (for /proc/PID/status).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The server's resident memory now and at its peak, in KiB (VmRSS, VmHWM).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {status}"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// A new API key (`fields` besides its name); returns its token.
    pub fn key(&self, name: &str, fields: Value) -> String {
        let mut body = fields;
        body["name"] = Value::String(name.to_string());
        let r = self.post_json("/api/v1/api_keys", TOKEN, &body);
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["key"].as_str().expect("key").to_string()
    }

    /// `kill -9` of this server (the child we started), and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    pub fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> Resp {
        let mut headers = Vec::new();
        let auth;
        if let Some(t) = token {
            auth = format!("Bearer {t}");
            headers.push(("Authorization", auth.as_str()));
        }
        if let Some((ct, _)) = body {
            headers.push(("Content-Type", ct));
        }
        request(
            &self.addr,
            method,
            path,
            &headers,
            body.map_or(&[][..], |b| b.1),
        )
    }

    /// A body of any type, posted with `token`.
    pub fn post_bytes(&self, path: &str, token: &str, content_type: &str, body: &[u8]) -> Resp {
        self.req("POST", path, Some(token), Some((content_type, body)))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.req("GET", path, Some(TOKEN), None)
    }

    /// A bodiless `POST` with the master token (start, stop).
    pub fn post(&self, path: &str) -> Resp {
        self.req("POST", path, Some(TOKEN), None)
    }

    /// A `DELETE` with the master token.
    pub fn delete(&self, path: &str) -> Resp {
        self.req("DELETE", path, Some(TOKEN), None)
    }

    pub fn post_json(&self, path: &str, token: &str, body: &Value) -> Resp {
        let text = body.to_string();
        self.req(
            "POST",
            path,
            Some(token),
            Some(("application/json", text.as_bytes())),
        )
    }

    /// Polls until the execution has ended (bounded).
    /// Creates an execution (201 or the test fails) and returns its id.
    pub fn create_id(&self, token: &str, body: &Value) -> String {
        let r = self.post_json("/api/v1/executions", token, body);
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().expect("id").to_string()
    }

    /// Waits until the execution is running (at most 20 s).
    pub fn wait_running(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.get(&format!("/api/v1/executions/{id}")).json()["status"] != "running" {
            assert!(Instant::now() < deadline, "execution {id} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_ended(&self, id: &str, token: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.req(
                "GET",
                &format!("/api/v1/executions/{id}"),
                Some(token),
                None,
            );
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            if v["status"] == "ended" {
                return v;
            }
            assert!(Instant::now() < deadline, "execution {id} did not end: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    /// Stops the server as systemd does, SIGTERM, so that it ends its sandboxes and removes
    /// their cgroups (a SIGKILL leaves them to the next start's sweep); SIGKILL if it has not
    /// stopped within 10 s.
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.kill9();
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status (the body in the failure's message).
    pub fn assert_status(self, status: u16) -> Resp {
        assert_eq!(self.status, status, "{}", self.text());
        self
    }

    /// Asserts an error response whose message says `says`; returns its `{error_code,
    /// message}`.
    pub fn assert_refused(&self, status: u16, says: &str) -> Value {
        let v = self.assert_error(status);
        assert!(v["message"].as_str().unwrap_or("").contains(says), "{v}");
        v
    }

    /// Asserts an error response: status, `{error_code, message}`.
    pub fn assert_error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert!(v["error_code"].is_u64(), "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }
}

/// One server-sent event: its name (`message` when none), data and id.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

/// The events of an SSE stream (comments skipped), as a browser's EventSource reads them:
/// lines end at CR, LF or CRLF.
pub fn parse_sse(text: &str) -> Vec<Event> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    let (mut event, mut data, mut id) = (String::new(), Vec::<String>::new(), None);
    for line in text.split('\n') {
        if line.is_empty() {
            if !data.is_empty() {
                out.push(Event {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event.clone()
                    },
                    data: data.join("\n"),
                    id: id.clone(),
                });
            }
            event.clear();
            data.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_string(),
            "data" => data.push(value.to_string()),
            "id" => id = Some(value.to_string()),
            _ => {}
        }
    }
    out
}

/// One request's bytes, head and body, to be written at once (a second small write would
/// wait for the server's delayed ACK). `close`: the server closes the connection after it.
fn request_bytes(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on its own connection (`Connection: close`), read to the end.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    stream
        .write_all(&request_bytes(addr, method, path, headers, body, true))
        .expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    parse_response(&raw)
}

/// One keep-alive connection, as a client that sends many requests keeps it: opened at the
/// first request, and again after one that failed.
pub struct KeepAlive {
    addr: String,
    conn: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    pub fn new(addr: &str) -> KeepAlive {
        KeepAlive {
            addr: addr.to_string(),
            conn: None,
        }
    }

    /// Sends a request and reads its answer, which must have a `Content-Length`.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let request = request_bytes(&self.addr, method, path, headers, body, false);
        let answer = self.exchange(&request);
        if answer.is_err() {
            self.conn = None;
        }
        answer
    }

    fn exchange(&mut self, request: &[u8]) -> std::io::Result<Resp> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(&self.addr)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(120)))?;
                self.conn.insert(BufReader::new(stream))
            }
        };
        conn.get_mut().write_all(request)?;
        // The head, line by line up to its blank line; then exactly its body.
        let mut raw = Vec::new();
        let mut length = None;
        loop {
            let mut line = String::new();
            if conn.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("the connection closed mid-answer"));
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
            raw.extend_from_slice(line.as_bytes());
            if line == "\r\n" {
                break;
            }
        }
        let length = length.ok_or_else(|| std::io::Error::other("no Content-Length"))?;
        let start = raw.len();
        raw.resize(start + length, 0);
        conn.read_exact(&mut raw[start..])?;
        Ok(parse_response(&raw))
    }
}

pub fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}

/// Whether the sandbox core can run programs here (it is being written on another branch;
/// until it lands, tests that need real runs say so and skip those checks).
pub fn core_works() -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_sandpit"))
        .args(["run", "--rootfs"])
        .arg(rootfs())
        .args(["--json", "--", "/bin/true"])
        .output()
        .expect("run sandpit");
    let ok = out.status.success();
    if !ok {
        eprintln!(
            "NOTE: the sandbox core can't run programs in this build ({}); checks that need a real run are skipped",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    ok
}

pub fn temp_data() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sandpit-server-test")
        .tempdir()
        .expect("temp dir")
}

/// The busybox rootfs packed as an OCI image layout and tarred (an OCI archive), in `dir`.
pub fn busybox_oci_archive(dir: &Path) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layout = dir.join("layout");
    let ok = Command::new("bash")
        .arg(manifest.join("rootfs/lib/pack-dir.sh"))
        .arg(rootfs())
        .arg(&layout)
        .arg("[\"/bin/sh\"]")
        .status()
        .expect("pack-dir.sh")
        .success();
    assert!(ok, "packing the busybox rootfs failed");
    let archive = dir.join("busybox.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .expect("tar")
        .success();
    assert!(ok, "tar failed");
    archive
}

/// Processes the server's engine started that are still alive (sandboxed: uid ≥ 1,000,000),
/// and its cgroups left (`sandpit-<pid>-<n>`), but the one the engine keeps made ahead for
/// its next sandbox: the newest (made after every one taken), and empty.
pub fn left_behind(s: &Server) -> (usize, Vec<String>) {
    let pid = s.pid().to_string();
    let mut processes = 0;
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_default()
                .to_string()
        };
        let uid: u64 = field("Uid:").parse().unwrap_or(0);
        if field("PPid:") == pid && uid >= 1_000_000 {
            processes += 1;
        }
    }
    let prefix = format!("sandpit-{pid}-");
    let mut cgroups = Vec::new();
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
    {
        if !line.contains(" - cgroup") {
            continue;
        }
        let mount = line.split_whitespace().nth(4).unwrap_or("/nonexistent");
        let mut stack = vec![(PathBuf::from(mount), 0)];
        while let Some((dir, depth)) = stack.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(n) = name.strip_prefix(&prefix) {
                        cgroups.push((n.parse::<u64>().unwrap_or(0), e.path()));
                    }
                    if depth < 4 {
                        stack.push((e.path(), depth + 1));
                    }
                }
            }
        }
    }
    let newest = cgroups.iter().map(|(n, _)| *n).max();
    let empty = |dir: &Path| {
        std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty())
    };
    let made_ahead = newest.filter(|newest| {
        cgroups
            .iter()
            .filter(|(n, _)| n == newest)
            .all(|(_, dir)| empty(dir))
    });
    let left = cgroups
        .into_iter()
        .filter(|(n, _)| Some(*n) != made_ahead)
        .map(|(_, dir)| dir.display().to_string())
        .collect();
    (processes, left)
}

/// What [`left_behind`] finds once the engine's background teardown has had its time (a run
/// is answered once its verdict is in; its sandbox ends right after): polls up to 10 s.
pub fn left_behind_settled(s: &Server) -> (usize, Vec<String>) {
    let mut left = left_behind(s);
    for _ in 0..200 {
        if left.0 == 0 && left.1.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        left = left_behind(s);
    }
    left
}
