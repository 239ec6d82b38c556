//! Identifiers users name in paths and file names, and the one family of rules that checks
//! them: every id is 1 to 64 ASCII bytes of an allowed set. Each rule is a security check (an
//! id becomes a file or directory name), not cosmetics.

/// A rule: the bytes allowed first and after.
struct IdRule {
    first: fn(u8) -> bool,
    rest: fn(u8) -> bool,
}

const MAX_ID: usize = 64;

impl IdRule {
    fn accepts(&self, id: &str) -> bool {
        let b = id.as_bytes();
        match b.split_first() {
            Some((&first, rest)) => {
                b.len() <= MAX_ID && (self.first)(first) && rest.iter().all(|&c| (self.rest)(c))
            }
            None => false,
        }
    }
}

fn id_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn key_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')
}

fn envid_first(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn envid_byte(c: u8) -> bool {
    envid_first(c) || matches!(c, b'.' | b'_' | b'-')
}

/// An execution id: `[A-Za-z0-9_]{1,64}` (made as `exec_<32 hex>`).
pub fn valid_execution_id(id: &str) -> bool {
    IdRule {
        first: id_byte,
        rest: id_byte,
    }
    .accepts(id)
}

/// A new execution id.
pub fn new_execution_id() -> String {
    format!("exec_{}", uuid::Uuid::new_v4().simple())
}

/// A kept file's id: the same rule as an execution id (made as `file_<32 hex>`).
pub fn valid_file_id(id: &str) -> bool {
    valid_execution_id(id)
}

/// A new file id.
pub fn new_file_id() -> String {
    format!("file_{}", uuid::Uuid::new_v4().simple())
}

/// A new callback id (`cb_<32 hex>`; never in a path the user names, only shown).
pub fn new_callback_id() -> String {
    format!("cb_{}", uuid::Uuid::new_v4().simple())
}

/// A new submission id (the execution id rule: `sub_<32 hex>`).
pub fn new_submission_id() -> String {
    format!("sub_{}", uuid::Uuid::new_v4().simple())
}

/// A submission id: the execution id rule.
pub fn valid_submission_id(id: &str) -> bool {
    valid_execution_id(id)
}

/// A project id: the envid rule, `[a-z0-9][a-z0-9._-]{0,63}` (it names a directory).
pub fn valid_project_id(id: &str) -> bool {
    valid_envid(id)
}

/// A new project id: `proj_<32 hex>`.
pub fn new_project_id() -> String {
    format!("proj_{}", uuid::Uuid::new_v4().simple())
}

/// An API key's name: `[A-Za-z0-9._-]{1,64}`. (Executions belong to a key's id, so no name,
/// `master` included, can stand for anyone else.)
pub fn valid_key_name(name: &str) -> bool {
    IdRule {
        first: key_byte,
        rest: key_byte,
    }
    .accepts(name)
}

/// An environment id: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn valid_envid(id: &str) -> bool {
    IdRule {
        first: envid_first,
        rest: envid_byte,
    }
    .accepts(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envids() {
        for ok in [
            "python3",
            "c",
            "busybox",
            "a.b_c-d",
            "0abc",
            &"a".repeat(64),
        ] {
            assert!(valid_envid(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "..",
            "A",
            "a/b",
            "a b",
            &"a".repeat(65),
            "ä",
        ] {
            assert!(!valid_envid(bad), "{bad}");
        }
    }

    #[test]
    fn execution_ids_and_key_names() {
        assert!(valid_execution_id(&new_execution_id()));
        assert!(valid_submission_id(&new_submission_id()));
        assert!(valid_project_id(&new_project_id()));
        assert!(!valid_project_id("../p") && !valid_project_id(".staging"));
        assert!(valid_execution_id("exec_nope"));
        assert!(valid_file_id(&new_file_id()));
        assert!(!valid_file_id("../file_x"));
        for bad in ["", "a-b", "../x", "a/b", &"a".repeat(65)] {
            assert!(!valid_execution_id(bad), "{bad}");
        }
        for ok in ["grader", "k1", "a.b-c_d", ".x", "master"] {
            assert!(valid_key_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", &"k".repeat(65)] {
            assert!(!valid_key_name(bad), "{bad}");
        }
    }
}
