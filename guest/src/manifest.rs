//! Manifests and indexes, parsed for reading only: imo always keeps and forwards the exact
//! bytes a registry served, because a manifest is identified by the digest of those bytes.

use crate::digest::Digest;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header for manifest requests. distribution answers 404 for an OCI manifest
/// and down-converts Docker ones to schema 1 unless the client names these types.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifests are small; anything larger is refused rather than buffered.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// The largest size a descriptor may declare: OCI sizes are int64, and anything larger
/// would only wrap the offsets and sums computed from it.
pub const MAX_BLOB_SIZE: u64 = i64::MAX as u64;

/// A content descriptor as it appears in manifests and indexes. One declaring a size above
/// [`MAX_BLOB_SIZE`] is refused when parsed, with its digest named.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", try_from = "RawDescriptor")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A [`Descriptor`] as written, before its size is checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl TryFrom<RawDescriptor> for Descriptor {
    type Error = String;

    fn try_from(raw: RawDescriptor) -> Result<Self, String> {
        if raw.size > MAX_BLOB_SIZE {
            return Err(format!(
                "the descriptor of {} declares a size of {} bytes, more than the 2^63-1 a \
                 blob may have",
                raw.digest, raw.size
            ));
        }
        Ok(Descriptor {
            media_type: raw.media_type,
            digest: raw.digest,
            size: raw.size,
            platform: raw.platform,
            annotations: raw.annotations,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// What a manifest's bytes describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An image: a config blob and layer blobs.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    /// An index or manifest list: child manifests.
    Index { manifests: Vec<Descriptor> },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Parses manifest bytes. `content_type` is what the registry (or a parent descriptor)
    /// said the bytes are; the `mediaType` field inside wins when both are present and the
    /// shape decides when neither is.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, String> {
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| format!("not valid manifest JSON: {e}"))?;
        if raw.schema_version != Some(2) {
            return Err(format!(
                "schemaVersion is {:?}, only 2 is supported (Docker schema 1 manifests are obsolete)",
                raw.schema_version
            ));
        }
        let declared = raw
            .media_type
            .as_deref()
            .or(content_type.filter(|c| !c.is_empty()));
        match (declared, raw.manifests, raw.config) {
            (Some(OCI_INDEX | DOCKER_LIST) | None, Some(manifests), None) => {
                Ok(Manifest::Index { manifests })
            }
            (Some(OCI_MANIFEST | DOCKER_MANIFEST) | None, None, Some(config)) => {
                Ok(Manifest::Image {
                    config,
                    layers: raw.layers.unwrap_or_default(),
                })
            }
            (Some(t @ (OCI_INDEX | DOCKER_LIST | OCI_MANIFEST | DOCKER_MANIFEST)), _, _) => Err(
                format!("declares media type {t} but does not have that shape"),
            ),
            (Some(t), _, _) => Err(format!(
                "media type {t} is not a manifest or index imo handles"
            )),
            (None, _, _) => {
                Err("has neither a mediaType nor the shape of a manifest or index".into())
            }
        }
    }

    /// The blobs (config first, then layers) an image manifest references; none for an index.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        let (config, layers): (Option<&Descriptor>, &[Descriptor]) = match self {
            Manifest::Image { config, layers } => (Some(config), layers),
            Manifest::Index { .. } => (None, &[]),
        };
        config.into_iter().chain(layers)
    }

    /// The child manifests of an index; none for an image.
    pub fn children(&self) -> &[Descriptor] {
        match self {
            Manifest::Index { manifests } => manifests,
            Manifest::Image { .. } => &[],
        }
    }
}

/// The media type a manifest's own bytes declare, for use as `Content-Type` when pushing.
pub fn declared_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Only {
        media_type: Option<String>,
    }
    serde_json::from_slice::<Only>(bytes).ok()?.media_type
}

pub fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_LIST
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn image_json(
        media_type: Option<&str>,
        config: &Digest,
        layers: &[(&Digest, u64)],
    ) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|(d, s)| {
                serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.as_str(), "size": s})
            })
            .collect();
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.as_str(), "size": 7},
            "layers": layers,
        });
        if let Some(t) = media_type {
            v["mediaType"] = t.into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn parses_an_image_with_or_without_media_type() {
        let c = Digest::of(b"config");
        let l = Digest::of(b"layer");
        for t in [Some(OCI_MANIFEST), Some(DOCKER_MANIFEST), None] {
            let m = Manifest::parse(&image_json(t, &c, &[(&l, 5)]), None).unwrap();
            let blobs: Vec<_> = m.blobs().map(|d| d.digest.clone()).collect();
            assert_eq!(blobs, vec![c.clone(), l.clone()]);
            assert!(m.children().is_empty());
        }
    }

    #[test]
    fn parses_an_index() {
        let child = Digest::of(b"child");
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_LIST,
            "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": child.as_str(), "size": 3,
                           "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]
        }))
        .unwrap();
        let m = Manifest::parse(&bytes, None).unwrap();
        assert_eq!(m.children().len(), 1);
        assert_eq!(
            m.children()[0]
                .platform
                .as_ref()
                .unwrap()
                .variant
                .as_deref(),
            Some("v8")
        );
        assert_eq!(m.blobs().count(), 0);
        assert_eq!(declared_media_type(&bytes).as_deref(), Some(DOCKER_LIST));
    }

    #[test]
    fn sizes_beyond_int64_are_refused_with_the_digest_named() {
        let c = Digest::of(b"config");
        let l = Digest::of(b"layer");
        for size in [u64::MAX, 1 << 63] {
            let err = Manifest::parse(&image_json(None, &c, &[(&l, size)]), None).unwrap_err();
            assert!(
                err.contains(l.as_str()) && err.contains(&size.to_string()),
                "{err}"
            );
        }
        let m = Manifest::parse(&image_json(None, &c, &[(&l, MAX_BLOB_SIZE)]), None).unwrap();
        assert_eq!(m.blobs().nth(1).unwrap().size, MAX_BLOB_SIZE);
        // Wherever descriptors are read: an archive's imo.json, an index.json.
        let json = format!(r#"{{"mediaType":"x","digest":"{l}","size":{}}}"#, u64::MAX);
        let err = serde_json::from_str::<Descriptor>(&json).unwrap_err();
        assert!(err.to_string().contains(l.as_str()), "{err}");
    }

    #[test]
    fn refuses_what_it_cannot_handle() {
        let c = Digest::of(b"config");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{".to_vec(), "not valid manifest JSON"),
            (br#"{"schemaVersion":1}"#.to_vec(), "schemaVersion"),
            (
                image_json(Some(OCI_INDEX), &c, &[]),
                "does not have that shape",
            ),
            (
                image_json(Some("text/plain"), &c, &[]),
                "not a manifest or index",
            ),
            (br#"{"schemaVersion":2}"#.to_vec(), "neither a mediaType"),
            (
                br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:00","size":1}}"#
                    .to_vec(),
                "64 lowercase",
            ),
        ];
        for (bytes, expected) in cases {
            let err = Manifest::parse(&bytes, None).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
