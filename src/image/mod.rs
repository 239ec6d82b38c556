//! OCI images: reading image layouts, verifying blobs, unpacking layers safely into a
//! content-addressed store shared between images.

pub mod digest;
pub mod error;
pub mod layout;
pub mod lock;
pub mod store;
pub mod unpack;

pub use error::ImageError;
pub use store::{ImageLease, ImageRecord, ImageStore, ImportLimits};
