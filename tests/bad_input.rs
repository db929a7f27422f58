//! Bad input, end to end through the `imo` command: damaged archives given to vet and push,
//! malformed references given to every command, registries that answer with the wrong
//! bytes, wrong credentials and a token service that is down. Each case must end in exit
//! status 1 with an error naming the problem and where it is, without a panic, with nothing
//! tagged at the destination and no archive left by a failed pull.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::fake::{FakeRegistry, Pace, Reply, Routes};
use support::token::{Account, TokenServer};
use support::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// A size no archive entry here has: 1 TiB, written in the header's base-256 form.
const HUGE: u64 = 1 << 40;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// Running imo
// ---------------------------------------------------------------------------------------

/// Runs `imo` with no auth file in reach, so the command line is the only source of
/// credentials.
fn run(args: &[&str]) -> Output {
    run_within(args, Duration::from_secs(600))
}

/// [`run`], killing `imo` and failing the test if it runs past `limit`.
fn run_within(args: &[&str], limit: Duration) -> Output {
    let home = TempDir::new("home");
    let child = Command::new(env!("CARGO_BIN_EXE_imo"))
        .args(args)
        .env("IMO_CACHE_DIR", cache_dir())
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", home.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    output_within(child, limit)
}

fn succeeds(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "imo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `imo`, expecting exit status 1 with one error line and no panic; returns stderr.
fn fails(args: &[&str]) -> String {
    fails_within(args, Duration::from_secs(600))
}

/// [`fails`], within `limit`.
fn fails_within(args: &[&str], limit: Duration) -> String {
    let stderr = failed(args, &run_within(args, limit));
    assert!(
        stderr.contains("imo: error: "),
        "imo {args:?} printed no error: {stderr}"
    );
    stderr
}

/// Asserts that `err` holds every one of `says`.
fn says(context: &str, err: &str, says: &[String]) {
    for want in says {
        assert!(
            err.contains(want.as_str()),
            "{context}: expected {want:?} in: {err}"
        );
    }
}

/// The names of the files in `dir`.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// Talking to a registry directly, to see what a failed push left behind
// ---------------------------------------------------------------------------------------

/// One request to a plain-HTTP registry; the status and the body.
fn http(addr: &str, method: &str, path: &str, creds: Option<&str>) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = creds
        .map(|c| {
            format!(
                "Authorization: Basic {}\r\n",
                imo_guest::base64::encode(c.as_bytes())
            )
        })
        .unwrap_or_default();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {OCI_MANIFEST}, {OCI_INDEX}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer from {addr}: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Asserts, through the registry's API, that `repository` has no tag and no manifest
/// `manifest`.
fn assert_nothing_tagged(addr: &str, repository: &str, manifest: &str, creds: Option<&str>) {
    let (status, body) = http(addr, "GET", &format!("/v2/{repository}/tags/list"), creds);
    assert!(
        status == 404 || (status == 200 && !body.contains("\"tags\":[\"")),
        "{repository} has tags after a failed push: {status} {body}"
    );
    let (status, _) = http(
        addr,
        "GET",
        &format!("/v2/{repository}/manifests/{manifest}"),
        creds,
    );
    assert_eq!(
        status, 404,
        "manifest {manifest} is in {repository} after a failed push"
    );
}

fn assert_blob_absent(addr: &str, repository: &str, digest: &str) {
    let (status, _) = http(
        addr,
        "HEAD",
        &format!("/v2/{repository}/blobs/{digest}"),
        None,
    );
    assert_eq!(
        status, 404,
        "blob {digest} was committed to {repository} from a bad archive"
    );
}

// ---------------------------------------------------------------------------------------
// Archives, taken apart and put back together (with the tar crate's headers, filled in by
// hand where a bad archive needs what the tar crate would refuse to write)
// ---------------------------------------------------------------------------------------

/// One tar entry: a regular file (`b'0'`), or a link (`b'1'`, `b'2'`) to `link`.
#[derive(Clone, Debug)]
struct Entry {
    path: String,
    data: Vec<u8>,
    kind: u8,
    link: String,
    /// The size its header declares, when not the data's length.
    declared: Option<u64>,
}

impl Entry {
    fn file(path: &str, data: &[u8]) -> Self {
        Entry {
            path: path.into(),
            data: data.to_vec(),
            kind: b'0',
            link: String::new(),
            declared: None,
        }
    }

    fn link(path: &str, kind: u8, target: &str) -> Self {
        Entry {
            kind,
            link: target.into(),
            ..Entry::file(path, b"")
        }
    }
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", &digest[7..])
}

/// An archive's entries, with the byte offsets of each header and of its data.
fn entries_of(bytes: &[u8]) -> Vec<(Entry, u64, u64)> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let (header, data_at) = (e.raw_header_position(), e.raw_file_position());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (Entry::file(&path, &data), header, data_at)
        })
        .collect()
}

fn write_tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(e.declared.unwrap_or(e.data.len() as u64));
        h.set_entry_type(tar::EntryType::new(e.kind));
        // Written by hand: the tar crate rightly refuses `..` and absolute names.
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// An image made here: a config, layers and the manifest naming them.
struct Image {
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

impl Image {
    fn new(seed: &str, layer_sizes: &[usize]) -> Self {
        let layers: Vec<Vec<u8>> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, n)| bytes_for(&format!("{seed}-{i}"), *n))
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256(l)).collect::<Vec<_>>()},
            "config": {"Labels": {"imo.test.seed": seed}},
        }))
        .unwrap();
        let manifest = Self::manifest_for(&config, &layers, OCI_MANIFEST);
        Image {
            config,
            layers,
            manifest,
        }
    }

    fn manifest_for(config: &[u8], layers: &[Vec<u8>], media_type: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor(OCI_CONFIG, config),
            "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    /// A complete (scratch) archive of this image, as `imo pull` would write it, recording
    /// `reference` as the image pulled.
    fn archive(&self, reference: &str) -> Vec<u8> {
        let top = descriptor(OCI_MANIFEST, &self.manifest);
        let mut blobs = vec![descriptor(OCI_CONFIG, &self.config)];
        blobs.extend(self.layers.iter().map(|l| descriptor(OCI_LAYER, l)));
        let meta = serde_json::json!({
            "imoArchiveVersion": 2,
            "images": [{"reference": reference, "manifest": self.digest()}],
            "manifests": [top],
            "blobs": blobs,
            "omitted": [],
        });
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]});
        let mut entries = vec![
            Entry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            Entry::file("imo.json", &serde_json::to_vec(&meta).unwrap()),
            Entry::file("index.json", &serde_json::to_vec(&index).unwrap()),
            Entry::file(&blob_path(&self.digest()), &self.manifest),
            Entry::file(&blob_path(&sha256(&self.config)), &self.config),
        ];
        for l in &self.layers {
            entries.push(Entry::file(&blob_path(&sha256(l)), l));
        }
        write_tar(&entries)
    }
}

// ---------------------------------------------------------------------------------------
// Damaged archives
// ---------------------------------------------------------------------------------------

/// A source holding app:v1 (layer a) and app:v2 (a and a new b), a destination holding
/// app:v1, and the good difference archive of v2 over v1.
struct Archives {
    _src: Registry,
    dst: Registry,
    work: TempDir,
    good: Vec<u8>,
    manifest: String,
    config: String,
    base_layer: String,
    new_layer: String,
}

fn archives() -> Archives {
    let src = Registry::start();
    let v1 = oci_layout("v1", &[("bad-a", 120_000)]);
    let v2 = oci_layout("v2", &[("bad-a", 120_000), ("bad-b", 180_000)]);
    seed(&v1, &src.image("app:v1"), None);
    seed(&v2, &src.image("app:v2"), None);
    let dst = Registry::start();
    seed(&v1, &dst.image("app:v1"), None);
    let work = TempDir::new("bad-archives");
    let file = work.join("good.tar");
    succeeds(&[
        "pull",
        "-q",
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        s(&file),
    ]);
    let good = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let fx = Archives {
        _src: src,
        dst,
        work,
        good,
        manifest: v2.manifest_digest.clone(),
        config: v2.config_digest.clone(),
        base_layer: v2.layer_digests[0].clone(),
        new_layer: v2.layer_digests[1].clone(),
    };
    // The entries imo pull writes, in its order: what the cases below take apart.
    let names: Vec<String> = fx.entries().into_iter().map(|e| e.path).collect();
    assert_eq!(
        names,
        [
            "oci-layout".to_owned(),
            "imo.json".into(),
            "index.json".into(),
            blob_path(&fx.manifest),
            blob_path(&fx.config),
            blob_path(&fx.new_layer),
        ]
    );
    // The archive put back together by this file's writer vets and pushes: every failure
    // below comes from the damage alone.
    let rewritten = fx.work.join("rewritten.tar");
    std::fs::write(&rewritten, write_tar(&fx.entries())).unwrap();
    // The base layer the archive leaves out is in `app`, which the user names.
    let control = fx.dst.image("control/app:v2");
    succeeds(&["vet", "-q", "--mount-from", "app", s(&rewritten), &control]);
    succeeds(&["push", "-q", "--mount-from", "app", s(&rewritten), &control]);
    let (status, _) = http(
        &fx.dst.addr,
        "GET",
        &format!("/v2/control/app/manifests/{}", fx.manifest),
        None,
    );
    assert_eq!(status, 200, "the control push did not arrive");
    // What assert_nothing_tagged looks for, where a push did tag.
    let (_, tags) = http(&fx.dst.addr, "GET", "/v2/control/app/tags/list", None);
    assert!(tags.contains("\"tags\":[\"v2\"]"), "{tags}");
    fx
}

impl Archives {
    fn entries(&self) -> Vec<Entry> {
        entries_of(&self.good)
            .into_iter()
            .map(|(e, _, _)| e)
            .collect()
    }

    /// The good archive's entries, changed by `f` and written out again.
    fn edited(&self, f: impl FnOnce(&mut Vec<Entry>)) -> Vec<u8> {
        let mut entries = self.entries();
        f(&mut entries);
        write_tar(&entries)
    }

    /// Offsets of the header and the data of the entry at `path` in the good archive.
    fn offsets(&self, path: &str) -> (usize, usize) {
        entries_of(&self.good)
            .into_iter()
            .find(|(e, _, _)| e.path == path)
            .map(|(_, h, d)| (h as usize, d as usize))
            .unwrap()
    }

    fn position(entries: &[Entry], path: &str) -> usize {
        entries.iter().position(|e| e.path == path).unwrap()
    }
}

/// One damaged archive. `head` damage lies in what vet reads (everything up to the last
/// manifest) and must fail vet as well as push; damage further on is push's to find, as vet
/// reads only the head of an archive (`push-vet` in wit/imo.wit).
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    head: bool,
    says: Vec<String>,
    /// A blob of the archive that must not reach the destination.
    withheld: Option<String>,
}

fn case(name: &'static str, bytes: Vec<u8>, head: bool, says: &[&str]) -> Case {
    Case {
        name,
        bytes,
        head,
        says: says.iter().map(|s| (*s).to_owned()).collect(),
        withheld: None,
    }
}

fn refuse_each(fx: &Archives, cases: Vec<Case>) {
    for (i, case) in cases.into_iter().enumerate() {
        let file = fx.work.join(&format!("case{i}.tar"));
        std::fs::write(&file, &case.bytes).unwrap();
        let repository = format!("case{i}/app");
        let dest = fx.dst.image(&format!("{repository}:v2"));
        let commands: &[&str] = if case.head {
            &["vet", "push"]
        } else {
            &["push"]
        };
        for command in commands {
            let err = fails(&[command, "-q", "--mount-from", "app", s(&file), &dest]);
            eprintln!("{} ({command}): {}", case.name, err.trim_end());
            says(&format!("{} ({command})", case.name), &err, &case.says);
        }
        assert_nothing_tagged(&fx.dst.addr, &repository, &fx.manifest, None);
        if let Some(d) = &case.withheld {
            assert_blob_absent(&fx.dst.addr, &repository, d);
        }
    }
}

#[test]
fn empty_foreign_and_truncated_archives_are_refused() {
    let fx = archives();
    let good = &fx.good;
    let (index_header, _) = fx.offsets("index.json");
    let (_, meta_data) = fx.offsets("imo.json");
    let (_, layer_data) = fx.offsets(&blob_path(&fx.new_layer));
    let gzipped = {
        let mut child = Command::new("gzip")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gzip");
        child.stdin.take().unwrap().write_all(good).unwrap();
        child.wait_with_output().unwrap().stdout
    };
    let header_at = format!("ends inside a header at byte {index_header}");
    let cut_in_blob = layer_data + 90_000;
    let in_blob = format!("{:?}", blob_path(&fx.new_layer));
    let mut cases = vec![
        case(
            "empty file",
            vec![],
            true,
            &["invalid archive", "the archive is empty"],
        ),
        case(
            "not a tar",
            b"this is a text file, not an archive\n".repeat(60),
            true,
            &["invalid archive", "entry header at byte 0"],
        ),
        case(
            "gzip-compressed",
            gzipped,
            true,
            &["invalid archive", "gzip", "decompress"],
        ),
        case(
            "cut inside the header of index.json",
            good[..index_header + 100].to_vec(),
            true,
            &["invalid archive", &header_at, "truncated"],
        ),
        case(
            "cut inside imo.json",
            good[..meta_data + 20].to_vec(),
            true,
            &["invalid archive", "\"imo.json\"", "truncated"],
        ),
        case(
            "cut inside a blob",
            good[..cut_in_blob].to_vec(),
            false,
            &["invalid archive", &in_blob, "truncated"],
        ),
        case(
            "cut at the last byte",
            good[..good.len() - 1].to_vec(),
            false,
            &["invalid archive", "end-of-archive", "truncated"],
        ),
    ];
    cases[5].withheld = Some(fx.new_layer.clone());
    refuse_each(&fx, cases);
}

#[test]
fn archives_missing_or_repeating_parts_are_refused() {
    let fx = archives();
    let meta = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut entries = fx.entries();
        let mut v: serde_json::Value = serde_json::from_slice(&entries[1].data).unwrap();
        f(&mut v);
        entries[1].data = serde_json::to_vec(&v).unwrap();
        entries
    };
    // imo.json moves the new layer from carried to left out, and the archive drops it: a
    // blob the manifest references that neither the archive nor the destination holds.
    let mut unshipped = meta(&|v| {
        let blobs = v["blobs"].as_array_mut().unwrap();
        let i = blobs
            .iter()
            .position(|b| b["digest"] == fx.new_layer.as_str())
            .unwrap();
        let d = blobs.remove(i);
        v["omitted"].as_array_mut().unwrap().push(d);
    });
    unshipped.retain(|e| e.path != blob_path(&fx.new_layer));
    let lacks = format!(
        "lacks 1 blob(s) that the archive leaves out: {}",
        fx.new_layer
    );
    let config = blob_path(&fx.config);
    let config_twice = format!("{config:?} appears twice");
    let manifest_entry = format!("{:?}", blob_path(&fx.manifest));
    let cases = vec![
        case(
            "no index.json",
            fx.edited(|e| {
                e.remove(2);
            }),
            true,
            &[
                "invalid archive",
                "expected index.json but found",
                &manifest_entry,
            ],
        ),
        case(
            "no oci-layout",
            fx.edited(|e| {
                e.remove(0);
            }),
            true,
            &["expected oci-layout but found \"imo.json\""],
        ),
        case(
            "imo.json twice",
            fx.edited(|e| {
                let m = e[1].clone();
                e.insert(2, m);
            }),
            true,
            &["expected index.json but found \"imo.json\""],
        ),
        case(
            "a blob twice",
            fx.edited(|e| {
                let i = Archives::position(e, &config);
                let c = e[i].clone();
                e.insert(i + 1, c);
            }),
            false,
            &["invalid archive", &config_twice],
        ),
        case(
            "an entry imo.json does not list",
            fx.edited(|e| e.push(Entry::file("notes.txt", b"hello"))),
            false,
            &["invalid archive", "\"notes.txt\" is not one imo.json lists"],
        ),
        case(
            "a blob neither carried nor at the destination",
            write_tar(&unshipped),
            true,
            &[&lacks],
        ),
    ];
    refuse_each(&fx, cases);
    // Only the blob that is nowhere is named; the base layer the destination holds is not.
    let file = fx.work.join("unshipped.tar");
    std::fs::write(&file, write_tar(&unshipped)).unwrap();
    let err = fails(&["vet", s(&file), &fx.dst.image("app:v2")]);
    assert!(!err.contains(&fx.base_layer), "{err}");
}

#[test]
fn archive_entries_that_escape_link_or_lie_about_their_size_are_refused() {
    let fx = archives();
    let manifest = blob_path(&fx.manifest);
    let config = blob_path(&fx.config);
    let layer = blob_path(&fx.new_layer);
    // A manifest of more than 4 MiB (a padded annotation), consistently named everywhere.
    let big = {
        let mut m: serde_json::Value = serde_json::from_slice(&fx.entries()[3].data).unwrap();
        m["annotations"] = serde_json::json!({"pad": "x".repeat(MAX_MANIFEST)});
        serde_json::to_vec(&m).unwrap()
    };
    let big_digest = sha256(&big);
    let big_manifest = fx.edited(|e| {
        for i in [1, 2] {
            let text = String::from_utf8(e[i].data.clone()).unwrap();
            let text = text
                .replace(&fx.manifest, &big_digest)
                .replace(
                    &format!("\"size\": {}", e[3].data.len()),
                    &format!("\"size\": {}", big.len()),
                )
                .replace(
                    &format!("\"size\":{}", e[3].data.len()),
                    &format!("\"size\":{}", big.len()),
                );
            e[i].data = text.into_bytes();
        }
        e[3] = Entry::file(&blob_path(&big_digest), &big);
    });
    let big_says = format!(
        "{:?} declares {} bytes, more than the {MAX_MANIFEST} allowed",
        blob_path(&big_digest),
        big.len()
    );
    let huge_meta = format!("\"imo.json\" declares {HUGE} bytes, more than the {MAX_MANIFEST}");
    let layer_size = fx.entries()[5].data.len();
    let huge_blob = format!(
        "blob {} is {HUGE} bytes in the archive, {layer_size} were declared",
        fx.new_layer
    );
    let manifest_link = format!("{manifest:?}");
    let layer_link = format!("{layer:?}");
    let cases = vec![
        case(
            "an entry with ..",
            fx.edited(|e| e.insert(2, Entry::file("blobs/../../../etc/passwd", b"x"))),
            true,
            &[
                "invalid archive",
                "\"blobs/../../../etc/passwd\" is absolute, empty or escapes the archive",
            ],
        ),
        case(
            "an entry with .. among the blobs",
            fx.edited(|e| {
                let i = Archives::position(e, &config);
                e.insert(i + 1, Entry::file("blobs/sha256/../../x", b"x"));
            }),
            false,
            &["\"blobs/sha256/../../x\" is absolute, empty or escapes"],
        ),
        case(
            "an absolute path",
            fx.edited(|e| e.insert(3, Entry::file("/etc/passwd", b"x"))),
            true,
            &["\"/etc/passwd\" is absolute"],
        ),
        case(
            "the manifest as a symlink",
            fx.edited(|e| e[3] = Entry::link(&manifest, b'2', "/etc/passwd")),
            true,
            &[
                &manifest_link,
                "is a link; imo archives hold only regular files",
            ],
        ),
        case(
            "index.json as a hard link",
            fx.edited(|e| e[2] = Entry::link("index.json", b'1', "imo.json")),
            true,
            &["\"index.json\"", "is a link"],
        ),
        case(
            "a blob as a symlink",
            fx.edited(|e| {
                let i = Archives::position(e, &layer);
                e[i] = Entry::link(&layer, b'2', "/etc/shadow");
            }),
            false,
            &[&layer_link, "is a link"],
        ),
        case(
            "imo.json declaring 1 TiB",
            fx.edited(|e| e[1].declared = Some(HUGE)),
            true,
            &["invalid archive", &huge_meta],
        ),
        case(
            "a blob declaring 1 TiB",
            fx.edited(|e| {
                let i = Archives::position(e, &layer);
                e[i].declared = Some(HUGE);
            }),
            false,
            &["invalid archive", &huge_blob],
        ),
        case(
            "a manifest over 4 MiB",
            big_manifest,
            true,
            &["invalid archive", &big_says],
        ),
    ];
    refuse_each(&fx, cases);
}

#[test]
fn archive_blobs_that_do_not_match_their_names_are_refused() {
    let fx = archives();
    let layer = blob_path(&fx.new_layer);
    let manifest = format!("manifest {}: content hashes to", fx.manifest);
    let blob = format!("archive blob {}: content hashes to", fx.new_layer);
    let mut cases = vec![
        case(
            "a manifest whose bytes do not match its name",
            fx.edited(|e| {
                let n = e[3].data.len();
                e[3].data[n - 2] = b' ';
            }),
            true,
            &["invalid archive", &manifest],
        ),
        case(
            "a layer whose bytes do not match its name",
            fx.edited(|e| {
                let i = Archives::position(e, &layer);
                e[i].data[90_000] ^= 0xff;
            }),
            false,
            &["digest mismatch", &blob],
        ),
    ];
    cases[1].withheld = Some(fx.new_layer.clone());
    refuse_each(&fx, cases);
}

// ---------------------------------------------------------------------------------------
// Registries that answer with the wrong thing
// ---------------------------------------------------------------------------------------

/// The routes of an honest registry serving `image` as `app:v2` (and by digest).
fn honest(image: &Image) -> Routes {
    let mut routes = vec![
        (
            "/v2/app/manifests/v2".to_owned(),
            Reply::manifest(&image.manifest),
        ),
        (
            format!("/v2/app/manifests/{}", image.digest()),
            Reply::manifest(&image.manifest),
        ),
        (
            format!("/v2/app/blobs/{}", sha256(&image.config)),
            Reply::blob(&image.config),
        ),
    ];
    for l in &image.layers {
        routes.push((format!("/v2/app/blobs/{}", sha256(l)), Reply::blob(l)));
    }
    routes
}

/// `routes` with the answer for `path` replaced.
fn answering(mut routes: Routes, path: &str, reply: Reply) -> Routes {
    routes.retain(|(p, _)| p != path);
    routes.insert(0, (path.to_owned(), reply));
    routes
}

#[test]
fn pulls_from_registries_that_serve_the_wrong_bytes_fail_and_leave_no_archive() {
    let image = Image::new("fake", &[65_536]);
    let other = Image::new("other", &[1_000]);
    let (md, layer) = (image.digest(), image.layers[0].clone());
    let ld = sha256(&layer);
    let tag = "/v2/app/manifests/v2".to_owned();
    let by_digest = format!("/v2/app/manifests/{md}");
    let layer_path = format!("/v2/app/blobs/{ld}");
    let work = TempDir::new("bad-registry");

    // The honest registry is pulled from: every failure below comes from one wrong answer.
    let fake = FakeRegistry::start(honest(&image));
    let archive = work.join("honest.tar");
    succeeds(&[
        "pull",
        "-q",
        "scratch",
        &fake.image("app:v2"),
        "-o",
        s(&archive),
    ]);
    let mut carried = archive_blobs(&archive);
    carried.sort();
    let mut expected = vec![md.clone(), sha256(&image.config), ld.clone()];
    expected.sort();
    assert_eq!(carried, expected);
    std::fs::remove_file(&archive).unwrap();
    drop(fake);

    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let unknown_type = Image::manifest_for(
        &image.config,
        &image.layers,
        "application/vnd.example.unknown+json",
    );
    let image_as_index = Image::manifest_for(&image.config, &image.layers, OCI_INDEX);
    let mut longer = layer.clone();
    longer.extend_from_slice(b"and then some");
    let mut flipped = layer.clone();
    flipped[30_000] ^= 0x55;
    let index = |size: usize| {
        json(serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": md, "size": size,
                           "platform": {"os": "linux", "architecture": "amd64"}}],
        }))
    };
    let n = image.manifest.len();
    let oversized = {
        let mut v: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
        v["annotations"] = serde_json::json!({"pad": "x".repeat(MAX_MANIFEST)});
        json(v)
    };

    // (name, routes, what is pulled, what the error must say)
    let cases: Vec<(&str, Routes, String, Vec<String>)> = vec![
        (
            "invalid JSON manifest",
            answering(
                honest(&image),
                &tag,
                Reply::manifest(br#"{"schemaVersion": 2, "config": {"#),
            ),
            "app:v2".into(),
            vec!["invalid manifest".into(), "not valid manifest JSON".into()],
        ),
        (
            "unknown media type",
            answering(honest(&image), &tag, Reply::manifest(&unknown_type)),
            "app:v2".into(),
            vec![
                "invalid manifest".into(),
                "media type application/vnd.example.unknown+json is not a manifest or index".into(),
            ],
        ),
        (
            "an image manifest declaring the index media type",
            answering(honest(&image), &tag, Reply::manifest(&image_as_index)),
            "app:v2".into(),
            vec![
                "invalid manifest".into(),
                format!("declares media type {OCI_INDEX} but does not have that shape"),
            ],
        ),
        (
            "other bytes for a manifest asked for by digest",
            answering(honest(&image), &by_digest, Reply::manifest(&other.manifest)),
            format!("app@{md}"),
            vec![
                "digest mismatch".into(),
                format!(
                    "manifest {md} of app whose content hashes to {}",
                    other.digest()
                ),
            ],
        ),
        (
            "a Docker-Content-Digest that is not the manifest's",
            answering(
                honest(&image),
                &tag,
                Reply::ok(OCI_MANIFEST, &image.manifest, &other.manifest),
            ),
            "app:v2".into(),
            vec![
                "digest mismatch".into(),
                format!("says manifest v2 of app is {}", other.digest()),
            ],
        ),
        (
            "a manifest of more than 4 MiB",
            answering(honest(&image), &tag, Reply::manifest(&oversized)),
            "app:v2".into(),
            vec![
                "invalid manifest".into(),
                format!("more than the {MAX_MANIFEST} imo accepts"),
            ],
        ),
        (
            "an index whose child has the wrong size",
            answering(
                honest(&image),
                &tag,
                Reply::ok(OCI_INDEX, &index(n + 1), &index(n + 1)),
            ),
            "app:v2".into(),
            vec![
                "digest mismatch".into(),
                format!("manifest {md} in "),
                format!("/app is {n} bytes, index sha256:"),
                format!("declares {}", n + 1),
            ],
        ),
        (
            "an index whose child is served with other bytes",
            answering(
                answering(
                    honest(&image),
                    &tag,
                    Reply::ok(OCI_INDEX, &index(n), &index(n)),
                ),
                &by_digest,
                Reply::manifest(&other.manifest),
            ),
            "app:v2".into(),
            vec!["digest mismatch".into(), format!("manifest {md} of app")],
        ),
        (
            "a blob longer than declared",
            answering(honest(&image), &layer_path, Reply::blob(&longer)),
            "app:v2".into(),
            vec![
                "digest mismatch".into(),
                format!("blob {ld} of app: more than the 65536 bytes declared"),
            ],
        ),
        (
            "a blob shorter than declared",
            answering(honest(&image), &layer_path, Reply::blob(&layer[..40_000])),
            "app:v2".into(),
            vec![
                "digest mismatch".into(),
                format!("blob {ld} of app: 40000 bytes where 65536 were declared"),
            ],
        ),
        (
            "a blob whose bytes do not match its digest",
            answering(honest(&image), &layer_path, Reply::blob(&flipped)),
            "app:v2".into(),
            vec![
                "digest mismatch".into(),
                format!("blob {ld} of app: content hashes to {}", sha256(&flipped)),
            ],
        ),
    ];
    for (name, routes, pulled, want) in cases {
        let fake = FakeRegistry::start(routes);
        let out = TempDir::new("bad-registry-out");
        let err = fails(&[
            "pull",
            "-q",
            "--retries",
            "1",
            "scratch",
            &fake.image(&pulled),
            "-o",
            s(&out.join("app.tar")),
        ]);
        eprintln!("{name}: {}", err.trim_end());
        says(name, &err, &want);
        assert!(
            err.contains(&fake.addr),
            "{name}: the error does not name the registry: {err}"
        );
        assert!(
            files_in(out.path()).is_empty(),
            "{name}: a failed pull left {:?}",
            files_in(out.path())
        );
        assert!(
            !fake.requests().is_empty(),
            "{name}: the fake registry was never asked"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Malformed references
// ---------------------------------------------------------------------------------------

/// Malformed references, each with what the error must say about it. None of them may cost
/// a request.
fn malformed() -> Vec<(String, String)> {
    let hex = "0123456789abcdef".repeat(4);
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "it is empty"),
        ("127.0.0.1:5000/App:v1".into(), "path component \"App\""),
        (
            "127.0.0.1:5000/my app:v1".into(),
            "path component \"my app\"",
        ),
        ("127.0.0.1:5000/app:v 1".into(), "tag \"v 1\""),
        (" 127.0.0.1:5000/app".into(), "host \" 127.0.0.1\""),
        ("127.0.0.1:5000/app:v!1".into(), "tag \"v!1\""),
        ("127.0.0.1:5000/app:-v1".into(), "tag \"-v1\""),
        ("127.0.0.1:5000/app:".into(), "the tag after ':' is empty"),
        (
            format!("127.0.0.1:5000/app:{}", "t".repeat(129)),
            "is longer than 128 characters",
        ),
        (
            format!("127.0.0.1:5000/{}", "a".repeat(250)),
            "longer than 255 characters",
        ),
        ("127.0.0.1:5000/a..b".into(), "path component \"a..b\""),
        ("127.0.0.1:5000//app".into(), "path component \"\""),
        ("127.0.0.1:5000/app/".into(), "path component \"\""),
        ("@sha256:".to_owned() + &hex, "the repository path is empty"),
        (
            "127.0.0.1:5000/app@md5:d41d8cd98f00b204e9800998ecf8427e".into(),
            "is not of the form sha256:<hex>",
        ),
        (
            format!("127.0.0.1:5000/app@sha512:{hex}{hex}"),
            "is not of the form sha256:<hex>",
        ),
        (
            "127.0.0.1:5000/app@sha256:abc".into(),
            "must have 64 lowercase hexadecimal digits",
        ),
        (
            format!("127.0.0.1:5000/app@sha256:{hex}0"),
            "must have 64 lowercase hexadecimal digits",
        ),
        (
            format!("127.0.0.1:5000/app@sha256:{}", hex.to_uppercase()),
            "must have 64 lowercase hexadecimal digits",
        ),
        (
            "127.0.0.1:5000/app@".into(),
            "digest \"\" is not of the form",
        ),
        (
            "127.0.0.1:5000/app:v1@".into(),
            "digest \"\" is not of the form",
        ),
        (
            "127.0.0.1:65536/app:v1".into(),
            "port \"65536\" is not a number",
        ),
        (
            "127.0.0.1:99999/app".into(),
            "port \"99999\" is not a number",
        ),
        ("127.0.0.1:-1/app".into(), "port \"-1\" is not a number"),
        ("127.0.0.1:/app".into(), "port \"\" is not a number"),
        ("bad_host.example/app".into(), "is not a valid host name"),
        ("[::1:5000/app".into(), "unclosed '['"),
        ("oci:".into(), "names no directory (oci:DIR[:TAG])"),
        ("oci:somewhere:".into(), "has an empty tag after ':'"),
    ];
    cases
        .into_iter()
        .map(|(r, why)| (r, why.to_owned()))
        .collect()
}

/// The error for a malformed reference: names it as written and says what is wrong.
fn assert_refused(command: &str, reference: &str, why: &str, err: &str) {
    let context = format!("{command} {reference:?}");
    says(&context, err, &[format!("{reference:?}"), why.to_owned()]);
    if !reference.starts_with("oci:") {
        assert!(err.contains("invalid reference"), "{context}: {err}");
    }
}

/// A local OCI layout of app:v2 and the archive of it, both made without a registry, and a
/// server that counts the connections made to it and must see none.
struct Offline {
    work: TempDir,
    layout: Layout,
    archive: std::path::PathBuf,
    listener: FixedServer,
}

fn offline() -> Offline {
    let work = TempDir::new("bad-references");
    let layout = oci_layout("v2", &[("ref-a", 10_000)]);
    let archive = work.join("app.tar");
    std::fs::write(
        &archive,
        Image::new("offline", &[10_000]).archive("127.0.0.1:1/app:v2"),
    )
    .unwrap();
    let listener = FixedServer::start(
        "HTTP/1.1 500 Nobody Should Ask\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    );
    Offline {
        work,
        layout,
        archive,
        listener,
    }
}

impl Offline {
    fn layout_ref(&self) -> String {
        format!("oci:{}:v2", self.layout.dir.path().display())
    }

    /// A well-formed reference to the counting server.
    fn remote(&self, tag: &str) -> String {
        format!("{}/app:{tag}", self.listener.addr)
    }
}

#[test]
fn malformed_references_fail_pull_before_any_request() {
    let o = offline();
    let out = o.work.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let archive = out.join("app.tar");
    // The same command with a good reference works, with no registry at all.
    succeeds(&["pull", "-q", "scratch", &o.layout_ref(), "-o", s(&archive)]);
    std::fs::remove_file(&archive).unwrap();
    for (reference, why) in malformed() {
        // As the final image, and as the base (with a final image that is well formed).
        let remote = o.remote("v2");
        for (role, args) in [
            ("final", ["scratch", reference.as_str()]),
            ("base", [reference.as_str(), remote.as_str()]),
        ] {
            let err = fails(&["pull", "-q", args[0], args[1], "-o", s(&archive)]);
            assert_refused(&format!("pull ({role})"), &reference, &why, &err);
        }
        assert!(
            files_in(&out).is_empty(),
            "left behind: {:?}",
            files_in(&out)
        );
    }
    assert_eq!(o.listener.hits(), 0, "a malformed reference cost a request");
}

/// Vet or push of the offline archive to each malformed destination.
fn malformed_destinations_fail(command: &str) {
    let o = offline();
    let site = o.work.join("site");
    std::fs::create_dir_all(&site).unwrap();
    succeeds(&[
        command,
        "-q",
        s(&o.archive),
        &format!("oci:{}:v2", site.display()),
    ]);
    for (reference, why) in malformed() {
        let err = fails(&[command, "-q", s(&o.archive), &reference]);
        assert_refused(command, &reference, &why, &err);
        // With --map, the mapped destination is checked the same way.
        let map = format!("127.0.0.1:1/app:v2={reference}");
        let remote = o.remote("v2");
        let err = fails(&[command, "-q", "--map", &map, s(&o.archive), &remote]);
        if reference.is_empty() {
            says(
                command,
                &err,
                &[format!("--map wants FINAL=DESTINATION, not {map:?}")],
            );
        } else {
            assert_refused(&format!("{command} --map"), &reference, &why, &err);
        }
    }
    assert_eq!(o.listener.hits(), 0, "a malformed reference cost a request");
}

#[test]
fn malformed_destinations_fail_vet_before_any_request() {
    malformed_destinations_fail("vet");
}

#[test]
fn malformed_destinations_fail_push_before_any_request() {
    malformed_destinations_fail("push");
}

// ---------------------------------------------------------------------------------------
// Wrong credentials, and a token service that is down
// ---------------------------------------------------------------------------------------

/// A registry that asks for Basic credentials, checked against an htpasswd file of `users`.
fn htpasswd_registry(users: &[(&str, &str)]) -> (Registry, TempDir) {
    let dir = TempDir::new("bad-htpasswd");
    let mut file = String::new();
    for (user, password) in users {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apt-get install apache2-utils)");
        assert!(out.status.success(), "htpasswd failed");
        file.push_str(String::from_utf8(out.stdout).unwrap().trim_end());
        file.push('\n');
    }
    let path = dir.join("htpasswd");
    std::fs::write(&path, file).unwrap();
    let registry = Registry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: imo-bad-input\n    path: {}\n",
        path.display()
    ));
    (registry, dir)
}

#[test]
fn wrong_credentials_are_refused_naming_the_registry_and_nothing_is_pushed() {
    const RIGHT: &str = "alice:right-password";
    let (reg, _htpasswd) = htpasswd_registry(&[("alice", "right-password")]);
    let v2 = oci_layout("v2", &[("creds-a", 50_000)]);
    skopeo(&[
        "copy",
        "-q",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        RIGHT,
        &format!("oci:{}:v2", v2.dir.path().display()),
        &format!("docker://{}", reg.image("app:v2")),
    ]);
    let work = TempDir::new("bad-creds");
    let out = work.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let archive = work.join("app.tar");
    let pulled = out.join("app.tar");
    let (source, dest) = (reg.image("app:v2"), reg.image("copy/app:v2"));
    // With the right credentials, each command works.
    succeeds(&[
        "pull",
        "-q",
        "--creds",
        RIGHT,
        "scratch",
        &source,
        "-o",
        s(&archive),
    ]);
    succeeds(&[
        "vet",
        "-q",
        "--creds",
        RIGHT,
        s(&archive),
        &reg.image("control/app:v2"),
    ]);
    succeeds(&[
        "push",
        "-q",
        "--creds",
        RIGHT,
        s(&archive),
        &reg.image("control/app:v2"),
    ]);

    let cases: [(&str, &[&str], &str); 4] = [
        (
            "a wrong password",
            &["--creds", "alice:wrong-password"],
            "the credentials were refused",
        ),
        (
            "an unknown user",
            &["--creds", "mallory:right-password"],
            "the credentials were refused",
        ),
        (
            "the role's own flag with a wrong password",
            &[
                "--creds",
                RIGHT,
                "--final-creds",
                "alice:wrong-password",
                "--dest-creds",
                "alice:wrong-password",
            ],
            "the credentials were refused",
        ),
        (
            "no credentials",
            &[],
            "asks for credentials and none were given for it",
        ),
    ];
    for (name, flags, why) in cases {
        let commands: [Vec<&str>; 3] = [
            [
                &["pull", "-q"][..],
                flags,
                &["scratch", &source, "-o", s(&pulled)],
            ]
            .concat(),
            [&["vet", "-q"][..], flags, &[s(&archive), &dest]].concat(),
            [&["push", "-q"][..], flags, &[s(&archive), &dest]].concat(),
        ];
        for args in commands {
            let err = fails(&args);
            eprintln!("{name} ({}): {}", args[0], err.trim_end());
            let context = format!("{name} ({})", args[0]);
            says(
                &context,
                &err,
                &["not authorized".into(), reg.addr.clone(), why.into()],
            );
            assert!(
                !err.contains("wrong-password") && !err.contains("right-password"),
                "{context}: a password was printed: {err}"
            );
        }
        assert!(
            files_in(&out).is_empty(),
            "{name}: a refused pull left {:?}",
            files_in(&out)
        );
        assert_nothing_tagged(&reg.addr, "copy/app", &v2.manifest_digest, Some(RIGHT));
    }
}

#[test]
fn a_token_service_that_is_down_is_named_and_nothing_is_pushed() {
    let tokens = TokenServer::start(vec![
        Account::new("bob", "pw").may("app", &["pull", "push"]),
    ]);
    // A realm on a port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let realm = format!("http://{closed}/token");
    let reg = Registry::start_with(&tokens.registry_config().replace(&tokens.realm(), &realm));
    // The registry does send clients to the dead realm.
    let (status, _) = http(&reg.addr, "GET", "/v2/", None);
    assert_eq!(status, 401);
    let work = TempDir::new("bad-token");
    let out = work.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let archive = work.join("app.tar");
    std::fs::write(
        &archive,
        Image::new("token", &[20_000]).archive("127.0.0.1:1/app:v2"),
    )
    .unwrap();
    let dest = reg.image("app:v2");
    let pulled = out.join("app.tar");
    let commands: [&[&str]; 3] = [
        &[
            "pull",
            "--creds",
            "bob:pw",
            "--retries",
            "1",
            "scratch",
            &dest,
            "-o",
            s(&pulled),
        ],
        &[
            "vet",
            "--creds",
            "bob:pw",
            "--retries",
            "1",
            s(&archive),
            &dest,
        ],
        &[
            "push",
            "--creds",
            "bob:pw",
            "--retries",
            "1",
            s(&archive),
            &dest,
        ],
    ];
    for args in commands {
        let err = fails(args);
        eprintln!("token service down ({}): {}", args[0], err.trim_end());
        says(
            args[0],
            &err,
            &[
                format!(
                    "registry unreachable: the token service of {} (GET {realm}",
                    reg.addr
                ),
                "Connection refused".into(),
                format!("retrying GET {realm}"),
            ],
        );
    }
    assert!(
        files_in(&out).is_empty(),
        "a failed pull left {:?}",
        files_in(&out)
    );
    let repositories = reg.dir.join("data/docker/registry/v2/repositories");
    assert!(
        !repositories.join("app").exists(),
        "the push reached the registry's storage"
    );
    assert_eq!(tokens.count(), 0);
}

// ---------------------------------------------------------------------------------------
// Registries that stop answering
// ---------------------------------------------------------------------------------------

/// Each of these runs imo with `--timeout 1` (or 2) and one retry; a few seconds suffice,
/// and a hang fails the test at this bound instead of stalling the run.
const HANG_BOUND: Duration = Duration::from_secs(60);

#[test]
fn a_registry_that_accepts_and_never_answers_is_given_up_on_and_named() {
    // Accept every connection and hold it, silent: neither a TLS handshake nor an answer.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let work = TempDir::new("silent-registry");
    let archive = work.join("x.tar");
    let started = std::time::Instant::now();
    let err = fails_within(
        &[
            "pull",
            "scratch",
            &format!("{addr}/app:v1"),
            "-o",
            s(&archive),
            "--timeout",
            "1",
            "--retries",
            "1",
        ],
        HANG_BOUND,
    );
    let took = started.elapsed();
    eprintln!("after {took:?}: {}", err.trim_end());
    // About 3 s of waiting, and compiling the component if the cache is cold.
    assert!(took < Duration::from_secs(20), "took {took:?}: {err}");
    says(
        "a silent registry",
        &err,
        &[format!("({addr} sent nothing for 1 s)")],
    );
    assert!(
        files_in(work.path()).is_empty(),
        "{:?}",
        files_in(work.path())
    );
}

#[test]
fn a_blob_that_stalls_or_trickles_is_given_up_on_and_named() {
    let image = Image::new("stalling", &[200_000]);
    let layer_path = format!("/v2/app/blobs/{}", sha256(&image.layers[0]));
    let cases = [
        (Pace::StallAfter(50_000), "1", "sent nothing for 1 s"),
        // A byte a second is never silent for 2 s, but would take days.
        (
            Pace::Trickle(50_000),
            "2",
            "sent less than 1024 bytes in 2 s",
        ),
    ];
    for (pace, timeout, want) in cases {
        let layer = Reply::blob(&image.layers[0]).paced(pace);
        let fake = FakeRegistry::start(answering(honest(&image), &layer_path, layer));
        let work = TempDir::new("stalling-registry");
        let archive = work.join("x.tar");
        let started = std::time::Instant::now();
        let err = fails_within(
            &[
                "pull",
                "-q",
                "scratch",
                &fake.image("app:v2"),
                "-o",
                s(&archive),
                "--timeout",
                timeout,
                "--retries",
                "1",
            ],
            HANG_BOUND,
        );
        let took = started.elapsed();
        eprintln!("{pace:?} after {took:?}: {}", err.trim_end());
        assert!(
            took < Duration::from_secs(20),
            "{pace:?} took {took:?}: {err}"
        );
        says(
            &format!("{pace:?}"),
            &err,
            &[format!("({} {want})", fake.addr)],
        );
        assert!(
            files_in(work.path()).is_empty(),
            "{:?}",
            files_in(work.path())
        );
        assert!(
            fake.requests().iter().any(|r| r.contains(&layer_path)),
            "{pace:?}: the layer was never asked for: {:?}",
            fake.requests()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Memory: what a registry can make the component hold
// ---------------------------------------------------------------------------------------

/// A tag page just under the 16 MiB a page may weigh, of 1.4 million short tags: held whole
/// while it is parsed, it needs more than a small `--memory-limit`. Past the limit imo says
/// so (the limit, the registry, how to raise it) and exits 1, with no trap or backtrace;
/// under the default limit the same page is read and refused for its tag count.
#[test]
fn a_tag_page_flood_ends_in_a_clear_error_under_the_memory_limit() {
    let mut page = String::from(r#"{"name":"flood","tags":["#);
    let mut i = 0u32;
    while page.len() < 15 << 20 {
        if i > 0 {
            page.push(',');
        }
        page.push_str(&format!("\"t{i}\""));
        i += 1;
    }
    page.push_str("]}");
    let fake = FakeRegistry::start(vec![(
        "/v2/flood/tags/list".into(),
        Reply::ok("application/json", page.as_bytes(), b""),
    )]);
    let work = TempDir::new("memory-flood");
    let out = work.path().join("inventory.json");
    let source = fake.image("flood");
    let args = [
        "inventory",
        "-q",
        "--memory-limit",
        "32M",
        &source,
        "-o",
        s(&out),
    ];
    let err = fails_within(&args, Duration::from_secs(120));
    eprintln!("{}", err.trim_end());
    says(
        "32M",
        &err,
        &[
            "memory limit of 32 MiB".into(),
            "--memory-limit".into(),
            fake.addr.clone(),
        ],
    );
    for trace in [
        "wasm backtrace",
        "unreachable",
        "panicked",
        "capacity overflow",
    ] {
        assert!(!err.contains(trace), "{trace}: {err}");
    }
    assert!(!out.exists());

    let err = fails_within(
        &["inventory", "-q", &source, "-o", s(&out)],
        Duration::from_secs(120),
    );
    eprintln!("{}", err.trim_end());
    says("default", &err, &["more than 100000 tags".into()]);
    assert!(!err.contains("memory"), "{err}");
}

/// A layer whose manifest declares a size of `u64::MAX`: refused when the manifest is read,
/// naming the layer, before any offset or total is computed from it.
#[test]
fn a_layer_size_beyond_int64_is_refused_naming_the_layer() {
    let image = Image::new("huge", &[1_000]);
    let layer = sha256(&image.layers[0]);
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["layers"][0]["size"] = u64::MAX.into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let fake = FakeRegistry::start(answering(
        honest(&image),
        "/v2/app/manifests/v2",
        Reply::manifest(&manifest),
    ));
    let work = TempDir::new("huge-layer");
    let archive = work.path().join("x.tar");
    let err = fails(&[
        "pull",
        "-q",
        "scratch",
        &fake.image("app:v2"),
        "-o",
        s(&archive),
    ]);
    says(
        "u64::MAX",
        &err,
        &[layer.clone(), u64::MAX.to_string(), "2^63-1".into()],
    );
    assert!(
        files_in(work.path()).is_empty(),
        "{:?}",
        files_in(work.path())
    );
    assert!(
        !fake.requests().iter().any(|r| r.contains(&layer)),
        "{:?}",
        fake.requests()
    );
}

// ---------------------------------------------------------------------------------------
// verify and ls: the archive looked at offline
// ---------------------------------------------------------------------------------------

/// Runs `imo verify` on `bytes`, returning its exit code and stdout.
fn verify(fx: &Archives, name: &str, bytes: &[u8], json: bool) -> (Option<i32>, String) {
    let file = fx.work.join(name);
    std::fs::write(&file, bytes).unwrap();
    let mut args = vec!["verify", "-q", s(&file)];
    if json {
        args.push("--json");
    }
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    if !out.status.success() {
        assert!(stderr.contains("problem(s) found"), "{stderr}");
    }
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn verify_passes_a_good_archive_and_names_a_flipped_byte_a_missing_blob_and_a_cut_end() {
    let fx = archives();
    // No registry is named, and none is needed: the registries could be gone.
    let (code, out) = verify(&fx, "verify-good.tar", &fx.good, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 of 2 carried blob(s) checked"), "{out}");
    assert!(
        out.contains("the destination must already hold 1 blob(s)"),
        "{out}"
    );
    let held = out
        .lines()
        .find(|l| l.contains(&fx.base_layer))
        .unwrap_or_else(|| panic!("the omitted base layer is not listed: {out}"));
    assert!(held.contains("base: "), "{held}");
    assert!(!out.contains(&format!("  {} ", fx.new_layer)), "{out}");

    let (code, out) = verify(&fx, "verify-good.json", &fx.good, true);
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["problems"], serde_json::json!([]));
    assert_eq!(v["checked"]["blobs"], 2);
    assert_eq!(v["archive_bytes"], fx.good.len() as u64);
    assert_eq!(
        v["inspection"]["must_hold"][0]["digest"],
        fx.base_layer.as_str()
    );

    let layer = blob_path(&fx.new_layer);
    let flipped = fx.edited(|e| {
        let i = Archives::position(e, &layer);
        e[i].data[90_000] ^= 0xff;
    });
    let (code, out) = verify(&fx, "verify-flipped.tar", &flipped, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "problem: blob {}: content hashes to",
            fx.new_layer
        )),
        "{out}"
    );
    assert_eq!(out.matches("problem:").count(), 1, "{out}");

    let missing = fx.edited(|e| {
        let i = Archives::position(e, &blob_path(&fx.config));
        e.remove(i);
    });
    let (code, out) = verify(&fx, "verify-missing.tar", &missing, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("problem: blob {} (", fx.config)) && out.contains("is missing"),
        "{out}"
    );

    // Cut inside the last layer: the walk says where the archive ends.
    let cut = &fx.good[..fx.good.len() - 1024 - 50_000];
    let (code, out) = verify(&fx, "verify-cut.tar", cut, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("problem: the archive ends at byte") && out.contains("truncated"),
        "{out}"
    );
}

#[test]
fn ls_lists_the_image_its_tag_and_what_is_carried_and_left_from_the_head_alone() {
    let fx = archives();
    let file = fx.work.join("ls.tar");
    // Cut inside the last layer: ls reads only the head, so it still answers.
    std::fs::write(&file, &fx.good[..fx.good.len() - 1024 - 50_000]).unwrap();
    let out = run(&["ls", "--json", s(&file)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let image = &v["images"][0];
    assert_eq!(v["images"].as_array().unwrap().len(), 1);
    assert!(
        image["reference"].as_str().unwrap().ends_with("/app:v2"),
        "{image}"
    );
    assert_eq!(image["tag"], "v2");
    assert_eq!(image["manifest"], fx.manifest.as_str());
    assert_eq!(v["manifests"], 1);
    // The config and the new layer are carried; the base layer is left to the destination.
    assert_eq!(v["carried"]["blobs"], 2);
    assert_eq!(v["omitted"]["blobs"], 1);
    let meta: serde_json::Value = serde_json::from_slice(&fx.entries()[1].data).expect("imo.json");
    let total = |k: &str| {
        meta[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["size"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(v["carried"]["bytes"], total("blobs"));
    assert_eq!(v["omitted"]["bytes"], total("omitted"));
    assert_eq!(v["must_hold"][0]["digest"], fx.base_layer.as_str());

    let out = run(&["ls", s(&file)]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("IMAGE"), "{table}");
    assert!(table.contains("app:v2"), "{table}");
    assert!(
        table.contains("left to the destination: 1 blob(s)"),
        "{table}"
    );
}
