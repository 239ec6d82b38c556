//! An execution's files through the service: an input uploaded while it is pending (checked
//! before the body is read, committed inside the lifecycle's gate), and its outputs and pipe
//! captures once it has ended.

use std::path::PathBuf;

use sandbox::RelPath;

use crate::auth::Principal;
use crate::error::{blocking, Error, Result};
use crate::exec::admission::{check_files, check_storage, storage_left};
use crate::exec::state::{require, Status};
use crate::store::ExecutionRow;

use super::{program_index, Service};

/// Where an upload may go, known before its body is read.
pub struct UploadTarget {
    pub id: String,
    /// The program whose input it is (0 for a single program).
    pub program: usize,
    /// What the key's storage quota leaves for it.
    pub max_bytes: u64,
}
impl Service {
    /// Where one more input file of program `program` may go (`None`: the execution is one
    /// program), checked before the caller reads the upload: a pending execution of the
    /// principal, and how many bytes the key's storage quota leaves. The state is checked
    /// again where the upload commits ([`Service::commit_input`]).
    pub async fn input_target(
        &self,
        who: &Principal,
        id: &str,
        program: Option<usize>,
    ) -> Result<UploadTarget> {
        let row = self.get(who, id).await?;
        let i = program_index(&row, program)?;
        require(
            row.status,
            &[Status::Pending],
            "input can be uploaded only while the execution is pending",
        )?;
        let max_bytes = if who.is_master() {
            u64::MAX
        } else {
            let usage = self.store.usage(&who.owner()).await?;
            check_storage(&usage, 0, &who.quota(), &self.policy.quotas)?;
            storage_left(&usage, &who.quota(), &self.policy.quotas)
        };
        Ok(UploadTarget {
            id: row.id,
            program: i,
            max_bytes,
        })
    }

    /// Moves a received upload (`received`, `size` bytes, in the scratch space) into the
    /// execution as input `rel` if it is pending now, and only then: the lifecycle's gate
    /// keeps it pending until the file is in place, and a deleted execution is never brought
    /// back. The received file is gone afterwards, whatever happened.
    pub async fn commit_input(
        &self,
        who: &Principal,
        target: &UploadTarget,
        rel: RelPath,
        received: PathBuf,
        size: u64,
        mode: u32,
    ) -> Result<()> {
        let committed = match self.get(who, &target.id).await {
            Ok(row) => {
                // The admission lock first, then the lifecycle's gate (as `start` takes them).
                let _guard = self.admission.lock().await;
                self.life
                    .while_pending(&row.id, |row| {
                        let received = received.clone();
                        self.commit_pending(who, row, target.program, rel, received, size, mode)
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&received).await;
        committed
    }

    /// The commit itself, under the admission lock and inside the lifecycle's gate.
    #[allow(clippy::too_many_arguments)]
    async fn commit_pending(
        &self,
        who: &Principal,
        row: ExecutionRow,
        program: usize,
        rel: RelPath,
        received: PathBuf,
        size: u64,
        mode: u32,
    ) -> Result<()> {
        let (quota, quotas) = (who.quota(), self.policy.quotas);
        if !who.is_master() {
            let usage = self.store.usage(&who.owner()).await?;
            check_storage(&usage, size, &quota, &quotas)?;
        }
        let dir = self.dirs.of(&row.id);
        let (group, programs) = (row.request.is_group(), row.request.programs().len());
        let stored = blocking(move || {
            // Input files per execution: every program's together.
            let mut count = 0;
            for i in 0..programs {
                count += dir.program(group, i).input_count()?;
            }
            let target = dir.program(group, program);
            count += u64::from(!target.has_input(&rel)?);
            check_files(count, &quota, &quotas)?;
            target.commit_input(&rel, &received, mode)?;
            Ok(dir.size_on_disk()?)
        })
        .await?;
        self.store.set_stored_bytes(&row.id, stored).await?;
        Ok(())
    }
    /// An output of program `program` (`None`: the execution is one program) as it was at
    /// the end, opened for streaming, and its length. Only outputs named at creation; never
    /// one the core refused (a symlink, FIFO or device in its place).
    pub async fn output(
        &self,
        who: &Principal,
        id: &str,
        program: Option<usize>,
        rel: &RelPath,
    ) -> Result<(tokio::fs::File, u64)> {
        let row = self.get(who, id).await?;
        let i = program_index(&row, program)?;
        let name = row.request.programs()[i].output_named(rel).ok_or_else(|| {
            Error::NotFound(format!(
                "'{rel}' is not one of this program's outputs (name it in 'outputs' at creation)"
            ))
        })?;
        require(
            row.status,
            &[Status::Ended],
            "outputs are available once the execution has ended",
        )?;
        let result = row.result.as_ref().and_then(|r| r.program(i));
        if let Some(why) = result.and_then(|r| r.outputs.get(name)) {
            return Err(Error::OutputRefused(format!(
                "output '{name}' was not collected: {why}"
            )));
        }
        self.dirs
            .of(&row.id)
            .program(row.request.is_group(), i)
            .open_output(rel)
            .await?
            .ok_or_else(|| {
                Error::OutputRefused(format!(
                    "output '{name}' was not collected (the run did not get that far)"
                ))
            })
    }

    /// The captured traffic of pipe `n` of an ended group, to stream.
    pub async fn pipe_capture(
        &self,
        who: &Principal,
        id: &str,
        n: usize,
    ) -> Result<tokio::fs::File> {
        let row = self.get(who, id).await?;
        let pipes = row.request.group().map_or(&[][..], |g| &g.pipes[..]);
        let Some(pipe) = pipes.get(n) else {
            return Err(Error::NotFound(format!(
                "this execution has no pipe {n} (it has {})",
                pipes.len()
            )));
        };
        if pipe.capture_bytes.is_none() {
            return Err(Error::NotFound(format!(
                "pipe {n} was not captured (give it \"capture\" at creation)"
            )));
        }
        require(
            row.status,
            &[Status::Ended],
            "a pipe's traffic is available once the execution has ended",
        )?;
        match tokio::fs::File::open(self.dirs.of(&row.id).pipe(n)).await {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::OutputRefused(
                format!("pipe {n} was not captured (the run did not get that far)"),
            )),
            Err(e) => Err(e.into()),
        }
    }
}
