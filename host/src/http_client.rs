//! Outgoing connections for the component: TCP, TLS with the system's trust roots plus the
//! CAs the user names, and HTTP/1.1. It replaces wasmtime-wasi-http's default sender, which
//! trusts only a bundled root list.
//!
//! ```rust
//! use imo::http_client::{Connector, TlsSettings};
//!
//! let mut settings = TlsSettings::system();
//! settings.cert_dir = Some("/etc/pki/site-ca".into());
//! let connector = Connector::new(settings);
//! ```

use crate::authority::Authority;
use crate::trust::{Trusted, crt_files};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Where per-registry CAs live, as for podman/skopeo and docker: `DIR/HOST[:PORT]/*.crt`.
///
/// ```rust
/// let dirs = imo::http_client::TlsSettings::system().certs_d;
/// assert_eq!(dirs, imo::http_client::CERTS_D.map(std::path::PathBuf::from));
/// ```
pub const CERTS_D: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// How long the client waits on a registry before it gives up on a request, which the
/// component then retries (resuming a cut download with `Range`).
///
/// ```rust
/// use std::time::Duration;
///
/// let t = imo::http_client::Timeouts::default();
/// assert_eq!((t.connect, t.idle), (Duration::from_secs(30), Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the TCP connection.
    pub connect: Duration,
    /// For each wait on the registry: each step of the TLS handshake (all of it within
    /// `connect`), the registry taking more of a request body, the first byte of an answer
    /// once the request is sent, and the next bytes of a body. A body must also bring at
    /// least [`MIN_BYTES_PER_IDLE`] per `idle` spent waiting, so a registry trickling a byte
    /// at a time is given up on too.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

/// Below this many bytes per [`Timeouts::idle`] spent waiting, a body counts as stalled.
pub const MIN_BYTES_PER_IDLE: u64 = 1024;

/// A registry that stopped answering, for the final error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// The registry's `host[:port]`.
    pub authority: String,
    /// How long imo waited.
    pub after: Duration,
    /// What it waited for.
    pub kind: StallKind,
}

/// What a registry failed to do in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallKind {
    /// Accept the TCP connection.
    Connect,
    /// Send anything (a TLS handshake, an answer, the rest of a body).
    Silent,
    /// Send a body faster than [`MIN_BYTES_PER_IDLE`] per idle period.
    Trickle,
    /// Take more of a request body (it stopped reading an upload).
    Unread,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (who, secs) = (&self.authority, self.after.as_secs_f64());
        match self.kind {
            StallKind::Connect => write!(f, "{who} accepted no connection for {secs} s"),
            StallKind::Silent => write!(f, "{who} sent nothing for {secs} s"),
            StallKind::Trickle => write!(
                f,
                "{who} sent less than {MIN_BYTES_PER_IDLE} bytes in {secs} s"
            ),
            StallKind::Unread => write!(f, "{who} took no more of the request body for {secs} s"),
        }
    }
}
/// Idle connections kept per registry for reuse: as many as a vet has `HEAD`s in flight, so
/// that each round of them finds its connections open.
const MAX_IDLE: usize = 8;

type Sender = hyper::client::conn::http1::SendRequest<WasiBody>;

/// TLS choices for one command. `Default` trusts only the system's roots;
/// [`TlsSettings::system`] adds the system's per-registry directories.
///
/// What the user trusts (`cert_dir`, `certs_d`) counts two ways: as a CA that may sign the
/// server's certificate, and as the server's own certificate. The second is what a
/// self-signed certificate needs (`openssl req -x509 … -addext subjectAltName=IP:…` makes
/// one marked as a CA, which the WebPKI rules refuse as a server's): a server presenting
/// exactly (byte for byte) a certificate the user trusted is accepted if that certificate
/// names the server (its subjectAltName holds the host name or address), is within its
/// validity period, and the server proves it holds its key in the handshake, as curl and
/// skopeo accept it.
///
/// A token service that a registry's challenge names (its `realm`) gets that registry's
/// settings too, besides its own: the registry's `certs_d` directory and, if the registry is
/// in `skip_verify`, no verification; skopeo does the same. Other hosts a registry points to
/// (redirects to blob storage) are verified by their own settings only.
///
/// ```rust
/// let settings = imo::http_client::TlsSettings {
///     cert_dir: Some("/etc/pki/site-ca".into()),
///     skip_verify: vec!["registry.test:5000".into()],
///     ..imo::http_client::TlsSettings::system()
/// };
/// assert_eq!(settings.certs_d.len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// `--cert-dir`: every `*.crt` in it is a trusted CA for every registry.
    pub cert_dir: Option<PathBuf>,
    /// Directories holding `HOST[:PORT]/*.crt`; [`CERTS_D`] unless a test says otherwise.
    pub certs_d: Vec<PathBuf>,
    /// Authorities (`host[:port]`) whose certificates are not verified (`--tls-verify=false`),
    /// and the token services they name.
    pub skip_verify: Vec<String>,
}

impl TlsSettings {
    /// The system's trust: its roots, and the per-registry CAs under [`CERTS_D`].
    ///
    /// ```rust
    /// let settings = imo::http_client::TlsSettings::system();
    /// assert!(settings.cert_dir.is_none() && settings.skip_verify.is_empty());
    /// ```
    pub fn system() -> Self {
        Self {
            certs_d: CERTS_D.iter().map(PathBuf::from).collect(),
            ..Self::default()
        }
    }
}

/// Sends the component's requests: builds and caches a client configuration per
/// authority, from its [`TlsSettings`]. See [`Connector::send`].
///
/// ```rust
/// use imo::http_client::{Connector, TlsSettings};
///
/// // Trust a test registry's own CA besides the system's roots.
/// let connector = Connector::new(TlsSettings {
///     cert_dir: Some("/srv/test-registry/ca".into()),
///     ..TlsSettings::system()
/// });
/// ```
pub struct Connector {
    settings: TlsSettings,
    system_roots: Vec<CertificateDer<'static>>,
    configs: Mutex<HashMap<String, Arc<ClientConfig>>>,
    /// For each token realm (`host`, port), the registries whose challenges named it: it
    /// gets their TLS settings too.
    realms: Mutex<HashMap<(String, u16), BTreeSet<String>>>,
    /// Open HTTP/1.1 connections by (TLS, authority), for the next `GET` or `HEAD`: a vet
    /// or push asks one question per blob, and a new TCP and TLS handshake for each would
    /// cost two or three round trips more over a real network.
    idle: Mutex<HashMap<(bool, String), Vec<Sender>>>,
    timeouts: Timeouts,
    /// The last registry that stopped answering, for the final error.
    stall: Arc<Mutex<Option<Stall>>>,
}

impl Connector {
    /// A connector trusting the system's roots (read once, here) and what `settings` add.
    /// CA files are read at the first request to each authority, and errors reported there.
    ///
    /// ```rust
    /// let connector = imo::http_client::Connector::new(imo::http_client::TlsSettings::system());
    /// ```
    pub fn new(settings: TlsSettings) -> Self {
        // Unreadable system certificates leave only the user's CAs; the handshake then
        // reports an unknown issuer, which says what to fix.
        let system_roots = rustls_native_certs::load_native_certs().certs;
        Self {
            settings,
            system_roots,
            configs: Mutex::new(HashMap::new()),
            realms: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
            timeouts: Timeouts::default(),
            stall: Arc::default(),
        }
    }

    /// The same connector, waiting on registries as long as `timeouts` say.
    ///
    /// ```rust
    /// use imo::http_client::{Connector, Timeouts, TlsSettings};
    /// use std::time::Duration;
    ///
    /// let connector = Connector::new(TlsSettings::system()).with_timeouts(Timeouts {
    ///     idle: Duration::from_secs(5),
    ///     ..Timeouts::default()
    /// });
    /// assert!(connector.last_stall().is_none());
    /// ```
    pub fn with_timeouts(self, timeouts: Timeouts) -> Self {
        Self { timeouts, ..self }
    }

    /// The last registry that stopped answering (and the request was given up), if any.
    pub fn last_stall(&self) -> Option<Stall> {
        self.stall.lock().expect("stall lock").clone()
    }

    /// An idle connection to `key` that can take a request now, if any.
    fn take_idle(&self, key: &(bool, String)) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.get_mut(key)?;
        // Busy ones (a response body still streaming) and closed ones are let go: a busy
        // connection closes by itself once its response is read.
        while let Some(sender) = list.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn keep_idle(&self, key: (bool, String), sender: Sender) {
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE && !sender.is_closed() {
            list.push(sender);
        }
    }

    fn config(&self, authority: &str) -> Result<Arc<ClientConfig>, String> {
        if let Some(c) = self.configs.lock().expect("tls lock").get(authority) {
            return Ok(c.clone());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        // This authority's own settings, and those of the registries naming it as realm.
        let mut whose = vec![authority.to_owned()];
        whose.extend(self.realm_of(authority));
        let skip = whose
            .iter()
            .any(|w| (self.settings.skip_verify.iter()).any(|a| same_authority(a, w)));
        let config = if skip {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Trusted::any(provider)))
                .with_no_client_auth()
        } else {
            let mut dirs: Vec<PathBuf> = self.settings.cert_dir.iter().cloned().collect();
            for w in &whose {
                dirs.extend(self.settings.certs_d.iter().map(|d| d.join(w)));
            }
            let mut trusted = Vec::new();
            for dir in dirs {
                trusted.extend(crt_files(&dir)?.into_iter().map(|c| (dir.clone(), c)));
            }
            let verifier = Trusted::new(provider, &self.system_roots, trusted)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        };
        let config = Arc::new(config);
        self.configs
            .lock()
            .expect("tls lock")
            .insert(authority.to_owned(), config.clone());
        Ok(config)
    }

    /// The registries whose challenges named `authority` as their token realm.
    fn realm_of(&self, authority: &str) -> Vec<String> {
        let Some(key) = authority_key(authority) else {
            return vec![];
        };
        let realms = self.realms.lock().expect("realm lock");
        realms
            .get(&key)
            .map_or(vec![], |r| r.iter().cloned().collect())
    }

    /// Notes the token realms a response of `authority` names, so that they get its TLS
    /// settings; a realm's configuration is built anew when it gains a registry.
    fn learn_realms(&self, authority: &str, headers: &http::HeaderMap) {
        for value in headers.get_all(http::header::WWW_AUTHENTICATE) {
            let Ok(value) = value.to_str() else { continue };
            for challenge in imo_guest::auth::parse_challenges(value) {
                let Some(realm) = challenge.param("realm") else {
                    continue;
                };
                let Some(rest) = realm.strip_prefix("https://") else {
                    continue;
                };
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let target = rest[..end]
                    .rsplit_once('@')
                    .map_or(&rest[..end], |(_, a)| a);
                let Some(key) = authority_key(target) else {
                    continue;
                };
                if same_authority(target, authority) {
                    continue;
                }
                let added = (self.realms.lock().expect("realm lock"))
                    .entry(key)
                    .or_default()
                    .insert(authority.to_owned());
                if added {
                    let mut configs = self.configs.lock().expect("tls lock");
                    configs.retain(|a, _| !same_authority(a, target));
                }
            }
        }
    }

    /// Sends one request (TLS for `https`), on an idle connection to the same registry if
    /// there is one, returning the response; its body streams from the connection until
    /// read to its end. Every wait on the registry is bounded by the connector's
    /// [`Timeouts`] (the connect wait by `options` too, where shorter); a request given up
    /// on fails with the wasi-http error for it (`connection-timeout`,
    /// `connection-write-timeout`, `HTTP-response-timeout`, `connection-read-timeout`) and
    /// is recorded as the [`last_stall`](Self::last_stall).
    ///
    /// ```rust
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let port = listener.local_addr()?.port();
    /// # tokio::spawn(async move {
    /// #     let (mut socket, _) = listener.accept().await.unwrap();
    /// #     let mut head = Vec::new();
    /// #     while !head.ends_with(b"\r\n\r\n") {
    /// #         head.push(socket.read_u8().await.unwrap());
    /// #     }
    /// #     let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
    /// #     socket.write_all(answer.as_bytes()).await.unwrap();
    /// # });
    /// use http_body_util::{BodyExt as _, Empty};
    ///
    /// // A registry listens on 127.0.0.1:`port`.
    /// let connector = imo::http_client::Connector::new(imo::http_client::TlsSettings::system());
    /// let request = http::Request::get(format!("http://127.0.0.1:{port}/v2/"))
    ///     .body(Empty::new().map_err(|never| match never {}).boxed_unsync())?;
    /// let response = connector.send(request, None).await?;
    /// assert_eq!(response.status(), 200);
    /// assert_eq!(response.into_body().collect().await?.to_bytes(), "{}");
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, Error> {
        let limits = Limits::new(self.timeouts, options);
        let uri = request.uri().clone();
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let authority = uri
            .authority()
            .ok_or(Error::HttpRequestUriInvalid)?
            .as_str()
            .to_owned();
        let address = if uri.port().is_some() {
            authority.clone()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        // The origin-form target: scheme and authority travel in the Host header.
        *request.uri_mut() = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let watch = Watch {
            authority: authority.clone(),
            record: self.stall.clone(),
        };
        let key = (tls, authority.clone());
        // Only requests without a body go on a reused connection: if the server closed it
        // meanwhile (every pool races with that), nothing was sent and the request goes again
        // on a new one. A body streamed from the component could not be sent twice.
        if matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
            while let Some(mut sender) = self.take_idle(&key) {
                let again = bodiless_copy(&request);
                match answer(&mut sender, request, &limits, &watch).await {
                    Ok(response) => {
                        self.keep_idle(key, sender);
                        self.learn_realms(&authority, response.headers());
                        return Ok(watched(response, &limits, &watch));
                    }
                    Err(e @ Error::HttpResponseTimeout) => return Err(e),
                    Err(_) => request = again,
                }
            }
        }
        let tcp = tokio::time::timeout(limits.connect, tokio::net::TcpStream::connect(&address))
            .await
            .map_err(|_| {
                watch.stalled(StallKind::Connect, limits.connect, Error::ConnectionTimeout)
            })?
            .map_err(Error::Connect)?;
        let (mut sender, driver) = if tls {
            let config = self
                .config(&authority)
                .map_err(|e| Error::Tls(std::io::Error::other(e)))?;
            let name = server_name(&authority).ok_or(Error::HttpRequestUriInvalid)?;
            let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
            let stream = tokio::time::timeout(limits.handshake, handshake)
                .await
                .map_err(|_| {
                    let e = Error::ConnectionTimeout;
                    watch.stalled(StallKind::Silent, limits.handshake, e)
                })?
                .map_err(|e| Error::Tls(handshake_failure(&authority, e)))?;
            connection(stream).await?
        } else {
            connection(tcp).await?
        };
        let response = match answer(&mut sender, request, &limits, &watch).await {
            Ok(response) => response,
            Err(e) => {
                // A connection stuck writing a body nobody reads would hold it forever.
                if matches!(e, Error::ConnectionWriteTimeout) {
                    driver.abort();
                }
                return Err(e);
            }
        };
        self.keep_idle(key, sender);
        self.learn_realms(&authority, response.headers());
        Ok(watched(response, &limits, &watch))
    }
}

/// The same bodiless request again (for a retry on a new connection).
fn bodiless_copy(request: &http::Request<WasiBody>) -> http::Request<WasiBody> {
    use http_body_util::{BodyExt as _, Empty};
    let mut copy = http::Request::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// The response, its body given up on if the registry stops sending.
fn watched(
    response: http::Response<hyper::body::Incoming>,
    limits: &Limits,
    watch: &Watch,
) -> http::Response<WasiBody> {
    use http_body_util::BodyExt as _;
    response.map(|body| {
        Watched {
            inner: body.map_err(Error::Hyper).boxed_unsync(),
            idle: limits.between_bytes,
            watch: watch.clone(),
            sleep: Box::pin(tokio::time::sleep(limits.between_bytes)),
            waiting_since: None,
            waited: Duration::ZERO,
            bytes: 0,
        }
        .boxed_unsync()
    })
}

/// An HTTP/1.1 connection over `stream`, driven in the background (the task's handle, to
/// end it).
async fn connection<S>(stream: S) -> Result<(Sender, tokio::task::AbortHandle), Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let io = wasmtime_wasi_http::io::TokioIo::new(stream);
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(Error::Hyper)?;
    // The connection drives both directions until the response body is read to its end,
    // then waits for the next request or closes when the sender is dropped.
    let driver = tokio::spawn(connection).abort_handle();
    Ok((sender, driver))
}

/// Said of a server whose TLS handshake failed in a way that shows it speaks TLS (it sent a
/// certificate, or a TLS alert), so that the component tries no plain HTTP there; the
/// component looks for these words.
pub const SPEAKS_TLS: &str = "speaks TLS";
/// Said when the server's certificate was the reason; follows [`SPEAKS_TLS`].
pub const UNTRUSTED_CERTIFICATE: &str = "with a certificate that is not trusted";

/// A failed handshake with `authority`, saying whether the server speaks TLS at all: a
/// plain-HTTP server answers a TLS hello with a text that is no TLS record, or closes.
fn handshake_failure(authority: &str, e: std::io::Error) -> std::io::Error {
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return e;
    };
    let what = match tls {
        rustls::Error::InvalidMessage(_) => return e,
        rustls::Error::InvalidCertificate(_) => {
            format!("{authority} {SPEAKS_TLS} {UNTRUSTED_CERTIFICATE}: {tls}")
        }
        _ => format!("{authority} {SPEAKS_TLS}, but the handshake failed: {tls}"),
    };
    std::io::Error::new(e.kind(), what)
}

/// Sends `request` and waits for the head of the answer: while the request body is still
/// being sent, as long as the registry keeps taking it (an upload may take long, but one it
/// stops reading fails after `limits.between_bytes`), then at most `limits.first_byte`.
async fn answer(
    sender: &mut Sender,
    request: http::Request<WasiBody>,
    limits: &Limits,
    watch: &Watch,
) -> Result<http::Response<hyper::body::Incoming>, Error> {
    use http_body_util::BodyExt as _;
    let (done, mut sent) = tokio::sync::oneshot::channel();
    let done = (!request.body().is_end_stream()).then_some(done);
    let handed = Arc::new(Mutex::new(None));
    let request = request.map(|inner| {
        Sending {
            inner,
            done,
            handed: handed.clone(),
        }
        .boxed_unsync()
    });
    let response = sender.send_request(request);
    tokio::pin!(response);
    let idle = limits.between_bytes;
    loop {
        let waiting = *handed.lock().expect("body lock");
        let deadline = waiting.unwrap_or_else(Instant::now) + idle;
        tokio::select! {
            r = &mut response => return r.map_err(Error::Hyper),
            // Sent whole, or dropped: either way nothing more goes out.
            _ = &mut sent => break,
            _ = tokio::time::sleep_until(deadline.into()) => {
                let waiting = *handed.lock().expect("body lock");
                if waiting.is_some_and(|since| since.elapsed() >= idle) {
                    let e = Error::ConnectionWriteTimeout;
                    return Err(watch.stalled(StallKind::Unread, idle, e));
                }
            }
        }
    }
    tokio::time::timeout(limits.first_byte, response)
        .await
        .map_err(|_| {
            let e = Error::HttpResponseTimeout;
            watch.stalled(StallKind::Silent, limits.first_byte, e)
        })?
        .map_err(Error::Hyper)
}

/// Where a registry's stalls are recorded, for the request being sent.
#[derive(Clone)]
struct Watch {
    authority: String,
    record: Arc<Mutex<Option<Stall>>>,
}

impl Watch {
    /// Records that the registry stalled, and returns `error`, the wasi-http code that the
    /// component retries on.
    fn stalled(&self, kind: StallKind, after: Duration, error: Error) -> Error {
        *self.record.lock().expect("stall lock") = Some(Stall {
            authority: self.authority.clone(),
            after,
            kind,
        });
        error
    }
}

/// The effective waits for one request: the host's, or the request's own where shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    connect: Duration,
    handshake: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl Limits {
    fn new(host: Timeouts, asked: Option<RequestOptions>) -> Self {
        let asked = asked.unwrap_or_default();
        let min = |host: Duration, asked: Option<Duration>| asked.map_or(host, |a| a.min(host));
        let connect = min(host.connect, asked.connect_timeout);
        // The idle limits are the user's (`--timeout`): the component asks for its own
        // defaults, meant for hosts that have none, and must not cut a longer wait short.
        Limits {
            connect,
            handshake: connect.min(host.idle),
            first_byte: host.idle,
            between_bytes: host.idle,
        }
    }
}

/// A request body that tells when it has been sent whole (or given up), so that the wait
/// for the answer starts then: an upload may take long, and the registry owes nothing
/// before it ends. Meanwhile it records when it last handed a part to the connection that
/// has not asked for the next one since: the connection asks once it has room for more, so
/// while a registry reads nothing, that moment only grows older.
struct Sending {
    inner: WasiBody,
    done: Option<tokio::sync::oneshot::Sender<()>>,
    /// When the last part was handed over, until the connection asks for the next one.
    handed: Arc<Mutex<Option<Instant>>>,
}

impl Body for Sending {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // Waiting on the component to write more is not the registry's doing.
        let handed = matches!(&polled, Poll::Ready(Some(Ok(_)))).then(Instant::now);
        *self.handed.lock().expect("body lock") = handed;
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.done.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that gives up on a registry that stops sending, or sends too slowly to
/// ever finish (see [`Timeouts::idle`]). Only time spent waiting on the registry counts, not
/// time the component takes to read.
struct Watched {
    inner: WasiBody,
    idle: Duration,
    watch: Watch,
    sleep: Pin<Box<tokio::time::Sleep>>,
    waiting_since: Option<Instant>,
    /// Time waited and bytes received since the last check of the rate.
    waited: Duration,
    bytes: u64,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                if let Some(Ok(f)) = &frame {
                    this.bytes += f.data_ref().map_or(0, |d| d.len() as u64);
                    if this.waited >= this.idle {
                        if this.bytes < MIN_BYTES_PER_IDLE && !this.inner.is_end_stream() {
                            let e = Error::ConnectionReadTimeout;
                            return Poll::Ready(Some(Err(this.watch.stalled(
                                StallKind::Trickle,
                                this.idle,
                                e,
                            ))));
                        }
                        this.waited = Duration::ZERO;
                        this.bytes = 0;
                    }
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                if this.waiting_since.is_none() {
                    let now = Instant::now();
                    this.waiting_since = Some(now);
                    this.sleep.as_mut().reset((now + this.idle).into());
                }
                std::task::ready!(this.sleep.as_mut().poll(cx));
                let e = Error::ConnectionReadTimeout;
                Poll::Ready(Some(Err(this.watch.stalled(
                    StallKind::Silent,
                    this.idle,
                    e,
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The name to verify a certificate against: an IP address or a DNS name, without port.
fn server_name(authority: &str) -> Option<ServerName<'static>> {
    let authority = Authority::parse(authority)?;
    ServerName::try_from(authority.bare_host().to_owned()).ok()
}

/// `a` and `b` name the same registry, a missing port matching 443.
fn same_authority(a: &str, b: &str) -> bool {
    authority_key(a).is_some() && authority_key(a) == authority_key(b)
}

/// `authority` as a key: its host and port, a missing port being 443.
fn authority_key(authority: &str) -> Option<(String, u16)> {
    Authority::parse(authority).map(|a| (a.host, a.port.unwrap_or(443)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_authorities() {
        assert!(same_authority("r.example", "R.example:443"));
        assert!(!same_authority("r.example", "r.example:5000"));
        assert!(same_authority("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(matches!(
            server_name("127.0.0.1:5000"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:5000"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("r.example:443"),
            Some(ServerName::DnsName(_))
        ));
    }

    #[test]
    fn a_request_may_shorten_the_connect_wait_but_not_the_idle_ones() {
        let secs = Duration::from_secs;
        let host = Timeouts {
            connect: secs(30),
            idle: secs(10),
        };
        let limits = Limits::new(host, None);
        assert_eq!((limits.connect, limits.handshake), (secs(30), secs(10)));
        assert_eq!(
            (limits.first_byte, limits.between_bytes),
            (secs(10), secs(10))
        );
        let asked = RequestOptions {
            connect_timeout: Some(secs(5)),
            first_byte_timeout: Some(secs(600)),
            between_bytes_timeout: Some(secs(2)),
        };
        let limits = Limits::new(host, Some(asked));
        assert_eq!((limits.connect, limits.handshake), (secs(5), secs(5)));
        assert_eq!(
            (limits.first_byte, limits.between_bytes),
            (secs(10), secs(10))
        );
    }

    #[test]
    fn a_stall_names_the_registry_and_the_wait() {
        let stall = Stall {
            authority: "r.example:5000".into(),
            after: Duration::from_millis(1500),
            kind: StallKind::Silent,
        };
        assert_eq!(stall.to_string(), "r.example:5000 sent nothing for 1.5 s");
    }

    #[test]
    fn a_handshake_failure_says_whether_the_server_speaks_tls() {
        let failed = |e: rustls::Error| {
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            handshake_failure("r.example:5000", io).to_string()
        };
        let e = failed(rustls::CertificateError::UnknownIssuer.into());
        assert!(
            e.starts_with(&format!(
                "r.example:5000 {SPEAKS_TLS} {UNTRUSTED_CERTIFICATE}: "
            )) && e.contains("UnknownIssuer"),
            "{e}"
        );
        let e = failed(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert!(
            e.contains(SPEAKS_TLS) && !e.contains(UNTRUSTED_CERTIFICATE),
            "{e}"
        );
        // A plain-HTTP server's answer is no TLS record; a closed connection says nothing.
        let e = failed(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(!e.contains(SPEAKS_TLS), "{e}");
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(!handshake_failure("r", eof).to_string().contains(SPEAKS_TLS));
    }

    #[test]
    fn a_token_realm_gets_the_settings_of_the_registries_naming_it() {
        let connector = Connector::new(TlsSettings::default());
        let mut headers = http::HeaderMap::new();
        let challenge = r#"Bearer realm="https://u@Auth.example:6000/token",service="r""#;
        headers.insert(http::header::WWW_AUTHENTICATE, challenge.parse().unwrap());
        connector.learn_realms("r.example:5000", &headers);
        connector.learn_realms("r.example:5001", &headers);
        assert_eq!(
            connector.realm_of("auth.example:6000"),
            ["r.example:5000", "r.example:5001"]
        );
        assert!(connector.realm_of("auth.example").is_empty());
        // Plain HTTP realms have no TLS settings to get; a registry is not its own realm.
        for realm in ["http://h.example/t", "https://r.example:5002/t"] {
            let challenge = format!(r#"Bearer realm="{realm}""#);
            headers.insert(http::header::WWW_AUTHENTICATE, challenge.parse().unwrap());
            connector.learn_realms("r.example:5002", &headers);
        }
        assert!(connector.realm_of("h.example").is_empty());
        assert!(connector.realm_of("r.example:5002").is_empty());
    }

    #[test]
    fn an_unread_upload_names_the_registry() {
        let stall = Stall {
            authority: "r.example:5000".into(),
            after: Duration::from_secs(2),
            kind: StallKind::Unread,
        };
        assert_eq!(
            stall.to_string(),
            "r.example:5000 took no more of the request body for 2 s"
        );
    }
}
