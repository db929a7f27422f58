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
    /// A registry answered with a status the request did not expect. By its status it is
    /// the WIT's `unauthorized` (401, 403), `not-found` (404) or `registry` (the rest).
    Status(Box<Status>),
}

/// A registry's unexpected answer, and what it said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The registry as the user named it.
    pub registry: String,
    /// What was asked, and where: `manifest v2 in app`.
    pub request: String,
    pub status: u16,
    /// The registry's diagnostics (`CODE: message; …`) made printable; empty when none.
    pub diagnostics: String,
    /// What a 401 means here (`the credentials were refused`), for the message.
    pub hint: Option<String>,
}

impl Error {
    /// Whether this is a "not found", from a registry's 404 or said as such.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound(_) => true,
            Error::Status(s) => s.status == 404,
            _ => false,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Status {
            registry,
            request,
            status,
            diagnostics,
            hint,
        } = self;
        let detail = if diagnostics.is_empty() {
            String::new()
        } else {
            format!(" {diagnostics}")
        };
        let hint = hint
            .as_deref()
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        let at = format!("{registry} {request}");
        match status {
            401 => write!(f, "not authorized: {at}: 401{detail}{hint}"),
            403 => write!(f, "not authorized: {at}: 403 denied{detail}{hint}"),
            404 => write!(f, "not found: {at}:{detail}{hint}"),
            s => write!(f, "registry error: {at}: HTTP {s}{detail}{hint}"),
        }
    }
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
            Error::Status(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_are_built_from_their_fields() {
        let status = |status, diagnostics: &str, hint: Option<&str>| {
            Error::Status(Box::new(Status {
                registry: "r.io".into(),
                request: "manifest v2 in app".into(),
                status,
                diagnostics: diagnostics.into(),
                hint: hint.map(Into::into),
            }))
        };
        assert_eq!(
            status(401, "UNAUTHORIZED: no", Some("credentials are needed")).to_string(),
            "not authorized: r.io manifest v2 in app: 401 UNAUTHORIZED: no; credentials are needed"
        );
        assert_eq!(
            status(403, "", None).to_string(),
            "not authorized: r.io manifest v2 in app: 403 denied"
        );
        let missing = status(404, "MANIFEST_UNKNOWN: unknown", None);
        assert_eq!(
            missing.to_string(),
            "not found: r.io manifest v2 in app: MANIFEST_UNKNOWN: unknown"
        );
        assert!(missing.is_not_found() && !status(500, "", None).is_not_found());
        assert_eq!(
            status(500, "", None).to_string(),
            "registry error: r.io manifest v2 in app: HTTP 500"
        );
    }
}
