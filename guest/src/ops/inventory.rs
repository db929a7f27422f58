//! Inventories: what registries (or OCI directories) hold, and what shipped archives carried.

use super::tree::fetch_all;
use super::{Options, Reporter, open_archive, open_source, parse_location};
use crate::error::{Error, Result};
use crate::inventory::{self, Inventory};
use crate::plan::Fetched;
use crate::reference::Location;
use crate::registry::Transport;
use std::io::Read;

/// Builds an inventory of what `references` hold (a repository without a tag stands for all
/// its tags) and what `archives` carried or took as present.
pub fn inventory(
    transport: &dyn Transport,
    options: &Options,
    report: &dyn Reporter,
    references: &[String],
    archives: Vec<(String, &mut dyn Read)>,
) -> Result<Inventory> {
    let mut builder = inventory::Builder::default();
    for given in references {
        let location = parse_location("inventory source", given)?;
        let role = options.push_credentials.as_ref();
        let client = open_source(transport, &location, role, options, report)?;
        let (repository, keys) = match &location {
            Location::Registry(r) => {
                let keys = match (&r.tag, &r.digest) {
                    (_, Some(d)) => vec![d.to_string()],
                    (Some(t), None) => vec![t.clone()],
                    (None, None) => client.tags()?,
                };
                (Some(r.repository.clone()), keys)
            }
            Location::OciDir { tag: Some(t), .. } => (None, vec![t.clone()]),
            Location::OciDir { tag: None, .. } => (None, client.tags()?),
        };
        builder.source(client.describe());
        for key in &keys {
            let tree = fetch_all(client.as_ref(), key)?;
            let tag = (!key.starts_with("sha256:")).then_some(key.as_str());
            builder.image(&tree, repository.as_deref(), tag);
        }
        report.line(&format!(
            "inventory of {}: {} tag(s)",
            client.describe(),
            keys.len()
        ));
    }
    for (name, input) in archives {
        let archive = open_archive(input).map_err(|e| match e {
            Error::InvalidArchive(m) => Error::InvalidArchive(format!("{name}: {m}")),
            other => other,
        })?;
        builder.source(format!("archive {name}"));
        let fetched: Vec<Fetched> = archive.manifests.clone();
        builder.image(&fetched, None, None);
        for d in archive.meta.blobs.iter().chain(&archive.meta.omitted) {
            builder.blob(d, None);
        }
        report.line(&format!(
            "inventory of archive {name}: {} image(s)",
            archive.meta.images.len()
        ));
    }
    Ok(builder.build())
}
