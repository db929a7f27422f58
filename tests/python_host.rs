//! A second host: the component under Python's `wasmtime` package (PyPI), driven by
//! `examples/python_host.py`, against real distribution registries on loopback. What it writes
//! and pushes must match what the `imo` command does with the same images.
//!
//! The package comes from the `python3` on PATH if it can import it, otherwise from a virtualenv
//! made once under the target directory (`python3 -m venv`, then `pip install` from PyPI).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use support::*;

/// The version the example was written and tested against.
const WASMTIME_PY: &str = "wasmtime==50.0.1";

/// Succeeds only if the interpreter has the parts of the package the example uses.
const PROBE: &str = "from wasmtime import Store, WasiConfig, ExitTrap\n\
                     from wasmtime.component import Linker\n\
                     Linker.add_wasip2, Linker.add_wasi_http, Store.set_wasi_http, WasiConfig.stdout_custom";

fn can_run_example(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", PROBE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_checked(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python interpreter that can import `wasmtime` with component and wasi-http support.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let system = PathBuf::from("python3");
        if can_run_example(&system) {
            return system;
        }
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-wasmtime-50");
        let python = venv.join("bin/python3");
        if can_run_example(&python) {
            return python;
        }
        // Built beside and renamed into place, so a run cut short never leaves a half-made
        // virtualenv where the next run looks.
        let partial = venv.with_extension(format!("partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        run_checked(
            Command::new("python3").args(["-m", "venv"]).arg(&partial),
            "python3 -m venv (apt-get install python3-venv)",
        );
        run_checked(
            Command::new(partial.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check", WASMTIME_PY])
                .env("PIP_NO_INPUT", "1"),
            &format!("pip install {WASMTIME_PY} from PyPI"),
        );
        let _ = std::fs::remove_dir_all(&venv);
        std::fs::rename(&partial, &venv).unwrap();
        assert!(
            can_run_example(&python),
            "{} cannot import the wasmtime package just installed",
            python.display()
        );
        python
    })
}

/// Runs `examples/python_host.py COMPONENT ARGS…` with no stdin.
fn python_host(component: &Path, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python_host.py");
    Command::new(python())
        .arg(script)
        .arg(component)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn python_host_ok(component: &Path, args: &[&str]) -> Output {
    let out = python_host(component, args);
    assert!(
        out.status.success(),
        "python_host.py {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails the test unless the Python host exits 1 (the component's failure); returns stderr.
fn python_host_err(component: &Path, args: &[&str]) -> String {
    let out = python_host(component, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "python_host.py {args:?} should exit 1: {stderr}"
    );
    assert!(!stderr.contains("Traceback"), "{stderr}");
    stderr
}

/// A registry holding `app:v1` (layers a, b) and `app:v2` (a, b and a new c), and the
/// component written by `imo component -o`.
struct Setup {
    src: Registry,
    v1: Layout,
    v2: Layout,
    work: TempDir,
    component: PathBuf,
}

fn setup() -> Setup {
    let src = Registry::start();
    let v1 = oci_layout("v1", &[("a", 300_000), ("b", 200_000)]);
    let v2 = oci_layout("v2", &[("a", 300_000), ("b", 200_000), ("c", 400_000)]);
    seed(&v1, &src.image("app:v1"), None);
    seed(&v2, &src.image("app:v2"), None);
    let work = TempDir::new("python-host");
    let component = work.join("imo.wasm");
    imo_ok(&["component", "-o", s(&component)]);
    Setup {
        src,
        v1,
        v2,
        work,
        component,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn python_host_writes_the_archive_imo_writes() {
    let t = setup();
    let (v1, v2) = (t.src.image("app:v1"), t.src.image("app:v2"));
    let by_imo = t.work.join("imo.tar");
    imo_ok(&["pull", "-q", &v1, &v2, "-o", s(&by_imo)]);
    let expected = std::fs::read(&by_imo).unwrap();
    assert_eq!(
        archive_blobs(&by_imo),
        [
            t.v2.manifest_digest.clone(),
            t.v2.config_digest.clone(),
            t.v2.layer_digests[2].clone()
        ],
        "imo's own archive carries the manifest, config and the one new layer"
    );

    // The archive streamed through the Python process (the component's stdout).
    let streamed = t.work.join("streamed.tar");
    python_host_ok(&t.component, &["pull", &v1, &v2, s(&streamed), "-q"]);
    assert!(
        std::fs::read(&streamed).unwrap() == expected,
        "the archive streamed to the Python host differs from imo's"
    );
    assert!(!t.work.join("streamed.tar.partial").exists());

    // Written by the component itself into a preopened directory.
    let granted = TempDir::new("python-host-preopen");
    let written = granted.join("written.tar");
    python_host_ok(
        &t.component,
        &["--preopen", "pull", &v1, &v2, s(&written), "-q"],
    );
    assert!(
        std::fs::read(&written).unwrap() == expected,
        "the archive written into the Python host's preopen differs from imo's"
    );

    // To the Python process's own stdout.
    let out = python_host_ok(&t.component, &["pull", &v1, &v2, "-", "-q"]);
    assert!(
        out.stdout == expected,
        "the archive on the Python host's stdout differs from imo's"
    );

    // A failure is the component's message and exit 1, and leaves no archive behind.
    let missing = t.work.join("missing.tar");
    let err = python_host_err(
        &t.component,
        &["pull", &v1, &t.src.image("app:nope"), s(&missing), "-q"],
    );
    assert!(
        err.contains("not found") && err.contains("MANIFEST_UNKNOWN"),
        "{err}"
    );
    assert!(!missing.exists());
    assert!(!t.work.join("missing.tar.partial").exists());
}

#[test]
fn python_host_vets_and_pushes() {
    let t = setup();
    let (v1, v2) = (t.src.image("app:v1"), t.src.image("app:v2"));
    let archive = t.work.join("diff.tar");
    imo_ok(&["pull", "-q", &v1, &v2, "-o", s(&archive)]);
    let dst = Registry::start();
    let target = dst.image("mirror/app:v2");

    // The destination lacks the base's layers: vet names each one, and push tags nothing.
    let err = python_host_err(&t.component, &["vet", s(&archive), &target]);
    assert!(err.contains("lacks 2 blob(s)"), "{err}");
    for d in &t.v1.layer_digests {
        assert!(err.contains(d.as_str()), "{d} not named: {err}");
    }
    let err = python_host_err(&t.component, &["push", s(&archive), &target]);
    assert!(err.contains("lacks 2 blob(s)"), "{err}");
    assert!(!exists(&target));

    // The site holds v1 in another repository: still missing until vet and push may mount
    // from there. Then vet passes, through stdin and through a read-only preopen, and push
    // puts v2 there byte for byte.
    seed(&t.v1, &dst.image("site/app:v1"), None);
    python_host_err(&t.component, &["vet", s(&archive), &target]);
    let mount = ["--mount-from", "site/app"];
    python_host_ok(
        &t.component,
        &[&["vet", s(&archive), &target][..], &mount].concat(),
    );
    python_host_ok(
        &t.component,
        &[&["--preopen", "vet", s(&archive), &target][..], &mount].concat(),
    );
    python_host_ok(
        &t.component,
        &[&["push", s(&archive), &target, "-q"][..], &mount].concat(),
    );
    assert_eq!(raw_manifest(&target), raw_manifest(&v2));
    copy_out(&target);
}

#[test]
fn the_embedding_guide_shows_the_example_as_it_is() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = std::fs::read_to_string(root.join("examples/python_host.py")).unwrap();
    let guide = std::fs::read_to_string(root.join("docs/embedding.md")).unwrap();
    assert!(
        guide.contains(&format!("```python\n{script}```\n")),
        "docs/embedding.md must quote examples/python_host.py in full, as it is"
    );
}
