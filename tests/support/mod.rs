//! Real parts for the integration tests: CNCF distribution registries on loopback ports,
//! images written as OCI layouts and seeded with skopeo, and skopeo as the independent
//! client that checks what imo did.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the support code"
)]

pub mod fake;
pub mod proxy;
pub mod servers;
pub mod token;

use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "imo-test-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `docker-registry` (CNCF distribution) on 127.0.0.1 with a config the test writes.
pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    child: Child,
    pub dir: TempDir,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a registry; `extra` is appended to its YAML config (for auth, TLS).
    pub fn start_with(extra: &str) -> Self {
        for _ in 0..5 {
            let dir = TempDir::new("registry");
            // Ask the kernel for a free port; the small race with another process taking it
            // is handled by retrying.
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{extra}",
                dir.join("data").display()
            );
            std::fs::write(dir.join("config.yml"), config).unwrap();
            let log = std::fs::File::create(dir.join("registry.log")).unwrap();
            let child = Command::new(registry_binary())
                .arg("serve")
                .arg(dir.join("config.yml"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting docker-registry (apt-get install docker-registry)");
            let mut reg = Registry { addr, child, dir };
            if reg.wait_ready() {
                return reg;
            }
        }
        panic!("docker-registry did not start on a loopback port after 5 tries");
    }

    fn wait_ready(&mut self) -> bool {
        wait_ready(&mut self.child, &self.addr, false, Duration::from_secs(15))
    }

    /// Where the registry keeps a blob's bytes on disk, for corrupting it on purpose.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.join("data").join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }

    /// `127.0.0.1:PORT/REPO`
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry_binary() -> &'static str {
    if Path::new("/usr/bin/docker-registry").exists() {
        "/usr/bin/docker-registry"
    } else {
        "registry"
    }
}

/// Waits, within `limit`, until a server started as `child` answers HTTP at `addr` (or,
/// serving TLS, accepts connections); false if it exits or never does.
pub fn wait_ready(child: &mut Child, addr: &str, tls: bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut s) = TcpStream::connect(addr) {
            if tls {
                return true;
            }
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
            let mut buf = [0u8; 12];
            if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Deterministic pseudo-random bytes (xorshift), so the same seed gives the same layer.
pub fn bytes_for(seed: &str, len: usize) -> Vec<u8> {
    let mut x = u64::from_le_bytes(Sha256::digest(seed.as_bytes())[..8].try_into().unwrap()) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A layer: an uncompressed tar holding one file of `size` bytes derived from `seed`.
pub fn layer(seed: &str, size: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let data = bytes_for(seed, size);
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, format!("{seed}.bin"), &data[..])
        .unwrap();
    b.into_inner().unwrap()
}

/// An image written as an OCI layout: layers named by seed and size.
pub struct Layout {
    pub dir: TempDir,
    pub tag: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

pub fn oci_layout(tag: &str, layers: &[(&str, usize)]) -> Layout {
    let tars: Vec<(&str, Vec<u8>, Vec<u8>)> = layers
        .iter()
        .map(|(seed, size)| {
            let l = layer(seed, *size);
            ("application/vnd.oci.image.layer.v1.tar", l.clone(), l)
        })
        .collect();
    layout_of(tag, &tars)
}

/// An image as an OCI layout, of layers given as (media type, blob, uncompressed tar); its
/// config names the tag, so that each tag's config is its own.
pub fn layout_of(tag: &str, layers: &[(&str, Vec<u8>, Vec<u8>)]) -> Layout {
    let dir = TempDir::new("layout");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |data: &[u8]| {
        let d = sha256(data);
        std::fs::write(dir.join(&format!("blobs/sha256/{}", &d[7..])), data).unwrap();
        d
    };
    let mut descs = Vec::new();
    let mut layer_digests = Vec::new();
    let mut diff_ids = Vec::new();
    for (media_type, blob, plain) in layers {
        let d = put(blob);
        descs.push(serde_json::json!({"mediaType": media_type, "digest": d, "size": blob.len()}));
        layer_digests.push(d);
        diff_ids.push(sha256(plain));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {"Labels": {"imo.test.tag": tag}},
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    Layout {
        dir,
        tag: tag.into(),
        manifest_digest,
        config_digest,
        layer_digests,
    }
}

/// Runs skopeo, failing the test with its output if it fails.
pub fn skopeo(args: &[&str]) -> Output {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("running skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Pushes a layout into a registry with skopeo (`format` "v2s2" converts to Docker schema 2).
/// Without a format the layout's digests are kept; otherwise skopeo may or may not compress
/// layers depending on what its blob cache has seen, and runs would differ.
pub fn seed(layout: &Layout, destination: &str, format: Option<&str>) {
    let src = format!("oci:{}:{}", layout.dir.path().display(), layout.tag);
    let dst = format!("docker://{destination}");
    let mut args = vec!["copy", "-q", "--dest-tls-verify=false"];
    match format {
        Some(f) => args.extend(["--format", f]),
        None => args.push("--preserve-digests"),
    }
    args.extend([src.as_str(), dst.as_str()]);
    skopeo(&args);
}

/// The exact manifest bytes a registry serves, read by skopeo.
pub fn raw_manifest(reference: &str) -> Vec<u8> {
    skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ])
    .stdout
}

/// Whether the registry has a tag or digest, asked by skopeo.
pub fn exists(reference: &str) -> bool {
    Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap()
        .status
        .success()
}

/// Copies an image out of a registry with skopeo, which fetches and verifies every blob.
pub fn copy_out(reference: &str) {
    let dir = TempDir::new("copy-out");
    let dst = format!("oci:{}:out", dir.path().display());
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &dst,
    ]);
}

/// Runs the `imo` command.
pub fn imo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imo"))
        .args(args)
        .env("IMO_CACHE_DIR", cache_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Waits for `child` to exit and returns its output; past `limit`, kills it and fails the
/// test, so that a hang fails instead of stalling the run.
pub fn output_within(mut child: Child, limit: Duration) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    // Read the pipes meanwhile: a full pipe would stall the child.
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("still running after {limit:?}, killed; stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Runs `imo` and fails the test with its stderr unless it succeeds.
pub fn imo_ok(args: &[&str]) -> Output {
    let out = imo(args);
    assert!(
        out.status.success(),
        "imo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `imo`, expects it to fail, and returns its stderr.
pub fn imo_err(args: &[&str]) -> String {
    failed(args, &imo(args))
}

/// Checks that `imo args` failed as it should, with exit status 1 and no panic; its stderr.
pub fn failed(args: &[&str], out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "imo {args:?} should fail with exit status 1: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "imo {args:?} panicked: {stderr}"
    );
    stderr
}

/// One compiled-component cache for the whole test run.
pub fn cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("imo-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The entries of an archive, read with the tar crate (not imo's own reader): path → bytes.
pub fn archive_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (p, data)
        })
        .collect()
}

/// Copies the archive at `from` to `to` with each entry's bytes passed through `edit` (with
/// its path), every entry in its place: what a crafted or damaged archive is.
pub fn rewrite_entries(from: &Path, to: &Path, edit: impl Fn(&str, &mut Vec<u8>)) {
    let mut out = tar::Builder::new(std::fs::File::create(to).unwrap());
    for (path, mut data) in archive_entries(from) {
        edit(&path, &mut data);
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        out.append_data(&mut header, &path, data.as_slice())
            .unwrap();
    }
    out.finish().unwrap();
}

/// [`rewrite_entries`] changing only `imo.json`, as JSON.
pub fn rewrite_metadata(from: &Path, to: &Path, edit: impl Fn(&mut serde_json::Value)) {
    rewrite_entries(from, to, |path, data| {
        if path == "imo.json" {
            let mut meta: serde_json::Value = serde_json::from_slice(data).unwrap();
            edit(&mut meta);
            *data = serde_json::to_vec(&meta).unwrap();
        }
    });
}

/// The blob digests an archive carries (`blobs/sha256/<hex>` entries), checking each entry's
/// bytes against its name.
pub fn archive_blobs(path: &Path) -> Vec<String> {
    archive_entries(path)
        .into_iter()
        .filter_map(|(p, data)| {
            let hex = p.strip_prefix("blobs/sha256/")?;
            let d = format!("sha256:{hex}");
            assert_eq!(
                sha256(&data),
                d,
                "archive entry {p} does not match its name"
            );
            Some(d)
        })
        .collect()
}

/// One platform of a multi-platform image: `os/arch[/variant]` and its layers.
pub struct PlatformImage<'a> {
    pub platform: &'a str,
    pub layers: &'a [(&'a str, usize)],
}

/// A multi-platform image as an OCI layout: an index over one manifest per platform.
/// Layers with the same seed and size are the same blob, shared between platforms.
pub fn oci_index_layout(tag: &str, platforms: &[PlatformImage<'_>]) -> TempDir {
    let dir = TempDir::new("index-layout");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |data: &[u8]| {
        let d = sha256(data);
        std::fs::write(dir.join(&format!("blobs/sha256/{}", &d[7..])), data).unwrap();
        (d, data.len())
    };
    let mut entries = Vec::new();
    for p in platforms {
        let parts: Vec<&str> = p.platform.split('/').collect();
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (seed, size) in p.layers {
            let (d, n) = put(&layer(seed, *size));
            diff_ids.push(d.clone());
            descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}));
        }
        let mut config = serde_json::json!({"architecture": parts[1], "os": parts[0], "rootfs": {"type": "layers", "diff_ids": diff_ids}});
        let mut platform = serde_json::json!({"os": parts[0], "architecture": parts[1]});
        if let Some(v) = parts.get(2) {
            config["variant"] = (*v).into();
            platform["variant"] = (*v).into();
        }
        let (cd, cn) = put(&serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
            "layers": descs,
        }))
        .unwrap();
        let (md, mn) = put(&manifest);
        entries.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn, "platform": platform}));
    }
    let image_index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries,
    }))
    .unwrap();
    let (id, n) = put(&image_index);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": n,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    dir
}

/// A cosign-style signature artifact as an OCI layout: a manifest whose one layer is a
/// simple-signing payload naming `subject`.
pub fn signature_layout(subject: &str) -> TempDir {
    let dir = TempDir::new("sig-layout");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |data: &[u8]| {
        let d = sha256(data);
        std::fs::write(dir.join(&format!("blobs/sha256/{}", &d[7..])), data).unwrap();
        (d, data.len())
    };
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {"identity": {"docker-reference": "app"}, "image": {"docker-manifest-digest": subject}, "type": "cosign container image signature"},
        "optional": null
    }))
    .unwrap();
    let (pd, pn) = put(&payload);
    let config =
        br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let (cd, cn) = put(config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": pd, "size": pn,
                    "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQD-not-a-real-signature"}}],
    }))
    .unwrap();
    let (md, mn) = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
        "annotations": {"org.opencontainers.image.ref.name": "sig"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    dir
}

/// Pushes a whole index (every platform) with skopeo; `format` "v2s2" makes a Docker
/// manifest list.
pub fn seed_all(dir: &TempDir, tag: &str, destination: &str, format: Option<&str>) {
    let src = format!("oci:{}:{tag}", dir.path().display());
    let dst = format!("docker://{destination}");
    let mut args = vec![
        "copy",
        "-q",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
    ];
    if let Some(f) = format {
        args.retain(|a| *a != "--preserve-digests");
        args.extend(["--format", f]);
    }
    args.extend([src.as_str(), dst.as_str()]);
    skopeo(&args);
}

/// A loopback HTTP server that answers every request with one fixed response and counts
/// the connections it accepted. Stops when dropped.
pub struct FixedServer {
    pub addr: String,
    pub hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FixedServer {
    pub fn start(response: String) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                h.fetch_add(1, Ordering::SeqCst);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(response.as_bytes());
            }
        });
        FixedServer { addr, hits, stop }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for FixedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}
