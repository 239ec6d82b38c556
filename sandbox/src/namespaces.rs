//! Namespaces of a run and the user namespace's id mapping.

use std::fs;

use crate::error::Error;

/// How many ids the sandbox's user namespace maps (inside 0..65536).
pub const ID_RANGE: u32 = 65536;

/// clone3 flags: every namespace at once, owned by the new user namespace, but the network
/// namespace: the child starts in one made ahead ([`crate::netns`]). The cgroup namespace is
/// entered by the child itself on cgroup v1, after it was moved into its cgroup, so that its
/// root is the run's cgroup.
pub fn clone_flags(new_cgroup: bool) -> u64 {
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
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

/// Minimal `struct ifreq` for the flags ioctls.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Brings `lo` up in the calling thread's network namespace. Async-signal-safe (the maker of
/// a network namespace calls it after clone).
pub fn loopback_up() -> Result<(), i32> {
    // SAFETY: socket/ioctl/close on a struct laid out as the kernel's ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(crate::sys::errno());
        }
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..2].copy_from_slice(b"lo");
        let mut result = Ok(());
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) < 0 {
            result = Err(crate::sys::errno());
        } else {
            req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(s, libc::SIOCSIFFLAGS, &mut req) < 0 {
                result = Err(crate::sys::errno());
            }
        }
        libc::close(s);
        result
    }
}
