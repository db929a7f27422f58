//! A fake registry: a loopback HTTP server answering registry API paths from a table, for
//! behaviour no real registry shows (wrong bytes, stalls, a request body never read).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What the fake registry answers, by request path.
pub type Routes = Vec<(String, Reply)>;

/// How a reply's body is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// All at once.
    Whole,
    /// The first `n` bytes, then nothing, the connection held open.
    StallAfter(usize),
    /// The first `n` bytes, then one byte a second.
    Trickle(usize),
    /// No answer at all, and nothing more read after the request's head (its body, an
    /// upload, is left unread), the connection held open.
    Hold,
}

/// One answer of the fake registry.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub pace: Pace,
}

impl Reply {
    /// 200 with `body`, its media type, and the digest of `digest_of` as
    /// `Docker-Content-Digest` (the body's own, for an honest answer).
    pub fn ok(content_type: &str, body: &[u8], digest_of: &[u8]) -> Self {
        Reply {
            status: 200,
            headers: vec![
                ("Content-Type".into(), content_type.into()),
                ("Docker-Content-Digest".into(), super::sha256(digest_of)),
            ],
            body: body.to_vec(),
            pace: Pace::Whole,
        }
    }

    pub fn manifest(body: &[u8]) -> Self {
        Self::ok(OCI_MANIFEST, body, body)
    }

    pub fn blob(body: &[u8]) -> Self {
        Self::ok("application/octet-stream", body, body)
    }

    /// The same answer, its body sent at `pace`.
    pub fn paced(self, pace: Pace) -> Self {
        Reply { pace, ..self }
    }
}

/// A loopback HTTP server that answers registry API paths from a table (`GET /v2/` always
/// with 200, anything unknown with a distribution-style 404), one request per connection, as
/// a registry that serves whatever the test tells it to. Stops when dropped.
pub struct FakeRegistry {
    pub addr: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeRegistry {
    pub fn start(routes: Routes) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let routes = Arc::new(routes);
        let (log, halt) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (routes, log, halt) = (routes.clone(), log.clone(), halt.clone());
                std::thread::spawn(move || {
                    let _ = Self::answer(conn, &routes, &log, &halt);
                });
            }
        });
        FakeRegistry {
            addr,
            requests,
            stop,
        }
    }

    fn answer(
        mut conn: TcpStream,
        routes: &[(String, Reply)],
        log: &Mutex<Vec<String>>,
        stop: &AtomicBool,
    ) -> std::io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        // imo tries HTTPS first on loopback: a TLS hello is answered by closing, as a
        // plain-HTTP registry does.
        let mut first = [0u8; 1];
        if conn.peek(&mut first)? == 1 && first[0] == 0x16 {
            return Ok(());
        }
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte)? == 0 || head.len() > 64 * 1024 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or_default().to_owned();
        let target = words.next().unwrap_or_default();
        let path = target.split('?').next().unwrap_or_default().to_owned();
        log.lock().unwrap().push(format!("{method} {target}"));
        let reply = if path == "/v2/" {
            Reply::ok("application/json", b"{}", b"{}")
        } else if let Some((_, r)) = routes.iter().find(|(p, _)| *p == path) {
            r.clone()
        } else {
            Reply {
                status: 404,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: br#"{"errors":[{"code":"NOT_FOUND","message":"the fake registry has no such thing"}]}"#
                    .to_vec(),
                pace: Pace::Whole,
            }
        };
        if reply.pace == Pace::Hold {
            let until = Instant::now() + Duration::from_secs(120);
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            return Ok(());
        }
        let mut out = format!("HTTP/1.1 {} Fake\r\n", reply.status);
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            reply.body.len()
        ));
        conn.write_all(out.as_bytes())?;
        if method == "HEAD" {
            return conn.flush();
        }
        let (first, per_second) = match reply.pace {
            Pace::Whole | Pace::Hold => (reply.body.len(), 0),
            Pace::StallAfter(n) => (n, 0),
            Pace::Trickle(n) => (n, 1),
        };
        let first = first.min(reply.body.len());
        conn.write_all(&reply.body[..first])?;
        conn.flush()?;
        // The rest slowly or never, for two minutes at most (the client should give up long
        // before), or until the registry is dropped.
        let mut rest = &reply.body[first..];
        let until = Instant::now() + Duration::from_secs(120);
        while !rest.is_empty() && Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(1));
            let n = per_second.min(rest.len());
            conn.write_all(&rest[..n])?;
            conn.flush()?;
            rest = &rest[n..];
        }
        Ok(())
    }

    pub fn image(&self, repo_and_key: &str) -> String {
        format!("{}/{repo_and_key}", self.addr)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}
