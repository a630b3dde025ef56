//! What the fuzz targets share.

/// Whether a JSON value holds a NUL character in a string or a key: what no store may keep.
pub use eventhost_domain::append::holds_nul;
