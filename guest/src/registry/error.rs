//! The registry's errors: its error body's diagnostics, and unexpected statuses.

use super::Client;
use super::http::Response;
use crate::error::{Error, Result, Status};
use crate::text::printable;

/// How much of an error body is read for the registry's diagnostics.
pub(super) const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// The statuses an answer may have: a list (`&[200, 404]`) or a range (`200..300`).
pub(super) trait Statuses {
    fn admit(&self, status: u16) -> bool;
}

impl Statuses for &[u16] {
    fn admit(&self, status: u16) -> bool {
        self.contains(&status)
    }
}

impl<const N: usize> Statuses for &[u16; N] {
    fn admit(&self, status: u16) -> bool {
        self.contains(&status)
    }
}

impl Statuses for std::ops::Range<u16> {
    fn admit(&self, status: u16) -> bool {
        self.contains(&status)
    }
}

impl Client<'_> {
    /// Turns an unexpected status into an error carrying the registry's diagnostics.
    /// The answer, if its status is one of `codes`; otherwise the error its status and the
    /// registry's diagnostics make ([`Client::status_error`]). Every status check of the
    /// client goes through here, after go-containerregistry's `CheckError`.
    pub(super) fn expect(
        &self,
        resp: Response,
        codes: impl Statuses,
        what: &str,
    ) -> Result<Response> {
        if codes.admit(resp.status) {
            Ok(resp)
        } else {
            Err(self.status_error(resp, what))
        }
    }

    /// The error for an unexpected answer: its status, and the registry's diagnostics.
    pub(super) fn status_error(&self, mut resp: Response, what: &str) -> Error {
        let body = resp.read_limited(ERROR_BODY_LIMIT).unwrap_or_default();
        let insufficient_scope = resp
            .header("www-authenticate")
            .is_some_and(|c| c.contains("insufficient_scope"));
        let hint = match resp.status {
            401 if insufficient_scope => Some(format!(
                "the account may not {} {}",
                if self.access.push {
                    "push to"
                } else {
                    "pull from"
                },
                self.repository
            )),
            401 if self.credentials.is_some() => Some("the credentials were refused".into()),
            401 => Some("credentials are needed".into()),
            _ => None,
        };
        Error::Status(Box::new(Status {
            registry: self.registry.clone(),
            request: format!("{what} in {}", self.repository),
            status: resp.status,
            diagnostics: registry_detail(&body),
            hint,
        }))
    }
}

/// The `code: message` pairs of a distribution error body, or a short excerpt of the body,
/// made [`printable`]: it goes into messages shown on a terminal.
pub(super) fn registry_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<One>,
    }

    #[derive(serde::Deserialize)]
    struct One {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|o| {
                format!(
                    "{}: {}",
                    o.code.as_deref().unwrap_or("?"),
                    o.message.as_deref().unwrap_or("")
                )
            })
            .collect();
        if !parts.is_empty() {
            return printable(&parts.join("; ")).into_owned();
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    printable(text.trim()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_lists_or_ranges() {
        assert!((&[200, 404]).admit(404) && !(&[200, 404]).admit(401));
        let slice: &[u16] = &[201];
        assert!(slice.admit(201) && !slice.admit(200));
        assert!((200..300).admit(299) && !(200..300).admit(300) && !(200..300).admit(199));
    }

    #[test]
    fn registry_errors_are_summarised() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(registry_detail(body), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(registry_detail(b"  plain text\n"), "plain text");
        // Control characters never reach a terminal, from JSON or from plain text.
        let hostile =
            br#"{"errors":[{"code":"X\u001b[2J","message":"\u001b]52;c;aGk=\u0007\u202e"}]}"#;
        assert_eq!(
            registry_detail(hostile),
            "X\\u{1b}[2J: \\u{1b}]52;c;aGk=\\u{7}\\u{202e}"
        );
        assert_eq!(registry_detail(b"a\x1b[1Ab\r"), "a\\u{1b}[1Ab");
    }
}
