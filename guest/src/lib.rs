//! imo's logic: references, manifests, diff planning, the archive format and a registry
//! client, all free of I/O so they test natively; `wasi` binds them to WASI 0.2.

pub mod archive;
pub mod auth;
pub mod base64;
pub mod cli;
pub mod credentials;
pub mod delta;
pub mod digest;
pub mod error;
pub mod inventory;
pub mod manifest;
pub mod ops;
pub mod plan;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod store;
pub mod tar;
pub mod text;

#[cfg(target_arch = "wasm32")]
mod wasi;
