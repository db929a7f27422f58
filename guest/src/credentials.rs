//! Which credentials a reference is sent with: its role's own, else the most specific
//! auth-file key that names its repository, as containers/image chooses them. Pure, so the
//! host reads auth-file keys with the same rules.

use crate::reference::DOCKER_HUB;
use crate::registry::Credentials;

/// Names Docker Hub goes by in auth files: the reference name, the v1 index and the API host.
const DOCKER_HUB_ALIASES: [&str; 3] = [DOCKER_HUB, "index.docker.io", "registry-1.docker.io"];

/// An auth-file key read as what it names: a registry, or one namespace or repository of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// `host[:port]`, lower case, `docker.io` for every Docker Hub alias.
    pub host: String,
    /// A namespace or repository (`org`, `org/app`); `None` for the whole registry.
    pub path: Option<String>,
}

impl Key {
    /// Reads a key as docker and containers/image write them: `host[:port]`,
    /// `host[:port]/namespace[/repository]`, or a URL (`https://index.docker.io/v1/`), which
    /// `docker login` wrote for whole registries, so its path is not a namespace.
    pub fn parse(key: &str) -> Option<Key> {
        let (url, rest) = match key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
        {
            Some(rest) => (true, rest),
            None => (false, key),
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        let path = path.trim_end_matches('/');
        Some(Key {
            host: canonical_host(&host).to_owned(),
            path: (!url && !path.is_empty()).then(|| path.to_owned()),
        })
    }

    /// How many path components of `repository` on `registry` the key covers (0 for the
    /// whole registry), or `None` when it names something else. A namespace covers whole
    /// components only: `org` covers `org/app`, not `organisation/app`.
    pub fn covers(&self, registry: &str, repository: &str) -> Option<usize> {
        if self.host != canonical_host(&registry.to_ascii_lowercase()) {
            return None;
        }
        match &self.path {
            None => Some(0),
            Some(p) => {
                let inside = repository == p
                    || repository
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/'));
                inside.then(|| p.split('/').count())
            }
        }
    }
}

fn canonical_host(host: &str) -> &str {
    if DOCKER_HUB_ALIASES.contains(&host) {
        DOCKER_HUB
    } else {
        host
    }
}

/// The credentials for `repository` on `registry` (as [`Reference`](crate::reference::Reference)
/// has them: `docker.io`, `library/busybox`): the role's own when given, else those of the
/// most specific key in `keyed` that covers the repository (the repository itself, then each
/// enclosing namespace, then the registry); the first of equally specific keys wins. `None`:
/// anonymous. No key ever selects another registry.
pub fn select(
    registry: &str,
    repository: &str,
    role: Option<&Credentials>,
    keyed: &[(String, Credentials)],
) -> Option<Credentials> {
    if let Some(c) = role {
        return Some(c.clone());
    }
    let mut best: Option<(usize, &Credentials)> = None;
    for (key, c) in keyed {
        let Some(depth) = Key::parse(key).and_then(|k| k.covers(registry, repository)) else {
            continue;
        };
        if best.is_none_or(|(d, _)| depth > d) {
            best = Some((depth, c));
        }
    }
    best.map(|(_, c)| c.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(user: &str) -> Credentials {
        Credentials {
            username: user.into(),
            password: format!("{user}-pw"),
        }
    }

    fn keyed(keys: &[&str]) -> Vec<(String, Credentials)> {
        keys.iter().map(|k| ((*k).to_owned(), c(k))).collect()
    }

    /// Asserts which key's credentials (each key's user is its own name) `select` picks.
    #[track_caller]
    fn picks(registry: &str, repository: &str, keys: &[&str], key: Option<&str>) {
        let picked = select(registry, repository, None, &keyed(keys)).map(|c| c.username);
        assert_eq!(
            picked.as_deref(),
            key,
            "{registry}/{repository} with {keys:?}"
        );
    }

    #[test]
    fn keys_are_read_as_docker_and_containers_write_them() {
        let key = |host: &str, path: Option<&str>| {
            Some(Key {
                host: host.into(),
                path: path.map(Into::into),
            })
        };
        assert_eq!(Key::parse("quay.io"), key("quay.io", None));
        assert_eq!(Key::parse("Quay.IO/org/"), key("quay.io", Some("org")));
        assert_eq!(
            Key::parse("quay.io/org/app"),
            key("quay.io", Some("org/app"))
        );
        assert_eq!(Key::parse("https://quay.io/v1/"), key("quay.io", None));
        assert_eq!(
            Key::parse("http://r.example:5000"),
            key("r.example:5000", None)
        );
        assert_eq!(
            Key::parse("https://index.docker.io/v1/"),
            key("docker.io", None)
        );
        assert_eq!(Key::parse("registry-1.docker.io"), key("docker.io", None));
        assert_eq!(
            Key::parse("index.docker.io/library/busybox"),
            key("docker.io", Some("library/busybox"))
        );
        assert_eq!(Key::parse("[::1]:5000/org"), key("[::1]:5000", Some("org")));
        assert_eq!(Key::parse(""), None);
        assert_eq!(Key::parse("https:///v1/"), None);
    }

    #[test]
    fn the_role_wins() {
        let role = c("role");
        let got = select(
            "quay.io",
            "org/app",
            Some(&role),
            &keyed(&["quay.io/org/app"]),
        );
        assert_eq!(got.unwrap().username, "role");
    }

    #[test]
    fn the_most_specific_key_wins() {
        let keys = ["quay.io", "quay.io/org/app", "quay.io/org"];
        picks("quay.io", "org/app", &keys, Some("quay.io/org/app"));
        picks("quay.io", "org/other", &keys, Some("quay.io/org"));
        picks("quay.io", "org/app/sub", &keys, Some("quay.io/org/app"));
        picks("quay.io", "other/app", &keys, Some("quay.io"));
        // Order does not matter, only how much of the repository a key covers.
        let reversed = ["quay.io/org", "quay.io/org/app", "quay.io"];
        picks("quay.io", "org/app", &reversed, Some("quay.io/org/app"));
        // Of two keys that normalise alike, the first.
        let same = ["https://quay.io/v1/", "quay.io"];
        picks("quay.io", "a", &same, Some("https://quay.io/v1/"));
    }

    #[test]
    fn keys_never_cross_registries_or_namespaces() {
        picks("quay.io", "organisation/x", &["quay.io/org"], None);
        picks("quay.io", "org", &["quay.io/org/app"], None);
        picks("quay.io", "app", &["quay.io/app/"], Some("quay.io/app/"));
        picks("r2.example", "app", &["r1.example"], None);
        picks("quay.io", "org/app", &["quay.io.evil/org"], None);
        picks("quay.io", "a", &[], None);
    }

    #[test]
    fn ports_are_part_of_the_registry() {
        let keys = ["127.0.0.1:5000", "127.0.0.1:5001/org"];
        picks("127.0.0.1:5000", "app", &keys, Some("127.0.0.1:5000"));
        picks(
            "127.0.0.1:5001",
            "org/app",
            &keys,
            Some("127.0.0.1:5001/org"),
        );
        picks("127.0.0.1:5001", "app", &keys, None);
        picks("127.0.0.1", "app", &keys, None);
        picks(
            "localhost:5000",
            "app",
            &["LOCALHOST:5000"],
            Some("LOCALHOST:5000"),
        );
    }

    #[test]
    fn docker_hub_goes_by_several_names() {
        // `busybox` is `docker.io/library/busybox`.
        for hub in [
            "docker.io",
            "index.docker.io",
            "https://index.docker.io/v1/",
            "registry-1.docker.io",
        ] {
            picks("docker.io", "library/busybox", &[hub], Some(hub));
        }
        let keys = ["docker.io", "docker.io/library", "index.docker.io/org/app"];
        picks(
            "docker.io",
            "library/busybox",
            &keys,
            Some("docker.io/library"),
        );
        picks(
            "docker.io",
            "org/app",
            &keys,
            Some("index.docker.io/org/app"),
        );
        picks("docker.io", "org/other", &keys, Some("docker.io"));
        // `docker.io/busybox` is not how the official image is named.
        picks("docker.io", "library/busybox", &["docker.io/busybox"], None);
        picks("quay.io", "library/busybox", &["docker.io"], None);
    }
}
