//! `sandpit judge PROJECT_DIR SOURCE… [--scenario NAME] [--json]`: grades a submission
//! locally, without a server, with the server's own pipeline (`crate::judge::pipeline`);
//! prints the per-test table and the score, or the grade as one JSON object (the API's
//! fields). Environments come from the data directory (`--data`).
//!
//! Exit status: 0 accepted (15), 1 graded and not accepted (11–14), 2 a bad argument or an
//! invalid project, 3 a project error (22), 125 an internal error (20).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use sandbox::{Pool, PoolConfig, RelPath, Sandbox, SandboxConfig, StopHandle};
use serde_json::Value;

use super::{fail, EXIT_FAILURE, EXIT_SANDBOX_FAILURE, EXIT_USAGE};
use crate::env::Catalog;
use crate::exec::request::InputFile;
use crate::judge::config::Stage;
use crate::judge::pipeline::{self, Done, Graded, Grading, Progress};
use crate::judge::project::{ManifestDefaults, ProjectFiles, TestCase};
use crate::judge::report::Final;
use crate::judge::verdict::{StageRecord, TestResult};
use crate::judge::workspace::SubmissionDir;
use crate::judge::{submission, view, Status};

/// Exit status for a project error (22).
const EXIT_PROJECT_ERROR: u8 = 3;

#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// The project directory: project.json, config.json (Sphere's, version 2.1), workspace/,
    /// tests/<name>/{input,output}, checker/.
    #[arg(value_name = "PROJECT_DIR")]
    pub project: PathBuf,
    /// The submission's files: FILE (a lone file goes where the project's `source` says), or
    /// FILE:NAME to put it at NAME in the workspace.
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// The scenario to run (default: the project's default one).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Print the grade as one JSON object (the API's fields) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A source argument as the file it names and where it goes.
fn source_file(arg: &str) -> Result<InputFile, String> {
    let (file, name) = if Path::new(arg).exists() {
        let name = Path::new(arg)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{arg}: not a file"))?;
        (PathBuf::from(arg), name)
    } else {
        match arg.rsplit_once(':') {
            Some((f, n)) if !f.is_empty() && !n.is_empty() => (PathBuf::from(f), n.to_string()),
            _ => return Err(format!("{arg}: no such file")),
        }
    };
    let meta = std::fs::metadata(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", file.display()));
    }
    let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(InputFile {
        path: RelPath::parse(&name).map_err(|e| format!("{arg}: {e}"))?,
        bytes,
        mode: meta.permissions().mode() & 0o777,
    })
}

/// Shows progress on stderr (unless `--json`) and keeps the stages and tests for the end.
struct Printer {
    quiet: bool,
    /// The tests have begun.
    testing: bool,
    stages: Vec<StageRecord>,
    tests: Vec<TestResult>,
}

impl Progress for Printer {
    fn stage_started(&mut self, stage: Stage) {
        if !self.quiet {
            eprintln!("sandpit: {stage} stage…");
        }
    }

    fn stage_ended(&mut self, r: &StageRecord) {
        if !self.quiet {
            eprintln!(
                "sandpit: {} stage: {} ({:.3} s)",
                r.stage,
                r.how(),
                r.wall_time
            );
        }
        self.stages.push(r.clone());
    }

    fn test_started(&mut self, _test: &TestCase, _index: usize) {
        if !self.quiet && !self.testing {
            eprintln!("sandpit: run stage, once per test…");
        }
        self.testing = true;
    }

    fn test_ended(&mut self, t: &TestResult) {
        self.tests.push(t.clone());
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Points without trailing zeros: `1`, `2.5`.
fn points(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The per-test table.
fn table(tests: &[TestResult]) -> String {
    let mut rows = vec![[
        "#".to_string(),
        "test".into(),
        "group".into(),
        "verdict".into(),
        "time".into(),
        "memory".into(),
        "score".into(),
    ]];
    for t in tests {
        let mut verdict = t.verdict.as_str().to_string();
        if let Some(kind) = t.timeout {
            verdict += &format!(
                " ({})",
                serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            );
        }
        if t.verdict == crate::judge::verdict::Verdict::RuntimeError {
            match (&t.signal_name, t.exit_code) {
                (Some(sig), _) => verdict += &format!(" ({sig})"),
                (None, Some(code)) => verdict += &format!(" (exit {code})"),
                _ => {}
            }
        }
        rows.push([
            t.index.to_string(),
            t.name.clone(),
            t.group.clone().unwrap_or_else(|| "-".into()),
            verdict,
            format!("{:.3} s", t.time),
            mib(t.memory),
            format!("{}/{}", points(t.score), points(t.weight)),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn main(data: &Path, args: JudgeArgs) -> ExitCode {
    let project = match ProjectFiles::load(&args.project, &ManifestDefaults::default()) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_USAGE, format!("{}: {e}", args.project.display())),
    };
    let scenario = match project.def.config.scenario(args.scenario.as_deref()) {
        Ok((name, _)) => name.to_string(),
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let envs = match Catalog::open(data) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                EXIT_USAGE,
                format!("environments in {}: {e}", data.display()),
            )
        }
    };
    for env in project.def.environments() {
        match envs.get(&env) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return fail(
                    EXIT_USAGE,
                    format!(
                        "the project's environment '{env}' is not in {} (see `sandpit env list`)",
                        data.display()
                    ),
                )
            }
            Err(e) => return fail(EXIT_USAGE, format!("environment '{env}': {e}")),
        }
    }
    let mut files = Vec::new();
    for arg in &args.sources {
        match source_file(arg) {
            Ok(f) => files.push(f),
            Err(e) => return fail(EXIT_USAGE, e),
        }
    }
    let tmp = std::env::temp_dir().join(format!("sandpit-judge-{}", uuid::Uuid::new_v4().simple()));
    let dir = SubmissionDir::at(tmp.clone());
    let code = run(&project, &scenario, &envs, &dir, &files, args.json);
    let _ = std::fs::remove_dir_all(&tmp);
    code
}

fn run(
    project: &ProjectFiles,
    scenario: &str,
    envs: &Catalog,
    dir: &SubmissionDir,
    files: &[InputFile],
    json: bool,
) -> ExitCode {
    if let Err(e) = dir.create(files) {
        return fail(EXIT_FAILURE, format!("{}: {e}", dir.path().display()));
    }
    if let Err(e) = submission::normalize(&project.def, dir) {
        return fail(EXIT_USAGE, e);
    }
    let engine = match Sandbox::new(SandboxConfig::default()) {
        Ok(engine) => Arc::new(engine),
        Err(e) => return fail(EXIT_SANDBOX_FAILURE, e),
    };
    // One sandbox kept ready: the tests of a submission run one after the other.
    let pool = match Pool::new(
        engine,
        PoolConfig {
            per_env: 1,
            ..PoolConfig::default()
        },
    ) {
        Ok(pool) => Arc::new(pool),
        Err(e) => return fail(EXIT_SANDBOX_FAILURE, e),
    };
    let stop = match StopHandle::new() {
        Ok(s) => s,
        Err(e) => return fail(EXIT_SANDBOX_FAILURE, e),
    };
    let g = Grading {
        pool,
        envs,
        project,
        scenario,
        dir,
        stop,
    };
    let mut printer = Printer {
        quiet: json,
        testing: false,
        stages: Vec::new(),
        tests: Vec::new(),
    };
    let grade: Final = match pipeline::grade(&g, Done::default(), &mut printer) {
        Graded::Final(f) => *f,
        Graded::Stopped => Final::internal("stopped"),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = view::grade_json(grade.status, Some(&grade), &printer.stages, &printer.tests);
        v.insert("project".into(), Value::String(project.def.name.clone()));
        v.insert("scenario".into(), Value::String(scenario.to_string()));
        let (streams, debug_log) = view::streams_json(dir);
        v.insert("streams".into(), streams);
        v.insert("debug_log".into(), debug_log);
        let _ = writeln!(out, "{}", Value::Object(v));
    } else {
        if !printer.tests.is_empty() {
            let _ = write!(out, "{}", table(&printer.tests));
        }
        if let Some(text) = &grade.report.compile_error {
            let _ = writeln!(out, "{}", text.trim_end());
        }
        if let Ok(log) = std::fs::read_to_string(dir.stream(crate::judge::workspace::DEBUG_LOG)) {
            for line in log.lines() {
                let _ = writeln!(out, "debug: {line}");
            }
        }
        let _ = writeln!(out, "status {}: {}", grade.status, grade.reason);
        match grade.score {
            Some(s) => {
                let _ = writeln!(out, "score {}", points(s));
            }
            None => {
                let _ = writeln!(out, "score -");
            }
        }
    }
    let _ = out.flush();
    ExitCode::from(match grade.status {
        Status::Ok => 0,
        Status::InternalError => EXIT_SANDBOX_FAILURE,
        Status::ProjectError => EXIT_PROJECT_ERROR,
        _ => 1,
    })
}
