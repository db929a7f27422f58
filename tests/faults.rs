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

/// The whole of app:v2, pulled from `src` into `work/full.tar`.
fn full_archive(src: &Registry, work: &TempDir) -> std::path::PathBuf {
    let archive = work.join("full.tar");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &src.image("app:v2"),
        "-o",
        s(&archive),
    ]);
    archive
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

    // What each fault makes imo say when the archive streams to stdout (one blob at a time),
    // and when it goes to a file (blobs fetched together, a failed one fetched again alone).
    let cases: Vec<(&str, Rule, &str, &str)> = vec![
        (
            "ping 503",
            Rule::ping(1, Fault::Status(503, None)),
            "retrying GET",
            "retrying GET",
        ),
        (
            "manifest 500",
            Rule::new("GET", "/manifests/", 2, Fault::Status(500, None)),
            "after HTTP 500",
            "after HTTP 500",
        ),
        (
            "manifest 429",
            Rule::new("GET", "/manifests/", 1, Fault::Status(429, Some(1))),
            "in 1000 ms after HTTP 429",
            "in 1000 ms after HTTP 429",
        ),
        (
            "manifest reset",
            Rule::new("GET", "/manifests/", 1, Fault::Reset),
            "retrying GET",
            "retrying GET",
        ),
        (
            "blob 502",
            Rule::new("GET", "/blobs/sha256:", 1, Fault::Status(502, None)),
            "after HTTP 502",
            "alone after HTTP 502",
        ),
        (
            "blob reset",
            Rule::new("GET", "/blobs/sha256:", 1, Fault::Reset),
            "retrying GET",
            "alone after registry unreachable",
        ),
        (
            "blob cut",
            Rule::new("GET", "/blobs/sha256:", 2, Fault::CutResponseAfter(700_000)),
            "resuming blob",
            "alone after",
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
            "",
        ),
    ];
    for (name, rule, streamed, filed) in cases {
        for to_file in [false, true] {
            let proxy = Proxy::start(&src.addr, vec![rule.clone()]);
            let archive = work.join(&format!("{}-{to_file}.tar", name.replace(' ', "-")));
            let out = imo(&[
                "pull",
                &proxy.image("app:v1"),
                &proxy.image("app:v2"),
                "-o",
                if to_file { s(&archive) } else { "-" },
            ]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name}: {stderr}");
            if !to_file {
                std::fs::write(&archive, &out.stdout).unwrap();
            }
            let says = if to_file { filed } else { streamed };
            assert!(proxy.faults() > 0, "{name}: the fault never happened");
            assert!(
                stderr.contains(says),
                "{name}, to a file {to_file}: expected {says:?} in {stderr}"
            );
            assert!(
                archive_blobs(&archive) == clean,
                "{name}, to a file {to_file}: the archive's blobs differ from a clean pull"
            );
        }
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
    let archive = full_archive(&src, &work);
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

    // Faults that outlast the retries: the push stops, and the tag never appears. (A single
    // cut upload resumes: see pushes_resume_an_upload_cut_mid_body.)
    let fatal: Vec<(&str, Rule, &str)> = vec![
        (
            "upload PUT always cut",
            Rule::new("PUT", "/blobs/uploads/", 100, Fault::CutRequestAfter(100)),
            "resumed 1 time(s), as many as allowed",
        ),
        (
            "upload PUT always 500",
            Rule::new("PUT", "/blobs/uploads/", 100, Fault::Status(500, None)),
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

/// The largest blob an archive carries, and a path substring that picks out the `PUT` of its
/// upload (imo puts `digest=sha256%3A<hex>` in the query).
fn largest_blob(archive: &std::path::Path) -> (String, &'static str) {
    let (path, _) = archive_entries(archive)
        .into_iter()
        .filter(|(p, _)| p.starts_with("blobs/sha256/"))
        .max_by_key(|(_, data)| data.len())
        .unwrap();
    let hex = path.strip_prefix("blobs/sha256/").unwrap();
    let query: &'static str = Box::leak(format!("digest=sha256%3A{hex}").into_boxed_str());
    (format!("sha256:{hex}"), query)
}

#[test]
fn pushes_resume_an_upload_cut_mid_body() {
    let src = source();
    let work = TempDir::new("work");
    let archive = full_archive(&src, &work);
    let digest = sha256(&raw_manifest(&src.image("app:v2")));
    // The 1.5 MB layer's upload: its PUT is cut 700 kB into the body, or answered with a 500
    // after the whole body.
    let (layer, put) = largest_blob(&archive);
    let cases: Vec<(&str, Fault, &str)> = vec![
        (
            "upload PUT cut",
            Fault::CutRequestAfter(700_000),
            "in a new upload session, as the registry dropped the session, after sending to",
        ),
        (
            "upload PUT 500",
            Fault::Status(500, None),
            "as the registry holds none of it, after HTTP 500 INJECTED",
        ),
    ];
    for (i, (name, fault, says)) in cases.into_iter().enumerate() {
        let dst = Registry::start();
        let proxy = Proxy::start(&dst.addr, vec![Rule::new("PUT", put, 1, fault)]);
        let image = format!("r{i}/app:v2");
        let out = imo(&["push", s(&archive), &proxy.image(&image)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        // The fault happened, to that PUT, and the upload went on: the registry was asked
        // where the session stood, and the blob went up again (distribution 2.8 drops a
        // session whose PUT was cut, so in a new session; a PATCH where a session survives).
        assert_eq!(proxy.faults(), 1, "{name}");
        assert_eq!(proxy.count("PUT", put), 2, "{name}");
        assert_eq!(proxy.count("GET", "/blobs/uploads/"), 1, "{name}");
        let sessions = proxy.count("POST", "/blobs/uploads/");
        let patches = proxy.count("PATCH", "/blobs/uploads/");
        assert!(
            sessions == 4 || patches > 0,
            "{name}: {sessions} sessions for 3 blobs, {patches} PATCH"
        );
        assert!(
            stderr.contains(&format!("resuming upload of blob {layer}")) && stderr.contains(says),
            "{name}: no resume reported: {stderr}"
        );
        assert_eq!(sha256(&raw_manifest(&dst.image(&image))), digest, "{name}");
        copy_out(&dst.image(&image));
    }
}

#[test]
fn pulls_into_a_file_fetch_blobs_together_and_write_what_a_stream_gets() {
    let src = source();
    let work = TempDir::new("work");
    // The first blob's answer is held until another blob is asked for (or 10 s pass).
    let proxy = Proxy::start(
        &src.addr,
        vec![Rule::new("GET", "/blobs/sha256:", 1, Fault::HoldAnswer)],
    );
    let filed = work.join("filed.tar");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &proxy.image("app:v2"),
        "-o",
        s(&filed),
    ]);
    assert_eq!(
        proxy.holds(),
        [true],
        "the second blob was asked for only after the first arrived"
    );
    let streamed = imo_ok(&["pull", "-q", "scratch", &proxy.image("app:v2"), "-o", "-"]);
    assert!(
        std::fs::read(&filed).unwrap() == streamed.stdout,
        "the file differs from the stream"
    );
    let dst = Registry::start();
    imo_ok(&["push", "-q", s(&filed), &dst.image("app:v2")]);
    assert_eq!(
        sha256(&raw_manifest(&dst.image("app:v2"))),
        sha256(&raw_manifest(&src.image("app:v2")))
    );
    copy_out(&dst.image("app:v2"));
}

#[test]
fn pushes_stream_the_next_blob_while_the_registry_commits_the_last() {
    let src = source();
    let work = TempDir::new("work");
    let archive = full_archive(&src, &work);
    let dst = Registry::start();
    // The first upload's answer is held until the next upload's PUT arrives (or 10 s pass),
    // as a registry syncing a large blob to disk holds it.
    let proxy = Proxy::start(
        &dst.addr,
        vec![Rule::new("PUT", "/blobs/uploads/", 1, Fault::HoldAnswer)],
    );
    let out = imo(&["push", s(&archive), &proxy.image("app:v2")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        proxy.holds(),
        [true],
        "the next blob's upload waited for the answer to the one before"
    );
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 3, "one PUT per blob");
    assert_eq!(
        sha256(&raw_manifest(&dst.image("app:v2"))),
        sha256(&raw_manifest(&src.image("app:v2")))
    );
    copy_out(&dst.image("app:v2"));
}

#[test]
fn pushes_that_cannot_resume_a_cut_upload_fail_clearly_and_tag_nothing() {
    // A 10 MB layer, more than the 8 MiB imo keeps of an upload.
    let src = Registry::start();
    seed(
        &oci_layout("v3", &[("f-a", 300_000), ("f-big", 10_000_000)]),
        &src.image("app:v3"),
        None,
    );
    let work = TempDir::new("work");
    let archive = work.join("big.tar");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &src.image("app:v3"),
        "-o",
        s(&archive),
    ]);
    let digest = sha256(&raw_manifest(&src.image("app:v3")));
    let (layer, put) = largest_blob(&archive);
    let cases: Vec<(&str, &str, usize, &[&str])> = vec![
        (
            // Cut 9 MB in: distribution drops the session, and the start is no longer kept.
            "cut past the window",
            "4",
            9_000_000,
            &[
                "dropped the upload session, and the start of the blob is no longer kept",
                "imo keeps the last 8388608 bytes written",
            ],
        ),
        ("retries off", "0", 1_000_000, &["retries are off"]),
    ];
    for (name, retries, cut, says) in cases {
        let dst = Registry::start();
        let proxy = Proxy::start(
            &dst.addr,
            vec![Rule::new("PUT", put, 1, Fault::CutRequestAfter(cut))],
        );
        let err = imo_err(&[
            "push",
            "--retries",
            retries,
            s(&archive),
            &proxy.image("app:v3"),
        ]);
        assert_eq!(proxy.faults(), 1, "{name}");
        for says in says.iter().chain(&[
            "registry unreachable",
            "cannot be resumed",
            "run the push again",
        ]) {
            assert!(err.contains(says), "{name}: expected {says:?} in {err}");
        }
        assert!(
            err.contains(&format!("upload of blob {layer} to app failed after")),
            "{name}: {err}"
        );
        assert!(!exists(&dst.image("app:v3")), "{name}: a tag was left");
        assert!(
            !exists(&dst.image(&format!("app@{digest}"))),
            "{name}: the manifest was left"
        );
        // As the message says, pushing again finishes the job, skipping what is there.
        imo_ok(&["push", "-q", s(&archive), &proxy.image("app:v3")]);
        assert_eq!(
            sha256(&raw_manifest(&dst.image("app:v3"))),
            digest,
            "{name}"
        );
    }
}

#[test]
fn a_401_mid_upload_gets_a_new_token_and_the_upload_resumes() {
    use support::token::{Account, TokenServer};
    let src = source();
    let work = TempDir::new("work");
    let archive = full_archive(&src, &work);
    let digest = sha256(&raw_manifest(&src.image("app:v2")));
    let (layer, put) = largest_blob(&archive);
    let tokens = TokenServer::start(vec![
        Account::new("pusher", "push-pw").may("app", &["pull", "push"]),
    ]);
    // How many tokens a clean push takes.
    let clean = Registry::start_with(&tokens.registry_config());
    let before = tokens.count();
    imo_ok(&[
        "push",
        "-q",
        "--dest-creds",
        "pusher:push-pw",
        s(&archive),
        &clean.image("app:v2"),
    ]);
    let clean_tokens = tokens.count() - before;
    let dst = Registry::start_with(&tokens.registry_config());
    // The registry refuses the token as the layer's PUT arrives (as when it expired).
    let before = tokens.count();
    let proxy = Proxy::start(
        &dst.addr,
        vec![Rule::new("PUT", put, 1, Fault::Status(401, None))],
    );
    let out = imo(&[
        "push",
        "--dest-creds",
        "pusher:push-pw",
        s(&archive),
        &proxy.image("app:v2"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(proxy.faults(), 1);
    assert_eq!(proxy.count("PUT", put), 2);
    assert!(
        stderr.contains(&format!("resuming upload of blob {layer}"))
            && stderr.contains("after HTTP 401"),
        "{stderr}"
    );
    assert_eq!(
        tokens.count() - before,
        clean_tokens + 1,
        "one new token: {:?}",
        tokens.requests_since(before)
    );
    let pushed = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "pusher:push-pw",
        &format!("docker://{}", dst.image("app:v2")),
    ]);
    assert_eq!(sha256(&pushed.stdout), digest);
}

/// Issue 13, defect 5: `Location: //host/p` is another host (RFC 3986's network-path
/// reference), fetched there without the registry's `Authorization`.
#[test]
fn a_redirect_to_another_host_never_carries_the_registrys_authorization() {
    let src = source();
    // Where blobs are redirected: the same registry, through a proxy that records what it got.
    let other = Proxy::start(&src.addr, vec![]);
    let location = format!("//{}", other.addr);
    let registry = Proxy::start(
        &src.addr,
        vec![
            Rule::new("GET", "/blobs/sha256:", 1000, Fault::Redirect(location)),
            Rule::new("GET", "/v2/", 1000, Fault::Challenge),
        ],
    );
    // Both ways a pull fetches blobs: one after another to stdout, and several at once
    // (the concurrent fetcher) into a file, which must not need a second try alone.
    let work = TempDir::new("work");
    let file = work.join("app.tar");
    for output in ["-", file.to_str().unwrap()] {
        let before = (
            registry.authorized("/blobs/sha256:"),
            other.count("GET", "/v2/app/blobs/sha256:"),
        );
        let out = imo_ok(&[
            "pull",
            "--creds",
            "alice:s3cret",
            "scratch",
            &registry.image("app:v2"),
            "-o",
            output,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("alone"), "{output}: {stderr}");
        // The registry got its credentials, blob requests included; the other host got the
        // blobs asked for, and no credentials.
        assert!(
            registry.authorized("/blobs/sha256:") >= before.0 + 3,
            "{output}"
        );
        assert!(
            other.count("GET", "/v2/app/blobs/sha256:") >= before.1 + 3,
            "{output}"
        );
        assert_eq!(other.authorized(""), 0, "{output}");
    }
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
}

/// Issue 13, defect 6: a registry's error text reaches the terminal with its control
/// characters escaped, so it can neither set the clipboard (OSC 52) nor clear the screen.
#[test]
fn a_registrys_error_text_cannot_drive_the_terminal() {
    let src = source();
    let hostile = r#"{"errors":[{"code":"X","message":"\u001b]52;c;aW1vIHdhcyBoZXJl\u0007\u001b[2J\u009b1A\u202e"}]}"#;
    let registry = Proxy::start(
        &src.addr,
        vec![Rule::new(
            "GET",
            "/manifests/",
            1,
            Fault::Answer(400, hostile.into()),
        )],
    );
    let err = imo_err(&["pull", "scratch", &registry.image("app:v2"), "-o", "-"]);
    assert_eq!(registry.faults(), 1);
    assert!(
        err.contains("X: \\u{1b}]52;c;aW1vIHdhcyBoZXJl\\u{7}\\u{1b}[2J\\u{9b}1A\\u{202e}"),
        "{err}"
    );
    for c in err.chars() {
        assert!(
            c == '\n' || !(c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{c:?} in {err:?}"
        );
    }
}

/// Issue 14, defect 2: a registry that takes blobs only in `PATCH`es refuses a whole-body
/// `PUT` before reading its body (`500 … not implemented`) and closes the connection. imo
/// reads that answer, sends the blob again in chunks, and every later blob in chunks at once.
#[test]
fn a_registry_that_takes_only_patches_gets_the_blobs_in_chunks() {
    let src = source();
    let work = TempDir::new("work");
    let archive = full_archive(&src, &work);
    let digest = sha256(&raw_manifest(&src.image("app:v2")));
    let dst = Registry::start();
    let refuse = Fault::RefuseBody(500, "missing content length not implemented".into());
    let proxy = Proxy::start(
        &dst.addr,
        vec![Rule::new("PUT", "/blobs/uploads/", usize::MAX, refuse)],
    );
    // One instance: each instance learns the registry's refusal for itself.
    let out = imo(&[
        "push",
        "--instances",
        "1",
        s(&archive),
        &proxy.image("app:v2"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("uploading in chunks").count(),
        1,
        "said once: {stderr}"
    );
    assert!(
        stderr.contains("(HTTP 500 missing content length not implemented)"),
        "{stderr}"
    );
    assert!(!stderr.contains("retry"), "{stderr}");
    // Three blobs, each in a PATCH and an empty PUT; before them, the whole-body PUTs
    // refused: the first blob's, and the second's, already sent as the first was answered
    // (the next blob streams while the registry answers the last). None sent again.
    assert_eq!(proxy.count("PATCH", "/blobs/uploads/"), 3, "{stderr}");
    let puts = proxy.count("PUT", "/blobs/uploads/");
    assert!((4..=5).contains(&puts), "{puts} PUTs: {stderr}");
    assert_eq!(sha256(&raw_manifest(&dst.image("app:v2"))), digest);
    copy_out(&dst.image("app:v2"));
}

/// `--chunk-size` uploads in `PATCH`es of that size, or of the registry's
/// `OCI-Chunk-Min-Length` when larger (the proxy refuses a chunk after a short one).
#[test]
fn chunk_size_pushes_in_chunks_of_at_least_the_registrys_minimum() {
    let src = source();
    let work = TempDir::new("work");
    let archive = full_archive(&src, &work);
    let digest = sha256(&raw_manifest(&src.image("app:v2")));
    let dst = Registry::start();
    let min = Fault::ChunkMinLength(400_000);
    let proxy = Proxy::start(
        &dst.addr,
        vec![
            Rule::new("POST", "/blobs/uploads/", usize::MAX, min.clone()),
            Rule::new("PATCH", "/blobs/uploads/", usize::MAX, min),
        ],
    );
    let out = imo(&[
        "push",
        "--chunk-size",
        "256K",
        s(&archive),
        &proxy.image("app:v2"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The 1.5 MB layer in four chunks (three of 400 kB), the others in one each; no body in
    // any PUT.
    assert_eq!(proxy.count("PATCH", "/blobs/uploads/"), 6, "{stderr}");
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 3);
    assert_eq!(sha256(&raw_manifest(&dst.image("app:v2"))), digest);
    copy_out(&dst.image("app:v2"));
}

/// A registry that refuses an upload before reading its body, for a reason chunks do not
/// change: its answer is the error, with its status and text, at once.
#[test]
fn an_upload_refused_before_its_body_reports_the_answer_at_once() {
    let src = source();
    let work = TempDir::new("work");
    let archive = full_archive(&src, &work);
    let dst = Registry::start();
    let refuse = Fault::RefuseBody(403, "uploads to this repository are closed".into());
    let proxy = Proxy::start(
        &dst.addr,
        vec![Rule::new("PUT", "/blobs/uploads/", usize::MAX, refuse)],
    );
    let err = imo_err(&["push", s(&archive), &proxy.image("app:v2")]);
    assert!(
        err.contains("403 denied uploads to this repository are closed"),
        "{err}"
    );
    assert!(
        !err.contains("unreachable") && !err.contains("retry"),
        "{err}"
    );
    // The first blob's PUT, and the next one's, sent while the first awaited its answer.
    let puts = proxy.count("PUT", "/blobs/uploads/");
    assert!((1..=2).contains(&puts), "{puts} PUTs: {err}");
    assert!(!exists(&dst.image("app:v2")));
}

/// A registry that takes an upload's request head, then never reads its body nor answers:
/// the push gives up once nothing more of the body is taken for `--timeout` seconds, names
/// the registry and what it did, and tags nothing.
#[test]
fn a_push_to_a_registry_that_stops_reading_the_upload_fails_and_tags_nothing() {
    use std::process::{Command, Stdio};
    use support::fake::{FakeRegistry, Pace, Reply};
    // More than the kernel's socket buffers and the host's own take, so the body stalls.
    let layout = oci_layout("v1", &[("unread-upload", 32 << 20)]);
    let work = TempDir::new("unread-upload");
    let archive = work.join("a.tar");
    let source = format!("oci:{}:v1", layout.dir.path().display());
    imo_ok(&["pull", "-q", "scratch", &source, "-o", s(&archive)]);

    let config = std::fs::read(
        layout
            .dir
            .join(&format!("blobs/sha256/{}", &layout.config_digest[7..])),
    )
    .unwrap();
    let session = "/v2/app/blobs/uploads/held";
    let started = Reply {
        status: 202,
        headers: vec![("Location".into(), session.into())],
        body: vec![],
        pace: Pace::Whole,
    };
    let held = Reply {
        pace: Pace::Hold,
        ..started.clone()
    };
    let fake = FakeRegistry::start(vec![
        // The config is there already: the layer is the one upload.
        (
            format!("/v2/app/blobs/{}", layout.config_digest),
            Reply::blob(&config),
        ),
        ("/v2/app/blobs/uploads/".into(), started),
        (session.into(), held),
    ]);
    let args = [
        "push",
        "--timeout",
        "2",
        "--retries",
        "0",
        s(&archive),
        &fake.image("app:v1"),
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_imo"))
        .args(args)
        .env("IMO_CACHE_DIR", cache_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let clock = std::time::Instant::now();
    let out = output_within(child, Duration::from_secs(60));
    let took = clock.elapsed();
    let err = failed(&args, &out);
    eprintln!("after {took:?}: {}", err.trim_end());
    assert!(took < Duration::from_secs(30), "took {took:?}: {err}");
    assert!(
        err.contains(&format!(
            "{} took no more of the request body for 2 s",
            fake.addr
        )),
        "{err}"
    );
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(&format!("PUT {session}"))),
        "{requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("/manifests/") && (r.starts_with("PUT") || r.starts_with("POST"))),
        "{requests:?}"
    );
}

/// The GET path of each blob (and manifest) an archive carries, by size, smallest first.
fn blob_gets(archive: &std::path::Path) -> Vec<&'static str> {
    let mut blobs: Vec<(String, usize)> = archive_entries(archive)
        .into_iter()
        .filter_map(|(p, data)| {
            let hex = p.strip_prefix("blobs/sha256/")?.to_owned();
            Some((hex, data.len()))
        })
        .collect();
    blobs.sort_by_key(|b| b.1);
    blobs
        .into_iter()
        .map(|(hex, _)| &*Box::leak(format!("/blobs/sha256:{hex}").into_boxed_str()))
        .collect()
}

#[test]
fn a_resumed_pull_fetches_only_what_was_cut_and_starts_over_when_the_source_changed() {
    let src = source();
    let work = TempDir::new("resume");
    // Learn the blobs' paths from a pull that goes around the proxy.
    let gets = blob_gets(&full_archive(&src, &work));
    let large = *gets.last().unwrap();
    // The large layer's answer never comes before the stop; the others land whole.
    let proxy = Proxy::start(
        &src.addr,
        vec![Rule::new(
            "GET",
            large,
            1,
            Fault::Delay(Duration::from_secs(60)),
        )],
    );
    let out = work.join("resumed.tar");
    let partial = work.join(".resumed.tar.imo-resume.partial");
    let pull = ["pull", "scratch", &proxy.image("app:v2"), "-o", s(&out)];
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_imo"))
        .args(pull)
        .arg("--resume")
        .env("IMO_CACHE_DIR", cache_dir())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while proxy.count("GET", large) == 0 {
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Time for the smaller blobs, fetched alongside, to be written.
    std::thread::sleep(Duration::from_secs(2));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = output_within(child, Duration::from_secs(20));
    let said = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(143), "{said}");
    assert!(
        said.contains("run the same pull again with --resume"),
        "{said}"
    );
    assert!(partial.exists() && !out.exists(), "{said}");

    let before: Vec<usize> = gets.iter().map(|g| proxy.count("GET", g)).collect();
    let mut args = pull.to_vec();
    args.push("--resume");
    let resumed = imo_ok(&args);
    let said = String::from_utf8_lossy(&resumed.stderr);
    let fetched: Vec<usize> = gets
        .iter()
        .zip(&before)
        .map(|(g, b)| proxy.count("GET", g) - b)
        .collect();
    let mut only_the_cut_one = vec![0; gets.len() - 1];
    only_the_cut_one.push(1);
    assert_eq!(
        fetched, only_the_cut_one,
        "only the cut blob is fetched again ({gets:?}): {said}"
    );
    // The config and the small layer kept (the manifest is no blob).
    assert!(
        said.contains("resuming: 2 blob(s)") && said.contains("; 1 blob(s),"),
        "{said}"
    );
    // And the summary counts them.
    assert!(
        said.contains("resumed: 2 blob(s)") && said.contains("kept from the partial archive"),
        "{said}"
    );
    assert!(!partial.exists());
    let whole = work.join("whole.tar");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &proxy.image("app:v2"),
        "-o",
        s(&whole),
    ]);
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&whole).unwrap(),
        "the resumed archive differs from an uninterrupted pull"
    );

    // A partial of the old v2 (here whole), after v2 changed: nothing of it is trusted.
    std::fs::rename(&out, &partial).unwrap();
    seed(
        &oci_layout("v2", &[("f-a", 300_000), ("f-c", 700_000)]),
        &src.image("app:v2"),
        None,
    );
    // Found, the partial is resumed without --resume too.
    let resumed = imo_ok(&pull);
    let said = String::from_utf8_lossy(&resumed.stderr);
    assert!(said.contains("resuming it"), "{said}");
    assert!(said.contains("different source"), "{said}");
    assert!(said.contains("starting over"), "{said}");
    assert!(said.contains("resuming: 0 blob(s)"), "{said}");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &proxy.image("app:v2"),
        "-o",
        s(&whole),
    ]);
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&whole).unwrap(),
        "the restarted archive differs from an uninterrupted pull of the new v2"
    );
}

/// A registry holding many:v1, six layers (seven blobs with the config) for a pool to share.
fn many_blobs() -> Registry {
    let src = Registry::start();
    let layers: Vec<(String, usize)> = (0..6)
        .map(|i| (format!("m-{i}"), 200_000 + 100_000 * i))
        .collect();
    let layers: Vec<(&str, usize)> = layers.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    seed(&oci_layout("v1", &layers), &src.image("many:v1"), None);
    src
}

#[test]
fn a_pull_spread_over_instances_fetches_in_all_at_once_and_writes_the_same_bytes() {
    let src = many_blobs();
    let work = TempDir::new("pool");
    // One instance fetches at most four blobs at once: five answers are held until all
    // five were asked for, which only several instances at once can do.
    let proxy = Proxy::start(
        &src.addr,
        vec![Rule::new("GET", "/blobs/sha256:", 5, Fault::Gather(5))],
    );
    let pooled = work.join("pooled.tar");
    let image = proxy.image("many:v1");
    let out = imo_ok(&[
        "pull",
        "--instances",
        "3",
        "scratch",
        &image,
        "-o",
        s(&pooled),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fetching 7 blob(s) in 3 instances"),
        "{stderr}"
    );
    assert_eq!(
        proxy.holds(),
        [true; 5],
        "five blob GETs were never in flight together"
    );
    // Each blob fetched once, the manifests once (by the instance that planned).
    assert_eq!(proxy.count("GET", "/blobs/sha256:"), 7);

    // The same reference (the proxy's, its faults spent): the archive names it.
    let single = work.join("single.tar");
    imo_ok(&[
        "pull",
        "-q",
        "--instances",
        "1",
        "scratch",
        &image,
        "-o",
        s(&single),
    ]);
    let streamed = imo_ok(&["pull", "-q", "scratch", &image, "-o", "-"]);
    let pooled = std::fs::read(&pooled).unwrap();
    assert!(
        pooled == std::fs::read(&single).unwrap(),
        "one instance wrote other bytes"
    );
    assert!(pooled == streamed.stdout, "the stream differs");
}

/// A pull to a stream spread over instances: several fetch ahead at once (one instance
/// streams one blob after another), the stream is the same bytes as one instance's, and a
/// blob lost in one share fails the pull naming it.
#[test]
fn a_pull_to_a_stream_spread_over_instances_fetches_ahead_and_writes_the_same_bytes() {
    let src = many_blobs();
    let proxy = Proxy::start(
        &src.addr,
        vec![Rule::new("GET", "/blobs/sha256:", 3, Fault::Gather(3))],
    );
    let image = proxy.image("many:v1");
    let pooled = imo_ok(&["pull", "--instances", "3", "scratch", &image, "-o", "-"]);
    let stderr = String::from_utf8_lossy(&pooled.stderr);
    assert!(
        stderr.contains("fetching 7 blob(s) in 3 instances"),
        "{stderr}"
    );
    assert_eq!(
        proxy.holds(),
        [true; 3],
        "three blob GETs were never in flight together"
    );
    assert_eq!(
        proxy.count("GET", "/blobs/sha256:"),
        7,
        "each blob fetched once"
    );
    let single = imo_ok(&[
        "pull",
        "-q",
        "--instances",
        "1",
        "scratch",
        &image,
        "-o",
        "-",
    ]);
    assert!(
        pooled.stdout == single.stdout,
        "one instance streamed other bytes"
    );

    // A rule's path lives as long as the proxy: this test's own layer digest.
    let raw: serde_json::Value =
        serde_json::from_slice(&raw_manifest(&src.image("many:v1"))).unwrap();
    let lost: &'static str = raw["layers"][2]["digest"]
        .as_str()
        .unwrap()
        .to_owned()
        .leak();
    let failing = Proxy::start(
        &src.addr,
        vec![Rule::new("GET", lost, 100, Fault::Status(500, None))],
    );
    let image = failing.image("many:v1");
    let err = imo_err(&[
        "pull",
        "-q",
        "--instances",
        "3",
        "--retries",
        "0",
        "scratch",
        &image,
        "-o",
        "-",
    ]);
    assert!(err.contains(lost), "{err}");
}

#[test]
fn a_fault_in_one_instances_share_is_retried_alone_and_a_lost_blob_fails_the_whole_pull() {
    let src = source();
    let work = TempDir::new("pool-faults");
    let full = full_archive(&src, &work);
    let gets = blob_gets(&full);
    let large = *gets.last().unwrap();
    // Three blobs over three instances: the cut one is in a share of its own.
    let proxy = Proxy::start(
        &src.addr,
        vec![Rule::new("GET", large, 1, Fault::CutResponseAfter(100_000))],
    );
    let out = work.join("out");
    std::fs::create_dir(&out).unwrap();
    let archive = out.join("cut.tar");
    let image = proxy.image("app:v2");
    let pulled = imo_ok(&[
        "pull",
        "--instances",
        "3",
        "scratch",
        &image,
        "-o",
        s(&archive),
    ]);
    let stderr = String::from_utf8_lossy(&pulled.stderr);
    assert!(stderr.contains("alone after"), "{stderr}");
    assert_eq!(proxy.faults(), 1);
    assert_eq!(
        proxy.count("GET", large),
        2,
        "the cut blob, then again alone"
    );
    // The config and the two layers, and the cut one again: no other blob fetched again.
    assert_eq!(proxy.count("GET", "/blobs/sha256:"), 4);
    // The bytes of one instance's pull through the same proxy, its fault spent.
    let single = work.join("single.tar");
    imo_ok(&[
        "pull",
        "-q",
        "--instances",
        "1",
        "scratch",
        &image,
        "-o",
        s(&single),
    ]);
    assert!(std::fs::read(&archive).unwrap() == std::fs::read(&single).unwrap());
    std::fs::remove_file(&archive).unwrap();

    // A blob that cannot be had fails the pull, and stops the other instances: no archive,
    // no temporary left.
    let proxy = Proxy::start(
        &src.addr,
        vec![Rule::new("GET", large, 100, Fault::Status(500, None))],
    );
    let image = proxy.image("app:v2");
    let err = imo_err(&[
        "pull",
        "--retries",
        "1",
        "--instances",
        "3",
        "scratch",
        &image,
        "-o",
        s(&archive),
    ]);
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(
        std::fs::read_dir(&out).unwrap().next().is_none(),
        "files left behind"
    );

    // The failure stops the others at once: the instance whose blob never answers is not
    // waited for.
    let layer = gets[gets.len() - 2];
    let proxy = Proxy::start(
        &src.addr,
        vec![
            Rule::new("GET", large, 1, Fault::Delay(Duration::from_secs(60))),
            Rule::new("GET", layer, 1, Fault::Status(500, None)),
        ],
    );
    let image = proxy.image("app:v2");
    let started = std::time::Instant::now();
    let err = imo_err(&[
        "pull",
        "--retries",
        "0",
        "--instances",
        "3",
        "scratch",
        &image,
        "-o",
        s(&archive),
    ]);
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the pull waited {:?} for the stalled instance",
        started.elapsed()
    );
    assert!(
        std::fs::read_dir(&out).unwrap().next().is_none(),
        "files left behind"
    );
}

#[test]
fn a_push_spread_over_instances_uploads_at_once_and_tags_the_same_image() {
    let src = many_blobs();
    let work = TempDir::new("push-pool");
    let archive = work.join("many.tar");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &src.image("many:v1"),
        "-o",
        s(&archive),
    ]);
    let digest = sha256(&raw_manifest(&src.image("many:v1")));
    let dst = Registry::start();
    // One instance has at most two uploads awaiting an answer (one committing, the next
    // sent): three answers are held until three uploads were sent, which only several
    // instances at once can do.
    let proxy = Proxy::start(
        &dst.addr,
        vec![Rule::new("PUT", "/blobs/uploads/", 3, Fault::Gather(3))],
    );
    let out = imo_ok(&[
        "push",
        "--instances",
        "3",
        s(&archive),
        &proxy.image("pooled/many:v1"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uploading 7 blob(s) in 3 instances"),
        "{stderr}"
    );
    assert_eq!(
        proxy.holds(),
        [true; 3],
        "three uploads were never in flight together"
    );
    // Each blob uploaded once; the manifest once.
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 7);
    assert_eq!(proxy.count("PUT", "/manifests/"), 1);
    assert_eq!(sha256(&raw_manifest(&dst.image("pooled/many:v1"))), digest);
    copy_out(&dst.image("pooled/many:v1"));
    // One summary for all: every blob uploaded, counted once, as one instance says it
    // (after the headline, which names the proxy or the registry).
    let summary = |out: &std::process::Output| -> String {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let lines = stderr.lines().filter(|l| !l.starts_with("imo: ")).skip(1);
        lines.collect::<Vec<_>>().join("\n")
    };
    let pooled = summary(&out);
    assert!(pooled.contains("uploaded 7 blob(s)"), "{pooled}");
    let single = imo_ok(&[
        "push",
        "--instances",
        "1",
        s(&archive),
        &dst.image("single/many:v1"),
    ]);
    assert_eq!(sha256(&raw_manifest(&dst.image("single/many:v1"))), digest);
    copy_out(&dst.image("single/many:v1"));
    assert_eq!(pooled, summary(&single), "the summaries differ");
    // Again, with nothing left to upload: the planner alone puts the manifest.
    let again = imo_ok(&[
        "push",
        "--instances",
        "3",
        s(&archive),
        &dst.image("pooled/many:v1"),
    ]);
    let again = summary(&again);
    assert!(
        again.contains("uploaded 0 blob(s)") && again.contains("7 already at the destination"),
        "{again}"
    );
}

#[test]
fn an_upload_failing_in_one_share_stops_the_push_and_tags_nothing() {
    let src = source();
    let work = TempDir::new("push-pool-faults");
    let archive = full_archive(&src, &work);
    let digest = sha256(&raw_manifest(&src.image("app:v2")));
    let (layer, put) = largest_blob(&archive);

    // A cut upload is resumed within its instance, alone; the push goes on.
    let dst = Registry::start();
    let proxy = Proxy::start(
        &dst.addr,
        vec![Rule::new("PUT", put, 1, Fault::CutRequestAfter(700_000))],
    );
    let out = imo_ok(&[
        "push",
        "--instances",
        "3",
        s(&archive),
        &proxy.image("app:v2"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uploading 3 blob(s) in 3 instances"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("resuming upload of blob {layer}")),
        "{stderr}"
    );
    assert_eq!(proxy.count("PUT", put), 2, "the cut upload, then again");
    assert_eq!(
        proxy.count("PUT", "/blobs/uploads/"),
        4,
        "no other blob again"
    );
    assert_eq!(sha256(&raw_manifest(&dst.image("app:v2"))), digest);
    copy_out(&dst.image("app:v2"));

    // An upload that cannot succeed stops every instance: no manifest, no tag.
    let dst = Registry::start();
    let proxy = Proxy::start(
        &dst.addr,
        vec![Rule::new("PUT", put, 100, Fault::Status(500, None))],
    );
    let err = imo_err(&[
        "push",
        "--retries",
        "1",
        "--instances",
        "3",
        s(&archive),
        &proxy.image("app:v2"),
    ]);
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(err.contains("uploading 3 blob(s) in 3 instances"), "{err}");
    assert_eq!(proxy.count("PUT", "/manifests/"), 0);
    assert!(!exists(&dst.image("app:v2")), "a tag was left");
    assert!(!exists(&dst.image(&format!("app@{digest}"))));

    // A damaged blob fails its upload as it streams: never committed, nothing tagged.
    let damaged = work.join("damaged.tar");
    let hex = layer.strip_prefix("sha256:").unwrap().to_owned();
    rewrite_entries(&archive, &damaged, |path, data| {
        if path.ends_with(&hex) {
            data[1_000_000] ^= 1;
        }
    });
    let dst = Registry::start();
    let err = imo_err(&[
        "push",
        "--instances",
        "3",
        s(&damaged),
        &dst.image("app:v2"),
    ]);
    assert!(err.contains(&format!("archive blob {layer}")), "{err}");
    assert!(err.contains("uploading 3 blob(s) in 3 instances"), "{err}");
    assert!(
        !dst.blob_file(&layer).exists(),
        "the damaged blob was committed"
    );
    assert!(!exists(&dst.image("app:v2")), "a tag was left");
}

/// A vet asks the destination about many blobs at once, in one instance: a `HEAD` costs a
/// round trip and no work, so over a distant registry asking one after another is what
/// would make it slow. Seven answers are held until all seven were asked for.
#[test]
fn a_push_asks_the_destination_about_its_blobs_all_at_once() {
    let src = many_blobs();
    let work = TempDir::new("heads");
    let archive = work.join("many.tar");
    let image = src.image("many:v1");
    imo_ok(&["pull", "-q", "scratch", &image, "-o", s(&archive)]);
    let dst = Registry::start();
    let proxy = Proxy::start(
        &dst.addr,
        vec![Rule::new("HEAD", "/blobs/sha256:", 7, Fault::Gather(7))],
    );
    let target = proxy.image("site/many:v1");
    imo_ok(&["push", "-q", "--instances", "1", s(&archive), &target]);
    assert_eq!(
        proxy.holds(),
        [true; 7],
        "seven HEADs were never in flight together"
    );
    assert_eq!(proxy.count("HEAD", "/blobs/sha256:"), 7, "each asked once");
    let digest = sha256(&raw_manifest(&image));
    assert_eq!(sha256(&raw_manifest(&dst.image("site/many:v1"))), digest);
    // Asked again, each blob is found: nothing uploaded.
    let again = imo_ok(&["push", "--instances", "1", s(&archive), &target]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("7 already at the destination"), "{stderr}");
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 7, "uploaded once");
}
