//! Dropping every capability before exec: bounding set, ambient set, then the
//! effective/permitted/inheritable sets (the uid change clears those too; we clear them
//! explicitly so that no SECBIT can keep them).

/// The highest capability number the kernel knows, read once before clone.
pub fn last_cap() -> u8 {
    caps::runtime::thread_all_supported()
        .iter()
        .map(|c| c.index())
        .max()
        .unwrap_or(40)
}

/// Drops the bounding and ambient sets. Needs CAP_SETPCAP (in the sandbox's user namespace),
/// so it runs before the uid change. Async-signal-safe.
pub fn drop_bounding_and_ambient(last_cap: u8) -> Result<(), i32> {
    for cap in 0..=last_cap as libc::c_ulong {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = crate::sys::errno();
            if e != libc::EINVAL {
                return Err(e);
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(crate::sys::errno());
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empties the effective, permitted and inheritable sets. Async-signal-safe.
pub fn clear_all() -> Result<(), i32> {
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and two data structs as capset(2) with version 3 expects.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if ret != 0 {
        return Err(crate::sys::errno());
    }
    Ok(())
}
