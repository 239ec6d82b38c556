//! A project: an environment, the files a submission is put among (the workspace), Sphere's
//! stages (`config.json`), test cases and a checker. Wherever it comes from (an example
//! directory, an uploaded archive unpacked, a JSON body written out) a project is one
//! directory, read by one loader:
//!
//! ```text
//! project.json              sandpit's part: name, environment, source, artifacts, limits,
//!                           tests (optional: else every directory under tests/), checker
//! config.json               Sphere's config.json 2.1 (or "config" inside project.json)
//! workspace/...             the project's files: the work directory of every stage
//! tests/<name>/input        the test's stdin (optional)
//! tests/<name>/output       the expected output (the answer)
//! tests/<name>/files/...    files put into the work directory for this test only
//! checker/...               a checker program and its files (type "program")
//! interactor/...            an interactive problem's interactor and its files (built once
//!                           per submission by its own `build` command when it has one)
//! ```
//!
//! The store keeps the checked definition as `project.json` (config inline, tests listed).
//!
//! | concern | where |
//! |---|---|
//! | the definition: test cases, checkers, the interactor, `project.json` | `def.rs` |
//! | the one loader: reading, defaults, every check | `load.rs` |
//! | a loaded project's paths and limits | `mod.rs` |

use std::path::PathBuf;

use crate::auth::Quota;
use crate::exec::admission::{effective_limits, LimitCaps};
use crate::exec::{Limits, RequestedLimits};

mod def;
mod load;
#[cfg(test)]
mod tests;

pub use def::{
    valid_test_name, CheckerSpec, HelperBuild, InteractorSpec, Manifest, ManifestDefaults,
    ProjectDef, TestCase,
};
use load::entries;

pub const MANIFEST: &str = "project.json";
pub const CONFIG: &str = "config.json";
pub const WORKSPACE: &str = "workspace";
pub const TESTS: &str = "tests";
pub const CHECKER: &str = "checker";
pub const INTERACTOR: &str = "interactor";
pub const TEST_INPUT: &str = "input";
pub const TEST_ANSWER: &str = "output";
pub const TEST_FILES: &str = "files";
/// The names a program checker finds its three files under (testlib's argument order). An
/// interactor gets the same arguments: `output` is the file it may write (testlib's `tout`).
pub const CHECKER_ARGS: [&str; 3] = ["input", "output", "answer"];
/// Most test cases in one project.
pub const MAX_TESTS: usize = 10_000;

/// A test's limits when neither the test nor the project sets them (a judge's usual ones,
/// not a build's): 2 s of CPU, 256 MiB, 64 processes, 16 MiB of output; the wall time is
/// twice the CPU time plus one second.
const TEST_CPU_S: f64 = 2.0;
const TEST_MEMORY: u64 = 256 << 20;
const TEST_PIDS: u64 = 64;
const TEST_OUTPUT: u64 = 16 << 20;
/// A program checker's limits unless it sets its own.
const CHECKER_CPU_S: f64 = 10.0;
const CHECKER_MEMORY: u64 = 512 << 20;

/// A project's directory and its definition.
#[derive(Debug, Clone)]
pub struct ProjectFiles {
    pub root: PathBuf,
    pub def: ProjectDef,
}

impl ProjectFiles {
    pub fn workspace(&self) -> PathBuf {
        self.root.join(WORKSPACE)
    }

    pub fn checker_dir(&self) -> PathBuf {
        self.root.join(CHECKER)
    }

    pub fn interactor_dir(&self) -> PathBuf {
        self.root.join(INTERACTOR)
    }

    fn test_dir(&self, name: &str) -> PathBuf {
        self.root.join(TESTS).join(name)
    }

    /// The test's stdin, when it has one.
    pub fn test_input(&self, name: &str) -> Option<PathBuf> {
        let p = self.test_dir(name).join(TEST_INPUT);
        p.is_file().then_some(p)
    }

    /// The test's expected output, when it has one.
    pub fn test_answer(&self, name: &str) -> Option<PathBuf> {
        let p = self.test_dir(name).join(TEST_ANSWER);
        p.is_file().then_some(p)
    }

    /// The test's own files (`tests/<name>/files/`): top-level name → host path.
    pub fn test_files(&self, name: &str) -> Result<Vec<(String, PathBuf)>, String> {
        let dir = self.test_dir(name).join(TEST_FILES);
        Ok(entries(&dir)?
            .into_iter()
            .map(|n| {
                let p = dir.join(&n);
                (n, p)
            })
            .collect())
    }

    /// A test's limits: the test's, else the project's, else a judge's defaults.
    pub fn test_limits(&self, test: &TestCase) -> Result<Limits, String> {
        let merged = test.limits.over(&self.def.limits);
        let cpu = merged.cpu_time_s.unwrap_or(TEST_CPU_S);
        let with_defaults = merged.over(&RequestedLimits {
            memory_bytes: Some(TEST_MEMORY),
            cpu_time_s: Some(cpu),
            wall_time_s: Some(cpu * 2.0 + 1.0),
            pids: Some(TEST_PIDS),
            output_bytes: Some(TEST_OUTPUT),
        });
        // Grading runs outside executions' admission: within the default maxima.
        effective_limits(&with_defaults, &Quota::default(), &LimitCaps::default())
            .map_err(|e| e.to_string())
    }
}

/// A helper program's limits (a checker's, an interactor's): its own, else 10 s of CPU,
/// 512 MiB.
pub fn checker_limits(asked: &RequestedLimits) -> Result<Limits, String> {
    let cpu = asked.cpu_time_s.unwrap_or(CHECKER_CPU_S);
    let with_defaults = asked.over(&RequestedLimits {
        memory_bytes: Some(CHECKER_MEMORY),
        cpu_time_s: Some(cpu),
        wall_time_s: Some(cpu * 2.0),
        pids: Some(TEST_PIDS),
        output_bytes: Some(1 << 20),
    });
    // Grading runs outside executions' admission: within the default maxima.
    effective_limits(&with_defaults, &Quota::default(), &LimitCaps::default())
        .map_err(|e| e.to_string())
}
