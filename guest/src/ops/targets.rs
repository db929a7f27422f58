//! Where each image of an archive goes: the destination itself, a prefix each image keeps
//! its repository path under, or a `--map` entry; and the repositories blobs may be mounted
//! from there.

use super::{Options, parse_location};
use crate::archive::Metadata;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::{Destination, Location, Reference};
use std::collections::{BTreeMap, BTreeSet};

/// Where one image of the archive goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub location: Location,
    /// The tag (or digest) its top-level manifest is put under.
    pub key: String,
}

/// A push or vet destination argument and the `--map` entries, parsed before the archive is
/// read, so that a typo costs no reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination as written, for messages.
    pub given: String,
    pub destination: Destination,
    pub map: Vec<Mapping>,
}

/// `--map IMAGE=DESTINATION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The image as written: it matches as written or normalised.
    pub given: String,
    pub image: Location,
    pub to: Location,
}

impl Route {
    pub fn parse(destination: &str, map: &[(String, String)]) -> Result<Self> {
        let parsed = Destination::parse(destination)
            .map_err(|e| Error::InvalidReference(format!("destination: {e}")))?;
        let map = map
            .iter()
            .map(|(from, to)| {
                Ok(Mapping {
                    given: from.clone(),
                    image: parse_location("--map image", from)?,
                    to: parse_location("--map destination", to)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Route {
            given: destination.to_owned(),
            destination: parsed,
            map,
        })
    }
}

/// Where each image of an archive goes: an explicit `map` entry (final reference to
/// destination) first; else, for a single image, the destination itself; else the
/// destination as a prefix (`registry[/path]`) under which each image keeps its repository
/// path and tag. Several images must all go to one registry, where blobs are uploaded once
/// and mounted into the other repositories.
pub fn targets(meta: &Metadata, route: &Route) -> Result<Vec<Target>> {
    let mut used = vec![false; route.map.len()];
    let mut out = Vec::new();
    for image in &meta.images {
        let top = &image.manifest;
        // The image's reference as the archive records it: its path and tag carry over.
        let source = Location::parse(&image.reference).ok();
        let mapped =
            route.map.iter().enumerate().find(|(_, m)| {
                m.image.to_string() == image.reference || m.given == image.reference
            });
        let location = if let Some((i, m)) = mapped {
            used[i] = true;
            m.to.clone()
        } else if meta.images.len() == 1 {
            route
                .destination
                .location()
                .map_err(|e| Error::InvalidReference(format!("destination: {e}")))?
        } else {
            under_prefix(route, &image.reference, source.as_ref())?
        };
        let key = destination_key(&location, source.as_ref(), top)?;
        out.push(Target { location, key });
    }
    if let Some((m, _)) = route.map.iter().zip(&used).find(|(_, u)| !**u) {
        return Err(Error::InvalidReference(format!(
            "--map names {}, which is not an image of this archive ({})",
            m.given,
            meta.images
                .iter()
                .map(|i| i.reference.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if out.len() > 1 {
        let registries: BTreeSet<Option<&str>> = out
            .iter()
            .map(|t| match &t.location {
                Location::Registry(r) => Some(r.registry.as_str()),
                Location::OciDir { .. } => None,
            })
            .collect();
        if registries.len() != 1 || registries.contains(&None) {
            return Err(Error::InvalidReference(
                "the images of a bundle must all go to one registry; push them to a prefix \
                 there, or push the archive once per registry with --map"
                    .into(),
            ));
        }
    }
    Ok(out)
}

/// The route's destination as a prefix (`registry[:port][/path]`) joined with the repository
/// path and tag of the image `reference` (`source`, parsed).
fn under_prefix(route: &Route, reference: &str, source: Option<&Location>) -> Result<Location> {
    let prefix = &route.given;
    let Some(Location::Registry(image)) = source else {
        return Err(Error::InvalidReference(format!(
            "image {reference} has no repository path to keep under {prefix}; give its \
             destination with --map {reference}=DESTINATION"
        )));
    };
    match &route.destination {
        Destination::OciDir { .. } => Err(Error::InvalidReference(format!(
            "the archive holds several images and {prefix} is one layout; push them to a \
             registry prefix, or give each its own destination with --map"
        ))),
        Destination::Registry { prefix, .. } => {
            let prefix = prefix
                .as_ref()
                .map_err(|e| Error::InvalidReference(e.clone()))?;
            Ok(Location::Registry(prefix.join(image)))
        }
    }
}

/// The repositories of the destination registry that vet and push may ask about, put in
/// token scopes, mount from and copy from. The archive is not trusted to choose them: a
/// crafted `imo.json` naming another team's private repository would otherwise have the
/// user's credentials make its blobs readable at the destination.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct MountSources {
    /// Tried in this order for every blob not at its destination: those the user names,
    /// then (with `--mount-from-archive`) the bases' repository paths, then this push's
    /// destinations.
    pub tried: Vec<String>,
    /// Per blob, the repositories an inventory placed it in (as the archive records it),
    /// tried first: those also in `tried`, or all of them with `--mount-from-archive`.
    pub held_in: BTreeMap<Digest, Vec<String>>,
    /// The bases' repository paths left alone, for the hint of a missing blob.
    withheld_bases: Vec<String>,
    /// `--mount-from-archive`: every repository the archive names is trusted.
    trust_archive: bool,
}

impl MountSources {
    /// Every repository that may be asked about, for the destination's token scopes.
    pub fn all(&self) -> Vec<String> {
        let mut all = self.tried.clone();
        for r in self.held_in.values().flatten() {
            if !all.contains(r) {
                all.push(r.clone());
            }
        }
        all
    }

    /// The repositories the archive names for `digest` (where it says an inventory placed
    /// it, and its bases' paths) that were left alone.
    pub fn withheld_for(&self, meta: &Metadata, digest: &Digest) -> Vec<String> {
        if self.trust_archive {
            return Vec::new();
        }
        let placed = meta.held_in.get(digest).into_iter().flatten();
        let mut out: Vec<String> = Vec::new();
        for r in placed.chain(&self.withheld_bases) {
            if !r.is_empty() && !self.tried.contains(r) && !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }
}

/// Where blobs may be mounted from at push: the repositories the user names
/// (`--mount-from`) and this push's destinations; those the archive names (its bases'
/// repository paths, as they are or under the images' prefix, and where an inventory placed
/// each omitted blob) only with `--mount-from-archive`.
pub(super) fn mount_sources(
    targets: &[Target],
    meta: &Metadata,
    options: &Options,
) -> MountSources {
    let trust_archive = options.mount_from_archive;
    let destinations = targets.iter().filter_map(|t| match &t.location {
        Location::Registry(r) => Some(r.repository.clone()),
        Location::OciDir { .. } => None,
    });
    let bases = archive_named(targets, meta);
    let trusted_bases = if trust_archive {
        bases.clone()
    } else {
        Vec::new()
    };
    let mut tried: Vec<String> = Vec::new();
    for c in (options.mount_from.iter().cloned())
        .chain(trusted_bases)
        .chain(destinations)
    {
        if !c.is_empty() && !tried.contains(&c) {
            tried.push(c);
        }
    }
    let held_in = (meta.held_in.iter())
        .map(|(d, repos)| {
            let allowed = repos.iter().filter(|r| trust_archive || tried.contains(r));
            (d.clone(), allowed.cloned().collect::<Vec<_>>())
        })
        .filter(|(_, repos)| !repos.is_empty())
        .collect();
    let withheld_bases = if trust_archive {
        Vec::new()
    } else {
        bases.into_iter().filter(|r| !tried.contains(r)).collect()
    };
    MountSources {
        tried,
        held_in,
        withheld_bases,
        trust_archive,
    }
}

/// The bases' repository paths, where a mirror usually keeps them: as they are, and under
/// the prefix the images' destinations add to their own paths.
fn archive_named(targets: &[Target], meta: &Metadata) -> Vec<String> {
    let prefixes: BTreeSet<String> = targets
        .iter()
        .zip(&meta.images)
        .filter_map(|(t, image)| {
            let Location::Registry(dest) = &t.location else {
                return None;
            };
            let source = Reference::parse(&image.reference).ok()?;
            dest.repository
                .strip_suffix(&source.repository)
                .map(str::to_owned)
        })
        .collect();
    let mut out = Vec::new();
    for base in &meta.bases {
        if let Ok(r) = Reference::parse(&base.reference) {
            for p in &prefixes {
                out.push(format!("{p}{}", r.repository));
            }
            out.push(r.repository);
        }
    }
    out
}

/// The tag (or digest) an image's top-level manifest is pushed under: the destination's, else
/// the final image's tag, else `latest`.
fn destination_key(dest: &Location, source: Option<&Location>, top: &Digest) -> Result<String> {
    if let Location::Registry(r) = dest
        && let Some(d) = &r.digest
    {
        if d != top {
            return Err(Error::InvalidReference(format!(
                "destination {r} pins digest {d}, but the archive's image is {top}"
            )));
        }
        if r.tag.is_none() {
            return Ok(d.to_string());
        }
    }
    if let Some(t) = dest.tag() {
        return Ok(t.to_owned());
    }
    let from_final = source.and_then(|l| l.tag().map(str::to_owned));
    Ok(from_final.unwrap_or_else(|| "latest".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive;
    use std::collections::BTreeMap;

    fn bundle(references: &[&str]) -> Metadata {
        Metadata {
            imo_archive_version: archive::FORMAT_VERSION,
            images: references
                .iter()
                .enumerate()
                .map(|(i, r)| archive::Image {
                    reference: (*r).into(),
                    manifest: Digest::of(&[i as u8]),
                    attached: vec![],
                })
                .collect(),
            bases: vec![],
            inventories: vec![],
            manifests: vec![],
            blobs: vec![],
            omitted: vec![],
            held_in: BTreeMap::new(),
            deltas: vec![],
        }
    }

    fn route(destination: &str, map: &[(String, String)]) -> Route {
        Route::parse(destination, map).unwrap()
    }

    fn route_and_targets(
        m: &Metadata,
        destination: &str,
        map: &[(String, String)],
    ) -> Result<Vec<Target>> {
        targets(m, &Route::parse(destination, map)?)
    }

    fn shown(ts: &[Target]) -> Vec<String> {
        ts.iter()
            .map(|t| match &t.location {
                Location::Registry(r) => format!("{}/{} {}", r.registry, r.repository, t.key),
                Location::OciDir { dir, .. } => format!("oci:{dir} {}", t.key),
            })
            .collect()
    }

    #[test]
    fn one_image_goes_where_the_destination_says() {
        let m = bundle(&["quay.io/org/app:v2"]);
        let t = targets(&m, &route("mirror:5000/apps/app", &[])).unwrap();
        assert_eq!(shown(&t), ["mirror:5000/apps/app v2"]);
        let t = targets(&m, &route("mirror:5000/apps/app:stable", &[])).unwrap();
        assert_eq!(shown(&t), ["mirror:5000/apps/app stable"]);
        let t = targets(&m, &route("oci:/srv/layout", &[])).unwrap();
        assert_eq!(shown(&t), ["oci:/srv/layout v2"]);
    }

    #[test]
    fn a_bundle_keeps_each_repository_path_under_the_prefix() {
        let m = bundle(&["quay.io/org/app:v2", "docker.io/library/db:16"]);
        let t = targets(&m, &route("mirror:5000/site", &[])).unwrap();
        assert_eq!(
            shown(&t),
            [
                "mirror:5000/site/org/app v2",
                "mirror:5000/site/library/db 16"
            ]
        );
        let t = targets(&m, &route("mirror:5000", &[])).unwrap();
        assert_eq!(
            shown(&t),
            ["mirror:5000/org/app v2", "mirror:5000/library/db 16"]
        );
        // An explicit mapping wins, and may name the image as the user wrote it.
        let map = vec![("db:16".to_owned(), "mirror:5000/databases/pg:16".to_owned())];
        let t = targets(&m, &route("mirror:5000/site", &map)).unwrap();
        assert_eq!(
            shown(&t),
            ["mirror:5000/site/org/app v2", "mirror:5000/databases/pg 16"]
        );
    }

    #[test]
    fn bundle_destinations_that_cannot_work_are_refused() {
        let m = bundle(&["quay.io/org/app:v2", "quay.io/org/db:v2"]);
        let err = |dest: &str, map: &[(&str, &str)]| {
            let map: Vec<(String, String)> = map
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect();
            route_and_targets(&m, dest, &map).unwrap_err().to_string()
        };
        assert!(err("oci:/srv/x", &[]).contains("one layout"));
        assert!(err("app", &[]).contains("names no registry"));
        assert!(err("mirror:5000/site:v1", &[]).contains("takes no tag"));
        assert!(
            err("mirror:5000", &[("quay.io/org/db:v2", "other:5000/db:v2")])
                .contains("one registry")
        );
        assert!(
            err("mirror:5000", &[("quay.io/org/web:v2", "mirror:5000/w")]).contains("not an image")
        );
    }

    /// A bundle pushed under `mirror:5000/site` whose archive names a base and places one
    /// omitted blob in `secret/private`, pushed with `options`.
    fn sources_of(options: &Options) -> (Metadata, MountSources) {
        let mut m = bundle(&["quay.io/org/app:v2", "quay.io/org/db:v2"]);
        m.bases.push(archive::Base {
            reference: "quay.io/secret/private:v1".into(),
            digest: None,
        });
        let placed = Digest::of(b"placed");
        (m.held_in).insert(placed, vec!["secret/private".into(), "site/org/db".into()]);
        let t = targets(&m, &route("mirror:5000/site", &[])).unwrap();
        let s = mount_sources(&t, &m, options);
        (m, s)
    }

    #[test]
    fn only_the_users_repositories_and_the_destinations_are_mount_sources() {
        let options = Options {
            mount_from: vec!["shared/base".into()],
            ..Options::default()
        };
        let (m, s) = sources_of(&options);
        assert_eq!(s.tried, ["shared/base", "site/org/app", "site/org/db"]);
        // The inventory's placement is kept where it is a destination, dropped elsewhere.
        let placed = Digest::of(b"placed");
        assert_eq!(s.held_in[&placed], ["site/org/db"]);
        assert_eq!(s.all(), s.tried);
        // A missing blob's hint names what the archive named and imo left alone.
        assert_eq!(
            s.withheld_for(&m, &placed),
            ["secret/private", "site/secret/private"]
        );
        assert_eq!(
            s.withheld_for(&m, &Digest::of(b"other")),
            ["site/secret/private", "secret/private"]
        );
    }

    #[test]
    fn a_repository_the_archive_names_is_a_source_when_the_user_names_it_too() {
        let options = Options {
            mount_from: vec!["secret/private".into()],
            ..Options::default()
        };
        let (m, s) = sources_of(&options);
        let placed = Digest::of(b"placed");
        assert_eq!(s.tried, ["secret/private", "site/org/app", "site/org/db"]);
        assert_eq!(s.held_in[&placed], ["secret/private", "site/org/db"]);
        assert_eq!(s.withheld_for(&m, &placed), ["site/secret/private"]);
    }

    #[test]
    fn mount_from_archive_trusts_what_the_archive_names() {
        let options = Options {
            mount_from_archive: true,
            ..Options::default()
        };
        let (m, s) = sources_of(&options);
        let placed = Digest::of(b"placed");
        assert_eq!(
            s.tried,
            [
                "site/secret/private",
                "secret/private",
                "site/org/app",
                "site/org/db"
            ]
        );
        assert_eq!(s.held_in[&placed], ["secret/private", "site/org/db"]);
        assert!(s.withheld_for(&m, &placed).is_empty());
    }
}
