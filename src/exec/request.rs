//! What is asked of an execution: the typed request as the store keeps it (files are on disk,
//! see `workdir.rs`), the limits as the API names them, and a new execution before it is
//! accepted.
//!
//! An execution is one program ([`ProgramRequest`]) or a group of programs run at once and
//! wired by pipes ([`GroupRequest`]); [`ExecutionRequest::programs`] gives either as a slice,
//! so most code never asks which it is.

use std::collections::BTreeSet;

use sandbox::RelPath;
use serde::{Deserialize, Serialize};

use crate::units;

/// Limits as asked for; `None` takes the default (within the key's maxima). Sizes and times
/// are numbers or text as users type them (`"128M"`, `"2s"`), as API-key limits are. Read
/// from a JSON object only (serde's derive would also take a list of the fields in order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RequestedLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_time_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_time_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

impl<'de> Deserialize<'de> for RequestedLimits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map;
        impl<'de> serde::de::Visitor<'de> for Map {
            type Value = RequestedLimits;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of limits")
            }
            // The fields are read through the same map, so an error still names its field.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let f =
                    LimitFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RequestedLimits {
                    memory_bytes: f.memory_bytes,
                    cpu_time_s: f.cpu_time_s,
                    wall_time_s: f.wall_time_s,
                    pids: f.pids,
                    output_bytes: f.output_bytes,
                })
            }
        }
        d.deserialize_map(Map)
    }
}

/// The fields of [`RequestedLimits`] as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitFields {
    #[serde(default, deserialize_with = "units::de::size")]
    memory_bytes: Option<u64>,
    #[serde(default, deserialize_with = "units::de::seconds")]
    cpu_time_s: Option<f64>,
    #[serde(default, deserialize_with = "units::de::seconds")]
    wall_time_s: Option<f64>,
    #[serde(default, deserialize_with = "units::de::count")]
    pids: Option<u64>,
    #[serde(default, deserialize_with = "units::de::size")]
    output_bytes: Option<u64>,
}

impl RequestedLimits {
    /// Each limit `self` sets, else `under`'s.
    pub fn over(&self, under: &RequestedLimits) -> RequestedLimits {
        RequestedLimits {
            memory_bytes: self.memory_bytes.or(under.memory_bytes),
            cpu_time_s: self.cpu_time_s.or(under.cpu_time_s),
            wall_time_s: self.wall_time_s.or(under.wall_time_s),
            pids: self.pids.or(under.pids),
            output_bytes: self.output_bytes.or(under.output_bytes),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == RequestedLimits::default()
    }
}

/// The effective limits of an execution: asked for, else the defaults, within the key's maxima.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu_time_s: f64,
    pub wall_time_s: f64,
    pub pids: u64,
    pub output_bytes: u64,
}

/// A file of the file store (`crate::files`) put into the work directory by reference: the
/// sandbox sees its blob read-only at `path`, bound, never copied. Resolved when the execution
/// is accepted: it reads the content the file had then, even if the file is deleted or expires
/// before it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Where, below the work directory (a valid [`RelPath`]).
    pub path: String,
    pub file_id: String,
    /// The blob.
    pub sha256: String,
    /// Seen as `r-xr-xr-x` (else `r--r--r--`).
    pub executable: bool,
}

/// One program of an execution: what it runs, under which limits, what comes back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramRequest {
    /// Its environment; `None`: the execution's (a single program always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// argv.
    pub command: Vec<String>,
    pub limits: Limits,
    /// The outputs to collect, as the caller named them (each a valid [`RelPath`]).
    pub outputs: Vec<String>,
    /// Files to keep in the file store after the run (each a valid [`RelPath`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<String>,
    /// Inputs by reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_refs: Vec<FileRef>,
}

impl ProgramRequest {
    /// The output the caller named that is `rel`, when there is one.
    pub fn output_named(&self, rel: &RelPath) -> Option<&str> {
        named(&self.outputs, rel)
    }

    /// Its environment: its own, else the execution's.
    pub fn environment<'a>(&'a self, execution: &'a str) -> &'a str {
        self.environment.as_deref().unwrap_or(execution)
    }
}

fn named<'a>(names: &'a [String], rel: &RelPath) -> Option<&'a str> {
    names
        .iter()
        .find(|o| RelPath::parse(o).ok().as_ref() == Some(rel))
        .map(String::as_str)
}

/// One end of a pipe: a file descriptor of a program of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipeEnd {
    /// Index in `programs`.
    pub program: usize,
    pub fd: i32,
}

/// A pipe: what `from` writes on its fd, `to` reads on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeRequest {
    pub from: PipeEnd,
    pub to: PipeEnd,
    /// Keep a copy of the traffic, up to this many bytes (the bytes then pass through the
    /// engine); `None`: the programs talk directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_bytes: Option<u64>,
}

/// Several programs run at once, each in its own sandbox, wired by pipes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRequest {
    pub programs: Vec<ProgramRequest>,
    pub pipes: Vec<PipeRequest>,
    /// The group's wall-clock limit: every program still running then is ended.
    pub wall_time_s: f64,
    /// Programs whose end stops the others (indices in `programs`).
    #[serde(default)]
    pub ends_with: Vec<usize>,
}

/// The accepted request, as the store keeps it (one program as it always was).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExecutionRequest {
    Group(GroupRequest),
    Program(ProgramRequest),
}

impl ExecutionRequest {
    /// Its programs: one, or the group's.
    pub fn programs(&self) -> &[ProgramRequest] {
        match self {
            ExecutionRequest::Group(g) => &g.programs,
            ExecutionRequest::Program(p) => std::slice::from_ref(p),
        }
    }

    pub fn group(&self) -> Option<&GroupRequest> {
        match self {
            ExecutionRequest::Group(g) => Some(g),
            ExecutionRequest::Program(_) => None,
        }
    }

    pub fn is_group(&self) -> bool {
        self.group().is_some()
    }

    /// The blobs it reads by reference (the store keeps them while it has not ended).
    pub fn blobs(&self) -> BTreeSet<&str> {
        self.programs()
            .iter()
            .flat_map(|p| &p.file_refs)
            .map(|r| r.sha256.as_str())
            .collect()
    }
}

/// A file put into the work directory before the run.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: RelPath,
    pub bytes: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// A file of the file store asked for as an input, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFileRef {
    pub path: RelPath,
    pub file_id: String,
    /// Permission bits asked for; only the x bits count (stored files are read-only).
    pub mode: Option<u32>,
}

/// One program of a new execution.
#[derive(Debug, Clone, Default)]
pub struct NewProgram {
    /// `None`: the execution's.
    pub environment: Option<String>,
    pub command: Vec<String>,
    pub limits: RequestedLimits,
    pub outputs: Vec<String>,
    pub keep: Vec<String>,
    pub files: Vec<InputFile>,
    pub file_refs: Vec<NewFileRef>,
    pub stdin: Option<Vec<u8>>,
}

/// What makes a new execution a group.
#[derive(Debug, Clone, Default)]
pub struct NewGroup {
    pub pipes: Vec<PipeRequest>,
    /// `None`: the longest wall-time limit of its programs.
    pub wall_time_s: Option<f64>,
    pub ends_with: Vec<usize>,
}

/// A new execution, parsed and path-checked by a face (the HTTP API, `sandpit run --spec`;
/// see `parse/`), not yet admitted.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// The environment of every program that names none.
    pub environment: String,
    /// One, or a group's (then `group` is set).
    pub programs: Vec<NewProgram>,
    pub group: Option<NewGroup>,
    /// Queue it at once (else it stays pending for uploads and a later start).
    pub start: bool,
    /// Answer once it has ended (implies `start`).
    pub wait: bool,
    /// Where its final object is POSTed when it ends.
    pub callback: Option<crate::callbacks::Callback>,
}

impl NewExecution {
    /// What can be known wrong before anything runs: a command the kernel cannot take (a NUL
    /// byte), too many outputs (each is read into memory after the run) in a program.
    pub fn check(&self) -> crate::error::Result<()> {
        use crate::error::Error;
        let in_group = self.group.is_some();
        for (n, p) in self.programs.iter().enumerate() {
            let prefix = if in_group {
                format!("programs[{n}].")
            } else {
                String::new()
            };
            if let Some(i) = p.command.iter().position(|a| a.contains('\0')) {
                return Err(Error::Invalid(format!(
                    "{prefix}command[{i}] contains a NUL byte, which no program can receive"
                )));
            }
            let max = crate::exec::admission::MAX_OUTPUTS;
            for (field, n) in [("outputs", p.outputs.len()), ("keep", p.keep.len())] {
                if n > max {
                    return Err(Error::Invalid(format!(
                        "'{prefix}{field}' may name at most {max} files, not {n}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Input files given inline, all programs together.
    pub fn input_count(&self) -> u64 {
        self.programs.iter().map(|p| p.files.len() as u64).sum()
    }

    /// The bytes its input files and stdin take on disk, all programs together.
    pub fn input_bytes(&self) -> u64 {
        self.programs
            .iter()
            .map(|p| {
                let files: u64 = p.files.iter().map(|f| f.bytes.len() as u64).sum();
                files + p.stdin.as_ref().map_or(0, |s| s.len() as u64)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_of_today_reads_back() {
        // As the store kept requests before groups existed.
        let text = r#"{"command":["sh","-c","x"],"limits":{"memory_bytes":268435456,
            "cpu_time_s":10.0,"wall_time_s":30.0,"pids":64,"output_bytes":16777216},
            "outputs":["out.txt"]}"#;
        let r: ExecutionRequest = serde_json::from_str(text).unwrap();
        assert!(!r.is_group());
        let p = &r.programs()[0];
        assert_eq!(p.limits.memory_bytes, 256 << 20);
        assert_eq!(
            p.output_named(&RelPath::parse("./out.txt").unwrap()),
            Some("out.txt")
        );
        assert_eq!(p.environment("busybox"), "busybox");
        let again: ExecutionRequest =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn a_group_round_trips_and_lists_its_blobs() {
        let limits = Limits {
            memory_bytes: 1 << 20,
            cpu_time_s: 1.0,
            wall_time_s: 2.0,
            pids: 8,
            output_bytes: 1024,
        };
        let program = |env: &str, sha: &str| ProgramRequest {
            environment: Some(env.into()),
            command: vec!["./a".into()],
            limits,
            outputs: vec![],
            keep: vec!["log".into()],
            file_refs: vec![FileRef {
                path: "a".into(),
                file_id: "file_1".into(),
                sha256: sha.into(),
                executable: true,
            }],
        };
        let r = ExecutionRequest::Group(GroupRequest {
            programs: vec![program("c", "aa"), program("python3", "aa")],
            pipes: vec![PipeRequest {
                from: PipeEnd { program: 0, fd: 1 },
                to: PipeEnd { program: 1, fd: 0 },
                capture_bytes: Some(10),
            }],
            wall_time_s: 3.0,
            ends_with: vec![1],
        });
        let again: ExecutionRequest =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
        assert!(again.is_group());
        assert_eq!(again.programs()[1].environment("busybox"), "python3");
        assert_eq!(again.blobs().into_iter().collect::<Vec<_>>(), ["aa"]);
    }
}
