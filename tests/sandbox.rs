//! The sandbox: the component reaches only what the command names, and the library API.

mod support;

use std::sync::{Arc, Mutex};
use support::*;

fn lines() -> (
    Arc<Mutex<Vec<String>>>,
    impl Fn(&str) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (seen, move |l: &str| s.lock().unwrap().push(l.to_owned()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_component_reads_no_file_it_was_not_handed() {
    let (seen, report) = lines();
    let imo = imo::Imo::builder().reporter(report).build().unwrap();
    let beside = TempDir::new("beside");
    let secret = beside.join("archive.tar");
    std::fs::write(&secret, b"not for the component").unwrap();
    let ok = imo
        .run_sandboxed_cli(&["vet", secret.to_str().unwrap(), "127.0.0.1:1/x:v1"], &[])
        .await
        .unwrap();
    assert!(!ok, "the component read a file the host never granted");
    // Give the stderr relay a moment to deliver the last line.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let said = seen.lock().unwrap().join("\n");
    assert!(
        said.contains("archive I/O failed") && said.contains("archive.tar"),
        "{said}"
    );
}

/// A registry stand-in that sends clients to a token service on another port.
fn registry_pointing_to(realm: &str) -> FixedServer {
    FixedServer::start(format!(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_not_named_are_refused() {
    let token = FixedServer::start(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    );
    let registry = registry_pointing_to(&format!("http://{}/token", token.addr));
    let image = format!("{}/app:v1", registry.addr);

    // Only the named registry: the realm it points to is refused, and never contacted.
    let imo = imo::Imo::builder().learn_hosts(false).build().unwrap();
    let err = imo
        .pull_to_writer("scratch", &image, tokio::io::sink())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, imo::Error::Denied(_)), "{msg}");
    assert!(
        msg.contains(&format!("refused http://{}", token.addr)) && msg.contains("--allow-host"),
        "{msg}"
    );
    assert_eq!(token.hits(), 0);
    assert!(registry.hits() > 0);

    // Named with allow_host, it is reached.
    let imo = imo::Imo::builder()
        .learn_hosts(false)
        .allow_host(&token.addr)
        .build()
        .unwrap();
    imo.pull_to_writer("scratch", &image, tokio::io::sink())
        .await
        .unwrap_err();
    assert_eq!(token.hits(), 1);

    // By default the realm an allowed registry names is learned and reached.
    let imo = imo::Imo::builder().build().unwrap();
    imo.pull_to_writer("scratch", &image, tokio::io::sink())
        .await
        .unwrap_err();
    assert_eq!(token.hits(), 2);
}

/// A request the policy refuses fails at once, without the retry loop's backoff.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_request_is_not_retried() {
    let token = FixedServer::start(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    );
    let registry = registry_pointing_to(&format!("http://{}/token", token.addr));
    let (seen, report) = lines();
    let imo = imo::Imo::builder()
        .learn_hosts(false)
        .reporter(report)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = imo
        .pull_to_writer(
            "scratch",
            &format!("{}/app:v1", registry.addr),
            tokio::io::sink(),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    let said = seen.lock().unwrap().join("\n");
    assert!(!said.contains("retrying"), "a denial was retried: {said}");
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    let msg = err.to_string();
    assert!(matches!(err, imo::Error::Denied(_)), "{msg}");
    assert!(
        msg.contains(&format!("GET http://{}/token", token.addr)),
        "names the request: {msg}"
    );
    assert_eq!(token.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_library_streams_the_archive_and_reports_progress() {
    let src = Registry::start();
    let layout = oci_layout("v1", &[("lib-a", 200_000), ("lib-b", 100_000)]);
    seed(&layout, &src.image("app:v1"), None);
    let log = Arc::new(Mutex::new(Vec::<u8>::new()));
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let imo = imo::Imo::builder()
        .reporter_writer(Shared(log.clone()))
        .build()
        .unwrap();

    let mut stream = imo.pull("scratch", &src.image("app:v1"));
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut bytes)
        .await
        .unwrap();
    let summary = stream.finish().await.unwrap();
    assert_eq!(bytes.len() as u64, summary.archive_bytes);
    assert_eq!(summary.blobs_in_archive, 3);

    let work = TempDir::new("work");
    let file = work.join("a.tar");
    imo.pull_to_file("scratch", &src.image("app:v1"), &file)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "streamed and file archives are identical"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(log.contains("copying"), "{log}");

    // A failure shows up as a read error, and as the result.
    let mut stream = imo.pull("scratch", &src.image("missing:v1"));
    let err = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");
    assert!(matches!(
        stream.finish().await,
        Err(imo::Error::NotFound(_))
    ));
}

#[test]
fn json_summaries_for_scripts() {
    let src = Registry::start();
    seed(
        &oci_layout("v1", &[("json", 50_000)]),
        &src.image("app:v1"),
        None,
    );
    let work = TempDir::new("work");
    let out = imo_ok(&[
        "pull",
        "--json",
        "scratch",
        &src.image("app:v1"),
        "-o",
        work.join("a.tar").to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["blobs_in_archive"], 2);
    assert_eq!(v["base_reference"], "scratch");
    assert!(
        out.stderr.is_empty(),
        "--json prints no progress: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `imo pull scratch LAYOUT -o ARCHIVE` (no registry needed) with the compiled-code
/// cache in `cache`; fails the test unless it succeeds, and returns its stderr.
fn pull_with_cache(cache: &std::path::Path) -> String {
    let layout = oci_layout("v1", &[("cache", 10_000)]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imo"))
        .args(["pull", "scratch"])
        .arg(format!("oci:{}:v1", layout.dir.path().display()))
        .arg("-o")
        .arg(layout.dir.join("out.tar"))
        .env("IMO_CACHE_DIR", cache)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "imo failed ({}): {stderr}",
        out.status
    );
    stderr
}

/// A private cache directory, as imo would create it, and the files in it.
fn private_cache(label: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new(label);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn cwasm_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect()
}

/// Where the `.text` section (the machine code) of the ELF image inside `file` lies.
fn elf_text(file: &[u8]) -> std::ops::Range<usize> {
    let at = file.windows(4).position(|w| w == b"\x7fELF").unwrap();
    let elf = &file[at..];
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let section = |i: usize| shoff + i * shentsize;
    let names = u64_at(section(shstrndx) + 0x18);
    (0..shnum)
        .map(section)
        .find(|&h| elf[names + u32_at(h)..].starts_with(b".text\0"))
        .map(|h| at + u64_at(h + 0x18)..at + u64_at(h + 0x18) + u64_at(h + 0x20))
        .expect("a .text section")
}

#[test]
fn a_tampered_cache_file_is_compiled_again_not_run() {
    use std::os::unix::fs::PermissionsExt as _;
    let cache = private_cache("cache-tampered");
    let said = pull_with_cache(cache.path());
    assert!(!said.contains("compiled-code cache"), "{said}");
    let [file] = &cwasm_files(cache.path())[..] else {
        panic!("one cache file");
    };
    let meta = std::fs::metadata(file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "written private");
    // The second run loads it, silently.
    let said = pull_with_cache(cache.path());
    assert!(!said.contains("compiled-code cache"), "{said}");

    // Overwrite its machine code with breakpoints, as someone with write access could: run,
    // it would die of SIGTRAP.
    let mut bytes = std::fs::read(file).unwrap();
    let text = elf_text(&bytes);
    bytes[text].fill(0xcc);
    std::fs::write(file, &bytes).unwrap();
    let said = pull_with_cache(cache.path());
    assert_eq!(said.matches("compiled-code cache").count(), 1, "{said}");
    assert!(
        said.contains("do not match the digest") && said.contains("compiling it again"),
        "{said}"
    );
    assert_ne!(std::fs::read(file).unwrap(), bytes, "the file was replaced");
    let said = pull_with_cache(cache.path());
    assert!(!said.contains("compiled-code cache"), "{said}");
}

#[test]
fn a_cache_directory_others_can_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let cache = TempDir::new("cache-shared");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let said = pull_with_cache(cache.path());
    assert_eq!(said.matches("compiled-code cache").count(), 1, "{said}");
    assert!(
        said.contains(&format!(
            "not using the compiled-code cache {}: it is writable by its group and by others; \
             compiling in memory",
            cache.path().display()
        )),
        "{said}"
    );
    assert!(
        cwasm_files(cache.path()).is_empty(),
        "nothing written there"
    );

    // Nor is a cache file in it, however it got there.
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    pull_with_cache(cache.path());
    let [file] = &cwasm_files(cache.path())[..] else {
        panic!("one cache file");
    };
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
    std::fs::write(file, b"planted").unwrap();
    let said = pull_with_cache(cache.path());
    assert!(said.contains("it is writable by its group"), "{said}");
    assert_eq!(std::fs::read(file).unwrap(), b"planted", "left alone");
}

#[test]
fn a_symlinked_cache_file_is_not_followed() {
    let cache = private_cache("cache-symlink");
    pull_with_cache(cache.path());
    let [file] = &cwasm_files(cache.path())[..] else {
        panic!("one cache file");
    };
    // A good compiled file elsewhere, linked in: still not loaded through the link.
    let elsewhere = TempDir::new("cache-elsewhere");
    let target = elsewhere.join("other.cwasm");
    std::fs::rename(file, &target).unwrap();
    let target_bytes = std::fs::read(&target).unwrap();
    std::os::unix::fs::symlink(&target, file).unwrap();
    let said = pull_with_cache(cache.path());
    assert_eq!(said.matches("compiled-code cache").count(), 1, "{said}");
    assert!(
        said.contains("it is a symbolic link; compiling it again"),
        "{said}"
    );
    assert!(
        std::fs::symlink_metadata(file).unwrap().is_file(),
        "the link is replaced by a file of imo's own"
    );
    assert_eq!(std::fs::read(&target).unwrap(), target_bytes);

    // A symlinked cache directory is refused too.
    let linked = elsewhere.join("linked");
    std::os::unix::fs::symlink(cache.path(), &linked).unwrap();
    let said = pull_with_cache(&linked);
    assert!(
        said.contains("it is a symbolic link; compiling in memory"),
        "{said}"
    );
}
