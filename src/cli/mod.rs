//! The command line: `sandpit run`, `sandpit env …`, `sandpit serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::logging::{self, LogFormat};

pub mod env;
pub mod run;
pub mod serve;

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
    /// Serve the HTTP execution API.
    Serve(serve::ServeArgs),
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
        Command::Serve(args) => serve::main(&cli.data, args),
    }
}

/// Prints a one-line error and returns the given exit status.
pub fn fail(status: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("sandpit: {message}");
    ExitCode::from(status)
}
