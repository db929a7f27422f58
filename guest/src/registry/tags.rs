//! Tag lists: every tag of a repository, page by page, as real registries send them.
//!
//! [`TagList`] takes the pages (pure, so each quirk is unit-tested without a network) and
//! [`Client::tags`] fetches them. What registries do that it copes with:
//! - `"tags": null`, or no `tags`, for a repository without tags;
//! - a `?n=` page size refused (404 or 400, often with a web page): asked again without it;
//! - `n` ignored, everything on one page; duplicate tags across pages (listed once);
//! - `Link: <…>; rel="next"` relative or absolute, `rel` quoted or not, several links in one
//!   header or several `Link` headers.
//!
//! What it refuses, with an error naming the registry and repository: a next page on another
//! origin (scheme, host, port) than the registry's, which would get no `Authorization` and
//! could add tags the registry never had; a page read twice (a loop); more than
//! [`MAX_TAGS`] tags or [`MAX_TAG_PAGES`] pages, a memory guard.

use super::Client;
use super::error::has_error_code;
use super::http::{Method, Response, Url};
use crate::error::{Error, Result};
use crate::text::printable;
use std::collections::HashSet;
use std::fmt;

/// The page size asked for (`?n=`); registries may send fewer or more.
pub const PAGE_SIZE: &str = "1000";

/// The most tags listed for one repository. More than this is refused rather than held in
/// memory (an inventory fetches every tag's manifests anyway); name the tags instead.
pub const MAX_TAGS: usize = 100_000;

/// How many pages of tags are read before the list is deemed endless.
pub const MAX_TAG_PAGES: usize = 10_000;

/// The most one page's body may weigh: [`MAX_TAGS`] tags of 128 characters fit.
pub const MAX_PAGE_BYTES: u64 = 16 << 20;

/// Why a tag list is refused; said after `REGISTRY: the tag list of REPOSITORY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A page is not a tag list: what it is instead.
    NotAList(String),
    TooManyTags,
    TooManyPages,
    /// A next link that cannot be followed (the reason).
    BadLink(String),
    /// A next page on another origin (its URL, printable).
    OtherOrigin(String),
    /// A next page already read (its URL, printable).
    Loop(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotAList(what) => write!(f, "is not a tag list: {what}"),
            Refusal::TooManyTags => write!(
                f,
                "holds more than {MAX_TAGS} tags, more than imo lists; inventory the tags \
                 you need by name (REPOSITORY:TAG)"
            ),
            Refusal::TooManyPages => write!(f, "runs past {MAX_TAG_PAGES} pages"),
            Refusal::BadLink(why) => write!(f, "has a next page link imo cannot follow: {why}"),
            Refusal::OtherOrigin(url) => write!(
                f,
                "links its next page to another host ({url}); imo reads tag pages only from \
                 the registry's own scheme, host and port"
            ),
            Refusal::Loop(url) => write!(
                f,
                "runs in a loop: its next page {url} was read already; the registry's \
                 paging is broken"
            ),
        }
    }
}

/// The error a page's parse stops with past [`MAX_TAGS`] names.
const TOO_MANY: &str = "more tags than imo lists";

/// A page's tags, read no further than [`MAX_TAGS`]: a page naming more is refused while it
/// is parsed, before they are all held (a 16 MiB page of one-letter tags would take over
/// 100 MiB as strings).
struct Bounded(Vec<String>);

impl<'de> serde::Deserialize<'de> for Bounded {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = Bounded;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of tags")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Bounded, A::Error> {
                let mut tags = Vec::new();
                while let Some(tag) = seq.next_element::<String>()? {
                    if tags.len() == MAX_TAGS {
                        return Err(serde::de::Error::custom(TOO_MANY));
                    }
                    tags.push(tag);
                }
                Ok(Bounded(tags))
            }
        }
        d.deserialize_seq(Names)
    }
}

/// A tag list as its pages arrive: each tag once, in the order first seen.
#[derive(Default)]
pub struct TagList {
    tags: Vec<String>,
    seen: HashSet<String>,
    /// The pages read, by URL, to catch a loop, and how many.
    read: HashSet<String>,
    pages: usize,
    /// How many names were not valid tags, and the first few of them (printable).
    skipped: (usize, Vec<String>),
}

impl TagList {
    /// Takes the page read from `url` (its content type, body and `Link` headers) and says
    /// where the next page is, if any. Only pages on `origin`, the registry's, are followed.
    pub fn page(
        &mut self,
        origin: &Url,
        url: &Url,
        content_type: Option<&str>,
        body: &[u8],
        links: &[&str],
    ) -> Result<Option<Url>, Refusal> {
        #[derive(serde::Deserialize)]
        struct Page {
            // Absent or null: a repository without tags.
            tags: Option<Bounded>,
        }
        if self.pages == MAX_TAG_PAGES {
            return Err(Refusal::TooManyPages);
        }
        self.pages += 1;
        self.read.insert(url.to_string());
        let page: Page = serde_json::from_slice(body).map_err(|e| {
            if e.to_string().starts_with(TOO_MANY) {
                return Refusal::TooManyTags;
            }
            let said = super::error::Said::of(content_type, body);
            Refusal::NotAList(if said.page {
                said.text
            } else {
                printable(&e.to_string()).into_owned()
            })
        })?;
        for tag in page.tags.map(|t| t.0).unwrap_or_default() {
            // A name that is no tag would be put into a manifest URL's path: left out.
            if crate::reference::check_tag(&tag).is_err() {
                self.skipped.0 += 1;
                if self.skipped.1.len() < 3 {
                    self.skipped.1.push(format!("{:?}", printable(&tag)));
                }
                continue;
            }
            if self.seen.contains(&tag) {
                continue;
            }
            if self.tags.len() == MAX_TAGS {
                return Err(Refusal::TooManyTags);
            }
            self.seen.insert(tag.clone());
            self.tags.push(tag);
        }
        let Some(target) = links.iter().find_map(|h| next_link(h)) else {
            return Ok(None);
        };
        let next = url.join(target).map_err(Refusal::BadLink)?;
        let shown = || printable(&next.to_string()).into_owned();
        if !next.same_origin(origin) {
            return Err(Refusal::OtherOrigin(shown()));
        }
        if self.read.contains(&next.to_string()) {
            return Err(Refusal::Loop(shown()));
        }
        Ok(Some(next))
    }

    /// The tags, each once, in the order the registry listed them.
    pub fn tags(self) -> Vec<String> {
        self.tags
    }

    /// A notice about the names left out as no valid tags, if any.
    pub fn skipped(&self) -> Option<String> {
        let (count, first) = &self.skipped;
        (*count > 0).then(|| {
            format!(
                "{count} name(s) that are not valid tags left out ({}{})",
                first.join(", "),
                if *count > first.len() { ", …" } else { "" }
            )
        })
    }
}

/// The target of the `rel="next"` link in a `Link` header (RFC 8288): links separated by
/// commas, each `<target>` then `;`-separated parameters, `rel` quoted or not, in any case,
/// possibly among other relation types (`rel="next last"`).
pub fn next_link(header: &str) -> Option<&str> {
    let mut rest = header;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        rest = &rest[close + 1..];
        // The parameters run to the next comma outside quotes.
        let mut quoted = false;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                c == ',' && !quoted
            })
            .map_or(rest.len(), |(i, _)| i);
        let params = &rest[..end];
        rest = &rest[end..];
        let is_next = params.split(';').any(|p| {
            let Some((name, value)) = p.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.trim());
        }
    }
}

/// Whether a first page asked for with `?n=` was refused for it, as a registry that knows no
/// such parameter does (404, or 400): anything but the registry saying the repository is
/// unknown. Its body stays readable for the error, should asking again fail too.
fn refuses_page_size(resp: &mut Response) -> bool {
    if !matches!(resp.status, 400 | 404) {
        return false;
    }
    let body = resp
        .read_limited(super::error::ERROR_BODY_LIMIT)
        .unwrap_or_default();
    let unknown = has_error_code(&body, "NAME_UNKNOWN");
    resp.body = Box::new(std::io::Cursor::new(body));
    !unknown
}

impl Client<'_> {
    /// Every tag of the repository, each once, following the registry's `Link` pages; asked
    /// for in pages of [`PAGE_SIZE`], and again without a size where that is refused.
    pub fn tags(&self) -> Result<Vec<String>> {
        let bare = self.repo_url("tags/list");
        let mut url = bare.with_query("n", PAGE_SIZE);
        let mut sized = true;
        let mut list = TagList::default();
        let refused = |r: Refusal| {
            Error::Registry(format!(
                "{}: the tag list of {} {r}",
                self.registry, self.repository
            ))
        };
        loop {
            let mut resp = self.send(Method::Get, url.clone(), vec![], None, true)?;
            if std::mem::take(&mut sized) && refuses_page_size(&mut resp) {
                url = bare.clone();
                continue;
            }
            let mut resp = self.expect_sent(resp, &[200], "tag list", (Method::Get, &url))?;
            let body = resp
                .read_limited(MAX_PAGE_BYTES)
                .map_err(|e| Error::Unreachable(format!("{} reading tags: {e}", self.registry)))?;
            if body.len() as u64 > MAX_PAGE_BYTES {
                return Err(refused(Refusal::NotAList(format!(
                    "a page larger than {} MiB",
                    MAX_PAGE_BYTES >> 20
                ))));
            }
            let links: Vec<&str> = resp
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("link"))
                .map(|(_, v)| v.as_str())
                .collect();
            let content_type = resp.header("content-type");
            match list.page(&self.origin, &url, content_type, &body, &links) {
                Ok(Some(next)) => url = next,
                Ok(None) => break,
                Err(r) => return Err(refused(r)),
            }
        }
        if let Some(notice) = list.skipped() {
            self.net.report.line(&format!(
                "{}: the tag list of {}: {notice}",
                self.registry, self.repository
            ));
        }
        Ok(list.tags())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Reference;
    use crate::registry::http::{BodyWriter, Request, Scheme, Transport};
    use crate::registry::{Access, Net};
    use std::cell::RefCell;

    fn origin() -> Url {
        Url {
            scheme: Scheme::Http,
            authority: "127.0.0.1:5000".into(),
            path: "/v2/".into(),
        }
    }

    fn at(path: &str) -> Url {
        Url {
            path: path.into(),
            ..origin()
        }
    }

    #[test]
    fn next_links_are_found_however_they_are_written() {
        let h = r#"</v2/app/tags/list?last=v9&n=1000>; rel="next""#;
        assert_eq!(next_link(h), Some("/v2/app/tags/list?last=v9&n=1000"));
        for (header, next) in [
            (
                r#"<https://r.io/a>; rel="prev", <https://r.io/b>; rel=next"#,
                Some("https://r.io/b"),
            ),
            // Parameters in any order and case, several relation types, a comma inside
            // the target and inside a quoted parameter.
            (
                r#"<http://x/?a=1,2>; title="a, b"; REL="Next Last""#,
                Some("http://x/?a=1,2"),
            ),
            (r#"</p2>;rel=next;type="application/json""#, Some("/p2")),
            (r#"</x>; rel="prev""#, None),
            (r#"</x>; rel="nextpage""#, None),
            (r#"</x>; title="rel=next""#, None),
            ("garbage", None),
            ("<unclosed; rel=next", None),
            ("", None),
        ] {
            assert_eq!(next_link(header), next, "{header}");
        }
    }

    /// Takes `pages` (URL path read, body, `Link` headers) in order into one list.
    fn read(pages: &[(&str, &str, &[&str])]) -> Result<Vec<String>, Refusal> {
        let mut list = TagList::default();
        for (i, (path, body, links)) in pages.iter().enumerate() {
            let next = list.page(&origin(), &at(path), None, body.as_bytes(), links)?;
            let expected = pages.get(i + 1).map(|p| at(p.0));
            assert_eq!(next, expected, "page {i}");
        }
        Ok(list.tags())
    }

    #[test]
    fn pages_of_tags_are_joined_each_tag_once() {
        // A repository without tags: `null`, or no `tags` at all.
        assert_eq!(
            read(&[("/t", r#"{"name":"app","tags":null}"#, &[])]),
            Ok(vec![])
        );
        assert_eq!(read(&[("/t", r#"{"name":"app"}"#, &[])]), Ok(vec![]));
        // Relative and absolute next links, repeats across pages listed once.
        let tags = read(&[
            (
                "/v2/app/tags/list?n=2",
                r#"{"tags":["a","b"]}"#,
                &[r#"</v2/app/tags/list?last=b&n=2>; rel="next""#],
            ),
            (
                "/v2/app/tags/list?last=b&n=2",
                r#"{"tags":["b","c"]}"#,
                &[r#"<http://127.0.0.1:5000/v2/app/tags/list?last=c>; rel=next"#],
            ),
            (
                "/v2/app/tags/list?last=c",
                r#"{"tags":["d"]}"#,
                &["</v2/app/tags/list?n=2>; rel=\"first\""],
            ),
        ]);
        assert_eq!(
            tags,
            Ok(vec!["a".into(), "b".into(), "c".into(), "d".into()])
        );
        // A link relative to the page's path, and one among several Link headers.
        let tags = read(&[
            (
                "/v2/app/tags/list",
                r#"{"tags":["a"]}"#,
                &["</v2/other>; rel=prev", "<list?last=a>; rel=next"],
            ),
            ("/v2/app/tags/list?last=a", r#"{"tags":["z"]}"#, &[]),
        ]);
        assert_eq!(tags, Ok(vec!["a".into(), "z".into()]));
    }

    #[test]
    fn names_that_are_not_tags_are_left_out_and_counted() {
        let mut list = TagList::default();
        let body = r#"{"tags":["v1","../../blobs/x","a?b","", "v2", ".hidden"]}"#;
        let next = list.page(&origin(), &at("/t"), None, body.as_bytes(), &[]);
        assert_eq!(next, Ok(None));
        assert_eq!(
            list.skipped().unwrap(),
            r#"4 name(s) that are not valid tags left out ("../../blobs/x", "a?b", "", …)"#
        );
        assert_eq!(list.tags(), vec!["v1", "v2"]);
    }

    #[test]
    fn broken_paging_ends_with_a_reason() {
        let link = |target: &str| format!("<{target}>; rel=\"next\"");
        let page = |list: &mut TagList, path: &str, links: &[&str]| {
            list.page(&origin(), &at(path), None, br#"{"tags":["a"]}"#, links)
        };
        // The same page again, or a cycle through two.
        let mut list = TagList::default();
        assert_eq!(
            page(
                &mut list,
                "/v2/app/tags/list",
                &[&link("/v2/app/tags/list")]
            ),
            Err(Refusal::Loop(
                "http://127.0.0.1:5000/v2/app/tags/list".into()
            ))
        );
        let mut list = TagList::default();
        assert!(page(&mut list, "/p1", &[&link("/p2")]).is_ok());
        assert_eq!(
            page(&mut list, "/p2", &[&link("/p1")]),
            Err(Refusal::Loop("http://127.0.0.1:5000/p1".into()))
        );
        // Another host, another port, another scheme; user information; another scheme.
        for (target, refusal) in [
            (
                "http://evil.example/v2/app/tags/list?last=a",
                Refusal::OtherOrigin("http://evil.example/v2/app/tags/list?last=a".into()),
            ),
            (
                "//127.0.0.1:5001/p",
                Refusal::OtherOrigin("http://127.0.0.1:5001/p".into()),
            ),
            (
                "https://127.0.0.1:5000/p",
                Refusal::OtherOrigin("https://127.0.0.1:5000/p".into()),
            ),
            (
                "http://u:p@127.0.0.1:5000/p",
                Refusal::BadLink(
                    "location to a URL with user information (user:password@) refused".into(),
                ),
            ),
            (
                "ftp://127.0.0.1:5000/p",
                Refusal::BadLink("location to a ftp: URL refused".into()),
            ),
        ] {
            let mut list = TagList::default();
            assert_eq!(page(&mut list, "/p1", &[&link(target)]), Err(refusal));
        }
        // Endless distinct pages stop at the page limit.
        let mut list = TagList::default();
        let mut outcome = Ok(None);
        for i in 0..=MAX_TAG_PAGES {
            outcome = page(
                &mut list,
                &format!("/p{i}"),
                &[&link(&format!("/p{}", i + 1))],
            );
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(Refusal::TooManyPages));
        assert_eq!(list.tags(), vec!["a"]);
        // Not a tag list: a web page is described, never pasted.
        let mut list = TagList::default();
        let html = b"<!DOCTYPE html><html><head><title>Sign in</title></head></html>";
        let got = list.page(&origin(), &at("/t"), Some("text/html"), html, &[]);
        assert_eq!(
            got,
            Err(Refusal::NotAList("(a web page titled \"Sign in\")".into()))
        );
        let got = list.page(&origin(), &at("/t2"), None, br#"{"tags":[1]}"#, &[]);
        assert!(matches!(got, Err(Refusal::NotAList(_))), "{got:?}");
    }

    #[test]
    fn a_repository_with_too_many_tags_is_refused() {
        let mut list = TagList::default();
        let names: Vec<String> = (0..MAX_TAGS).map(|i| format!("\"t{i}\"")).collect();
        let body = format!(r#"{{"tags":[{}]}}"#, names.join(","));
        let got = list.page(
            &origin(),
            &at("/p1"),
            None,
            body.as_bytes(),
            &["</p2>; rel=next"],
        );
        assert_eq!(got, Ok(Some(at("/p2"))), "exactly the limit is fine");
        // Repeats do not count; one more new tag does.
        let got = list.page(
            &origin(),
            &at("/p2"),
            None,
            br#"{"tags":["t0","new"]}"#,
            &[],
        );
        assert_eq!(got, Err(Refusal::TooManyTags));
        // One page naming more than the limit is refused while parsed, repeats or not.
        let body = format!(r#"{{"tags":[{},"t0"]}}"#, names.join(","));
        let mut list = TagList::default();
        let got = list.page(&origin(), &at("/p1"), None, body.as_bytes(), &[]);
        assert_eq!(got, Err(Refusal::TooManyTags));
        assert!(list.tags().is_empty());
        assert!(
            Refusal::TooManyTags
                .to_string()
                .contains(&format!("more than {MAX_TAGS} tags"))
        );
    }

    type Headers = Vec<(String, String)>;

    /// What a request for a path and query gets: status, headers and body.
    type Answer = (&'static str, u16, Headers, &'static str);

    /// A registry answering each request by its path and query from a table; the rest 404.
    struct Scripted {
        answers: Vec<Answer>,
        log: RefCell<Vec<String>>,
    }

    impl Transport for Scripted {
        fn send(&self, req: &Request, _: Option<BodyWriter<'_>>) -> Result<Response> {
            self.log.borrow_mut().push(req.url.path.clone());
            let (status, headers, body) = match req.url.path.as_str() {
                "/v2/" => (200, vec![], String::new()),
                path => self
                    .answers
                    .iter()
                    .find(|a| a.0 == path)
                    .map(|a| (a.1, a.2.clone(), a.3.to_owned()))
                    .unwrap_or((404, vec![], String::new())),
            };
            Ok(Response {
                status,
                headers,
                body: Box::new(std::io::Cursor::new(body.into_bytes())),
            })
        }
        fn now(&self) -> u64 {
            0
        }
        fn sleep_ms(&self, _: u64) {}
        fn random(&self) -> u64 {
            0
        }
    }

    const PAGE: &str = "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0//EN\"><html><head>\
                        <title>404 -\n Not Found</title></head><body>…</body></html>";

    fn html() -> Headers {
        vec![("Content-Type".into(), "text/html; charset=utf-8".into())]
    }

    /// The tags `answers` give, and the paths asked for after the ping.
    fn tags_from(answers: Vec<Answer>) -> (Result<Vec<String>>, Vec<String>) {
        let fake = Scripted {
            answers,
            log: RefCell::new(vec![]),
        };
        let net = Net::testing(0, 1, &|_: &str| {});
        let reference = Reference::parse("127.0.0.1:5000/app").unwrap();
        let client = Client::connect(&fake, &reference, None, Access::pull(), &[], net).unwrap();
        let tags = client.tags();
        let log = fake
            .log
            .borrow()
            .iter()
            .skip_while(|p| *p == "/v2/")
            .cloned()
            .collect();
        (tags, log)
    }

    #[test]
    fn a_refused_page_size_is_asked_for_again_without_it() {
        let (tags, log) = tags_from(vec![
            ("/v2/app/tags/list?n=1000", 404, html(), PAGE),
            (
                "/v2/app/tags/list",
                200,
                vec![],
                r#"{"name":"app","tags":["v1","v2"]}"#,
            ),
        ]);
        assert_eq!(tags.unwrap(), vec!["v1", "v2"]);
        assert_eq!(log, vec!["/v2/app/tags/list?n=1000", "/v2/app/tags/list"]);
        // A repository the registry says it does not know is not asked for twice.
        let unknown = r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#;
        let (tags, log) = tags_from(vec![("/v2/app/tags/list?n=1000", 404, vec![], unknown)]);
        assert_eq!(
            tags.unwrap_err().to_string(),
            "not found: 127.0.0.1:5000 tag list in app: NAME_UNKNOWN: repository name not known to registry"
        );
        assert_eq!(log, vec!["/v2/app/tags/list?n=1000"]);
    }

    #[test]
    fn an_endpoint_answering_404_without_an_error_code_is_said_to_be_missing() {
        let (tags, _) = tags_from(vec![
            ("/v2/app/tags/list?n=1000", 404, html(), PAGE),
            ("/v2/app/tags/list", 404, html(), PAGE),
        ]);
        let err = tags.unwrap_err();
        assert!(err.is_not_found());
        let message = err.to_string();
        assert_eq!(
            message,
            "127.0.0.1:5000 answered 404 to GET /v2/app/tags/list without a registry error \
             code (a web page titled \"404 - Not Found\"): it may not implement this endpoint"
        );
        assert!(!message.contains("<!DOCTYPE"));
        // Plain text is quoted; no body at all is said as nothing.
        let (tags, _) = tags_from(vec![(
            "/v2/app/tags/list",
            404,
            vec![],
            "404 page not found\n",
        )]);
        assert_eq!(
            tags.unwrap_err().to_string(),
            "127.0.0.1:5000 answered 404 to GET /v2/app/tags/list without a registry error \
             code (\"404 page not found\"): it may not implement this endpoint"
        );
        let (tags, _) = tags_from(vec![]);
        assert_eq!(
            tags.unwrap_err().to_string(),
            "127.0.0.1:5000 answered 404 to GET /v2/app/tags/list without a registry error \
             code: it may not implement this endpoint"
        );
    }

    #[test]
    fn the_client_follows_pages_and_names_the_repository_when_they_go_wrong() {
        let next = |target: &str| vec![("Link".to_owned(), format!("<{target}>; rel=\"next\""))];
        let (tags, log) = tags_from(vec![
            (
                "/v2/app/tags/list?n=1000",
                200,
                next("/v2/app/tags/list?last=b"),
                r#"{"tags":["a","b"]}"#,
            ),
            (
                "/v2/app/tags/list?last=b",
                200,
                vec![],
                r#"{"tags":["b","c"]}"#,
            ),
        ]);
        assert_eq!(tags.unwrap(), vec!["a", "b", "c"]);
        assert_eq!(log.len(), 2);
        let (tags, log) = tags_from(vec![(
            "/v2/app/tags/list?n=1000",
            200,
            next("/v2/app/tags/list?n=1000"),
            r#"{"tags":["a"]}"#,
        )]);
        assert_eq!(
            tags.unwrap_err().to_string(),
            "registry error: 127.0.0.1:5000: the tag list of app runs in a loop: its next page \
             https://127.0.0.1:5000/v2/app/tags/list?n=1000 was read already; the registry's \
             paging is broken"
        );
        assert_eq!(log.len(), 1);
    }
}
