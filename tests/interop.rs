//! The same jobs against several registry servers: CNCF distribution (Go), zuul-registry
//! (Python; token auth served by itself, TLS, one blob store for every repository) and
//! container-registry (Rust; Basic auth, `ns/name` repositories, no tag list, no indexes).
//! Each module runs the main job (pull of the difference, vet, push, then skopeo: the same
//! manifest bytes, every blob fetchable), a multi-platform image, a Docker schema 2 image, a
//! bundle of two images sharing a layer, an inventory, and auth (plus TLS where the server
//! has it), and asks the server itself (with curl) the requests servers answer differently.
//! Where a server lacks a feature the test says so and checks imo's error. README's
//! compatibility table reports what these tests measure. Repositories are `org/NAME`
//! everywhere, as container-registry takes no other shape.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use support::servers::{Kind, Server, Setup, imo_on};
use support::*;

/// Runs `imo` with the server's credentials and certificate, and requires success.
fn ok(server: &Server, args: &[&str]) -> Output {
    let out = imo_on(server, args);
    assert!(
        out.status.success(),
        "imo {args:?} against {:?} failed: {}\nserver log (tail): {}",
        server.kind,
        String::from_utf8_lossy(&out.stderr),
        tail(&server.log())
    );
    out
}

/// Runs `imo` with the server's credentials and certificate; it must fail cleanly. Its stderr.
fn err(server: &Server, args: &[&str]) -> String {
    failed(args, &imo_on(server, args))
}

fn tail(log: &str) -> &str {
    let start = log.len().saturating_sub(2000);
    let start = (start..log.len())
        .find(|i| log.is_char_boundary(*i))
        .unwrap_or(0);
    &log[start..]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("--json prints a summary")
}

/// Two versions of an image: v2 adds one layer to v1's two. Small, so a run takes seconds.
fn app_versions() -> (Layout, Layout) {
    (
        oci_layout("v1", &[("base", 4096), ("lib", 2048)]),
        oci_layout("v2", &[("base", 4096), ("lib", 2048), ("app", 3072)]),
    )
}

/// The destination serves `reference` with exactly the manifest `digest` names, and skopeo
/// fetches and verifies every blob under it (every platform).
fn same_image(server: &Server, reference: &str, digest: &str) {
    let raw = server.raw_manifest(reference);
    assert_eq!(
        sha256(&raw),
        digest,
        "{:?} serves {reference} byte for byte",
        server.kind
    );
    server.copy_out(reference);
}

/// Pull of the difference from one server, vet and push into another of the same kind that
/// holds v1, then skopeo's check.
fn main_job(kind: Kind, setup: Setup<'_>) {
    let (v1, v2) = app_versions();
    let src = Server::start_with(kind, setup);
    let dst = Server::start_with(kind, setup);
    src.seed(v1.dir.path(), "v1", "org/app:v1", None);
    src.seed(v2.dir.path(), "v2", "org/app:v2", None);
    dst.seed(v1.dir.path(), "v1", "org/app:v1", None);
    let work = TempDir::new("interop-main");
    let diff = work.join("diff.tar");

    ok(
        &src,
        &[
            "pull",
            "-q",
            &src.image("org/app:v1"),
            &src.image("org/app:v2"),
            "-o",
            s(&diff),
        ],
    );
    let carried: BTreeSet<String> = archive_blobs(&diff).into_iter().collect();
    let expected: BTreeSet<String> = [&v2.manifest_digest, &v2.config_digest, &v2.layer_digests[2]]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(
        carried, expected,
        "the archive carries v2's manifest, config and new layer only"
    );

    ok(&dst, &["vet", "-q", s(&diff), &dst.image("org/app:v2")]);
    let pushed = json(&ok(
        &dst,
        &["push", "--json", s(&diff), &dst.image("org/app:v2")],
    ));
    assert_eq!(pushed["blobs_uploaded"], 2, "{pushed}");
    same_image(&dst, "org/app:v2", &v2.manifest_digest);
}

/// An OCI index over two platforms sharing a layer.
fn multi_platform_layout() -> (TempDir, String, Vec<String>) {
    let dir = oci_index_layout(
        "v1",
        &[
            PlatformImage {
                platform: "linux/amd64",
                layers: &[("shared", 4096), ("amd", 2048)],
            },
            PlatformImage {
                platform: "linux/arm64",
                layers: &[("shared", 4096), ("arm", 2048)],
            },
        ],
    );
    let outer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let index = outer["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let inner: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(&format!("blobs/sha256/{}", &index[7..]))).unwrap(),
    )
    .unwrap();
    let children = inner["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    (dir, index, children)
}

fn multi_platform(kind: Kind) {
    let (layout, index, children) = multi_platform_layout();
    let work = TempDir::new("interop-multi");
    let all = work.join("all.tar");
    let dst = Server::start(kind);

    if kind == Kind::ContainerRegistry {
        // It stores image manifests only (it parses each as one, and never stores a manifest
        // under its digest), so no registry of its kind can be the source: pull from the
        // layout, and expect the push of the index to be refused, clearly.
        let source = format!("oci:{}:v1", layout.path().display());
        imo_ok(&["pull", "-q", "scratch", &source, "-o", s(&all)]);
        let e = err(&dst, &["push", s(&all), &dst.image("org/multi:v1")]);
        assert!(
            e.contains(&dst.addr) && e.contains("manifest") && e.contains("400"),
            "the refusal names the registry, the manifest and the status: {e}"
        );
        // One platform travels as its own image manifest, digest unchanged.
        let one = work.join("one.tar");
        imo_ok(&[
            "pull",
            "-q",
            "--platform",
            "linux/arm64",
            "scratch",
            &source,
            "-o",
            s(&one),
        ]);
        ok(&dst, &["push", "-q", s(&one), &dst.image("org/multi:v1")]);
        same_image(&dst, "org/multi:v1", &children[1]);
        return;
    }

    let src = Server::start(kind);
    src.seed(layout.path(), "v1", "org/multi:v1", None);
    ok(
        &src,
        &[
            "pull",
            "-q",
            "scratch",
            &src.image("org/multi:v1"),
            "-o",
            s(&all),
        ],
    );
    ok(&dst, &["vet", "-q", s(&all), &dst.image("org/multi:v1")]);
    ok(&dst, &["push", "-q", s(&all), &dst.image("org/multi:v1")]);
    same_image(&dst, "org/multi:v1", &index);
    for child in &children {
        same_image(&dst, &format!("org/multi@{child}"), child);
    }
}

/// A Docker schema 2 image (skopeo converts the layout), carried whole: the destination
/// serves the source's exact bytes.
fn docker_v2s2(kind: Kind) {
    let (_, v2) = app_versions();
    let src = Server::start(kind);
    let dst = Server::start(kind);
    src.seed(v2.dir.path(), "v2", "org/docker:v2", Some("v2s2"));
    let raw = src.raw_manifest("org/docker:v2");
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let work = TempDir::new("interop-docker");
    let full = work.join("full.tar");
    ok(
        &src,
        &[
            "pull",
            "-q",
            "scratch",
            &src.image("org/docker:v2"),
            "-o",
            s(&full),
        ],
    );
    ok(&dst, &["vet", "-q", s(&full), &dst.image("org/docker:v2")]);
    ok(&dst, &["push", "-q", s(&full), &dst.image("org/docker:v2")]);
    same_image(&dst, "org/docker:v2", &sha256(&raw));
}

/// Two images sharing a layer in one archive, pushed under the registry as a prefix. The
/// shared layer is uploaded once, then mounted into the other repository where the server
/// mounts (distribution); zuul-registry (404) and container-registry (202 with an upload
/// session) decline mounts, and the push goes on without one.
fn bundle(kind: Kind) {
    let app = oci_layout("v2", &[("shared", 4096), ("app", 2048)]);
    let tool = oci_layout("v2", &[("shared", 4096), ("tool", 2048)]);
    let src = Server::start(kind);
    let dst = Server::start(kind);
    src.seed(app.dir.path(), "v2", "org/app:v2", None);
    src.seed(tool.dir.path(), "v2", "org/tool:v2", None);
    let work = TempDir::new("interop-bundle");
    let bundle = work.join("bundle.tar");
    ok(
        &src,
        &[
            "pull",
            "-q",
            "scratch",
            &src.image("org/app:v2"),
            &src.image("org/tool:v2"),
            "-o",
            s(&bundle),
        ],
    );
    ok(&dst, &["vet", "-q", s(&bundle), &dst.addr]);
    let pushed = json(&ok(&dst, &["push", "--json", s(&bundle), &dst.addr]));
    let mounted = if kind == Kind::Distribution { 1 } else { 0 };
    assert_eq!(pushed["blobs_mounted"], mounted, "{pushed}");
    same_image(&dst, "org/app:v2", &app.manifest_digest);
    same_image(&dst, "org/tool:v2", &tool.manifest_digest);
}

/// An inventory of a whole repository. container-registry has no tag list: that inventory
/// fails, saying so, and one of the tags named works.
fn inventory(kind: Kind) {
    let (v1, v2) = app_versions();
    let src = Server::start(kind);
    src.seed(v1.dir.path(), "v1", "org/app:v1", None);
    src.seed(v2.dir.path(), "v2", "org/app:v2", None);
    let work = TempDir::new("interop-inventory");
    let inv = work.join("inventory.json");

    if kind == Kind::ContainerRegistry {
        let e = err(
            &src,
            &["inventory", "-q", &src.image("org/app"), "-o", s(&inv)],
        );
        assert!(
            e.contains("tags/list")
                && e.contains("org/app")
                && e.contains("404")
                && e.contains("may not implement this endpoint"),
            "the error says the registry answered 404 for the tag list: {e}"
        );
        assert!(!inv.exists());
        ok(
            &src,
            &[
                "inventory",
                "-q",
                &src.image("org/app:v1"),
                &src.image("org/app:v2"),
                "-o",
                s(&inv),
            ],
        );
    } else {
        ok(
            &src,
            &["inventory", "-q", &src.image("org/app"), "-o", s(&inv)],
        );
    }

    let inventory: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&inv).unwrap()).unwrap();
    let blobs: BTreeSet<&str> = inventory["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    let mut held = BTreeSet::new();
    for l in [&v1, &v2] {
        held.insert(l.config_digest.as_str());
        held.extend(l.layer_digests.iter().map(String::as_str));
    }
    assert_eq!(blobs, held, "every config and layer of both tags");
    let tags: BTreeSet<&str> = inventory["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["tags"].as_array().unwrap())
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, BTreeSet::from(["org/app:v1", "org/app:v2"]));
}

/// A server that checks a password: no credentials and a wrong password are refused with a
/// message saying so (and the password is never printed); the right one pulls, and pushes
/// into another repository of the same server.
fn auth(kind: Kind) {
    let (v1, _) = app_versions();
    let server = Server::start_with(
        kind,
        Setup {
            password: Some("interop-pass"),
            ..Setup::default()
        },
    );
    server.seed(v1.dir.path(), "v1", "org/app:v1", None);
    let work = TempDir::new("interop-auth");
    let full = work.join("full.tar");
    let image = server.image("org/app:v1");

    let e = imo_err(&["pull", "-q", "scratch", &image, "-o", s(&full)]);
    assert!(
        e.contains("not authorized") && e.contains("credentials"),
        "without credentials: {e}"
    );
    let e = imo_err(&[
        "pull",
        "-q",
        "--creds",
        "imo:wrong-pass",
        "scratch",
        &image,
        "-o",
        s(&full),
    ]);
    assert!(
        e.contains("not authorized") && e.contains("credentials") && !e.contains("wrong-pass"),
        "with a wrong password: {e}"
    );
    assert!(!full.exists());

    ok(&server, &["pull", "-q", "scratch", &image, "-o", s(&full)]);
    ok(
        &server,
        &["push", "-q", s(&full), &server.image("org/copy:v1")],
    );
    same_image(&server, "org/copy:v1", &v1.manifest_digest);
}

/// A self-signed certificate made as the usual recipe makes it (`CA:TRUE`, presented by the
/// server as its own): (certificate, key).
fn self_signed(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// The main job over HTTPS with a self-signed certificate given to `--cert-dir` (with
/// zuul-registry, its token service is on the same TLS port).
fn tls(kind: Kind) {
    let certs = TempDir::new("interop-certs");
    let (cert, key) = self_signed(&certs);
    main_job(
        kind,
        Setup {
            tls: Some((&cert, &key)),
            ..Setup::default()
        },
    );
}

/// What the server itself answers, asked with curl: the facts behind the table in README and
/// behind imo's behaviour with each server. Per server: (monolithic `PUT` of a whole blob,
/// the final `PUT` after `PATCH` chunks, a cross-repository mount `POST`, `tags/list?n=`,
/// `tags/list`, the `PUT` of an OCI index), as HTTP statuses.
fn protocol(kind: Kind) {
    let expected: [u16; 6] = match kind {
        Kind::Distribution => [201, 201, 201, 200, 200, 201],
        // Mounts and unknown query parameters: a 404 web page.
        Kind::Zuul => [201, 201, 404, 404, 200, 201],
        // A PUT with a body: 500 "missing content length not implemented"; a mount: 202 and a
        // new upload session; no tag list at all; an index: 400, as it parses every manifest
        // as an image manifest.
        Kind::ContainerRegistry => [500, 201, 202, 404, 404, 400],
    };
    let (v1, _) = app_versions();
    let server = Server::start(kind);
    server.seed(v1.dir.path(), "v1", "org/probe:v1", None);
    let base = format!("http://{}", server.addr);
    let auth: Vec<String> = match kind {
        Kind::Distribution => vec![],
        Kind::ContainerRegistry => vec!["-u".into(), server.creds.clone().unwrap()],
        Kind::Zuul => {
            // Its token service: a push scope checks the password.
            let (_, _, body) = curl(
                &["-u".into(), server.creds.clone().unwrap()],
                "GET",
                &format!("{base}/auth/token?scope=repository:org/probe:pull,push"),
                None,
                &[],
            );
            let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
            vec![
                "-H".into(),
                format!("Authorization: Bearer {}", token["token"].as_str().unwrap()),
            ]
        }
    };
    let url = |location: &str| {
        if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location.to_owned()
        }
    };
    let start = |repo: &str| {
        let (status, headers, _) = curl(
            &auth,
            "POST",
            &format!("{base}/v2/{repo}/blobs/uploads/"),
            Some(b""),
            &[],
        );
        assert_eq!(status, 202, "{kind:?} starts an upload");
        url(&header(&headers, "location").expect("an upload location"))
    };
    let with_digest = |location: &str, digest: &str| {
        let sep = if location.contains('?') { '&' } else { '?' };
        format!("{location}{sep}digest={digest}")
    };

    let whole = b"one whole blob";
    let location = start("org/probe");
    let (monolithic, _, _) = curl(
        &auth,
        "PUT",
        &with_digest(&location, &sha256(whole)),
        Some(whole),
        &["Content-Type: application/octet-stream"],
    );

    let mut location = start("org/probe");
    let (mut offset, chunks) = (0, [&b"in two"[..], &b" chunks"[..]]);
    for chunk in chunks {
        let range = format!("Content-Range: {offset}-{}", offset + chunk.len() - 1);
        let (status, headers, _) = curl(
            &auth,
            "PATCH",
            &location,
            Some(chunk),
            &[&range, "Content-Type: application/octet-stream"],
        );
        assert_eq!(status, 202, "{kind:?} takes a PATCH chunk");
        location = url(&header(&headers, "location").unwrap_or(location));
        offset += chunk.len();
    }
    let chunked_digest = sha256(&chunks.concat());
    let (chunked, _, _) = curl(
        &auth,
        "PUT",
        &with_digest(&location, &chunked_digest),
        Some(b""),
        &[],
    );

    let (mount, _, _) = curl(
        &auth,
        "POST",
        &format!("{base}/v2/org/other/blobs/uploads/?mount={chunked_digest}&from=org/probe"),
        Some(b""),
        &[],
    );
    let (paged, _, _) = curl(
        &auth,
        "GET",
        &format!("{base}/v2/org/probe/tags/list?n=10"),
        None,
        &[],
    );
    let (tags, _, _) = curl(
        &auth,
        "GET",
        &format!("{base}/v2/org/probe/tags/list"),
        None,
        &[],
    );
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": v1.manifest_digest,
            "size": server.raw_manifest("org/probe:v1").len(),
            "platform": {"os": "linux", "architecture": "amd64"},
        }],
    }))
    .unwrap();
    let (index, _, _) = curl(
        &auth,
        "PUT",
        &format!("{base}/v2/org/probe/manifests/index"),
        Some(&index),
        &["Content-Type: application/vnd.oci.image.index.v1+json"],
    );
    assert_eq!(
        [monolithic, chunked, mount, paged, tags, index],
        expected,
        "{kind:?}: [monolithic PUT, PATCH then PUT, mount, tags/list?n=, tags/list, index PUT]"
    );
}

/// One request with curl: status, response headers, body.
fn curl(
    auth: &[String],
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    headers: &[&str],
) -> (u16, String, Vec<u8>) {
    let work = TempDir::new("curl");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "-D"])
        .arg(work.join("headers"))
        .arg("-o")
        .arg(work.join("body"))
        .args(["-w", "%{http_code}"])
        .args(auth);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        std::fs::write(work.join("data"), b).unwrap();
        cmd.arg("--data-binary")
            .arg(format!("@{}", work.join("data").display()));
    }
    let out = cmd.arg(url).output().expect("running curl");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (
        status,
        std::fs::read_to_string(work.join("headers")).unwrap_or_default(),
        std::fs::read(work.join("body")).unwrap_or_default(),
    )
}

fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

macro_rules! interop {
    ($module:ident, $kind:expr $(, $extra:item)*) => {
        mod $module {
            use super::*;
            const KIND: Kind = $kind;

            #[test]
            fn main_job() {
                super::main_job(KIND, Setup::default());
            }

            #[test]
            fn multi_platform() {
                super::multi_platform(KIND);
            }

            #[test]
            fn docker_v2s2() {
                super::docker_v2s2(KIND);
            }

            #[test]
            fn bundle() {
                super::bundle(KIND);
            }

            #[test]
            fn inventory() {
                super::inventory(KIND);
            }

            #[test]
            fn auth() {
                super::auth(KIND);
            }

            #[test]
            fn protocol() {
                super::protocol(KIND);
            }

            $($extra)*
        }
    };
}

interop!(
    distribution,
    Kind::Distribution,
    #[test]
    fn tls() {
        super::tls(KIND);
    }
);

interop!(
    zuul,
    Kind::Zuul,
    #[test]
    fn tls() {
        super::tls(KIND);
    }
);

// container-registry serves plain HTTP only: it has no TLS test.
interop!(container_registry, Kind::ContainerRegistry);
