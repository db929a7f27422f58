//! A registry client for the distribution API, over a narrow [`Transport`] seam.
//!
//! The client does the protocol (scheme choice, authentication, manifests, streamed and
//! verified blobs, uploads); the transport only moves one HTTP exchange. The component
//! implements the transport with wasi-http; nothing here touches I/O directly.
//!
//! One concern per file: [`http`] the vocabulary and the transport's contract, [`redirect`]
//! redirects, `auth` authorization, `retry` retries, `error` the registry's errors,
//! `manifests`, `tags`, `blobs` and `upload` the resources.

mod auth;
mod blobs;
mod error;
#[cfg(test)]
mod fake;
pub mod http;
mod manifests;
pub mod redirect;
mod retry;
mod tags;
mod upload;

pub use auth::{Access, Credentials};
pub use blobs::{Mount, mount_declined};
pub use http::{BodyWriter, Method, Pending, Request, Response, Scheme, Transport, Url};
pub use redirect::{MAX_REDIRECTS, Refused, follow, followed, resolve};
pub use retry::{Retry, retry_after_ms, retryable_status};
pub use tags::next_link;
pub use upload::{BlobSource, Committing, Resume, UPLOAD_WINDOW, resume_plan, upload_offset};

use crate::auth::Challenge;
use crate::error::{Error, Result};
use crate::reference::{Reference, is_loopback_host};
use auth::{AuthState, Authorize};
use error::{ERROR_BODY_LIMIT, registry_detail};
use std::cell::RefCell;

/// Where progress and retry notices go; stderr in the component.
pub trait Reporter {
    fn line(&self, text: &str);
}

impl<F: Fn(&str)> Reporter for F {
    fn line(&self, text: &str) {
        self(text)
    }
}

/// How a client behaves on the network.
#[derive(Clone, Copy)]
pub struct Net<'t> {
    pub retry: Retry,
    pub report: &'t dyn Reporter,
    /// Blob uploads go in `PATCH` chunks of this many bytes (more if the registry asks);
    /// 0 for one whole-body `PUT`, with chunks only once a registry refuses that.
    pub chunk_size: u64,
}

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
    /// The chunk size of the next uploads ([`Net::chunk_size`], until the registry refuses
    /// whole-body uploads).
    chunk_size: std::cell::Cell<u64>,
}

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
            chunk_size: std::cell::Cell::new(net.chunk_size),
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
        if ping.status == 401 {
            let challenges: Vec<Challenge> = ping
                .header("www-authenticate")
                .map(crate::auth::parse_challenges)
                .unwrap_or_default();
            client.authenticate(&challenges)?;
        } else {
            client.expect(ping, 200..300, "GET /v2/")?;
        }
        Ok(client)
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn ping(&self, retry: bool) -> Result<Response> {
        let request = Request {
            method: Method::Get,
            url: self.url("/v2/"),
            headers: vec![],
        };
        self.send_as(request, None, retry, &Authorize::Registry)
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

    /// Sends a request with this registry's authorization, through the one stack every
    /// request of the client takes: retries ([`retry`]) around authorization with one token
    /// renewal (`auth`) around the redirect rules ([`redirect`]) around the transport.
    /// `replayable`: the body can be written again, so the request may be sent again.
    fn send(
        &self,
        method: Method,
        url: Url,
        headers: Vec<(String, String)>,
        body: Option<BodyWriter<'_>>,
        replayable: bool,
    ) -> Result<Response> {
        let request = Request {
            method,
            url,
            headers,
        };
        self.send_as(request, body, replayable, &Authorize::Registry)
    }

    /// [`Client::send`], with the `Authorization` of `who`.
    fn send_as(
        &self,
        request: Request,
        mut body: Option<BodyWriter<'_>>,
        replayable: bool,
        who: &Authorize,
    ) -> Result<Response> {
        self.with_retries(&request, replayable, &mut |_| {
            let b = body.as_mut().map(|w| &mut **w as BodyWriter<'_>);
            self.send_authorized(&request, b, replayable, who)
        })
    }

    /// Starts a request whose answer is awaited later (an upload's `PUT`), with the
    /// registry's authorization and under the redirect rules; never sent again here: its
    /// body cannot be written twice, and the upload's resume takes over.
    fn start(&self, request: Request, body: Option<BodyWriter<'_>>) -> Result<Pending> {
        self.start_authorized(&request, body, &Authorize::Registry)
    }
}
