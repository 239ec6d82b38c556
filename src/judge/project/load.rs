//! The one loader of a project directory: `project.json` and `config.json` read, defaults
//! filled in, tests found (in natural order) or listed, and everything checked — names,
//! paths, limits, weights, the checker's and the interactor's files, and that the sandbox's
//! user can read what it is given.

use std::collections::BTreeSet;
use std::path::Path;

use sandbox::RelPath;

use super::{
    checker_limits, CheckerSpec, Manifest, ManifestDefaults, ProjectDef, ProjectFiles, TestCase,
    CHECKER, CHECKER_ARGS, CONFIG, INTERACTOR, MANIFEST, MAX_TESTS, TESTS, TEST_ANSWER,
};
use crate::exec::RequestedLimits;
use crate::ids::valid_envid;
use crate::judge::config::Stage;
use crate::judge::project::valid_test_name;

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
pub(super) fn entries(dir: &Path) -> Result<Vec<String>, String> {
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
