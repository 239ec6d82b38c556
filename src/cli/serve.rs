//! `sandpit serve`: the HTTP execution API on the embedded store (SQLite in the data dir).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use sandbox::{Pool, PoolConfig, Sandbox, SandboxConfig};

use super::serve_args::policy;
pub use super::serve_args::ServeArgs;
use super::{fail, EXIT_FAILURE, EXIT_USAGE};
use crate::app::App;
use crate::auth;
use crate::callbacks::{self, AllowList};
use crate::config::{ConnectionLimits, ServerConfig};
use crate::env::{Catalog, EnvStore};
use crate::exec::{self, workdir::WorkDirs};
use crate::files::{FileConfig, FileStore};
use crate::judge;
use crate::server;
use crate::store::{SqliteStore, Store};
use crate::telemetry::{self, Metrics};

/// The data directory and what is in it: root's only (0700 directories, 0600 files). The
/// server creates its files so (explicit modes, not the umask: the sandboxes inherit the
/// umask, and their programs must see the usual one); this closes up what an older sandpit
/// left open, and creates the database file root's only before SQLite opens it (its WAL
/// and shared-memory files take the database's mode).
fn close_up(data: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let private = |path: &Path, mode: u32| match std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(mode),
    ) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    for dir in [
        data.to_path_buf(),
        data.join("executions"),
        data.join("tmp"),
    ] {
        private(&dir, 0o700)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(data.join("sandpit.db"))?;
    for name in [
        "sandpit.db",
        "sandpit.db-wal",
        "sandpit.db-shm",
        "master_token",
    ] {
        private(&data.join(name), 0o600)?;
    }
    Ok(())
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
    let policy = match policy(&args) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    if args.max_connections == 0 {
        return fail(EXIT_USAGE, "--max-connections must be at least 1");
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
    if let Err(e) = close_up(&data) {
        return fail(
            EXIT_FAILURE,
            format!("data directory {}: {e}", data.display()),
        );
    }
    // File descriptors for every connection the cap allows, and the rest of the server.
    let reserve = server::fds_besides_connections(slots);
    let wanted = args.max_connections as u64 + reserve;
    let got = server::raise_fd_limit(wanted);
    let mut max_connections = args.max_connections;
    if got < wanted {
        max_connections = got.saturating_sub(reserve).max(1) as usize;
        tracing::warn!(
            "open files: wanted {wanted} for {} connections, the limit is {got} (raising it needs \
             CAP_SYS_RESOURCE): serving at most {max_connections} connections",
            args.max_connections
        );
    } else {
        tracing::info!(
            "open files: limit {got} ({} connections)",
            args.max_connections
        );
    }
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
        policy,
        connections: ConnectionLimits {
            max_connections,
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
        },
        body_memory: args.body_memory,
        files: FileConfig {
            ttl: args.file_ttl,
            max_files: (args.file_max_count > 0).then_some(args.file_max_count),
            sweep_every: args.file_sweep,
        },
        callbacks,
    };
    // First, while the process is small: the engine forks its spawner, of which every
    // sandbox's init is a copy, when it starts.
    let engine = match super::start_engine(SandboxConfig {
        cgroup_parent: args.cgroup_parent,
        ..SandboxConfig::default()
    }) {
        Ok(engine) => Arc::new(engine),
        Err(e) => return fail(EXIT_FAILURE, format!("sandbox: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_FAILURE, format!("starting the runtime: {e}")),
    };
    match runtime.block_on(run(cfg, engine)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(EXIT_FAILURE, message),
    }
}

async fn run(cfg: ServerConfig, engine: Arc<Sandbox>) -> Result<(), String> {
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
        dirs: WorkDirs::new(cfg.executions_dir(), cfg.tmp_dir()),
        files: files.clone(),
        node: cfg.node.clone(),
        policy: cfg.policy,
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
    files
        .recover()
        .await
        .map_err(|e| format!("recovering kept files: {e}"))?;
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
