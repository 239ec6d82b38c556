//! A clone from the engine (a one-shot engine's init, or the spawner when it is forked) copies
//! every descriptor of the engine, and the child closes them first thing; until then, a file
//! another thread holds open for writing is open for writing in that child too, and a program
//! exec'd from that file meanwhile fails with ETXTBSY. So writers of files that may be exec'd
//! (the copy-in) hold a shared guard while their descriptor is open, and such a clone holds it
//! exclusively: no such descriptor exists at the moment of the clone. (The spawner's inits
//! hold only what the spawner was sent.) Forks the engine does not make (a library user's
//! `Command` on another thread) cannot be guarded: the program's exec waits out such a copy
//! (`child::program_main`).

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static GUARD: RwLock<()> = RwLock::new(());

/// Held while a file that may be exec'd is open for writing.
pub fn writing() -> RwLockReadGuard<'static, ()> {
    GUARD.read().unwrap_or_else(|p| p.into_inner())
}

/// Held across a clone from the engine.
pub fn cloning() -> RwLockWriteGuard<'static, ()> {
    GUARD.write().unwrap_or_else(|p| p.into_inner())
}
