//! The JSON of a submission's grade, the same for the API and for `sandpit judge --json`:
//! `status` (Sphere's code), `status_name`, `executing`, `reason`, `time`, `memory`, `score`,
//! the per-test table, the stages, the HwScore `report`, the `streams` and `debug_log`.

use serde_json::{json, Map, Value};

use super::report::Final;
use super::state::Status;
use super::verdict::{StageRecord, TestResult};
use super::workspace::{SubmissionDir, DEBUG_LOG, TESTS_REPORT};

pub fn grade_json(
    status: Status,
    grade: Option<&Final>,
    stages: &[StageRecord],
    tests: &[TestResult],
) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("status".into(), json!(status));
    v.insert("status_name".into(), json!(status.name()));
    v.insert("executing".into(), json!(status.executing()));
    v.insert("reason".into(), json!(grade.map(|g| &g.reason)));
    v.insert("time".into(), json!(grade.and_then(|g| g.time)));
    v.insert("memory".into(), json!(grade.and_then(|g| g.memory)));
    v.insert("score".into(), json!(grade.and_then(|g| g.score)));
    v.insert("tests".into(), json!(tests));
    v.insert("stages".into(), json!(stages));
    v.insert("report".into(), json!(grade.map(|g| &g.report)));
    v
}

/// The submission's streams (blocking): `stage_<stage>_output`/`_error` as text,
/// `tests_report` as Sphere's array; and the debug log (null when empty).
pub fn streams_json(dir: &SubmissionDir) -> (Value, Value) {
    let mut streams = Map::new();
    let mut debug = Value::Null;
    let names = std::fs::read_dir(dir.stream(""))
        .map(|rd| {
            let mut n: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        })
        .unwrap_or_default();
    for name in names {
        let Ok(bytes) = std::fs::read(dir.stream(&name)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match name.as_str() {
            DEBUG_LOG => debug = Value::String(text),
            TESTS_REPORT => {
                let parsed = serde_json::from_slice(&bytes).unwrap_or(Value::String(text));
                streams.insert(name, parsed);
            }
            _ => {
                streams.insert(name, Value::String(text));
            }
        }
    }
    (Value::Object(streams), debug)
}
