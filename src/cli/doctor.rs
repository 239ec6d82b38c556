//! `sandpit doctor`: checks this host for what runs need and says how to fix what is wrong.
//! The checks are the core's own ([`sandbox::host`]), the ones the engine applies at start.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use sandbox::host::{self, CheckStatus};

use super::EXIT_FAILURE;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check the cgroup parent the engine would be given (as `run --cgroup-parent`).
    #[arg(
        long = "cgroup-parent",
        value_name = "CGROUP",
        env = "SANDPIT_CGROUP_PARENT"
    )]
    pub cgroup_parent: Option<PathBuf>,
}

/// Prints one line per check (and how to fix it when it is not fine); exits non-zero when a
/// run would fail.
pub fn main(args: DoctorArgs) -> ExitCode {
    let checks = host::checks(args.cgroup_parent.as_deref());
    for c in &checks {
        let mark = match c.status {
            CheckStatus::Fine => "fine",
            CheckStatus::Warning => "warn",
            CheckStatus::Wrong => "WRONG",
        };
        println!("{mark:>5}  {}: {}", c.name, c.detail);
        if let (Some(fix), false) = (&c.fix, c.status == CheckStatus::Fine) {
            println!("       fix: {fix}");
        }
    }
    let wrong = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Wrong)
        .count();
    if wrong == 0 {
        println!("sandpit can run here");
        ExitCode::SUCCESS
    } else {
        println!("sandpit cannot run here: {wrong} check(s) wrong");
        ExitCode::from(EXIT_FAILURE)
    }
}
