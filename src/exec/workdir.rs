//! An execution's files on disk, `DATA/executions/<id>/`:
//!
//! ```text
//! input/    files put into the work directory (created, uploaded while pending)
//! stdin     what the program reads
//! log       stdout and stderr as they were written (the live log follows it)
//! stdout    the captured streams, at most the output limit each
//! stderr
//! output/   the files collected after the run by the core, which never follows a symlink,
//!           FIFO or device; outputs are served from this copy only
//! ```
//!
//! A group keeps the same per program in `programs/<i>/` ([`ProgramDir`]); its `log` holds
//! every program's streams, and `pipes/<n>` the captured traffic of pipe `n`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sandbox::{FileIn, FileSource, Io, Outcome, RelPath, StopHandle};

use crate::exec::request::InputFile;
use crate::ids::valid_execution_id;

/// The directory that holds every execution's directory.
#[derive(Debug, Clone)]
pub struct WorkDirs {
    root: PathBuf,
}

impl WorkDirs {
    pub fn new(root: PathBuf) -> WorkDirs {
        WorkDirs { root }
    }

    pub fn of(&self, id: &str) -> WorkDir {
        WorkDir {
            dir: self.root.join(id),
        }
    }

    /// The ids that have a directory (whether or not the store knows them).
    pub async fn ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(mut dir) = tokio::fs::read_dir(&self.root).await {
            while let Ok(Some(entry)) = dir.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                if valid_execution_id(&name) {
                    out.push(name);
                }
            }
        }
        out
    }
}

/// One execution's directory.
#[derive(Debug, Clone)]
pub struct WorkDir {
    dir: PathBuf,
}

/// Writes a file we own (the parents are ours too, so no link is ever followed).
fn write_owned(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

impl WorkDir {
    /// The files of program `i` (a single program's are the execution's own).
    pub fn program(&self, group: bool, i: usize) -> ProgramDir {
        ProgramDir {
            dir: if group {
                self.dir.join("programs").join(i.to_string())
            } else {
                self.dir.clone()
            },
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// The captured traffic of pipe `n`.
    pub fn pipe(&self, n: usize) -> PathBuf {
        self.dir.join("pipes").join(n.to_string())
    }

    /// Creates the directory with each program's files and stdin (blocking). On failure
    /// nothing is left.
    pub fn create(
        &self,
        group: bool,
        programs: &[(&[InputFile], Option<&[u8]>)],
    ) -> std::io::Result<()> {
        let written = (|| {
            for (i, (files, stdin)) in programs.iter().enumerate() {
                self.program(group, i).create(files, *stdin)?;
            }
            Ok(())
        })();
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        written
    }

    /// The runs' I/O, one per program: every stream into the live log as it is written.
    pub fn live_ios(&self, programs: usize, stop: &StopHandle) -> std::io::Result<Vec<Io>> {
        let log = Arc::new(Mutex::new(std::fs::File::create(self.log())?));
        Ok((0..programs)
            .map(|_| Io {
                stdout_sink: Some(Box::new(LogSink { file: log.clone() })),
                stderr_sink: Some(Box::new(LogSink { file: log.clone() })),
                stop: Some(stop.clone()),
            })
            .collect())
    }

    /// Keeps the captured traffic of pipe `n`.
    pub fn store_pipe(&self, n: usize, bytes: &[u8]) -> std::io::Result<()> {
        write_owned(&self.pipe(n), bytes, 0o644)
    }

    /// Removes everything (an absent directory is fine).
    pub async fn remove(&self) -> std::io::Result<()> {
        match tokio::fs::remove_dir_all(&self.dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// One program's files: `input/`, `stdin`, `stdout`, `stderr`, `output/`.
#[derive(Debug, Clone)]
pub struct ProgramDir {
    dir: PathBuf,
}

impl ProgramDir {
    fn input_dir(&self) -> PathBuf {
        self.dir.join("input")
    }

    fn stdin(&self) -> PathBuf {
        self.dir.join("stdin")
    }

    fn output(&self, rel: &RelPath) -> PathBuf {
        self.dir.join("output").join(rel)
    }

    fn create(&self, files: &[InputFile], stdin: Option<&[u8]>) -> std::io::Result<()> {
        std::fs::create_dir_all(self.input_dir())?;
        for f in files {
            write_owned(&self.input_dir().join(&f.path), &f.bytes, f.mode)?;
        }
        if let Some(bytes) = stdin {
            write_owned(&self.stdin(), bytes, 0o644)?;
        }
        Ok(())
    }

    /// One more input file (blocking).
    pub fn write_input(&self, rel: &RelPath, bytes: &[u8], mode: u32) -> std::io::Result<()> {
        write_owned(&self.input_dir().join(rel), bytes, mode)
    }

    /// Input files as the core takes them: every file under `input/`, with its mode.
    pub fn input_files(&self) -> std::io::Result<Vec<FileIn>> {
        let root = self.input_dir();
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let meta = entry.metadata()?;
                let path = entry.path();
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() {
                    let rel = path.strip_prefix(&root).map_err(std::io::Error::other)?;
                    out.push(FileIn {
                        path: rel.to_path_buf(),
                        source: FileSource::Host(path.clone()),
                        mode: Some(meta.permissions().mode() & 0o777),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The stdin file, when the request gave one.
    pub fn stdin_file(&self) -> Option<PathBuf> {
        let path = self.stdin();
        path.is_file().then_some(path)
    }

    /// Keeps the captured streams; returns what failed.
    pub fn store_streams(&self, outcome: &Outcome) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, bytes) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
            if let Err(e) = write_owned(&self.dir.join(name), bytes, 0o644) {
                errors.push(format!("{name}: {e}"));
            }
        }
        errors
    }

    /// Keeps the collected outputs; returns the ones that were refused (name → why).
    pub fn store_outputs(
        &self,
        wanted: &[String],
        collected: &BTreeMap<String, Result<Vec<u8>, String>>,
    ) -> BTreeMap<String, String> {
        let mut refused = BTreeMap::new();
        for name in wanted {
            let why = match RelPath::parse(name) {
                Err(e) => Some(e.to_string()),
                Ok(rel) => match collected_file(collected, &rel) {
                    Ok(bytes) => write_owned(&self.output(&rel), bytes, 0o644)
                        .err()
                        .map(|e| format!("storing it: {e}")),
                    Err(why) => Some(why),
                },
            };
            if let Some(why) = why {
                refused.insert(name.clone(), why);
            }
        }
        refused
    }

    /// A captured stream (`stdout`/`stderr`) as text, when it exists.
    pub async fn read_stream(&self, name: &str) -> Option<String> {
        tokio::fs::read(self.dir.join(name))
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// A collected output; `None` when it was not collected.
    pub async fn read_output(&self, rel: &RelPath) -> std::io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.output(rel)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What the core read back for `rel`: the bytes, or why not.
pub fn collected_file<'a>(
    collected: &'a BTreeMap<String, Result<Vec<u8>, String>>,
    rel: &RelPath,
) -> Result<&'a [u8], String> {
    match collected
        .iter()
        .find(|(k, _)| RelPath::parse(k).ok().as_ref() == Some(rel))
        .map(|(_, v)| v)
    {
        Some(Ok(bytes)) => Ok(bytes),
        Some(Err(why)) => Err(why.clone()),
        None => Err("the program did not leave this file".into()),
    }
}

/// Writes a stream to the execution's live log as the program writes it.
struct LogSink {
    file: Arc<Mutex<std::fs::File>>,
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
