//! The command line: `sandpit run`, `sandpit env …`, `sandpit judge`, `sandpit serve`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::os::unix::process::CommandExt;

use clap::{Parser, Subcommand};
use sandbox::{Sandbox, SandboxConfig};

use crate::telemetry::logging::{self, LogFormat};

pub mod doctor;
pub mod env;
pub mod judge;
pub mod run;
mod run_spec;
pub mod serve;
mod serve_args;

/// Exit status for a bad argument.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the sandbox could not be set up (`internal-error`).
pub const EXIT_SANDBOX_FAILURE: u8 = 125;
/// Exit status for any other failure of the command itself.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "sandpit",
    version,
    about = "Run untrusted programs in a sandbox"
)]
pub struct Cli {
    /// Data directory: image store, environments, database, execution files.
    #[arg(
        long,
        global = true,
        env = "SANDPIT_DATA",
        default_value = "/var/lib/sandpit"
    )]
    pub data: PathBuf,
    /// Log lines on stderr as text or as JSON lines (`SANDPIT_LOG` sets the level).
    #[arg(
        long = "log-format",
        global = true,
        env = "SANDPIT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one program in a fresh sandbox and report how it ended.
    Run(run::RunArgs),
    /// Manage environments: import, list, show, rm.
    Env(env::EnvArgs),
    /// Grade a submission against a project locally (no server): the per-test table and
    /// the score.
    Judge(judge::JudgeArgs),
    /// Serve the HTTP execution API.
    Serve(serve::ServeArgs),
    /// Check this host for what runs need (kernel, cgroups, namespaces) and say how to fix it.
    Doctor(doctor::DoctorArgs),
}

/// Logs go to stderr; `SANDPIT_LOG` (e.g. `debug`) sets the level. The server writes a line
/// per request and per execution end (info); the other commands only warnings.
pub fn init_tracing(cli: &Cli) {
    let default_filter = match cli.command {
        Command::Serve(_) => "warn,sandpit=info",
        _ => "warn",
    };
    logging::init(cli.log_format, default_filter);
}

pub fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => run::main(&cli.data, args),
        Command::Env(args) => env::main(&cli.data, args),
        Command::Judge(args) => judge::main(&cli.data, args),
        Command::Serve(args) => serve::main(&cli.data, args),
        Command::Doctor(args) => doctor::main(args),
    }
}

/// Why a data directory that should hold environments cannot be used: it does not exist.
pub fn missing_data_dir(data: &Path) -> String {
    format!(
        "the data directory {} does not exist (`make install` creates /var/lib/sandpit and \
         imports the shipped environments; --data DIR or SANDPIT_DATA=DIR chooses another)",
        data.display()
    )
}

/// Prints a one-line error and returns the given exit status.
pub fn fail(status: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("sandpit: {message}");
    ExitCode::from(status)
}

/// Set in the environment of a sandpit re-executed in a transient systemd scope.
const IN_SCOPE_ENV: &str = "SANDPIT_SYSTEMD_SCOPE";

/// Starts the engine. Started where no controllers are delegated to it (a login shell, a
/// script in a unit without `Delegate=yes`) on a host that runs systemd, sandpit re-executes
/// itself, same pid and terminal, in a transient scope with `Delegate=yes` through
/// `systemd-run --scope` (systemd's own client of the StartTransientUnit call that runc's and
/// crun's systemd drivers make over D-Bus), and starts there. Returns only on failure to do so.
pub fn start_engine(config: SandboxConfig) -> Result<Sandbox, sandbox::Error> {
    let refusal = match Sandbox::new(config.clone()) {
        Err(sandbox::Error::NotDelegated(m)) => m,
        other => return other,
    };
    let systemd = std::path::Path::new("/run/systemd/system").is_dir();
    if config.cgroup_parent.is_some() || !systemd || std::env::var_os(IN_SCOPE_ENV).is_some() {
        return Err(sandbox::Error::NotDelegated(refusal));
    }
    let Ok(exe) = std::env::current_exe() else {
        return Err(sandbox::Error::NotDelegated(refusal));
    };
    let err = std::process::Command::new("systemd-run")
        .args([
            "--scope",
            "--quiet",
            "--collect",
            "--property=Delegate=yes",
            "--",
        ])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(IN_SCOPE_ENV, "1")
        .exec();
    Err(sandbox::Error::NotDelegated(format!(
        "{refusal} (starting a delegated systemd scope failed: {err})"
    )))
}
