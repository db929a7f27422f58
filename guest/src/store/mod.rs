//! Where images come from and go to: a registry repository, or an OCI image layout
//! directory (`oci:DIR[:TAG]`, as skopeo writes it). Operations see only these two traits.

mod ocidir;
pub mod tempfile;

pub use ocidir::OciDir;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Descriptor;
use crate::registry::{BlobSource, Client, Committing, Mount, Request, Url};
use std::io::Read;

/// Reads images.
pub trait Source {
    /// For messages: `registry/repository` or `oci:DIR`.
    fn describe(&self) -> String;
    fn manifest(&self, key: &str) -> Result<(Descriptor, Vec<u8>)>;
    fn manifest_if_exists(&self, key: &str) -> Result<Option<(Descriptor, Vec<u8>)>>;
    fn referrers(&self, digest: &Digest) -> Result<Vec<Descriptor>>;
    /// Every tag (for a layout, every `ref.name`).
    fn tags(&self) -> Result<Vec<String>>;
    /// Streams a blob into `sink`, verified; the last chunk only once the whole matches.
    fn blob(&self, d: &Descriptor, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>;
    /// A blob as a stream, checked against `d` as it goes.
    fn open_blob(&self, d: &Descriptor) -> Result<Box<dyn Read + '_>>;
    /// Whether [`Source::blob_request`] gives requests, for fetching several blobs at once.
    fn fetches_by_request(&self) -> bool {
        false
    }
    /// The request that fetches a blob, when [`Source::fetches_by_request`].
    fn blob_request(&self, d: &Descriptor) -> Result<Request> {
        Err(Error::Io(format!(
            "{} is not read by requests (blob {})",
            self.describe(),
            d.digest
        )))
    }
}

/// Receives images.
pub trait Destination {
    fn describe(&self) -> String;
    /// The repository blobs go to, for mounting them into others of the same registry.
    fn repository(&self) -> &str;
    fn has_blob(&self, digest: &Digest) -> Result<bool>;
    /// Whether another repository of the same store holds the blob (for mounts).
    fn has_blob_in(&self, repository: &str, digest: &Digest) -> Result<bool>;
    /// Whether the store holds each blob asked for, in this repository (`None`) or another;
    /// a registry asks about several at once.
    fn have_blobs(&self, asks: &[(Option<&str>, &Digest)]) -> Result<Vec<bool>> {
        (asks.iter())
            .map(|&(repository, digest)| match repository {
                None => self.has_blob(digest),
                Some(r) => self.has_blob_in(r, digest),
            })
            .collect()
    }
    /// Links a blob that repository `from` of the same store holds into this one, or says
    /// the store declined ([`Mount::Declined`]): then it is to be uploaded or copied.
    fn mount(&self, digest: &Digest, from: &str) -> Result<Mount>;
    /// A blob that repository `from` of the same store holds (this one's for `None`), as a
    /// stream checked against `d` as it goes.
    fn open_blob_in(&self, from: Option<&str>, d: &Descriptor) -> Result<Box<dyn Read + '_>>;
    /// Copies a blob from repository `from` of the same store into this one, streamed and
    /// verified, for a mount it declined: into `session`, the upload session it offered
    /// instead, if any. `progress` hears of every byte sent. Like [`Destination::upload`],
    /// the blob is stored once the returned [`Committing`] finishes.
    fn copy_from(
        &self,
        d: &Descriptor,
        from: &str,
        session: Option<Url>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Committing<'_>>;
    /// Stores a blob whose bytes `source` hands out, verified: it fails rather than hand out
    /// the bytes completing a wrong blob, and then nothing is stored. The blob is stored once
    /// the returned [`Committing`] finishes; until then other uploads may go on.
    fn upload(&self, d: &Descriptor, source: BlobSource<'_>) -> Result<Committing<'_>>;
    fn put_manifest(&self, key: &str, d: &Descriptor, bytes: &[u8]) -> Result<()>;
}

impl Source for Client<'_> {
    fn describe(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }
    fn manifest(&self, key: &str) -> Result<(Descriptor, Vec<u8>)> {
        Client::manifest(self, key)
    }
    fn manifest_if_exists(&self, key: &str) -> Result<Option<(Descriptor, Vec<u8>)>> {
        Client::manifest_if_exists(self, key)
    }
    fn referrers(&self, digest: &Digest) -> Result<Vec<Descriptor>> {
        Client::referrers(self, digest)
    }
    fn tags(&self) -> Result<Vec<String>> {
        Client::tags(self)
    }
    fn blob(&self, d: &Descriptor, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        Client::blob(self, d, sink)
    }
    fn open_blob(&self, d: &Descriptor) -> Result<Box<dyn Read + '_>> {
        Client::open_blob_in(self, self.repository(), d)
    }
    fn fetches_by_request(&self) -> bool {
        true
    }
    fn blob_request(&self, d: &Descriptor) -> Result<Request> {
        Client::blob_request(self, d)
    }
}

impl Destination for Client<'_> {
    fn describe(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }
    fn repository(&self) -> &str {
        Client::repository(self)
    }
    fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Client::has_blob(self, digest)
    }
    fn has_blob_in(&self, repository: &str, digest: &Digest) -> Result<bool> {
        Client::has_blob_in(self, repository, digest)
    }
    fn have_blobs(&self, asks: &[(Option<&str>, &Digest)]) -> Result<Vec<bool>> {
        Client::have_blobs(self, asks)
    }
    fn mount(&self, digest: &Digest, from: &str) -> Result<Mount> {
        Client::mount(self, digest, from)
    }
    fn open_blob_in(&self, from: Option<&str>, d: &Descriptor) -> Result<Box<dyn Read + '_>> {
        Client::open_blob_in(self, from.unwrap_or(self.repository()), d)
    }
    fn copy_from(
        &self,
        d: &Descriptor,
        from: &str,
        session: Option<Url>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Committing<'_>> {
        Client::copy_blob(self, d, from, session, progress)
    }
    fn upload(&self, d: &Descriptor, source: BlobSource<'_>) -> Result<Committing<'_>> {
        Client::upload(self, d, source)
    }
    fn put_manifest(&self, key: &str, d: &Descriptor, bytes: &[u8]) -> Result<()> {
        Client::put_manifest(self, key, d, bytes)
    }
}
