//! `sandpit serve`'s flags, and the admission policy they make.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::exec::admission::{LimitCaps, Policy, Quotas};
use crate::units::{parse_duration, parse_size};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Runs at once (default: the number of cores); the rest wait as `queued`.
    #[arg(long)]
    pub slots: Option<usize>,
    /// Sandboxes kept prepared ahead per environment in use (0: each run sets its own up).
    #[arg(long, default_value_t = 2)]
    pub prepared: usize,
    /// The store: `sqlite` (a file in the data directory).
    #[arg(long, default_value = "sqlite")]
    pub store: String,
    /// Largest request body (JSON, form, multipart, input upload).
    #[arg(long = "max-body", default_value = "64M", value_parser = parse_size)]
    pub max_body: u64,
    /// Largest environment upload (an OCI archive).
    #[arg(long = "max-upload", default_value = "4G", value_parser = parse_size)]
    pub max_upload: u64,
    /// Also serve a plain root file system directory as environment ENVID.
    #[arg(long = "rootfs-env", value_name = "ENVID=DIR")]
    pub rootfs_env: Vec<String>,
    /// Memory all request bodies read whole may take together.
    #[arg(long = "body-memory", default_value = "256M", value_parser = parse_size)]
    pub body_memory: u64,
    /// Connections at once; one more is answered 503 and closed.
    #[arg(long = "max-connections", default_value_t = 1024)]
    pub max_connections: usize,
    /// Time a request head may take to arrive (also how long an idle connection stays).
    #[arg(long = "header-read-timeout", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: std::time::Duration,
    /// Time a request body may stall, or a client may leave a response unread.
    #[arg(long = "idle-timeout", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// Most memory an execution may have (keys may allow less).
    #[arg(long = "max-memory", default_value = "4G", value_parser = parse_size)]
    pub max_memory: u64,
    /// Most CPU time an execution may have.
    #[arg(long = "max-cpu-time", default_value = "3600s", value_parser = parse_duration)]
    pub max_cpu_time: std::time::Duration,
    /// Most wall time an execution may have.
    #[arg(long = "max-wall-time", default_value = "3600s", value_parser = parse_duration)]
    pub max_wall_time: std::time::Duration,
    /// Most processes an execution may have at once (never more than the host's pid_max).
    #[arg(long = "max-pids", default_value_t = 1024)]
    pub max_pids: u64,
    /// Most output an execution may keep, per stream and per output file (held in memory
    /// during the run).
    #[arg(long = "max-output", default_value = "64M", value_parser = parse_size)]
    pub max_output: u64,
    /// Pending executions a key may have (keys may allow fewer).
    #[arg(long = "max-pending", default_value_t = 64)]
    pub max_pending: u64,
    /// Input files an execution may hold.
    #[arg(long = "max-files", default_value_t = 1000)]
    pub max_files: u64,
    /// Bytes a key may keep on disk, its executions and its kept files together (keys may
    /// allow fewer).
    #[arg(long = "max-storage", default_value = "1G", value_parser = parse_size)]
    pub max_storage: u64,
    /// How long a kept file lives (executions' `keep`), e.g. 24h, 7d, 30m.
    #[arg(long = "file-ttl", default_value = "24h", value_parser = parse_duration)]
    pub file_ttl: Duration,
    /// Most files an API key keeps at once (0: no limit). Their bytes count against
    /// --max-storage.
    #[arg(long = "file-max-count", default_value_t = 1000)]
    pub file_max_count: u64,
    /// How often expired files and unused blobs are removed.
    #[arg(long = "file-sweep", default_value = "60s", value_parser = parse_duration)]
    pub file_sweep: Duration,
    /// Allow completion callbacks to HOST (a name, `*.domain`, `*`, an address or a
    /// network, e.g. 10.0.0.0/8 or [fd00::/8]) on PORT (a number or `*`; default 80).
    /// Repeatable; without it no callback is accepted.
    #[arg(long = "callback-allow", value_name = "HOST[:PORT]")]
    pub callback_allow: Vec<String>,
    /// Attempts per callback before it is given up.
    #[arg(long = "callback-attempts", default_value_t = 15)]
    pub callback_attempts: u32,
    /// Wait before a callback's first retry; doubled after each failure.
    #[arg(long = "callback-backoff", default_value = "2s", value_parser = parse_duration)]
    pub callback_backoff: Duration,
    /// Longest wait between two attempts.
    #[arg(long = "callback-backoff-max", default_value = "1h", value_parser = parse_duration)]
    pub callback_backoff_max: Duration,
    /// Longest attempt, from resolving the host to the answer's status line.
    #[arg(long = "callback-timeout", default_value = "10s", value_parser = parse_duration)]
    pub callback_timeout: Duration,
    /// cgroup (relative to the cgroup root) under which run cgroups go; default: sandpit's own.
    #[arg(
        long = "cgroup-parent",
        value_name = "CGROUP",
        env = "SANDPIT_CGROUP_PARENT"
    )]
    pub cgroup_parent: Option<PathBuf>,
}

/// The host's pid_max: no pids limit above it means anything.
fn pid_max() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The admission policy from the flags; the pids maximum held below the host's pid_max.
pub(super) fn policy(args: &ServeArgs) -> Result<Policy, String> {
    let secs = |d: std::time::Duration, flag: &str| {
        let s = d.as_secs_f64();
        if s > 0.0 {
            Ok(s)
        } else {
            Err(format!("{flag} must be more than 0"))
        }
    };
    let mut pids = args.max_pids;
    if let Some(host) = pid_max() {
        if pids >= host {
            pids = host - 1;
            tracing::warn!(
                "--max-pids {} is not below this host's pid_max ({host}): using {pids}",
                args.max_pids
            );
        }
    }
    for (flag, v) in [
        ("--max-memory", args.max_memory),
        ("--max-pids", pids),
        ("--max-output", args.max_output),
        ("--max-pending", args.max_pending),
        ("--max-files", args.max_files),
        ("--max-storage", args.max_storage),
    ] {
        if v == 0 || i64::try_from(v).is_err() {
            return Err(format!("{flag} must be from 1 to 2^63-1"));
        }
    }
    Ok(Policy {
        caps: LimitCaps {
            memory_bytes: args.max_memory,
            cpu_time_s: secs(args.max_cpu_time, "--max-cpu-time")?,
            wall_time_s: secs(args.max_wall_time, "--max-wall-time")?,
            pids,
            output_bytes: args.max_output,
        },
        quotas: Quotas {
            max_pending: args.max_pending,
            max_files: args.max_files,
            max_storage_bytes: args.max_storage,
        },
    })
}
