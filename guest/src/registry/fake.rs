//! An in-memory registry for the client's unit tests.

use super::http::{BodyWriter, Method, Request, Response, Transport};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::cell::RefCell;
use std::io::Write;

/// An in-memory registry for uploads: its sessions keep what they receive, the next
/// body requests can be cut or answered with a status, and every request is logged.
#[derive(Default)]
pub struct FakeRegistry {
    pub state: RefCell<FakeState>,
}

#[derive(Default)]
pub struct FakeState {
    pub sessions: std::collections::BTreeMap<u32, Vec<u8>>,
    pub next_session: u32,
    pub blobs: std::collections::BTreeMap<String, Vec<u8>>,
    /// Each of the next body requests is cut after this many bytes, which it keeps.
    pub cuts: std::collections::VecDeque<usize>,
    /// Each of the next body requests is drained and answered with this status.
    pub statuses: std::collections::VecDeque<u16>,
    /// As distribution 2.8 does, a cut session is dropped.
    pub drop_cut_sessions: bool,
    /// The next commit happens, but its answer is lost.
    pub lose_answer: bool,
    pub log: Vec<String>,
    /// Blobs of other repositories, by `repository/digest`: served, and mounted from.
    pub elsewhere: std::collections::BTreeMap<String, Vec<u8>>,
    /// The answer to a mount `POST`: 201 links the blob from `elsewhere`; 0 (or 202)
    /// declines with a session, as a plain `POST`; any other status declines with it.
    pub mount_status: u16,
    /// The text of the answers given by `statuses` and `refuse_whole_body`.
    pub status_text: String,
    /// A `PUT` with a body is answered with this status before its body is taken, as a
    /// registry that takes only `PATCH`es does.
    pub refuse_whole_body: Option<u16>,
    /// Sent as `OCI-Chunk-Min-Length` on `POST`s; a `PATCH` after a shorter one in its session
    /// is answered 416.
    pub chunk_min: Option<usize>,
    /// The `Content-Range` of each `PATCH`, with its `Content-Length`: `from-last/length`.
    pub ranges: Vec<String>,
    /// Sessions that had a `PATCH` shorter than `chunk_min`.
    pub short_chunks: Vec<u32>,
}

/// Accepts `left` bytes, then fails as a cut connection does.
struct CutWriter<'a> {
    out: &'a mut Vec<u8>,
    left: usize,
}

impl Write for CutWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(self.left);
        self.out.extend_from_slice(&buf[..n]);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn answer(status: u16, headers: &[(&str, String)]) -> Result<Response> {
    answer_text(status, headers, "")
}

fn answer_text(status: u16, headers: &[(&str, String)], text: &str) -> Result<Response> {
    Ok(Response {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        body: Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
    })
}

impl Transport for FakeRegistry {
    fn send(&self, req: &Request, body: Option<BodyWriter<'_>>) -> Result<Response> {
        let mut st = self.state.borrow_mut();
        let (path, query) = req.url.path.split_once('?').unwrap_or((&req.url.path, ""));
        st.log.push(format!("{} {path}", req.method.as_str()));
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if path == "/v2/" {
            return answer(200, &[]);
        }
        if let Some(answered) = elsewhere(&mut st, req.method, path, query) {
            return answered;
        }
        if let Some(digest) = path.strip_prefix("/v2/r/blobs/sha256:") {
            let held = st.blobs.contains_key(&format!("sha256:{digest}"));
            return answer(if held { 200 } else { 404 }, &[]);
        }
        if path == "/v2/r/blobs/uploads/" && req.method == Method::Post {
            st.next_session += 1;
            let id = st.next_session;
            st.sessions.insert(id, vec![]);
            let mut headers = vec![("location", format!("/v2/r/blobs/uploads/{id}"))];
            if let Some(min) = st.chunk_min {
                headers.push(("oci-chunk-min-length", min.to_string()));
            }
            return answer(202, &headers);
        }
        let id: u32 = path
            .strip_prefix("/v2/r/blobs/uploads/")
            .and_then(|id| id.parse().ok())
            .expect("an upload session path");
        let Some(held) = st.sessions.get(&id).map(Vec::len) else {
            return answer(404, &[]);
        };
        let location = ("location", format!("/v2/r/blobs/uploads/{id}"));
        let range = |len: usize| ("range", format!("0-{}", len.saturating_sub(1)));
        if req.method == Method::Get {
            return answer(204, &[location, range(held)]);
        }
        if req.method == Method::Delete {
            st.sessions.remove(&id);
            return answer(204, &[]);
        }
        if let Some(range) = header("content-range") {
            assert_eq!(range.split('-').next(), Some(held.to_string().as_str()));
        }
        let length: usize = header("content-length").map_or(0, |n| n.parse().unwrap());
        if req.method == Method::Put
            && length > 0
            && let Some(status) = st.refuse_whole_body
        {
            return answer_text(status, &[], &st.status_text);
        }
        if req.method == Method::Patch {
            let range = header("content-range").unwrap_or_default();
            st.ranges.push(format!("{range}/{length}"));
            if let Some(min) = st.chunk_min {
                if st.short_chunks.contains(&id) {
                    return answer(416, &[]);
                }
                if length < min {
                    st.short_chunks.push(id);
                }
            }
        }
        let mut received = Vec::new();
        let (cut, status) = (st.cuts.pop_front(), st.statuses.pop_front());
        if let Some(write) = body {
            let left = cut.unwrap_or(usize::MAX);
            let written = write(&mut CutWriter {
                out: &mut received,
                left,
            });
            if let Err(e) = written {
                // Cut, or aborted by its writer: what arrived stays in the session.
                st.sessions.get_mut(&id).unwrap().extend(received);
                if st.drop_cut_sessions {
                    st.sessions.remove(&id);
                }
                return Err(e);
            }
        }
        if let Some(status) = status {
            return answer_text(status, &[], &st.status_text);
        }
        let session = st.sessions.get_mut(&id).unwrap();
        session.extend(received);
        if req.method == Method::Patch {
            let len = session.len();
            return answer(202, &[location, range(len)]);
        }
        let digest = query
            .strip_prefix("digest=")
            .expect("a digest")
            .replace("%3A", ":");
        if Digest::of(session).as_str() != digest {
            return answer(400, &[]);
        }
        let blob = st.sessions.remove(&id).unwrap();
        st.blobs.insert(digest, blob);
        if std::mem::take(&mut st.lose_answer) {
            return Err(Error::Unreachable("the answer was lost".into()));
        }
        answer(201, &[])
    }

    fn now(&self) -> u64 {
        0
    }

    fn sleep_ms(&self, _: u64) {}
    fn random(&self) -> u64 {
        0
    }
}

/// Mounts, and blobs of repositories other than `r`; `None` for anything else.
fn elsewhere(
    st: &mut FakeState,
    method: Method,
    path: &str,
    query: &str,
) -> Option<Result<Response>> {
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.replace("%3A", ":"))
    };
    if method == Method::Post && !matches!(st.mount_status, 0 | 202) {
        let (digest, from) = (param("mount")?, param("from")?);
        if st.mount_status != 201 {
            return Some(answer(st.mount_status, &[]));
        }
        let blob = st.elsewhere.get(&format!("{from}/{digest}"))?.clone();
        st.blobs.insert(digest, blob);
        return Some(answer(201, &[]));
    }
    let (repo, digest) = path.strip_prefix("/v2/")?.split_once("/blobs/sha256:")?;
    if repo == "r" {
        return None;
    }
    let Some(blob) = st.elsewhere.get(&format!("{repo}/sha256:{digest}")) else {
        return Some(answer(404, &[]));
    };
    let length = ("content-length", blob.len().to_string());
    Some(Ok(Response {
        body: Box::new(std::io::Cursor::new(if method == Method::Get {
            blob.clone()
        } else {
            vec![]
        })),
        ..answer(200, &[length]).ok()?
    }))
}
