//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of a real registry. Each rule
//! gives the next N matching requests a fault; everything else passes through untouched.
//! One request per connection (imo's transport opens one per request).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds, if given) instead of forwarding.
    Status(u16, Option<u64>),
    /// Close the connection without answering.
    Reset,
    /// Forward, but pass on only this many bytes of the response body, then close.
    CutResponseAfter(usize),
    /// Forward only this many bytes of the request body, then close both sides.
    CutRequestAfter(usize),
    /// Wait, then forward.
    Delay(Duration),
    /// Forward, but hold the answer until the proxy sees another request with the same
    /// method, or [`HOLD_LIMIT`] passes: as a registry slow to commit an upload would.
    HoldAnswer,
    /// Answer 401 with a Basic challenge, unless the request carries an `Authorization`
    /// (any), which is forwarded: a registry asking for credentials.
    Challenge,
    /// Answer 307 with `Location: PREFIX` followed by the request's path.
    Redirect(String),
    /// Answer with this status and this body.
    Answer(u16, String),
    /// Forward without the request's query: a mount `POST` (`?mount=…&from=…`) becomes a
    /// plain one, answered with 202 and a real upload session, as a registry that declines
    /// mounts answers.
    DropQuery,
    /// Answer with this status and an HTML page (`text/html`), as a web server in front of a
    /// registry, or a registry that knows no such endpoint or parameter, does.
    HtmlPage(u16),
    /// A request with a non-empty body is answered with this status and text before its body
    /// is read, and the connection closed, as a registry that refuses whole-body uploads
    /// does; one without a body is forwarded.
    RefuseBody(u16, String),
    /// `OCI-Chunk-Min-Length: N` is added to the answers of `POST`s; a `PATCH` shorter than N
    /// is answered 416 when its session had a short one already (only the last may be
    /// short). Give it a rule for each method.
    ChunkMinLength(usize),
    /// Forward, but hold the answer until this many requests given this fault are held at
    /// once, or [`HOLD_LIMIT`] passes (recorded in [`Proxy::holds`]): proves that many were
    /// in flight together. Give the rule as many `times`.
    Gather(usize),
}

/// How long [`Fault::HoldAnswer`] waits for the next request at most.
pub const HOLD_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    /// A substring of the request path (`/v2/` alone matches only the ping when `exact`).
    pub path: &'static str,
    pub exact: bool,
    /// How many matching requests get the fault.
    pub times: usize,
    pub fault: Fault,
}

impl Rule {
    pub fn new(method: &'static str, path: &'static str, times: usize, fault: Fault) -> Self {
        Rule {
            method,
            path,
            exact: false,
            times,
            fault,
        }
    }

    pub fn ping(times: usize, fault: Fault) -> Self {
        Rule {
            method: "GET",
            path: "/v2/",
            exact: true,
            times,
            fault,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method == method
            && if self.exact {
                path == self.path
            } else {
                path.contains(self.path)
            }
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    /// (method, path, fault injected) of every request seen.
    seen: Vec<(String, String, bool)>,
    /// For each answer held, whether the next request came before [`HOLD_LIMIT`].
    holds: Vec<bool>,
    /// The paths of the requests that carried an `Authorization`.
    authorized: Vec<String>,
    /// Upload sessions (paths without query) that had a `PATCH` shorter than the minimum.
    short_chunks: Vec<String>,
    /// Requests given [`Fault::Gather`] so far.
    gathered: usize,
}

pub struct Proxy {
    pub addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str, rules: Vec<Rule>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            rules,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, up) = (state.clone(), stop.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, up) = (st.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &up, &st);
                });
            }
        });
        Proxy { addr, state, stop }
    }

    /// How many requests got a fault.
    pub fn faults(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.2)
            .count()
    }

    /// How many requests matched `method` and a path containing `path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.0 == method && s.1.contains(path))
            .count()
    }

    /// How many requests with a path containing `path` carried an `Authorization`.
    pub fn authorized(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .authorized
            .iter()
            .filter(|p| p.contains(path))
            .count()
    }

    /// For each answer held ([`Fault::HoldAnswer`]), whether another request with the same
    /// method arrived while it was held.
    pub fn holds(&self) -> Vec<bool> {
        self.state.lock().unwrap().holds.clone()
    }

    /// `127.0.0.1:PORT/REPO:TAG` through the proxy.
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Reads an HTTP head (through the blank line), returning it and what was read past it.
fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            return Ok(head);
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// The head with `Connection: close`, so each side ends the exchange by closing.
fn closing(head: &str) -> String {
    let mut out: Vec<&str> = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    out.push("Connection: close");
    format!("{}\r\n\r\n", out.join("\r\n"))
}

fn is_chunked(head: &str) -> bool {
    head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    })
}

/// Forwards a chunked body through its last chunk, or until `limit` data bytes went out.
/// Returns the data bytes forwarded.
fn copy_chunked(
    from: &mut BufReader<TcpStream>,
    to: &mut TcpStream,
    limit: usize,
) -> std::io::Result<usize> {
    let mut sent = 0;
    loop {
        let mut line = String::new();
        from.read_line(&mut line)?;
        let size =
            usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if size == 0 {
            to.write_all(line.as_bytes())?;
            let mut end = String::new();
            from.read_line(&mut end)?;
            to.write_all(end.as_bytes())?;
            return Ok(sent);
        }
        let mut data = vec![0u8; size + 2];
        from.read_exact(&mut data)?;
        if sent + size >= limit {
            let keep = limit - sent;
            to.write_all(format!("{size:x}\r\n").as_bytes())?;
            to.write_all(&data[..keep])?;
            return Ok(limit);
        }
        to.write_all(line.as_bytes())?;
        to.write_all(&data)?;
        sent += size;
    }
}

fn handle(client: TcpStream, upstream: &str, state: &Mutex<State>) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    // imo tries HTTPS first on loopback; a TLS hello gets the plain-HTTP server's answer:
    // the connection closes.
    let mut first = [0u8; 1];
    if client.peek(&mut first)? == 1 && first[0] == 0x16 {
        return Ok(());
    }
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let mut head = read_head(&mut reader)?;
    let mut parts = head.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let authorized = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("authorization:"));
    let (fault, seen_before) = {
        let mut st = state.lock().unwrap();
        let fault = st
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && r.matches(&method, &path))
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            });
        let seen_before = st.seen.iter().filter(|s| s.0 == method).count();
        if authorized {
            st.authorized.push(path.clone());
        }
        st.seen
            .push((method.clone(), path.clone(), fault.is_some()));
        (fault, seen_before)
    };
    let body_len = content_length(&head);
    let mut request_limit = body_len;
    let mut response_limit = usize::MAX;
    let mut fault_cut = None;
    let mut hold = false;
    let mut gather = None;
    let mut min_length = None;
    match fault {
        Some(Fault::Status(code, retry_after)) => {
            std::io::copy(
                &mut (&mut reader).take(body_len as u64),
                &mut std::io::sink(),
            )?;
            let extra = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            let body = format!(
                "{{\"errors\":[{{\"code\":\"INJECTED\",\"message\":\"fault {code} injected by the test proxy\"}}]}}"
            );
            write!(
                client,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
        Some(Fault::Challenge) if !authorized => {
            let body = "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"credentials\"}]}";
            write!(
                client,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"proxy\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
        Some(Fault::Challenge) => {}
        Some(Fault::Redirect(prefix)) => {
            write!(
                client,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {prefix}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        Some(Fault::Answer(code, body)) => {
            write!(
                client,
                "HTTP/1.1 {code} Answered\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
        Some(Fault::Reset) => return Ok(()),
        Some(Fault::Delay(d)) => std::thread::sleep(d),
        Some(Fault::HoldAnswer) => hold = true,
        Some(Fault::Gather(n)) => {
            state.lock().unwrap().gathered += 1;
            gather = Some(n);
        }
        Some(Fault::CutResponseAfter(n)) => response_limit = n,
        Some(Fault::CutRequestAfter(n)) => {
            request_limit = n.min(body_len);
            fault_cut = Some(n);
        }
        Some(Fault::RefuseBody(code, text)) if body_len > 0 || is_chunked(&head) => {
            write!(
                client,
                "HTTP/1.1 {code} Refused\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            )?;
            return Ok(());
        }
        Some(Fault::ChunkMinLength(min)) if method == "PATCH" => {
            let session = path.split('?').next().unwrap_or("").to_owned();
            let mut st = state.lock().unwrap();
            if st.short_chunks.contains(&session) {
                drop(st);
                std::io::copy(
                    &mut (&mut reader).take(body_len as u64),
                    &mut std::io::sink(),
                )?;
                let body = "a chunk after one shorter than OCI-Chunk-Min-Length";
                write!(
                    client,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )?;
                return Ok(());
            }
            if body_len < min {
                st.short_chunks.push(session);
            }
        }
        Some(Fault::ChunkMinLength(min)) => min_length = Some(min),
        Some(Fault::RefuseBody(..)) => {}
        None => {}
        Some(Fault::DropQuery) => {
            if let Some((bare, _)) = path.split_once('?') {
                head = head.replacen(&path, bare, 1);
            }
        }
        Some(Fault::HtmlPage(code)) => {
            let body = format!(
                "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\">\n<html><head>\
                 <title>Error {code}</title></head><body><h1>{code}</h1><p>The test proxy does \
                 not know {path}.</p></body></html>\n"
            );
            write!(
                client,
                "HTTP/1.1 {code} Page\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(closing(&head).as_bytes())?;
    if is_chunked(&head) {
        // A streamed body of unknown length: forward chunk by chunk, up to the limit.
        let sent = copy_chunked(
            &mut reader,
            &mut up,
            match fault_cut {
                Some(n) => n,
                None => usize::MAX,
            },
        )?;
        if fault_cut.is_some_and(|n| sent >= n) {
            let _ = up.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
    } else {
        std::io::copy(&mut (&mut reader).take(request_limit as u64), &mut up)?;
    }
    if request_limit < body_len {
        // Both sides see the upload end early.
        let _ = up.shutdown(std::net::Shutdown::Both);
        return Ok(());
    }
    let mut up_reader = BufReader::new(up);
    let response_head = read_head(&mut up_reader)?;
    if hold {
        let started = std::time::Instant::now();
        let next_came = loop {
            let seen = state
                .lock()
                .unwrap()
                .seen
                .iter()
                .filter(|s| s.0 == method)
                .count();
            if seen > seen_before + 1 {
                break true;
            }
            if started.elapsed() > HOLD_LIMIT {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        state.lock().unwrap().holds.push(next_came);
    }
    if let Some(n) = gather {
        let started = std::time::Instant::now();
        let all_came = loop {
            if state.lock().unwrap().gathered >= n {
                break true;
            }
            if started.elapsed() > HOLD_LIMIT {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        state.lock().unwrap().holds.push(all_came);
    }
    let response_head = match min_length {
        Some(min) => format!(
            "{}\r\nOCI-Chunk-Min-Length: {min}\r\n\r\n",
            response_head.trim_end()
        ),
        None => response_head,
    };
    client.write_all(response_head.as_bytes())?;
    std::io::copy(
        &mut (&mut up_reader).take(response_limit as u64),
        &mut client,
    )?;
    Ok(())
}
