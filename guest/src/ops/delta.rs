//! Layer deltas in pull and push: which layers to try, against which base layers, whether a
//! delta is worth carrying, and how push turns one back into the very layer blob.
//!
//! Pull, per final image: its config gives each layer's `diff_id` and the platform; the base
//! images' layers of that platform are the sources, indexed once (each downloaded and
//! decompressed as a stream). Each layer the archive would carry is then read once: the
//! rebuilder analyses its compression (checking on the spot that it rebuilds the exact blob),
//! and its plain tar feeds the differ. The delta is carried only if it is under half the
//! layer; anything that goes wrong sends the layer whole, with the reason.
//!
//! Push: the delta blob's rebuild data is read, its op stream is applied to the source
//! layers (fetched from the destination, each checked against its digest), the plain tar is
//! checked against the `diff_id`, and the rebuilder's output streams into the upload, which
//! commits only if it hashes to the layer's digest.

use super::{LayerTravel, Reporter, short};
use crate::archive::LayerDelta;
use crate::delta::goflate;
use crate::delta::gzip::{self, Analysis, Rebuild, RebuildError};
use crate::delta::tar_delta::{Apply, Differ, SourceIndex};
use crate::delta::{self, MAX_SOURCES, TAR};
use crate::digest::Digest;
use crate::manifest::{Descriptor, MAX_MANIFEST_BYTES, Manifest, Platform};
use crate::plan::Fetched;
use crate::store::Source;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

/// A delta is carried only when it is smaller than the layer by this factor.
const WORTH: u64 = 2;
/// The most delta bytes one pull holds in memory (deltas are written after the archive's
/// head, which must list their sizes and digests).
pub const MEMORY_BUDGET: u64 = 64 << 20;

/// How a layer is compressed, as far as deltas go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Tar,
}

impl Encoding {
    pub fn of(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Encoding::Gzip),
            "application/vnd.oci.image.layer.v1.tar" => Some(Encoding::Tar),
            _ => None,
        }
    }

    /// A layer blob's uncompressed tar.
    fn plain<'a>(self, blob: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
        match self {
            Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
            Encoding::Tar => blob,
        }
    }
}

/// The deltas a pull carries: each with its blob, and how every layer considered travelled.
#[derive(Default)]
pub struct Planned {
    pub deltas: Vec<(LayerDelta, Vec<u8>)>,
    pub travel: Vec<LayerTravel>,
}

/// One image manifest of a base, with where its blobs come from.
pub struct BaseImage<'a> {
    pub source: &'a dyn Source,
    /// Its platform as its index lists it; `None` for a base that is one image.
    pub platform: Option<Platform>,
    pub layers: Vec<Descriptor>,
}

/// The base images of `bases` (each a source and its manifests, top first).
pub fn base_images<'a>(bases: &[(&'a dyn Source, &[Fetched])]) -> Vec<BaseImage<'a>> {
    let mut images = Vec::new();
    for (source, manifests) in bases {
        for m in manifests.iter() {
            if let Manifest::Image { layers, .. } = &m.manifest {
                images.push(BaseImage {
                    source: *source,
                    platform: m.descriptor.platform.clone(),
                    layers: layers.clone(),
                });
            }
        }
    }
    images
}

/// What a config says that deltas need.
#[derive(Debug, Default, PartialEq, Eq)]
struct ConfigFacts {
    platform: Option<Platform>,
    diff_ids: Vec<Option<Digest>>,
}

fn config_facts(bytes: &[u8]) -> ConfigFacts {
    #[derive(serde::Deserialize)]
    struct Config {
        architecture: Option<String>,
        os: Option<String>,
        variant: Option<String>,
        rootfs: Option<RootFs>,
    }
    #[derive(serde::Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    let Ok(c) = serde_json::from_slice::<Config>(bytes) else {
        return ConfigFacts::default();
    };
    let platform = match (c.architecture, c.os) {
        (Some(architecture), Some(os)) => Some(Platform {
            architecture,
            os,
            variant: c.variant,
        }),
        _ => None,
    };
    let diff_ids = (c.rootfs.map(|r| r.diff_ids).unwrap_or_default())
        .iter()
        .map(|d| Digest::parse(d).ok())
        .collect();
    ConfigFacts { platform, diff_ids }
}

/// Whether a base image of platform `base` (as its index lists it) may hold what a final
/// image of platform `image` (as its config says) came from.
fn same_platform(image: Option<&Platform>, base: Option<&Platform>) -> bool {
    match (image, base) {
        (Some(i), Some(b)) => {
            i.os == b.os
                && i.architecture == b.architecture
                && (i.variant.is_none() || b.variant.is_none() || i.variant == b.variant)
        }
        _ => true,
    }
}

/// Tries a delta for every layer of `images` (each a final image manifest and the source of
/// its blobs) that the archive carries (`carried`), against the layers of `bases`.
pub fn plan(
    images: &[(&dyn Source, &Fetched)],
    bases: &[BaseImage<'_>],
    carried: &BTreeSet<Digest>,
    report: &dyn Reporter,
) -> Planned {
    let mut planned = Planned::default();
    let mut done = BTreeSet::new();
    let mut budget = MEMORY_BUDGET;
    for (source, m) in images {
        let Manifest::Image { config, layers } = &m.manifest else {
            continue;
        };
        let todo: Vec<(usize, &Descriptor)> = (layers.iter().enumerate())
            .filter(|(_, l)| carried.contains(&l.digest) && done.insert(l.digest.clone()))
            .collect();
        if todo.is_empty() {
            continue;
        }
        let whole = |travel: &mut Vec<LayerTravel>, l: &Descriptor, why: String| {
            report.line(&format!("layer {} goes whole: {why}", short(&l.digest)));
            travel.push(LayerTravel {
                layer: l.digest.to_string(),
                size: l.size,
                delta_size: 0,
                whole_because: why,
            });
        };
        let facts = read_small(*source, config)
            .map_or_else(|_| ConfigFacts::default(), |b| config_facts(&b));
        let sources = sources_for(facts.platform.as_ref(), bases);
        if sources.is_empty() {
            for (_, l) in todo {
                whole(
                    &mut planned.travel,
                    l,
                    "no base layer of its platform (gzip or tar) to take a delta against".into(),
                );
            }
            continue;
        }
        report.line(&format!(
            "indexing {} base layer(s) for the deltas of {}",
            sources.len(),
            short(&m.descriptor.digest)
        ));
        let index = match index(&sources) {
            Ok(index) => index,
            Err(why) => {
                for (_, l) in todo {
                    whole(&mut planned.travel, l, why.clone());
                }
                continue;
            }
        };
        let source_list: Vec<Descriptor> = sources.iter().map(|(_, d, _)| (*d).clone()).collect();
        for (i, layer) in todo {
            let Some(encoding) = Encoding::of(&layer.media_type) else {
                whole(
                    &mut planned.travel,
                    layer,
                    format!("no rebuilder for its media type {}", layer.media_type),
                );
                continue;
            };
            if budget == 0 {
                let why =
                    format!("this pull's deltas already take the {MEMORY_BUDGET} bytes it holds");
                whole(&mut planned.travel, layer, why);
                continue;
            }
            let max = (layer.size / WORTH).min(budget);
            let diff_id = facts.diff_ids.get(i).cloned().flatten();
            match make(*source, layer, encoding, diff_id.as_ref(), &index, max) {
                Ok((diff_id, blob, rebuilder)) => {
                    let size = blob.len() as u64;
                    budget -= size.min(budget);
                    report.line(&format!(
                        "layer {}: a delta of {size} bytes for {} ({:.2} %)",
                        short(&layer.digest),
                        layer.size,
                        size as f64 * 100.0 / layer.size.max(1) as f64
                    ));
                    planned.travel.push(LayerTravel {
                        layer: layer.digest.to_string(),
                        size: layer.size,
                        delta_size: size,
                        whole_because: String::new(),
                    });
                    let entry = LayerDelta {
                        layer: layer.clone(),
                        delta: Descriptor {
                            media_type: delta::MEDIA_TYPE.into(),
                            digest: Digest::of(&blob),
                            size,
                            platform: None,
                            annotations: BTreeMap::new(),
                        },
                        diff_id,
                        sources: source_list.clone(),
                        rebuilder: rebuilder.into(),
                    };
                    planned.deltas.push((entry, blob));
                }
                Err(why) => whole(&mut planned.travel, layer, why),
            }
        }
    }
    planned
}

/// The base layers a delta of an image of `platform` may copy from, each with its source
/// and encoding: every gzip or tar layer of the base images of that platform, once.
fn sources_for<'a, 'b>(
    platform: Option<&Platform>,
    bases: &'b [BaseImage<'a>],
) -> Vec<(&'a dyn Source, &'b Descriptor, Encoding)> {
    let mut seen = BTreeSet::new();
    let mut sources = Vec::new();
    for b in bases
        .iter()
        .filter(|b| same_platform(platform, b.platform.as_ref()))
    {
        for l in &b.layers {
            let Some(e) = Encoding::of(&l.media_type) else {
                continue;
            };
            if sources.len() < MAX_SOURCES && seen.insert(&l.digest) {
                sources.push((b.source, l, e));
            }
        }
    }
    sources
}

fn index(sources: &[(&dyn Source, &Descriptor, Encoding)]) -> Result<SourceIndex, String> {
    let mut index = SourceIndex::new();
    for (i, (source, d, encoding)) in sources.iter().enumerate() {
        let blob = source
            .open_blob(d)
            .map_err(|e| format!("base layer {}: {e}", short(&d.digest)))?;
        let mut tar = encoding.plain(blob);
        index
            .add(i as u16, &mut tar)
            .map_err(|e| format!("base layer {}: {e}", short(&d.digest)))?;
    }
    Ok(index)
}

/// A small blob (a config) read whole.
fn read_small(source: &dyn Source, d: &Descriptor) -> Result<Vec<u8>, String> {
    if d.size > MAX_MANIFEST_BYTES {
        return Err(format!(
            "config {} is larger than {MAX_MANIFEST_BYTES} bytes",
            d.digest
        ));
    }
    let mut bytes = Vec::new();
    source
        .open_blob(d)
        .map_err(|e| e.to_string())?
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Writes to both.
struct Tee<'a, 'i> {
    differ: &'a mut Differ<'i>,
    hasher: &'a mut Sha256,
}

impl Write for Tee<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.differ.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.differ.flush()
    }
}

/// A gzip rebuilder's analysis: the blob read, its tar written to `plain`.
type Analyze = fn(&mut dyn Read, &mut dyn Write, u64) -> Result<Analysis, RebuildError>;

/// The rebuilders of an encoding, in the order they are tried; `None` where the tar is the
/// blob. For gzip, Go's encoder first (it needs no correction data, and tells a blob it did
/// not write within its first block), then preflate-rs's model of the zlib family.
const TAR_REBUILDERS: [(&str, Option<Analyze>); 1] = [(TAR, None)];
const GZIP_REBUILDERS: [(&str, Option<Analyze>); 2] = [
    (goflate::REBUILDER, Some(goflate::analyze)),
    (gzip::REBUILDER, Some(gzip::analyze)),
];

/// The delta of one layer at most `max` bytes long, its `diff_id` and its rebuilder; or why
/// it goes whole. A gzip layer is read again for each rebuilder tried.
fn make(
    source: &dyn Source,
    layer: &Descriptor,
    encoding: Encoding,
    config_diff_id: Option<&Digest>,
    index: &SourceIndex,
    max: u64,
) -> Result<(Digest, Vec<u8>, &'static str), String> {
    let rebuilders: &[(&'static str, Option<Analyze>)] = match encoding {
        Encoding::Tar => &TAR_REBUILDERS,
        Encoding::Gzip => &GZIP_REBUILDERS,
    };
    let mut why = String::new();
    for &(rebuilder, analyze) in rebuilders {
        let mut blob = source.open_blob(layer).map_err(|e| e.to_string())?;
        let mut differ = Differ::new(index, max);
        let mut hasher = Sha256::new();
        let mut tee = Tee {
            differ: &mut differ,
            hasher: &mut hasher,
        };
        let rebuild = match analyze {
            Some(analyze) => match analyze(&mut blob, &mut tee, max) {
                Ok(a) if Digest::from_sha256(a.compressed_sha256) == layer.digest => a.data,
                Ok(_) => return Err("the blob read is not the layer its digest names".into()),
                // Not this encoder's: the next rebuilder may know it.
                Err(e @ (RebuildError::NotReproducible | RebuildError::Unsupported(_))) => {
                    why = first_line(&e.to_string());
                    continue;
                }
                Err(e) => return Err(first_line(&e.to_string())),
            },
            None => {
                io::copy(&mut blob, &mut tee).map_err(|e| e.to_string())?;
                vec![]
            }
        };
        let encoded = differ.finish().map_err(|e| e.to_string())?;
        return finish(layer, config_diff_id, hasher, &rebuild, &encoded.ops, max)
            .map(|(diff_id, blob)| (diff_id, blob, rebuilder));
    }
    Err(why)
}

/// A reason to print on one line: a rebuilder's error may carry its library's trace.
fn first_line(why: &str) -> String {
    let line = why.lines().next().unwrap_or_default();
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// Checks a made delta against the config's `diff_id` and the size it may have.
fn finish(
    layer: &Descriptor,
    config_diff_id: Option<&Digest>,
    hasher: Sha256,
    rebuild: &[u8],
    ops: &[u8],
    max: u64,
) -> Result<(Digest, Vec<u8>), String> {
    let diff_id = Digest::from_hasher(hasher);
    if let Some(expected) = config_diff_id
        && *expected != diff_id
    {
        return Err(format!(
            "its tar hashes to {diff_id}, not to the diff_id {expected} its config names"
        ));
    }
    let blob = delta::encode(rebuild, ops);
    if blob.len() as u64 > max {
        return Err(format!(
            "a delta would take {} of its {} bytes",
            blob.len(),
            layer.size
        ));
    }
    Ok((diff_id, blob))
}

/// Checks the plain tar a delta yields against the layer's `diff_id` at its end, failing
/// before the end is handed on: the rebuilder then never completes a layer from wrong bytes.
struct DiffIdCheck<'a> {
    inner: Box<dyn Read + 'a>,
    hasher: Sha256,
    expected: Digest,
    done: bool,
}

impl Read for DiffIdCheck<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if n == 0 {
            self.done = true;
            let found = Digest::from_hasher(std::mem::take(&mut self.hasher));
            if found != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the tar the delta yields hashes to {found}, not to the layer's \
                         diff_id {}",
                        self.expected
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// The layer `d` rebuilds, as a stream: `blob` is the delta blob's bytes (read once),
/// `open(source)` a source layer's blob, checked against its digest.
pub fn rebuilt<'a>(
    d: &LayerDelta,
    mut blob: Box<dyn Read + 'a>,
    mut open: impl FnMut(&Descriptor) -> crate::error::Result<Box<dyn Read + 'a>> + 'a,
) -> Result<Box<dyn Read + 'a>, String> {
    let data = delta::read_head(&mut blob)?;
    let sources = d.sources.clone();
    let encodings = sources
        .iter()
        .map(|s| {
            Encoding::of(&s.media_type)
                .ok_or_else(|| format!("source layer {} is neither gzip nor tar", s.digest))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let open = Box::new(move |i: u16| -> io::Result<Box<dyn Read + 'a>> {
        let s = &sources[usize::from(i)];
        let blob = open(s).map_err(|e| io::Error::other(format!("{}: {e}", s.digest)))?;
        Ok(encodings[usize::from(i)].plain(blob))
    });
    let count = u16::try_from(d.sources.len()).map_err(|_| "too many source layers")?;
    let tar = DiffIdCheck {
        inner: Box::new(Apply::new(blob, count, open)),
        hasher: Sha256::new(),
        expected: d.diff_id.clone(),
        done: false,
    };
    match d.rebuilder.as_str() {
        TAR if data.is_empty() => Ok(Box::new(tar)),
        gzip::REBUILDER => Ok(Box::new(
            Rebuild::new(&data, Box::new(tar)).map_err(|e| e.to_string())?,
        )),
        goflate::REBUILDER => Ok(Box::new(
            goflate::Rebuild::new(&data, Box::new(tar)).map_err(|e| e.to_string())?,
        )),
        other => Err(format!(
            "it names rebuilder {other:?}, which this imo lacks: push it with a newer imo"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_gives_platform_and_diff_ids() {
        let d = Digest::of(b"tar");
        let json = format!(
            r#"{{"architecture":"arm64","os":"linux","variant":"v8",
                "rootfs":{{"type":"layers","diff_ids":["{d}","nonsense"]}}}}"#
        );
        let facts = config_facts(json.as_bytes());
        let p = facts.platform.unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "arm64"));
        assert_eq!(facts.diff_ids, [Some(d), None]);
        assert_eq!(config_facts(b"not json"), ConfigFacts::default());
    }

    #[test]
    fn platforms_match_by_os_architecture_and_any_variant() {
        let p = |os: &str, arch: &str, v: Option<&str>| Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: v.map(Into::into),
        };
        let arm = p("linux", "arm64", Some("v8"));
        assert!(same_platform(Some(&arm), Some(&p("linux", "arm64", None))));
        assert!(!same_platform(
            Some(&arm),
            Some(&p("linux", "arm64", Some("v7")))
        ));
        assert!(!same_platform(Some(&arm), Some(&p("linux", "amd64", None))));
        assert!(same_platform(None, Some(&arm)));
        assert!(same_platform(Some(&arm), None));
    }

    #[test]
    fn encodings_are_known_by_media_type() {
        assert_eq!(
            Encoding::of("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Encoding::Gzip)
        );
        assert_eq!(
            Encoding::of("application/vnd.oci.image.layer.v1.tar"),
            Some(Encoding::Tar)
        );
        assert_eq!(
            Encoding::of("application/vnd.oci.image.layer.v1.tar+zstd"),
            None
        );
    }
}
