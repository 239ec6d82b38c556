//! Why an image could not be imported. Every hostile input has its own variant so that callers
//! (CLI, HTTP API, tests) can tell a refused archive from a broken disk.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("not an OCI image layout: {0}")]
    InvalidLayout(String),
    #[error("unsupported digest '{0}' (only sha256 is supported)")]
    UnsupportedDigest(String),
    #[error("the image names blob {0}, which is not in the layout")]
    MissingBlob(String),
    #[error("blob {expected} does not match its digest (content hashes to {actual})")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("layer {layer}: uncompressed content hashes to {actual}, the config's diff_id is {expected}")]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("unsupported media type '{0}'")]
    UnsupportedMediaType(String),
    #[error("no manifest for linux in the image index")]
    NoManifest,
    #[error("archive entry '{entry}': {reason}")]
    UnsafePath { entry: String, reason: String },
    #[error("archive entry '{entry}' links to '{target}', outside the image root")]
    LinkEscapes { entry: String, target: String },
    #[error("archive entry '{entry}' is a {kind}, which images may not contain")]
    SpecialFile { entry: String, kind: String },
    #[error("archive is truncated: {0}")]
    Truncated(String),
    #[error(transparent)]
    OverLimit(#[from] OverLimit),
    #[error(transparent)]
    NoSpace(#[from] NoSpace),
    #[error("corrupt archive: {0}")]
    Corrupt(String),
}

/// The import limits an archive can cross; each shows as its `ImportLimits` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A blob or the image archive, as stored (compressed bytes).
    BlobBytes,
    /// One layer, uncompressed.
    LayerBytes,
    /// Every layer one import unpacks, uncompressed, together.
    ImageBytes,
    /// Archive entries one import reads (image archive and layers together).
    Entries,
    /// How deep image indexes may nest.
    IndexDepth,
    /// JSON documents (indexes, manifests, config) read to find the image.
    Documents,
    /// One JSON document.
    DocumentBytes,
    /// Free bytes left on the data filesystem.
    MinFreeBytes,
    /// Free inodes left on the data filesystem.
    MinFreeInodes,
    /// How many times its compressed size a layer unpacks to.
    Expansion,
}

impl Limit {
    /// The `ImportLimits` field that sets this limit.
    pub fn name(self) -> &'static str {
        match self {
            Limit::BlobBytes => "max_blob_bytes",
            Limit::LayerBytes => "max_layer_bytes",
            Limit::ImageBytes => "max_image_bytes",
            Limit::Entries => "max_entries",
            Limit::IndexDepth => "max_index_depth",
            Limit::Documents => "max_documents",
            Limit::DocumentBytes => "max_document_bytes",
            Limit::MinFreeBytes => "min_free_bytes",
            Limit::MinFreeInodes => "min_free_inodes",
            Limit::Expansion => "max_expansion",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Limit::MinFreeInodes => "inodes",
            _ => "bytes",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An archive crossed an import limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: over the import limit {limit} = {max}")]
pub struct OverLimit {
    pub limit: Limit,
    /// The limit's value.
    pub max: u64,
    /// What crossed it.
    pub what: String,
}

/// Unpacking would leave the data filesystem with less free space (or inodes) than the
/// import's margin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoSpace {
    /// `MinFreeBytes` or `MinFreeInodes`.
    pub limit: Limit,
    pub free: u64,
    /// What the import was about to write (0 when checked while unpacking).
    pub need: u64,
    pub margin: u64,
}

impl std::fmt::Display for NoSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = self.limit.unit();
        write!(
            f,
            "not enough room on the data filesystem: {} {unit} free",
            self.free
        )?;
        if self.need > 0 {
            write!(f, ", at least {} more needed", self.need)?;
        }
        write!(
            f,
            ", and an import leaves {} {unit} free ({})",
            self.margin, self.limit
        )
    }
}

impl ImageError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
