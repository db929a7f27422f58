//! The WASI 0.2 binding: the WIT exports, the command line, and the wasi-http transport.

use crate::cli::{self, Operation};
use crate::digest::Verifier;
use crate::error::Error;
use crate::inventory::{self, Inventory};
use crate::ops::{self, Options, Summary};
use crate::registry::{
    BodyWriter, Credentials, Method, Pending, Request, Response, Scheme, Transport,
};
use std::io::{self, Read, Write};
use wasip2::filesystem::types::Descriptor;
use wasip2::http::outgoing_handler;
use wasip2::http::types as http;
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

wit_bindgen::generate!({
    world: "imo",
    path: "../wit",
    with: {
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:filesystem/types@0.2.12": wasip2::filesystem::types,
        "wasi:clocks/wall-clock@0.2.12": wasip2::clocks::wall_clock,
    },
});

use exports::imo::overlay::overlay as wit;

struct Component;

export!(Component);

impl wit::Guest for Component {
    fn pull(
        base: String,
        final_: String,
        archive: &OutputStream,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::Error> {
        let options = Options::from(options);
        let mut out = StreamWriter(archive);
        ops::pull(
            &WasiHttp,
            &options,
            &reporter(&options),
            &base,
            &final_,
            &mut out,
        )
        .map(Into::into)
        .map_err(Into::into)
    }

    fn pull_bundle(
        request: wit::Bundle,
        archive: &OutputStream,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::Error> {
        let options = Options::from(options);
        ops::pull_bundle(
            &WasiHttp,
            &options,
            &reporter(&options),
            &pull_request(request),
            &mut StreamWriter(archive),
        )
        .map(Into::into)
        .map_err(Into::into)
    }

    fn pull_bundle_to_file(
        request: wit::Bundle,
        archive: &Descriptor,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::Error> {
        let options = Options::from(options);
        ops::pull_bundle_to_file(
            &WasiHttp,
            &WasiHttp,
            &options,
            &reporter(&options),
            &pull_request(request),
            &FileArchive(archive),
        )
        .map(Into::into)
        .map_err(Into::into)
    }

    fn inventory(sources: Vec<String>, options: wit::Options) -> Result<String, wit::Error> {
        let options = Options::from(options);
        let inventory = ops::inventory(&WasiHttp, &options, &reporter(&options), &sources, vec![])?;
        Ok(json_text(&inventory))
    }

    fn inventory_add_archive(
        into: String,
        name: String,
        archive: &InputStream,
        options: wit::Options,
    ) -> Result<String, wit::Error> {
        let options = Options::from(options);
        let mut builder = inventory::Builder::default();
        if !into.is_empty() {
            let so_far =
                Inventory::parse("so far", into.as_bytes()).map_err(Error::InvalidArchive)?;
            builder.merge(&so_far);
        }
        let added = ops::inventory(
            &WasiHttp,
            &options,
            &reporter(&options),
            &[],
            vec![(name, &mut StreamReader(archive) as &mut dyn Read)],
        )?;
        builder.merge(&added);
        Ok(json_text(&builder.build()))
    }

    fn push_vet(
        archive: &InputStream,
        destination: String,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::Error> {
        let options = Options::from(options);
        ops::push_vet(
            &WasiHttp,
            &options,
            &reporter(&options),
            &mut StreamReader(archive),
            &destination,
        )
        .map(Into::into)
        .map_err(Into::into)
    }

    fn push(
        archive: &InputStream,
        destination: String,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::Error> {
        let options = Options::from(options);
        ops::push(
            &WasiHttp,
            &options,
            &reporter(&options),
            &mut StreamReader(archive),
            &destination,
        )
        .map(Into::into)
        .map_err(Into::into)
    }
}

impl exports::wasi::cli::run::Guest for Component {
    fn run() -> Result<(), ()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let command = match cli::parse(&args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return Err(());
            }
        };
        match run_command(command) {
            Ok(()) => Ok(()),
            Err(e) => {
                eprintln!("error: {e}");
                Err(())
            }
        }
    }
}

fn run_command(command: cli::Command) -> Result<(), Error> {
    let options = command.options;
    let report = reporter(&options);
    let io = |what: &str, e: io::Error| Error::Io(format!("{what}: {e}"));
    let summary = match command.operation {
        Operation::Help => {
            println!("{}", cli::USAGE);
            return Ok(());
        }
        Operation::Pull {
            bases,
            haves,
            finals,
            output,
        } => {
            let inventories = haves
                .iter()
                .map(|h| {
                    std::fs::read(h)
                        .map(|b| (h.clone(), b))
                        .map_err(|e| io(h, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let request = ops::PullRequest {
                bases,
                inventories,
                finals,
            };
            write_output(&output, &mut |out| {
                ops::pull_bundle(&WasiHttp, &options, &report, &request, out)
            })?
        }
        Operation::Inventory {
            sources,
            archives,
            output,
        } => {
            let mut files = archives
                .iter()
                .map(|a| {
                    std::fs::File::open(a)
                        .map(|f| (a.clone(), f))
                        .map_err(|e| io(a, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let readers = files
                .iter_mut()
                .map(|(name, f)| (name.clone(), f as &mut dyn Read))
                .collect();
            let inventory = ops::inventory(&WasiHttp, &options, &report, &sources, readers)?;
            write_output(&output, &mut |out| {
                out.write_all(&inventory.to_json())
                    .map_err(|e| io(&output, e))
            })?;
            if options.progress {
                eprintln!(
                    "inventory: {} blob(s) and {} manifest(s) from {}",
                    inventory.blobs.len(),
                    inventory.manifests.len(),
                    inventory.sources.join(", ")
                );
            }
            return Ok(());
        }
        Operation::Vet {
            archive,
            destination,
        } => with_input(&archive, |r| {
            ops::push_vet(&WasiHttp, &options, &report, r, &destination)
        })?,
        Operation::Push {
            archive,
            destination,
        } => with_input(&archive, |r| {
            ops::push(&WasiHttp, &options, &report, r, &destination)
        })?,
    };
    if options.progress {
        eprintln!(
            "{}: {} blob(s), {} bytes in the archive; {} blob(s), {} bytes omitted; {} uploaded, {} skipped",
            summary.manifest_digest,
            summary.blobs_in_archive,
            summary.bytes_in_archive,
            summary.blobs_omitted,
            summary.bytes_omitted,
            summary.blobs_uploaded,
            summary.blobs_skipped
        );
        if summary.blobs_mounted > 0 {
            eprintln!(
                "{} blob(s) mounted from other repositories",
                summary.blobs_mounted
            );
        }
    }
    Ok(())
}

fn json_text(inventory: &Inventory) -> String {
    String::from_utf8(inventory.to_json()).expect("JSON is UTF-8")
}

/// Writes to stdout (`-`), or to a file under a temporary name renamed only once complete,
/// so a failed run never leaves a file that looks whole.
fn write_output<T>(
    output: &str,
    write: &mut dyn FnMut(&mut dyn Write) -> Result<T, Error>,
) -> Result<T, Error> {
    let io = |what: &str, e: io::Error| Error::Io(format!("{what}: {e}"));
    if output == "-" {
        let stdout = wasip2::cli::stdout::get_stdout();
        return write(&mut StreamWriter(&stdout));
    }
    let partial = format!("{output}.partial");
    let mut file = std::fs::File::create(&partial).map_err(|e| io(&partial, e))?;
    let result =
        write(&mut file).and_then(|s| file.sync_all().map(|()| s).map_err(|e| io(&partial, e)));
    drop(file);
    match result {
        Ok(s) => {
            std::fs::rename(&partial, output).map_err(|e| io(output, e))?;
            Ok(s)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn with_input<T>(
    path: &str,
    f: impl FnOnce(&mut dyn Read) -> Result<T, Error>,
) -> Result<T, Error> {
    if path == "-" {
        let stdin = wasip2::cli::stdin::get_stdin();
        return f(&mut StreamReader(&stdin));
    }
    let mut file = std::fs::File::open(path).map_err(|e| Error::Io(format!("{path}: {e}")))?;
    f(&mut file)
}

fn reporter(options: &Options) -> impl Fn(&str) + use<> {
    let on = options.progress;
    move |line: &str| {
        if on {
            eprintln!("imo: {line}");
        }
    }
}

impl From<wit::Credentials> for Credentials {
    fn from(c: wit::Credentials) -> Self {
        Credentials {
            username: c.username,
            password: c.password,
        }
    }
}

impl From<wit::Options> for Options {
    fn from(o: wit::Options) -> Self {
        Options {
            base_credentials: o.base_credentials.map(Into::into),
            final_credentials: o.final_credentials.map(Into::into),
            push_credentials: o.push_credentials.map(Into::into),
            registry_credentials: o
                .registry_credentials
                .into_iter()
                .map(|(key, c)| (key, c.into()))
                .collect(),
            insecure_registries: o.insecure_registries,
            mount_from: o.mount_from,
            platforms: o.platforms,
            referrers: o.referrers,
            max_retries: o.max_retries,
            progress: o.progress,
            destination_map: o.destination_map,
        }
    }
}

impl From<Summary> for wit::Summary {
    fn from(s: Summary) -> Self {
        wit::Summary {
            manifest_digest: s.manifest_digest,
            final_reference: s.final_reference,
            images: s.images,
            base_reference: s.base_reference,
            blobs_in_archive: s.blobs_in_archive,
            bytes_in_archive: s.bytes_in_archive,
            blobs_omitted: s.blobs_omitted,
            bytes_omitted: s.bytes_omitted,
            blobs_uploaded: s.blobs_uploaded,
            bytes_uploaded: s.bytes_uploaded,
            blobs_skipped: s.blobs_skipped,
            blobs_mounted: s.blobs_mounted,
            archive_bytes: s.archive_bytes,
        }
    }
}

impl From<Error> for wit::Error {
    fn from(e: Error) -> Self {
        // The WIT cases carry the full message, so hosts print the same text as the CLI.
        let message = e.to_string();
        match e {
            Error::InvalidReference(_) => wit::Error::InvalidReference(message),
            Error::Unreachable(_) => wit::Error::Unreachable(message),
            Error::Denied(_) => wit::Error::Denied(message),
            Error::Unauthorized(_) => wit::Error::Unauthorized(message),
            Error::NotFound(_) => wit::Error::NotFound(message),
            Error::Registry(_) => wit::Error::Registry(message),
            Error::DigestMismatch(_) => wit::Error::DigestMismatch(message),
            Error::InvalidManifest(_) => wit::Error::InvalidManifest(message),
            Error::InvalidArchive(_) => wit::Error::InvalidArchive(message),
            Error::MissingBlobs(digests) => wit::Error::MissingBlobs(digests),
            Error::Io(_) => wit::Error::Io(message),
            Error::Mismatched(_) => wit::Error::DigestMismatch(message),
            Error::Status(s) => match s.status {
                401 | 403 => wit::Error::Unauthorized(message),
                404 => wit::Error::NotFound(message),
                _ => wit::Error::Registry(message),
            },
        }
    }
}

/// `std::io::Write` over a borrowed wasi output stream, honouring its write budget.
struct StreamWriter<'a>(&'a OutputStream);

impl Write for StreamWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.check_write() {
                Ok(0) => self.0.subscribe().block(),
                Ok(n) => {
                    let n = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    self.0.write(&buf[..n]).map_err(stream_error)?;
                    return Ok(n);
                }
                Err(e) => return Err(stream_error(e)),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.blocking_flush().map_err(stream_error)
    }
}

fn pull_request(request: wit::Bundle) -> ops::PullRequest {
    ops::PullRequest {
        bases: request.bases,
        inventories: request
            .inventories
            .into_iter()
            .map(|(name, json)| (name, json.into_bytes()))
            .collect(),
        finals: request.finals,
    }
}

/// The archive file the host handed in, written at any offset.
struct FileArchive<'a>(&'a Descriptor);

impl ops::ArchiveFile for FileArchive<'_> {
    fn at(&self, offset: u64) -> Result<Box<dyn Write + '_>, Error> {
        // Each write is a trip to the host: whole chunks, not the pieces a response body
        // arrives in.
        Ok(Box::new(io::BufWriter::with_capacity(
            FETCH_CHUNK as usize,
            FileRegion {
                file: self.0,
                at: offset,
            },
        )))
    }
}

/// Writes into a file from a position on (`descriptor.write`: a stream of the file would take
/// 64 KiB per trip).
struct FileRegion<'a> {
    file: &'a Descriptor,
    at: u64,
}

impl Write for FileRegion<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf, self.at).map_err(|e| {
            io::Error::other(format!("writing the archive at byte {}: {e}", self.at))
        })?;
        self.at += n;
        Ok(usize::try_from(n).expect("no more than was given"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `std::io::Read` over a borrowed wasi input stream.
struct StreamReader<'a>(&'a InputStream);

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_stream(self.0, buf)
    }
}

fn read_stream(stream: &InputStream, buf: &mut [u8]) -> io::Result<usize> {
    match stream.blocking_read(buf.len() as u64) {
        Ok(chunk) => {
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
        Err(StreamError::Closed) => Ok(0),
        Err(e) => Err(stream_error(e)),
    }
}

fn stream_error(e: StreamError) -> io::Error {
    match e {
        StreamError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, "the stream was closed"),
        StreamError::LastOperationFailed(e) => io::Error::other(e.to_debug_string()),
    }
}

/// The transport: one wasi-http `outgoing-handler.handle` per exchange.
struct WasiHttp;

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
        let future = send(req, body)?;
        let what = format!("{} {}", req.method.as_str(), req.url);
        Ok(Box::new(move || {
            let answer = answer(&future, &what)?;
            Ok(Response {
                status: answer.status,
                headers: answer.headers,
                body: Box::new(answer.body),
            })
        }))
    }
}

/// Sends a request and its whole body, returning the answer to come.
fn send(
    req: &Request,
    body: Option<BodyWriter<'_>>,
) -> Result<http::FutureIncomingResponse, Error> {
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::Unreachable(format!("{} {}: {e}", req.method.as_str(), req.url))
    };
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
    let future = outgoing_handler::handle(request, None).map_err(|e| unreachable(&e))?;
    if let Some(write) = body {
        let stream = outgoing.write().expect("a new body's stream is taken once");
        // Once a body reaches its Content-Length the host may close the stream, so a
        // flush that finds it closed has nothing left to do.
        let written =
            write(&mut StreamWriter(&stream)).and_then(|()| match stream.blocking_flush() {
                Ok(()) | Err(StreamError::Closed) => Ok(()),
                Err(e) => Err(unreachable(&stream_error(e))),
            });
        drop(stream);
        if let Err(e) = written {
            // Dropping the body unfinished aborts the request: nothing is committed.
            drop(outgoing);
            return Err(e);
        }
    }
    http::OutgoingBody::finish(outgoing, None).map_err(|e| unreachable(&e))?;
    Ok(future)
}

/// A response as it arrives: the head, and the body to read.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

/// Awaits the response to a request sent whole (`what`, for messages).
fn answer(future: &http::FutureIncomingResponse, what: &str) -> Result<Answer, Error> {
    let unreachable = |e: &dyn std::fmt::Display| Error::Unreachable(format!("{what}: {e}"));
    let response = loop {
        match future.get() {
            Some(r) => break r,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| unreachable(&"the response was already taken"))?
        .map_err(|e| unreachable(&e))?;
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
        _body: incoming,
        _response: response,
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// How much of a blob one read takes from its response.
const FETCH_CHUNK: u64 = 1 << 20;
/// How many redirects a blob's fetch follows.
const FETCH_REDIRECTS: usize = 5;

/// Several blob downloads on one thread: each takes what its response has ready without
/// waiting, and the thread sleeps only when none has anything.
impl ops::Fetcher for WasiHttp {
    fn fetch(&self, jobs: Vec<ops::Fetch<'_>>, width: usize) -> Vec<Result<(), String>> {
        let mut outcomes: Vec<Option<Result<(), String>>> = jobs.iter().map(|_| None).collect();
        let mut queued = jobs.into_iter().enumerate();
        let mut active: Vec<Download<'_>> = Vec::new();
        loop {
            while active.len() < width.max(1) {
                let Some((index, job)) = queued.next() else {
                    break;
                };
                match Download::open(index, job) {
                    Ok(d) => active.push(d),
                    Err(why) => outcomes[index] = Some(Err(why)),
                }
            }
            if active.is_empty() {
                break;
            }
            let mut moved = false;
            let mut k = 0;
            while k < active.len() {
                match active[k].pump() {
                    Pumped::Nothing => k += 1,
                    Pumped::Some => {
                        moved = true;
                        k += 1;
                    }
                    Pumped::End(outcome) => {
                        moved = true;
                        let done = active.swap_remove(k);
                        let index = done.index;
                        outcomes[index] = Some(outcome.and_then(|()| done.finish()));
                    }
                }
            }
            if !moved {
                let ready: Vec<_> = active.iter().map(Download::subscribe).collect();
                wasip2::io::poll::poll(&ready.iter().collect::<Vec<_>>());
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every job ends"))
            .collect()
    }
}

/// One blob coming in.
struct Download<'a> {
    index: usize,
    job: ops::Fetch<'a>,
    progress: ops::Progress<'a>,
    stage: Stage,
    check: Verifier,
}

enum Stage {
    /// Its request is sent (the `redirects`-th), the answer not in yet.
    Asking {
        answer: http::FutureIncomingResponse,
        request: Request,
        redirects: usize,
    },
    Reading(Body),
}

/// What one look at a download found.
enum Pumped {
    Nothing,
    Some,
    /// Its body ended (`Ok`, to be verified) or it failed.
    End(Result<(), String>),
}

impl<'a> Download<'a> {
    /// Sends the job's `GET`.
    fn open(index: usize, job: ops::Fetch<'a>) -> Result<Self, String> {
        let request = job.source.blob_request(job.d).map_err(|e| e.to_string())?;
        let answer = send(&request, None).map_err(|e| e.to_string())?;
        let check = Verifier::new(&job.d.digest, job.d.size);
        Ok(Download {
            index,
            progress: ops::Progress::start(job.report, ("copying", "copied"), job.d),
            job,
            stage: Stage::Asking {
                answer,
                request,
                redirects: 0,
            },
            check,
        })
    }

    /// What to wait on for this download to move.
    fn subscribe(&self) -> wasip2::io::poll::Pollable {
        match &self.stage {
            Stage::Asking { answer, .. } => answer.subscribe(),
            Stage::Reading(body) => body.stream.subscribe(),
        }
    }

    /// Takes what is ready, if anything: the answer's head (following a redirect, with the
    /// authorization for the same host only), or body bytes into the check and the archive.
    fn pump(&mut self) -> Pumped {
        match &mut self.stage {
            Stage::Asking {
                answer,
                request,
                redirects,
            } => {
                if !answer.subscribe().ready() {
                    return Pumped::Nothing;
                }
                let what = format!("GET {}", request.url);
                let Answer {
                    status,
                    headers,
                    body,
                } = match self::answer(answer, &what) {
                    Ok(head) => head,
                    Err(e) => return Pumped::End(Err(e.to_string())),
                };
                match status {
                    200 => self.stage = Stage::Reading(body),
                    301 | 302 | 303 | 307 | 308 if *redirects < FETCH_REDIRECTS => {
                        let location = headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("location"))
                            .map(|(_, v)| v.as_str());
                        let Some(url) = location.and_then(|l| request.url.join(l).ok()) else {
                            return Pumped::End(Err(format!("HTTP {status} without a Location")));
                        };
                        if url.authority != request.url.authority {
                            request
                                .headers
                                .retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
                        }
                        request.url = url;
                        *redirects += 1;
                        match send(request, None) {
                            Ok(next) => *answer = next,
                            Err(e) => return Pumped::End(Err(e.to_string())),
                        }
                    }
                    status => return Pumped::End(Err(format!("HTTP {status}"))),
                }
                Pumped::Some
            }
            Stage::Reading(body) => match body.stream.read(FETCH_CHUNK) {
                Ok(chunk) if chunk.is_empty() => Pumped::Nothing,
                Ok(chunk) => {
                    if let Err(m) = self.check.update(&chunk) {
                        return Pumped::End(Err(m.to_string()));
                    }
                    if let Err(e) = self.job.out.write_all(&chunk) {
                        return Pumped::End(Err(format!("writing the archive: {e}")));
                    }
                    self.progress.advance(chunk.len());
                    Pumped::Some
                }
                Err(StreamError::Closed) => Pumped::End(Ok(())),
                Err(e) => Pumped::End(Err(stream_error(e).to_string())),
            },
        }
    }

    /// After the body's end: the blob must match, and be written.
    fn finish(mut self) -> Result<(), String> {
        self.check.finish().map_err(|m| m.to_string())?;
        self.job
            .out
            .flush()
            .map_err(|e| format!("writing the archive: {e}"))?;
        self.progress.end();
        Ok(())
    }
}

/// A response body; the fields drop in order, child resources before their parents.
struct Body {
    stream: InputStream,
    _body: http::IncomingBody,
    _response: http::IncomingResponse,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_stream(&self.stream, buf)
    }
}
