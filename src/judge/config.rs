//! Sphere Engine Containers' project `config.json` (version 2.1): scenarios, each a fixed
//! sequence of stages (`init`, `build`, `run`, `test`, `post`) with a command, a timeout and a
//! skip flag, and the files a submission may not change (`files.read_only`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use sandbox::RelPath;

use crate::exec::admission::LimitCaps;

/// The stages, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Init,
    Build,
    Run,
    Test,
    Post,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Init,
        Stage::Build,
        Stage::Run,
        Stage::Test,
        Stage::Post,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Init => "init",
            Stage::Build => "build",
            Stage::Run => "run",
            Stage::Test => "test",
            Stage::Post => "post",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The stage's stdout as Sphere names the stream: `stage_build_output`.
    pub fn output_stream(self) -> String {
        format!("stage_{}_output", self.as_str())
    }

    /// The stage's stderr: `stage_build_error`.
    pub fn error_stream(self) -> String {
        format!("stage_{}_error", self.as_str())
    }

    /// `BUILD`, as in Sphere's `SE_STAGE_BUILD_EXIT_CODE`.
    pub fn upper(self) -> String {
        self.as_str().to_ascii_uppercase()
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One stage of a scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// A shell command or a script path; `null` (or absent): the stage does not exist.
    #[serde(default)]
    pub command: Option<String>,
    /// Seconds the stage may take (CPU and wall).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip: bool,
    /// Where a Sphere workspace shows the stage's streams (`console`); a submission keeps
    /// every stream, so it changes nothing here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_streams_to: Option<String>,
}

/// One run configuration of a project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The scenario a submission runs when it names none.
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    /// Internet access: sandboxes have none (refused when true).
    #[serde(default, skip_serializing_if = "is_false")]
    pub network: bool,
    /// Auxiliary services (`["mysql"]`): none are offered (refused when not empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    #[serde(default)]
    pub stages: BTreeMap<Stage, StageConfig>,
    /// What a Sphere workspace shows as output; kept as given, not used by submissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// `files` of the config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Paths (relative to the workspace) a submission may not add or change.
    #[serde(default)]
    pub read_only: Vec<String>,
}

impl FilesConfig {
    fn is_empty(&self) -> bool {
        self.read_only.is_empty()
    }
}

/// A project's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SphereConfig {
    /// `2.1` (a number or a string).
    pub version: Value,
    pub scenarios: BTreeMap<String, Scenario>,
    #[serde(default, skip_serializing_if = "FilesConfig::is_empty")]
    pub files: FilesConfig,
}

/// A stage as it runs: which, its command as argv, its time.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStage {
    pub stage: Stage,
    pub argv: Vec<String>,
    pub timeout: Option<f64>,
}

/// A scenario name: what ids allow, so it can name a file too.
fn valid_scenario_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

impl SphereConfig {
    /// Checks what the file says and that sandpit can do it; the error names the key.
    pub fn check(&self) -> Result<(), String> {
        let version_ok = match &self.version {
            Value::Number(n) => n.as_f64() == Some(2.1),
            Value::String(s) => s.trim() == "2.1",
            _ => false,
        };
        if !version_ok {
            return Err(format!(
                "config.json: 'version' must be 2.1 (Sphere's project configuration), not {}",
                self.version
            ));
        }
        if self.scenarios.is_empty() {
            return Err("config.json: 'scenarios' has no scenario".into());
        }
        for (name, sc) in &self.scenarios {
            let at = format!("config.json: scenarios.{name}");
            if !valid_scenario_name(name) {
                return Err(format!(
                    "{at}: a scenario name is 1-64 letters, digits, '-', '_' or '.'"
                ));
            }
            if sc.network {
                return Err(format!(
                    "{at}.network: sandboxes have no network access; set it to false"
                ));
            }
            if !sc.services.is_empty() {
                return Err(format!(
                    "{at}.services: auxiliary services are not offered; leave it empty"
                ));
            }
            for (stage, cfg) in &sc.stages {
                if let Some(t) = cfg.timeout {
                    // A stage runs as long as an execution may (the default maxima).
                    let max = LimitCaps::default().wall_time_s;
                    if !(t > 0.0 && t <= max) {
                        return Err(format!(
                            "{at}.stages.{stage}.timeout must be more than 0 and at most {max} seconds"
                        ));
                    }
                }
                if cfg.command.as_deref().is_some_and(|c| c.trim().is_empty()) {
                    return Err(format!(
                        "{at}.stages.{stage}.command is empty (use null for no stage)"
                    ));
                }
            }
            if sc.planned().is_empty() {
                return Err(format!("{at}: no stage has a command"));
            }
        }
        let defaults = self.scenarios.values().filter(|s| s.default).count();
        if defaults > 1 {
            return Err("config.json: more than one scenario is marked default".into());
        }
        for path in &self.files.read_only {
            RelPath::parse(path).map_err(|e| format!("config.json: files.read_only: {e}"))?;
        }
        self.scenario(None)?;
        Ok(())
    }

    /// The scenario a submission runs: the one it names, else the one marked default, else
    /// one named `default`, else the only one.
    pub fn scenario(&self, asked: Option<&str>) -> Result<(&str, &Scenario), String> {
        if let Some(name) = asked {
            return self
                .scenarios
                .get_key_value(name)
                .map(|(k, v)| (k.as_str(), v))
                .ok_or_else(|| {
                    format!(
                        "the project has no scenario '{name}' (it has: {})",
                        self.scenarios
                            .keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
        }
        let found = self
            .scenarios
            .iter()
            .find(|(_, s)| s.default)
            .or_else(|| self.scenarios.get_key_value("default"))
            .or_else(|| {
                (self.scenarios.len() == 1)
                    .then(|| self.scenarios.iter().next())
                    .flatten()
            });
        found.map(|(k, v)| (k.as_str(), v)).ok_or_else(|| {
            "config.json: several scenarios and none is the default: mark one with \"default\": true"
                .to_string()
        })
    }
}

impl Scenario {
    /// The stages that run, in order: those with a command that are not skipped.
    pub fn planned(&self) -> Vec<PlannedStage> {
        Stage::ALL
            .into_iter()
            .filter_map(|stage| {
                let cfg = self.stages.get(&stage)?;
                let command = cfg.command.as_deref()?.trim();
                (!cfg.skip && !command.is_empty()).then(|| PlannedStage {
                    stage,
                    argv: argv(command),
                    timeout: cfg.timeout,
                })
            })
            .collect()
    }
}

/// A command as argv: plain words (letters, digits, `-_./:,+@%`) run directly, with no shell
/// between the program and its limits (nor a shell's start-up per test); anything else runs as
/// `/bin/sh -c COMMAND`.
pub fn argv(command: &str) -> Vec<String> {
    let plain = command.bytes().all(|c| {
        c.is_ascii_alphanumeric()
            || c == b' '
            || matches!(
                c,
                b'-' | b'_' | b'.' | b'/' | b':' | b',' | b'+' | b'@' | b'%'
            )
    });
    if plain {
        command.split_whitespace().map(str::to_string).collect()
    } else {
        vec!["/bin/sh".into(), "-c".into(), command.to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<SphereConfig, String> {
        let c: SphereConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        c.check()?;
        Ok(c)
    }

    #[test]
    fn a_sphere_config_reads_and_plans() {
        let c = config(
            r#"{"version": 2.1, "scenarios": {
                "default": {"stages": {
                    "build": {"command": "gcc -O2 -o solution main.c", "timeout": 30},
                    "run": {"command": "./solution"},
                    "test": {"command": null},
                    "post": {"command": "echo done > log", "skip": true}}},
                "fast": {"stages": {"run": {"command": "python3 main.py"}}}},
              "files": {"read_only": ["tests/", "config.json"]}}"#,
        )
        .unwrap();
        let (name, sc) = c.scenario(None).unwrap();
        assert_eq!(name, "default");
        let planned = sc.planned();
        assert_eq!(
            planned.iter().map(|p| p.stage).collect::<Vec<_>>(),
            [Stage::Build, Stage::Run]
        );
        assert_eq!(planned[0].argv, ["gcc", "-O2", "-o", "solution", "main.c"]);
        assert_eq!(planned[0].timeout, Some(30.0));
        assert_eq!(c.scenario(Some("fast")).unwrap().0, "fast");
        assert!(c.scenario(Some("slow")).unwrap_err().contains("fast"));
        assert_eq!(Stage::Build.output_stream(), "stage_build_output");
        assert_eq!(Stage::Test.error_stream(), "stage_test_error");
        // The string form of the version too.
        assert!(config(
            r#"{"version": "2.1", "scenarios": {"a": {"stages": {"run": {"command": "x"}}}}}"#
        )
        .is_ok());
    }

    #[test]
    fn what_cannot_be_done_is_refused_by_name() {
        let cases = [
            (
                r#"{"version": 2.0, "scenarios": {"a": {"stages": {"run": {"command": "x"}}}}}"#,
                "version",
            ),
            (r#"{"version": 2.1, "scenarios": {}}"#, "no scenario"),
            (
                r#"{"version": 2.1, "scenarios": {"a": {"network": true, "stages": {"run": {"command": "x"}}}}}"#,
                "network",
            ),
            (
                r#"{"version": 2.1, "scenarios": {"a": {"services": ["mysql"], "stages": {"run": {"command": "x"}}}}}"#,
                "services",
            ),
            (
                r#"{"version": 2.1, "scenarios": {"a": {"stages": {"compile": {"command": "x"}}}}}"#,
                "compile",
            ),
            (
                r#"{"version": 2.1, "scenarios": {"a": {"stages": {"run": {"command": "x", "timeout": 0}}}}}"#,
                "timeout",
            ),
            (
                r#"{"version": 2.1, "scenarios": {"a": {"stages": {"run": {"command": null}}}}}"#,
                "no stage",
            ),
            (
                r#"{"version": 2.1, "scenarios": {"a": {"stages": {"run": {"command": "x"}}}, "b": {"stages": {"run": {"command": "x"}}}}}"#,
                "default",
            ),
            (
                r#"{"version": 2.1, "scenarios": {"a": {"default": true, "stages": {"run": {"command": "x"}}}}, "files": {"read_only": ["../x"]}}"#,
                "read_only",
            ),
            (
                r#"{"version": 2.1, "scenarios": {"a": {"stages": {"run": {"command": "x"}}}}, "surprise": 1}"#,
                "surprise",
            ),
        ];
        for (text, word) in cases {
            let e = config(text).unwrap_err();
            assert!(e.contains(word), "{text}: {e}");
        }
    }

    #[test]
    fn plain_commands_run_without_a_shell() {
        assert_eq!(argv("./solution"), ["./solution"]);
        assert_eq!(argv("python3  main.py"), ["python3", "main.py"]);
        assert_eq!(
            argv("make && ./a.out > out.txt"),
            ["/bin/sh", "-c", "make && ./a.out > out.txt"]
        );
        assert_eq!(argv("echo $HOME")[0], "/bin/sh");
        assert_eq!(argv("X=1 prog")[0], "/bin/sh");
    }
}
