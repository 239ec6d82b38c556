//! `sandpit serve`: the HTTP execution API on the embedded store (SQLite in the data dir).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use sandbox::{Pool, PoolConfig, SandboxConfig};

use super::{fail, EXIT_FAILURE, EXIT_USAGE};
use crate::app::App;
use crate::auth;
use crate::callbacks::{self, AllowList};
use crate::config::ServerConfig;
use crate::env::{Catalog, EnvStore};
use crate::exec::{self, workdir::WorkDirs};
use crate::files::{FileConfig, FileStore};
use crate::judge;
use crate::server;
use crate::store::{SqliteStore, Store};
use crate::telemetry::{self, Metrics};
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
    /// How long a kept file lives (executions' `keep`), e.g. 24h, 7d, 30m.
    #[arg(long = "file-ttl", default_value = "24h", value_parser = parse_duration)]
    pub file_ttl: Duration,
    /// Most files an API key keeps at once (0: no limit).
    #[arg(long = "file-max-count", default_value_t = 1000)]
    pub file_max_count: u64,
    /// Most bytes of files an API key keeps at once (0: no limit).
    #[arg(long = "file-max-bytes", default_value = "1G", value_parser = parse_size)]
    pub file_max_bytes: u64,
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

pub fn main(data: &Path, args: ServeArgs) -> ExitCode {
    if args.store != "sqlite" {
        return fail(
            EXIT_USAGE,
            format!(
                "--store {}: only the embedded 'sqlite' store is available in this build",
                args.store
            ),
        );
    }
    let mut dir_envs = Vec::new();
    for pair in &args.rootfs_env {
        let Some((id, dir)) = pair.split_once('=') else {
            return fail(
                EXIT_USAGE,
                format!("--rootfs-env '{pair}': expected ENVID=DIR"),
            );
        };
        let dir = PathBuf::from(dir);
        if id.is_empty() || !dir.is_dir() {
            return fail(
                EXIT_USAGE,
                format!(
                    "--rootfs-env '{pair}': {} is not a directory",
                    dir.display()
                ),
            );
        }
        dir_envs.push((id.to_string(), dir));
    }
    let slots = args
        .slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if slots == 0 {
        return fail(EXIT_USAGE, "--slots must be at least 1");
    }
    if args.file_sweep.is_zero() {
        return fail(EXIT_USAGE, "--file-sweep must be more than 0");
    }
    if let Err(e) = std::fs::create_dir_all(data.join("executions")) {
        return fail(
            EXIT_FAILURE,
            format!("data directory {}: {e}", data.display()),
        );
    }
    // Absolute, so that every path handed to the core (layers, inputs) is.
    let data = match std::fs::canonicalize(data) {
        Ok(d) => d,
        Err(e) => {
            return fail(
                EXIT_FAILURE,
                format!("data directory {}: {e}", data.display()),
            )
        }
    };
    let allow = match AllowList::parse(&args.callback_allow) {
        Ok(a) => a,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    if args.callback_attempts == 0 {
        return fail(EXIT_USAGE, "--callback-attempts must be at least 1");
    }
    if args.callback_timeout.is_zero() {
        return fail(EXIT_USAGE, "--callback-timeout must be more than 0");
    }
    let callbacks = callbacks::Settings {
        allow,
        max_attempts: args.callback_attempts,
        backoff_first: args.callback_backoff,
        backoff_max: args.callback_backoff_max.max(args.callback_backoff),
        timeout: args.callback_timeout,
        ..callbacks::Settings::default()
    };
    let cfg = ServerConfig {
        listen: args.listen,
        data,
        slots,
        prepared: args.prepared,
        max_body: args.max_body,
        max_upload: args.max_upload,
        dir_envs,
        node: "local".into(),
        files: FileConfig {
            ttl: args.file_ttl,
            max_files: (args.file_max_count > 0).then_some(args.file_max_count),
            max_bytes: (args.file_max_bytes > 0).then_some(args.file_max_bytes),
            sweep_every: args.file_sweep,
        },
        callbacks,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_FAILURE, format!("starting the runtime: {e}")),
    };
    let engine_config = SandboxConfig {
        cgroup_parent: args.cgroup_parent,
        ..SandboxConfig::default()
    };
    match runtime.block_on(run(cfg, engine_config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(EXIT_FAILURE, message),
    }
}

async fn run(cfg: ServerConfig, engine_config: SandboxConfig) -> Result<(), String> {
    let data = cfg.data.clone();
    let (master_token, created) = auth::master_token(&data)
        .map_err(|e| format!("master token in {}: {e}", data.display()))?;
    if let Some(path) = created {
        // Printed once: later starts read it from the file.
        println!("sandpit: master token created: {master_token}");
        println!("sandpit: it is saved in {} (mode 0600)", path.display());
    }
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&data.join("sandpit.db"))
            .await
            .map_err(|e| e.to_string())?,
    );
    let envs = EnvStore::open(&data).map_err(|e| format!("environments: {e}"))?;
    let engine = Arc::new(super::start_engine(engine_config).map_err(|e| format!("sandbox: {e}"))?);
    // What a crash left behind: sandboxes first, then the rows that said they were running.
    let cleaner = engine.clone();
    let cleaned = tokio::task::spawn_blocking(move || cleaner.cleanup_stale())
        .await
        .unwrap_or(0);
    if cleaned > 0 {
        tracing::warn!("removed {cleaned} sandbox(es) left by an earlier run of the server");
    }
    let _ = tokio::fs::remove_dir_all(data.join("tmp")).await;

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let envs = Arc::new(Catalog::new(envs, cfg.dir_envs.clone()));
    // One warm pool for executions and grading alike.
    let pool = Arc::new(
        Pool::new(
            engine.clone(),
            PoolConfig {
                per_env: cfg.prepared,
                ..PoolConfig::default()
            },
        )
        .map_err(|e| format!("sandbox: {e}"))?,
    );
    let files = Arc::new(
        FileStore::open(cfg.files_dir(), store.clone(), cfg.files)
            .map_err(|e| format!("file store {}: {e}", cfg.files_dir().display()))?,
    );
    let exec = Arc::new(exec::Service::new(exec::Parts {
        store: store.clone(),
        envs: envs.clone(),
        pool: pool.clone(),
        slots: cfg.slots,
        dirs: WorkDirs::new(cfg.executions_dir()),
        files: files.clone(),
        node: cfg.node.clone(),
    }));
    let recovered = exec
        .recover()
        .await
        .map_err(|e| format!("recovering executions: {e}"))?;
    if recovered > 0 {
        tracing::warn!("{recovered} execution(s) were running when the server stopped: ended as internal-error");
    }
    let metrics = Arc::new(Metrics::new());
    // Listening before the dispatcher starts, so no run's end goes uncounted (what a crash
    // left running was ended above, and said so).
    telemetry::ends::spawn(exec.events(), store.clone(), metrics.clone());
    let judge = Arc::new(judge::Service::new(judge::service::Parts {
        store: store.clone(),
        envs: envs.clone(),
        pool: pool.clone(),
        sched: exec.scheduler().sharing_slots(),
        submissions_dir: cfg.submissions_dir(),
        projects_dir: cfg.projects_dir(),
        node: cfg.node.clone(),
        max_upload: cfg.max_upload,
    }));
    let (resumed, abandoned) = judge
        .recover()
        .await
        .map_err(|e| format!("recovering submissions: {e}"))?;
    if resumed + abandoned > 0 {
        tracing::warn!("{resumed} submission(s) were being graded when the server stopped: they resume; {abandoned} stopped it too often and ended as internal error");
    }
    // Callbacks hear every end from now on, then catch up with what the store holds (ends
    // nobody heard, attempts a crash cut short), then deliver.
    let callbacks = Arc::new(callbacks::Service::new(
        store.clone(),
        cfg.callbacks.clone(),
        Arc::new(server::views::FinalObjects {
            exec: exec.clone(),
            judge: judge.clone(),
        }),
        cfg.node.clone(),
        metrics.clone(),
    ));
    callbacks.listen(exec.events());
    callbacks.listen_submissions(judge.events());
    let interrupted = callbacks
        .recover()
        .await
        .map_err(|e| format!("recovering callbacks: {e}"))?;
    if interrupted > 0 {
        tracing::warn!(
            "{interrupted} callback attempt(s) were cut short when the server stopped: due again"
        );
    }
    callbacks.spawn_worker();
    // Work queued before a restart runs now.
    exec.spawn_dispatcher();
    files.spawn_sweeper();
    judge.spawn_dispatcher();
    let app = Arc::new(App {
        cfg,
        store,
        envs,
        exec,
        files,
        judge,
        callbacks,
        master_token,
        metrics,
    });
    println!(
        "sandpit: listening on http://{addr} ({} slots, data in {})",
        app.exec.slots(),
        data.display()
    );
    let _ = std::io::stdout().flush();
    tokio::select! {
        r = server::serve(app, listener) => r.map_err(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate() => Ok(()),
    }
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
