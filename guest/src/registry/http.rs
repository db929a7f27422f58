//! The HTTP vocabulary of the registry client and the [`Transport`] seam it talks through.

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
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
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
    /// Resolves `location` (absolute, or a path on this URL's origin).
    pub fn join(&self, location: &str) -> std::result::Result<Url, String> {
        for (prefix, scheme) in [("https://", Scheme::Https), ("http://", Scheme::Http)] {
            if let Some(rest) = location.strip_prefix(prefix) {
                let (authority, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, "/"),
                };
                if authority.is_empty() {
                    return Err(format!("location {location:?} has no host"));
                }
                return Ok(Url {
                    scheme,
                    authority: authority.into(),
                    path: path.into(),
                });
            }
        }
        if location.starts_with('/') {
            return Ok(Url {
                path: location.into(),
                ..self.clone()
            });
        }
        Err(format!(
            "location {location:?} is neither an absolute URL nor an absolute path"
        ))
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

/// Moves one HTTP exchange. Connection-level failures are `Error::Unreachable`.
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
        assert!(o.join("relative").is_err());
        assert!(o.join("https:///x").is_err());
    }
}
