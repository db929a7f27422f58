//! Diff planning: which of the final image's blobs the archive must carry.

use crate::digest::Digest;
use crate::manifest::{Descriptor, Manifest};
use std::collections::{BTreeMap, BTreeSet};

/// A manifest as fetched: its descriptor, its exact bytes, and what they say.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub descriptor: Descriptor,
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

#[cfg(test)]
impl Fetched {
    /// An OCI image manifest's bytes as if fetched, for tests.
    pub(crate) fn of_oci_manifest(bytes: Vec<u8>) -> Fetched {
        Fetched {
            descriptor: Descriptor {
                media_type: crate::manifest::OCI_MANIFEST.into(),
                digest: Digest::of(&bytes),
                size: bytes.len() as u64,
                platform: None,
                annotations: Default::default(),
            },
            manifest: Manifest::parse(&bytes, None).unwrap(),
            bytes,
        }
    }
}

/// What an archive carries and what it leaves to the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Blobs to carry, each once: every config first (small, and readers want them early),
    /// then the layers the base lacks, in manifest order.
    pub include: Vec<Descriptor>,
    /// Blobs the manifests reference that the base already has, each once.
    pub omit: Vec<Descriptor>,
}

/// Plans the archive for `manifests` (the final image's, top first) against the blobs the
/// base holds. Configs are always carried: they are small and make the archive's image
/// inspectable on its own.
pub fn diff(manifests: &[Fetched], base: &BTreeSet<Digest>) -> Plan {
    let mut seen = BTreeSet::new();
    let mut configs = Vec::new();
    let mut layers = Vec::new();
    let mut omit = Vec::new();
    for m in manifests {
        let Manifest::Image { config, layers: ls } = &m.manifest else {
            continue;
        };
        if seen.insert(config.digest.clone()) {
            configs.push(config.clone());
        }
        for l in ls {
            if !seen.insert(l.digest.clone()) {
                continue;
            }
            if base.contains(&l.digest) {
                omit.push(l.clone());
            } else {
                layers.push(l.clone());
            }
        }
    }
    configs.extend(layers);
    Plan {
        include: configs,
        omit,
    }
}

/// Every blob the manifests reference, by digest, with its descriptor.
pub fn referenced(manifests: &[Fetched]) -> BTreeMap<Digest, Descriptor> {
    manifests
        .iter()
        .flat_map(|m| m.manifest.blobs())
        .map(|d| (d.digest.clone(), d.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::image_json;

    fn fetched(config: &Digest, layers: &[(&Digest, u64)]) -> Fetched {
        let bytes = image_json(None, config, layers);
        Fetched::of_oci_manifest(bytes)
    }

    fn digests(ds: &[Descriptor]) -> Vec<Digest> {
        ds.iter().map(|d| d.digest.clone()).collect()
    }

    #[test]
    fn carries_config_and_new_layers_only() {
        let [c, a, b, n] = [b"c", b"a", b"b", b"n"].map(|x| Digest::of(x));
        let m = fetched(&c, &[(&a, 1), (&b, 2), (&n, 3)]);
        let base = BTreeSet::from([a.clone(), b.clone(), c.clone()]);
        let p = diff(&[m], &base);
        assert_eq!(digests(&p.include), vec![c, n]);
        assert_eq!(digests(&p.omit), vec![a, b]);
    }

    #[test]
    fn scratch_carries_everything_and_repeats_once() {
        let [c1, c2, a, b] = [b"c1" as &[u8], b"c2", b"a", b"b"].map(Digest::of);
        let m1 = fetched(&c1, &[(&a, 1), (&b, 2), (&a, 1)]);
        let m2 = fetched(&c2, &[(&a, 1)]);
        let p = diff(&[m1.clone(), m2.clone()], &BTreeSet::new());
        assert_eq!(digests(&p.include), vec![c1, c2, a, b]);
        assert!(p.omit.is_empty());
        assert_eq!(referenced(&[m1, m2]).len(), 4);
    }
}
