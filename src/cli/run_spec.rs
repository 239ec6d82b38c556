//! `sandpit run --spec FILE.json`: an execution described as the HTTP API takes it (one
//! program, or several wired by pipes), read by the same parser (`crate::exec::parse`),
//! checked by the same rules (`crate::exec::admission`), built into specs the same way
//! (`crate::exec::runner`), and run here, in this process.

use std::path::Path;
use std::process::ExitCode;

use sandbox::{EndReason, Io, SandboxConfig, Spec, Stdin};
use serde_json::{json, Value};

use super::run::{report, summary};
use super::{fail, EXIT_FAILURE, EXIT_SANDBOX_FAILURE, EXIT_USAGE};
use crate::auth::Quota;
use crate::callbacks::AllowList;
use crate::env::{Catalog, Resolved};
use crate::exec::admission::{effective_limits, group_settings, LimitCaps};
use crate::exec::parse::new_execution;
use crate::exec::runner::{bytes_inputs, core_group, group_ending, program_spec};
use crate::exec::GroupRequest;

/// What the file asks for, checked: each program's spec and environment lease, and the
/// group's settings when it is a group.
struct Loaded {
    programs: Vec<(Spec, Resolved)>,
    group: Option<GroupRequest>,
}

fn load(data: &Path, file: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    // No server, so no callback: an empty allow-list refuses any.
    let new = new_execution(value, &AllowList::default())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let in_group = new.group.is_some();
    let at = |i: usize, field: &str| {
        if in_group {
            format!("programs[{i}].{field}")
        } else {
            field.to_string()
        }
    };
    let catalog = Catalog::open(data).map_err(|e| format!("environments: {e}"))?;
    let mut programs = Vec::with_capacity(new.programs.len());
    let mut limits = Vec::with_capacity(new.programs.len());
    for (i, p) in new.programs.iter().enumerate() {
        if !p.file_refs.is_empty() || !p.keep.is_empty() {
            return Err(format!(
                "'{}': files kept by reference ({{\"file_id\"}}, 'keep') live in the server's \
                 file store (sandpit serve); here, give the files' contents",
                at(i, if p.keep.is_empty() { "files" } else { "keep" })
            ));
        }
        let l = effective_limits(&p.limits, &Quota::default(), &LimitCaps::default())
            .map_err(|e| format!("{}: {e}", at(i, "limits")))?;
        let envid = p.environment.as_deref().unwrap_or(&new.environment);
        let env = catalog
            .resolve(envid)
            .map_err(|e| format!("'{}': {e}", at(i, "environment")))?;
        let stdin = p.stdin.clone().map_or(Stdin::Null, Stdin::Bytes);
        let spec = program_spec(
            &env,
            &p.command,
            &l,
            bytes_inputs(&p.files),
            stdin,
            &p.outputs,
            &p.keep,
        );
        limits.push(l);
        programs.push((spec, env));
    }
    let group = match &new.group {
        Some(g) => Some(
            group_settings(
                g,
                &new.programs,
                &limits,
                &Quota::default(),
                &LimitCaps::default(),
            )
            .map_err(|e| format!("{}: {e}", file.display()))?,
        ),
        None => None,
    };
    Ok(Loaded { programs, group })
}

/// Program output passes through to the terminal unless `--json`.
fn io(json: bool) -> Io {
    let mut io = Io::default();
    if !json {
        io.stdout_sink = Some(Box::new(std::io::stdout()));
        io.stderr_sink = Some(Box::new(std::io::stderr()));
    }
    io
}

pub fn main(data: &Path, file: &Path, json: bool, engine: SandboxConfig) -> ExitCode {
    let Loaded { programs, group } = match load(data, file) {
        Ok(v) => v,
        Err(message) => return fail(EXIT_USAGE, message),
    };
    let engine = match super::start_engine(engine) {
        Ok(engine) => engine,
        Err(e) => return fail(EXIT_SANDBOX_FAILURE, e),
    };
    let Some(group) = group else {
        let Some((spec, _lease)) = programs.first() else {
            return fail(EXIT_USAGE, "no program");
        };
        return match engine.run(spec, io(json)) {
            Ok(outcome) => report(&outcome, json),
            Err(sandbox::Error::InvalidSpec(m)) => fail(EXIT_USAGE, m),
            Err(e) => fail(EXIT_SANDBOX_FAILURE, e),
        };
    };
    let specs = programs.iter().map(|(spec, _)| spec.clone()).collect();
    let ios = programs.iter().map(|_| io(json)).collect();
    let outcome = match engine.run_group(&core_group(&group, specs), ios) {
        Ok(o) => o,
        Err(sandbox::Error::InvalidSpec(m)) => return fail(EXIT_USAGE, m),
        Err(e) => return fail(EXIT_SANDBOX_FAILURE, e),
    };
    drop(programs);
    let (reason, message) = group_ending(&outcome, false);
    if json {
        let pipes: Vec<Value> = outcome
            .pipes
            .iter()
            .map(|c| {
                c.as_ref().map_or(Value::Null, |c| {
                    json!({
                        "bytes": c.bytes,
                        "truncated": c.truncated,
                        "data": String::from_utf8_lossy(&c.data),
                    })
                })
            })
            .collect();
        let out = json!({
            "end_reason": reason,
            "message": message,
            "first_ended": outcome.first_ended,
            "group_timeout": outcome.group_timeout,
            "programs": outcome.programs,
            "pipes": pipes,
        });
        println!("{out}");
    } else {
        for (i, o) in outcome.programs.iter().enumerate() {
            eprintln!(
                "{}",
                summary(o).replacen("sandpit:", &format!("sandpit: program {i}:"), 1)
            );
        }
        eprintln!(
            "sandpit: group: {reason}{}",
            message.map_or(String::new(), |m| format!(": {m}"))
        );
    }
    let failed = outcome
        .programs
        .iter()
        .any(|o| o.end_reason == EndReason::InternalError);
    let all_ok = outcome
        .programs
        .iter()
        .all(|o| o.end_reason == EndReason::Normal && o.exit_code == Some(0));
    if failed {
        ExitCode::from(EXIT_SANDBOX_FAILURE)
    } else if json || all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}
