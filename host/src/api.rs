//! The public values of the library: settings, results and errors, as the WIT interface
//! carries them.

use crate::runtime::bindings::exports::imo::overlay::overlay as wit;
use std::path::PathBuf;

/// A user name and password (or identity token) for one registry: the component's own type,
/// so the two sides cannot drift. Set them with
/// [`Builder::base_credentials`](crate::Builder::base_credentials) and its siblings, or find
/// them as skopeo and docker do with [`credentials::lookup`](crate::credentials::lookup).
/// `Debug` never shows the password.
///
/// ```rust
/// let c = imo::Credentials {
///     username: "mirror".into(),
///     password: "s3cret".into(),
/// };
/// assert_eq!(c.username, "mirror");
/// assert!(!format!("{c:?}").contains("s3cret"));
/// ```
pub use imo_guest::registry::Credentials;

/// The component's own type, so the two sides cannot drift.
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
pub use imo_guest::ops::{LayerTravel, Summary};

/// What [`Imo::inspect`](crate::Imo::inspect) finds at the head of an archive: the
/// component's own type, so the two sides cannot drift.
pub use imo_guest::archive::Inspection;

/// What [`Imo::verify`](crate::Imo::verify) finds reading a whole archive: the component's
/// own type. Good when `problems` is empty.
pub use imo_guest::archive::Verification;

/// Parts of an [`Inspection`]: its images, blob counts and what the destination must hold.
pub use imo_guest::archive::{Count, Held, ImageInfo};

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
    /// The component could not be compiled, loaded or run, or needed more memory than
    /// [`Builder::memory_limit`](crate::Builder::memory_limit) allows (the message then
    /// names the limit and how to raise it).
    Runtime(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The component's own wording, so that both say the same.
            Error::MissingBlobs(ds) => imo_guest::error::Error::MissingBlobs(ds.clone()).fmt(f),
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
            blobs_kept: s.blobs_kept,
            bytes_kept: s.bytes_kept,
            layers: s
                .layers
                .into_iter()
                .map(|l| LayerTravel {
                    layer: l.layer,
                    size: l.size,
                    delta_size: l.delta_size,
                    whole_because: l.whole_because,
                })
                .collect(),
            layers_rebuilt: s.layers_rebuilt,
        }
    }
}

pub(crate) fn runtime_error(e: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("the imo component failed: {e}"))
}

/// The error for a component that trapped: over its memory limit, a plain message saying
/// how to raise it (the wasm backtrace would only puzzle); otherwise everything, backtrace
/// included, for a bug report.
pub(crate) fn trap_error(trap: wasmtime::Error) -> Error {
    match trap.downcast_ref::<crate::runtime::MemoryExceeded>() {
        Some(exceeded) => Error::Runtime(exceeded.to_string()),
        None => runtime_error(format!("{trap:?}")),
    }
}

/// What [`Imo::pull_bundle_to_file`](crate::Imo::pull_bundle_to_file) carries and what it may leave out: several final
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
    /// Inventory files written by [`Imo::inventory`](crate::Imo::inventory) (`imo inventory`): a blob any of them
    /// lists is left out, and push mounts it from where the inventory places it.
    pub inventories: Vec<PathBuf>,
    /// The final images, at least one; blobs they share are carried once.
    pub finals: Vec<String>,
}

impl Bundle {
    /// One final image over one base, as [`Imo::pull_to_file`](crate::Imo::pull_to_file) takes them.
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
#[derive(Clone, Debug)]
pub struct LayoutGrant {
    pub dir: PathBuf,
    pub writable: bool,
}
