//! A stage: a fresh sandbox with a copy of the workspace, Sphere's `SE_*` variables, and the
//! record of how it ended (its streams, artifacts and tests report kept).

use std::path::PathBuf;

use sandbox::{FileIn, FileSource, Io, Outcome, RelPath, Spec};

use super::{stage_limits, Grading, REPORT_IN_SANDBOX, SE_DIR, STAGE_TIMEOUT_S};
use crate::env::Resolved;
use crate::exec::result::ProgramResult;
use crate::exec::runner::overrides;
use crate::exec::EndReason;
use crate::judge::config::{PlannedStage, Stage};
use crate::judge::verdict::StageRecord;
use crate::judge::workspace::{top_level, TESTS_REPORT};
use crate::runspec::SpecBuilder;

/// The `SE_*` variables of a stage: where things are, and how the stages before it ended.
fn se_vars(g: &Grading, stage: Stage, before: &[StageRecord]) -> Vec<String> {
    let work = sandbox::DEFAULT_WORKDIR;
    let mut vars = vec![
        format!("SE_CURRENT_STAGE={stage}"),
        format!("SE_SCENARIO={}", g.scenario),
        format!("SE_PATH_WORKSPACE={work}"),
        format!("SE_PATH_FINAL_TESTS_REPORT={work}/{REPORT_IN_SANDBOX}"),
    ];
    for r in before {
        let s = r.stage.upper();
        vars.push(format!(
            "SE_PATH_STAGE_{s}_STDOUT={work}/{SE_DIR}/{}",
            r.stage.output_stream()
        ));
        vars.push(format!(
            "SE_PATH_STAGE_{s}_STDERR={work}/{SE_DIR}/{}",
            r.stage.error_stream()
        ));
        if let Some(code) = r.exit_code {
            vars.push(format!("SE_STAGE_{s}_EXIT_CODE={code}"));
        }
        if let Some(sig) = &r.signal_name {
            vars.push(format!("SE_STAGE_{s}_SIGNAL={sig}"));
        }
    }
    vars
}

/// One stage in a fresh sandbox with a copy of the workspace; keeps its streams, its
/// artifacts and the tests report it wrote.
pub(super) fn run_stage(
    g: &Grading,
    env: &Resolved,
    p: &PlannedStage,
    before: &[StageRecord],
) -> StageRecord {
    let spec = match stage_spec(g, env, p, before) {
        Ok(spec) => spec,
        Err(e) => return failed_record(p.stage, e),
    };
    let io = Io {
        stop: Some(g.stop.clone()),
        ..Io::default()
    };
    let outcome = match g.pool.run(&spec, io) {
        Ok(o) => o,
        Err(e) => return failed_record(p.stage, format!("the sandbox refused the stage: {e}")),
    };
    let mut errors = Vec::new();
    for (name, bytes) in [
        (p.stage.output_stream(), &outcome.stdout),
        (p.stage.error_stream(), &outcome.stderr),
    ] {
        if let Err(e) = g.dir.write_stream(&name, bytes) {
            errors.push(format!("{name}: {e}"));
        }
    }
    for (path, got) in &outcome.files {
        match (path.as_str(), got) {
            (REPORT_IN_SANDBOX, Ok(bytes)) => {
                if let Err(e) = g.dir.write_stream(TESTS_REPORT, bytes) {
                    errors.push(format!("{TESTS_REPORT}: {e}"));
                }
            }
            (_, Ok(bytes)) => match RelPath::parse(path) {
                Ok(rel) => {
                    if let Err(e) = g.dir.keep_artifact(&rel, bytes) {
                        errors.push(format!("artifact {path}: {e}"));
                    }
                }
                Err(e) => errors.push(format!("artifact {path}: {e}")),
            },
            // An artifact a stage did not make is fine: a later stage may.
            (_, Err(why)) if why.ends_with("no such file") => {}
            (_, Err(why)) => g
                .dir
                .debug(&format!("{} stage: artifact not kept: {why}", p.stage)),
        }
    }
    let mut record = record_of(p.stage, &outcome);
    if !errors.is_empty() {
        record.end_reason = EndReason::InternalError;
        record.message = Some(format!(
            "keeping the stage's files failed: {}",
            errors.join("; ")
        ));
    }
    record
}

fn stage_spec(
    g: &Grading,
    env: &Resolved,
    p: &PlannedStage,
    before: &[StageRecord],
) -> Result<Spec, String> {
    let mut files: Vec<FileIn> = Vec::new();
    for (name, path) in top_level(&g.dir.workspace()).map_err(|e| format!("the workspace: {e}"))? {
        if name == SE_DIR {
            continue;
        }
        files.push(FileIn {
            path: PathBuf::from(name),
            source: FileSource::Host(path),
            mode: None,
        });
    }
    files.push(FileIn {
        path: PathBuf::from(format!("{SE_DIR}/scenario")),
        source: FileSource::Bytes(g.scenario.as_bytes().to_vec()),
        mode: Some(0o644),
    });
    for r in before {
        for name in [r.stage.output_stream(), r.stage.error_stream()] {
            let host = g.dir.stream(&name);
            if host.is_file() {
                files.push(FileIn {
                    path: PathBuf::from(format!("{SE_DIR}/{name}")),
                    source: FileSource::Bind(host),
                    mode: None,
                });
            }
        }
    }
    let secs = p.timeout.unwrap_or(STAGE_TIMEOUT_S);
    let limits = stage_limits(secs);
    let mut collect: Vec<PathBuf> = g.project.def.artifacts.iter().map(PathBuf::from).collect();
    collect.push(PathBuf::from(REPORT_IN_SANDBOX));
    let mut b = SpecBuilder::new(env.rootfs.clone())
        .defaults(&env.defaults)
        .command(p.argv.clone())
        .cwd(PathBuf::from(sandbox::DEFAULT_WORKDIR))
        .limits(&overrides(&limits))
        .files(files)
        .collect(collect);
    for var in se_vars(g, p.stage, before) {
        b = b.setenv(&var);
    }
    Ok(b.build())
}

pub(super) fn record_of(stage: Stage, o: &Outcome) -> StageRecord {
    let result = ProgramResult::from_outcome(o, Default::default());
    StageRecord {
        stage,
        end_reason: o.end_reason.into(),
        exit_code: o.exit_code,
        signal_name: o.signal_name.clone(),
        timeout: result.timeout,
        time: o.cpu_time_s,
        wall_time: o.wall_time_s,
        memory: o.peak_memory_bytes,
        message: o.message.clone(),
        evidence: Some(result),
    }
}

fn failed_record(stage: Stage, message: String) -> StageRecord {
    StageRecord {
        stage,
        end_reason: EndReason::InternalError,
        exit_code: None,
        signal_name: None,
        timeout: None,
        time: 0.0,
        wall_time: 0.0,
        memory: 0,
        message: Some(message),
        evidence: None,
    }
}
