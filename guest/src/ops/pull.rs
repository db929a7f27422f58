//! Pull: the archive of the final images over their bases (or inventories), written to a
//! stream, or into a file with several blobs fetched at once.

use super::delta;
use super::tree::{
    MAX_MANIFESTS, choose_platforms, fetch_all, fetch_tree, find_attached, image_tree,
};
use super::{
    LayerTravel, Options, Progress, Reporter, Summary, open_source, parse_location, summary_of_meta,
};
use crate::archive::{self, Metadata};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::manifest::Descriptor;
use crate::plan::{self, Fetched};
use crate::platform::PlatformSpec;
use crate::registry::Transport;
use crate::store::Source;
use crate::tar;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

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

/// One final image as fetched for a pull.
struct Final {
    image: archive::Image,
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
    archive::write_head(&mut w, &pull.meta, &pull.manifests).map_err(io)?;
    for d in &pull.meta.blobs {
        w.header(&archive::blob_path(&d.digest), d.size)
            .map_err(io)?;
        if let Some(delta) = pull.deltas.get(&d.digest) {
            w.data(delta).map_err(io)?;
        } else {
            let mut progress = Progress::start(report, ("copying", "copied"), d);
            pull.source(d).blob(d, &mut |chunk| {
                progress.advance(chunk.len());
                w.data(chunk).map_err(io)
            })?;
            progress.end();
        }
        w.end_entry(d.size).map_err(io)?;
    }
    w.finish().map_err(io)?;
    let mut summary = pull.summary();
    summary.archive_bytes = w.written;
    Ok(summary)
}

/// An archive file, written at any offset, so that blobs can land in any order.
pub trait ArchiveFile {
    /// A writer of the bytes from `offset` on.
    fn at(&self, offset: u64) -> Result<Box<dyn Write + '_>>;
    /// How many bytes the file holds: 0 for a new pull, more for the partial of a pull to
    /// resume.
    fn size(&self) -> Result<u64>;
    /// A reader of the bytes from `offset` on, to the end of the file.
    fn read_at(&self, offset: u64) -> Result<Box<dyn Read + '_>>;
    /// Cuts the file to `len` bytes.
    fn set_len(&self, len: u64) -> Result<()>;
}

/// What of a partial archive a resumed pull keeps: `None` when its first bytes are not `head`
/// (the plan changed, so it starts over), else for each blob whether the bytes at its offset
/// match its digest and size. Each blob is hashed as it streams, never held whole. Headers and
/// padding need no check: the pull writes them again, the same bytes.
pub fn kept_blobs(
    file: &dyn ArchiveFile,
    head: &[u8],
    blobs: &[Descriptor],
    offsets: &[u64],
) -> Result<Option<Vec<bool>>> {
    let io = |e: std::io::Error| Error::Io(format!("reading the partial archive: {e}"));
    let len = file.size()?;
    if len < head.len() as u64 {
        return Ok(None);
    }
    let mut first = Vec::with_capacity(head.len());
    file.read_at(0)?
        .take(head.len() as u64)
        .read_to_end(&mut first)
        .map_err(io)?;
    if first != head {
        return Ok(None);
    }
    let mut kept = Vec::with_capacity(blobs.len());
    let mut buf = vec![0u8; 1 << 20];
    for (d, &at) in blobs.iter().zip(offsets) {
        if at.checked_add(d.size).is_none_or(|end| end > len) {
            kept.push(false);
            continue;
        }
        let mut r = file.read_at(at)?.take(d.size);
        let mut v = crate::digest::Verifier::new(&d.digest, d.size);
        loop {
            let n = r.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            // Never more than the size: the reader is cut there.
            let _ = v.update(&buf[..n]);
        }
        kept.push(v.finish().is_ok());
    }
    Ok(Some(kept))
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
    fn fetch(&self, jobs: Vec<Fetch<'_>>, width: usize) -> Vec<Result<()>>;
}

/// How many blobs [`pull_bundle_to_file`] fetches at once.
pub const FETCH_WIDTH: usize = 4;

/// [`pull_bundle`] into a file: where each archive entry lies is fixed by the sizes in the
/// manifests
/// before the first blob byte, so up to [`FETCH_WIDTH`] blobs stream at once, each into its
/// place. A blob whose concurrent fetch fails is fetched again alone, with the usual retries
/// and resumes. The file holds the same bytes `pull_bundle` would write.
///
/// A file that is not empty is the partial of an earlier pull to resume: if it begins with
/// the head this plan writes, each blob already whole in it is kept and not fetched;
/// otherwise the source changed, and the pull starts over, saying so.
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

    // The head is the plan: manifests, index and imo.json; a partial that begins with it
    // was pulled from the same source.
    let mut w = tar::Writer::new(Vec::new());
    archive::write_head(&mut w, &pull.meta, &pull.manifests).map_err(io)?;
    let head = w.into_parts().0;
    let head_len = head.len() as u64;
    let (offsets, end) = tar::data_offsets(head_len, &sizes).ok_or_else(|| {
        Error::InvalidManifest(
            "the blobs' declared sizes add up to more than an archive can hold (2^64 bytes)".into(),
        )
    })?;
    let mut kept = vec![false; blobs.len()];
    let mut kept_total = (0u32, 0u64);
    let resuming = file.size()? > 0;
    if resuming {
        match kept_blobs(file, &head, blobs, &offsets)? {
            Some(k) => kept = k,
            None => {
                report.line(
                    "the partial archive was pulled from a different source (its manifests, \
                     blobs or bases differ from what the registries hold now): starting over",
                );
                file.set_len(0)?;
            }
        }
        let (n, bytes) = blobs
            .iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .fold((0, 0u64), |(n, b), (d, _)| (n + 1, b + d.size));
        kept_total = (n, bytes);
        report.line(&format!(
            "resuming: {n} blob(s), {bytes} bytes kept from the partial archive; {} blob(s), {} \
             bytes to fetch",
            blobs.len() - n as usize,
            sizes.iter().sum::<u64>() - bytes
        ));
    }

    // Everything but the blobs' bytes first: the head; around each blob's bytes, its header
    // before and its padding after; the end marker last.
    let mut out = file.at(0)?;
    out.write_all(&head).map_err(io)?;
    out.flush().map_err(io)?;
    drop(out);
    for i in 0..=blobs.len() {
        let (at, before) = match i {
            0 => (head_len, None),
            // At most `end`, which did not overflow.
            i => (offsets[i - 1] + sizes[i - 1], Some(sizes[i - 1])),
        };
        let mut w = tar::Writer::new(file.at(at)?);
        if let Some(size) = before {
            w.end_entry(size).map_err(io)?;
        }
        match blobs.get(i) {
            Some(d) => w
                .header(&archive::blob_path(&d.digest), d.size)
                .map_err(io)?,
            None => w.finish().map_err(io)?,
        }
        w.into_parts().0.flush().map_err(io)?;
    }

    let mut jobs = Vec::new();
    let mut alone = Vec::new();
    for (i, d) in blobs.iter().enumerate() {
        if kept[i] {
            continue;
        }
        if let Some(delta) = pull.deltas.get(&d.digest) {
            let mut out = file.at(offsets[i])?;
            out.write_all(delta).map_err(io)?;
            out.flush().map_err(io)?;
            continue;
        }
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
        // What the host refused, it refuses again: no second try.
        if matches!(why, Error::Denied(_)) {
            return Err(why);
        }
        // Said as the streaming path's retries say it: `HTTP 502`, not the whole error.
        let why = match why {
            Error::Status(s) => format!("HTTP {}", s.status),
            e => e.to_string(),
        };
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
    if resuming {
        // Whatever a foreign partial held past this archive's end goes.
        file.set_len(end)?;
    }
    let mut summary = pull.summary();
    summary.archive_bytes = end;
    (summary.blobs_kept, summary.bytes_kept) = kept_total;
    Ok(summary)
}

/// A pull, planned: what the archive holds and where each carried blob comes from.
struct Prepared<'t> {
    meta: Metadata,
    manifests: Vec<Fetched>,
    clients: Vec<Box<dyn Source + 't>>,
    /// Each carried blob's client: the first final image that references it.
    source_of: BTreeMap<Digest, usize>,
    /// The delta blobs carried, by digest: made before the head is written, which lists them.
    deltas: BTreeMap<Digest, Vec<u8>>,
    /// How each layer went, when deltas were tried.
    travel: Vec<LayerTravel>,
}

impl Prepared<'_> {
    fn source(&self, d: &Descriptor) -> &dyn Source {
        self.clients[self.source_of[&d.digest]].as_ref()
    }

    fn summary(&self) -> Summary {
        Summary {
            layers: self.travel.clone(),
            ..summary_of_meta(&self.meta)
        }
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
        .map(|f| parse_location("final image", f))
        .collect::<Result<Vec<_>>>()?;
    let bases = request
        .bases
        .iter()
        .filter(|b| *b != archive::SCRATCH)
        .map(|b| parse_location("base image", b))
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
    for fin in &finals {
        let role = options.final_credentials.as_ref();
        let client = open_source(transport, fin, role, options, report)?;
        let (top, bytes) = client.manifest(&fin.manifest_key())?;
        let (top, bytes) = choose_platforms(client.as_ref(), top, bytes, &specs, report)?;
        let mut tree = fetch_tree(client.as_ref(), top, bytes)?;
        let reference = fin.to_string();
        if images.iter().any(|i| i.image.reference == reference) {
            return Err(Error::InvalidReference(format!(
                "{reference} is named twice"
            )));
        }
        let mut image = archive::Image {
            reference,
            manifest: tree[0].descriptor.digest.clone(),
            attached: vec![],
        };
        if options.referrers {
            for (tag, attached) in find_attached(client.as_ref(), &tree, report)? {
                image.attached.push(archive::Attached {
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
    // Kept for deltas, whose sources are the bases' layers.
    let mut base_sources = Vec::new();
    for base in &bases {
        let role = options.base_credentials.as_ref();
        let client = open_source(transport, base, role, options, report)?;
        let base_manifests = fetch_all(client.as_ref(), &base.manifest_key())?;
        let blobs: BTreeSet<Digest> = base_manifests
            .iter()
            .flat_map(|m| m.manifest.blobs())
            .map(|d| d.digest.clone())
            .collect();
        report.line(&format!(
            "base {}: {} ({} blob(s))",
            base,
            base_manifests[0].descriptor.digest,
            blobs.len()
        ));
        held.extend(blobs);
        recorded_bases.push(archive::Base {
            reference: base.to_string(),
            digest: Some(base_manifests[0].descriptor.digest.clone()),
        });
        base_sources.push((client, base_manifests));
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
    let mut meta = Metadata {
        imo_archive_version: archive::FORMAT_VERSION,
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
        deltas: vec![],
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

    let planned = if options.deltas {
        let mut pairs: Vec<(&dyn Source, &Fetched)> = Vec::new();
        for i in &images {
            for m in image_tree(&manifests, &i.image) {
                if !pairs.iter().any(|(_, x)| x.descriptor == m.descriptor) {
                    pairs.push((clients[i.client].as_ref(), m));
                }
            }
        }
        let bases: Vec<(&dyn Source, &[Fetched])> = (base_sources.iter())
            .map(|(c, m)| (c.as_ref(), m.as_slice()))
            .collect();
        let carried = meta.blobs.iter().map(|d| d.digest.clone()).collect();
        delta::plan(&pairs, &delta::base_images(&bases), &carried, report)
    } else {
        delta::Planned::default()
    };
    let mut deltas = BTreeMap::new();
    for (entry, bytes) in planned.deltas {
        for d in meta.blobs.iter_mut().filter(|d| **d == entry.layer) {
            *d = entry.delta.clone();
        }
        deltas.insert(entry.delta.digest.clone(), bytes);
        meta.deltas.push(entry);
    }
    if !meta.deltas.is_empty() {
        meta.imo_archive_version = archive::DELTA_FORMAT_VERSION;
    }

    Ok(Prepared {
        meta,
        manifests,
        clients,
        source_of,
        deltas,
        travel: planned.travel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// An archive file in memory.
    struct Memory(RefCell<Vec<u8>>);

    impl ArchiveFile for Memory {
        fn at(&self, _: u64) -> Result<Box<dyn Write + '_>> {
            unimplemented!("kept_blobs only reads")
        }
        fn size(&self) -> Result<u64> {
            Ok(self.0.borrow().len() as u64)
        }
        fn read_at(&self, offset: u64) -> Result<Box<dyn Read + '_>> {
            let bytes = self.0.borrow()[offset as usize..].to_vec();
            Ok(Box::new(std::io::Cursor::new(bytes)))
        }
        fn set_len(&self, len: u64) -> Result<()> {
            self.0.borrow_mut().truncate(len as usize);
            Ok(())
        }
    }

    fn blob(data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: "application/octet-stream".into(),
            digest: Digest::of(data),
            size: data.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn only_whole_blobs_of_the_same_plan_are_kept() {
        let datas: [&[u8]; 4] = [b"whole", &[7u8; 1500], b"flipped", &[9u8; 700]];
        let blobs: Vec<Descriptor> = datas.iter().map(|d| blob(d)).collect();
        let mut w = tar::Writer::new(Vec::new());
        w.file("imo.json", b"{\"plan\":1}").unwrap();
        let mut bytes = w.into_parts().0;
        let head = bytes.clone();
        let mut w = tar::Writer::new(std::mem::take(&mut bytes));
        for (d, data) in blobs.iter().zip(datas) {
            w.file(&archive::blob_path(&d.digest), data).unwrap();
        }
        w.finish().unwrap();
        let sizes: Vec<u64> = blobs.iter().map(|d| d.size).collect();
        let (offsets, end) = tar::data_offsets(head.len() as u64, &sizes).unwrap();
        let mut bytes = w.into_parts().0;
        assert_eq!(bytes.len() as u64, end);
        // A byte of the third blob flipped, the last cut short: the pull was stopped there.
        bytes[offsets[2] as usize] ^= 1;
        bytes.truncate(offsets[3] as usize + 100);
        let file = Memory(RefCell::new(bytes.clone()));
        assert_eq!(
            kept_blobs(&file, &head, &blobs, &offsets).unwrap(),
            Some(vec![true, true, false, false])
        );

        // Another plan (a changed source) keeps nothing.
        let mut other = tar::Writer::new(Vec::new());
        other.file("imo.json", b"{\"plan\":2}").unwrap();
        assert_eq!(
            kept_blobs(&file, &other.into_parts().0, &blobs, &offsets).unwrap(),
            None
        );
        // Nor does a partial cut inside its head.
        let short = Memory(RefCell::new(head[..head.len() - 1].to_vec()));
        assert_eq!(kept_blobs(&short, &head, &blobs, &offsets).unwrap(), None);
    }
}
