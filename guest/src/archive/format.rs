//! What an archive is made of: `imo.json` ([`Metadata`], versions 1 and 2), the names of
//! its entries and the annotations of its `index.json`.

use crate::digest::Digest;
use crate::manifest::Descriptor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const LAYOUT_FILE: &str = "oci-layout";
pub const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub const METADATA_FILE: &str = "imo.json";
pub const INDEX_FILE: &str = "index.json";
/// The format `imo pull` writes. Version 1 (one image, one base) is still read.
pub const FORMAT_VERSION: u32 = 2;
/// The format of an archive that carries layers as deltas ([`LayerDelta`]): version 2 plus
/// `deltas`, so that an imo that cannot rebuild them refuses the archive by its version.
pub const DELTA_FORMAT_VERSION: u32 = 3;

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
    /// Layers carried as deltas (version 3): each is neither in `blobs` nor in `omitted`;
    /// its delta is in `blobs`, and push rebuilds the layer from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<LayerDelta>,
}

/// A layer the archive carries as a delta against layers the destination holds, with what
/// rebuilds it byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LayerDelta {
    /// The layer, as the manifests name it.
    pub layer: Descriptor,
    /// The delta blob the archive carries for it (listed in `blobs`).
    pub delta: Descriptor,
    /// SHA-256 of the layer's uncompressed tar (its `diff_id`), checked before the rebuilt
    /// layer is committed.
    pub diff_id: Digest,
    /// The layers (blobs) the destination holds whose uncompressed tars the delta copies
    /// from, in the order the delta numbers them.
    pub sources: Vec<Descriptor>,
    /// What turns the uncompressed tar back into the layer blob, and its version:
    /// [`crate::delta::TAR`] or [`crate::delta::gzip::REBUILDER`].
    pub rebuilder: String,
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
            deltas: vec![],
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
            v @ (FORMAT_VERSION | DELTA_FORMAT_VERSION) => {
                let meta: Metadata = serde_json::from_slice(bytes).map_err(malformed)?;
                if (v == DELTA_FORMAT_VERSION) == meta.deltas.is_empty() {
                    return Err(format!(
                        "{METADATA_FILE} is malformed: format version {v} {} layer deltas",
                        if v == DELTA_FORMAT_VERSION {
                            "without"
                        } else {
                            "with"
                        }
                    ));
                }
                Ok(meta)
            }
            v => Err(format!(
                "the archive has format version {v}, this imo reads versions 1 to \
                 {DELTA_FORMAT_VERSION}: use a newer imo"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::sample;

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
        let e = Metadata::parse(br#"{"imoArchiveVersion":4}"#).unwrap_err();
        assert!(e.contains("format version 4"), "{e}");
    }
}
