//! One run of an execution: its request and files → a `Spec` (through the one
//! [`SpecBuilder`]) → the core's `Sandbox::run` → streams and outputs kept on disk → how it
//! ended. Blocking: called on a blocking thread, in a slot.

use std::path::PathBuf;
use std::time::Duration;

use sandbox::{Pool, RelPath, Stdin, StopHandle};

use crate::env::Catalog;
use crate::exec::request::Limits;
use crate::exec::result::ExecutionResult;
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

pub fn run(
    pool: &Pool,
    envs: &Catalog,
    dir: &WorkDir,
    row: &ExecutionRow,
    stop: StopHandle,
) -> Ending {
    let request = &row.request;
    // The lease keeps the environment from being deleted while it runs.
    let resolved = match envs.resolve(&row.environment) {
        Ok(r) => r,
        Err(e) => return Ending::internal(format!("environment '{}': {e}", row.environment)),
    };
    let files = match dir.input_files() {
        Ok(f) => f,
        Err(e) => return Ending::internal(format!("reading the input files: {e}")),
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
        .build();
    let io = match dir.live_io(stop) {
        Ok(io) => io,
        Err(e) => return Ending::internal(format!("creating the log: {e}")),
    };
    let outcome = match pool.run(&spec, io) {
        Ok(o) => o,
        Err(e) => return Ending::internal(format!("the sandbox could not run: {e}")),
    };
    drop(resolved);

    let write_errors = dir.store_streams(&outcome);
    let refused = dir.store_outputs(&request.outputs, &outcome.files);
    let message = if write_errors.is_empty() {
        outcome.message.clone()
    } else {
        Some(format!(
            "storing the streams failed: {}",
            write_errors.join("; ")
        ))
    };
    Ending {
        reason: outcome.end_reason.into(),
        message,
        result: Some(ExecutionResult::from_outcome(&outcome, refused)),
    }
}
