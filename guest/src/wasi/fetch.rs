//! Concurrent blob downloads for a pull into a file, all on one thread.

use super::http::{Answer, Body, WasiHttp, answer, send};
use crate::cli::Timeouts;
use crate::digest::Verifier;
use crate::digest::{Digest, Mismatch};
use crate::error::{Error, Mismatched, Result, Status};
use crate::ops;
use crate::registry::{Method, Request, follow, followed};
use std::io::Write;
use wasip2::http::types as http;
use wasip2::io::streams::StreamError;

/// How much of a blob one read takes from its response.
pub(super) const FETCH_CHUNK: u64 = 1 << 20;

/// Several blob downloads on one thread: each takes what its response has ready without
/// waiting, and the thread sleeps only when none has anything.
impl ops::Fetcher for WasiHttp {
    fn fetch(&self, jobs: Vec<ops::Fetch<'_>>, width: usize) -> Vec<Result<()>> {
        let mut outcomes: Vec<Option<Result<()>>> = jobs.iter().map(|_| None).collect();
        let mut queued = jobs.into_iter().enumerate();
        let mut active: Vec<Download<'_>> = Vec::new();
        loop {
            while active.len() < width.max(1) {
                let Some((index, job)) = queued.next() else {
                    break;
                };
                match Download::open(index, job, self.limits) {
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
    limits: Timeouts,
    /// The registry asked first, for messages.
    registry: String,
}

enum Stage {
    /// Its request is sent (the `redirects`-th), the answer not in yet.
    Asking {
        answer: http::FutureIncomingResponse,
        request: Request,
        redirects: u32,
    },
    Reading(Body),
}

/// What one look at a download found.
enum Pumped {
    Nothing,
    Some,
    /// Its body ended (`Ok`, to be verified) or it failed.
    End(Result<()>),
}

impl<'a> Download<'a> {
    /// Sends the job's `GET`.
    fn open(index: usize, job: ops::Fetch<'a>, limits: Timeouts) -> Result<Self> {
        let request = job.source.blob_request(job.d)?;
        let answer = send(&request, None, &limits)?;
        let check = Verifier::new(&job.d.digest, job.d.size);
        let registry = request.url.authority.clone();
        Ok(Download {
            registry,
            index,
            progress: ops::Progress::start(job.report, ("copying", "copied"), job.d),
            job,
            stage: Stage::Asking {
                answer,
                request,
                redirects: 0,
            },
            check,
            limits,
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
                } = match self::answer(answer, &what, &self.limits) {
                    Ok(head) => head,
                    Err(e) => return Pumped::End(Err(e)),
                };
                if status == 200 {
                    self.stage = Stage::Reading(body);
                } else if followed(Method::Get, status) {
                    // The client's redirect rules, the one copy: Authorization stays on its
                    // origin, no downgrade, no user information, a bounded number of hops.
                    let location = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
                        .map(|(_, v)| v.as_str());
                    *request = match follow(request, location, *redirects) {
                        Ok(next) => next,
                        Err(refused) => {
                            return Pumped::End(Err(Error::Registry(format!("{what}: {refused}"))));
                        }
                    };
                    *redirects += 1;
                    match send(request, None, &self.limits) {
                        Ok(next) => *answer = next,
                        Err(e) => return Pumped::End(Err(e)),
                    }
                } else {
                    return Pumped::End(Err(Error::Status(Box::new(Status {
                        registry: self.registry.clone(),
                        request: format!("GET of blob {}", self.job.d.digest),
                        status,
                        diagnostics: String::new(),
                        hint: None,
                        endpoint: None,
                    }))));
                }
                Pumped::Some
            }
            Stage::Reading(body) => match body.stream.read(FETCH_CHUNK) {
                Ok(chunk) if chunk.is_empty() => Pumped::Nothing,
                Ok(chunk) => {
                    if let Err(m) = self.check.update(&chunk) {
                        return Pumped::End(Err(Self::mismatch(
                            &self.registry,
                            &self.job.d.digest,
                            m,
                        )));
                    }
                    if let Err(e) = self.job.out.write_all(&chunk) {
                        return Pumped::End(Err(Error::Io(format!("writing the archive: {e}"))));
                    }
                    self.progress.advance(chunk.len());
                    Pumped::Some
                }
                Err(StreamError::Closed) => Pumped::End(Ok(())),
                Err(e) => Pumped::End(Err(Error::Unreachable(format!(
                    "GET of blob {}: {}",
                    self.job.d.digest,
                    body.error(e)
                )))),
            },
        }
    }

    fn mismatch(registry: &str, digest: &Digest, m: Mismatch) -> Error {
        let what = format!("blob {digest}");
        Error::Mismatched(Box::new(Mismatched::streamed(registry, what, m)))
    }

    /// After the body's end: the blob must match, and be written.
    fn finish(mut self) -> Result<()> {
        if let Err(m) = self.check.finish() {
            return Err(Self::mismatch(&self.registry, &self.job.d.digest, m));
        }
        (self.job.out.flush()).map_err(|e| Error::Io(format!("writing the archive: {e}")))?;
        self.progress.end();
        Ok(())
    }
}
