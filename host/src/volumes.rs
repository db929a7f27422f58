//! Volumes: an archive cut into files of at most a chosen size, for media with a size limit
//! (DVDs, USB drives, a diode's transfer limit).
//!
//! `update.tar` becomes `update.tar.001`, `update.tar.002`, … Each volume is a 512-byte text
//! header and then its share of the archive's bytes. The header names the volume's place in
//! the set, its bytes' SHA-256 and the set's digest, so one volume is checked alone (a
//! damaged disc is named as such) and a set read in order is checked for a missing, swapped,
//! foreign or cut volume before, or as, its bytes reach the component.
//!
//! ```text
//! imo volume 1
//! set sha256:<SHA-256 of the volumes' SHA-256 digests, 32 bytes each, in order>
//! volume 2 of 3
//! offset 1048064
//! size 1048064
//! sha256 <this volume's bytes after the header>
//! check <the first 16 hex digits of the SHA-256 of the lines above>
//! ```
//!
//! padded with NUL bytes. The set's volumes, in order and without their headers, are the
//! archive byte for byte; imo reads them concatenated (`cat update.tar.* | imo push - …`),
//! as files, or from a directory.

use crate::atomic_file::AtomicFile;
use bytes::{Bytes, BytesMut};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

/// Each volume's header: text, NUL-padded.
pub const HEADER_LEN: u64 = 512;
/// The smallest volume: its header and some of the archive.
pub const MIN_VOLUME_SIZE: u64 = 4096;
/// The most volumes a set has: a header claiming more is damaged (or crafted), and nothing
/// is allocated or looked for by its count.
pub const MAX_VOLUMES: u32 = 99_999;
const MAGIC: &str = "imo volume 1\n";

/// A volume's header: where it sits in its set and what its bytes hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The set's digest: SHA-256 of every volume's `digest`, in order.
    pub set: [u8; 32],
    /// 1 for the first volume.
    pub index: u32,
    /// How many volumes the set has.
    pub count: u32,
    /// Where the volume's bytes start in the archive.
    pub offset: u64,
    /// How many bytes of the archive the volume holds.
    pub size: u64,
    /// SHA-256 of the volume's bytes after the header.
    pub digest: [u8; 32],
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The set's digest as messages show it.
pub fn set_name(set: &[u8; 32]) -> String {
    format!("sha256:{}", &hex(set)[..16])
}

impl Header {
    fn body(&self) -> String {
        format!(
            "{MAGIC}set sha256:{}\nvolume {} of {}\noffset {}\nsize {}\nsha256 {}\n",
            hex(&self.set),
            self.index,
            self.count,
            self.offset,
            self.size,
            hex(&self.digest)
        )
    }

    /// The header block.
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let body = self.body();
        let text = format!("{body}check {}\n", &hex(&Sha256::digest(&body))[..16]);
        let mut out = [0u8; HEADER_LEN as usize];
        out[..text.len()].copy_from_slice(text.as_bytes());
        out
    }

    /// `None` when `block` is not a volume header at all; an error when it is one, damaged.
    pub fn decode(block: &[u8]) -> Option<Result<Header, String>> {
        if !block.starts_with(MAGIC.as_bytes()) {
            return None;
        }
        Some(Self::parse(block).ok_or_else(|| "its header is damaged".to_owned()))
    }

    fn parse(block: &[u8]) -> Option<Header> {
        let end = block.iter().position(|&b| b == 0).unwrap_or(block.len());
        if block.len() != HEADER_LEN as usize || block[end..].iter().any(|&b| b != 0) {
            return None;
        }
        let text = std::str::from_utf8(&block[..end]).ok()?;
        let mut lines = text.strip_prefix(MAGIC)?.lines();
        let mut field = |name: &str| lines.next()?.strip_prefix(name);
        let set = unhex(field("set sha256:")?)?;
        let (index, count) = field("volume ")?.split_once(" of ")?;
        let header = Header {
            set,
            index: index.parse().ok()?,
            count: count.parse().ok()?,
            offset: field("offset ")?.parse().ok()?,
            size: field("size ")?.parse().ok()?,
            digest: unhex(field("sha256 ")?)?,
        };
        let check = field("check ")?;
        let fits = (1..=header.count).contains(&header.index)
            && header.count <= MAX_VOLUMES
            && header.offset.checked_add(header.size).is_some();
        // The encoding is canonical: anything else is damage.
        (fits && header.encode()[..] == *block && check.len() == 16).then_some(header)
    }

    /// How messages name this volume: `update.tar.002 (volume 2 of 3)`.
    fn name(&self, file: Option<&Path>) -> String {
        match file {
            Some(f) => format!("{} (volume {} of {})", f.display(), self.index, self.count),
            None => format!("volume {} of {}", self.index, self.count),
        }
    }
}

/// The set's digest from its volumes' digests, in order.
fn set_digest<'a>(digests: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for d in digests {
        h.update(d);
    }
    h.finalize().into()
}

/// Volume `index` of the archive `path`: `update.tar.001`.
pub fn volume_path(path: &Path, index: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index:03}"));
    PathBuf::from(name)
}

/// `update.tar` for `update.tar.001`: the name with its volume number cut off, if it has one.
fn stem_of(path: &Path) -> Option<(String, u32)> {
    let name = path.file_name()?.to_str()?;
    let (stem, number) = name.rsplit_once('.')?;
    let digits = number.len() >= 3 && number.bytes().all(|b| b.is_ascii_digit());
    Some((stem.to_owned(), number.parse().ok().filter(|_| digits)?))
}

// ---------------------------------------------------------------------------------------------
// Choosing and ordering a set: pure.

/// A file looked at as a possible volume: its header (or why it has none) and its length.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The file.
    pub path: PathBuf,
    /// Its header; `None` if it has none, an error if it is damaged.
    pub header: Option<Result<Header, String>>,
    /// Its length in bytes.
    pub len: u64,
    /// Named by the user, rather than found beside a volume or in a directory.
    pub named: bool,
}

/// Why the volumes at hand do not make one set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetError(pub String);

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The whole set, in order, from `candidates`: the set of the first volume named (or, when
/// none is named, the only set found). Files found rather than named that are not volumes, or
/// of another set, are passed over; named ones are errors. Every volume must be there once,
/// and exactly as long as its header says. `like` is how a missing volume's file would be
/// named.
pub fn choose_set(candidates: &[Candidate]) -> Result<Vec<(PathBuf, Header)>, SetError> {
    let err = |s: String| Err(SetError(s));
    let mut volumes: Vec<(&Candidate, &Header)> = vec![];
    for c in candidates {
        match &c.header {
            Some(Ok(h)) => volumes.push((c, h)),
            Some(Err(why)) if c.named => return err(format!("{}: {why}", c.path.display())),
            None if c.named => {
                return err(format!(
                    "{} is not a volume of an imo archive (it has no volume header)",
                    c.path.display()
                ));
            }
            _ => {}
        }
    }
    let Some(first) = volumes
        .iter()
        .find(|(c, _)| c.named)
        .or_else(|| volumes.first())
    else {
        return err("no volume of an imo archive found".into());
    };
    let (set, count) = (first.1.set, first.1.count);
    let mut sets: Vec<[u8; 32]> = volumes.iter().map(|(_, h)| h.set).collect();
    sets.sort_unstable();
    sets.dedup();
    let named_first = first.0.named;
    for (c, h) in &volumes {
        if h.set != set && (c.named || !named_first && sets.len() > 1) {
            return err(format!(
                "{} belongs to another set of volumes ({}) than {} ({}): give the volumes of one \
                 archive only",
                c.path.display(),
                set_name(&h.set),
                first.0.path.display(),
                set_name(&set)
            ));
        }
    }
    let mut ordered: Vec<Option<(&Candidate, &Header)>> = vec![None; count as usize];
    for &(c, h) in volumes.iter().filter(|(_, h)| h.set == set) {
        let slot = &mut ordered[h.index as usize - 1];
        if let Some((other, _)) = slot {
            // The same file given twice, or found as well as named, is one volume.
            let same =
                std::fs::canonicalize(&other.path).ok() == std::fs::canonicalize(&c.path).ok();
            if !same {
                return err(format!(
                    "{} and {} are both volume {} of the set: give one of them",
                    other.path.display(),
                    c.path.display(),
                    h.index
                ));
            }
            continue;
        }
        if h.count != count {
            return err(format!(
                "{} is damaged: its header says the set has {} volumes, {}'s says {count}",
                c.path.display(),
                h.count,
                first.0.path.display()
            ));
        }
        *slot = Some((c, h));
    }
    let missing: Vec<u32> = (1..=count)
        .filter(|i| ordered[*i as usize - 1].is_none())
        .collect();
    if !missing.is_empty() {
        let like = first.0.path.as_path();
        let names: Vec<String> = missing
            .iter()
            .map(|&i| {
                let Some((stem, _)) = stem_of(like) else {
                    return format!("volume {i}");
                };
                let path = like.with_file_name(format!("{stem}.{i:03}"));
                // A file by that name that is something else is worth saying.
                let there = volumes.iter().find(|(c, _)| c.path == path);
                match there {
                    Some((_, h)) => format!(
                        "{} there is volume {} of another set ({})",
                        path.display(),
                        h.index,
                        set_name(&h.set)
                    ),
                    None => path.display().to_string(),
                }
            })
            .collect();
        return err(format!(
            "volume(s) {} of the {count} of set {} missing: {}; copy them from their media \
             beside {}",
            missing
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            set_name(&set),
            names.join(", "),
            like.display()
        ));
    }
    let mut offset = 0u64;
    let mut out = Vec::with_capacity(count as usize);
    for (c, h) in ordered.into_iter().flatten() {
        let want = HEADER_LEN + h.size;
        if c.len != want {
            let how = if c.len < want {
                "cut short"
            } else {
                "too long"
            };
            return err(format!(
                "{} is {how}: {} bytes where its header says {want}; copy it again from its medium",
                h.name(Some(&c.path)),
                c.len
            ));
        }
        if h.offset != offset {
            return err(format!(
                "{} is damaged: it says it starts at byte {} of the archive, the volumes before it \
                 end at {offset}",
                h.name(Some(&c.path)),
                h.offset
            ));
        }
        offset += h.size;
        out.push((c.path.clone(), h.clone()));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// Volumes being written: each under a temporary name until [`Unsealed::seal`].
pub struct Unsealed {
    path: PathBuf,
    volumes: Vec<(AtomicFile, tokio::fs::File, Header)>,
}

/// Writes everything `input` yields into volumes of `path` of at most `volume_size` bytes
/// each, under temporary names; their headers are written by [`Unsealed::seal`], once the
/// set's digest is known.
pub async fn write<R: AsyncRead + Unpin>(
    mut input: R,
    path: &Path,
    volume_size: u64,
) -> io::Result<Unsealed> {
    if volume_size < MIN_VOLUME_SIZE {
        return Err(io::Error::other(format!(
            "a volume must be at least {MIN_VOLUME_SIZE} bytes (4K)"
        )));
    }
    let room = volume_size - HEADER_LEN;
    let mut out = Unsealed {
        path: path.to_owned(),
        volumes: vec![],
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            let full = out.volumes.last().is_none_or(|(_, _, h)| h.size == room);
            if full {
                if let Some((_, file, h)) = out.volumes.last_mut() {
                    file.flush().await?;
                    h.digest = std::mem::take(&mut hasher).finalize().into();
                }
                let index = out.volumes.len() as u32 + 1;
                if index > MAX_VOLUMES {
                    return Err(io::Error::other(format!(
                        "the archive needs more than {MAX_VOLUMES} volumes of {volume_size} \
                         bytes: choose a larger --volume-size"
                    )));
                }
                let atomic = AtomicFile::create(&volume_path(path, index))?;
                let mut file = tokio::fs::File::from_std(atomic.file().try_clone()?);
                // The header's place, written at the seal.
                file.write_all(&[0u8; HEADER_LEN as usize]).await?;
                let header = Header {
                    set: [0; 32],
                    index,
                    count: 0,
                    offset,
                    size: 0,
                    digest: [0; 32],
                };
                out.volumes.push((atomic, file, header));
            }
            let (_, file, h) = out.volumes.last_mut().expect("a volume was just opened");
            let take = chunk.len().min((room - h.size) as usize);
            file.write_all(&chunk[..take]).await?;
            hasher.update(&chunk[..take]);
            h.size += take as u64;
            offset += take as u64;
            chunk = &chunk[take..];
        }
    }
    if let Some((_, file, h)) = out.volumes.last_mut() {
        file.flush().await?;
        h.digest = hasher.finalize().into();
    }
    Ok(out)
}

impl Unsealed {
    /// Writes each volume's header, then gives each its own name; removes volumes of an
    /// earlier set under the same name past this set's last, so a directory holds one set.
    /// Returns the volumes' paths.
    pub async fn seal(self) -> io::Result<Vec<PathBuf>> {
        let count = self.volumes.len() as u32;
        let set = set_digest(self.volumes.iter().map(|(_, _, h)| &h.digest));
        let mut paths = vec![];
        let mut done = vec![];
        for (atomic, mut file, mut header) in self.volumes {
            header.set = set;
            header.count = count;
            file.seek(io::SeekFrom::Start(0)).await?;
            file.write_all(&header.encode()).await?;
            file.flush().await?;
            paths.push(volume_path(&self.path, header.index));
            done.push(atomic);
        }
        for atomic in done {
            atomic.commit()?;
        }
        for index in count + 1.. {
            let stale = volume_path(&self.path, index);
            match read_header(&stale).await {
                Ok(Some(_)) => std::fs::remove_file(&stale)?,
                _ => break,
            }
        }
        Ok(paths)
    }
}

impl crate::Imo {
    /// [`Imo::pull_bundle_to_writer`](crate::Imo::pull_bundle_to_writer) into volumes of
    /// `path` (`PATH.001`, `PATH.002`, …) of at most `volume_size` bytes each, written under
    /// temporary names until the pull is complete; returns the volumes' paths too.
    pub async fn pull_bundle_to_volumes(
        &self,
        bundle: &crate::Bundle,
        path: &Path,
        volume_size: u64,
    ) -> Result<(crate::Summary, Vec<PathBuf>), crate::Error> {
        let io = |e: io::Error| crate::Error::Io(format!("{}: {e}", path.display()));
        if volume_size < MIN_VOLUME_SIZE {
            return Err(crate::Error::InvalidReference(format!(
                "a volume must be at least {MIN_VOLUME_SIZE} bytes (4K), not {volume_size}"
            )));
        }
        let (pipe_in, pipe_out) = tokio::io::duplex(1 << 20);
        let (pulled, written) = tokio::join!(
            self.pull_bundle_to_writer(bundle, pipe_in),
            write(pipe_out, path, volume_size)
        );
        // A volume that cannot be written breaks the pipe and so fails the pull: its own
        // error says why.
        let unsealed = written.map_err(io)?;
        let summary = pulled?;
        let paths = unsealed.seal().await.map_err(io)?;
        Ok((summary, paths))
    }
}

// ---------------------------------------------------------------------------------------------
// Reading.

async fn read_header(path: &Path) -> io::Result<Option<Result<Header, String>>> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut block = vec![0u8; HEADER_LEN as usize];
    let mut got = 0;
    while got < block.len() {
        match f.read(&mut block[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    Ok(Header::decode(&block[..got]))
}

async fn candidate(path: &Path, named: bool) -> io::Result<Candidate> {
    let len = tokio::fs::metadata(path).await?.len();
    Ok(Candidate {
        path: path.to_owned(),
        header: read_header(path).await?,
        len,
        named,
    })
}

/// What the archive argument(s) of a command name.
pub enum Archive {
    /// One archive file.
    Plain(PathBuf),
    /// Standard input: an archive, or volumes one after another, as its first bytes tell.
    Stdin,
    /// A file that is not a regular one (a named pipe, `<(…)`): read once, as stdin is.
    Pipe(PathBuf),
    /// A whole set of volumes, in order.
    Volumes(Vec<(PathBuf, Header)>),
    /// Some volumes of a set without the rest: each can be checked alone.
    Partial(Vec<(PathBuf, Result<Header, String>)>, SetError),
}

/// Resolves the archive arguments: `-`; one archive file; a volume (the rest of its set is
/// looked for beside it); several volumes; a directory holding one set.
pub async fn resolve(args: &[String]) -> Result<Archive, String> {
    let io = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    if let [only] = args
        && only == "-"
    {
        return Ok(Archive::Stdin);
    }
    let mut candidates = vec![];
    for arg in args {
        let path = Path::new(arg);
        if path.is_dir() {
            for entry in std::fs::read_dir(path).map_err(|e| io(path, e))? {
                let p = entry.map_err(|e| io(path, e))?.path();
                if p.is_file() {
                    candidates.push(candidate(&p, false).await.map_err(|e| io(&p, e))?);
                }
            }
            continue;
        }
        // A pipe's first bytes, once read, are gone: it is looked at only as it is read.
        let regular = std::fs::metadata(path).map_err(|e| io(path, e))?.is_file();
        match (args.len(), regular) {
            (_, true) => {}
            (1, false) => return Ok(Archive::Pipe(path.to_owned())),
            (_, false) => {
                return Err(format!(
                    "{} is not a regular file: give the volumes as files, or one stream",
                    path.display()
                ));
            }
        }
        let c = candidate(path, true).await.map_err(|e| io(path, e))?;
        if args.len() == 1 && c.header.is_none() {
            return Ok(Archive::Plain(path.to_owned()));
        }
        candidates.push(c);
    }
    // One volume named: its siblings, `STEM.NNN` beside it.
    if let [one] = &candidates[..]
        && let (true, Some((stem, _)), Some(Ok(h))) = (one.named, stem_of(&one.path), &one.header)
    {
        let siblings: Vec<PathBuf> = (1..=h.count)
            .filter(|&i| i != h.index)
            .map(|i| one.path.with_file_name(format!("{stem}.{i:03}")))
            .collect();
        for p in siblings {
            if let Ok(c) = candidate(&p, false).await {
                candidates.push(c);
            }
        }
    }
    match choose_set(&candidates) {
        Ok(set) => Ok(Archive::Volumes(set)),
        Err(why) => {
            // The volumes named, if any were; else those found in the directory.
            let any_named = candidates.iter().any(|c| c.named);
            let present: Vec<_> = candidates
                .iter()
                .filter(|c| c.named || !any_named)
                .filter_map(|c| Some((c.path.clone(), c.header.clone()?)))
                .collect();
            if present.is_empty() {
                return Err(why.0);
            }
            Ok(Archive::Partial(present, why))
        }
    }
}

/// What reading a set of volumes saw: how far it got, and (for `verify`, which goes on past
/// a damaged volume to report everything) each volume found damaged.
#[derive(Debug, Default)]
pub struct Watch {
    /// Record a damaged volume here and read on, rather than fail.
    pub lenient: bool,
    /// Only the first volumes of the set are given (for `ls`, which needs the head alone):
    /// their end is the stream's end, not an error.
    pub first_only: bool,
    /// Each damaged volume found, as a message naming it.
    pub damage: Mutex<Vec<String>>,
    /// The index of the last volume reading started.
    pub reached: AtomicU32,
}

impl Watch {
    fn damaged(&self, why: String) {
        self.damage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(why);
    }

    /// The damaged volumes recorded.
    pub fn damage(&self) -> Vec<String> {
        self.damage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A stream of chunks that a task produces, as an `AsyncRead`.
pub struct Chunks {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    task: tokio::task::JoinHandle<()>,
}

impl Chunks {
    fn new(receiver: mpsc::Receiver<io::Result<Bytes>>, task: tokio::task::JoinHandle<()>) -> Self {
        Chunks {
            receiver,
            current: Bytes::new(),
            task,
        }
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AsyncRead for Chunks {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match self.receiver.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => self.current = b,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.current.len().min(buf.remaining());
        let chunk = self.current.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// The archive bytes of `input`, a set of volumes one after another (a stream, or the files
/// of `names`), each volume checked as it passes: its header, its place in the set, its
/// bytes against its digest. A volume that fails fails the read, naming it, unless
/// `watch` is lenient.
pub fn deframe<R: AsyncRead + Send + Unpin + 'static>(
    input: R,
    names: Vec<PathBuf>,
    watch: Arc<Watch>,
) -> Chunks {
    let (sender, receiver) = mpsc::channel(4);
    let task = tokio::spawn(async move {
        let mut reader = Reader {
            input,
            names,
            watch,
            sender,
        };
        if let Err(e) = reader.run().await {
            let _ = reader.sender.send(Err(e)).await;
        }
    });
    Chunks::new(receiver, task)
}

struct Reader<R> {
    input: R,
    names: Vec<PathBuf>,
    watch: Arc<Watch>,
    sender: mpsc::Sender<io::Result<Bytes>>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    fn name(&self, h: &Header) -> String {
        h.name(self.names.get(h.index as usize - 1).map(PathBuf::as_path))
    }

    async fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]).await? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    }

    async fn run(&mut self) -> io::Result<()> {
        let bad = |s: String| io::Error::new(io::ErrorKind::InvalidData, s);
        let mut first: Option<Header> = None;
        let mut digests = vec![];
        let mut offset = 0u64;
        loop {
            let mut block = [0u8; HEADER_LEN as usize];
            let got = self.fill(&mut block).await?;
            let expected = first.as_ref().map_or(1, |_| digests.len() as u32 + 1);
            if got == 0 {
                match &first {
                    Some(f) if expected > f.count => break,
                    Some(_) if self.watch.first_only => return Ok(()),
                    Some(f) => {
                        return Err(bad(format!(
                            "the archive's volumes end after volume {} of {}: give the rest, in \
                             order",
                            expected - 1,
                            f.count
                        )));
                    }
                    None => return Err(bad("the archive is empty".into())),
                }
            }
            let h = match Header::decode(&block[..got]) {
                Some(Ok(h)) => h,
                Some(Err(why)) => {
                    return Err(bad(format!("volume {expected} of the archive: {why}")));
                }
                None => {
                    return Err(bad(match &first {
                        Some(f) if expected > f.count => format!(
                            "bytes follow the last volume ({} of {}) of the archive: they are \
                             not part of it",
                            f.count, f.count
                        ),
                        _ => format!(
                            "volume {expected} of the archive does not start where volume {} \
                             ends: a volume is cut short or damaged",
                            expected - 1
                        ),
                    }));
                }
            };
            if let Some(f) = &first {
                if h.set != f.set {
                    return Err(bad(format!(
                        "{} belongs to another set of volumes ({}) than volume 1 ({}): give \
                         the volumes of one archive only",
                        self.name(&h),
                        set_name(&h.set),
                        set_name(&f.set)
                    )));
                }
                if h.index != expected || h.count != f.count {
                    return Err(bad(format!(
                        "{} came where volume {expected} of {} belongs: volumes are missing or \
                         out of order (give them in order: .001, .002, …)",
                        self.name(&h),
                        f.count
                    )));
                }
            } else if h.index != 1 {
                return Err(bad(format!(
                    "the archive starts with {}, not volume 1: give the volumes in order",
                    self.name(&h)
                )));
            }
            if h.offset != offset {
                return Err(bad(format!(
                    "{} is damaged: it says it starts at byte {} of the archive, the volumes \
                     before it end at {offset}",
                    self.name(&h),
                    h.offset
                )));
            }
            self.watch.reached.store(h.index, Ordering::Relaxed);
            let mut hasher = Sha256::new();
            let mut left = h.size;
            while left > 0 {
                let mut chunk = BytesMut::zeroed((1 << 20).min(left) as usize);
                let n = self.fill(&mut chunk).await?;
                if n == 0 {
                    return Err(bad(format!(
                        "{} is cut short: it ends {left} bytes before the end its header gives",
                        self.name(&h)
                    )));
                }
                chunk.truncate(n);
                hasher.update(&chunk);
                left -= n as u64;
                if self.sender.send(Ok(chunk.freeze())).await.is_err() {
                    return Ok(()); // The reader went away.
                }
            }
            let digest: [u8; 32] = hasher.finalize().into();
            if digest != h.digest {
                let why = format!(
                    "{} is damaged: its bytes do not match the SHA-256 in its header; copy it \
                     again from its medium",
                    self.name(&h)
                );
                if !self.watch.lenient {
                    return Err(bad(why));
                }
                self.watch.damaged(why);
            }
            digests.push(h.digest);
            offset += h.size;
            first.get_or_insert(h);
        }
        let f = first.expect("at least one volume was read");
        if set_digest(&digests) != f.set {
            return Err(bad(format!(
                "the volumes' digests do not make the set's digest {} their headers give: a \
                 header is damaged",
                set_name(&f.set)
            )));
        }
        Ok(())
    }
}

/// The files of a set, one after another, as one stream of volumes.
pub fn concatenated(set: &[(PathBuf, Header)]) -> Chunks {
    let paths: Vec<PathBuf> = set.iter().map(|(p, _)| p.clone()).collect();
    let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(4);
    let task = tokio::spawn(async move {
        for p in paths {
            match send_file(&p, &sender).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    let e = io::Error::new(e.kind(), format!("{}: {e}", p.display()));
                    let _ = sender.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    Chunks::new(receiver, task)
}

/// Sends the bytes of `path`; `false` when the reader went away.
async fn send_file(path: &Path, sender: &mpsc::Sender<io::Result<Bytes>>) -> io::Result<bool> {
    let mut f = tokio::fs::File::open(path).await?;
    loop {
        let mut buf = BytesMut::with_capacity(1 << 20);
        if f.read_buf(&mut buf).await? == 0 {
            return Ok(true);
        }
        if sender.send(Ok(buf.freeze())).await.is_err() {
            return Ok(false);
        }
    }
}

/// `input`, with its volumes taken apart if it is a stream of them (`cat update.tar.* |`):
/// its first bytes tell.
pub async fn sniff<R: AsyncRead + Send + Unpin + 'static>(
    mut input: R,
) -> io::Result<Box<dyn AsyncRead + Send + Unpin>> {
    let mut first = vec![0u8; MAGIC.len()];
    let mut got = 0;
    while got < first.len() {
        match input.read(&mut first[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    first.truncate(got);
    let volumes = first == MAGIC.as_bytes();
    let whole = io::Cursor::new(first).chain(input);
    Ok(if volumes {
        Box::new(deframe(whole, vec![], Arc::default()))
    } else {
        Box::new(whole)
    })
}

/// Checks one volume alone: its header and its bytes against their digest.
pub async fn check_alone(path: &Path) -> Result<Header, String> {
    let c = candidate(path, true)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let h = match c.header {
        Some(Ok(h)) => h,
        Some(Err(why)) => return Err(format!("{}: {why}", path.display())),
        None => return Err(format!("{} is not a volume", path.display())),
    };
    if c.len != HEADER_LEN + h.size {
        let how = if c.len < HEADER_LEN + h.size {
            "cut short"
        } else {
            "too long"
        };
        return Err(format!(
            "{} is {how}: {} bytes where its header says {}; copy it again from its medium",
            h.name(Some(path)),
            c.len,
            HEADER_LEN + h.size
        ));
    }
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut skip = HEADER_LEN as usize;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        let from = skip.min(n);
        skip -= from;
        hasher.update(&buf[from..n]);
    }
    if <[u8; 32]>::from(hasher.finalize()) != h.digest {
        return Err(format!(
            "{} is damaged: its bytes do not match the SHA-256 in its header; copy it again \
             from its medium",
            h.name(Some(path))
        ));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(index: u32, count: u32, offset: u64, size: u64) -> Header {
        Header {
            set: [7; 32],
            index,
            count,
            offset,
            size,
            digest: [index as u8; 32],
        }
    }

    fn cand(name: &str, h: Option<Header>, named: bool) -> Candidate {
        let len = h.as_ref().map_or(10, |h| HEADER_LEN + h.size);
        Candidate {
            path: PathBuf::from(name),
            header: h.map(Ok),
            len,
            named,
        }
    }

    #[test]
    fn a_header_round_trips_and_any_changed_byte_is_damage() {
        let h = header(2, 3, 1000, 500);
        let block = h.encode();
        assert_eq!(Header::decode(&block), Some(Ok(h.clone())));
        let text = String::from_utf8_lossy(&block);
        assert!(text.starts_with("imo volume 1\nset sha256:0707"), "{text}");
        for i in 0..200 {
            let mut b = block;
            b[i] ^= 0x01;
            match Header::decode(&b) {
                Some(Err(_)) | None => {}
                Some(Ok(h)) => panic!("a flipped byte {i} still decodes: {h:?}"),
            }
        }
        assert_eq!(Header::decode(b"ustar"), None, "an archive is not a volume");
        // A count no set has is refused, well formed or not: nothing is sized by it.
        let huge = Header {
            count: u32::MAX,
            ..h
        };
        assert!(matches!(Header::decode(&huge.encode()), Some(Err(_))));
        assert!(matches!(Header::decode(&block[..100]), Some(Err(_))));
    }

    #[test]
    fn names_and_stems() {
        let p = volume_path(Path::new("/m/update.tar"), 2);
        assert_eq!(p, Path::new("/m/update.tar.002"));
        assert_eq!(stem_of(&p), Some(("update.tar".into(), 2)));
        assert_eq!(stem_of(Path::new("update.tar")), None);
        assert_eq!(stem_of(Path::new("a.1000")), Some(("a".into(), 1000)));
    }

    #[test]
    fn a_set_is_ordered_by_its_headers() {
        let set = choose_set(&[
            cand("u.003", Some(header(3, 3, 20, 5)), true),
            cand("u.001", Some(header(1, 3, 0, 10)), true),
            cand("u.002", Some(header(2, 3, 10, 10)), true),
        ])
        .unwrap();
        let order: Vec<u32> = set.iter().map(|(_, h)| h.index).collect();
        assert_eq!(order, [1, 2, 3]);
    }

    #[test]
    fn a_missing_cut_or_foreign_volume_is_named() {
        let e = choose_set(&[
            cand("/m/u.001", Some(header(1, 3, 0, 10)), true),
            cand("/m/u.003", Some(header(3, 3, 20, 5)), false),
        ])
        .unwrap_err();
        assert!(
            e.0.contains("volume(s) 2 of the 3") && e.0.contains("/m/u.002"),
            "{e}"
        );

        let mut cut = cand("u.002", Some(header(2, 2, 10, 10)), true);
        cut.len -= 1;
        let e = choose_set(&[cand("u.001", Some(header(1, 2, 0, 10)), true), cut]).unwrap_err();
        assert!(e.0.contains("u.002 (volume 2 of 2) is cut short"), "{e}");

        let mut foreign = header(2, 2, 10, 10);
        foreign.set = [8; 32];
        let e = choose_set(&[
            cand("u.001", Some(header(1, 2, 0, 10)), true),
            cand("x.002", Some(foreign.clone()), true),
        ])
        .unwrap_err();
        assert!(e.0.contains("x.002 belongs to another set"), "{e}");
        // Found beside it rather than named, a foreign volume is passed over: then missing.
        let e = choose_set(&[
            cand("u.001", Some(header(1, 2, 0, 10)), true),
            cand("x.002", Some(foreign), false),
        ])
        .unwrap_err();
        assert!(e.0.contains("volume(s) 2 of the 2"), "{e}");

        let e = choose_set(&[cand("notes.txt", None, true)]).unwrap_err();
        assert!(e.0.contains("notes.txt is not a volume"), "{e}");
        let e = choose_set(&[
            cand("u.001", Some(header(1, 2, 0, 10)), true),
            cand("u.002", Some(header(2, 2, 11, 10)), true),
        ])
        .unwrap_err();
        assert!(e.0.contains("starts at byte 11"), "{e}");
    }
}
