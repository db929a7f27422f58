//! The one error type of guest operations; it maps case for case onto the WIT `error`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    InvalidReference(String),
    Unreachable(String),
    /// The host refused the request (`HttpRequestDenied`); final, never retried.
    Denied(String),
    Unauthorized(String),
    NotFound(String),
    Registry(String),
    DigestMismatch(String),
    InvalidManifest(String),
    InvalidArchive(String),
    MissingBlobs(Vec<String>),
    Io(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidReference(m) => write!(f, "{m}"),
            Error::Unreachable(m) => write!(f, "registry unreachable: {m}"),
            Error::Denied(m) => write!(f, "refused by the host's network policy: {m}"),
            Error::Unauthorized(m) => write!(f, "not authorized: {m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::Registry(m) => write!(f, "registry error: {m}"),
            Error::DigestMismatch(m) => write!(f, "digest mismatch: {m}"),
            Error::InvalidManifest(m) => write!(f, "invalid manifest: {m}"),
            Error::InvalidArchive(m) => write!(f, "invalid archive: {m}"),
            Error::MissingBlobs(ds) => write!(
                f,
                "the destination lacks {} blob(s) that the archive leaves out: {}; push the base \
                 image there first, or pull a new archive against a base the destination holds",
                ds.len(),
                ds.join(", ")
            ),
            Error::Io(m) => write!(f, "archive I/O failed: {m}"),
        }
    }
}

impl std::error::Error for Error {}
