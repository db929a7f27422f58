//! The three operations, over a transport and an archive stream.

use crate::digest::{Digest, Verifying};
use crate::error::{Error, Result};
use crate::inventory::{self, Inventory};
use crate::layout::{self, Metadata, Opened};
use crate::manifest::{self, Descriptor, Manifest};
use crate::plan::{self, Fetched};
use crate::platform::{self, PlatformSpec, Selection};
use crate::reference::{Prefix, Reference};
use crate::registry::{Access, Client, Committing, Credentials, Net, Retry, Transport};
use crate::store::{Destination, Layout, Location, Source};
use crate::tar;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Write};

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
                    "manifest {} in {} is {} bytes, index {} declares {}",
                    child.digest,
                    client.describe(),
                    got.size,
                    descriptor.digest,
                    child.size
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
                    "manifest {} in {} is {} bytes, index {} declares {}",
                    child.digest,
                    client.describe(),
                    got.size,
                    top.digest,
                    child.size
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

/// What a pull carries, and what it may leave out.
#[derive(Clone, Debug, Default)]
pub struct PullRequest {
    /// Base images (references or `oci:` layouts): a blob any of them holds is left out.
    /// `scratch` stands for none.
    pub bases: Vec<String>,
    /// Inventories of the site, each a name for messages and the JSON document.
    pub inventories: Vec<(String, Vec<u8>)>,
    /// The final images, at least one; blobs they share are carried once.
    pub finals: Vec<String>,
}

/// Writes the difference archive of `final_ref` over `base_ref` (or `scratch`) to `out`.
pub fn pull(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    base_ref: &str,
    final_ref: &str,
    out: &mut dyn Write,
) -> Result<Summary> {
    let request = PullRequest {
        bases: vec![base_ref.to_owned()],
        inventories: vec![],
        finals: vec![final_ref.to_owned()],
    };
    pull_bundle(transport, options, report, &request, out)
}

/// One final image as fetched for a pull.
struct Final {
    image: layout::Image,
    /// Index into the clients, for fetching its blobs.
    client: usize,
}

/// Writes one archive holding every final image of `request`, leaving out the blobs that any
/// base or inventory holds.
pub fn pull_bundle(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    request: &PullRequest,
    out: &mut dyn Write,
) -> Result<Summary> {
    let pull = prepare(transport, options, report, request)?;
    let io = |e: std::io::Error| Error::Io(format!("writing the archive: {e}"));
    let mut w = tar::Writer::new(out);
    pull.head(&mut w).map_err(io)?;
    for d in &pull.meta.blobs {
        let mut progress = Progress::start(report, ("copying", "copied"), d);
        w.header(&layout::blob_path(&d.digest), d.size)
            .map_err(io)?;
        pull.source(d).blob(d, &mut |chunk| {
            progress.advance(chunk.len());
            w.data(chunk).map_err(io)
        })?;
        w.end_entry(d.size).map_err(io)?;
        progress.end();
    }
    w.finish().map_err(io)?;
    let mut summary = summary_of_meta(&pull.meta);
    summary.archive_bytes = w.written;
    Ok(summary)
}

/// An archive file, written at any offset, so that blobs can land in any order.
pub trait ArchiveFile {
    /// A writer of the bytes from `offset` on.
    fn at(&self, offset: u64) -> Result<Box<dyn Write + '_>>;
}

/// One blob to fetch while others are fetched too: where from, and where its bytes go.
pub struct Fetch<'a> {
    pub d: &'a Descriptor,
    /// Asked for the request when the fetch starts, so that its token is fresh.
    pub source: &'a dyn Source,
    pub out: Box<dyn Write + 'a>,
    /// Where its progress goes, once it starts.
    pub report: &'a dyn Reporter,
}

/// Fetches several blobs at once, on one thread.
pub trait Fetcher {
    /// Runs `jobs`, at most `width` at a time, each checked against its digest and size as
    /// it streams; for each job in order, `Ok` or why it failed.
    fn fetch(&self, jobs: Vec<Fetch<'_>>, width: usize) -> Vec<std::result::Result<(), String>>;
}

/// How many blobs [`pull_bundle_to_file`] fetches at once.
pub const FETCH_WIDTH: usize = 4;

/// [`pull_bundle`] into a file: the archive's layout is fixed by the sizes in the manifests
/// before the first blob byte, so up to [`FETCH_WIDTH`] blobs stream at once, each into its
/// place. A blob whose concurrent fetch fails is fetched again alone, with the usual retries
/// and resumes. The file holds the same bytes `pull_bundle` would write.
pub fn pull_bundle_to_file(
    transport: &dyn Transport,
    fetcher: &dyn Fetcher,
    options: &Options,
    report: &dyn Reporter,
    request: &PullRequest,
    file: &dyn ArchiveFile,
) -> Result<Summary> {
    let pull = prepare(transport, options, report, request)?;
    let io = |e: std::io::Error| Error::Io(format!("writing the archive: {e}"));
    let blobs = &pull.meta.blobs;
    let sizes: Vec<u64> = blobs.iter().map(|d| d.size).collect();

    // Everything but the blobs' bytes first: the head; around each blob's bytes, its header
    // before and its padding after; the end marker last.
    let mut w = tar::Writer::new(file.at(0)?);
    pull.head(&mut w).map_err(io)?;
    let head_len = w.written;
    w.into_parts().0.flush().map_err(io)?;
    let (offsets, end) = tar::data_offsets(head_len, &sizes);
    for i in 0..=blobs.len() {
        let (at, before) = match i {
            0 => (head_len, None),
            i => (offsets[i - 1] + sizes[i - 1], Some(sizes[i - 1])),
        };
        let mut w = tar::Writer::new(file.at(at)?);
        if let Some(size) = before {
            w.end_entry(size).map_err(io)?;
        }
        match blobs.get(i) {
            Some(d) => w
                .header(&layout::blob_path(&d.digest), d.size)
                .map_err(io)?,
            None => w.finish().map_err(io)?,
        }
        w.into_parts().0.flush().map_err(io)?;
    }

    let mut jobs = Vec::new();
    let mut alone = Vec::new();
    for (i, d) in blobs.iter().enumerate() {
        let source = pull.source(d);
        if source.fetches_by_request() {
            jobs.push(Fetch {
                d,
                source,
                out: file.at(offsets[i])?,
                report,
            });
        } else {
            alone.push(i);
        }
    }
    let fetched: Vec<&Descriptor> = jobs.iter().map(|j| j.d).collect();
    for (d, outcome) in fetched.into_iter().zip(fetcher.fetch(jobs, FETCH_WIDTH)) {
        let Err(why) = outcome else { continue };
        if options.max_retries == 0 {
            return Err(Error::Unreachable(format!(
                "fetching blob {} failed: {why} (retries are off)",
                d.digest
            )));
        }
        report.line(&format!(
            "retrying GET of blob {} alone after {why}",
            d.digest
        ));
        alone.push(
            blobs
                .iter()
                .position(|b| b == d)
                .expect("a job is one of the blobs"),
        );
    }
    alone.sort_unstable();
    for i in alone {
        let d = &blobs[i];
        let mut out = file.at(offsets[i])?;
        let mut progress = Progress::start(report, ("copying", "copied"), d);
        pull.source(d).blob(d, &mut |chunk| {
            progress.advance(chunk.len());
            out.write_all(chunk).map_err(io)
        })?;
        out.flush().map_err(io)?;
        progress.end();
    }
    let mut summary = summary_of_meta(&pull.meta);
    summary.archive_bytes = end;
    Ok(summary)
}

/// A pull, planned: what the archive holds and where each carried blob comes from.
struct Prepared<'t> {
    meta: Metadata,
    manifests: Vec<Fetched>,
    clients: Vec<Box<dyn Source + 't>>,
    /// Each carried blob's client: the first final image that references it.
    source_of: BTreeMap<Digest, usize>,
}

impl Prepared<'_> {
    fn source(&self, d: &Descriptor) -> &dyn Source {
        self.clients[self.source_of[&d.digest]].as_ref()
    }

    /// Writes everything before the blobs: `oci-layout`, `imo.json`, `index.json` and the
    /// manifests.
    fn head<W: Write>(&self, w: &mut tar::Writer<W>) -> std::io::Result<()> {
        w.file(layout::LAYOUT_FILE, layout::LAYOUT_CONTENT)?;
        w.file(
            layout::METADATA_FILE,
            &serde_json::to_vec_pretty(&self.meta).expect("metadata serialises"),
        )?;
        w.file(layout::INDEX_FILE, &layout::index_json(&self.meta))?;
        for m in &self.manifests {
            w.file(&layout::blob_path(&m.descriptor.digest), &m.bytes)?;
        }
        Ok(())
    }
}

/// Fetches the final images' manifests and the bases' (or reads the inventories), and plans
/// the archive.
fn prepare<'t>(
    transport: &'t dyn Transport,
    options: &Options,
    report: &'t dyn Reporter,
    request: &PullRequest,
) -> Result<Prepared<'t>> {
    if request.finals.is_empty() {
        return Err(Error::InvalidReference(
            "name at least one final image to pull".into(),
        ));
    }
    // Everything is parsed before the first request, so a typo costs no traffic.
    let finals = request
        .finals
        .iter()
        .map(|f| Ok((parse_location("final image", f)?, f.as_str())))
        .collect::<Result<Vec<_>>>()?;
    let bases = request
        .bases
        .iter()
        .filter(|b| *b != layout::SCRATCH)
        .map(|b| Ok((parse_location("base image", b)?, b.as_str())))
        .collect::<Result<Vec<_>>>()?;
    let inventories = request
        .inventories
        .iter()
        .map(|(name, bytes)| Inventory::parse(name, bytes).map_err(Error::InvalidArchive))
        .collect::<Result<Vec<_>>>()?;
    let specs = options
        .platforms
        .iter()
        .map(|p| PlatformSpec::parse(p).map_err(Error::InvalidReference))
        .collect::<Result<Vec<_>>>()?;

    let mut clients: Vec<Box<dyn Source + '_>> = Vec::new();
    let mut manifests: Vec<Fetched> = Vec::new();
    let mut images: Vec<Final> = Vec::new();
    for (fin, given) in &finals {
        let client = open_source(
            transport,
            fin,
            options.final_credentials.clone(),
            options,
            report,
        )?;
        let (top, bytes) = client.manifest(&manifest_key(fin))?;
        let (top, bytes) = choose_platforms(client.as_ref(), top, bytes, &specs, report)?;
        let mut tree = fetch_tree(client.as_ref(), top, bytes)?;
        let reference = display_location(fin, given);
        if images.iter().any(|i| i.image.reference == reference) {
            return Err(Error::InvalidReference(format!(
                "{reference} is named twice"
            )));
        }
        let mut image = layout::Image {
            reference,
            manifest: tree[0].descriptor.digest.clone(),
            attached: vec![],
        };
        if options.referrers {
            for (tag, attached) in find_attached(client.as_ref(), &tree, report)? {
                image.attached.push(layout::Attached {
                    tag,
                    manifest: attached[0].descriptor.digest.clone(),
                });
                tree.extend(attached);
            }
        }
        report.line(&format!(
            "final {}: {} ({} manifest(s))",
            image.reference,
            image.manifest,
            tree.len()
        ));
        // A manifest two images share (a platform image in two indexes, say) is carried once.
        for m in tree {
            if !manifests
                .iter()
                .any(|x| x.descriptor.digest == m.descriptor.digest)
            {
                manifests.push(m);
            }
        }
        images.push(Final {
            image,
            client: clients.len(),
        });
        clients.push(client);
    }
    if manifests.len() > MAX_MANIFESTS {
        return Err(Error::InvalidManifest(format!(
            "the images have more than {MAX_MANIFESTS} manifests together"
        )));
    }

    let mut held: BTreeSet<Digest> = BTreeSet::new();
    let mut recorded_bases = Vec::new();
    for (base, given) in &bases {
        let client = open_source(
            transport,
            base,
            options.base_credentials.clone(),
            options,
            report,
        )?;
        let base_manifests = fetch_all(client.as_ref(), &manifest_key(base))?;
        let blobs: BTreeSet<Digest> = base_manifests
            .iter()
            .flat_map(|m| m.manifest.blobs())
            .map(|d| d.digest.clone())
            .collect();
        report.line(&format!(
            "base {}: {} ({} blob(s))",
            display_location(base, given),
            base_manifests[0].descriptor.digest,
            blobs.len()
        ));
        held.extend(blobs);
        recorded_bases.push(layout::Base {
            reference: display_location(base, given),
            digest: Some(base_manifests[0].descriptor.digest.clone()),
        });
    }
    let mut held_in: BTreeMap<Digest, BTreeSet<String>> = BTreeMap::new();
    for (inventory, (name, _)) in inventories.iter().zip(&request.inventories) {
        report.line(&format!(
            "inventory {name}: {} blob(s) from {}",
            inventory.blobs.len(),
            inventory.sources.join(", ")
        ));
        for (digest, repositories) in inventory.holdings() {
            held.insert(digest.clone());
            held_in
                .entry(digest.clone())
                .or_default()
                .extend(repositories.iter().cloned());
        }
    }

    let plan = plan::diff(&manifests, &held);
    let meta = Metadata {
        imo_archive_version: layout::FORMAT_VERSION,
        images: images.iter().map(|i| i.image.clone()).collect(),
        bases: recorded_bases,
        inventories: request.inventories.iter().map(|(n, _)| n.clone()).collect(),
        manifests: manifests.iter().map(|m| m.descriptor.clone()).collect(),
        blobs: plan.include.clone(),
        omitted: plan.omit.clone(),
        held_in: plan
            .omit
            .iter()
            .filter_map(|d| {
                let repos = held_in.get(&d.digest).filter(|r| !r.is_empty())?;
                Some((d.digest.clone(), repos.iter().cloned().collect()))
            })
            .collect(),
    };
    // Each carried blob comes from the first image that references it.
    let mut source_of: BTreeMap<Digest, usize> = BTreeMap::new();
    for i in &images {
        for m in image_tree(&manifests, &i.image) {
            for b in m.manifest.blobs() {
                source_of.entry(b.digest.clone()).or_insert(i.client);
            }
        }
    }

    Ok(Prepared {
        meta,
        manifests,
        clients,
        source_of,
    })
}

/// The manifests of one image: its tree and what is attached to it, each once.
fn image_tree<'a>(all: &'a [Fetched], image: &layout::Image) -> Vec<&'a Fetched> {
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    children_first(&image.manifest, all, &mut out, &mut done);
    for a in &image.attached {
        children_first(&a.manifest, all, &mut out, &mut done);
    }
    out
}

/// Every blob one image references, each once.
fn image_blobs(all: &[Fetched], image: &layout::Image) -> BTreeSet<Digest> {
    image_tree(all, image)
        .into_iter()
        .flat_map(|m| m.manifest.blobs())
        .map(|d| d.digest.clone())
        .collect()
}

/// Builds an inventory of what `references` hold (a repository without a tag stands for all
/// its tags) and what `archives` carried or took as present.
pub fn inventory(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    references: &[String],
    archives: Vec<(String, &mut dyn Read)>,
) -> Result<Inventory> {
    let mut builder = inventory::Builder::default();
    for given in references {
        let location = parse_location("inventory source", given)?;
        let client = open_source(
            transport,
            &location,
            options.push_credentials.clone(),
            options,
            report,
        )?;
        let (repository, keys) = match &location {
            Location::Registry(r) => {
                let keys = match (&r.tag, &r.digest) {
                    (_, Some(d)) => vec![d.to_string()],
                    (Some(t), None) => vec![t.clone()],
                    (None, None) => client.tags()?,
                };
                (Some(r.repository.clone()), keys)
            }
            Location::Layout { tag: Some(t), .. } => (None, vec![t.clone()]),
            Location::Layout { tag: None, .. } => (None, client.tags()?),
        };
        builder.source(client.describe());
        for key in &keys {
            let tree = fetch_all(client.as_ref(), key)?;
            let tag = (!key.starts_with("sha256:")).then_some(key.as_str());
            builder.image(&tree, repository.as_deref(), tag);
        }
        report.line(&format!(
            "inventory of {}: {} tag(s)",
            client.describe(),
            keys.len()
        ));
    }
    for (name, input) in archives {
        let archive = open_archive(input).map_err(|e| match e {
            Error::InvalidArchive(m) => Error::InvalidArchive(format!("{name}: {m}")),
            other => other,
        })?;
        builder.source(format!("archive {name}"));
        let fetched: Vec<Fetched> = archive.manifests.clone();
        builder.image(&fetched, None, None);
        for d in archive.meta.blobs.iter().chain(&archive.meta.omitted) {
            builder.blob(d, None);
        }
        report.line(&format!(
            "inventory of archive {name}: {} image(s)",
            archive.meta.images.len()
        ));
    }
    Ok(builder.build())
}

fn open_archive<R: Read>(input: R) -> Result<Opened<R>> {
    layout::open(input).map_err(Error::InvalidArchive)
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

/// Where the destination can find a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// Already in the destination repository.
    Here,
    /// In another repository of the destination registry, to be mounted from.
    In(String),
    Nowhere,
}

/// Where one image of the archive goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub location: Location,
    /// The tag (or digest) its top-level manifest is put under.
    pub key: String,
}

/// Where each image of an archive goes: an explicit `map` entry (final reference to
/// destination) first; else, for a single image, `destination` itself; else `destination`
/// as a prefix (`registry[/path]`) under which each image keeps its repository path and
/// tag. Several images must all go to one registry, where blobs are uploaded once and
/// mounted into the other repositories.
pub fn targets(
    meta: &Metadata,
    destination: &str,
    map: &[(String, String)],
) -> Result<Vec<Target>> {
    let normal = |s: &str| Location::parse(s).map(|l| display_location(&l, s));
    let mut used = vec![false; map.len()];
    let mut out = Vec::new();
    for image in &meta.images {
        let top = &image.manifest;
        let mapped = map.iter().enumerate().find(|(_, (from, _))| {
            normal(from).is_ok_and(|f| f == image.reference) || *from == image.reference
        });
        let location = if let Some((i, (_, to))) = mapped {
            used[i] = true;
            parse_location("destination", to)?
        } else if meta.images.len() == 1 {
            parse_location("destination", destination)?
        } else {
            under_prefix(destination, &image.reference)?
        };
        let key = destination_key(&location, &image.reference, top)?;
        out.push(Target { location, key });
    }
    if let Some(((from, _), _)) = map.iter().zip(&used).find(|(_, u)| !**u) {
        return Err(Error::InvalidReference(format!(
            "--map names {from}, which is not an image of this archive ({})",
            meta.images
                .iter()
                .map(|i| i.reference.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if out.len() > 1 {
        let registries: BTreeSet<Option<&str>> = out
            .iter()
            .map(|t| match &t.location {
                Location::Registry(r) => Some(r.registry.as_str()),
                Location::Layout { .. } => None,
            })
            .collect();
        if registries.len() != 1 || registries.contains(&None) {
            return Err(Error::InvalidReference(
                "the images of a bundle must all go to one registry; push them to a prefix \
                 there, or push the archive once per registry with --map"
                    .into(),
            ));
        }
    }
    Ok(out)
}

/// `prefix` (`registry[:port][/path]`) joined with the repository path and tag of `reference`.
fn under_prefix(prefix: &str, reference: &str) -> Result<Location> {
    let Ok(Location::Registry(image)) = Location::parse(reference) else {
        return Err(Error::InvalidReference(format!(
            "image {reference} has no repository path to keep under {prefix}; give its \
             destination with --map {reference}=DESTINATION"
        )));
    };
    if prefix.starts_with("oci:") {
        return Err(Error::InvalidReference(format!(
            "the archive holds several images and {prefix} is one layout; push them to a \
             registry prefix, or give each its own destination with --map"
        )));
    }
    let prefix = Prefix::parse(prefix).map_err(Error::InvalidReference)?;
    Ok(Location::Registry(prefix.join(&image)))
}

/// Repositories of the destination registry that blobs may be mounted from: those the user
/// names, the base images' repository paths (where a mirror usually keeps them, as they are
/// or under the same prefix as the images), and the other images' destinations.
fn mount_sources(targets: &[Target], meta: &Metadata, options: &Options) -> Vec<String> {
    let mut candidates: Vec<String> = options.mount_from.clone();
    let prefixes: BTreeSet<String> = targets
        .iter()
        .zip(&meta.images)
        .filter_map(|(t, image)| {
            let Location::Registry(dest) = &t.location else {
                return None;
            };
            let source = Reference::parse(&image.reference).ok()?;
            dest.repository
                .strip_suffix(&source.repository)
                .map(str::to_owned)
        })
        .collect();
    for base in &meta.bases {
        if let Ok(r) = Reference::parse(&base.reference) {
            for p in &prefixes {
                candidates.push(format!("{p}{}", r.repository));
            }
            candidates.push(r.repository);
        }
    }
    for t in targets {
        if let Location::Registry(r) = &t.location {
            candidates.push(r.repository.clone());
        }
    }
    let mut sources: Vec<String> = Vec::new();
    for c in candidates {
        if !c.is_empty() && !sources.contains(&c) {
            sources.push(c);
        }
    }
    sources
}

/// Finds each blob with `HEAD` requests only: nothing is written while surveying. Where an
/// inventory placed a blob, its repositories are tried first.
fn survey(
    client: &dyn Destination,
    blobs: &[&Descriptor],
    sources: &[String],
    held_in: &BTreeMap<Digest, Vec<String>>,
) -> Result<Vec<Found>> {
    let mut found = Vec::with_capacity(blobs.len());
    'blobs: for d in blobs {
        if client.has_blob(&d.digest)? {
            found.push(Found::Here);
            continue;
        }
        let placed = held_in.get(&d.digest).into_iter().flatten();
        let mut tried = BTreeSet::new();
        for repo in placed.chain(sources) {
            if repo == client.repository() || !tried.insert(repo) {
                continue;
            }
            if client.has_blob_in(repo, &d.digest)? {
                found.push(Found::In(repo.clone()));
                continue 'blobs;
            }
        }
        found.push(Found::Nowhere);
    }
    Ok(found)
}

/// One image's destination, connected, with what it needs.
struct Connected<'t> {
    client: Box<dyn Destination + 't>,
    target: Target,
    /// Omitted and carried blobs this image references, with where each was found.
    omitted: Vec<(Descriptor, Found)>,
    carried: Vec<(Descriptor, Found)>,
}

/// Connects to every image's destination and finds each blob the image needs there; fails
/// with every omitted blob that no repository of the destination can provide.
fn connect_and_vet<'t, R: Read>(
    transport: &'t dyn Transport,
    options: &Options,
    report: &'t dyn Reporter,
    archive: &Opened<R>,
    destination: &str,
    push: bool,
) -> Result<Vec<Connected<'t>>> {
    let meta = &archive.meta;
    let targets = targets(meta, destination, &options.destination_map)?;
    let sources = mount_sources(&targets, meta, options);
    let mut also_pull: Vec<String> = sources.clone();
    for repos in meta.held_in.values() {
        for r in repos {
            if !also_pull.contains(r) {
                also_pull.push(r.clone());
            }
        }
    }
    let mut connected = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for (image, target) in meta.images.iter().zip(targets) {
        let client = open_destination(
            transport,
            &target.location,
            options,
            push,
            &also_pull,
            report,
        )?;
        let needs = image_blobs(&archive.manifests, image);
        let omitted: Vec<&Descriptor> = meta
            .omitted
            .iter()
            .filter(|d| needs.contains(&d.digest))
            .collect();
        let carried: Vec<&Descriptor> = meta
            .blobs
            .iter()
            .filter(|d| needs.contains(&d.digest))
            .collect();
        let found = survey(client.as_ref(), &omitted, &sources, &meta.held_in)?;
        let absent: Vec<&Descriptor> = omitted
            .iter()
            .zip(&found)
            .filter(|(_, f)| **f == Found::Nowhere)
            .map(|(d, _)| *d)
            .collect();
        let mountable = found.iter().filter(|f| matches!(f, Found::In(_))).count();
        report.line(&format!(
            "vet {}: {} of {} omitted blob(s) present{}",
            client.describe(),
            omitted.len() - absent.len(),
            omitted.len(),
            if mountable > 0 {
                format!(" ({mountable} by mounting from another repository)")
            } else {
                String::new()
            }
        ));
        for d in absent {
            if !missing.contains(&d.digest.to_string()) {
                missing.push(d.digest.to_string());
            }
        }
        let carried_found = if push {
            survey(client.as_ref(), &carried, &sources, &BTreeMap::new())?
        } else {
            vec![]
        };
        connected.push(Connected {
            client,
            target,
            omitted: omitted.into_iter().cloned().zip(found).collect(),
            carried: carried.into_iter().cloned().zip(carried_found).collect(),
        });
    }
    if missing.is_empty() {
        Ok(connected)
    } else {
        Err(Error::MissingBlobs(missing))
    }
}

/// Checks that the destination holds (or can mount) every blob the archive leaves out.
pub fn push_vet(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    archive: &mut dyn Read,
    destination: &str,
) -> Result<Summary> {
    // The destination is checked first: a typo costs no reading.
    parse_destination(destination, options)?;
    let archive = open_archive(archive)?;
    connect_and_vet(transport, options, report, &archive, destination, false)?;
    Ok(summary_of(&archive))
}

/// A destination argument is checked before the archive is read: a reference, a layout, or
/// (for bundles) a prefix.
fn parse_destination(destination: &str, options: &Options) -> Result<()> {
    if let Err(e) = Location::parse(destination)
        && Prefix::parse(destination).is_err()
    {
        return Err(Error::InvalidReference(format!("destination: {e}")));
    }
    for (from, to) in &options.destination_map {
        parse_location("--map image", from)?;
        parse_location("--map destination", to)?;
    }
    Ok(())
}

/// The tag (or digest) an image's top-level manifest is pushed under: the destination's, else
/// the final image's tag, else `latest`.
fn destination_key(dest: &Location, reference: &str, top: &Digest) -> Result<String> {
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
    let from_final = Location::parse(reference)
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
            crate::credentials::select(
                &r.registry,
                &r.repository,
                credentials.as_ref(),
                &options.registry_credentials,
            ),
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
    parse_destination(destination, options)?;
    let mut archive = open_archive(archive)?;
    let targets = connect_and_vet(transport, options, report, &archive, destination, true)?;

    // Everything is known to be available: only now does anything change at the destination.
    let mut summary = summary_of(&archive);
    // Per image, the blobs it still lacks; the first image lacking a carried blob receives
    // its upload, the others mount it from there.
    let mut lacking: Vec<BTreeSet<Digest>> = vec![BTreeSet::new(); targets.len()];
    let mut skipped = BTreeSet::new();
    for (t, c) in targets.iter().enumerate() {
        for (d, found) in c.omitted.iter().chain(&c.carried) {
            match found {
                Found::Here => {
                    if c.carried.iter().any(|(x, _)| x == d) {
                        skipped.insert(d.digest.clone());
                    }
                }
                Found::In(repo) => {
                    if c.client.mount(&d.digest, repo)? {
                        report.line(&format!("mounted {} from {repo}", short(&d.digest)));
                        summary.blobs_mounted += 1;
                    } else if c.omitted.iter().any(|(x, _)| x == d) {
                        return Err(Error::MissingBlobs(vec![d.digest.to_string()]));
                    } else {
                        lacking[t].insert(d.digest.clone());
                    }
                }
                Found::Nowhere => {
                    lacking[t].insert(d.digest.clone());
                }
            }
        }
    }
    summary.blobs_skipped = skipped.len() as u32;

    // A registry answers an upload once it has stored the blob, which takes it a while (it
    // syncs the file to disk): the next blob streams meanwhile.
    let mut committing = None;
    while let Some(d) = archive.next_blob().map_err(Error::InvalidArchive)? {
        let Some(first) = (0..targets.len()).find(|t| lacking[*t].contains(&d.digest)) else {
            continue;
        };
        let client = targets[first].client.as_ref();
        let mut progress = Progress::start(report, ("uploading", "uploaded"), &d);
        let upload = upload_from_archive(client, &mut archive, &d, &mut progress)?;
        progress.end();
        summary.blobs_uploaded += 1;
        summary.bytes_uploaded += d.size;
        if let Some(sent) = committing.replace((d, first, upload)) {
            stored(sent, &targets, &lacking, &mut summary)?;
        }
    }
    if let Some(sent) = committing {
        stored(sent, &targets, &lacking, &mut summary)?;
    }

    // Per image: children before the indexes that name them and the top-level manifest last
    // under its tag; then what is attached to it, each under its own tag.
    for (image, c) in archive.meta.images.iter().zip(&targets) {
        let mut roots = vec![(image.manifest.clone(), c.target.key.clone())];
        for a in &image.attached {
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
                c.client.put_manifest(key, &m.descriptor, &m.bytes)?;
            }
        }
        report.line(&format!(
            "pushed {} as {}",
            image.reference,
            c.client.describe()
        ));
    }
    summary.archive_bytes = archive.offset();
    Ok(summary)
}

/// Uploads one archive blob, which the upload pulls through a verifying reader: the bytes
/// that complete the blob are handed out only once its digest checks out, so a corrupt blob
/// fails its request instead of completing it.
fn upload_from_archive<'c, R: Read>(
    client: &'c dyn Destination,
    archive: &mut Opened<R>,
    d: &Descriptor,
    progress: &mut Progress<'_>,
) -> Result<Committing<'c>> {
    let mut read = |b: &mut [u8]| archive.read(b).map_err(Error::InvalidArchive);
    let mismatch = |m| Error::DigestMismatch(format!("archive blob {}: {m}", d.digest));
    let mut blob = Verifying::new(&d.digest, d.size, &mut read, &mismatch);
    client.upload(d, &mut |b| {
        let n = blob.read(b)?;
        progress.advance(n);
        Ok(n)
    })
}

/// Waits until the upload of a blob to the first target lacking it is stored, then mounts
/// the blob from there into the other targets lacking it.
fn stored(
    (d, first, upload): (Descriptor, usize, Committing<'_>),
    targets: &[Connected<'_>],
    lacking: &[BTreeSet<Digest>],
    summary: &mut Summary,
) -> Result<()> {
    upload.finish()?;
    let client = targets[first].client.as_ref();
    for other in (first + 1..targets.len()).filter(|t| lacking[*t].contains(&d.digest)) {
        let into = targets[other].client.as_ref();
        if !into.mount(&d.digest, client.repository())? {
            return Err(Error::Registry(format!(
                "{} would not mount blob {} from {} into {}; push the images one at a time \
                 (--map) instead",
                into.describe(),
                d.digest,
                client.repository(),
                into.repository()
            )));
        }
        summary.blobs_mounted += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(references: &[&str]) -> Metadata {
        Metadata {
            imo_archive_version: layout::FORMAT_VERSION,
            images: references
                .iter()
                .enumerate()
                .map(|(i, r)| layout::Image {
                    reference: (*r).into(),
                    manifest: Digest::of(&[i as u8]),
                    attached: vec![],
                })
                .collect(),
            bases: vec![],
            inventories: vec![],
            manifests: vec![],
            blobs: vec![],
            omitted: vec![],
            held_in: BTreeMap::new(),
        }
    }

    fn shown(ts: &[Target]) -> Vec<String> {
        ts.iter()
            .map(|t| match &t.location {
                Location::Registry(r) => format!("{}/{} {}", r.registry, r.repository, t.key),
                Location::Layout { dir, .. } => format!("oci:{dir} {}", t.key),
            })
            .collect()
    }

    #[test]
    fn one_image_goes_where_the_destination_says() {
        let m = bundle(&["quay.io/org/app:v2"]);
        let t = targets(&m, "mirror:5000/apps/app", &[]).unwrap();
        assert_eq!(shown(&t), ["mirror:5000/apps/app v2"]);
        let t = targets(&m, "mirror:5000/apps/app:stable", &[]).unwrap();
        assert_eq!(shown(&t), ["mirror:5000/apps/app stable"]);
        let t = targets(&m, "oci:/srv/layout", &[]).unwrap();
        assert_eq!(shown(&t), ["oci:/srv/layout v2"]);
    }

    #[test]
    fn a_bundle_keeps_each_repository_path_under_the_prefix() {
        let m = bundle(&["quay.io/org/app:v2", "docker.io/library/db:16"]);
        let t = targets(&m, "mirror:5000/site", &[]).unwrap();
        assert_eq!(
            shown(&t),
            [
                "mirror:5000/site/org/app v2",
                "mirror:5000/site/library/db 16"
            ]
        );
        let t = targets(&m, "mirror:5000", &[]).unwrap();
        assert_eq!(
            shown(&t),
            ["mirror:5000/org/app v2", "mirror:5000/library/db 16"]
        );
        // An explicit mapping wins, and may name the image as the user wrote it.
        let map = vec![("db:16".to_owned(), "mirror:5000/databases/pg:16".to_owned())];
        let t = targets(&m, "mirror:5000/site", &map).unwrap();
        assert_eq!(
            shown(&t),
            ["mirror:5000/site/org/app v2", "mirror:5000/databases/pg 16"]
        );
    }

    #[test]
    fn bundle_destinations_that_cannot_work_are_refused() {
        let m = bundle(&["quay.io/org/app:v2", "quay.io/org/db:v2"]);
        let err = |dest: &str, map: &[(&str, &str)]| {
            let map: Vec<(String, String)> = map
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect();
            targets(&m, dest, &map).unwrap_err().to_string()
        };
        assert!(err("oci:/srv/x", &[]).contains("one layout"));
        assert!(err("app", &[]).contains("names no registry"));
        assert!(err("mirror:5000/site:v1", &[]).contains("takes no tag"));
        assert!(
            err("mirror:5000", &[("quay.io/org/db:v2", "other:5000/db:v2")])
                .contains("one registry")
        );
        assert!(
            err("mirror:5000", &[("quay.io/org/web:v2", "mirror:5000/w")]).contains("not an image")
        );
    }
}
