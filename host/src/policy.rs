//! What the component may reach, decided from the command before anything runs.
//!
//! The policy is plain data: the registries a command names, which of them may be spoken
//! to over plain HTTP, and nothing else. Hosts that an allowed registry itself points to
//! (its token realm, its redirects) are added as its responses pass through the host.
//!
//! Every [`Imo`](crate::Imo) operation builds one from the references it names; other hosts
//! of the component can use it the same way, in their outgoing-request hook.
//!
//! ```rust
//! use imo::policy::NetworkPolicy;
//!
//! let policy = NetworkPolicy::for_references(["quay.io/org/app:v2", "scratch"], &[], &[])?;
//! assert!(policy.check("https", "quay.io").is_ok());
//! assert!(policy.check("https", "example.com").is_err());
//! # Ok::<(), String>(())
//! ```

use imo_guest::auth::parse_challenges;
use imo_guest::reference::{Reference, is_loopback_host};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// An authority the component may reach: a host, and a port unless any default port will do.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn parse(s: &str) -> Option<Authority> {
        let s = s.to_ascii_lowercase();
        let (host, port) = if s.starts_with('[') {
            let end = s.find(']')?;
            let port = s[end + 1..].strip_prefix(':');
            (s[..=end].to_owned(), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (s.clone(), None),
            }
        };
        let port = match port {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        };
        (!host.is_empty()).then_some(Authority { host, port })
    }
}

/// Why a request was refused: what [`NetworkPolicy::check`] returns and
/// [`NetworkPolicy::record`] keeps. `Display` gives `refused URL: REASON`.
///
/// ```rust
/// let policy = imo::policy::NetworkPolicy::for_references(["quay.io/org/app"], &[], &[])?;
/// let denied = policy.check("http", "quay.io").unwrap_err();
/// assert_eq!(denied.url, "http://quay.io");
/// assert!(denied.reason.contains("plain HTTP"));
/// assert!(denied.to_string().starts_with("refused http://quay.io: "));
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The scheme and authority refused, `scheme://host[:port]`.
    pub url: String,
    /// Why, and what option would allow it.
    pub reason: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused {}: {}", self.url, self.reason)
    }
}

/// The network policy for one command: which authorities the component may reach, and
/// which of them over plain HTTP. Shared (`Arc`) between the request hook and the command,
/// and safe to use from several threads.
///
/// ```rust
/// use imo::policy::NetworkPolicy;
///
/// let policy = NetworkPolicy::for_references(
///     ["mirror.site:5000/org/app:v2"],
///     &["mirror.site:5000".to_owned()],
///     &[],
/// )?;
/// assert!(policy.check("http", "mirror.site:5000").is_ok());
/// if let Err(denied) = policy.check("https", "mirror.site:5001") {
///     policy.record(denied);
/// }
/// assert_eq!(policy.denied.lock().unwrap().len(), 1);
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Default)]
pub struct NetworkPolicy {
    /// Named registries and the hosts they point to.
    allowed: Mutex<BTreeSet<Authority>>,
    /// Registries the user named insecure: plain HTTP allowed.
    insecure: BTreeSet<Authority>,
    /// Requests refused so far, so the command can say which and why.
    pub denied: Mutex<Vec<Denied>>,
    /// Whether hosts that allowed registries point to become allowed.
    learn: bool,
}

impl NetworkPolicy {
    /// Allows the registries of `references` (`scratch` and `oci:` layouts name none), the
    /// `extra_hosts` (`host[:port]`, as [`Builder::allow_host`](crate::Builder::allow_host)),
    /// and nothing else; plain HTTP only to loopback and to the `insecure` registries
    /// (`host[:port]`). A reference's registry is its API host: `registry-1.docker.io` for
    /// Docker Hub. Errors name the malformed reference or host.
    ///
    /// ```rust
    /// use imo::policy::NetworkPolicy;
    ///
    /// let policy = NetworkPolicy::for_references(["busybox"], &[], &["cdn.example".into()])?;
    /// assert!(policy.check("https", "registry-1.docker.io").is_ok());
    /// assert!(policy.check("https", "cdn.example:443").is_ok());
    ///
    /// let err = NetworkPolicy::for_references(["r.example/app"], &["r.example:web".into()], &[]);
    /// assert!(err.unwrap_err().contains("--insecure"));
    /// # Ok::<(), String>(())
    /// ```
    pub fn for_references<'a>(
        references: impl IntoIterator<Item = &'a str>,
        insecure: &[String],
        extra_hosts: &[String],
    ) -> Result<Arc<Self>, String> {
        let mut allowed = BTreeSet::new();
        for r in references {
            if r == "scratch" || r.starts_with("oci:") {
                continue;
            }
            let r = Reference::parse(r)?;
            allowed.insert(
                Authority::parse(r.api_host())
                    .ok_or_else(|| format!("bad registry {}", r.registry))?,
            );
        }
        for h in extra_hosts {
            allowed.insert(
                Authority::parse(h)
                    .ok_or_else(|| format!("--allow-host {h:?} is not host[:port]"))?,
            );
        }
        let insecure = insecure
            .iter()
            .map(|h| {
                Authority::parse(h).ok_or_else(|| format!("--insecure {h:?} is not host[:port]"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Arc::new(Self {
            allowed: Mutex::new(allowed),
            insecure,
            learn: true,
            ..Self::default()
        }))
    }

    /// Stops learning hosts from responses: only the named registries stay reachable. Call
    /// it before the policy is shared (while this is the only `Arc`); otherwise it has no
    /// effect.
    ///
    /// ```rust
    /// let policy = imo::policy::NetworkPolicy::for_references(["r.example/app"], &[], &[])?
    ///     .without_learning();
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert(http::header::LOCATION, "https://cdn.example/blob".parse().unwrap());
    /// policy.learn_from_response(&headers);
    /// assert!(policy.check("https", "cdn.example").is_err());
    /// # Ok::<(), String>(())
    /// ```
    pub fn without_learning(mut self: Arc<Self>) -> Arc<Self> {
        if let Some(p) = Arc::get_mut(&mut self) {
            p.learn = false;
        }
        self
    }

    /// Decides one request. `scheme` is `http` or `https`; `authority` is `host[:port]`,
    /// matched case-insensitively, a missing port matching the scheme's default.
    ///
    /// ```rust
    /// let policy = imo::policy::NetworkPolicy::for_references(["127.0.0.1:5000/app"], &[], &[])?;
    /// assert!(policy.check("http", "127.0.0.1:5000").is_ok(), "loopback may be plain HTTP");
    /// assert!(policy.check("https", "127.0.0.1:5001").is_err());
    /// assert!(policy.check("ftp", "127.0.0.1:5000").is_err());
    /// # Ok::<(), String>(())
    /// ```
    pub fn check(&self, scheme: &str, authority: &str) -> Result<(), Denied> {
        let url = format!("{scheme}://{authority}");
        let deny = |reason: &str| {
            Err(Denied {
                url: url.clone(),
                reason: reason.into(),
            })
        };
        let Some(a) = Authority::parse(authority) else {
            return deny("the authority is malformed");
        };
        let default_port = match scheme {
            "https" => 443,
            "http" => 80,
            _ => return deny("only http and https are allowed"),
        };
        let matches = |allowed: &Authority| {
            allowed.host == a.host
                && allowed.port.or(Some(default_port)) == a.port.or(Some(default_port))
        };
        if !self
            .allowed
            .lock()
            .expect("policy lock")
            .iter()
            .any(matches)
        {
            return deny("the command names no registry there (use --allow-host to permit it)");
        }
        if scheme == "http" && !is_loopback_host(authority) && !self.insecure.iter().any(matches) {
            return deny(
                "plain HTTP is allowed only for loopback registries and those named with --insecure",
            );
        }
        Ok(())
    }

    /// Records a refusal for the command's error message; [`NetworkPolicy::denied`] lists
    /// them in order.
    ///
    /// ```rust
    /// let policy = imo::policy::NetworkPolicy::for_references(["quay.io/org/app"], &[], &[])?;
    /// let denied = policy.check("https", "evil.example").unwrap_err();
    /// policy.record(denied.clone());
    /// assert_eq!(policy.denied.lock().unwrap().last(), Some(&denied));
    /// # Ok::<(), String>(())
    /// ```
    pub fn record(&self, denied: Denied) {
        self.denied.lock().expect("policy lock").push(denied);
    }

    /// Learns the hosts an allowed registry points to: the token realm in its
    /// `WWW-Authenticate` challenges and the target of its redirects. Call it only with
    /// responses from authorities the policy allowed.
    ///
    /// ```rust
    /// let policy = imo::policy::NetworkPolicy::for_references(["r.example/app"], &[], &[])?;
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert(
    ///     http::header::WWW_AUTHENTICATE,
    ///     r#"Bearer realm="https://auth.example/token",service="r.example""#.parse().unwrap(),
    /// );
    /// policy.learn_from_response(&headers);
    /// assert!(policy.check("https", "auth.example").is_ok());
    /// # Ok::<(), String>(())
    /// ```
    pub fn learn_from_response(&self, headers: &http::HeaderMap) {
        if !self.learn {
            return;
        }
        let mut learned = Vec::new();
        for v in headers.get_all(http::header::WWW_AUTHENTICATE) {
            let Ok(v) = v.to_str() else { continue };
            for c in parse_challenges(v) {
                if let Some(realm) = c.param("realm") {
                    learned.extend(url_authority(realm));
                }
            }
        }
        if let Some(loc) = headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
        {
            learned.extend(url_authority(loc));
        }
        if learned.is_empty() {
            return;
        }
        let mut allowed = self.allowed.lock().expect("policy lock");
        allowed.extend(learned.iter().filter_map(|a| Authority::parse(a)));
    }
}

/// The authority of an absolute http(s) URL, or of a network-path reference (`//host/p`).
fn url_authority(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .or_else(|| url.strip_prefix("//"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Credentials in a URL are never part of the authority we match on.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    (!authority.is_empty()).then(|| authority.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(refs: &[&str], insecure: &[&str]) -> Arc<NetworkPolicy> {
        let insecure: Vec<String> = insecure.iter().map(|s| s.to_string()).collect();
        NetworkPolicy::for_references(refs.iter().copied(), &insecure, &[]).unwrap()
    }

    #[test]
    fn only_named_registries_are_reachable() {
        let p = policy(&["127.0.0.1:5000/a:v1", "quay.io/org/b", "scratch"], &[]);
        assert!(p.check("http", "127.0.0.1:5000").is_ok());
        assert!(p.check("https", "127.0.0.1:5000").is_ok());
        assert!(p.check("https", "quay.io").is_ok());
        assert!(p.check("https", "quay.io:443").is_ok());
        assert!(p.check("https", "QUAY.IO").is_ok());
        let d = p.check("https", "127.0.0.1:5001").unwrap_err();
        assert!(d.reason.contains("names no registry"), "{d}");
        assert!(p.check("https", "quay.io:8443").is_err());
        assert!(p.check("https", "example.com").is_err());
        assert!(p.check("ftp", "quay.io").is_err());
    }

    #[test]
    fn docker_hub_means_its_api_host() {
        let p = policy(&["busybox"], &[]);
        assert!(p.check("https", "registry-1.docker.io").is_ok());
        assert!(p.check("https", "docker.io").is_err());
    }

    #[test]
    fn plain_http_only_for_loopback_and_insecure() {
        let p = policy(
            &[
                "quay.io/a",
                "r.example:5000/b",
                "localhost:5000/c",
                "[::1]:5000/d",
            ],
            &["r.example:5000"],
        );
        assert!(
            p.check("http", "quay.io")
                .unwrap_err()
                .reason
                .contains("plain HTTP")
        );
        assert!(p.check("http", "r.example:5000").is_ok());
        assert!(p.check("http", "localhost:5000").is_ok());
        assert!(p.check("http", "[::1]:5000").is_ok());
    }

    #[test]
    fn realms_and_redirects_of_allowed_registries_are_learned() {
        let p = policy(&["r.example/b"], &[]);
        assert!(p.check("https", "auth.example").is_err());
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::WWW_AUTHENTICATE,
            r#"Bearer realm="https://auth.example/token",service="r""#
                .parse()
                .unwrap(),
        );
        h.insert(
            http::header::LOCATION,
            "https://user:pw@cdn.example:8443/blob?sig=1"
                .parse()
                .unwrap(),
        );
        p.learn_from_response(&h);
        assert!(p.check("https", "auth.example").is_ok());
        assert!(p.check("https", "cdn.example:8443").is_ok());
        assert!(p.check("https", "cdn.example").is_err());
        // A network-path reference names a host too.
        h.insert(http::header::LOCATION, "//cdn2.example/b".parse().unwrap());
        p.learn_from_response(&h);
        assert!(p.check("https", "cdn2.example").is_ok());
    }

    #[test]
    fn learning_can_be_switched_off() {
        let p = policy(&["r.example/b"], &[]).without_learning();
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::LOCATION,
            "https://cdn.example/blob".parse().unwrap(),
        );
        p.learn_from_response(&h);
        assert!(p.check("https", "cdn.example").is_err());
    }

    #[test]
    fn bad_flags_are_reported() {
        assert!(NetworkPolicy::for_references(["r/a"], &["h:notaport".into()], &[]).is_err());
        assert!(NetworkPolicy::for_references(["UPPER"], &[], &[]).is_err());
    }
}
