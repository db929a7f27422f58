//! The tar delta: a target layer's tar described as copies from source tars the far side
//! already holds, plus the bytes it lacks.
//!
//! [`SourceIndex`] reads each source tar once and remembers, per entry, where its header group
//! (with PAX and GNU long-name headers) and data lie, a hash of the header bytes and, per
//! [`BLOCK`] of data, a strong hash (SHA-256, first 16 bytes) and rsync's rolling checksum.
//! [`Differ`] is fed the target tar and writes, per entry: the header copied from a source
//! entry of the same path whose header bytes are identical, else literal; the data compared
//! block by block with that entry's data (or, if its first block differs or no entry has its
//! path, with the entry whose first block has the same content: a moved file), matching blocks
//! copied. Where the blocks stop matching (bytes inserted or removed), the source entry's blocks
//! are searched for at every byte offset, as rsync does, so a change costs about its own size.
//! What matches nothing, padding that is not zeros, and everything from the end-of-archive
//! marker on (or from where the target stops parsing as a tar) goes literal. Adjacent copies
//! merge, so a run of unchanged entries is one copy. [`Apply`] turns the ops and the sources
//! back into the target tar, byte for byte, and checks its SHA-256.
//!
//! Sources are registry downloads being decompressed, so the applier reads each one once,
//! forward: every copy from a source starts at or after the end of the previous copy from it.
//! The differ keeps to this greedily (a match behind its source's cursor goes literal), which
//! is why reordered entries cost more than changed ones. Memory stays bounded: the differ holds
//! a few blocks of target data, one pending literal (64 KiB), a header group (PAX headers up to
//! [`MAX_EXTENSION`]) and, for a changed file, a map of its source entry's blocks; the applier
//! one buffer. The index takes 24 bytes per 4 KiB of source data plus about 100 bytes and the
//! path per entry, within [`MAX_ENTRIES`] and [`MAX_INDEX_BYTES`].
//!
//! # Op stream (version 1)
//!
//! ```text
//! "IMOTARD" 0x01                      magic and version, uncompressed
//! raw deflate (RFC 1951) of the ops:
//!   0x01 source offset len            COPY len bytes of source `source` from byte `offset`
//!   0x02 len bytes[len]               LITERAL, 1 <= len <= 1 MiB
//!   0x00 target_len sha256[32]        END: the target's length and SHA-256
//! ```
//!
//! Numbers are unsigned LEB128 (at most 10 bytes, no overflow). A COPY's `offset` is absolute
//! in its source and not below the end of the previous COPY from that source; `len` >= 1.
//! Nothing follows END, neither in the deflate stream nor after it.

mod apply;
mod diff;
mod index;
mod scan;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;

pub use apply::{Apply, Open};
pub use diff::{Differ, Encoded};
pub use index::SourceIndex;

/// Data is compared in blocks of 4 KiB: small enough that a change costs at most a few KiB of
/// literal, large enough that the index holds 16 bytes per 4 KiB of source (0.4 %).
pub const BLOCK: usize = 4096;
/// The longest LITERAL op the applier accepts.
pub const MAX_LITERAL: u64 = 1 << 20;
/// The most entries (of all sources together) an index holds.
pub const MAX_ENTRIES: usize = 2_000_000;
/// The most memory an index may take (paths, entries, block hashes), in bytes: a quarter of
/// the component's default memory limit, which the rebuilder's chunks and the deltas a pull
/// holds share. At about 40 bytes per 4 KiB block it covers some 6 GB of source layers.
pub const MAX_INDEX_BYTES: usize = 64 << 20;
/// The longest PAX or GNU long-name extension the tar scanner reads.
pub const MAX_EXTENSION: u64 = 1 << 20;

/// What an op stream starts with: "IMOTARD" and the format version.
pub const MAGIC: &[u8; 8] = b"IMOTARD\x01";
pub(crate) const OP_END: u8 = 0x00;
pub(crate) const OP_COPY: u8 = 0x01;
pub(crate) const OP_LITERAL: u8 = 0x02;

/// What can go wrong computing or applying a tar delta.
#[derive(Debug)]
pub enum DeltaError {
    /// A limit was reached: the encoded delta passed the caller's `max_len`, or the sources
    /// hold more than an index takes. The layer is best carried whole.
    TooLarge(String),
    /// The op stream is damaged or was not made by this differ.
    Corrupt(String),
    /// A source layer is not what the delta needs (not a tar, shorter, unreadable).
    Source { source: u16, message: String },
    /// Reading the op stream failed.
    Io(io::Error),
}

impl DeltaError {
    /// The `DeltaError` an `io::Error` from [`Differ`] or [`Apply`] carries, or `Io` for any
    /// other error.
    pub fn from_io(e: io::Error) -> Self {
        if e.get_ref().is_some_and(|inner| inner.is::<DeltaError>()) {
            let inner = e.into_inner().expect("checked above");
            return *inner.downcast::<DeltaError>().expect("checked above");
        }
        DeltaError::Io(e)
    }

    pub(crate) fn into_io(self) -> io::Error {
        match self {
            DeltaError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeltaError::TooLarge(what) => write!(f, "the layer delta is too large: {what}"),
            DeltaError::Corrupt(what) => write!(
                f,
                "the layer delta is corrupt: {what}; pull the image again to get an intact one"
            ),
            DeltaError::Source { source, message } => write!(
                f,
                "source layer {source} of the delta: {message}; the destination must hold the \
                 exact source layers the delta was made against"
            ),
            DeltaError::Io(e) => write!(f, "reading the layer delta: {e}"),
        }
    }
}

impl std::error::Error for DeltaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeltaError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Truncated SHA-256: 128 bits keep accidental collisions out of reach, and a crafted one can
/// only make the applier's final SHA-256 check fail, never yield a wrong layer.
pub(crate) type Hash = [u8; 16];

pub(crate) fn hash(bytes: &[u8]) -> Hash {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(bytes);
    let mut h = [0u8; 16];
    h.copy_from_slice(&d[..16]);
    h
}

/// rsync's rolling checksum of a [`BLOCK`]-long window: `a` = sum of the bytes, `b` = sum of
/// each byte times its distance from the window's end. It finds where a source block may start
/// in changed data; the strong hash then decides.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Weak {
    a: u32,
    b: u32,
}

impl Weak {
    /// Adds `bytes` at the end. Over a whole window this is the sum above: each byte is added
    /// to `b` once for every byte from it to the window's end.
    pub fn add(&mut self, bytes: &[u8]) {
        for &x in bytes {
            self.a = self.a.wrapping_add(u32::from(x));
            self.b = self.b.wrapping_add(self.a);
        }
    }

    pub fn of(window: &[u8]) -> Self {
        let mut w = Weak::default();
        w.add(window);
        w
    }

    /// Moves the window one byte on: `out` leaves it, `next` enters.
    pub fn roll(&mut self, out: u8, next: u8) {
        self.a = self
            .a
            .wrapping_sub(u32::from(out))
            .wrapping_add(u32::from(next));
        self.b = self
            .b
            .wrapping_sub((BLOCK as u32).wrapping_mul(u32::from(out)))
            .wrapping_add(self.a);
    }

    pub fn key(self) -> u64 {
        (u64::from(self.b) << 32) | u64::from(self.a)
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
