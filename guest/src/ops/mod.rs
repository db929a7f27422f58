//! The operations, over a transport and an archive stream: pull (`pull`), vet and push
//! (`push`), inventories (`inventory`); how manifest trees are fetched (`tree`) and where
//! each image goes (`targets`).

mod inventory;
mod pull;
mod push;
mod targets;
mod tree;

pub use inventory::inventory;
pub use pull::{
    ArchiveFile, FETCH_WIDTH, Fetch, Fetcher, PullRequest, pull, pull_bundle, pull_bundle_to_file,
};
pub use push::{push, push_vet};
pub use targets::{Mapping, Route, Target, targets};

use crate::archive::{self, Metadata, Opened};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Descriptor;
use crate::reference::Location;
use crate::registry::{Access, Client, Credentials, Net, Retry, Transport};
use crate::store::{Destination, OciDir, Source};
use std::io::Read;

/// Settings shared by every operation (the WIT `options`).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub base_credentials: Option<Credentials>,
    pub final_credentials: Option<Credentials>,
    pub push_credentials: Option<Credentials>,
    /// Credentials by auth-file key (`host[:port]` or `host[:port]/path`), for references
    /// whose role has none of its own.
    pub registry_credentials: Vec<(String, Credentials)>,
    pub insecure_registries: Vec<String>,
    /// Repositories of the destination registry to mount blobs from at push.
    pub mount_from: Vec<String>,
    /// `os/arch[/variant]` to carry; empty for every platform.
    pub platforms: Vec<String>,
    /// Carry signatures, attestations and other referrers of the image.
    pub referrers: bool,
    /// Retries of a failed request (connection errors, 429, 5xx), and resumes or restarts of
    /// a cut download or upload; 0 for none.
    pub max_retries: u32,
    pub progress: bool,
    /// At push and vet: final image reference to destination, overriding the destination
    /// argument for that image.
    pub destination_map: Vec<(String, String)>,
}

/// What an operation did (the WIT `summary`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub manifest_digest: String,
    pub final_reference: String,
    /// Every image's reference, the first being `final_reference`.
    pub images: Vec<String>,
    pub base_reference: String,
    pub blobs_in_archive: u32,
    pub bytes_in_archive: u64,
    pub blobs_omitted: u32,
    pub bytes_omitted: u64,
    pub blobs_uploaded: u32,
    pub bytes_uploaded: u64,
    pub blobs_skipped: u32,
    pub blobs_mounted: u32,
    pub archive_bytes: u64,
}

/// Where progress lines go; stderr in the component.
pub use crate::registry::Reporter;

/// Progress lines for one blob: `VERB sha256:<12 hex> (N bytes)` at the start,
/// `VERB sha256:<12 hex>: D of N bytes` every [`PROGRESS_STEP`], `DONE sha256:<12 hex>` at the
/// end. Plain text for the wasmtime CLI; the imo host turns them into progress bars.
pub struct Progress<'a> {
    report: &'a dyn Reporter,
    verbs: (&'static str, &'static str),
    id: String,
    total: u64,
    done: u64,
    next: u64,
}

pub const PROGRESS_STEP: u64 = 32 << 20;

impl<'a> Progress<'a> {
    pub fn start(
        report: &'a dyn Reporter,
        verbs: (&'static str, &'static str),
        d: &Descriptor,
    ) -> Self {
        let id = short(&d.digest).to_owned();
        report.line(&format!("{} {id} ({} bytes)", verbs.0, d.size));
        Progress {
            report,
            verbs,
            id,
            total: d.size,
            done: 0,
            next: PROGRESS_STEP,
        }
    }

    pub fn advance(&mut self, n: usize) {
        self.done += n as u64;
        if self.done >= self.next && self.done < self.total {
            self.report.line(&format!(
                "{} {}: {} of {} bytes",
                self.verbs.0, self.id, self.done, self.total
            ));
            self.next = self.done + PROGRESS_STEP;
        }
    }

    pub fn end(self) {
        self.report.line(&format!("{} {}", self.verbs.1, self.id));
    }
}

fn short(d: &Digest) -> &str {
    &d.as_str()[..19]
}

fn open_archive<R: Read>(input: R) -> Result<Opened<R>> {
    archive::open(input).map_err(Error::InvalidArchive)
}

fn summary_of_meta(m: &Metadata) -> Summary {
    let first = &m.images[0];
    Summary {
        manifest_digest: first.manifest.to_string(),
        final_reference: first.reference.clone(),
        images: m.images.iter().map(|i| i.reference.clone()).collect(),
        base_reference: m.base_description(),
        blobs_in_archive: m.blobs.len() as u32,
        bytes_in_archive: m.blobs.iter().map(|d| d.size).sum(),
        blobs_omitted: m.omitted.len() as u32,
        bytes_omitted: m.omitted.iter().map(|d| d.size).sum(),
        ..Summary::default()
    }
}

fn summary_of<R: Read>(archive: &Opened<R>) -> Summary {
    Summary {
        archive_bytes: archive.offset(),
        ..summary_of_meta(&archive.meta)
    }
}

fn parse_location(what: &str, s: &str) -> Result<Location> {
    Location::parse(s).map_err(|e| Error::InvalidReference(format!("{what}: {e}")))
}

fn net<'t>(options: &Options, report: &'t dyn Reporter) -> Net<'t> {
    Net {
        retry: Retry {
            attempts: options.max_retries,
            ..Retry::default()
        },
        report,
    }
}

fn open_source<'t>(
    transport: &'t dyn Transport,
    l: &Location,
    credentials: Option<Credentials>,
    options: &Options,
    report: &'t dyn Reporter,
) -> Result<Box<dyn Source + 't>> {
    Ok(match l {
        Location::Registry(r) => Box::new(Client::connect(
            transport,
            r,
            credentials,
            Access::pull(),
            &options.insecure_registries,
            net(options, report),
        )?),
        Location::OciDir { dir, .. } => Box::new(OciDir::new(dir)),
    })
}

fn open_destination<'t>(
    transport: &'t dyn Transport,
    l: &Location,
    options: &Options,
    push: bool,
    mount_sources: &[String],
    report: &'t dyn Reporter,
) -> Result<Box<dyn Destination + 't>> {
    Ok(match l {
        Location::Registry(r) => {
            let access = Access {
                push,
                also_pull: mount_sources
                    .iter()
                    .filter(|s| **s != r.repository)
                    .cloned()
                    .collect(),
            };
            Box::new(Client::connect(
                transport,
                r,
                options.push_credentials.clone(),
                access,
                &options.insecure_registries,
                net(options, report),
            )?)
        }
        Location::OciDir { dir, .. } => Box::new(OciDir::new(dir)),
    })
}
