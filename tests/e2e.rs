//! Pull, vet and push end to end against real CNCF distribution registries on loopback,
//! with skopeo as the independent client that seeds images and checks the results.

mod support;

use std::path::Path;
use support::*;

/// The blobs (config, then layers) a raw manifest references.
fn manifest_blobs(raw: &[u8]) -> (String, Vec<String>) {
    let v: serde_json::Value = serde_json::from_slice(raw).unwrap();
    let config = v["config"]["digest"].as_str().unwrap().to_owned();
    let layers = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    (config, layers)
}

/// A source registry holding `app:v1` (layers a, b) and `app:v2` (a, b and a new c).
fn two_versions(format: Option<&str>) -> Registry {
    let src = Registry::start();
    let v1 = oci_layout("v1", &[("a", 300_000), ("b", 200_000)]);
    let v2 = oci_layout("v2", &[("a", 300_000), ("b", 200_000), ("c", 400_000)]);
    seed(&v1, &src.image("app:v1"), format);
    seed(&v2, &src.image("app:v2"), format);
    src
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn pull_vet_push_moves_only_the_difference() {
    let src = two_versions(None);
    let dst = Registry::start();
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");

    imo_ok(&[
        "pull",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(&archive),
    ]);

    // 1. Exactly the final's manifest, config and new layer, metadata first.
    let raw = raw_manifest(&src.image("app:v2"));
    let (config, layers) = manifest_blobs(&raw);
    let (_, base_layers) = manifest_blobs(&raw_manifest(&src.image("app:v1")));
    let entries = archive_entries(&archive);
    let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(&names[..3], &["oci-layout", "imo.json", "index.json"]);
    let manifest_entry = format!("blobs/sha256/{}", &sha256(&raw)[7..]);
    assert_eq!(
        names[3], manifest_entry,
        "the manifest comes before every blob"
    );
    assert_eq!(entries[3].1, raw, "the manifest is carried byte for byte");
    let mut carried = archive_blobs(&archive);
    carried.sort();
    let mut expected = vec![sha256(&raw), config, layers[2].clone()];
    expected.sort();
    assert_eq!(carried, expected);
    assert_eq!(&layers[..2], &base_layers[..]);

    // 2. Vet fails on an empty destination naming each missing blob, passes once it holds the base.
    let err = imo_err(&["vet", path_str(&archive), &dst.image("app:v2")]);
    for d in &base_layers {
        assert!(err.contains(d.as_str()), "vet does not name {d}: {err}");
    }
    seed(
        &oci_layout("v1", &[("a", 300_000), ("b", 200_000)]),
        &dst.image("app:v1"),
        None,
    );
    imo_ok(&["vet", path_str(&archive), &dst.image("app:v2")]);

    // 3. Push without a tag takes the final's tag; skopeo finds the same digest and every blob.
    let out = imo_ok(&["push", path_str(&archive), &dst.image("app")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("uploaded 2 blob(s)"), "{stderr}");
    assert!(stderr.contains("leaves 2 blob(s)"), "{stderr}");
    assert_eq!(sha256(&raw_manifest(&dst.image("app:v2"))), sha256(&raw));
    copy_out(&dst.image("app:v2"));

    // A second push finds everything present and uploads nothing.
    let out = imo_ok(&["push", path_str(&archive), &dst.image("app:again")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("uploaded 0 blob(s)"));
    assert_eq!(sha256(&raw_manifest(&dst.image("app:again"))), sha256(&raw));
}

#[test]
fn docker_schema2_images_stay_byte_exact() {
    let src = two_versions(Some("v2s2"));
    let dst = Registry::start();
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");
    let raw = raw_manifest(&src.image("app:v2"));
    let media_type =
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap()["mediaType"].clone();
    assert_eq!(
        media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    imo_ok(&[
        "pull",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(&archive),
    ]);
    let entries = archive_entries(&archive);
    assert!(
        entries.iter().any(|(_, data)| data == &raw),
        "the schema 2 manifest is carried unconverted"
    );

    // The destination gets the base through skopeo, the difference through imo.
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}", src.image("app:v1")),
        &format!("docker://{}", dst.image("app:v1")),
    ]);
    imo_ok(&["push", path_str(&archive), &dst.image("app:v2")]);
    assert_eq!(raw_manifest(&dst.image("app:v2")), raw);
    copy_out(&dst.image("app:v2"));
}

#[test]
fn scratch_base_gives_a_complete_archive() {
    let src = two_versions(None);
    let dst = Registry::start();
    let work = TempDir::new("work");
    let archive = work.join("full.tar");
    imo_ok(&[
        "pull",
        "scratch",
        &src.image("app:v2"),
        "-o",
        path_str(&archive),
    ]);

    let raw = raw_manifest(&src.image("app:v2"));
    let (config, layers) = manifest_blobs(&raw);
    let mut carried = archive_blobs(&archive);
    carried.sort();
    let mut expected = vec![sha256(&raw), config];
    expected.extend(layers);
    expected.sort();
    assert_eq!(carried, expected);

    // The archive is an OCI archive any tool reads: skopeo copies the image out of it.
    let out = TempDir::new("oci-out");
    skopeo(&[
        "copy",
        "-q",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}:x", out.path().display()),
    ]);

    imo_ok(&["vet", path_str(&archive), &dst.image("fresh/app:v2")]);
    imo_ok(&["push", path_str(&archive), &dst.image("fresh/app:v2")]);
    assert_eq!(
        sha256(&raw_manifest(&dst.image("fresh/app:v2"))),
        sha256(&raw)
    );
    copy_out(&dst.image("fresh/app:v2"));
}

#[test]
fn archive_streams_through_stdout_and_stdin() {
    let src = two_versions(None);
    let dst = Registry::start();
    let work = TempDir::new("work");
    let from_file = work.join("file.tar");
    imo_ok(&[
        "pull",
        "-q",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(&from_file),
    ]);
    let out = imo_ok(&[
        "pull",
        "-q",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        "-",
    ]);
    assert_eq!(
        out.stdout,
        std::fs::read(&from_file).unwrap(),
        "stdout and file archives are identical"
    );

    seed(
        &oci_layout("v1", &[("a", 300_000), ("b", 200_000)]),
        &dst.image("app:v1"),
        None,
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_imo"))
        .args(["push", "-q", "-", &dst.image("app:v2")])
        .env("IMO_CACHE_DIR", cache_dir())
        .stdin(std::fs::File::open(&from_file).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        raw_manifest(&dst.image("app:v2")),
        raw_manifest(&src.image("app:v2"))
    );
}

#[test]
fn a_corrupt_blob_in_the_registry_leaves_no_archive() {
    let src = two_versions(None);
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");
    let (_, layers) = manifest_blobs(&raw_manifest(&src.image("app:v2")));
    let file = src.blob_file(&layers[2]);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let err = imo_err(&[
        "pull",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(&archive),
    ]);
    assert!(
        err.contains("digest mismatch") && err.contains(&layers[2]),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(left.is_empty(), "a failed pull left files behind: {left:?}");
}

#[test]
fn a_corrupt_blob_in_the_archive_pushes_no_tag() {
    let src = two_versions(None);
    let dst = Registry::start();
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");
    imo_ok(&[
        "pull",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(&archive),
    ]);
    seed(
        &oci_layout("v1", &[("a", 300_000), ("b", 200_000)]),
        &dst.image("app:v1"),
        None,
    );

    // Flip one byte in the middle of the new layer's data, found with the tar crate.
    let (_, layers) = manifest_blobs(&raw_manifest(&src.image("app:v2")));
    let target = format!("blobs/sha256/{}", &layers[2][7..]);
    let mut a = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    let (offset, size) = a
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().to_str() == Some(&target))
        .map(|e| (e.raw_file_position(), e.size()))
        .unwrap();
    let mut bytes = std::fs::read(&archive).unwrap();
    bytes[(offset + size / 2) as usize] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();

    let err = imo_err(&["push", path_str(&archive), &dst.image("app:v2")]);
    assert!(
        err.contains("digest mismatch") && err.contains(&layers[2]),
        "{err}"
    );
    assert!(!exists(&dst.image("app:v2")), "a failed push left a tag");
    assert!(!exists(&dst.image(&format!(
        "app@{}",
        sha256(&raw_manifest(&src.image("app:v2")))
    ))));
}

#[test]
fn damaged_archives_and_bad_references_are_refused_clearly() {
    let dst = Registry::start();
    let work = TempDir::new("work");
    let empty = work.join("empty.tar");
    std::fs::write(&empty, b"").unwrap();
    let err = imo_err(&["vet", path_str(&empty), &dst.image("app:v1")]);
    assert!(
        err.contains("invalid archive") && err.contains("empty"),
        "{err}"
    );
    let junk = work.join("junk.tar");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let err = imo_err(&["push", path_str(&junk), &dst.image("app:v1")]);
    assert!(err.contains("invalid archive"), "{err}");

    let err = imo_err(&[
        "pull",
        "scratch",
        "127.0.0.1:5000/App:v1",
        "-o",
        path_str(&work.join("x.tar")),
    ]);
    assert!(err.contains("path component \"App\""), "{err}");
    let err = imo_err(&[
        "pull",
        "scratch",
        "app:-bad",
        "-o",
        path_str(&work.join("x.tar")),
    ]);
    assert!(err.contains("tag \"-bad\""), "{err}");
    let err = imo_err(&[
        "pull",
        "scratch",
        &dst.image("missing:v1"),
        "-o",
        path_str(&work.join("x.tar")),
    ]);
    assert!(
        err.contains("not found") && err.contains("MANIFEST_UNKNOWN"),
        "{err}"
    );
    assert!(!work.join("x.tar").exists());
}

/// imo's component travels as a Wasm OCI artifact: pushed to a registry, carried across in an
/// archive like any image, pulled out on the far side, and run there by the wasmtime CLI.
#[test]
fn the_component_runs_under_the_wasmtime_cli() {
    let src = two_versions(None);
    let site = Registry::start();
    let work = TempDir::new("work");
    let embedded = work.join("embedded.wasm");
    imo_ok(&["component", "-o", path_str(&embedded)]);
    imo_ok(&["component", "push", &src.image("tools/imo:v1")]);
    let raw: serde_json::Value =
        serde_json::from_slice(&raw_manifest(&src.image("tools/imo:v1"))).unwrap();
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(raw["layers"].as_array().unwrap().len(), 1);
    assert_eq!(raw["layers"][0]["mediaType"], "application/wasm");
    let carried = work.join("imo-artifact.tar");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &src.image("tools/imo:v1"),
        "-o",
        path_str(&carried),
    ]);
    imo_ok(&[
        "push",
        "-q",
        path_str(&carried),
        &site.image("tools/imo:v1"),
    ]);
    copy_out(&site.image("tools/imo:v1"));
    let wasm = work.join("imo.wasm");
    imo_ok(&[
        "component",
        "pull",
        &site.image("tools/imo:v1"),
        "-o",
        path_str(&wasm),
    ]);
    assert!(
        std::fs::read(&wasm).unwrap() == std::fs::read(&embedded).unwrap(),
        "the component pulled is the one embedded, byte for byte"
    );
    // An image is not a component.
    let err = imo_err(&[
        "component",
        "pull",
        &src.image("app:v2"),
        "-o",
        path_str(&work.join("x.wasm")),
    ]);
    assert!(err.contains("not a Wasm artifact"), "{err}");
    assert!(!work.join("x.wasm").exists());
    imo_ok(&[
        "pull",
        "-q",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(&work.join("host.tar")),
    ]);

    let out = std::process::Command::new("wasmtime")
        .args(["run", "-S", "http", "--dir"])
        .arg(format!("{}::/work", work.path().display()))
        .arg(&wasm)
        .args([
            "pull",
            "-q",
            &src.image("app:v1"),
            &src.image("app:v2"),
            "-o",
            "/work/wasi.tar",
        ])
        .output()
        .expect("running the wasmtime CLI (cargo install wasmtime-cli@48.0.8 --locked)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(work.join("wasi.tar")).unwrap(),
        std::fs::read(work.join("host.tar")).unwrap(),
        "the bare component and the imo host write the same archive"
    );

    let out = std::process::Command::new("wasmtime")
        .args(["run", "-S", "http", "--dir"])
        .arg(format!("{}::/work", work.path().display()))
        .arg(&wasm)
        .args(["vet", "/work/wasi.tar", &src.image("app:v2")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A registry that takes the connection and never answers: the bare component gives up after
/// the `--timeout` it set on its requests, rather than waiting for the runner's own limit.
#[test]
fn the_bare_component_gives_up_on_a_silent_registry() {
    use std::io::Read;
    // HTTPS attempts (a TLS handshake starts with 0x16) are cut at once; plain HTTP ones
    // are held open, unanswered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut first = [0u8; 1];
                if conn.read_exact(&mut first).is_ok() && first[0] != 0x16 {
                    std::thread::sleep(std::time::Duration::from_secs(120));
                }
            });
        }
    });
    let work = TempDir::new("work");
    let wasm = work.join("imo.wasm");
    imo_ok(&["component", "-o", path_str(&wasm)]);

    let started = std::time::Instant::now();
    let mut child = std::process::Command::new("wasmtime")
        .args(["run", "-S", "http"])
        .arg(&wasm)
        .args(["--timeout", "1", "--retries", "1", "inventory"])
        .arg(format!("{addr}/app"))
        .args(["-o", "-"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running the wasmtime CLI (cargo install wasmtime-cli@48.0.8 --locked)");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("still waiting on a silent registry after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("the registry stopped answering")
            && stderr.contains("no answer within 1 s")
            && stderr.contains(&format!("GET http://{addr}/v2/")),
        "{stderr}"
    );
    assert!(
        stderr.contains("retrying"),
        "a timeout is retried: {stderr}"
    );
}

#[test]
fn blobs_in_another_repository_are_mounted_not_uploaded() {
    let src = two_versions(None);
    let dst = Registry::start();
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");
    imo_ok(&[
        "pull",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(&archive),
    ]);
    let full = work.join("full.tar");
    imo_ok(&[
        "pull",
        "scratch",
        &src.image("app:v2"),
        "-o",
        path_str(&full),
    ]);
    let raw = raw_manifest(&src.image("app:v2"));

    // The mirror keeps the base under another name: vet fails unless told where to look.
    seed(
        &oci_layout("v1", &[("a", 300_000), ("b", 200_000)]),
        &dst.image("mirror/base:v1"),
        None,
    );
    imo_err(&["vet", path_str(&archive), &dst.image("mirror/app:v2")]);
    imo_ok(&[
        "vet",
        "--mount-from",
        "mirror/base",
        path_str(&archive),
        &dst.image("mirror/app:v2"),
    ]);
    // A push that uploads and mounts as many blobs as said, and lands the source's manifest.
    let push = |args: &[&str], uploaded: &str, mounted: &str, destination: &str| {
        let out = imo_ok(&[&["push"], args, &[&dst.image(destination)]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(uploaded) && stderr.contains(mounted),
            "{stderr}"
        );
        assert_eq!(raw_manifest(&dst.image(destination)), raw);
        copy_out(&dst.image(destination));
    };
    push(
        &["--mount-from", "mirror/base", path_str(&archive)],
        "uploaded 2 blob(s)",
        "2 mounted",
        "mirror/app:v2",
    );

    // The archive's own base repository path (`app`) is tried when the user trusts the
    // archive with it, and a full archive mounts what it would otherwise upload.
    seed(
        &oci_layout("v1", &[("a", 300_000), ("b", 200_000)]),
        &dst.image("app:v1"),
        None,
    );
    let trusted = ["--mount-from-archive", path_str(&archive)];
    push(&trusted, "", "2 mounted", "copy/app:v2");
    push(
        &["--mount-from", "mirror/app", path_str(&full)],
        "uploaded 0 blob(s)",
        "4 mounted",
        "third/app:v2",
    );
}

/// A TCP relay on 127.0.0.1 in front of `upstream` that counts the connections it accepts.
fn counting_relay(upstream: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    (addr, count)
}

#[test]
fn vet_asks_about_every_blob_over_a_few_connections() {
    let src = Registry::start();
    let layers: Vec<(String, usize)> = (0..24).map(|i| (format!("l{i}"), 10_000)).collect();
    let spec: Vec<(&str, usize)> = layers.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let v1 = oci_layout("v1", &spec);
    let mut v2_spec = spec.clone();
    v2_spec.push(("new", 10_000));
    let v2 = oci_layout("v2", &v2_spec);
    seed(&v1, &src.image("app:v1"), None);
    seed(&v2, &src.image("app:v2"), None);
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");
    imo_ok(&[
        "pull",
        "-q",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(&archive),
    ]);

    let upstream = src.image("");
    let (relay, connections) = counting_relay(upstream.trim_end_matches('/').to_owned());
    imo_ok(&["vet", "-q", path_str(&archive), &format!("{relay}/app:v1")]);
    let n = connections.load(std::sync::atomic::Ordering::SeqCst);
    // An HTTPS probe, the plain-HTTP ping, then 24 HEADs, up to eight at once: one
    // connection each would be 26; reused, they are about those eight and the probe's (a
    // few more if a connection was not free again in time).
    assert!(
        (1..=12).contains(&n),
        "vet of 24 omitted blobs opened {n} connections"
    );
}

#[test]
fn a_whole_repository_is_inventoried_where_page_sizes_or_tag_lists_are_refused() {
    use support::proxy::{Fault, Proxy, Rule};
    let src = two_versions(None);
    let work = TempDir::new("inventory-quirks");
    let inventory = |reference: &str, name: &str| {
        let out = work.join(name);
        imo_ok(&["inventory", "-q", reference, "-o", path_str(&out)]);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        // The registry's address differs through the proxy; what it holds does not.
        v.as_object_mut().unwrap().remove("sources");
        v
    };
    let direct = inventory(&src.image("app"), "direct.json");
    assert_eq!(direct["manifests"].as_array().unwrap().len(), 2, "{direct}");

    // A registry that answers any tag list asking for a page size with a 404 web page.
    let refusing = Proxy::start(
        &src.addr,
        vec![Rule::new("GET", "/tags/list?n=", 10, Fault::HtmlPage(404))],
    );
    assert_eq!(inventory(&refusing.image("app"), "refusing.json"), direct);
    assert_eq!(refusing.faults(), 1, "asked once with ?n=, then without");
    assert_eq!(refusing.count("GET", "/v2/app/tags/list"), 2);

    // One without the tag list endpoint: said as such, the page described, not pasted.
    let lacking = Proxy::start(
        &src.addr,
        vec![Rule::new("GET", "/tags/list", 10, Fault::HtmlPage(404))],
    );
    let err = imo_err(&[
        "inventory",
        &lacking.image("app"),
        "-o",
        path_str(&work.join("lacking.json")),
    ]);
    assert!(
        err.contains(&format!(
            "{} answered 404 to GET /v2/app/tags/list without a registry error code \
             (a web page titled \"Error 404\"): it may not implement this endpoint",
            lacking.addr
        )),
        "{err}"
    );
    assert!(
        !err.contains("<!DOCTYPE") && !err.contains("not found"),
        "{err}"
    );
    assert!(
        !work.join("lacking.json").exists(),
        "no inventory is written"
    );
}

/// A symlink planted at the name a temporary file once had (`FILE.partial`) is not followed,
/// by imo nor by the bare component under the wasmtime CLI: each makes its own file.
#[test]
fn a_planted_symlink_at_a_temporary_name_is_not_followed() {
    let v1 = oci_layout("v1", &[("a", 1_000)]);
    let work = TempDir::new("symlink");
    let victim = work.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let wasm = work.join("imo.wasm");
    imo_ok(&["component", "-o", path_str(&wasm)]);
    for name in ["host.json", "wasi.json"] {
        std::os::unix::fs::symlink("victim", work.join(&format!("{name}.partial"))).unwrap();
    }
    let source = format!("oci:{}:v1", v1.dir.path().display());
    imo_ok(&[
        "inventory",
        "-q",
        &source,
        "-o",
        path_str(&work.join("host.json")),
    ]);
    let out = std::process::Command::new("wasmtime")
        .args(["run", "-S", "http", "--dir"])
        .arg(format!("{}::/work", work.path().display()))
        .arg("--dir")
        .arg(format!("{}::/src", v1.dir.path().display()))
        .arg(&wasm)
        .args(["inventory", "-q", "oci:/src:v1", "-o", "/work/wasi.json"])
        .output()
        .expect("running the wasmtime CLI (cargo install wasmtime-cli@48.0.8 --locked)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&victim).unwrap()),
        "precious",
        "the target is untouched"
    );
    for name in ["host.json", "wasi.json"] {
        let written = work.join(name);
        assert!(
            std::fs::symlink_metadata(&written).unwrap().is_file(),
            "{name} is a file of its own"
        );
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
        assert_eq!(v["imoInventoryVersion"], 1, "{name}: {v}");
    }
}

/// Sends `signal` to `child` with `kill`.
fn kill(signal: &str, child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to 30 s for `dir` to hold a file whose name satisfies `found`.
fn wait_for_file(dir: &Path, found: impl Fn(&str) -> bool) {
    let started = std::time::Instant::now();
    while !std::fs::read_dir(dir)
        .map(|d| d.flatten().any(|e| found(&e.file_name().to_string_lossy())))
        .unwrap_or(false)
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no such file in {} after 30 s",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A pull stopped by SIGTERM while its blobs trickle in removes its temporary file and says
/// it was stopped (143, as a shell reports the signal).
#[test]
fn a_pull_stopped_by_sigterm_leaves_no_temporary_file() {
    use support::proxy::{Fault, Proxy, Rule};
    let src = two_versions(None);
    let slow = Proxy::start(
        &src.addr,
        vec![Rule::new(
            "GET",
            "/blobs/",
            10,
            Fault::Delay(std::time::Duration::from_secs(60)),
        )],
    );
    let work = TempDir::new("sigterm-pull");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_imo"))
        .args(["pull", "-q", &slow.image("app:v1"), &slow.image("app:v2")])
        .arg("-o")
        .arg(work.join("diff.tar"))
        .env("IMO_CACHE_DIR", cache_dir())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(work.path(), |n| n.ends_with(".partial"));
    // Until a blob is asked for: the pull is well under way.
    let started = std::time::Instant::now();
    while slow.count("GET", "/blobs/") == 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    kill("-TERM", &child);
    let out = output_within(child, std::time::Duration::from_secs(20));
    assert_eq!(
        out.status.code(),
        Some(143),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "a stopped pull left {left:?}");
}

/// `imo ARGS… -` with `stdin` as its standard input.
fn imo_with_stdin(args: &[&str], stdin: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_imo"))
        .args(args)
        .env("IMO_CACHE_DIR", cache_dir())
        .stdin(std::fs::File::open(stdin).unwrap())
        .output()
        .unwrap()
}

/// The files of `names` in `dir`, one after another, as `cat` would write them.
fn cat(dir: &Path, names: &[&str], into: &Path) {
    let mut all = vec![];
    for n in names {
        all.extend(std::fs::read(dir.join(n)).unwrap());
    }
    std::fs::write(into, all).unwrap();
}

/// A pull into volumes: three of at most the size asked, which are the archive byte for byte
/// once their headers are taken off. Verify, vet and push read the set from its first volume,
/// from all of them in any order, from their directory or as one stream; a missing, foreign,
/// swapped, cut or damaged volume is named, and nothing is tagged.
#[test]
fn volumes_carry_an_archive_in_pieces_and_a_bad_one_is_named() {
    let src = two_versions(None);
    let dst = Registry::start();
    let work = TempDir::new("volumes");
    let whole = work.join("whole.tar");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &src.image("app:v2"),
        "-o",
        path_str(&whole),
    ]);
    let media = work.join("media");
    std::fs::create_dir(&media).unwrap();
    let base = media.join("update.tar");
    let pulled = imo_ok(&[
        "pull",
        "scratch",
        &src.image("app:v2"),
        "-o",
        path_str(&base),
        "--volume-size",
        "400K",
    ]);
    assert!(
        String::from_utf8_lossy(&pulled.stderr).contains("wrote 3 volume(s)"),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&media)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["update.tar.001", "update.tar.002", "update.tar.003"]
    );
    let mut joined = vec![];
    for (i, n) in names.iter().enumerate() {
        let bytes = std::fs::read(media.join(n)).unwrap();
        assert!(bytes.len() <= 400 << 10, "{n} is {} bytes", bytes.len());
        let head = String::from_utf8_lossy(&bytes[..512]);
        assert!(head.starts_with("imo volume 1\n"), "{head}");
        assert!(head.contains(&format!("volume {} of 3\n", i + 1)), "{head}");
        joined.extend_from_slice(&bytes[512..]);
    }
    assert!(
        joined == std::fs::read(&whole).unwrap(),
        "the volumes, headers off, are the archive byte for byte"
    );
    let first = media.join("update.tar.001");
    let verified = imo_ok(&["verify", path_str(&first)]);
    assert!(String::from_utf8_lossy(&verified.stdout).contains("good:"));
    let listed = imo_ok(&["ls", path_str(&first)]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("app:v2"));

    // From the first volume, from the directory, from every volume in any order, and from
    // `cat update.tar.* | imo push -`: the same image each time.
    let source = raw_manifest(&src.image("app:v2"));
    imo_ok(&["vet", path_str(&first), &dst.image("app:v2")]);
    imo_ok(&["push", "-q", path_str(&first), &dst.image("app:v2")]);
    imo_ok(&["push", "-q", path_str(&media), &dst.image("app:dir")]);
    let v = |n: &str| media.join(n).to_str().unwrap().to_owned();
    let (one, two, three) = (
        v("update.tar.001"),
        v("update.tar.002"),
        v("update.tar.003"),
    );
    imo_ok(&["push", "-q", &three, &one, &two, &dst.image("app:all")]);
    let stream = work.join("stream");
    cat(
        &media,
        &["update.tar.001", "update.tar.002", "update.tar.003"],
        &stream,
    );
    let out = imo_with_stdin(&["push", "-q", "-", &dst.image("app:cat")], &stream);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for tag in ["v2", "dir", "all", "cat"] {
        assert_eq!(raw_manifest(&dst.image(&format!("app:{tag}"))), source);
    }
    copy_out(&dst.image("app:cat"));

    // Each bad set fails before a tag is put, naming the volume.
    let refused = |args: &[&str], tag: &str, says: &[&str]| {
        let mut all = args.to_vec();
        let dest = dst.image(&format!("app:{tag}"));
        all.push(&dest);
        let err = imo_err(&all);
        for s in says {
            assert!(err.contains(s), "{tag}: {s:?} not in {err}");
        }
        assert!(!exists(&dest), "{tag}: a tag was put");
    };
    let copy = |dir: &str, edit: &dyn Fn(&Path)| {
        let to = work.join(dir);
        std::fs::create_dir(&to).unwrap();
        for n in &names {
            std::fs::copy(media.join(n), to.join(n)).unwrap();
        }
        edit(&to);
        to
    };
    let missing = copy("missing", &|d| {
        std::fs::remove_file(d.join("update.tar.002")).unwrap()
    });
    let m1 = missing.join("update.tar.001");
    for cmd in ["vet", "push"] {
        refused(
            &[cmd, path_str(&m1)],
            "missing",
            &["volume(s) 2 of the 3", "update.tar.002"],
        );
    }
    // A volume of another pull: found beside the first it is passed over; named, refused.
    let other = work.join("other");
    std::fs::create_dir(&other).unwrap();
    let other_base = other.join("update.tar");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &src.image("app:v1"),
        "-o",
        path_str(&other_base),
    ]);
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &src.image("app:v1"),
        "-o",
        path_str(&other_base),
        "--volume-size",
        "200K",
    ]);
    let foreign = other.join("update.tar.002");
    std::fs::copy(&foreign, missing.join("update.tar.002")).unwrap();
    refused(
        &["push", path_str(&m1)],
        "foreign",
        &[
            "volume(s) 2 of the 3",
            "update.tar.002 there is volume 2 of another set",
        ],
    );
    refused(
        &["push", &one, path_str(&foreign), &three],
        "foreign",
        &["update.tar.002 belongs to another set"],
    );
    let swapped = work.join("swapped");
    cat(
        &media,
        &["update.tar.001", "update.tar.003", "update.tar.002"],
        &swapped,
    );
    let out = imo_with_stdin(&["push", "-q", "-", &dst.image("app:swapped")], &swapped);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("volume 3 of 3 came where volume 2 of 3 belongs"),
        "{err}"
    );
    assert!(!exists(&dst.image("app:swapped")));
    let cut = copy("cut", &|d| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("update.tar.003"))
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 1000).unwrap();
    });
    refused(
        &["push", path_str(&cut.join("update.tar.001"))],
        "cut",
        &["update.tar.003 (volume 3 of 3) is cut short"],
    );
    // A flipped byte inside a layer: the component finds the layer wrong first; the volume
    // is what the message names.
    let damaged = copy("damaged", &|d| {
        let p = d.join("update.tar.002");
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&p, bytes).unwrap();
    });
    let d1 = damaged.join("update.tar.001");
    refused(
        &["push", path_str(&d1)],
        "damaged",
        &["update.tar.002 (volume 2 of 3) is damaged", "copy it again"],
    );
    let out = imo(&["verify", path_str(&d1)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("problem: ") && text.contains("update.tar.002 (volume 2 of 3) is damaged"),
        "{text}"
    );

    // One disc at a time: a volume alone is checked alone.
    let alone = work.join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(damaged.join("update.tar.002"), alone.join("update.tar.002")).unwrap();
    std::fs::copy(media.join("update.tar.003"), alone.join("update.tar.003")).unwrap();
    let out = imo(&["verify", path_str(&alone.join("update.tar.003"))]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("volume 3 of 3 of set sha256:") && text.contains("intact"),
        "{text}"
    );
    assert!(text.contains("checked each volume alone"), "{text}");
    // The head is in the first volume: `ls` needs no other.
    let lone = work.join("lone");
    std::fs::create_dir(&lone).unwrap();
    std::fs::copy(&first, lone.join("update.tar.001")).unwrap();
    let listed = imo_ok(&["ls", path_str(&lone.join("update.tar.001"))]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("app:v2"));
    let out = imo(&["verify", path_str(&alone.join("update.tar.002"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(volume 2 of 3) is damaged"));
}

/// An archive given as a named pipe (as `<(…)` gives one) is read once, as it comes: looking
/// at its first bytes to tell an archive from volumes must not lose them. A plain archive and a
/// stream of volumes alike.
#[test]
fn an_archive_through_a_named_pipe_is_read_as_it_comes() {
    let src = two_versions(None);
    let dst = Registry::start();
    let work = TempDir::new("pipe");
    let whole = work.join("whole.tar");
    let final_ = src.image("app:v2");
    imo_ok(&["pull", "-q", "scratch", &final_, "-o", path_str(&whole)]);
    let set = work.join("set.tar");
    let volume_size = ["--volume-size", "400K"];
    imo_ok(
        &[
            &["pull", "-q", "scratch", &final_, "-o", path_str(&set)][..],
            &volume_size,
        ]
        .concat(),
    );
    let mut stream = vec![];
    for i in 1..=3 {
        stream.extend(std::fs::read(work.join(&format!("set.tar.{i:03}"))).unwrap());
    }
    for (name, bytes) in [
        ("plain", std::fs::read(&whole).unwrap()),
        ("volumes", stream),
    ] {
        let fifo = work.join(&format!("{name}.fifo"));
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let path = fifo.clone();
        let writer = std::thread::spawn(move || std::fs::write(path, bytes));
        let push = std::process::Command::new(env!("CARGO_BIN_EXE_imo"))
            .args([
                "push",
                "-q",
                path_str(&fifo),
                &dst.image(&format!("app:{name}")),
            ])
            .env("IMO_CACHE_DIR", cache_dir())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = output_within(push, std::time::Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        writer.join().unwrap().unwrap();
        assert_eq!(
            raw_manifest(&dst.image(&format!("app:{name}"))),
            raw_manifest(&final_)
        );
    }
}
