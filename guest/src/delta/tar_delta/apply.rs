//! The applier: the target tar, pulled from the op stream and the sources, each read once and
//! forward. Every op is checked; nothing the op stream says sizes an allocation.

use std::io::{self, BufRead, BufReader, Read};

use flate2::bufread::DeflateDecoder;
use sha2::Digest as _;

use super::{DeltaError, MAGIC, MAX_LITERAL, OP_COPY, OP_END, OP_LITERAL};

/// Opens a source by its number, as its uncompressed tar.
pub type Open<'a> = Box<dyn FnMut(u16) -> io::Result<Box<dyn Read + 'a>> + 'a>;

/// Reads from the raw op stream, marking its errors so they are not taken for a corrupt
/// deflate stream.
struct Raw<'a>(Box<dyn Read + 'a>);

impl Read for Raw<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::other(DeltaError::Io(e)))
    }
}

type Ops<'a> = BufReader<DeflateDecoder<BufReader<Raw<'a>>>>;

enum Slot<'a> {
    Unopened,
    /// An open source and the bytes read from it.
    Open(Box<dyn Read + 'a>, u64),
}

enum State {
    /// The magic has not been read yet.
    Start,
    /// Between ops.
    Next,
    Copy {
        source: u16,
        left: u64,
    },
    Literal {
        left: u64,
    },
    Done,
    Failed,
}

/// Pull-model applier: yields the target tar, reading the op stream and the sources forward
/// only.
pub struct Apply<'a> {
    raw: Option<Box<dyn Read + 'a>>,
    ops: Option<Ops<'a>>,
    sources: Vec<Slot<'a>>,
    open: Open<'a>,
    state: State,
    written: u64,
    target: sha2::Sha256,
    /// For skipping source bytes no copy needs.
    scratch: Vec<u8>,
}

impl<'a> Apply<'a> {
    /// `ops`: exactly the op stream bytes (the caller limits it). `open(source)` is called at
    /// most once per source, lazily, on first use, and returns that source's uncompressed tar
    /// as a stream. `sources`: how many sources the delta may name (an op naming another is an
    /// error).
    pub fn new(ops: Box<dyn Read + 'a>, sources: u16, open: Open<'a>) -> Self {
        Apply {
            raw: Some(ops),
            ops: None,
            sources: (0..sources).map(|_| Slot::Unopened).collect(),
            open,
            state: State::Start,
            written: 0,
            target: sha2::Sha256::new(),
            scratch: Vec::new(),
        }
    }

    fn step(&mut self, buf: &mut [u8]) -> Result<usize, DeltaError> {
        loop {
            match self.state {
                State::Start => {
                    let mut raw = self.raw.take().expect("taken once, at the start");
                    let mut magic = [0u8; MAGIC.len()];
                    let n = read_full(&mut raw, &mut magic).map_err(DeltaError::Io)?;
                    if n < MAGIC.len() || magic[..7] != MAGIC[..7] {
                        return Err(corrupt("it does not start as an imo tar delta"));
                    }
                    if magic[7] != MAGIC[7] {
                        return Err(corrupt(format!(
                            "it has version {}, and this imo reads version {}: use the imo \
                             that made it",
                            magic[7], MAGIC[7]
                        )));
                    }
                    self.ops = Some(BufReader::new(DeflateDecoder::new(BufReader::new(Raw(
                        raw,
                    )))));
                    self.state = State::Next;
                }
                State::Next => self.next_op()?,
                State::Copy { source, left } => {
                    let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let Slot::Open(r, pos) = &mut self.sources[usize::from(source)] else {
                        unreachable!("a copy's source is open")
                    };
                    let n = read_some(r, &mut buf[..want])
                        .map_err(|e| source_err(source, format!("reading it: {e}")))?;
                    if n == 0 {
                        return Err(source_err(
                            source,
                            format!(
                                "it ends at byte {pos}, {left} bytes before the end of a copy from it"
                            ),
                        ));
                    }
                    *pos += n as u64;
                    self.state = match left - n as u64 {
                        0 => State::Next,
                        left => State::Copy { source, left },
                    };
                    return Ok(self.produced(&buf[..n]));
                }
                State::Literal { left } => {
                    let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let n = read_some(self.ops(), &mut buf[..want]).map_err(ops_err)?;
                    if n == 0 {
                        return Err(corrupt("it ends inside a literal: it is truncated"));
                    }
                    self.state = match left - n as u64 {
                        0 => State::Next,
                        left => State::Literal { left },
                    };
                    return Ok(self.produced(&buf[..n]));
                }
                State::Done => return Ok(0),
                State::Failed => return Err(corrupt("applying it failed before")),
            }
        }
    }

    fn produced(&mut self, bytes: &[u8]) -> usize {
        self.target.update(bytes);
        self.written += bytes.len() as u64;
        bytes.len()
    }

    fn ops(&mut self) -> &mut Ops<'a> {
        self.ops.as_mut().expect("opened at the start")
    }

    fn next_op(&mut self) -> Result<(), DeltaError> {
        let Some(op) = self.byte()? else {
            return Err(corrupt("it ends without its END op: it is truncated"));
        };
        match op {
            OP_COPY => {
                let source = self.varint()?;
                let offset = self.varint()?;
                let len = self.varint()?;
                let source = u16::try_from(source)
                    .ok()
                    .filter(|&s| usize::from(s) < self.sources.len())
                    .ok_or_else(|| {
                        corrupt(format!(
                            "a copy names source {source}, and it has only {}",
                            self.sources.len()
                        ))
                    })?;
                if len == 0 {
                    return Err(corrupt("a copy is empty"));
                }
                let end = offset
                    .checked_add(len)
                    .filter(|_| self.written.checked_add(len).is_some());
                if end.is_none() {
                    return Err(corrupt("a copy's length overflows"));
                }
                self.seek(source, offset)?;
                self.state = State::Copy { source, left: len };
            }
            OP_LITERAL => {
                let len = self.varint()?;
                if len == 0 || len > MAX_LITERAL {
                    return Err(corrupt(format!(
                        "a literal of {len} bytes, not 1 to {MAX_LITERAL}"
                    )));
                }
                if self.written.checked_add(len).is_none() {
                    return Err(corrupt("a literal's length overflows"));
                }
                self.state = State::Literal { left: len };
            }
            OP_END => {
                let target_len = self.varint()?;
                let mut want = [0u8; 32];
                let n = read_full(self.ops(), &mut want).map_err(ops_err)?;
                if n < want.len() {
                    return Err(corrupt("it ends inside its END op: it is truncated"));
                }
                if target_len != self.written {
                    return Err(corrupt(format!(
                        "it made {} bytes of layer where it promised {target_len}",
                        self.written
                    )));
                }
                let got = std::mem::take(&mut self.target).finalize();
                if got[..] != want[..] {
                    return Err(corrupt(
                        "the layer it made does not have the SHA-256 it promised",
                    ));
                }
                if self.byte()?.is_some() {
                    return Err(corrupt("ops follow its END op"));
                }
                let ops = self.ops();
                let trailing = ops.get_mut().get_mut().fill_buf().map_err(ops_err)?;
                if !trailing.is_empty() {
                    return Err(corrupt("bytes follow its compressed ops"));
                }
                // Read every source to its end, so that a digest check underneath sees it all.
                for s in 0..self.sources.len() {
                    if let Slot::Open(r, pos) = &mut self.sources[s] {
                        let source = s as u16;
                        loop {
                            let n = read_some(r, &mut self.scratch)
                                .map_err(|e| source_err(source, format!("reading it: {e}")))?;
                            if n == 0 {
                                break;
                            }
                            *pos += n as u64;
                        }
                    }
                }
                self.state = State::Done;
            }
            other => return Err(corrupt(format!("unknown op {other:#04x}"))),
        }
        Ok(())
    }

    /// Opens `source` if need be and skips to `offset` in it.
    fn seek(&mut self, source: u16, offset: u64) -> Result<(), DeltaError> {
        let slot = &mut self.sources[usize::from(source)];
        if let Slot::Unopened = slot {
            let r =
                (self.open)(source).map_err(|e| source_err(source, format!("opening it: {e}")))?;
            *slot = Slot::Open(r, 0);
        }
        let Slot::Open(r, pos) = slot else {
            unreachable!("opened above")
        };
        if offset < *pos {
            return Err(corrupt(format!(
                "a copy from source {source} goes back to byte {offset} after byte {pos} was read"
            )));
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; 64 * 1024];
        }
        while *pos < offset {
            let want = usize::try_from(offset - *pos)
                .unwrap_or(usize::MAX)
                .min(self.scratch.len());
            let n = read_some(r, &mut self.scratch[..want])
                .map_err(|e| source_err(source, format!("reading it: {e}")))?;
            if n == 0 {
                return Err(source_err(
                    source,
                    format!("it ends at byte {pos}, before byte {offset} a copy starts at"),
                ));
            }
            *pos += n as u64;
        }
        Ok(())
    }

    fn byte(&mut self) -> Result<Option<u8>, DeltaError> {
        let mut b = [0u8; 1];
        match read_full(self.ops(), &mut b).map_err(ops_err)? {
            0 => Ok(None),
            _ => Ok(Some(b[0])),
        }
    }

    fn varint(&mut self) -> Result<u64, DeltaError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self
                .byte()?
                .ok_or_else(|| corrupt("it ends inside an op: it is truncated"))?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(corrupt("a number in an op overflows 64 bits"));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("a number in an op overflows 64 bits"))
    }
}

impl Read for Apply<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.step(buf).map_err(|e| {
            self.state = State::Failed;
            e.into_io()
        })
    }
}

fn corrupt(why: impl Into<String>) -> DeltaError {
    DeltaError::Corrupt(why.into())
}

fn source_err(source: u16, message: String) -> DeltaError {
    DeltaError::Source { source, message }
}

/// An error from the op stream: the raw reader's own (marked by [`Raw`]), or the inflater's,
/// which means the compressed ops are damaged.
fn ops_err(e: io::Error) -> DeltaError {
    if e.get_ref().is_some_and(|inner| inner.is::<DeltaError>()) {
        return DeltaError::from_io(e);
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return corrupt("its compressed ops end early: it is truncated");
    }
    corrupt(format!("its compressed ops are damaged ({e})"))
}

fn read_some(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match read_some(r, &mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
