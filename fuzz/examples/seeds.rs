//! Writes the seed inputs of the fuzz targets: small valid imo archives built with the
//! guest's own tar writer and archive code, manifests and indexes of the shapes registries
//! serve, references, and `WWW-Authenticate` headers and token answers in the styles of the
//! registries imo talks to.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds [-- DIR]` (DIR defaults to
//! fuzz/corpus); it adds `seed-*` files to DIR/<target>/, replacing earlier ones.

use imo_guest::digest::Digest;
use imo_guest::archive;
use imo_guest::manifest::{DOCKER_LIST, DOCKER_MANIFEST, Descriptor, OCI_INDEX, OCI_MANIFEST};
use imo_guest::tar;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

fn main() {
    let root: PathBuf = std::env::args_os()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut manifests = Vec::new();
    let archives = archives(&mut manifests);
    for (name, bytes) in &archives {
        check_archive(name, bytes);
    }
    write(&root.join("archive"), &archives);
    manifests.extend(other_manifests());
    write(&root.join("manifest"), &manifests);
    write(&root.join("reference"), &as_bytes(references()));
    write(&root.join("www_authenticate"), &as_bytes(auth_answers()));
}

type Seeds = Vec<(String, Vec<u8>)>;

/// The imo archives among the seeds must open and walk to the end: a seed the reader
/// refuses at once would teach the fuzzer little.
fn check_archive(name: &str, bytes: &[u8]) {
    if name == "plain-tar" {
        return;
    }
    let walk = || -> Result<usize, String> {
        let mut o = archive::open(bytes)?;
        let mut buf = [0u8; 4096];
        let mut n = 0;
        while o.next_blob()?.is_some() {
            while o.read(&mut buf)? > 0 {}
            n += 1;
        }
        Ok(n)
    };
    match walk() {
        Ok(n) => println!("archive seed {name}: {} bytes, {n} blobs", bytes.len()),
        Err(e) => panic!("archive seed {name} does not read back: {e}"),
    }
}

fn write(dir: &Path, seeds: &Seeds) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}

fn as_bytes(list: Vec<(&str, String)>) -> Seeds {
    list.into_iter()
        .map(|(n, s)| (n.to_owned(), s.into_bytes()))
        .collect()
}

fn desc(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        platform: None,
        annotations: Default::default(),
    }
}

/// An image manifest and the blobs it names.
struct Image {
    media_type: &'static str,
    bytes: Vec<u8>,
    config: (Descriptor, Vec<u8>),
    layers: Vec<(Descriptor, Vec<u8>)>,
}

fn image(docker: bool, config: &str, layers: &[&[u8]]) -> Image {
    let (mt, ct, lt) = if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)
    } else {
        (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER)
    };
    let config = config.as_bytes().to_vec();
    let config = (desc(ct, &config), config);
    let layers: Vec<_> = layers.iter().map(|l| (desc(lt, l), l.to_vec())).collect();
    let bytes = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": config.0,
        "layers": layers.iter().map(|l| &l.0).collect::<Vec<_>>(),
    }))
    .unwrap();
    Image {
        media_type: mt,
        bytes,
        config,
        layers,
    }
}

/// How an archive's entries are named.
#[derive(Clone, Copy)]
enum Style {
    Plain,
    /// `./`-prefixed names and directory entries, as other tar writers make them.
    DotSlash,
}

/// `imo.json`, written here as JSON so the seeds do not follow the guest's structs: format
/// 2, or format 1 (one image, one base), which imo still reads.
struct Meta {
    version: u32,
    images: Vec<MetaImage>,
    /// (reference, digest) of the bases; none for scratch.
    bases: Vec<(String, Option<Digest>)>,
    inventories: Vec<String>,
    manifests: Vec<Descriptor>,
    blobs: Vec<Descriptor>,
    omitted: Vec<Descriptor>,
    held_in: BTreeMap<Digest, Vec<String>>,
}

struct MetaImage {
    reference: String,
    manifest: Digest,
    /// (tag, manifest) of artifacts travelling with the image.
    attached: Vec<(Option<String>, Digest)>,
}

impl Meta {
    fn json(&self) -> Vec<u8> {
        let attached = |i: &MetaImage| -> Vec<serde_json::Value> {
            i.attached
                .iter()
                .map(|(tag, m)| json!({"tag": tag, "manifest": m}))
                .collect()
        };
        let mut v = if self.version == 1 {
            let (base, base_digest) = self
                .bases
                .first()
                .cloned()
                .unwrap_or_else(|| (archive::SCRATCH.into(), None));
            let mut v = json!({
                "imoArchiveVersion": 1,
                "finalReference": self.images[0].reference,
                "baseReference": base,
                "baseDigest": base_digest,
            });
            let a = attached(&self.images[0]);
            if !a.is_empty() {
                v["attached"] = a.into();
            }
            v
        } else {
            let images: Vec<_> = self
                .images
                .iter()
                .map(|i| {
                    let mut v = json!({"reference": i.reference, "manifest": i.manifest});
                    let a = attached(i);
                    if !a.is_empty() {
                        v["attached"] = a.into();
                    }
                    v
                })
                .collect();
            let bases: Vec<_> = self
                .bases
                .iter()
                .map(|(r, d)| json!({"reference": r, "digest": d}))
                .collect();
            let mut v = json!({"imoArchiveVersion": self.version, "images": images});
            if !bases.is_empty() {
                v["bases"] = bases.into();
            }
            if !self.inventories.is_empty() {
                v["inventories"] = json!(self.inventories);
            }
            if !self.held_in.is_empty() {
                v["heldIn"] = json!(self.held_in);
            }
            v
        };
        v["manifests"] = json!(self.manifests);
        v["blobs"] = json!(self.blobs);
        v["omitted"] = json!(self.omitted);
        serde_json::to_vec(&v).unwrap()
    }

    /// `index.json`: each image's top-level manifest, tagged and annotated as imo pull does.
    fn index(&self) -> Vec<u8> {
        let mut base: Vec<String> = self.bases.iter().map(|b| b.0.clone()).collect();
        base.extend(self.inventories.iter().map(|i| format!("inventory {i}")));
        let base = if base.is_empty() {
            archive::SCRATCH.to_owned()
        } else {
            base.join(", ")
        };
        let entries: Vec<Descriptor> = self
            .images
            .iter()
            .map(|image| {
                let mut top = self
                    .manifests
                    .iter()
                    .find(|d| d.digest == image.manifest)
                    .expect("the image's manifest is listed")
                    .clone();
                top.platform = None;
                let name = image.reference.rsplit('/').next().unwrap_or_default();
                if let Some((_, tag)) = name.split_once(':') {
                    top.annotations.insert(archive::REF_NAME.into(), tag.into());
                }
                top.annotations
                    .insert(archive::ANNOTATION_FINAL.into(), image.reference.clone());
                top.annotations
                    .insert(archive::ANNOTATION_BASE.into(), base.clone());
                if let [(_, Some(d))] = self.bases.as_slice() {
                    top.annotations
                        .insert(archive::ANNOTATION_BASE_DIGEST.into(), d.to_string());
                }
                top
            })
            .collect();
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        }))
        .unwrap()
    }
}

/// Writes an archive the way imo pull lays one out: oci-layout, imo.json, index.json, the
/// manifests, then the carried blobs.
fn archive(meta: &Meta, manifests: &[Vec<u8>], blobs: &[Vec<u8>], style: Style) -> Vec<u8> {
    let mut w = tar::Writer::new(Vec::new());
    let name = |p: &str| match style {
        Style::Plain => p.to_owned(),
        Style::DotSlash => format!("./{p}"),
    };
    w.file(&name(archive::LAYOUT_FILE), archive::LAYOUT_CONTENT)
        .unwrap();
    w.file(&name(archive::METADATA_FILE), &meta.json()).unwrap();
    w.file(&name(archive::INDEX_FILE), &meta.index()).unwrap();
    if let Style::DotSlash = style {
        for dir in ["./blobs/", "./blobs/sha256/"] {
            w.data(&directory_header(dir)).unwrap();
        }
    }
    for (d, bytes) in meta.manifests.iter().zip(manifests) {
        w.file(&name(&archive::blob_path(&d.digest)), bytes).unwrap();
    }
    for (d, bytes) in meta.blobs.iter().zip(blobs) {
        w.file(&name(&archive::blob_path(&d.digest)), bytes).unwrap();
    }
    w.finish().unwrap();
    w.into_parts().0
}

fn directory_header(path: &str) -> [u8; tar::BLOCK] {
    let mut h = tar::file_header(path, 0);
    h[156] = b'5';
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// Format 2 metadata for one image `registry.example.com/team/app:v2` over its `v1`.
fn meta(manifests: Vec<Descriptor>, blobs: Vec<Descriptor>, omitted: Vec<Descriptor>) -> Meta {
    Meta {
        version: 2,
        images: vec![MetaImage {
            reference: "registry.example.com/team/app:v2".into(),
            manifest: manifests[0].digest.clone(),
            attached: vec![],
        }],
        bases: vec![("registry.example.com/team/app:v1".into(), None)],
        inventories: vec![],
        manifests,
        blobs,
        omitted,
        held_in: BTreeMap::new(),
    }
}

fn archives(manifests_out: &mut Seeds) -> Seeds {
    let mut out = Vec::new();

    // One OCI image against a base that has its first layer.
    let img = image(
        false,
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        &[b"base layer", b"app layer"],
    );
    let md = desc(img.media_type, &img.bytes);
    let m = meta(
        vec![md],
        vec![img.config.0.clone(), img.layers[1].0.clone()],
        vec![img.layers[0].0.clone()],
    );
    let blobs = vec![img.config.1.clone(), img.layers[1].1.clone()];
    out.push((
        "image-diff-v2-dotslash".into(),
        archive(
            &m,
            std::slice::from_ref(&img.bytes),
            &blobs,
            Style::DotSlash,
        ),
    ));
    manifests_out.push(("oci-image".into(), img.bytes.clone()));
    manifests_out.push(("layout-index".into(), m.index()));
    let mut v1 = m;
    v1.version = 1;
    out.push((
        "image-diff-v1".into(),
        archive(&v1, std::slice::from_ref(&img.bytes), &blobs, Style::Plain),
    ));

    // A two-platform index, everything carried (a scratch base); the children share a layer.
    let amd = image(
        false,
        r#"{"architecture":"amd64","os":"linux"}"#,
        &[b"shared", b"amd64 only"],
    );
    let arm = image(
        false,
        r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#,
        &[b"shared", b""],
    );
    let mut amd_d = desc(amd.media_type, &amd.bytes);
    amd_d.platform = serde_json::from_value(json!({"architecture": "amd64", "os": "linux"})).ok();
    let mut arm_d = desc(arm.media_type, &arm.bytes);
    arm_d.platform =
        serde_json::from_value(json!({"architecture": "arm64", "os": "linux", "variant": "v8"}))
            .ok();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [amd_d, arm_d],
    }))
    .unwrap();
    let index_d = desc(OCI_INDEX, &index);
    let mut carried = vec![
        amd.config.clone(),
        arm.config.clone(),
        amd.layers[0].clone(),
        amd.layers[1].clone(),
        arm.layers[1].clone(),
    ];
    carried.dedup_by(|a, b| a.0.digest == b.0.digest);
    let mut m = meta(
        vec![index_d, amd_d.clone(), arm_d.clone()],
        carried.iter().map(|c| c.0.clone()).collect(),
        vec![],
    );
    m.bases.clear();
    let blobs: Vec<_> = carried.iter().map(|c| c.1.clone()).collect();
    out.push((
        "index-full".into(),
        archive(
            &m,
            &[index.clone(), amd.bytes.clone(), arm.bytes.clone()],
            &blobs,
            Style::Plain,
        ),
    ));
    manifests_out.push(("oci-index".into(), index));

    // A Docker image with a signature attached (a cosign-style tag), base digest recorded.
    let img = image(
        true,
        r#"{"architecture":"amd64","os":"linux"}"#,
        &[b"docker layer"],
    );
    let sig_payload = br#"{"critical":{"type":"cosign container image signature"}}"#.to_vec();
    let sig_config = b"{}".to_vec();
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, &sig_config),
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": Digest::of(&sig_payload),
            "size": sig_payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ=="}
        }],
    }))
    .unwrap();
    let md = desc(img.media_type, &img.bytes);
    let sd = desc(OCI_MANIFEST, &sig);
    let mut m = meta(
        vec![md.clone(), sd.clone()],
        vec![
            img.config.0.clone(),
            desc(OCI_CONFIG, &sig_config),
            img.layers[0].0.clone(),
        ],
        vec![desc(
            "application/vnd.dev.cosign.simplesigning.v1+json",
            &sig_payload,
        )],
    );
    m.version = 1;
    m.bases[0].1 = Some(Digest::of(b"some base manifest"));
    m.images[0].attached = vec![(
        Some(format!("sha256-{}.sig", md.digest.hex())),
        sd.digest.clone(),
    )];
    let blobs = vec![img.config.1.clone(), sig_config, img.layers[0].1.clone()];
    out.push((
        "docker-signed".into(),
        archive(&m, &[img.bytes.clone(), sig.clone()], &blobs, Style::Plain),
    ));
    manifests_out.push(("docker-image".into(), img.bytes));
    manifests_out.push(("cosign-signature".into(), sig));

    // A bundle of two images over a base and an inventory: the shared layer is omitted and
    // held in two repositories of the destination, one image has a signature attached.
    let web = image(
        false,
        r#"{"os":"linux","architecture":"amd64"}"#,
        &[b"os", b"web"],
    );
    let db = image(
        false,
        r#"{"os":"linux","architecture":"amd64","config":{"User":"db"}}"#,
        &[b"os", b"db"],
    );
    let sig_config = b"{}".to_vec();
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "config": desc("application/vnd.oci.empty.v1+json", &sig_config),
        "layers": [desc("application/vnd.oci.empty.v1+json", &sig_config)],
        "subject": desc(web.media_type, &web.bytes),
    }))
    .unwrap();
    let (wd, dd, sd) = (
        desc(web.media_type, &web.bytes),
        desc(db.media_type, &db.bytes),
        desc(OCI_MANIFEST, &sig),
    );
    let shared = web.layers[0].0.clone();
    let m = Meta {
        version: 2,
        images: vec![
            MetaImage {
                reference: "registry.example.com/shop/web:2.0".into(),
                manifest: wd.digest.clone(),
                attached: vec![(None, sd.digest.clone())],
            },
            MetaImage {
                reference: "oci:/srv/images:db".into(),
                manifest: dd.digest.clone(),
                attached: vec![],
            },
        ],
        bases: vec![(
            "registry.example.com/base/os:1".into(),
            Some(Digest::of(b"base")),
        )],
        inventories: vec!["site-a.inventory.json".into()],
        manifests: vec![wd, sd, dd],
        blobs: vec![
            web.config.0.clone(),
            desc("application/vnd.oci.empty.v1+json", &sig_config),
            db.config.0.clone(),
            web.layers[1].0.clone(),
            db.layers[1].0.clone(),
        ],
        omitted: vec![shared.clone()],
        held_in: BTreeMap::from([(shared.digest, vec!["base/os".into(), "shop/web".into()])]),
    };
    let blobs = vec![
        web.config.1.clone(),
        sig_config,
        db.config.1.clone(),
        web.layers[1].1.clone(),
        db.layers[1].1.clone(),
    ];
    out.push((
        "bundle-v2".into(),
        archive(
            &m,
            &[web.bytes.clone(), sig.clone(), db.bytes.clone()],
            &blobs,
            Style::Plain,
        ),
    ));
    manifests_out.push(("bundle-index".into(), m.index()));
    manifests_out.push(("sigstore-bundle".into(), sig));

    // A plain tar that is not an imo archive: the tar reader alone gets past its headers.
    let mut w = tar::Writer::new(Vec::new());
    w.file("hello.txt", b"hello\n").unwrap();
    w.data(&directory_header("dir/")).unwrap();
    w.file("dir/empty", b"").unwrap();
    w.file("dir/block", &[7u8; 512]).unwrap();
    w.finish().unwrap();
    out.push(("plain-tar".into(), w.into_parts().0));
    out
}

fn other_manifests() -> Seeds {
    let d = |s: &str| Digest::of(s.as_bytes()).to_string();
    let list = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": d("a"), "size": 528,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": DOCKER_MANIFEST, "digest": d("b"), "size": 528,
             "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
            {"mediaType": DOCKER_MANIFEST, "digest": d("c"), "size": 1125,
             "platform": {"architecture": "amd64", "os": "windows", "os.version": "10.0.20348.2340"}}
        ]
    });
    // An index without mediaType, with attestations (buildkit style) and annotations.
    let bare_index = json!({
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d("img"), "size": 1000,
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": OCI_MANIFEST, "digest": d("att"), "size": 840,
             "annotations": {"vnd.docker.reference.digest": d("img"),
                             "vnd.docker.reference.type": "attestation-manifest"},
             "platform": {"architecture": "unknown", "os": "unknown"}}
        ],
        "annotations": {"org.opencontainers.image.created": "2024-05-01T00:00:00Z"}
    });
    // An OCI 1.1 artifact with a subject, and an empty config.
    let artifact = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": d("{}"), "size": 2, "data": "e30="},
        "layers": [{"mediaType": "application/spdx+json", "digest": d("sbom"), "size": 4}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": d("img"), "size": 1000}
    });
    let schema1 = json!({"schemaVersion": 1, "name": "library/busybox", "tag": "latest",
                         "fsLayers": [{"blobSum": d("x")}]});
    let referrers = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
    [
        ("docker-list", list),
        ("bare-index", bare_index),
        ("artifact", artifact),
        ("schema1", schema1),
        ("empty-index", referrers),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), serde_json::to_vec(&v).unwrap()))
    .collect()
}

fn references() -> Vec<(&'static str, String)> {
    let d = Digest::of(b"manifest").to_string();
    vec![
        ("short", "busybox".into()),
        ("hub-user", "user/app:1.0".into()),
        (
            "index-docker-io",
            "index.docker.io/library/alpine:3.19".into(),
        ),
        ("ghcr", "ghcr.io/org/team/app:v1.2.3-rc.1".into()),
        ("port-path", "registry.example.com:5000/a/b/c:latest".into()),
        ("digest", format!("quay.io/org/app@{d}")),
        ("tag-digest", format!("localhost:5000/app:v1@{d}")),
        ("ipv6", "[::1]:5000/app_x__y---z:tag".into()),
        ("loopback", "127.0.0.1:5000/app".into()),
        ("upper-host", "MyRegistry/app".into()),
        ("oci-dir", "oci:/tmp/layout".into()),
        ("oci-tag", "oci:rel/dir:v1".into()),
        ("oci-colon-dir", "oci:/x:y/z".into()),
        ("platform", "linux/arm64/v8".into()),
        ("bare-digest", d),
    ]
}

fn auth_answers() -> Vec<(&'static str, String)> {
    vec![
        (
            "distribution-bearer",
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/app:pull,push""#.into(),
        ),
        (
            "distribution-insufficient-scope",
            r#"Bearer realm="http://127.0.0.1:5001/auth",service="Docker registry",scope="repository:a/b:pull",error="insufficient_scope""#.into(),
        ),
        (
            "distribution-basic",
            r#"Basic realm="Registry Realm""#.into(),
        ),
        (
            "docker-hub",
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#.into(),
        ),
        (
            "quay",
            r#"Bearer realm="https://quay.io/v2/auth",service="quay.io",scope="repository:org/app:pull""#.into(),
        ),
        (
            "ghcr",
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull""#.into(),
        ),
        (
            "two-challenges",
            r#"Basic realm="x", Bearer realm="https://a/t",error="invalid_token",error_description="the token expired""#.into(),
        ),
        ("token68", "Negotiate abc123==, Basic realm=\"r\"".into()),
        (
            "escapes",
            r#"Bearer realm="https://a/\"quoted\"",scope=unquoted-token"#.into(),
        ),
        (
            "token-response",
            r#"{"token":"eyJhbGciOiJSUzI1NiJ9.e30.c2ln","access_token":"eyJhbGciOiJSUzI1NiJ9.e30.c2ln","expires_in":300,"issued_at":"2024-05-01T12:00:00.000000000Z"}"#.into(),
        ),
        ("token-only", r#"{"token":"djE6b3JnL2FwcDoxNzE0NTY="}"#.into()),
        (
            "oauth2",
            r#"{"access_token":"abc","token_type":"Bearer","expires_in":3600,"refresh_token":"r"}"#.into(),
        ),
        (
            "token-error",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#.into(),
        ),
    ]
}
