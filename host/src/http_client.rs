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

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime_wasi_http::{Error, WasiBody};

/// Where per-registry CAs live, as for podman/skopeo and docker: `DIR/HOST[:PORT]/*.crt`.
///
/// ```rust
/// let dirs = imo::http_client::TlsSettings::system().certs_d;
/// assert_eq!(dirs, imo::http_client::CERTS_D.map(std::path::PathBuf::from));
/// ```
pub const CERTS_D: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per registry for reuse.
const MAX_IDLE: usize = 4;

type Sender = hyper::client::conn::http1::SendRequest<WasiBody>;

/// TLS choices for one command. `Default` trusts only the system's roots;
/// [`TlsSettings::system`] adds the system's per-registry directories.
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
    /// Authorities (`host[:port]`) whose certificates are not verified (`--tls-verify=false`).
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
    /// Open HTTP/1.1 connections by (TLS, authority), for the next `GET` or `HEAD`: a vet
    /// or push asks one question per blob, and a new TCP and TLS handshake for each would
    /// cost two or three round trips more over a real network.
    idle: Mutex<HashMap<(bool, String), Vec<Sender>>>,
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
            idle: Mutex::new(HashMap::new()),
        }
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
        let skip = self
            .settings
            .skip_verify
            .iter()
            .any(|a| same_authority(a, authority));
        let config = if skip {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(self.system_roots.iter().cloned());
            let mut dirs: Vec<PathBuf> = self.settings.cert_dir.iter().cloned().collect();
            dirs.extend(self.settings.certs_d.iter().map(|d| d.join(authority)));
            for dir in dirs {
                for cert in crt_files(&dir)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", dir.display()))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let config = Arc::new(config);
        self.configs
            .lock()
            .expect("tls lock")
            .insert(authority.to_owned(), config.clone());
        Ok(config)
    }

    /// Sends one request over a new connection (TLS for `https`), returning the response;
    /// its body streams from the connection until read to its end. `timeout` bounds the
    /// TCP connect (30 s if `None`).
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
        timeout: Option<Duration>,
    ) -> Result<http::Response<WasiBody>, Error> {
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
        let key = (tls, authority.clone());
        // Only requests without a body go on a reused connection: if the server closed it
        // meanwhile (every pool races with that), nothing was sent and the request goes again
        // on a new one. A body streamed from the component could not be sent twice.
        if matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
            while let Some(mut sender) = self.take_idle(&key) {
                let again = bodiless_copy(&request);
                match sender.send_request(request).await {
                    Ok(response) => {
                        self.keep_idle(key, sender);
                        return Ok(boxed(response));
                    }
                    Err(_) => request = again,
                }
            }
        }
        let tcp = tokio::time::timeout(
            timeout.unwrap_or(CONNECT_TIMEOUT),
            tokio::net::TcpStream::connect(&address),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
        let (sender, response) = if tls {
            let config = self
                .config(&authority)
                .map_err(|e| Error::Tls(std::io::Error::other(e)))?;
            let name = server_name(&authority).ok_or(Error::HttpRequestUriInvalid)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(Error::Tls)?;
            exchange(stream, request).await?
        } else {
            exchange(tcp, request).await?
        };
        self.keep_idle(key, sender);
        Ok(boxed(response))
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

fn boxed(response: http::Response<hyper::body::Incoming>) -> http::Response<WasiBody> {
    use http_body_util::BodyExt as _;
    response.map(|body| body.map_err(Error::Hyper).boxed_unsync())
}

async fn exchange<S>(
    stream: S,
    request: http::Request<WasiBody>,
) -> Result<(Sender, http::Response<hyper::body::Incoming>), Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let io = wasmtime_wasi_http::io::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(Error::Hyper)?;
    // The connection drives both directions until the response body is read to its end,
    // then waits for the next request or closes when the sender is dropped.
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(Error::Hyper)?;
    Ok((sender, response))
}

/// The name to verify a certificate against: an IP address or a DNS name, without port.
fn server_name(authority: &str) -> Option<ServerName<'static>> {
    let host = if authority.starts_with('[') {
        authority[1..authority.find(']')?].to_owned()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_owned()
    };
    ServerName::try_from(host).ok()
}

/// `a` and `b` name the same registry, a missing port matching 443.
fn same_authority(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.to_ascii_lowercase();
        if s.ends_with(']') || !s.contains(':') {
            format!("{s}:443")
        } else {
            s
        }
    };
    norm(a) == norm(b)
}

/// The certificates in every `*.crt` file of `dir` (none if it does not exist).
fn crt_files(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "crt") {
            use rustls::pki_types::pem::PemObject as _;
            let certs = CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("reading CA certificates from {}: {e}", path.display()))?;
            out.extend(certs);
        }
    }
    Ok(out)
}

/// Accepts any certificate: only for registries named with `--tls-verify=false`.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
    fn crt_files_of_a_missing_dir_are_none_and_bad_ones_are_named() {
        assert!(crt_files(Path::new("/nonexistent/imo")).unwrap().is_empty());
        let dir = std::env::temp_dir().join(format!("imo-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("bad.crt"),
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = crt_files(&dir).unwrap_err();
        assert!(err.contains("bad.crt"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
