//! A Docker/OCI token service for the integration tests: a loopback HTTP server that checks
//! Basic credentials against a table of accounts, grants the intersection of the scope asked
//! for and what the account may do, and answers with an RS256 JWT that CNCF distribution's
//! `auth: token:` verifies. The key and its self-signed certificate are made with the
//! `openssl` command in a temporary directory, and each token is signed with
//! `openssl dgst -sha256 -sign`. Every request is recorded so tests can check which scopes a
//! client asked for. [`TokenServer::start_tls`] serves HTTPS with a self-signed certificate
//! made the usual way ([`self_signed`]), as a token service on another port of a private
//! registry often is. The server stops when dropped.

use super::{TempDir, sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most a request head may take; anything longer is refused.
const MAX_HEAD: usize = 16 * 1024;
/// How long a connection may sit idle before it is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of the tokens issued, in seconds.
const TOKEN_LIFETIME: u64 = 300;

/// An account of the token service: its password and, per repository, what it may do.
/// The anonymous account (no `Authorization` header) is the one with an empty user name.
#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub password: String,
    pub grants: Vec<(String, Vec<String>)>,
}

impl Account {
    pub fn new(user: &str, password: &str) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
            grants: Vec::new(),
        }
    }

    /// Requests without credentials; refused unless an anonymous account is configured.
    pub fn anonymous() -> Self {
        Self::new("", "")
    }

    /// Lets the account take `actions` (`pull`, `push`, …) in `repository`.
    pub fn may(mut self, repository: &str, actions: &[&str]) -> Self {
        self.grants.push((
            repository.into(),
            actions.iter().map(|a| (*a).to_owned()).collect(),
        ));
        self
    }

    fn allowed(&self, repository: &str) -> Vec<String> {
        self.grants
            .iter()
            .filter(|(r, _)| r == repository)
            .flat_map(|(_, a)| a.iter().cloned())
            .collect()
    }
}

/// One request the token service answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    pub path: String,
    /// The Basic user name, or `None` for an anonymous request.
    pub account: Option<String>,
    pub service: Option<String>,
    /// Each scope asked for (`repository:NAME:ACTIONS`), in order.
    pub scopes: Vec<String>,
    /// What the token issued holds, in the same form; empty when refused.
    pub granted: Vec<String>,
    pub status: u16,
}

/// What every connection handler shares.
struct Shared {
    /// Serve HTTPS with this configuration, else plain HTTP.
    tls: Option<Arc<rustls::ServerConfig>>,
    accounts: Vec<Account>,
    service: String,
    issuer: String,
    key: PathBuf,
    kid: String,
    log: Mutex<Vec<TokenRequest>>,
    jti: AtomicU64,
}

/// A running token service on 127.0.0.1.
pub struct TokenServer {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub service: String,
    pub issuer: String,
    /// The PEM certificate distribution's `rootcertbundle` must name.
    pub cert: PathBuf,
    /// For HTTPS, the directory holding the service's self-signed TLS certificate as
    /// `server.crt` (what `--cert-dir` takes).
    pub tls_dir: Option<PathBuf>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl TokenServer {
    pub fn start(accounts: Vec<Account>) -> Self {
        Self::start_with(accounts, false)
    }

    /// The same service over HTTPS, with a self-signed certificate for 127.0.0.1.
    pub fn start_tls(accounts: Vec<Account>) -> Self {
        Self::start_with(accounts, true)
    }

    fn start_with(accounts: Vec<Account>, https: bool) -> Self {
        let dir = TempDir::new("token");
        let tls_dir = https.then(|| {
            let tls_dir = dir.join("tls");
            std::fs::create_dir_all(&tls_dir).unwrap();
            self_signed(&tls_dir, "127.0.0.1");
            tls_dir
        });
        let tls = tls_dir.as_ref().map(|d| server_config(d));
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "2",
            "-subj",
            "/CN=imo-test-token-issuer",
            "-keyout",
            path(&key),
            "-out",
            path(&cert),
        ]);
        let spki = openssl(&["pkey", "-in", path(&key), "-pubout", "-outform", "DER"]);
        let kid = libtrust_key_id(&spki);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            tls,
            accounts,
            service: "imo-test-registry".into(),
            issuer: "imo-test-token-issuer".into(),
            key,
            kid,
            log: Mutex::new(Vec::new()),
            jti: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let mut handlers: Vec<JoinHandle<()>> = Vec::new();
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                handlers.retain(|h| !h.is_finished());
                handlers.push(std::thread::spawn(move || serve(&s, conn)));
            }
            for h in handlers {
                let _ = h.join();
            }
        });
        TokenServer {
            addr,
            service: shared.service.clone(),
            issuer: shared.issuer.clone(),
            cert,
            tls_dir,
            shared,
            stop,
            accept: Some(accept),
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT/token`, or `https://` for [`TokenServer::start_tls`].
    pub fn realm(&self) -> String {
        let scheme = if self.tls_dir.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/token", self.addr)
    }

    /// The `auth:` section for a registry that trusts this service's tokens.
    pub fn registry_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            self.realm(),
            self.service,
            self.issuer,
            self.cert.display()
        )
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.log.lock().unwrap().clone()
    }

    /// How many requests were answered so far.
    pub fn count(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    /// The requests answered after the first `n` (see [`TokenServer::count`]).
    pub fn requests_since(&self, n: usize) -> Vec<TokenRequest> {
        self.requests().into_iter().skip(n).collect()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Makes a self-signed certificate for `host` (an IP address) the way most guides do,
/// `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=HOST -addext
/// subjectAltName=IP:HOST`: it is marked as a CA (`CA:TRUE`), and servers present it as
/// their own. Writes `server.crt` and `server.key` into `dir`.
pub fn self_signed(dir: &Path, host: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={host}"),
        "-addext",
        &format!("subjectAltName=IP:{host}"),
        "-keyout",
        path(&key),
        "-out",
        path(&cert),
    ]);
    (cert, key)
}

/// A TLS server configuration presenting `dir`'s `server.crt` with `server.key`.
fn server_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(config)
}

/// Runs `openssl` and returns its stdout, failing the test if it fails.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The key ID libtrust (and so distribution) derives from a public key: the first 240 bits
/// of the SHA-256 of its DER SubjectPublicKeyInfo, in unpadded base32, in groups of four
/// joined by `:`.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let hex = &sha256(spki_der)[7..];
    let digest: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let b32 = base32(&digest[..30]);
    let groups: Vec<&str> = (0..b32.len()).step_by(4).map(|i| &b32[i..i + 4]).collect();
    groups.join(":")
}

/// RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(A[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(A[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// `application/x-www-form-urlencoded` decoding of one query component.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one request head (up to the blank line), bounded in size and time.
fn read_head(conn: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return None;
        }
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn respond(conn: &mut impl Write, status: u16, extra_headers: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
}

/// Answers one request on one connection (over TLS if the service has it), then closes it.
fn serve(shared: &Shared, conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
    match &shared.tls {
        Some(config) => {
            let Ok(session) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(session, conn);
            serve_on(shared, &mut tls);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        None => {
            let mut conn = conn;
            serve_on(shared, &mut conn);
        }
    }
}

fn serve_on(shared: &Shared, conn: &mut (impl Read + Write)) {
    let Some(head) = read_head(conn) else {
        return;
    };
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut authorization = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_owned());
        }
    }
    let mut record = TokenRequest {
        method: method.clone(),
        path: path.to_owned(),
        account: None,
        service: None,
        scopes: Vec::new(),
        granted: Vec::new(),
        status: 0,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = url_decode(v);
        match k {
            "scope" => record
                .scopes
                .extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)),
            "service" => record.service = Some(v),
            _ => {}
        }
    }

    let (status, headers, body) = answer(shared, &method, path, authorization, &mut record);
    record.status = status;
    shared.log.lock().unwrap().push(record);
    respond(conn, status, &headers, &body);
}

/// Decides a request: the status, extra header lines and JSON body. Fills in the account
/// and what was granted.
fn answer(
    shared: &Shared,
    method: &str,
    path: &str,
    authorization: Option<String>,
    record: &mut TokenRequest,
) -> (u16, String, String) {
    let refuse = |why: &str| {
        (
            401,
            "WWW-Authenticate: Basic realm=\"imo-test-token\"\r\n".to_owned(),
            serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": why}]}).to_string(),
        )
    };
    if method != "GET" {
        return (
            405,
            String::new(),
            r#"{"errors":[{"code":"UNSUPPORTED","message":"only GET"}]}"#.into(),
        );
    }
    if path != "/token" {
        return (
            400,
            String::new(),
            r#"{"errors":[{"code":"NOT_FOUND","message":"no such path"}]}"#.into(),
        );
    }
    if record.service.as_deref() != Some(shared.service.as_str()) {
        return (
            400,
            String::new(),
            r#"{"errors":[{"code":"BAD_SERVICE","message":"unknown service"}]}"#.into(),
        );
    }
    let (user, password) = match authorization {
        None => (String::new(), String::new()),
        Some(a) => {
            let Some(decoded) = a
                .strip_prefix("Basic ")
                .and_then(|b| imo_guest::base64::decode(b.trim()))
                .map(|d| String::from_utf8_lossy(&d).into_owned())
            else {
                return refuse("only Basic credentials are understood");
            };
            let (u, p) = decoded.split_once(':').unwrap_or((&decoded, ""));
            record.account = Some(u.to_owned());
            (u.to_owned(), p.to_owned())
        }
    };
    let Some(account) = shared
        .accounts
        .iter()
        .find(|a| a.user == user && a.password == password)
    else {
        return refuse(if user.is_empty() {
            "anonymous access is not allowed"
        } else {
            "wrong user name or password"
        });
    };

    // Grant, per requested repository scope, the actions both asked for and allowed.
    let mut access = Vec::new();
    for scope in &record.scopes {
        let mut parts = scope.splitn(2, ':');
        let kind = parts.next().unwrap_or_default();
        let Some((name, actions)) = parts.next().and_then(|r| r.rsplit_once(':')) else {
            continue;
        };
        if kind != "repository" {
            continue;
        }
        let allowed = account.allowed(name);
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| allowed.iter().any(|x| x == a))
            .collect();
        if granted.is_empty() {
            continue;
        }
        record
            .granted
            .push(format!("repository:{name}:{}", granted.join(",")));
        access.push(serde_json::json!({"type": "repository", "name": name, "actions": granted}));
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": shared.kid});
    let claims = serde_json::json!({
        "iss": shared.issuer,
        "sub": user,
        "aud": shared.service,
        "exp": now + TOKEN_LIFETIME,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("imo-test-{}", shared.jti.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        imo_guest::base64::encode_url(header.to_string().as_bytes()),
        imo_guest::base64::encode_url(claims.to_string().as_bytes())
    );
    let signature = sign(&shared.key, signing_input.as_bytes());
    let token = format!(
        "{signing_input}.{}",
        imo_guest::base64::encode_url(&signature)
    );
    (
        200,
        String::new(),
        serde_json::json!({"token": token, "expires_in": TOKEN_LIFETIME}).to_string(),
    )
}

/// An RSASSA-PKCS1-v1_5 SHA-256 signature made by `openssl dgst`.
fn sign(key: &Path, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", path(key)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running openssl");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl dgst -sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
