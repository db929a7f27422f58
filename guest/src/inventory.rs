//! Inventories: what a (disconnected) site holds, as a small versioned JSON document.
//!
//! An inventory lists every blob and manifest digest found in some repositories of one
//! registry, or in archives already shipped there, with the repositories each lives in. A
//! pull given inventories leaves out every blob any of them lists, and records where each
//! omitted blob lives so that push can mount it instead of asking for an upload.
//!
//! ```json
//! {
//!   "imoInventoryVersion": 1,
//!   "sources": ["mirror.site:5000/org/app", "archive app-v1.tar"],
//!   "blobs": [{"digest": "sha256:…", "size": 1234, "repositories": ["org/app"]}],
//!   "manifests": [{"digest": "sha256:…", "size": 567,
//!                  "mediaType": "application/vnd.oci.image.manifest.v1+json",
//!                  "repositories": ["org/app"], "tags": ["org/app:v1"]}]
//! }
//! ```

use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::plan::Fetched;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const VERSION: u32 = 1;

/// The most an inventory document may weigh; a site's holdings fit in far less.
pub const MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    pub imo_inventory_version: u32,
    /// What was read: `registry/repository` or `archive NAME`, in order.
    pub sources: Vec<String>,
    /// Every blob (configs and layers), sorted by digest.
    pub blobs: Vec<Blob>,
    /// Every manifest and index, sorted by digest.
    pub manifests: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    /// Repositories of the inventoried registry holding it; empty when it came from an
    /// archive, whose destination repository is not known.
    #[serde(default)]
    pub repositories: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestEntry {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    #[serde(default)]
    pub repositories: Vec<String>,
    /// `repository:tag` names pointing at it, for people reading the inventory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Accumulates an inventory, each digest once.
#[derive(Debug, Default)]
pub struct Builder {
    sources: Vec<String>,
    blobs: BTreeMap<Digest, (u64, BTreeSet<String>)>,
    manifests: BTreeMap<Digest, (u64, String, BTreeSet<String>, BTreeSet<String>)>,
}

impl Builder {
    pub fn source(&mut self, s: String) {
        if !self.sources.contains(&s) {
            self.sources.push(s);
        }
    }

    /// Adds an image's manifests (an index and its children, or one manifest) and the blobs
    /// they reference, as held in `repository` (if known) under `tag` (if any).
    pub fn image(&mut self, manifests: &[Fetched], repository: Option<&str>, tag: Option<&str>) {
        for (i, m) in manifests.iter().enumerate() {
            let d = &m.descriptor;
            let entry = self.manifests.entry(d.digest.clone()).or_insert_with(|| {
                (
                    d.size,
                    d.media_type.clone(),
                    BTreeSet::new(),
                    BTreeSet::new(),
                )
            });
            if let Some(r) = repository {
                entry.2.insert(r.to_owned());
                if let (0, Some(t)) = (i, tag) {
                    entry.3.insert(format!("{r}:{t}"));
                }
            }
            for b in m.manifest.blobs() {
                self.blob(b, repository);
            }
        }
    }

    pub fn blob(&mut self, d: &Descriptor, repository: Option<&str>) {
        let entry = self
            .blobs
            .entry(d.digest.clone())
            .or_insert_with(|| (d.size, BTreeSet::new()));
        if let Some(r) = repository {
            entry.1.insert(r.to_owned());
        }
    }

    /// Folds in another inventory (a union: each digest once, repositories merged).
    pub fn merge(&mut self, other: &Inventory) {
        for s in &other.sources {
            self.source(s.clone());
        }
        for b in &other.blobs {
            let entry = self
                .blobs
                .entry(b.digest.clone())
                .or_insert_with(|| (b.size, BTreeSet::new()));
            entry.1.extend(b.repositories.iter().cloned());
        }
        for m in &other.manifests {
            let entry = self.manifests.entry(m.digest.clone()).or_insert_with(|| {
                (
                    m.size,
                    m.media_type.clone(),
                    BTreeSet::new(),
                    BTreeSet::new(),
                )
            });
            entry.2.extend(m.repositories.iter().cloned());
            entry.3.extend(m.tags.iter().cloned());
        }
    }

    pub fn build(self) -> Inventory {
        Inventory {
            imo_inventory_version: VERSION,
            sources: self.sources,
            blobs: self
                .blobs
                .into_iter()
                .map(|(digest, (size, repos))| Blob {
                    digest,
                    size,
                    repositories: repos.into_iter().collect(),
                })
                .collect(),
            manifests: self
                .manifests
                .into_iter()
                .map(|(digest, (size, media_type, repos, tags))| ManifestEntry {
                    digest,
                    size,
                    media_type,
                    repositories: repos.into_iter().collect(),
                    tags: tags.into_iter().collect(),
                })
                .collect(),
        }
    }
}

impl Inventory {
    /// Parses an inventory, refusing other versions and malformed documents by name.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_BYTES {
            return Err(format!(
                "inventory {name} is larger than {} MiB",
                MAX_BYTES >> 20
            ));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            imo_inventory_version: Option<u32>,
        }
        let version = serde_json::from_slice::<Version>(bytes)
            .map_err(|e| format!("inventory {name} is not an imo inventory: {e}"))?;
        match version.imo_inventory_version {
            Some(VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "inventory {name} has version {v}; this imo reads version {VERSION}"
                ));
            }
            None => {
                return Err(format!(
                    "inventory {name} has no imoInventoryVersion: it is not an imo inventory"
                ));
            }
        }
        serde_json::from_slice(bytes).map_err(|e| format!("inventory {name} is malformed: {e}"))
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("inventories serialise");
        v.push(b'\n');
        v
    }

    /// Every blob digest listed, with the repositories holding it.
    pub fn holdings(&self) -> impl Iterator<Item = (&Digest, &[String])> {
        self.blobs
            .iter()
            .map(|b| (&b.digest, b.repositories.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;
    use crate::manifest::tests::image_json;

    fn fetched(config: &[u8], layers: &[&[u8]]) -> Fetched {
        let ld: Vec<(Digest, u64)> = layers
            .iter()
            .map(|l| (Digest::of(l), l.len() as u64))
            .collect();
        let refs: Vec<(&Digest, u64)> = ld.iter().map(|(d, s)| (d, *s)).collect();
        let bytes = image_json(Some(manifest::OCI_MANIFEST), &Digest::of(config), &refs);
        Fetched::of_oci_manifest(bytes)
    }

    #[test]
    fn a_union_lists_each_digest_once_with_every_repository() {
        let app = fetched(b"c1", &[b"shared", b"app"]);
        let db = fetched(b"c2", &[b"shared", b"db"]);
        let mut b = Builder::default();
        b.source("r/app".into());
        b.image(std::slice::from_ref(&app), Some("org/app"), Some("v1"));
        b.source("r/db".into());
        b.image(std::slice::from_ref(&db), Some("org/db"), Some("v1"));
        let inv = b.build();
        assert_eq!(inv.blobs.len(), 5, "two configs, three distinct layers");
        let shared = inv
            .blobs
            .iter()
            .find(|x| x.digest == Digest::of(b"shared"))
            .unwrap();
        assert_eq!(shared.repositories, ["org/app", "org/db"]);
        assert_eq!(inv.manifests.len(), 2);
        assert_eq!(inv.manifests[0].tags.len(), 1);
        let sorted: Vec<_> = inv.blobs.iter().map(|b| b.digest.clone()).collect();
        let mut again = sorted.clone();
        again.sort();
        assert_eq!(sorted, again, "entries are sorted by digest");

        // Round trip, and merging with an archive's holdings (no repository).
        let parsed = Inventory::parse("x", &inv.to_json()).unwrap();
        assert_eq!(parsed, inv);
        let mut m = Builder::default();
        m.merge(&parsed);
        let extra = fetched(b"c3", &[b"new"]);
        m.source("archive a.tar".into());
        m.image(std::slice::from_ref(&extra), None, None);
        let merged = m.build();
        assert_eq!(merged.blobs.len(), 7);
        assert_eq!(merged.sources, ["r/app", "r/db", "archive a.tar"]);
        let new = merged
            .holdings()
            .find(|(d, _)| **d == Digest::of(b"new"))
            .unwrap();
        assert!(new.1.is_empty());
    }

    #[test]
    fn parse_names_what_is_wrong() {
        let e = Inventory::parse("inv.json", b"not json").unwrap_err();
        assert!(
            e.contains("inv.json") && e.contains("not an imo inventory"),
            "{e}"
        );
        let e = Inventory::parse("i", br#"{"blobs":[]}"#).unwrap_err();
        assert!(e.contains("no imoInventoryVersion"), "{e}");
        let e = Inventory::parse("i", br#"{"imoInventoryVersion":9}"#).unwrap_err();
        assert!(e.contains("version 9"), "{e}");
        let e = Inventory::parse(
            "i",
            br#"{"imoInventoryVersion":1,"sources":[],"blobs":[{"digest":"md5:x","size":1}],"manifests":[]}"#,
        )
        .unwrap_err();
        assert!(e.contains("malformed"), "{e}");
    }
}
