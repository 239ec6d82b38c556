//! The request bodies, typed: each route's body (normalised to one JSON object by `body/`,
//! whichever encoding it came in) is read into one of these structs, unknown fields refused,
//! and every error names the field it is about. A new execution's body is the execution
//! domain's own shape (`crate::exec::parse`), shared with `sandpit run --spec`.

use std::collections::BTreeMap;

use sandbox::RelPath;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::errors::{ApiError, ApiResult};
use crate::callbacks::{AllowList, Callback, CallbackRequest};
use crate::exec::parse::typed;
use crate::exec::parse::EncodedFileContent as FileContent;
pub use crate::exec::parse::Mode;
use crate::exec::{InputFile, NewExecution};
use crate::judge::service::{InlineProject, InlineTest, NewSubmission};
use crate::units;

/// Reads a typed body; a wrong field is a 400 that names it (`'limits.pids': …`).
pub fn from_body<T: serde::de::DeserializeOwned>(map: Map<String, Value>) -> ApiResult<T> {
    Ok(typed(Value::Object(map))?)
}

fn rel_path(text: &str, what: &str) -> ApiResult<RelPath> {
    RelPath::parse(text).map_err(|e| ApiError::bad_path(format!("{what}: {e}")))
}

/// `POST /executions`: one program or a group (see `crate::exec::parse`); a callback's host
/// must be on `allow`.
pub fn new_execution(map: Map<String, Value>, allow: &AllowList) -> ApiResult<NewExecution> {
    Ok(crate::exec::parse::new_execution(
        Value::Object(map),
        allow,
    )?)
}

/// A size in bytes, more than 0: a number, or text as [`units::parse_size`] reads it
/// (`256M`); at most 2^63-1.
#[derive(Debug, Clone, Copy)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match units::de::size(d)? {
            Some(b) if b > 0 => Ok(ByteSize(b)),
            _ => Err(de::Error::custom(
                "must be a positive number of bytes (or e.g. \"256M\")",
            )),
        }
    }
}

/// Seconds, more than 0: a number, or text as [`units::parse_duration`] reads it (`2s`,
/// `1.5`, `500ms`, `1m`).
#[derive(Debug, Clone, Copy)]
pub struct Seconds(pub f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match units::de::seconds(d)? {
            Some(s) if s > 0.0 => Ok(Seconds(s)),
            _ => Err(de::Error::custom(
                "must be a positive number of seconds (or e.g. \"2s\")",
            )),
        }
    }
}

/// A whole number of at least 1 (at most 2^63-1), as a number or as text.
#[derive(Debug, Clone, Copy)]
pub struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match units::de::count(d)? {
            Some(n) if n >= 1 => Ok(Count(n)),
            _ => Err(de::Error::custom("must be a whole number of at least 1")),
        }
    }
}

/// A yes or no: a boolean, or text (`true`/`false`, `1`/`0`, `yes`/`no`).
#[derive(Debug, Clone, Copy)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Flag(b)),
            Value::String(s) if matches!(s.as_str(), "true" | "1" | "yes") => Ok(Flag(true)),
            Value::String(s) if matches!(s.as_str(), "false" | "0" | "no") => Ok(Flag(false)),
            Value::Number(n) if n.as_u64() == Some(1) => Ok(Flag(true)),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(Flag(false)),
            _ => Err(de::Error::custom("must be true or false")),
        }
    }
}

/// `POST /api_keys`: fields in the body, or in the query string as PIFOP sends them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    name: Option<String>,
    key_name: Option<String>,
    max_memory: Option<ByteSize>,
    max_time: Option<Seconds>,
    max_executions: Option<Count>,
    max_pids: Option<Count>,
    max_output_bytes: Option<ByteSize>,
    max_pending: Option<Count>,
    max_files: Option<Count>,
    max_storage_bytes: Option<ByteSize>,
    manage_projects: Option<Flag>,
}

impl CreateApiKey {
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "key_name",
        "max_memory",
        "max_time",
        "max_executions",
        "max_pids",
        "max_output_bytes",
        "max_pending",
        "max_files",
        "max_storage_bytes",
        "manage_projects",
    ];

    pub fn into_new(self) -> ApiResult<crate::auth::NewApiKey> {
        Ok(crate::auth::NewApiKey {
            name: match (self.name, self.key_name) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request(
                        "'key_name' is another name for 'name': give one of them",
                    ))
                }
                (Some(n), None) | (None, Some(n)) => n,
                (None, None) => return Err(ApiError::bad_request("'name' is required")),
            },
            quota: crate::auth::Quota {
                max_memory: self.max_memory.map(|b| b.0),
                max_time: self.max_time.map(|s| s.0),
                max_executions: self.max_executions.map(|c| c.0),
                max_pids: self.max_pids.map(|c| c.0),
                max_output_bytes: self.max_output_bytes.map(|b| b.0),
                max_pending: self.max_pending.map(|c| c.0),
                max_files: self.max_files.map(|c| c.0),
                max_storage_bytes: self.max_storage_bytes.map(|b| b.0),
            },
            manage_projects: self.manage_projects.is_some_and(|f| f.0),
        })
    }
}

/// A files map (`{path: content}`) as input files; `what` names the field in errors.
fn input_files(
    files: Option<BTreeMap<String, FileContent>>,
    what: &str,
) -> ApiResult<Vec<InputFile>> {
    let mut out = Vec::new();
    for (path, content) in files.unwrap_or_default() {
        let rel = rel_path(&path, what)?;
        let (bytes, mode) = content.decode(&format!("{what}['{path}']"))?;
        out.push(InputFile {
            path: rel,
            bytes,
            mode: mode.unwrap_or(0o644),
        });
    }
    Ok(out)
}

/// Takes the field `key` out of a JSON object, typed; a wrong one is a 400 naming `what`.
fn take<T: serde::de::DeserializeOwned>(
    map: &mut Map<String, Value>,
    key: &str,
    what: &str,
) -> ApiResult<Option<T>> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("'{what}': {e}"))),
    }
}

/// A helper program's files (`checker.files`, `interactor.files`), taken out of its object;
/// the rest of the object is `project.json`'s.
fn helper_files(map: &mut Map<String, Value>, helper: &str) -> ApiResult<Vec<InputFile>> {
    match map.get_mut(helper) {
        Some(Value::Object(h)) => {
            let what = format!("{helper}.files");
            input_files(take(h, "files", &what)?, &what)
        }
        _ => Ok(Vec::new()),
    }
}

/// `POST /projects` and `PUT /projects/{id}` as JSON: `project.json`'s fields (`name`,
/// `environment`, `config`, `source`, `artifacts`, `limits`, `tests`, `checker`,
/// `interactor`) plus the contents: `files` (the workspace), each test's `stdin`, `expected`
/// and `files`, the checker's `files` and the interactor's `files`. Returns the id asked for
/// and the project.
pub fn project_from_body(
    mut map: Map<String, Value>,
) -> ApiResult<(Option<String>, InlineProject)> {
    // As everywhere: no field takes null (leave it out for the default).
    if let Some(path) = crate::exec::parse::null_member(&map, "") {
        return Err(ApiError::bad_request(format!(
            "'{path}' may not be null (leave it out for the default)"
        )));
    }
    let id: Option<String> = take(&mut map, "id", "id")?;
    let files = input_files(take(&mut map, "files", "files")?, "files")?;
    let mut tests = Vec::new();
    if let Some(Value::Array(list)) = map.get_mut("tests") {
        for (i, item) in list.iter_mut().enumerate() {
            let Value::Object(t) = item else {
                return Err(ApiError::bad_request(format!(
                    "'tests[{i}]' must be an object"
                )));
            };
            let name = match t.get("name") {
                Some(Value::String(n)) => n.clone(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "'tests[{i}].name' (a string) is required"
                    )))
                }
            };
            let at = |field: &str| format!("tests[{i}].{field}");
            let stdin: Option<FileContent> = take(t, "stdin", &at("stdin"))?;
            let expected: Option<FileContent> = take(t, "expected", &at("expected"))?;
            tests.push(InlineTest {
                stdin: stdin
                    .map(|c| c.decode(&at("stdin")))
                    .transpose()?
                    .map(|d| d.0),
                expected: expected
                    .map(|c| c.decode(&at("expected")))
                    .transpose()?
                    .map(|d| d.0),
                files: input_files(take(t, "files", &at("files"))?, &at("files"))?,
                name,
            });
        }
    }
    let checker_files = helper_files(&mut map, "checker")?;
    let interactor_files = helper_files(&mut map, "interactor")?;
    Ok((
        id,
        InlineProject {
            manifest: map,
            files,
            tests,
            checker_files,
            interactor_files,
        },
    ))
}

/// `POST /submissions`: the project, an optional scenario, the files (a map, file parts of
/// a multipart form, or `archive`: a tar or a zip), `wait`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSubmission {
    project_id: Option<String>,
    scenario: Option<String>,
    files: Option<BTreeMap<String, FileContent>>,
    archive: Option<FileContent>,
    wait: Option<bool>,
    callback: Option<CallbackRequest>,
}

impl CreateSubmission {
    /// A submission as the judge takes it; 400 for a missing project id, bad files, or a
    /// callback whose host is off the server's allow-list.
    pub fn into_new(self, allow: &AllowList) -> ApiResult<NewSubmission> {
        let project_id = self
            .project_id
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::bad_request("'project_id' is required"))?;
        Ok(NewSubmission {
            project_id,
            scenario: self.scenario,
            files: input_files(self.files, "files")?,
            archive: self
                .archive
                .map(|a| a.decode("archive"))
                .transpose()?
                .map(|d| d.0),
            wait: self.wait.unwrap_or(false),
            callback: self
                .callback
                .map(|c| Callback::accept(c, allow))
                .transpose()?,
        })
    }
}

/// `POST /submissions/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSubmissions {
    pub submissions: Vec<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn execution_limits_take_numbers_or_text() {
        let limits = json!({"memory_bytes": "128M", "cpu_time_s": "2s", "wall_time_s": "500ms",
                            "pids": "16", "output_bytes": "1K"});
        let single = json!({"environment": "busybox", "command": ["true"], "limits": limits});
        let group = json!({"environment": "busybox",
                           "programs": [{"command": ["true"], "limits": limits}]});
        for v in [single, group] {
            let new = new_execution(body(v), &AllowList::default()).unwrap();
            let l = new.programs[0].limits;
            assert_eq!(l.memory_bytes, Some(128 << 20));
            assert_eq!(l.cpu_time_s, Some(2.0));
            assert_eq!(l.wall_time_s, Some(0.5));
            assert_eq!(l.pids, Some(16));
            assert_eq!(l.output_bytes, Some(1024));
        }
        let e = match new_execution(
            body(json!({"environment": "e", "command": ["x"], "limits": {"memory_bytes": "lots"}})),
            &AllowList::default(),
        ) {
            Err(e) => e.message,
            Ok(_) => panic!("accepted"),
        };
        assert!(
            e.contains("limits.memory_bytes") && e.contains("128M"),
            "{e}"
        );
    }

    #[test]
    fn api_key_fields_take_numbers_or_text() {
        let k = from_body::<CreateApiKey>(body(
            json!({"key_name": "k", "max_memory": "64M", "max_time": "2s", "max_executions": "3"}),
        ))
        .and_then(CreateApiKey::into_new)
        .unwrap();
        assert_eq!(
            (
                k.name.as_str(),
                k.quota.max_memory,
                k.quota.max_time,
                k.quota.max_executions
            ),
            ("k", Some(64 << 20), Some(2.0), Some(3))
        );
        for bad in [
            json!({"name": "x", "max_memory": -1}),
            json!({"name": "x", "max_memory": "0"}),
            json!({"name": "x", "max_memory": "64MiB"}),
            json!({"name": "x", "max_memory": "9999999999G"}),
            json!({"name": "x", "max_executions": 0}),
            json!({"name": "x", "max_executions": " 3"}),
            json!({"name": "x", "max_time": "0s"}),
            json!({"name": "x", "max_time": "1.2345s"}),
            json!({"name": "x", "max_time": null}),
        ] {
            assert!(
                from_body::<CreateApiKey>(body(bad.clone())).is_err(),
                "{bad}"
            );
        }
        for (text, secs) in [
            ("2s", 2.0),
            ("1.5", 1.5),
            ("500ms", 0.5),
            ("1m", 60.0),
            ("0.001s", 0.001),
        ] {
            assert_eq!(crate::units::parse_seconds(text), Ok(secs), "{text}");
        }
        for (text, mode) in [
            ("755", Some(0o755)),
            ("0644", Some(0o644)),
            ("0", Some(0)),
            ("7777", None),
            ("0o7", None),
            ("8", None),
        ] {
            assert_eq!(Mode::parse(text).map(|m| m.0), mode, "{text}");
        }
    }
}
