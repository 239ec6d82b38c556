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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use sandbox::RelPath;

use super::config::{SphereConfig, Stage};
use crate::auth::Quota;
use crate::exec::admission::{effective_limits, LimitCaps};
use crate::exec::{Limits, RequestedLimits};
use crate::ids::valid_envid;

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

/// A project's directory and its definition.
#[derive(Debug, Clone)]
pub struct ProjectFiles {
    pub root: PathBuf,
    pub def: ProjectDef,
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

/// Orders `2` before `10`: runs of digits compare as numbers.
fn natural_key(name: &str) -> Vec<(u8, u128, String)> {
    let mut out = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            let (run, tail) = rest.split_at(digits);
            out.push((0, run.parse().unwrap_or(u128::MAX), run.to_string()));
            rest = tail;
        } else {
            let n = rest.bytes().take_while(|c| !c.is_ascii_digit()).count();
            let (run, tail) = rest.split_at(n);
            out.push((1, 0, run.to_string()));
            rest = tail;
        }
    }
    out
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{what}: {e}"))?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        if at == "." {
            format!("{what}: {}", e.inner())
        } else {
            format!("{what}: '{at}': {}", e.inner())
        }
    })
}

/// The names of the entries of a directory (none when it does not exist).
fn entries(dir: &Path) -> Result<Vec<String>, String> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        out.push(entry.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    Ok(out)
}

impl ProjectFiles {
    /// Reads and checks a project directory.
    pub fn load(root: &Path, defaults: &ManifestDefaults) -> Result<ProjectFiles, String> {
        let manifest_path = root.join(MANIFEST);
        let manifest: Manifest = if manifest_path.exists() {
            read_json(&manifest_path, MANIFEST)?
        } else {
            Manifest::default()
        };
        let config_path = root.join(CONFIG);
        let config = match (manifest.config, config_path.exists()) {
            (Some(_), true) => {
                return Err(format!(
                    "the configuration is given twice: in {MANIFEST} ('config') and as {CONFIG}"
                ))
            }
            (Some(c), false) => c,
            (None, true) => read_json(&config_path, CONFIG)?,
            (None, false) => {
                return Err(format!(
                    "no {CONFIG} (Sphere's project configuration, version 2.1) and no 'config' in {MANIFEST}"
                ))
            }
        };
        let environment = manifest
            .environment
            .or_else(|| defaults.environment.clone())
            .ok_or_else(|| format!("'environment' (an envid) is required in {MANIFEST}"))?;
        let name = manifest
            .name
            .or_else(|| defaults.name.clone())
            .or_else(|| {
                std::fs::canonicalize(root)
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            })
            .unwrap_or_else(|| "project".into());
        let found = entries(&root.join(TESTS))?;
        let tests = match manifest.tests {
            Some(tests) => {
                let listed: BTreeSet<&str> = tests.iter().map(|t| t.name.as_str()).collect();
                if let Some(extra) = found.iter().find(|f| !listed.contains(f.as_str())) {
                    return Err(format!(
                        "{TESTS}/{extra} is not one of the tests listed in {MANIFEST}"
                    ));
                }
                tests
            }
            None => {
                let mut names = found;
                names.sort_by_key(|n| natural_key(n));
                names
                    .into_iter()
                    .map(|name| TestCase {
                        name,
                        weight: 1.0,
                        group: None,
                        limits: RequestedLimits::default(),
                    })
                    .collect()
            }
        };
        let files = ProjectFiles {
            root: root.to_path_buf(),
            def: ProjectDef {
                name,
                environment,
                config,
                source: manifest.source,
                artifacts: manifest.artifacts,
                limits: manifest.limits,
                tests,
                checker: manifest.checker.unwrap_or(CheckerSpec::Tokens {}),
                interactor: manifest.interactor,
            },
        };
        files.check()?;
        Ok(files)
    }

    /// The store's copy of a project (written by [`ProjectFiles::canonicalize`]).
    pub fn open(root: &Path) -> Result<ProjectFiles, String> {
        let def: ProjectDef = read_json(&root.join(MANIFEST), MANIFEST)?;
        Ok(ProjectFiles {
            root: root.to_path_buf(),
            def,
        })
    }

    /// Writes the checked definition as `project.json` (config inline, tests listed), so that
    /// [`ProjectFiles::open`] reads exactly it.
    pub fn canonicalize(&self) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(&self.def).map_err(std::io::Error::other)?;
        std::fs::write(self.root.join(MANIFEST), text)?;
        match std::fs::remove_file(self.root.join(CONFIG)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn check(&self) -> Result<(), String> {
        let d = &self.def;
        if !valid_envid(&d.environment) {
            return Err(format!(
                "'environment': '{}' is not an envid",
                d.environment
            ));
        }
        if d.name.trim().is_empty() || d.name.len() > 200 {
            return Err("'name' must be 1-200 characters".into());
        }
        d.config.check()?;
        if let Some(source) = &d.source {
            RelPath::parse(source).map_err(|e| format!("'source': {e}"))?;
        }
        for a in &d.artifacts {
            RelPath::parse(a).map_err(|e| format!("'artifacts': {e}"))?;
        }
        if d.tests.len() > MAX_TESTS {
            return Err(format!("at most {MAX_TESTS} tests per project"));
        }
        if !d.tests.is_empty() {
            for (name, sc) in &d.config.scenarios {
                if !sc.planned().iter().any(|p| p.stage == Stage::Run) {
                    return Err(format!(
                        "scenario '{name}' has no run stage: a project with tests runs its run \
                         stage's command once per test"
                    ));
                }
            }
            let total: f64 = d.tests.iter().map(|t| t.weight).sum();
            if total <= 0.0 {
                return Err("the tests' weights add up to 0".into());
            }
        }
        let mut seen = BTreeSet::new();
        // With an interactor the checker does not run: no answer is needed.
        let builtin = !matches!(d.checker, CheckerSpec::Program { .. }) && d.interactor.is_none();
        for t in &d.tests {
            if !valid_test_name(&t.name) {
                return Err(format!(
                    "test '{}': a test name is 1-64 letters, digits, '.', '_' or '-' (not first)",
                    t.name
                ));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(format!("test '{}' is listed twice", t.name));
            }
            if !(t.weight.is_finite() && t.weight >= 0.0) {
                return Err(format!("test '{}': 'weight' must be 0 or more", t.name));
            }
            if let Some(g) = &t.group {
                if !valid_test_name(g) {
                    return Err(format!(
                        "test '{}': group '{g}' is not a usable name (letters, digits, '.', '_', '-')",
                        t.name
                    ));
                }
            }
            self.test_limits(t)
                .map_err(|e| format!("test '{}': limits: {e}", t.name))?;
            if builtin && self.test_answer(&t.name).is_none() {
                return Err(format!(
                    "test '{}' has no expected output ({TESTS}/{}/{TEST_ANSWER})",
                    t.name, t.name
                ));
            }
        }
        for part in [TESTS, CHECKER, INTERACTOR] {
            readable_by_all(&self.root.join(part), part)?;
        }
        match &d.checker {
            CheckerSpec::Floats { abs, rel } => {
                if !(abs.is_finite() && *abs >= 0.0 && rel.is_finite() && *rel >= 0.0) {
                    return Err("checker: 'abs' and 'rel' must be 0 or more".into());
                }
            }
            CheckerSpec::Program {
                command,
                environment,
                limits,
            } => self.check_helper(CHECKER, command, environment.as_deref(), limits)?,
            CheckerSpec::Exact {} | CheckerSpec::Tokens {} => {}
        }
        if let Some(i) = &d.interactor {
            self.check_helper(INTERACTOR, &i.command, i.environment.as_deref(), &i.limits)?;
            if let Some(b) = &i.build {
                if b.command.first().is_none_or(|p| p.is_empty()) {
                    return Err("interactor: build: 'command' must name a program".into());
                }
                if b.outputs.is_empty() {
                    return Err("interactor: build: 'outputs' names the files it makes".into());
                }
                for o in &b.outputs {
                    RelPath::parse(o).map_err(|e| format!("interactor: build: 'outputs': {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// A helper program (a checker, an interactor) in its directory `part`: a command, a
    /// usable environment and limits, and no file named like the test's files it is given.
    fn check_helper(
        &self,
        part: &str,
        command: &[String],
        environment: Option<&str>,
        limits: &RequestedLimits,
    ) -> Result<(), String> {
        if command.first().is_none_or(|p| p.is_empty()) {
            return Err(format!("{part}: 'command' must name a program"));
        }
        if let Some(env) = environment {
            if !valid_envid(env) {
                return Err(format!("{part}: 'environment': '{env}' is not an envid"));
            }
        }
        checker_limits(limits).map_err(|e| format!("{part}: limits: {e}"))?;
        let names = entries(&self.root.join(part))?;
        if let Some(clash) = names.iter().find(|n| CHECKER_ARGS.contains(&n.as_str())) {
            return Err(format!(
                "{part}/{clash}: its files may not be named input, output or answer (those are \
                 the test's files)"
            ));
        }
        Ok(())
    }

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

/// Checks that everything below `dir` is readable (and each directory enterable) by every
/// user: the sandbox's user reads tests and checkers through read-only binds.
fn readable_by_all(dir: &Path, shown: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    let mode = meta.permissions().mode();
    let unreadable = || {
        format!(
            "{shown} is not readable by every user (the sandbox's user reads it through a \
             read-only bind): chmod -R a+rX on the project"
        )
    };
    if meta.is_dir() {
        if mode & 0o005 != 0o005 {
            return Err(unreadable());
        }
        for name in entries(dir)? {
            readable_by_all(&dir.join(&name), &format!("{shown}/{name}"))?;
        }
    } else if meta.is_file() {
        if mode & 0o004 == 0 {
            return Err(unreadable());
        }
    } else {
        return Err(format!(
            "{shown} is not a regular file or a directory (a link?)"
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const CONFIG_TEXT: &str = r#"{"version": 2.1, "scenarios": {"default": {"stages": {
        "build": {"command": "gcc -o solution main.c"}, "run": {"command": "./solution"}}}}}"#;

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.json", CONFIG_TEXT);
        write(
            dir.path(),
            "project.json",
            r#"{"environment": "c", "source": "main.c"}"#,
        );
        for n in ["1", "2", "10"] {
            write(dir.path(), &format!("tests/{n}/input"), "1 2\n");
            write(dir.path(), &format!("tests/{n}/output"), "3\n");
        }
        dir
    }

    #[test]
    fn a_directory_loads_with_its_tests_in_natural_order() {
        let dir = project();
        let p = ProjectFiles::load(dir.path(), &ManifestDefaults::default()).unwrap();
        let names: Vec<&str> = p.def.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["1", "2", "10"]);
        assert_eq!(p.def.checker, CheckerSpec::Tokens {});
        assert_eq!(p.def.environment, "c");
        let l = p.test_limits(&p.def.tests[0]).unwrap();
        assert_eq!((l.cpu_time_s, l.wall_time_s), (2.0, 5.0));
        assert!(p.test_input("1").is_some() && p.test_answer("1").is_some());
        // The canonical form reads back as the same definition.
        p.canonicalize().unwrap();
        assert!(!dir.path().join(CONFIG).exists());
        let again = ProjectFiles::open(dir.path()).unwrap();
        assert_eq!(again.def, p.def);
    }

    #[test]
    fn listed_tests_limits_and_checkers() {
        let dir = project();
        write(
            dir.path(),
            "project.json",
            r#"{"environment": "c", "limits": {"cpu_time_s": 1},
                "tests": [{"name": "1", "group": "small"}, {"name": "2", "weight": 3,
                "limits": {"memory_bytes": 1048576}}, {"name": "10"}],
                "checker": {"type": "floats", "abs": 0.01}}"#,
        );
        let p = ProjectFiles::load(dir.path(), &ManifestDefaults::default()).unwrap();
        assert_eq!(
            p.def.checker,
            CheckerSpec::Floats {
                abs: 0.01,
                rel: 1e-6
            }
        );
        let l = p.test_limits(&p.def.tests[1]).unwrap();
        assert_eq!(
            (l.memory_bytes, l.cpu_time_s, l.wall_time_s),
            (1 << 20, 1.0, 3.0)
        );
    }

    #[test]
    fn bad_projects_are_refused_by_name() {
        let cases: &[(&str, &str, &str)] = &[
            ("project.json", r#"{"source": "main.c"}"#, "environment"),
            (
                "project.json",
                r#"{"environment": "c", "surprise": 1}"#,
                "surprise",
            ),
            (
                "project.json",
                r#"{"environment": "c", "checker": {"type": "magic"}}"#,
                "magic",
            ),
            (
                "project.json",
                r#"{"environment": "c", "checker": {"type": "tokens", "abs": 1}}"#,
                "abs",
            ),
            (
                "project.json",
                r#"{"environment": "c", "tests": [{"name": "1"}, {"name": "2"}, {"name": "10"}, {"name": "1"}]}"#,
                "twice",
            ),
            (
                "project.json",
                r#"{"environment": "c", "tests": [{"name": "1"}]}"#,
                "not one of the tests",
            ),
            (
                "project.json",
                r#"{"environment": "c", "tests": [{"name": "1"}, {"name": "2"}, {"name": "10"}, {"name": "11"}]}"#,
                "expected output",
            ),
            (
                "project.json",
                r#"{"environment": "c", "limits": {"cpu_time_s": -1}}"#,
                "cpu_time_s",
            ),
            (
                "project.json",
                r#"{"environment": "c", "artifacts": ["/etc/passwd"]}"#,
                "artifacts",
            ),
            ("project.json", r#"{"environment": "C!"}"#, "envid"),
            (
                "project.json",
                r#"{"environment": "c", "checker": {"type": "program", "command": []}}"#,
                "command",
            ),
            (
                "config.json",
                r#"{"version": 2.1, "scenarios": {"a": {"stages": {"build": {"command": "x"}}}}}"#,
                "no run stage",
            ),
            ("tests/x y/output", "", "test name"),
            ("checker/answer", "", "answer"),
            ("tests/1/secret", "", "readable"),
        ];
        for (file, text, word) in cases {
            let dir = project();
            write(dir.path(), file, text);
            if file.ends_with("secret") {
                use std::os::unix::fs::PermissionsExt;
                let p = dir.path().join(file);
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            if file.starts_with("checker/") {
                write(
                    dir.path(),
                    "project.json",
                    r#"{"environment": "c", "checker": {"type": "program", "command": ["./check"]}}"#,
                );
            }
            let e = ProjectFiles::load(dir.path(), &ManifestDefaults::default()).unwrap_err();
            assert!(e.contains(word), "{file} {text}: {e}");
        }
        // Without any configuration.
        let dir = project();
        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        let e = ProjectFiles::load(dir.path(), &ManifestDefaults::default()).unwrap_err();
        assert!(e.contains("config.json"), "{e}");
    }
}
