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

mod api;
pub mod artifact;
#[doc(hidden)]
pub mod atomic_file;
mod authority;
mod builder;
pub mod credentials;
pub mod http_client;
mod imo;
pub mod policy;
mod runtime;
mod sandbox;
mod streams;
mod trust;
pub mod volumes;

/// The HTTP client's former name: `imo::tls::…` paths keep working.
#[doc(hidden)]
pub use http_client as tls;

pub use api::{
    Bundle, Count, Credentials, Error, Held, ImageInfo, Inspection, LayerTravel, LayoutGrant,
    Summary, Verification,
};
pub use builder::Builder;
pub use imo::{Imo, PullStream};
pub use runtime::COMPONENT;
