// The sandpit console: a client of the API like any other. The token stays in this tab's
// sessionStorage and goes out only as an Authorization header to this server. Program output
// is only ever set as text (textContent), never parsed as HTML.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "sandpit.token";
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  return { Authorization: "Bearer " + token() };
}

/** Calls the API; resolves to the JSON answer, rejects with an ApiError saying why. */
async function api(method, path, body) {
  const init = { method, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(API + path, init);
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = text;
  }
  if (!resp.ok) {
    const message = data && data.message ? data.message : `${resp.status} ${resp.statusText}`;
    throw new ApiError(resp.status, message);
  }
  return data;
}

function showError(e) {
  const box = $("error");
  box.textContent = e instanceof ApiError && e.status === 401
    ? "The token was refused: " + e.message
    : String(e.message || e);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// ---- tabs -------------------------------------------------------------------------------

function selectTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.tab === name);
  }
  for (const s of document.querySelectorAll("section.tab")) {
    s.hidden = s.id !== "tab-" + name;
  }
  if (name === "executions") loadExecutions().catch(showError);
  if (name === "projects") loadProjects().catch(showError);
}

// ---- environments and what to run in them -----------------------------------------------

const PRESETS = [
  {
    match: /python/,
    file: "main.py",
    command: "python3 main.py",
    code: 'print("hello from python")\n',
  },
  {
    match: /^(c|gcc|cpp|clang)\b/,
    file: "main.c",
    command: "gcc -O2 -o /tmp/main main.c && /tmp/main",
    code: '#include <stdio.h>\n\nint main(void) {\n    puts("hello from c");\n    return 0;\n}\n',
  },
  {
    match: /.*/,
    file: "main.sh",
    command: "sh main.sh",
    code: 'echo "hello from the sandbox"\n',
  },
];

let lastPresetCode = "";

function applyPreset(envid) {
  const p = PRESETS.find((p) => p.match.test(envid));
  $("filename").value = p.file;
  $("command").value = p.command;
  // The code is replaced only when it is still an untouched preset.
  const code = $("code");
  if (code.value === "" || code.value === lastPresetCode) {
    code.value = p.code;
    lastPresetCode = p.code;
  }
}

async function loadEnvironments() {
  const envs = await api("GET", "/environments");
  const select = $("env");
  const previous = select.value;
  select.replaceChildren();
  for (const e of envs) {
    const o = document.createElement("option");
    o.value = e.envid;
    o.textContent = e.name && e.name !== e.envid ? `${e.envid} (${e.name})` : e.envid;
    select.append(o);
  }
  if (envs.some((e) => e.envid === previous)) select.value = previous;
  if (select.value) applyPreset(select.value);
  $("whoami").textContent = `token accepted: ${envs.length} environment(s)`;
}

// ---- one run ---------------------------------------------------------------------------

/** The execution shown now; output of any other is ignored. */
let current = null;

function limitsFromForm() {
  const limits = {};
  const fields = [["memory", "memory_bytes"], ["cpu-time", "cpu_time_s"], ["wall-time", "wall_time_s"]];
  for (const [id, name] of fields) {
    const v = $(id).value.trim();
    if (v) limits[name] = v; // "256M", "2s": the API reads sizes and durations as text
  }
  return limits;
}

function resetOutput(id) {
  current = id;
  $("live-output").textContent = "";
  $("exec-id").textContent = id || "";
  $("result").hidden = true;
  for (const f of ["end-reason", "exit", "cpu", "wall", "setup", "memory-used", "message", "stdout", "stderr"]) {
    $(f).textContent = "";
  }
  $("programs").hidden = true;
  $("programs").tBodies[0].replaceChildren();
}

async function run(ev) {
  ev.preventDefault();
  clearError();
  const filename = $("filename").value.trim() || "main";
  const body = {
    environment: $("env").value,
    command: ["sh", "-c", $("command").value],
    files: { [filename]: $("code").value },
    limits: limitsFromForm(),
    start: true,
  };
  if ($("stdin").value) body.stdin = $("stdin").value;
  resetOutput(null);
  $("run").disabled = true;
  $("run-status").textContent = "starting…";
  try {
    const exec = await api("POST", "/executions", body);
    resetOutput(exec.id);
    $("stop").disabled = false;
    $("run-status").textContent = exec.status;
    await follow(exec.id);
    if (current === exec.id) showResult(await waitEnded(exec.id));
  } catch (e) {
    showError(e);
    $("run-status").textContent = "";
  } finally {
    $("run").disabled = false;
    $("stop").disabled = true;
  }
}

/** Appends the execution's output as it is written, until it ends (the stream closes). */
async function follow(id) {
  const resp = await fetch(`${API}/executions/${encodeURIComponent(id)}/log`, {
    headers: authHeaders(),
  });
  if (!resp.ok || !resp.body) return;
  $("run-status").textContent = "running";
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  const live = $("live-output");
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (current !== id) {
      reader.cancel();
      return;
    }
    live.textContent += decoder.decode(value, { stream: true });
    live.scrollTop = live.scrollHeight;
  }
  live.textContent += decoder.decode();
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The execution once it has ended (the log stream closes at the end; this confirms it). */
async function waitEnded(id) {
  for (;;) {
    const e = await api("GET", `/executions/${encodeURIComponent(id)}`);
    if (e.status === "ended") return e;
    $("run-status").textContent = e.status;
    await sleep(300);
  }
}

function seconds(x) {
  return typeof x === "number" ? x.toFixed(3) + " s" : "–";
}

function bytes(n) {
  if (typeof n !== "number") return "–";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + " KiB";
  return n + " B";
}

function exitOf(e) {
  return e.exit_code !== null && e.exit_code !== undefined ? String(e.exit_code)
    : e.signal_name ? e.signal_name : "–";
}

/** A program group: one row per program (its own end reason and measurements). */
function showPrograms(programs) {
  const body = $("programs").tBodies[0];
  body.replaceChildren();
  for (const p of programs) {
    const tr = document.createElement("tr");
    tr.dataset.index = p.index;
    const cells = [
      p.index,
      (p.command || []).join(" "),
      p.end_reason || "",
      exitOf(p),
      seconds(p.cpu_time_s),
      seconds(p.wall_time_s),
      seconds(p.setup_s),
      bytes(p.peak_memory_bytes),
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = String(text);
      tr.append(td);
    }
    if (p.end_reason) tr.cells[2].className = p.end_reason === "normal" ? "reason-normal" : "reason-bad";
    body.append(tr);
  }
  $("programs").hidden = false;
}

/** Each program's stream of a group, under its index. */
function groupStream(programs, stream) {
  return programs
    .filter((p) => p[stream])
    .map((p) => `[program ${p.index}]\n${p[stream]}`)
    .join("\n");
}

function showResult(e) {
  $("run-status").textContent = e.status;
  const reason = $("end-reason");
  reason.textContent = e.end_reason || "";
  reason.className = e.end_reason === "normal" ? "reason-normal" : "reason-bad";
  $("message").textContent = e.message || "";
  if (Array.isArray(e.programs)) {
    // A group: its measurements are each program's (its `wall_time_s` is its limit).
    for (const f of ["exit", "cpu", "wall", "setup", "memory-used"]) $(f).textContent = "–";
    showPrograms(e.programs);
    $("stdout").textContent = groupStream(e.programs, "stdout");
    $("stderr").textContent = groupStream(e.programs, "stderr");
  } else {
    $("exit").textContent = exitOf(e);
    $("cpu").textContent = seconds(e.cpu_time_s);
    $("wall").textContent = seconds(e.wall_time_s);
    $("setup").textContent = seconds(e.setup_s);
    $("memory-used").textContent = bytes(e.peak_memory_bytes);
    $("stdout").textContent = e.stdout || "";
    $("stderr").textContent = e.stderr || "";
  }
  $("result").hidden = false;
}

async function stop() {
  if (!current) return;
  clearError();
  try {
    await api("POST", `/executions/${encodeURIComponent(current)}/stop`);
  } catch (e) {
    showError(e);
  }
}

// ---- recent executions -----------------------------------------------------------------

async function loadExecutions() {
  const page = await api("GET", "/executions?limit=25");
  const body = $("executions").tBodies[0];
  body.replaceChildren();
  for (const e of page.items) {
    const tr = document.createElement("tr");
    tr.dataset.id = e.id;
    const cells = [
      e.id,
      e.environment,
      e.status,
      e.end_reason || "",
      // A group has no exit status or wall time of its own (its wall_time_s is its limit).
      Array.isArray(e.programs) ? `group of ${e.programs.length}` : e.exit_code ?? e.signal_name ?? "",
      !Array.isArray(e.programs) && typeof e.wall_time_s === "number" ? seconds(e.wall_time_s) : "",
      e.init_date ? new Date(e.init_date).toLocaleString() : "",
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = String(text);
      if (i === 0) td.className = "id";
      tr.append(td);
    });
    tr.addEventListener("click", () => openExecution(e.id).catch(showError));
    body.append(tr);
  }
}

async function openExecution(id) {
  const e = await api("GET", `/executions/${encodeURIComponent(id)}`);
  selectTab("run");
  resetOutput(id);
  if (e.status === "ended") {
    $("live-output").textContent = Array.isArray(e.programs) ? groupStream(e.programs, "stdout") : e.stdout || "";
    showResult(e);
  } else {
    $("stop").disabled = false;
    await follow(id);
    if (current === id) showResult(await waitEnded(id));
    $("stop").disabled = true;
  }
}

// ---- projects (grading) ----------------------------------------------------------------

/** Shows the Projects tab when this server has projects (grading is always served). */
async function probeProjects() {
  try {
    const data = await api("GET", "/projects?limit=1");
    const items = Array.isArray(data) ? data : data.items || [];
    $("projects-tab").hidden = items.length === 0;
  } catch (_) {
    $("projects-tab").hidden = true;
  }
}

async function loadProjects() {
  const data = await api("GET", "/projects");
  const items = Array.isArray(data) ? data : data.items || [];
  const list = $("projects");
  list.replaceChildren();
  for (const p of items) {
    const li = document.createElement("li");
    li.textContent = p.name ? `${p.id || ""} ${p.name}`.trim() : JSON.stringify(p);
    list.append(li);
  }
}

// ---- start -----------------------------------------------------------------------------

async function useToken(ev) {
  if (ev) ev.preventDefault();
  clearError();
  const t = $("token").value.trim();
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  $("token").value = "";
  if (!token()) return;
  try {
    await loadEnvironments();
    await probeProjects();
  } catch (e) {
    showError(e);
  }
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("whoami").textContent = "";
  $("env").replaceChildren();
  $("projects-tab").hidden = true;
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", useToken);
  $("forget-token").addEventListener("click", forgetToken);
  $("run-form").addEventListener("submit", run);
  $("stop").addEventListener("click", stop);
  $("refresh").addEventListener("click", () => loadExecutions().catch(showError));
  $("env").addEventListener("change", () => applyPreset($("env").value));
  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => selectTab(b.dataset.tab));
  }
  if (token()) useToken();
});
