//! One run of an execution: its request and files → one `Spec` per program (through the one
//! [`SpecBuilder`], [`program_spec`]) → the core's `Pool::run`, or `Sandbox::run_group` for
//! a group ([`core_group`]) → streams, outputs and captured pipes kept on disk → how it ended,
//! and what to keep in the file store. Blocking: called on a blocking thread, in a slot.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use sandbox::{EnvSpec, FileIn, FileSource, Outcome, Pool, RelPath, Spec, Stdin, StopHandle};

use crate::env::{Catalog, Resolved};
use crate::exec::events::OutputProgress;
use crate::exec::request::{GroupRequest, Limits, ProgramRequest};
use crate::exec::result::{
    nameless_program, program_end, ExecutionResult, GroupResult, PipeResult, ProgramEnd,
};
use crate::exec::state::{EndReason, Ending};
use crate::exec::workdir::{collected_file, ProgramDir, WorkDir};
use crate::files::{FileStore, KeepItem};
use crate::runspec::{LimitOverrides, SpecBuilder};
use crate::store::ExecutionRow;

fn seconds(s: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(s).ok()
}

/// The request's limits as overrides of the environment's.
pub fn overrides(l: &Limits) -> LimitOverrides {
    LimitOverrides {
        memory_bytes: Some(l.memory_bytes),
        cpu_time: seconds(l.cpu_time_s),
        wall_time: seconds(l.wall_time_s),
        pids: Some(l.pids),
        output_bytes: Some(l.output_bytes),
        ..LimitOverrides::default()
    }
}

/// The paths to read back after the run: the outputs, then the files to keep.
fn collect_paths(outputs: &[String], keep: &[String]) -> Vec<PathBuf> {
    let mut paths: Vec<RelPath> = Vec::new();
    for p in outputs.iter().chain(keep) {
        if let Ok(rel) = RelPath::parse(p) {
            if !paths.contains(&rel) {
                paths.push(rel);
            }
        }
    }
    paths.into_iter().map(RelPath::into_path_buf).collect()
}

/// One program's spec, the one way every face builds it: the environment's defaults, then
/// the program's command, limits, files, stdin and the paths to read back.
pub fn program_spec(
    env: &Resolved,
    command: &[String],
    limits: &Limits,
    files: Vec<FileIn>,
    stdin: Stdin,
    outputs: &[String],
    keep: &[String],
) -> Spec {
    SpecBuilder::new(env.rootfs.clone())
        .defaults(&env.defaults)
        .command(command.to_vec())
        .limits(&overrides(limits))
        .files(files)
        .stdin(stdin)
        .collect(collect_paths(outputs, keep))
        // Each is read into memory: at most the output limit each.
        .collect_max_bytes(limits.output_bytes)
        .build()
}

/// A program ready to run: its spec, and the lease that keeps its environment.
struct Ready {
    spec: Spec,
    _env: Resolved,
}

fn ready(
    envs: &Catalog,
    files: &FileStore,
    execution_env: &str,
    dir: &ProgramDir,
    p: &ProgramRequest,
) -> Result<Ready, String> {
    let envid = p.environment(execution_env);
    // The lease keeps the environment from being deleted while it runs.
    let env = envs
        .resolve(envid)
        .map_err(|e| format!("environment '{envid}': {e}"))?;
    let mut inputs = dir
        .input_files()
        .map_err(|e| format!("reading the input files: {e}"))?;
    inputs.extend(p.file_refs.iter().map(|r| FileIn {
        path: PathBuf::from(&r.path),
        source: FileSource::Bind(files.blob_path(&r.sha256, r.executable)),
        mode: None,
    }));
    let stdin = dir.stdin_file().map_or(Stdin::Null, Stdin::File);
    let spec = program_spec(
        &env, &p.command, &p.limits, inputs, stdin, &p.outputs, &p.keep,
    );
    Ok(Ready { spec, _env: env })
}

/// What a run leaves for the service: how it ended, and per program the files to keep.
pub struct RunEnd {
    pub ending: Ending,
    /// (program index, files to keep).
    pub keep: Vec<(usize, Vec<KeepItem>)>,
    /// What the warm pool shelves a single program's sandboxes under (groups run fresh).
    pub pooled: Option<EnvSpec>,
}

impl RunEnd {
    /// The engine or the sandbox failed: the detail goes to the server's log only.
    fn failed(id: &str, detail: String) -> RunEnd {
        RunEnd {
            ending: Ending::failed(id, detail),
            keep: Vec::new(),
            pooled: None,
        }
    }
}

/// The files a program asked to keep, as its run left them.
pub fn keep_items(
    keep: &[String],
    collected: &BTreeMap<String, Result<Vec<u8>, String>>,
) -> Vec<KeepItem> {
    keep.iter()
        .map(|path| KeepItem {
            path: path.clone(),
            bytes: RelPath::parse(path)
                .map_err(|e| e.to_string())
                .and_then(|rel| collected_file(collected, &rel).map(<[u8]>::to_vec)),
        })
        .collect()
}

/// Keeps a program's streams and outputs on disk; how it ended (a program that could not be
/// started ends as a shell says: 127/126, see `result.rs`), and a failure to store says so.
fn store_program(id: &str, dir: &ProgramDir, p: &ProgramRequest, o: &Outcome) -> ProgramEnd {
    let write_errors = dir.store_streams(o);
    let refused = dir.store_outputs(&p.outputs, &o.files);
    let program = p.command.first().map_or("", String::as_str);
    let mut end = program_end(id, program, o, refused);
    if !write_errors.is_empty() {
        tracing::error!(
            "execution {id}: storing the streams: {}",
            write_errors.join("; ")
        );
        end.message =
            Some("the server could not keep the program's output; its log says why".into());
    }
    end
}

/// Runs it; its output is announced on `progress` as it is written.
pub fn run(
    pool: &Pool,
    envs: &Catalog,
    files: &FileStore,
    dir: &WorkDir,
    row: &ExecutionRow,
    stop: StopHandle,
    progress: OutputProgress,
) -> RunEnd {
    let id = &row.id;
    let programs = row.request.programs();
    let group = row.request.is_group();
    if !group
        && programs
            .first()
            .and_then(|p| p.command.first())
            .is_some_and(String::is_empty)
    {
        return RunEnd {
            ending: nameless_program(),
            keep: Vec::new(),
            pooled: None,
        };
    }
    let mut ready_programs = Vec::with_capacity(programs.len());
    for (i, p) in programs.iter().enumerate() {
        match ready(envs, files, &row.environment, &dir.program(group, i), p) {
            Ok(r) => ready_programs.push(r),
            Err(e) if group => return RunEnd::failed(id, format!("programs[{i}]: {e}")),
            Err(e) => return RunEnd::failed(id, e),
        }
    }
    let mut ios = match dir.live_ios(programs.len(), &stop, progress) {
        Ok(ios) => ios,
        Err(e) => return RunEnd::failed(id, format!("creating the log: {e}")),
    };
    if let Some(g) = row.request.group() {
        let specs = ready_programs.iter().map(|r| r.spec.clone()).collect();
        let outcome = match pool.engine().run_group(&core_group(g, specs), ios) {
            Ok(o) => o,
            Err(e) => return RunEnd::failed(id, format!("the sandbox could not run: {e}")),
        };
        drop(ready_programs);
        return group_end(id, dir, g, &outcome, stop.requested());
    }
    let (Some(p), Some(r), Some(io)) = (programs.first(), ready_programs.first(), ios.pop()) else {
        return RunEnd::failed(id, "an execution without a program".into());
    };
    let pooled = r.spec.env_spec();
    let outcome = match pool.run(&r.spec, io) {
        Ok(o) => o,
        Err(e) => return RunEnd::failed(id, format!("the sandbox could not run: {e}")),
    };
    drop(ready_programs);
    let end = store_program(id, &dir.program(false, 0), p, &outcome);
    RunEnd {
        ending: Ending {
            reason: end.end_reason,
            message: end.message,
            result: end.result.map(ExecutionResult::Program),
        },
        keep: vec![(0, keep_items(&p.keep, &outcome.files))],
        pooled: Some(pooled),
    }
}

/// The core's group for a request's group and its programs' specs.
pub fn core_group(g: &GroupRequest, programs: Vec<Spec>) -> sandbox::Group {
    sandbox::Group {
        programs,
        pipes: g
            .pipes
            .iter()
            .map(|p| sandbox::Pipe {
                from: sandbox::PipeEnd {
                    program: p.from.program,
                    fd: p.from.fd,
                },
                to: sandbox::PipeEnd {
                    program: p.to.program,
                    fd: p.to.fd,
                },
                capture_bytes: p.capture_bytes,
            })
            .collect(),
        wall_time: seconds(g.wall_time_s),
        ends_with: g.ends_with.clone(),
    }
}

/// How a group ended, as a whole, by the core's own verdicts (`sandpit run --spec`):
/// `internal-error` when the engine failed for a program, `stopped` when it was stopped,
/// `timeout` when its wall limit ended it, else `normal` (each program's own end is in its
/// outcome).
pub fn group_ending(outcome: &sandbox::GroupOutcome, stopped: bool) -> (EndReason, Option<String>) {
    let failed = outcome
        .programs
        .iter()
        .enumerate()
        .find(|(_, o)| o.end_reason == sandbox::EndReason::InternalError)
        .map(|(i, o)| (i, o.message.as_deref()));
    group_reason(failed, outcome, stopped)
}

/// The same by the server's verdicts ([`ProgramEnd`]): a program that could not be started
/// is no failure of the group (it ended 127/126), and a failure says only that.
fn group_ending_of(
    programs: &[ProgramEnd],
    outcome: &sandbox::GroupOutcome,
    stopped: bool,
) -> (EndReason, Option<String>) {
    let failed = programs
        .iter()
        .enumerate()
        .find(|(_, p)| p.end_reason == EndReason::InternalError)
        .map(|(i, p)| (i, p.message.as_deref()));
    group_reason(failed, outcome, stopped)
}

fn group_reason(
    failed: Option<(usize, Option<&str>)>,
    outcome: &sandbox::GroupOutcome,
    stopped: bool,
) -> (EndReason, Option<String>) {
    if let Some((i, why)) = failed {
        let why = why.unwrap_or("the sandbox failed");
        (
            EndReason::InternalError,
            Some(format!("programs[{i}]: {why}")),
        )
    } else if stopped {
        (EndReason::Stopped, Some("stopped on request".into()))
    } else if outcome.group_timeout {
        (
            EndReason::Timeout,
            Some("the group's wall time limit reached".into()),
        )
    } else {
        (EndReason::Normal, None)
    }
}

fn group_end(
    id: &str,
    dir: &WorkDir,
    g: &GroupRequest,
    outcome: &sandbox::GroupOutcome,
    stopped: bool,
) -> RunEnd {
    let mut programs = Vec::with_capacity(g.programs.len());
    let mut keep = Vec::new();
    for (i, (p, o)) in g.programs.iter().zip(&outcome.programs).enumerate() {
        programs.push(store_program(id, &dir.program(true, i), p, o));
        keep.push((i, keep_items(&p.keep, &o.files)));
    }
    let mut errors = Vec::new();
    let pipes = outcome
        .pipes
        .iter()
        .enumerate()
        .map(|(n, c)| {
            c.as_ref().map(|c| {
                if let Err(e) = dir.store_pipe(n, &c.data) {
                    errors.push(format!("pipe {n}: {e}"));
                }
                PipeResult {
                    bytes: c.bytes,
                    truncated: c.truncated,
                }
            })
        })
        .collect();
    let (reason, mut message) = group_ending_of(&programs, outcome, stopped);
    if !errors.is_empty() {
        tracing::error!("execution {id}: storing the pipes: {}", errors.join("; "));
        message = Some("the server could not keep the pipes' traffic; its log says why".into());
    }
    RunEnd {
        ending: Ending {
            reason,
            message,
            result: Some(ExecutionResult::Group(GroupResult {
                programs,
                first_ended: outcome.first_ended,
                group_timeout: outcome.group_timeout,
                pipes,
            })),
        },
        keep,
        pooled: None,
    }
}

/// Where the core's `Spec` reads its input files from, for a face that has them in memory
/// (`sandpit run --spec`).
pub fn bytes_inputs(files: &[crate::exec::InputFile]) -> Vec<FileIn> {
    files
        .iter()
        .map(|f| FileIn {
            path: f.path.as_path().to_path_buf(),
            source: FileSource::Bytes(f.bytes.clone()),
            mode: Some(f.mode),
        })
        .collect()
}
