//! Registry servers other than CNCF distribution, for the interop suite: zuul-registry
//! (Python, CherryPy; token auth served by itself, TLS) and container-registry (Rust, axum;
//! Basic auth, two-part repository names, no indexes), each started on 127.0.0.1 with an
//! ephemeral port, configured by a file or flags the test writes, with its storage in a
//! temporary directory, and killed when dropped.
//! Distribution is wrapped too, so one test body runs against every server.
//! `scripts/setup --interop-servers` installs both servers.

use super::{Registry, TempDir, skopeo};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Where `scripts/setup` puts zuul-registry's virtualenv.
pub const ZUUL_VENV: &str = "/var/tmp/zuul-venv";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Distribution,
    Zuul,
    ContainerRegistry,
}

/// How a server is set up beyond its defaults.
#[derive(Default, Clone, Copy)]
pub struct Setup<'a> {
    /// Require this password: from user `imo` (distribution's htpasswd; zuul-registry, which
    /// then also stops serving anonymous reads) or from any user (container-registry, which
    /// has no user names). Without it, distribution is anonymous, zuul-registry reads
    /// anonymously and writes with `imo:imo-default`, and container-registry takes any
    /// credentials (it refuses requests without).
    pub password: Option<&'a str>,
    /// Serve HTTPS with this PEM certificate and key; clients trust the certificate through a
    /// `--cert-dir` holding it alone.
    pub tls: Option<(&'a Path, &'a Path)>,
}

pub struct Server {
    pub kind: Kind,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `user:password` for clients, if the server wants credentials.
    pub creds: Option<String>,
    /// A directory holding only the server's certificate, for `--cert-dir`.
    cert_dir: Option<TempDir>,
    process: Process,
}

enum Process {
    /// A distribution registry, and the directory of its htpasswd file.
    Distribution(Registry, TempDir),
    Child {
        child: Child,
        dir: TempDir,
    },
}

impl Server {
    pub fn start(kind: Kind) -> Self {
        Self::start_with(kind, Setup::default())
    }

    pub fn start_with(kind: Kind, setup: Setup<'_>) -> Self {
        let cert_dir = setup.tls.map(|(cert, _)| {
            let dir = TempDir::new("server-certs");
            std::fs::copy(cert, dir.join("server.crt")).unwrap();
            dir
        });
        let (addr, creds, process) = match kind {
            Kind::Distribution => distribution(setup),
            Kind::Zuul => zuul(setup),
            Kind::ContainerRegistry => container_registry(setup),
        };
        Server {
            kind,
            addr,
            creds,
            cert_dir,
            process,
        }
    }

    /// `127.0.0.1:PORT/REPO[:TAG]`
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// The flags that give `imo` this server's credentials and certificate.
    pub fn imo_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(c) = &self.creds {
            flags.extend(["--creds".to_owned(), c.clone()]);
        }
        if let Some(d) = &self.cert_dir {
            flags.extend(["--cert-dir".to_owned(), d.path().display().to_string()]);
        }
        flags
    }

    /// skopeo's flags for this server as `role` (`src`, `dest`, or `` for inspect).
    fn skopeo_flags(&self, role: &str) -> Vec<String> {
        let flag = |name: &str| {
            if role.is_empty() {
                format!("--{name}")
            } else {
                format!("--{role}-{name}")
            }
        };
        let mut flags = Vec::new();
        if let Some(c) = &self.creds {
            flags.extend([flag("creds"), c.clone()]);
        }
        match &self.cert_dir {
            Some(d) => flags.extend([flag("cert-dir"), d.path().display().to_string()]),
            None => flags.push(format!("{}=false", flag("tls-verify"))),
        }
        flags
    }

    /// Copies `TAG` of the OCI layout in `dir` into `repo_and_tag` with skopeo: with `--all`
    /// and the layout's digests, or converted to `format` ("v2s2").
    pub fn seed(&self, dir: &Path, tag: &str, repo_and_tag: &str, format: Option<&str>) {
        let mut args = vec!["copy".to_owned(), "-q".to_owned()];
        args.extend(self.skopeo_flags("dest"));
        match format {
            Some(f) => args.extend(["--format".to_owned(), f.to_owned()]),
            None => args.extend(["--all".to_owned(), "--preserve-digests".to_owned()]),
        }
        args.push(format!("oci:{}:{tag}", dir.display()));
        args.push(format!("docker://{}", self.image(repo_and_tag)));
        skopeo(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// The exact bytes of a manifest the server serves, read by skopeo.
    pub fn raw_manifest(&self, reference: &str) -> Vec<u8> {
        let mut args = vec!["inspect".to_owned(), "--raw".to_owned()];
        args.extend(self.skopeo_flags(""));
        args.push(format!("docker://{}", self.image(reference)));
        skopeo(&args.iter().map(String::as_str).collect::<Vec<_>>()).stdout
    }

    /// Copies an image (every platform) out with skopeo, which fetches and verifies each blob.
    pub fn copy_out(&self, reference: &str) {
        let out = TempDir::new("copy-out");
        let mut args = vec!["copy".to_owned(), "-q".to_owned(), "--all".to_owned()];
        args.extend(self.skopeo_flags("src"));
        args.push(format!("docker://{}", self.image(reference)));
        args.push(format!("oci:{}:out", out.path().display()));
        skopeo(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    pub fn log(&self) -> String {
        match &self.process {
            Process::Distribution(r, _) => r.log(),
            Process::Child { dir, .. } => {
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Process::Child { child, .. } = &mut self.process {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

type Started = (String, Option<String>, Process);

fn distribution(setup: Setup<'_>) -> Started {
    let mut extra = String::new();
    if let Some((cert, key)) = setup.tls {
        extra += &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
    }
    let mut creds = None;
    let htpasswd = TempDir::new("htpasswd");
    if let Some(password) = setup.password {
        let out = Command::new("htpasswd")
            .args(["-Bbn", "imo", password])
            .output()
            .expect("htpasswd (run scripts/setup)");
        assert!(out.status.success(), "htpasswd failed");
        std::fs::write(htpasswd.join("htpasswd"), out.stdout).unwrap();
        extra += &format!(
            "auth:\n  htpasswd:\n    realm: imo-interop\n    path: {}\n",
            htpasswd.join("htpasswd").display()
        );
        creds = Some(format!("imo:{password}"));
    }
    let reg = Registry::start_with(&extra);
    (
        reg.addr.clone(),
        creds,
        Process::Distribution(reg, htpasswd),
    )
}

fn zuul(setup: Setup<'_>) -> Started {
    let program = find(
        "zuul-registry",
        &[Path::new(ZUUL_VENV).join("bin/zuul-registry")],
    );
    let (password, users) = match setup.password {
        // A user with read access turns anonymous reads off.
        Some(p) => (
            p,
            format!(
                "    - {{name: imo, pass: '{p}', access: write}}\n    - {{name: reader, pass: '{p}', access: read}}\n"
            ),
        ),
        None => (
            "imo-default",
            "    - {name: imo, pass: imo-default, access: write}\n".to_owned(),
        ),
    };
    let scheme = if setup.tls.is_some() { "https" } else { "http" };
    let started = spawn_on_free_port("zuul-registry", setup.tls.is_some(), |port, dir| {
        let tls = setup
            .tls
            .map(|(cert, key)| {
                format!(
                    "  tls-cert: {}\n  tls-key: {}\n",
                    cert.display(),
                    key.display()
                )
            })
            .unwrap_or_default();
        // Its token service is its own /auth/token, announced at public-url.
        let config = format!(
            "registry:\n  address: 127.0.0.1\n  port: {port}\n  public-url: {scheme}://127.0.0.1:{port}\n  secret: imo-interop\n{tls}  users:\n{users}  storage:\n    driver: filesystem\n    root: {}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("registry.yaml"), config).unwrap();
        let mut cmd = Command::new(&program);
        cmd.arg("-c").arg(dir.join("registry.yaml")).arg("serve");
        cmd
    });
    (started.0, Some(format!("imo:{password}")), started.1)
}

fn container_registry(setup: Setup<'_>) -> Started {
    assert!(
        setup.tls.is_none(),
        "container-registry serves plain HTTP only"
    );
    let home_bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/container-registry"))
        .unwrap_or_default();
    let program = find("container-registry", &[home_bin]);
    let started = spawn_on_free_port("container-registry", false, |port, dir| {
        let mut cmd = Command::new(&program);
        cmd.arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--storage")
            .arg(dir.join("data"));
        if let Some(p) = setup.password {
            cmd.arg("--password").arg(p);
        }
        cmd
    });
    // Without --password any user and password pass; with one, only the password counts.
    let creds = format!("imo:{}", setup.password.unwrap_or("any"));
    (started.0, Some(creds), started.1)
}

/// The first of `places` that exists, else `name` on PATH; a missing server fails the test
/// with what to do.
fn find(name: &str, places: &[PathBuf]) -> PathBuf {
    if let Some(p) = places.iter().find(|p| p.is_file()) {
        return p.clone();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "the registry server {name} is not installed (looked in {places:?} and on PATH); \
             run `scripts/setup --interop-servers` to install it"
        )
    })
}

/// Starts a server on a port the kernel just handed out, retrying when another process takes
/// the port first. `command` gets the port and a fresh directory for config and data; the
/// server's output goes to `server.log` there.
fn spawn_on_free_port(
    name: &str,
    tls: bool,
    command: impl Fn(u16, &TempDir) -> Command,
) -> (String, Process) {
    let mut last_log = String::new();
    for _ in 0..5 {
        let dir = TempDir::new(name);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut child = command(port, &dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {name}: {e}; run `scripts/setup --interop-servers`")
            });
        if super::wait_ready(&mut child, &addr, tls, Duration::from_secs(30)) {
            return (addr, Process::Child { child, dir });
        }
        let _ = child.kill();
        let _ = child.wait();
        last_log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    }
    panic!("{name} did not start on a loopback port after 5 tries; its log:\n{last_log}");
}

/// Runs `imo` with a server's flags added.
pub fn imo_on(server: &Server, args: &[&str]) -> Output {
    let flags = server.imo_flags();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(flags.iter().map(String::as_str));
    super::imo(&all)
}
