//! The registry's errors: its error body's diagnostics, and unexpected statuses.

use super::Client;
use super::http::{Method, Response, Url};
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

    /// [`Client::expect`] for a request the message may name (`GET /v2/app/tags/list`): a
    /// 404 without a registry error code then says the endpoint itself may be missing.
    pub(super) fn expect_sent(
        &self,
        resp: Response,
        codes: impl Statuses,
        what: &str,
        sent: (Method, &Url),
    ) -> Result<Response> {
        if codes.admit(resp.status) {
            Ok(resp)
        } else {
            Err(self.answer_error(resp, what, Some(sent)))
        }
    }

    /// The error for an unexpected answer: its status, and the registry's diagnostics.
    pub(super) fn status_error(&self, resp: Response, what: &str) -> Error {
        self.answer_error(resp, what, None)
    }

    /// [`Client::status_error`], naming the request when `sent` gives it.
    pub(super) fn answer_error(
        &self,
        mut resp: Response,
        what: &str,
        sent: Option<(Method, &Url)>,
    ) -> Error {
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
        let said = Said::of(resp.header("content-type"), &body);
        // A missing repository, tag or blob has its error code (NAME_UNKNOWN, …); a 404
        // without one is as likely the endpoint's: a registry lacking it, a web server in front.
        let endpoint = match sent {
            Some((method, url)) if resp.status == 404 && !said.coded => {
                Some(format!("{} {}", method.as_str(), printable(&url.path)))
            }
            _ => None,
        };
        let diagnostics = if endpoint.is_some() {
            said.aside()
        } else {
            said.text
        };
        Error::Status(Box::new(Status {
            registry: self.registry.clone(),
            request: format!("{what} in {}", self.repository),
            status: resp.status,
            diagnostics,
            hint,
            endpoint,
        }))
    }
}

/// What an answer's body says, made [`printable`]: it goes into messages shown on a terminal.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Said {
    /// `CODE: message; …`, a short excerpt of the body, or a web page described; empty when
    /// the body is.
    pub text: String,
    /// Whether it carried a distribution error code.
    pub coded: bool,
    /// Whether it was a web page, described rather than pasted.
    pub page: bool,
}

impl Said {
    /// Reads a body: a distribution error body's `code: message` pairs, a web page (by its
    /// `content_type` or its first bytes) described by its title, or else a short excerpt.
    pub fn of(content_type: Option<&str>, body: &[u8]) -> Said {
        let codes = error_codes(body);
        if !codes.is_empty() {
            return Said {
                text: printable(&codes.join("; ")).into_owned(),
                coded: true,
                page: false,
            };
        }
        if is_web_page(content_type, body) {
            let text = match page_title(body) {
                Some(title) => format!("(a web page titled \"{title}\")"),
                None => "(a web page)".to_owned(),
            };
            return Said {
                text,
                coded: false,
                page: true,
            };
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        Said {
            text: printable(text.trim()).into_owned(),
            coded: false,
            page: false,
        }
    }

    /// The text as an aside after a sentence: ` (…)`, or nothing.
    fn aside(self) -> String {
        match self.text.as_str() {
            "" => String::new(),
            _ if self.page => self.text,
            t => format!("(\"{t}\")"),
        }
    }
}

/// The `code: message` pairs of a distribution error body (`{"errors":[…]}`), unprintable
/// characters and all; empty when it is not one.
fn error_codes(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<One>,
    }

    #[derive(serde::Deserialize)]
    struct One {
        code: Option<String>,
        message: Option<String>,
    }
    let Ok(e) = serde_json::from_slice::<Errors>(body) else {
        return vec![];
    };
    e.errors
        .iter()
        .map(|o| {
            format!(
                "{}: {}",
                o.code.as_deref().unwrap_or("?"),
                o.message.as_deref().unwrap_or("")
            )
        })
        .collect()
}

/// Whether the registry's error codes include `code` (`NAME_UNKNOWN`).
pub(super) fn has_error_code(body: &[u8], code: &str) -> bool {
    error_codes(body)
        .iter()
        .any(|c| c.split(':').next() == Some(code))
}

/// Whether a body is a web page: served as HTML, or starting as one.
fn is_web_page(content_type: Option<&str>, body: &[u8]) -> bool {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    if matches!(
        media.as_deref(),
        Some("text/html" | "application/xhtml+xml")
    ) {
        return true;
    }
    let head = String::from_utf8_lossy(&body[..body.len().min(512)]).to_ascii_lowercase();
    let head = head.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    ["<!doctype html", "<html", "<head", "<body"]
        .iter()
        .any(|p| head.starts_with(p))
}

/// A web page's `<title>`, whitespace collapsed, at most 80 characters, made printable.
fn page_title(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_LIMIT as usize)]);
    let lower = text.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find('<')?;
    let title: Vec<&str> = text[start..end].split_whitespace().collect();
    let title: String = title.join(" ").chars().take(80).collect();
    (!title.is_empty()).then(|| printable(&title).into_owned())
}

/// What a registry's error body says, for messages: its `code: message` pairs, a web page
/// described (never pasted), or a short excerpt of the body; made [`printable`].
pub(super) fn registry_detail(body: &[u8]) -> String {
    Said::of(None, body).text
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

    #[test]
    fn web_pages_are_described_never_pasted() {
        let page = b"\n <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\">\n<html><head>\
                     <TITLE>\n  404 Not\tFound \x1b[2J</TITLE></head><body><h1>Not Found</h1>\
                     </body></html>";
        let said = Said::of(None, page);
        assert_eq!(
            said.text,
            "(a web page titled \"404 Not Found \\u{1b}[2J\")"
        );
        assert!(said.page && !said.coded);
        // By its content type alone, or by its first tag; a title that is missing or empty.
        for (content_type, body) in [
            (Some("text/html; charset=utf-8"), &b"oops"[..]),
            (Some("application/xhtml+xml"), b"<x/>"),
            (None, b"\xef\xbb\xbf<HTML><title>  </title>"),
            (None, b"<body>gateway timeout</body>"),
        ] {
            let said = Said::of(content_type, body);
            assert_eq!(said.text, "(a web page)", "{body:?}");
            assert!(!said.text.contains('<'));
        }
        let long = format!("<html><title>{}</title>", "x".repeat(200));
        assert_eq!(
            Said::of(None, long.as_bytes()).text,
            format!("(a web page titled \"{}\")", "x".repeat(80))
        );
        // Registry errors and plain text are what they were.
        let coded = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"no such repository"}]}"#;
        let said = Said::of(Some("text/html"), coded);
        assert!(said.coded && !said.page);
        assert!(has_error_code(coded, "NAME_UNKNOWN") && !has_error_code(coded, "NAME"));
        assert!(!has_error_code(page, "NAME_UNKNOWN"));
        assert_eq!(
            registry_detail(b"<?xml version=\"1.0\"?><Error/>"),
            "<?xml version=\"1.0\"?><Error/>"
        );
        assert_eq!(Said::of(Some("text/plain"), b"").text, "");
    }
}
