//! Layer deltas against real CNCF distribution registries: `pull --deltas` carries what
//! changed inside layers, `push` rebuilds the exact blobs, and skopeo finds the same manifest
//! and every layer byte for byte. Damaged deltas, wrong sources and unknown rebuilders fail
//! naming the layer and leave no tag.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use support::*;

/// Text-like bytes (words from a small vocabulary, seeded): what gzip meets in layers.
fn text(seed: &str, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "def",
        "return",
        "self",
        "import",
        "from",
        "class",
        "if",
        "else",
        "for",
        "in",
        "not",
        "None",
        "True",
        "value",
        "result",
        "config",
        "layer",
        "image",
        "registry",
        "digest",
        "(",
        ")",
        ":",
        "=",
        "==",
        "+",
        "[",
        "]",
        ",",
        ".",
        "\n",
        "\n    ",
        "\n        ",
    ];
    let noise = bytes_for(seed, len);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        let w = WORDS[usize::from(noise[i % noise.len()]) % WORDS.len()];
        out.extend_from_slice(w.as_bytes());
        out.push(b' ');
        i += 1;
    }
    out.truncate(len);
    out
}

/// A tree of `count` text files of 1–16 KiB, named by `seed`.
fn tree(seed: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let size = 1024 + usize::from(bytes_for(&format!("{seed}{i}"), 2)[0]) * 60;
            (
                format!("usr/lib/{seed}/dir{}/file{i}.py", i % 7),
                text(&format!("{seed}-{i}"), size),
            )
        })
        .collect()
}

/// A layer tar of `files` (ustar, fixed metadata, as image builders write them).
fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// `plain` compressed by GNU gzip (the zlib family's encoder), as `docker save`-era tools and
/// many CI pipelines write layers.
fn gnu_gzip(plain: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-n", "-6"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let input = plain.to_vec();
    let feed = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    feed.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// `plain` compressed by Go's compress/gzip at its default level, as Docker and BuildKit write
/// layers: a small Go program, built once per test run.
fn go_gzip(plain: &[u8]) -> Vec<u8> {
    static TOOL: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let tool = TOOL.get_or_init(|| {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gogz");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("main.go"),
            "package main\n\nimport (\n\t\"bufio\"\n\t\"compress/gzip\"\n\t\"io\"\n\t\"os\"\n)\n\n\
             func main() {\n\tout := bufio.NewWriter(os.Stdout)\n\tw := gzip.NewWriter(out)\n\t\
             if _, err := io.Copy(w, os.Stdin); err != nil {\n\t\tpanic(err)\n\t}\n\t\
             w.Close()\n\tout.Flush()\n}\n",
        )
        .unwrap();
        let built = Command::new("go")
            .args(["build", "-o", "gogz", "main.go"])
            .current_dir(&dir)
            .status()
            .expect("running go (apt-get install golang-go; scripts/setup does)");
        assert!(built.success(), "go build of the gzip tool failed");
        dir.join("gogz")
    });
    let mut child = Command::new(tool)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = plain.to_vec();
    let feed = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    feed.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Two versions of an image. v1: a gzip layer of a source tree, an uncompressed layer of
/// another and a layer of a third written by Go. v2: the same tree with three files changed
/// and one added (gzip), the other with one file changed (tar), the third with one file
/// changed (Go's gzip), a new layer of random bytes (gzip: no delta can be small) and a zstd
/// layer (no rebuilder).
struct Versions {
    v1: Layout,
    v2: Layout,
}

fn versions() -> Versions {
    let lib = tree("lib", 400);
    let etc = tree("etc", 60);
    let mut lib2 = lib.clone();
    for i in [17, 150, 333] {
        lib2[i]
            .1
            .extend_from_slice(b"\n# patched for CVE-2026-0001\n");
    }
    lib2.insert(200, ("usr/lib/lib/new.py".into(), text("new", 3000)));
    let mut etc2 = etc.clone();
    etc2[10].1[100..120].copy_from_slice(b"changed in version 2");
    let app = tree("app", 150);
    let mut app2 = app.clone();
    app2[75].1.extend_from_slice(b"\n# built by BuildKit\n");

    let (lib_tar, lib2_tar) = (tar_of(&lib), tar_of(&lib2));
    let (etc_tar, etc2_tar) = (tar_of(&etc), tar_of(&etc2));
    let (app_tar, app2_tar) = (tar_of(&app), tar_of(&app2));
    let random_tar = tar_of(&[("opt/blob.bin".into(), bytes_for("random", 300_000))]);
    let zstd_blob = bytes_for("zstd", 50_000);
    let v1 = layout_of(
        "v1",
        &[
            (GZIP, gnu_gzip(&lib_tar), lib_tar),
            (TAR, etc_tar.clone(), etc_tar),
            (GZIP, go_gzip(&app_tar), app_tar),
        ],
    );
    let v2 = layout_of(
        "v2",
        &[
            (GZIP, gnu_gzip(&lib2_tar), lib2_tar),
            (TAR, etc2_tar.clone(), etc2_tar),
            (GZIP, gnu_gzip(&random_tar), random_tar),
            (ZSTD, zstd_blob.clone(), zstd_blob),
            (GZIP, go_gzip(&app2_tar), app2_tar),
        ],
    );
    Versions { v1, v2 }
}

/// A source registry with both versions, and a site registry holding v1 as `site/app:v1`.
fn registries(v: &Versions) -> (Registry, Registry) {
    let src = Registry::start();
    seed(&v.v1, &src.image("app:v1"), None);
    seed(&v.v2, &src.image("app:v2"), None);
    let site = Registry::start();
    seed(&v.v1, &site.image("site/app:v1"), None);
    (src, site)
}

/// A change to one archive entry, by its path.
type Edit<'a> = Box<dyn Fn(&str, &mut Vec<u8>) + 'a>;

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pull_with_deltas(src: &Registry, archive: &Path) -> serde_json::Value {
    json_of(&imo_ok(&[
        "pull",
        "--deltas",
        "--json",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(archive),
    ]))
}

#[test]
fn a_delta_archive_pushes_every_layer_byte_exact() {
    let v = versions();
    let (src, site) = registries(&v);
    let work = TempDir::new("work");
    let (deltas, whole) = (work.join("deltas.tar"), work.join("whole.tar"));

    let summary = pull_with_deltas(&src, &deltas);
    imo_ok(&[
        "pull",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(&whole),
    ]);

    // How each layer travelled: the changed gzip and tar layers as small deltas, the random
    // and zstd layers whole, each with its reason.
    let layers = summary["layers"].as_array().unwrap();
    let by_layer = |d: &str| layers.iter().find(|l| l["layer"] == d).unwrap();
    let l = &v.v2.layer_digests;
    // A delta of the layer, under `limit` of its size.
    let as_delta = |d: &str, limit: f64| {
        let t = by_layer(d);
        let ratio = t["delta_size"].as_f64().unwrap() / t["size"].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio < limit, "delta ratio {ratio}: {t}");
    };
    // The layer whole, for a reason that says `why`.
    let went_whole = |d: &str, why: &str| {
        let t = by_layer(d);
        assert_eq!(t["delta_size"], 0, "{t}");
        assert!(t["whole_because"].as_str().unwrap().contains(why), "{t}");
    };
    as_delta(&l[0], 0.02);
    as_delta(&l[1], 0.02);
    went_whole(&l[2], "too large");
    went_whole(&l[3], "no rebuilder");
    // Go's gzip, rebuilt by imo's re-encoder of it: no correction data at all.
    as_delta(&l[4], 0.01);

    // The archive holds the deltas instead of the three layers, and is much smaller.
    let blobs = archive_blobs(&deltas);
    assert!(!blobs.contains(&l[0]) && !blobs.contains(&l[1]) && !blobs.contains(&l[4]));
    assert!(blobs.contains(&l[2]) && blobs.contains(&l[3]));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(
        size(&deltas) * 2 < size(&whole),
        "{} vs {}",
        size(&deltas),
        size(&whole)
    );
    // Written to a stream, the same bytes.
    let streamed = imo_ok(&[
        "pull",
        "-q",
        "--deltas",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        "-",
    ]);
    assert!(streamed.stdout == std::fs::read(&deltas).unwrap());
    // The offline check passes it, and lists the deltas' sources as what the site must hold.
    let verified = imo_ok(&["verify", path_str(&deltas)]);
    let report = String::from_utf8_lossy(&verified.stdout);
    assert!(
        report.contains(&v.v1.layer_digests[0]) && report.contains("source of the delta"),
        "{report}"
    );

    let dest = site.image("site/app:v2");
    imo_ok(&["vet", path_str(&deltas), &dest]);
    let pushed = json_of(&imo_ok(&["push", "--json", path_str(&deltas), &dest]));
    assert_eq!(pushed["layers_rebuilt"], 3);
    // skopeo finds the same manifest, and fetches (and verifies) every blob.
    assert_eq!(
        sha256(&raw_manifest(&dest)),
        sha256(&raw_manifest(&src.image("app:v2")))
    );
    copy_out(&dest);
    for d in l {
        let stored = std::fs::read(site.blob_file(d)).unwrap();
        assert_eq!(sha256(&stored), *d);
    }
}

#[test]
fn damaged_deltas_wrong_sources_and_unknown_rebuilders_fail_naming_the_layer() {
    let v = versions();
    let (src, site) = registries(&v);
    let work = TempDir::new("work");
    let archive = work.join("deltas.tar");
    pull_with_deltas(&src, &archive);
    let gz_layer = &v.v2.layer_digests[0];
    let meta: serde_json::Value = serde_json::from_slice(
        &archive_entries(&archive)
            .into_iter()
            .find(|(p, _)| p == "imo.json")
            .unwrap()
            .1,
    )
    .unwrap();
    let gz_delta = meta["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["layer"]["digest"] == *gz_layer)
        .unwrap()["delta"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();

    // A site without the base: vet names the source layer the delta needs.
    let bare = Registry::start();
    let err = imo_err(&["vet", path_str(&archive), &bare.image("site/app:v2")]);
    assert!(
        err.contains(&v.v1.layer_digests[0]) && err.contains("carried as a delta"),
        "{err}"
    );

    let tries: Vec<(&str, Edit<'_>, &str)> = vec![
        (
            // A byte of the delta's op stream flipped.
            "damaged",
            Box::new(|path: &str, data: &mut Vec<u8>| {
                if path.ends_with(&gz_delta[7..]) {
                    let at = data.len() - 40;
                    data[at] ^= 0x20;
                }
            }),
            "",
        ),
        (
            "rebuilder",
            Box::new(|path: &str, data: &mut Vec<u8>| {
                if path == "imo.json" {
                    let text = String::from_utf8(data.clone()).unwrap();
                    *data = text
                        .replace("gzip+preflate-rs/0.7.6", "gzip+zopfli/1")
                        .into_bytes();
                }
            }),
            "gzip+zopfli/1",
        ),
        (
            "diff-id",
            Box::new(|path: &str, data: &mut Vec<u8>| {
                if path == "imo.json" {
                    let mut m: serde_json::Value = serde_json::from_slice(data).unwrap();
                    for d in m["deltas"].as_array_mut().unwrap() {
                        d["diffId"] = sha256(b"another tar").into();
                    }
                    *data = serde_json::to_vec(&m).unwrap();
                }
            }),
            "diff_id",
        ),
    ];
    for (name, edit, expected) in tries {
        let crafted = work.join(&format!("{name}.tar"));
        rewrite_entries(&archive, &crafted, edit);
        let dest = site.image(&format!("site/app:{name}"));
        let err = imo_err(&["push", path_str(&crafted), &dest]);
        assert!(
            err.contains("could not be rebuilt from its delta") && err.contains(expected),
            "{name}: {err}"
        );
        assert!(!exists(&dest), "{name}: the tag was pushed");
        assert!(
            !site.blob_file(gz_layer).exists(),
            "{name}: a wrong layer was stored"
        );
    }

    // The site's copy of the source layer is damaged on disk: the layer does not rebuild.
    let source = site.blob_file(&v.v1.layer_digests[0]);
    let mut bytes = std::fs::read(&source).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&source, bytes).unwrap();
    let dest = site.image("site/app:v2");
    let err = imo_err(&["push", path_str(&archive), &dest]);
    assert!(
        err.contains(gz_layer.as_str()) && err.contains(&v.v1.layer_digests[0]),
        "{err}"
    );
    assert!(!exists(&dest));
}
