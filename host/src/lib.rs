//! imo, the Image Overlay Kit: move only the difference between two container images.
//!
//! On the connected side, [`Imo::pull_to_file`] writes an OCI archive holding the final
//! image's manifests and config and only the blobs its base lacks. On the disconnected side,
//! [`Imo::push_vet`] checks that the destination registry holds every blob the archive
//! leaves out, and [`Imo::push`] uploads the rest and tags the image, with the source's
//! digests.
//!
//! All registry and archive logic runs in a WebAssembly component (WASI 0.2) that this
//! crate embeds; the host grants it only the registries an operation names and the one
//! archive stream it reads or writes.
//!
//! ```rust,no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//!
//! // Connected side: the site runs app:v1, so carry only what v2 adds over it.
//! let imo = imo::Imo::builder().final_credentials("user", "secret").build()?;
//! let archive = Path::new("app-v2.tar");
//! let pulled = imo
//!     .pull_to_file("quay.io/org/app:v1", "quay.io/org/app:v2", archive)
//!     .await?;
//! println!("{} blobs carried, {} left out", pulled.blobs_in_archive, pulled.blobs_omitted);
//!
//! // Disconnected side: check that the mirror holds what the archive leaves out, then push.
//! let imo = imo::Imo::builder().push_credentials("mirror", "secret").build()?;
//! let mirror = "mirror.site:5000/org/app:v2";
//! imo.push_vet(tokio::fs::File::open(archive).await?, mirror).await?;
//! let pushed = imo.push(tokio::fs::File::open(archive).await?, mirror).await?;
//! assert_eq!(pushed.manifest_digest, pulled.manifest_digest);
//! # Ok(()) }
//! ```
//!
//! Every reference may also be a local OCI image layout, `oci:DIR[:TAG]`, which is how the
//! examples in this documentation run with no registry.

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod credentials;
pub mod policy;
mod runtime;
mod streams;
pub mod tls;

use policy::NetworkPolicy;
use runtime::Runtime;
use runtime::bindings::exports::imo::overlay::overlay as wit;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tls::{Connector, TlsSettings};
use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::{Descriptor, File as FsFile};
use wasmtime_wasi::p2::pipe::AsyncWriteStream;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};
use wasmtime_wasi::{FsPerms, OpenMode};

pub use runtime::COMPONENT;

/// A user name and password (or identity token) for one registry.
///
/// Set them with [`Builder::base_credentials`] and its siblings, or find them as skopeo and
/// docker do with [`credentials::lookup`]. `Debug` never shows the password.
///
/// ```rust
/// let c = imo::Credentials {
///     username: "mirror".into(),
///     password: "s3cret".into(),
/// };
/// assert_eq!(c.username, "mirror");
/// assert!(!format!("{c:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name; docker's `<token>` when the password is an identity token.
    pub username: String,
    /// The password, or the identity (refresh) token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print a password, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What an operation found and did, as the WIT `summary` record reports it. It serializes to
/// the JSON that `imo --json` prints.
///
/// ```rust
/// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let work = scratch("summary");
/// # let v1 = layout(&work, "v1", &["os"]);
/// # let v2 = layout(&work, "v2", &["os", "app"]);
/// // `v1` and `v2` are `oci:DIR:TAG` references to local layouts sharing the `os` layer.
/// let imo = imo::Imo::builder().build()?;
/// let summary = imo.pull_to_writer(&v1, &v2, tokio::io::sink()).await?;
/// assert_eq!(summary.images, [v2.as_str()]);
/// // Manifests always travel; of the blobs, the config and the `app` layer.
/// assert_eq!(summary.blobs_in_archive, 2);
/// assert_eq!(summary.blobs_omitted, 1, "the `os` layer");
/// assert!(summary.manifest_digest.starts_with("sha256:"));
/// let json = serde_json::to_value(&summary)?;
/// assert_eq!(json["blobs_omitted"], 1);
/// # std::fs::remove_dir_all(&work)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Digest of the final image's top-level manifest, as its registry serves it.
    pub manifest_digest: String,
    /// Reference of the (first) final image the archive was pulled from.
    pub final_reference: String,
    /// References of every final image in the archive, `final_reference` first.
    pub images: Vec<String>,
    /// The bases and inventories the difference was taken against, comma separated;
    /// `scratch` for none.
    pub base_reference: String,
    /// Blobs (configs and layers; manifests always travel) the archive carries.
    pub blobs_in_archive: u32,
    /// Total size of the blobs the archive carries.
    pub bytes_in_archive: u64,
    /// Blobs the manifests reference that the archive leaves out.
    pub blobs_omitted: u32,
    /// Total size of the blobs the archive leaves out.
    pub bytes_omitted: u64,
    /// Push only: blobs uploaded to the destination.
    pub blobs_uploaded: u32,
    /// Push only: total size of the blobs uploaded.
    pub bytes_uploaded: u64,
    /// Push only: blobs carried in the archive that the destination already had.
    pub blobs_skipped: u32,
    /// Push only: blobs mounted from another repository of the destination registry
    /// instead of uploaded.
    pub blobs_mounted: u32,
    /// Bytes of archive written (pull) or read (vet, push).
    pub archive_bytes: u64,
}

/// Why an operation failed. The first cases match the WIT `error` variant one for one;
/// `Runtime` is the host's own (the component could not be run).
///
/// Each message names what failed and where (registry, repository, digest or archive
/// entry) and, where there is one, what to do; `Display` prints it.
///
/// ```rust
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), imo::Error> {
/// let imo = imo::Imo::builder().build()?;
/// let err = imo
///     .pull_to_writer("scratch", "quay.io/Org/App:v2", tokio::io::sink())
///     .await
///     .unwrap_err();
/// assert!(matches!(err, imo::Error::InvalidReference(_)));
/// assert!(err.to_string().contains("Org/App"), "{err}");
///
/// let err = imo::Error::MissingBlobs(vec!["sha256:0123".into()]);
/// assert!(err.to_string().contains("lacks 1 blob(s)"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A reference could not be parsed; the message names the part that is wrong.
    InvalidReference(String),
    /// A registry could not be reached: connection, TLS, DNS, or refused by the network
    /// policy (the message then says which host was refused and why).
    Unreachable(String),
    /// The network policy refused a request; the message names the host refused and why.
    Denied(String),
    /// A registry refused the credentials given, or asked for credentials and had none.
    Unauthorized(String),
    /// A manifest or blob does not exist where it was looked for.
    NotFound(String),
    /// A registry answered with an error of its own.
    Registry(String),
    /// Bytes did not match their digest or their declared size.
    DigestMismatch(String),
    /// A manifest or index is malformed or of a media type imo does not handle.
    InvalidManifest(String),
    /// The archive is not an imo archive, or is damaged or truncated; or an inventory is
    /// malformed.
    InvalidArchive(String),
    /// The destination lacks these blobs, which the archive leaves out.
    MissingBlobs(Vec<String>),
    /// Reading or writing the archive, a layout or an inventory failed.
    Io(String),
    /// The component could not be compiled, loaded or run.
    Runtime(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::MissingBlobs(ds) => write!(
                f,
                "the destination lacks {} blob(s) that the archive leaves out: {}; push the base \
                 image there first, or pull a new archive against a base the destination holds",
                ds.len(),
                ds.join(", ")
            ),
            Error::InvalidReference(m)
            | Error::Unreachable(m)
            | Error::Denied(m)
            | Error::Unauthorized(m)
            | Error::NotFound(m)
            | Error::Registry(m)
            | Error::DigestMismatch(m)
            | Error::InvalidManifest(m)
            | Error::InvalidArchive(m)
            | Error::Io(m)
            | Error::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidReference(m) => Error::InvalidReference(m),
            wit::Error::Unreachable(m) => Error::Unreachable(m),
            wit::Error::Denied(m) => Error::Denied(m),
            wit::Error::Unauthorized(m) => Error::Unauthorized(m),
            wit::Error::NotFound(m) => Error::NotFound(m),
            wit::Error::Registry(m) => Error::Registry(m),
            wit::Error::DigestMismatch(m) => Error::DigestMismatch(m),
            wit::Error::InvalidManifest(m) => Error::InvalidManifest(m),
            wit::Error::InvalidArchive(m) => Error::InvalidArchive(m),
            wit::Error::MissingBlobs(d) => Error::MissingBlobs(d),
            wit::Error::Io(m) => Error::Io(m),
        }
    }
}

impl From<wit::Summary> for Summary {
    fn from(s: wit::Summary) -> Self {
        Summary {
            manifest_digest: s.manifest_digest,
            final_reference: s.final_reference,
            images: s.images,
            base_reference: s.base_reference,
            blobs_in_archive: s.blobs_in_archive,
            bytes_in_archive: s.bytes_in_archive,
            blobs_omitted: s.blobs_omitted,
            bytes_omitted: s.bytes_omitted,
            blobs_uploaded: s.blobs_uploaded,
            bytes_uploaded: s.bytes_uploaded,
            blobs_skipped: s.blobs_skipped,
            blobs_mounted: s.blobs_mounted,
            archive_bytes: s.archive_bytes,
        }
    }
}

fn runtime_error(e: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("the imo component failed: {e}"))
}

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
            allow_hosts: Vec::new(),
            cert_dir: None,
            certs_d: None,
            tls_verify: true,
            learn_hosts: true,
            reporter: None,
            destination_map: Vec::new(),
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
    base: Option<Credentials>,
    final_: Option<Credentials>,
    push: Option<Credentials>,
    registry_credentials: Vec<(String, Credentials)>,
    insecure: Vec<String>,
    mount_from: Vec<String>,
    platforms: Vec<String>,
    referrers: bool,
    max_retries: u32,
    allow_hosts: Vec<String>,
    cert_dir: Option<PathBuf>,
    certs_d: Option<Vec<PathBuf>>,
    tls_verify: bool,
    learn_hosts: bool,
    reporter: Option<ReporterFn>,
    destination_map: Vec<(String, String)>,
}

/// The progress callback, opaque to `Debug`.
#[derive(Clone)]
struct ReporterFn(runtime::Reporter);

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
    /// present, and mount them instead of uploading them (repeatable; the archive's base
    /// repository is always tried).
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().mount_from("org/base-images").build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn mount_from(mut self, repository: &str) -> Self {
        self.mount_from.push(repository.into());
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

    /// Trust every `*.crt` in `dir` as a CA, for every registry (skopeo's `--cert-dir`).
    /// Per-registry CAs in `/etc/containers/certs.d/HOST:PORT/` and
    /// `/etc/docker/certs.d/HOST:PORT/` are always trusted.
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
    /// system's [`tls::CERTS_D`] directories.
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

    /// With `false`, accept any certificate from the registries an operation names. For
    /// test registries only: it lets anyone on the path read and change the traffic.
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

    /// Prepares the component: compiled once per process, or loaded from the on-disk cache
    /// (`$IMO_CACHE_DIR`, else `imo` in the user's cache directory) in milliseconds instead
    /// of Cranelift's quarter second. Fails with [`Error::Runtime`] if it cannot be
    /// prepared. The settings are checked by the first operation.
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
        Ok(Imo {
            runtime,
            settings: self,
        })
    }
}

/// Pulls, vets and pushes difference archives. Made by [`Imo::builder`]; cheap to clone,
/// and each operation runs in a fresh instance of the component that may reach only the
/// registries (or `oci:` layouts) it names and the archive stream it is given.
///
/// The whole job, with local OCI layouts standing in for the registries:
///
/// ```rust
/// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let work = scratch("imo");
/// # let v1 = layout(&work.join("build"), "v1", &["os"]);
/// # let v2 = layout(&work.join("build"), "v2", &["os", "app"]);
/// # let site = work.join("site");
/// # layout(&site, "v1", &["os"]);
/// # let archive = work.join("app-v2.tar");
/// // `v1` and `v2` are `oci:DIR:TAG` references; the layout `site` holds v1 already.
/// let imo = imo::Imo::builder().build()?;
/// let pulled = imo.pull_to_file(&v1, &v2, &archive).await?;
///
/// let destination = format!("oci:{}:v2", site.display());
/// imo.push_vet(tokio::fs::File::open(&archive).await?, &destination).await?;
/// let pushed = imo.push(tokio::fs::File::open(&archive).await?, &destination).await?;
/// assert_eq!(pushed.manifest_digest, pulled.manifest_digest);
/// # std::fs::remove_dir_all(&work)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Imo {
    runtime: Arc<Runtime>,
    settings: Builder,
}

impl Imo {
    /// The settings for a new `Imo`, at their defaults (see [`Builder`]).
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().progress(true).build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn options(&self) -> wit::Options {
        let c = |c: &Option<Credentials>| {
            c.clone().map(|c| wit::Credentials {
                username: c.username,
                password: c.password,
            })
        };
        wit::Options {
            base_credentials: c(&self.settings.base),
            final_credentials: c(&self.settings.final_),
            push_credentials: c(&self.settings.push),
            registry_credentials: self
                .settings
                .registry_credentials
                .iter()
                .map(|(key, cred)| {
                    let cred = wit::Credentials {
                        username: cred.username.clone(),
                        password: cred.password.clone(),
                    };
                    (key.clone(), cred)
                })
                .collect(),
            insecure_registries: self.settings.insecure.clone(),
            mount_from: self.settings.mount_from.clone(),
            platforms: self.settings.platforms.clone(),
            referrers: self.settings.referrers,
            max_retries: self.settings.max_retries,
            progress: self.settings.reporter.is_some(),
            destination_map: self.settings.destination_map.clone(),
        }
    }

    /// TLS for an operation on `references`: unverified only for those, and only if asked.
    fn connector(&self, references: &[&str]) -> Arc<Connector> {
        let mut settings = TlsSettings::system();
        if let Some(dirs) = &self.settings.certs_d {
            settings.certs_d = dirs.clone();
        }
        settings.cert_dir = self.settings.cert_dir.clone();
        if !self.settings.tls_verify {
            settings.skip_verify = references
                .iter()
                .filter_map(|r| imo_guest::reference::Reference::parse(r).ok())
                .map(|r| r.api_host().to_owned())
                .collect();
        }
        Arc::new(Connector::new(settings))
    }

    fn reporter(&self) -> Option<runtime::Reporter> {
        self.settings.reporter.as_ref().map(|r| r.0.clone())
    }

    /// Runs the component's own command line (`imo.wasm ARGS…`) inside the same sandbox as
    /// every operation: no files, no environment, and the network of `references` only.
    /// For proving the sandbox; whether the command succeeded.
    #[doc(hidden)]
    pub async fn run_sandboxed_cli(
        &self,
        args: &[&str],
        references: &[&str],
    ) -> Result<bool, Error> {
        let policy = self.policy(references)?;
        let connector = self.connector(references);
        let mut argv = vec!["imo"];
        argv.extend_from_slice(args);
        let mut store = self
            .runtime
            .store(policy, connector, self.reporter(), &argv, &[])
            .map_err(runtime_error)?;
        self.runtime
            .run_cli(&mut store)
            .await
            .map_err(runtime_error)
    }

    /// Starts pulling and returns the archive as a stream while it is produced, as the Go
    /// library's `Pull` returns an `io.ReadCloser`. A failure surfaces as a read error; the
    /// summary comes from [`PullStream::finish`]. Must be called within a tokio runtime.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("pull");
    /// # let v1 = layout(&work, "v1", &["os"]);
    /// # let v2 = layout(&work, "v2", &["os", "app"]);
    /// use tokio::io::AsyncReadExt as _;
    ///
    /// // `v1` and `v2` are `oci:DIR:TAG` references to local layouts.
    /// let imo = imo::Imo::builder().build()?;
    /// let mut stream = imo.pull(&v1, &v2);
    /// let mut archive = Vec::new();
    /// stream.read_to_end(&mut archive).await?;
    /// let summary = stream.finish().await?;
    /// assert_eq!(summary.archive_bytes, archive.len() as u64);
    /// assert!(archive.starts_with(b"oci-layout"), "a tar whose first entry is oci-layout");
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub fn pull(&self, base: &str, final_: &str) -> PullStream {
        let (writer, reader) = tokio::io::duplex(1 << 20);
        let imo = self.clone();
        let (base, final_) = (base.to_owned(), final_.to_owned());
        let task = tokio::spawn(async move { imo.pull_to_writer(&base, &final_, writer).await });
        PullStream {
            reader,
            task: Some(task),
            result: None,
        }
    }

    fn policy(&self, references: &[&str]) -> Result<Arc<NetworkPolicy>, Error> {
        NetworkPolicy::for_references(
            references.iter().copied(),
            &self.settings.insecure,
            &self.settings.allow_hosts,
        )
        .map_err(Error::InvalidReference)
        .map(|p| {
            if self.settings.learn_hosts {
                p
            } else {
                p.without_learning()
            }
        })
    }

    /// Writes the difference archive of `final_` over `base` (or `"scratch"`) to `out`.
    /// On error, what was written is not an archive and must be discarded.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("pull-to-writer");
    /// # let v1 = layout(&work, "v1", &["os"]);
    /// # let v2 = layout(&work, "v2", &["os", "app"]);
    /// // `v1` and `v2` are `oci:DIR:TAG` references to local layouts.
    /// let imo = imo::Imo::builder().build()?;
    /// let out = tokio::fs::File::create(work.join("app-v2.tar")).await?;
    /// let summary = imo.pull_to_writer(&v1, &v2, out).await?;
    /// assert_eq!(summary.base_reference, v1);
    /// assert_eq!(std::fs::metadata(work.join("app-v2.tar"))?.len(), summary.archive_bytes);
    ///
    /// // With no base, the archive carries every blob.
    /// let full = imo.pull_to_writer("scratch", &v2, tokio::io::sink()).await?;
    /// assert_eq!(full.blobs_omitted, 0);
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn pull_to_writer<W>(
        &self,
        base: &str,
        final_: &str,
        out: W,
    ) -> Result<Summary, Error>
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        self.pull_bundle_to_writer(&Bundle::new(base, final_), out)
            .await
    }

    /// Writes one archive holding every final image of `bundle`, leaving out what any of
    /// its bases or inventories holds; blobs the final images share are carried once. On
    /// error, what was written must be discarded.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("pull-bundle-to-writer");
    /// # let base = layout(&work, "base", &["os"]);
    /// # let app = layout(&work, "app", &["os", "runtime", "app"]);
    /// # let tools = layout(&work, "tools", &["os", "runtime", "tools"]);
    /// // `oci:DIR:TAG` references to local layouts: two images over one base.
    /// let bundle = imo::Bundle {
    ///     bases: vec![base],
    ///     inventories: vec![],
    ///     finals: vec![app, tools],
    /// };
    /// let imo = imo::Imo::builder().build()?;
    /// let summary = imo.pull_bundle_to_writer(&bundle, tokio::io::sink()).await?;
    /// assert_eq!(summary.images.len(), 2);
    /// // Two configs, `runtime` once, `app` and `tools`.
    /// assert_eq!(summary.blobs_in_archive, 5);
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn pull_bundle_to_writer<W>(&self, bundle: &Bundle, out: W) -> Result<Summary, Error>
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (request, policy, mut store, imo) = self.pull_sandbox(bundle).await?;
        let stream: DynOutputStream = Box::new(AsyncWriteStream::new(1 << 20, out));
        let own = store.data_mut().table.push(stream).map_err(runtime_error)?;
        let result = imo
            .imo_overlay_overlay()
            .call_pull_bundle(
                &mut store,
                &request,
                Resource::new_borrow(own.rep()),
                &self.options(),
            )
            .await;
        let _ = store.data_mut().table.delete(own);
        finish(result, &policy)
    }

    /// The component instance for a pull of `bundle`, and the bundle as it is handed to it.
    async fn pull_sandbox(
        &self,
        bundle: &Bundle,
    ) -> Result<
        (
            wit::Bundle,
            Arc<NetworkPolicy>,
            wasmtime::Store<runtime::State>,
            runtime::bindings::Imo,
        ),
        Error,
    > {
        let mut grants = Vec::new();
        let mut grant = |r: &String| -> Result<String, Error> {
            let (r, g) = layout_grant(r, false)?;
            grants.extend(g);
            Ok(r)
        };
        let bases = bundle
            .bases
            .iter()
            .map(&mut grant)
            .collect::<Result<Vec<_>, _>>()?;
        let finals = bundle
            .finals
            .iter()
            .map(&mut grant)
            .collect::<Result<Vec<_>, _>>()?;
        // The host reads the inventories, so the component needs no file access for them.
        let inventories = bundle
            .inventories
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|text| (p.display().to_string(), text))
                    .map_err(|e| Error::Io(format!("inventory {}: {e}", p.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let references: Vec<&str> = bases.iter().chain(&finals).map(String::as_str).collect();
        let (policy, store, imo) = self.sandbox(&references, &grants).await?;
        let request = wit::Bundle {
            bases,
            inventories,
            finals,
        };
        Ok((request, policy, store, imo))
    }

    /// Writes the difference archive to `path`, under a temporary name until it is complete
    /// and verified, so a failed pull never leaves a file that looks like an archive.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("pull-to-file");
    /// # let v1 = layout(&work, "v1", &["os"]);
    /// # let v2 = layout(&work, "v2", &["os", "app"]);
    /// // `v1` and `v2` are `oci:DIR:TAG` references to local layouts.
    /// let imo = imo::Imo::builder().build()?;
    /// let archive = work.join("app-v2.tar");
    /// let summary = imo.pull_to_file(&v1, &v2, &archive).await?;
    /// assert_eq!(std::fs::metadata(&archive)?.len(), summary.archive_bytes);
    ///
    /// let missing = format!("oci:{}:v3", work.join("no-such-layout").display());
    /// let failed = work.join("app-v3.tar");
    /// assert!(imo.pull_to_file(&v1, &missing, &failed).await.is_err());
    /// assert!(!failed.exists());
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn pull_to_file(
        &self,
        base: &str,
        final_: &str,
        path: &Path,
    ) -> Result<Summary, Error> {
        self.pull_bundle_to_file(&Bundle::new(base, final_), path)
            .await
    }

    /// [`Imo::pull_bundle_to_writer`] into `path`, written under a temporary name until it
    /// is complete and verified.
    ///
    /// Here the site's holdings come from an inventory rather than a base image:
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("pull-bundle-to-file");
    /// # let site = layout(&work.join("site"), "v1", &["os"]);
    /// # let v2 = layout(&work.join("build"), "v2", &["os", "app"]);
    /// // `site` and `v2` are `oci:DIR:TAG` references to local layouts.
    /// let imo = imo::Imo::builder().build()?;
    /// let inventory = work.join("site.json");
    /// std::fs::write(&inventory, imo.inventory(&[&site], &[]).await?)?;
    ///
    /// let bundle = imo::Bundle {
    ///     bases: vec![],
    ///     inventories: vec![inventory],
    ///     finals: vec![v2],
    /// };
    /// let summary = imo.pull_bundle_to_file(&bundle, &work.join("app-v2.tar")).await?;
    /// assert_eq!(summary.blobs_omitted, 1, "the `os` layer, which the site holds");
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn pull_bundle_to_file(
        &self,
        bundle: &Bundle,
        path: &Path,
    ) -> Result<Summary, Error> {
        let partial = partial_path(path);
        let io = |p: &Path, e: std::io::Error| Error::Io(format!("{}: {e}", p.display()));
        let file = std::fs::File::create(&partial).map_err(|e| io(&partial, e))?;
        let writer = file.try_clone().map_err(|e| io(&partial, e))?;
        let result = self.pull_into(bundle, writer).await;
        let result = result.and_then(|s| file.sync_all().map(|()| s).map_err(|e| io(&partial, e)));
        drop(file);
        match result {
            Ok(s) => {
                std::fs::rename(&partial, path).map_err(|e| io(path, e))?;
                Ok(s)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }

    /// Pulls into `file`, which the component may write at any offset (and nothing else), so
    /// that it fetches several blobs at once.
    async fn pull_into(&self, bundle: &Bundle, file: std::fs::File) -> Result<Summary, Error> {
        let (request, policy, mut store, imo) = self.pull_sandbox(bundle).await?;
        // Its writes run on the calling thread: the component waits for each anyway.
        let descriptor =
            Descriptor::File(FsFile::new(file, FsPerms::ReadWrite, OpenMode::WRITE, true));
        let own = store
            .data_mut()
            .table
            .push(descriptor)
            .map_err(runtime_error)?;
        let result = imo
            .imo_overlay_overlay()
            .call_pull_bundle_to_file(
                &mut store,
                &request,
                Resource::new_borrow(own.rep()),
                &self.options(),
            )
            .await;
        let _ = store.data_mut().table.delete(own);
        finish(result, &policy)
    }

    /// Checks, before anything is uploaded, that `destination` holds every blob the archive
    /// read from `archive` leaves out, with one `HEAD` per blob. It works before the
    /// destination tag exists and changes nothing there. An `oci:DIR` destination must exist.
    ///
    /// Fails with [`Error::MissingBlobs`], naming every digest the destination lacks.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("push-vet");
    /// # let v1 = layout(&work.join("build"), "v1", &["os"]);
    /// # let v2 = layout(&work.join("build"), "v2", &["os", "app"]);
    /// # let site = work.join("site");
    /// # layout(&site, "v1", &["os"]);
    /// # let empty = work.join("empty");
    /// # std::fs::create_dir(&empty)?;
    /// # let archive = work.join("app-v2.tar");
    /// // `v1` and `v2` are images in local OCI layouts; `site` holds v1, `empty` nothing.
    /// let imo = imo::Imo::builder().build()?;
    /// imo.pull_to_file(&v1, &v2, &archive).await?;
    ///
    /// let file = tokio::fs::File::open(&archive).await?;
    /// let summary = imo.push_vet(file, &format!("oci:{}:v2", site.display())).await?;
    /// assert_eq!(summary.blobs_omitted, 1, "the `os` layer, which the site holds");
    ///
    /// let file = tokio::fs::File::open(&archive).await?;
    /// let err = imo.push_vet(file, &format!("oci:{}:v2", empty.display())).await;
    /// assert!(matches!(err, Err(imo::Error::MissingBlobs(digests)) if digests.len() == 1));
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn push_vet<R>(&self, archive: R, destination: &str) -> Result<Summary, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.with_archive(archive, destination, false).await
    }

    /// Vets, uploads the blobs `destination` lacks (each verified as it streams), then puts
    /// the manifest, so the destination tag holds the final image with exactly the source's
    /// digests. Nothing is tagged unless every blob is in place. With no tag in
    /// `destination`, the final image's own tag is used; an `oci:DIR` destination is created
    /// if need be.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("push");
    /// # let v2 = layout(&work.join("build"), "v2", &["os", "app"]);
    /// # let archive = work.join("app-v2-full.tar");
    /// // `v2` is an `oci:DIR:TAG` reference to a local layout.
    /// let imo = imo::Imo::builder().build()?;
    /// imo.pull_to_file("scratch", &v2, &archive).await?;
    ///
    /// let mirror = format!("oci:{}", work.join("mirror").display());
    /// let summary = imo.push(tokio::fs::File::open(&archive).await?, &mirror).await?;
    /// assert_eq!(summary.blobs_uploaded, summary.blobs_in_archive);
    /// let index = std::fs::read_to_string(work.join("mirror/index.json"))?;
    /// assert!(index.contains(&summary.manifest_digest));
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn push<R>(&self, archive: R, destination: &str) -> Result<Summary, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.with_archive(archive, destination, true).await
    }

    /// Describes what `sources` (repositories: all tags, or the tag named; `oci:` layouts)
    /// and the `archives` already shipped hold, as an inventory's JSON text for
    /// [`Bundle::inventories`]. Registries are read with the push credentials.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("inventory");
    /// # let site = layout(&work, "v1", &["os"]);
    /// // `site` is an `oci:DIR:TAG` reference to a local layout.
    /// let imo = imo::Imo::builder().build()?;
    /// let json: serde_json::Value = serde_json::from_str(&imo.inventory(&[&site], &[]).await?)?;
    /// assert_eq!(json["imoInventoryVersion"], 1);
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn inventory(&self, sources: &[&str], archives: &[PathBuf]) -> Result<String, Error> {
        let mut grants = Vec::new();
        let sources = sources
            .iter()
            .map(|s| {
                let (s, g) = layout_grant(s, false)?;
                grants.extend(g);
                Ok(s)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let references: Vec<&str> = sources.iter().map(String::as_str).collect();
        let (policy, mut store, imo) = self.sandbox(&references, &grants).await?;
        let api = imo.imo_overlay_overlay();
        let options = self.options();
        let mut json = String::new();
        if !sources.is_empty() || archives.is_empty() {
            json = finish_with(
                api.call_inventory(&mut store, &sources, &options).await,
                &policy,
            )?;
        }
        for path in archives {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            let stream: DynInputStream = Box::new(streams::ReadAhead::new(file));
            let own = store.data_mut().table.push(stream).map_err(runtime_error)?;
            let result = api
                .call_inventory_add_archive(
                    &mut store,
                    &json,
                    &path.display().to_string(),
                    Resource::new_borrow(own.rep()),
                    &options,
                )
                .await;
            let _ = store.data_mut().table.delete(own);
            json = finish_with(result, &policy)?;
        }
        Ok(json)
    }

    /// A fresh component instance that may reach the registries of `references` (and the
    /// hosts they point to) and the `grants` directories, and nothing else.
    async fn sandbox(
        &self,
        references: &[&str],
        grants: &[LayoutGrant],
    ) -> Result<
        (
            Arc<NetworkPolicy>,
            wasmtime::Store<runtime::State>,
            runtime::bindings::Imo,
        ),
        Error,
    > {
        let policy = self.policy(references)?;
        let connector = self.connector(references);
        let mut store = self
            .runtime
            .store(policy.clone(), connector, self.reporter(), &[], grants)
            .map_err(runtime_error)?;
        let imo = self
            .runtime
            .instantiate(&mut store)
            .await
            .map_err(runtime_error)?;
        Ok((policy, store, imo))
    }

    async fn with_archive<R>(
        &self,
        archive: R,
        destination: &str,
        push: bool,
    ) -> Result<Summary, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let (destination, grants) = layout_grant(destination, push)?;
        let destination = destination.as_str();
        let grants: Vec<_> = grants.into_iter().collect();
        let references = destination_references(destination, &self.settings.destination_map);
        let references: Vec<&str> = references.iter().map(String::as_str).collect();
        let (policy, mut store, imo) = self.sandbox(&references, &grants).await?;
        let stream: DynInputStream = Box::new(streams::ReadAhead::new(archive));
        let own = store.data_mut().table.push(stream).map_err(runtime_error)?;
        let borrowed = Resource::new_borrow(own.rep());
        let options = self.options();
        let api = imo.imo_overlay_overlay();
        let result = if push {
            api.call_push(&mut store, borrowed, destination, &options)
                .await
        } else {
            api.call_push_vet(&mut store, borrowed, destination, &options)
                .await
        };
        let _ = store.data_mut().table.delete(own);
        finish(result, &policy)
    }
}

/// What [`Imo::pull_bundle_to_file`] carries and what it may leave out: several final
/// images in one archive, taken against several bases and inventories.
///
/// ```rust
/// let bundle = imo::Bundle {
///     bases: vec!["quay.io/org/app:v1".into()],
///     inventories: vec!["site.json".into()],
///     finals: vec!["quay.io/org/app:v2".into(), "quay.io/org/db:v7".into()],
/// };
/// assert_eq!(bundle.finals.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundle {
    /// Base images: a blob any of them holds is left out; `scratch` stands for none.
    pub bases: Vec<String>,
    /// Inventory files written by [`Imo::inventory`] (`imo inventory`): a blob any of them
    /// lists is left out, and push mounts it from where the inventory places it.
    pub inventories: Vec<PathBuf>,
    /// The final images, at least one; blobs they share are carried once.
    pub finals: Vec<String>,
}

impl Bundle {
    /// One final image over one base, as [`Imo::pull_to_file`] takes them.
    ///
    /// ```rust
    /// let bundle = imo::Bundle::new("scratch", "quay.io/org/app:v2");
    /// assert_eq!(bundle.bases, ["scratch"]);
    /// assert_eq!(bundle.finals, ["quay.io/org/app:v2"]);
    /// assert!(bundle.inventories.is_empty());
    /// ```
    pub fn new(base: &str, final_: &str) -> Self {
        Bundle {
            bases: vec![base.to_owned()],
            inventories: vec![],
            finals: vec![final_.to_owned()],
        }
    }
}

/// A local OCI layout directory the component may use, at the same path as on the host.
#[doc(hidden)]
pub struct LayoutGrant {
    pub dir: PathBuf,
    pub writable: bool,
}

/// For an `oci:DIR[:TAG]` reference, the directory to grant (created first if it is to be
/// written) and the reference rewritten with its absolute path; other references pass as
/// they are.
fn layout_grant(reference: &str, writable: bool) -> Result<(String, Option<LayoutGrant>), Error> {
    let Ok(imo_guest::store::Location::OciDir { dir, tag }) =
        imo_guest::store::Location::parse(reference)
    else {
        return Ok((reference.to_owned(), None));
    };
    if writable {
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io(format!("{dir}: {e}")))?;
    }
    let abs = std::fs::canonicalize(&dir).map_err(|e| Error::Io(format!("{dir}: {e}")))?;
    let rewritten = match tag {
        Some(t) => format!("oci:{}:{t}", abs.display()),
        None => format!("oci:{}", abs.display()),
    };
    Ok((rewritten, Some(LayoutGrant { dir: abs, writable })))
}

/// The references a push or vet to `destination` may reach: the destination read as a
/// reference (one image) and as a prefix (`registry[/path]`, several images), and every
/// mapped destination. Both readings are what the user named.
fn destination_references(destination: &str, map: &[(String, String)]) -> Vec<String> {
    use imo_guest::reference::{Prefix, Reference};
    let mut out = Vec::new();
    if destination.starts_with("oci:") || Reference::parse(destination).is_ok() {
        out.push(destination.to_owned());
    }
    if let Ok(prefix) = Prefix::parse(destination) {
        // Any image under the prefix: the policy needs only its registry.
        let any = Reference::parse("localhost/x").expect("a valid name");
        out.push(prefix.join(&any).to_string());
    }
    if out.is_empty() {
        // Let the policy report the malformed reference.
        out.push(destination.to_owned());
    }
    out.extend(map.iter().map(|(_, to)| to.clone()));
    out
}

/// Turns the component's answer into the host's, adding what the policy refused.
fn finish(
    result: wasmtime::Result<Result<wit::Summary, wit::Error>>,
    policy: &NetworkPolicy,
) -> Result<Summary, Error> {
    finish_with(result, policy).map(Into::into)
}

fn finish_with<T>(
    result: wasmtime::Result<Result<T, wit::Error>>,
    policy: &NetworkPolicy,
) -> Result<T, Error> {
    match result {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            let mut e = Error::from(e);
            let denied = policy.denied.lock().expect("policy lock");
            if let (Error::Unreachable(m) | Error::Denied(m), Some(d)) = (&mut e, denied.last()) {
                m.push_str(&format!(" (the host {d})"));
            }
            Err(e)
        }
        Err(trap) => Err(runtime_error(format!("{trap:?}"))),
    }
}

/// `dir/.name.<pid>.partial` beside the final path, so the rename is atomic.
fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    path.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// An archive being pulled, readable (as a tokio [`AsyncRead`]) while it is produced. Made
/// by [`Imo::pull`]. If the pull fails, reading ends with an error rather than a short
/// archive; [`finish`](PullStream::finish) then returns the [`Error`].
///
/// ```rust
/// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let work = scratch("pull-stream");
/// # let v2 = layout(&work, "v2", &["os", "app"]);
/// // `v2` is an `oci:DIR:TAG` reference to a local layout.
/// let imo = imo::Imo::builder().build()?;
/// let mut stream = imo.pull("scratch", &v2);
/// let mut file = tokio::fs::File::create(work.join("app-v2.tar")).await?;
/// let copied = tokio::io::copy(&mut stream, &mut file).await?;
/// assert_eq!(stream.finish().await?.archive_bytes, copied);
/// # std::fs::remove_dir_all(&work)?;
/// # Ok(()) }
/// ```
pub struct PullStream {
    reader: tokio::io::DuplexStream,
    task: Option<tokio::task::JoinHandle<Result<Summary, Error>>>,
    result: Option<Result<Summary, Error>>,
}

impl PullStream {
    /// Waits for the pull to end and returns its summary. Read the stream to its end first:
    /// the component waits for the reader when the buffer is full.
    ///
    /// ```rust
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio::io::AsyncReadExt as _;
    ///
    /// let imo = imo::Imo::builder().build()?;
    /// let missing = std::env::temp_dir().join("imo-doc-no-such-layout");
    /// let mut stream = imo.pull("scratch", &format!("oci:{}:v2", missing.display()));
    /// let mut archive = Vec::new();
    /// assert!(stream.read_to_end(&mut archive).await.is_err());
    /// assert!(matches!(stream.finish().await, Err(imo::Error::Io(_))));
    /// # Ok(()) }
    /// ```
    pub async fn finish(mut self) -> Result<Summary, Error> {
        if let Some(r) = self.result.take() {
            return r;
        }
        let task = self
            .task
            .take()
            .expect("the task is taken only here and at the end of reading");
        task.await.map_err(runtime_error)?
    }
}

impl AsyncRead for PullStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.reader).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before => {}
            other => return other,
        }
        // The writer is gone: the archive ended, completely or not. Say which.
        if self.result.is_none() {
            let Some(task) = self.task.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let outcome = std::task::ready!(std::pin::Pin::new(task).poll(cx));
            self.task = None;
            self.result = Some(outcome.map_err(runtime_error).and_then(|r| r));
        }
        match &self.result {
            Some(Err(e)) => Poll::Ready(Err(std::io::Error::other(e.clone()))),
            _ => Poll::Ready(Ok(())),
        }
    }
}
