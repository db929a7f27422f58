//! A registry client for the distribution API, over a narrow [`Transport`] seam.
//!
//! The client does the protocol (scheme choice, authentication, manifests, streamed and
//! verified blobs, uploads); the transport only moves one HTTP exchange. The component
//! implements the transport with wasi-http; nothing here touches I/O directly.

use crate::auth::{self, Challenge};
use crate::digest::{Digest, copy_verified};
use crate::error::{Error, Result};
use crate::manifest::{self, Descriptor};
use crate::reference::{Reference, is_loopback_host};
use std::cell::RefCell;
use std::io::{Read, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// An absolute URL split as wasi-http wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    pub authority: String,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl Url {
    /// Resolves `location` (absolute, or a path on this URL's origin).
    pub fn join(&self, location: &str) -> std::result::Result<Url, String> {
        for (prefix, scheme) in [("https://", Scheme::Https), ("http://", Scheme::Http)] {
            if let Some(rest) = location.strip_prefix(prefix) {
                let (authority, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, "/"),
                };
                if authority.is_empty() {
                    return Err(format!("location {location:?} has no host"));
                }
                return Ok(Url {
                    scheme,
                    authority: authority.into(),
                    path: path.into(),
                });
            }
        }
        if location.starts_with('/') {
            return Ok(Url {
                path: location.into(),
                ..self.clone()
            });
        }
        Err(format!(
            "location {location:?} is neither an absolute URL nor an absolute path"
        ))
    }

    /// Appends a query parameter.
    pub fn with_query(&self, key: &str, value: &str) -> Url {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        Url {
            path: format!("{}{sep}{key}={}", self.path, auth::query_escape(value)),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{s}://{}{}", self.authority, self.path)
    }
}

pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn Read>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads at most `limit` bytes of the body.
    fn read_limited(&mut self, limit: u64) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self.body).take(limit + 1).read_to_end(&mut out)?;
        Ok(out)
    }
}

/// Writes a request body; an error from it aborts the request so nothing is committed.
pub type BodyWriter<'a> = &'a mut dyn FnMut(&mut dyn Write) -> Result<()>;

/// The answer to a request sent with [`Transport::start`], awaited when called.
pub type Pending = Box<dyn FnOnce() -> Result<Response>>;

/// An upload whose bytes are all sent, awaiting the registry's word that it stored the blob
/// (which takes it a while: it syncs the blob to disk first), so that the next upload can
/// stream meanwhile. [`Committing::finish`] waits for that word, and when the answer is a
/// failure worth resuming from, resumes the upload from the bytes it kept.
#[must_use = "an upload is complete only once finished"]
pub struct Committing<'a>(Option<Box<dyn FnOnce() -> Result<()> + 'a>>);

impl<'a> Committing<'a> {
    /// An upload already complete.
    pub fn done() -> Self {
        Self(None)
    }

    fn pending(finish: impl FnOnce() -> Result<()> + 'a) -> Self {
        Self(Some(Box::new(finish)))
    }

    /// Waits until the blob is stored, or fails saying why it is not.
    pub fn finish(self) -> Result<()> {
        self.0.map_or(Ok(()), |finish| finish())
    }
}

/// Hands out a blob's bytes for an upload, 0 at the end, like `Read::read`. It is expected to
/// verify them and fail rather than hand out the bytes that would complete a wrong blob
/// ([`crate::digest::Verifying`]), so a request carrying one never completes.
pub type BlobSource<'a> = &'a mut dyn FnMut(&mut [u8]) -> Result<usize>;

/// How much of an upload is kept once sent, for replay: a cut upload resumes where the
/// registry reports its progress only if the bytes from there are still kept.
pub const UPLOAD_WINDOW: usize = 8 << 20;
/// How much of an upload is pulled from its source and written at once.
const UPLOAD_CHUNK: usize = 1 << 20;

/// The last bytes of an upload, in a ring: what a resumed upload replays.
struct Window {
    buf: Vec<u8>,
    /// Where the next byte goes.
    at: usize,
    /// Bytes taken in so far.
    total: u64,
}

impl Window {
    fn new(capacity: usize) -> Self {
        Window {
            buf: vec![0; capacity.max(1)],
            at: 0,
            total: 0,
        }
    }

    /// Bytes taken in so far.
    fn total(&self) -> u64 {
        self.total
    }

    /// Bytes still kept: the last ones taken in.
    fn kept(&self) -> u64 {
        self.total.min(self.buf.len() as u64)
    }

    /// Room for the next bytes (at most `max`, never empty), up to where the ring wraps.
    fn spare(&mut self, max: usize) -> &mut [u8] {
        if self.at == self.buf.len() {
            self.at = 0;
        }
        let end = self.buf.len().min(self.at + max.max(1));
        &mut self.buf[self.at..end]
    }

    /// Takes in the first `n` bytes of [`Window::spare`], and returns them.
    fn commit(&mut self, n: usize) -> &[u8] {
        let start = self.at;
        self.at += n;
        self.total += n as u64;
        &self.buf[start..self.at]
    }

    /// The bytes taken in from byte `from` on, oldest first (two pieces where the ring
    /// wraps), if they are all still kept.
    fn since(&self, from: u64) -> Option<(&[u8], &[u8])> {
        if from > self.total || self.total - from > self.kept() {
            return None;
        }
        let count = (self.total - from) as usize;
        if count <= self.at {
            return Some((&self.buf[self.at - count..self.at], &[]));
        }
        let older = count - self.at;
        Some((&self.buf[self.buf.len() - older..], &self.buf[..self.at]))
    }
}

/// How a cut upload goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// In the same session, from this byte: the registry holds the bytes before it, and the
    /// bytes from it on are still kept.
    From(u64),
    /// From the start, in a new session: every byte sent is still kept.
    Restart,
    /// Neither: the bytes the registry lacks are no longer kept.
    GiveUp,
}

/// Decides how a cut upload goes on, from the bytes pulled from the source so far
/// (`consumed`), how many of the last of them are still kept (`kept`), and how many bytes the
/// registry says the upload session holds (`None` when the session is gone or the registry
/// will not say). A session said to hold nothing is not reused: distribution reports one byte
/// the same way (`Range: 0-0`), and a new session is right either way.
pub fn resume_plan(consumed: u64, kept: u64, registry_offset: Option<u64>) -> Resume {
    let oldest_kept = consumed.saturating_sub(kept);
    match registry_offset {
        Some(n) if n > 0 && n <= consumed && n >= oldest_kept => Resume::From(n),
        _ if oldest_kept == 0 => Resume::Restart,
        _ => Resume::GiveUp,
    }
}

/// The bytes an upload session holds, from the `Range: 0-<last byte>` of its status; `0-0`
/// counts as none.
pub fn upload_offset(range: &str) -> Option<u64> {
    let range = range.trim();
    let range = range.strip_prefix("bytes=").unwrap_or(range);
    let (start, last) = range.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    let last: u64 = last.trim().parse().ok()?;
    Some(if last == 0 { 0 } else { last + 1 })
}

/// One blob's upload: where it stands, and the bytes kept for a resume.
struct Upload {
    d: Descriptor,
    /// For messages: "upload of blob …".
    what: String,
    window: Window,
    session: Url,
    /// The byte the next body request starts from.
    from: u64,
    resumes: u32,
    /// Milliseconds slept between resumes.
    waited: u64,
    /// Whether a new token was fetched for it already.
    renewed: bool,
}

/// An upload request that failed in a way worth resuming from.
struct Cut {
    /// For messages: the connection error, or the status and the registry's detail.
    why: String,
    /// A connection failure rather than a status.
    connection: bool,
    /// The registry's `Retry-After`.
    after_ms: Option<u64>,
    /// A 401 to a bearer token: a new one is needed first.
    unauthorized: bool,
}

impl Cut {
    /// A cut connection is worth resuming from; any other error is not.
    fn from_error(e: Error) -> Result<Self> {
        match e {
            Error::Unreachable(why) => Ok(Cut {
                why,
                connection: true,
                after_ms: None,
                unauthorized: false,
            }),
            e => Err(e),
        }
    }
}

/// Where progress and retry notices go; stderr in the component.
pub trait Reporter {
    fn line(&self, text: &str);
}

impl<F: Fn(&str)> Reporter for F {
    fn line(&self, text: &str) {
        self(text)
    }
}

/// How hard to try when the network or the registry fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt; 0 for none.
    pub attempts: u32,
    /// The first delay; each retry doubles it, plus up to as much again of jitter.
    pub base_delay_ms: u64,
    /// No retry starts once this much time has gone into waiting.
    pub max_wait_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            base_delay_ms: 200,
            max_wait_ms: 60_000,
        }
    }
}

impl Retry {
    /// The delay before retry `n` (1-based): exponential, with jitter from `random`.
    pub fn delay_ms(&self, n: u32, random: u64) -> u64 {
        let base = self.base_delay_ms.saturating_mul(1 << (n - 1).min(16));
        base + if base == 0 { 0 } else { random % base }
    }
}

/// The statuses worth another try: the registry is overloaded or briefly broken.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` in seconds (the HTTP-date form is rare from registries and ignored).
pub fn retry_after_ms(value: Option<&str>) -> Option<u64> {
    value?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.saturating_mul(1000))
}

/// How a client behaves on the network.
#[derive(Clone, Copy)]
pub struct Net<'t> {
    pub retry: Retry,
    pub report: &'t dyn Reporter,
}

/// Moves one HTTP exchange. Connection-level failures are `Error::Unreachable`.
pub trait Transport {
    fn send(&self, request: &Request, body: Option<BodyWriter<'_>>) -> Result<Response>;

    /// Sends a request and its whole body, leaving the answer to be awaited, so that the
    /// caller can go on meanwhile: a registry answers an upload only once it has stored the
    /// blob. A failure while the body is written comes back here, not from the [`Pending`].
    fn start(&self, request: &Request, body: Option<BodyWriter<'_>>) -> Result<Pending> {
        let answer = self.send(request, body)?;
        Ok(Box::new(move || Ok(answer)))
    }

    /// Seconds since the Unix epoch, for token lifetimes.
    fn now(&self) -> u64;

    /// Waits, between retries.
    fn sleep_ms(&self, ms: u64);

    /// A random number, for retry jitter.
    fn random(&self) -> u64;
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
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

/// How requests are authorized once the registry has said how.
enum AuthState {
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
/// The user name docker and podman store with an identity (refresh) token.
const IDENTITY_TOKEN_USER: &str = "<token>";

/// One repository of one registry, with its authentication state.
pub struct Client<'t> {
    transport: &'t dyn Transport,
    origin: Url,
    /// The registry as the user named it, for messages.
    registry: String,
    repository: String,
    credentials: Option<Credentials>,
    access: Access,
    auth: RefCell<AuthState>,
    net: Net<'t>,
}

/// How many redirects a blob request may follow.
const MAX_REDIRECTS: usize = 5;
/// How many pages of tags are read before the list is deemed endless.
const MAX_TAG_PAGES: usize = 1000;
/// How much of an error body is read for the registry's diagnostics.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

impl<'t> Client<'t> {
    /// Pings the registry of `reference`, choosing the scheme and authenticating.
    ///
    /// HTTPS always comes first; plain HTTP is tried after it only for loopback registries
    /// and those the user named insecure.
    pub fn connect(
        transport: &'t dyn Transport,
        reference: &Reference,
        credentials: Option<Credentials>,
        access: Access,
        insecure: &[String],
        net: Net<'t>,
    ) -> Result<Self> {
        let host = reference.api_host().to_owned();
        let plain_allowed = is_loopback_host(&host)
            || insecure
                .iter()
                .any(|i| i == &reference.registry || i == &host);
        let mut client = Client {
            transport,
            origin: Url {
                scheme: Scheme::Https,
                authority: host,
                path: "/v2/".into(),
            },
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            credentials,
            access,
            auth: RefCell::new(AuthState::Anonymous),
            net,
        };
        // Where plain HTTP may follow, a failed HTTPS probe is an answer, not a fault to
        // retry.
        let first = client.ping(!plain_allowed);
        let ping = match first {
            Err(Error::Unreachable(https_err)) if plain_allowed => {
                client.origin.scheme = Scheme::Http;
                let both = |http_err: String| {
                    Error::Unreachable(format!(
                        "{}: over HTTPS: {https_err}; over plain HTTP: {http_err}",
                        client.registry
                    ))
                };
                match client.ping(true) {
                    // Only a registry API answer proves plain HTTP is what it speaks; a
                    // TLS server's complaint means the HTTPS failure is the real one.
                    Ok(r) if matches!(r.status, 200..=299 | 401) => r,
                    Ok(mut r) => {
                        let body = r.read_limited(ERROR_BODY_LIMIT).unwrap_or_default();
                        return Err(both(format!(
                            "HTTP {} {}",
                            r.status,
                            registry_detail(&body)
                        )));
                    }
                    Err(Error::Unreachable(http_err)) => return Err(both(http_err)),
                    Err(other) => return Err(other),
                }
            }
            Err(Error::Unreachable(e)) => {
                return Err(Error::Unreachable(format!(
                    "{}: {e}{}",
                    client.registry,
                    if is_loopback_host(&client.origin.authority) {
                        ""
                    } else {
                        " (if it serves plain HTTP, name it with --insecure)"
                    }
                )));
            }
            other => other?,
        };
        match ping.status {
            200..=299 => Ok(client),
            401 => {
                let challenges: Vec<Challenge> = ping
                    .header("www-authenticate")
                    .map(auth::parse_challenges)
                    .unwrap_or_default();
                client.authenticate(&challenges)?;
                Ok(client)
            }
            _ => Err(client.status_error(ping, "GET /v2/")),
        }
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn ping(&self, retry: bool) -> Result<Response> {
        let url = self.url("/v2/");
        let request = Request {
            method: Method::Get,
            url,
            headers: vec![],
        };
        if !retry {
            return self.transport.send(&request, None);
        }
        self.with_retries(&request, true, &mut |_| self.transport.send(&request, None))
    }

    /// Runs one exchange, again after a delay while it fails with a connection error or a
    /// retryable status, within the retry budget. Every retry is reported.
    fn with_retries(
        &self,
        request: &Request,
        replayable: bool,
        exchange: &mut dyn FnMut(u32) -> Result<Response>,
    ) -> Result<Response> {
        let mut waited = 0;
        let mut attempt = 0;
        loop {
            let result = exchange(attempt);
            let (why, after) = match &result {
                Err(Error::Unreachable(e)) => (e.clone(), None),
                Ok(r) if retryable_status(r.status) => (
                    format!("HTTP {}", r.status),
                    retry_after_ms(r.header("retry-after")),
                ),
                _ => return result,
            };
            attempt += 1;
            let retry = self.net.retry;
            let delay = after.unwrap_or_else(|| retry.delay_ms(attempt, self.transport.random()));
            if !replayable || attempt > retry.attempts || waited + delay > retry.max_wait_ms {
                return result;
            }
            self.net.report.line(&format!(
                "retrying {} {} in {delay} ms after {why} (retry {attempt} of {})",
                request.method.as_str(),
                request.url,
                retry.attempts
            ));
            drop(result);
            self.transport.sleep_ms(delay);
            waited += delay;
        }
    }

    fn url(&self, path: &str) -> Url {
        Url {
            path: path.into(),
            ..self.origin.clone()
        }
    }

    fn repo_url(&self, rest: &str) -> Url {
        self.url(&format!("/v2/{}/{rest}", self.repository))
    }

    fn authenticate(&self, challenges: &[Challenge]) -> Result<()> {
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
    fn fetch_token(&self, challenge: &Challenge) -> Result<(String, Option<u64>)> {
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
        let mut resp = if let Some(c) = identity {
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
            self.with_retries(&request, true, &mut |_| {
                self.transport.send(&request, Some(&mut write))
            })
            .map_err(unreachable)?
        } else {
            let mut url = realm_url;
            for scope in &scopes {
                url = url.with_query("scope", scope);
            }
            if let Some(s) = service {
                url = url.with_query("service", s);
            }
            let mut headers = vec![];
            if let Some(c) = &self.credentials {
                headers.push((
                    "authorization".into(),
                    auth::basic(&c.username, &c.password),
                ));
            }
            let request = Request {
                method: Method::Get,
                url,
                headers,
            };
            self.with_retries(&request, true, &mut |_| self.transport.send(&request, None))
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
        if !(200..300).contains(&resp.status) {
            return Err(self.status_error(resp, "token request"));
        }
        let body = resp.read_limited(ERROR_BODY_LIMIT).map_err(|e| {
            Error::Unreachable(format!("reading a token from {}: {e}", self.registry))
        })?;
        let token = auth::parse_token_response(&body)
            .map_err(|e| Error::Registry(format!("the token service of {}: {e}", self.registry)))?;
        let lifetime = token.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let renew_at =
            (lifetime > 2 * TOKEN_MARGIN).then(|| self.transport.now() + lifetime - TOKEN_MARGIN);
        Ok((token.token, renew_at))
    }

    /// The `Authorization` value to send, renewing a token about to expire.
    fn authorization(&self) -> Result<Option<String>> {
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

    fn renew(&self, challenge: Challenge) -> Result<()> {
        let (token, renew_at) = self.fetch_token(&challenge)?;
        *self.auth.borrow_mut() = AuthState::Bearer {
            challenge,
            token,
            renew_at,
        };
        Ok(())
    }

    /// Sends a request with this registry's authorization. A 401 to a bearer token gets one
    /// new token and one retry, if the body can be written again (`replayable`).
    fn send(
        &self,
        method: Method,
        url: Url,
        headers: Vec<(String, String)>,
        mut body: Option<BodyWriter<'_>>,
        replayable: bool,
    ) -> Result<Response> {
        let request = Request {
            method,
            url,
            headers,
        };
        self.with_retries(&request, replayable, &mut |_| {
            let b = body.as_mut().map(|w| &mut **w as BodyWriter<'_>);
            self.send_authorized(
                method,
                request.url.clone(),
                request.headers.clone(),
                b,
                replayable,
            )
        })
    }

    /// One exchange with a 401 answered by a new token, once.
    fn send_authorized(
        &self,
        method: Method,
        url: Url,
        headers: Vec<(String, String)>,
        mut body: Option<BodyWriter<'_>>,
        replayable: bool,
    ) -> Result<Response> {
        let first = body.as_mut().map(|w| &mut **w as BodyWriter<'_>);
        let resp = self.send_once(method, url.clone(), headers.clone(), first)?;
        let challenge = match &*self.auth.borrow() {
            AuthState::Bearer { challenge, .. } if resp.status == 401 && replayable => {
                challenge.clone()
            }
            _ => return Ok(resp),
        };
        drop(resp);
        self.renew(challenge)?;
        self.send_once(method, url, headers, body)
    }

    /// One exchange, following redirects for GET and HEAD and never sending the
    /// authorization to another host.
    fn send_once(
        &self,
        method: Method,
        url: Url,
        mut headers: Vec<(String, String)>,
        body: Option<BodyWriter<'_>>,
    ) -> Result<Response> {
        let mut url = url;
        let auth_header = self.authorization()?;
        let base_len = headers.len();
        let mut body = body;
        for _ in 0..=MAX_REDIRECTS {
            headers.truncate(base_len);
            if url.authority == self.origin.authority
                && let Some(a) = &auth_header
            {
                headers.push(("authorization".into(), a.clone()));
            }
            let resp = self.transport.send(
                &Request {
                    method,
                    url: url.clone(),
                    headers: headers.clone(),
                },
                body.take(),
            )?;
            let redirect = matches!(resp.status, 301 | 302 | 303 | 307 | 308)
                && matches!(method, Method::Get | Method::Head);
            if !redirect {
                return Ok(resp);
            }
            let Some(location) = resp.header("location") else {
                return Ok(resp);
            };
            url = url
                .join(location)
                .map_err(|e| Error::Registry(format!("{}: redirect {e}", self.registry)))?;
        }
        Err(Error::Registry(format!(
            "{}: more than {MAX_REDIRECTS} redirects",
            self.registry
        )))
    }

    /// Turns an unexpected status into an error carrying the registry's diagnostics.
    fn status_error(&self, mut resp: Response, what: &str) -> Error {
        let body = resp.read_limited(ERROR_BODY_LIMIT).unwrap_or_default();
        let detail = match registry_detail(&body) {
            d if d.is_empty() => String::new(),
            d => format!(" {d}"),
        };
        let at = format!("{} {what} in {}", self.registry, self.repository);
        let insufficient_scope = resp
            .header("www-authenticate")
            .is_some_and(|c| c.contains("insufficient_scope"));
        match resp.status {
            401 if insufficient_scope => Error::Unauthorized(format!(
                "{at}: 401{detail}; the account may not {} {}",
                if self.access.push {
                    "push to"
                } else {
                    "pull from"
                },
                self.repository
            )),
            401 => Error::Unauthorized(format!(
                "{at}: 401{detail}; {}",
                if self.credentials.is_some() {
                    "the credentials were refused"
                } else {
                    "credentials are needed"
                }
            )),
            403 => Error::Unauthorized(format!("{at}: 403 denied{detail}")),
            404 => Error::NotFound(format!("{at}:{detail}")),
            s => Error::Registry(format!("{at}: HTTP {s}{detail}")),
        }
    }

    /// Fetches a manifest by tag or digest, verifying it when asked for by digest, and
    /// returns its descriptor and exact bytes.
    pub fn manifest(&self, key: &str) -> Result<(Descriptor, Vec<u8>)> {
        let what = format!("manifest {key}");
        let url = self.repo_url(&format!("manifests/{key}"));
        let mut resp = self.send(
            Method::Get,
            url,
            vec![("accept".into(), manifest::ACCEPT.into())],
            None,
            true,
        )?;
        if resp.status != 200 {
            return Err(self.status_error(resp, &what));
        }
        if let Some(len) = resp
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
            && len > manifest::MAX_MANIFEST_BYTES
        {
            return Err(Error::InvalidManifest(format!(
                "{} {what} in {} is {len} bytes, more than the {} imo accepts",
                self.registry,
                self.repository,
                manifest::MAX_MANIFEST_BYTES
            )));
        }
        let bytes = resp
            .read_limited(manifest::MAX_MANIFEST_BYTES)
            .map_err(|e| Error::Unreachable(format!("{} reading {what}: {e}", self.registry)))?;
        if bytes.len() as u64 > manifest::MAX_MANIFEST_BYTES {
            return Err(Error::InvalidManifest(format!(
                "{what} in {} is larger than 4 MiB",
                self.repository
            )));
        }
        let digest = Digest::of(&bytes);
        if key.starts_with("sha256:") && key != digest.as_str() {
            return Err(Error::DigestMismatch(format!(
                "{} served {what} of {} whose content hashes to {digest}",
                self.registry, self.repository
            )));
        }
        if let Some(claimed) = resp.header("docker-content-digest")
            && claimed != digest.as_str()
        {
            return Err(Error::DigestMismatch(format!(
                "{} says {what} of {} is {claimed} but its content hashes to {digest}",
                self.registry, self.repository
            )));
        }
        let content_type = resp
            .header("content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_owned());
        let media_type = manifest::declared_media_type(&bytes)
            .or(content_type.filter(|c| manifest::is_manifest_type(c)))
            .unwrap_or_else(|| manifest::OCI_MANIFEST.to_owned());
        let descriptor = Descriptor {
            media_type,
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        Ok((descriptor, bytes))
    }

    /// Like [`Client::manifest`], but `None` when the registry has no such manifest.
    pub fn manifest_if_exists(&self, key: &str) -> Result<Option<(Descriptor, Vec<u8>)>> {
        match self.manifest(key) {
            Ok(m) => Ok(Some(m)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The manifests that name `digest` as their subject, from the OCI 1.1 referrers API;
    /// empty where the registry does not offer it (distribution 2.8 answers 404).
    pub fn referrers(&self, digest: &Digest) -> Result<Vec<Descriptor>> {
        let url = self.repo_url(&format!("referrers/{digest}"));
        let mut resp = self.send(
            Method::Get,
            url,
            vec![("accept".into(), manifest::OCI_INDEX.into())],
            None,
            true,
        )?;
        match resp.status {
            200 => {}
            404 | 405 | 501 => return Ok(vec![]),
            _ => return Err(self.status_error(resp, &format!("referrers of {digest}"))),
        }
        let body = resp
            .read_limited(manifest::MAX_MANIFEST_BYTES)
            .map_err(|e| Error::Unreachable(format!("{} reading referrers: {e}", self.registry)))?;
        let index = manifest::Manifest::parse(&body, Some(manifest::OCI_INDEX)).map_err(|e| {
            Error::InvalidManifest(format!("referrers of {digest} in {}: {e}", self.repository))
        })?;
        Ok(index.children().to_vec())
    }

    /// Every tag of the repository, following the registry's `Link` pagination.
    pub fn tags(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut url = self.repo_url("tags/list").with_query("n", "1000");
        for _ in 0..MAX_TAG_PAGES {
            let mut resp = self.send(Method::Get, url.clone(), vec![], None, true)?;
            if resp.status != 200 {
                return Err(self.status_error(resp, "tag list"));
            }
            let body = resp
                .read_limited(manifest::MAX_MANIFEST_BYTES)
                .map_err(|e| Error::Unreachable(format!("{} reading tags: {e}", self.registry)))?;
            let page: TagList = serde_json::from_slice(&body).map_err(|e| {
                Error::Registry(format!(
                    "{}: the tag list of {} is not valid JSON: {e}",
                    self.registry, self.repository
                ))
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match resp.header("link").and_then(next_link) {
                Some(next) => {
                    url = url
                        .join(next)
                        .map_err(|e| Error::Registry(format!("{}: tag list {e}", self.registry)))?;
                }
                None => return Ok(tags),
            }
        }
        Err(Error::Registry(format!(
            "{}: the tag list of {} runs past {MAX_TAG_PAGES} pages",
            self.registry, self.repository
        )))
    }

    /// Streams a blob into `sink`, checking size and digest; fails before passing on a byte
    /// beyond the declared size.
    pub fn blob(&self, d: &Descriptor, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let what = format!("blob {}", d.digest);
        let url = self.repo_url(&format!("blobs/{}", d.digest));
        let mut resp = self.blob_from(&url, &what, 0)?;
        let mut end = body_end(&resp, 0);
        let mut at = 0;
        let mut resumed = 0;
        // A cut download resumes where it stopped, and the hash carries on over the seam.
        let mut read = |buf: &mut [u8]| -> Result<usize> {
            loop {
                let why = match resp.body.read(buf) {
                    Ok(n) if n > 0 || at >= d.size => {
                        at += n as u64;
                        return Ok(n);
                    }
                    // Past the end, nothing more is owed.
                    Err(_) if at >= d.size => return Ok(0),
                    // A whole answer, as long as it said it would be: the registry's blob is
                    // short, and asking again would not lengthen it. The check reports it.
                    Ok(_) if end == Some(at) => return Ok(0),
                    Ok(_) => "the body ended early".to_owned(),
                    Err(e) => e.to_string(),
                };
                resumed += 1;
                if resumed > self.net.retry.attempts {
                    return Err(Error::Unreachable(format!(
                        "{} while reading {what} at byte {at}: {why} (gave up after {} resumes)",
                        self.registry, self.net.retry.attempts
                    )));
                }
                self.net
                    .report
                    .line(&format!("resuming {what} at byte {at} after: {why}"));
                self.transport
                    .sleep_ms(self.net.retry.delay_ms(resumed, self.transport.random()));
                resp = self.blob_from(&url, &what, at)?;
                end = body_end(&resp, at);
            }
        };
        copy_verified(
            &d.digest,
            d.size,
            &mut vec![0u8; 1 << 20],
            &mut read,
            sink,
            &|m| {
                Error::DigestMismatch(format!(
                    "{} served {what} of {}: {m}",
                    self.registry, self.repository
                ))
            },
        )
    }

    /// Starts a blob download at byte `at`: a `Range` request past the start, accepting a
    /// 206 from there or a whole 200 whose first `at` bytes are skipped.
    fn blob_from(&self, url: &Url, what: &str, at: u64) -> Result<Response> {
        let headers = if at > 0 {
            vec![("range".into(), format!("bytes={at}-"))]
        } else {
            vec![]
        };
        let mut resp = self.send(Method::Get, url.clone(), headers, None, true)?;
        match resp.status {
            200 => {
                let skipped = std::io::copy(&mut (&mut resp.body).take(at), &mut std::io::sink())
                    .map_err(|e| {
                    Error::Unreachable(format!("{} while reading {what}: {e}", self.registry))
                })?;
                if skipped < at {
                    return Err(Error::Unreachable(format!(
                        "{} sent {what} shorter than before",
                        self.registry
                    )));
                }
                Ok(resp)
            }
            206 if at > 0 => {
                let start = resp
                    .header("content-range")
                    .and_then(|r| r.strip_prefix("bytes "))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if start != Some(at) {
                    return Err(Error::Registry(format!(
                        "{} answered a range request for {what} from byte {at} with Content-Range {:?}",
                        self.registry,
                        resp.header("content-range")
                    )));
                }
                Ok(resp)
            }
            _ => Err(self.status_error(resp, what)),
        }
    }

    /// The `GET` of a blob, authorized, for a transport that fetches several at once. It is
    /// followed through redirects, without the authorization to another host; a failed one
    /// is fetched again with [`Client::blob`].
    pub fn blob_request(&self, d: &Descriptor) -> Result<Request> {
        let mut headers = vec![];
        if let Some(a) = self.authorization()? {
            headers.push(("authorization".to_owned(), a));
        }
        Ok(Request {
            method: Method::Get,
            url: self.repo_url(&format!("blobs/{}", d.digest)),
            headers,
        })
    }

    /// Whether the repository holds a blob (`HEAD`).
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        let url = self.repo_url(&format!("blobs/{digest}"));
        let resp = self.send(Method::Head, url, vec![], None, true)?;
        match resp.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(resp, &format!("HEAD blob {digest}"))),
        }
    }

    /// Asks the registry to link a blob from another of its repositories into this one,
    /// without moving its bytes. `Ok(false)` when the registry would rather have an upload.
    pub fn mount(&self, digest: &Digest, from: &str) -> Result<bool> {
        let url = self
            .repo_url("blobs/uploads/")
            .with_query("mount", digest.as_str())
            .with_query("from", from);
        let resp = self.send(Method::Post, url, vec![], None, true)?;
        match resp.status {
            201 => Ok(true),
            // 202 opens an upload session instead; it is left to expire unused.
            202 => Ok(false),
            _ => Err(self.status_error(resp, &format!("mount of blob {digest} from {from}"))),
        }
    }

    /// Whether another repository of this registry holds a blob, for vetting mounts.
    pub fn has_blob_in(&self, repository: &str, digest: &Digest) -> Result<bool> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let resp = self.send(Method::Head, url, vec![], None, true)?;
        match resp.status {
            200 => Ok(true),
            // Not there, or not readable with these credentials: either way not mountable.
            401 | 403 | 404 => Ok(false),
            _ => Err(self.status_error(resp, &format!("HEAD blob {digest} in {repository}"))),
        }
    }

    /// Uploads a blob whose bytes `source` hands out: `POST`, then one streamed `PUT`, whose
    /// answer the returned [`Committing`] awaits. The source is expected to verify the bytes
    /// and fail rather than hand out the bytes completing a wrong blob, which aborts the
    /// request so the registry commits nothing.
    ///
    /// The last [`UPLOAD_WINDOW`] bytes sent are kept. When the body request is cut (or
    /// answered with a retryable status, or a 401 to a bearer token) and retries remain, the
    /// registry is asked how much its upload session holds and whether it has the blob after
    /// all (only the answer was lost); then the upload goes on as [`resume_plan`] says: a
    /// `PATCH` of the rest from the registry's offset and an empty `PUT`, or everything again
    /// in a new session, the kept bytes replayed and the rest pulled from `source`. Otherwise
    /// it fails, saying how far it got.
    pub fn upload(&self, d: &Descriptor, source: BlobSource<'_>) -> Result<Committing<'_>> {
        let what = format!("upload of blob {}", d.digest);
        let capacity = usize::try_from(d.size)
            .unwrap_or(usize::MAX)
            .min(UPLOAD_WINDOW);
        let session = self.start_upload(&what)?;
        let mut up = Upload {
            d: d.clone(),
            what,
            window: Window::new(capacity),
            session,
            from: 0,
            resumes: 0,
            waited: 0,
            renewed: false,
        };
        let cut = match self.upload_from(&mut up, source)? {
            Ok(answer) => {
                return Ok(Committing::pending(move || {
                    match self.stored(answer, &up.what)? {
                        None => Ok(()),
                        // Every byte was pulled from the source before the answer came: a
                        // resume needs only what the window kept.
                        Some(cut) => self.resume(&mut up, cut, &mut |_| Ok(0)),
                    }
                }));
            }
            Err(cut) => cut,
        };
        self.resume(&mut up, cut, source)?;
        Ok(Committing::done())
    }

    /// Goes on with an upload after `cut`, until the registry stores the blob or the upload
    /// cannot go on.
    fn resume(&self, up: &mut Upload, mut cut: Cut, source: BlobSource<'_>) -> Result<()> {
        loop {
            up.resumes += 1;
            let retry = self.net.retry;
            let delay = cut
                .after_ms
                .unwrap_or_else(|| retry.delay_ms(up.resumes, self.transport.random()));
            if up.resumes > retry.attempts || up.waited + delay > retry.max_wait_ms {
                let reason = if retry.attempts == 0 {
                    "retries are off".to_owned()
                } else if up.resumes > retry.attempts {
                    format!(
                        "it was resumed {} time(s), as many as allowed",
                        up.resumes - 1
                    )
                } else {
                    format!(
                        "retries already waited {} ms, as long as allowed",
                        up.waited
                    )
                };
                return Err(self.upload_lost(up, &cut, &reason));
            }
            if cut.unauthorized {
                // One new token; a second 401 means the token is not the problem.
                let challenge = match &*self.auth.borrow() {
                    AuthState::Bearer { challenge, .. } if !up.renewed => challenge.clone(),
                    _ => return Err(self.upload_lost(up, &cut, "a new token was refused")),
                };
                self.renew(challenge)?;
                up.renewed = true;
            }
            self.transport.sleep_ms(delay);
            up.waited += delay;
            let asked = self
                .upload_status(&up.session, &up.what)
                .and_then(|held| Ok((held, self.has_blob(&up.d.digest)?)));
            let (held, committed) = match asked {
                Ok(answers) => answers,
                Err(e) => {
                    let reason = format!("asking the registry where it stands failed: {e}");
                    return Err(self.upload_lost(up, &cut, &reason));
                }
            };
            if committed {
                self.net.report.line(&format!(
                    "{} completed before {}: the registry holds the blob",
                    up.what, cut.why
                ));
                return Ok(());
            }
            let attempt = format!("retry {} of {}", up.resumes, retry.attempts);
            let (total, kept) = (up.window.total(), up.window.kept());
            match resume_plan(total, kept, held.as_ref().map(|h| h.0)) {
                Resume::From(n) => {
                    self.net.report.line(&format!(
                        "resuming {} at byte {n} of {}, as the registry holds the bytes \
                         before it, after {} ({attempt})",
                        up.what, up.d.size, cut.why
                    ));
                    up.session = held.expect("an offset comes with its session").1;
                    up.from = n;
                }
                Resume::Restart => {
                    self.net.report.line(&format!(
                        "resuming {} from byte 0 in a new upload session, as the registry \
                         {}, after {} ({attempt})",
                        up.what,
                        match held {
                            None => "dropped the session".to_owned(),
                            Some((0, _)) => "holds none of it".to_owned(),
                            Some((n, _)) => format!("claims {n} bytes, more than were written"),
                        },
                        cut.why
                    ));
                    up.session = self.start_upload(&up.what)?;
                    up.from = 0;
                }
                Resume::GiveUp => {
                    let reason = match held {
                        Some((n, _)) if n > total => {
                            format!("the registry says it holds {n} bytes, more than were written")
                        }
                        Some((n, _)) => format!(
                            "the registry holds its first {n} bytes, and the bytes from there \
                             are no longer kept"
                        ),
                        None => "the registry dropped the upload session, and the start of \
                                 the blob is no longer kept"
                            .to_owned(),
                    };
                    return Err(self.upload_lost(up, &cut, &reason));
                }
            }
            cut = match self.upload_from(up, source)? {
                Ok(answer) => match self.stored(answer, &up.what)? {
                    None => return Ok(()),
                    Some(cut) => cut,
                },
                Err(cut) => cut,
            };
        }
    }

    /// Opens an upload session (`POST`), returning its URL.
    fn start_upload(&self, what: &str) -> Result<Url> {
        let start = self.send(
            Method::Post,
            self.repo_url("blobs/uploads/"),
            vec![],
            None,
            true,
        )?;
        if start.status != 202 {
            return Err(self.status_error(start, what));
        }
        let Some(location) = start.header("location") else {
            return Err(Error::Registry(format!(
                "{} started an upload without a Location",
                self.registry
            )));
        };
        self.origin
            .join(location)
            .map_err(|e| Error::Registry(format!("{}: upload {e}", self.registry)))
    }

    /// Sends the blob from byte `up.from` on in `up.session`: from the start, one `PUT`
    /// carrying it all; past it, a `PATCH` of the rest (none if the registry holds every byte)
    /// and an empty `PUT`. Kept bytes are replayed, the rest pulled from `source` into the
    /// window. The `PUT`'s answer is left pending; `Err` when a request failed in a way worth
    /// resuming from.
    fn upload_from(
        &self,
        up: &mut Upload,
        source: BlobSource<'_>,
    ) -> Result<std::result::Result<Pending, Cut>> {
        let content = |length: u64| {
            vec![
                (
                    "content-type".to_owned(),
                    "application/octet-stream".to_owned(),
                ),
                ("content-length".to_owned(), length.to_string()),
            ]
        };
        let (d, from) = (&up.d, up.from);
        let put_url = up.session.with_query("digest", d.digest.as_str());
        if from > 0 && from == d.size {
            return self.put_started(put_url, content(0), None);
        }
        let mut pulled = Ok(());
        let window = &mut up.window;
        let what = &up.what;
        let mut body = |w: &mut dyn Write| -> Result<()> {
            let sent = |e: std::io::Error| {
                Error::Unreachable(format!("sending to {} failed: {e}", self.registry))
            };
            let Some((older, newer)) = window.since(from) else {
                return Err(Error::Registry(format!(
                    "{what}: byte {from} on is no longer kept"
                )));
            };
            w.write_all(older).map_err(sent)?;
            w.write_all(newer).map_err(sent)?;
            loop {
                let n = match source(window.spare(UPLOAD_CHUNK)) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) => {
                        // The source's failure ends the upload; it is not a cut.
                        pulled = Err(e.clone());
                        return Err(e);
                    }
                };
                w.write_all(window.commit(n)).map_err(sent)?;
            }
        };
        // The body cannot be written again by the transport: a failure comes back here.
        if from == 0 {
            let started = self.put_started(put_url, content(d.size), Some(&mut body));
            pulled?;
            return started;
        }
        let mut headers = content(d.size - from);
        headers.push(("content-range".to_owned(), format!("{from}-{}", d.size - 1)));
        let patch = self.send(
            Method::Patch,
            up.session.clone(),
            headers,
            Some(&mut body),
            false,
        );
        pulled?;
        let resp = match self.resumable(patch, 202, &up.what)? {
            Ok(resp) => resp,
            Err(cut) => return Ok(Err(cut)),
        };
        // The session goes on at the Location the PATCH answered with.
        if let Some(location) = resp.header("location") {
            up.session = self
                .origin
                .join(location)
                .map_err(|e| Error::Registry(format!("{}: upload {e}", self.registry)))?;
        }
        let put_url = up.session.with_query("digest", up.d.digest.as_str());
        self.put_started(put_url, content(0), None)
    }

    /// Starts an upload's `PUT`, which is never replayed nor redirected, leaving its answer
    /// pending.
    fn put_started(
        &self,
        url: Url,
        mut headers: Vec<(String, String)>,
        body: Option<BodyWriter<'_>>,
    ) -> Result<std::result::Result<Pending, Cut>> {
        if url.authority == self.origin.authority
            && let Some(a) = self.authorization()?
        {
            headers.push(("authorization".into(), a));
        }
        let request = Request {
            method: Method::Put,
            url,
            headers,
        };
        match self.transport.start(&request, body) {
            Ok(answer) => Ok(Ok(answer)),
            Err(e) => Ok(Err(Cut::from_error(e)?)),
        }
    }

    /// Awaits an upload's `PUT`: `None` once the registry stored the blob, or a failure worth
    /// resuming from.
    fn stored(&self, answer: Pending, what: &str) -> Result<Option<Cut>> {
        Ok(self.resumable(answer(), 201, what)?.err())
    }

    /// Sorts the outcome of an upload request: the expected answer, a failure worth resuming
    /// from, or an error.
    fn resumable(
        &self,
        result: Result<Response>,
        expected: u16,
        what: &str,
    ) -> Result<std::result::Result<Response, Cut>> {
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => return Ok(Err(Cut::from_error(e)?)),
        };
        let bearer = matches!(&*self.auth.borrow(), AuthState::Bearer { .. });
        if resp.status == expected {
            Ok(Ok(resp))
        } else if retryable_status(resp.status) || (resp.status == 401 && bearer) {
            let after_ms = retry_after_ms(resp.header("retry-after"));
            let body = resp.read_limited(ERROR_BODY_LIMIT).unwrap_or_default();
            let why = format!("HTTP {} {}", resp.status, registry_detail(&body));
            Ok(Err(Cut {
                why: why.trim_end().to_owned(),
                connection: false,
                after_ms,
                unauthorized: resp.status == 401,
            }))
        } else {
            Err(self.status_error(resp, what))
        }
    }

    /// How many bytes an upload session holds, with its URL from now on (`GET` on it, as
    /// the distribution spec's upload status); `None` when the registry no longer knows the
    /// session or will not say.
    fn upload_status(&self, session: &Url, what: &str) -> Result<Option<(u64, Url)>> {
        let resp = self.send(Method::Get, session.clone(), vec![], None, true)?;
        if retryable_status(resp.status) || resp.status == 401 || resp.status == 403 {
            return Err(self.status_error(resp, &format!("status of the {what}")));
        }
        if !(200..300).contains(&resp.status) {
            return Ok(None);
        }
        let Some(held) = resp.header("range").and_then(upload_offset) else {
            return Ok(None);
        };
        let url = match resp.header("location") {
            Some(location) => self
                .origin
                .join(location)
                .map_err(|e| Error::Registry(format!("{}: upload {e}", self.registry)))?,
            None => session.clone(),
        };
        Ok(Some((held, url)))
    }

    /// The error for an upload that cannot go on: which blob, how far it got, what was kept,
    /// and what to do.
    fn upload_lost(&self, up: &Upload, cut: &Cut, reason: &str) -> Error {
        let (d, window) = (&up.d, &up.window);
        let message = format!(
            "{}: the upload of blob {} to {} failed after imo wrote {} of its {} bytes ({}), \
             and cannot be resumed: {reason} (imo keeps the last {} bytes written); run the \
             push again: blobs already at the destination are skipped",
            self.registry,
            d.digest,
            self.repository,
            window.total(),
            d.size,
            cut.why,
            window.kept()
        );
        if cut.connection {
            Error::Unreachable(message)
        } else {
            Error::Registry(message)
        }
    }

    /// Puts a manifest's exact bytes under `key` (a tag or its digest) and checks the digest
    /// the registry reports.
    pub fn put_manifest(&self, key: &str, d: &Descriptor, bytes: &[u8]) -> Result<()> {
        let what = format!("push of manifest {} as {key}", d.digest);
        let headers = vec![
            ("content-type".into(), d.media_type.clone()),
            ("content-length".into(), bytes.len().to_string()),
        ];
        let mut write = |w: &mut dyn Write| {
            w.write_all(bytes)
                .map_err(|e| Error::Unreachable(format!("sending manifest: {e}")))
        };
        let resp = self.send(
            Method::Put,
            self.repo_url(&format!("manifests/{key}")),
            headers,
            Some(&mut write),
            true,
        )?;
        if resp.status != 201 && resp.status != 200 {
            return Err(self.status_error(resp, &what));
        }
        if let Some(got) = resp.header("docker-content-digest")
            && got != d.digest.as_str()
        {
            return Err(Error::DigestMismatch(format!(
                "{} stored manifest {} as {got}: the registry rewrote it",
                self.registry, d.digest
            )));
        }
        Ok(())
    }
}

/// Where a blob download's body ends, in bytes of the blob, by its `Content-Length`: from
/// `at` for a 206, from the start for a 200 (whose first `at` bytes are skipped).
fn body_end(resp: &Response, at: u64) -> Option<u64> {
    let len = resp.header("content-length")?.trim().parse::<u64>().ok()?;
    Some(if resp.status == 206 { at + len } else { len })
}

/// The target of a `Link: <…>; rel="next"` header (the tag list's next page).
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then_some(target)
    })
}

/// The `code: message` pairs of a distribution error body, or a short excerpt of the body.
fn registry_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<One>,
    }
    #[derive(serde::Deserialize)]
    struct One {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|o| {
                format!(
                    "{}: {}",
                    o.code.as_deref().unwrap_or("?"),
                    o.message.as_deref().unwrap_or("")
                )
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Reference;

    fn origin() -> Url {
        Url {
            scheme: Scheme::Https,
            authority: "r.io".into(),
            path: "/v2/".into(),
        }
    }

    #[test]
    fn next_link_finds_the_next_page() {
        let h = r#"</v2/app/tags/list?last=v9&n=1000>; rel="next""#;
        assert_eq!(next_link(h), Some("/v2/app/tags/list?last=v9&n=1000"));
        assert_eq!(
            next_link(r#"<https://r.io/a>; rel="prev", <https://r.io/b>; rel=next"#),
            Some("https://r.io/b")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn url_join_and_query() {
        let o = origin();
        let u = o.join("/v2/a/blobs/uploads/abc?_state=x").unwrap();
        assert_eq!(
            u.to_string(),
            "https://r.io/v2/a/blobs/uploads/abc?_state=x"
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(u.with_query("digest", d).path.ends_with(
            "&digest=sha256%3Ae3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ));
        let abs = o.join("http://cdn.example:8080/x").unwrap();
        assert_eq!(
            (abs.scheme, abs.authority.as_str(), abs.path.as_str()),
            (Scheme::Http, "cdn.example:8080", "/x")
        );
        assert_eq!(o.join("https://h").unwrap().path, "/");
        assert!(o.join("relative").is_err());
        assert!(o.join("https:///x").is_err());
    }

    #[test]
    fn retry_delays_grow_with_jitter_and_honour_retry_after() {
        let r = Retry {
            attempts: 3,
            base_delay_ms: 100,
            max_wait_ms: 1000,
        };
        assert_eq!(r.delay_ms(1, 0), 100);
        assert_eq!(r.delay_ms(2, 0), 200);
        assert_eq!(r.delay_ms(3, 50), 450);
        assert!((100..200).contains(&r.delay_ms(1, u64::MAX)));
        assert_eq!(retry_after_ms(Some(" 3 ")), Some(3000));
        assert_eq!(retry_after_ms(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert!(
            retryable_status(503)
                && retryable_status(429)
                && !retryable_status(404)
                && !retryable_status(401)
        );
    }

    #[test]
    fn registry_errors_are_summarised() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(registry_detail(body), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(registry_detail(b"  plain text\n"), "plain text");
    }

    #[test]
    fn a_cut_upload_resumes_restarts_or_gives_up_by_what_is_kept() {
        const MIB: u64 = 1 << 20;
        // The registry holds some of it, and the bytes from there are kept.
        assert_eq!(resume_plan(3 * MIB, 3 * MIB, Some(MIB)), Resume::From(MIB));
        assert_eq!(
            resume_plan(20 * MIB, 8 * MIB, Some(12 * MIB)),
            Resume::From(12 * MIB)
        );
        assert_eq!(
            resume_plan(20 * MIB, 8 * MIB, Some(20 * MIB)),
            Resume::From(20 * MIB)
        );
        // It holds bytes from before what is kept: no way on, unless everything is kept.
        assert_eq!(
            resume_plan(20 * MIB, 8 * MIB, Some(12 * MIB - 1)),
            Resume::GiveUp
        );
        assert_eq!(resume_plan(20 * MIB, 8 * MIB, None), Resume::GiveUp);
        assert_eq!(resume_plan(20 * MIB, 8 * MIB, Some(0)), Resume::GiveUp);
        // The session is gone, holds nothing (or one byte: `0-0`), or claims more than was
        // sent: a new session, if every byte sent is kept.
        assert_eq!(resume_plan(3 * MIB, 3 * MIB, None), Resume::Restart);
        assert_eq!(resume_plan(3 * MIB, 3 * MIB, Some(0)), Resume::Restart);
        assert_eq!(
            resume_plan(3 * MIB, 3 * MIB, Some(4 * MIB)),
            Resume::Restart
        );
        assert_eq!(
            resume_plan(20 * MIB, 8 * MIB, Some(21 * MIB)),
            Resume::GiveUp
        );
        assert_eq!(resume_plan(0, 0, None), Resume::Restart);
        assert_eq!(resume_plan(8 * MIB, 8 * MIB, None), Resume::Restart);
        assert_eq!(resume_plan(8 * MIB + 1, 8 * MIB, None), Resume::GiveUp);
    }

    #[test]
    fn upload_offsets_come_from_the_status_range() {
        assert_eq!(upload_offset("0-1499999"), Some(1_500_000));
        assert_eq!(upload_offset(" bytes=0-9 "), Some(10));
        assert_eq!(upload_offset("0-0"), Some(0));
        for bad in ["", "0-", "5-9", "0--1", "x-3", "0-y"] {
            assert_eq!(upload_offset(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_window_keeps_the_last_bytes_in_order() {
        let mut w = Window::new(10);
        assert_eq!(w.since(0), Some((&[][..], &[][..])));
        // Each byte is its position in the stream, to check the order; room for a write
        // ends where the ring wraps.
        let mut taken = Vec::new();
        for want in [4, 4, 4, 7, 3] {
            let start = w.total() as u8;
            let spare = w.spare(want);
            let n = spare.len();
            for (i, b) in spare.iter_mut().enumerate() {
                *b = start + i as u8;
            }
            let got = w.commit(n).to_vec();
            assert_eq!(got, (start..start + n as u8).collect::<Vec<u8>>());
            taken.extend(got);
        }
        // 4 + 4 + 2 (the ring's end) + 7 + 3 bytes.
        assert_eq!(w.total(), 20);
        assert_eq!(w.kept(), 10);
        let joined = |from| {
            w.since(from).map(|(a, b)| {
                let mut v = a.to_vec();
                v.extend_from_slice(b);
                v
            })
        };
        assert_eq!(joined(10), Some(taken[10..].to_vec()));
        assert_eq!(joined(13), Some(taken[13..].to_vec()));
        assert_eq!(joined(20), Some(vec![]));
        assert_eq!(joined(9), None, "no longer kept");
        assert_eq!(joined(21), None, "never sent");
        // A blob smaller than the window is kept whole.
        let mut small = Window::new(5);
        small.spare(100)[..5].copy_from_slice(b"abcde");
        small.commit(5);
        assert_eq!(small.since(0), Some((&b"abcde"[..], &[][..])));
        assert_eq!(Window::new(0).spare(8).len(), 1, "never an empty read");
    }

    /// An in-memory registry for uploads: its sessions keep what they receive, the next
    /// body requests can be cut or answered with a status, and every request is logged.
    #[derive(Default)]
    struct FakeRegistry {
        state: RefCell<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        sessions: std::collections::BTreeMap<u32, Vec<u8>>,
        next_session: u32,
        blobs: std::collections::BTreeMap<String, Vec<u8>>,
        /// Each of the next body requests is cut after this many bytes, which it keeps.
        cuts: std::collections::VecDeque<usize>,
        /// Each of the next body requests is drained and answered with this status.
        statuses: std::collections::VecDeque<u16>,
        /// As distribution 2.8 does, a cut session is dropped.
        drop_cut_sessions: bool,
        /// The next commit happens, but its answer is lost.
        lose_answer: bool,
        log: Vec<String>,
    }

    /// Accepts `left` bytes, then fails as a cut connection does.
    struct CutWriter<'a> {
        out: &'a mut Vec<u8>,
        left: usize,
    }

    impl Write for CutWriter<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 && !buf.is_empty() {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.left);
            self.out.extend_from_slice(&buf[..n]);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn answer(status: u16, headers: &[(&str, String)]) -> Result<Response> {
        Ok(Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            body: Box::new(std::io::empty()),
        })
    }

    impl Transport for FakeRegistry {
        fn send(&self, req: &Request, body: Option<BodyWriter<'_>>) -> Result<Response> {
            let mut st = self.state.borrow_mut();
            let (path, query) = req.url.path.split_once('?').unwrap_or((&req.url.path, ""));
            st.log.push(format!("{} {path}", req.method.as_str()));
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            if path == "/v2/" {
                return answer(200, &[]);
            }
            if let Some(digest) = path.strip_prefix("/v2/r/blobs/sha256:") {
                let held = st.blobs.contains_key(&format!("sha256:{digest}"));
                return answer(if held { 200 } else { 404 }, &[]);
            }
            if path == "/v2/r/blobs/uploads/" && req.method == Method::Post {
                st.next_session += 1;
                let id = st.next_session;
                st.sessions.insert(id, vec![]);
                return answer(202, &[("location", format!("/v2/r/blobs/uploads/{id}"))]);
            }
            let id: u32 = path
                .strip_prefix("/v2/r/blobs/uploads/")
                .and_then(|id| id.parse().ok())
                .expect("an upload session path");
            let Some(held) = st.sessions.get(&id).map(Vec::len) else {
                return answer(404, &[]);
            };
            let location = ("location", format!("/v2/r/blobs/uploads/{id}"));
            let range = |len: usize| ("range", format!("0-{}", len.saturating_sub(1)));
            if req.method == Method::Get {
                return answer(204, &[location, range(held)]);
            }
            if let Some(range) = header("content-range") {
                assert_eq!(range.split('-').next(), Some(held.to_string().as_str()));
            }
            let mut received = Vec::new();
            let (cut, status) = (st.cuts.pop_front(), st.statuses.pop_front());
            if let Some(write) = body {
                let left = cut.unwrap_or(usize::MAX);
                let written = write(&mut CutWriter {
                    out: &mut received,
                    left,
                });
                if let Err(e) = written {
                    // Cut, or aborted by its writer: what arrived stays in the session.
                    st.sessions.get_mut(&id).unwrap().extend(received);
                    if st.drop_cut_sessions {
                        st.sessions.remove(&id);
                    }
                    return Err(e);
                }
            }
            if let Some(status) = status {
                return answer(status, &[]);
            }
            let session = st.sessions.get_mut(&id).unwrap();
            session.extend(received);
            if req.method == Method::Patch {
                let len = session.len();
                return answer(202, &[location, range(len)]);
            }
            let digest = query
                .strip_prefix("digest=")
                .expect("a digest")
                .replace("%3A", ":");
            if Digest::of(session).as_str() != digest {
                return answer(400, &[]);
            }
            let blob = st.sessions.remove(&id).unwrap();
            st.blobs.insert(digest, blob);
            if std::mem::take(&mut st.lose_answer) {
                return Err(Error::Unreachable("the answer was lost".into()));
            }
            answer(201, &[])
        }
        fn now(&self) -> u64 {
            0
        }
        fn sleep_ms(&self, _: u64) {}
        fn random(&self) -> u64 {
            0
        }
    }

    fn blob_bytes(size: usize) -> Vec<u8> {
        (0..size)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect()
    }

    /// Uploads `data` (declared as `declared`) through the fake, with `attempts` retries:
    /// the outcome, the report lines, and the requests as `METHOD path`.
    fn upload_to(
        fake: &FakeRegistry,
        data: &[u8],
        declared: &[u8],
        attempts: u32,
    ) -> (Result<()>, Vec<String>, Vec<String>) {
        let lines = RefCell::new(Vec::new());
        let report = |l: &str| lines.borrow_mut().push(l.to_owned());
        let net = Net {
            retry: Retry {
                attempts,
                base_delay_ms: 1,
                max_wait_ms: 60_000,
            },
            report: &report,
        };
        let reference = Reference::parse("127.0.0.1:5000/r").unwrap();
        let client =
            Client::connect(fake, &reference, None, Access::push(vec![]), &[], net).unwrap();
        let d = Descriptor {
            media_type: "application/octet-stream".into(),
            digest: Digest::of(declared),
            size: declared.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        let mut rest = data;
        let mut read = |b: &mut [u8]| rest.read(b).map_err(|e| Error::Io(e.to_string()));
        let mismatch = |m: crate::digest::Mismatch| Error::DigestMismatch(m.to_string());
        let mut blob = crate::digest::Verifying::new(&d.digest, d.size, &mut read, &mismatch);
        let result = client
            .upload(&d, &mut |b| blob.read(b))
            .and_then(Committing::finish);
        let log = std::mem::take(&mut fake.state.borrow_mut().log);
        let lines = lines.borrow().clone();
        (result, lines, log)
    }

    fn stored(fake: &FakeRegistry, data: &[u8]) -> bool {
        fake.state.borrow().blobs.get(Digest::of(data).as_str()) == Some(&data.to_vec())
    }

    #[test]
    fn a_normal_upload_is_one_post_and_one_put() {
        let fake = FakeRegistry::default();
        let data = blob_bytes(3 << 20 | 123);
        let (r, lines, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(
            log[1..],
            ["POST /v2/r/blobs/uploads/", "PUT /v2/r/blobs/uploads/1"]
        );
    }

    #[test]
    fn an_upload_answered_late_with_a_failure_resumes_from_what_it_kept() {
        let fake = FakeRegistry::default();
        // The first body request is drained and answered 503, after the second upload began.
        fake.state.borrow_mut().statuses = [503].into();
        let lines = RefCell::new(Vec::<String>::new());
        let report = |l: &str| lines.borrow_mut().push(l.to_owned());
        let net = Net {
            retry: Retry {
                attempts: 2,
                base_delay_ms: 1,
                max_wait_ms: 60_000,
            },
            report: &report,
        };
        let reference = Reference::parse("127.0.0.1:5000/r").unwrap();
        let client =
            Client::connect(&fake, &reference, None, Access::push(vec![]), &[], net).unwrap();
        let (first, second) = (blob_bytes(2 << 20), blob_bytes(5000));
        let send = |data: &[u8]| {
            let d = Descriptor {
                media_type: "application/octet-stream".into(),
                digest: Digest::of(data),
                size: data.len() as u64,
                platform: None,
                annotations: Default::default(),
            };
            let mut rest = data;
            client
                .upload(&d, &mut |b| {
                    rest.read(b).map_err(|e| Error::Io(e.to_string()))
                })
                .unwrap()
        };
        let committing = send(&first);
        let next = send(&second);
        assert!(
            !stored(&fake, &first),
            "the registry refused the first body"
        );
        committing.finish().unwrap();
        next.finish().unwrap();
        assert!(stored(&fake, &first) && stored(&fake, &second));
        let log = std::mem::take(&mut fake.state.borrow_mut().log);
        assert_eq!(
            log[1..],
            [
                "POST /v2/r/blobs/uploads/",
                "PUT /v2/r/blobs/uploads/1",
                "POST /v2/r/blobs/uploads/",
                "PUT /v2/r/blobs/uploads/2",
                "GET /v2/r/blobs/uploads/1",
                &format!("HEAD /v2/r/blobs/{}", Digest::of(&first)),
                "POST /v2/r/blobs/uploads/",
                "PUT /v2/r/blobs/uploads/3",
            ]
        );
        let lines = lines.borrow();
        assert!(
            lines.len() == 1 && lines[0].contains("from byte 0 in a new upload session"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_cut_upload_resumes_with_a_patch_where_the_registry_has_it() {
        let fake = FakeRegistry::default();
        // The PUT is cut, then the PATCH resuming it is too.
        fake.state.borrow_mut().cuts = [1_500_000, 600_000].into();
        let data = blob_bytes(3 << 20 | 123);
        let (r, lines, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert_eq!(
            log[1..],
            [
                "POST /v2/r/blobs/uploads/",
                "PUT /v2/r/blobs/uploads/1",
                "GET /v2/r/blobs/uploads/1",
                &format!("HEAD /v2/r/blobs/{}", Digest::of(&data)),
                "PATCH /v2/r/blobs/uploads/1",
                "GET /v2/r/blobs/uploads/1",
                &format!("HEAD /v2/r/blobs/{}", Digest::of(&data)),
                "PATCH /v2/r/blobs/uploads/1",
                "PUT /v2/r/blobs/uploads/1",
            ]
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("resuming upload of blob sha256:")
                && lines[0].contains("at byte 1500000 of 3145851")
                && lines[0].contains("(retry 1 of 4)"),
            "{lines:?}"
        );
        assert!(lines[1].contains("at byte 2100000 of"), "{lines:?}");
    }

    #[test]
    fn a_dropped_session_restarts_when_everything_sent_is_kept() {
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().drop_cut_sessions = true;
        fake.state.borrow_mut().cuts = [1_500_000].into();
        let data = blob_bytes(3 << 20);
        let (r, lines, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert_eq!(log.iter().filter(|l| l.starts_with("POST")).count(), 2);
        assert!(!log.iter().any(|l| l.starts_with("PATCH")), "{log:?}");
        assert!(
            lines[0].contains("from byte 0 in a new upload session")
                && lines[0].contains("dropped the session"),
            "{lines:?}"
        );
        // A retryable status: the session holds nothing (`0-0`), so a new one is used too.
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().statuses = [503].into();
        let (r, lines, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert_eq!(log.iter().filter(|l| l.starts_with("POST")).count(), 2);
        assert!(
            lines[0].contains("after HTTP 503") && lines[0].contains("holds none of it"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_cut_that_leaves_unkept_bytes_behind_fails_clearly() {
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().drop_cut_sessions = true;
        let cut = UPLOAD_WINDOW + (1 << 20);
        fake.state.borrow_mut().cuts = [cut].into();
        let data = blob_bytes(UPLOAD_WINDOW + (3 << 20));
        let (r, lines, _) = upload_to(&fake, &data, &data, 4);
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Unreachable(_)), "{e}");
        let e = e.to_string();
        for says in [
            format!("blob {}", Digest::of(&data)),
            format!("of its {} bytes", data.len()),
            "dropped the upload session".into(),
            format!("keeps the last {UPLOAD_WINDOW} bytes"),
            "run the push again".into(),
        ] {
            assert!(e.contains(&says), "{says:?} not in {e}");
        }
        assert!(lines.is_empty(), "{lines:?}");
        assert!(!stored(&fake, &data));
        // Where the registry keeps the session, the same cut resumes.
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().cuts = [cut].into();
        let (r, _, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert!(log.iter().any(|l| l.starts_with("PATCH")));
    }

    #[test]
    fn without_retries_a_cut_upload_fails_at_once() {
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().cuts = [100].into();
        let data = blob_bytes(1 << 20);
        let (r, _, log) = upload_to(&fake, &data, &data, 0);
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with("registry unreachable") && e.contains("retries are off"),
            "{e}"
        );
        assert_eq!(log.iter().filter(|l| l.starts_with("PUT")).count(), 1);
    }

    #[test]
    fn a_lost_answer_is_found_by_asking_for_the_blob() {
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().lose_answer = true;
        let data = blob_bytes(100_000);
        let (r, lines, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert_eq!(log.iter().filter(|l| l.starts_with("PUT")).count(), 1);
        assert!(
            lines[0].contains("the registry holds the blob"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_corrupt_blob_is_neither_committed_nor_resumed() {
        let data = blob_bytes(3 << 20);
        let mut corrupt = data.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        for cuts in [vec![], vec![1_500_000]] {
            let fake = FakeRegistry::default();
            fake.state.borrow_mut().cuts = cuts.clone().into();
            let (r, _, log) = upload_to(&fake, &corrupt, &data, 4);
            let e = r.unwrap_err();
            assert!(matches!(e, Error::DigestMismatch(_)), "{cuts:?}: {e}");
            assert!(fake.state.borrow().blobs.is_empty());
            // One resume for the cut, none for the mismatch.
            let bodies = log
                .iter()
                .filter(|l| l.starts_with("PUT") || l.starts_with("PATCH"))
                .count();
            assert_eq!(bodies, 1 + cuts.len(), "{log:?}");
        }
    }
}
