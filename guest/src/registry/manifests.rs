//! Manifests (get and put), referrers, and tag lists with `Link` paging.

use super::Client;
use super::http::{Method, Response, Url};
use crate::digest::Digest;
use crate::error::{Error, How, Mismatched, Result};
use crate::manifest::{self, Descriptor};
use crate::text::printable;
use std::io::Write;

/// How many pages of tags are read before the list is deemed endless.
const MAX_TAG_PAGES: usize = 1000;

impl Client<'_> {
    /// A `GET` asking for `accept` (media types), through the client's whole stack.
    fn get_accepting(&self, url: Url, accept: &str) -> Result<Response> {
        let headers = vec![("accept".to_owned(), accept.to_owned())];
        self.send(Method::Get, url, headers, None, true)
    }

    /// Fetches a manifest by tag or digest, verifying it when asked for by digest, and
    /// returns its descriptor and exact bytes.
    pub fn manifest(&self, key: &str) -> Result<(Descriptor, Vec<u8>)> {
        let what = format!("manifest {key}");
        let url = self.repo_url(&format!("manifests/{key}"));
        let resp = self.get_accepting(url, manifest::ACCEPT)?;
        let mut resp = self.expect(resp, &[200], &what)?;
        if let Some(len) = resp
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
            && len > manifest::MAX_MANIFEST_BYTES
        {
            return Err(Error::InvalidManifest(format!(
                "{} {what} in {} is {len} bytes, more than the {} imo accepts",
                self.registry,
                self.repository,
                manifest::MAX_MANIFEST_BYTES
            )));
        }
        let bytes = resp
            .read_limited(manifest::MAX_MANIFEST_BYTES)
            .map_err(|e| Error::Unreachable(format!("{} reading {what}: {e}", self.registry)))?;
        if bytes.len() as u64 > manifest::MAX_MANIFEST_BYTES {
            return Err(Error::InvalidManifest(format!(
                "{what} in {} is larger than 4 MiB",
                self.repository
            )));
        }
        let digest = Digest::of(&bytes);
        if key.starts_with("sha256:") && key != digest.as_str() {
            return Err(Error::Mismatched(Box::new(Mismatched {
                registry: self.registry.clone(),
                what: format!("{what} of {}", self.repository),
                expected: key.to_owned(),
                found: digest.to_string(),
                how: How::Served,
            })));
        }
        if let Some(claimed) = resp.header("docker-content-digest")
            && claimed != digest.as_str()
        {
            return Err(Error::Mismatched(Box::new(Mismatched {
                registry: self.registry.clone(),
                what: format!("{what} of {}", self.repository),
                expected: printable(claimed).into_owned(),
                found: digest.to_string(),
                how: How::Claimed,
            })));
        }
        let content_type = resp
            .header("content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_owned());
        let media_type = manifest::declared_media_type(&bytes)
            .or(content_type.filter(|c| manifest::is_manifest_type(c)))
            .unwrap_or_else(|| manifest::OCI_MANIFEST.to_owned());
        let descriptor = Descriptor {
            media_type,
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        Ok((descriptor, bytes))
    }

    /// Like [`Client::manifest`], but `None` when the registry has no such manifest.
    pub fn manifest_if_exists(&self, key: &str) -> Result<Option<(Descriptor, Vec<u8>)>> {
        match self.manifest(key) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The manifests that name `digest` as their subject, from the OCI 1.1 referrers API;
    /// empty where the registry does not offer it (distribution 2.8 answers 404).
    pub fn referrers(&self, digest: &Digest) -> Result<Vec<Descriptor>> {
        let url = self.repo_url(&format!("referrers/{digest}"));
        let resp = self.get_accepting(url, manifest::OCI_INDEX)?;
        let what = format!("referrers of {digest}");
        let mut resp = self.expect(resp, &[200, 404, 405, 501], &what)?;
        if resp.status != 200 {
            return Ok(vec![]);
        }
        let body = resp
            .read_limited(manifest::MAX_MANIFEST_BYTES)
            .map_err(|e| Error::Unreachable(format!("{} reading referrers: {e}", self.registry)))?;
        let index = manifest::Manifest::parse(&body, Some(manifest::OCI_INDEX)).map_err(|e| {
            Error::InvalidManifest(format!(
                "referrers of {digest} in {}: {}",
                self.repository,
                printable(&e)
            ))
        })?;
        Ok(index.children().to_vec())
    }

    /// Every tag of the repository, following the registry's `Link` pagination.
    pub fn tags(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut url = self.repo_url("tags/list").with_query("n", "1000");
        for _ in 0..MAX_TAG_PAGES {
            let resp = self.send(Method::Get, url.clone(), vec![], None, true)?;
            let mut resp = self.expect(resp, &[200], "tag list")?;
            let body = resp
                .read_limited(manifest::MAX_MANIFEST_BYTES)
                .map_err(|e| Error::Unreachable(format!("{} reading tags: {e}", self.registry)))?;
            let page: TagList = serde_json::from_slice(&body).map_err(|e| {
                Error::Registry(format!(
                    "{}: the tag list of {} is not valid JSON: {}",
                    self.registry,
                    self.repository,
                    printable(&e.to_string())
                ))
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match resp.header("link").and_then(next_link) {
                Some(next) => {
                    url = url
                        .join(next)
                        .map_err(|e| Error::Registry(format!("{}: tag list {e}", self.registry)))?;
                }
                None => return Ok(tags),
            }
        }
        Err(Error::Registry(format!(
            "{}: the tag list of {} runs past {MAX_TAG_PAGES} pages",
            self.registry, self.repository
        )))
    }

    /// Puts a manifest's exact bytes under `key` (a tag or its digest) and checks the digest
    /// the registry reports.
    pub fn put_manifest(&self, key: &str, d: &Descriptor, bytes: &[u8]) -> Result<()> {
        let what = format!("push of manifest {} as {key}", d.digest);
        let headers = vec![
            ("content-type".into(), d.media_type.clone()),
            ("content-length".into(), bytes.len().to_string()),
        ];
        let mut write = |w: &mut dyn Write| {
            w.write_all(bytes)
                .map_err(|e| Error::Unreachable(format!("sending manifest: {e}")))
        };
        let resp = self.send(
            Method::Put,
            self.repo_url(&format!("manifests/{key}")),
            headers,
            Some(&mut write),
            true,
        )?;
        let resp = self.expect(resp, &[201, 200], &what)?;
        if let Some(got) = resp.header("docker-content-digest")
            && got != d.digest.as_str()
        {
            return Err(Error::Mismatched(Box::new(Mismatched {
                registry: self.registry.clone(),
                what: format!("manifest {}", d.digest),
                expected: d.digest.to_string(),
                found: printable(got).into_owned(),
                how: How::Rewritten,
            })));
        }
        Ok(())
    }
}

/// The target of a `Link: <…>; rel="next"` header (the tag list's next page).
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then_some(target)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_finds_the_next_page() {
        let h = r#"</v2/app/tags/list?last=v9&n=1000>; rel="next""#;
        assert_eq!(next_link(h), Some("/v2/app/tags/list?last=v9&n=1000"));
        assert_eq!(
            next_link(r#"<https://r.io/a>; rel="prev", <https://r.io/b>; rel=next"#),
            Some("https://r.io/b")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }
}
