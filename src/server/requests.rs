//! The request bodies, typed: each route's body (normalised to one JSON object by `body.rs`,
//! whichever encoding it came in) is read into one of these structs, unknown fields refused,
//! and every error names the field it is about.

use std::collections::BTreeMap;

use base64::Engine;
use sandbox::RelPath;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::errors::{ApiError, ApiResult};
use crate::callbacks::{AllowList, Callback, CallbackRequest};
use crate::exec::{InputFile, NewExecution, RequestedLimits};
use crate::judge::service::{InlineProject, InlineTest, NewSubmission};

/// The first member that is `null`, by its path: no field takes `null` (leave it out).
fn null_member(map: &Map<String, Value>, at: &str) -> Option<String> {
    map.iter().find_map(|(k, v)| {
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match v {
            Value::Null => Some(path),
            Value::Object(inner) => null_member(inner, &path),
            _ => None,
        }
    })
}

/// Reads a typed body; a wrong field is a 400 that names it (`'limits.pids': …`).
pub fn from_body<T: serde::de::DeserializeOwned>(map: Map<String, Value>) -> ApiResult<T> {
    if let Some(path) = null_member(&map, "") {
        return Err(ApiError::bad_request(format!(
            "'{path}' may not be null (leave it out for the default)"
        )));
    }
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::bad_request(e.inner().to_string())
        } else {
            ApiError::bad_request(format!("'{path}': {}", e.inner()))
        }
    })
}

/// Permission bits: octal text (`"755"`, `"0644"`: `^0?[0-7]{1,3}$`) or a number up to 511.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        let digits = text
            .strip_prefix('0')
            .filter(|d| !d.is_empty())
            .unwrap_or(text);
        if digits.is_empty()
            || digits.len() > 3
            || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return None;
        }
        u32::from_str_radix(digits, 8).ok().map(Mode)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bad = || de::Error::custom("must be permission bits, e.g. \"755\" or 493");
        match Value::deserialize(d)? {
            Value::String(s) => Mode::parse(&s).ok_or_else(bad),
            Value::Number(n) => n
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| *m <= 0o777)
                .map(Mode)
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum Encoding {
    #[serde(rename = "text", alias = "utf-8", alias = "utf8")]
    Text,
    #[serde(rename = "base64")]
    Base64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncodedFile {
    content: String,
    encoding: Option<Encoding>,
    mode: Option<Mode>,
}

/// A file's content in a request: text, or `{content, encoding: base64|text, mode}`.
#[derive(Debug)]
pub struct FileContent(EncodedFile);

impl<'de> Deserialize<'de> for FileContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(content) => Ok(FileContent(EncodedFile {
                content,
                encoding: None,
                mode: None,
            })),
            v @ Value::Object(_) => serde_json::from_value(v)
                .map(FileContent)
                .map_err(de::Error::custom),
            _ => Err(de::Error::custom(
                "give the content as a string or as {\"content\", \"encoding\"}",
            )),
        }
    }
}

impl FileContent {
    /// The bytes and the mode asked for.
    pub(crate) fn decode(self, what: &str) -> ApiResult<(Vec<u8>, Option<u32>)> {
        let f = self.0;
        let bytes = match f.encoding {
            None | Some(Encoding::Text) => f.content.into_bytes(),
            Some(Encoding::Base64) => base64::engine::general_purpose::STANDARD
                .decode(&f.content)
                .map_err(|e| ApiError::bad_request(format!("{what}: bad base64: {e}")))?,
        };
        Ok((bytes, f.mode.map(|m| m.0)))
    }
}

/// `POST /executions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateExecution {
    environment: Option<String>,
    command: Option<Vec<String>>,
    files: Option<BTreeMap<String, FileContent>>,
    stdin: Option<FileContent>,
    limits: Option<RequestedLimits>,
    outputs: Option<Vec<String>>,
    start: Option<bool>,
    wait: Option<bool>,
    callback: Option<CallbackRequest>,
}

fn rel_path(text: &str, what: &str) -> ApiResult<RelPath> {
    RelPath::parse(text).map_err(|e| ApiError::bad_path(format!("{what}: {e}")))
}

impl CreateExecution {
    /// The new execution it asks for: required fields present, paths inside the work dir,
    /// the callback's host on the server's allow-list.
    pub fn into_new(self, allow: &AllowList) -> ApiResult<NewExecution> {
        let environment = self
            .environment
            .filter(|e| !e.is_empty())
            .ok_or_else(|| ApiError::bad_request("'environment' (an envid) is required"))?;
        let command = self
            .command
            .ok_or_else(|| ApiError::bad_request("'command' (an argv array) is required"))?;
        if !matches!(command.first(), Some(program) if !program.is_empty()) {
            return Err(ApiError::bad_request("'command' must name a program"));
        }
        let outputs = self.outputs.unwrap_or_default();
        for path in &outputs {
            rel_path(path, "outputs")?;
        }
        let mut files = Vec::new();
        for (path, content) in self.files.unwrap_or_default() {
            let rel = rel_path(&path, "files")?;
            let (bytes, mode) = content.decode(&format!("files['{path}']"))?;
            files.push(InputFile {
                path: rel,
                bytes,
                mode: mode.unwrap_or(0o644),
            });
        }
        let stdin = match self.stdin {
            Some(c) => Some(c.decode("stdin")?.0),
            None => None,
        };
        let wait = self.wait.unwrap_or(false);
        let callback = match self.callback {
            Some(c) => Some(Callback::accept(c, allow)?),
            None => None,
        };
        Ok(NewExecution {
            environment,
            command,
            limits: self.limits.unwrap_or_default(),
            outputs,
            files,
            stdin,
            start: self.start.unwrap_or(false) || wait,
            wait,
            callback,
        })
    }
}

/// Text of 1-`max` digits, the first not 0 (`^[1-9][0-9]{0,max-1}`), and what follows.
fn leading_number(text: &str, max: usize) -> Option<(u64, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let digits = &text[..end];
    if digits.is_empty() || digits.len() > max || digits.starts_with('0') {
        return None;
    }
    Some((digits.parse().ok()?, &text[end..]))
}

/// A size in bytes: a positive number (at most 2^63-1), or text like `256M`
/// (`^[1-9][0-9]{0,8}[KMG]?$`, powers of 1024).
#[derive(Debug, Clone, Copy)]
pub struct ByteSize(pub u64);

impl ByteSize {
    fn parse(text: &str) -> Option<u64> {
        let (n, unit) = leading_number(text, 9)?;
        let shift = match unit {
            "" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            _ => return None,
        };
        Some(n << shift)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => ByteSize::parse(&s),
            _ => None,
        };
        bytes
            .filter(|b| *b > 0 && i64::try_from(*b).is_ok())
            .map(ByteSize)
            .ok_or_else(|| {
                de::Error::custom("must be a positive number of bytes (or e.g. \"256M\")")
            })
    }
}

/// Seconds: a positive number, or text like `2s`, `1.5`, `500ms`, `1m`
/// (`^[0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m)?$`, not zero).
#[derive(Debug, Clone, Copy)]
pub struct Seconds(pub f64);

impl Seconds {
    fn parse(text: &str) -> Option<f64> {
        let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
            (n, 1e-3)
        } else if let Some(n) = text.strip_suffix('s') {
            (n, 1.0)
        } else if let Some(n) = text.strip_suffix('m') {
            (n, 60.0)
        } else {
            (text, 1.0)
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |t: &str, max: usize| {
            !t.is_empty() && t.len() <= max && t.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(whole, 6) || (number.contains('.') && !digits(fraction, 3)) {
            return None;
        }
        number.parse::<f64>().ok().map(|v| v * scale)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = match Value::deserialize(d)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => Seconds::parse(&s),
            _ => None,
        };
        secs.filter(|s| *s > 0.0 && s.is_finite())
            .map(Seconds)
            .ok_or_else(|| {
                de::Error::custom("must be a positive number of seconds (or e.g. \"2s\")")
            })
    }
}

/// A whole number of at least 1 (at most 2^63-1), as a number or as text
/// (`^[1-9][0-9]{0,17}$`).
#[derive(Debug, Clone, Copy)]
pub struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => leading_number(&s, 18)
                .filter(|(_, rest)| rest.is_empty())
                .map(|(n, _)| n),
            _ => None,
        };
        n.filter(|n| *n >= 1 && i64::try_from(*n).is_ok())
            .map(Count)
            .ok_or_else(|| de::Error::custom("must be a whole number of at least 1"))
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
            name: self
                .name
                .or(self.key_name)
                .ok_or_else(|| ApiError::bad_request("'name' is required"))?,
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

/// `POST /projects` and `PUT /projects/{id}` as JSON: `project.json`'s fields (`name`,
/// `environment`, `config`, `source`, `artifacts`, `limits`, `tests`, `checker`) plus the
/// contents: `files` (the workspace), each test's `stdin`, `expected` and `files`, and the
/// checker's `files`. Returns the id asked for and the project.
pub fn project_from_body(
    mut map: Map<String, Value>,
) -> ApiResult<(Option<String>, InlineProject)> {
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
    let checker_files = match map.get_mut("checker") {
        Some(Value::Object(c)) => input_files(take(c, "files", "checker.files")?, "checker.files")?,
        _ => Vec::new(),
    };
    Ok((
        id,
        InlineProject {
            manifest: map,
            files,
            tests,
            checker_files,
        },
    ))
}

/// `POST /submissions`: the project, an optional scenario, the files (a map, file parts of
/// a multipart form, or `archive`: a tar), `wait`.
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

    fn create_error(v: Value) -> String {
        match from_body::<CreateExecution>(body(v)).and_then(|c| c.into_new(&AllowList::default()))
        {
            Err(e) => e.message,
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert!(create_error(json!({"command": ["x"]})).contains("environment"));
        assert!(create_error(json!({"environment": "e", "command": "x"})).contains("command"));
        assert!(create_error(json!({"environment": "e", "command": [""]})).contains("command"));
        assert!(
            create_error(json!({"environment": "e", "command": ["x"], "surprise": 1}))
                .contains("surprise")
        );
        assert!(create_error(
            json!({"environment": "e", "command": ["x"], "limits": {"pids": "lots"}})
        )
        .contains("limits.pids"));
        assert!(create_error(
            json!({"environment": "e", "command": ["x"], "files": {"a": {"content": "!", "encoding": "base64"}}})
        )
        .contains("base64"));
        assert!(create_error(
            json!({"environment": "e", "command": ["x"], "files": {"a": {"content": "x", "mode": "999"}}})
        )
        .contains("permission bits"));
        assert!(create_error(
            json!({"environment": "e", "command": ["x"], "files": {"../a": "1"}})
        )
        .contains("leaves"));
    }

    #[test]
    fn a_full_request_reads() {
        let new = from_body::<CreateExecution>(body(json!({
            "environment": "busybox",
            "command": ["sh", "-c", "cat a"],
            "files": {"a": "text", "bin/b": {"content": "aGk=", "encoding": "base64", "mode": "755"}},
            "stdin": {"content": "in"},
            "limits": {"memory_bytes": 1000, "cpu_time_s": 1.5},
            "outputs": ["out.txt"],
            "wait": true,
        })))
        .and_then(|c| c.into_new(&AllowList::default()))
        .unwrap();
        assert!(new.start && new.wait);
        assert_eq!(new.files[1].bytes, b"hi");
        assert_eq!(new.files[1].mode, 0o755);
        assert_eq!(new.stdin.as_deref(), Some(&b"in"[..]));
        assert_eq!(new.limits.cpu_time_s, Some(1.5));
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
            assert_eq!(Seconds::parse(text), Some(secs), "{text}");
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
