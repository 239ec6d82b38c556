//! What an environment's image implies for a run: its Env, WorkingDir, User and Cmd as
//! stored ([`EnvDefaults`]), and resolved against the image's own files into the
//! [`Defaults`] a spec is built from (`runspec.rs`).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::image::ImageRecord;
use crate::runspec::{Defaults, EnvVars};

/// Defaults a run of the environment starts from; the caller's own settings come after.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct EnvDefaults {
    /// `KEY=VALUE`, from the image config's Env.
    pub env: Vec<String>,
    /// From the image config's WorkingDir.
    pub cwd: Option<String>,
    /// From the image config's User (`uid[:gid]` or names from the image's /etc/passwd).
    pub user: Option<String>,
    /// Entrypoint + Cmd: run when the caller gives no command.
    pub cmd: Vec<String>,
    pub limits: Option<sandbox::Limits>,
}

impl EnvDefaults {
    /// The defaults an image record implies.
    pub fn of(record: &ImageRecord) -> EnvDefaults {
        EnvDefaults {
            env: record.env.clone(),
            cwd: record.cwd.clone(),
            user: record.user.clone(),
            cmd: record.cmd.clone(),
            limits: None,
        }
    }

    /// Resolves them against the image's layers (user names come from its /etc/passwd): env
    /// vars replace same-named ones, the command is used when the caller gives none.
    pub fn resolve(&self, layer_dirs: &[PathBuf]) -> Defaults {
        let user = self
            .user
            .as_deref()
            .filter(|u| !u.is_empty())
            .and_then(|user| {
                let found = resolve_user(user, layer_dirs);
                if found.is_none() {
                    tracing::warn!(
                        "image user '{user}' not found in the image; running as the default user"
                    );
                }
                found
            });
        Defaults {
            argv: self.cmd.clone(),
            env: EnvVars::Merge(self.env.clone()),
            cwd: self
                .cwd
                .as_deref()
                .filter(|c| !c.is_empty())
                .map(PathBuf::from),
            user,
            hostname: None,
            limits: self.limits.clone(),
        }
    }
}

/// Resolves `user[:group]` (numbers, or names from the image's /etc/passwd and /etc/group).
pub fn resolve_user(user: &str, layer_dirs: &[PathBuf]) -> Option<(u32, u32)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_image_file(layer_dirs, "etc/passwd").unwrap_or_default();
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => {
            let gid = lookup(&passwd, |f| f.get(2) == Some(&u))
                .and_then(|f| f.get(3).and_then(|g| g.parse().ok()));
            (uid, gid.unwrap_or(uid))
        }
        Err(_) => {
            let f = lookup(&passwd, |f| f.first() == Some(&u))?;
            (f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)
        }
    };
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = read_image_file(layer_dirs, "etc/group").unwrap_or_default();
                lookup(&group, |f| f.first() == Some(&g))?
                    .get(2)?
                    .parse()
                    .ok()?
            }
        },
    };
    Some((uid, gid))
}

fn lookup<'a>(text: &'a str, pred: impl Fn(&Vec<&'a str>) -> bool) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| pred(f))
}

/// Reads a file of the merged image: the topmost layer that has it decides (a whiteout or a
/// non-file there means "absent").
fn read_image_file(layer_dirs: &[PathBuf], rel: &str) -> Option<String> {
    for dir in layer_dirs.iter().rev() {
        let p = dir.join(rel);
        // Never through a symlink: an image's `etc -> /` would otherwise lead to the host's.
        let parent_ok = Path::new(rel)
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .all(|a| match fs::symlink_metadata(dir.join(a)) {
                Ok(m) => m.is_dir(),
                Err(_) => true,
            });
        if !parent_ok {
            return None;
        }
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => return fs::read_to_string(&p).ok(),
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runspec::SpecBuilder;

    #[test]
    fn user_lookup_never_follows_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = dir.path().join("l");
        fs::create_dir_all(&layer).expect("mkdir");
        std::os::unix::fs::symlink("/", layer.join("etc")).expect("symlink");
        assert_eq!(resolve_user("root", std::slice::from_ref(&layer)), None);
        fs::remove_file(layer.join("etc")).expect("rm");
        fs::create_dir_all(layer.join("etc")).expect("mkdir");
        fs::write(layer.join("etc/passwd"), "app:x:4242:4343::/:/bin/sh\n").expect("write");
        fs::write(layer.join("etc/group"), "grp:x:77:\n").expect("write");
        assert_eq!(
            resolve_user("app", std::slice::from_ref(&layer)),
            Some((4242, 4343))
        );
        assert_eq!(
            resolve_user("app:grp", std::slice::from_ref(&layer)),
            Some((4242, 77))
        );
        assert_eq!(resolve_user("5:6", &[]), Some((5, 6)));
        assert_eq!(resolve_user("nobody-here", &[layer]), None);
    }

    #[test]
    fn defaults_apply_before_user_flags() {
        let d = EnvDefaults {
            env: vec!["PATH=/opt/bin".into(), "FOO=1".into()],
            cwd: Some("/app".into()),
            user: Some("1234:99".into()),
            cmd: vec!["/bin/true".into()],
            limits: None,
        };
        let base = || SpecBuilder::new(sandbox::RootFs::Dir("/".into()));
        let spec = base().defaults(&d.resolve(&[])).build();
        assert!(spec.env.contains(&"PATH=/opt/bin".to_string()));
        assert_eq!(
            spec.env.iter().filter(|e| e.starts_with("PATH=")).count(),
            1
        );
        assert_eq!(spec.cwd, Some(PathBuf::from("/app")));
        assert_eq!((spec.uid, spec.gid), (1234, 99));
        assert_eq!(spec.argv, vec!["/bin/true".to_string()]);
        let spec = base()
            .defaults(&d.resolve(&[]))
            .command(vec!["x".into()])
            .build();
        assert_eq!(spec.argv, vec!["x".to_string()]);
    }
}
