//! Credentials found the way skopeo and docker find them, for the registries named only.

mod support;

use std::process::Command;
use support::*;

/// A registry that asks for Basic credentials of `users` (htpasswd).
fn htpasswd_registry(dir: &TempDir, users: &[(&str, &str)]) -> Registry {
    let mut lines = Vec::new();
    for (user, password) in users {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apt-get install apache2-utils)");
        assert!(out.status.success());
        lines.push(String::from_utf8(out.stdout).unwrap().trim_end().to_owned());
    }
    let file = dir.join("htpasswd");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    Registry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: imo-test\n    path: {}\n",
        file.display()
    ))
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

/// An auth file (podman's format) at `path` holding `entries` (key, user:password).
fn auth_file(path: &std::path::Path, entries: &[(&str, &str)]) {
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(k, c)| ((*k).to_owned(), serde_json::json!({"auth": b64(c)})))
        .collect();
    std::fs::write(path, serde_json::json!({ "auths": auths }).to_string()).unwrap();
}

fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            out.push(if k <= c.len() {
                char::from(A[((n >> (18 - 6 * k)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

fn imo_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imo"));
    cmd.args(args)
        .env("IMO_CACHE_DIR", cache_dir())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn auth_files_supply_credentials_for_the_named_registry() {
    let dir = TempDir::new("htpasswd");
    let reg = htpasswd_registry(&dir, &[("alice", "wonder:land")]);
    let layout = oci_layout("v1", &[("files", 80_000)]);
    skopeo(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:wonder:land",
        &format!("oci:{}:v1", layout.dir.path().display()),
        &format!("docker://{}", reg.image("app:v1")),
    ]);
    let work = TempDir::new("work");
    let archive = work.join("a.tar");
    let home = TempDir::new("home");
    let pull = [
        "pull",
        "scratch",
        &reg.image("app:v1"),
        "-o",
        archive.to_str().unwrap(),
    ];
    let home_env = ("HOME", home.path().to_str().unwrap());
    let xdg = ("XDG_RUNTIME_DIR", home.path().to_str().unwrap());

    // No credentials anywhere: a clear refusal.
    let out = imo_env(&pull, &[home_env, xdg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not authorized"), "{err}");

    // $REGISTRY_AUTH_FILE, podman's format.
    let auth = work.join("auth.json");
    let entry =
        serde_json::json!({"auths": {reg.addr.clone(): {"auth": b64("alice:wonder:land")}}});
    std::fs::write(&auth, entry.to_string()).unwrap();
    let out = imo_env(
        &pull,
        &[
            home_env,
            xdg,
            ("REGISTRY_AUTH_FILE", auth.to_str().unwrap()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(archive_blobs(&archive).len(), 3);

    // ~/.docker/config.json, with a wrong password: refused, and the password never printed.
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    let wrong = serde_json::json!({"auths": {format!("https://{}", reg.addr): {"auth": b64("alice:s3cret-wrong")}}});
    std::fs::write(home.join(".docker/config.json"), wrong.to_string()).unwrap();
    std::fs::remove_file(&archive).unwrap();
    let out = imo_env(&pull, &[home_env, xdg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not authorized"),
        "{err}"
    );
    assert!(
        !err.contains("s3cret-wrong"),
        "a password was printed: {err}"
    );
    assert!(!archive.exists());

    // Only the named registry's entry is read: another registry's entry, unreadable on
    // purpose, does not stop the pull, so it was never looked at, let alone handed on.
    std::fs::remove_file(home.join(".docker/config.json")).unwrap();
    let other = serde_json::json!({"auths": {
        "127.0.0.1:1": {"auth": "!!not base64 leak-secret!!"},
        reg.addr.clone(): {"auth": b64("alice:wonder:land")},
    }});
    std::fs::write(&auth, other.to_string()).unwrap();
    let out = imo_env(
        &pull,
        &[
            home_env,
            xdg,
            ("REGISTRY_AUTH_FILE", auth.to_str().unwrap()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("leak-secret"));
    std::fs::remove_file(&archive).unwrap();
    let out = imo_env(
        &[
            "pull",
            "scratch",
            "127.0.0.1:1/app:v1",
            "-o",
            archive.to_str().unwrap(),
        ],
        &[
            home_env,
            xdg,
            ("REGISTRY_AUTH_FILE", auth.to_str().unwrap()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not base64") && !err.contains("leak-secret"),
        "{err}"
    );

    // An explicit flag wins over the file.
    let out = imo_env(
        &[
            "pull",
            "--creds",
            "alice:wonder:land",
            "scratch",
            &reg.image("app:v1"),
            "-o",
            archive.to_str().unwrap(),
        ],
        &[home_env, xdg],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // --password-stdin.
    std::fs::remove_file(&archive).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imo"))
        .args([
            "pull",
            "--creds",
            "alice",
            "--password-stdin",
            "scratch",
            &reg.image("app:v1"),
            "-o",
            archive.to_str().unwrap(),
        ])
        .env("IMO_CACHE_DIR", cache_dir())
        .env("HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"wonder:land\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(archive.exists());
}

/// Runs `imo` with `auth` as the only auth file, failing the test with its stderr unless it
/// succeeds.
fn imo_with_auth_file(args: &[&str], auth: &std::path::Path) -> std::process::Output {
    let home = TempDir::new("home");
    let h = home.path().to_str().unwrap();
    let out = imo_env(
        args,
        &[
            ("HOME", h),
            ("XDG_RUNTIME_DIR", h),
            ("REGISTRY_AUTH_FILE", auth.to_str().unwrap()),
        ],
    );
    assert!(
        out.status.success(),
        "imo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn each_registry_gets_its_own_auth_file_entry() {
    let (d1, d2) = (TempDir::new("htpasswd-1"), TempDir::new("htpasswd-2"));
    let r1 = htpasswd_registry(&d1, &[("one", "pw-one")]);
    let r2 = htpasswd_registry(&d2, &[("two", "pw-two")]);
    let app1 = oci_layout("v1", &[("os", 60_000)]);
    let app2 = oci_layout("v2", &[("os", 60_000), ("app", 40_000)]);
    let tool1 = oci_layout("v1", &[("tool-base", 30_000)]);
    let tool2 = oci_layout("v2", &[("tool-base", 30_000), ("tool", 20_000)]);
    seed_as(&app1, &r1.image("app:v1"), "one:pw-one");
    seed_as(&app2, &r1.image("app:v2"), "one:pw-one");
    seed_as(&tool1, &r2.image("tool:v1"), "two:pw-two");
    seed_as(&tool2, &r2.image("tool:v2"), "two:pw-two");
    let work = TempDir::new("work");
    let auth = work.join("auth.json");
    // R2's key as docker writes it, with a scheme.
    let r2_key = format!("https://{}", r2.addr);
    auth_file(&auth, &[(&r1.addr, "one:pw-one"), (&r2_key, "two:pw-two")]);
    let archive = work.join("x.tar");
    let out = archive.to_str().unwrap();
    let (app_v1, app_v2) = (r1.image("app:v1"), r1.image("app:v2"));
    let (tool_v1, tool_v2) = (r2.image("tool:v1"), r2.image("tool:v2"));

    // One base, finals on both registries: each gets its own account.
    imo_with_auth_file(
        &[
            "pull", "-q", "--base", &app_v1, &app_v2, &tool_v2, "-o", out,
        ],
        &auth,
    );
    let carried = archive_blobs(&archive);
    for d in [
        &app2.manifest_digest,
        &tool2.manifest_digest,
        &tool2.layer_digests[1],
    ] {
        assert!(carried.contains(d), "the archive lacks {d}: {carried:?}");
    }
    assert!(
        !carried.contains(&app1.layer_digests[0]),
        "the base's layer travelled"
    );

    // A base on each registry.
    std::fs::remove_file(&archive).unwrap();
    imo_with_auth_file(
        &[
            "pull", "-q", "--base", &app_v1, "--base", &tool_v1, &app_v2, &tool_v2, "-o", out,
        ],
        &auth,
    );
    let carried = archive_blobs(&archive);
    assert!(carried.contains(&tool2.layer_digests[1]));
    assert!(
        !carried.contains(&tool2.layer_digests[0]),
        "the base on R2 was not read"
    );

    // An inventory of a repository on each.
    let inventory = work.join("inv.json");
    let inv = inventory.to_str().unwrap();
    imo_with_auth_file(
        &[
            "inventory",
            "-q",
            &r1.image("app"),
            &r2.image("tool"),
            "-o",
            inv,
        ],
        &auth,
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&inventory).unwrap()).unwrap();
    let listed = json["blobs"].to_string();
    for d in [&app2.layer_digests[1], &tool2.layer_digests[1]] {
        assert!(
            listed.contains(d.as_str()),
            "the inventory lacks {d}: {listed}"
        );
    }
}

#[test]
fn the_most_specific_auth_file_key_wins() {
    let dir = TempDir::new("htpasswd");
    // Only the namespace key holds a user this registry knows.
    let reg = htpasswd_registry(&dir, &[("orgbot", "pw-org")]);
    let app = oci_layout("v1", &[("ns", 50_000)]);
    for repo in ["org/app:v1", "app:v1", "organisation/app:v1"] {
        seed_as(&app, &reg.image(repo), "orgbot:pw-org");
    }
    let work = TempDir::new("work");
    let auth = work.join("auth.json");
    let org_key = format!("{}/org", reg.addr);
    auth_file(
        &auth,
        &[(&reg.addr, "stranger:nope"), (&org_key, "orgbot:pw-org")],
    );
    let archive = work.join("x.tar");
    let out = archive.to_str().unwrap();
    imo_with_auth_file(
        &["pull", "-q", "scratch", &reg.image("org/app:v1"), "-o", out],
        &auth,
    );
    assert_eq!(archive_blobs(&archive).len(), 3);

    // Outside the namespace the registry-wide key applies, and is refused.
    let home = TempDir::new("home");
    let h = home.path().to_str().unwrap();
    for repo in ["app:v1", "organisation/app:v1"] {
        let out = imo_env(
            &["pull", "-q", "scratch", &reg.image(repo), "-o", out],
            &[
                ("HOME", h),
                ("XDG_RUNTIME_DIR", h),
                ("REGISTRY_AUTH_FILE", auth.to_str().unwrap()),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("not authorized"),
            "{repo}: {err}"
        );
    }
}
