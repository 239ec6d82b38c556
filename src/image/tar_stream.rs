//! Reading a tar stream entry by entry, to its proper end. The `tar` reader takes EOF before a
//! header for the end of the archive, so an archive cut exactly between two entries (its
//! digest computed over the cut bytes) would pass as whole: here the end-of-archive marker
//! (two zero blocks) is required, with nothing but zeros after it. Every entry is counted
//! against the import's budget.

use std::io::Read;

use super::budget::Budget;
use super::digest::classify;
use super::error::{ImageError, Result};

const BLOCK: usize = 512;

/// Calls `each` on every entry of the tar stream, then checks that the stream ended with the
/// end-of-archive marker. `context` names the stream in errors.
pub fn read_entries<R: Read>(
    reader: R,
    context: &str,
    budget: &Budget,
    mut each: impl FnMut(&mut tar::Entry<'_, R>) -> Result<()>,
) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| classify(context, e))? {
        let mut entry = entry.map_err(|e| classify(context, e))?;
        budget.entry()?;
        each(&mut entry)?;
    }
    let rest = archive.into_inner();
    check_end(rest, context)
}

/// The tar reader stopped at a zero block or at EOF; only the first can be an end, and only
/// with one more zero block after it, then nothing but zeros (writers pad to their record
/// size). EOF right after the last entry leaves nothing to read here.
fn check_end<R: Read>(mut rest: R, context: &str) -> Result<()> {
    let mut buf = [0u8; 8 * BLOCK];
    let mut trailing = 0usize;
    loop {
        let n = rest.read(&mut buf).map_err(|e| classify(context, e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(ImageError::Corrupt(format!(
                "{context}: data after the end-of-archive marker"
            )));
        }
        trailing += n;
    }
    if trailing < BLOCK {
        return Err(ImageError::Truncated(format!(
            "{context}: the archive ends without its end-of-archive marker (cut between entries?)"
        )));
    }
    Ok(())
}
