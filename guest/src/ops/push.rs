//! Vet and push: every blob an archive's images need is found at their destinations
//! (or the vet fails naming what is missing); push then uploads what is lacking, mounts
//! what another repository holds (or, where the registry declines mounts, copies it across),
//! and puts the manifests. From a file, a push can also be split so that several instances
//! upload at once: [`plan_push_file`] (vet, mounts, each blob's place in the file),
//! [`push_file_share`] (some of the uploads, each read at its offset) and
//! [`push_file_finish`] (the manifests).

use super::targets::{Route, Target, mount_sources, targets};
use super::tree::{children_first, image_blobs};
use super::{
    ArchiveFile, Options, Progress, Reporter, Summary, open_archive, open_destination, short,
    summary_of, summary_of_meta,
};
use crate::archive::{Opened, blob_path};
use crate::digest::{Digest, Verifying};
use crate::error::{Error, Result};
use crate::manifest::Descriptor;
use crate::registry::{Committing, Mount, Transport};
use crate::store::Destination;
use crate::tar;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// Where the destination can find a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// Already in the destination repository.
    Here,
    /// In another repository of the destination registry, to be mounted from.
    In(String),
    Nowhere,
}

/// Finds each blob with `HEAD` requests only: nothing is written while surveying. Where an
/// inventory placed a blob, its repositories are tried first. The questions go in rounds,
/// each asked together ([`Destination::have_blobs`]): every blob in the destination
/// repository, then each blob not found yet in its next candidate repository; so each blob
/// is found where asking one repository after another would find it, with as many requests.
fn survey(
    client: &dyn Destination,
    blobs: &[&Descriptor],
    sources: &[String],
    held_in: &BTreeMap<Digest, Vec<String>>,
) -> Result<Vec<Found>> {
    let asks: Vec<_> = blobs.iter().map(|d| (None, &d.digest)).collect();
    let mut found: Vec<Option<Found>> = (client.have_blobs(&asks)?.into_iter())
        .map(|here| here.then_some(Found::Here))
        .collect();
    let candidates: Vec<Vec<&String>> = (blobs.iter())
        .map(|d| {
            let placed = held_in.get(&d.digest).into_iter().flatten();
            let mut tried = BTreeSet::new();
            (placed.chain(sources))
                .filter(|repo| *repo != client.repository() && tried.insert(*repo))
                .collect()
        })
        .collect();
    for round in 0.. {
        let open: Vec<(usize, &String)> = (0..blobs.len())
            .filter(|&i| found[i].is_none())
            .filter_map(|i| Some((i, *candidates[i].get(round)?)))
            .collect();
        if open.is_empty() {
            break;
        }
        let asks: Vec<_> = (open.iter())
            .map(|&(i, repo)| (Some(repo.as_str()), &blobs[i].digest))
            .collect();
        for ((i, repo), held) in open.into_iter().zip(client.have_blobs(&asks)?) {
            if held {
                found[i] = Some(Found::In(repo.clone()));
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|f| f.unwrap_or(Found::Nowhere))
        .collect())
}

/// Finds the source layers of the deltas of the layers in `needs` that the destination
/// lacks: a delta is rebuilt against them, so each must be there, or in a repository to read
/// it from. Each one missing is added to `missing`, and named.
fn survey_delta_sources(
    client: &dyn Destination,
    meta: &crate::archive::Metadata,
    needs: &BTreeSet<Digest>,
    tried: &[String],
    report: &dyn Reporter,
    missing: &mut Vec<String>,
) -> Result<BTreeMap<Digest, Found>> {
    let mut found = BTreeMap::new();
    let deltas: Vec<_> = (meta.deltas.iter())
        .filter(|d| needs.contains(&d.layer.digest))
        .collect();
    let asks: Vec<_> = deltas.iter().map(|d| (None, &d.layer.digest)).collect();
    let held = client.have_blobs(&asks)?;
    for delta in deltas
        .into_iter()
        .zip(held)
        .filter(|(_, h)| !h)
        .map(|(d, _)| d)
    {
        let unknown: Vec<&Descriptor> = (delta.sources.iter())
            .filter(|s| !found.contains_key(&s.digest))
            .collect();
        let places = survey(client, &unknown, tried, &BTreeMap::new())?;
        for (s, place) in unknown.into_iter().zip(places) {
            if place == Found::Nowhere {
                report.line(&format!(
                    "vet {}: {} is missing: layer {} is carried as a delta against it",
                    client.describe(),
                    s.digest,
                    delta.layer.digest
                ));
                if !missing.contains(&s.digest.to_string()) {
                    missing.push(s.digest.to_string());
                }
            }
            found.insert(s.digest.clone(), place);
        }
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
    /// Where the source layers of the deltas this image needs were found.
    delta_sources: BTreeMap<Digest, Found>,
}

/// An archive whose head is read, and its images' destinations, connected and vetted.
type Vetted<'t, 'a> = (Opened<&'a mut dyn Read>, Vec<Connected<'t>>);

/// Parses the destination (first: a typo costs no reading), reads the archive's head, and
/// vets it there, for `push` when `push` is set.
fn open_and_vet<'t, 'a>(
    transport: &'t dyn Transport,
    options: &Options,
    report: &'t dyn Reporter,
    archive: &'a mut dyn Read,
    destination: &str,
    push: bool,
) -> Result<Vetted<'t, 'a>> {
    let route = Route::parse(destination, &options.destination_map)?;
    let archive = open_archive(archive)?;
    let targets = connect_and_vet(transport, options, report, &archive, &route, push)?;
    Ok((archive, targets))
}

/// Connects to every image's destination and finds each blob the image needs there; fails
/// with every omitted blob that no repository of the destination can provide.
fn connect_and_vet<'t, R: Read>(
    transport: &'t dyn Transport,
    options: &Options,
    report: &'t dyn Reporter,
    archive: &Opened<R>,
    route: &Route,
    push: bool,
) -> Result<Vec<Connected<'t>>> {
    let meta = &archive.meta;
    let targets = targets(meta, route)?;
    let sources = mount_sources(&targets, meta, options);
    let also_pull = sources.all();
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
        // A layer carried as a delta counts as carried.
        let carried: Vec<&Descriptor> = (meta.blobs.iter())
            .chain(meta.deltas.iter().map(|d| &d.layer))
            .filter(|d| needs.contains(&d.digest))
            .collect();
        let found = survey(client.as_ref(), &omitted, &sources.tried, &sources.held_in)?;
        let delta_sources = survey_delta_sources(
            client.as_ref(),
            meta,
            &needs,
            &sources.tried,
            report,
            &mut missing,
        )?;
        let absent: Vec<&Descriptor> = omitted
            .iter()
            .zip(&found)
            .filter(|(_, f)| **f == Found::Nowhere)
            .map(|(d, _)| *d)
            .collect();
        let mountable = found.iter().filter(|f| matches!(f, Found::In(_))).count();
        let sources_present = (delta_sources.values())
            .filter(|f| **f != Found::Nowhere)
            .count();
        report.line(&format!(
            "vet {}: {} of {} omitted blob(s) present{}{}",
            client.describe(),
            omitted.len() - absent.len(),
            omitted.len(),
            if mountable > 0 {
                format!(" ({mountable} by mounting from another repository)")
            } else {
                String::new()
            },
            if delta_sources.is_empty() {
                String::new()
            } else {
                format!(
                    "; {sources_present} of {} source layer(s) of deltas",
                    delta_sources.len()
                )
            }
        ));
        for d in absent {
            let withheld = sources.withheld_for(meta, &d.digest);
            if !withheld.is_empty() {
                report.line(&format!(
                    "vet {}: {} is missing; the archive names {} for it, which imo asks about \
                     only when told: --mount-from REPOSITORY for one you trust, or \
                     --mount-from-archive to trust those the archive names",
                    client.describe(),
                    d.digest,
                    withheld.join(", ")
                ));
            }
            if !missing.contains(&d.digest.to_string()) {
                missing.push(d.digest.to_string());
            }
        }
        let carried_found = if push {
            survey(client.as_ref(), &carried, &sources.tried, &BTreeMap::new())?
        } else {
            vec![]
        };
        connected.push(Connected {
            client,
            target,
            omitted: omitted.into_iter().cloned().zip(found).collect(),
            carried: carried.into_iter().cloned().zip(carried_found).collect(),
            delta_sources,
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
    let (archive, _) = open_and_vet(transport, options, report, archive, destination, false)?;
    Ok(summary_of(&archive))
}

/// Vets, uploads what the destination lacks, then puts the manifests, top-level last.
pub fn push(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    archive: &mut dyn Read,
    destination: &str,
) -> Result<Summary> {
    let (mut archive, targets) =
        open_and_vet(transport, options, report, archive, destination, true)?;

    // Everything is known to be available: only now does anything change at the destination.
    let mut summary = summary_of(&archive);
    let mut placed = Placed::new();
    let lacking = place_found(&targets, report, &mut summary, &mut placed)?;

    // A registry answers an upload once it has stored the blob, which takes it a while (it
    // syncs the file to disk): the next blob streams meanwhile.
    let mut committing = None;
    while let Some(blob) = archive.next_blob().map_err(Error::InvalidArchive)? {
        // A delta stands for its layer.
        let delta = archive.delta(&blob.digest).cloned();
        let d = delta.as_ref().map_or(&blob, |l| &l.layer).clone();
        let Some(first) = (0..targets.len()).find(|t| lacking[*t].contains(&d.digest)) else {
            continue;
        };
        let target = &targets[first];
        let client = target.client.as_ref();
        let upload = match &delta {
            None => {
                let mut progress = Progress::start(report, ("uploading", "uploaded"), &d);
                let upload = upload_from_archive(client, &mut archive, &d, &mut progress)?;
                (upload, progress)
            }
            Some(delta) => {
                let mut progress = Progress::start(report, ("rebuilding", "rebuilt"), &d);
                let sources = &target.delta_sources;
                let upload =
                    upload_rebuilt(client, &mut archive, &blob, delta, sources, &mut progress)?;
                summary.layers_rebuilt += 1;
                (upload, progress)
            }
        };
        let (upload, progress) = upload;
        summary.blobs_uploaded += 1;
        summary.bytes_uploaded += d.size;
        let sent = Sent {
            d,
            first,
            upload,
            progress,
        };
        if let Some(sent) = committing.replace(sent) {
            stored(sent, &targets, &lacking, report, &mut summary, &mut placed)?;
        }
    }
    if let Some(sent) = committing {
        stored(sent, &targets, &lacking, report, &mut summary, &mut placed)?;
    }

    put_manifests(&archive.meta, &archive.manifests, &targets, report)?;
    summary.archive_bytes = archive.offset();
    Ok(summary)
}

/// Puts in place, before any upload, what a HEAD found elsewhere at the destination: counts
/// the carried blobs the destination holds as skipped, and mounts (or copies) those another
/// repository holds. Returns, per image, the blobs it still lacks: the first image lacking a
/// carried blob receives its upload, the others mount it from there.
fn place_found(
    targets: &[Connected<'_>],
    report: &dyn Reporter,
    summary: &mut Summary,
    placed: &mut Placed,
) -> Result<Vec<BTreeSet<Digest>>> {
    let mut lacking: Vec<BTreeSet<Digest>> = vec![BTreeSet::new(); targets.len()];
    let mut skipped = BTreeSet::new();
    for (t, c) in targets.iter().enumerate() {
        for (d, found) in c.omitted.iter().chain(&c.carried) {
            let carried = c.carried.iter().any(|(x, _)| x == d);
            match found {
                Found::Here => {
                    if carried {
                        skipped.insert(d.digest.clone());
                    }
                }
                // Where the mount is declined, a blob the archive carries is uploaded from
                // it; one it omits is copied across.
                Found::In(repo) => {
                    let into = c.client.as_ref();
                    let put = place(into, d, repo, !carried, report, summary, placed)?;
                    if !put {
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
    Ok(lacking)
}

/// Puts every image's manifests, once all its blobs are in place.
fn put_manifests(
    meta: &crate::archive::Metadata,
    manifests: &[crate::plan::Fetched],
    targets: &[Connected<'_>],
    report: &dyn Reporter,
) -> Result<()> {
    // Per image: children before the indexes that name them and the top-level manifest last
    // under its tag; then what is attached to it, each under its own tag.
    for (image, c) in meta.images.iter().zip(targets) {
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
            children_first(&root, manifests, &mut order, &mut done);
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
    Ok(())
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

/// Uploads the layer a delta rebuilds: the delta blob's bytes are checked against its digest
/// as they are read, its sources are read from the destination (each checked against its
/// digest), the tar they give against the layer's `diff_id`, and the rebuilt layer against
/// its digest before its last bytes go: a layer that does not rebuild exactly is never
/// committed, and its upload session is cancelled.
fn upload_rebuilt<'c, R: Read>(
    client: &'c dyn Destination,
    archive: &mut Opened<R>,
    blob: &Descriptor,
    delta: &crate::archive::LayerDelta,
    sources: &BTreeMap<Digest, Found>,
    progress: &mut Progress<'_>,
) -> Result<Committing<'c>> {
    let layer = &delta.layer;
    let failed = |why: String| {
        Error::InvalidArchive(format!(
            "layer {} could not be rebuilt from its delta: {why}",
            layer.digest
        ))
    };
    // The delta is read whole and checked against its digest before the rebuilder sees any
    // of it: preflate-rs trusts its correction data (damaged data can make it abort), so
    // only verified bytes reach it. A pull holds no more than this of deltas together.
    if blob.size > super::delta::MEMORY_BUDGET {
        return Err(failed(format!(
            "its delta is {} bytes, more than the {} imo reads",
            blob.size,
            super::delta::MEMORY_BUDGET
        )));
    }
    let mut bytes = Vec::new();
    let what = format!("delta {}", blob.digest);
    crate::digest::verified_reader(ArchiveEntry(archive), &blob.digest, blob.size, what)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(e.to_string()))?;
    let bytes = std::io::Cursor::new(bytes);
    let open = |s: &Descriptor| {
        let from = match sources.get(&s.digest) {
            Some(Found::In(repo)) => Some(repo.as_str()),
            _ => None,
        };
        client.open_blob_in(from, s)
    };
    let mut rebuilt = super::delta::rebuilt(delta, Box::new(bytes), open).map_err(failed)?;
    let mut read = |b: &mut [u8]| rebuilt.read(b).map_err(|e| failed(e.to_string()));
    let mismatch = |m| failed(format!("the rebuilt layer does not match its digest: {m}"));
    let mut layer_bytes = Verifying::new(&layer.digest, layer.size, &mut read, &mismatch);
    client.upload(layer, &mut |b| {
        let n = layer_bytes.read(b)?;
        progress.advance(n);
        Ok(n)
    })
}

/// The current blob of an archive, as a stream.
struct ArchiveEntry<'a, R>(&'a mut Opened<R>);

impl<R: Read> Read for ArchiveEntry<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// A blob sent to the first target lacking it, whose registry has yet to answer.
struct Sent<'c, 'r> {
    d: Descriptor,
    first: usize,
    upload: Committing<'c>,
    progress: Progress<'r>,
}

/// Waits until the upload of a blob to the first target lacking it is stored (only then is
/// it reported uploaded), then places it from there into the other targets lacking it.
fn stored(
    Sent {
        d,
        first,
        upload,
        progress,
    }: Sent<'_, '_>,
    targets: &[Connected<'_>],
    lacking: &[BTreeSet<Digest>],
    report: &dyn Reporter,
    summary: &mut Summary,
    placed: &mut Placed,
) -> Result<()> {
    upload.finish()?;
    progress.end();
    let from = targets[first].client.repository();
    placed.insert((from.to_owned(), d.digest.clone()));
    for other in (first + 1..targets.len()).filter(|t| lacking[*t].contains(&d.digest)) {
        let into = targets[other].client.as_ref();
        place(into, &d, from, true, report, summary, placed)?;
    }
    Ok(())
}

/// The blobs put into each repository of the destination during this push: a bundle may
/// send several images to one repository, where each blob goes once.
type Placed = BTreeSet<(String, Digest)>;

/// Puts a blob that repository `from` of the destination registry holds into `into`: nothing
/// when it is there already (the same repository, put there during this push, or found by a
/// `HEAD`: no mount is asked for a blob in place), else a mount. Where the registry declines
/// the mount, the blob is copied across from `from` when `copy` is set, and counted as
/// uploaded; otherwise `Ok(false)`, and the caller uploads it.
fn place(
    into: &dyn Destination,
    d: &Descriptor,
    from: &str,
    copy: bool,
    report: &dyn Reporter,
    summary: &mut Summary,
    placed: &mut Placed,
) -> Result<bool> {
    let key = (into.repository().to_owned(), d.digest.clone());
    if from == into.repository() || placed.contains(&key) || into.has_blob(&d.digest)? {
        placed.insert(key);
        return Ok(true);
    }
    let (id, into_repo) = (short(&d.digest), into.repository());
    match into.mount(&d.digest, from)? {
        Mount::Mounted => {
            report.line(&format!("mounted {id} from {from}"));
            summary.blobs_mounted += 1;
        }
        Mount::Declined { why, .. } if !copy => {
            report.line(&format!(
                "the registry declined to mount {id} from {from} into {into_repo} ({why}): \
                 uploading it"
            ));
            return Ok(false);
        }
        Mount::Declined { session, why } => {
            let mut progress = Progress::start(report, ("copying", "copied"), d);
            into.copy_from(d, from, session, &mut |n| progress.advance(n))?
                .finish()?;
            progress.end();
            report.line(&format!(
                "copied {id} from {from} into {into_repo} (the registry declined the mount: \
                 {why})"
            ));
            summary.blobs_uploaded += 1;
            summary.bytes_uploaded += d.size;
        }
    }
    placed.insert(key);
    Ok(true)
}

/// One blob a planned push still has to upload from the archive file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedUpload {
    /// As `imo.json` lists it (checked where it is used: a plan comes back from the host).
    pub digest: String,
    pub size: u64,
    /// Where its bytes lie in the archive file.
    pub offset: u64,
    /// The image whose destination receives the upload (an index into the archive's images).
    pub target: u32,
    /// The images whose destinations get it after, from there.
    pub also: Vec<u32>,
}

/// A push from a file, vetted and planned: the uploads left, and what the plan did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushPlan {
    /// In archive order.
    pub uploads: Vec<PlannedUpload>,
    /// The archive's length up to its end-of-archive marker.
    pub archive_bytes: u64,
    /// Blobs skipped, mounted or copied across by the plan.
    pub summary: Summary,
}

/// What [`push_file_share`] uploaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uploaded {
    pub blobs: u32,
    pub bytes: u64,
}

/// The head of an archive file, read through a buffer: the file is read a chunk per trip to
/// the host, the head a block at a time.
fn open_file_head(file: &dyn ArchiveFile) -> Result<Opened<Box<dyn Read + '_>>> {
    let head: Box<dyn Read + '_> = Box::new(std::io::BufReader::with_capacity(
        64 << 10,
        file.read_at(0)?,
    ));
    open_archive(head)
}

/// The first part of [`push`] from a file, for a push spread over several instances: reads
/// the head, vets the destination, puts in place what another repository holds, and finds
/// where in the file each blob left to upload lies (reading only the tar headers). `None`
/// for an archive with layer deltas, which is pushed as one stream; the destination is not
/// touched then. Each upload of the plan is then done by [`push_file_share`], in any
/// instance, each exactly once; then [`push_file_finish`] puts the manifests.
pub fn plan_push_file(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    file: &dyn ArchiveFile,
    destination: &str,
) -> Result<Option<PushPlan>> {
    let route = Route::parse(destination, &options.destination_map)?;
    let archive = open_file_head(file)?;
    if !archive.meta.deltas.is_empty() {
        return Ok(None);
    }
    // A damaged archive fails here, before the destination is asked anything.
    let (located, end) = locate_blobs(file, &archive)?;
    let targets = connect_and_vet(transport, options, report, &archive, &route, true)?;
    let mut summary = summary_of(&archive);
    let mut placed = Placed::new();
    let lacking = place_found(&targets, report, &mut summary, &mut placed)?;
    let uploads = (located.into_iter())
        .filter_map(|(d, offset)| {
            let mut lack = (0..targets.len()).filter(|t| lacking[*t].contains(&d.digest));
            let target = lack.next()? as u32;
            Some(PlannedUpload {
                digest: d.digest.to_string(),
                size: d.size,
                offset,
                target,
                also: lack.map(|t| t as u32).collect(),
            })
        })
        .collect();
    summary.archive_bytes = end;
    Ok(Some(PushPlan {
        uploads,
        archive_bytes: end,
        summary,
    }))
}

/// Where each carried blob's bytes lie in the archive file, in archive order, and where the
/// archive ends: found from the tar headers alone, with the checks [`Opened::next_blob`]
/// makes while streaming (each entry a blob `imo.json` lists, once, of its size; none
/// missing; nothing cut).
fn locate_blobs<R: Read>(
    file: &dyn ArchiveFile,
    head: &Opened<R>,
) -> Result<(Vec<(Descriptor, u64)>, u64)> {
    const B: u64 = tar::BLOCK as u64;
    let bad = Error::InvalidArchive;
    let len = file.size()?;
    let mut pending: BTreeMap<&Digest, &Descriptor> =
        head.meta.blobs.iter().map(|d| (&d.digest, d)).collect();
    let mut located = Vec::with_capacity(pending.len());
    let mut at = head.offset().div_ceil(B) * B;
    loop {
        // Offsets in messages count from the archive's start, as when it streams.
        let mut entries = tar::Reader::new(file.read_at(at)?);
        entries.offset = at;
        let Some(entry) = entries.next_entry().map_err(bad)? else {
            if let Some(d) = pending.keys().next() {
                return Err(bad(format!(
                    "the archive ends without blob {d} (and {} more): it is truncated",
                    pending.len() - 1
                )));
            }
            return Ok((located, entries.offset));
        };
        let path = tar::normalise(&entry.path);
        let d = path
            .strip_prefix("blobs/sha256/")
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            .and_then(|d| pending.remove(&d));
        let Some(d) = d else {
            let what = if head.meta.blobs.iter().any(|d| blob_path(&d.digest) == path) {
                "appears twice"
            } else {
                "is not one imo.json lists"
            };
            return Err(bad(format!("archive entry {:?} {what}", entry.path)));
        };
        if entry.size != d.size {
            return Err(bad(format!(
                "blob {} is {} bytes in the archive, {} were declared",
                d.digest, entry.size, d.size
            )));
        }
        let data = entries.offset;
        if data.checked_add(d.size).is_none_or(|e| e > len) {
            return Err(bad(format!(
                "the archive ends at byte {len} with {} bytes of entry {:?} still to come: it \
                 is truncated",
                data.saturating_add(d.size) - len,
                entry.path
            )));
        }
        located.push((d.clone(), data));
        at = data + d.size + tar::padding(d.size) as u64;
    }
}

/// One upload of a plan, checked.
#[derive(Debug)]
struct Job<'m> {
    /// As the archive lists it.
    d: &'m Descriptor,
    offset: u64,
    target: usize,
    also: Vec<usize>,
}

/// The uploads `share` names (all, with `None`), as the archive's descriptors with their
/// offsets and targets, once the plan is found to fit the archive: each upload a blob it
/// carries (of that size), within the file past the head (`head_end`, `len`), to targets
/// the destination has; else why not.
fn check_uploads<'m>(
    plan: &PushPlan,
    share: Option<&[u32]>,
    blobs: &'m [Descriptor],
    (head_end, len): (u64, u64),
    targets: usize,
) -> Result<Vec<Job<'m>>> {
    let bad = |why: String| {
        Error::InvalidArchive(format!(
            "the push plan does not fit the archive: {why}; make the plan again with \
             push-file-plan on this file"
        ))
    };
    let all: Vec<u32> = (0..plan.uploads.len() as u32).collect();
    let share = share.unwrap_or(&all);
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(share.len());
    for &i in share {
        let u = (plan.uploads.get(i as usize)).ok_or_else(|| {
            bad(format!(
                "the share names upload {i} of {}",
                plan.uploads.len()
            ))
        })?;
        if !seen.insert(i) {
            return Err(bad(format!("the share names upload {i} twice")));
        }
        let digest = Digest::parse(&u.digest).map_err(|e| bad(format!("upload {i}: {e}")))?;
        let d = (blobs.iter())
            .find(|d| d.digest == digest && d.size == u.size)
            .ok_or_else(|| {
                bad(format!(
                    "upload {i} ({digest}, {} bytes) is not a blob the archive carries",
                    u.size
                ))
            })?;
        if u.offset < head_end || u.offset.checked_add(u.size).is_none_or(|e| e > len) {
            return Err(bad(format!(
                "upload {i} ({} bytes at byte {}) lies outside the archive's blobs (bytes \
                 {head_end} to {len})",
                u.size, u.offset
            )));
        }
        let mut to = vec![u.target as usize];
        to.extend(u.also.iter().map(|&t| t as usize));
        if let Some(t) = to.iter().find(|&&t| t >= targets) {
            return Err(bad(format!(
                "upload {i} goes to image {t}; the archive has {targets}"
            )));
        }
        let first = to.remove(0);
        out.push(Job {
            d,
            offset: u.offset,
            target: first,
            also: to,
        });
    }
    Ok(out)
}

/// Every image's destination, connected, with nothing surveyed.
fn connect<'t, R: Read>(
    transport: &'t dyn Transport,
    options: &Options,
    report: &'t dyn Reporter,
    archive: &Opened<R>,
    destination: &str,
) -> Result<Vec<Connected<'t>>> {
    let route = Route::parse(destination, &options.destination_map)?;
    let targets = targets(&archive.meta, &route)?;
    let also_pull = mount_sources(&targets, &archive.meta, options).all();
    (targets.into_iter())
        .map(|target| {
            Ok(Connected {
                client: open_destination(
                    transport,
                    &target.location,
                    options,
                    true,
                    &also_pull,
                    report,
                )?,
                target,
                omitted: vec![],
                carried: vec![],
                delta_sources: BTreeMap::new(),
            })
        })
        .collect()
}

/// The second part of a push from a file: uploads the blobs of `plan` that `share` names
/// (indices into `plan.uploads`), each read from `file` at its offset and verified as it
/// streams (one that does not match its digest is never committed), the next streaming
/// while the registry stores the last, a cut one resumed or retried alone. `destination`
/// and `options` are those of the plan; the head is read again here to check the plan.
pub fn push_file_share(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    file: &dyn ArchiveFile,
    destination: &str,
    plan: &PushPlan,
    share: &[u32],
) -> Result<Uploaded> {
    let archive = open_file_head(file)?;
    let fits = (archive.offset(), file.size()?);
    let targets = connect(transport, options, report, &archive, destination)?;
    let jobs = check_uploads(plan, Some(share), &archive.meta.blobs, fits, targets.len())?;
    let mut done = Uploaded::default();
    let mut committing: Option<(Committing<'_>, Progress<'_>)> = None;
    for Job {
        d, offset, target, ..
    } in jobs
    {
        let client = targets[target].client.as_ref();
        let mut progress = Progress::start(report, ("uploading", "uploaded"), d);
        let upload = upload_from_file(client, file, offset, d, &mut progress)?;
        done.blobs += 1;
        done.bytes += d.size;
        if let Some((upload, progress)) = committing.replace((upload, progress)) {
            upload.finish()?;
            progress.end();
        }
    }
    if let Some((upload, progress)) = committing {
        upload.finish()?;
        progress.end();
    }
    Ok(done)
}

/// Uploads one blob read from the archive file at `offset`, verified as it streams: the
/// bytes completing it are handed out only once its digest checks out. No more than its
/// size is read, and only from the file.
fn upload_from_file<'c>(
    client: &'c dyn Destination,
    file: &dyn ArchiveFile,
    offset: u64,
    d: &Descriptor,
    progress: &mut Progress<'_>,
) -> Result<Committing<'c>> {
    let mut bytes = file.read_at(offset)?.take(d.size);
    let mut read = |b: &mut [u8]| {
        bytes
            .read(b)
            .map_err(|e| Error::Io(format!("reading the archive file: {e}")))
    };
    let mismatch = |m| Error::DigestMismatch(format!("archive blob {}: {m}", d.digest));
    let mut blob = Verifying::new(&d.digest, d.size, &mut read, &mismatch);
    client.upload(d, &mut |b| {
        let n = blob.read(b)?;
        progress.advance(n);
        Ok(n)
    })
}

/// The last part of a push from a file, once every share is done: puts each uploaded blob
/// into the other destinations that need it, then the manifests. Returns the head's summary
/// with what this part mounted or copied; the plan's and the shares' counts are the
/// caller's to add.
pub fn push_file_finish(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    file: &dyn ArchiveFile,
    destination: &str,
    plan: &PushPlan,
) -> Result<Summary> {
    let archive = open_file_head(file)?;
    let fits = (archive.offset(), file.size()?);
    let targets = connect(transport, options, report, &archive, destination)?;
    let uploads = check_uploads(plan, None, &archive.meta.blobs, fits, targets.len())?;
    let mut summary = summary_of_meta(&archive.meta);
    summary.archive_bytes = plan.archive_bytes;
    let mut placed = Placed::new();
    for u in &uploads {
        let into = targets[u.target].client.repository();
        placed.insert((into.to_owned(), u.d.digest.clone()));
    }
    for Job {
        d, target, also, ..
    } in &uploads
    {
        let from = targets[*target].client.repository();
        for &other in also {
            let into = targets[other].client.as_ref();
            place(into, d, from, true, report, &mut summary, &mut placed)?;
        }
    }
    put_manifests(&archive.meta, &archive.manifests, &targets, report)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{BlobSource, Url};
    use std::cell::RefCell;

    /// A destination repository that records what it is asked, holding `held` blobs and
    /// answering mounts with `mount`.
    struct Repo {
        name: &'static str,
        held: bool,
        mount: Mount,
        calls: RefCell<Vec<String>>,
    }

    impl Destination for Repo {
        fn describe(&self) -> String {
            self.name.into()
        }
        fn repository(&self) -> &str {
            self.name
        }
        fn has_blob(&self, _: &Digest) -> Result<bool> {
            self.calls.borrow_mut().push("HEAD".into());
            Ok(self.held)
        }
        fn has_blob_in(&self, _: &str, _: &Digest) -> Result<bool> {
            unreachable!("surveys only")
        }
        fn mount(&self, _: &Digest, from: &str) -> Result<Mount> {
            self.calls.borrow_mut().push(format!("mount from {from}"));
            Ok(self.mount.clone())
        }
        fn open_blob_in(&self, _: Option<&str>, _: &Descriptor) -> Result<Box<dyn Read + '_>> {
            unimplemented!("placing blobs reads none")
        }
        fn copy_from(
            &self,
            d: &Descriptor,
            from: &str,
            session: Option<Url>,
            progress: &mut dyn FnMut(usize),
        ) -> Result<Committing<'_>> {
            let session = session.map_or("a new session".into(), |s| s.path);
            let copy = format!("copy from {from} into {session}");
            self.calls.borrow_mut().push(copy);
            progress(d.size as usize);
            Ok(Committing::done())
        }
        fn upload(&self, _: &Descriptor, _: BlobSource<'_>) -> Result<Committing<'_>> {
            unreachable!("placing never uploads from the archive")
        }
        fn put_manifest(&self, _: &str, _: &Descriptor, _: &[u8]) -> Result<()> {
            unreachable!()
        }
    }

    /// Places a 1000-byte blob from `app` into `into` (`copy`: the archive omits it), with
    /// `placed` already put: whether it is in place, what `into` was asked, the summary and
    /// the report lines.
    fn place_in(
        into: &Repo,
        copy: bool,
        placed: &[&str],
    ) -> (bool, Vec<String>, Summary, Vec<String>) {
        let lines = RefCell::new(Vec::new());
        let report = |l: &str| lines.borrow_mut().push(l.to_owned());
        let d = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            digest: Digest::of(b"layer"),
            size: 1000,
            platform: None,
            annotations: Default::default(),
        };
        let mut placed: Placed = placed
            .iter()
            .map(|r| ((*r).to_owned(), d.digest.clone()))
            .collect();
        let mut summary = Summary::default();
        let put = place(into, &d, "app", copy, &report, &mut summary, &mut placed).unwrap();
        assert_eq!(
            put,
            placed.contains(&(into.name.to_owned(), d.digest.clone()))
        );
        (put, into.calls.take(), summary, lines.into_inner())
    }

    fn repo(name: &'static str, held: bool, mount: Mount) -> Repo {
        Repo {
            name,
            held,
            mount,
            calls: RefCell::default(),
        }
    }

    fn declined(session: Option<&str>) -> Mount {
        Mount::Declined {
            session: session.map(|p| Url {
                scheme: crate::registry::Scheme::Http,
                authority: "127.0.0.1:5000".into(),
                path: p.into(),
            }),
            why: "it answered HTTP 404".into(),
        }
    }

    #[test]
    fn a_blob_in_place_is_never_mounted() {
        // The repository it comes from, one it was put into during this push, or one a HEAD
        // finds it in.
        let (put, calls, summary, _) = place_in(&repo("app", false, declined(None)), true, &[]);
        assert!(put && calls.is_empty());
        let (put, calls, _, _) = place_in(&repo("db", false, declined(None)), true, &["db"]);
        assert!(put && calls.is_empty());
        let (put, calls, _, _) = place_in(&repo("db", true, declined(None)), true, &[]);
        assert!(put);
        assert_eq!(calls, ["HEAD"]);
        assert_eq!(summary, Summary::default());
    }

    #[test]
    fn an_accepted_mount_counts_as_mounted() {
        let (put, calls, summary, lines) = place_in(&repo("db", false, Mount::Mounted), true, &[]);
        assert!(put);
        assert_eq!(calls, ["HEAD", "mount from app"]);
        assert_eq!((summary.blobs_mounted, summary.blobs_uploaded), (1, 0));
        assert!(lines[0].starts_with("mounted sha256:"), "{lines:?}");
    }

    #[test]
    fn a_declined_mount_is_copied_and_counted_as_uploaded() {
        let offered = declined(Some("/v2/db/blobs/uploads/7"));
        let (put, calls, summary, lines) = place_in(&repo("db", false, offered), true, &[]);
        assert!(put);
        assert_eq!(
            calls,
            [
                "HEAD",
                "mount from app",
                "copy from app into /v2/db/blobs/uploads/7"
            ]
        );
        assert_eq!(
            (
                summary.blobs_mounted,
                summary.blobs_uploaded,
                summary.bytes_uploaded
            ),
            (0, 1, 1000)
        );
        let digest = Digest::of(b"layer");
        let id = short(&digest);
        assert_eq!(
            lines,
            [
                format!("copying {id} (1000 bytes)"),
                format!("copied {id}"),
                format!(
                    "copied {id} from app into db (the registry declined the mount: it \
                     answered HTTP 404)"
                ),
            ]
        );
        let (_, calls, _, _) = place_in(&repo("db", false, declined(None)), true, &[]);
        assert_eq!(calls[2], "copy from app into a new session");
    }

    #[test]
    fn a_declined_mount_of_a_carried_blob_leaves_it_to_the_archive() {
        let (put, calls, summary, lines) = place_in(&repo("db", false, declined(None)), false, &[]);
        assert!(!put);
        assert_eq!(calls, ["HEAD", "mount from app"]);
        assert_eq!(summary, Summary::default());
        assert!(lines[0].contains("declined") && lines[0].ends_with("uploading it"));
    }

    /// An archive file in memory, read only.
    struct Memory(Vec<u8>);

    impl ArchiveFile for Memory {
        fn at(&self, _: u64) -> Result<Box<dyn std::io::Write + '_>> {
            unreachable!("a push only reads")
        }
        fn size(&self) -> Result<u64> {
            Ok(self.0.len() as u64)
        }
        fn read_at(&self, offset: u64) -> Result<Box<dyn Read + '_>> {
            let from = (offset as usize).min(self.0.len());
            Ok(Box::new(&self.0[from..]))
        }
        fn set_len(&self, _: u64) -> Result<()> {
            unreachable!("a push only reads")
        }
    }

    fn locate(bytes: Vec<u8>) -> Result<(Vec<(Descriptor, u64)>, u64)> {
        let file = Memory(bytes);
        let head = open_file_head(&file)?;
        locate_blobs(&file, &head)
    }

    #[test]
    fn blobs_are_found_in_the_file_from_their_headers_alone() {
        let (bytes, meta) = crate::archive::tests::sample();
        let (located, end) = locate(bytes.clone()).unwrap();
        assert_eq!(end, bytes.len() as u64);
        let found: Vec<&Descriptor> = located.iter().map(|(d, _)| d).collect();
        assert_eq!(found, meta.blobs.iter().collect::<Vec<_>>());
        for (d, at) in &located {
            let data = &bytes[*at as usize..(*at + d.size) as usize];
            assert_eq!(Digest::of(data), d.digest);
        }

        // Cut anywhere past the head: in a blob, in a header, in the end marker.
        let head_end = {
            let file = Memory(bytes.clone());
            open_file_head(&file).unwrap().offset()
        };
        for cut in [located[1].1 + 3, located[1].1 - 100, end - 700, end - 1] {
            let err = locate(bytes[..cut as usize].to_vec()).unwrap_err();
            assert!(err.to_string().contains("truncated"), "cut at {cut}: {err}");
        }
        let err = locate(bytes[..head_end.div_ceil(512) as usize * 512].to_vec()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");

        // A blob listed twice, or one imo.json does not list.
        let twice = crate::archive::tests::rewritten(&|e| {
            let last = e.last().unwrap().clone();
            e.push(last);
        });
        let err = locate(twice).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        let missing = crate::archive::tests::rewritten(&|e| {
            e.pop();
        });
        let err = locate(missing).unwrap_err();
        assert!(err.to_string().contains("ends without blob"), "{err}");
    }

    #[test]
    fn a_plan_is_used_only_where_it_fits_the_archive() {
        let (bytes, meta) = crate::archive::tests::sample();
        let (located, end) = locate(bytes.clone()).unwrap();
        let head_end = located[0].1 - 512;
        let plan = PushPlan {
            uploads: (located.iter())
                .map(|(d, at)| PlannedUpload {
                    digest: d.digest.to_string(),
                    size: d.size,
                    offset: *at,
                    target: 0,
                    also: vec![],
                })
                .collect(),
            archive_bytes: end,
            summary: Summary::default(),
        };
        let fits = (head_end, bytes.len() as u64);
        let ok = check_uploads(&plan, Some(&[1]), &meta.blobs, fits, 1).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(
            (ok[0].d, ok[0].offset, ok[0].target),
            (&meta.blobs[1], located[1].1, 0)
        );
        assert_eq!(
            check_uploads(&plan, None, &meta.blobs, fits, 1)
                .unwrap()
                .len(),
            2
        );

        let refused = |plan: &PushPlan, share: &[u32], targets: usize| match check_uploads(
            plan,
            Some(share),
            &meta.blobs,
            fits,
            targets,
        ) {
            Err(Error::InvalidArchive(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(refused(&plan, &[2], 1).contains("names upload 2 of 2"));
        assert!(refused(&plan, &[0, 0], 1).contains("twice"));
        assert!(refused(&plan, &[0], 0).contains("goes to image 0; the archive has 0"));
        let mut other = plan.clone();
        other.uploads[0].also = vec![3];
        assert!(refused(&other, &[0], 2).contains("goes to image 3"));
        // Not a blob the archive carries: the omitted layer, a wrong size, no digest.
        let mut other = plan.clone();
        other.uploads[0].digest = meta.omitted[0].digest.to_string();
        other.uploads[0].size = meta.omitted[0].size;
        assert!(refused(&other, &[0], 1).contains("not a blob the archive carries"));
        let mut other = plan.clone();
        other.uploads[1].size += 1;
        assert!(refused(&other, &[1], 1).contains("not a blob the archive carries"));
        let mut other = plan.clone();
        other.uploads[0].digest = "sha256:nothex".into();
        assert!(refused(&other, &[0], 1).contains("upload 0"));
        // In the head, past the end, or past any end.
        for offset in [0, head_end - 1, end, u64::MAX - 2] {
            let mut other = plan.clone();
            other.uploads[1].offset = offset;
            assert!(refused(&other, &[1], 1).contains("outside"), "{offset}");
        }
    }

    /// A destination that takes uploads only, keeping the bytes each was handed.
    struct Drain(RefCell<Vec<u8>>);

    impl Destination for Drain {
        fn describe(&self) -> String {
            "drain".into()
        }
        fn repository(&self) -> &str {
            "drain"
        }
        fn has_blob(&self, _: &Digest) -> Result<bool> {
            unreachable!()
        }
        fn has_blob_in(&self, _: &str, _: &Digest) -> Result<bool> {
            unreachable!()
        }
        fn mount(&self, _: &Digest, _: &str) -> Result<Mount> {
            unreachable!()
        }
        fn open_blob_in(&self, _: Option<&str>, _: &Descriptor) -> Result<Box<dyn Read + '_>> {
            unreachable!()
        }
        fn copy_from(
            &self,
            _: &Descriptor,
            _: &str,
            _: Option<Url>,
            _: &mut dyn FnMut(usize),
        ) -> Result<Committing<'_>> {
            unreachable!()
        }
        fn upload(&self, _: &Descriptor, source: BlobSource<'_>) -> Result<Committing<'_>> {
            let mut buf = [0u8; 4];
            loop {
                let n = source(&mut buf)?;
                if n == 0 {
                    return Ok(Committing::done());
                }
                self.0.borrow_mut().extend_from_slice(&buf[..n]);
            }
        }
        fn put_manifest(&self, _: &str, _: &Descriptor, _: &[u8]) -> Result<()> {
            unreachable!()
        }
    }

    #[test]
    fn a_blob_read_at_a_wrong_offset_fails_its_upload_before_its_last_byte() {
        let (bytes, meta) = crate::archive::tests::sample();
        let (located, _) = locate(bytes.clone()).unwrap();
        let file = Memory(bytes);
        let (d, at) = &located[1];
        let upload = |offset: u64| {
            let drain = Drain(RefCell::default());
            let report = |_: &str| {};
            let mut progress = Progress::start(&report, ("uploading", "uploaded"), d);
            let done = upload_from_file(&drain, &file, offset, d, &mut progress)
                .and_then(Committing::finish);
            (done, drain.0.into_inner())
        };
        let (done, sent) = upload(*at);
        done.unwrap();
        assert_eq!(sent, b"layer two");
        assert_eq!(d, &meta.blobs[1]);
        // One byte off, or past the end of the file (a short blob): never handed out whole.
        for offset in [*at + 1, *at - 1, file.0.len() as u64 - 4, u64::MAX] {
            let (done, sent) = upload(offset);
            assert!(
                matches!(done, Err(Error::DigestMismatch(_))),
                "{offset}: {done:?}"
            );
            assert!(sent.len() < d.size as usize, "{offset}: {sent:?}");
        }
    }
}
