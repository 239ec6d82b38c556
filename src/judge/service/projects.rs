//! Projects: written into a staging directory (an archive unpacked, or given inline), checked
//! by the one loader, placed by revision; revisions no submission uses any more go.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{invalid, Service};
use crate::auth::Principal;
use crate::clock::Micros;
use crate::error::{blocking, Error, Result};
use crate::exec::request::InputFile;
use crate::ids::{new_project_id, valid_project_id};
use crate::judge::archive::{self, UnpackLimits};
use crate::judge::project::{
    valid_test_name, ManifestDefaults, ProjectFiles, CHECKER, INTERACTOR, MANIFEST, TESTS,
    TEST_ANSWER, TEST_FILES, TEST_INPUT, WORKSPACE,
};
use crate::judge::workspace::top_level;
use crate::store::ProjectRow;

/// A project as a face gives it.
pub enum ProjectInput {
    /// An archive (a tar, plain, gzip'd or zstd'd, or a zip) of a project directory.
    Archive(PathBuf),
    Inline(InlineProject),
}

/// A project given as JSON: `project.json`'s fields, and the files' contents.
pub struct InlineProject {
    /// What `project.json` would say (everything but the contents below).
    pub manifest: Map<String, Value>,
    /// The workspace's files.
    pub files: Vec<InputFile>,
    pub tests: Vec<InlineTest>,
    /// The checker program's files.
    pub checker_files: Vec<InputFile>,
    /// The interactor's files (its sources, or its program).
    pub interactor_files: Vec<InputFile>,
}

/// A test's contents, given inline.
pub struct InlineTest {
    pub name: String,
    pub stdin: Option<Vec<u8>>,
    pub expected: Option<Vec<u8>>,
    pub files: Vec<InputFile>,
}

pub struct NewProject {
    pub input: ProjectInput,
    /// Fills in what `project.json` leaves out (an archive of a bare Sphere project).
    pub defaults: ManifestDefaults,
}
/// Writes a file of a project given inline.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o644))
}

fn write_inline(p: &InlineProject, dir: &Path) -> Result<()> {
    let manifest = serde_json::to_vec_pretty(&p.manifest)
        .map_err(|e| Error::Internal(format!("project.json: {e}")))?;
    write_file(&dir.join(MANIFEST), &manifest, 0o644)?;
    for f in &p.files {
        write_file(&dir.join(WORKSPACE).join(&f.path), &f.bytes, f.mode)?;
    }
    for (part, files) in [
        (CHECKER, &p.checker_files),
        (INTERACTOR, &p.interactor_files),
    ] {
        for f in files {
            write_file(&dir.join(part).join(&f.path), &f.bytes, f.mode)?;
        }
    }
    for t in &p.tests {
        if !valid_test_name(&t.name) {
            return Err(invalid(format!(
                "test '{}': a test name is 1-64 letters, digits, '.', '_' or '-' (not first)",
                t.name
            )));
        }
        let at = dir.join(TESTS).join(&t.name);
        std::fs::create_dir_all(&at)?;
        if let Some(b) = &t.stdin {
            write_file(&at.join(TEST_INPUT), b, 0o644)?;
        }
        if let Some(b) = &t.expected {
            write_file(&at.join(TEST_ANSWER), b, 0o644)?;
        }
        for f in &t.files {
            write_file(&at.join(TEST_FILES).join(&f.path), &f.bytes, f.mode)?;
        }
    }
    Ok(())
}

/// The project's root in an unpacked archive: the archive's root, or its only directory
/// (`tar -c aplusb/`).
fn archive_root(stage: &Path) -> std::io::Result<PathBuf> {
    let top = top_level(stage)?;
    let has_config = top.iter().any(|(n, _)| n == MANIFEST || n == "config.json");
    if !has_config && top.len() == 1 && top[0].1.is_dir() {
        return Ok(top[0].1.clone());
    }
    Ok(stage.to_path_buf())
}
impl Service {
    /// Writes a project into a staging directory, loads and checks it (environments
    /// included). Returns the staging directory and the project (which lies in it).
    async fn stage_project(&self, new: NewProject) -> Result<(PathBuf, ProjectFiles)> {
        let stage = self
            .staging()
            .join(uuid::Uuid::new_v4().simple().to_string());
        let limits = UnpackLimits {
            max_bytes: self.max_upload,
            max_entries: 100_000,
        };
        let (at, defaults) = (stage.clone(), new.defaults);
        let loaded = blocking(move || {
            std::fs::create_dir_all(&at)?;
            let root = match &new.input {
                ProjectInput::Archive(path) => {
                    let file = std::fs::File::open(path)?;
                    archive::unpack(file, &at, limits).map_err(invalid)?;
                    archive_root(&at)?
                }
                ProjectInput::Inline(p) => {
                    write_inline(p, &at)?;
                    at.clone()
                }
            };
            ProjectFiles::load(&root, &defaults).map_err(invalid)
        })
        .await;
        let files = match loaded {
            Ok(f) => f,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&stage).await;
                return Err(e);
            }
        };
        for env in files.def.environments() {
            if self.envs.get(&env)?.is_none() {
                let _ = tokio::fs::remove_dir_all(&stage).await;
                return Err(invalid(format!(
                    "environment '{env}' does not exist (see GET /api/v1/environments)"
                )));
            }
        }
        Ok((stage, files))
    }

    /// Moves a staged project to its revision's directory, in the canonical form.
    async fn place(&self, stage: PathBuf, files: ProjectFiles, dest: PathBuf) -> Result<()> {
        blocking(move || {
            files.canonicalize()?;
            if dest.exists() {
                std::fs::remove_dir_all(&dest)?;
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&files.root, &dest)?;
            if stage.exists() {
                std::fs::remove_dir_all(&stage)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn create_project(
        &self,
        who: &Principal,
        id: Option<String>,
        new: NewProject,
    ) -> Result<ProjectRow> {
        let id = match id {
            Some(id) if valid_project_id(&id) => id,
            Some(id) => {
                return Err(invalid(format!(
                    "'{id}' is not a usable project id (1-64 of a-z 0-9 . _ -, starting with a letter or digit)"
                )))
            }
            None => new_project_id(),
        };
        let (stage, files) = self.stage_project(new).await?;
        let _held = self.revisions.lock().await;
        let exists =
            || Error::AlreadyExists(format!("a project '{id}' already exists (PUT replaces it)"));
        if self.store.get_project(&id).await?.is_some() {
            let _ = tokio::fs::remove_dir_all(&stage).await;
            return Err(exists());
        }
        let def = files.def.clone();
        let dest = self.project_dir(&id, 1);
        self.place(stage, files, dest.clone()).await?;
        let now = Micros::now();
        let row = ProjectRow {
            id: id.clone(),
            owner: who.owner(),
            revision: 1,
            def,
            created_at: now,
            updated_at: now,
        };
        if !self.store.insert_project(&row).await? {
            let _ = tokio::fs::remove_dir_all(&dest).await;
            return Err(exists());
        }
        Ok(row)
    }

    /// Replaces a project (a new revision), or creates it under that id. True when created.
    pub async fn replace_project(
        &self,
        who: &Principal,
        id: &str,
        new: NewProject,
    ) -> Result<(ProjectRow, bool)> {
        if !valid_project_id(id) {
            return Err(invalid(format!("'{id}' is not a usable project id")));
        }
        let (stage, files) = self.stage_project(new).await?;
        let _held = self.revisions.lock().await;
        let existing = self.store.get_project(id).await?;
        let revision = existing.as_ref().map_or(1, |p| p.revision + 1);
        let def = files.def.clone();
        let dest = self.project_dir(id, revision);
        self.place(stage, files, dest.clone()).await?;
        let now = Micros::now();
        let row = ProjectRow {
            id: id.to_string(),
            owner: existing
                .as_ref()
                .map_or_else(|| who.owner(), |p| p.owner.clone()),
            revision,
            def,
            created_at: existing.as_ref().map_or(now, |p| p.created_at),
            updated_at: now,
        };
        let stored = if existing.is_some() {
            self.store.replace_project(&row).await?
        } else {
            self.store.insert_project(&row).await?
        };
        if !stored {
            let _ = tokio::fs::remove_dir_all(&dest).await;
            return Err(Error::WrongState(format!(
                "project '{id}' changed meanwhile; try again"
            )));
        }
        self.collect_revisions_locked(id).await;
        Ok((row, existing.is_none()))
    }

    pub async fn get_project(&self, id: &str) -> Result<ProjectRow> {
        let missing = || Error::NotFound(format!("no project '{id}'"));
        if !valid_project_id(id) {
            return Err(missing());
        }
        self.store.get_project(id).await?.ok_or_else(missing)
    }

    pub async fn list_projects(&self, limit: i64, offset: i64) -> Result<(Vec<ProjectRow>, i64)> {
        Ok(self.store.list_projects(limit, offset).await?)
    }

    /// Deletes a project; submissions already made still run on their revision.
    pub async fn delete_project(&self, id: &str) -> Result<ProjectRow> {
        let missing = || Error::NotFound(format!("no project '{id}'"));
        if !valid_project_id(id) {
            return Err(missing());
        }
        let _held = self.revisions.lock().await;
        let row = self.store.delete_project(id).await?.ok_or_else(missing)?;
        self.collect_revisions_locked(id).await;
        Ok(row)
    }

    /// Removes the project's revision directories no submission uses any more (all of them
    /// once the project is gone). The caller holds `revisions`.
    pub(super) async fn collect_revisions_locked(&self, id: &str) {
        let current = match self.store.get_project(id).await {
            Ok(p) => p.map(|p| p.revision),
            Err(e) => {
                tracing::warn!("project {id}: {e}");
                return;
            }
        };
        let active = match self.store.active_revisions(id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("project {id}: {e}");
                return;
            }
        };
        let dir = self.projects.join(id);
        let Ok(entries) = top_level(&dir) else { return };
        for (name, path) in &entries {
            let keep = name
                .parse::<i64>()
                .is_ok_and(|rev| Some(rev) == current || active.contains(&rev));
            if !keep {
                if let Err(e) = tokio::fs::remove_dir_all(path).await {
                    tracing::warn!("removing {}: {e}", path.display());
                }
            }
        }
        if current.is_none() {
            let _ = tokio::fs::remove_dir(&dir).await;
        }
    }

    pub(super) async fn collect_revisions(&self, id: &str) {
        let _held = self.revisions.lock().await;
        self.collect_revisions_locked(id).await;
    }
}
