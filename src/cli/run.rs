//! `sandpit run`: one program, one fresh sandbox, one outcome.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use sandbox::{EndReason, FileIn, FileSource, Io, Limits, Outcome, SandboxConfig, Spec, Stdin};

use super::{fail, EXIT_FAILURE, EXIT_SANDBOX_FAILURE, EXIT_USAGE};
use crate::env::source::{self, RootSource};
use crate::env::EnvLease;
use crate::runspec::{LimitOverrides, SpecBuilder};
use crate::units::{format_duration, format_size, parse_duration, parse_size};

#[derive(Debug, Args)]
#[command(
    after_help = "A limit not given is the environment's or bundle's own when it sets one, else the default shown."
)]
pub struct RunArgs {
    /// Root filesystem: a directory holding a whole root filesystem.
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Root filesystem: an environment of the data directory (see `sandpit env list`).
    #[arg(long, value_name = "ID")]
    pub env: Option<String>,
    /// Root filesystem: an OCI image layout (directory or tar), imported into the store.
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// Root filesystem and process: an OCI runtime bundle (config.json + rootfs/).
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    // The limits' help shows the core's defaults (see `limit_help`); no clap default_value,
    // so that an environment's or bundle's own limits apply when a flag is not given.
    #[arg(long, value_parser = parse_size, help = limit_help(
        "Memory limit of the whole sandbox (swap included), e.g. 512M",
        |l| l.memory_bytes.map(format_size),
    ))]
    pub memory: Option<u64>,
    #[arg(long, value_parser = parse_duration, help = limit_help(
        "CPU time limit of the whole process tree, e.g. 2s or 500ms",
        |l| l.cpu_time.map(format_duration),
    ))]
    pub time: Option<std::time::Duration>,
    #[arg(long = "wall-time", value_parser = parse_duration, help = limit_help(
        "Wall-clock time limit, e.g. 5s",
        |l| l.wall_time.map(format_duration),
    ))]
    pub wall_time: Option<std::time::Duration>,
    #[arg(long, help = limit_help(
        "Most processes and threads alive at once",
        |l| l.pids.map(|n| n.to_string()),
    ))]
    pub pids: Option<u64>,
    #[arg(long, value_parser = parse_size, help = limit_help(
        "Most bytes kept of stdout and of stderr; more ends the run (output-limit)",
        |l| l.output_bytes.map(format_size),
    ))]
    pub output: Option<u64>,
    #[arg(long = "file-size", value_parser = parse_size, help = limit_help(
        "Largest file the program may write",
        |l| l.file_size_bytes.map(format_size),
    ))]
    pub file_size: Option<u64>,
    #[arg(long, value_parser = parse_size, help = limit_help(
        "Size of the writable work directory and of /tmp (each a tmpfs)",
        |l| l.disk_bytes.map(format_size),
    ))]
    pub disk: Option<u64>,
    #[arg(long = "open-files", help = limit_help(
        "Most open files per process",
        |l| l.open_files.map(|n| n.to_string()),
    ))]
    pub open_files: Option<u64>,
    /// A file to read as standard input. Without it, what is piped or redirected into sandpit
    /// is passed on (`echo hi | sandpit run …`); from a terminal the program gets no input
    /// (/dev/null). `--stdin /dev/null` gives none in any case.
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,
    /// Write the program's stdout to this file instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub stdout: Option<PathBuf>,
    /// Write the program's stderr to this file instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub stderr: Option<PathBuf>,
    /// Copy a host file or directory into the sandbox: SRC:DST (DST relative to the work dir).
    #[arg(long = "copy-in", value_name = "SRC:DST")]
    pub copy_in: Vec<String>,
    /// Working directory inside the sandbox (default: the work directory, /work).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable inside the sandbox.
    #[arg(long = "setenv", value_name = "K=V")]
    pub setenv: Vec<String>,
    /// Print the outcome as one JSON object (streams included) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Run the execution a JSON file describes, in the shape the HTTP API takes (one program,
    /// or `programs` wired by `pipes`); environments come from the data directory.
    #[arg(long, value_name = "FILE.json", conflicts_with_all = [
        "rootfs", "env", "image", "bundle", "memory", "time", "wall_time", "pids", "output",
        "file_size", "disk", "open_files", "stdin", "stdout", "stderr", "copy_in", "cwd",
        "setenv", "command",
    ])]
    pub spec: Option<PathBuf>,
    /// cgroup (relative to the cgroup root) under which run cgroups go; default: sandpit's own.
    #[arg(
        long = "cgroup-parent",
        value_name = "CGROUP",
        env = "SANDPIT_CGROUP_PARENT"
    )]
    pub cgroup_parent: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(last = true, value_name = "PROGRAM")]
    pub command: Vec<String>,
}

impl RunArgs {
    fn root_source(&self) -> Result<RootSource, String> {
        let mut given = Vec::new();
        if let Some(dir) = &self.rootfs {
            given.push(RootSource::Dir(dir.clone()));
        }
        if let Some(id) = &self.env {
            given.push(RootSource::Env(id.clone()));
        }
        if let Some(path) = &self.image {
            given.push(RootSource::Image(path.clone()));
        }
        if let Some(dir) = &self.bundle {
            given.push(RootSource::Bundle(dir.clone()));
        }
        match given.len() {
            1 => Ok(given.remove(0)),
            0 => Err("no root filesystem: give one of --env ID, --image PATH, --rootfs DIR, --bundle DIR".into()),
            _ => Err("give only one of --env, --image, --rootfs, --bundle".into()),
        }
    }

    /// Builds the spec: the root source's defaults first, then the user's flags. Returns the
    /// lease that keeps the environment or image in use (hold it until the run has ended) and
    /// the source's notes (what a bundle asks for that is not honoured).
    fn spec(&self, data: &Path) -> Result<(Spec, Option<EnvLease>, Vec<String>), String> {
        let source = self.root_source()?;
        if let (RootSource::Env(envid), false) = (&source, data.is_dir()) {
            return Err(format!("--env {envid}: {}", super::missing_data_dir(data)));
        }
        let resolved = source::resolve(data, &source)?;
        let mut b = SpecBuilder::new(resolved.rootfs)
            .defaults(&resolved.defaults)
            .command(self.command.clone())
            .limits(&LimitOverrides {
                memory_bytes: self.memory,
                cpu_time: self.time,
                wall_time: self.wall_time,
                pids: self.pids,
                output_bytes: self.output,
                file_size_bytes: self.file_size,
                disk_bytes: self.disk,
                open_files: self.open_files,
            });
        if b.argv().is_empty() {
            return Err("no program given (sandpit run [OPTIONS] -- PROGRAM [ARGS...])".into());
        }
        match &self.stdin {
            Some(path) => {
                File::open(path).map_err(|e| format!("--stdin {}: {e}", path.display()))?;
                b = b.stdin(Stdin::File(path.clone()));
            }
            None => b = b.stdin(own_stdin()?),
        }
        let mut files = Vec::new();
        for pair in &self.copy_in {
            let (src, dst) = pair
                .split_once(':')
                .ok_or_else(|| format!("--copy-in '{pair}': expected SRC:DST"))?;
            if src.is_empty() || dst.is_empty() {
                return Err(format!("--copy-in '{pair}': expected SRC:DST"));
            }
            let src = PathBuf::from(src);
            if !src.exists() {
                return Err(format!("--copy-in {}: no such file", src.display()));
            }
            files.push(FileIn {
                path: PathBuf::from(dst),
                source: FileSource::Host(src),
                mode: None,
            });
        }
        b = b.files(files);
        if let Some(cwd) = &self.cwd {
            b = b.cwd(cwd.clone());
        }
        for kv in &self.setenv {
            let Some((key, _)) = kv.split_once('=') else {
                return Err(format!("--setenv '{kv}': expected K=V"));
            };
            if key.is_empty() {
                return Err(format!("--setenv '{kv}': empty name"));
            }
            b = b.setenv(kv);
        }
        Ok((b.build(), resolved.lease, resolved.notes))
    }
}

/// `--help` text of a limit flag, with the core's default value.
fn limit_help(what: &str, default: impl Fn(&Limits) -> Option<String>) -> String {
    let value = default(&Limits::default()).unwrap_or_else(|| "none".into());
    format!("{what} [default: {value}]")
}

/// The program's stdin when `--stdin` is not given: sandpit's own stdin when something is
/// piped or redirected into it; nothing (/dev/null) from a terminal or when it is closed.
fn own_stdin() -> Result<Stdin, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Stdin::Null);
    }
    match nix::sys::stat::fstat(stdin.as_fd()) {
        Err(_) => Ok(Stdin::Null),
        // Reopened by path in this process: a pipe or a file opens as the same object, which
        // a socket does not.
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK => {
            Err("sandpit's stdin is a socket, which cannot be passed on: give --stdin FILE (or --stdin /dev/null)".into())
        }
        Ok(_) => Ok(Stdin::File(PathBuf::from("/proc/self/fd/0"))),
    }
}

fn open_sink(path: &Option<PathBuf>, flag: &str) -> Result<Option<Box<dyn Write + Send>>, String> {
    match path {
        Some(p) => File::create(p)
            .map(|f| Some(Box::new(f) as Box<dyn Write + Send>))
            .map_err(|e| format!("{flag} {}: {e}", p.display())),
        None => Ok(None),
    }
}

pub fn main(data: &Path, args: RunArgs) -> ExitCode {
    let engine_config = SandboxConfig {
        cgroup_parent: args.cgroup_parent.clone(),
        ..SandboxConfig::default()
    };
    if let Some(file) = &args.spec {
        return super::run_spec::main(data, file, args.json, engine_config);
    }
    let (spec, _lease, notes) = match args.spec(data) {
        Ok(v) => v,
        Err(message) => return fail(EXIT_USAGE, message),
    };
    for note in notes {
        eprintln!("sandpit: {note}");
    }
    let mut io = Io::default();
    match (
        open_sink(&args.stdout, "--stdout"),
        open_sink(&args.stderr, "--stderr"),
    ) {
        (Ok(out), Ok(err)) => {
            io.stdout_sink = out;
            io.stderr_sink = err;
        }
        (Err(e), _) | (_, Err(e)) => return fail(EXIT_USAGE, e),
    }
    if !args.json {
        // Without --json the streams pass through to the terminal unless sent to a file.
        if io.stdout_sink.is_none() {
            io.stdout_sink = Some(Box::new(std::io::stdout()));
        }
        if io.stderr_sink.is_none() {
            io.stderr_sink = Some(Box::new(std::io::stderr()));
        }
    }
    // One program, one sandbox.
    let engine = match super::start_engine(SandboxConfig {
        one_shot: true,
        ..engine_config
    }) {
        Ok(engine) => engine,
        Err(e) => return fail(EXIT_SANDBOX_FAILURE, e),
    };
    let outcome = match engine.run(&spec, io) {
        Ok(outcome) => outcome,
        Err(sandbox::Error::InvalidSpec(m)) => return fail(EXIT_USAGE, m),
        Err(e) => return fail(EXIT_SANDBOX_FAILURE, e),
    };
    report(&outcome, args.json)
}

/// Prints the outcome and turns it into the command's exit status.
pub(super) fn report(outcome: &Outcome, json: bool) -> ExitCode {
    if json {
        match serde_json::to_string(outcome) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(EXIT_FAILURE, e),
        }
    } else {
        eprintln!("{}", summary(outcome));
    }
    match outcome.end_reason {
        EndReason::InternalError => ExitCode::from(EXIT_SANDBOX_FAILURE),
        _ if json => ExitCode::SUCCESS,
        EndReason::Normal => match (outcome.exit_code, outcome.signal) {
            (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
            (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
            (None, None) => ExitCode::from(EXIT_FAILURE),
        },
        // Ended by the sandbox (limit or stop): like a shell reports SIGKILL.
        _ => ExitCode::from(137),
    }
}

/// One line for humans: `sandpit: normal, exit 0, cpu 0.001 s, wall 0.002 s, peak 1.2 MiB`.
pub(super) fn summary(o: &Outcome) -> String {
    let mut s = format!("sandpit: {}", o.end_reason);
    if let Some(t) = o.timeout {
        s += &format!(
            " ({})",
            serde_json::to_string(&t)
                .unwrap_or_default()
                .trim_matches('"')
        );
    }
    if let Some(code) = o.exit_code {
        s += &format!(", exit {code}");
    }
    if let Some(name) = &o.signal_name {
        s += &format!(", signal {name}");
    }
    s += &format!(
        ", cpu {:.3} s, wall {:.3} s, peak {:.1} MiB",
        o.cpu_time_s,
        o.wall_time_s,
        o.peak_memory_bytes as f64 / (1 << 20) as f64
    );
    if o.oom_kills > 0 {
        s += &format!(", oom kills {}", o.oom_kills);
    }
    if o.pids_limit_hit {
        s += ", process limit hit";
    }
    for v in &o.seccomp_violations {
        s += &format!(", denied syscall {} x{}", v.syscall, v.count);
    }
    if let Some(m) = &o.message {
        s += &format!(": {m}");
    }
    s
}
