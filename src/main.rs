//! `sandpit`: run untrusted programs in a sandbox, from the command line or over HTTP.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match sandpit::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version on stdout with exit 0, usage errors on stderr with 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(sandpit::cli::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    sandpit::cli::init_tracing(&cli);
    sandpit::cli::dispatch(cli)
}
