//! Redirects: the one place their rules live. [`follow`] turns a redirect answer into the next
//! request (pure, so the concurrent fetcher can follow redirects by the same rules), and
//! [`Client::send_redirected`] is the client's one loop over it.
//!
//! The rules:
//! - only `GET` and `HEAD` are followed ([`followed`]), at most [`MAX_REDIRECTS`] times;
//! - the `Location` resolves against the request's URL as RFC 3986 §5.2 says: `//host/p` is
//!   another host, `x`, `../x` and `?q` are relative to the request's path;
//! - only `http:` and `https:` targets are followed, never from `https` down to `http`, and
//!   never a `Location` carrying user information (`user:password@`), which no message echoes;
//! - `Authorization` goes no further than the origin (scheme, host, port) it was meant for:
//!   it is dropped at the first hop to another origin, and stays dropped.

use super::Client;
use super::http::{BodyWriter, Method, Pending, Request, Response, Scheme, Url};
use crate::error::{Error, Result};
use std::fmt;

/// How many redirects one request follows.
pub const MAX_REDIRECTS: u32 = 5;

/// Why a redirect is not followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A redirect status without a `Location`.
    NoLocation,
    /// More than [`MAX_REDIRECTS`] in a row.
    TooMany,
    /// A `Location` of another scheme than `http:` or `https:` (the scheme, lower-cased).
    Scheme(String),
    /// From `https` to plain `http`.
    Downgrade,
    /// A `Location` with user information; it is not repeated.
    UserInfo,
    /// A `Location` without a host (`https:///x`, `http:x`).
    NoHost,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::NoLocation => write!(f, "a redirect without a Location"),
            Refused::TooMany => write!(f, "more than {MAX_REDIRECTS} redirects"),
            Refused::Scheme(s) => write!(f, "redirect to a {s}: URL refused"),
            Refused::Downgrade => write!(f, "redirect from https to plain http refused"),
            Refused::UserInfo => write!(
                f,
                "redirect to a URL with user information (user:password@) refused"
            ),
            Refused::NoHost => write!(f, "redirect to a URL without a host refused"),
        }
    }
}

impl Refused {
    /// The same reason, for a `Location` that is not a redirect's (an upload session's).
    pub fn as_location(&self) -> String {
        let text = self.to_string();
        match text.strip_prefix("redirect ") {
            Some(rest) => format!("location {rest}"),
            None => text,
        }
    }
}

/// Whether imo follows an answer with `status` to a `method` request: `GET` and `HEAD` only.
pub fn followed(method: Method, status: u16) -> bool {
    matches!(method, Method::Get | Method::Head) && matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// The request a redirect leads to: `request` again, at its `Location` (resolved with
/// [`resolve`]), after `hops` redirects already followed; without its `Authorization` when the
/// new URL's origin differs. Every other header (`Range`, `Accept`) goes along.
pub fn follow(request: &Request, location: Option<&str>, hops: u32) -> Result<Request, Refused> {
    if hops >= MAX_REDIRECTS {
        return Err(Refused::TooMany);
    }
    let location = location.ok_or(Refused::NoLocation)?;
    let url = resolve(&request.url, location)?;
    if request.url.scheme == Scheme::Https && url.scheme == Scheme::Http {
        return Err(Refused::Downgrade);
    }
    let mut headers = request.headers.clone();
    if !url.same_origin(&request.url) {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
    }
    Ok(Request {
        method: request.method,
        url,
        headers,
    })
}

/// Resolves a URI reference (a `Location`) against `base`, as RFC 3986 section 5.2 says:
/// `https://h/p` and `//h/p` (a network-path reference: another host, same scheme) name their
/// host, `/p` is on the base's origin, `p` and `../p` are relative to the base's path, `?q`
/// replaces its query. The fragment is dropped (never sent). Refused: schemes other than
/// `http:` and `https:`, user information, no host.
pub fn resolve(base: &Url, reference: &str) -> Result<Url, Refused> {
    let reference = reference.trim();
    let reference = reference.split('#').next().unwrap_or_default();
    let (scheme, rest) = match split_scheme(reference) {
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, Some(rest)),
        Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, Some(rest)),
        Some((s, _)) => return Err(Refused::Scheme(s.to_ascii_lowercase())),
        None => (base.scheme, None),
    };
    let relative = match rest {
        // A scheme makes it absolute: it must name its host.
        Some(rest) if !rest.starts_with("//") => return Err(Refused::NoHost),
        Some(rest) => rest,
        None => reference,
    };
    if let Some(network) = relative.strip_prefix("//") {
        let end = network.find(['/', '?']).unwrap_or(network.len());
        let (authority, path) = network.split_at(end);
        if authority.contains('@') {
            return Err(Refused::UserInfo);
        }
        if authority.is_empty() {
            return Err(Refused::NoHost);
        }
        let (path, query) = split_query(path);
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            remove_dot_segments(path)
        };
        return Ok(Url {
            scheme,
            authority: authority.to_owned(),
            path: with_query(path, query),
        });
    }
    let (path, query) = split_query(relative);
    let (base_path, base_query) = split_query(&base.path);
    let (path, query) = if path.is_empty() {
        (base_path.to_owned(), query.or(base_query))
    } else if path.starts_with('/') {
        (remove_dot_segments(path), query)
    } else {
        // Merged with the base path up to its last '/' (RFC 3986 section 5.2.3).
        let dir = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
        (remove_dot_segments(&format!("{dir}{path}")), query)
    };
    Ok(Url {
        scheme: base.scheme,
        authority: base.authority.clone(),
        path: with_query(path, query),
    })
}

/// `scheme:` and the rest, if `reference` starts with a scheme (RFC 3986 section 3.1).
fn split_scheme(reference: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = reference.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some((scheme, rest))
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (s, None),
    }
}

fn with_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

/// An absolute path without its `.` and `..` segments (RFC 3986 section 5.2.4).
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
        // A path ending in a dot segment ends in a '/'.
        if last && matches!(*segment, "." | "..") {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

impl Client<'_> {
    /// Starts one exchange under these rules: a `GET` or `HEAD` follows redirects (each hop
    /// awaited), anything else is sent as it is and its answer, a redirect too, left pending.
    pub(super) fn start_redirected(
        &self,
        request: Request,
        mut body: Option<BodyWriter<'_>>,
    ) -> Result<Pending> {
        if !matches!(request.method, Method::Get | Method::Head) {
            return self.transport.start(&request, body);
        }
        let mut request = request;
        let mut hops = 0;
        loop {
            let resp: Response = self.transport.send(&request, body.take())?;
            if !followed(request.method, resp.status) {
                return Ok(Box::new(move || Ok(resp)));
            }
            request = follow(&request, resp.header("location"), hops)
                .map_err(|e| Error::Registry(format!("{}: {e}", self.registry)))?;
            hops += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str, authorization: bool) -> Request {
        let base = Url {
            scheme: Scheme::Https,
            authority: "r.io".into(),
            path: "/".into(),
        };
        let mut headers = vec![("range".to_owned(), "bytes=5-".to_owned())];
        if authorization {
            headers.push(("Authorization".to_owned(), "Bearer secret".to_owned()));
        }
        Request {
            method: Method::Get,
            url: resolve(&base, url).unwrap(),
            headers,
        }
    }

    fn has_authorization(r: &Request) -> bool {
        r.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    }

    #[test]
    fn relative_references_resolve_as_rfc_3986_says() {
        let base = get("https://a/b/c/d;p?q", false).url;
        for (reference, expected) in [
            ("g", "https://a/b/c/g"),
            ("./g", "https://a/b/c/g"),
            ("g/", "https://a/b/c/g/"),
            ("/g", "https://a/g"),
            ("//g", "https://g/"),
            ("//g/x?y", "https://g/x?y"),
            ("?y", "https://a/b/c/d;p?y"),
            ("g?y", "https://a/b/c/g?y"),
            ("#s", "https://a/b/c/d;p?q"),
            ("g#s", "https://a/b/c/g"),
            ("", "https://a/b/c/d;p?q"),
            (".", "https://a/b/c/"),
            ("./", "https://a/b/c/"),
            ("..", "https://a/b/"),
            ("../", "https://a/b/"),
            ("../g", "https://a/b/g"),
            ("../..", "https://a/"),
            ("../../g", "https://a/g"),
            ("../../../g", "https://a/g"),
            ("/./g", "https://a/g"),
            ("/../g", "https://a/g"),
            ("g/../h", "https://a/b/c/h"),
            ("g;x?y#s", "https://a/b/c/g;x?y"),
            ("HTTPS://Other:8443/x/../y", "https://Other:8443/y"),
            ("http://cdn.example:8080", "http://cdn.example:8080/"),
        ] {
            assert_eq!(
                resolve(&base, reference).map(|u| u.to_string()),
                Ok(expected.to_owned()),
                "{reference:?}"
            );
        }
    }

    #[test]
    fn schemes_user_information_and_missing_hosts_are_refused() {
        let base = get("https://r.io/v2/", false).url;
        for (reference, refused) in [
            ("ftp://r.io/x", Refused::Scheme("ftp".into())),
            ("FILE:///etc/passwd", Refused::Scheme("file".into())),
            ("javascript:alert(1)", Refused::Scheme("javascript".into())),
            ("https://user:pass@r.io/x", Refused::UserInfo),
            ("//user@cdn.io/x", Refused::UserInfo),
            ("https:///x", Refused::NoHost),
            ("https:x", Refused::NoHost),
            ("//", Refused::NoHost),
        ] {
            assert_eq!(resolve(&base, reference), Err(refused), "{reference:?}");
        }
    }

    #[test]
    fn a_network_path_reference_goes_to_another_host_without_authorization() {
        let request = get("https://r.io/v2/a/blobs/sha256:1", true);
        let next = follow(&request, Some("//127.0.0.1:9999/p"), 0).unwrap();
        assert_eq!(next.url.to_string(), "https://127.0.0.1:9999/p");
        assert!(!has_authorization(&next));
        assert!(
            next.headers
                .iter()
                .any(|(k, v)| k == "range" && v == "bytes=5-")
        );
    }

    #[test]
    fn authorization_stays_on_its_origin_only() {
        let request = get("https://r.io/v2/a/blobs/sha256:1", true);
        for (location, kept) in [
            ("/elsewhere", true),
            ("../../x", true),
            ("?sig=1", true),
            ("https://R.IO:443/x", true),
            ("https://r.io:5000/x", false),
            ("https://cdn.r.io/x", false),
        ] {
            let next = follow(&request, Some(location), 1).unwrap();
            assert_eq!(has_authorization(&next), kept, "{location}");
        }
        // Up from plain HTTP to HTTPS is another origin too.
        let plain = get("http://r.io/v2/", true);
        assert!(!has_authorization(
            &follow(&plain, Some("https://r.io/v2/"), 0).unwrap()
        ));
        assert!(has_authorization(
            &follow(&plain, Some("http://r.io:80/x"), 0).unwrap()
        ));
        // Once dropped, it does not come back on the way home.
        let away = follow(&request, Some("https://cdn.io/x"), 0).unwrap();
        let back = follow(&away, Some("https://r.io/v2/a/blobs/sha256:1"), 1).unwrap();
        assert!(!has_authorization(&back));
    }

    #[test]
    fn refusals_say_why_and_never_echo_user_information() {
        let request = get("https://r.io/v2/a/blobs/sha256:1", true);
        let refused = |location: Option<&str>, hops| follow(&request, location, hops).unwrap_err();
        assert_eq!(
            refused(Some("ftp://r.io/x"), 0).to_string(),
            "redirect to a ftp: URL refused"
        );
        assert_eq!(refused(Some("http://r.io/x"), 0), Refused::Downgrade);
        assert_eq!(
            refused(None, 0).to_string(),
            "a redirect without a Location"
        );
        assert_eq!(
            refused(Some("/x"), MAX_REDIRECTS).to_string(),
            "more than 5 redirects"
        );
        let message = refused(Some("https://alice:s3cret@cdn.io/x"), 0).to_string();
        assert!(
            message.contains("user information") && !message.contains("s3cret"),
            "{message}"
        );
    }

    #[test]
    fn only_get_and_head_follow_redirect_statuses() {
        for status in [301, 302, 303, 307, 308] {
            assert!(followed(Method::Get, status) && followed(Method::Head, status));
            assert!(!followed(Method::Put, status) && !followed(Method::Post, status));
        }
        assert!(!followed(Method::Get, 200) && !followed(Method::Get, 304));
    }
}
