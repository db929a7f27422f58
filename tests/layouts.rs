//! Local OCI layouts (`oci:DIR[:TAG]`) as base, final and destination: imo's main job with
//! no registry at all, checked with skopeo.

mod support;

use support::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// The manifest digest skopeo finds for `oci:DIR:TAG`.
fn layout_digest(dir: &std::path::Path, tag: &str) -> String {
    sha256(&skopeo(&["inspect", "--raw", &format!("oci:{}:{tag}", dir.display())]).stdout)
}

#[test]
fn layouts_as_base_final_and_destination() {
    let v1 = oci_layout("v1", &[("l-a", 200_000), ("l-b", 100_000)]);
    let v2 = oci_layout(
        "v2",
        &[("l-a", 200_000), ("l-b", 100_000), ("l-c", 150_000)],
    );
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");
    let base = format!("oci:{}:v1", v1.dir.path().display());
    let fin = format!("oci:{}:v2", v2.dir.path().display());

    imo_ok(&["pull", &base, &fin, "-o", s(&archive)]);
    let carried = archive_blobs(&archive);
    assert_eq!(
        carried.len(),
        3,
        "manifest, config and the new layer: {carried:?}"
    );
    assert!(carried.contains(&v2.layer_digests[2]));
    assert!(!carried.contains(&v2.layer_digests[0]));

    // A destination layout that holds v1 (copied by skopeo) gets v2 from the archive.
    let site = work.join("site");
    skopeo(&[
        "copy",
        "-q",
        "--preserve-digests",
        &format!("oci:{}:v1", v1.dir.path().display()),
        &format!("oci:{}:v1", site.display()),
    ]);
    let empty = work.join("empty");
    let err = imo_err(&["vet", s(&archive), &format!("oci:{}:v2", empty.display())]);
    assert!(
        err.contains("empty: No such file"),
        "a missing directory is named: {err}"
    );
    std::fs::create_dir_all(&empty).unwrap();
    let err = imo_err(&["vet", s(&archive), &format!("oci:{}:v2", empty.display())]);
    assert!(err.contains(&v2.layer_digests[0]), "{err}");
    imo_ok(&["vet", s(&archive), &format!("oci:{}:v2", site.display())]);
    imo_ok(&["push", s(&archive), &format!("oci:{}", site.display())]);
    assert_eq!(layout_digest(&site, "v2"), v2.manifest_digest);
    assert_eq!(
        layout_digest(&site, "v1"),
        v1.manifest_digest,
        "the other tag is kept"
    );
    let out = TempDir::new("copy-out");
    skopeo(&[
        "copy",
        "-q",
        &format!("oci:{}:v2", site.display()),
        &format!("oci:{}:x", out.path().display()),
    ]);

    // And into a registry, from the same archive.
    let reg = Registry::start();
    seed(&v1, &reg.image("app:v1"), None);
    imo_ok(&["push", s(&archive), &reg.image("app:v2")]);
    assert_eq!(
        sha256(&raw_manifest(&reg.image("app:v2"))),
        v2.manifest_digest
    );
    copy_out(&reg.image("app:v2"));
}

#[test]
fn a_layout_with_one_image_needs_no_tag_and_a_missing_one_is_named() {
    let v1 = oci_layout("only", &[("single", 100_000)]);
    let work = TempDir::new("work");
    let archive = work.join("full.tar");
    imo_ok(&[
        "pull",
        "scratch",
        &format!("oci:{}", v1.dir.path().display()),
        "-o",
        s(&archive),
    ]);
    assert_eq!(archive_blobs(&archive).len(), 3);
    let err = imo_err(&[
        "pull",
        "scratch",
        &format!("oci:{}:nope", v1.dir.path().display()),
        "-o",
        s(&archive),
    ]);
    assert!(err.contains("has no image nope"), "{err}");
    let err = imo_err(&[
        "pull",
        "scratch",
        "oci:/nonexistent/imo-layout:v1",
        "-o",
        s(&work.join("x.tar")),
    ]);
    assert!(err.contains("/nonexistent/imo-layout"), "{err}");
}
