//! A new execution: its fields and limits checked, the key's quotas admitted, its files laid
//! out, its inputs by reference resolved, recorded; one that starts at once is queued, or
//! runs at once in a slot free here when nothing queued waits ahead of it.

use std::sync::Arc;

use crate::auth::Principal;
use crate::callbacks::Subject;
use crate::clock::Micros;
use crate::error::{blocking, Error, Result};
use crate::exec::admission::{
    admit, check_files, check_pending, check_storage, effective_limits, group_settings,
};
use crate::exec::lifecycle::Entry;
use crate::exec::request::{ExecutionRequest, NewExecution, ProgramRequest};
use crate::exec::state::Status;
use crate::ids::new_execution_id;
use crate::scheduler::Scheduler;
use crate::store::ExecutionRow;

use super::control::WAIT_MAX;
use super::Service;

impl Service {
    /// The quotas of what a key holds, with `adding` more bytes and one more execution
    /// (pending unless `start`); `keeps`: it asks to keep files, so its storage quota must
    /// have room left after it. The master token has none.
    async fn check_holdings(
        &self,
        who: &Principal,
        adding: u64,
        start: bool,
        keeps: bool,
    ) -> Result<()> {
        if who.is_master() {
            return Ok(());
        }
        let usage = self.store.usage(&who.owner()).await?;
        let key = who.quota();
        if !start {
            check_pending(&usage, &key, &self.policy.quotas)?;
        }
        // Keeping files needs a byte to spare after the inputs.
        check_storage(&usage, adding + u64::from(keeps), &key, &self.policy.quotas)
    }

    pub async fn create(
        self: &Arc<Self>,
        who: &Principal,
        mut new: NewExecution,
    ) -> Result<ExecutionRow> {
        new.check()?;
        let in_group = new.group.is_some();
        let quota = who.quota();
        let mut limits = Vec::with_capacity(new.programs.len());
        for (i, p) in new.programs.iter().enumerate() {
            let field = |name: &str| field_of(in_group, i, name);
            let envid = p.environment.as_deref().unwrap_or(&new.environment);
            if self.envs.get(envid)?.is_none() {
                return Err(Error::Invalid(format!(
                    "'{}': environment '{envid}' does not exist (see GET /api/v1/environments)",
                    field("environment")
                )));
            }
            limits.push(
                effective_limits(&p.limits, &quota, &self.policy.caps)
                    .map_err(|e| in_program(e, in_group, i))?,
            );
        }
        check_files(new.input_count(), &quota, &self.policy.quotas)?;
        let group = match &new.group {
            Some(g) => Some(group_settings(
                g,
                &new.programs,
                &limits,
                &quota,
                &self.policy.caps,
            )?),
            None => None,
        };
        let keeps = new.programs.iter().any(|p| !p.keep.is_empty());
        if keeps {
            self.files.check_room(who).await?;
        }
        let start = new.start || new.wait;
        let input_bytes = new.input_bytes();
        self.check_holdings(who, input_bytes, start, keeps).await?;
        if start {
            admit(self.store.as_ref(), &who.owner(), &quota).await?;
        }
        let id = new_execution_id();
        let dir = self.dirs.of(&id);
        let inputs: Vec<_> = new
            .programs
            .iter_mut()
            .map(|p| (std::mem::take(&mut p.files), p.stdin.take()))
            .collect();
        // Without files or stdin there is nothing to lay out before the run, and no trip to
        // a blocking thread: the directory comes with the run's log (`WorkDir::live_ios`).
        if inputs
            .iter()
            .any(|(files, stdin)| !files.is_empty() || stdin.is_some())
        {
            let writer = dir.clone();
            blocking(move || {
                let programs: Vec<_> = inputs
                    .iter()
                    .map(|(files, stdin)| (files.as_slice(), stdin.as_deref()))
                    .collect();
                writer.create(in_group, &programs)
            })
            .await?;
        }
        // The callback's row first: the execution cannot end before its callback exists.
        let callback = new
            .callback
            .take()
            .map(|c| c.row(Subject::Execution(id.clone()), Micros::now()));
        if let Some(c) = &callback {
            if let Err(e) = self.store.insert_callback(c).await {
                let _ = dir.remove().await;
                return Err(e.into());
            }
        }
        // Inputs by reference are resolved, and the execution that pins their blobs recorded,
        // under the file store's lock (see `crate::files`).
        let held = if new.programs.iter().any(|p| !p.file_refs.is_empty()) {
            Some(self.files.hold().await)
        } else {
            None
        };
        // Before it is queued: its end cannot come before this hears.
        let ended = new.wait.then(|| self.events().subscribe());
        let created = async {
            let mut programs = Vec::with_capacity(new.programs.len());
            for (i, (p, limits)) in new.programs.into_iter().zip(limits).enumerate() {
                let file_refs = match &held {
                    Some(held) => self
                        .files
                        .resolve(held, who, &p.file_refs)
                        .await
                        .map_err(|e| in_program(e, in_group, i))?,
                    None => Vec::new(),
                };
                programs.push(ProgramRequest {
                    environment: in_group
                        .then(|| p.environment.unwrap_or_else(|| new.environment.clone())),
                    command: p.command,
                    limits,
                    outputs: p.outputs,
                    keep: p.keep,
                    file_refs,
                });
            }
            let request = match group {
                Some(mut g) => {
                    g.programs = programs;
                    ExecutionRequest::Group(g)
                }
                None => ExecutionRequest::Program(
                    programs
                        .pop()
                        .ok_or_else(|| Error::Invalid("an execution needs a program".into()))?,
                ),
            };
            let row = ExecutionRow {
                id: id.clone(),
                owner: who.owner(),
                environment: new.environment,
                status: Status::Pending,
                request,
                end_reason: None,
                message: None,
                result: None,
                created_at: Micros::now(),
                started_at: None,
                ended_at: None,
                queued_at: None,
                node: None,
                stored_bytes: input_bytes,
            };
            // Checked again under the lock: concurrent creates of one key can't all pass.
            let _guard = self.admission.lock().await;
            self.check_holdings(who, input_bytes, start, keeps).await?;
            if start {
                admit(self.store.as_ref(), &who.owner(), &quota).await?;
            }
            // A slot free here now: it runs at once, without the queue's round trips.
            let slot = start.then(|| self.sched.try_slot()).flatten();
            let entry = match &slot {
                Some(_) => Entry::Claimed(&self.node),
                None if start => Entry::Queued,
                None => Entry::Pending,
            };
            match self.life.create(row, entry).await? {
                Some(row) => Ok((row, slot)),
                None => Err(Error::Unauthorized("the API key was deleted".into())),
            }
        }
        .await;
        drop(held);
        let (row, slot) = match created {
            Ok(created) => created,
            Err(e) => {
                if callback.is_some() {
                    let _ = self
                        .store
                        .delete_callbacks_of(&Subject::Execution(id))
                        .await;
                }
                let _ = dir.remove().await;
                return Err(e);
            }
        };
        match slot {
            Some(slot) if row.status == Status::Running => {
                Scheduler::run_in_slot(self.clone(), row.clone(), slot);
            }
            _ if start => self.sched.kick(),
            _ => {}
        }
        if let Some(ended) = ended {
            if let Some(row) = self.ended_row(ended, &id, WAIT_MAX).await {
                return Ok(row.as_ref().clone());
            }
        }
        Ok(self.store.get_execution(&id).await?.unwrap_or(row))
    }
}

/// A field of program `i` as the caller named it: `limits` or `programs[1].limits`.
fn field_of(in_group: bool, i: usize, name: &str) -> String {
    if in_group {
        format!("programs[{i}].{name}")
    } else {
        name.to_string()
    }
}

/// An error about a program's fields, naming the program in a group.
fn in_program(e: Error, in_group: bool, i: usize) -> Error {
    if !in_group {
        return e;
    }
    match e {
        Error::Invalid(m) => Error::Invalid(format!("programs[{i}].{m}")),
        Error::OverLimit(m) => Error::OverLimit(format!("programs[{i}].{m}")),
        Error::NotFound(m) => Error::NotFound(format!("programs[{i}].{m}")),
        e => e,
    }
}
