//! A submission's files on disk, `DATA/submissions/<id>/` (or a temporary directory for
//! `sandpit judge`):
//!
//! ```text
//! source/            the user's files, as submitted (kept to re-run after a restart)
//! workspace/         the project's workspace, the source over it, then what each finished
//!                    stage left (its artifacts): every stage starts from a copy of it, and
//!                    each test sees it read-only (bound, not copied)
//! streams/           stage_<stage>_output, stage_<stage>_error, tests_report, debug_log
//! tests/<n>/stdout   the program's output on test n (the checker reads it, bound read-only)
//! progress           what happened so far, one JSON object a line (the live progress stream)
//! empty              an empty file: a missing input or answer
//! ```

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sandbox::RelPath;

use crate::exec::request::InputFile;

pub const DEBUG_LOG: &str = "debug_log";
pub const TESTS_REPORT: &str = "tests_report";

/// The directory that holds every submission's directory.
#[derive(Debug, Clone)]
pub struct SubmissionDirs {
    root: PathBuf,
}

impl SubmissionDirs {
    pub fn new(root: PathBuf) -> SubmissionDirs {
        SubmissionDirs { root }
    }

    pub fn of(&self, id: &str) -> SubmissionDir {
        SubmissionDir::at(self.root.join(id))
    }

    /// The ids that have a directory.
    pub async fn ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(mut dir) = tokio::fs::read_dir(&self.root).await {
            while let Ok(Some(entry)) = dir.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                if crate::ids::valid_execution_id(&name) {
                    out.push(name);
                }
            }
        }
        out
    }
}

/// One submission's directory.
#[derive(Debug, Clone)]
pub struct SubmissionDir {
    dir: PathBuf,
}

/// Writes a file we own, making its parents.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Never through what is there: a file is replaced, not written into.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Copies a tree of regular files and directories (modes kept, world-readable so that the
/// sandbox's user can read what is bound); anything else is refused.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else if meta.is_file() {
        let _ = std::fs::remove_file(to);
        std::fs::copy(from, to)?;
        let mode = (meta.permissions().mode() & 0o777) | 0o444;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file or a directory", from.display()),
        ))
    }
}

/// The top-level entries of a directory: name → path, sorted (none when it does not exist).
pub fn top_level(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    out.sort();
    Ok(out)
}

impl SubmissionDir {
    pub fn at(dir: PathBuf) -> SubmissionDir {
        SubmissionDir { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn source(&self) -> PathBuf {
        self.dir.join("source")
    }

    pub fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    pub fn stream(&self, name: &str) -> PathBuf {
        self.dir.join("streams").join(name)
    }

    pub fn test_output(&self, index: usize) -> PathBuf {
        self.dir
            .join("tests")
            .join(index.to_string())
            .join("stdout")
    }

    /// Where a helper program (the interactor) is built: a copy of its files with what its
    /// build made.
    pub fn helper(&self, name: &str) -> PathBuf {
        self.dir.join("helpers").join(name)
    }

    /// Lays a helper's build out afresh: its files, then what its build made (executable).
    pub fn keep_helper(
        &self,
        name: &str,
        files: &Path,
        made: &[(RelPath, Vec<u8>)],
    ) -> std::io::Result<PathBuf> {
        let dir = self.helper(name);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        for (n, path) in top_level(files)? {
            copy_tree(&path, &dir.join(n))?;
        }
        for (rel, bytes) in made {
            write_file(&dir.join(rel), bytes, 0o755)?;
        }
        Ok(dir)
    }

    pub fn progress(&self) -> PathBuf {
        self.dir.join("progress")
    }

    /// An empty file (made on first use).
    pub fn empty(&self) -> std::io::Result<PathBuf> {
        let p = self.dir.join("empty");
        if !p.is_file() {
            write_file(&p, b"", 0o644)?;
        }
        Ok(p)
    }

    /// Creates the directory with the submission's files (blocking). On failure nothing is
    /// left.
    pub fn create(&self, files: &[InputFile]) -> std::io::Result<()> {
        let written = (|| {
            std::fs::create_dir_all(self.source())?;
            std::fs::create_dir_all(self.dir.join("streams"))?;
            for f in files {
                write_file(&self.source().join(&f.path), &f.bytes, f.mode | 0o444)?;
            }
            Ok(())
        })();
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        written
    }

    /// Lays the workspace out afresh: the project's, then the source over it.
    pub fn lay_out(&self, project_workspace: &Path) -> std::io::Result<()> {
        let ws = self.workspace();
        match std::fs::remove_dir_all(&ws) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&ws)?;
        std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755))?;
        for (name, path) in top_level(project_workspace)? {
            copy_tree(&path, &ws.join(name))?;
        }
        for (name, path) in top_level(&self.source())? {
            copy_tree(&path, &ws.join(name))?;
        }
        Ok(())
    }

    /// Keeps a file a stage left (an artifact) in the workspace, executable (a build's
    /// program loses its mode on the way out of the sandbox).
    pub fn keep_artifact(&self, rel: &RelPath, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.workspace().join(rel);
        let mut dir = self.workspace();
        if let Some(parent) = rel.as_path().parent() {
            for part in parent.components() {
                dir.push(part);
                if dir.is_file() {
                    std::fs::remove_file(&dir)?;
                }
                if !dir.is_dir() {
                    std::fs::create_dir(&dir)?;
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
                }
            }
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        }
        write_file(&path, bytes, 0o755)
    }

    pub fn write_stream(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        write_file(&self.stream(name), bytes, 0o644)
    }

    pub fn write_test_output(&self, index: usize, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let p = self.test_output(index);
        write_file(&p, bytes, 0o644)?;
        Ok(p)
    }

    /// Adds a line to the debug log (the project's debugging output: a failed checker, a
    /// stage's failure, a resumed run).
    pub fn debug(&self, line: &str) {
        let path = self.stream(DEBUG_LOG);
        let _ = std::fs::create_dir_all(self.dir.join("streams"));
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", line.trim_end());
        }
    }

    /// Appends one line to the progress log (one write, so a follower never sees half of it).
    pub fn append_progress(&self, line: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.progress())
        {
            let _ = f.write_all(format!("{}\n", line.trim_end()).as_bytes());
        }
    }

    /// Removes everything (an absent directory is fine).
    pub async fn remove(&self) -> std::io::Result<()> {
        match tokio::fs::remove_dir_all(&self.dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_the_project_then_the_source_then_artifacts() {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("project");
        std::fs::create_dir_all(project.join("lib")).unwrap();
        std::fs::write(project.join("main.c"), "project's").unwrap();
        std::fs::write(project.join("lib/util.h"), "util").unwrap();
        let dir = SubmissionDir::at(tmp.path().join("sub"));
        dir.create(&[InputFile {
            path: RelPath::parse("main.c").unwrap(),
            bytes: b"user's".to_vec(),
            mode: 0o600,
        }])
        .unwrap();
        dir.lay_out(&project).unwrap();
        let ws = dir.workspace();
        assert_eq!(std::fs::read(ws.join("main.c")).unwrap(), b"user's");
        assert_eq!(std::fs::read(ws.join("lib/util.h")).unwrap(), b"util");
        let mode = std::fs::metadata(ws.join("main.c"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o444, 0o444, "readable by the sandbox's user");
        dir.keep_artifact(&RelPath::parse("bin/solution").unwrap(), b"ELF")
            .unwrap();
        let mode = std::fs::metadata(ws.join("bin/solution"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // Laying out again starts over.
        dir.lay_out(&project).unwrap();
        assert!(!ws.join("bin").exists());
        dir.debug("one");
        dir.debug("two\n");
        assert_eq!(
            std::fs::read_to_string(dir.stream(DEBUG_LOG)).unwrap(),
            "one\ntwo\n"
        );
    }
}
