//! The operations, over a transport and an archive stream: pull (`pull`), vet and push
//! (`push`), inventories (`inventory`); how manifest trees are fetched (`tree`) and where
//! each image goes (`targets`).

mod delta;
mod inventory;
mod pull;
mod push;
mod targets;
mod tree;

pub use inventory::inventory;
pub use pull::{
    ArchiveFile, FETCH_WIDTH, Fetch, Fetcher, FilePlan, PlannedBlob, PullRequest, ShareDone,
    between_blobs, fetch_share, fetch_share_to_streams, plan_bundle_to_file, plan_bundle_to_stream,
    pull_bundle, pull_bundle_to_file,
};
pub use push::{
    PlannedUpload, PushPlan, Uploaded, plan_push_file, push, push_file_finish, push_file_share,
    push_vet,
};
pub use targets::{Mapping, Route, Target, targets};

use crate::archive::{self, Metadata, Opened};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Descriptor;
use crate::progress::{self, Event};
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
    /// At vet and push, also ask about and mount from the repositories the archive names
    /// (its bases' paths, where an inventory placed a blob): trusting the archive with the
    /// destination credentials.
    pub mount_from_archive: bool,
    /// `os/arch[/variant]` to carry; empty for every platform.
    pub platforms: Vec<String>,
    /// Carry signatures, attestations and other referrers of the image.
    pub referrers: bool,
    /// Retries of a failed request (connection errors, 429, 5xx), and resumes or restarts of
    /// a cut download or upload; 0 for none.
    pub max_retries: u32,
    /// Blob uploads go in `PATCH` chunks of this many bytes; 0 for one `PUT` each.
    pub chunk_size: u64,
    pub progress: bool,
    /// At push and vet: final image reference to destination, overriding the destination
    /// argument for that image.
    pub destination_map: Vec<(String, String)>,
    /// Pull: carry layers the bases lack as deltas where that is much smaller.
    pub deltas: bool,
}

/// What an operation found and did, as the WIT `summary` record reports it. It serializes to
/// the JSON that `imo --json` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Digest of the final image's top-level manifest, as its registry serves it.
    pub manifest_digest: String,
    /// Reference of the (first) final image the archive was pulled from.
    pub final_reference: String,
    /// References of every final image in the archive, `final_reference` first.
    pub images: Vec<String>,
    /// The bases and inventories the difference was taken against, comma separated;
    /// `scratch` for none.
    pub base_reference: String,
    /// Blobs (configs and layers; manifests always travel) the archive carries.
    pub blobs_in_archive: u32,
    /// Total size of the blobs the archive carries.
    pub bytes_in_archive: u64,
    /// Blobs the manifests reference that the archive leaves out.
    pub blobs_omitted: u32,
    /// Total size of the blobs the archive leaves out.
    pub bytes_omitted: u64,
    /// Push only: blobs uploaded to the destination.
    pub blobs_uploaded: u32,
    /// Push only: total size of the blobs uploaded.
    pub bytes_uploaded: u64,
    /// Push only: blobs carried in the archive that the destination already had.
    pub blobs_skipped: u32,
    /// Push only: blobs mounted from another repository of the destination registry
    /// instead of uploaded.
    pub blobs_mounted: u32,
    /// Bytes of archive written (pull) or read (vet, push).
    pub archive_bytes: u64,
    /// Pull into a file resumed: blobs kept from the partial archive rather than fetched.
    pub blobs_kept: u32,
    /// Their total size.
    pub bytes_kept: u64,
    /// Pull with deltas: how each layer the bases lack travelled.
    pub layers: Vec<LayerTravel>,
    /// Push: layers rebuilt from deltas (and counted as uploaded).
    pub layers_rebuilt: u32,
}

/// How a layer the bases lack travelled in a pull with deltas.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LayerTravel {
    pub layer: String,
    pub size: u64,
    /// The delta's size; 0 when the layer went whole.
    pub delta_size: u64,
    /// Why it went whole; empty for a delta.
    pub whole_because: String,
}

/// Where progress lines go; stderr in the component.
pub use crate::registry::Reporter;

/// The progress of one blob, reported as [`progress::Event`] lines: its start, every
/// [`PROGRESS_STEP`] bytes, and its end. Plain text for the wasmtime CLI; the imo host turns
/// them into progress bars.
pub struct Progress<'a> {
    report: &'a dyn Reporter,
    verbs: (&'static str, &'static str),
    id: String,
    total: u64,
    done: u64,
    next: u64,
}

pub const PROGRESS_STEP: u64 = progress::STEP;

impl<'a> Progress<'a> {
    /// Reports the start of `d`, under `verbs.0` while it goes on and `verbs.1` at its end.
    pub fn start(
        report: &'a dyn Reporter,
        verbs: (&'static str, &'static str),
        d: &Descriptor,
    ) -> Self {
        let id = short(&d.digest).to_owned();
        let start = Event::Start {
            verb: verbs.0,
            id: &id,
            total: d.size,
        };
        report.line(&start.to_string());
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
            let advance = Event::Advance {
                verb: self.verbs.0,
                id: &self.id,
                done: self.done,
                total: self.total,
            };
            self.report.line(&advance.to_string());
            self.next = self.done + PROGRESS_STEP;
        }
    }

    pub fn end(self) {
        let end = Event::End {
            verb: self.verbs.1,
            id: &self.id,
        };
        self.report.line(&end.to_string());
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
        bytes_in_archive: m.blobs.iter().fold(0, |sum, d| sum.saturating_add(d.size)),
        blobs_omitted: m.omitted.len() as u32,
        bytes_omitted: (m.omitted.iter()).fold(0, |sum, d| sum.saturating_add(d.size)),
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
        chunk_size: options.chunk_size,
    }
}

fn open_source<'t>(
    transport: &'t dyn Transport,
    l: &Location,
    role: Option<&Credentials>,
    options: &Options,
    report: &'t dyn Reporter,
) -> Result<Box<dyn Source + 't>> {
    Ok(match l {
        Location::Registry(r) => Box::new(Client::connect(
            transport,
            r,
            crate::credentials::select(
                &r.registry,
                &r.repository,
                role,
                &options.registry_credentials,
            ),
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
                crate::credentials::select(
                    &r.registry,
                    &r.repository,
                    options.push_credentials.as_ref(),
                    &options.registry_credentials,
                ),
                access,
                &options.insecure_registries,
                net(options, report),
            )?)
        }
        Location::OciDir { dir, .. } => Box::new(OciDir::new(dir)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn a_blobs_progress_is_reported_as_events() {
        let lines = RefCell::new(Vec::new());
        let report = |l: &str| lines.borrow_mut().push(l.to_owned());
        let d = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            digest: Digest::of(b"blob"),
            size: 3 * PROGRESS_STEP,
            platform: None,
            annotations: Default::default(),
        };
        let mut p = Progress::start(&report, ("uploading", "uploaded"), &d);
        for _ in 0..3 * 4 {
            p.advance((PROGRESS_STEP / 4) as usize);
        }
        p.end();
        let id = &d.digest.as_str()[..19];
        let lines = lines.into_inner();
        let events: Vec<Event<'_>> = lines.iter().map(|l| progress::parse(l)).collect();
        let advance = |done| Event::Advance {
            verb: "uploading",
            id,
            done,
            total: d.size,
        };
        assert_eq!(
            events,
            [
                Event::Start {
                    verb: "uploading",
                    id,
                    total: d.size
                },
                advance(PROGRESS_STEP),
                advance(2 * PROGRESS_STEP),
                Event::End {
                    verb: "uploaded",
                    id
                },
            ]
        );
    }
}
