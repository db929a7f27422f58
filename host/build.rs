//! Builds the guest component for `wasm32-wasip2` and leaves it in `OUT_DIR/imo.wasm`, so
//! the host embeds it and `cargo build -p imo` is the only command anyone runs.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ sits in the workspace");
    // Relative to the package root, where cargo resolves them each time it checks: absolute
    // paths would keep watching the first checkout's sources after the workspace moved (a
    // clone elsewhere reusing a kept target directory) and embed a stale component.
    for watched in [
        "../guest/src",
        "../guest/Cargo.toml",
        "../wit",
        "../Cargo.lock",
        "../.cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={watched}");
    }

    // One guest build shared by every profile of the host: a sibling of the host's target
    // directory (found above OUT_DIR = <target>/<profile>/build/<pkg>/out).
    let target_dir = guest_target_dir(&out);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "-p",
        "imo-guest",
    ])
    .arg("--manifest-path")
    .arg(root.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not the guest.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the guest");
    assert!(
        status.success(),
        "building the guest component failed; is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)"
    );
    let built = target_dir.join("wasm32-wasip2/release/imo_guest.wasm");
    std::fs::copy(&built, out.join("imo.wasm"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
}

fn guest_target_dir(out: &Path) -> PathBuf {
    out.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent()?.parent())
        .map_or_else(
            || out.join("guest-target"),
            |target| target.join("imo-guest"),
        )
}
