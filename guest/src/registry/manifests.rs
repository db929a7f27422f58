//! Manifests (get and put) and referrers.

use super::Client;
use super::http::{Method, Response, Url};
use crate::digest::Digest;
use crate::error::{Error, How, Mismatched, Result};
use crate::manifest::{self, Descriptor};
use crate::text::printable;
use std::io::Write;

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
