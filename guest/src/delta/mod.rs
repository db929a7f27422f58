//! Byte-exact layer deltas: carry what changed inside a layer and rebuild the very blob on
//! the far side, so the manifest (and every signature over it) stays as it was.

// The tar delta (source index, differ, applier).

// Rebuilders of compressed layers from their plain tar.
pub mod gzip;
