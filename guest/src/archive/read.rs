//! Reading an archive: [`open`] checks everything before the first blob (entry order, the
//! manifests' digests, that `imo.json` agrees with them), then [`Opened`] walks the blobs.

use super::format::*;
use crate::digest::{Digest, Verifier};
use crate::manifest::{self, Descriptor, Manifest};
use crate::plan::Fetched;
use crate::tar;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// An archive whose metadata has been read and checked, positioned at its first blob.
pub struct Opened<R> {
    pub meta: Metadata,
    /// The manifests, top-level first, verified against their digests.
    pub manifests: Vec<Fetched>,
    tar: tar::Reader<R>,
    /// Carried blobs not yet reached.
    pending: BTreeMap<Digest, Descriptor>,
}

/// Reads and checks everything before the first blob.
pub fn open<R: Read>(input: R) -> Result<Opened<R>, String> {
    let mut tar = tar::Reader::new(input);
    let expect = |tar: &mut tar::Reader<R>, name: &str, limit: u64| -> Result<Vec<u8>, String> {
        let Some(e) = tar.next_entry()? else {
            return Err(format!(
                "the archive ends before {name}: it is not a complete imo archive"
            ));
        };
        if tar::normalise(&e.path) != name {
            return Err(format!(
                "expected {name} but found {:?}: this is not an archive written by imo pull",
                e.path
            ));
        }
        tar.read_small(&e, limit)
    };
    let layout = expect(&mut tar, LAYOUT_FILE, 4096)?;
    let layout: serde_json::Value =
        serde_json::from_slice(&layout).map_err(|e| format!("{LAYOUT_FILE} is not JSON: {e}"))?;
    if layout["imageLayoutVersion"] != "1.0.0" {
        return Err(format!(
            "{LAYOUT_FILE} declares an image layout version other than 1.0.0"
        ));
    }
    let meta = expect(&mut tar, METADATA_FILE, manifest::MAX_MANIFEST_BYTES)?;
    let meta = Metadata::parse(&meta)?;
    if meta.images.is_empty() {
        return Err(format!("{METADATA_FILE} lists no image"));
    }
    let index = expect(&mut tar, INDEX_FILE, manifest::MAX_MANIFEST_BYTES)?;
    let index = Manifest::parse(&index, None).map_err(|e| format!("{INDEX_FILE} {e}"))?;
    let pointed: Vec<&Digest> = index.children().iter().map(|d| &d.digest).collect();
    let named: Vec<&Digest> = meta.images.iter().map(|i| &i.manifest).collect();
    if pointed != named {
        return Err(format!(
            "{INDEX_FILE} does not point at the images {METADATA_FILE} names"
        ));
    }

    let mut manifests = Vec::new();
    for d in &meta.manifests {
        let Some(e) = tar.next_entry()? else {
            return Err(format!(
                "the archive ends before manifest {}: it is truncated",
                d.digest
            ));
        };
        if tar::normalise(&e.path) != blob_path(&d.digest) {
            return Err(format!(
                "expected manifest {} but found entry {:?}",
                d.digest, e.path
            ));
        }
        if e.size != d.size {
            return Err(format!(
                "manifest {} is {} bytes, {} were declared",
                d.digest, e.size, d.size
            ));
        }
        let bytes = tar.read_small(&e, manifest::MAX_MANIFEST_BYTES)?;
        let mut v = Verifier::new(&d.digest, d.size);
        v.update(&bytes)
            .and_then(|()| v.finish())
            .map_err(|m| format!("manifest {}: {m}", d.digest))?;
        let parsed = Manifest::parse(&bytes, Some(&d.media_type))
            .map_err(|e| format!("manifest {} {e}", d.digest))?;
        manifests.push(Fetched {
            descriptor: d.clone(),
            bytes,
            manifest: parsed,
        });
    }
    check_consistency(&meta, &manifests)?;
    let pending = meta
        .blobs
        .iter()
        .map(|d| (d.digest.clone(), d.clone()))
        .collect();
    Ok(Opened {
        meta,
        manifests,
        tar,
        pending,
    })
}

/// The lists in `imo.json` must agree with the manifests themselves: every child of an
/// index is in the archive, and every referenced blob is carried or omitted, exactly once.
fn check_consistency(meta: &Metadata, manifests: &[Fetched]) -> Result<(), String> {
    let listed: BTreeSet<&Digest> = meta.manifests.iter().map(|d| &d.digest).collect();
    if listed.len() != meta.manifests.len() {
        return Err(format!("{METADATA_FILE} lists a manifest twice"));
    }
    for m in manifests {
        for child in m.manifest.children() {
            if !listed.contains(&child.digest) {
                return Err(format!(
                    "index {} references manifest {} that the archive does not carry",
                    m.descriptor.digest, child.digest
                ));
            }
        }
    }
    for image in &meta.images {
        if !listed.contains(&image.manifest) {
            return Err(format!(
                "{METADATA_FILE} names image {} with manifest {}, which the archive does not carry",
                image.reference, image.manifest
            ));
        }
        for a in &image.attached {
            if !listed.contains(&a.manifest) {
                return Err(format!(
                    "{METADATA_FILE} attaches manifest {} that the archive does not carry",
                    a.manifest
                ));
            }
        }
    }
    let referenced = crate::plan::referenced(manifests);
    let mut accounted = BTreeMap::new();
    let deltas = check_deltas(meta, &referenced)?;
    for d in meta.blobs.iter().chain(&meta.omitted) {
        if accounted.insert(d.digest.clone(), d).is_some() {
            return Err(format!("{METADATA_FILE} lists blob {} twice", d.digest));
        }
        if deltas.contains(&d.digest) {
            continue;
        }
        match referenced.get(&d.digest) {
            None => {
                return Err(format!(
                    "{METADATA_FILE} lists blob {} that no manifest references",
                    d.digest
                ));
            }
            Some(r) if r.size != d.size => {
                return Err(format!(
                    "{METADATA_FILE} gives blob {} a size of {}, the manifest {}",
                    d.digest, d.size, r.size
                ));
            }
            Some(_) => {}
        }
    }
    for delta in &meta.deltas {
        let layer = &delta.layer;
        if accounted.insert(layer.digest.clone(), layer).is_some() {
            return Err(format!(
                "{METADATA_FILE} both carries layer {} as a delta and lists it as a blob or as \
                 another delta",
                layer.digest
            ));
        }
    }
    if let Some(missing) = referenced.keys().find(|d| !accounted.contains_key(*d)) {
        return Err(format!(
            "blob {missing} is referenced but {METADATA_FILE} neither carries nor omits it"
        ));
    }
    Ok(())
}

/// Checks the layer deltas against the manifests and the carried blobs; returns the
/// digests of the delta blobs, which no manifest references.
fn check_deltas(
    meta: &Metadata,
    referenced: &BTreeMap<Digest, Descriptor>,
) -> Result<BTreeSet<Digest>, String> {
    let mut delta_blobs = BTreeSet::new();
    for delta in &meta.deltas {
        let (layer, blob) = (&delta.layer, &delta.delta);
        match referenced.get(&layer.digest) {
            Some(r) if r.size == layer.size => {}
            Some(r) => {
                return Err(format!(
                    "{METADATA_FILE} gives layer {} a size of {}, the manifest {}",
                    layer.digest, layer.size, r.size
                ));
            }
            None => {
                return Err(format!(
                    "{METADATA_FILE} carries a delta for layer {}, which no manifest references",
                    layer.digest
                ));
            }
        }
        if referenced.contains_key(&blob.digest) || !meta.blobs.contains(blob) {
            return Err(format!(
                "{METADATA_FILE} names delta {} for layer {}, which the archive does not carry \
                 as a delta",
                blob.digest, layer.digest
            ));
        }
        if !delta_blobs.insert(blob.digest.clone()) {
            return Err(format!("{METADATA_FILE} names delta {} twice", blob.digest));
        }
        if delta.sources.len() > crate::delta::MAX_SOURCES {
            return Err(format!(
                "{METADATA_FILE} gives the delta of layer {} {} source layers; at most {} are \
                 read",
                layer.digest,
                delta.sources.len(),
                crate::delta::MAX_SOURCES
            ));
        }
    }
    Ok(delta_blobs)
}

impl<R: Read> Opened<R> {
    /// The delta a carried blob is, if it is one.
    pub fn delta(&self, blob: &Digest) -> Option<&LayerDelta> {
        self.meta.deltas.iter().find(|d| d.delta.digest == *blob)
    }

    /// Moves to the next carried blob, returning its descriptor; `None` at the end, once
    /// every blob `imo.json` promised has been seen.
    pub fn next_blob(&mut self) -> Result<Option<Descriptor>, String> {
        let Some(e) = self.tar.next_entry()? else {
            if let Some(d) = self.pending.keys().next() {
                return Err(format!(
                    "the archive ends without blob {d} (and {} more): it is truncated",
                    self.pending.len() - 1
                ));
            }
            return Ok(None);
        };
        let path = tar::normalise(&e.path);
        let Some(d) = path
            .strip_prefix("blobs/sha256/")
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            .and_then(|d| self.pending.remove(&d))
        else {
            let what = if self.meta.blobs.iter().any(|d| blob_path(&d.digest) == path) {
                "appears twice"
            } else {
                "is not one imo.json lists"
            };
            return Err(format!("archive entry {:?} {what}", e.path));
        };
        if e.size != d.size {
            return Err(format!(
                "blob {} is {} bytes in the archive, {} were declared",
                d.digest, e.size, d.size
            ));
        }
        Ok(Some(d))
    }

    /// Reads the current blob's bytes; 0 at its end.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        self.tar.read_data(buf)
    }

    /// Bytes of archive read so far.
    pub fn offset(&self) -> u64 {
        self.tar.offset
    }

    /// Whether the tar's end-of-archive marker has been read.
    pub fn at_end(&self) -> bool {
        self.tar.ended()
    }

    /// Carried blobs `imo.json` lists that have not been reached.
    pub fn pending(&self) -> impl Iterator<Item = &Descriptor> {
        self.pending.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::sample;

    #[test]
    fn opens_and_walks_a_sample() {
        let (bytes, meta) = sample();
        let mut o = open(&bytes[..]).unwrap();
        assert_eq!(o.meta, meta);
        assert_eq!(o.manifests.len(), 1);
        let mut seen = Vec::new();
        while let Some(d) = o.next_blob().unwrap() {
            seen.push(d.digest);
        }
        assert_eq!(
            seen,
            meta.blobs
                .iter()
                .map(|d| d.digest.clone())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_truncated_archive_is_refused_wherever_it_is_cut() {
        let (bytes, _) = sample();
        for cut in (0..bytes.len() - 1024).step_by(97) {
            let walk = || -> Result<(), String> {
                let mut o = open(&bytes[..cut])?;
                let mut buf = [0u8; 64];
                while o.next_blob()?.is_some() {
                    while o.read(&mut buf)? > 0 {}
                }
                Ok(())
            };
            assert!(walk().is_err(), "cut at {cut} accepted");
        }
    }

    use crate::archive::tests::{Entries, rewritten};
    type Edit<'a> = &'a dyn Fn(&mut Entries);

    /// Rewrites the sample archive's entries with `f`, then walks it to the end.
    fn walk_rewritten(f: Edit<'_>) -> Result<(), String> {
        let out = rewritten(f);
        let mut o = open(&out[..])?;
        let mut buf = [0u8; 64];
        while o.next_blob()?.is_some() {
            while o.read(&mut buf)? > 0 {}
        }
        Ok(())
    }

    #[test]
    fn damaged_layouts_are_refused_with_the_entry_named() {
        let cases: Vec<(Edit<'_>, &str)> = vec![
            (
                &|e| {
                    e.remove(2);
                },
                "expected index.json",
            ),
            (
                &|e| {
                    e.remove(0);
                },
                "expected oci-layout",
            ),
            (
                &|e| {
                    e[0].1 = br#"{"imageLayoutVersion":"2.0.0"}"#.to_vec();
                },
                "other than 1.0.0",
            ),
            (
                &|e| {
                    e[1].1 = b"{not json".to_vec();
                },
                "imo.json is malformed",
            ),
            (
                &|e| {
                    let d = e[5].clone();
                    e.push(d);
                },
                "appears twice",
            ),
            (
                &|e| {
                    e.push(("blobs/sha256/".to_owned() + &"0".repeat(64), b"x".to_vec()));
                },
                "is not one imo.json lists",
            ),
            (
                &|e| {
                    e.push(("notes.txt".to_owned(), b"x".to_vec()));
                },
                "is not one imo.json lists",
            ),
            (
                &|e| {
                    e[5].1[0] ^= 1;
                },
                "",
            ),
            (
                &|e| {
                    e.remove(5);
                },
                "truncated",
            ),
            (
                &|e| {
                    e[3].1.push(b' ');
                },
                "were declared",
            ),
        ];
        for (i, (f, expected)) in cases.into_iter().enumerate() {
            let err = walk_rewritten(f);
            // A flipped byte in a blob passes the layout reader (it checks sizes and names);
            // the push verifies content as it uploads.
            if expected.is_empty() {
                assert!(err.is_ok(), "case {i}: {err:?}");
                continue;
            }
            let err = err.unwrap_err();
            assert!(err.contains(expected), "case {i}: {err}");
        }
    }

    #[test]
    fn metadata_that_disagrees_with_the_manifest_is_refused() {
        let (_, meta) = sample();
        let rewrite = |f: &dyn Fn(&mut Metadata)| {
            let mut m = meta.clone();
            f(&mut m);
            m
        };
        let fetched: Vec<Fetched> = {
            let (bytes, _) = sample();
            open(&bytes[..]).unwrap().manifests
        };
        let cases: Vec<(Metadata, &str)> = vec![
            (
                rewrite(&|m| {
                    m.omitted.clear();
                }),
                "neither carries nor omits",
            ),
            (
                rewrite(&|m| {
                    let d = m.blobs[1].clone();
                    m.omitted.push(d);
                }),
                "twice",
            ),
            (
                rewrite(&|m| {
                    m.blobs[1].size = 1;
                }),
                "size of 1",
            ),
            (
                rewrite(&|m| {
                    m.blobs[1].digest = Digest::of(b"x");
                }),
                "no manifest references",
            ),
        ];
        for (m, expected) in cases {
            let err = check_consistency(&m, &fetched).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn a_layer_carried_as_a_delta_is_accounted_for_and_its_claims_checked() {
        let (bytes, meta) = sample();
        let fetched = open(&bytes[..]).unwrap().manifests;
        let blob = crate::delta::encode(b"", b"ops");
        let delta_desc = Descriptor {
            media_type: crate::delta::MEDIA_TYPE.into(),
            digest: Digest::of(&blob),
            size: blob.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        // The second layer (carried in the sample) goes as a delta against the first.
        let mut with_delta = meta.clone();
        with_delta.imo_archive_version = DELTA_FORMAT_VERSION;
        let layer = with_delta.blobs.pop().unwrap();
        with_delta.blobs.push(delta_desc.clone());
        with_delta.deltas.push(LayerDelta {
            layer: layer.clone(),
            delta: delta_desc,
            diff_id: Digest::of(b"tar"),
            sources: vec![meta.omitted[0].clone()],
            rebuilder: crate::delta::TAR.into(),
        });
        check_consistency(&with_delta, &fetched).unwrap();
        let json = serde_json::to_vec(&with_delta).unwrap();
        assert_eq!(Metadata::parse(&json).unwrap(), with_delta);

        let rewrite = |f: &dyn Fn(&mut Metadata)| {
            let mut m = with_delta.clone();
            f(&mut m);
            m
        };
        let cases: Vec<(Metadata, &str)> = vec![
            (
                rewrite(&|m| m.deltas[0].layer.digest = Digest::of(b"other")),
                "no manifest references",
            ),
            (rewrite(&|m| m.deltas[0].layer.size = 1), "a size of 1"),
            (rewrite(&|m| m.blobs.push(layer.clone())), "both carries"),
            (rewrite(&|m| drop(m.blobs.pop())), "does not carry"),
            (
                rewrite(&|m| m.deltas[0].delta = m.blobs[0].clone()),
                "does not carry",
            ),
            (
                rewrite(&|m| m.deltas.clear()),
                "that no manifest references",
            ),
            (
                rewrite(&|m| {
                    m.deltas[0].sources = vec![layer.clone(); crate::delta::MAX_SOURCES + 1]
                }),
                "source layers",
            ),
        ];
        for (i, (m, expected)) in cases.into_iter().enumerate() {
            let err = check_consistency(&m, &fetched).unwrap_err();
            assert!(err.contains(expected), "case {i}: {err}");
        }
        // The version says whether deltas may be there.
        let mut v2 = with_delta.clone();
        v2.imo_archive_version = FORMAT_VERSION;
        let err = Metadata::parse(&serde_json::to_vec(&v2).unwrap()).unwrap_err();
        assert!(err.contains("version 2 with layer deltas"), "{err}");
    }
}
