//! The HTTP vocabulary of the registry client and the [`Transport`] seam it talks through.

use super::redirect;
use crate::auth;
use crate::error::Result;
use std::io::{Read, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    /// Only to cancel an upload session.
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// An absolute URL split as wasi-http wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    pub authority: String,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl Url {
    /// Resolves `location` against this URL as RFC 3986 says ([`redirect::resolve`]); the
    /// error says why it is refused.
    pub fn join(&self, location: &str) -> std::result::Result<Url, String> {
        redirect::resolve(self, location).map_err(|e| e.as_location())
    }

    /// Whether `other` has this URL's origin: scheme, host (in any case) and port (the
    /// scheme's default when none is given).
    pub fn same_origin(&self, other: &Url) -> bool {
        self.scheme == other.scheme && self.host_port() == other.host_port()
    }

    fn host_port(&self) -> String {
        let default = match self.scheme {
            Scheme::Http => ":80",
            Scheme::Https => ":443",
        };
        let authority = self.authority.to_ascii_lowercase();
        match authority.strip_suffix(default) {
            Some(host) => host.to_owned(),
            None => authority,
        }
    }

    /// Appends a query parameter.
    pub fn with_query(&self, key: &str, value: &str) -> Url {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        Url {
            path: format!("{}{sep}{key}={}", self.path, auth::query_escape(value)),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{s}://{}{}", self.authority, self.path)
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn Read>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads at most `limit` bytes of the body.
    pub(crate) fn read_limited(&mut self, limit: u64) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self.body).take(limit + 1).read_to_end(&mut out)?;
        Ok(out)
    }
}

/// Writes a request body; an error from it aborts the request so nothing is committed.
pub type BodyWriter<'a> = &'a mut dyn FnMut(&mut dyn Write) -> Result<()>;

/// The answer to a request sent with [`Transport::start`], awaited when called.
pub type Pending = Box<dyn FnOnce() -> Result<Response>>;

/// Moves one HTTP exchange, and nothing more. The contract:
/// - It sends exactly the request it is given, headers included: it adds no
///   `Authorization` (the client attaches the registry's, on the registry's origin only) and
///   follows no redirect (a 3xx comes back as it is; the client follows `GET` and `HEAD`
///   redirects by [`redirect::follow`], which drops `Authorization` off-origin). Nor does it
///   retry: the client decides what is worth another try.
/// - A request it could not deliver, or whose answer did not come (connection refused or
///   cut, TLS failure, timeout), is `Error::Unreachable`, which the client may retry; a
///   request the host's policy refuses is `Error::Denied`, which is final. Any answer, an
///   error status too, is `Ok`.
/// - A body writer's error aborts the request unfinished, so the server commits nothing,
///   and comes back as the request's error; but when writing failed because the server
///   answered before taking the whole body (refusing the request) and closed the
///   connection, that answer comes back instead, as the server's word on the request.
pub trait Transport {
    fn send(&self, request: &Request, body: Option<BodyWriter<'_>>) -> Result<Response>;

    /// Sends a request and its whole body, leaving the answer to be awaited, so that the
    /// caller can go on meanwhile: a registry answers an upload only once it has stored the
    /// blob. A failure while the body is written comes back here, not from the [`Pending`].
    fn start(&self, request: &Request, body: Option<BodyWriter<'_>>) -> Result<Pending> {
        let answer = self.send(request, body)?;
        Ok(Box::new(move || Ok(answer)))
    }

    /// Seconds since the Unix epoch, for token lifetimes.
    fn now(&self) -> u64;

    /// Waits, between retries.
    fn sleep_ms(&self, ms: u64);

    /// A random number, for retry jitter.
    fn random(&self) -> u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Url {
        Url {
            scheme: Scheme::Https,
            authority: "r.io".into(),
            path: "/v2/".into(),
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let at = |scheme, authority: &str| Url {
            scheme,
            authority: authority.into(),
            path: "/".into(),
        };
        assert!(at(Scheme::Https, "R.io").same_origin(&at(Scheme::Https, "r.io:443")));
        assert!(at(Scheme::Http, "r.io:80").same_origin(&at(Scheme::Http, "r.io")));
        assert!(at(Scheme::Http, "[::1]:5000").same_origin(&at(Scheme::Http, "[::1]:5000")));
        assert!(!at(Scheme::Http, "r.io").same_origin(&at(Scheme::Https, "r.io")));
        assert!(!at(Scheme::Https, "r.io").same_origin(&at(Scheme::Https, "r.io:5000")));
        assert!(!at(Scheme::Https, "r.io").same_origin(&at(Scheme::Https, "cdn.r.io")));
    }

    #[test]
    fn url_join_and_query() {
        let o = origin();
        let u = o.join("/v2/a/blobs/uploads/abc?_state=x").unwrap();
        assert_eq!(
            u.to_string(),
            "https://r.io/v2/a/blobs/uploads/abc?_state=x"
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(u.with_query("digest", d).path.ends_with(
            "&digest=sha256%3Ae3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ));
        let abs = o.join("http://cdn.example:8080/x").unwrap();
        assert_eq!(
            (abs.scheme, abs.authority.as_str(), abs.path.as_str()),
            (Scheme::Http, "cdn.example:8080", "/x")
        );
        assert_eq!(o.join("https://h").unwrap().path, "/");
        assert_eq!(
            o.join("relative").unwrap().to_string(),
            "https://r.io/v2/relative"
        );
        assert_eq!(
            o.join("https:///x").unwrap_err(),
            "location to a URL without a host refused"
        );
        assert_eq!(
            o.join("ftp://r.io/x").unwrap_err(),
            "location to a ftp: URL refused"
        );
    }
}
