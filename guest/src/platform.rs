//! Choosing platforms out of an index. Pure.

use crate::digest::Digest;
use crate::manifest::{Descriptor, Platform};

/// `os/arch[/variant]`, as `--platform` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl PlatformSpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "platform {s:?} is not os/arch or os/arch/variant (for example linux/arm64/v8)"
            )),
        }
    }

    /// A spec without a variant matches every variant of its architecture.
    pub fn matches(&self, p: &Platform) -> bool {
        self.os == p.os
            && self.architecture == p.architecture
            && self
                .variant
                .as_ref()
                .is_none_or(|v| p.variant.as_ref() == Some(v))
    }
}

pub fn describe(p: &Option<Platform>) -> String {
    match p {
        Some(Platform {
            os,
            architecture,
            variant: Some(v),
        }) => format!("{os}/{architecture}/{v}"),
        Some(Platform {
            os,
            architecture,
            variant: None,
        }) => format!("{os}/{architecture}"),
        None => "(no platform)".into(),
    }
}

/// What the archive's top-level manifest becomes when only some platforms are carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One platform: its own manifest, digest unchanged.
    One(Descriptor),
    /// Several: a new index of the same media type listing only them. Its digest differs
    /// from the source index's: a sparse copy of the original would reference manifests the
    /// destination never receives, which registries refuse.
    Subset {
        bytes: Vec<u8>,
        descriptor: Descriptor,
    },
}

/// Picks the children of `index` (raw bytes, media type) that match any of `specs`.
pub fn select(
    index: &[u8],
    media_type: &str,
    children: &[Descriptor],
    specs: &[PlatformSpec],
) -> Result<Selection, String> {
    let chosen: Vec<usize> = children
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.platform
                .as_ref()
                .is_some_and(|p| specs.iter().any(|s| s.matches(p)))
        })
        .map(|(i, _)| i)
        .collect();
    match chosen.as_slice() {
        [] => {
            let available: Vec<String> = children.iter().map(|c| describe(&c.platform)).collect();
            Err(format!(
                "no platform matches; the index has {}",
                available.join(", ")
            ))
        }
        [one] => Ok(Selection::One(children[*one].clone())),
        several => {
            // Keep each chosen entry exactly as the index wrote it (annotations, platform
            // details imo does not model), and every top-level field but the list.
            let mut value: serde_json::Value =
                serde_json::from_slice(index).map_err(|e| e.to_string())?;
            let entries = value["manifests"]
                .as_array()
                .ok_or("the index has no manifests list")?
                .clone();
            value["manifests"] = several.iter().map(|&i| entries[i].clone()).collect();
            let bytes = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
            let descriptor = Descriptor {
                media_type: media_type.to_owned(),
                digest: Digest::of(&bytes),
                size: bytes.len() as u64,
                platform: None,
                annotations: Default::default(),
            };
            Ok(Selection::Subset { bytes, descriptor })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Manifest, OCI_INDEX};

    fn index() -> Vec<u8> {
        let d = |s: &str| Digest::of(s.as_bytes()).to_string();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d("amd"), "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d("arm"), "size": 2,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}, "annotations": {"k": "v"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d("att"), "size": 3,
                 "platform": {"os": "unknown", "architecture": "unknown"}},
            ]
        }))
        .unwrap()
    }

    fn run(specs: &[&str]) -> Result<Selection, String> {
        let bytes = index();
        let m = Manifest::parse(&bytes, None).unwrap();
        let specs: Vec<_> = specs
            .iter()
            .map(|s| PlatformSpec::parse(s).unwrap())
            .collect();
        select(&bytes, OCI_INDEX, m.children(), &specs)
    }

    #[test]
    fn parses_specs() {
        assert_eq!(
            PlatformSpec::parse("linux/arm64/v8")
                .unwrap()
                .variant
                .as_deref(),
            Some("v8")
        );
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(PlatformSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_platform_is_its_own_manifest() {
        let Selection::One(d) = run(&["linux/arm64"]).unwrap() else {
            panic!()
        };
        assert_eq!(d.size, 2);
        assert!(
            run(&["linux/arm64/v7"])
                .unwrap_err()
                .contains("linux/amd64, linux/arm64/v8, unknown/unknown")
        );
    }

    #[test]
    fn several_platforms_make_a_subset_index_keeping_entries_verbatim() {
        let Selection::Subset { bytes, descriptor } =
            run(&["linux/amd64", "linux/arm64/v8"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(descriptor.digest, Digest::of(&bytes));
        let m = Manifest::parse(&bytes, None).unwrap();
        assert_eq!(m.children().len(), 2);
        assert_eq!(m.children()[1].annotations["k"], "v");
        assert_eq!(
            crate::manifest::declared_media_type(&bytes).as_deref(),
            Some(OCI_INDEX)
        );
    }
}
