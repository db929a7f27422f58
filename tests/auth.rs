//! Authenticated registries: htpasswd (Basic) registries, one account per role across three
//! registries, and the Docker/OCI token flow against a token service the tests run. Every
//! result is checked with skopeo, which authenticates on its own.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use support::token::{Account, TokenServer};
use support::*;

/// A registry that asks for Basic credentials checked against an htpasswd file of `users`.
fn htpasswd_registry(users: &[(&str, &str)]) -> (Registry, TempDir) {
    let dir = TempDir::new("htpasswd");
    let mut file = Vec::new();
    for (user, password) in users {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apt-get install apache2-utils)");
        assert!(out.status.success(), "htpasswd failed");
        file.extend_from_slice(String::from_utf8(out.stdout).unwrap().trim_end().as_bytes());
        file.push(b'\n');
    }
    let path = dir.join("htpasswd");
    std::fs::write(&path, file).unwrap();
    let reg = Registry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: imo-test\n    path: {}\n",
        path.display()
    ));
    (reg, dir)
}

/// Runs `imo` with no auth file in reach, so the flags are the only source of credentials.
fn imo_alone(args: &[&str]) -> Output {
    let home = TempDir::new("home");
    Command::new(env!("CARGO_BIN_EXE_imo"))
        .args(args)
        .env("IMO_CACHE_DIR", cache_dir())
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", home.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = imo_alone(args);
    assert!(
        out.status.success(),
        "imo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `imo`, expects exit status 1 without a panic, and returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = imo_alone(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "imo {args:?} should exit 1: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "imo {args:?} panicked: {stderr}"
    );
    stderr
}

/// Pushes a layout into an authenticated registry with skopeo, keeping its digests.
fn seed_as(layout: &Layout, destination: &str, creds: &str) {
    skopeo(&[
        "copy",
        "-q",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds,
        &format!("oci:{}:{}", layout.dir.path().display(), layout.tag),
        &format!("docker://{destination}"),
    ]);
}

/// The manifest bytes an authenticated registry serves, read by skopeo, or skopeo's error.
fn manifest_as(reference: &str, creds: &str) -> Result<Vec<u8>, String> {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            creds,
            &format!("docker://{reference}"),
        ])
        .output()
        .expect("running skopeo");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Asserts that a tag is absent: skopeo, with credentials that may read it, finds no
/// manifest (rather than being refused).
fn assert_no_tag(reference: &str, creds: &str) {
    match manifest_as(reference, creds) {
        Ok(_) => panic!("{reference} exists but should not"),
        Err(e) => assert!(
            e.contains("manifest unknown") || e.contains("not found"),
            "skopeo could not tell whether {reference} exists: {e}"
        ),
    }
}

/// Copies an image out of an authenticated registry with skopeo, which fetches and
/// verifies every blob.
fn copy_out_as(reference: &str, creds: &str) {
    let dir = TempDir::new("copy-out");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--src-creds",
        creds,
        &format!("docker://{reference}"),
        &format!("oci:{}:out", dir.path().display()),
    ]);
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn v1() -> Layout {
    oci_layout("v1", &[("auth-a", 300_000), ("auth-b", 200_000)])
}

fn v2() -> Layout {
    oci_layout(
        "v2",
        &[
            ("auth-a", 300_000),
            ("auth-b", 200_000),
            ("auth-c", 250_000),
        ],
    )
}

#[test]
fn htpasswd_registries_take_basic_credentials() {
    let (src, _src_pw) = htpasswd_registry(&[("user", "pass"), ("other", "0ther")]);
    let (dst, _dst_pw) = htpasswd_registry(&[("mirror", "m1rr0r")]);
    let (v1, v2) = (v1(), v2());
    seed_as(&v1, &src.image("app:v1"), "user:pass");
    seed_as(&v2, &src.image("app:v2"), "user:pass");
    seed_as(&v1, &dst.image("app:v1"), "mirror:m1rr0r");
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");
    let pull = |creds: &[&str]| {
        let mut args = vec!["pull", "-q"];
        args.extend(creds);
        let (base, final_) = (src.image("app:v1"), src.image("app:v2"));
        args.extend([base.as_str(), final_.as_str(), "-o", path_str(&archive)]);
        imo_alone(&args)
    };

    // No credentials: refused, saying which flag supplies them; no archive.
    let out = pull(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("imo: error: not authorized"), "{err}");
    assert!(
        err.contains(&src.addr),
        "the error names the registry: {err}"
    );
    assert!(
        err.contains("--creds"),
        "the error says how to give credentials: {err}"
    );
    assert!(!archive.exists());

    // A wrong password: refused, the password never printed, no archive.
    let out = pull(&["--creds", "user:s3cret-wrong"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("imo: error: not authorized"), "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("s3cret-wrong"),
        "a password was printed: {err}"
    );
    assert!(!archive.exists(), "a refused pull left an archive");
    // An unknown user is refused the same way.
    let out = pull(&["--creds", "nobody:pass"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not authorized"));
    assert!(!archive.exists());

    // The right credentials: the difference only (manifest, config, the new layer).
    let out = pull(&["--creds", "user:pass"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut carried = archive_blobs(&archive);
    carried.sort();
    let mut expected = vec![
        v2.manifest_digest.clone(),
        v2.config_digest.clone(),
        v2.layer_digests[2].clone(),
    ];
    expected.sort();
    assert_eq!(carried, expected);
    // Another account of the same registry works as well.
    std::fs::remove_file(&archive).unwrap();
    let out = pull(&[
        "--base-creds",
        "other:0ther",
        "--final-creds",
        "other:0ther",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Push: without credentials, or the source's (unknown at the destination), refused and
    // nothing tagged.
    let dest = dst.image("app:v2");
    let err = fails(&["push", "-q", path_str(&archive), &dest]);
    assert!(err.contains("not authorized"), "{err}");
    assert!(err.contains(&dst.addr), "{err}");
    let err = fails(&[
        "push",
        "-q",
        "--creds",
        "user:pass",
        path_str(&archive),
        &dest,
    ]);
    assert!(err.contains("not authorized"), "{err}");
    assert_no_tag(&dest, "mirror:m1rr0r");

    // With --dest-creds: skopeo finds the source's digest and every blob.
    ok(&[
        "push",
        "--dest-creds",
        "mirror:m1rr0r",
        path_str(&archive),
        &dest,
    ]);
    let pushed = manifest_as(&dest, "mirror:m1rr0r").unwrap();
    let source = manifest_as(&src.image("app:v2"), "user:pass").unwrap();
    assert_eq!(sha256(&pushed), sha256(&source));
    assert_eq!(sha256(&pushed), v2.manifest_digest);
    copy_out_as(&dest, "mirror:m1rr0r");
}

#[test]
fn each_role_uses_its_own_credentials() {
    let (a, _a_pw) = htpasswd_registry(&[("a", "alpha-pw")]);
    let (b, _b_pw) = htpasswd_registry(&[("b", "bravo-pw")]);
    let (c, _c_pw) = htpasswd_registry(&[("c", "charlie-pw")]);
    let (v1, v2) = (v1(), v2());
    seed_as(&v1, &a.image("app:v1"), "a:alpha-pw");
    seed_as(&v2, &b.image("app:v2"), "b:bravo-pw");
    seed_as(&v1, &c.image("app:v1"), "c:charlie-pw");
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");
    let (base, final_) = (a.image("app:v1"), b.image("app:v2"));
    let out = path_str(&archive);

    // Each registry is asked with its own account.
    ok(&[
        "pull",
        "-q",
        "--base-creds",
        "a:alpha-pw",
        "--final-creds",
        "b:bravo-pw",
        &base,
        &final_,
        "-o",
        out,
    ]);
    let mut carried = archive_blobs(&archive);
    carried.sort();
    let mut expected = vec![
        v2.manifest_digest.clone(),
        v2.config_digest.clone(),
        v2.layer_digests[2].clone(),
    ];
    expected.sort();
    assert_eq!(carried, expected, "only what the base on A lacks travels");

    // A role's own flag wins over --creds for that role.
    std::fs::remove_file(&archive).unwrap();
    ok(&[
        "pull",
        "-q",
        "--creds",
        "a:alpha-pw",
        "--final-creds",
        "b:bravo-pw",
        &base,
        &final_,
        "-o",
        out,
    ]);

    // Swapped credentials are refused by the registry they were wrongly sent to.
    std::fs::remove_file(&archive).unwrap();
    let with_roles = |base_creds: &str, final_creds: &str| {
        let err = fails(&[
            "pull",
            "-q",
            "--base-creds",
            base_creds,
            "--final-creds",
            final_creds,
            &base,
            &final_,
            "-o",
            out,
        ]);
        assert!(err.contains("not authorized"), "{err}");
        assert!(!archive.exists());
        err
    };
    let err = with_roles("b:bravo-pw", "b:bravo-pw");
    assert!(
        err.contains(&a.addr),
        "the error names the base's registry: {err}"
    );
    let err = with_roles("a:alpha-pw", "a:alpha-pw");
    assert!(
        err.contains(&b.addr),
        "the error names the final's registry: {err}"
    );
    with_roles("b:bravo-pw", "a:alpha-pw");

    ok(&[
        "pull",
        "-q",
        "--base-creds",
        "a:alpha-pw",
        "--final-creds",
        "b:bravo-pw",
        &base,
        &final_,
        "-o",
        out,
    ]);

    // Push into C: another registry's account is refused there and nothing is tagged.
    let dest = c.image("app:v2");
    for wrong in ["a:alpha-pw", "b:bravo-pw"] {
        let err = fails(&["push", "-q", "--dest-creds", wrong, out, &dest]);
        assert!(err.contains("not authorized"), "{err}");
        assert!(err.contains(&c.addr), "{err}");
        assert_no_tag(&dest, "c:charlie-pw");
    }
    // C's own account: C holds B's manifest, and every blob is there.
    ok(&["push", "-q", "--dest-creds", "c:charlie-pw", out, &dest]);
    let pushed = manifest_as(&dest, "c:charlie-pw").unwrap();
    let source = manifest_as(&final_, "b:bravo-pw").unwrap();
    assert_eq!(pushed, source, "C holds B's manifest byte for byte");
    copy_out_as(&dest, "c:charlie-pw");
}

/// A token service with a pushing and a pull-only account (anonymous refused), and two
/// registries that trust it: `src` holding app:v1 and app:v2, `dst` holding app:v1.
struct TokenSetup {
    tokens: TokenServer,
    src: Registry,
    dst: Registry,
    v2: Layout,
}

const PUSHER: &str = "pusher:push-pw";
const READER: &str = "reader:read-pw";

fn token_setup() -> TokenSetup {
    let tokens = TokenServer::start(vec![
        Account::new("pusher", "push-pw").may("app", &["pull", "push"]),
        Account::new("reader", "read-pw").may("app", &["pull"]),
    ]);
    let src = Registry::start_with(&tokens.registry_config());
    let dst = Registry::start_with(&tokens.registry_config());
    let (v1, v2) = (v1(), v2());
    seed_as(&v1, &src.image("app:v1"), PUSHER);
    seed_as(&v2, &src.image("app:v2"), PUSHER);
    seed_as(&v1, &dst.image("app:v1"), PUSHER);
    assert!(
        tokens.count() > 0,
        "skopeo seeded the registries without asking the token service"
    );
    TokenSetup {
        tokens,
        src,
        dst,
        v2,
    }
}

#[test]
fn token_flow_pulls_and_pushes_with_scoped_tokens() {
    let t = token_setup();
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");

    // Pull with the pull-only account: only `pull` is asked for, and granted.
    let before = t.tokens.count();
    ok(&[
        "pull",
        "-q",
        "--creds",
        READER,
        &t.src.image("app:v1"),
        &t.src.image("app:v2"),
        "-o",
        path_str(&archive),
    ]);
    let seen = t.tokens.requests_since(before);
    assert!(!seen.is_empty(), "imo pulled without a token");
    for r in &seen {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.account.as_deref(), Some("reader"), "{r:?}");
        assert_eq!(r.service.as_deref(), Some(t.tokens.service.as_str()));
        assert_eq!(r.scopes, ["repository:app:pull"], "{r:?}");
        assert_eq!(r.granted, ["repository:app:pull"], "{r:?}");
    }
    let mut carried = archive_blobs(&archive);
    carried.sort();
    let mut expected = vec![
        t.v2.manifest_digest.clone(),
        t.v2.config_digest.clone(),
        t.v2.layer_digests[2].clone(),
    ];
    expected.sort();
    assert_eq!(carried, expected);

    // Vet only reads, so it asks for `pull` even with an account that may push.
    let before = t.tokens.count();
    ok(&[
        "vet",
        "-q",
        "--dest-creds",
        PUSHER,
        path_str(&archive),
        &t.dst.image("app:v2"),
    ]);
    let seen = t.tokens.requests_since(before);
    assert!(!seen.is_empty(), "imo vetted without a token");
    for r in &seen {
        assert_eq!(r.account.as_deref(), Some("pusher"), "{r:?}");
        assert_eq!(r.scopes, ["repository:app:pull"], "{r:?}");
    }

    // Push with the pushing account: `pull,push` asked for the destination.
    let before = t.tokens.count();
    ok(&[
        "push",
        "-q",
        "--dest-creds",
        PUSHER,
        path_str(&archive),
        &t.dst.image("app:v2"),
    ]);
    let seen = t.tokens.requests_since(before);
    assert!(
        seen.iter()
            .any(|r| r.scopes.iter().any(|s| s == "repository:app:pull,push")
                && r.granted == ["repository:app:pull,push"]
                && r.account.as_deref() == Some("pusher")),
        "push asked for no pull,push token: {seen:?}"
    );
    assert!(seen.iter().all(|r| r.status == 200), "{seen:?}");

    let pushed = manifest_as(&t.dst.image("app:v2"), PUSHER).unwrap();
    let source = manifest_as(&t.src.image("app:v2"), READER).unwrap();
    assert_eq!(pushed, source);
    assert_eq!(sha256(&pushed), t.v2.manifest_digest);
    copy_out_as(&t.dst.image("app:v2"), READER);

    // Over the whole run the service saw both scopes.
    let all = t.tokens.requests();
    for scope in ["repository:app:pull", "repository:app:pull,push"] {
        assert!(
            all.iter().any(|r| r.scopes.iter().any(|s| s == scope)),
            "no request for {scope}: {all:?}"
        );
    }
}

#[test]
fn token_flow_pull_only_account_cannot_push() {
    let t = token_setup();
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");
    ok(&[
        "pull",
        "-q",
        "--creds",
        READER,
        &t.src.image("app:v1"),
        &t.src.image("app:v2"),
        "-o",
        path_str(&archive),
    ]);

    // The reader may vet (HEAD only) …
    ok(&[
        "vet",
        "-q",
        "--dest-creds",
        READER,
        path_str(&archive),
        &t.dst.image("app:v2"),
    ]);
    // … but its push token holds `pull` only, so the registry refuses the upload.
    let before = t.tokens.count();
    let err = fails(&[
        "push",
        "-q",
        "--dest-creds",
        READER,
        path_str(&archive),
        &t.dst.image("app:v2"),
    ]);
    assert!(
        err.contains("not authorized") && err.contains("the account may not push to app"),
        "the error says what is missing: {err}"
    );
    assert!(
        err.contains(&t.dst.addr),
        "the error names the registry: {err}"
    );
    let seen = t.tokens.requests_since(before);
    assert!(
        seen.iter().any(|r| r.account.as_deref() == Some("reader")
            && r.scopes.iter().any(|s| s == "repository:app:pull,push")
            && r.granted == ["repository:app:pull"]),
        "the reader asked for pull,push and got pull only: {seen:?}"
    );
    assert_no_tag(&t.dst.image("app:v2"), PUSHER);
    assert!(manifest_as(&t.dst.image("app:v1"), PUSHER).is_ok());
}

#[test]
fn token_flow_refusals_are_clear() {
    let t = token_setup();
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");
    let (base, final_) = (t.src.image("app:v1"), t.src.image("app:v2"));

    // Anonymous: the token service refuses, and imo says so.
    let before = t.tokens.count();
    let err = fails(&["pull", "-q", &base, &final_, "-o", path_str(&archive)]);
    assert!(err.contains("imo: error: not authorized"), "{err}");
    assert!(err.contains("anonymous"), "{err}");
    assert!(err.contains("token service"), "{err}");
    assert!(!archive.exists());
    let seen = t.tokens.requests_since(before);
    assert!(
        seen.iter().any(|r| r.account.is_none() && r.status == 401),
        "the token service saw no anonymous request: {seen:?}"
    );

    // A wrong password: refused by the token service, never printed.
    let before = t.tokens.count();
    let err = fails(&[
        "pull",
        "-q",
        "--creds",
        "reader:wr0ng-pw",
        &base,
        &final_,
        "-o",
        path_str(&archive),
    ]);
    assert!(err.contains("imo: error: not authorized"), "{err}");
    assert!(!err.contains("wr0ng-pw"), "a password was printed: {err}");
    assert!(!archive.exists());
    let seen = t.tokens.requests_since(before);
    assert!(
        seen.iter()
            .any(|r| r.account.as_deref() == Some("reader") && r.status == 401),
        "{seen:?}"
    );

    // An account with no rights to the repository gets a token without access; the
    // registry then refuses.
    let err = fails(&[
        "pull",
        "-q",
        "--creds",
        "reader:read-pw",
        &t.src.image("other:v1"),
        &final_,
        "-o",
        path_str(&archive),
    ]);
    assert!(err.contains("not authorized"), "{err}");
    assert!(!archive.exists());
}

/// A registry whose token service sits behind the fault proxy; skopeo seeds it directly
/// (the rules match only imo's token requests, whose query starts with `scope=`).
fn token_behind_proxy(
    rules: Vec<support::proxy::Rule>,
) -> (TokenServer, support::proxy::Proxy, Registry) {
    let tokens = TokenServer::start(vec![
        Account::new("pusher", "push-pw").may("app", &["pull", "push"]),
    ]);
    let proxy = support::proxy::Proxy::start(&tokens.addr, rules);
    let config = tokens
        .registry_config()
        .replace(&tokens.realm(), &format!("http://{}/token", proxy.addr));
    let src = Registry::start_with(&config);
    seed_as(&v1(), &src.image("app:v1"), PUSHER);
    seed_as(&v2(), &src.image("app:v2"), PUSHER);
    (tokens, proxy, src)
}

#[test]
fn token_service_faults_are_retried_or_reported() {
    use support::proxy::{Fault, Rule};
    let imo_token = "/token?scope=";
    let (_tokens, proxy, src) = token_behind_proxy(vec![
        Rule::new("GET", imo_token, 1, Fault::Status(503, None)),
        Rule::new("GET", imo_token, 1, Fault::Reset),
        Rule::new("GET", imo_token, 1, Fault::Status(429, Some(1))),
    ]);
    let work = TempDir::new("work");
    let archive = work.join("diff.tar");
    let out = ok(&[
        "pull",
        "--creds",
        PUSHER,
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(&archive),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(proxy.faults(), 3, "every token fault happened");
    assert!(stderr.contains("retrying GET"), "{stderr}");
    assert!(archive.exists());

    // A token service that keeps failing: a clear error, and no archive.
    let (_tokens, proxy, src) = token_behind_proxy(vec![Rule::new(
        "GET",
        imo_token,
        50,
        Fault::Status(500, None),
    )]);
    let archive = work.join("never.tar");
    let err = fails(&[
        "pull",
        "--retries",
        "2",
        "--creds",
        PUSHER,
        &src.image("app:v1"),
        &src.image("app:v2"),
        "-o",
        path_str(&archive),
    ]);
    assert_eq!(proxy.faults(), 3, "one try and two retries");
    assert!(
        err.contains("token request") && err.contains("500"),
        "the error names the token request and its status: {err}"
    );
    assert!(!archive.exists());
}

/// A CA (`cas/ca.crt`) and a certificate for 127.0.0.1 it signed, made with openssl in
/// `dir`; returns the CA's directory, the certificate and its key.
fn ca_and_certificate(dir: &TempDir) -> (std::path::PathBuf, String, String) {
    let ca_dir = dir.join("cas");
    std::fs::create_dir_all(&ca_dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "-keyout",
        "ca.key",
        "-out",
        "cas/ca.crt",
        "-subj",
        "/CN=imo test CA",
    ]);
    openssl(&[
        "-keyout",
        "server.key",
        "-out",
        "server.crt",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=CA:FALSE",
        "-CA",
        "cas/ca.crt",
        "-CAkey",
        "ca.key",
    ]);
    let p = |n: &str| path_str(&dir.join(n)).to_owned();
    (ca_dir, p("server.crt"), p("server.key"))
}

#[test]
fn an_https_registry_cannot_send_credentials_to_plain_http_on_loopback() {
    // Whatever reaches this listener is counted; it answers like a token service would.
    let body = r#"{"token":"t"}"#;
    let listener = FixedServer::start(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let certs = TempDir::new("certs");
    let (ca_dir, cert, key) = ca_and_certificate(&certs);
    let realm = format!("http://{}/x", listener.addr);
    let reg = Registry::start_with(&format!(
        "  tls:\n    certificate: {cert}\n    key: {key}\nauth:\n  token:\n    realm: {realm}\n    \
         service: imo-test\n    issuer: imo-test\n    rootcertbundle: {}\n",
        path_str(&ca_dir.join("ca.crt"))
    ));
    let work = TempDir::new("work");
    let archive = work.join("a.tar");
    let err = fails(&[
        "pull",
        "--retries",
        "0",
        "--cert-dir",
        path_str(&ca_dir),
        "--creds",
        "user:s3cret",
        "scratch",
        &reg.image("app:v1"),
        "-o",
        path_str(&archive),
    ]);
    assert_eq!(
        listener.hits(),
        0,
        "the plain-HTTP realm was reached: {err}"
    );
    assert!(
        err.contains(&format!("refused http://{}", listener.addr))
            && err.contains(&format!("the token realm {realm}"))
            && err.contains("plain HTTP"),
        "the error names the refused URL and the rule: {err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    assert!(!archive.exists());
}
