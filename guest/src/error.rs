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
    /// A registry's bytes are not the ones named: the WIT's `digest-mismatch`.
    Mismatched(Box<Mismatched>),
}

/// Bytes a registry handed out, or stored, that are not the ones named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatched {
    /// The registry as the user named it.
    pub registry: String,
    /// What, and where: `manifest v2 of app`, `blob sha256:… of app`.
    pub what: String,
    /// The digest (or size) the bytes should have had.
    pub expected: String,
    /// The digest (or size) they have.
    pub found: String,
    pub how: How,
}

/// How a registry's bytes turned out not to be the ones named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// Served when asked for by `expected`, they hash to `found`.
    Served,
    /// Said (`Docker-Content-Digest`) to be `expected`, they hash to `found`.
    Claimed,
    /// Pushed as `expected`, stored as `found`.
    Rewritten,
    /// Checked as they streamed in.
    Streamed(crate::digest::Mismatch),
}

impl Mismatched {
    /// A blob that failed its check as it streamed in.
    pub fn streamed(registry: &str, what: String, m: crate::digest::Mismatch) -> Self {
        use crate::digest::Mismatch as M;
        let (expected, found) = match &m {
            M::TooLong { expected } => (format!("{expected} bytes"), "more".to_owned()),
            M::TooShort { expected, found } => {
                (format!("{expected} bytes"), format!("{found} bytes"))
            }
            M::Digest { expected, found } => (expected.to_string(), found.to_string()),
        };
        Mismatched {
            registry: registry.to_owned(),
            what,
            expected,
            found,
            how: How::Streamed(m),
        }
    }
}

impl fmt::Display for Mismatched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Mismatched {
            registry,
            what,
            expected,
            found,
            how,
        } = self;
        match how {
            How::Served => write!(
                f,
                "digest mismatch: {registry} served {what} whose content hashes to {found}"
            ),
            How::Claimed => write!(
                f,
                "digest mismatch: {registry} says {what} is {expected} but its content hashes to {found}"
            ),
            How::Rewritten => write!(
                f,
                "digest mismatch: {registry} stored {what} as {found}: the registry rewrote it"
            ),
            How::Streamed(m) => write!(f, "digest mismatch: {registry} served {what}: {m}"),
        }
    }
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
    /// The request (`GET /v2/app/tags/list?n=1000`) of a 404 without a registry error code,
    /// where known: then the endpoint itself may be missing, not the repository or tag.
    pub endpoint: Option<String>,
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
            endpoint,
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
        if let Some(endpoint) = endpoint {
            return write!(
                f,
                "{registry} answered {status} to {endpoint} without a registry error \
                 code{detail}: it may not implement this endpoint{hint}"
            );
        }
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
                 image there first, name a repository of the destination holding them with \
                 --mount-from REPOSITORY, or pull a new archive against a base the destination \
                 holds",
                ds.len(),
                ds.join(", ")
            ),
            Error::Io(m) => write!(f, "archive I/O failed: {m}"),
            Error::Status(s) => write!(f, "{s}"),
            Error::Mismatched(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatch_messages_are_built_from_their_fields() {
        let d = |c: char| {
            crate::digest::Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
        };
        let (a, b) = (d('a'), d('b'));
        let m = |what: &str, how| Mismatched {
            registry: "r.io".into(),
            what: what.into(),
            expected: a.to_string(),
            found: b.to_string(),
            how,
        };
        assert_eq!(
            m("manifest v2 of app", How::Claimed).to_string(),
            format!(
                "digest mismatch: r.io says manifest v2 of app is {a} but its content hashes to {b}"
            )
        );
        assert_eq!(
            m(&format!("manifest {a} of app"), How::Served).to_string(),
            format!("digest mismatch: r.io served manifest {a} of app whose content hashes to {b}")
        );
        assert_eq!(
            m(&format!("manifest {a}"), How::Rewritten).to_string(),
            format!("digest mismatch: r.io stored manifest {a} as {b}: the registry rewrote it")
        );
        let streamed = Mismatched::streamed(
            "r.io",
            format!("blob {a} of app"),
            crate::digest::Mismatch::TooShort {
                expected: 10,
                found: 4,
            },
        );
        assert_eq!(
            (streamed.expected.as_str(), streamed.found.as_str()),
            ("10 bytes", "4 bytes")
        );
        assert_eq!(
            streamed.to_string(),
            format!("digest mismatch: r.io served blob {a} of app: 4 bytes where 10 were declared")
        );
    }

    #[test]
    fn status_messages_are_built_from_their_fields() {
        let status = |status, diagnostics: &str, hint: Option<&str>| {
            Error::Status(Box::new(Status {
                registry: "r.io".into(),
                request: "manifest v2 in app".into(),
                status,
                diagnostics: diagnostics.into(),
                hint: hint.map(Into::into),
                endpoint: None,
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
        // A 404 without a registry error code, its request known: the endpoint may be
        // missing, not the tag list, and the message does not say "not found".
        let endpoint = Error::Status(Box::new(Status {
            registry: "r.io".into(),
            request: "tag list in app".into(),
            status: 404,
            diagnostics: "(a web page)".into(),
            hint: None,
            endpoint: Some("GET /v2/app/tags/list?n=1000".into()),
        }));
        assert_eq!(
            endpoint.to_string(),
            "r.io answered 404 to GET /v2/app/tags/list?n=1000 without a registry error code \
             (a web page): it may not implement this endpoint"
        );
        assert!(endpoint.is_not_found());
    }
}
