//! What operators and users rely on, over real HTTP on loopback: the audit log, `/metrics`
//! (read back by a strict parser of the exposition format), structured logs without secrets,
//! request ids, and requests as users send them (JSON without its content type, limits as
//! "128M"/"2s").

#[path = "server_common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{core_works, temp_data, Server, TOKEN};
use serde_json::{json, Value};

// ---- the exposition format, strictly --------------------------------------------------

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A metric family: its metadata and its samples, in order.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: Option<String>,
    unit: Option<String>,
    samples: Vec<Sample>,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        t if !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')) =>
        {
            t.parse().map_err(|e| format!("value '{t}': {e}"))
        }
        t => Err(format!("value '{t}' is not a number")),
    }
}

/// `{a="x",b="y\"z"}` → the labels; the text after the closing brace.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("labels must start with '{'")?;
    if let Some(after) = rest.strip_prefix('}') {
        return Ok((labels, after));
    }
    loop {
        let eq = rest.find('=').ok_or("a label without '='")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name '{name}'"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {name}: the value must be quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("label {name}: bad escape {other:?}")),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                '\n' => return Err(format!("label {name}: a raw newline")),
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("label {name}: unterminated value"))?;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        rest = &rest[end..];
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        rest = rest
            .strip_prefix(',')
            .ok_or("labels must be separated by ','")?;
    }
}

/// The family a sample name belongs to, for a family of `kind`.
fn sample_suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "gauge" | "unknown" => &[""],
        "histogram" => &["_bucket", "_count", "_sum", "_created"],
        "summary" => &["", "_count", "_sum", "_created"],
        "info" => &["_info"],
        "stateset" => &[""],
        _ => &[],
    }
}

/// Parses an OpenMetrics 1.0 text exposition, refusing anything the format does not allow:
/// metadata after samples, a family split in two, unknown types, names that do not belong to
/// their family, bad escapes, a missing `# EOF`, non-cumulative histograms.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let body = text.strip_suffix("# EOF\n").ok_or("no final '# EOF'")?;
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in body.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("an empty line".into()));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (word, name, rest) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next(),
            );
            if !is_metric_name(name) {
                return Err(at(format!("bad family name '{name}'")));
            }
            if current.as_deref() != Some(name) {
                if families.contains_key(name) {
                    return Err(at(format!("family {name} given twice")));
                }
                families.insert(name.to_string(), Family::default());
                current = Some(name.to_string());
            }
            let fam = families.get_mut(name).expect("just inserted");
            if !fam.samples.is_empty() {
                return Err(at("metadata after samples".into()));
            }
            let rest = rest.ok_or_else(|| at("metadata without text".into()))?;
            match word {
                "TYPE" => {
                    if sample_suffixes(rest).is_empty() {
                        return Err(at(format!("unknown type '{rest}'")));
                    }
                    fam.kind = rest.to_string();
                }
                "HELP" => fam.help = Some(rest.to_string()),
                "UNIT" => {
                    if !name.ends_with(&format!("_{rest}")) {
                        return Err(at(format!("family {name} does not end with its unit")));
                    }
                    fam.unit = Some(rest.to_string());
                }
                other => return Err(at(format!("unknown metadata '{other}'"))),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("a comment that is not metadata".into()));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next() {
            parse_value(ts).map_err(|e| at(format!("timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("too many fields".into()));
        }
        let family = current
            .clone()
            .ok_or_else(|| at("a sample before any family".into()))?;
        let fam = families.get_mut(&family).expect("current family");
        if fam.kind.is_empty() {
            return Err(at("a sample before its TYPE".into()));
        }
        let belongs = sample_suffixes(&fam.kind)
            .iter()
            .any(|suffix| name == format!("{family}{suffix}"));
        if !belongs {
            return Err(at(format!(
                "sample {name} is not of {} family {family}",
                fam.kind
            )));
        }
        fam.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for (name, fam) in &families {
        if fam.kind.is_empty() {
            return Err(format!("family {name} has no TYPE"));
        }
        if fam.kind == "counter" && fam.samples.iter().any(|s| s.value < 0.0) {
            return Err(format!("counter {name} is negative"));
        }
        if fam.kind == "histogram" {
            check_histogram(name, fam)?;
        }
    }
    Ok(families)
}

/// A series' labels other than `le`, sorted.
type SeriesKey = Vec<(String, String)>;

/// Each series of a histogram: `le` rising to `+Inf`, counts cumulative, `+Inf` = `_count`.
fn check_histogram(name: &str, fam: &Family) -> Result<(), String> {
    // Per series: (le, count) of each bucket, in order.
    let mut series: BTreeMap<SeriesKey, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<SeriesKey, f64> = BTreeMap::new();
    for s in &fam.samples {
        let mut key: SeriesKey = s
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        key.sort();
        if s.name.ends_with("_bucket") {
            let le = s
                .labels
                .get("le")
                .ok_or_else(|| format!("{name}: a bucket without le"))?;
            series
                .entry(key)
                .or_default()
                .push((parse_value(le)?, s.value));
        } else if s.name.ends_with("_count") {
            counts.insert(key, s.value);
        }
    }
    for (key, buckets) in &series {
        for pair in buckets.windows(2) {
            if pair[1].0 <= pair[0].0 || pair[1].1 < pair[0].1 {
                return Err(format!("{name} {key:?}: buckets not rising: {buckets:?}"));
            }
        }
        let last = buckets.last().expect("a bucket");
        if last.0 != f64::INFINITY {
            return Err(format!("{name} {key:?}: no +Inf bucket"));
        }
        if counts.get(key) != Some(&last.1) {
            return Err(format!("{name} {key:?}: +Inf bucket is not the count"));
        }
    }
    Ok(())
}

#[test]
fn the_parser_is_strict() {
    let suffixed = "# HELP a_total x.\n# TYPE a_total counter\na_total 1\n# EOF\n";
    assert!(
        parse_exposition(suffixed).is_err(),
        "a counter family's samples are <family>_total"
    );
    let good = "# HELP a x.\n# TYPE a counter\na_total{r=\"q\\\"\"} 1\n# EOF\n";
    let f = parse_exposition(good).expect("valid");
    assert_eq!(f["a"].samples[0].labels["r"], "q\"");
    for bad in [
        "# TYPE a counter\na_total 1\n",              // no EOF
        "# TYPE a counter\na 1\n# EOF\n",             // wrong sample name
        "a 1\n# EOF\n",                               // no TYPE
        "# TYPE a gauge\na{x=\"1} 1\n# EOF\n",        // unterminated
        "# TYPE a gauge\na{x=1} 1\n# EOF\n",          // unquoted
        "# TYPE a gauge\na one\n# EOF\n",             // not a number
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n# EOF\n", // split
        "# TYPE a_seconds histogram\n# UNIT a_seconds seconds\na_seconds_bucket{le=\"1\"} 2\na_seconds_bucket{le=\"+Inf\"} 1\na_seconds_count 1\n# EOF\n",
        "# TYPE a gauge\n# UNIT a seconds\na 1\n# EOF\n", // unit not in the name
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

// ---- helpers ------------------------------------------------------------------------------

fn scrape(s: &Server) -> BTreeMap<String, Family> {
    let r = s.req("GET", "/metrics", None, None).assert_status(200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        r.header("content-type")
    );
    parse_exposition(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()))
}

/// The value of the sample `name` with exactly these labels (0 when there is none).
fn value(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    families
        .values()
        .flat_map(|f| &f.samples)
        .find(|s| s.name == name && s.labels == want)
        .map_or(0.0, |s| s.value)
}

/// Scrapes until `done` holds (the end listener counts an end just after it is announced).
fn scrape_until(
    s: &Server,
    what: &str,
    done: impl Fn(&BTreeMap<String, Family>) -> bool,
) -> BTreeMap<String, Family> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(s);
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "metrics never showed {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_wait(s: &Server, token: &str, body: Value) -> (Value, common::Resp) {
    let r = s.post_json("/api/v1/executions", token, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    (r.json(), r)
}

// ---- metrics --------------------------------------------------------------------------------

#[test]
fn metrics_count_ends_queue_slots_and_requests() {
    if !core_works() {
        return;
    }
    let data = temp_data();
    let s = Server::start(data.path(), &["--slots", "1"]);
    let m = scrape(&s);
    // Every family an operator expects, before anything happened (prepared sandboxes appear
    // once a warm pool reports some; requests once one was answered).
    for family in [
        "sandpit_executions_ended",
        "sandpit_execution_run_seconds",
        "sandpit_execution_setup_seconds",
        "sandpit_execution_queue_wait_seconds",
        "sandpit_queue_depth",
        "sandpit_slots",
        "sandpit_slots_busy",
        "sandpit_callback_deliveries",
        "sandpit_callback_failures",
    ] {
        assert!(m.contains_key(family), "no family {family}");
    }
    assert_eq!(m["sandpit_executions_ended"].kind, "counter");
    assert_eq!(m["sandpit_execution_run_seconds"].kind, "histogram");
    assert_eq!(
        m["sandpit_execution_run_seconds"].unit.as_deref(),
        Some("seconds")
    );
    assert_eq!(m["sandpit_queue_depth"].kind, "gauge");
    assert_eq!(value(&m, "sandpit_slots", &[]), 1.0);
    for reason in ["normal", "timeout", "out-of-memory", "stopped"] {
        assert_eq!(
            value(&m, "sandpit_executions_ended_total", &[("reason", reason)]),
            0.0
        );
    }

    // One normal end, one timeout.
    let (v, _) = run_wait(
        &s,
        TOKEN,
        json!({"environment": "busybox", "command": ["true"], "wait": true}),
    );
    assert_eq!(v["end_reason"], "normal", "{v}");
    assert!(v["setup_s"].as_f64().is_some_and(|t| t > 0.0), "{v}");
    let (v, _) = run_wait(
        &s,
        TOKEN,
        json!({"environment": "busybox", "command": ["sleep", "10"],
               "limits": {"wall_time_s": "300ms"}, "wait": true}),
    );
    assert_eq!(v["end_reason"], "timeout", "{v}");
    // An end is counted after its times are observed: once both show, all of them do.
    let m = scrape_until(&s, "two ends", |m| {
        value(m, "sandpit_executions_ended_total", &[("reason", "normal")])
            + value(
                m,
                "sandpit_executions_ended_total",
                &[("reason", "timeout")],
            )
            == 2.0
    });
    assert_eq!(value(&m, "sandpit_execution_run_seconds_count", &[]), 2.0);
    // Both sandboxes were set up, and the core said how long that took.
    assert_eq!(value(&m, "sandpit_execution_setup_seconds_count", &[]), 2.0);
    assert!(value(&m, "sandpit_execution_setup_seconds_sum", &[]) > 0.0);
    assert_eq!(
        value(
            &m,
            "sandpit_executions_ended_total",
            &[("reason", "normal")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "sandpit_executions_ended_total",
            &[("reason", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "sandpit_execution_queue_wait_seconds_count", &[]),
        2.0
    );
    // The timeout's wall time (≥ 0.3 s) is in a bucket above 0.25 s, not below.
    assert!(value(&m, "sandpit_execution_run_seconds_sum", &[]) >= 0.3);
    assert_eq!(
        value(
            &m,
            "sandpit_execution_run_seconds_bucket",
            &[("le", "0.25")]
        ),
        1.0
    );

    // The one slot busy, one more waiting in the queue.
    let running = s.create_id(
        TOKEN,
        &json!({"environment": "busybox", "command": ["sleep", "60"], "start": true}),
    );
    s.wait_running(&running);
    let queued = s.create_id(
        TOKEN,
        &json!({"environment": "busybox", "command": ["true"], "start": true}),
    );
    let m = scrape(&s);
    assert_eq!(value(&m, "sandpit_slots_busy", &[]), 1.0);
    assert_eq!(value(&m, "sandpit_queue_depth", &[]), 1.0);
    for id in [&queued, &running] {
        s.post(&format!("/api/v1/executions/{id}/stop"))
            .assert_status(200);
    }
    let m = scrape_until(&s, "the stops and a free slot", |m| {
        value(
            m,
            "sandpit_executions_ended_total",
            &[("reason", "stopped")],
        ) == 2.0
            && value(m, "sandpit_slots_busy", &[]) == 0.0
    });
    assert_eq!(value(&m, "sandpit_queue_depth", &[]), 0.0);
    assert_eq!(value(&m, "sandpit_slots_busy", &[]), 0.0);

    // Requests by route pattern and status, never by raw path.
    s.get("/api/v1/executions/exec_doesnotexist")
        .assert_error(404);
    s.get("/no/such/route").assert_error(404);
    let m = scrape(&s);
    assert_eq!(m["sandpit_http_requests"].kind, "counter");
    assert_eq!(m["sandpit_http_request_duration_seconds"].kind, "histogram");
    let creates = value(
        &m,
        "sandpit_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/api/v1/executions"),
            ("status", "201"),
        ],
    );
    assert_eq!(creates, 4.0);
    assert_eq!(
        value(
            &m,
            "sandpit_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/api/v1/executions/{id}"),
                ("status", "404")
            ],
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "sandpit_http_requests_total",
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")],
        ),
        1.0
    );
    let text = s.req("GET", "/metrics", None, None).text();
    assert!(!text.contains("exec_doesnotexist") && !text.contains("/no/such"));
    assert!(!text.contains(&running), "an execution id became a label");
    assert!(
        value(
            &m,
            "sandpit_http_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/api/v1/executions")],
        ) >= 4.0
    );

    // A group: one run time (its longest program's), one setup per program's sandbox.
    let normal = |m: &BTreeMap<String, Family>| {
        value(m, "sandpit_executions_ended_total", &[("reason", "normal")])
    };
    let before = scrape(&s);
    let (v, _) = run_wait(
        &s,
        TOKEN,
        json!({"environment": "busybox", "wait": true,
               "programs": [{"command": ["true"]}, {"command": ["true"]}]}),
    );
    assert_eq!(v["end_reason"], "normal", "{v}");
    let m = scrape_until(&s, "the group's end", |m| {
        normal(m) == normal(&before) + 1.0
    });
    for (name, more) in [
        ("sandpit_execution_run_seconds_count", 1.0),
        ("sandpit_execution_setup_seconds_count", 2.0),
    ] {
        assert_eq!(
            value(&m, name, &[]),
            value(&before, name, &[]) + more,
            "{name}"
        );
    }

    // The warm pool (--prepared 2 by default) keeps busybox sandboxes ready after its runs.
    let ready = scrape_until(&s, "busybox sandboxes prepared", |m| {
        value(
            m,
            "sandpit_prepared_sandboxes",
            &[("environment", "busybox")],
        ) == 2.0
    });
    // The next single program takes one of them, and the pool counts it so.
    let served = |m: &BTreeMap<String, Family>, how: &str| {
        value(m, "sandpit_pool_runs_total", &[("sandbox", how)])
    };
    let (v, _) = run_wait(
        &s,
        TOKEN,
        json!({"environment": "busybox", "wait": true, "command": ["true"]}),
    );
    assert_eq!(v["end_reason"], "normal", "{v}");
    let after = scrape(&s);
    assert_eq!(served(&after, "prepared"), served(&ready, "prepared") + 1.0);
    assert_eq!(served(&after, "fresh"), served(&ready, "fresh"));
}

// ---- the audit log --------------------------------------------------------------------------

fn request_id(r: &common::Resp) -> String {
    let id = r.header("x-request-id").expect("X-Request-Id").to_string();
    assert!(id.starts_with("req_") && id.len() > 10, "{id}");
    id
}

#[test]
fn every_state_changing_request_is_audited() {
    let data = temp_data();
    let mut s = Server::start(data.path(), &[]);
    let mut expected = Vec::new(); // (request id, who, method, route, target, status)

    let r = s.post_json("/api/v1/api_keys", TOKEN, &json!({"name": "k"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json()["key"].as_str().expect("key").to_string();
    // A key acts under its id, never its name (a later key of the same name is another).
    let key_who: &'static str =
        Box::leak(format!("key:{}", r.json()["id"].as_str().expect("id")).into_boxed_str());
    expected.push((
        request_id(&r),
        "master",
        "POST",
        "/api/v1/api_keys",
        Some("k".to_string()),
        201,
    ));

    let r = s.post_json(
        "/api/v1/executions",
        &key,
        &json!({"environment": "busybox", "command": ["true"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_string();
    expected.push((
        request_id(&r),
        key_who,
        "POST",
        "/api/v1/executions",
        Some(id.clone()),
        201,
    ));

    let r = s.req("DELETE", "/api/v1/environments/busybox", Some(&key), None);
    r.assert_error(403);
    expected.push((
        request_id(&r),
        key_who,
        "DELETE",
        "/api/v1/environments/{envid}",
        Some("busybox".to_string()),
        403,
    ));

    let r = s.post_json(
        "/api/v1/executions",
        "not-a-token",
        &json!({"environment": "busybox", "command": ["true"]}),
    );
    r.assert_error(401);
    expected.push((
        request_id(&r),
        "anonymous",
        "POST",
        "/api/v1/executions",
        None,
        401,
    ));

    let r = s
        .delete(&format!("/api/v1/executions/{id}"))
        .assert_status(200);
    expected.push((
        request_id(&r),
        "master",
        "DELETE",
        "/api/v1/executions/{id}",
        Some(id.clone()),
        200,
    ));

    let r = s.delete("/api/v1/api_keys/k").assert_status(200);
    expected.push((
        request_id(&r),
        "master",
        "DELETE",
        "/api/v1/api_keys/{name}",
        Some("k".to_string()),
        200,
    ));

    // Reading is not audited; nor is a method a route does not have.
    assert_eq!(s.get("/api/v1/executions").status, 200);
    s.req("PATCH", "/api/v1/executions", Some(TOKEN), None)
        .assert_error(405);

    let check = |s: &Server| {
        let r = s.get("/api/v1/audit");
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["paging"]["total"], expected.len(), "{v}");
        let items = v["items"].as_array().expect("items");
        // Newest first.
        for (item, want) in items.iter().zip(expected.iter().rev()) {
            let (rid, who, method, route, target, status) = want;
            assert_eq!(item["request_id"], *rid, "{item}");
            assert_eq!(item["who"], *who, "{item}");
            assert_eq!(item["method"], *method, "{item}");
            assert_eq!(item["route"], *route, "{item}");
            assert_eq!(item["target"], json!(target), "{item}");
            assert_eq!(item["status"], *status, "{item}");
            assert_eq!(item["peer"], "127.0.0.1", "{item}");
            assert!(
                item["date"].as_str().is_some_and(|d| d.ends_with('Z')),
                "{item}"
            );
        }
        // Paged.
        let page = s.get("/api/v1/audit?limit=2&offset=1").json();
        let page = page["items"].as_array().expect("items").clone();
        assert_eq!(page.len(), 2);
        assert_eq!(page[0]["request_id"], items[1]["request_id"]);
    };
    check(&s);

    // The master token only.
    let k2 = s
        .post_json("/api/v1/api_keys", TOKEN, &json!({"name": "k2"}))
        .json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    s.req("GET", "/api/v1/audit", Some(&k2), None)
        .assert_error(403);
    s.req("GET", "/api/v1/audit", None, None).assert_error(401);
    s.get("/api/v1/audit?limit=5000").assert_error(400);

    // Kept in the store: still there after a crash and a restart.
    s.kill9();
    let s = Server::start(data.path(), &[]);
    let v = s.get("/api/v1/audit?limit=100").json();
    assert_eq!(v["paging"]["total"], expected.len() + 1, "{v}");
    let items = v["items"].as_array().expect("items");
    assert_eq!(items[0]["route"], "/api/v1/api_keys");
    assert_eq!(items[0]["target"], "k2");
    assert_eq!(items[items.len() - 1]["request_id"], expected[0].0.as_str());
}

// ---- logs -----------------------------------------------------------------------------------

/// The server's log lines, as JSON, once `done` holds for them (a line is written just after
/// its event).
fn log_lines(path: &std::path::Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).expect("log");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if done(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "the log never showed it:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn json_logs_have_a_line_per_request_and_per_end_and_no_secrets() {
    let data = temp_data();
    let log_dir = temp_data();
    let log_path = log_dir.path().join("server.log");
    let s = Server::start_with_log(data.path(), &["--log-format", "json"], &log_path);

    // Tokens in every place they travel: header, query, a new key's secret, a wrong one.
    let r = s.post_json("/api/v1/api_keys", TOKEN, &json!({"name": "logs"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["key"].as_str().expect("key").to_string();
    let logs_owner = format!("key:{}", r.json()["id"].as_str().expect("id"));
    let create_rid = request_id(&r);
    s.req(
        "GET",
        &format!("/api/v1/executions?access_token={secret}"),
        None,
        None,
    )
    .assert_status(200);
    let wrong = "Wrong-Token-3f9a7c";
    s.req(
        "GET",
        &format!("/api/v1/environments?access_token={wrong}"),
        None,
        None,
    )
    .assert_error(401);
    s.req("GET", "/api/v1/environments", Some(wrong), None)
        .assert_error(401);
    let mut ran = None;
    if core_works() {
        let (v, r) = run_wait(
            &s,
            &secret,
            json!({"environment": "busybox", "command": ["sh", "-c", "echo hi"], "wait": true}),
        );
        assert_eq!(v["end_reason"], "normal", "{v}");
        ran = Some((v["id"].as_str().expect("id").to_string(), request_id(&r)));
    }
    // A group: one end line, its setup the slowest program's.
    let mut group = None;
    if core_works() {
        let (v, _) = run_wait(
            &s,
            &secret,
            json!({"environment": "busybox", "wait": true,
                   "programs": [{"command": ["true"]}, {"command": ["sh", "-c", "exit 3"]}]}),
        );
        assert_eq!(v["end_reason"], "normal", "{v}");
        group = Some(v);
    }

    let lines = log_lines(&log_path, |lines| {
        let requests = lines.iter().filter(|l| l["message"] == "request").count();
        let ended = lines
            .iter()
            .filter(|l| l["message"] == "execution ended")
            .count();
        requests >= 4 && (ended >= 2 || ran.is_none())
    });
    let text = std::fs::read_to_string(&log_path).expect("log");
    for secret_text in [TOKEN, secret.as_str(), wrong, "access_token"] {
        assert!(
            !text.contains(secret_text),
            "the log shows '{secret_text}':\n{text}"
        );
    }
    // The request line: method, route pattern, path, status, duration, request id, who.
    let line = lines
        .iter()
        .find(|l| l["request_id"] == create_rid.as_str() && l["message"] == "request")
        .unwrap_or_else(|| panic!("no line for {create_rid}:\n{text}"));
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(line["route"], "/api/v1/api_keys", "{line}");
    assert_eq!(line["path"], "/api/v1/api_keys", "{line}");
    assert_eq!(line["status"], 201, "{line}");
    assert_eq!(line["who"], "master", "{line}");
    assert!(
        line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{line}"
    );
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["timestamp"].is_string(), "{line}");
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["status"] == 401)
        .collect();
    assert_eq!(refused.len(), 2, "{text}");
    assert!(refused.iter().all(|l| l["who"] == "anonymous"));
    if let Some((id, rid)) = ran {
        let end = lines
            .iter()
            .find(|l| l["message"] == "execution ended")
            .expect("end line");
        assert_eq!(end["execution_id"], id.as_str(), "{end}");
        assert_eq!(end["end_reason"], "normal", "{end}");
        assert_eq!(end["exit_code"], 0, "{end}");
        assert_eq!(end["owner"], logs_owner.as_str(), "{end}");
        for time in ["wall_time_s", "cpu_time_s", "queue_wait_s", "total_s"] {
            assert!(
                end[time].as_f64().is_some_and(|t| t >= 0.0),
                "{time}: {end}"
            );
        }
        assert!(lines
            .iter()
            .any(|l| l["request_id"] == rid.as_str() && l["route"] == "/api/v1/executions"));
        assert!(end["setup_s"].as_f64().is_some_and(|t| t > 0.0), "{end}");
        assert_eq!(end["group_programs"], Value::Null, "{end}");
    }
    if let Some(v) = group {
        let end = lines
            .iter()
            .find(|l| l["message"] == "execution ended" && l["execution_id"] == v["id"])
            .unwrap_or_else(|| panic!("no end line for the group:\n{text}"));
        assert_eq!(end["group_programs"], 2, "{end}");
        // No exit status of its own: each program's is in the execution object.
        assert_eq!(end["exit_code"], Value::Null, "{end}");
        let setups: Vec<f64> = (0..2)
            .map(|i| v["programs"][i]["setup_s"].as_f64().expect("setup_s"))
            .collect();
        assert_eq!(
            end["setup_s"].as_f64(),
            Some(setups[0].max(setups[1])),
            "{end} {v}"
        );
        let cpu: f64 = (0..2)
            .map(|i| v["programs"][i]["cpu_time_s"].as_f64().expect("cpu"))
            .sum();
        assert!(
            (end["cpu_time_s"].as_f64().expect("cpu") - cpu).abs() < 1e-9,
            "{end}"
        );
    }
}

#[test]
fn text_logs_are_the_default() {
    let data = temp_data();
    let log_dir = temp_data();
    let log_path = log_dir.path().join("server.log");
    let s = Server::start_with_log(data.path(), &[], &log_path);
    let r = s.get("/api/v1/executions");
    let rid = request_id(&r);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log_path).expect("log");
        if let Some(line) = text.lines().find(|l| l.contains(&rid)) {
            assert!(
                line.contains("INFO") && line.contains("status=200"),
                "{line}"
            );
            assert!(!line.trim_start().starts_with('{'), "{line}");
            assert!(!text.contains(TOKEN));
            break;
        }
        assert!(Instant::now() < deadline, "no line for {rid}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- requests as users send them ------------------------------------------------------------

#[test]
fn json_without_its_content_type_is_read_as_json() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let body = r#"{"environment":"busybox","command":["true"]}"#;
    // What `curl -d` sends (a form type), no type at all, and a browser fetch's text/plain.
    for ct in [
        Some("application/x-www-form-urlencoded"),
        None,
        Some("text/plain;charset=UTF-8"),
    ] {
        let mut headers = vec![("Authorization", "Bearer test-master-token")];
        if let Some(ct) = ct {
            headers.push(("Content-Type", ct));
        }
        let r = common::request(
            &s.addr,
            "POST",
            "/api/v1/executions",
            &headers,
            body.as_bytes(),
        );
        assert_eq!(r.status, 201, "{ct:?}: {}", r.text());
        assert_eq!(r.json()["environment"], "busybox");
    }
    // curl itself, as a user types it (no -H for the type).
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            "-d",
            body,
        ])
        .arg(format!("http://{}/api/v1/executions", s.addr))
        .stderr(Stdio::inherit())
        .output();
    match out {
        Ok(out) => {
            let v: Value = serde_json::from_slice(&out.stdout).expect("JSON from curl");
            assert_eq!(v["environment"], "busybox", "{v}");
            assert_eq!(v["status"], "pending", "{v}");
        }
        Err(e) => eprintln!("NOTE: curl is not here ({e}); the raw requests above stand for it"),
    }
    // Anything else: 415, saying what to send.
    let v = s
        .post_bytes("/api/v1/executions", TOKEN, "application/xml", b"<x/>")
        .assert_error(415);
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("Content-Type: application/json")),
        "{v}"
    );
}

#[test]
fn execution_limits_take_sizes_and_durations_as_text() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let r = s.post_json(
        "/api/v1/executions",
        TOKEN,
        &json!({"environment": "busybox", "command": ["true"],
                "limits": {"memory_bytes": "64M", "cpu_time_s": "1500ms", "wall_time_s": "3s",
                           "pids": "8", "output_bytes": "1K"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let limits = &r.json()["limits"];
    assert_eq!(limits["memory_bytes"], 64 << 20, "{limits}");
    assert_eq!(limits["cpu_time_s"], 1.5, "{limits}");
    assert_eq!(limits["wall_time_s"], 3.0, "{limits}");
    assert_eq!(limits["pids"], 8, "{limits}");
    assert_eq!(limits["output_bytes"], 1024, "{limits}");
    // A form sends text too.
    let r = s
        .req(
            "POST",
            "/api/v1/executions",
            Some(TOKEN),
            Some((
                "application/x-www-form-urlencoded",
                b"environment=busybox&command=true&limits[memory_bytes]=32M&limits[wall_time_s]=2s",
            )),
        )
        .assert_status(201);
    assert_eq!(r.json()["limits"]["memory_bytes"], 32 << 20);
    // Over a key's limit, both written as text: 400 naming both.
    let key = s
        .post_json(
            "/api/v1/api_keys",
            TOKEN,
            &json!({"name": "small", "max_memory": "64M"}),
        )
        .json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    let v = s
        .post_json(
            "/api/v1/executions",
            &key,
            &json!({"environment": "busybox", "command": ["true"],
                    "limits": {"memory_bytes": "128M"}}),
        )
        .assert_error(400);
    assert_eq!(v["error_code"], 1002, "{v}");
    // Nonsense is a 400 naming the field and the form it takes.
    let v = s
        .post_json(
            "/api/v1/executions",
            TOKEN,
            &json!({"environment": "busybox", "command": ["true"],
                    "limits": {"wall_time_s": "soon"}}),
        )
        .assert_error(400);
    let m = v["message"].as_str().unwrap_or_default();
    assert!(m.contains("limits.wall_time_s") && m.contains("2s"), "{m}");
}

#[test]
fn every_answer_has_a_request_id() {
    let data = temp_data();
    let s = Server::start(data.path(), &[]);
    let mut seen = std::collections::HashSet::new();
    for r in [
        s.get("/api/v1/executions"),
        s.req("GET", "/api/v1/openapi.json", None, None),
        s.req("GET", "/nothing/here", None, None),
        s.req("GET", "/metrics", None, None),
        s.req("GET", "/", None, None),
        s.req("POST", "/api/v1/executions", None, None),
    ] {
        assert!(seen.insert(request_id(&r)), "a request id was reused");
    }
}
