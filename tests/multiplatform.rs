//! Multi-platform images, platform choice, and signatures that travel with the image.

mod support;

use support::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

const SHARED: (&str, usize) = ("shared-base", 250_000);

fn v1_amd64() -> TempDir {
    oci_index_layout(
        "v1",
        &[PlatformImage {
            platform: "linux/amd64",
            layers: &[SHARED, ("amd64-v1", 100_000)],
        }],
    )
}

fn v2_two_platforms() -> TempDir {
    oci_index_layout(
        "v2",
        &[
            PlatformImage {
                platform: "linux/amd64",
                layers: &[SHARED, ("amd64-v2", 120_000)],
            },
            PlatformImage {
                platform: "linux/arm64/v8",
                layers: &[SHARED, ("arm64-v2", 130_000)],
            },
        ],
    )
}

fn json(raw: &[u8]) -> serde_json::Value {
    serde_json::from_slice(raw).unwrap()
}

/// Every blob the index at `reference` reaches, read with skopeo: (manifest digests, blob digests).
fn reachable(reference: &str) -> (Vec<String>, Vec<String>) {
    let raw = raw_manifest(reference);
    let (repo, _) = reference.rsplit_once(':').unwrap();
    let mut manifests = vec![sha256(&raw)];
    let mut blobs = Vec::new();
    let index = json(&raw);
    let children: Vec<String> = match index["manifests"].as_array() {
        Some(list) => list
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_owned())
            .collect(),
        None => vec![],
    };
    let mut images = vec![raw];
    for c in &children {
        manifests.push(c.clone());
        images.push(raw_manifest(&format!("{repo}@{c}")));
    }
    for m in images {
        let v = json(&m);
        if let Some(c) = v["config"]["digest"].as_str() {
            blobs.push(c.to_owned());
        }
        for l in v["layers"].as_array().into_iter().flatten() {
            blobs.push(l["digest"].as_str().unwrap().to_owned());
        }
    }
    blobs.sort();
    blobs.dedup();
    (manifests, blobs)
}

#[test]
fn an_index_moves_byte_exact_against_single_and_multi_platform_bases() {
    let src = Registry::start();
    seed_all(&v1_amd64(), "v1", &src.image("app:v1"), None);
    seed_all(&v2_two_platforms(), "v2", &src.image("app:v2"), None);
    let single = oci_layout("solo", &[SHARED]);
    seed(&single, &src.image("solo:v1"), None);
    let work = TempDir::new("work");

    // Against a single-platform base holding the shared layer.
    let archive = work.join("vs-single.tar");
    imo_ok(&[
        "pull",
        &src.image("solo:v1"),
        &src.image("app:v2"),
        "-o",
        s(&archive),
    ]);
    let (manifests, blobs) = reachable(&src.image("app:v2"));
    let carried = archive_blobs(&archive);
    let shared = layer_digest(SHARED);
    assert!(
        !carried.contains(&shared),
        "the shared layer is left to the base"
    );
    for m in &manifests {
        assert!(carried.contains(m), "manifest {m} is carried");
    }
    assert_eq!(
        carried.len(),
        manifests.len() + blobs.len() - 1,
        "each other blob once"
    );

    let dst = Registry::start();
    seed(&single, &dst.image("solo:v1"), None);
    imo_ok(&["push", s(&archive), &dst.image("solo:v2")]);
    assert_eq!(
        raw_manifest(&dst.image("solo:v2")),
        raw_manifest(&src.image("app:v2"))
    );
    let out = TempDir::new("copy-all");
    skopeo(&[
        "copy",
        "-q",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}", dst.image("solo:v2")),
        &format!("oci:{}:x", out.path().display()),
    ]);

    // Against an older index: the amd64 v1 layers are left behind too.
    let archive = work.join("vs-index.tar");
    imo_ok(&[
        "pull",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        s(&archive),
    ]);
    assert!(!archive_blobs(&archive).contains(&shared));
    let dst = Registry::start();
    seed_all(&v1_amd64(), "v1", &dst.image("app:v1"), None);
    imo_ok(&["vet", s(&archive), &dst.image("app:v2")]);
    imo_ok(&["push", s(&archive), &dst.image("app:v2")]);
    assert_eq!(
        raw_manifest(&dst.image("app:v2")),
        raw_manifest(&src.image("app:v2"))
    );

    // And the reverse: a multi-platform base under a single-platform final.
    let archive = work.join("reverse.tar");
    imo_ok(&[
        "pull",
        &src.image("app:v2"),
        &src.image("solo:v1"),
        "-o",
        s(&archive),
    ]);
    assert!(!archive_blobs(&archive).contains(&shared));
}

fn layer_digest((seed, size): (&str, usize)) -> String {
    sha256(&layer(seed, size))
}

#[test]
fn a_docker_manifest_list_stays_byte_exact() {
    let src = Registry::start();
    seed_all(
        &v2_two_platforms(),
        "v2",
        &src.image("app:v2"),
        Some("v2s2"),
    );
    let raw = raw_manifest(&src.image("app:v2"));
    assert_eq!(
        json(&raw)["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let work = TempDir::new("work");
    let archive = work.join("full.tar");
    imo_ok(&["pull", "scratch", &src.image("app:v2"), "-o", s(&archive)]);
    let dst = Registry::start();
    imo_ok(&["push", s(&archive), &dst.image("app:v2")]);
    assert_eq!(raw_manifest(&dst.image("app:v2")), raw);
    let out = TempDir::new("copy-all");
    skopeo(&[
        "copy",
        "-q",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}", dst.image("app:v2")),
        &format!("oci:{}:x", out.path().display()),
    ]);
}

#[test]
fn platform_selection_carries_only_that_platform() {
    let src = Registry::start();
    seed_all(&v2_two_platforms(), "v2", &src.image("app:v2"), None);
    let index = json(&raw_manifest(&src.image("app:v2")));
    let arm = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap();
    let arm_digest = arm["digest"].as_str().unwrap().to_owned();
    let work = TempDir::new("work");

    let archive = work.join("arm.tar");
    imo_ok(&[
        "pull",
        "--platform",
        "linux/arm64",
        "scratch",
        &src.image("app:v2"),
        "-o",
        s(&archive),
    ]);
    let carried = archive_blobs(&archive);
    assert!(carried.contains(&layer_digest(("arm64-v2", 130_000))));
    assert!(
        !carried.contains(&layer_digest(("amd64-v2", 120_000))),
        "amd64 blobs stay behind"
    );
    let dst = Registry::start();
    imo_ok(&["push", s(&archive), &dst.image("app:v2")]);
    // One platform: the tag points at that platform's own manifest, digest unchanged.
    assert_eq!(sha256(&raw_manifest(&dst.image("app:v2"))), arm_digest);
    copy_out(&dst.image("app:v2"));

    // Two platforms named: a new index listing both, which pushes and pulls whole.
    let archive = work.join("both.tar");
    imo_ok(&[
        "pull",
        "--platform",
        "linux/arm64",
        "--platform",
        "linux/amd64",
        "scratch",
        &src.image("app:v2"),
        "-o",
        s(&archive),
    ]);
    imo_ok(&["push", s(&archive), &dst.image("app:both")]);
    assert_eq!(
        json(&raw_manifest(&dst.image("app:both")))["manifests"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let err = imo_err(&[
        "pull",
        "--platform",
        "linux/s390x",
        "scratch",
        &src.image("app:v2"),
        "-o",
        s(&work.join("x.tar")),
    ]);
    assert!(err.contains("linux/amd64, linux/arm64/v8"), "{err}");
    let err = imo_err(&[
        "pull",
        "--platform",
        "linux",
        "scratch",
        &src.image("app:v2"),
        "-o",
        s(&work.join("x.tar")),
    ]);
    assert!(err.contains("os/arch"), "{err}");
}

#[test]
fn a_signature_travels_under_its_tag() {
    let src = Registry::start();
    seed_all(&v2_two_platforms(), "v2", &src.image("app:v2"), None);
    let digest = sha256(&raw_manifest(&src.image("app:v2")));
    let sig_tag = format!("sha256-{}.sig", &digest[7..]);
    let sig = signature_layout(&digest);
    skopeo(&[
        "copy",
        "-q",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:sig", sig.path().display()),
        &format!("docker://{}", src.image(&format!("app:{sig_tag}"))),
    ]);
    let sig_raw = raw_manifest(&src.image(&format!("app:{sig_tag}")));
    let work = TempDir::new("work");

    let archive = work.join("signed.tar");
    imo_ok(&["pull", "scratch", &src.image("app:v2"), "-o", s(&archive)]);
    assert!(
        archive_blobs(&archive).contains(&sha256(&sig_raw)),
        "the signature manifest is carried"
    );
    let dst = Registry::start();
    imo_ok(&["push", s(&archive), &dst.image("app:v2")]);
    assert_eq!(raw_manifest(&dst.image(&format!("app:{sig_tag}"))), sig_raw);
    assert_eq!(sha256(&raw_manifest(&dst.image("app:v2"))), digest);

    // Left behind when asked.
    let archive = work.join("unsigned.tar");
    imo_ok(&[
        "pull",
        "--no-referrers",
        "scratch",
        &src.image("app:v2"),
        "-o",
        s(&archive),
    ]);
    assert!(!archive_blobs(&archive).contains(&sha256(&sig_raw)));
}
