//! [`Builder`]: the settings of an [`Imo`], chained.

use crate::Imo;
use crate::api::{Credentials, Error, runtime_error};
use crate::http_client::Timeouts;
use crate::runtime::{self, Runtime};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

impl Default for Builder {
    fn default() -> Self {
        Builder {
            base: None,
            final_: None,
            push: None,
            registry_credentials: Vec::new(),
            insecure: Vec::new(),
            mount_from: Vec::new(),
            platforms: Vec::new(),
            referrers: true,
            max_retries: 4,
            chunk_size: 0,
            timeout: Timeouts::default().idle,
            allow_hosts: Vec::new(),
            cert_dir: None,
            certs_d: None,
            tls_verify: true,
            learn_hosts: true,
            reporter: None,
            destination_map: Vec::new(),
            mount_from_archive: false,
            deltas: false,
            memory_limit: Builder::DEFAULT_MEMORY_LIMIT,
            instances: 0,
        }
    }
}

/// Settings for an [`Imo`], in the manner of the Go library's options. Start from
/// [`Imo::builder`], chain the settings, and [`build`](Builder::build).
///
/// The defaults: anonymous access, every platform and every referrer carried, 4 retries,
/// TLS verified against the system's roots, the component reaching only the registries an
/// operation names (and the token realms and redirects they point to), no progress.
///
/// ```rust
/// let imo = imo::Imo::builder()
///     .push_credentials("mirror", "s3cret")
///     .insecure_registry("mirror.site:5000")
///     .platform("linux/amd64")
///     .max_retries(2)
///     .build()?;
/// # Ok::<(), imo::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    pub(crate) base: Option<Credentials>,
    pub(crate) final_: Option<Credentials>,
    pub(crate) push: Option<Credentials>,
    pub(crate) registry_credentials: Vec<(String, Credentials)>,
    pub(crate) insecure: Vec<String>,
    pub(crate) mount_from: Vec<String>,
    pub(crate) platforms: Vec<String>,
    pub(crate) referrers: bool,
    pub(crate) max_retries: u32,
    pub(crate) chunk_size: u64,
    pub(crate) timeout: Duration,
    pub(crate) allow_hosts: Vec<String>,
    pub(crate) cert_dir: Option<PathBuf>,
    pub(crate) certs_d: Option<Vec<PathBuf>>,
    pub(crate) tls_verify: bool,
    pub(crate) learn_hosts: bool,
    pub(crate) reporter: Option<ReporterFn>,
    pub(crate) destination_map: Vec<(String, String)>,
    pub(crate) mount_from_archive: bool,
    pub(crate) deltas: bool,
    pub(crate) memory_limit: u64,
    /// Instances a pull into a file (or a push from one) spreads its blobs over; 0 for one per core.
    pub(crate) instances: usize,
}

/// The progress callback, opaque to `Debug`.
#[derive(Clone)]
pub(crate) struct ReporterFn(pub(crate) runtime::Reporter);

impl std::fmt::Debug for ReporterFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<reporter>")
    }
}

fn creds(user: &str, password: &str) -> Option<Credentials> {
    Some(Credentials {
        username: user.into(),
        password: password.into(),
    })
}

impl Builder {
    /// The default of [`memory_limit`](Builder::memory_limit): 256 MiB. imo streams blobs
    /// and archives: the pulls, pushes (a 10 MB layer among them) and inventories of the
    /// tests peak at 11 MiB. What it holds whole is capped: manifests (4 MiB each),
    /// tag pages (16 MiB each, parsed no further than 100 000 tags: the worst, 2 million
    /// short tags, is refused within 48 MiB), inventories (64 MiB, held whole while parsed:
    /// what the default leaves room for). A registry or archive that would drive it further
    /// gets an error instead of the machine's memory.
    pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;

    /// Credentials for the base image's registry (`WithBaseAuth`), used at pull. Without
    /// them the registry is reached anonymously.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().base_credentials("reader", "s3cret").build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn base_credentials(mut self, user: &str, password: &str) -> Self {
        self.base = creds(user, password);
        self
    }

    /// Credentials for the final image's registry (`WithFinalAuth`), used at pull.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().final_credentials("reader", "s3cret").build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn final_credentials(mut self, user: &str, password: &str) -> Self {
        self.final_ = creds(user, password);
        self
    }

    /// Credentials for the destination registry (`WithPushAuth`), used at vet and push, and
    /// for the registries [`Imo::inventory`] reads.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().push_credentials("mirror", "s3cret").build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn push_credentials(mut self, user: &str, password: &str) -> Self {
        self.push = creds(user, password);
        self
    }

    /// Credentials for what `key` names, as an auth-file key: `host[:port]` for a whole
    /// registry, `host[:port]/path` for one namespace or repository (repeatable). A
    /// reference whose role has no credentials of its own (such as
    /// [`base_credentials`](Builder::base_credentials)) uses the most specific key that
    /// covers it, and no key ever reaches another registry. `imo` fills these from auth files.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder()
    ///     .registry_credentials("quay.io", "reader", "s3cret")
    ///     .registry_credentials("quay.io/org", "org-bot", "0rg")
    ///     .build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn registry_credentials(mut self, key: &str, user: &str, password: &str) -> Self {
        self.registry_credentials
            .extend(creds(user, password).map(|c| (key.to_owned(), c)));
        self
    }

    /// Reach this registry (`host[:port]`) over plain HTTP (HTTPS is tried first).
    /// Loopback registries need not be named. A malformed value fails the first operation.
    ///
    /// ```rust
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), imo::Error> {
    /// let imo = imo::Imo::builder().insecure_registry("mirror.site:5000").build()?;
    ///
    /// let bad = imo::Imo::builder().insecure_registry("mirror.site:http").build()?;
    /// let err = bad.pull_to_writer("scratch", "mirror.site/app", tokio::io::sink()).await;
    /// assert!(matches!(err, Err(imo::Error::InvalidReference(m)) if m.contains("--insecure")));
    /// # Ok(()) }
    /// ```
    pub fn insecure_registry(mut self, registry: &str) -> Self {
        self.insecure.push(registry.into());
        self
    }

    /// At vet and push, count blobs in this repository of the destination registry as
    /// present, and mount them instead of uploading them (repeatable; the destinations of the
    /// push are always tried, the repositories the archive names only with
    /// [`mount_from_archive`](Builder::mount_from_archive)).
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().mount_from("org/base-images").build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn mount_from(mut self, repository: &str) -> Self {
        self.mount_from.push(repository.into());
        self
    }

    /// At vet and push, also look for and mount (or copy) blobs from the repositories the
    /// archive names: its bases' repository paths and where the inventories it was pulled
    /// against placed each blob it leaves out. Off by default: the archive is not trusted
    /// to choose which repositories the destination credentials read.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().mount_from_archive(true).build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn mount_from_archive(mut self, trust: bool) -> Self {
        self.mount_from_archive = trust;
        self
    }

    /// At pull, carry a layer the bases lack as a delta against the bases' layers where that
    /// is under half its size: what changed inside it, plus what rebuilds the compressed blob
    /// byte for byte. Push rebuilds it and commits it only if it hashes to its digest. Layers
    /// no rebuilder reproduces exactly (zstd, some gzip encoders) go whole.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().deltas(true).build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn deltas(mut self, on: bool) -> Self {
        self.deltas = on;
        self
    }

    /// Let the component reach this `host[:port]` too, beyond the registries an operation
    /// names and the hosts they point to (repeatable), such as a token service that a
    /// registry does not name in its challenges.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().allow_host("auth.example.com").build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn allow_host(mut self, host: &str) -> Self {
        self.allow_hosts.push(host.into());
        self
    }

    /// Carry only this platform (`os/arch[/variant]`) of a multi-platform final image
    /// (repeatable). One platform: the destination tag points at that platform's own
    /// manifest, digest unchanged. Several: at a new index listing only them (new digest).
    ///
    /// ```rust
    /// let imo = imo::Imo::builder()
    ///     .platform("linux/amd64")
    ///     .platform("linux/arm64/v8")
    ///     .build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn platform(mut self, platform: &str) -> Self {
        self.platforms.push(platform.into());
        self
    }

    /// Whether to carry signatures, attestations and SBOMs attached to the image (on by
    /// default): cosign's tags, the OCI 1.1 referrers tag schema and the referrers API.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().referrers(false).build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn referrers(mut self, carry: bool) -> Self {
        self.referrers = carry;
        self
    }

    /// At push and vet, sends the image pulled as `final_` to `destination` instead of where
    /// the destination argument would put it (repeatable, one per image of a bundle).
    ///
    /// ```rust
    /// let imo = imo::Imo::builder()
    ///     .map_destination("quay.io/org/app:v2", "mirror.site:5000/apps/app:v2")
    ///     .build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn map_destination(mut self, final_: &str, destination: &str) -> Self {
        self.destination_map
            .push((final_.to_owned(), destination.to_owned()));
        self
    }

    /// How often a failed request is retried (with exponential backoff and jitter, or the
    /// registry's `Retry-After`) and a cut download or upload resumed; 4 by default, 0 for
    /// never. A cut upload resumes only from the last 8 MiB sent, which imo keeps.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().max_retries(0).build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Upload blobs in `PATCH` chunks of this many bytes (or the registry's
    /// `OCI-Chunk-Min-Length`, if larger), each streamed, then an empty `PUT`; 0 (the
    /// default) for one whole-body `PUT` per blob, with 8 MiB chunks from the first time a
    /// registry refuses that. A chunk cut midway resumes only if it is at most 8 MiB.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().chunk_size(16 << 20).build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// How long to wait on a registry that sends nothing (for the first byte of an answer,
    /// the next bytes of a body, each step of a TLS handshake) before the request is given
    /// up on and retried, a cut download resuming where it stopped; 60 s by default. A body
    /// must also bring at least 1 KiB per such period spent waiting. Connecting is given 30 s.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder()
    ///     .timeout(std::time::Duration::from_secs(10))
    ///     .build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trust every `*.crt` in `dir`, for every registry and token service (skopeo's
    /// `--cert-dir`): as a CA, or as a server's own self-signed certificate (see
    /// [`TlsSettings`](crate::http_client::TlsSettings)). Per-registry certificates in
    /// `/etc/containers/certs.d/HOST:PORT/` and `/etc/docker/certs.d/HOST:PORT/` are always
    /// trusted, for that registry and the token service it names.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder()
    ///     .cert_dir(std::path::Path::new("/etc/pki/site-ca"))
    ///     .build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn cert_dir(mut self, dir: &Path) -> Self {
        self.cert_dir = Some(dir.into());
        self
    }

    /// Look for per-registry CAs (`DIR/HOST[:PORT]/*.crt`) in `dirs` instead of the
    /// system's [`http_client::CERTS_D`](crate::http_client::CERTS_D) directories.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder()
    ///     .certs_d(vec!["/srv/registry-certs.d".into()])
    ///     .build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn certs_d(mut self, dirs: Vec<PathBuf>) -> Self {
        self.certs_d = Some(dirs);
        self
    }

    /// With `false`, accept any certificate from the registries an operation names and the
    /// token services their challenges name (as skopeo does). For test registries only: it
    /// lets anyone on the path read and change the traffic.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().tls_verify(false).build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn tls_verify(mut self, verify: bool) -> Self {
        self.tls_verify = verify;
        self
    }

    /// Print the component's progress lines to stderr (`imo: …`), or nothing (the
    /// default). Replaces any [`reporter`](Builder::reporter).
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().progress(true).build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn progress(self, on: bool) -> Self {
        if on {
            self.reporter(|line| eprintln!("imo: {line}"))
        } else {
            Self {
                reporter: None,
                ..self
            }
        }
    }

    /// Hand each human-readable progress line to `report`, which is called from the
    /// operation's task and must not block for long.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("reporter");
    /// # let v2 = layout(&work, "v2", &["os", "app"]);
    /// use std::sync::{Arc, Mutex};
    ///
    /// let lines = Arc::new(Mutex::new(Vec::new()));
    /// let seen = lines.clone();
    /// let imo = imo::Imo::builder()
    ///     .reporter(move |line| seen.lock().unwrap().push(line.to_owned()))
    ///     .build()?;
    /// // `v2` is an `oci:DIR:TAG` reference to a local layout.
    /// imo.pull_to_writer("scratch", &v2, tokio::io::sink()).await?;
    /// assert!(!lines.lock().unwrap().is_empty());
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub fn reporter(mut self, report: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.reporter = Some(ReporterFn(Arc::new(report)));
        self
    }

    /// Write progress lines to `writer`, one per line (the Go library's
    /// `WithReporterWriter`). Progress is best effort: a failed write is ignored.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("reporter-writer");
    /// # let v2 = layout(&work, "v2", &["os", "app"]);
    /// let log = work.join("progress.log");
    /// let imo = imo::Imo::builder()
    ///     .reporter_writer(std::fs::File::create(&log)?)
    ///     .build()?;
    /// // `v2` is an `oci:DIR:TAG` reference to a local layout.
    /// imo.pull_to_writer("scratch", &v2, tokio::io::sink()).await?;
    /// assert!(std::fs::read_to_string(&log)?.lines().count() > 0);
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub fn reporter_writer(self, writer: impl std::io::Write + Send + 'static) -> Self {
        let writer = std::sync::Mutex::new(writer);
        self.reporter(move |line| {
            let mut w = writer.lock().expect("reporter lock");
            // Progress is best effort: a full disk must not fail the operation.
            let _ = writeln!(w, "{line}");
        })
    }

    /// With `false`, the component reaches only the registries an operation names, not the
    /// token realms and redirect targets they point to (a registry whose token service or
    /// blob storage is elsewhere then needs [`allow_host`](Builder::allow_host)).
    ///
    /// ```rust
    /// let imo = imo::Imo::builder()
    ///     .learn_hosts(false)
    ///     .allow_host("auth.example.com")
    ///     .build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn learn_hosts(mut self, learn: bool) -> Self {
        self.learn_hosts = learn;
        self
    }

    /// The most memory the component may use, in bytes, per operation (each of its linear
    /// memories): 256 MiB by default ([`DEFAULT_MEMORY_LIMIT`](Builder::DEFAULT_MEMORY_LIMIT)).
    /// imo streams blobs and archives, so this bounds only what a registry or archive can
    /// make it hold at once (tag pages, manifests, token answers, inventories); past it, the
    /// operation fails with [`Error::Runtime`] naming the limit, and the process's memory
    /// stays safe. Raise it for a legitimately huge tag list or inventory.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().memory_limit(1 << 30).build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// How many instances of the component a pull into a file
    /// ([`Imo::pull_bundle_to_file`](crate::Imo::pull_bundle_to_file) and its siblings)
    /// spreads its blobs over, so that each hashes on its own core: one per core available
    /// by default (or with 0). One instance plans the archive (fetching the manifests once),
    /// then each fetches a share of the blobs into its place in the file: largest blobs
    /// first, each to the instance with the fewest bytes so far. A single blob is never
    /// split, so a one-layer image gains nothing. Every instance gets the same sandbox (the
    /// same registries, credentials and files) and its own [`memory_limit`](Builder::memory_limit);
    /// 1 runs the whole pull in one instance, as the component does alone. A push from a
    /// file ([`Imo::push_from_file`](crate::Imo::push_from_file)) spreads its uploads the
    /// same way.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().instances(1).build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn instances(mut self, n: usize) -> Self {
        self.instances = n;
        self
    }

    /// Prepares the component: compiled once per process, or loaded from the on-disk cache
    /// (`$IMO_CACHE_DIR`, else `imo` in the user's cache directory) in milliseconds instead
    /// of Cranelift's quarter second. The cache is used only if the directory and file are
    /// the user's own and writable by no one else (else the reporter is told why, once).
    /// Fails with [`Error::Runtime`] if it cannot be prepared. The settings are checked by
    /// the first operation.
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().build()?;
    /// // The same component serves every operation, and every clone.
    /// let _also = imo.clone();
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn build(self) -> Result<Imo, Error> {
        static RUNTIME: OnceLock<Result<Arc<Runtime>, String>> = OnceLock::new();
        let runtime = RUNTIME
            .get_or_init(|| Runtime::new().map(Arc::new).map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(runtime_error)?;
        // Why the compiled-code cache was passed over, told once, to the first reporter.
        if let (Some(line), Some(report)) = (crate::runtime::take_cache_notice(), &self.reporter) {
            (report.0)(&line);
        }
        Ok(Imo {
            runtime,
            settings: self,
        })
    }
}
