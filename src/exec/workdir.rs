//! An execution's files on disk, `DATA/executions/<id>/`, readable by root only (directories
//! 0700, files 0600, whatever mode a caller asks for):
//!
//! ```text
//! input/       files put into the work directory (created, uploaded while pending)
//! input.modes  the mode each input file gets in the sandbox (JSON: path → mode)
//! stdin        what the program reads
//! log          stdout and stderr as they were written, as records (`log.rs`)
//! stdout       the captured streams, at most the output limit each
//! stderr
//! output/      the files collected after the run by the core, which never follows a symlink,
//!              FIFO or device; outputs are served from this copy only
//! ```
//!
//! A group keeps the same per program in `programs/<i>/` ([`ProgramDir`]); its `log` holds
//! every program's streams, and `pipes/<n>` the captured traffic of pipe `n`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sandbox::{FileIn, FileSource, Io, Outcome, RelPath, StopHandle};

use crate::error::Error;
use crate::exec::events::OutputProgress;
use crate::exec::log::LogWriter;
use crate::exec::request::InputFile;
use crate::ids::valid_execution_id;

/// Directories and files of executions on the host: root's only.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// The mode an input file gets in the sandbox unless the caller says otherwise.
pub const DEFAULT_INPUT_MODE: u32 = 0o644;

/// The directory that holds every execution's directory, and the scratch space uploads are
/// received in (on the same file system, so a finished upload moves into place at once).
#[derive(Debug, Clone)]
pub struct WorkDirs {
    root: PathBuf,
    scratch: PathBuf,
}

impl WorkDirs {
    pub fn new(root: PathBuf, scratch: PathBuf) -> WorkDirs {
        WorkDirs { root, scratch }
    }

    pub fn of(&self, id: &str) -> WorkDir {
        WorkDir {
            dir: self.root.join(id),
        }
    }

    /// A new file to receive an upload in (root's only), and its path.
    pub async fn scratch_file(&self) -> std::io::Result<(tokio::fs::File, PathBuf)> {
        make_dirs(&self.scratch)?;
        let path = self
            .scratch
            .join(format!("upload-{}", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)
            .await?;
        Ok((file, path))
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

fn make_dirs(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Writes a file we own, root's only (the parents are ours too, so no link is ever followed).
fn write_owned(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        make_dirs(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    f.write_all(bytes)
}

/// A path the caller named that the file system refuses: the caller's mistake, said as such.
fn path_error(rel: &RelPath, e: std::io::Error) -> Error {
    let why = match e.raw_os_error() {
        Some(libc::ENOTDIR) | Some(libc::EEXIST) => "a part of it is a file, not a directory",
        Some(libc::EISDIR) | Some(libc::ENOTEMPTY) => "it is a directory",
        Some(libc::ENAMETOOLONG) => "a part of it is too long (at most 255 bytes each)",
        _ => return Error::Io(e),
    };
    Error::BadPath(format!("'{rel}': {why}"))
}

/// Every regular file below `root` (blocking).
fn walk_files(root: &Path, each: &mut dyn FnMut(&Path, &std::fs::Metadata)) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
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
                each(&path, &meta);
            }
        }
    }
    Ok(())
}

type Modes = BTreeMap<String, u32>;

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
    ) -> crate::error::Result<()> {
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

    /// The runs' I/O, one per program: every stream into the log as it is written, as
    /// records that name the program and the stream, each announced on `progress`.
    pub fn live_ios(
        &self,
        programs: usize,
        stop: &StopHandle,
        progress: OutputProgress,
    ) -> std::io::Result<Vec<Io>> {
        // An execution created without files has no directory until now.
        make_dirs(&self.dir)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(self.log())?;
        Ok(LogWriter::for_programs(file, progress, programs)
            .into_iter()
            .map(|(stdout, stderr)| Io {
                stdout_sink: Some(Box::new(stdout)),
                stderr_sink: Some(Box::new(stderr)),
                stop: Some(stop.clone()),
            })
            .collect())
    }

    /// Keeps the captured traffic of pipe `n`.
    pub fn store_pipe(&self, n: usize, bytes: &[u8]) -> std::io::Result<()> {
        write_owned(&self.pipe(n), bytes)
    }

    /// Bytes of every file it keeps (blocking): what counts against a storage quota.
    pub fn size_on_disk(&self) -> std::io::Result<u64> {
        let mut total = 0u64;
        walk_files(&self.dir, &mut |_, meta| {
            total = total.saturating_add(meta.len())
        })?;
        Ok(total)
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

    fn modes_file(&self) -> PathBuf {
        self.dir.join("input.modes")
    }

    fn stdin(&self) -> PathBuf {
        self.dir.join("stdin")
    }

    fn output(&self, rel: &RelPath) -> PathBuf {
        self.dir.join("output").join(rel)
    }

    fn modes(&self) -> std::io::Result<Modes> {
        match std::fs::read(self.modes_file()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Modes::new()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the modes file whole (a reader never sees half of one).
    fn save_modes(&self, modes: &Modes) -> std::io::Result<()> {
        let tmp = self.dir.join("input.modes.new");
        write_owned(
            &tmp,
            &serde_json::to_vec(modes).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, self.modes_file())
    }

    fn create(&self, files: &[InputFile], stdin: Option<&[u8]>) -> crate::error::Result<()> {
        make_dirs(&self.input_dir())?;
        let mut modes = Modes::new();
        for f in files {
            write_owned(&self.input_dir().join(&f.path), &f.bytes)
                .map_err(|e| path_error(&f.path, e))?;
            modes.insert(f.path.to_string(), f.mode);
        }
        self.save_modes(&modes)?;
        if let Some(bytes) = stdin {
            write_owned(&self.stdin(), bytes)?;
        }
        Ok(())
    }

    /// How many input files it holds.
    pub fn input_count(&self) -> std::io::Result<u64> {
        Ok(self.modes()?.len() as u64)
    }

    /// Whether `rel` is an input file already (an upload replaces it).
    pub fn has_input(&self, rel: &RelPath) -> std::io::Result<bool> {
        Ok(self.modes()?.contains_key(&rel.to_string()))
    }

    /// Moves a received upload into place as input `rel` (blocking). Called only while the
    /// execution is pending (`Lifecycle::while_pending`).
    pub fn commit_input(
        &self,
        rel: &RelPath,
        received: &Path,
        mode: u32,
    ) -> crate::error::Result<()> {
        let dest = self.input_dir().join(rel);
        if let Some(parent) = dest.parent() {
            make_dirs(parent).map_err(|e| path_error(rel, e))?;
        }
        std::fs::rename(received, &dest).map_err(|e| path_error(rel, e))?;
        let mut modes = self.modes()?;
        modes.insert(rel.to_string(), mode);
        self.save_modes(&modes)?;
        Ok(())
    }

    /// Input files as the core takes them: every file under `input/`, with its mode.
    pub fn input_files(&self) -> std::io::Result<Vec<FileIn>> {
        let root = self.input_dir();
        let modes = self.modes()?;
        let mut out = Vec::new();
        let mut failed = None;
        walk_files(&root, &mut |path, _| {
            let Ok(rel) = path.strip_prefix(&root) else {
                failed = Some(std::io::Error::other("an input outside its directory"));
                return;
            };
            let mode = modes
                .get(&rel.to_string_lossy().into_owned())
                .copied()
                .unwrap_or(DEFAULT_INPUT_MODE);
            out.push(FileIn {
                path: rel.to_path_buf(),
                source: FileSource::Host(path.to_path_buf()),
                mode: Some(mode),
            });
        })?;
        if let Some(e) = failed {
            return Err(e);
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
        for (name, bytes) in STREAMS.into_iter().zip([&outcome.stdout, &outcome.stderr]) {
            if let Err(e) = write_owned(&self.dir.join(name), bytes) {
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
                    Ok(bytes) => write_owned(&self.output(&rel), bytes).err().map(|e| {
                        tracing::error!("storing output {name} in {}: {e}", self.dir.display());
                        "the server could not keep it".to_string()
                    }),
                    Err(why) => Some(why),
                },
            };
            if let Some(why) = why {
                refused.insert(name.clone(), why);
            }
        }
        refused
    }

    /// The first `cap` bytes of each captured stream, `stdout` then `stderr`, as text, and
    /// whether there is more; `None` for one that does not exist. Reads no more than `cap`
    /// bytes of each (blocking: both in one trip to a blocking thread, since an answer
    /// waits on it).
    pub fn stream_heads(&self, cap: usize) -> [Option<(String, bool)>; 2] {
        STREAMS.map(|name| stream_head(&self.dir.join(name), cap))
    }

    /// A collected output, opened for streaming, and its length; `None` when it was not
    /// collected.
    pub async fn open_output(
        &self,
        rel: &RelPath,
    ) -> std::io::Result<Option<(tokio::fs::File, u64)>> {
        match tokio::fs::File::open(self.output(rel)).await {
            Ok(f) => {
                let len = f.metadata().await?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The captured streams, in the order [`ProgramDir::stream_heads`] gives them.
pub const STREAMS: [&str; 2] = ["stdout", "stderr"];

fn stream_head(path: &Path, cap: usize) -> Option<(String, bool)> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut head = Vec::with_capacity(cap.min(len as usize));
    file.take(cap as u64).read_to_end(&mut head).ok()?;
    let cut = len > head.len() as u64;
    if cut {
        // Never end on half a character: drop an incomplete UTF-8 sequence at the cut.
        if let Err(e) = std::str::from_utf8(&head) {
            if e.error_len().is_none() {
                head.truncate(e.valid_up_to());
            }
        }
    }
    Some((String::from_utf8_lossy(&head).into_owned(), cut))
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
