//! Conversions between the WIT types and the operations' own.

use super::wit;
use crate::error::Error;
use crate::ops::{self, Options, Summary};
use crate::registry::Credentials;

impl From<wit::Credentials> for Credentials {
    fn from(c: wit::Credentials) -> Self {
        Credentials {
            username: c.username,
            password: c.password,
        }
    }
}

impl From<wit::Options> for Options {
    fn from(o: wit::Options) -> Self {
        Options {
            base_credentials: o.base_credentials.map(Into::into),
            final_credentials: o.final_credentials.map(Into::into),
            push_credentials: o.push_credentials.map(Into::into),
            registry_credentials: o
                .registry_credentials
                .into_iter()
                .map(|(key, c)| (key, c.into()))
                .collect(),
            insecure_registries: o.insecure_registries,
            mount_from: o.mount_from,
            platforms: o.platforms,
            referrers: o.referrers,
            max_retries: o.max_retries,
            chunk_size: o.chunk_size,
            progress: o.progress,
            destination_map: o.destination_map,
            mount_from_archive: o.mount_from_archive,
            deltas: o.deltas,
        }
    }
}

impl From<Summary> for wit::Summary {
    fn from(s: Summary) -> Self {
        wit::Summary {
            manifest_digest: s.manifest_digest,
            final_reference: s.final_reference,
            images: s.images,
            base_reference: s.base_reference,
            blobs_in_archive: s.blobs_in_archive,
            bytes_in_archive: s.bytes_in_archive,
            blobs_omitted: s.blobs_omitted,
            bytes_omitted: s.bytes_omitted,
            blobs_uploaded: s.blobs_uploaded,
            bytes_uploaded: s.bytes_uploaded,
            blobs_skipped: s.blobs_skipped,
            blobs_mounted: s.blobs_mounted,
            archive_bytes: s.archive_bytes,
            blobs_kept: s.blobs_kept,
            bytes_kept: s.bytes_kept,
            layers: s
                .layers
                .into_iter()
                .map(|l| wit::LayerTravel {
                    layer: l.layer,
                    size: l.size,
                    delta_size: l.delta_size,
                    whole_because: l.whole_because,
                })
                .collect(),
            layers_rebuilt: s.layers_rebuilt,
        }
    }
}

impl From<Error> for wit::Error {
    fn from(e: Error) -> Self {
        // The WIT cases carry the full message, so hosts print the same text as the CLI.
        let message = e.to_string();
        match e {
            Error::InvalidReference(_) => wit::Error::InvalidReference(message),
            Error::Unreachable(_) => wit::Error::Unreachable(message),
            Error::Denied(_) => wit::Error::Denied(message),
            Error::Unauthorized(_) => wit::Error::Unauthorized(message),
            Error::NotFound(_) => wit::Error::NotFound(message),
            Error::Registry(_) => wit::Error::Registry(message),
            Error::DigestMismatch(_) => wit::Error::DigestMismatch(message),
            Error::InvalidManifest(_) => wit::Error::InvalidManifest(message),
            Error::InvalidArchive(_) => wit::Error::InvalidArchive(message),
            Error::MissingBlobs(digests) => wit::Error::MissingBlobs(digests),
            Error::Io(_) => wit::Error::Io(message),
            Error::Mismatched(_) => wit::Error::DigestMismatch(message),
            Error::Status(s) => match s.status {
                401 | 403 => wit::Error::Unauthorized(message),
                404 => wit::Error::NotFound(message),
                _ => wit::Error::Registry(message),
            },
        }
    }
}

pub(super) fn pull_request(request: wit::Bundle) -> ops::PullRequest {
    ops::PullRequest {
        bases: request.bases,
        inventories: request
            .inventories
            .into_iter()
            .map(|(name, json)| (name, json.into_bytes()))
            .collect(),
        finals: request.finals,
    }
}

impl From<ops::FilePlan> for wit::PullPlan {
    fn from(p: ops::FilePlan) -> Self {
        wit::PullPlan {
            blobs: (p.blobs.into_iter())
                .map(|b| wit::PlannedBlob {
                    digest: b.digest,
                    size: b.size,
                    offset: b.offset,
                    source: b.source,
                })
                .collect(),
            archive_bytes: p.archive_bytes,
            summary: p.summary.into(),
        }
    }
}

impl From<wit::PullPlan> for ops::FilePlan {
    fn from(p: wit::PullPlan) -> Self {
        ops::FilePlan {
            blobs: (p.blobs.into_iter())
                .map(|b| ops::PlannedBlob {
                    digest: b.digest,
                    size: b.size,
                    offset: b.offset,
                    source: b.source,
                })
                .collect(),
            archive_bytes: p.archive_bytes,
            // The share reports only what it fetched; the plan's summary is the host's.
            summary: Summary::default(),
        }
    }
}

impl From<ops::PushPlan> for wit::PushPlan {
    fn from(p: ops::PushPlan) -> Self {
        wit::PushPlan {
            uploads: (p.uploads.into_iter())
                .map(|u| wit::PlannedUpload {
                    digest: u.digest,
                    size: u.size,
                    offset: u.offset,
                    target: u.target,
                    also: u.also,
                })
                .collect(),
            archive_bytes: p.archive_bytes,
            summary: p.summary.into(),
        }
    }
}

impl From<wit::PushPlan> for ops::PushPlan {
    fn from(p: wit::PushPlan) -> Self {
        ops::PushPlan {
            uploads: (p.uploads.into_iter())
                .map(|u| ops::PlannedUpload {
                    digest: u.digest,
                    size: u.size,
                    offset: u.offset,
                    target: u.target,
                    also: u.also,
                })
                .collect(),
            archive_bytes: p.archive_bytes,
            // Shares and the finish report only what they did; the plan's summary is the host's.
            summary: Summary::default(),
        }
    }
}
