//! The component in other hosts, against real distribution registries on loopback: what each
//! writes and pushes must match what the `imo` command does with the same images.
//!
//! - `python`: Python's `wasmtime` package (PyPI), driven by `examples/python_host.py`. The
//!   package comes from the `python3` on PATH if it can import it, otherwise from a virtualenv
//!   made once under the target directory (`python3 -m venv`, then `pip install` from PyPI).
//! - `node`: Node with jco and preview2-shim (npm), driven by `examples/node/host.js`, its
//!   packages installed by `scripts/setup` (`npm ci` in `examples/node`), or here if missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;

/// A registry holding `app:v1` (layers a, b) and `app:v2` (a, b and a new c), and the
/// component written by `imo component -o`.
struct Setup {
    src: Registry,
    v1: Layout,
    v2: Layout,
    work: TempDir,
    component: PathBuf,
}

fn setup(label: &str) -> Setup {
    let src = Registry::start();
    let v1 = oci_layout("v1", &[("a", 300_000), ("b", 200_000)]);
    let v2 = oci_layout("v2", &[("a", 300_000), ("b", 200_000), ("c", 400_000)]);
    seed(&v1, &src.image("app:v1"), None);
    seed(&v2, &src.image("app:v2"), None);
    let work = TempDir::new(label);
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

fn run_checked(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

mod python {
    use super::*;
    use std::sync::OnceLock;

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

    /// Runs `examples/python_host.py COMPONENT ARGS…` with no stdin, its compiled component
    /// cached with the `imo` command's.
    fn python_host(component: &Path, args: &[&str]) -> Output {
        python_host_caching_in(&cache_dir(), component, args)
    }

    fn python_host_caching_in(cache: &Path, component: &Path, args: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python_host.py");
        Command::new(python())
            .arg(script)
            .arg(component)
            .args(args)
            .env("IMO_CACHE_DIR", cache)
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

    #[test]
    fn python_host_writes_the_archive_imo_writes() {
        let t = setup("python-host");
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
        let t = setup("python-host");
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

    /// The compiled component is kept, private, and a second run loads it rather than
    /// compiling (compiling always writes a new file); a damaged one is compiled again, and a
    /// cache others can write is not used.
    #[test]
    fn python_host_compiles_the_component_once() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let t = setup("python-host-cache");
        let (v1, v2) = (t.src.image("app:v1"), t.src.image("app:v2"));
        let cache = t.work.join("cache");
        let pull = |name: &str| {
            let started = std::time::Instant::now();
            let out = python_host_caching_in(
                &cache,
                &t.component,
                &["pull", &v1, &v2, s(&t.work.join(name)), "-q"],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (
                started.elapsed(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let cached = || -> (PathBuf, u64) {
            let files: Vec<_> = std::fs::read_dir(&cache)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(
                files.len(),
                1,
                "one cache file, no temporary left: {files:?}"
            );
            let meta = std::fs::metadata(&files[0]).unwrap();
            assert_eq!(meta.mode() & 0o777, 0o600, "the cache file is private");
            (files[0].clone(), meta.ino())
        };

        let (compiling, _) = pull("first.tar");
        assert_eq!(std::fs::metadata(&cache).unwrap().mode() & 0o777, 0o700);
        let (file, first) = cached();
        let (loading, _) = pull("second.tar");
        assert_eq!(
            cached().1,
            first,
            "the second run loaded the file, not compiled anew"
        );
        eprintln!("python host: first run {compiling:?} (compiling), second {loading:?}");

        // Damaged: compiled again and replaced.
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        pull("third.tar");
        let (_, third) = cached();
        assert_ne!(third, first, "a damaged cache file is compiled again");

        // A cache directory its group can write is passed over, saying why.
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o770)).unwrap();
        let (_, stderr) = pull("fourth.tar");
        assert!(
            stderr.contains("not using the compiled-code cache") && stderr.contains("group"),
            "{stderr}"
        );
        assert_eq!(cached().1, third, "nothing written to an untrusted cache");
        for name in ["second.tar", "third.tar", "fourth.tar"] {
            assert!(
                std::fs::read(t.work.join(name)).unwrap()
                    == std::fs::read(t.work.join("first.tar")).unwrap()
            );
        }
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
}

mod node {
    use super::*;
    use std::sync::OnceLock;
    use std::time::Instant;

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/node")
    }

    /// `examples/node` with its packages: those `scripts/setup` installed, else `npm ci` now.
    fn host_js() -> &'static Path {
        static HOST: OnceLock<PathBuf> = OnceLock::new();
        HOST.get_or_init(|| {
            let dir = example();
            if !dir.join("node_modules/.bin/jco").exists() {
                run_checked(
                    Command::new("npm")
                        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                        .current_dir(&dir),
                    "npm ci in examples/node (scripts/setup installs node and npm)",
                );
            }
            dir.join("host.js")
        })
    }

    /// Runs `node examples/node/host.js COMPONENT ARGS…` with no stdin.
    fn node_host(component: &Path, args: &[&str]) -> Output {
        Command::new("node")
            .arg(host_js())
            .arg(component)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn node_host_ok(component: &Path, args: &[&str]) -> Output {
        let out = node_host(component, args);
        assert!(
            out.status.success(),
            "host.js {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Fails the test unless the Node host exits 1 (the component's failure); returns stderr.
    fn node_host_err(component: &Path, args: &[&str]) -> String {
        let out = node_host(component, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "host.js {args:?} should exit 1: {stderr}"
        );
        assert!(
            !stderr.contains("[object Object]") && !stderr.contains("    at "),
            "a readable message, not an object or a stack: {stderr}"
        );
        stderr
    }

    #[test]
    fn node_host_pulls_vets_and_pushes_as_imo_does() {
        let t = setup("node-host");
        let (v1, v2) = (t.src.image("app:v1"), t.src.image("app:v2"));
        let by_imo = t.work.join("imo.tar");
        imo_ok(&["pull", "-q", &v1, &v2, "-o", s(&by_imo)]);
        let expected = std::fs::read(&by_imo).unwrap();
        let work = format!("{}::/work", s(t.work.path()));

        // The component's own `-o`, into a granted directory: a file it creates through
        // wasi:filesystem, which preview2-shim refuses when asked for `mutate-directory`.
        let started = Instant::now();
        let out = node_host_ok(
            &t.component,
            &[
                "--dir",
                &work,
                "--timing",
                "pull",
                "-q",
                &v1,
                &v2,
                "-o",
                "/work/node.tar",
            ],
        );
        eprintln!(
            "node host: {} (pull in {:?}, transpiling included)",
            String::from_utf8_lossy(&out.stderr).trim(),
            started.elapsed()
        );
        assert!(
            std::fs::read(t.work.join("node.tar")).unwrap() == expected,
            "the archive the component wrote under Node differs from imo's"
        );
        let left: Vec<_> = std::fs::read_dir(t.work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".partial"))
            .collect();
        assert!(left.is_empty(), "no temporary file is left: {left:?}");

        // The component's stdout, through the worker to the host's: the same bytes.
        let out = node_host_ok(&t.component, &["pull", "-q", &v1, &v2, "-o", "-"]);
        assert!(
            out.stdout == expected,
            "the archive on the Node host's stdout differs"
        );

        // The export, with a stream the host opened: the same bytes.
        let summary = node_host_ok(
            &t.component,
            &["--call", "pull", &v1, &v2, s(&t.work.join("export.tar"))],
        );
        let summary: serde_json::Value = serde_json::from_slice(&summary.stdout).unwrap();
        assert_eq!(summary["manifestDigest"], t.v2.manifest_digest.as_str());
        assert!(std::fs::read(t.work.join("export.tar")).unwrap() == expected);

        // An export's failure is the component's message, readable, and leaves no file.
        let err = node_host_err(
            &t.component,
            &[
                "--call",
                "pull",
                &v1,
                &t.src.image("app:nope"),
                s(&t.work.join("no.tar")),
            ],
        );
        assert!(err.contains("MANIFEST_UNKNOWN"), "{err}");
        assert!(!t.work.join("no.tar").exists());

        // An inventory written by the component matches imo's.
        let repo = v2.rsplit_once(':').unwrap().0;
        imo_ok(&["inventory", "-q", repo, "-o", s(&t.work.join("imo.json"))]);
        node_host_ok(
            &t.component,
            &[
                "--dir",
                &work,
                "inventory",
                "-q",
                repo,
                "-o",
                "/work/node.json",
            ],
        );
        assert_eq!(
            std::fs::read(t.work.join("node.json")).unwrap(),
            std::fs::read(t.work.join("imo.json")).unwrap()
        );

        // Vet and push on a site holding v1 in another repository; skopeo reads back v2's
        // manifest, byte for byte.
        let dst = Registry::start();
        let target = dst.image("mirror/app:v2");
        seed(&t.v1, &dst.image("site/app:v1"), None);
        let err = node_host_err(
            &t.component,
            &["--dir", &work, "vet", "/work/imo.tar", &target],
        );
        assert!(err.contains("lacks 2 blob(s)"), "{err}");
        let mount = ["--mount-from", "site/app"];
        node_host_ok(
            &t.component,
            &[
                &["--dir", &work, "vet", "/work/imo.tar", &target][..],
                &mount,
            ]
            .concat(),
        );
        // And with the archive on stdin, no directory granted.
        let vet_stdin = Command::new("node")
            .arg(host_js())
            .arg(&t.component)
            .args([&["vet", "-", &target][..], &mount].concat())
            .stdin(std::fs::File::open(&by_imo).unwrap())
            .output()
            .unwrap();
        assert!(
            vet_stdin.status.success(),
            "vet of the archive on stdin: {}",
            String::from_utf8_lossy(&vet_stdin.stderr)
        );
        node_host_ok(
            &t.component,
            &[
                &["--dir", &work, "push", "-q", "/work/imo.tar", &target][..],
                &mount,
            ]
            .concat(),
        );
        assert_eq!(raw_manifest(&target), raw_manifest(&v2));
        copy_out(&target);

        // The exports vet and push too, with `options` as JSON.
        let beside = dst.image("other/app:v2");
        let call = |export| node_host(&t.component, &["--call", export, s(&by_imo), &beside]);
        let err = call("push-vet");
        assert_eq!(err.status.code(), Some(1));
        let err = String::from_utf8_lossy(&err.stderr);
        assert!(
            err.contains("error: the destination lacks sha256:"),
            "{err}"
        );
        let mount = r#"{"mountFrom": ["site/app"]}"#;
        for export in ["push-vet", "push"] {
            node_host_ok(
                &t.component,
                &["--options", mount, "--call", export, s(&by_imo), &beside],
            );
        }
        assert_eq!(raw_manifest(&beside), raw_manifest(&v2));

        // A push into an `oci:` layout: blobs, index.json and its lock, all made by the
        // component under the shim.
        let full = t.work.join("full.tar");
        imo_ok(&["pull", "-q", "scratch", &v2, "-o", s(&full)]);
        node_host_ok(
            &t.component,
            &[
                "--dir",
                &work,
                "push",
                "-q",
                "/work/full.tar",
                "oci:/work/layout:v2",
            ],
        );
        let layout = format!("oci:{}:v2", s(&t.work.join("layout")));
        assert_eq!(
            skopeo(&["inspect", "--raw", &layout]).stdout,
            raw_manifest(&v2)
        );
    }

    /// The allow-list's pure logic, with Node's own test runner.
    #[test]
    fn node_host_allow_list() {
        host_js();
        run_checked(
            Command::new("node")
                .args(["--test", "allowlist.test.js"])
                .current_dir(example()),
            "node --test examples/node/allowlist.test.js",
        );
    }

    /// The event loop of a program calling an export keeps turning: the call runs in a worker.
    #[test]
    fn node_host_exports_leave_the_event_loop_free() {
        let t = setup("node-host-loop");
        let (v1, v2) = (t.src.image("app:v1"), t.src.image("app:v2"));
        let script = format!(
            r#"import {{ transpile, call }} from {host:?};
            const module = await transpile({wasm:?});
            let ticks = 0;
            const timer = setInterval(() => ticks++, 1);
            const summary = await call(module, "pull", [{v1:?}, {v2:?}, {out:?}]);
            clearInterval(timer);
            console.log(JSON.stringify({{ ticks, blobs: summary.blobsInArchive }}));"#,
            host = s(host_js()),
            wasm = s(&t.component),
            out = s(&t.work.join("loop.tar")),
        );
        let file = t.work.join("server.mjs");
        std::fs::write(&file, script).unwrap();
        let out = Command::new("node").arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(seen["blobs"], 2, "the config and the one new layer");
        assert!(
            seen["ticks"].as_u64().unwrap() >= 10,
            "timers fired while the export ran: {seen}"
        );
    }

    /// A registry stand-in that sends clients to a token service on another port.
    fn registry_pointing_to(realm: &str) -> FixedServer {
        FixedServer::start(format!(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ))
    }

    #[test]
    fn node_host_refuses_hosts_the_command_does_not_name() {
        let t = setup("node-host-policy");
        let token = FixedServer::start(
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
        );
        let registry = registry_pointing_to(&format!("http://{}/token", token.addr));
        let image = format!("{}/app:v1", registry.addr);
        let pull = ["pull", "-q", "scratch", image.as_str(), "-o", "-"];

        // Only the named registry: its realm is refused, and never contacted.
        let err = node_host_err(&t.component, &[&["--no-learn"][..], &pull].concat());
        assert!(
            err.contains(&format!("refused http://{}", token.addr)),
            "the host names the refusal: {err}"
        );
        assert!(
            err.contains("refused by the host's network policy"),
            "the component reports the denial: {err}"
        );
        assert_eq!(token.hits(), 0);
        assert!(registry.hits() > 0);

        // Allowed by name, it is reached; and by default the realm is learned and reached.
        let allow = ["--no-learn", "--allow-host", token.addr.as_str()];
        node_host_err(&t.component, &[&allow[..], &pull].concat());
        assert_eq!(token.hits(), 1);
        node_host_err(&t.component, &pull);
        assert_eq!(token.hits(), 2);

        // An embedder that allows only its own registries: one the command names is refused.
        let unlisted = t.src.image("app:v1");
        let only = ["--only-registry", registry.addr.as_str()];
        let err = node_host_err(
            &t.component,
            &[&only[..], &["pull", "-q", "scratch", &unlisted, "-o", "-"]].concat(),
        );
        // (Refused over HTTPS, which the component tries first even on loopback.)
        let refused = format!("refused https://{}:", unlisted.split('/').next().unwrap());
        assert!(err.contains(&refused), "{err}");
        let err = node_host_err(
            &t.component,
            &[&only[..], &["--call", "inventory", &unlisted]].concat(),
        );
        assert!(
            err.contains(&refused) && err.contains("network policy"),
            "{err}"
        );
    }
}
