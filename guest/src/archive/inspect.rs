//! Looking at an archive without any registry: [`inspect`] describes its head (`imo ls`),
//! [`verify`] reads it to the end and checks every blob against its digest (`imo verify`).

use super::format::*;
use super::read::{Opened, open};
use crate::digest::{Digest, Verifier};
use crate::manifest::Manifest;
use crate::plan::Fetched;
use serde::{Deserialize, Serialize};
use std::io::Read;

/// What an archive holds, from its head alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    /// The `imo.json` format version.
    pub format_version: u32,
    pub images: Vec<ImageInfo>,
    /// The base images the difference was taken against; empty for `scratch`.
    pub bases: Vec<String>,
    /// The sources of the inventories the difference was taken against.
    pub inventories: Vec<String>,
    /// Manifests carried (every image's, its children's, and attached artifacts').
    pub manifests: u32,
    /// Blobs carried, and their total size.
    pub carried: Count,
    /// Blobs left to the destination, and their total size.
    pub omitted: Count,
    /// What the destination must already hold: each omitted blob and each source layer of
    /// a delta, and where it came from.
    pub must_hold: Vec<Held>,
    /// Layers carried as deltas, rebuilt at push.
    #[serde(default)]
    pub deltas: Vec<DeltaInfo>,
}

/// A layer an archive carries as a delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaInfo {
    pub layer: Digest,
    pub size: u64,
    /// The delta's size.
    pub delta_size: u64,
    /// What rebuilds the compressed layer from its tar.
    pub rebuilder: String,
    /// The layers the destination holds that the delta copies from.
    pub sources: Vec<Digest>,
}

/// One image of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The final reference it was pulled from.
    pub reference: String,
    /// The tag of that reference, if it has one.
    pub tag: Option<String>,
    /// Its top-level manifest.
    pub manifest: Digest,
    /// `os/arch[/variant]` of each child of an index; empty for a single-platform image.
    pub platforms: Vec<String>,
    /// Signatures, attestations and other artifacts that travel with it.
    pub attached: Vec<Attached>,
}

/// A number of blobs and their total size in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub blobs: u32,
    pub bytes: u64,
}

/// A blob the archive leaves out, which the destination must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub digest: Digest,
    pub size: u64,
    /// Where `imo.json` says it came from: the repositories an inventory placed it in
    /// (`inventory: REPO`), else the bases (`base: REF`).
    pub from: Vec<String>,
}

/// The result of [`verify`]: what the archive holds (when its head could be read), what was
/// checked, and every problem found; good when `problems` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub inspection: Option<Inspection>,
    /// Carried blobs read to their end and hashed, and their total size.
    pub checked: Count,
    /// Bytes of archive read.
    pub archive_bytes: u64,
    /// Each problem, naming the blob or entry concerned.
    pub problems: Vec<String>,
}

impl Verification {
    pub fn is_good(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report for people: what was checked, what the destination must hold, and each
    /// problem on a line of its own.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(i) = &self.inspection {
            let images: Vec<&str> = i.images.iter().map(|i| i.reference.as_str()).collect();
            out += &format!(
                "archive of {}: {} manifest(s); {} of {} carried blob(s) checked, {} bytes\n",
                images.join(", "),
                i.manifests,
                self.checked.blobs,
                i.carried.blobs,
                self.checked.bytes
            );
            out += &must_hold_text(i);
        }
        if self.is_good() {
            out += "good: every blob matches its digest and every reference is accounted for\n";
        } else {
            for p in &self.problems {
                out += &format!("problem: {p}\n");
            }
        }
        out
    }
}

fn must_hold_text(i: &Inspection) -> String {
    let total = count(i.must_hold.iter().map(|h| h.size));
    let mut out = format!(
        "the destination must already hold {} blob(s), {} bytes:\n",
        total.blobs, total.bytes
    );
    for h in &i.must_hold {
        let from = if h.from.is_empty() {
            String::new()
        } else {
            format!("  ({})", h.from.join(", "))
        };
        out += &format!("  {} {:>12}{from}\n", h.digest, h.size);
    }
    out
}

impl Inspection {
    /// The report for people, as a table of images then the totals.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<40} {:<16} {:<24} {:<9} MANIFEST\n",
            "IMAGE", "TAG", "PLATFORMS", "ATTACHED"
        );
        for i in &self.images {
            let platforms = if i.platforms.is_empty() {
                "-".to_owned()
            } else {
                i.platforms.join(",")
            };
            out += &format!(
                "{:<40} {:<16} {:<24} {:<9} {}\n",
                i.reference,
                i.tag.as_deref().unwrap_or("-"),
                platforms,
                i.attached.len(),
                i.manifest
            );
            for a in &i.attached {
                out += &format!(
                    "  attached {} {}\n",
                    a.manifest,
                    a.tag.as_deref().unwrap_or("(by digest)")
                );
            }
        }
        let against: Vec<String> = self
            .bases
            .iter()
            .cloned()
            .chain(self.inventories.iter().map(|i| format!("inventory {i}")))
            .collect();
        out += &format!(
            "against: {}\ncarried: {} manifest(s); {} blob(s), {} bytes\nleft to the \
             destination: {} blob(s), {} bytes\n",
            if against.is_empty() {
                SCRATCH.to_owned()
            } else {
                against.join(", ")
            },
            self.manifests,
            self.carried.blobs,
            self.carried.bytes,
            self.omitted.blobs,
            self.omitted.bytes
        );
        for d in &self.deltas {
            out += &format!(
                "layer {} ({} bytes) carried as a delta of {} bytes, rebuilt by {}\n",
                d.layer, d.size, d.delta_size, d.rebuilder
            );
        }
        out + &must_hold_text(self)
    }
}

/// Describes the archive whose head `input` starts with; reads nothing past the manifests.
pub fn inspect<R: Read>(input: R) -> Result<Inspection, String> {
    let opened = open(input)?;
    Ok(describe(&opened.meta, &opened.manifests))
}

/// The number of blobs of these sizes, and their total.
fn count(sizes: impl Iterator<Item = u64>) -> Count {
    sizes.fold(Count::default(), |c, size| Count {
        blobs: c.blobs + 1,
        bytes: c.bytes.saturating_add(size),
    })
}

/// The tag of a registry reference or an `oci:DIR:TAG` layout reference.
fn tag_of(reference: &str) -> Option<String> {
    use crate::reference::Location;
    match Location::parse(reference).ok()? {
        Location::Registry(r) => r.tag,
        Location::OciDir { tag, .. } => tag,
    }
}

/// The report of an opened archive's head.
pub fn describe(meta: &Metadata, manifests: &[Fetched]) -> Inspection {
    let images = meta
        .images
        .iter()
        .map(|image| {
            let platforms = manifests
                .iter()
                .find(|f| f.descriptor.digest == image.manifest)
                .map(|f| match &f.manifest {
                    Manifest::Index { manifests } => manifests
                        .iter()
                        .filter_map(|c| c.platform.as_ref())
                        .map(|p| match &p.variant {
                            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                            None => format!("{}/{}", p.os, p.architecture),
                        })
                        .collect(),
                    Manifest::Image { .. } => vec![],
                })
                .unwrap_or_default();
            ImageInfo {
                reference: image.reference.clone(),
                tag: tag_of(&image.reference),
                manifest: image.manifest.clone(),
                platforms,
                attached: image.attached.clone(),
            }
        })
        .collect();
    let bases: Vec<String> = meta.bases.iter().map(|b| b.reference.clone()).collect();
    let mut must_hold: Vec<Held> = meta
        .omitted
        .iter()
        .map(|d| {
            let from = match meta.held_in.get(&d.digest) {
                Some(repos) if !repos.is_empty() => {
                    repos.iter().map(|r| format!("inventory: {r}")).collect()
                }
                _ => bases.iter().map(|b| format!("base: {b}")).collect(),
            };
            Held {
                digest: d.digest.clone(),
                size: d.size,
                from,
            }
        })
        .collect();
    // A delta's sources are the bases' layers, which the final image may not reference.
    for delta in &meta.deltas {
        for s in &delta.sources {
            let from = format!("source of the delta of {}", delta.layer.digest);
            match must_hold.iter_mut().find(|h| h.digest == s.digest) {
                Some(h) => h.from.push(from),
                None => must_hold.push(Held {
                    digest: s.digest.clone(),
                    size: s.size,
                    from: bases
                        .iter()
                        .map(|b| format!("base: {b}"))
                        .chain([from])
                        .collect(),
                }),
            }
        }
    }
    let deltas = (meta.deltas.iter())
        .map(|d| DeltaInfo {
            layer: d.layer.digest.clone(),
            size: d.layer.size,
            delta_size: d.delta.size,
            rebuilder: d.rebuilder.clone(),
            sources: d.sources.iter().map(|s| s.digest.clone()).collect(),
        })
        .collect();
    Inspection {
        format_version: meta.imo_archive_version,
        images,
        bases,
        inventories: meta.inventories.clone(),
        manifests: meta.manifests.len() as u32,
        carried: count(meta.blobs.iter().map(|d| d.size)),
        omitted: count(meta.omitted.iter().map(|d| d.size)),
        must_hold,
        deltas,
    }
}

/// Reads the whole archive, hashing each carried blob as it streams past (never holding
/// one), and collects every problem instead of stopping at the first that leaves the
/// reader in place: a blob whose content does not match its digest, blobs missing at the
/// end. A damaged head or a cut stream ends the walk, as nothing after it can be located.
pub fn verify<R: Read>(input: R) -> Verification {
    let mut v = Verification {
        inspection: None,
        checked: Count::default(),
        archive_bytes: 0,
        problems: vec![],
    };
    let mut opened = match open(input) {
        Ok(o) => o,
        Err(e) => {
            v.problems.push(e);
            return v;
        }
    };
    v.inspection = Some(describe(&opened.meta, &opened.manifests));
    if let Err(e) = walk(&mut opened, &mut v) {
        v.problems.push(e);
    }
    v.archive_bytes = opened.offset();
    v
}

fn walk<R: Read>(opened: &mut Opened<R>, v: &mut Verification) -> Result<(), String> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let d = match opened.next_blob() {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(()),
            // The tar ended cleanly with blobs still promised: name each one.
            Err(_) if opened.at_end() => {
                for d in opened.pending() {
                    v.problems.push(format!(
                        "blob {} ({} bytes) is missing: imo.json lists it but the archive \
                         does not carry it",
                        d.digest, d.size
                    ));
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut check = Verifier::new(&d.digest, d.size);
        loop {
            let n = opened.read(&mut buf)?;
            if n == 0 {
                break;
            }
            check
                .update(&buf[..n])
                .map_err(|m| format!("blob {}: {m}", d.digest))?;
        }
        match check.finish() {
            Ok(()) => {
                v.checked.blobs += 1;
                v.checked.bytes += d.size;
            }
            Err(m) => v.problems.push(format!("blob {}: {m}", d.digest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::{rewritten, sample};

    #[test]
    fn inspect_describes_images_counts_and_what_the_destination_must_hold() {
        let (bytes, meta) = sample();
        let i = inspect(&bytes[..]).unwrap();
        assert_eq!(i.images.len(), 1);
        assert_eq!(i.images[0].reference, "r.io/app:v2");
        assert_eq!(i.images[0].tag.as_deref(), Some("v2"));
        assert_eq!(tag_of("oci:/srv/build:v3").as_deref(), Some("v3"));
        assert_eq!(
            tag_of(&("r.io/app@sha256:".to_owned() + &"a".repeat(64))),
            None
        );
        assert!(i.images[0].platforms.is_empty());
        assert_eq!(i.bases, ["r.io/app:v1"]);
        assert_eq!(i.manifests, 1);
        assert_eq!(
            i.carried,
            Count {
                blobs: 2,
                bytes: 7 + 9
            }
        );
        assert_eq!(i.omitted, Count { blobs: 1, bytes: 9 });
        assert_eq!(i.must_hold.len(), 1);
        assert_eq!(i.must_hold[0].digest, meta.omitted[0].digest);
        assert_eq!(i.must_hold[0].from, ["base: r.io/app:v1"]);
        // It round-trips as the JSON the component hands the host.
        let json = serde_json::to_string(&i).unwrap();
        assert_eq!(serde_json::from_str::<Inspection>(&json).unwrap(), i);
    }

    #[test]
    fn a_delta_and_its_sources_are_described() {
        let (bytes, mut meta) = sample();
        let manifests = open(&bytes[..]).unwrap().manifests;
        let layer = meta.blobs.pop().unwrap();
        let source = crate::manifest::Descriptor {
            digest: Digest::of(b"base layer"),
            size: 10,
            ..layer.clone()
        };
        let delta = crate::manifest::Descriptor {
            digest: Digest::of(b"delta"),
            size: 5,
            ..layer.clone()
        };
        meta.blobs.push(delta.clone());
        meta.deltas.push(LayerDelta {
            layer,
            delta,
            diff_id: Digest::of(b"tar"),
            sources: vec![source.clone(), meta.omitted[0].clone()],
            rebuilder: "tar".into(),
        });
        let i = describe(&meta, &manifests);
        assert_eq!(i.deltas.len(), 1);
        assert_eq!((i.deltas[0].size, i.deltas[0].delta_size), (9, 5));
        // The omitted layer is a source too; the base layer the image lacks is added.
        assert_eq!(i.must_hold.len(), 2);
        assert!(
            i.must_hold[0]
                .from
                .iter()
                .any(|f| f.starts_with("source of"))
        );
        assert_eq!(i.must_hold[1].digest, source.digest);
        let table = i.table();
        assert!(table.contains("carried as a delta of 5 bytes"), "{table}");
        assert!(
            table.contains("must already hold 2 blob(s), 19 bytes"),
            "{table}"
        );
    }

    #[test]
    fn verify_passes_a_good_archive_and_checks_every_blob() {
        let (bytes, _) = sample();
        let v = verify(&bytes[..]);
        assert!(v.is_good(), "{:?}", v.problems);
        assert_eq!(
            v.checked,
            Count {
                blobs: 2,
                bytes: 16
            }
        );
        assert_eq!(v.archive_bytes, bytes.len() as u64);
        let text = v.text();
        assert!(text.contains("2 of 2 carried blob(s) checked"), "{text}");
        assert!(text.contains("base: r.io/app:v1"), "{text}");
        assert!(text.contains("good:"), "{text}");
        let i = v.inspection.unwrap();
        assert_eq!(i.must_hold.len(), 1);
        let table = i.table();
        assert!(table.contains("r.io/app:v2"), "{table}");
        assert!(
            table.contains("left to the destination: 1 blob(s), 9 bytes"),
            "{table}"
        );
    }

    #[test]
    fn verify_names_a_flipped_byte_a_missing_blob_and_a_cut_end() {
        let (_, meta) = sample();
        let (config, layer) = (&meta.blobs[0].digest, &meta.blobs[1].digest);
        // Entries: layout, imo.json, index.json, manifest, config, layer.
        let flipped = rewritten(&|e| e[5].1[0] ^= 1);
        let v = verify(&flipped[..]);
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert!(v.problems[0].contains(&format!("blob {layer}: content hashes to")));
        // Both blobs flipped: both named, the walk goes on after the first.
        let both = rewritten(&|e| {
            e[4].1[0] ^= 1;
            e[5].1[0] ^= 1;
        });
        assert_eq!(verify(&both[..]).problems.len(), 2);

        let missing = rewritten(&|e| {
            e.remove(4);
        });
        let v = verify(&missing[..]);
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert!(v.problems[0].contains(&format!("blob {config} (7 bytes) is missing")));

        let good = rewritten(&|_| {});
        let cut = &good[..good.len() - 1024 - 600];
        let v = verify(cut);
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert!(
            v.problems[0].contains("the archive ends"),
            "{:?}",
            v.problems
        );
        assert!(v.problems[0].contains("truncated"), "{:?}", v.problems);

        let v = verify(&b"not a tar"[..]);
        assert!(v.inspection.is_none());
        assert_eq!(v.problems.len(), 1);
    }
}
