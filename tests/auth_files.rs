//! Credentials found the way skopeo and docker find them, for the registries named only.

mod support;

use std::process::Command;
use support::*;

fn htpasswd_registry(dir: &TempDir, user: &str, password: &str) -> Registry {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("htpasswd (apt-get install apache2-utils)");
    assert!(out.status.success());
    let file = dir.join("htpasswd");
    std::fs::write(&file, out.stdout).unwrap();
    Registry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: imo-test\n    path: {}\n",
        file.display()
    ))
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
    let reg = htpasswd_registry(&dir, "alice", "wonder:land");
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
