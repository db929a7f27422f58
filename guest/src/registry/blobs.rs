//! Blobs: `HEAD`, resumable verified downloads, and blob requests for a concurrent fetcher.

use super::Client;
use super::auth::Authorize;
use super::http::{Method, Request, Response, Url};
use crate::digest::{Digest, copy_verified};
use crate::error::{Error, Mismatched, Result};
use crate::manifest::Descriptor;
use crate::text::printable;
use std::io::Read;

impl Client<'_> {
    /// Streams a blob into `sink`, checking size and digest; fails before passing on a byte
    /// beyond the declared size.
    pub fn blob(&self, d: &Descriptor, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let what = format!("blob {}", d.digest);
        let url = self.repo_url(&format!("blobs/{}", d.digest));
        let mut resp = self.blob_from(&url, &what, 0)?;
        let mut end = body_end(&resp, 0);
        let mut at = 0;
        let mut resumed = 0;
        // A cut download resumes where it stopped, and the hash carries on over the seam.
        let mut read = |buf: &mut [u8]| -> Result<usize> {
            loop {
                let why = match resp.body.read(buf) {
                    Ok(n) if n > 0 || at >= d.size => {
                        at += n as u64;
                        return Ok(n);
                    }
                    // Past the end, nothing more is owed.
                    Err(_) if at >= d.size => return Ok(0),
                    // A whole answer, as long as it said it would be: the registry's blob is
                    // short, and asking again would not lengthen it. The check reports it.
                    Ok(_) if end == Some(at) => return Ok(0),
                    Ok(_) => "the body ended early".to_owned(),
                    Err(e) => printable(&e.to_string()).into_owned(),
                };
                resumed += 1;
                if resumed > self.net.retry.attempts {
                    return Err(Error::Unreachable(format!(
                        "{} while reading {what} at byte {at}: {why} (gave up after {} resumes)",
                        self.registry, self.net.retry.attempts
                    )));
                }
                self.net
                    .report
                    .line(&format!("resuming {what} at byte {at} after: {why}"));
                self.transport
                    .sleep_ms(self.net.retry.delay_ms(resumed, self.transport.random()));
                resp = self.blob_from(&url, &what, at)?;
                end = body_end(&resp, at);
            }
        };
        copy_verified(
            &d.digest,
            d.size,
            &mut vec![0u8; 1 << 20],
            &mut read,
            sink,
            &|m| {
                let what = format!("{what} of {}", self.repository);
                Error::Mismatched(Box::new(Mismatched::streamed(&self.registry, what, m)))
            },
        )
    }

    /// Starts a blob download at byte `at`: a `Range` request past the start, accepting a
    /// 206 from there or a whole 200 whose first `at` bytes are skipped.
    fn blob_from(&self, url: &Url, what: &str, at: u64) -> Result<Response> {
        let headers = if at > 0 {
            vec![("range".into(), format!("bytes={at}-"))]
        } else {
            vec![]
        };
        let resp = self.send(Method::Get, url.clone(), headers, None, true)?;
        let codes: &[u16] = if at > 0 { &[200, 206] } else { &[200] };
        let mut resp = self.expect(resp, codes, what)?;
        match resp.status {
            200 => {
                let skipped = std::io::copy(&mut (&mut resp.body).take(at), &mut std::io::sink())
                    .map_err(|e| {
                    Error::Unreachable(format!("{} while reading {what}: {e}", self.registry))
                })?;
                if skipped < at {
                    return Err(Error::Unreachable(format!(
                        "{} sent {what} shorter than before",
                        self.registry
                    )));
                }
                Ok(resp)
            }
            _ => {
                let start = resp
                    .header("content-range")
                    .and_then(|r| r.strip_prefix("bytes "))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if start != Some(at) {
                    let range = resp
                        .header("content-range")
                        .map_or("none".into(), |r| format!("\"{}\"", printable(r)));
                    return Err(Error::Registry(format!(
                        "{} answered a range request for {what} from byte {at} with Content-Range {range}",
                        self.registry,
                    )));
                }
                Ok(resp)
            }
        }
    }

    /// The `GET` of a blob, authorized, for a transport that fetches several at once. Its
    /// redirects are followed by the client's rules: while [`crate::registry::followed`] says
    /// so, the next request is [`crate::registry::follow`]'s (which drops the authorization
    /// off-origin). A failed one is fetched again with [`Client::blob`].
    pub fn blob_request(&self, d: &Descriptor) -> Result<Request> {
        let url = self.repo_url(&format!("blobs/{}", d.digest));
        let mut headers = vec![];
        if let Some(a) = self.authorization_for(&url, &Authorize::Registry)? {
            headers.push(("authorization".to_owned(), a));
        }
        Ok(Request {
            method: Method::Get,
            url,
            headers,
        })
    }

    /// Whether the repository holds a blob (`HEAD`).
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        let url = self.repo_url(&format!("blobs/{digest}"));
        let resp = self.send(Method::Head, url, vec![], None, true)?;
        let resp = self.expect(resp, &[200, 404], &format!("HEAD blob {digest}"))?;
        Ok(resp.status == 200)
    }

    /// Whether another repository of this registry holds a blob, for vetting mounts.
    pub fn has_blob_in(&self, repository: &str, digest: &Digest) -> Result<bool> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let resp = self.send(Method::Head, url, vec![], None, true)?;
        // Not there, or not readable with these credentials: either way not mountable.
        let what = format!("HEAD blob {digest} in {repository}");
        let resp = self.expect(resp, &[200, 401, 403, 404], &what)?;
        Ok(resp.status == 200)
    }
}

/// Where a blob download's body ends, in bytes of the blob, by its `Content-Length`: from
/// `at` for a 206, from the start for a 200 (whose first `at` bytes are skipped).
fn body_end(resp: &Response, at: u64) -> Option<u64> {
    let len = resp.header("content-length")?.trim().parse::<u64>().ok()?;
    Some(if resp.status == 206 { at + len } else { len })
}
