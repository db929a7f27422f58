//! Authorization: credentials, Basic and Bearer challenges, tokens and their renewal.

use super::Client;
use super::error::ERROR_BODY_LIMIT;
use super::http::{BodyWriter, Method, Pending, Request, Response, Url};
use crate::auth::{self, Challenge};
use crate::error::{Error, Result};
use crate::text::printable;
use std::io::Write;

/// Credentials for one registry; `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name; docker's `<token>` when the password is an identity token.
    pub username: String,
    /// The password, or the identity (refresh) token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print a password, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What a client may do, for token scopes: pull (or pull and push) in its repository, and
/// pull in other repositories of the same registry that blobs are mounted from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub push: bool,
    pub also_pull: Vec<String>,
}

impl Access {
    pub fn pull() -> Self {
        Self::default()
    }

    pub fn push(also_pull: Vec<String>) -> Self {
        Self {
            push: true,
            also_pull,
        }
    }

    /// The token scopes, one per repository (`repository:NAME:ACTIONS`).
    pub fn scopes(&self, repository: &str) -> Vec<String> {
        let actions = if self.push { "pull,push" } else { "pull" };
        let mut scopes = vec![format!("repository:{repository}:{actions}")];
        for other in &self.also_pull {
            if other != repository {
                scopes.push(format!("repository:{other}:pull"));
            }
        }
        scopes
    }
}

/// Whose `Authorization` a request carries.
pub(super) enum Authorize {
    /// The registry's (Basic, or a Bearer token renewed as needed), on its origin only.
    Registry,
    /// This value, or none: a token request's own credentials, for the token service.
    Given(Option<String>),
}

/// How requests are authorized once the registry has said how.
pub(super) enum AuthState {
    Anonymous,
    Basic(String),
    Bearer {
        challenge: Challenge,
        token: String,
        /// Seconds since the epoch after which the token is renewed before use.
        renew_at: Option<u64>,
    },
}

/// Tokens without `expires_in` live 60 seconds (the distribution token spec's default).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// Tokens are renewed this long before they expire.
const TOKEN_MARGIN: u64 = 10;
/// When a token that lives `expires_in` seconds (the token service's word, the default when
/// it says nothing) fetched at `now` is renewed; `None` for a token too short-lived to
/// renew ahead, used until refused. Saturating: a lifetime of `u64::MAX` means never, not a
/// time in the past that would fetch a new token before every request.
fn renewal_time(now: u64, expires_in: Option<u64>) -> Option<u64> {
    let lifetime = expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME);
    (lifetime > 2 * TOKEN_MARGIN).then(|| now.saturating_add(lifetime - TOKEN_MARGIN))
}

/// The user name docker and podman store with an identity (refresh) token.
const IDENTITY_TOKEN_USER: &str = "<token>";

impl Client<'_> {
    pub(super) fn authenticate(&self, challenges: &[Challenge]) -> Result<()> {
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let (token, renew_at) = self.fetch_token(bearer)?;
            *self.auth.borrow_mut() = AuthState::Bearer {
                challenge: bearer.clone(),
                token,
                renew_at,
            };
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some(c) = &self.credentials else {
                return Err(Error::Unauthorized(format!(
                    "{} asks for credentials and none were given for it; pass them with \
                     --creds (or the role's own --base-creds, --final-creds, --dest-creds)",
                    self.registry
                )));
            };
            *self.auth.borrow_mut() = AuthState::Basic(auth::basic(&c.username, &c.password));
            // Basic credentials are not checked by a token service: one authorized ping
            // checks them now, before a command that needs no other request (vet of an
            // archive that leaves nothing out) passes without them being right.
            let resp = self.send(Method::Get, self.url("/v2/"), vec![], None, true)?;
            if resp.status == 401 {
                return Err(self.status_error(resp, "GET /v2/"));
            }
            return Ok(());
        }
        Err(Error::Unauthorized(format!(
            "{} answered 401 without a Basic or Bearer challenge imo can answer",
            self.registry
        )))
    }

    /// Gets a token for this client's scopes: with an identity token by `POST`
    /// (`grant_type=refresh_token`), otherwise by `GET` with Basic credentials or none.
    pub(super) fn fetch_token(&self, challenge: &Challenge) -> Result<(String, Option<u64>)> {
        let Some(realm) = challenge.param("realm") else {
            return Err(Error::Unauthorized(format!(
                "{}'s Bearer challenge has no realm",
                self.registry
            )));
        };
        let realm_url = self
            .origin
            .join(realm)
            .map_err(|e| Error::Unauthorized(format!("{}'s token realm: {e}", self.registry)))?;
        let scopes = self.access.scopes(&self.repository);
        let service = challenge.param("service");
        // The realm is another host: say whose token service it is that cannot be reached.
        let unreachable = |e: Error| match e {
            Error::Unreachable(m) => {
                Error::Unreachable(format!("the token service of {} ({m})", self.registry))
            }
            other => other,
        };
        let identity = self
            .credentials
            .as_ref()
            .filter(|c| c.username == IDENTITY_TOKEN_USER);
        let resp = if let Some(c) = identity {
            let mut form = format!(
                "grant_type=refresh_token&client_id=imo&refresh_token={}",
                auth::query_escape(&c.password)
            );
            if let Some(s) = service {
                form.push_str(&format!("&service={}", auth::query_escape(s)));
            }
            form.push_str(&format!("&scope={}", auth::query_escape(&scopes.join(" "))));
            let headers = vec![
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("content-length".into(), form.len().to_string()),
            ];
            let mut write = |w: &mut dyn Write| {
                w.write_all(form.as_bytes())
                    .map_err(|e| Error::Unreachable(format!("sending a token request: {e}")))
            };
            let request = Request {
                method: Method::Post,
                url: realm_url,
                headers,
            };
            self.send_as(request, Some(&mut write), true, &Authorize::Given(None))
                .map_err(unreachable)?
        } else {
            let mut url = realm_url;
            for scope in &scopes {
                url = url.with_query("scope", scope);
            }
            if let Some(s) = service {
                url = url.with_query("service", s);
            }
            let basic = self
                .credentials
                .as_ref()
                .map(|c| auth::basic(&c.username, &c.password));
            let request = Request {
                method: Method::Get,
                url,
                headers: vec![],
            };
            self.send_as(request, None, true, &Authorize::Given(basic))
                .map_err(unreachable)?
        };
        if resp.status == 401 || resp.status == 403 {
            return Err(Error::Unauthorized(format!(
                "the token service of {} refused {} for {}: check the credentials",
                self.registry,
                if self.credentials.is_some() {
                    "the credentials given"
                } else {
                    "anonymous access"
                },
                scopes.join(" ")
            )));
        }
        let mut resp = self.expect(resp, 200..300, "token request")?;
        let body = resp.read_limited(ERROR_BODY_LIMIT).map_err(|e| {
            Error::Unreachable(format!("reading a token from {}: {e}", self.registry))
        })?;
        let token = auth::parse_token_response(&body).map_err(|e| {
            Error::Registry(format!(
                "the token service of {}: {}",
                self.registry,
                printable(&e)
            ))
        })?;
        let renew_at = renewal_time(self.transport.now(), token.expires_in);
        Ok((token.token, renew_at))
    }

    /// The `Authorization` value to send, renewing a token about to expire.
    pub(super) fn authorization(&self) -> Result<Option<String>> {
        let renew = match &*self.auth.borrow() {
            AuthState::Anonymous => return Ok(None),
            AuthState::Basic(v) => return Ok(Some(v.clone())),
            AuthState::Bearer {
                challenge,
                renew_at,
                ..
            } => renew_at
                .is_some_and(|at| self.transport.now() >= at)
                .then(|| challenge.clone()),
        };
        if let Some(challenge) = renew {
            self.renew(challenge)?;
        }
        match &*self.auth.borrow() {
            AuthState::Bearer { token, .. } => Ok(Some(format!("Bearer {token}"))),
            _ => unreachable!("only a bearer state is renewed"),
        }
    }

    pub(super) fn renew(&self, challenge: Challenge) -> Result<()> {
        let (token, renew_at) = self.fetch_token(&challenge)?;
        *self.auth.borrow_mut() = AuthState::Bearer {
            challenge,
            token,
            renew_at,
        };
        Ok(())
    }

    /// The `Authorization` a request to `url` carries: the registry's own only on the
    /// registry's origin (scheme, host, port), never to a host an upload `Location` names.
    pub(super) fn authorization_for(&self, url: &Url, who: &Authorize) -> Result<Option<String>> {
        match who {
            Authorize::Given(value) => Ok(value.clone()),
            Authorize::Registry if url.same_origin(&self.origin) => self.authorization(),
            Authorize::Registry => Ok(None),
        }
    }

    /// Starts one exchange with its `Authorization`, under the redirect rules.
    pub(super) fn start_authorized(
        &self,
        request: &Request,
        body: Option<BodyWriter<'_>>,
        who: &Authorize,
    ) -> Result<Pending> {
        let mut request = request.clone();
        if let Some(a) = self.authorization_for(&request.url, who)? {
            request.headers.push(("authorization".into(), a));
        }
        self.start_redirected(request, body)
    }

    /// One exchange with its `Authorization`; a 401 to the registry's bearer token gets a new
    /// token and the request once more, if its body can be written again (`replayable`).
    pub(super) fn send_authorized(
        &self,
        request: &Request,
        mut body: Option<BodyWriter<'_>>,
        replayable: bool,
        who: &Authorize,
    ) -> Result<Response> {
        let first = body.as_mut().map(|w| &mut **w as BodyWriter<'_>);
        let resp = self.start_authorized(request, first, who)?()?;
        let renew = resp.status == 401 && replayable && matches!(who, Authorize::Registry);
        let challenge = match &*self.auth.borrow() {
            AuthState::Bearer { challenge, .. } if renew => challenge.clone(),
            _ => return Ok(resp),
        };
        drop(resp);
        self.renew(challenge)?;
        self.start_authorized(request, body, who)?()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::reference::Reference;
    use crate::registry::http::{Response, Transport};
    use crate::registry::{Net, Retry};
    use std::cell::RefCell;

    /// A registry behind a token service whose tokens claim to live `expires_in` seconds;
    /// logs every request's path.
    struct TokenRegistry {
        expires_in: &'static str,
        now: u64,
        log: RefCell<Vec<String>>,
    }

    impl Transport for TokenRegistry {
        fn send(&self, req: &Request, _: Option<BodyWriter<'_>>) -> Result<Response> {
            self.log.borrow_mut().push(req.url.path.clone());
            let authorized = req.headers.iter().any(|(k, _)| k == "authorization");
            let (status, headers, body) = if req.url.path.starts_with("/token") {
                let body = format!(r#"{{"token":"t","expires_in":{}}}"#, self.expires_in);
                (200, vec![], body)
            } else if !authorized {
                let challenge = r#"Bearer realm="http://127.0.0.1:5000/token",service="s""#;
                (
                    401,
                    vec![("www-authenticate".into(), challenge.into())],
                    String::new(),
                )
            } else {
                (200, vec![], String::new())
            };
            Ok(Response {
                status,
                headers,
                body: Box::new(std::io::Cursor::new(body.into_bytes())),
            })
        }
        fn now(&self) -> u64 {
            self.now
        }
        fn sleep_ms(&self, _: u64) {}
        fn random(&self) -> u64 {
            0
        }
    }

    /// How many tokens a connection and three requests fetch.
    fn tokens_fetched(expires_in: &'static str, now: u64) -> usize {
        let registry = TokenRegistry {
            expires_in,
            now,
            log: RefCell::new(vec![]),
        };
        let report = |_: &str| {};
        let net = Net {
            retry: Retry::default(),
            report: &report,
            chunk_size: 0,
        };
        let reference = Reference::parse("127.0.0.1:5000/app").unwrap();
        let client =
            Client::connect(&registry, &reference, None, Access::pull(), &[], net).unwrap();
        for _ in 0..3 {
            assert!(client.has_blob(&Digest::of(b"x")).unwrap());
        }
        let log = registry.log.into_inner();
        log.iter().filter(|p| p.starts_with("/token")).count()
    }

    #[test]
    fn a_token_that_claims_to_live_forever_is_fetched_once() {
        let now = 1_700_000_000;
        assert_eq!(tokens_fetched("18446744073709551615", now), 1);
        assert_eq!(tokens_fetched("300", now), 1);
        assert_eq!(renewal_time(now, Some(u64::MAX)), Some(u64::MAX));
        assert_eq!(renewal_time(now, Some(300)), Some(now + 290));
        assert_eq!(renewal_time(now, None), Some(now + 50));
        // Too short to renew ahead: used until the registry refuses it.
        assert_eq!(renewal_time(now, Some(20)), None);
        assert_eq!(renewal_time(u64::MAX, Some(300)), Some(u64::MAX));
    }
}
