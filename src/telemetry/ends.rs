//! Every execution end, heard on the execution events: counted and timed in the metrics and
//! written as one log line (`execution ended`: id, end reason, exit, times, owner). The end
//! is in the store before it is announced, so the row gives the times around it.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use crate::exec::{Ended, Events, ExecutionResult, ProgramResult};
use crate::store::{ExecutionRow, Store};
use crate::telemetry::Metrics;

/// Seconds between two of an execution's times, when both are known.
fn seconds_between(
    from: Option<crate::clock::Micros>,
    to: Option<crate::clock::Micros>,
) -> Option<f64> {
    match (from, to) {
        (Some(a), Some(b)) if b >= a => Some((b.0 - a.0) as f64 / 1e6),
        _ => None,
    }
}

/// Listens from now on, until the events end (the server stops).
pub fn spawn(events: &Events, store: Arc<dyn Store>, metrics: Arc<Metrics>) {
    let mut ended = events.subscribe();
    tokio::spawn(async move {
        loop {
            match ended.recv().await {
                Ok(event) => {
                    let row = match &event.row {
                        Some(row) => Some(row.clone()),
                        // Announced without its row (the ends recorded at start, of
                        // what a crash left running): read it.
                        None => store
                            .get_execution(&event.id)
                            .await
                            .ok()
                            .flatten()
                            .map(Arc::new),
                    };
                    record(&metrics, &event, row.as_deref());
                }
                Err(RecvError::Lagged(n)) => {
                    metrics.ends_missed(n);
                    tracing::warn!(
                        target: "sandpit::exec",
                        missed = n,
                        "the end listener fell behind: {n} execution end(s) not counted"
                    );
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

fn record(metrics: &Metrics, event: &Ended, row: Option<&ExecutionRow>) {
    let ending = &event.ending;
    let result = ending.result.as_ref();
    let queue_wait_s = row.and_then(|r| seconds_between(r.queued_at, r.started_at));
    metrics.execution_ended(ending.reason, result, queue_wait_s);
    // One line per execution: a single program's own figures; a group's CPU summed, its wall,
    // setup and peak memory the largest program's, and no exit status (each program's is in
    // the execution object).
    let programs: Vec<&ProgramResult> = result.map(|r| r.programs().collect()).unwrap_or_default();
    let single = match result {
        Some(ExecutionResult::Program(p)) => Some(p),
        _ => None,
    };
    let ran = !programs.is_empty();
    tracing::info!(
        target: "sandpit::exec",
        execution_id = %event.id,
        end_reason = %ending.reason,
        group_programs = result.and_then(|r| r.group()).map(|g| g.programs.len()),
        exit_code = single.and_then(|r| r.exit_code),
        signal = single.and_then(|r| r.signal_name.as_deref()),
        cpu_time_s = ran.then(|| programs.iter().map(|p| p.cpu_time_s).sum::<f64>()),
        wall_time_s = programs.iter().map(|p| p.wall_time_s).reduce(f64::max),
        setup_s = programs.iter().filter_map(|p| p.setup_s).reduce(f64::max),
        peak_memory_bytes = programs.iter().map(|p| p.peak_memory_bytes).max(),
        queue_wait_s,
        total_s = row.and_then(|r| seconds_between(Some(r.created_at), r.ended_at)),
        owner = row.map(|r| r.owner.as_str()),
        environment = row.map(|r| r.environment.as_str()),
        message = ending.message.as_deref(),
        "execution ended"
    );
}
