//! Blobs: `HEAD`, resumable verified downloads, blob requests for a concurrent fetcher, and
//! copies across repositories where the registry declines a mount.

use super::Client;
use super::auth::Authorize;
use super::http::{Method, Pending, Request, Response, Url};
use super::redirect::{follow, followed};
use super::retry::retryable_status;
use super::upload::Committing;
use crate::digest::{Digest, Mismatch, Verifying, copy_verified};
use crate::error::{Error, Mismatched, Result};
use crate::manifest::Descriptor;
use crate::text::printable;
use std::collections::VecDeque;
use std::io::Read;

/// How many `HEAD`s [`Client::have_blobs`] keeps in flight.
const HEADS_IN_FLIGHT: usize = 8;

impl<'t> Client<'t> {
    /// Streams a blob into `sink`, checking size and digest; fails before passing on a byte
    /// beyond the declared size.
    pub fn blob(&self, d: &Descriptor, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut download = self.download(&self.repository, d)?;
        copy_verified(
            &d.digest,
            d.size,
            &mut vec![0u8; 1 << 20],
            &mut |b| download.read(b),
            sink,
            &|m| self.blob_mismatch(&self.repository, d, m),
        )
    }

    /// Copies a blob from repository `from` of this registry into this one, for a mount the
    /// registry declined: a `GET` there streams into the upload here (into `session`, the one
    /// the decline offered, if any), verified on the way, so a wrong blob is never stored.
    /// Nothing is held whole; a cut download resumes where it stopped. `progress` hears of
    /// every byte sent.
    pub fn copy_blob(
        &self,
        d: &Descriptor,
        from: &str,
        session: Option<Url>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Committing<'_>> {
        let mut download = self.download(from, d)?;
        let mut read = |b: &mut [u8]| download.read(b);
        let mismatch = |m| self.blob_mismatch(from, d, m);
        let mut blob = Verifying::new(&d.digest, d.size, &mut read, &mismatch);
        self.upload_in(session, d, &mut |b| {
            let n = blob.read(b)?;
            progress(n);
            Ok(n)
        })
    }

    /// A blob of `repository` (of this registry) as a stream, checked as it goes, for a
    /// reader that takes it piecemeal (the source layers of a delta); a cut download resumes.
    pub fn open_blob_in<'c>(
        &'c self,
        repository: &str,
        d: &Descriptor,
    ) -> Result<Box<dyn Read + 'c>> {
        let download = self.download(repository, d)?;
        let what = format!("blob {} of {}/{repository}", d.digest, self.registry);
        Ok(Box::new(crate::digest::verified_reader(
            download, &d.digest, d.size, what,
        )))
    }

    fn blob_mismatch(&self, repository: &str, d: &Descriptor, m: Mismatch) -> Error {
        let what = format!("blob {} of {repository}", d.digest);
        Error::Mismatched(Box::new(Mismatched::streamed(&self.registry, what, m)))
    }

    /// Starts the download of a blob of `repository` (of this registry).
    fn download<'c>(&'c self, repository: &str, d: &Descriptor) -> Result<Download<'c, 't>> {
        let what = format!("blob {}", d.digest);
        let url = self.url(&format!("/v2/{repository}/blobs/{}", d.digest));
        let resp = self.blob_from(&url, &what, 0)?;
        let end = body_end(&resp, 0);
        Ok(Download {
            client: self,
            url,
            what,
            size: d.size,
            resp,
            end,
            at: 0,
            resumed: 0,
        })
    }

    /// Starts a blob download at byte `at`: a `Range` request past the start, accepting a
    /// 206 from there or a whole 200 whose first `at` bytes are skipped.
    fn blob_from(&self, url: &Url, what: &str, at: u64) -> Result<Response> {
        let headers = if at > 0 {
            vec![("range".into(), format!("bytes={at}-"))]
        } else {
            vec![]
        };
        let resp = self.send(Method::Get, url.clone(), headers, None, true)?;
        let codes: &[u16] = if at > 0 { &[200, 206] } else { &[200] };
        let mut resp = self.expect(resp, codes, what)?;
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
            _ => {
                let start = resp
                    .header("content-range")
                    .and_then(|r| r.strip_prefix("bytes "))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if start != Some(at) {
                    let range = resp
                        .header("content-range")
                        .map_or("none".into(), |r| format!("\"{}\"", printable(r)));
                    return Err(Error::Registry(format!(
                        "{} answered a range request for {what} from byte {at} with Content-Range {range}",
                        self.registry,
                    )));
                }
                Ok(resp)
            }
        }
    }

    /// The `GET` of a blob, authorized, for a transport that fetches several at once. Its
    /// redirects are followed by the client's rules: while [`crate::registry::followed`] says
    /// so, the next request is [`crate::registry::follow`]'s (which drops the authorization
    /// off-origin). A failed one is fetched again with [`Client::blob`].
    pub fn blob_request(&self, d: &Descriptor) -> Result<Request> {
        let url = self.repo_url(&format!("blobs/{}", d.digest));
        let mut headers = vec![];
        if let Some(a) = self.authorization_for(&url, &Authorize::Registry)? {
            headers.push(("authorization".to_owned(), a));
        }
        Ok(Request {
            method: Method::Get,
            url,
            headers,
        })
    }

    /// Whether the repository holds a blob (`HEAD`).
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        self.head(None, digest, None)
    }

    /// Whether another repository of this registry holds a blob, for vetting mounts.
    pub fn has_blob_in(&self, repository: &str, digest: &Digest) -> Result<bool> {
        self.head(Some(repository), digest, None)
    }

    /// Whether the registry holds each blob asked for: in this repository (`None`), as
    /// [`Client::has_blob`] answers, or in another, as [`Client::has_blob_in`] does. A vet
    /// asks about every blob of an archive, each a round trip and next to no work, so up to
    /// [`HEADS_IN_FLIGHT`] are in flight at once, redirects followed among them. Any other
    /// answer is settled at once, alone, before more are sent: through the retries (the
    /// answer counting as the first try), token renewal and redirects every request takes.
    /// Answers to requests sent before that settled are asked again afresh, as they would
    /// have been sent after it. So a registry in trouble is waited for as asking one by one
    /// would wait, and each answer is the one asking alone would give.
    pub fn have_blobs(&self, asks: &[(Option<&str>, &Digest)]) -> Result<Vec<bool>> {
        let mut held = vec![false; asks.len()];
        let mut waiting: VecDeque<Ahead> = VecDeque::new();
        let mut next = asks.iter().enumerate();
        // Requests sent so far, and how many had been sent when an answer was last settled.
        let (mut sent, mut settled_at) = (0, 0);
        loop {
            while waiting.len() < HEADS_IN_FLIGHT {
                let Some((ask, &(repository, digest))) = next.next() else {
                    break;
                };
                match self.start_head(repository, digest) {
                    Ok((request, pending)) => waiting.push_back(Ahead {
                        ask,
                        sent,
                        request,
                        hops: 0,
                        pending,
                    }),
                    // Refused before it was sent (a policy, a token that cannot be had):
                    // asked alone, it would fail the same way.
                    Err(e) if !passing(&e) => return Err(e),
                    Err(e) => {
                        held[ask] = self.head(repository, digest, Some(Err(e)))?;
                        settled_at = sent;
                    }
                }
                sent += 1;
            }
            let Some(ahead) = waiting.pop_front() else {
                break;
            };
            let (repository, digest) = asks[ahead.ask];
            let answer = match (ahead.pending)() {
                Ok(r) if r.status == 200 || r.status == 404 => {
                    held[ahead.ask] = r.status == 200;
                    continue;
                }
                // Not readable with these credentials: not mountable, as `has_blob_in` says.
                Ok(r) if r.status == 403 && repository.is_some() => continue,
                Ok(r) if followed(Method::Head, r.status) => {
                    match follow(&ahead.request, r.header("location"), ahead.hops) {
                        Ok(request) => match self.transport.start(&request, None) {
                            Ok(pending) => {
                                let hops = ahead.hops + 1;
                                waiting.push_back(Ahead {
                                    request,
                                    hops,
                                    pending,
                                    ..ahead
                                });
                                continue;
                            }
                            Err(e) => Err(e),
                        },
                        // Asked alone, it fails with the registry's name on it.
                        Err(_) => Ok(r),
                    }
                }
                answer => answer,
            };
            let first = (ahead.sent >= settled_at).then_some(answer);
            held[ahead.ask] = self.head(repository, digest, first)?;
            settled_at = sent;
        }
        Ok(held)
    }

    /// A blob's `HEAD` in `repository` (this one for `None`), through retries, token
    /// renewal and redirects; `first` is the answer to a first try already sent.
    fn head(
        &self,
        repository: Option<&str>,
        digest: &Digest,
        first: Option<Result<Response>>,
    ) -> Result<bool> {
        let (what, codes): (_, &[u16]) = match repository {
            None => (format!("HEAD blob {digest}"), &[200, 404]),
            // Not there, or not readable with these credentials: either way not mountable.
            Some(r) => (format!("HEAD blob {digest} in {r}"), &[200, 401, 403, 404]),
        };
        let request = self.head_request(repository, digest);
        // Only a passing failure is taken as the first try: anything else is asked again.
        let mut first = first.filter(worth_retrying);
        let resp = self.with_retries(&request, true, &mut |_| match first.take() {
            Some(answer) => answer,
            None => self.send_authorized(&request, None, true, &Authorize::Registry),
        })?;
        let resp = self.expect(resp, codes, &what)?;
        Ok(resp.status == 200)
    }

    /// Sends a blob's `HEAD` with this registry's authorization, its answer awaited later;
    /// returns the request as sent, for a redirect to be followed from.
    fn start_head(&self, repository: Option<&str>, digest: &Digest) -> Result<(Request, Pending)> {
        let mut request = self.head_request(repository, digest);
        if let Some(a) = self.authorization_for(&request.url, &Authorize::Registry)? {
            request.headers.push(("authorization".to_owned(), a));
        }
        let pending = self.transport.start(&request, None)?;
        Ok((request, pending))
    }

    /// A blob's `HEAD` in `repository` (this one for `None`), without `Authorization`.
    fn head_request(&self, repository: Option<&str>, digest: &Digest) -> Request {
        let repository = repository.unwrap_or(&self.repository);
        Request {
            method: Method::Head,
            url: self.url(&format!("/v2/{repository}/blobs/{digest}")),
            headers: vec![],
        }
    }
}

/// A blob's `HEAD` sent ahead by [`Client::have_blobs`], its answer to come.
struct Ahead {
    /// Which ask it answers.
    ask: usize,
    /// How many requests were sent before it (redirects aside).
    sent: usize,
    /// As sent, `Authorization` included.
    request: Request,
    /// Redirects followed to it.
    hops: u32,
    pending: Pending,
}

/// Whether an answer is a passing failure, which the retries would try again.
fn worth_retrying(answer: &Result<Response>) -> bool {
    match answer {
        Ok(r) => retryable_status(r.status),
        Err(e) => passing(e),
    }
}

/// Whether an error is one a retry may get past: no answer came.
fn passing(e: &Error) -> bool {
    matches!(e, Error::Unreachable(_))
}

/// Where a blob download's body ends, in bytes of the blob, by its `Content-Length`: from
/// `at` for a 206, from the start for a 200 (whose first `at` bytes are skipped).
fn body_end(resp: &Response, at: u64) -> Option<u64> {
    let len = resp.header("content-length")?.trim().parse::<u64>().ok()?;
    if resp.status == 206 {
        at.checked_add(len)
    } else {
        Some(len)
    }
}

/// A blob's download, read as it streams: a cut download resumes where it stopped (the
/// caller's hash carries on over the seam).
struct Download<'c, 't> {
    client: &'c Client<'t>,
    url: Url,
    /// For messages: "blob …".
    what: String,
    size: u64,
    resp: Response,
    /// Where the current answer's body ends, in bytes of the blob.
    end: Option<u64>,
    /// Bytes read so far.
    at: u64,
    resumed: u32,
}

impl Download<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let c = self.client;
        loop {
            let why = match self.resp.body.read(buf) {
                Ok(n) if n > 0 || self.at >= self.size => {
                    self.at += n as u64;
                    return Ok(n);
                }
                // Past the end, nothing more is owed.
                Err(_) if self.at >= self.size => return Ok(0),
                // A whole answer, as long as it said it would be: the registry's blob is
                // short, and asking again would not lengthen it. The check reports it.
                Ok(_) if self.end == Some(self.at) => return Ok(0),
                Ok(_) => "the body ended early".to_owned(),
                Err(e) => printable(&e.to_string()).into_owned(),
            };
            self.resumed += 1;
            let (what, at) = (&self.what, self.at);
            if self.resumed > c.net.retry.attempts {
                return Err(Error::Unreachable(format!(
                    "{} while reading {what} at byte {at}: {why} (gave up after {} resumes)",
                    c.registry, c.net.retry.attempts
                )));
            }
            c.net
                .report
                .line(&format!("resuming {what} at byte {at} after: {why}"));
            c.transport
                .sleep_ms(c.net.retry.delay_ms(self.resumed, c.transport.random()));
            self.resp = c.blob_from(&self.url, what, at)?;
            self.end = body_end(&self.resp, at);
        }
    }
}
impl Read for Download<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Download::read(self, buf).map_err(std::io::Error::other)
    }
}

/// How a mount request went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    /// The blob is linked into the repository (201).
    Mounted,
    /// The registry would rather have an upload: into `session`, if it offered one; `why`
    /// says how it declined, for messages.
    Declined { session: Option<Url>, why: String },
}

/// Whether a status answering a mount `POST` declines the mount rather than fails: a
/// registry that lacks mounts may refuse the `mount` and `from` parameters as it would any
/// request it does not know (400, 404, 405, 501, and the like). Authorization and rate
/// limits are failures; a 403 may be a policy against mounts, and the upload that follows
/// says if it is more.
pub fn mount_declined(status: u16) -> bool {
    ((400..500).contains(&status) && !matches!(status, 401 | 407 | 408 | 429)) || status == 501
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Reference;
    use crate::registry::fake::FakeRegistry;
    use crate::registry::{Access, BodyWriter, Net, Transport};

    fn descriptor(data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: "application/octet-stream".into(),
            digest: Digest::of(data),
            size: data.len() as u64,
            platform: None,
            annotations: Default::default(),
        }
    }

    /// A registry whose repository `app` holds `held` as the blob `data` names; the client
    /// pushes to `r`.
    fn registry(data: &[u8], held: &[u8], mount_status: u16) -> FakeRegistry {
        let fake = FakeRegistry::default();
        let mut st = fake.state.borrow_mut();
        st.mount_status = mount_status;
        st.elsewhere
            .insert(format!("app/{}", Digest::of(data)), held.to_vec());
        drop(st);
        fake
    }

    fn client(fake: &FakeRegistry) -> Client<'_> {
        let net = Net::testing(1, 1000, &|_: &str| {});
        let reference = Reference::parse("127.0.0.1:5000/r").unwrap();
        Client::connect(fake, &reference, None, Access::push(vec![]), &[], net).unwrap()
    }

    fn requests(fake: &FakeRegistry) -> Vec<String> {
        std::mem::take(&mut fake.state.borrow_mut().log)[1..].to_vec()
    }

    /// Mounts `data` from `app`, copying it where the mount is declined: the mount's answer,
    /// the copy's outcome, and the bytes progress heard of.
    fn mount_or_copy(fake: &FakeRegistry, data: &[u8]) -> (Mount, Result<()>, usize) {
        let c = client(fake);
        let d = descriptor(data);
        let mount = c.mount(&d.digest, "app").unwrap();
        let mut sent = 0;
        let copied = match &mount {
            Mount::Mounted => Ok(()),
            Mount::Declined { session, .. } => c
                .copy_blob(&d, "app", session.clone(), &mut |n| sent += n)
                .and_then(Committing::finish),
        };
        (mount, copied, sent)
    }

    fn stored(fake: &FakeRegistry, data: &[u8]) -> bool {
        fake.state.borrow().blobs.get(Digest::of(data).as_str()) == Some(&data.to_vec())
    }

    fn bytes(size: usize) -> Vec<u8> {
        (0..size)
            .map(|i| (i % 253) as u8 ^ (i >> 11) as u8)
            .collect()
    }

    #[test]
    fn a_mount_declined_with_a_session_is_copied_into_that_session() {
        let data = bytes(3 << 20 | 77);
        let fake = registry(&data, &data, 202);
        let (mount, copied, sent) = mount_or_copy(&fake, &data);
        let Mount::Declined { session, why } = mount else {
            panic!("declined")
        };
        assert_eq!(session.unwrap().path, "/v2/r/blobs/uploads/1");
        assert!(why.contains("upload session"), "{why}");
        copied.unwrap();
        assert!(stored(&fake, &data));
        assert_eq!(sent, data.len());
        assert_eq!(
            requests(&fake),
            [
                "POST /v2/r/blobs/uploads/".to_owned(),
                format!("GET /v2/app/blobs/{}", Digest::of(&data)),
                "PUT /v2/r/blobs/uploads/1".to_owned(),
            ],
            "the session offered is used: no second POST"
        );
    }

    #[test]
    fn a_refused_mount_is_copied_into_a_new_session() {
        let data = bytes(100_000);
        for status in [404, 405, 400] {
            let fake = registry(&data, &data, status);
            let (mount, copied, _) = mount_or_copy(&fake, &data);
            assert_eq!(
                mount,
                Mount::Declined {
                    session: None,
                    why: format!("it answered HTTP {status}")
                }
            );
            copied.unwrap();
            assert!(stored(&fake, &data), "{status}");
            let log = requests(&fake);
            assert_eq!(log.len(), 4, "{log:?}");
            assert_eq!(log[1], format!("GET /v2/app/blobs/{}", Digest::of(&data)));
            assert_eq!(
                log[2..],
                ["POST /v2/r/blobs/uploads/", "PUT /v2/r/blobs/uploads/1"]
            );
        }
    }

    #[test]
    fn an_accepted_mount_moves_no_bytes() {
        let data = bytes(5000);
        let fake = registry(&data, &data, 201);
        let (mount, copied, sent) = mount_or_copy(&fake, &data);
        assert_eq!(mount, Mount::Mounted);
        copied.unwrap();
        assert!(stored(&fake, &data));
        assert_eq!(sent, 0);
        assert_eq!(requests(&fake), ["POST /v2/r/blobs/uploads/"]);
    }

    #[test]
    fn an_opened_blob_streams_checked() {
        let data = bytes(3 << 20);
        let mut wrong = data.clone();
        wrong[5] ^= 1;
        let fake = registry(&data, &data, 404);
        let c = client(&fake);
        let mut read = Vec::new();
        c.open_blob_in("app", &descriptor(&data))
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert!(read == data);

        let fake = registry(&data, &wrong, 404);
        let c = client(&fake);
        let e = c
            .open_blob_in("app", &descriptor(&data))
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("of 127.0.0.1:5000/app"), "{e}");
    }

    #[test]
    fn a_copy_of_a_wrong_blob_stores_nothing() {
        let data = bytes(2 << 20);
        let mut wrong = data.clone();
        *wrong.last_mut().unwrap() ^= 1;
        let fake = registry(&data, &wrong, 404);
        let (_, copied, _) = mount_or_copy(&fake, &data);
        let e = copied.unwrap_err();
        assert!(matches!(e, Error::Mismatched(_)), "{e}");
        assert!(e.to_string().contains("of app"), "{e}");
        assert!(fake.state.borrow().blobs.is_empty());
    }

    #[test]
    fn refusals_decline_a_mount_and_failures_fail_it() {
        for declined in [400, 403, 404, 405, 415, 501] {
            assert!(mount_declined(declined), "{declined}");
        }
        for failed in [401, 429, 500, 502, 503] {
            assert!(!mount_declined(failed), "{failed}");
        }
        let data = bytes(10);
        let fake = registry(&data, &data, 500);
        let e = client(&fake)
            .mount(&Digest::of(&data), "app")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mount of blob") && e.contains("500"), "{e}");
    }

    /// The fake registry, with requests started ahead of their answers counted; the first
    /// `HEAD` of each path in `flaky` is answered 503, repository `moved` redirects to `app`,
    /// and when `down`, no request gets an answer.
    struct Pipelined<'f> {
        fake: &'f FakeRegistry,
        waiting: std::rc::Rc<std::cell::Cell<usize>>,
        most: std::cell::Cell<usize>,
        flaky: std::cell::RefCell<Vec<String>>,
        down: std::cell::Cell<bool>,
    }

    impl<'f> Pipelined<'f> {
        fn new(fake: &'f FakeRegistry, flaky: Vec<String>) -> Self {
            Pipelined {
                fake,
                waiting: Default::default(),
                most: Default::default(),
                flaky: flaky.into(),
                down: Default::default(),
            }
        }

        fn answer(&self, req: &Request, body: Option<BodyWriter<'_>>) -> Result<Response> {
            let path = &req.url.path;
            let logged = |status: u16, headers: Vec<(String, String)>| {
                let line = format!("{} {path}", req.method.as_str());
                self.fake.state.borrow_mut().log.push(line);
                Ok(Response {
                    status,
                    headers,
                    body: Box::new(std::io::empty()),
                })
            };
            if self.down.get() {
                logged(0, vec![])?;
                return Err(Error::Unreachable("timed out".into()));
            }
            let mut flaky = self.flaky.borrow_mut();
            if let Some(i) = flaky.iter().position(|p| p == path) {
                flaky.remove(i);
                return logged(503, vec![]);
            }
            if let Some(rest) = path.strip_prefix("/v2/moved/") {
                return logged(307, vec![("location".into(), format!("/v2/app/{rest}"))]);
            }
            self.fake.send(req, body)
        }
    }

    impl Transport for Pipelined<'_> {
        fn send(&self, req: &Request, body: Option<BodyWriter<'_>>) -> Result<Response> {
            self.answer(req, body)
        }
        fn start(&self, req: &Request, body: Option<BodyWriter<'_>>) -> Result<Pending> {
            let answer = self.answer(req, body);
            self.waiting.set(self.waiting.get() + 1);
            self.most.set(self.most.get().max(self.waiting.get()));
            let waiting = self.waiting.clone();
            Ok(Box::new(move || {
                waiting.set(waiting.get() - 1);
                answer
            }))
        }
        fn now(&self) -> u64 {
            0
        }
        fn sleep_ms(&self, _: u64) {}
        fn random(&self) -> u64 {
            0
        }
    }

    #[test]
    fn blobs_are_asked_about_several_at_once_with_the_answers_of_asking_alone() {
        let fake = FakeRegistry::default();
        let blobs: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 10]).collect();
        let mut asks = vec![];
        {
            let mut st = fake.state.borrow_mut();
            for (i, b) in blobs.iter().enumerate() {
                if i % 3 == 0 {
                    st.blobs.insert(Digest::of(b).to_string(), b.clone());
                }
                if i % 4 == 0 {
                    st.elsewhere
                        .insert(format!("app/{}", Digest::of(b)), b.clone());
                }
            }
        }
        let digests: Vec<Digest> = blobs.iter().map(|b| Digest::of(b)).collect();
        for d in &digests {
            asks.push((None, d));
            asks.push((Some("app"), d));
        }
        let alone = client(&fake);
        let expected: Vec<bool> = (asks.iter())
            .map(|&(r, d)| r.map_or_else(|| alone.has_blob(d), |r| alone.has_blob_in(r, d)))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(expected.iter().filter(|&&h| h).count(), 4 + 3);

        // The first HEAD of blob 3 in `r`, which holds it, fails once: it is retried.
        let flaky = format!("/v2/r/blobs/{}", digests[3]);
        let ahead = Pipelined::new(&fake, vec![flaky.clone()]);
        let said = std::cell::RefCell::new(vec![]);
        let report = |line: &str| said.borrow_mut().push(line.to_owned());
        let net = Net::testing(1, 1000, &report);
        let reference = Reference::parse("127.0.0.1:5000/r").unwrap();
        let c = Client::connect(&ahead, &reference, None, Access::push(vec![]), &[], net).unwrap();
        fake.state.borrow_mut().log.clear();
        assert_eq!(c.have_blobs(&asks).unwrap(), expected);
        assert_eq!(ahead.most.get(), HEADS_IN_FLIGHT, "HEADs in flight at once");
        assert_eq!(ahead.waiting.get(), 0, "every answer awaited");
        let log = std::mem::take(&mut fake.state.borrow_mut().log);
        let flaky = format!("HEAD {flaky}");
        assert_eq!(log.len(), asks.len() + 1, "{log:?}");
        assert_eq!(log.iter().filter(|l| **l == flaky).count(), 2, "{log:?}");
        let again = log.iter().rposition(|l| *l == flaky).unwrap();
        assert!(
            again < asks.len(),
            "settled at once, not after the others: {log:?}"
        );
        let said = said.into_inner();
        assert!(
            said.len() == 1 && said[0].starts_with("retrying HEAD") && said[0].contains("503"),
            "the first answer counts as the first try, as asking alone: {said:?}"
        );
    }

    fn through<'a>(port: &'a Pipelined<'a>, attempts: u32) -> Client<'a> {
        let net = Net::testing(attempts, 1000, &|_: &str| {});
        let reference = Reference::parse("127.0.0.1:5000/r").unwrap();
        let c = Client::connect(port, &reference, None, Access::push(vec![]), &[], net).unwrap();
        port.fake.state.borrow_mut().log.clear();
        c
    }

    #[test]
    fn redirects_are_followed_among_the_heads_in_flight() {
        let fake = FakeRegistry::default();
        let blobs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10]).collect();
        for b in blobs.iter().step_by(2) {
            let key = format!("app/{}", Digest::of(b));
            fake.state.borrow_mut().elsewhere.insert(key, b.clone());
        }
        let digests: Vec<Digest> = blobs.iter().map(|b| Digest::of(b)).collect();
        let asks: Vec<_> = digests.iter().map(|d| (Some("moved"), d)).collect();
        let port = Pipelined::new(&fake, vec![]);
        let held = through(&port, 1).have_blobs(&asks).unwrap();
        assert_eq!(held, (0..10).map(|i| i % 2 == 0).collect::<Vec<_>>());
        assert_eq!(port.most.get(), HEADS_IN_FLIGHT);
        // Each asked once where it was asked, and once where it was sent.
        let log = std::mem::take(&mut fake.state.borrow_mut().log);
        for d in &digests {
            for repo in ["moved", "app"] {
                let line = format!("HEAD /v2/{repo}/blobs/{d}");
                assert_eq!(log.iter().filter(|l| **l == line).count(), 1, "{log:?}");
            }
        }
        assert_eq!(log.len(), 20, "{log:?}");
    }

    #[test]
    fn a_registry_that_stops_answering_gets_no_more_heads_than_asking_alone_and_those_in_flight() {
        let fake = FakeRegistry::default();
        let port = Pipelined::new(&fake, vec![]);
        let c = through(&port, 2);
        port.down.set(true);
        let digests: Vec<Digest> = (0..40u8).map(|i| Digest::of(&[i])).collect();
        let asks: Vec<_> = digests.iter().map(|d| (None, d)).collect();
        let e = c.have_blobs(&asks).unwrap_err();
        assert!(e.to_string().contains("stopped answering"), "{e}");
        // Eight sent ahead, then the first one's two retries: not one per blob.
        let log = std::mem::take(&mut fake.state.borrow_mut().log);
        assert_eq!(log.len(), HEADS_IN_FLIGHT + 2, "{log:?}");
    }
}
