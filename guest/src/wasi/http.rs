//! The registry client's `Transport` over wasi:http/outgoing-handler.

use super::streams::{StreamWriter, read_stream, stream_error};
use crate::cli::Timeouts;
use crate::error::Error;
use crate::registry::{BodyWriter, Method, Pending, Request, Response, Scheme, Transport};
use std::io::{self, Read};
use wasip2::http::outgoing_handler;
use wasip2::http::types as http;
use wasip2::io::streams::{InputStream, StreamError};

/// The transport: one wasi-http `outgoing-handler.handle` per exchange, each asking the
/// host for these limits.
#[derive(Default)]
pub(super) struct WasiHttp {
    pub(super) limits: Timeouts,
}

impl Transport for WasiHttp {
    fn now(&self) -> u64 {
        wasip2::clocks::wall_clock::now().seconds
    }

    fn sleep_ms(&self, ms: u64) {
        wasip2::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
    }

    fn random(&self) -> u64 {
        wasip2::random::random::get_random_u64()
    }

    fn send(&self, req: &Request, body: Option<BodyWriter<'_>>) -> Result<Response, Error> {
        self.start(req, body)?()
    }

    fn start(&self, req: &Request, body: Option<BodyWriter<'_>>) -> Result<Pending, Error> {
        let sent = send_body(req, body, &self.limits)?;
        let what = format!("{} {}", req.method.as_str(), req.url);
        let limits = self.limits;
        Ok(Box::new(move || {
            let answer = match sent {
                Sent::Later(future) => answer(&future, &what, &limits)?,
                Sent::Early(response) => head(response, &what, &limits)?,
            };
            Ok(Response {
                status: answer.status,
                headers: answer.headers,
                body: Box::new(answer.body),
            })
        }))
    }
}

/// Sends a request and its whole body, returning the answer to come; a server's answer
/// before it took the whole body is its error.
pub(super) fn send(
    req: &Request,
    body: Option<BodyWriter<'_>>,
    limits: &Timeouts,
) -> Result<http::FutureIncomingResponse, Error> {
    let what = format!("{} {}", req.method.as_str(), req.url);
    match send_body(req, body, limits)? {
        Sent::Later(future) => Ok(future),
        Sent::Early(response) => {
            let status = response.status();
            Err(Error::Registry(format!(
                "{what}: answered HTTP {status} before the request's body was sent"
            )))
        }
    }
}

/// A request sent: its answer to come, or the answer that came before its body was all
/// sent.
enum Sent {
    Later(http::FutureIncomingResponse),
    Early(http::IncomingResponse),
}

/// Sends a request and its whole body, returning the answer to come, or the server's
/// answer if it came before it took the whole body.
fn send_body(
    req: &Request,
    body: Option<BodyWriter<'_>>,
    limits: &Timeouts,
) -> Result<Sent, Error> {
    let what = format!("{} {}", req.method.as_str(), req.url);
    let unreachable = |e: &dyn std::fmt::Display| Error::Unreachable(format!("{what}: {e}"));
    let mut fields: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    // A POST without a body says so; a body of unknown length would go out chunked.
    let sized = req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if body.is_none() && !sized && !matches!(req.method, Method::Get | Method::Head) {
        fields.push(("content-length".into(), b"0".to_vec()));
    }
    let headers = http::Fields::from_list(&fields)
        .map_err(|e| unreachable(&format!("invalid header: {e:?}")))?;
    let request = http::OutgoingRequest::new(headers);
    let method = match req.method {
        Method::Get => http::Method::Get,
        Method::Head => http::Method::Head,
        Method::Post => http::Method::Post,
        Method::Put => http::Method::Put,
        Method::Patch => http::Method::Patch,
        Method::Delete => http::Method::Delete,
    };
    let scheme = match req.url.scheme {
        Scheme::Http => http::Scheme::Http,
        Scheme::Https => http::Scheme::Https,
    };
    let set = request.set_method(&method).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(&req.url.authority)).is_ok()
        && request.set_path_with_query(Some(&req.url.path)).is_ok();
    if !set {
        return Err(unreachable(&"the URL is not valid"));
    }
    let outgoing = request.body().expect("a new request's body is taken once");
    let future = outgoing_handler::handle(request, Some(request_options(limits)))
        .map_err(|e| failure(&what, &e, limits))?;
    if let Some(write) = body {
        let stream = outgoing.write().expect("a new body's stream is taken once");
        let mut writer = Watched {
            inner: StreamWriter(&stream),
            failed: false,
        };
        // Once a body reaches its Content-Length the host may close the stream, so a
        // flush that finds it closed has nothing left to do.
        let written = write(&mut writer).and_then(|()| match stream.blocking_flush() {
            Ok(()) | Err(StreamError::Closed) => Ok(()),
            Err(e) => {
                writer.failed = true;
                Err(unreachable(&stream_error(e)))
            }
        });
        let failed = writer.failed;
        drop(stream);
        if let Err(e) = written {
            // A server may answer before taking the whole body (refusing the request) and
            // close the connection: its answer, if it came, says more than the cut.
            let answered = if failed { early_answer(&future) } else { None };
            // Dropping the body unfinished aborts the request: nothing is committed.
            drop(outgoing);
            return answered.map(Sent::Early).ok_or(e);
        }
    }
    if let Err(e) = http::OutgoingBody::finish(outgoing, None) {
        return early_answer(&future)
            .map(Sent::Early)
            .ok_or_else(|| failure(&what, &e, limits));
    }
    Ok(Sent::Later(future))
}

/// How long an answer that came before the body was all sent is waited for, once writing
/// the body failed.
const EARLY_ANSWER_MS: u64 = 2_000;

/// The server's answer, if one came within a short wait once writing the body failed: a
/// server may answer before it takes the whole body (refusing the request) and close the
/// connection, and its answer says more than the cut.
fn early_answer(future: &http::FutureIncomingResponse) -> Option<http::IncomingResponse> {
    let timer = wasip2::clocks::monotonic_clock::subscribe_duration(EARLY_ANSWER_MS * 1_000_000);
    let ready = future.subscribe();
    while !ready.ready() && !timer.ready() {
        wasip2::io::poll::poll(&[&ready, &timer]);
    }
    future.get()?.ok()?.ok()
}

/// The body's writer, noting whether the stream itself failed (rather than the caller's
/// source of bytes).
struct Watched<'a> {
    inner: StreamWriter<'a>,
    failed: bool,
}

impl io::Write for Watched<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf);
        self.failed |= written.is_err();
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.inner.flush();
        self.failed |= flushed.is_err();
        flushed
    }
}

/// The limits as wasi-http request options. A host that does not support one refuses its
/// setter; the request then goes out under the host's own limit rather than failing.
fn request_options(limits: &Timeouts) -> http::RequestOptions {
    let ns = |s: u64| Some(s.saturating_mul(1_000_000_000));
    let options = http::RequestOptions::new();
    let _ = options.set_connect_timeout(ns(limits.connect_s));
    let _ = options.set_first_byte_timeout(ns(limits.first_byte_s));
    let _ = options.set_between_bytes_timeout(ns(limits.between_bytes_s));
    options
}

/// A wasi-http failure of `what` (method and URL) as the client's error: a request the
/// host refused is final (`Denied`, which the retry loop leaves alone); a timeout, like any
/// other failure of the connection, is worth retrying (or resuming, for a blob).
fn failure(what: &str, code: &http::ErrorCode, limits: &Timeouts) -> Error {
    use http::ErrorCode as E;
    let silent = |how: &str, s: u64| {
        Error::Unreachable(format!(
            "{what}: the registry stopped answering: {how} within {s} s ({code})"
        ))
    };
    match code {
        E::HttpRequestDenied => Error::Denied(what.to_owned()),
        E::ConnectionTimeout => silent("no connection", limits.connect_s),
        E::HttpResponseTimeout | E::ConnectionReadTimeout => {
            silent("no answer", limits.first_byte_s)
        }
        E::ConnectionWriteTimeout => silent("the request not taken", limits.between_bytes_s),
        code => Error::Unreachable(format!("{what}: {code}")),
    }
}

/// A response as it arrives: the head, and the body to read.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Body,
}

/// Awaits the response to a request sent whole (`what`, for messages).
pub(super) fn answer(
    future: &http::FutureIncomingResponse,
    what: &str,
    limits: &Timeouts,
) -> Result<Answer, Error> {
    let unreachable = |e: &dyn std::fmt::Display| Error::Unreachable(format!("{what}: {e}"));
    let response = loop {
        match future.get() {
            Some(r) => break r,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| unreachable(&"the response was already taken"))?
        .map_err(|e| failure(what, &e, limits))?;
    head(response, what, limits)
}

/// A response's head, and its body to read.
fn head(response: http::IncomingResponse, what: &str, limits: &Timeouts) -> Result<Answer, Error> {
    let unreachable = |e: &dyn std::fmt::Display| Error::Unreachable(format!("{what}: {e}"));
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| unreachable(&"the body was already taken"))?;
    let stream = incoming
        .stream()
        .map_err(|()| unreachable(&"the body stream was already taken"))?;
    let body = Body {
        stream,
        idle_s: limits.between_bytes_s,
        _body: incoming,
        _response: response,
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A response body; the fields drop in order, child resources before their parents.
pub(super) struct Body {
    pub(super) stream: InputStream,
    /// The between-bytes limit asked for, for messages.
    idle_s: u64,
    _body: http::IncomingBody,
    _response: http::IncomingResponse,
}

impl Body {
    /// A failure of the body's stream; a timeout says how long the registry was silent.
    pub(super) fn error(&self, e: StreamError) -> io::Error {
        if let StreamError::LastOperationFailed(cause) = &e
            && let Some(
                code @ (http::ErrorCode::ConnectionReadTimeout
                | http::ErrorCode::HttpResponseTimeout),
            ) = http::http_error_code(cause)
        {
            return io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the registry stopped answering: nothing for {} s ({code})",
                    self.idle_s
                ),
            );
        }
        stream_error(e)
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_stream(&self.stream, buf, |e| self.error(e))
    }
}
