//! What one import may consume: the limits (`ImportLimits`) and the running count against them
//! (`Budget`). Compressed sizes say little about what an archive unpacks to (a 9 MiB gzip can
//! hold 9 GiB of zeros), so the uncompressed streams are metered as they are read, before
//! anything is written; the data filesystem's free space is checked before unpacking and
//! every few MiB or few hundred entries while unpacking, keeping a margin for everything else
//! that lives there (the database, other runs, other imports).

use std::cell::Cell;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::error::{ImageError, Limit, NoSpace, OverLimit, Result};

/// Limits of one import. Every one of them has a typed error that names it ([`Limit`]).
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    /// Largest blob or image archive as stored (compressed bytes), and largest image archive
    /// once decompressed.
    pub max_blob_bytes: u64,
    /// Largest layer, uncompressed.
    pub max_layer_bytes: u64,
    /// Most uncompressed bytes one import unpacks, all its layers together (layers already in
    /// the store are not unpacked again and do not count).
    pub max_image_bytes: u64,
    /// Most archive entries one import reads, image archive and layers together.
    pub max_entries: u64,
    /// How deep image indexes may nest below `index.json`.
    pub max_index_depth: u64,
    /// Most JSON documents (indexes, manifests, config) read to find the image; each
    /// distinct document is read once however often it is referenced.
    pub max_documents: u64,
    /// Largest JSON document.
    pub max_document_bytes: u64,
    /// Free bytes an import leaves on the data filesystem.
    pub min_free_bytes: u64,
    /// Free inodes an import leaves on the data filesystem (when it counts inodes).
    pub min_free_inodes: u64,
    /// How many times its compressed size a layer may unpack to (past the first
    /// `expansion_allowance` bytes): real layers compress a few times, a decompression bomb a
    /// thousand times, and this stops one long before `max_layer_bytes`.
    pub max_expansion: u64,
    /// Bytes any layer may unpack to whatever its compressed size.
    pub expansion_allowance: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_blob_bytes: 8 << 30,
            max_layer_bytes: 4 << 30,
            max_image_bytes: 8 << 30,
            max_entries: 1_000_000,
            max_index_depth: 4,
            max_documents: 64,
            max_document_bytes: 8 << 20,
            min_free_bytes: 256 << 20,
            min_free_inodes: 16 << 10,
            max_expansion: 100,
            expansion_allowance: 64 << 20,
        }
    }
}

/// statvfs after this many bytes or entries (the margin must be larger than what can be
/// written between two checks; entries may each cost a block and an inode).
const CHECK_EVERY_BYTES: u64 = 4 << 20;
const CHECK_EVERY_ENTRIES: u64 = 256;

/// The running count of one import against its limits. Shared by the readers and the
/// unpacker of that import (one thread), hence the cells.
#[derive(Debug)]
pub struct Budget {
    limits: ImportLimits,
    /// Where the import writes: the free-space checks are made on its filesystem.
    dir: PathBuf,
    image_bytes: Cell<u64>,
    entries: Cell<u64>,
    unchecked_bytes: Cell<u64>,
    unchecked_entries: Cell<u64>,
}

impl Budget {
    pub fn new(limits: ImportLimits, dir: &Path) -> Budget {
        Budget {
            limits,
            dir: dir.to_path_buf(),
            image_bytes: Cell::new(0),
            entries: Cell::new(0),
            unchecked_bytes: Cell::new(0),
            unchecked_entries: Cell::new(0),
        }
    }

    pub fn limits(&self) -> &ImportLimits {
        &self.limits
    }

    /// Refuses when writing `need` more bytes would leave less than the margins free.
    pub fn ensure_room(&self, need: u64) -> Result<()> {
        let st = nix::sys::statvfs::statvfs(&self.dir).map_err(|e| {
            ImageError::io(
                format!("statvfs {}", self.dir.display()),
                io::Error::from(e),
            )
        })?;
        let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
        let margin = self.limits.min_free_bytes;
        if free < margin.saturating_add(need) {
            return Err(NoSpace {
                limit: Limit::MinFreeBytes,
                free,
                need,
                margin,
            }
            .into());
        }
        // Filesystems that allocate inodes on demand report none at all.
        let inodes = st.files_available() as u64;
        let margin = self.limits.min_free_inodes;
        if st.files() > 0 && inodes < margin {
            return Err(NoSpace {
                limit: Limit::MinFreeInodes,
                free: inodes,
                need: 0,
                margin,
            }
            .into());
        }
        Ok(())
    }

    /// Counts one archive entry (whatever it is: each may cost an inode and a block).
    pub fn entry(&self) -> Result<()> {
        let n = self.entries.get() + 1;
        self.entries.set(n);
        if n > self.limits.max_entries {
            return Err(OverLimit {
                limit: Limit::Entries,
                max: self.limits.max_entries,
                what: "archive entries".into(),
            }
            .into());
        }
        let unchecked = self.unchecked_entries.get() + 1;
        if unchecked >= CHECK_EVERY_ENTRIES {
            self.unchecked_entries.set(0);
            self.ensure_room(0)?;
        } else {
            self.unchecked_entries.set(unchecked);
        }
        Ok(())
    }

    /// Charges bytes of an uncompressed stream about to be unpacked.
    fn charge(&self, n: u64, to_image: bool) -> Result<()> {
        if to_image {
            let total = self.image_bytes.get() + n;
            self.image_bytes.set(total);
            if total > self.limits.max_image_bytes {
                return Err(OverLimit {
                    limit: Limit::ImageBytes,
                    max: self.limits.max_image_bytes,
                    what: "the image's layers".into(),
                }
                .into());
            }
        }
        let unchecked = self.unchecked_bytes.get() + n;
        if unchecked >= CHECK_EVERY_BYTES {
            self.unchecked_bytes.set(0);
            self.ensure_room(0)?;
        } else {
            self.unchecked_bytes.set(unchecked);
        }
        Ok(())
    }

    /// Meters one layer's uncompressed stream: at most `max_layer_bytes`, and at most
    /// `max_expansion` times its `compressed` size (past the allowance); charged to the image.
    pub fn layer<R: Read>(&self, inner: R, compressed: u64) -> Metered<'_, R> {
        let expanded = compressed
            .saturating_mul(self.limits.max_expansion)
            .saturating_add(self.limits.expansion_allowance);
        let (limit, max) = if expanded < self.limits.max_layer_bytes {
            (Limit::Expansion, expanded)
        } else {
            (Limit::LayerBytes, self.limits.max_layer_bytes)
        };
        Metered {
            inner,
            budget: self,
            count: 0,
            limit,
            max,
            to_image: true,
        }
    }

    /// Meters an image archive's uncompressed stream: at most `max_blob_bytes`.
    pub fn archive<R: Read>(&self, inner: R) -> Metered<'_, R> {
        Metered {
            inner,
            budget: self,
            count: 0,
            limit: Limit::BlobBytes,
            max: self.limits.max_blob_bytes,
            to_image: false,
        }
    }
}

/// A reader of an uncompressed stream that charges what flows through it to a budget and
/// stops, with an error, at the first byte over a limit or when the filesystem runs short.
pub struct Metered<'b, R> {
    inner: R,
    budget: &'b Budget,
    count: u64,
    limit: Limit,
    max: u64,
    to_image: bool,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.max {
            return Err(io::Error::other(OverLimit {
                limit: self.limit,
                max: self.max,
                what: "uncompressed stream".into(),
            }));
        }
        match self.budget.charge(n as u64, self.to_image) {
            Ok(()) => Ok(n),
            Err(ImageError::OverLimit(e)) => Err(io::Error::other(e)),
            Err(ImageError::NoSpace(e)) => Err(io::Error::other(e)),
            Err(ImageError::Io { context, source }) => Err(io::Error::new(
                source.kind(),
                format!("{context}: {source}"),
            )),
            Err(other) => Err(io::Error::other(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meters_layers_and_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = ImportLimits {
            max_layer_bytes: 100,
            max_image_bytes: 150,
            max_entries: 2,
            min_free_bytes: 0,
            min_free_inodes: 0,
            ..ImportLimits::default()
        };
        let budget = Budget::new(limits, dir.path());
        let mut sink = Vec::new();
        budget
            .layer(&[0u8; 100][..], 100)
            .read_to_end(&mut sink)
            .expect("a layer at the limit");
        let e = budget.layer(&[0u8; 101][..], 101).read_to_end(&mut sink);
        let e = super::super::digest::classify("l", e.unwrap_err());
        assert!(
            matches!(&e, ImageError::OverLimit(o) if o.limit == Limit::LayerBytes),
            "{e}"
        );
        let budget = Budget::new(limits, dir.path());
        budget
            .layer(&[0u8; 80][..], 80)
            .read_to_end(&mut sink)
            .expect("80");
        let e = budget.layer(&[0u8; 80][..], 80).read_to_end(&mut sink);
        let e = super::super::digest::classify("l", e.unwrap_err());
        assert!(
            matches!(&e, ImageError::OverLimit(o) if o.limit == Limit::ImageBytes),
            "{e}"
        );
        budget.entry().expect("1");
        budget.entry().expect("2");
        assert!(matches!(
            budget.entry(),
            Err(ImageError::OverLimit(OverLimit {
                limit: Limit::Entries,
                ..
            }))
        ));
    }

    #[test]
    fn keeps_the_free_space_margin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let budget = Budget::new(
            ImportLimits {
                min_free_bytes: u64::MAX / 2,
                ..ImportLimits::default()
            },
            dir.path(),
        );
        assert!(matches!(
            budget.ensure_room(0),
            Err(ImageError::NoSpace(NoSpace {
                limit: Limit::MinFreeBytes,
                ..
            }))
        ));
        let budget = Budget::new(ImportLimits::default(), dir.path());
        assert!(budget.ensure_room(1 << 20).is_ok());
    }
}

#[cfg(test)]
mod expansion_tests {
    use super::*;

    #[test]
    fn a_layer_that_expands_a_thousand_times_is_refused_early() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = ImportLimits {
            max_expansion: 10,
            expansion_allowance: 100,
            min_free_bytes: 0,
            min_free_inodes: 0,
            ..ImportLimits::default()
        };
        let budget = Budget::new(limits, dir.path());
        let mut sink = Vec::new();
        // 10 compressed bytes may unpack to 10 × 10 + 100.
        budget
            .layer(&[0u8; 200][..], 10)
            .read_to_end(&mut sink)
            .expect("within the expansion");
        let e = budget.layer(&[0u8; 201][..], 10).read_to_end(&mut sink);
        let e = super::super::digest::classify("l", e.unwrap_err());
        assert!(
            matches!(&e, ImageError::OverLimit(o) if o.limit == Limit::Expansion),
            "{e}"
        );
        assert!(e.to_string().contains("max_expansion"), "{e}");
    }
}
