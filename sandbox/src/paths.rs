//! Paths a caller names relative to the work directory (files to collect, outputs, inputs):
//! one rule, checked once, so that the engine and the core always agree on what a path means.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Longest path text accepted (bytes).
pub const MAX_REL_PATH: usize = 1024;

/// A relative path below the work directory: normal components only (`.` dropped), never
/// absolute, never `..`, never empty. `a/./b` and `a/b` are the same `RelPath`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(PathBuf);

/// Why a path is not a [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelPathError {
    /// Empty, only `.`, too long, or with a NUL byte.
    #[error("'{0}' is not a usable path")]
    Unusable(String),
    /// Absolute, or with a `..` component.
    #[error("path '{0}' leaves the work directory (use a relative path without '..')")]
    Leaves(String),
}

impl RelPath {
    /// Checks a path given as text.
    pub fn parse(text: &str) -> Result<RelPath, RelPathError> {
        Self::new(Path::new(text))
    }

    /// Checks a path.
    pub fn new(path: &Path) -> Result<RelPath, RelPathError> {
        let shown = || path.to_string_lossy().into_owned();
        let len = path.as_os_str().len();
        if len == 0 || len > MAX_REL_PATH || path.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(RelPathError::Unusable(shown()));
        }
        let mut out = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(part) => out.push(part),
                Component::CurDir => {}
                Component::RootDir | Component::ParentDir | Component::Prefix(_) => {
                    return Err(RelPathError::Leaves(shown()))
                }
            }
        }
        if out.as_os_str().is_empty() {
            return Err(RelPathError::Unusable(shown()));
        }
        Ok(RelPath(out))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }

    pub fn into_path_buf(self) -> PathBuf {
        self.0
    }
}

impl AsRef<Path> for RelPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths_stay_inside() {
        assert_eq!(
            RelPath::parse("a/b.txt").unwrap().as_path(),
            Path::new("a/b.txt")
        );
        assert_eq!(
            RelPath::parse("./a/./b").unwrap(),
            RelPath::parse("a/b").unwrap()
        );
        for leaves in ["../a", "a/../../b", "a/..", "/etc/passwd"] {
            assert!(
                matches!(RelPath::parse(leaves), Err(RelPathError::Leaves(_))),
                "{leaves}"
            );
        }
        let long = "a".repeat(MAX_REL_PATH + 1);
        for unusable in ["", ".", "./.", "a\0b", long.as_str()] {
            assert!(
                matches!(RelPath::parse(unusable), Err(RelPathError::Unusable(_))),
                "{unusable:?}"
            );
        }
    }
}
