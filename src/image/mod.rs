//! OCI images: reading image layouts, verifying blobs, unpacking layers safely into a
//! content-addressed store shared between images, within bounded limits.

pub mod budget;
pub mod digest;
pub mod error;
pub mod layout;
pub mod lock;
mod staging;
pub mod store;
pub mod tar_stream;
pub mod unpack;

pub use budget::ImportLimits;
pub use error::{ImageError, Limit, NoSpace, OverLimit};
pub use store::{ImageLease, ImageRecord, ImageStore};
