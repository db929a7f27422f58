//! `host[:port]`, as registries are named and URLs carry them: the host's one parser.

/// A parsed `host[:port]`: the host lowercased (an IPv6 address keeps its brackets), the
/// port if one is given.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Authority {
    pub host: String,
    pub port: Option<u16>,
}

impl Authority {
    /// `None` for an empty host, an unclosed bracket, or a port that is not a number.
    pub fn parse(s: &str) -> Option<Authority> {
        let s = s.to_ascii_lowercase();
        let (host, port) = if s.starts_with('[') {
            let end = s.find(']')?;
            let port = match &s[end + 1..] {
                "" => None,
                rest => Some(rest.strip_prefix(':')?),
            };
            (&s[..=end], port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s.as_str(), None),
            }
        };
        let port = match port {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        };
        (!host.is_empty()).then(|| Authority {
            host: host.to_owned(),
            port,
        })
    }

    /// Whether a request to `other` reaches this authority; a missing port is the scheme's
    /// default.
    pub fn covers(&self, other: &Authority, default_port: u16) -> bool {
        self.host == other.host
            && self.port.unwrap_or(default_port) == other.port.unwrap_or(default_port)
    }

    /// The host as a name or an address, without an IPv6 address's brackets.
    pub fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ports_and_brackets() {
        let a = |s| Authority::parse(s).map(|a| (a.bare_host().to_owned(), a.port));
        assert_eq!(a("Quay.IO"), Some(("quay.io".into(), None)));
        assert_eq!(a("127.0.0.1:5000"), Some(("127.0.0.1".into(), Some(5000))));
        assert_eq!(a("[::1]:5000"), Some(("::1".into(), Some(5000))));
        assert_eq!(a("[::1]"), Some(("::1".into(), None)));
        assert_eq!(Authority::parse("[::1]").unwrap().host, "[::1]");
        for bad in [
            "",
            ":5000",
            "r.example:http",
            "[::1",
            "[::1]5000",
            "r.example:99999",
        ] {
            assert_eq!(Authority::parse(bad), None, "{bad}");
        }
    }
}
