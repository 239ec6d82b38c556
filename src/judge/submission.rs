//! A submission's source as it goes into the workspace: the same rules for an upload and for
//! `sandpit judge`. An archive (tar or zip) whose only top-level entry is `workspace/` (Sphere's convention) has
//! its files there; a lone file goes where the project says (`source`, e.g. `main.c`); no file
//! may land on a path the project keeps read-only (`config.json`'s `files.read_only`).

use std::path::{Path, PathBuf};

use sandbox::RelPath;

use super::archive::{self, UnpackLimits};
use super::project::ProjectDef;
use super::workspace::{top_level, SubmissionDir};

/// Most files one submission may hold, and bytes.
pub const LIMITS: UnpackLimits = UnpackLimits {
    max_bytes: 256 << 20,
    max_entries: 10_000,
};

/// Every regular file below `root`, as relative paths, sorted.
fn files_below(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for (_, path) in top_level(&dir)? {
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Unpacks an archive (tar or zip) of the submission's files into its `source/` (blocking).
pub fn unpack_source(dir: &SubmissionDir, bytes: &[u8]) -> Result<(), String> {
    archive::unpack(std::io::Cursor::new(bytes), &dir.source(), LIMITS).map(drop)
}

/// Puts the files in `source/` in shape (blocking); the error is the caller's fault.
pub fn normalize(def: &ProjectDef, dir: &SubmissionDir) -> Result<(), String> {
    let src = dir.source();
    let io = |e: std::io::Error| format!("the submission's files: {e}");
    let top = top_level(&src).map_err(io)?;
    if top.len() == 1 && top[0].0 == "workspace" && top[0].1.is_dir() {
        let moved = src.join(".workspace");
        std::fs::rename(&top[0].1, &moved).map_err(io)?;
        for (name, path) in top_level(&moved).map_err(io)? {
            std::fs::rename(path, src.join(name)).map_err(io)?;
        }
        std::fs::remove_dir(&moved).map_err(io)?;
    }
    let files = files_below(&src).map_err(io)?;
    if let (Some(target), [only]) = (&def.source, files.as_slice()) {
        let target = RelPath::parse(target).map_err(|e| e.to_string())?;
        if only.as_path() != target.as_path() {
            let to = src.join(&target);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::rename(src.join(only), &to).map_err(io)?;
        }
    }
    let files = files_below(&src).map_err(io)?;
    for ro in &def.config.files.read_only {
        let ro = RelPath::parse(ro).map_err(|e| e.to_string())?;
        if let Some(f) = files.iter().find(|f| f.starts_with(ro.as_path())) {
            return Err(format!(
                "'{}' is read-only in this project (config.json files.read_only): a submission may not add or change it",
                f.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::request::InputFile;
    use crate::judge::project::{ManifestDefaults, ProjectFiles};

    fn def(extra: &str) -> ProjectDef {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            format!(
                r#"{{"version": 2.1, "scenarios": {{"a": {{"stages": {{"run": {{"command": "x"}}}}}}}}{extra}}}"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("project.json"),
            r#"{"environment": "c", "source": "main.c"}"#,
        )
        .unwrap();
        ProjectFiles::load(dir.path(), &ManifestDefaults::default())
            .unwrap()
            .def
    }

    fn submission(files: &[&str]) -> (tempfile::TempDir, SubmissionDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SubmissionDir::at(tmp.path().join("s"));
        let files: Vec<InputFile> = files
            .iter()
            .map(|p| InputFile {
                path: RelPath::parse(p).unwrap(),
                bytes: b"x".to_vec(),
                mode: 0o644,
            })
            .collect();
        dir.create(&files).unwrap();
        (tmp, dir)
    }

    #[test]
    fn a_lone_file_goes_where_the_project_says() {
        let (_t, dir) = submission(&["solution.c"]);
        normalize(&def(""), &dir).unwrap();
        assert_eq!(
            files_below(&dir.source()).unwrap(),
            [PathBuf::from("main.c")]
        );
        // Several files stay where they are.
        let (_t, dir) = submission(&["a.c", "b.c"]);
        normalize(&def(""), &dir).unwrap();
        assert_eq!(files_below(&dir.source()).unwrap().len(), 2);
    }

    #[test]
    fn spheres_workspace_folder_is_the_root() {
        let (_t, dir) = submission(&["workspace/src/a.c", "workspace/b.c"]);
        normalize(&def(""), &dir).unwrap();
        assert_eq!(
            files_below(&dir.source()).unwrap(),
            [PathBuf::from("b.c"), PathBuf::from("src/a.c")]
        );
    }

    #[test]
    fn read_only_paths_are_refused() {
        let ro = r#", "files": {"read_only": ["tests", "Makefile"]}"#;
        for bad in [&["tests/t1.py", "a.c"][..], &["Makefile", "a.c"]] {
            let (_t, dir) = submission(bad);
            let e = normalize(&def(ro), &dir).unwrap_err();
            assert!(e.contains("read-only"), "{e}");
        }
        let (_t, dir) = submission(&["testsuite.c", "a.c"]);
        normalize(&def(ro), &dir).unwrap();
    }
}
