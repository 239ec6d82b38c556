//! Namespaces of a run and the user namespace's id mapping.

use std::fs;

use crate::error::Error;

/// How many ids the sandbox's user namespace maps (inside 0..65536).
pub const ID_RANGE: u32 = 65536;

/// clone3 flags: every namespace at once. The network namespace is left out when a prepared
/// one from the pool is joined instead; the cgroup namespace is entered by the child itself
/// on cgroup v1, after it was moved into its cgroup, so that its root is the run's cgroup.
pub fn clone_flags(new_net: bool, new_cgroup: bool) -> u64 {
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if new_net {
        flags |= libc::CLONE_NEWNET;
    }
    if new_cgroup {
        flags |= libc::CLONE_NEWCGROUP;
    }
    flags as u64
}

/// Maps ids 0..65536 inside to `base..base+65536` on the host: root inside is an unprivileged
/// id outside. Written by the parent (root on the host), so no `setgroups deny` is needed.
pub fn write_id_maps(pid: i32, base: u32) -> Result<(), Error> {
    let map = format!("0 {base} {ID_RANGE}\n");
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, &map)
            .map_err(|e| Error::Setup(format!("writing {path} ('{}'): {e}", map.trim())))?;
    }
    Ok(())
}
