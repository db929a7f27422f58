//! What the component may reach, decided from the command before anything runs.
//!
//! The policy is plain data: the registries a command names, which of them may be spoken
//! to over plain HTTP, and nothing else. Hosts that an allowed registry itself points to
//! (its token realm, its redirects) are added as its responses pass through the host, with
//! less trust than the registries named:
//!
//! - plain HTTP goes only to authorities the user named (a loopback registry or
//!   `--allow-host`, or `--insecure`), and to a loopback host that a loopback registry
//!   reached over plain HTTP points to; never to a host an HTTPS response points to;
//! - a realm or redirect target on a loopback, link-local or private address (`localhost`,
//!   127/8, ::1, 169.254/16, fe80::/10, 10/8, 172.16/12, 192.168/16, fc00::/7) is refused
//!   unless the named registry it comes from is on such an address itself, so a registry
//!   cannot aim the user's credentials or requests at services on the user's own network.
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

use crate::authority::Authority;
use imo_guest::auth::parse_challenges;
use imo_guest::reference::{Reference, is_loopback_host};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

/// What a host learned from a response may be reached with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Learned {
    /// Plain HTTP: a loopback host that a loopback registry, itself reached over plain HTTP,
    /// points to. Nothing then leaves the machine that was not already in clear.
    plain_http: bool,
    /// The named registry it comes from is on a loopback, link-local or private address, so
    /// the hosts it points to may be too.
    private: bool,
}

impl Learned {
    fn merge(self, other: Learned) -> Learned {
        Learned {
            plain_http: self.plain_http || other.plain_http,
            private: self.private || other.private,
        }
    }
}

const PLAIN_HTTP_NAMED: &str =
    "plain HTTP is allowed only for loopback registries and those named with --insecure";
const PLAIN_HTTP_LEARNED: &str = "plain HTTP goes only to registries named on the command \
     line (loopback, or --insecure), not to hosts a registry points to";
const NOT_NAMED: &str = "the command names no registry there (use --allow-host to permit it)";

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
    /// The registries the command names, and `--allow-host`.
    named: BTreeSet<Authority>,
    /// Hosts the allowed ones point to (token realms, redirect targets).
    learned: Mutex<BTreeMap<Authority, Learned>>,
    /// Why a host a response pointed to was not learned, or not for plain HTTP, so the
    /// refusal of the request that follows names the URL and the rule.
    refused: Mutex<BTreeMap<Authority, String>>,
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
        let mut named = BTreeSet::new();
        for r in references {
            if r == "scratch" || r.starts_with("oci:") {
                continue;
            }
            let r = Reference::parse(r)?;
            named.insert(
                Authority::parse(r.api_host())
                    .ok_or_else(|| format!("bad registry {}", r.registry))?,
            );
        }
        for h in extra_hosts {
            named.insert(
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
            named,
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
    /// policy.learn_from_response("https", "r.example", &headers);
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
        let plain = scheme == "http";
        let insecure = || self.insecure.iter().any(|i| i.covers(&a, default_port));
        if self.named.iter().any(|n| n.covers(&a, default_port)) {
            if plain && !is_loopback_host(authority) && !insecure() {
                return deny(PLAIN_HTTP_NAMED);
            }
            return Ok(());
        }
        let refused = || {
            let refused = self.refused.lock().expect("policy lock");
            let reason = refused.iter().find(|(r, _)| r.covers(&a, default_port));
            reason.map(|(_, why)| why.clone())
        };
        let learned = self.learned.lock().expect("policy lock");
        match learned.iter().find(|(l, _)| l.covers(&a, default_port)) {
            Some((_, l)) if plain && !l.plain_http && !insecure() => {
                deny(&refused().unwrap_or_else(|| PLAIN_HTTP_LEARNED.into()))
            }
            Some(_) => Ok(()),
            None => deny(&refused().unwrap_or_else(|| NOT_NAMED.into())),
        }
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

    /// Learns the hosts that an allowed authority (`scheme` and `authority` of the request
    /// answered) points to: the token realm in its `WWW-Authenticate` challenges and the
    /// target of its redirects. Call it only with responses from authorities the policy
    /// allowed. What it learns is reachable over HTTPS; over plain HTTP only when the
    /// response came over plain HTTP from a loopback host and the target is loopback too. A
    /// target on a loopback, link-local or private address is not learned unless the named
    /// registry the response comes from is on such an address; the request that follows is
    /// refused with that reason.
    ///
    /// ```rust
    /// let policy = imo::policy::NetworkPolicy::for_references(["r.example/app"], &[], &[])?;
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert(
    ///     http::header::WWW_AUTHENTICATE,
    ///     r#"Bearer realm="https://auth.example/token",service="r.example""#.parse().unwrap(),
    /// );
    /// headers.insert(http::header::LOCATION, "http://127.0.0.1:9/x".parse().unwrap());
    /// policy.learn_from_response("https", "r.example", &headers);
    /// assert!(policy.check("https", "auth.example").is_ok());
    /// assert!(policy.check("http", "auth.example").is_err(), "learned over HTTPS");
    /// let denied = policy.check("http", "127.0.0.1:9").unwrap_err();
    /// assert!(denied.reason.contains("http://127.0.0.1:9/x"), "{denied}");
    /// # Ok::<(), String>(())
    /// ```
    pub fn learn_from_response(&self, scheme: &str, authority: &str, headers: &http::HeaderMap) {
        if !self.learn {
            return;
        }
        let mut targets = Vec::new();
        for v in headers.get_all(http::header::WWW_AUTHENTICATE) {
            let Ok(v) = v.to_str() else { continue };
            for c in parse_challenges(v) {
                if let Some(realm) = c.param("realm") {
                    targets.push(("the token realm", realm.to_owned()));
                }
            }
        }
        if let Some(loc) = headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
        {
            targets.push(("the redirect to", loc.to_owned()));
        }
        if targets.is_empty() {
            return;
        }
        let Some(teacher) = self.teacher(scheme, authority) else {
            return;
        };
        let origin = format!("{scheme}://{authority}");
        for (what, url) in targets {
            let Some((target_scheme, target)) = url_authority(&url, scheme) else {
                continue;
            };
            let Some(a) = Authority::parse(&target) else {
                continue;
            };
            let shown = match url.strip_prefix("//") {
                Some(rest) => shown_url(&format!("{target_scheme}://{rest}")),
                None => shown_url(&url),
            };
            let class = address_class(&a.host);
            if let Some(class) = class
                && !teacher.private
            {
                let why = format!(
                    "{what} {shown} that {origin} answered with is on a {class} address, and a \
                     registry that is not on such an address may not point there (name it \
                     with --allow-host to permit it)"
                );
                self.refused.lock().expect("policy lock").insert(a, why);
                continue;
            }
            let plain_http =
                target_scheme == "http" && teacher.plain_http && is_loopback_host(&target);
            if target_scheme == "http" && !plain_http {
                let why =
                    format!("{what} {shown} that {origin} answered with: {PLAIN_HTTP_LEARNED}");
                self.refused
                    .lock()
                    .expect("policy lock")
                    .insert(a.clone(), why);
            }
            let learned = Learned {
                plain_http,
                private: teacher.private,
            };
            let mut all = self.learned.lock().expect("policy lock");
            let entry = all.entry(a).or_default();
            *entry = entry.merge(learned);
        }
    }

    /// What the hosts that `scheme://authority` points to inherit from it; `None` if the
    /// policy does not allow it.
    fn teacher(&self, scheme: &str, authority: &str) -> Option<Learned> {
        let a = Authority::parse(authority)?;
        let default_port = if scheme == "http" { 80 } else { 443 };
        let plain = scheme == "http";
        if let Some(n) = self.named.iter().find(|n| n.covers(&a, default_port)) {
            let class = address_class(&n.host);
            return Some(Learned {
                plain_http: plain && is_loopback_host(authority),
                private: class.is_some(),
            });
        }
        let learned = self.learned.lock().expect("policy lock");
        let (_, l) = learned.iter().find(|(l, _)| l.covers(&a, default_port))?;
        Some(Learned {
            plain_http: plain && l.plain_http,
            private: l.private,
        })
    }
}

/// `loopback`, `link-local` or `private` for a host on such an address (`localhost`,
/// 127/8, 0/8, ::1, ::, 169.254/16, fe80::/10, 10/8, 172.16/12, 192.168/16, fc00::/7;
/// IPv4 also as inet_aton reads it, `2130706433` or `0x7f.1`); `None` for other addresses
/// and names.
fn address_class(host: &str) -> Option<&'static str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return Some("loopback");
    }
    let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => IpAddr::V6(v6.parse().ok()?),
        None => IpAddr::V4(loose_ipv4(&host)?),
    };
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None if v6.is_loopback() || v6.is_unspecified() => return Some("loopback"),
            None if v6.segments()[0] & 0xffc0 == 0xfe80 => return Some("link-local"),
            None if v6.segments()[0] & 0xfe00 == 0xfc00 => return Some("private"),
            None => return None,
        },
    };
    if v4.is_loopback() || v4.octets()[0] == 0 {
        Some("loopback")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if v4.is_private() {
        Some("private")
    } else {
        None
    }
}

/// An IPv4 address in any form the system resolver accepts (inet_aton: one to four parts,
/// each decimal, octal with a leading `0`, or hex with `0x`), so `2130706433` is 127.0.0.1.
fn loose_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<u32> = host
        .split('.')
        .map(|p| {
            if let Some(hex) = p.strip_prefix("0x") {
                u32::from_str_radix(hex, 16).ok()
            } else if p.len() > 1 && p.starts_with('0') {
                u32::from_str_radix(&p[1..], 8).ok()
            } else {
                p.parse().ok()
            }
        })
        .collect::<Option<_>>()?;
    let (last, head) = parts.split_last()?;
    if head.len() > 3 || head.iter().any(|p| *p > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if room < 32 && *last >= 1 << room {
        return None;
    }
    let high = head
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, p)| acc | p << (24 - 8 * i as u32));
    Some(Ipv4Addr::from(high | last))
}

/// A URL as a message may show it: no user name or password, no query (which may hold a
/// signature).
fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest[..end]
        .rsplit_once('@')
        .map_or(&rest[..end], |(_, a)| a);
    let path = rest[end..].split(['?', '#']).next().unwrap_or_default();
    format!("{scheme}://{authority}{path}")
}

/// The scheme and authority of an absolute http(s) URL, or of a network-path reference
/// (`//host/p`, which keeps the scheme of the answer that named it, `base`).
fn url_authority<'a>(url: &str, base: &'a str) -> Option<(&'a str, String)> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        ("http", rest)
    } else {
        (base, url.strip_prefix("//")?)
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Credentials in a URL are never part of the authority we match on.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    (!authority.is_empty()).then(|| (scheme, authority.to_owned()))
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
        p.learn_from_response("https", "r.example", &h);
        assert!(p.check("https", "auth.example").is_ok());
        assert!(p.check("https", "cdn.example:8443").is_ok());
        assert!(p.check("https", "cdn.example").is_err());
        // A network-path reference names a host too, with the scheme of the answer.
        h.insert(http::header::LOCATION, "//cdn2.example/b".parse().unwrap());
        p.learn_from_response("https", "r.example", &h);
        assert!(p.check("https", "cdn2.example").is_ok());
        assert!(p.check("http", "cdn2.example").is_err());
    }

    #[test]
    fn learning_can_be_switched_off() {
        let p = policy(&["r.example/b"], &[]).without_learning();
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::LOCATION,
            "https://cdn.example/blob".parse().unwrap(),
        );
        p.learn_from_response("https", "r.example", &h);
        assert!(p.check("https", "cdn.example").is_err());
    }

    /// A response of `scheme://authority` pointing, as realm and as redirect, at `url`.
    fn points_to(p: &NetworkPolicy, scheme: &str, authority: &str, realm: &str, location: &str) {
        let mut h = http::HeaderMap::new();
        let challenge = format!(r#"Bearer realm="{realm}",service="s""#);
        h.insert(http::header::WWW_AUTHENTICATE, challenge.parse().unwrap());
        h.insert(http::header::LOCATION, location.parse().unwrap());
        p.learn_from_response(scheme, authority, &h);
    }

    #[test]
    fn an_https_registry_cannot_send_us_to_plain_http() {
        // A TLS registry on loopback pointing at a loopback port over plain HTTP.
        let p = policy(&["127.0.0.1:5000/app"], &[]);
        points_to(
            &p,
            "https",
            "127.0.0.1:5000",
            "http://127.0.0.1:6000/x",
            "http://127.0.0.1:6001/any/path?sig=s3cret",
        );
        let d = p.check("http", "127.0.0.1:6000").unwrap_err();
        assert_eq!(d.url, "http://127.0.0.1:6000");
        assert!(
            d.reason
                .contains("the token realm http://127.0.0.1:6000/x that https://127.0.0.1:5000"),
            "{d}"
        );
        assert!(d.reason.contains("plain HTTP"), "{d}");
        let d = p.check("http", "127.0.0.1:6001").unwrap_err();
        assert!(
            d.reason
                .contains("the redirect to http://127.0.0.1:6001/any/path that"),
            "{d}"
        );
        assert!(!d.reason.contains("s3cret"), "{d}");
        // Over HTTPS the same hosts are fine: the registry is on loopback itself.
        assert!(p.check("https", "127.0.0.1:6000").is_ok());
        // The user may still permit it by name.
        let p = policy(&["127.0.0.1:5000/app"], &["127.0.0.1:6000"]);
        points_to(
            &p,
            "https",
            "127.0.0.1:5000",
            "http://127.0.0.1:6000/x",
            "/v2/",
        );
        assert!(p.check("http", "127.0.0.1:6000").is_ok());
        let named =
            NetworkPolicy::for_references(["127.0.0.1:5000/app"], &[], &["127.0.0.1:6000".into()])
                .unwrap();
        points_to(
            &named,
            "https",
            "127.0.0.1:5000",
            "http://127.0.0.1:6000/x",
            "/v2/",
        );
        assert!(named.check("http", "127.0.0.1:6000").is_ok());
    }

    #[test]
    fn a_loopback_registry_over_plain_http_keeps_its_loopback_token_service() {
        let p = policy(&["127.0.0.1:5000/app"], &[]);
        points_to(
            &p,
            "http",
            "127.0.0.1:5000",
            "http://127.0.0.1:6000/token",
            "http://localhost:6001/blob",
        );
        assert!(p.check("http", "127.0.0.1:6000").is_ok());
        assert!(p.check("http", "localhost:6001").is_ok());
        // And what that token service points to, in turn.
        points_to(
            &p,
            "http",
            "127.0.0.1:6000",
            "http://127.0.0.1:6002/t",
            "http://127.0.0.1:6003/b",
        );
        assert!(p.check("http", "127.0.0.1:6003").is_ok());
        // Not a host elsewhere over plain HTTP, even from there.
        points_to(&p, "http", "127.0.0.1:5000", "http://auth.example/t", "/x");
        let d = p.check("http", "auth.example").unwrap_err();
        assert!(d.reason.contains("plain HTTP"), "{d}");
        assert!(p.check("https", "auth.example").is_ok());
    }

    #[test]
    fn a_public_registry_cannot_point_into_the_local_network() {
        let p = policy(&["r.example/app"], &[]);
        let inside = [
            "127.0.0.1:9",
            "localhost",
            "[::1]:9",
            "[::ffff:127.0.0.1]",
            "169.254.169.254",
            "[fe80::1]",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "[fd00::1]",
            "0.0.0.0:9",
            "2130706433",
            "0x7f.1",
            "017700000001",
        ];
        for host in inside {
            points_to(
                &p,
                "https",
                "r.example",
                &format!("https://{host}/token"),
                "/v2/",
            );
            let d = p.check("https", host).unwrap_err();
            assert_eq!(d.url, format!("https://{host}"));
            assert!(
                d.reason.contains(&format!(
                    "the token realm https://{host}/token that https://r.example"
                )) && d.reason.contains("address"),
                "{host}: {d}"
            );
        }
        points_to(
            &p,
            "https",
            "r.example",
            "https://auth.example/t",
            "https://192.168.0.9/blob",
        );
        let d = p.check("https", "192.168.0.9").unwrap_err();
        assert!(
            d.reason
                .contains("the redirect to https://192.168.0.9/blob"),
            "{d}"
        );
        assert!(d.reason.contains("private address"), "{d}");
        // Public addresses and names are learned as before.
        for host in [
            "auth.example",
            "172.32.0.1",
            "8.8.8.8",
            "[2001:db8::1]",
            "11.0.0.1",
        ] {
            points_to(
                &p,
                "https",
                "r.example",
                &format!("https://{host}/t"),
                "/v2/",
            );
            assert!(p.check("https", host).is_ok(), "{host}");
        }
        // Nor through a host it pointed to.
        points_to(
            &p,
            "https",
            "auth.example",
            "https://auth.example/t",
            "https://10.0.0.1/x",
        );
        assert!(p.check("https", "10.0.0.1").is_err());
    }

    #[test]
    fn a_registry_in_the_local_network_may_point_into_it() {
        let p = policy(&["10.0.0.5:5000/app", "127.0.0.1:5000/b"], &[]);
        points_to(
            &p,
            "https",
            "10.0.0.5:5000",
            "https://10.0.0.6/token",
            "https://[fd00::2]/b",
        );
        assert!(p.check("https", "10.0.0.6").is_ok());
        assert!(p.check("https", "[fd00::2]").is_ok());
        points_to(
            &p,
            "https",
            "127.0.0.1:5000",
            "https://192.168.1.1/token",
            "/v2/",
        );
        assert!(p.check("https", "192.168.1.1").is_ok());
        // A named host's own rules are unchanged by what it points to.
        assert!(p.check("http", "10.0.0.5:5000").is_err());
    }

    #[test]
    fn addresses_are_classified() {
        assert_eq!(address_class("127.1"), Some("loopback"));
        assert_eq!(address_class("app.localhost"), Some("loopback"));
        assert_eq!(address_class("LOCALHOST."), Some("loopback"));
        assert_eq!(address_class("[::]"), Some("loopback"));
        assert_eq!(address_class("169.254.1.1"), Some("link-local"));
        assert_eq!(address_class("[febf::1]"), Some("link-local"));
        assert_eq!(address_class("[fec0::1]"), None);
        assert_eq!(address_class("[fc00::1]"), Some("private"));
        assert_eq!(address_class("172.15.0.1"), None);
        assert_eq!(address_class("example.com"), None);
        assert_eq!(address_class("1.2.3.4.5"), None);
        assert_eq!(address_class("256.0.0.1"), None);
        assert_eq!(
            loose_ipv4("10.0x10.0377"),
            Some(Ipv4Addr::new(10, 16, 0, 255))
        );
        assert_eq!(loose_ipv4("1.16777216"), None);
        assert_eq!(loose_ipv4("4294967295"), Some(Ipv4Addr::BROADCAST));
        assert_eq!(loose_ipv4("08"), None);
        assert_eq!(shown_url("https://u:p@h:1/p?sig=x#f"), "https://h:1/p");
    }

    #[test]
    fn bad_flags_are_reported() {
        assert!(NetworkPolicy::for_references(["r/a"], &["h:notaport".into()], &[]).is_err());
        assert!(NetworkPolicy::for_references(["UPPER"], &[], &[]).is_err());
    }
}
