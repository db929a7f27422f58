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
///
/// It is [`plan_bundle_to_file`] and [`fetch_share`] of every blob, in one instance.
pub fn pull_bundle_to_file(
    transport: &dyn Transport,
    fetcher: &dyn Fetcher,
    options: &Options,
    report: &dyn Reporter,
    request: &PullRequest,
    file: &dyn ArchiveFile,
) -> Result<Summary> {
    let pull = prepare(transport, options, report, request)?;
    let plan = lay_out(&pull, report, file)?;
    let blobs: Vec<Descriptor> = plan.blobs.iter().map(PlannedBlob::descriptor).collect();
    let jobs: Vec<Job<'_>> = (plan.blobs.iter().zip(&blobs))
        .map(|(b, d)| Job {
            d,
            offset: b.offset,
            source: pull.clients[b.source as usize].as_ref(),
        })
        .collect();
    fetch_blobs(fetcher, options, report, file, &jobs)?;
    Ok(plan.summary)
}

/// A blob a planned pull into a file has yet to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedBlob {
    /// As the manifests declare it: a digest (checked where it is used, for a plan comes
    /// back from the host) and a size.
    pub digest: String,
    pub size: u64,
    /// Where its bytes go in the archive file; its tar header lies in the block before.
    pub offset: u64,
    /// The final image it is fetched from: an index into [`PullRequest::finals`].
    pub source: u32,
}

impl PlannedBlob {
    fn descriptor(&self) -> Descriptor {
        self.descriptor_of(Digest::parse(&self.digest).expect("a plan made here holds digests"))
    }

    /// Its descriptor, with its digest as parsed (and checked) by the caller.
    fn descriptor_of(&self, digest: Digest) -> Descriptor {
        Descriptor {
            media_type: "application/octet-stream".into(),
            digest,
            size: self.size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// A pull into a file, planned and laid out: the blobs left to fetch, and the summary the
/// pull ends with once they are in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePlan {
    /// In archive order.
    pub blobs: Vec<PlannedBlob>,
    /// The archive file's length.
    pub archive_bytes: u64,
    pub summary: Summary,
}

/// What [`fetch_share`] fetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShareDone {
    pub blobs: u32,
    pub bytes: u64,
}

/// The first half of [`pull_bundle_to_file`], for a pull spread over several instances:
/// fetches the manifests, plans the archive and writes into `file` everything but the bytes
/// of the blobs to fetch (head, headers, padding, end marker, deltas; on a resume, keeping
/// what the partial holds whole). Each blob of the plan is then fetched by [`fetch_share`],
/// in any instance, each exactly once.
pub fn plan_bundle_to_file(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    request: &PullRequest,
    file: &dyn ArchiveFile,
) -> Result<FilePlan> {
    let pull = prepare(transport, options, report, request)?;
    lay_out(&pull, report, file)
}

/// The second half of [`pull_bundle_to_file`]: fetches the blobs `share` names (indices into
/// `plan.blobs`) into their places in `file`, several at once, each checked against its
/// digest as it streams, a failed one again alone. `request` and `options` are those the
/// plan was made with; its sources are opened again here.
///
/// The plan comes from the host, so it is trusted no further than it can be checked: it must
/// fit the file (every blob within the archive, after a tar header naming exactly it, none
/// overlapping another) and each blob's bytes must match its digest, or nothing is written.
#[allow(clippy::too_many_arguments)]
pub fn fetch_share(
    transport: &dyn Transport,
    fetcher: &dyn Fetcher,
    options: &Options,
    report: &dyn Reporter,
    request: &PullRequest,
    plan: &FilePlan,
    share: &[u32],
    file: &dyn ArchiveFile,
) -> Result<ShareDone> {
    let blobs = check_share(plan, share, request.finals.len(), file)?;
    let mut sources: Vec<Option<Box<dyn Source + '_>>> =
        request.finals.iter().map(|_| None).collect();
    for (_, _, source) in &blobs {
        if sources[*source].is_none() {
            let fin = parse_location("final image", &request.finals[*source])?;
            let role = options.final_credentials.as_ref();
            sources[*source] = Some(open_source(transport, &fin, role, options, report)?);
        }
    }
    let jobs: Vec<Job<'_>> = (blobs.iter())
        .map(|(d, offset, source)| Job {
            d,
            offset: *offset,
            source: sources[*source].as_deref().expect("opened above"),
        })
        .collect();
    fetch_blobs(fetcher, options, report, file, &jobs)?;
    Ok(ShareDone {
        blobs: blobs.len() as u32,
        bytes: blobs.iter().map(|(d, ..)| d.size).sum(),
    })
}

/// The blobs of `share` as descriptors, with their offsets and sources, once the plan is
/// found to fit `file`: else why not.
fn check_share(
    plan: &FilePlan,
    share: &[u32],
    finals: usize,
    file: &dyn ArchiveFile,
) -> Result<Vec<(Descriptor, u64, usize)>> {
    let bad = |why: String| {
        Error::InvalidArchive(format!(
            "the pull plan does not fit the archive file: {why}; make the plan again with \
             pull-bundle-to-file-plan on this file"
        ))
    };
    const B: u64 = tar::BLOCK as u64;
    let len = file.size()?;
    if len != plan.archive_bytes {
        return Err(bad(format!(
            "the file holds {len} bytes, the plan {}",
            plan.archive_bytes
        )));
    }
    // Every blob between its header and the end marker, none over another's bytes.
    let mut spans: Vec<(u64, u64)> = Vec::with_capacity(plan.blobs.len());
    for (i, b) in plan.blobs.iter().enumerate() {
        let end = b.offset.checked_add(b.size);
        if b.offset < B || end.is_none_or(|e| e > plan.archive_bytes.saturating_sub(2 * B)) {
            return Err(bad(format!(
                "blob {i} ({} bytes at byte {}) lies outside the archive",
                b.size, b.offset
            )));
        }
        spans.push((b.offset - B, b.offset + b.size));
    }
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[0].1 > w[1].0) {
        return Err(bad("two blobs overlap".into()));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(share.len());
    for &i in share {
        let b = (plan.blobs.get(i as usize))
            .ok_or_else(|| bad(format!("the share names blob {i} of {}", plan.blobs.len())))?;
        if !seen.insert(i) {
            return Err(bad(format!("the share names blob {i} twice")));
        }
        if b.source as usize >= finals {
            return Err(bad(format!(
                "blob {i} comes from final image {} of {finals}",
                b.source
            )));
        }
        let digest = Digest::parse(&b.digest).map_err(|e| bad(format!("blob {i}: {e}")))?;
        let mut header = Vec::with_capacity(tar::BLOCK);
        file.read_at(b.offset - B)?
            .take(B)
            .read_to_end(&mut header)
            .map_err(|e| Error::Io(format!("reading the archive file: {e}")))?;
        if header[..] != tar::file_header(&archive::blob_path(&digest), b.size)[..] {
            return Err(bad(format!(
                "the tar header before byte {} is not that of {digest} ({} bytes)",
                b.offset, b.size
            )));
        }
        let d = Descriptor {
            media_type: "application/octet-stream".into(),
            digest,
            size: b.size,
            platform: None,
            annotations: BTreeMap::new(),
        };
        out.push((d, b.offset, b.source as usize));
    }
    Ok(out)
}

/// Writes into `file` everything of the planned archive but the bytes of the blobs to fetch,
/// and says which those are.
fn lay_out(pull: &Prepared<'_>, report: &dyn Reporter, file: &dyn ArchiveFile) -> Result<FilePlan> {
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
        let next = blobs.get(i).map(|d| (&d.digest, d.size));
        let mut out = file.at(at)?;
        out.write_all(&between_blobs(before, next)).map_err(io)?;
        out.flush().map_err(io)?;
    }
    if resuming {
        // Whatever a foreign partial held past this archive's end goes.
        file.set_len(end)?;
    }

    let mut to_fetch = Vec::new();
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
        to_fetch.push(PlannedBlob {
            digest: d.digest.to_string(),
            size: d.size,
            offset: offsets[i],
            source: pull.source_of[&d.digest] as u32,
        });
    }
    let mut summary = pull.summary();
    summary.archive_bytes = end;
    (summary.blobs_kept, summary.bytes_kept) = kept_total;
    Ok(FilePlan {
        blobs: to_fetch,
        archive_bytes: end,
        summary,
    })
}

/// The bytes between two blobs' data in an archive: the padding after the blob before (of
/// size `before`, if any), then the next blob's tar header, or the end marker after the last.
/// A host that writes an archive from the blobs of a plan frames them with this.
pub fn between_blobs(before: Option<u64>, next: Option<(&Digest, u64)>) -> Vec<u8> {
    let mut w = tar::Writer::new(Vec::new());
    // Writing into a Vec cannot fail.
    if let Some(size) = before {
        w.end_entry(size).expect("written to memory");
    }
    match next {
        Some((digest, size)) => w.header(&archive::blob_path(digest), size),
        None => w.finish(),
    }
    .expect("written to memory");
    w.into_parts().0
}

/// A pull to a stream spread over several instances, planned: fetches the manifests once
/// and returns the archive's head and every blob it carries, in archive order, with its
/// offset in the stream and its source. The host writes the head, then each blob between
/// [`between_blobs`] framing, from [`fetch_share_to_streams`] in any instance. An archive
/// with layer deltas is not planned this way (their bytes are made here): pull it with
/// [`pull_bundle`].
pub fn plan_bundle_to_stream(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    request: &PullRequest,
) -> Result<(Vec<u8>, FilePlan)> {
    let pull = prepare(transport, options, report, request)?;
    if !pull.deltas.is_empty() {
        return Err(Error::InvalidArchive(
            "an archive with layer deltas is written by one instance: use pull-bundle".into(),
        ));
    }
    let io = |e: std::io::Error| Error::Io(format!("writing the archive: {e}"));
    let mut w = tar::Writer::new(Vec::new());
    archive::write_head(&mut w, &pull.meta, &pull.manifests).map_err(io)?;
    let head = w.into_parts().0;
    let sizes: Vec<u64> = pull.meta.blobs.iter().map(|d| d.size).collect();
    let (offsets, end) = tar::data_offsets(head.len() as u64, &sizes).ok_or_else(|| {
        Error::InvalidManifest(
            "the blobs' declared sizes add up to more than an archive can hold (2^64 bytes)".into(),
        )
    })?;
    let blobs = (pull.meta.blobs.iter().zip(offsets))
        .map(|(d, offset)| PlannedBlob {
            digest: d.digest.to_string(),
            size: d.size,
            offset,
            source: pull.source_of[&d.digest] as u32,
        })
        .collect();
    let mut summary = pull.summary();
    summary.archive_bytes = end;
    Ok((
        head,
        FilePlan {
            blobs,
            archive_bytes: end,
            summary,
        },
    ))
}

/// The blobs of a stream plan that `share` names, each into its own stream of `outs` (in
/// the same order), one after another in the order given, each checked against its digest
/// and size as it streams, with the usual retries and resumes. The host reads the streams in
/// archive order, so `share` must be in archive order too.
pub fn fetch_share_to_streams(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    request: &PullRequest,
    plan: &FilePlan,
    share: &[u32],
    outs: &mut [&mut dyn Write],
) -> Result<ShareDone> {
    let bad = |why: String| Error::InvalidArchive(format!("the pull plan does not fit: {why}"));
    if share.len() != outs.len() {
        return Err(bad(format!(
            "{} blob(s) named for {} stream(s)",
            share.len(),
            outs.len()
        )));
    }
    if !share.is_sorted_by(|a, b| a < b) {
        return Err(bad("the share is not in archive order".into()));
    }
    let mut sources: Vec<Option<Box<dyn Source + '_>>> =
        request.finals.iter().map(|_| None).collect();
    let mut done = ShareDone::default();
    for (&i, out) in share.iter().zip(outs.iter_mut()) {
        let b = (plan.blobs.get(i as usize)).ok_or_else(|| bad(format!("no blob {i}")))?;
        let source = b.source as usize;
        let slot = sources
            .get_mut(source)
            .ok_or_else(|| bad(format!("blob {i} has no final image {source}")))?;
        if slot.is_none() {
            let fin = parse_location("final image", &request.finals[source])?;
            let role = options.final_credentials.as_ref();
            *slot = Some(open_source(transport, &fin, role, options, report)?);
        }
        let digest = Digest::parse(&b.digest).map_err(bad)?;
        let d = b.descriptor_of(digest);
        let io = |e: std::io::Error| Error::Io(format!("writing blob {}: {e}", d.digest));
        let mut progress = Progress::start(report, ("copying", "copied"), &d);
        slot.as_deref()
            .expect("opened above")
            .blob(&d, &mut |chunk| {
                progress.advance(chunk.len());
                out.write_all(chunk).map_err(io)
            })?;
        out.flush().map_err(io)?;
        progress.end();
        done.blobs += 1;
        done.bytes += d.size;
    }
    Ok(done)
}

/// One blob to fetch into the archive file.
struct Job<'a> {
    d: &'a Descriptor,
    offset: u64,
    source: &'a dyn Source,
}

/// Fetches `jobs` into their places in `file`: those whose source gives requests up to
/// [`FETCH_WIDTH`] at once, in the order given; then, alone and in that order, the others
/// and each whose concurrent fetch failed, with the usual retries and resumes.
fn fetch_blobs(
    fetcher: &dyn Fetcher,
    options: &Options,
    report: &dyn Reporter,
    file: &dyn ArchiveFile,
    jobs: &[Job<'_>],
) -> Result<()> {
    let io = |e: std::io::Error| Error::Io(format!("writing the archive: {e}"));
    let mut concurrent = Vec::new();
    let mut alone = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if job.source.fetches_by_request() {
            concurrent.push((
                i,
                Fetch {
                    d: job.d,
                    source: job.source,
                    out: file.at(job.offset)?,
                    report,
                },
            ));
        } else {
            alone.push(i);
        }
    }
    let (which, fetches): (Vec<usize>, Vec<Fetch<'_>>) = concurrent.into_iter().unzip();
    for (i, outcome) in which.into_iter().zip(fetcher.fetch(fetches, FETCH_WIDTH)) {
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
                jobs[i].d.digest
            )));
        }
        report.line(&format!(
            "retrying GET of blob {} alone after {why}",
            jobs[i].d.digest
        ));
        alone.push(i);
    }
    alone.sort_unstable();
    for i in alone {
        let Job { d, offset, source } = jobs[i];
        let mut out = file.at(offset)?;
        let mut progress = Progress::start(report, ("copying", "copied"), d);
        source.blob(d, &mut |chunk| {
            progress.advance(chunk.len());
            out.write_all(chunk).map_err(io)
        })?;
        out.flush().map_err(io)?;
        progress.end();
    }
    Ok(())
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

    #[test]
    fn a_share_is_fetched_only_where_the_plan_fits_the_file() {
        let datas: [&[u8]; 2] = [&[7u8; 1500], b"second"];
        let blobs: Vec<Descriptor> = datas.iter().map(|d| blob(d)).collect();
        let mut w = tar::Writer::new(Vec::new());
        w.file("imo.json", b"{}").unwrap();
        let head = w.into_parts().0.len() as u64;
        let sizes: Vec<u64> = blobs.iter().map(|d| d.size).collect();
        let (offsets, end) = tar::data_offsets(head, &sizes).unwrap();
        // Laid out as the plan step does: headers written, the blobs' bytes not yet.
        let mut bytes = vec![0u8; end as usize];
        for (d, &at) in blobs.iter().zip(&offsets) {
            let h = tar::file_header(&archive::blob_path(&d.digest), d.size);
            bytes[at as usize - tar::BLOCK..at as usize].copy_from_slice(&h);
        }
        let file = Memory(RefCell::new(bytes));
        let plan = FilePlan {
            blobs: (blobs.iter().zip(&offsets))
                .map(|(d, &offset)| PlannedBlob {
                    digest: d.digest.to_string(),
                    size: d.size,
                    offset,
                    source: 0,
                })
                .collect(),
            archive_bytes: end,
            summary: Summary::default(),
        };
        let fits = check_share(&plan, &[1, 0], 1, &file).unwrap();
        assert_eq!(fits.len(), 2);
        assert_eq!(
            (fits[0].0.digest.clone(), fits[0].1),
            (blobs[1].digest.clone(), offsets[1])
        );

        let refused = |plan: &FilePlan, share: &[u32], finals: usize| match check_share(
            plan, share, finals, &file,
        ) {
            Err(Error::InvalidArchive(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(refused(&plan, &[2], 1).contains("names blob 2 of 2"));
        assert!(refused(&plan, &[0, 0], 1).contains("twice"));
        assert!(refused(&plan, &[0], 0).contains("final image 0 of 0"));
        let mut other = plan.clone();
        other.archive_bytes += 512;
        assert!(refused(&other, &[0], 1).contains("the file holds"));
        // A blob moved, swapped for another or resized: its header does not name it there.
        let mut other = plan.clone();
        other.blobs.remove(0);
        other.blobs[0].offset = offsets[0] + 512;
        assert!(refused(&other, &[0], 1).contains("tar header"));
        let mut other = plan.clone();
        other.blobs[0].digest = blobs[1].digest.to_string();
        assert!(refused(&other, &[0], 1).contains("tar header"));
        let mut other = plan.clone();
        other.blobs[1].size += 1;
        assert!(refused(&other, &[1], 1).contains("tar header"));
        // Out of the archive, over its head or the end marker, or over another blob: refused
        // even where the share does not name it.
        let mut other = plan.clone();
        other.blobs[1].offset = end - 512;
        assert!(refused(&other, &[0], 1).contains("outside the archive"));
        let mut other = plan.clone();
        other.blobs[1].offset = u64::MAX - 2;
        assert!(refused(&other, &[0], 1).contains("outside the archive"));
        let mut other = plan.clone();
        other.blobs[0].offset = 0;
        assert!(refused(&other, &[1], 1).contains("outside the archive"));
        let mut other = plan.clone();
        other.blobs[1].offset = offsets[0] + 512;
        assert!(refused(&other, &[0], 1).contains("overlap"));
        let mut other = plan;
        other.blobs[0].digest = "sha256:nothex".into();
        assert!(refused(&other, &[0], 1).contains("blob 0"));
    }
}
