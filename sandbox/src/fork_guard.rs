//! clone3 copies every descriptor of the engine into the new init, which closes them first
//! thing; until then, a file another thread holds open for writing is open for writing in that
//! init too, and a program exec'd from that file meanwhile fails with ETXTBSY. So writers of
//! files that may be exec'd (the copy-in) hold a shared guard while their descriptor is open,
//! and clone3 holds it exclusively: no such descriptor exists at the moment of a clone.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static GUARD: RwLock<()> = RwLock::new(());

/// Held while a file that may be exec'd is open for writing.
pub fn writing() -> RwLockReadGuard<'static, ()> {
    GUARD.read().unwrap_or_else(|p| p.into_inner())
}

/// Held across clone3.
pub fn cloning() -> RwLockWriteGuard<'static, ()> {
    GUARD.write().unwrap_or_else(|p| p.into_inner())
}
