//! One run of an execution: its request and files → a `Spec` (through the one
//! [`SpecBuilder`]) → the core's `Sandbox::run` → streams and outputs kept on disk → how it
//! ended. Blocking: called on a blocking thread, in a slot.

use std::path::PathBuf;
use std::time::Duration;

use sandbox::{Pool, RelPath, Stdin, StopHandle};

use crate::env::Catalog;
use crate::exec::events::OutputProgress;
use crate::exec::request::Limits;
use crate::exec::result::{ending_of, nameless_program};
use crate::exec::state::Ending;
use crate::exec::workdir::WorkDir;
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

/// Runs it; its output is announced on `progress` as it is written.
pub fn run(
    pool: &Pool,
    envs: &Catalog,
    dir: &WorkDir,
    row: &ExecutionRow,
    stop: StopHandle,
    progress: OutputProgress,
) -> Ending {
    let request = &row.request;
    let id = &row.id;
    if request.command.first().is_some_and(String::is_empty) {
        return nameless_program();
    }
    // The lease keeps the environment from being deleted while it runs.
    let resolved = match envs.resolve(&row.environment) {
        Ok(r) => r,
        Err(e) => return Ending::failed(id, format!("environment '{}': {e}", row.environment)),
    };
    let files = match dir.input_files() {
        Ok(f) => f,
        Err(e) => return Ending::failed(id, format!("reading the input files: {e}")),
    };
    let stdin = dir.stdin_file().map_or(Stdin::Null, Stdin::File);
    let collect: Vec<PathBuf> = request
        .outputs
        .iter()
        .filter_map(|o| RelPath::parse(o).ok())
        .map(RelPath::into_path_buf)
        .collect();
    let spec = SpecBuilder::new(resolved.rootfs.clone())
        .defaults(&resolved.defaults)
        .command(request.command.clone())
        .limits(&overrides(&request.limits))
        .files(files)
        .stdin(stdin)
        .collect(collect)
        // Each output is read into memory: at most the output limit each.
        .collect_max_bytes(request.limits.output_bytes)
        .build();
    let io = match dir.live_io(stop, progress) {
        Ok(io) => io,
        Err(e) => return Ending::failed(id, format!("creating the log: {e}")),
    };
    let outcome = match pool.run(&spec, io) {
        Ok(o) => o,
        Err(e) => return Ending::failed(id, format!("the sandbox could not run: {e}")),
    };
    drop(resolved);

    let write_errors = dir.store_streams(&outcome);
    let refused = dir.store_outputs(&request.outputs, &outcome.files);
    let program = request.command.first().map_or("", String::as_str);
    let mut ending = ending_of(id, program, &outcome, refused);
    if !write_errors.is_empty() {
        tracing::error!(
            "execution {id}: storing the streams: {}",
            write_errors.join("; ")
        );
        ending.message =
            Some("the server could not keep the program's output; its log says why".into());
    }
    ending
}
