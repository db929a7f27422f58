//! TLS against a distribution registry serving a certificate from a CA the test creates,
//! or a self-signed one, with a token service on another port that has its own.

mod support;

use std::path::Path;
use std::process::Command;
use support::token::{Account, TokenServer, self_signed};
use support::*;

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
/// Returns (directory holding `ca.crt` alone, server cert, server key).
fn make_ca(dir: &TempDir) -> (std::path::PathBuf, String, String) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=imo test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let ca_dir = dir.join("cas");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(dir.join("ca.pem"), ca_dir.join("ca.crt")).unwrap();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    (ca_dir, p("server.crt"), p("server.key"))
}

/// A registry serving TLS with a certificate of its own CA (in `certs`, trusted from
/// the returned directory), holding `app:v1` with one layer of `size` bytes.
fn tls_registry(seed: &str, size: usize) -> (TempDir, std::path::PathBuf, Registry) {
    let certs = TempDir::new("certs");
    let (ca_dir, cert, key) = make_ca(&certs);
    let reg = Registry::start_with(&format!(
        "  tls:\n    certificate: {cert}\n    key: {key}\n"
    ));
    let layout = oci_layout("v1", &[(seed, size)]);
    skopeo(&[
        "copy",
        "-q",
        "--dest-cert-dir",
        s(&ca_dir),
        &format!("oci:{}:v1", layout.dir.path().display()),
        &format!("docker://{}", reg.image("app:v1")),
    ]);
    (certs, ca_dir, reg)
}

/// The manifest `reference` names, as the TLS registry serves it (read with skopeo).
fn raw_manifest_tls(ca_dir: &Path, reference: &str) -> Vec<u8> {
    let docker = format!("docker://{reference}");
    skopeo(&["inspect", "--raw", "--cert-dir", s(ca_dir), &docker]).stdout
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_private_ca_is_refused_until_trusted() {
    let (_certs, ca_dir, reg) = tls_registry("tls", 100_000);
    let work = TempDir::new("work");
    let archive = work.join("a.tar");

    let err = imo_err(&["pull", "scratch", &reg.image("app:v1"), "-o", s(&archive)]);
    assert!(
        err.contains("TLS handshake failed") && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(!archive.exists());

    imo_ok(&[
        "pull",
        "--cert-dir",
        s(&ca_dir),
        "scratch",
        &reg.image("app:v1"),
        "-o",
        s(&archive),
    ]);
    assert_eq!(archive_blobs(&archive).len(), 3);

    std::fs::remove_file(&archive).unwrap();
    imo_ok(&[
        "pull",
        "--tls-verify=false",
        "scratch",
        &reg.image("app:v1"),
        "-o",
        s(&archive),
    ]);
    let out = imo_ok(&[
        "push",
        "--cert-dir",
        s(&ca_dir),
        s(&archive),
        &reg.image("copy:v1"),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("pushed"));
    let raw = raw_manifest_tls(&ca_dir, &reg.image("copy:v1"));
    let src = raw_manifest_tls(&ca_dir, &reg.image("app:v1"));
    assert_eq!(raw, src);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_registry_certs_d_directories_are_trusted() {
    let (_certs, ca_dir, reg) = tls_registry("certsd", 50_000);
    let certs_d = TempDir::new("certs.d");
    std::fs::create_dir_all(certs_d.join(&reg.addr)).unwrap();
    std::fs::copy(
        ca_dir.join("ca.crt"),
        certs_d.join(&reg.addr).join("ca.crt"),
    )
    .unwrap();

    let (tx, rx) = tokio::io::duplex(1 << 16);
    let imo = imo::Imo::builder()
        .certs_d(vec![certs_d.path().to_owned()])
        .build()
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut rx = rx;
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut rx, &mut buf)
            .await
            .unwrap();
        buf
    });
    let summary = imo
        .pull_to_writer("scratch", &reg.image("app:v1"), tx)
        .await
        .unwrap();
    let src = raw_manifest_tls(&ca_dir, &reg.image("app:v1"));
    assert_eq!(summary.manifest_digest, sha256(&src));
    let bytes = reader.await.unwrap();
    assert_eq!(bytes.len() as u64, summary.archive_bytes);

    // Another registry's directory does not help.
    let other = TempDir::new("certs.d-other");
    std::fs::create_dir_all(other.join("127.0.0.1:1")).unwrap();
    std::fs::copy(
        ca_dir.join("ca.crt"),
        other.join("127.0.0.1:1").join("ca.crt"),
    )
    .unwrap();
    let imo = imo::Imo::builder()
        .certs_d(vec![other.path().to_owned()])
        .build()
        .unwrap();
    let err = imo
        .pull_to_writer("scratch", &reg.image("app:v1"), tokio::io::sink())
        .await
        .unwrap_err();
    assert!(
        matches!(err, imo::Error::Unreachable(ref m) if m.contains("UnknownIssuer")),
        "{err}"
    );
}

const PUSHER: &str = "pusher:push-pw";

/// A registry serving TLS with a self-signed certificate made by the usual recipe (see
/// [`self_signed`]), its tokens from a token service on another port that serves HTTPS
/// with a self-signed certificate of its own, holding `app:v1`. `trust` holds both
/// certificates (the registry's and the token service's) as `.crt` files.
struct SelfSigned {
    tokens: TokenServer,
    reg: Registry,
    trust: TempDir,
    _certs: TempDir,
}

fn self_signed_with_tokens(seed: &str) -> SelfSigned {
    let tokens = TokenServer::start_tls(vec![
        Account::new("pusher", "push-pw")
            .may("app", &["pull", "push"])
            .may("copy", &["pull", "push"]),
    ]);
    let certs = TempDir::new("self-signed");
    let (cert, key) = self_signed(certs.path(), "127.0.0.1");
    let reg = Registry::start_with(&format!(
        "  tls:\n    certificate: {}\n    key: {}\n{}",
        cert.display(),
        key.display(),
        tokens.registry_config()
    ));
    let trust = TempDir::new("trust");
    std::fs::copy(&cert, trust.join("registry.crt")).unwrap();
    let token_dir = tokens.tls_dir.clone().unwrap();
    std::fs::copy(token_dir.join("server.crt"), trust.join("token.crt")).unwrap();
    let layout = oci_layout("v1", &[(seed, 60_000)]);
    skopeo(&[
        "copy",
        "-q",
        "--dest-cert-dir",
        s(trust.path()),
        "--dest-creds",
        PUSHER,
        &format!("oci:{}:v1", layout.dir.path().display()),
        &format!("docker://{}", reg.image("app:v1")),
    ]);
    assert!(tokens.count() > 0, "skopeo seeded without a token");
    SelfSigned {
        tokens,
        reg,
        trust,
        _certs: certs,
    }
}

/// The manifest `reference` names, read with skopeo trusting `trust` and as the pusher.
fn raw_manifest_as(trust: &Path, reference: &str) -> Vec<u8> {
    let docker = format!("docker://{reference}");
    let args = [
        "inspect",
        "--raw",
        "--cert-dir",
        s(trust),
        "--creds",
        PUSHER,
    ];
    skopeo(&[&args[..], &[docker.as_str()]].concat()).stdout
}

#[test]
fn a_self_signed_certificate_given_to_cert_dir_works_with_a_tls_token_service() {
    let t = self_signed_with_tokens("self-signed");
    let work = TempDir::new("work");
    let archive = work.join("a.tar");
    let trust = s(t.trust.path());
    let before = t.tokens.count();
    let common = ["--cert-dir", trust, "--creds", PUSHER];

    let pull = [
        &["pull"][..],
        &common,
        &["scratch", &t.reg.image("app:v1"), "-o", s(&archive)],
    ];
    imo_ok(&pull.concat());
    assert_eq!(archive_blobs(&archive).len(), 3);
    let vet = [
        &["vet"][..],
        &common,
        &[s(&archive), &t.reg.image("copy:v1")],
    ];
    imo_ok(&vet.concat());
    let push = [
        &["push"][..],
        &common,
        &[s(&archive), &t.reg.image("copy:v1")],
    ];
    let out = imo_ok(&push.concat());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pushed"));

    let copied = raw_manifest_as(t.trust.path(), &t.reg.image("copy:v1"));
    assert_eq!(
        copied,
        raw_manifest_as(t.trust.path(), &t.reg.image("app:v1"))
    );
    let asked = t.tokens.requests_since(before);
    assert!(
        asked
            .iter()
            .any(|r| r.granted.iter().any(|g| g == "repository:copy:pull,push")),
        "imo pushed without a push token: {asked:?}"
    );
}

#[test]
fn an_untrusted_self_signed_certificate_fails_at_once_saying_what_to_do() {
    let t = self_signed_with_tokens("untrusted");
    let work = TempDir::new("work");
    let archive = work.join("a.tar");
    let started = std::time::Instant::now();
    let err = imo_err(&["pull", "scratch", &t.reg.image("app:v1"), "-o", s(&archive)]);
    eprintln!("after {:?}: {}", started.elapsed(), err.trim_end());
    assert!(
        err.contains(&format!(
            "{} speaks TLS with a certificate that is not trusted",
            t.reg.addr
        )) && err.contains("CaUsedAsEndEntity")
            && err.contains("--cert-dir"),
        "{err}"
    );
    // The TLS port is known for one at once: no plain HTTP, no retries.
    assert!(
        !err.contains("plain HTTP") && !err.contains("http://") && !err.contains("retrying"),
        "{err}"
    );
    assert!(!archive.exists());

    // Trusting only the registry leaves the token service untrusted, and says so.
    let only = TempDir::new("only-registry");
    std::fs::copy(t.trust.join("registry.crt"), only.join("registry.crt")).unwrap();
    let err = imo_err(&[
        "pull",
        "--cert-dir",
        s(only.path()),
        "--creds",
        PUSHER,
        "scratch",
        &t.reg.image("app:v1"),
        "-o",
        s(&archive),
    ]);
    eprintln!("{}", err.trim_end());
    assert!(
        err.contains(&format!(
            "{} speaks TLS with a certificate that is not trusted",
            t.tokens.addr
        )),
        "{err}"
    );
}

#[test]
fn tls_verify_false_covers_the_token_service_the_registry_names() {
    let t = self_signed_with_tokens("unverified");
    let work = TempDir::new("work");
    let archive = work.join("a.tar");
    let before = t.tokens.count();
    imo_ok(&[
        "pull",
        "--tls-verify=false",
        "--creds",
        PUSHER,
        "scratch",
        &t.reg.image("app:v1"),
        "-o",
        s(&archive),
    ]);
    assert_eq!(archive_blobs(&archive).len(), 3);
    assert!(t.tokens.count() > before, "the pull asked for no token");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registrys_certs_d_directory_covers_its_token_service() {
    let t = self_signed_with_tokens("certs-d-realm");
    // Both certificates under the registry's own directory only.
    let certs_d = TempDir::new("certs.d-realm");
    let dir = certs_d.join(&t.reg.addr);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["registry.crt", "token.crt"] {
        std::fs::copy(t.trust.join(name), dir.join(name)).unwrap();
    }
    let imo = imo::Imo::builder()
        .certs_d(vec![certs_d.path().to_owned()])
        .final_credentials("pusher", "push-pw")
        .build()
        .unwrap();
    let summary = imo
        .pull_to_writer("scratch", &t.reg.image("app:v1"), tokio::io::sink())
        .await
        .unwrap();
    let src = raw_manifest_as(t.trust.path(), &t.reg.image("app:v1"));
    assert_eq!(summary.manifest_digest, sha256(&src));
}
