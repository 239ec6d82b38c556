//! A project's definition: its test cases, how their outputs are judged (a checker, an
//! interactor), `project.json` as written by hand and the checked form the store keeps.

use serde::{Deserialize, Serialize};

use crate::exec::RequestedLimits;
use crate::judge::config::SphereConfig;

fn default_abs() -> f64 {
    1e-6
}

fn default_rel() -> f64 {
    1e-6
}

/// How a test's output is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum CheckerSpec {
    // Braced (no fields), so that unknown fields are refused for them too.
    /// Byte for byte (whitespace-only differences: presentation error).
    Exact {},
    /// The same whitespace-separated tokens.
    Tokens {},
    /// Tokens, numbers equal within `abs` or `rel` (relative to the answer).
    Floats {
        #[serde(default = "default_abs")]
        abs: f64,
        #[serde(default = "default_rel")]
        rel: f64,
    },
    /// A program in `checker/` speaking testlib's exit codes, run as
    /// `COMMAND input output answer` in a sandbox of its own.
    Program {
        command: Vec<String>,
        /// Its environment (default: the project's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment: Option<String>,
        #[serde(default, skip_serializing_if = "RequestedLimits::is_empty")]
        limits: RequestedLimits,
    },
}

/// An interactive problem's interactor: a program in `interactor/` speaking testlib's exit
/// codes, run as `COMMAND input output answer` beside each test's solution, its stdout the
/// solution's stdin and the solution's stdout its stdin. Its verdict replaces the checker's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractorSpec {
    pub command: Vec<String>,
    /// Its environment (default: the project's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Its own limits (its wall time stretches to outlast the solution's).
    #[serde(default, skip_serializing_if = "RequestedLimits::is_empty")]
    pub limits: RequestedLimits,
    /// Compiles it from its sources, once per submission before the tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<HelperBuild>,
}

/// How a helper program (the interactor) is built from its files: a command run in a sandbox
/// of its environment with a copy of its directory, and the files it makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelperBuild {
    pub command: Vec<String>,
    /// The files the build makes (relative to the helper's directory), kept for the tests.
    pub outputs: Vec<String>,
}

fn one() -> f64 {
    1.0
}

/// A test case; its data lives in `tests/<name>/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// Points the test is worth.
    #[serde(default = "one")]
    pub weight: f64,
    /// Its subtask: a group scores only when every test in it passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Over the project's limits.
    #[serde(default, skip_serializing_if = "RequestedLimits::is_empty")]
    pub limits: RequestedLimits,
}

/// `project.json` as written by hand (most fields optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: Option<String>,
    /// The envid every stage and test runs in.
    pub environment: Option<String>,
    /// Sphere's config.json, inline.
    pub config: Option<SphereConfig>,
    /// Where a submission of a single file puts it (e.g. `main.c`).
    pub source: Option<String>,
    /// Files a stage leaves for the later stages and the tests (the build's outputs, a
    /// report), relative to the work directory.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Every test's limits (a test may override them).
    #[serde(default)]
    pub limits: RequestedLimits,
    pub tests: Option<Vec<TestCase>>,
    pub checker: Option<CheckerSpec>,
    pub interactor: Option<InteractorSpec>,
}

/// What a caller gives besides the directory (an archive uploaded with `?environment=`).
#[derive(Debug, Clone, Default)]
pub struct ManifestDefaults {
    pub name: Option<String>,
    pub environment: Option<String>,
}

/// A project's definition, checked: what the store keeps and the API shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectDef {
    pub name: String,
    pub environment: String,
    pub config: SphereConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default)]
    pub artifacts: Vec<String>,
    #[serde(default)]
    pub limits: RequestedLimits,
    #[serde(default)]
    pub tests: Vec<TestCase>,
    pub checker: CheckerSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactor: Option<InteractorSpec>,
}

impl ProjectDef {
    /// Every environment grading uses: the project's, the checker's, the interactor's.
    pub fn environments(&self) -> Vec<String> {
        let mut out = vec![self.environment.clone()];
        if let CheckerSpec::Program {
            environment: Some(e),
            ..
        } = &self.checker
        {
            out.push(e.clone());
        }
        if let Some(InteractorSpec {
            environment: Some(e),
            ..
        }) = &self.interactor
        {
            out.push(e.clone());
        }
        out.dedup();
        out
    }
}

/// A test or group name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` (it names a directory).
pub fn valid_test_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}
