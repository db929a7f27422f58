//! Faults between imo and a real registry, injected by a proxy: each either is survived by
//! retrying, or ends in a clear error with no archive and no tag left behind. The proxy's
//! counts prove each fault happened.

mod support;

use std::time::Duration;
use support::proxy::{Fault, Proxy, Rule};
use support::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// A registry holding app:v1 and app:v2 (a 1.5 MB new layer, so cuts land mid-body).
fn source() -> Registry {
    let src = Registry::start();
    seed(
        &oci_layout("v1", &[("f-a", 300_000)]),
        &src.image("app:v1"),
        None,
    );
    seed(
        &oci_layout("v2", &[("f-a", 300_000), ("f-b", 1_500_000)]),
        &src.image("app:v2"),
        None,
    );
    src
}

#[test]
fn pulls_survive_transient_faults_on_every_kind_of_request() {
    let src = source();
    let work = TempDir::new("work");
    let clean = work.join("clean.tar");
    imo_ok(&[
        "pull",
        "-q",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        s(&clean),
    ]);
    // References differ (the proxy's port), so blobs are compared, each checked against its
    // name by archive_blobs.
    let clean = archive_blobs(&clean);

    let cases: Vec<(&str, Rule, &str)> = vec![
        (
            "ping 503",
            Rule::ping(1, Fault::Status(503, None)),
            "retrying GET",
        ),
        (
            "manifest 500",
            Rule::new("GET", "/manifests/", 2, Fault::Status(500, None)),
            "after HTTP 500",
        ),
        (
            "manifest 429",
            Rule::new("GET", "/manifests/", 1, Fault::Status(429, Some(1))),
            "in 1000 ms after HTTP 429",
        ),
        (
            "manifest reset",
            Rule::new("GET", "/manifests/", 1, Fault::Reset),
            "retrying GET",
        ),
        (
            "blob 502",
            Rule::new("GET", "/blobs/sha256:", 1, Fault::Status(502, None)),
            "after HTTP 502",
        ),
        (
            "blob reset",
            Rule::new("GET", "/blobs/sha256:", 1, Fault::Reset),
            "retrying GET",
        ),
        (
            "blob cut",
            Rule::new("GET", "/blobs/sha256:", 2, Fault::CutResponseAfter(700_000)),
            "resuming blob",
        ),
        (
            "slow blob",
            Rule::new(
                "GET",
                "/blobs/sha256:",
                1,
                Fault::Delay(Duration::from_millis(300)),
            ),
            "",
        ),
    ];
    for (name, rule, says) in cases {
        let proxy = Proxy::start(&src.addr, vec![rule]);
        let archive = work.join(&format!("{}.tar", name.replace(' ', "-")));
        let out = imo(&[
            "pull",
            &proxy.image("app:v1"),
            &proxy.image("app:v2"),
            "-o",
            s(&archive),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(proxy.faults() > 0, "{name}: the fault never happened");
        assert!(
            stderr.contains(says),
            "{name}: expected {says:?} in {stderr}"
        );
        assert!(
            archive_blobs(&archive) == clean,
            "{name}: the archive's blobs differ from a clean pull"
        );
    }
}

#[test]
fn pulls_that_cannot_recover_fail_clearly_and_leave_no_archive() {
    let src = source();
    let work = TempDir::new("work");
    let cases: Vec<(&str, Rule, &str)> = vec![
        (
            "blob always 500",
            Rule::new("GET", "/blobs/sha256:", 100, Fault::Status(500, None)),
            "HTTP 500",
        ),
        (
            "blob always cut",
            Rule::new(
                "GET",
                "/blobs/sha256:",
                100,
                Fault::CutResponseAfter(100_000),
            ),
            "gave up after 2 resumes",
        ),
        (
            "manifest always reset",
            Rule::new("GET", "/manifests/", 100, Fault::Reset),
            "registry unreachable",
        ),
    ];
    for (name, rule, says) in cases {
        let proxy = Proxy::start(&src.addr, vec![rule]);
        let archive = work.join("x.tar");
        let err = imo_err(&[
            "pull",
            "--retries",
            "2",
            &proxy.image("app:v1"),
            &proxy.image("app:v2"),
            "-o",
            s(&archive),
        ]);
        assert!(err.contains(says), "{name}: expected {says:?} in {err}");
        assert!(proxy.faults() >= 3, "{name}: {} faults", proxy.faults());
        assert!(
            std::fs::read_dir(work.path()).unwrap().next().is_none(),
            "{name}: files left behind"
        );
    }
    // With retries off, one fault is enough to fail.
    let proxy = Proxy::start(&src.addr, vec![Rule::ping(1, Fault::Status(503, None))]);
    let err = imo_err(&[
        "pull",
        "--retries",
        "0",
        "scratch",
        &proxy.image("app:v2"),
        "-o",
        s(&work.join("y.tar")),
    ]);
    assert!(
        err.contains("HTTP 503") && err.contains("INJECTED"),
        "{err}"
    );
    assert_eq!(proxy.faults(), 1);
}

#[test]
fn pushes_retry_what_can_be_replayed_and_never_leave_a_half_pushed_tag() {
    let src = source();
    let work = TempDir::new("work");
    let archive = work.join("full.tar");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &src.image("app:v2"),
        "-o",
        s(&archive),
    ]);
    let digest = sha256(&raw_manifest(&src.image("app:v2")));

    let survivable: Vec<(&str, Rule)> = vec![
        (
            "HEAD 503",
            Rule::new("HEAD", "/blobs/", 1, Fault::Status(503, None)),
        ),
        (
            "upload POST 500",
            Rule::new("POST", "/blobs/uploads/", 1, Fault::Status(500, None)),
        ),
        (
            "upload POST reset",
            Rule::new("POST", "/blobs/uploads/", 1, Fault::Reset),
        ),
        (
            "manifest PUT 503",
            Rule::new("PUT", "/manifests/", 1, Fault::Status(503, None)),
        ),
        (
            "manifest PUT 429",
            Rule::new("PUT", "/manifests/", 1, Fault::Status(429, Some(1))),
        ),
    ];
    for (i, (name, rule)) in survivable.into_iter().enumerate() {
        let dst = Registry::start();
        let proxy = Proxy::start(&dst.addr, vec![rule]);
        let out = imo(&["push", s(&archive), &proxy.image(&format!("r{i}/app:v2"))]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert_eq!(proxy.faults(), 1, "{name}");
        assert!(stderr.contains("retrying"), "{name}: {stderr}");
        assert_eq!(
            sha256(&raw_manifest(&dst.image(&format!("r{i}/app:v2")))),
            digest,
            "{name}"
        );
        copy_out(&dst.image(&format!("r{i}/app:v2")));
    }

    // An upload cut mid-body cannot be replayed from a one-pass archive stream: the push
    // stops, and the tag never appears.
    let fatal: Vec<(&str, Rule, &str)> = vec![
        (
            "upload PUT cut",
            Rule::new("PUT", "/blobs/uploads/", 1, Fault::CutRequestAfter(100)),
            "registry unreachable",
        ),
        (
            "upload PUT 500",
            Rule::new("PUT", "/blobs/uploads/", 1, Fault::Status(500, None)),
            "HTTP 500",
        ),
        (
            "manifest PUT always 500",
            Rule::new("PUT", "/manifests/", 100, Fault::Status(500, None)),
            "HTTP 500",
        ),
    ];
    for (name, rule, says) in fatal {
        let dst = Registry::start();
        let proxy = Proxy::start(&dst.addr, vec![rule]);
        let err = imo_err(&[
            "push",
            "--retries",
            "1",
            s(&archive),
            &proxy.image("app:v2"),
        ]);
        assert!(err.contains(says), "{name}: expected {says:?} in {err}");
        assert!(proxy.faults() >= 1, "{name}");
        assert!(!exists(&dst.image("app:v2")), "{name}: a tag was left");
        assert!(
            !exists(&dst.image(&format!("app@{digest}"))),
            "{name}: the manifest was left"
        );
    }
}
