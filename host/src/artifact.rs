//! imo's own component as an OCI artifact, so that a disconnected site can have imo from its
//! registry: stored in the layout the CNCF TAG Runtime's Wasm OCI Artifact guide describes
//! (<https://tag-runtime.cncf.io/wgs/wasm/deliverables/wasm-oci-artifact/>), which wasm
//! tooling reads:
//!
//! - an OCI image manifest (`application/vnd.oci.image.manifest.v1+json`) whose config has
//!   the media type `application/vnd.wasm.config.v0+json`;
//! - one layer, `application/wasm`: the component, byte for byte;
//! - the config: `architecture` `wasm`, `os` `wasip2` (a component), `layerDigests` (the
//!   layer's digest), and `component` with the names of its world's `imports` and `exports`.
//!   No `created` time: the same component makes the same artifact, so pushing it again
//!   changes nothing.
//!
//! The transfer itself is imo's: the artifact is written as an `oci:` layout and pulled from
//! it into the registry (push), or pulled from the registry into a layout (pull), by the
//! component in its sandbox, every blob checked against its digest.

use crate::{Bundle, Error, Imo, Summary};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// The config media type that marks a Wasm artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The media type of its layer: a component or a module.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The largest component accepted from a registry.
const MAX_COMPONENT: u64 = 256 << 20;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    architecture: String,
    os: String,
    layer_digests: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    component: Option<World>,
}

#[derive(Serialize, Deserialize)]
struct World {
    exports: Vec<String>,
    imports: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    annotations: std::collections::BTreeMap<String, String>,
}

fn digest_of(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: digest_of(bytes),
        size: bytes.len() as u64,
    }
}

/// The artifact's manifest and config for `wasm`, a component whose world has `imports` and
/// `exports`.
pub fn artifact(wasm: &[u8], imports: &[String], exports: &[String]) -> (Vec<u8>, Vec<u8>) {
    let layer = descriptor(LAYER_MEDIA_TYPE, wasm);
    let config = Config {
        architecture: "wasm".into(),
        os: "wasip2".into(),
        layer_digests: vec![layer.digest.clone()],
        component: Some(World {
            exports: exports.to_vec(),
            imports: imports.to_vec(),
        }),
    };
    let config = serde_json::to_vec(&config).expect("a config serialises");
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.into(),
        config: descriptor(CONFIG_MEDIA_TYPE, &config),
        layers: vec![layer],
        annotations: [
            ("org.opencontainers.image.title", "imo.wasm"),
            (
                "org.opencontainers.image.version",
                env!("CARGO_PKG_VERSION"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    };
    let manifest = serde_json::to_vec(&manifest).expect("a manifest serialises");
    (manifest, config)
}

/// The digest and size of the component a manifest of this layout names, or why it is not
/// a Wasm component artifact.
pub fn component_layer(manifest: &[u8]) -> Result<(String, u64), String> {
    let m: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("its manifest is not an OCI image manifest: {e}"))?;
    if m.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(format!(
            "it is not a Wasm artifact: its config is {:?}, not {CONFIG_MEDIA_TYPE:?}",
            m.config.media_type
        ));
    }
    match &m.layers[..] {
        [l] if l.media_type == LAYER_MEDIA_TYPE => Ok((l.digest.clone(), l.size)),
        _ => Err(format!(
            "a Wasm artifact of imo has one layer, {LAYER_MEDIA_TYPE:?}; this one has {}",
            m.layers.len()
        )),
    }
}

/// Whether `wasm` starts as a component does (not a core module): `\0asm`, then the
/// component encoding's version and layer.
pub fn is_component(wasm: &[u8]) -> bool {
    wasm.starts_with(b"\0asm") && wasm.get(6..8) == Some(&[1, 0])
}

/// A directory only this process uses, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let name = format!(
            "imo-component-{}-{:016x}",
            std::process::id(),
            imo_guest::store::tempfile::random()
        );
        let dir = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn io(what: &Path, e: std::io::Error) -> Error {
    Error::Io(format!("{}: {e}", what.display()))
}

/// Writes an OCI layout holding one image, `manifest`, tagged `tag`, with `blobs`.
fn write_layout(dir: &Path, manifest: &[u8], blobs: &[&[u8]], tag: &str) -> Result<(), Error> {
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).map_err(|e| io(&blob_dir, e))?;
    for b in blobs.iter().chain([&manifest]) {
        let path = blob_dir.join(&digest_of(b)["sha256:".len()..]);
        std::fs::write(&path, b).map_err(|e| io(&path, e))?;
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": digest_of(manifest),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    for (name, text) in [
        ("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#.to_owned()),
        ("index.json", index.to_string()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// What to report of a pull piped into a push: the push's error when the pull's is only that
/// its archive could not be written (the push stopped reading), else the pull's.
fn first_cause(
    pulled: Result<Summary, Error>,
    pushed: Result<Summary, Error>,
) -> Result<Summary, Error> {
    match (pulled, pushed) {
        (Ok(_), pushed) => pushed,
        (Err(Error::Io(_)), Err(e)) => Err(e),
        (Err(e), _) => Err(e),
    }
}

impl Imo {
    /// Stores the component this crate embeds in `destination` (a registry reference, or an
    /// `oci:DIR[:TAG]` layout; with no tag, this crate's version) as a Wasm OCI artifact (see
    /// [`crate::artifact`]).
    pub async fn push_component(&self, destination: &str) -> Result<Summary, Error> {
        let wasm = crate::COMPONENT;
        let (imports, exports) = self.runtime.world();
        let (manifest, config) = artifact(wasm, &imports, &exports);
        let scratch = Scratch::new().map_err(|e| io(&std::env::temp_dir(), e))?;
        // Its tag where `destination` names none: the version of imo it is.
        let tag = env!("CARGO_PKG_VERSION");
        write_layout(&scratch.0, &manifest, &[wasm, &config], tag)?;
        let source = format!("oci:{}:{tag}", scratch.0.display());
        let bundle = Bundle::new("scratch", &source);
        let (pipe_in, pipe_out) = tokio::io::duplex(1 << 20);
        let (pulled, pushed) = tokio::join!(
            self.pull_bundle_to_writer(&bundle, pipe_in),
            self.push(pipe_out, destination)
        );
        first_cause(pulled, pushed)
    }

    /// Fetches the Wasm component artifact `reference` names (as
    /// [`push_component`](Imo::push_component) stores it, or any single-layer artifact of
    /// that layout), checked against its digests, and returns the component's bytes.
    pub async fn pull_component(&self, reference: &str) -> Result<Vec<u8>, Error> {
        let scratch = Scratch::new().map_err(|e| io(&std::env::temp_dir(), e))?;
        let layout = format!("oci:{}:component", scratch.0.display());
        let bundle = Bundle::new("scratch", reference);
        let (pipe_in, pipe_out) = tokio::io::duplex(1 << 20);
        let (pulled, pushed) = tokio::join!(
            self.pull_bundle_to_writer(&bundle, pipe_in),
            self.push(pipe_out, &layout)
        );
        let summary = first_cause(pulled, pushed)?;
        let blob = |digest: &str| {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            scratch.0.join("blobs/sha256").join(hex)
        };
        let manifest_path = blob(&summary.manifest_digest);
        let manifest = std::fs::read(&manifest_path).map_err(|e| io(&manifest_path, e))?;
        let not = |why: String| Error::InvalidManifest(format!("{reference}: {why}"));
        let (digest, size) = component_layer(&manifest).map_err(not)?;
        if size > MAX_COMPONENT {
            return Err(not(format!(
                "its component is {size} bytes, more than the {MAX_COMPONENT} imo accepts"
            )));
        }
        let path = blob(&digest);
        let wasm = std::fs::read(&path).map_err(|e| io(&path, e))?;
        if digest_of(&wasm) != digest {
            return Err(Error::DigestMismatch(format!(
                "{reference}: the component does not match its digest {digest}"
            )));
        }
        if !is_component(&wasm) {
            return Err(not("its layer is not a WebAssembly component".into()));
        }
        Ok(wasm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_artifact_follows_the_wasm_layout_and_is_the_same_each_time() {
        let wasm = b"\0asm\x0d\x00\x01\x00rest";
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (imports, exports) = (
            names(&["wasi:io/streams@0.2.12"]),
            names(&["wasi:cli/run@0.2.12"]),
        );
        let (manifest, config) = artifact(wasm, &imports, &exports);
        assert_eq!(
            (manifest.clone(), config.clone()),
            artifact(wasm, &imports, &exports)
        );
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.wasm.config.v0+json"
        );
        assert_eq!(m["config"]["digest"], digest_of(&config));
        assert_eq!(m["layers"][0]["mediaType"], "application/wasm");
        assert_eq!(m["layers"][0]["size"], wasm.len());
        let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(c["architecture"], "wasm");
        assert_eq!(c["os"], "wasip2");
        assert_eq!(c["layerDigests"][0], m["layers"][0]["digest"]);
        assert_eq!(c["component"]["exports"][0], "wasi:cli/run@0.2.12");
        assert_eq!(c["component"]["imports"][0], "wasi:io/streams@0.2.12");
        assert_eq!(
            component_layer(&manifest),
            Ok((digest_of(wasm), wasm.len() as u64))
        );
    }

    #[test]
    fn other_artifacts_and_modules_are_refused() {
        let (manifest, _) = artifact(b"\0asm", &[], &[]);
        let mut image: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        image["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
        let e = component_layer(&serde_json::to_vec(&image).unwrap()).unwrap_err();
        assert!(e.contains("not a Wasm artifact"), "{e}");
        let mut two: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let layer = two["layers"][0].clone();
        two["layers"].as_array_mut().unwrap().push(layer);
        let e = component_layer(&serde_json::to_vec(&two).unwrap()).unwrap_err();
        assert!(e.contains("has 2"), "{e}");
        assert!(is_component(b"\0asm\x0d\x00\x01\x00"));
        assert!(!is_component(b"\0asm\x01\x00\x00\x00"), "a core module");
        assert!(!is_component(b"\x7fELF\x02\x01\x01\x00"));
    }
}
