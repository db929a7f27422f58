//! The archive format: an OCI image layout as a tar stream, in an order that lets a reader
//! plan in one pass.
//!
//! ```text
//! oci-layout                  {"imageLayoutVersion":"1.0.0"}
//! imo.json                    what the archive carries and leaves out (Metadata)
//! index.json                  the final image's top-level manifest, annotated
//! blobs/sha256/<manifests>    top-level manifest first, then its children, exact bytes
//! blobs/sha256/<blobs>        configs, then the layers the base lacks
//! ```

use crate::digest::{Digest, Verifier};
use crate::manifest::{self, Descriptor, Manifest};
use crate::plan::Fetched;
use crate::tar;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

pub const LAYOUT_FILE: &str = "oci-layout";
pub const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub const METADATA_FILE: &str = "imo.json";
pub const INDEX_FILE: &str = "index.json";
/// The format `imo pull` writes. Version 1 (one image, one base) is still read.
pub const FORMAT_VERSION: u32 = 2;

/// Annotation keys set on the `index.json` entries.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_FINAL: &str = "io.imo.final.reference";
pub const ANNOTATION_BASE: &str = "io.imo.base.reference";
pub const ANNOTATION_BASE_DIGEST: &str = "io.imo.base.digest";

/// The base reference recorded for a full archive.
pub const SCRATCH: &str = "scratch";

/// `imo.json`: what the archive carries and what it expects the destination to hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub imo_archive_version: u32,
    /// The images carried, in the order they were named; at least one.
    pub images: Vec<Image>,
    /// The base images the difference was taken against; none for `scratch`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bases: Vec<Base>,
    /// The sources of the inventories the difference was taken against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventories: Vec<String>,
    /// Manifests in archive order, each once: every image's top-level manifest followed by
    /// its children, then what is attached to it.
    pub manifests: Vec<Descriptor>,
    /// Blobs the archive carries, in archive order.
    pub blobs: Vec<Descriptor>,
    /// Blobs the manifests reference that the archive leaves out.
    pub omitted: Vec<Descriptor>,
    /// For omitted blobs an inventory placed: the repositories of the site's registry that
    /// hold them, where push may mount them from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held_in: BTreeMap<Digest, Vec<String>>,
}

/// One image of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Image {
    /// The final image's reference as the user gave it, normalised.
    pub reference: String,
    /// Its top-level manifest.
    pub manifest: Digest,
    /// Signatures, attestations and other artifacts that travel with the image: each the
    /// root of a tree among `manifests`, pushed after the image under its tag (or digest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attached: Vec<Attached>,
}

/// A base image, and the digest its reference resolved to at pull time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Base {
    pub reference: String,
    pub digest: Option<Digest>,
}

/// An artifact that travels with the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attached {
    /// The tag it lives under at the source (cosign's `sha256-<hex>.sig`, say), if any.
    pub tag: Option<String>,
    pub manifest: Digest,
}

/// Version 1 of `imo.json`: one image against one base.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetadataV1 {
    #[allow(dead_code, reason = "checked before this is parsed")]
    imo_archive_version: u32,
    final_reference: String,
    base_reference: String,
    base_digest: Option<Digest>,
    manifests: Vec<Descriptor>,
    blobs: Vec<Descriptor>,
    omitted: Vec<Descriptor>,
    #[serde(default)]
    attached: Vec<Attached>,
}

impl From<MetadataV1> for Metadata {
    fn from(v1: MetadataV1) -> Self {
        let bases = if v1.base_reference == SCRATCH {
            vec![]
        } else {
            vec![Base {
                reference: v1.base_reference,
                digest: v1.base_digest,
            }]
        };
        Metadata {
            imo_archive_version: 1,
            images: v1
                .manifests
                .first()
                .map(|top| Image {
                    reference: v1.final_reference,
                    manifest: top.digest.clone(),
                    attached: v1.attached,
                })
                .into_iter()
                .collect(),
            bases,
            inventories: vec![],
            manifests: v1.manifests,
            blobs: v1.blobs,
            omitted: v1.omitted,
            held_in: BTreeMap::new(),
        }
    }
}

impl Metadata {
    /// Parses `imo.json` of either version.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            imo_archive_version: u32,
        }
        let malformed = |e: serde_json::Error| format!("{METADATA_FILE} is malformed: {e}");
        let version = serde_json::from_slice::<Version>(bytes).map_err(malformed)?;
        match version.imo_archive_version {
            1 => serde_json::from_slice::<MetadataV1>(bytes)
                .map(Into::into)
                .map_err(malformed),
            FORMAT_VERSION => serde_json::from_slice(bytes).map_err(malformed),
            v => Err(format!(
                "the archive has format version {v}, this imo reads versions 1 and {FORMAT_VERSION}"
            )),
        }
    }

    /// The base references, or `scratch`, for messages and summaries.
    pub fn base_description(&self) -> String {
        let mut parts: Vec<String> = self.bases.iter().map(|b| b.reference.clone()).collect();
        parts.extend(self.inventories.iter().map(|i| format!("inventory {i}")));
        if parts.is_empty() {
            SCRATCH.to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// The descriptor of image `i`'s top-level manifest.
    pub fn top(&self, image: &Image) -> &Descriptor {
        self.manifests
            .iter()
            .find(|d| d.digest == image.manifest)
            .expect("checked when the archive was opened")
    }
}

pub fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The tag of a reference (`r.io/app:v2` gives `v2`), or of an `oci:DIR:TAG` location.
fn tag_of(reference: &str) -> Option<String> {
    crate::store::Location::parse(reference)
        .ok()
        .and_then(|l| l.tag().map(str::to_owned))
}

/// The `index.json` of an archive: one entry per image, annotated with its reference and
/// bases. `ref.name` is the image's tag, as skopeo and other OCI tools look images up by it,
/// unless two images share a tag.
pub fn index_json(meta: &Metadata) -> Vec<u8> {
    let tags: Vec<Option<String>> = meta.images.iter().map(|i| tag_of(&i.reference)).collect();
    let unique = |t: &String| tags.iter().flatten().filter(|x| *x == t).count() == 1;
    let entries: Vec<Descriptor> = meta
        .images
        .iter()
        .zip(&tags)
        .map(|(image, tag)| {
            let mut top = meta.top(image).clone();
            top.platform = None;
            if let Some(tag) = tag.as_ref().filter(|t| unique(t)) {
                top.annotations.insert(REF_NAME.into(), tag.clone());
            }
            top.annotations
                .insert(ANNOTATION_FINAL.into(), image.reference.clone());
            top.annotations
                .insert(ANNOTATION_BASE.into(), meta.base_description());
            if let [
                Base {
                    digest: Some(d), ..
                },
            ] = meta.bases.as_slice()
            {
                top.annotations
                    .insert(ANNOTATION_BASE_DIGEST.into(), d.to_string());
            }
            top
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": entries,
    });
    serde_json::to_vec(&index).expect("serialising JSON values cannot fail")
}

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
    for d in meta.blobs.iter().chain(&meta.omitted) {
        if accounted.insert(d.digest.clone(), d).is_some() {
            return Err(format!("{METADATA_FILE} lists blob {} twice", d.digest));
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
    if let Some(missing) = referenced.keys().find(|d| !accounted.contains_key(*d)) {
        return Err(format!(
            "blob {missing} is referenced but {METADATA_FILE} neither carries nor omits it"
        ));
    }
    Ok(())
}

impl<R: Read> Opened<R> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::image_json;

    /// A complete archive for an image of a config and two layers, the first omitted.
    pub fn sample() -> (Vec<u8>, Metadata) {
        let config = b"{\"a\":1}".to_vec();
        let l1 = b"layer one".to_vec();
        let l2 = b"layer two".to_vec();
        let (cd, d1, d2) = (Digest::of(&config), Digest::of(&l1), Digest::of(&l2));
        let m = image_json(Some(manifest::OCI_MANIFEST), &cd, &[(&d1, 9), (&d2, 9)]);
        let desc = |mt: &str, d: &Digest, size: usize| Descriptor {
            media_type: mt.into(),
            digest: d.clone(),
            size: size as u64,
            platform: None,
            annotations: Default::default(),
        };
        let md = desc(manifest::OCI_MANIFEST, &Digest::of(&m), m.len());
        let meta = Metadata {
            imo_archive_version: FORMAT_VERSION,
            images: vec![Image {
                reference: "r.io/app:v2".into(),
                manifest: md.digest.clone(),
                attached: vec![],
            }],
            bases: vec![Base {
                reference: "r.io/app:v1".into(),
                digest: None,
            }],
            inventories: vec![],
            manifests: vec![md.clone()],
            blobs: vec![
                desc(
                    "application/vnd.oci.image.config.v1+json",
                    &cd,
                    config.len(),
                ),
                desc("application/vnd.oci.image.layer.v1.tar+gzip", &d2, 9),
            ],
            omitted: vec![desc("application/vnd.oci.image.layer.v1.tar+gzip", &d1, 9)],
            held_in: BTreeMap::new(),
        };
        let mut w = tar::Writer::new(Vec::new());
        w.file(LAYOUT_FILE, LAYOUT_CONTENT).unwrap();
        w.file(METADATA_FILE, &serde_json::to_vec(&meta).unwrap())
            .unwrap();
        w.file(INDEX_FILE, &index_json(&meta)).unwrap();
        w.file(&blob_path(&md.digest), &m).unwrap();
        w.file(&blob_path(&cd), &config).unwrap();
        w.file(&blob_path(&d2), &l2).unwrap();
        w.finish().unwrap();
        (w.written_into(), meta)
    }

    impl tar::Writer<Vec<u8>> {
        fn written_into(self) -> Vec<u8> {
            let (v, _) = self.into_parts();
            v
        }
    }

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
    fn version_1_metadata_is_read_as_one_image_over_one_base() {
        let (_, meta) = sample();
        let v1 = serde_json::json!({
            "imoArchiveVersion": 1,
            "finalReference": "r.io/app:v2",
            "baseReference": "r.io/app:v1",
            "baseDigest": null,
            "manifests": meta.manifests,
            "blobs": meta.blobs,
            "omitted": meta.omitted,
        });
        let read = Metadata::parse(&serde_json::to_vec(&v1).unwrap()).unwrap();
        assert_eq!(read.images, meta.images);
        assert_eq!(read.bases, meta.bases);
        assert_eq!(read.base_description(), "r.io/app:v1");
        let scratch = serde_json::json!({
            "imoArchiveVersion": 1, "finalReference": "r.io/app:v2", "baseReference": "scratch",
            "baseDigest": null, "manifests": meta.manifests, "blobs": [], "omitted": [],
        });
        let read = Metadata::parse(&serde_json::to_vec(&scratch).unwrap()).unwrap();
        assert!(read.bases.is_empty());
        assert_eq!(read.base_description(), SCRATCH);
        let e = Metadata::parse(br#"{"imoArchiveVersion":3}"#).unwrap_err();
        assert!(e.contains("format version 3"), "{e}");
    }

    #[test]
    fn index_json_names_each_image_and_tags_only_unique_ones() {
        let (_, mut meta) = sample();
        let first = meta.images[0].clone();
        meta.images.push(Image {
            reference: "r.io/db:v2".into(),
            ..first
        });
        let index: serde_json::Value = serde_json::from_slice(&index_json(&meta)).unwrap();
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e["annotations"][REF_NAME].is_null()));
        assert_eq!(entries[1]["annotations"][ANNOTATION_FINAL], "r.io/db:v2");
        meta.images[1].reference = "r.io/db:v3".into();
        let index: serde_json::Value = serde_json::from_slice(&index_json(&meta)).unwrap();
        assert_eq!(index["manifests"][0]["annotations"][REF_NAME], "v2");
        assert_eq!(index["manifests"][1]["annotations"][REF_NAME], "v3");
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

    type Entries = Vec<(String, Vec<u8>)>;
    type Edit<'a> = &'a dyn Fn(&mut Entries);

    /// Rewrites the sample archive's entries with `f`, then walks it to the end.
    fn walk_rewritten(f: Edit<'_>) -> Result<(), String> {
        let (bytes, _) = sample();
        let mut entries = Vec::new();
        let mut r = tar::Reader::new(&bytes[..]);
        while let Some(e) = r.next_entry().unwrap() {
            let data = r.read_small(&e, 1 << 20).unwrap();
            entries.push((e.path, data));
        }
        f(&mut entries);
        let mut w = tar::Writer::new(Vec::new());
        for (p, d) in &entries {
            w.file(p, d).unwrap();
        }
        w.finish().unwrap();
        let (out, _) = w.into_parts();
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
}
