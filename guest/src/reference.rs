//! Image references as docker/distribution parses them:
//! `[host[:port]/]path[:tag][@sha256:<hex>]`.

use crate::digest::Digest;
use std::fmt;

/// The registry that unqualified names belong to.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const MAX_NAME: usize = 255;

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written, with `index.docker.io` folded into `docker.io`.
    pub registry: String,
    /// The repository path, with `library/` added for official Docker Hub images.
    pub repository: String,
    /// The tag as written, if any.
    pub tag: Option<String>,
    /// The digest as written, if any.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference, naming the part that is wrong when it is malformed.
    pub fn parse(input: &str) -> Result<Self, String> {
        let fail = |why: String| Err(format!("invalid reference {input:?}: {why}"));
        if input.is_empty() {
            return fail("it is empty".into());
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => match Digest::parse(d) {
                Ok(d) => (rest, Some(d)),
                Err(e) => return fail(e),
            },
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/'; an earlier ':' is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag
            && let Err(e) = check_tag(tag)
        {
            return fail(e);
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if looks_like_host(first) => (first, path),
            _ => (DOCKER_HUB, name),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        let library = registry == DOCKER_HUB && !path.contains('/');
        // Like distribution, limit the normalised name (`docker.io/library/…`), not the text
        // as written: a reference imo writes out must parse again.
        let full = registry.len() + 1 + if library { "library/".len() } else { 0 } + path.len();
        if full > MAX_NAME {
            return fail(format!(
                "the name is longer than {MAX_NAME} characters ({full} with the registry written out)"
            ));
        }
        if let Err(e) = check_host(registry) {
            return fail(e);
        }
        if let Err(e) = check_path(path) {
            return fail(e);
        }
        let repository = if library {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// What to ask the registry for: the digest if given (it pins the content), else the
    /// tag, else `latest`.
    pub fn manifest_key(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The tag, or `latest` when none was written.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// The `host[:port]` to send requests to; Docker Hub serves its API from another host.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine, where plain HTTP is acceptable.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `localhost`, `127.0.0.0/8` and `[::1]`, with or without a port.
pub fn is_loopback_host(authority: &str) -> bool {
    let host = strip_port(authority);
    host == "localhost"
        || host == "[::1]"
        || host
            .strip_prefix("127.")
            .is_some_and(|r| r.split('.').count() == 3 && r.split('.').all(is_octet))
}

fn is_octet(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 3
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u16>().is_ok_and(|n| n < 256)
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    authority.split_once(':').map_or(authority, |(h, _)| h)
}

/// A destination prefix, `host[:port][/path]`, under which each image of a bundle keeps its
/// own repository path and tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub registry: String,
    /// Empty, or the path with a trailing `/`.
    pub path: String,
}

impl Prefix {
    /// Parses a prefix; the registry must be written out (a bare `app` names none).
    pub fn parse(input: &str) -> Result<Self, String> {
        let fail = |why: &str| Err(format!("invalid destination prefix {input:?}: {why}"));
        let trimmed = input.trim_end_matches('/');
        let (host, path) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if host.is_empty() || !looks_like_host(host) {
            return fail("it names no registry: give it as HOST[:PORT][/PATH]");
        }
        if path.contains([':', '@']) {
            return fail("it takes no tag or digest: each image keeps its own");
        }
        if trimmed.len() >= MAX_NAME {
            return fail(&format!(
                "it is {} characters, leaving no room under the {MAX_NAME} a name may have",
                trimmed.len()
            ));
        }
        if let Err(e) = check_host(host) {
            return fail(&e);
        }
        if !path.is_empty()
            && let Err(e) = check_path(path)
        {
            return fail(&e);
        }
        Ok(Prefix {
            registry: if host == "index.docker.io" {
                DOCKER_HUB.to_owned()
            } else {
                host.to_owned()
            },
            path: if path.is_empty() {
                String::new()
            } else {
                format!("{path}/")
            },
        })
    }

    /// Where `image` goes under this prefix: its repository path after the prefix's, its tag
    /// and digest kept.
    pub fn join(&self, image: &Reference) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: format!("{}{}", self.path, image.repository),
            tag: image.tag.clone(),
            digest: image.digest.clone(),
        }
    }
}

/// Where images are read from or written to: a registry reference, or an OCI image layout
/// directory (`oci:DIR[:TAG]`, as skopeo writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Registry(Reference),
    /// An OCI image layout directory, `oci:DIR[:TAG]`.
    OciDir {
        dir: String,
        tag: Option<String>,
    },
}

impl Location {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let Some(rest) = s.strip_prefix("oci:") else {
            return Reference::parse(s).map(Location::Registry);
        };
        // `oci:DIR:TAG`: the tag follows the last ':' unless that part holds a '/'.
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') && !d.is_empty() => (d, Some(t)),
            _ => (rest, None),
        };
        if dir.is_empty() {
            return Err(format!("{s:?} names no directory (oci:DIR[:TAG])"));
        }
        if tag.is_some_and(str::is_empty) {
            return Err(format!("{s:?} has an empty tag after ':'"));
        }
        Ok(Location::OciDir {
            dir: dir.into(),
            tag: tag.map(Into::into),
        })
    }

    /// The tag written, if any.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Location::Registry(r) => r.tag.as_deref(),
            Location::OciDir { tag, .. } => tag.as_deref(),
        }
    }

    /// The manifest to read first: a registry reference's digest or tag; a directory's tag,
    /// or (empty) its only image.
    pub fn manifest_key(&self) -> String {
        match self {
            Location::Registry(r) => r.manifest_key(),
            Location::OciDir { tag, .. } => tag.clone().unwrap_or_default(),
        }
    }
}

/// A registry reference normalised; an `oci:` location as it was written (parsing splits it
/// at the last ':', so writing the parts back gives the text parsed).
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Registry(r) => r.fmt(f),
            Location::OciDir { dir, tag: None } => write!(f, "oci:{dir}"),
            Location::OciDir {
                dir,
                tag: Some(tag),
            } => write!(f, "oci:{dir}:{tag}"),
        }
    }
}

/// Where `imo push` and `imo vet` send an archive, parsed before the archive is read. What it
/// means depends on the archive: its only image goes to the destination itself (a repository
/// or an `oci:` directory); several go under it as a [`Prefix`]. A registry destination may
/// read as both (`mirror:5000/site`), or as one only; the other reading's error is kept for
/// when the archive needs that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `oci:DIR[:TAG]`, for an archive of one image.
    OciDir { dir: String, tag: Option<String> },
    Registry {
        /// As a repository (`HOST[:PORT]/PATH[:TAG][@DIGEST]`), for one image.
        repository: Result<Reference, String>,
        /// As a prefix (`HOST[:PORT][/PATH]`), for several.
        prefix: Result<Prefix, String>,
    },
}

impl Destination {
    /// Parses a destination; it fails only when no reading fits, with the location's error.
    pub fn parse(s: &str) -> Result<Self, String> {
        let repository = match Location::parse(s) {
            Ok(Location::OciDir { dir, tag }) => return Ok(Destination::OciDir { dir, tag }),
            Ok(Location::Registry(r)) => Ok(r),
            // A malformed `oci:` location is no prefix either (its host would be `oci:…`).
            Err(e) if s.starts_with("oci:") => return Err(e),
            Err(e) => Err(e),
        };
        let prefix = Prefix::parse(s);
        if let (Err(e), Err(_)) = (&repository, &prefix) {
            return Err(e.clone());
        }
        Ok(Destination::Registry { repository, prefix })
    }

    /// Where an archive's only image goes, or why this destination cannot take it.
    pub fn location(&self) -> Result<Location, String> {
        match self {
            Destination::OciDir { dir, tag } => Ok(Location::OciDir {
                dir: dir.clone(),
                tag: tag.clone(),
            }),
            Destination::Registry { repository, .. } => repository.clone().map(Location::Registry),
        }
    }
}

/// distribution's rule: the first component is a host if it has a '.' or ':', is
/// `localhost`, or has an upper-case letter (repository paths are lower-case).
fn looks_like_host(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.starts_with('[')
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = if host.starts_with('[') {
        let Some(end) = host.find(']') else {
            return Err(format!("registry {host:?} has an unclosed '['"));
        };
        let inner = &host[1..end];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(format!("registry {host:?} is not a valid IPv6 address"));
        }
        let port = match &host[end + 1..] {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => {
                    return Err(format!(
                        "registry {host:?} has text after ']' that is not a port"
                    ));
                }
            },
        };
        (None, port)
    } else {
        match host.split_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        let ok = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(format!("registry host {name:?} is not a valid host name"));
        }
    }
    if let Some(port) = port
        && (port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return Err(format!(
            "registry port {port:?} is not a number from 0 to 65535"
        ));
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the repository path is empty".into());
    }
    for component in path.split('/') {
        if !is_path_component(component) {
            return Err(format!(
                "repository path component {component:?} must be lower-case letters and digits, \
                 separated by single '.', single or double '_', or runs of '-'"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
pub(crate) fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    if b.is_empty() {
        return Err("the tag after ':' is empty".into());
    }
    if b.len() > 128 {
        return Err(format!("tag {tag:?} is longer than 128 characters"));
    }
    if !word(b[0]) || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
        return Err(format!(
            "tag {tag:?} must be letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_keeps_each_reading_that_fits() {
        let registry = |s: &str| match Destination::parse(s).unwrap() {
            Destination::Registry { repository, prefix } => (repository.ok(), prefix.ok()),
            other => panic!("{s}: {other:?}"),
        };
        // A repository and a prefix at once: which one applies depends on the archive.
        let (r, p) = registry("mirror:5000/site");
        assert_eq!(r.unwrap().to_string(), "mirror:5000/site");
        assert_eq!(p.unwrap().path, "site/");
        // `mirror:5000` is a prefix, and (as docker reads it) Docker Hub's mirror:5000.
        let (r, p) = registry("mirror:5000");
        assert_eq!(r.unwrap().to_string(), "docker.io/library/mirror:5000");
        assert_eq!(p.unwrap().registry, "mirror:5000");
        // Only a repository: a tag, or no registry named.
        assert!(matches!(registry("mirror:5000/site:v1"), (Some(_), None)));
        assert!(matches!(registry("app"), (Some(_), None)));
        // Only a prefix: a trailing '/'.
        assert!(matches!(registry("mirror:5000/site/"), (None, Some(_))));
        assert_eq!(
            Destination::parse("oci:/srv/x:v2").unwrap(),
            Destination::OciDir {
                dir: "/srv/x".into(),
                tag: Some("v2".into())
            }
        );
        assert_eq!(
            Destination::parse("oci:/srv/x")
                .unwrap()
                .location()
                .unwrap(),
            Location::parse("oci:/srv/x").unwrap()
        );
        let e = Destination::parse("mirror:5000/site/").unwrap().location();
        assert_eq!(e, Err(Location::parse("mirror:5000/site/").unwrap_err()));
        // No reading fits: the location's error.
        for bad in [
            "",
            "Mirror/App",
            "oci:",
            "oci:/a:",
            "oci:5000:",
            "oci:5000/a:",
            "a//b",
        ] {
            assert_eq!(
                Destination::parse(bad),
                Err(Location::parse(bad).unwrap_err()),
                "{bad:?}"
            );
            assert!(Prefix::parse(bad).is_err(), "{bad:?} reads as a prefix");
        }
    }

    #[test]
    fn a_location_displays_as_parsed() {
        for s in [
            "oci:/a/b:v1",
            "oci:rel/dir",
            "oci:/x:y/z",
            "oci::x",
            "r.io/a:v1",
        ] {
            assert_eq!(Location::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            Location::parse("app").unwrap().to_string(),
            "docker.io/library/app"
        );
        assert_eq!(Location::parse("oci:/a:v1").unwrap().manifest_key(), "v1");
        assert_eq!(Location::parse("oci:/a").unwrap().manifest_key(), "");
        assert_eq!(Location::parse("r.io/a").unwrap().manifest_key(), "latest");
    }

    #[test]
    fn locations() {
        let oci = |dir: &str, tag: Option<&str>| Location::OciDir {
            dir: dir.into(),
            tag: tag.map(Into::into),
        };
        for (given, dir, tag) in [
            ("oci:/a/b:v1", "/a/b", Some("v1")),
            ("oci:rel/dir", "rel/dir", None),
            ("oci:/x:y/z", "/x:y/z", None),
        ] {
            assert_eq!(Location::parse(given).unwrap(), oci(dir, tag), "{given}");
        }
        assert!(Location::parse("oci:").is_err());
        assert!(Location::parse("oci:/a:").is_err());
        assert!(matches!(
            Location::parse("r.io/a:v1").unwrap(),
            Location::Registry(_)
        ));
    }

    #[test]
    fn prefixes_name_a_registry_and_an_optional_path() {
        let image = Reference::parse("quay.io/org/app:v2").unwrap();
        let p = Prefix::parse("mirror:5000/site/").unwrap();
        assert_eq!(p.join(&image).to_string(), "mirror:5000/site/org/app:v2");
        let p = Prefix::parse("mirror.site").unwrap();
        assert_eq!(p.join(&image).to_string(), "mirror.site/org/app:v2");
        for (bad, why) in [
            ("app", "names no registry"),
            ("", "names no registry"),
            ("mirror:5000/site:v1", "no tag or digest"),
            ("mirror:5000/a@sha256:00", "no tag or digest"),
            ("mirror:99999/site", "port"),
            ("mirror:5000/Site", "mirror:5000/Site"),
            (&format!("r.io/{}", "a".repeat(260)), "no room"),
        ] {
            let e = Prefix::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap();
        (
            r.registry,
            r.repository,
            r.tag,
            r.digest.map(|d| d.to_string()),
        )
    }

    #[test]
    fn docker_hub_normalisation() {
        assert_eq!(
            parts("busybox"),
            ("docker.io".into(), "library/busybox".into(), None, None)
        );
        assert_eq!(
            parts("index.docker.io/busybox:1.36"),
            (
                "docker.io".into(),
                "library/busybox".into(),
                Some("1.36".into()),
                None
            )
        );
        assert_eq!(parts("user/app").1, "user/app");
        assert_eq!(
            Reference::parse("busybox").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            Reference::parse("busybox").unwrap().to_string(),
            "docker.io/library/busybox"
        );
    }

    #[test]
    fn registries_ports_tags_and_digests() {
        assert_eq!(
            parts("127.0.0.1:5000/a/b/c:v2"),
            (
                "127.0.0.1:5000".into(),
                "a/b/c".into(),
                Some("v2".into()),
                None
            )
        );
        assert_eq!(
            parts(&format!("localhost/app@{D}")),
            ("localhost".into(), "app".into(), None, Some(D.into()))
        );
        assert_eq!(
            parts(&format!("quay.io/org/app:v1@{D}")),
            (
                "quay.io".into(),
                "org/app".into(),
                Some("v1".into()),
                Some(D.into())
            )
        );
        assert_eq!(parts("[::1]:5000/app").0, "[::1]:5000");
        let r = Reference::parse(&format!("host:5000/app:v1@{D}")).unwrap();
        assert_eq!(r.manifest_key(), D);
        assert_eq!(
            Reference::parse("host:5000/app").unwrap().manifest_key(),
            "latest"
        );
        assert_eq!(r.to_string(), format!("host:5000/app:v1@{D}"));
    }

    #[test]
    fn loopback_detection() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:80",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "example.com",
            "128.0.0.1",
            "127.0.0.256",
            "localhost.example.com",
            "[::2]",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn malformed_references_name_the_bad_part() {
        let cases = [
            ("", "empty"),
            ("UPPER", "path component"),
            ("app:", "tag after ':' is empty"),
            ("app:-x", "tag \"-x\""),
            ("app@sha256:abc", "64 lowercase"),
            ("app@md5:abc", "sha256:<hex>"),
            ("host:99999/app", "port \"99999\""),
            ("host:/app", "port \"\""),
            ("bad_host.com/app", "not a valid host"),
            ("host.com//app", "path component \"\""),
            ("host.com/app/", "path component \"\""),
            ("a..b", "path component \"a..b\""),
            ("[::1/app", "unclosed"),
        ];
        for (input, expected) in cases {
            let err = Reference::parse(input).unwrap_err();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
        let long = format!("host.com/{}", "a".repeat(300));
        assert!(
            Reference::parse(&long)
                .unwrap_err()
                .contains("longer than 255")
        );
    }

    #[test]
    fn the_length_limit_applies_to_the_normalised_name() {
        // Found by the reference fuzz target: a 250-character Docker Hub name passed, but
        // its normalised form, which imo records in archives, is too long to parse again.
        let short = "a".repeat(250);
        let err = Reference::parse(&short).unwrap_err();
        assert!(err.contains("longer than 255 characters (268"), "{err}");
        let fits = "a".repeat(255 - "docker.io/library/".len());
        let r = Reference::parse(&fits).unwrap();
        assert_eq!(r.to_string().len(), 255);
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        // index.docker.io is folded before the name is measured.
        let hub = format!(
            "index.docker.io/u/{}",
            "b".repeat(255 - "docker.io/u/".len())
        );
        assert_eq!(Reference::parse(&hub).unwrap().to_string().len(), 255);
    }

    #[test]
    fn path_component_separators() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "a-b.c_d"] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in ["a___b", "a..b", "-a", "a-", "a._b", "A"] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }
}
