//! `sandpit env …`: import, list, show and remove environments.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{fail, missing_data_dir, EXIT_FAILURE, EXIT_USAGE};
use crate::env::{EnvError, EnvStore, NewEnvironment};

#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(subcommand)]
    pub command: EnvCommand,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Import an OCI image layout (directory or tar) as an environment.
    Import {
        /// The image layout: a directory with index.json, or a tar of one.
        path: PathBuf,
        /// The environment's id (default: from the image digest).
        #[arg(long)]
        envid: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        authors: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the environments (one line each: envid, name).
    List {
        /// Print a JSON array instead.
        #[arg(long)]
        json: bool,
    },
    /// Print one environment as JSON.
    Show { envid: String },
    /// Remove an environment (refused while a run uses it); layers other images use stay.
    Rm { envid: String },
}

/// Bad input is exit 2, everything else 1.
fn status_of(e: &EnvError) -> u8 {
    match e {
        EnvError::InvalidId(_) | EnvError::NotFound(_) | EnvError::AlreadyExists(_) => EXIT_USAGE,
        _ => EXIT_FAILURE,
    }
}

fn json(value: &impl serde::Serialize) -> Result<String, ExitCode> {
    serde_json::to_string_pretty(value).map_err(|e| fail(EXIT_FAILURE, e))
}

pub fn main(data: &Path, args: EnvArgs) -> ExitCode {
    // Only an import may create the data directory; the rest look into an existing one.
    if !matches!(args.command, EnvCommand::Import { .. }) && !data.is_dir() {
        return fail(EXIT_USAGE, missing_data_dir(data));
    }
    let store = match EnvStore::open(data) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_FAILURE, format!("{}: {e}", data.display())),
    };
    match args.command {
        EnvCommand::Import {
            path,
            envid,
            name,
            authors,
            description,
        } => {
            if !path.exists() {
                return fail(
                    EXIT_USAGE,
                    format!("{}: no such file or directory", path.display()),
                );
            }
            let meta = NewEnvironment {
                envid,
                name,
                authors,
                description,
            };
            match store.import(&path, meta) {
                Ok(env) => {
                    println!("{}", env.envid);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(status_of(&e), format!("import {}: {e}", path.display())),
            }
        }
        EnvCommand::List { json: as_json } => match store.list() {
            Ok(envs) if as_json => match json(&envs) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
            Ok(envs) => {
                if envs.is_empty() {
                    eprintln!("sandpit: no environments in {}", data.display());
                }
                for env in envs {
                    println!("{}\t{}", env.envid, env.name);
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(status_of(&e), e),
        },
        EnvCommand::Show { envid } => match store.get(&envid) {
            Ok(Some(env)) => match json(&env) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
            Ok(None) => fail(EXIT_USAGE, EnvError::NotFound(envid).in_data_dir(data)),
            Err(e) => fail(status_of(&e), e.in_data_dir(data)),
        },
        EnvCommand::Rm { envid } => match store.remove(&envid) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(status_of(&e), e.in_data_dir(data)),
        },
    }
}
