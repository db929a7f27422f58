//! Parsing `WWW-Authenticate` challenges and building `Authorization` values. Pure.

use std::collections::BTreeMap;

/// One challenge: a scheme (lower-cased) and its parameters (keys lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

/// Parses every challenge in a `WWW-Authenticate` value (RFC 9110 §11.6.1): schemes
/// followed by comma-separated `key=value` or `key="quoted value"` parameters, several
/// challenges in one header separated by commas.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip(|b| b == b',' || b.is_ascii_whitespace());
        let Some(scheme) = p.token() else { break };
        let mut params = BTreeMap::new();
        loop {
            p.skip(|b| b.is_ascii_whitespace());
            let start = p.i;
            let Some(key) = p.token() else {
                // A token68 credential (`Basic abc==`) or stray text: skip to the next comma.
                p.skip(|b| b != b',');
                if p.i < p.s.len() {
                    p.i += 1;
                    continue;
                }
                break;
            };
            p.skip(|b| b.is_ascii_whitespace());
            if p.peek() != Some(b'=') {
                // A token not followed by '=' starts the next challenge.
                p.i = start;
                break;
            }
            p.i += 1;
            p.skip(|b| b.is_ascii_whitespace());
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token().unwrap_or_default()
            };
            params.insert(key.to_ascii_lowercase(), value);
            p.skip(|b| b.is_ascii_whitespace());
            if p.peek() == Some(b',') {
                p.i += 1;
            } else if p.i >= p.s.len() {
                break;
            }
        }
        out.push(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        });
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }

    /// An RFC 9110 token.
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        self.skip(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b));
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A quoted string with backslash escapes; an unterminated one runs to the end.
    fn quoted(&mut self) -> String {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A token service's answer.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenResponse {
    pub token: String,
    /// Lifetime in seconds, when the service gives one.
    pub expires_in: Option<u64>,
}

/// Parses a token service's JSON: `token` or `access_token` (OAuth2), and `expires_in`.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let token = raw
        .token
        .filter(|t| !t.is_empty())
        .or(raw.access_token.filter(|t| !t.is_empty()))
        .ok_or("no token in the answer")?;
    Ok(TokenResponse {
        token,
        expires_in: raw.expires_in,
    })
}

/// `Basic <base64(user:password)>`.
pub fn basic(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        crate::base64::encode(format!("{username}:{password}").as_bytes())
    )
}

/// Percent-encodes a query parameter value (everything but RFC 3986 unreserved characters).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_quoted_params() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example.com/token"));
        assert_eq!(c[0].param("service"), Some("registry.example.com"));
        assert_eq!(c[0].param("scope"), Some("repository:library/busybox:pull"));
    }

    #[test]
    fn several_challenges_and_odd_spacing() {
        let c = parse_challenges(
            r#"Basic realm="Registry Realm" , BEARER Realm = "https://a/t", error="invalid_token""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://a/t"));
        assert_eq!(c[1].param("error"), Some("invalid_token"));
    }

    #[test]
    fn escapes_and_unterminated_quotes() {
        let c = parse_challenges(r#"Bearer realm="a\"b", scope="x"#);
        assert_eq!(c[0].param("realm"), Some("a\"b"));
        assert_eq!(c[0].param("scope"), Some("x"));
        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Basic").len(), 1);
        assert_eq!(parse_challenges("Basic dXNlcjpwYXNz")[0].scheme, "basic");
    }

    #[test]
    fn token_responses() {
        assert_eq!(
            parse_token_response(br#"{"token":"t","expires_in":300}"#).unwrap(),
            TokenResponse {
                token: "t".into(),
                expires_in: Some(300)
            }
        );
        assert_eq!(
            parse_token_response(br#"{"token":"","access_token":"a"}"#)
                .unwrap()
                .token,
            "a"
        );
        assert!(
            parse_token_response(br#"{"expires_in":1}"#)
                .unwrap_err()
                .contains("no token")
        );
        assert!(
            parse_token_response(b"<html>")
                .unwrap_err()
                .contains("invalid JSON")
        );
    }

    #[test]
    fn basic_and_escaping() {
        assert_eq!(basic("user", "pass"), "Basic dXNlcjpwYXNz");
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
