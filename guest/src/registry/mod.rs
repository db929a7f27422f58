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

/// How a failed TLS handshake shows that the server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// Its certificate was not trusted.
    Certificate,
    /// It refused the handshake otherwise (a TLS alert, no common version).
    Refused,
}

/// Whether a transport failure shows that the server speaks TLS: the imo host says so in
/// words (`speaks TLS`, with `a certificate that is not trusted`), other wasi-http hosts
/// with the error codes for a certificate or a TLS alert. A plain-HTTP server's answer to
/// a TLS hello is none of these (`TlsProtocolError`, or the connection closed).
fn speaks_tls(message: &str) -> Option<Tls> {
    if message.contains("with a certificate that is not trusted")
        || message.contains("TlsCertificateError")
    {
        Some(Tls::Certificate)
    } else if message.contains(" speaks TLS") || message.contains("TlsAlertReceived") {
        Some(Tls::Refused)
    } else {
        None
    }
}

/// What to do about a TLS failure of the registry at `authority` (or its token service,
/// which has the registry's TLS settings): nothing for a failure that is not a certificate.
fn tls_advice(message: &str, authority: &str) -> String {
    match speaks_tls(message) {
        Some(Tls::Certificate) => format!(
            " (to trust a private CA or the registry's self-signed certificate, put it in a \
             DIR given with --cert-dir DIR, or in /etc/containers/certs.d/{authority}/, as a \
             .crt file; --tls-verify=false skips the check, for test registries only)"
        ),
        _ => String::new(),
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

/// How a client behaves on the network.
#[derive(Clone, Copy)]
pub struct Net<'t> {
    pub retry: Retry,
    pub report: &'t dyn Reporter,
    /// Blob uploads go in `PATCH` chunks of this many bytes (more if the registry asks);
    /// 0 for one whole-body `PUT`, with chunks only once a registry refuses that.
    pub chunk_size: u64,
}

#[cfg(test)]
impl<'t> Net<'t> {
    /// For tests: `attempts` retries a millisecond apart (within `max_wait_ms`), whole-body
    /// uploads, lines to `report`.
    pub fn testing(attempts: u32, max_wait_ms: u64, report: &'t dyn Reporter) -> Self {
        let retry = Retry {
            attempts,
            base_delay_ms: 1,
            max_wait_ms,
        };
        Net {
            retry,
            report,
            chunk_size: 0,
        }
    }
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
    /// and those the user named insecure, and never when the HTTPS failure shows that the
    /// registry speaks TLS (a certificate refused, a TLS alert): that failure is the answer,
    /// reported at once with what to do.
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
            Err(Error::Unreachable(e)) if speaks_tls(&e).is_some() => {
                let advice = tls_advice(&e, &client.origin.authority);
                return Err(Error::Unreachable(format!(
                    "{}: {e}{advice}",
                    client.registry
                )));
            }
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
            // The token service has the registry's TLS settings (the host's policy), so
            // the same advice holds for it.
            client.authenticate(&challenges).map_err(|e| match e {
                Error::Unreachable(m) => {
                    let advice = tls_advice(&m, &client.origin.authority);
                    Error::Unreachable(format!("{m}{advice}"))
                }
                e => e,
            })?;
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
        self.with_retries(&request, retry, &mut |_| {
            self.send_authorized(&request, None, retry, &Authorize::Registry)
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Fails every HTTPS request with `https`, answers plain HTTP with a registry's 200,
    /// and logs each request's URL.
    struct TlsPort {
        https: &'static str,
        log: RefCell<Vec<String>>,
    }

    impl Transport for TlsPort {
        fn send(&self, req: &Request, _: Option<BodyWriter<'_>>) -> Result<Response> {
            self.log.borrow_mut().push(req.url.to_string());
            match req.url.scheme {
                Scheme::Https => Err(Error::Unreachable(format!(
                    "GET {}: {}",
                    req.url, self.https
                ))),
                Scheme::Http => Ok(Response {
                    status: 200,
                    headers: vec![],
                    body: Box::new(std::io::empty()),
                }),
            }
        }
        fn now(&self) -> u64 {
            0
        }
        fn sleep_ms(&self, _: u64) {}
        fn random(&self) -> u64 {
            0
        }
    }

    fn connect(registry: &str, https: &'static str) -> (Result<()>, Vec<String>) {
        let port = TlsPort {
            https,
            log: RefCell::new(vec![]),
        };
        let net = Net {
            retry: Retry::default(),
            ..Net::testing(0, 0, &|_: &str| {})
        };
        let reference = Reference::parse(&format!("{registry}/app")).unwrap();
        let result = Client::connect(&port, &reference, None, Access::pull(), &[], net).map(|_| ());
        (result, port.log.into_inner())
    }

    #[test]
    fn a_server_that_speaks_tls_is_never_tried_over_plain_http_nor_again() {
        let refused = r#"ErrorCode::InternalError(Some("TLS handshake failed: 127.0.0.1:5000 speaks TLS with a certificate that is not trusted: invalid peer certificate: UnknownIssuer"))"#;
        let (result, log) = connect("127.0.0.1:5000", refused);
        let e = result.unwrap_err().to_string();
        assert_eq!(log, ["https://127.0.0.1:5000/v2/"]);
        assert!(
            e.contains("UnknownIssuer")
                && e.contains("--cert-dir")
                && e.contains("/etc/containers/certs.d/127.0.0.1:5000/")
                && !e.contains("plain HTTP"),
            "{e}"
        );
        // Nor retried elsewhere, where plain HTTP is no option anyway.
        let (result, log) = connect("r.example", refused);
        assert_eq!(log, ["https://r.example/v2/"]);
        assert!(!result.unwrap_err().to_string().contains("--insecure"));
        // Other hosts say it with error codes; an alert is no certificate problem.
        for (code, advice) in [
            ("ErrorCode::TlsCertificateError", true),
            ("ErrorCode::TlsAlertReceived(..)", false),
        ] {
            let (result, log) = connect("127.0.0.1:5000", code);
            assert_eq!(log.len(), 1, "{code}");
            let e = result.unwrap_err().to_string();
            assert_eq!(e.contains("--cert-dir"), advice, "{e}");
        }
    }

    #[test]
    fn a_loopback_server_that_does_not_speak_tls_is_tried_over_plain_http() {
        let (result, log) = connect("127.0.0.1:5000", "ErrorCode::TlsProtocolError");
        result.unwrap();
        assert_eq!(
            log,
            ["https://127.0.0.1:5000/v2/", "http://127.0.0.1:5000/v2/"]
        );
    }
}
