//! Uploads: streamed `PUT`s awaited while the next one streams, or streamed `PATCH` chunks
//! (as asked, or once a registry refuses a whole-body `PUT`), resumed from a kept window of
//! bytes when cut, and cross-repository mounts.

use super::Client;
use super::auth::AuthState;
use super::error::registry_detail;
use super::http::{BodyWriter, Method, Pending, Request, Response, Url};
use super::retry::{peek_body, retry_after_ms, retryable_status, says_unimplemented};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Descriptor;
use crate::text::printable;
use std::io::Write;

/// An upload whose bytes are all sent, awaiting the registry's word that it stored the blob
/// (which takes it a while: it syncs the blob to disk first), so that the next upload can
/// stream meanwhile. [`Committing::finish`] waits for that word, and when the answer is a
/// failure worth resuming from, resumes the upload from the bytes it kept.
#[must_use = "an upload is complete only once finished"]
pub struct Committing<'a>(Option<Box<dyn FnOnce() -> Result<()> + 'a>>);

impl<'a> Committing<'a> {
    /// An upload already complete.
    pub fn done() -> Self {
        Self(None)
    }

    fn pending(finish: impl FnOnce() -> Result<()> + 'a) -> Self {
        Self(Some(Box::new(finish)))
    }

    /// Waits until the blob is stored, or fails saying why it is not.
    pub fn finish(self) -> Result<()> {
        self.0.map_or(Ok(()), |finish| finish())
    }
}

/// Hands out a blob's bytes for an upload, 0 at the end, like `Read::read`. It is expected to
/// verify them and fail rather than hand out the bytes that would complete a wrong blob
/// ([`crate::digest::Verifying`]), so a request carrying one never completes.
pub type BlobSource<'a> = &'a mut dyn FnMut(&mut [u8]) -> Result<usize>;

/// How much of an upload is kept once sent, for replay: a cut upload resumes where the
/// registry reports its progress only if the bytes from there are still kept.
pub const UPLOAD_WINDOW: usize = 8 << 20;
/// How much of an upload is pulled from its source and written at once.
const UPLOAD_CHUNK: usize = 1 << 20;
/// The `PATCH` chunks of a registry that refused a whole-body upload: as large as the window,
/// so that a chunk cut midway can always be sent again from where the registry has it.
pub const FALLBACK_CHUNK: u64 = UPLOAD_WINDOW as u64;

/// Whether the answer to an upload's whole-body `PUT` refuses that way of uploading (so the
/// blob goes again in `PATCH` chunks) rather than failing; `early`: it came before the body
/// was all sent.
pub fn refuses_whole_body(status: u16, early: bool, detail: &str) -> bool {
    match status {
        // Not allowed, a length the server will not take (a body in a PUT, or one this
        // large), a body type it refuses, or not implemented: chunks are the spec's other way.
        405 | 411 | 413 | 415 | 501 => true,
        // Answered before the body was sent, the request itself was refused, not its bytes
        // (a wrong digest shows only after them); or the server says it lacks the feature.
        // A 500 after the body is a failure, retried.
        400 | 500 => early || says_unimplemented(detail),
        _ => false,
    }
}

/// The last bytes of an upload, in a ring: what a resumed upload replays.
struct Window {
    buf: Vec<u8>,
    /// Where the next byte goes.
    at: usize,
    /// Bytes taken in so far.
    total: u64,
}

impl Window {
    fn new(capacity: usize) -> Self {
        Window {
            buf: vec![0; capacity.max(1)],
            at: 0,
            total: 0,
        }
    }

    /// Bytes taken in so far.
    fn total(&self) -> u64 {
        self.total
    }

    /// Bytes still kept: the last ones taken in.
    fn kept(&self) -> u64 {
        self.total.min(self.buf.len() as u64)
    }

    /// Room for the next bytes (at most `max`, never empty), up to where the ring wraps.
    fn spare(&mut self, max: usize) -> &mut [u8] {
        if self.at == self.buf.len() {
            self.at = 0;
        }
        let end = self.buf.len().min(self.at + max.max(1));
        &mut self.buf[self.at..end]
    }

    /// Takes in the first `n` bytes of [`Window::spare`], and returns them.
    fn commit(&mut self, n: usize) -> &[u8] {
        let start = self.at;
        self.at += n;
        self.total += n as u64;
        &self.buf[start..self.at]
    }

    /// The bytes taken in from byte `from` on, oldest first (two pieces where the ring
    /// wraps), if they are all still kept.
    fn since(&self, from: u64) -> Option<(&[u8], &[u8])> {
        if from > self.total || self.total - from > self.kept() {
            return None;
        }
        let count = (self.total - from) as usize;
        if count <= self.at {
            return Some((&self.buf[self.at - count..self.at], &[]));
        }
        let older = count - self.at;
        Some((&self.buf[self.buf.len() - older..], &self.buf[..self.at]))
    }
}

/// How a cut upload goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// In the same session, from this byte: the registry holds the bytes before it, and the
    /// bytes from it on are still kept.
    From(u64),
    /// From the start, in a new session: every byte sent is still kept.
    Restart,
    /// Neither: the bytes the registry lacks are no longer kept.
    GiveUp,
}

/// Decides how a cut upload goes on, from the bytes pulled from the source so far
/// (`consumed`), how many of the last of them are still kept (`kept`), and how many bytes the
/// registry says the upload session holds (`None` when the session is gone or the registry
/// will not say). A session said to hold nothing is not reused: distribution reports one byte
/// the same way (`Range: 0-0`), and a new session is right either way.
pub fn resume_plan(consumed: u64, kept: u64, registry_offset: Option<u64>) -> Resume {
    let oldest_kept = consumed.saturating_sub(kept);
    match registry_offset {
        Some(n) if n > 0 && n <= consumed && n >= oldest_kept => Resume::From(n),
        _ if oldest_kept == 0 => Resume::Restart,
        _ => Resume::GiveUp,
    }
}

/// The bytes an upload session holds, from the `Range: 0-<last byte>` of its status; `0-0`
/// counts as none.
pub fn upload_offset(range: &str) -> Option<u64> {
    let range = range.trim();
    let range = range.strip_prefix("bytes=").unwrap_or(range);
    let (start, last) = range.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    let last: u64 = last.trim().parse().ok()?;
    if last == 0 {
        Some(0)
    } else {
        last.checked_add(1)
    }
}

/// One blob's upload: where it stands, and the bytes kept for a resume.
struct Upload {
    d: Descriptor,
    /// For messages: "upload of blob …".
    what: String,
    window: Window,
    session: Url,
    /// The registry's `OCI-Chunk-Min-Length` for the session: chunks but the last are at least
    /// this long.
    min_chunk: u64,
    /// The byte the next body request starts from.
    from: u64,
    resumes: u32,
    /// Milliseconds slept between resumes.
    waited: u64,
    /// Whether a new token was fetched for it already.
    renewed: bool,
}

/// An upload request that failed in a way worth resuming from.
struct Cut {
    /// For messages: the connection error, or the status and the registry's detail.
    why: String,
    /// A connection failure rather than a status.
    connection: bool,
    /// The registry's `Retry-After`.
    after_ms: Option<u64>,
    /// A 401 to a bearer token: a new one is needed first.
    unauthorized: bool,
    /// A whole-body `PUT` refused as such ([`refuses_whole_body`]): the blob goes again in
    /// chunks.
    refused: bool,
}

/// A body request sent, its answer pending.
struct Sent {
    answer: Pending,
    /// For a whole-body `PUT`, whether the answer came before the body was all sent;
    /// `None` for other requests, whose refusal is no reason to upload otherwise.
    whole: Option<bool>,
}

impl Cut {
    /// A cut connection is worth resuming from; any other error is not.
    fn from_error(e: Error) -> Result<Self> {
        match e {
            Error::Unreachable(why) => Ok(Cut {
                why: printable(&why).into_owned(),
                connection: true,
                after_ms: None,
                unauthorized: false,
                refused: false,
            }),
            e => Err(e),
        }
    }
}

/// The headers of an upload request's body of `length` bytes.
fn content(length: u64) -> Vec<(String, String)> {
    vec![
        (
            "content-type".to_owned(),
            "application/octet-stream".to_owned(),
        ),
        ("content-length".to_owned(), length.to_string()),
    ]
}

/// Writes the blob's bytes from `from` up to `end` (the source's end when `None`) into `w`:
/// the kept ones replayed, the rest pulled from `source` through the window. A failure of
/// the source is also left in `pulled`: it ends the upload, it is not a cut.
#[allow(clippy::too_many_arguments)]
fn send_bytes(
    window: &mut Window,
    from: u64,
    end: Option<u64>,
    source: BlobSource<'_>,
    w: &mut dyn Write,
    pulled: &mut Result<()>,
    registry: &str,
    what: &str,
) -> Result<()> {
    let sent = |e: std::io::Error| Error::Unreachable(format!("sending to {registry} failed: {e}"));
    let Some((older, newer)) = window.since(from) else {
        return Err(Error::Registry(format!(
            "{what}: byte {from} on is no longer kept"
        )));
    };
    // Of the kept bytes, those up to `end`.
    let mut room = end.map_or(u64::MAX, |end| end - from);
    for kept in [older, newer] {
        let n = kept.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        w.write_all(&kept[..n]).map_err(sent)?;
        room -= n as u64;
    }
    loop {
        let want = usize::try_from(room)
            .unwrap_or(usize::MAX)
            .min(UPLOAD_CHUNK);
        if want == 0 {
            return Ok(());
        }
        let n = match source(window.spare(want)) {
            Ok(0) if end.is_none() => return Ok(()),
            Ok(0) => {
                let e = Error::Io(format!(
                    "{what}: the blob ended after {} bytes, short of its size",
                    window.total()
                ));
                *pulled = Err(e.clone());
                return Err(e);
            }
            Ok(n) => n,
            Err(e) => {
                *pulled = Err(e.clone());
                return Err(e);
            }
        };
        w.write_all(window.commit(n)).map_err(sent)?;
        room -= n as u64;
    }
}

impl Client<'_> {
    /// Asks the registry to link a blob from another of its repositories into this one,
    /// without moving its bytes. The spec lets a registry decline: with a 202 and an upload
    /// session instead, or by refusing the parameters (`mount_declined`); then the blob is
    /// to be uploaded, into the session offered if any ([`Client::upload_in`]).
    pub fn mount(&self, digest: &Digest, from: &str) -> Result<super::blobs::Mount> {
        use super::blobs::{Mount, mount_declined};
        let uploads = self.repo_url("blobs/uploads/");
        let url = uploads
            .with_query("mount", digest.as_str())
            .with_query("from", from);
        let resp = self.send(Method::Post, url, vec![], None, true)?;
        let join = |location: &str| {
            uploads
                .join(location)
                .map_err(|e| Error::Registry(format!("{}: upload {e}", self.registry)))
        };
        match resp.status {
            201 => Ok(Mount::Mounted),
            202 => Ok(Mount::Declined {
                session: resp.header("location").map(join).transpose()?,
                why: "it offered an upload session instead".into(),
            }),
            // The body (a web page, say) is of no use: the status says enough.
            status if mount_declined(status) => Ok(Mount::Declined {
                session: None,
                why: format!("it answered HTTP {status}"),
            }),
            _ => Err(self.status_error(resp, &format!("mount of blob {digest} from {from}"))),
        }
    }

    /// Uploads a blob whose bytes `source` hands out: `POST`, then one streamed `PUT` (or,
    /// when this client uploads in chunks, streamed `PATCH`es and an empty `PUT`), whose
    /// answer the returned [`Committing`] awaits. A whole-body `PUT` the registry refuses as
    /// such (`refuses_whole_body`) goes again in chunks of `FALLBACK_CHUNK`, as every later
    /// upload of this client. The source is expected to verify the bytes
    /// and fail rather than hand out the bytes completing a wrong blob, which aborts the
    /// request so the registry commits nothing.
    ///
    /// The last [`UPLOAD_WINDOW`] bytes sent are kept. When the body request is cut (or
    /// answered with a retryable status, or a 401 to a bearer token) and retries remain, the
    /// registry is asked how much its upload session holds and whether it has the blob after
    /// all (only the answer was lost); then the upload goes on as [`resume_plan`] says: a
    /// `PATCH` of the rest from the registry's offset and an empty `PUT`, or everything again
    /// in a new session, the kept bytes replayed and the rest pulled from `source`. Otherwise
    /// it fails, saying how far it got.
    pub fn upload(&self, d: &Descriptor, source: BlobSource<'_>) -> Result<Committing<'_>> {
        self.upload_in(None, d, source)
    }

    /// Uploads a blob as [`Client::upload`] does, into `session` when given: the one a
    /// declined mount offered. A resume may still open a new one.
    pub fn upload_in(
        &self,
        session: Option<Url>,
        d: &Descriptor,
        source: BlobSource<'_>,
    ) -> Result<Committing<'_>> {
        let what = format!("upload of blob {}", d.digest);
        let capacity = usize::try_from(d.size)
            .unwrap_or(usize::MAX)
            .min(UPLOAD_WINDOW);
        // An offered session says nothing of chunk lengths; the registry's refusal of a short
        // chunk would show as a failed PATCH.
        let (session, min_chunk) = match session {
            Some(url) => (url, 0),
            None => self.start_upload(&what)?,
        };
        let mut up = Upload {
            d: d.clone(),
            what,
            window: Window::new(capacity),
            session,
            min_chunk,
            from: 0,
            resumes: 0,
            waited: 0,
            renewed: false,
        };
        // A source that fails (a blob that does not verify, a layer that does not rebuild)
        // ends the upload; its session is cancelled, so that the registry drops what it got.
        let source_failed = std::cell::Cell::new(false);
        let mut source = |b: &mut [u8]| {
            let n = source(b);
            source_failed.set(source_failed.get() || n.is_err());
            n
        };
        let sent = self.upload_from(&mut up, &mut source);
        if sent.is_err() && source_failed.get() {
            self.cancel_upload(&up.session);
        }
        let cut = match sent? {
            // Answered before the source was read through: settled now, while it can be.
            Ok(sent) if sent.whole == Some(true) => match self.stored(sent, &up.what)? {
                None => return Ok(Committing::done()),
                Some(cut) => cut,
            },
            Ok(answer) => {
                return Ok(Committing::pending(move || {
                    match self.stored(answer, &up.what)? {
                        None => Ok(()),
                        // Every byte was pulled from the source before the answer came: a
                        // resume needs only what the window kept.
                        Some(cut) => self.resume(&mut up, cut, &mut |_| Ok(0)),
                    }
                }));
            }
            Err(cut) => cut,
        };
        let resumed = self.resume(&mut up, cut, &mut source);
        if resumed.is_err() && source_failed.get() {
            self.cancel_upload(&up.session);
        }
        resumed?;
        Ok(Committing::done())
    }

    /// Cancels an upload session (`DELETE`), as a courtesy: the registry would expire it
    /// anyway, so a failure is only reported.
    fn cancel_upload(&self, session: &Url) {
        let what = "cancelling the upload session";
        let cancelled = self
            .send(Method::Delete, session.clone(), vec![], None, false)
            .and_then(|resp| self.expect(resp, &[200, 202, 204, 404], what));
        if let Err(e) = cancelled {
            self.net.report.line(&format!("{what} failed: {e}"));
        }
    }

    /// Goes on with an upload after `cut`, until the registry stores the blob or the upload
    /// cannot go on.
    fn resume(&self, up: &mut Upload, mut cut: Cut, source: BlobSource<'_>) -> Result<()> {
        loop {
            if cut.refused {
                cut = match self.chunks_instead(up, &cut, source)? {
                    None => return Ok(()),
                    Some(cut) => cut,
                };
                continue;
            }
            up.resumes += 1;
            let retry = self.net.retry;
            let delay = cut
                .after_ms
                .unwrap_or_else(|| retry.delay_ms(up.resumes, self.transport.random()));
            if up.resumes > retry.attempts || up.waited + delay > retry.max_wait_ms {
                let reason = if retry.attempts == 0 {
                    "retries are off".to_owned()
                } else if up.resumes > retry.attempts {
                    format!(
                        "it was resumed {} time(s), as many as allowed",
                        up.resumes - 1
                    )
                } else {
                    format!(
                        "retries already waited {} ms, as long as allowed",
                        up.waited
                    )
                };
                return Err(self.upload_lost(up, &cut, &reason));
            }
            if cut.unauthorized {
                // One new token; a second 401 means the token is not the problem.
                let challenge = match &*self.auth.borrow() {
                    AuthState::Bearer { challenge, .. } if !up.renewed => challenge.clone(),
                    _ => return Err(self.upload_lost(up, &cut, "a new token was refused")),
                };
                self.renew(challenge)?;
                up.renewed = true;
            }
            self.transport.sleep_ms(delay);
            up.waited += delay;
            let asked = self
                .upload_status(&up.session, &up.what)
                .and_then(|held| Ok((held, self.has_blob(&up.d.digest)?)));
            let (held, committed) = match asked {
                Ok(answers) => answers,
                Err(e) => {
                    let reason = format!("asking the registry where it stands failed: {e}");
                    return Err(self.upload_lost(up, &cut, &reason));
                }
            };
            if committed {
                self.net.report.line(&format!(
                    "{} completed before {}: the registry holds the blob",
                    up.what, cut.why
                ));
                return Ok(());
            }
            let attempt = format!("retry {} of {}", up.resumes, retry.attempts);
            let (total, kept) = (up.window.total(), up.window.kept());
            match resume_plan(total, kept, held.as_ref().map(|h| h.0)) {
                Resume::From(n) => {
                    self.net.report.line(&format!(
                        "resuming {} at byte {n} of {}, as the registry holds the bytes \
                         before it, after {} ({attempt})",
                        up.what, up.d.size, cut.why
                    ));
                    up.session = held.expect("an offset comes with its session").1;
                    up.from = n;
                }
                Resume::Restart => {
                    self.net.report.line(&format!(
                        "resuming {} from byte 0 in a new upload session, as the registry \
                         {}, after {} ({attempt})",
                        up.what,
                        match held {
                            None => "dropped the session".to_owned(),
                            Some((0, _)) => "holds none of it".to_owned(),
                            Some((n, _)) => format!("claims {n} bytes, more than were written"),
                        },
                        cut.why
                    ));
                    (up.session, up.min_chunk) = self.start_upload(&up.what)?;
                    up.from = 0;
                }
                Resume::GiveUp => {
                    let reason = match held {
                        Some((n, _)) if n > total => {
                            format!("the registry says it holds {n} bytes, more than were written")
                        }
                        Some((n, _)) => format!(
                            "the registry holds its first {n} bytes, and the bytes from there \
                             are no longer kept"
                        ),
                        None => "the registry dropped the upload session, and the start of \
                                 the blob is no longer kept"
                            .to_owned(),
                    };
                    return Err(self.upload_lost(up, &cut, &reason));
                }
            }
            cut = match self.upload_from(up, source)? {
                Ok(answer) => match self.stored(answer, &up.what)? {
                    None => return Ok(()),
                    Some(cut) => cut,
                },
                Err(cut) => cut,
            };
        }
    }

    /// After a registry refused a whole-body upload: the blob again, in chunks in a new
    /// session, as every later upload of this client (the registry would refuse them too),
    /// if every byte sent is still kept. `None` once the registry stored the blob.
    fn chunks_instead(
        &self,
        up: &mut Upload,
        cut: &Cut,
        source: BlobSource<'_>,
    ) -> Result<Option<Cut>> {
        if self.chunk_size.get() == 0 {
            self.chunk_size.set(FALLBACK_CHUNK);
            self.net.report.line(&format!(
                "{} refused the {} in one request ({}): uploading in chunks of {FALLBACK_CHUNK} \
                 bytes from now on",
                self.registry, up.what, cut.why
            ));
        }
        let (total, kept) = (up.window.total(), up.window.kept());
        if resume_plan(total, kept, None) != Resume::Restart {
            return Err(Error::Registry(format!(
                "{}: the upload of blob {} to {} was refused in one request ({}), and imo no \
                 longer keeps the {total} bytes it wrote to send them again in chunks; run the \
                 push again with --chunk-size {}M: blobs already at the destination are skipped",
                self.registry,
                up.d.digest,
                self.repository,
                cut.why,
                FALLBACK_CHUNK >> 20
            )));
        }
        (up.session, up.min_chunk) = self.start_upload(&up.what)?;
        up.from = 0;
        Ok(match self.upload_from(up, source)? {
            Ok(sent) => self.stored(sent, &up.what)?,
            Err(cut) => Some(cut),
        })
    }

    /// Opens an upload session (`POST`), returning its URL and the registry's
    /// `OCI-Chunk-Min-Length` (0 without one).
    fn start_upload(&self, what: &str) -> Result<(Url, u64)> {
        let url = self.repo_url("blobs/uploads/");
        let start = self.send(Method::Post, url.clone(), vec![], None, true)?;
        let start = self.expect(start, &[202], what)?;
        let Some(location) = start.header("location") else {
            return Err(Error::Registry(format!(
                "{} started an upload without a Location",
                self.registry
            )));
        };
        let min_chunk = start
            .header("oci-chunk-min-length")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        // Relative to the request, as RFC 3986 says.
        let url = url
            .join(location)
            .map_err(|e| Error::Registry(format!("{}: upload {e}", self.registry)))?;
        Ok((url, min_chunk))
    }

    /// Sends the blob from byte `up.from` on in `up.session`: in chunks when this client
    /// uploads so ([`Client::upload_chunks`]); otherwise, from the start, one `PUT` carrying
    /// it all, and past it (a resume), the rest as one chunk (none if the registry holds
    /// every byte) and an empty `PUT`. Kept bytes are replayed, the rest pulled from `source` into the
    /// window. The `PUT`'s answer is left pending; `Err` when a request failed in a way worth
    /// resuming from.
    fn upload_from(
        &self,
        up: &mut Upload,
        source: BlobSource<'_>,
    ) -> Result<std::result::Result<Sent, Cut>> {
        let chunk = self.chunk_size.get();
        if chunk > 0 || up.from > 0 {
            // Past the start (a resume), the rest goes as one chunk.
            let chunk = if chunk > 0 {
                chunk.max(up.min_chunk)
            } else {
                u64::MAX
            };
            return self.upload_chunks(up, source, chunk);
        }
        let (d, from) = (&up.d, up.from);
        let put_url = up.session.with_query("digest", d.digest.as_str());
        if d.size == 0 {
            return self.put_started(put_url, content(0), None);
        }
        let mut pulled = Ok(());
        let mut complete = false;
        let (window, what) = (&mut up.window, &up.what);
        let registry = &self.registry;
        let mut body = |w: &mut dyn Write| -> Result<()> {
            send_bytes(window, from, None, source, w, &mut pulled, registry, what)?;
            complete = true;
            Ok(())
        };
        // The body cannot be written again by the transport: a failure comes back here.
        let started = self.put_started(put_url, content(d.size), Some(&mut body));
        pulled?;
        Ok(started?.map(|sent| Sent {
            whole: Some(!complete),
            ..sent
        }))
    }

    /// Sends the blob from byte `up.from` on in `PATCH` chunks of `chunk` bytes (the last
    /// shorter), each streamed, then an empty `PUT` whose answer is left pending. A chunk
    /// acknowledged moves `up.from` on, so that a cut replays only the chunk it cut.
    fn upload_chunks(
        &self,
        up: &mut Upload,
        source: BlobSource<'_>,
        chunk: u64,
    ) -> Result<std::result::Result<Sent, Cut>> {
        while up.from < up.d.size {
            let (from, end) = (up.from, up.d.size.min(up.from.saturating_add(chunk)));
            let mut pulled = Ok(());
            let (window, what) = (&mut up.window, &up.what);
            let registry = &self.registry;
            let mut body = |w: &mut dyn Write| -> Result<()> {
                send_bytes(
                    window,
                    from,
                    Some(end),
                    source,
                    w,
                    &mut pulled,
                    registry,
                    what,
                )
            };
            let mut headers = content(end - from);
            headers.push(("content-range".to_owned(), format!("{from}-{}", end - 1)));
            let patch = self.send(
                Method::Patch,
                up.session.clone(),
                headers,
                Some(&mut body),
                false,
            );
            pulled?;
            let resp = match self.resumable(patch, 202, &up.what, None)? {
                Ok(resp) => resp,
                Err(cut) => return Ok(Err(cut)),
            };
            // The answer's `Range` is not trusted to move on: one registry counts only the
            // last chunk's bytes in it. A session that lost bytes fails the digest at the end.
            self.follow_session(up, &resp)?;
            up.from = end;
        }
        let put_url = up.session.with_query("digest", up.d.digest.as_str());
        self.put_started(put_url, content(0), None)
    }

    /// The session goes on at the Location an upload request's answer gives, if any.
    fn follow_session(&self, up: &mut Upload, resp: &Response) -> Result<()> {
        if let Some(location) = resp.header("location") {
            up.session = up
                .session
                .join(location)
                .map_err(|e| Error::Registry(format!("{}: upload {e}", self.registry)))?;
        }
        Ok(())
    }

    /// Starts an upload's `PUT` ([`Client::start`]: never replayed nor redirected), leaving
    /// its answer pending.
    fn put_started(
        &self,
        url: Url,
        headers: Vec<(String, String)>,
        body: Option<BodyWriter<'_>>,
    ) -> Result<std::result::Result<Sent, Cut>> {
        let request = Request {
            method: Method::Put,
            url,
            headers,
        };
        match self.start(request, body) {
            Ok(answer) => Ok(Ok(Sent {
                answer,
                whole: None,
            })),
            Err(e) => Ok(Err(Cut::from_error(e)?)),
        }
    }

    /// Awaits an upload's `PUT`: `None` once the registry stored the blob, or a failure worth
    /// resuming from.
    fn stored(&self, sent: Sent, what: &str) -> Result<Option<Cut>> {
        Ok(self
            .resumable((sent.answer)(), 201, what, sent.whole)?
            .err())
    }

    /// Sorts the outcome of an upload request: the expected answer, a failure worth resuming
    /// from (a whole-body `PUT` refused as such, when `whole` says it was one, and whether it
    /// was answered early), or an error: a status no retry changes fails at once.
    fn resumable(
        &self,
        result: Result<Response>,
        expected: u16,
        what: &str,
        whole: Option<bool>,
    ) -> Result<std::result::Result<Response, Cut>> {
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => return Ok(Err(Cut::from_error(e)?)),
        };
        if resp.status == expected {
            return Ok(Ok(resp));
        }
        let bearer = matches!(&*self.auth.borrow(), AuthState::Bearer { .. });
        let body = peek_body(&mut resp);
        let detail = registry_detail(&body);
        let refused = whole.is_some_and(|early| refuses_whole_body(resp.status, early, &detail));
        let transient = retryable_status(resp.status) && !says_unimplemented(&detail);
        if refused || transient || (resp.status == 401 && bearer) {
            let why = format!("HTTP {} {detail}", resp.status);
            Ok(Err(Cut {
                why: why.trim_end().to_owned(),
                connection: false,
                after_ms: retry_after_ms(resp.header("retry-after")),
                unauthorized: resp.status == 401,
                refused,
            }))
        } else {
            self.expect(resp, &[expected], what).map(Ok)
        }
    }

    /// How many bytes an upload session holds, with its URL from now on (`GET` on it, as
    /// the distribution spec's upload status); `None` when the registry no longer knows the
    /// session or will not say.
    fn upload_status(&self, session: &Url, what: &str) -> Result<Option<(u64, Url)>> {
        let resp = self.send(Method::Get, session.clone(), vec![], None, true)?;
        if retryable_status(resp.status) || resp.status == 401 || resp.status == 403 {
            return Err(self.status_error(resp, &format!("status of the {what}")));
        }
        if !(200..300).contains(&resp.status) {
            return Ok(None);
        }
        let Some(held) = resp.header("range").and_then(upload_offset) else {
            return Ok(None);
        };
        let url = match resp.header("location") {
            Some(location) => session
                .join(location)
                .map_err(|e| Error::Registry(format!("{}: upload {e}", self.registry)))?,
            None => session.clone(),
        };
        Ok(Some((held, url)))
    }

    /// The error for an upload that cannot go on: which blob, how far it got, what was kept,
    /// and what to do.
    fn upload_lost(&self, up: &Upload, cut: &Cut, reason: &str) -> Error {
        let (d, window) = (&up.d, &up.window);
        let message = format!(
            "{}: the upload of blob {} to {} failed after imo wrote {} of its {} bytes ({}), \
             and cannot be resumed: {reason} (imo keeps the last {} bytes written); run the \
             push again: blobs already at the destination are skipped",
            self.registry,
            d.digest,
            self.repository,
            window.total(),
            d.size,
            cut.why,
            window.kept()
        );
        if cut.connection {
            Error::Unreachable(message)
        } else {
            Error::Registry(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Reference;
    use crate::registry::fake::FakeRegistry;
    use crate::registry::{Access, Net};
    use std::cell::RefCell;
    use std::io::Read;

    #[test]
    fn a_cut_upload_resumes_restarts_or_gives_up_by_what_is_kept() {
        const MIB: u64 = 1 << 20;
        // The registry holds some of it, and the bytes from there are kept.
        assert_eq!(resume_plan(3 * MIB, 3 * MIB, Some(MIB)), Resume::From(MIB));
        assert_eq!(
            resume_plan(20 * MIB, 8 * MIB, Some(12 * MIB)),
            Resume::From(12 * MIB)
        );
        assert_eq!(
            resume_plan(20 * MIB, 8 * MIB, Some(20 * MIB)),
            Resume::From(20 * MIB)
        );
        // It holds bytes from before what is kept: no way on, unless everything is kept.
        assert_eq!(
            resume_plan(20 * MIB, 8 * MIB, Some(12 * MIB - 1)),
            Resume::GiveUp
        );
        assert_eq!(resume_plan(20 * MIB, 8 * MIB, None), Resume::GiveUp);
        assert_eq!(resume_plan(20 * MIB, 8 * MIB, Some(0)), Resume::GiveUp);
        // The session is gone, holds nothing (or one byte: `0-0`), or claims more than was
        // sent: a new session, if every byte sent is kept.
        assert_eq!(resume_plan(3 * MIB, 3 * MIB, None), Resume::Restart);
        assert_eq!(resume_plan(3 * MIB, 3 * MIB, Some(0)), Resume::Restart);
        assert_eq!(
            resume_plan(3 * MIB, 3 * MIB, Some(4 * MIB)),
            Resume::Restart
        );
        assert_eq!(
            resume_plan(20 * MIB, 8 * MIB, Some(21 * MIB)),
            Resume::GiveUp
        );
        assert_eq!(resume_plan(0, 0, None), Resume::Restart);
        assert_eq!(resume_plan(8 * MIB, 8 * MIB, None), Resume::Restart);
        assert_eq!(resume_plan(8 * MIB + 1, 8 * MIB, None), Resume::GiveUp);
    }

    #[test]
    fn upload_offsets_come_from_the_status_range() {
        assert_eq!(upload_offset("0-1499999"), Some(1_500_000));
        assert_eq!(upload_offset(" bytes=0-9 "), Some(10));
        assert_eq!(upload_offset("0-0"), Some(0));
        for bad in [
            "",
            "0-",
            "5-9",
            "0--1",
            "x-3",
            "0-y",
            "0-18446744073709551615",
        ] {
            assert_eq!(upload_offset(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_window_keeps_the_last_bytes_in_order() {
        let mut w = Window::new(10);
        assert_eq!(w.since(0), Some((&[][..], &[][..])));
        // Each byte is its position in the stream, to check the order; room for a write
        // ends where the ring wraps.
        let mut taken = Vec::new();
        for want in [4, 4, 4, 7, 3] {
            let start = w.total() as u8;
            let spare = w.spare(want);
            let n = spare.len();
            for (i, b) in spare.iter_mut().enumerate() {
                *b = start + i as u8;
            }
            let got = w.commit(n).to_vec();
            assert_eq!(got, (start..start + n as u8).collect::<Vec<u8>>());
            taken.extend(got);
        }
        // 4 + 4 + 2 (the ring's end) + 7 + 3 bytes.
        assert_eq!(w.total(), 20);
        assert_eq!(w.kept(), 10);
        let joined = |from| {
            w.since(from).map(|(a, b)| {
                let mut v = a.to_vec();
                v.extend_from_slice(b);
                v
            })
        };
        assert_eq!(joined(10), Some(taken[10..].to_vec()));
        assert_eq!(joined(13), Some(taken[13..].to_vec()));
        assert_eq!(joined(20), Some(vec![]));
        assert_eq!(joined(9), None, "no longer kept");
        assert_eq!(joined(21), None, "never sent");
        // A blob smaller than the window is kept whole.
        let mut small = Window::new(5);
        small.spare(100)[..5].copy_from_slice(b"abcde");
        small.commit(5);
        assert_eq!(small.since(0), Some((&b"abcde"[..], &[][..])));
        assert_eq!(Window::new(0).spare(8).len(), 1, "never an empty read");
    }

    fn blob_bytes(size: usize) -> Vec<u8> {
        (0..size)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect()
    }

    /// Uploads `data` (declared as `declared`) through the fake, with `attempts` retries:
    /// the outcome, the report lines, and the requests as `METHOD path`.
    fn upload_to(
        fake: &FakeRegistry,
        data: &[u8],
        declared: &[u8],
        attempts: u32,
    ) -> (Result<()>, Vec<String>, Vec<String>) {
        upload_in_chunks(fake, data, declared, attempts, 0)
    }

    /// [`upload_to`], in chunks of `chunk_size` bytes (0 for none).
    fn upload_in_chunks(
        fake: &FakeRegistry,
        data: &[u8],
        declared: &[u8],
        attempts: u32,
        chunk_size: u64,
    ) -> (Result<()>, Vec<String>, Vec<String>) {
        let lines = RefCell::new(Vec::new());
        let report = |l: &str| lines.borrow_mut().push(l.to_owned());
        let net = Net {
            chunk_size,
            ..Net::testing(attempts, 60_000, &report)
        };
        let reference = Reference::parse("127.0.0.1:5000/r").unwrap();
        let client =
            Client::connect(fake, &reference, None, Access::push(vec![]), &[], net).unwrap();
        let d = Descriptor {
            media_type: "application/octet-stream".into(),
            digest: Digest::of(declared),
            size: declared.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        let mut rest = data;
        let mut read = |b: &mut [u8]| rest.read(b).map_err(|e| Error::Io(e.to_string()));
        let mismatch = |m: crate::digest::Mismatch| Error::DigestMismatch(m.to_string());
        let mut blob = crate::digest::Verifying::new(&d.digest, d.size, &mut read, &mismatch);
        let result = client
            .upload(&d, &mut |b| blob.read(b))
            .and_then(Committing::finish);
        let log = std::mem::take(&mut fake.state.borrow_mut().log);
        let lines = lines.borrow().clone();
        (result, lines, log)
    }

    fn stored(fake: &FakeRegistry, data: &[u8]) -> bool {
        fake.state.borrow().blobs.get(Digest::of(data).as_str()) == Some(&data.to_vec())
    }

    #[test]
    fn a_normal_upload_is_one_post_and_one_put() {
        let fake = FakeRegistry::default();
        let data = blob_bytes(3 << 20 | 123);
        let (r, lines, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(
            log[1..],
            ["POST /v2/r/blobs/uploads/", "PUT /v2/r/blobs/uploads/1"]
        );
    }

    #[test]
    fn an_upload_answered_late_with_a_failure_resumes_from_what_it_kept() {
        let fake = FakeRegistry::default();
        // The first body request is drained and answered 503, after the second upload began.
        fake.state.borrow_mut().statuses = [503].into();
        let lines = RefCell::new(Vec::<String>::new());
        let report = |l: &str| lines.borrow_mut().push(l.to_owned());
        let net = Net::testing(2, 60_000, &report);
        let reference = Reference::parse("127.0.0.1:5000/r").unwrap();
        let client =
            Client::connect(&fake, &reference, None, Access::push(vec![]), &[], net).unwrap();
        let (first, second) = (blob_bytes(2 << 20), blob_bytes(5000));
        let send = |data: &[u8]| {
            let d = Descriptor {
                media_type: "application/octet-stream".into(),
                digest: Digest::of(data),
                size: data.len() as u64,
                platform: None,
                annotations: Default::default(),
            };
            let mut rest = data;
            client
                .upload(&d, &mut |b| {
                    rest.read(b).map_err(|e| Error::Io(e.to_string()))
                })
                .unwrap()
        };
        let committing = send(&first);
        let next = send(&second);
        assert!(
            !stored(&fake, &first),
            "the registry refused the first body"
        );
        committing.finish().unwrap();
        next.finish().unwrap();
        assert!(stored(&fake, &first) && stored(&fake, &second));
        let log = std::mem::take(&mut fake.state.borrow_mut().log);
        assert_eq!(
            log[1..],
            [
                "POST /v2/r/blobs/uploads/",
                "PUT /v2/r/blobs/uploads/1",
                "POST /v2/r/blobs/uploads/",
                "PUT /v2/r/blobs/uploads/2",
                "GET /v2/r/blobs/uploads/1",
                &format!("HEAD /v2/r/blobs/{}", Digest::of(&first)),
                "POST /v2/r/blobs/uploads/",
                "PUT /v2/r/blobs/uploads/3",
            ]
        );
        let lines = lines.borrow();
        assert!(
            lines.len() == 1 && lines[0].contains("from byte 0 in a new upload session"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_cut_upload_resumes_with_a_patch_where_the_registry_has_it() {
        let fake = FakeRegistry::default();
        // The PUT is cut, then the PATCH resuming it is too.
        fake.state.borrow_mut().cuts = [1_500_000, 600_000].into();
        let data = blob_bytes(3 << 20 | 123);
        let (r, lines, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert_eq!(
            log[1..],
            [
                "POST /v2/r/blobs/uploads/",
                "PUT /v2/r/blobs/uploads/1",
                "GET /v2/r/blobs/uploads/1",
                &format!("HEAD /v2/r/blobs/{}", Digest::of(&data)),
                "PATCH /v2/r/blobs/uploads/1",
                "GET /v2/r/blobs/uploads/1",
                &format!("HEAD /v2/r/blobs/{}", Digest::of(&data)),
                "PATCH /v2/r/blobs/uploads/1",
                "PUT /v2/r/blobs/uploads/1",
            ]
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("resuming upload of blob sha256:")
                && lines[0].contains("at byte 1500000 of 3145851")
                && lines[0].contains("(retry 1 of 4)"),
            "{lines:?}"
        );
        assert!(lines[1].contains("at byte 2100000 of"), "{lines:?}");
    }

    #[test]
    fn a_dropped_session_restarts_when_everything_sent_is_kept() {
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().drop_cut_sessions = true;
        fake.state.borrow_mut().cuts = [1_500_000].into();
        let data = blob_bytes(3 << 20);
        let (r, lines, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert_eq!(log.iter().filter(|l| l.starts_with("POST")).count(), 2);
        assert!(!log.iter().any(|l| l.starts_with("PATCH")), "{log:?}");
        assert!(
            lines[0].contains("from byte 0 in a new upload session")
                && lines[0].contains("dropped the session"),
            "{lines:?}"
        );
        // A retryable status: the session holds nothing (`0-0`), so a new one is used too.
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().statuses = [503].into();
        let (r, lines, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert_eq!(log.iter().filter(|l| l.starts_with("POST")).count(), 2);
        assert!(
            lines[0].contains("after HTTP 503") && lines[0].contains("holds none of it"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_cut_that_leaves_unkept_bytes_behind_fails_clearly() {
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().drop_cut_sessions = true;
        let cut = UPLOAD_WINDOW + (1 << 20);
        fake.state.borrow_mut().cuts = [cut].into();
        let data = blob_bytes(UPLOAD_WINDOW + (3 << 20));
        let (r, lines, _) = upload_to(&fake, &data, &data, 4);
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Unreachable(_)), "{e}");
        let e = e.to_string();
        for says in [
            format!("blob {}", Digest::of(&data)),
            format!("of its {} bytes", data.len()),
            "dropped the upload session".into(),
            format!("keeps the last {UPLOAD_WINDOW} bytes"),
            "run the push again".into(),
        ] {
            assert!(e.contains(&says), "{says:?} not in {e}");
        }
        assert!(lines.is_empty(), "{lines:?}");
        assert!(!stored(&fake, &data));
        // Where the registry keeps the session, the same cut resumes.
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().cuts = [cut].into();
        let (r, _, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert!(log.iter().any(|l| l.starts_with("PATCH")));
    }

    #[test]
    fn without_retries_a_cut_upload_fails_at_once() {
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().cuts = [100].into();
        let data = blob_bytes(1 << 20);
        let (r, _, log) = upload_to(&fake, &data, &data, 0);
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with("registry unreachable") && e.contains("retries are off"),
            "{e}"
        );
        assert_eq!(log.iter().filter(|l| l.starts_with("PUT")).count(), 1);
    }

    #[test]
    fn a_lost_answer_is_found_by_asking_for_the_blob() {
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().lose_answer = true;
        let data = blob_bytes(100_000);
        let (r, lines, log) = upload_to(&fake, &data, &data, 4);
        r.unwrap();
        assert_eq!(log.iter().filter(|l| l.starts_with("PUT")).count(), 1);
        assert!(
            lines[0].contains("the registry holds the blob"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_corrupt_blob_is_neither_committed_nor_resumed() {
        let data = blob_bytes(3 << 20);
        let mut corrupt = data.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        for cuts in [vec![], vec![1_500_000]] {
            let fake = FakeRegistry::default();
            fake.state.borrow_mut().cuts = cuts.clone().into();
            let (r, _, log) = upload_to(&fake, &corrupt, &data, 4);
            let e = r.unwrap_err();
            assert!(matches!(e, Error::DigestMismatch(_)), "{cuts:?}: {e}");
            assert!(fake.state.borrow().blobs.is_empty());
            // One resume for the cut, none for the mismatch.
            let bodies = log
                .iter()
                .filter(|l| l.starts_with("PUT") || l.starts_with("PATCH"))
                .count();
            assert_eq!(bodies, 1 + cuts.len(), "{log:?}");
            // Its session is cancelled: the registry drops what it received.
            assert!(
                log.last()
                    .unwrap()
                    .starts_with("DELETE /v2/r/blobs/uploads/")
            );
            assert!(fake.state.borrow().sessions.is_empty(), "{log:?}");
        }
    }

    #[test]
    fn chunked_uploads_patch_each_range_then_put_nothing() {
        let fake = FakeRegistry::default();
        let data = blob_bytes(3 << 20 | 123);
        let (r, lines, log) = upload_in_chunks(&fake, &data, &data, 4, 1 << 20);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(
            log[1..],
            [
                "POST /v2/r/blobs/uploads/",
                "PATCH /v2/r/blobs/uploads/1",
                "PATCH /v2/r/blobs/uploads/1",
                "PATCH /v2/r/blobs/uploads/1",
                "PATCH /v2/r/blobs/uploads/1",
                "PUT /v2/r/blobs/uploads/1",
            ]
        );
        assert_eq!(
            fake.state.borrow().ranges,
            [
                "0-1048575/1048576",
                "1048576-2097151/1048576",
                "2097152-3145727/1048576",
                "3145728-3145850/123",
            ]
        );
    }

    #[test]
    fn chunks_are_at_least_the_registrys_minimum() {
        let fake = FakeRegistry::default();
        fake.state.borrow_mut().chunk_min = Some(1_500_000);
        let data = blob_bytes(3 << 20 | 123);
        let (r, _, _) = upload_in_chunks(&fake, &data, &data, 4, 1 << 20);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert_eq!(
            fake.state.borrow().ranges,
            [
                "0-1499999/1500000",
                "1500000-2999999/1500000",
                "3000000-3145850/145851",
            ]
        );
    }

    #[test]
    fn a_chunk_cut_midway_resumes_where_the_registry_has_it() {
        let fake = FakeRegistry::default();
        // The third chunk is cut 300 kB in.
        fake.state.borrow_mut().cuts = [usize::MAX, usize::MAX, 300_000].into();
        let data = blob_bytes(3 << 20 | 123);
        let (r, lines, _) = upload_in_chunks(&fake, &data, &data, 4, 1 << 20);
        r.unwrap();
        assert!(stored(&fake, &data));
        assert!(lines[0].contains("at byte 2397152 of"), "{lines:?}");
        assert_eq!(
            fake.state.borrow().ranges[2..],
            ["2097152-3145727/1048576", "2397152-3145850/748699"]
        );
    }

    /// Two blobs uploaded by one client into `fake`, whole-body: the outcomes, the report
    /// lines and the requests.
    fn two_uploads(
        fake: &FakeRegistry,
        sizes: [usize; 2],
    ) -> (Vec<Result<()>>, Vec<String>, Vec<String>) {
        let lines = RefCell::new(Vec::new());
        let report = |l: &str| lines.borrow_mut().push(l.to_owned());
        let net = Net::testing(4, 60_000, &report);
        let reference = Reference::parse("127.0.0.1:5000/r").unwrap();
        let client =
            Client::connect(fake, &reference, None, Access::push(vec![]), &[], net).unwrap();
        let results = sizes
            .iter()
            .map(|&size| {
                let data = blob_bytes(size);
                let d = Descriptor {
                    media_type: "application/octet-stream".into(),
                    digest: Digest::of(&data),
                    size: data.len() as u64,
                    platform: None,
                    annotations: Default::default(),
                };
                let mut rest = &data[..];
                let r = client
                    .upload(&d, &mut |b| {
                        rest.read(b).map_err(|e| Error::Io(e.to_string()))
                    })
                    .and_then(Committing::finish);
                assert!(r.is_err() || stored(fake, &data));
                r
            })
            .collect();
        let log = std::mem::take(&mut fake.state.borrow_mut().log);
        let lines = lines.borrow().clone();
        (results, lines, log)
    }

    #[test]
    fn a_refused_whole_body_put_goes_again_in_chunks_from_then_on() {
        for (status, text) in [(500, "missing content length not implemented"), (405, "")] {
            let fake = FakeRegistry::default();
            fake.state.borrow_mut().refuse_whole_body = Some(status);
            fake.state.borrow_mut().status_text = text.into();
            let (results, lines, log) = two_uploads(&fake, [3 << 20, 100_000]);
            assert!(results.iter().all(Result::is_ok), "{status}: {results:?}");
            assert_eq!(
                log[1..],
                [
                    "POST /v2/r/blobs/uploads/",
                    "PUT /v2/r/blobs/uploads/1",
                    "POST /v2/r/blobs/uploads/",
                    "PATCH /v2/r/blobs/uploads/2",
                    "PUT /v2/r/blobs/uploads/2",
                    // The next blob goes in chunks at once.
                    "POST /v2/r/blobs/uploads/",
                    "PATCH /v2/r/blobs/uploads/3",
                    "PUT /v2/r/blobs/uploads/3",
                ],
                "{status}"
            );
            assert!(
                lines.len() == 1
                    && lines[0].contains("refused the upload of blob sha256:")
                    && lines[0].contains(format!("(HTTP {status} {text}").trim_end())
                    && lines[0].contains("uploading in chunks of 8388608 bytes from now on"),
                "{status}: {lines:?}"
            );
        }
    }

    #[test]
    fn a_refused_put_whose_bytes_are_gone_says_to_push_in_chunks() {
        let fake = FakeRegistry::default();
        // Refused only once the whole body, more than the window, went out.
        fake.state.borrow_mut().statuses = [501].into();
        let data = blob_bytes(UPLOAD_WINDOW + (1 << 20));
        let (r, _, log) = upload_to(&fake, &data, &data, 4);
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Registry(_)), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("refused in one request (HTTP 501")
                && e.contains("run the push again with --chunk-size 8M"),
            "{e}"
        );
        assert_eq!(log.iter().filter(|l| l.starts_with("PUT")).count(), 1);
    }

    #[test]
    fn a_status_no_retry_changes_fails_at_once() {
        let data = blob_bytes(3 << 20);
        // A 500 that says the feature is missing, to a PATCH; a 400 after a whole body.
        for (chunk, status, text) in [
            (1 << 20, 500, "unsupported feature: chunked uploads"),
            (0, 400, "bad request"),
        ] {
            let fake = FakeRegistry::default();
            fake.state.borrow_mut().statuses = [status].into();
            fake.state.borrow_mut().status_text = text.into();
            let (r, lines, log) = upload_in_chunks(&fake, &data, &data, 4, chunk);
            let e = r.unwrap_err();
            assert!(matches!(e, Error::Status(_)), "{status}: {e}");
            let e = e.to_string();
            assert!(e.contains(&format!("{status}")) && e.contains(text), "{e}");
            assert!(lines.is_empty(), "{status}: {lines:?}");
            assert_eq!(log.len(), 3, "{status}: {log:?}");
        }
    }

    #[test]
    fn whole_body_refusals_are_told_from_failures() {
        for status in [405, 411, 413, 415, 501] {
            assert!(refuses_whole_body(status, false, ""), "{status}");
        }
        assert!(refuses_whole_body(500, true, ""));
        assert!(refuses_whole_body(400, true, "x"));
        assert!(refuses_whole_body(
            500,
            false,
            "missing content length not implemented"
        ));
        assert!(!refuses_whole_body(500, false, "storage failed"));
        assert!(!refuses_whole_body(
            400,
            false,
            "DIGEST_INVALID: digest invalid"
        ));
        assert!(!refuses_whole_body(503, true, ""));
        assert!(!refuses_whole_body(404, true, ""));
        assert!(says_unimplemented("Unsupported feature") && !says_unimplemented("down"));
    }
}
