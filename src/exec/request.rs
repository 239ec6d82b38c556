//! What is asked of an execution: the typed request as the store keeps it (files are on disk,
//! see `workdir.rs`), the limits as the API names them, and a new execution before it is
//! accepted.

use sandbox::RelPath;
use serde::{Deserialize, Serialize};

/// Limits as asked for; `None` takes the default (within the key's maxima).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
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

/// The accepted request, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRequest {
    /// argv.
    pub command: Vec<String>,
    pub limits: Limits,
    /// The outputs to collect, as the caller named them (each a valid [`RelPath`]).
    pub outputs: Vec<String>,
}

impl ExecutionRequest {
    /// The output the caller named that is `rel`, when there is one.
    pub fn output_named(&self, rel: &RelPath) -> Option<&str> {
        self.outputs
            .iter()
            .find(|o| RelPath::parse(o).ok().as_ref() == Some(rel))
            .map(String::as_str)
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

/// A new execution, parsed and path-checked by a face (the HTTP layer), not yet admitted.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub environment: String,
    pub command: Vec<String>,
    pub limits: RequestedLimits,
    pub outputs: Vec<String>,
    pub files: Vec<InputFile>,
    pub stdin: Option<Vec<u8>>,
    /// Queue it at once (else it stays pending for uploads and a later start).
    pub start: bool,
    /// Answer once it has ended (implies `start`).
    pub wait: bool,
    /// Where its final object is POSTed when it ends.
    pub callback: Option<crate::callbacks::Callback>,
}

impl NewExecution {
    /// What can be known wrong before anything runs: a command the kernel cannot take (a NUL
    /// byte), too many outputs.
    pub fn check(&self) -> crate::error::Result<()> {
        use crate::error::Error;
        if let Some(i) = self.command.iter().position(|a| a.contains('\0')) {
            return Err(Error::Invalid(format!(
                "command[{i}] contains a NUL byte, which no program can receive"
            )));
        }
        let max = crate::exec::admission::MAX_OUTPUTS;
        if self.outputs.len() > max {
            return Err(Error::Invalid(format!(
                "'outputs' may name at most {max} files, not {}",
                self.outputs.len()
            )));
        }
        Ok(())
    }

    /// The bytes its input files and stdin take on disk.
    pub fn input_bytes(&self) -> u64 {
        let files: u64 = self.files.iter().map(|f| f.bytes.len() as u64).sum();
        files + self.stdin.as_ref().map_or(0, |s| s.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_of_today_reads_back() {
        // As the store kept requests before the typed request existed.
        let text = r#"{"command":["sh","-c","x"],"limits":{"memory_bytes":268435456,
            "cpu_time_s":10.0,"wall_time_s":30.0,"pids":64,"output_bytes":16777216},
            "outputs":["out.txt"]}"#;
        let r: ExecutionRequest = serde_json::from_str(text).unwrap();
        assert_eq!(r.limits.memory_bytes, 256 << 20);
        assert_eq!(
            r.output_named(&RelPath::parse("./out.txt").unwrap()),
            Some("out.txt")
        );
        let again: ExecutionRequest =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }
}
