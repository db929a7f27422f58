//! The three operations, over a transport and an archive stream.

use crate::digest::{Digest, copy_verified};
use crate::error::{Error, Result};
use crate::layout::{self, Metadata, Opened};
use crate::manifest::{self, Descriptor, Manifest};
use crate::plan::{self, Fetched};
use crate::platform::{self, PlatformSpec, Selection};
use crate::reference::Reference;
use crate::registry::{Access, Client, Credentials, Net, Retry, Transport};
use crate::store::{Destination, Layout, Location, Source};
use crate::tar;
use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Write};

/// Settings shared by every operation (the WIT `options`).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub base_credentials: Option<Credentials>,
    pub final_credentials: Option<Credentials>,
    pub push_credentials: Option<Credentials>,
    pub insecure_registries: Vec<String>,
    /// Repositories of the destination registry to mount blobs from at push.
    pub mount_from: Vec<String>,
    /// `os/arch[/variant]` to carry; empty for every platform.
    pub platforms: Vec<String>,
    /// Carry signatures, attestations and other referrers of the image.
    pub referrers: bool,
    /// Retries of a failed request (connection errors, 429, 5xx), and resumes of a cut
    /// download; 0 for none.
    pub max_retries: u32,
    pub progress: bool,
}

/// What an operation did (the WIT `summary`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub manifest_digest: String,
    pub final_reference: String,
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

/// The most manifests one image may have (an index and its children, nested).
const MAX_MANIFESTS: usize = 1024;

fn short(d: &Digest) -> &str {
    &d.as_str()[..19]
}

/// Fetches a top-level manifest and, for indexes, every child.
fn fetch_all(client: &dyn Source, key: &str) -> Result<Vec<Fetched>> {
    let (top, bytes) = client.manifest(key)?;
    fetch_tree(client, top, bytes)
}

fn invalid_manifest(client: &dyn Source, d: &Digest, e: String) -> Error {
    Error::InvalidManifest(format!("manifest {d} in {} {e}", client.describe()))
}

/// Fetches every manifest under `top` (nested indexes included), verifying each against
/// the descriptor that names it. Top first, then breadth first; each manifest once.
fn fetch_tree(client: &dyn Source, top: Descriptor, bytes: Vec<u8>) -> Result<Vec<Fetched>> {
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
            let (got, bytes) = client.manifest(child.digest.as_str())?;
            if got.size != child.size {
                return Err(Error::DigestMismatch(format!(
                    "manifest {} is {} bytes, its index declares {}",
                    child.digest, got.size, child.size
                )));
            }
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
fn choose_platforms(
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
            let (got, bytes) = client.manifest(child.digest.as_str())?;
            if got.size != child.size {
                return Err(Error::DigestMismatch(format!(
                    "manifest {} is {} bytes, its index declares {}",
                    child.digest, got.size, child.size
                )));
            }
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
fn find_attached(
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
fn children_first<'a>(
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

/// Writes the difference archive of `final_ref` over `base_ref` to `out`.
pub fn pull(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    base_ref: &str,
    final_ref: &str,
    out: &mut dyn Write,
) -> Result<Summary> {
    let fin = parse_location("final image", final_ref)?;
    let base = if base_ref == layout::SCRATCH {
        None
    } else {
        Some(parse_location("base image", base_ref)?)
    };
    let final_client = open_source(
        transport,
        &fin,
        options.final_credentials.clone(),
        options,
        report,
    )?;
    let final_client = final_client.as_ref();
    let specs = options
        .platforms
        .iter()
        .map(|p| PlatformSpec::parse(p).map_err(Error::InvalidReference))
        .collect::<Result<Vec<_>>>()?;
    let (top, bytes) = final_client.manifest(&manifest_key(&fin))?;
    let (top, bytes) = choose_platforms(final_client, top, bytes, &specs, report)?;
    let mut manifests = fetch_tree(final_client, top, bytes)?;
    let top = manifests[0].descriptor.clone();
    let mut attached = Vec::new();
    if options.referrers {
        for (tag, tree) in find_attached(final_client, &manifests, report)? {
            attached.push(layout::Attached {
                tag,
                manifest: tree[0].descriptor.digest.clone(),
            });
            manifests.extend(tree);
        }
    }
    report.line(&format!(
        "final {}: {} ({} manifest(s))",
        display_location(&fin, final_ref),
        top.digest,
        manifests.len()
    ));

    let mut base_blobs = BTreeSet::new();
    let mut base_digest = None;
    if let Some(base) = &base {
        let client = open_source(
            transport,
            base,
            options.base_credentials.clone(),
            options,
            report,
        )?;
        let base_manifests = fetch_all(client.as_ref(), &manifest_key(base))?;
        base_digest = Some(base_manifests[0].descriptor.digest.clone());
        base_blobs.extend(
            base_manifests
                .iter()
                .flat_map(|m| m.manifest.blobs())
                .map(|d| d.digest.clone()),
        );
        report.line(&format!(
            "base {}: {} ({} blob(s))",
            display_location(base, base_ref),
            base_manifests[0].descriptor.digest,
            base_blobs.len()
        ));
    }

    let plan = plan::diff(&manifests, &base_blobs);
    let meta = Metadata {
        imo_archive_version: layout::FORMAT_VERSION,
        final_reference: display_location(&fin, final_ref),
        base_reference: base.as_ref().map_or_else(
            || layout::SCRATCH.to_owned(),
            |b| display_location(b, base_ref),
        ),
        base_digest,
        manifests: manifests.iter().map(|m| m.descriptor.clone()).collect(),
        blobs: plan.include.clone(),
        omitted: plan.omit.clone(),
        attached,
    };

    let io = |e: std::io::Error| Error::Io(format!("writing the archive: {e}"));
    let mut w = tar::Writer::new(out);
    w.file(layout::LAYOUT_FILE, layout::LAYOUT_CONTENT)
        .map_err(io)?;
    w.file(
        layout::METADATA_FILE,
        &serde_json::to_vec_pretty(&meta).expect("metadata serialises"),
    )
    .map_err(io)?;
    w.file(layout::INDEX_FILE, &layout::index_json(&meta, fin.tag()))
        .map_err(io)?;
    for m in &manifests {
        w.file(&layout::blob_path(&m.descriptor.digest), &m.bytes)
            .map_err(io)?;
    }
    for d in &plan.include {
        let mut progress = Progress::start(report, ("copying", "copied"), d);
        w.header(&layout::blob_path(&d.digest), d.size)
            .map_err(io)?;
        final_client.blob(d, &mut |chunk| {
            progress.advance(chunk.len());
            w.data(chunk).map_err(io)
        })?;
        w.end_entry(d.size).map_err(io)?;
        progress.end();
    }
    w.finish().map_err(io)?;

    let summary = Summary {
        manifest_digest: top.digest.to_string(),
        final_reference: meta.final_reference.clone(),
        base_reference: meta.base_reference,
        blobs_in_archive: plan.include.len() as u32,
        bytes_in_archive: plan.include.iter().map(|d| d.size).sum(),
        blobs_omitted: plan.omit.len() as u32,
        bytes_omitted: plan.omit.iter().map(|d| d.size).sum(),
        archive_bytes: w.written,
        ..Summary::default()
    };
    Ok(summary)
}

fn open_archive<R: Read>(input: R) -> Result<Opened<R>> {
    layout::open(input).map_err(Error::InvalidArchive)
}

fn summary_of<R: Read>(archive: &Opened<R>) -> Summary {
    let m = &archive.meta;
    Summary {
        manifest_digest: m.manifests[0].digest.to_string(),
        final_reference: m.final_reference.clone(),
        base_reference: m.base_reference.clone(),
        blobs_in_archive: m.blobs.len() as u32,
        bytes_in_archive: m.blobs.iter().map(|d| d.size).sum(),
        blobs_omitted: m.omitted.len() as u32,
        bytes_omitted: m.omitted.iter().map(|d| d.size).sum(),
        archive_bytes: archive.offset(),
        ..Summary::default()
    }
}

/// Where the destination can find a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// Already in the destination repository.
    Here,
    /// In another repository of the destination registry, to be mounted from.
    In(String),
    Nowhere,
}

/// Repositories of the destination registry that blobs may be mounted from: those the user
/// names, and the base image's repository path (where a mirror usually keeps the base).
fn mount_sources(dest: &Location, meta: &Metadata, options: &Options) -> Vec<String> {
    let Location::Registry(dest) = dest else {
        return vec![];
    };
    let base_repo = Reference::parse(&meta.base_reference)
        .ok()
        .map(|r| r.repository);
    let mut sources: Vec<String> = Vec::new();
    for repo in options.mount_from.iter().cloned().chain(base_repo) {
        if repo != dest.repository && !sources.contains(&repo) {
            sources.push(repo);
        }
    }
    sources
}

/// Finds each blob with `HEAD` requests only: nothing is written while surveying.
fn survey(
    client: &dyn Destination,
    blobs: &[Descriptor],
    sources: &[String],
) -> Result<Vec<Found>> {
    let mut found = Vec::with_capacity(blobs.len());
    'blobs: for d in blobs {
        if client.has_blob(&d.digest)? {
            found.push(Found::Here);
            continue;
        }
        for repo in sources {
            if client.has_blob_in(repo, &d.digest)? {
                found.push(Found::In(repo.clone()));
                continue 'blobs;
            }
        }
        found.push(Found::Nowhere);
    }
    Ok(found)
}

/// Fails with every omitted blob the destination cannot provide.
fn vet_omitted(
    client: &dyn Destination,
    meta: &Metadata,
    sources: &[String],
    report: &dyn Reporter,
) -> Result<Vec<Found>> {
    let found = survey(client, &meta.omitted, sources)?;
    let missing: Vec<String> = meta
        .omitted
        .iter()
        .zip(&found)
        .filter(|(_, f)| **f == Found::Nowhere)
        .map(|(d, _)| d.digest.to_string())
        .collect();
    let mountable = found.iter().filter(|f| matches!(f, Found::In(_))).count();
    report.line(&format!(
        "vet {}: {} of {} omitted blob(s) present{}",
        client.describe(),
        meta.omitted.len() - missing.len(),
        meta.omitted.len(),
        if mountable > 0 {
            format!(" ({mountable} by mounting from another repository)")
        } else {
            String::new()
        }
    ));
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(Error::MissingBlobs(missing))
    }
}

/// Checks that `destination` holds (or can mount) every blob the archive leaves out.
pub fn push_vet(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    archive: &mut dyn Read,
    destination: &str,
) -> Result<Summary> {
    let dest = parse_location("destination", destination)?;
    let archive = open_archive(archive)?;
    let sources = mount_sources(&dest, &archive.meta, options);
    let client = open_destination(transport, &dest, options, false, &sources, report)?;
    vet_omitted(client.as_ref(), &archive.meta, &sources, report)?;
    Ok(summary_of(&archive))
}

/// The tag (or digest) the top-level manifest is pushed under: the destination's, else
/// the final image's tag, else `latest`.
fn destination_key(dest: &Location, meta: &Metadata) -> Result<String> {
    let top = &meta.manifests[0].digest;
    if let Location::Registry(r) = dest
        && let Some(d) = &r.digest
    {
        if d != top {
            return Err(Error::InvalidReference(format!(
                "destination {r} pins digest {d}, but the archive's image is {top}"
            )));
        }
        if r.tag.is_none() {
            return Ok(d.to_string());
        }
    }
    if let Some(t) = dest.tag() {
        return Ok(t.to_owned());
    }
    let from_final = Location::parse(&meta.final_reference)
        .ok()
        .and_then(|l| l.tag().map(str::to_owned));
    Ok(from_final.unwrap_or_else(|| "latest".to_owned()))
}

fn parse_location(what: &str, s: &str) -> Result<Location> {
    Location::parse(s).map_err(|e| Error::InvalidReference(format!("{what}: {e}")))
}

/// How a location is recorded and shown: a registry reference normalised, a layout as given.
fn display_location(l: &Location, given: &str) -> String {
    match l {
        Location::Registry(r) => r.to_string(),
        Location::Layout { .. } => given.to_owned(),
    }
}

/// The manifest to read first: a registry reference's digest or tag; a layout's tag, or
/// its only image.
fn manifest_key(l: &Location) -> String {
    match l {
        Location::Registry(r) => r.manifest_key(),
        Location::Layout { tag, .. } => tag.clone().unwrap_or_default(),
    }
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
        Location::Layout { dir, .. } => Box::new(Layout::new(dir)),
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
                also_pull: mount_sources.to_vec(),
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
        Location::Layout { dir, .. } => Box::new(Layout::new(dir)),
    })
}

/// Vets, uploads what the destination lacks, then puts the manifests, top-level last.
pub fn push(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    archive: &mut dyn Read,
    destination: &str,
) -> Result<Summary> {
    let dest = parse_location("destination", destination)?;
    let mut archive = open_archive(archive)?;
    let key = destination_key(&dest, &archive.meta)?;
    let sources = mount_sources(&dest, &archive.meta, options);
    let client = open_destination(transport, &dest, options, true, &sources, report)?;
    let client = client.as_ref();
    let omitted = vet_omitted(client, &archive.meta, &sources, report)?;
    let carried = survey(client, &archive.meta.blobs, &sources)?;

    // Everything is known to be available: only now does anything change at the destination.
    let mut summary = summary_of(&archive);
    summary.blobs_skipped = carried.iter().filter(|f| **f == Found::Here).count() as u32;
    let mut present = BTreeSet::new();
    let all = archive
        .meta
        .omitted
        .iter()
        .zip(&omitted)
        .chain(archive.meta.blobs.iter().zip(&carried));
    for (d, found) in all {
        match found {
            Found::Here => {
                present.insert(d.digest.clone());
            }
            Found::In(repo) => {
                if client.mount(&d.digest, repo)? {
                    report.line(&format!("mounted {} from {repo}", short(&d.digest)));
                    summary.blobs_mounted += 1;
                    present.insert(d.digest.clone());
                } else if archive.meta.omitted.contains(d) {
                    return Err(Error::MissingBlobs(vec![d.digest.to_string()]));
                }
            }
            Found::Nowhere => {}
        }
    }

    let mut buf = vec![0u8; 1 << 20];
    while let Some(d) = archive.next_blob().map_err(Error::InvalidArchive)? {
        if present.contains(&d.digest) {
            continue;
        }
        report.line(&format!(
            "uploading {} ({} bytes)",
            short(&d.digest),
            d.size
        ));
        let mut progress = Progress::start(report, ("uploading", "uploaded"), &d);
        client.upload(&d, &mut |w| {
            upload_from_archive(&mut archive, &d, &mut buf, &mut progress, w)
        })?;
        progress.end();
        summary.blobs_uploaded += 1;
        summary.bytes_uploaded += d.size;
    }

    // The image first, children before the indexes that name them and the top-level
    // manifest last under the tag; then what is attached to it, each under its own tag.
    let mut roots = vec![(archive.manifests[0].descriptor.digest.clone(), key)];
    for a in &archive.meta.attached {
        roots.push((
            a.manifest.clone(),
            a.tag.clone().unwrap_or_else(|| a.manifest.to_string()),
        ));
    }
    let mut done = BTreeSet::new();
    for (root, root_key) in roots {
        let mut order = Vec::new();
        children_first(&root, &archive.manifests, &mut order, &mut done);
        for m in order {
            let key = if m.descriptor.digest == root {
                root_key.as_str()
            } else {
                m.descriptor.digest.as_str()
            };
            client.put_manifest(key, &m.descriptor, &m.bytes)?;
        }
    }
    summary.archive_bytes = archive.offset();
    Ok(summary)
}

/// Streams one archive blob into an upload, verifying it; the last chunk is held back until
/// the digest checks out, so a corrupt blob aborts the request instead of completing it.
fn upload_from_archive<R: Read>(
    archive: &mut Opened<R>,
    d: &Descriptor,
    buf: &mut [u8],
    progress: &mut Progress<'_>,
    w: &mut dyn Write,
) -> Result<()> {
    copy_verified(
        &d.digest,
        d.size,
        buf,
        &mut |b| archive.read(b).map_err(Error::InvalidArchive),
        &mut |chunk| {
            progress.advance(chunk.len());
            w.write_all(chunk)
                .map_err(|e| Error::Unreachable(format!("uploading {}: {e}", d.digest)))
        },
        &|m| Error::DigestMismatch(format!("archive blob {}: {m}", d.digest)),
    )
}
