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

/// Starts `imo ARGS` with stdin from `stdin` and stderr captured.
fn spawn_imo(args: &[&str], stdin: std::process::Stdio) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_imo"))
        .args(args)
        .env("IMO_CACHE_DIR", cache_dir())
        .stdin(stdin)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The names starting with a dot in `dir`: temporary files and locks.
fn hidden(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// Two pushes of images sharing blobs into one layout at once, with different tags: both
/// succeed and both tags are in `index.json`, round after round.
#[test]
fn concurrent_pushes_into_one_layout_keep_both_tags() {
    let v = oci_layout("v1", &[("shared-a", 400_000), ("shared-b", 300_000)]);
    let work = TempDir::new("concurrent");
    let archive = work.join("full.tar");
    let source = format!("oci:{}:v1", v.dir.path().display());
    imo_ok(&["pull", "-q", "scratch", &source, "-o", s(&archive)]);
    for round in 0..4 {
        let site = work.join(&format!("site-{round}"));
        let pushes: Vec<_> = ["one", "two"]
            .iter()
            .map(|tag| {
                let destination = format!("oci:{}:{tag}", site.display());
                spawn_imo(
                    &["push", "-q", s(&archive), &destination],
                    std::process::Stdio::null(),
                )
            })
            .collect();
        for push in pushes {
            let out = output_within(push, std::time::Duration::from_secs(60));
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(
            layout_digest(&site, "one"),
            v.manifest_digest,
            "round {round}"
        );
        assert_eq!(
            layout_digest(&site, "two"),
            v.manifest_digest,
            "round {round}"
        );
        assert!(hidden(&site).is_empty(), "{:?}", hidden(&site));
        assert!(hidden(&site.join("blobs/sha256")).is_empty());
    }
}

/// A push into a layout stopped by SIGTERM while a blob streams in from stdin removes the
/// blob's temporary file and exits 143.
#[test]
fn a_push_into_a_layout_stopped_by_sigterm_leaves_no_temporary_file() {
    use std::io::Write as _;
    let v = oci_layout("v1", &[("big", 4_000_000)]);
    let work = TempDir::new("sigterm-push");
    let archive = work.join("full.tar");
    let source = format!("oci:{}:v1", v.dir.path().display());
    imo_ok(&["pull", "-q", "scratch", &source, "-o", s(&archive)]);
    let site = work.join("site");
    let mut push = spawn_imo(
        &["push", "-q", "-", &format!("oci:{}:v1", site.display())],
        std::process::Stdio::piped(),
    );
    // Half the archive, and stdin held open: the big layer is half written.
    let bytes = std::fs::read(&archive).unwrap();
    let mut stdin = push.stdin.take().unwrap();
    stdin.write_all(&bytes[..bytes.len() / 2]).unwrap();
    let blobs = site.join("blobs/sha256");
    let started = std::time::Instant::now();
    // The big layer's temporary, not a small blob's that is about to be renamed.
    let big_partial = || {
        hidden(&blobs).iter().any(|n| {
            n.ends_with(".partial")
                && std::fs::metadata(blobs.join(n)).is_ok_and(|m| m.len() > 1_000_000)
        })
    };
    while !blobs.is_dir() || !big_partial() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no temporary blob file after 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &push.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = output_within(push, std::time::Duration::from_secs(20));
    drop(stdin);
    assert_eq!(
        out.status.code(),
        Some(143),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        hidden(&blobs).is_empty(),
        "a stopped push left {:?}",
        hidden(&blobs)
    );
}
