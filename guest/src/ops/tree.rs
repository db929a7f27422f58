//! Manifest trees: an image's manifests fetched and verified, the platforms asked for
//! chosen, and the signatures and other artifacts attached to it found.

use super::Reporter;
use crate::archive;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{self, Descriptor, Manifest};
use crate::plan::Fetched;
use crate::platform::{self, PlatformSpec, Selection};
use crate::store::Source;
use std::collections::{BTreeSet, VecDeque};

/// The most manifests one image may have (an index and its children, nested).
pub(super) const MAX_MANIFESTS: usize = 1024;

/// Fetches a top-level manifest and, for indexes, every child.
pub(super) fn fetch_all(client: &dyn Source, key: &str) -> Result<Vec<Fetched>> {
    let (top, bytes) = client.manifest(key)?;
    fetch_tree(client, top, bytes)
}

fn invalid_manifest(client: &dyn Source, d: &Digest, e: String) -> Error {
    Error::InvalidManifest(format!("manifest {d} in {} {e}", client.describe()))
}

/// Fetches every manifest under `top` (nested indexes included), verifying each against
/// the descriptor that names it. Top first, then breadth first; each manifest once.
pub(super) fn fetch_tree(
    client: &dyn Source,
    top: Descriptor,
    bytes: Vec<u8>,
) -> Result<Vec<Fetched>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::from([top.digest.clone()]);
    let mut queue = VecDeque::from([(top, bytes)]);
    while let Some((descriptor, bytes)) = queue.pop_front() {
        let manifest = Manifest::parse(&bytes, Some(&descriptor.media_type))
            .map_err(|e| invalid_manifest(client, &descriptor.digest, e))?;
        for child in manifest.children() {
            if !manifest::is_manifest_type(&child.media_type) {
                return Err(Error::InvalidManifest(format!(
                    "index {} references {} of media type {}, which is not an image manifest imo handles",
                    descriptor.digest, child.digest, child.media_type
                )));
            }
            if !seen.insert(child.digest.clone()) {
                continue;
            }
            let bytes = child_manifest(client, child, &descriptor.digest)?;
            queue.push_back((child.clone(), bytes));
        }
        out.push(Fetched {
            descriptor,
            bytes,
            manifest,
        });
        if out.len() > MAX_MANIFESTS {
            return Err(Error::InvalidManifest(format!(
                "{} has more than {MAX_MANIFESTS} manifests",
                out[0].descriptor.digest
            )));
        }
    }
    Ok(out)
}

/// Narrows the final image to the platforms asked for (see [`platform::Selection`]).
pub(super) fn choose_platforms(
    client: &dyn Source,
    top: Descriptor,
    bytes: Vec<u8>,
    specs: &[PlatformSpec],
    report: &dyn Reporter,
) -> Result<(Descriptor, Vec<u8>)> {
    if specs.is_empty() {
        return Ok((top, bytes));
    }
    let parsed = Manifest::parse(&bytes, Some(&top.media_type))
        .map_err(|e| invalid_manifest(client, &top.digest, e))?;
    if parsed.children().is_empty() {
        report.line("the final image has one platform; --platform leaves it whole");
        return Ok((top, bytes));
    }
    let selection = platform::select(&bytes, &top.media_type, parsed.children(), specs)
        .map_err(|e| Error::NotFound(format!("{} {}: {e}", client.describe(), top.digest)))?;
    match selection {
        Selection::One(child) => {
            report.line(&format!(
                "carrying platform {} only: {}",
                platform::describe(&child.platform),
                child.digest
            ));
            let bytes = child_manifest(client, &child, &top.digest)?;
            Ok((
                Descriptor {
                    platform: None,
                    ..child
                },
                bytes,
            ))
        }
        Selection::Subset { bytes, descriptor } => {
            report.line(&format!(
                "carrying a subset index {} of the selected platforms",
                descriptor.digest
            ));
            Ok((descriptor, bytes))
        }
    }
}

/// Signatures, attestations and SBOMs attached to the carried manifests: cosign's
/// `sha256-<hex>.sig|.att|.sbom` tags, the OCI 1.1 referrers tag schema (`sha256-<hex>`),
/// and the referrers API where the registry has it.
pub(super) fn find_attached(
    client: &dyn Source,
    manifests: &[Fetched],
    report: &dyn Reporter,
) -> Result<Vec<(Option<String>, Vec<Fetched>)>> {
    let mut found: Vec<(Option<String>, Vec<Fetched>)> = Vec::new();
    let mut seen: BTreeSet<Digest> = manifests
        .iter()
        .map(|m| m.descriptor.digest.clone())
        .collect();
    for m in manifests {
        let hex = m.descriptor.digest.hex();
        for suffix in [".sig", ".att", ".sbom", ""] {
            let tag = format!("sha256-{hex}{suffix}");
            if let Some((d, bytes)) = client.manifest_if_exists(&tag)?
                && seen.insert(d.digest.clone())
            {
                report.line(&format!("carrying {tag} ({})", d.digest));
                let tree = fetch_tree(client, d, bytes)?;
                seen.extend(tree.iter().map(|t| t.descriptor.digest.clone()));
                found.push((Some(tag), tree));
            }
        }
        for r in client.referrers(&m.descriptor.digest)? {
            if !seen.insert(r.digest.clone()) {
                continue;
            }
            let (got, bytes) = client.manifest(r.digest.as_str())?;
            report.line(&format!(
                "carrying referrer {} of {}",
                got.digest, m.descriptor.digest
            ));
            let tree = fetch_tree(
                client,
                Descriptor {
                    media_type: got.media_type,
                    ..r
                },
                bytes,
            )?;
            seen.extend(tree.iter().map(|t| t.descriptor.digest.clone()));
            found.push((None, tree));
        }
    }
    Ok(found)
}

/// Manifests in the order a registry accepts them: every child before the index naming it.
pub(super) fn children_first<'a>(
    root: &Digest,
    all: &'a [Fetched],
    out: &mut Vec<&'a Fetched>,
    done: &mut BTreeSet<Digest>,
) {
    let Some(m) = all.iter().find(|m| &m.descriptor.digest == root) else {
        return;
    };
    if !done.insert(root.clone()) {
        return;
    }
    for child in m.manifest.children() {
        children_first(&child.digest, all, out, done);
    }
    out.push(m);
}

/// The manifests of one image: its tree and what is attached to it, each once.
pub(super) fn image_tree<'a>(all: &'a [Fetched], image: &archive::Image) -> Vec<&'a Fetched> {
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    children_first(&image.manifest, all, &mut out, &mut done);
    for a in &image.attached {
        children_first(&a.manifest, all, &mut out, &mut done);
    }
    out
}

/// Every blob one image references, each once.
pub(super) fn image_blobs(all: &[Fetched], image: &archive::Image) -> BTreeSet<Digest> {
    image_tree(all, image)
        .into_iter()
        .flat_map(|m| m.manifest.blobs())
        .map(|d| d.digest.clone())
        .collect()
}

/// The bytes of an index's child manifest, which must be the size the index (`index`)
/// declares.
fn child_manifest(client: &dyn Source, child: &Descriptor, index: &Digest) -> Result<Vec<u8>> {
    let (got, bytes) = client.manifest(child.digest.as_str())?;
    if got.size != child.size {
        return Err(Error::DigestMismatch(format!(
            "manifest {} in {} is {} bytes, index {index} declares {}",
            child.digest,
            client.describe(),
            got.size,
            child.size
        )));
    }
    Ok(bytes)
}
