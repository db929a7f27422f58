//! The differ: fed the target tar, writes the op stream.

use std::collections::HashMap;
use std::io::{self, Write};

use flate2::Compression;
use flate2::write::DeflateEncoder;
use sha2::Digest as _;

use super::index::{Entry, NONE, SourceIndex};
use super::scan::{Header, Scanner, Sink, padding};
use super::{BLOCK, DeltaError, Hash, MAGIC, OP_COPY, OP_END, OP_LITERAL, Weak, hash, put_varint};

/// Literal bytes the differ holds before writing them out as one op.
const FLUSH_LITERAL: usize = 64 * 1024;

/// The finished delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The complete op stream.
    pub ops: Vec<u8>,
    /// The target tar's length.
    pub target_len: u64,
    /// Target bytes copied from sources.
    pub copied: u64,
    /// Target bytes carried literally.
    pub literal: u64,
    /// The sources at least one copy names, ascending.
    pub sources_used: Vec<u16>,
}

/// Fed the target layer's tar in pieces of any size (`std::io::Write`); writes the op stream.
/// Never fails on the target's content (what does not parse as tar goes literal); only on
/// passing `max_len`.
pub struct Differ<'a> {
    scan: Scanner,
    sink: DiffSink<'a>,
    target: sha2::Sha256,
    target_len: u64,
    /// The error that stopped it, repeated by every later call.
    failed: Option<String>,
}

impl<'a> Differ<'a> {
    /// `max_len`: give up with [`DeltaError::TooLarge`] as soon as the encoded (compressed) ops
    /// exceed it.
    pub fn new(index: &'a SourceIndex, max_len: u64) -> Self {
        let mut ops = Vec::with_capacity(4096);
        ops.extend_from_slice(MAGIC);
        Differ {
            scan: Scanner::new(false),
            sink: DiffSink {
                index,
                out: OpWriter {
                    enc: DeflateEncoder::new(ops, Compression::default()),
                    max_len,
                    copy: None,
                    lit: Vec::new(),
                    cursor: vec![0; index.sources],
                    used: vec![false; index.sources],
                    copied: 0,
                    literal: 0,
                    scratch: Vec::with_capacity(64),
                },
                cand: NONE,
                nblock: 0,
                block: Vec::with_capacity(BLOCK),
                roll: None,
            },
            target: sha2::Sha256::new(),
            target_len: 0,
            failed: None,
        }
    }

    pub fn finish(mut self) -> Result<Encoded, DeltaError> {
        if let Some(why) = self.failed {
            return Err(DeltaError::TooLarge(why));
        }
        self.scan.finish(&mut self.sink)?;
        let out = &mut self.sink.out;
        out.flush_copy()?;
        out.flush_literal()?;
        let mut op = vec![OP_END];
        put_varint(&mut op, self.target_len);
        op.extend_from_slice(&self.target.finalize());
        out.emit(&op)?;
        let ops = std::mem::replace(
            &mut out.enc,
            DeflateEncoder::new(Vec::new(), Compression::none()),
        )
        .finish()
        .map_err(DeltaError::Io)?;
        out.check(ops.len())?;
        Ok(Encoded {
            ops,
            target_len: self.target_len,
            copied: out.copied,
            literal: out.literal,
            sources_used: (0..out.used.len())
                .filter(|&s| out.used[s])
                .map(|s| s as u16)
                .collect(),
        })
    }
}

impl Write for Differ<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(why) = &self.failed {
            return Err(DeltaError::TooLarge(why.clone()).into_io());
        }
        self.target.update(buf);
        self.target_len += buf.len() as u64;
        if let Err(e) = self.scan.feed(buf, &mut self.sink) {
            if let DeltaError::TooLarge(why) = &e {
                self.failed = Some(why.clone());
            }
            return Err(e.into_io());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct DiffSink<'a> {
    index: &'a SourceIndex,
    out: OpWriter,
    /// The source entry the current target entry's data is compared with, or [`NONE`].
    cand: u32,
    /// The current block's number within the entry's data, and its bytes so far.
    nblock: usize,
    block: Vec<u8>,
    /// Set once the entry's data stopped matching block by block.
    roll: Option<Roll>,
}

/// The most strong hashes the rolling search may owe: rolling checksums collide, by accident
/// or on purpose, and each costs a SHA-256 of a block.
const MAX_BUDGET: u32 = 64;
/// The most blocks alike in rolling checksum one window is compared with.
const MAX_STEPS: usize = 16;
/// The most source entries of one path a target entry is compared with.
const MAX_SAME_PATH: usize = 64;

/// rsync's search: where an entry's data stopped matching block by block (bytes inserted or
/// removed), the candidate's blocks are looked for at every byte offset, so that a change
/// costs about its own size rather than the rest of the file.
struct Roll {
    /// Target data not yet written: `buf[..p]` goes literal; the window starts at `p`.
    buf: Vec<u8>,
    p: usize,
    /// The rolling checksum of the window at `p`, once computed.
    sum: Option<Weak>,
    /// Whether the window at `p` was tried (it waits for the byte after it to move on).
    tried: bool,
    /// The candidate block expected right after the last match.
    next: usize,
    /// The candidate's full blocks by rolling checksum: the first, then the next alike.
    first: HashMap<u64, u32>,
    chain: Vec<u32>,
    /// Strong hashes the search may still compute; it earns more as it moves on.
    budget: u32,
    credit: u32,
}

impl DiffSink<'_> {
    fn entry(&self, id: u32) -> Option<&Entry> {
        (id != NONE).then(|| &self.index.entries[id as usize])
    }

    fn block_matches(&self, e: &Entry, i: usize, h: &super::Hash, len: usize) -> bool {
        let start = i as u64 * BLOCK as u64;
        let elen = e.size.saturating_sub(start).min(BLOCK as u64);
        self.index.block(e, i) == Some(h) && elen == len as u64
    }

    fn end_block(&mut self) -> Result<(), DeltaError> {
        let i = self.nblock;
        let h = hash(&self.block);
        let len = self.block.len();
        if i == 0 {
            // The entry of the same path may have changed where another entry (a moved or
            // copied file) starts with exactly these bytes.
            let same = self
                .entry(self.cand)
                .is_some_and(|e| self.block_matches(e, 0, &h, len));
            if !same
                && let Some(&id) = self.index.by_content.get(&h)
                && let Some(e) = self.entry(id)
                && self.block_matches(e, 0, &h, len)
                && self.out.can_copy(e.source, e.data_offset)
            {
                self.cand = id;
            }
        }
        let copy = self.entry(self.cand).and_then(|e| {
            let off = e.data_offset + i as u64 * BLOCK as u64;
            (self.block_matches(e, i, &h, len) && self.out.can_copy(e.source, off))
                .then_some((e.source, off))
        });
        match copy {
            Some((source, off)) => self.out.copy(source, off, len as u64)?,
            None => {
                let index = self.index;
                let roll = self.entry(self.cand).filter(|e| {
                    len == BLOCK
                        && e.size >= BLOCK as u64
                        && self.out.can_copy(e.source, e.data_offset + e.size - 1)
                });
                if let Some(e) = roll {
                    let full = full_blocks(e);
                    let mut first = HashMap::with_capacity(full);
                    let mut chain = vec![NONE; full];
                    for k in (0..full).rev() {
                        let weak = index.weak[e.first_block + k];
                        if let Some(later) = first.insert(weak, k as u32) {
                            chain[k] = later;
                        }
                    }
                    self.roll = Some(Roll {
                        buf: std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK)),
                        p: 0,
                        sum: None,
                        tried: false,
                        next: usize::MAX,
                        first,
                        chain,
                        budget: MAX_BUDGET,
                        credit: 0,
                    });
                    return self.roll_on();
                }
                let block = std::mem::take(&mut self.block);
                let r = self.out.literal(&block);
                self.block = block;
                r?;
            }
        }
        self.block.clear();
        self.nblock += 1;
        Ok(())
    }

    /// Searches the data held for the candidate's blocks, writing what it decides.
    fn roll_on(&mut self) -> Result<(), DeltaError> {
        let index = self.index;
        let Some(r) = self.roll.as_mut() else {
            return Ok(());
        };
        let e = &index.entries[self.cand as usize];
        let full = full_blocks(e);
        let off = |k: usize| e.data_offset + (k * BLOCK) as u64;
        while r.buf.len() - r.p >= BLOCK {
            if r.tried {
                if r.p + BLOCK >= r.buf.len() {
                    break;
                }
                let sum = r.sum.as_mut().expect("a tried window has its checksum");
                sum.roll(r.buf[r.p], r.buf[r.p + BLOCK]);
                r.p += 1;
                r.tried = false;
                r.credit += 1;
                if r.credit == 256 {
                    r.credit = 0;
                    r.budget = (r.budget + 1).min(MAX_BUDGET);
                }
                if r.p >= BLOCK {
                    self.out.literal(&r.buf[..r.p])?;
                    r.buf.drain(..r.p);
                    r.p = 0;
                }
                continue;
            }
            let win = &r.buf[r.p..r.p + BLOCK];
            let mut strong: Option<Hash> = None;
            let mut found = None;
            // Right after a match the next block most likely follows.
            if r.sum.is_none() && r.next < full && self.out.can_copy(e.source, off(r.next)) {
                let h = *strong.get_or_insert_with(|| hash(win));
                if index.blocks[e.first_block + r.next] == h {
                    found = Some(r.next);
                }
            }
            if found.is_none() {
                let sum = *r.sum.get_or_insert_with(|| Weak::of(win));
                // The chain runs in source order, and blocks behind the cursor never become
                // copyable again: dropping them from its head keeps every walk short.
                let mut k = match r.first.get_mut(&sum.key()) {
                    Some(head) => {
                        while *head != NONE && !self.out.can_copy(e.source, off(*head as usize)) {
                            *head = r.chain[*head as usize];
                        }
                        *head
                    }
                    None => NONE,
                };
                let mut steps = 0;
                while k != NONE && steps < MAX_STEPS {
                    steps += 1;
                    let at = k as usize;
                    if strong.is_none() {
                        if r.budget == 0 {
                            break;
                        }
                        r.budget -= 1;
                    }
                    if index.blocks[e.first_block + at] == *strong.get_or_insert_with(|| hash(win))
                    {
                        found = Some(at);
                        break;
                    }
                    k = r.chain[at];
                }
            }
            match found {
                Some(k) => {
                    self.out.literal(&r.buf[..r.p])?;
                    self.out.copy(e.source, off(k), BLOCK as u64)?;
                    r.buf.drain(..r.p + BLOCK);
                    r.p = 0;
                    r.sum = None;
                    r.next = k + 1;
                }
                None => r.tried = true,
            }
        }
        Ok(())
    }

    /// The entry's data is over: what the search holds goes literal, but for a tail that is the
    /// candidate's last, partial block.
    fn roll_end(&mut self) -> Result<(), DeltaError> {
        self.roll_on()?;
        let Some(r) = self.roll.take() else {
            return Ok(());
        };
        let e = &self.index.entries[self.cand as usize];
        let part = (e.size % BLOCK as u64) as usize;
        let len = r.buf.len();
        if part > 0 && len >= part && e.nblocks as u64 == e.size.div_ceil(BLOCK as u64) {
            let off = e.data_offset + e.size - part as u64;
            if self.out.can_copy(e.source, off)
                && self.index.blocks[e.first_block + e.nblocks - 1] == hash(&r.buf[len - part..])
            {
                self.out.literal(&r.buf[..len - part])?;
                return self.out.copy(e.source, off, part as u64);
            }
        }
        self.out.literal(&r.buf)
    }
}

impl Sink for DiffSink<'_> {
    fn header(&mut self, h: &Header, bytes: &[u8]) -> Result<(), DeltaError> {
        self.cand = NONE;
        self.nblock = 0;
        self.block.clear();
        self.roll = None;
        let mut header_from = None;
        if let Some(path) = &h.path {
            let mut hh = None;
            for id in self.index.with_path(path).take(MAX_SAME_PATH) {
                let e = &self.index.entries[id as usize];
                let same = e.header_len == bytes.len() as u64
                    && *hh.get_or_insert_with(|| hash(bytes)) == e.header_hash;
                if same && self.out.can_copy(e.source, e.header_offset) {
                    self.cand = id;
                    header_from = Some((e.source, e.header_offset));
                    break;
                }
                if self.cand == NONE && e.size > 0 && self.out.can_copy(e.source, e.data_offset) {
                    self.cand = id;
                }
            }
        }
        match header_from {
            Some((source, off)) => self.out.copy(source, off, bytes.len() as u64),
            None => self.out.literal(bytes),
        }
    }

    fn data(&mut self, mut bytes: &[u8]) -> Result<(), DeltaError> {
        while !bytes.is_empty() {
            if let Some(r) = &mut self.roll {
                // A block at a time, so that the search holds at most a few blocks.
                let n = BLOCK.min(bytes.len());
                r.buf.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                self.roll_on()?;
                continue;
            }
            let n = (BLOCK - self.block.len()).min(bytes.len());
            self.block.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.block.len() == BLOCK {
                self.end_block()?;
            }
        }
        Ok(())
    }

    fn data_end(&mut self) -> Result<(), DeltaError> {
        if self.roll.is_some() {
            return self.roll_end();
        }
        if !self.block.is_empty() {
            self.end_block()?;
        }
        Ok(())
    }

    fn padding(&mut self, bytes: &[u8]) -> Result<(), DeltaError> {
        // Zero padding after data copied to its end is copied along, so that the copy runs on
        // into the next entry's header.
        let from = self.entry(self.cand).and_then(|e| {
            let end = e.data_offset + e.size;
            (e.pad_zero
                && padding(e.size) == bytes.len()
                && bytes.iter().all(|&b| b == 0)
                && self.out.ends_at(e.source, end))
            .then_some((e.source, end))
        });
        match from {
            Some((source, off)) => self.out.copy(source, off, bytes.len() as u64),
            None => self.out.literal(bytes),
        }
    }

    fn tail(&mut self, bytes: &[u8]) -> Result<(), DeltaError> {
        self.out.literal(bytes)
    }
}

/// The blocks of an entry's data that are BLOCK long.
fn full_blocks(e: &Entry) -> usize {
    usize::try_from(e.size / BLOCK as u64).map_or(e.nblocks, |n| n.min(e.nblocks))
}

/// Writes ops into the deflate stream, merging adjacent copies and batching literals.
struct OpWriter {
    enc: DeflateEncoder<Vec<u8>>,
    max_len: u64,
    /// A copy not yet written, that the next one may extend: source, offset, length.
    copy: Option<(u16, u64, u64)>,
    lit: Vec<u8>,
    /// Per source, the end of the last copy from it: copies only go forward.
    cursor: Vec<u64>,
    used: Vec<bool>,
    copied: u64,
    literal: u64,
    scratch: Vec<u8>,
}

impl OpWriter {
    fn can_copy(&self, source: u16, offset: u64) -> bool {
        self.cursor
            .get(usize::from(source))
            .is_some_and(|&c| offset >= c)
    }

    /// Whether the pending copy ends at `end` of `source`.
    fn ends_at(&self, source: u16, end: u64) -> bool {
        self.copy
            .is_some_and(|(s, o, l)| s == source && o + l == end)
    }

    fn copy(&mut self, source: u16, offset: u64, len: u64) -> Result<(), DeltaError> {
        debug_assert!(self.can_copy(source, offset));
        self.flush_literal()?;
        match &mut self.copy {
            Some((s, o, l)) if *s == source && *o + *l == offset => *l += len,
            _ => {
                self.flush_copy()?;
                self.copy = Some((source, offset, len));
            }
        }
        self.cursor[usize::from(source)] = offset + len;
        Ok(())
    }

    fn literal(&mut self, mut bytes: &[u8]) -> Result<(), DeltaError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.flush_copy()?;
        while !bytes.is_empty() {
            let n = (FLUSH_LITERAL - self.lit.len()).min(bytes.len());
            self.lit.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.lit.len() == FLUSH_LITERAL {
                self.flush_literal()?;
            }
        }
        Ok(())
    }

    fn flush_copy(&mut self) -> Result<(), DeltaError> {
        let Some((source, offset, len)) = self.copy.take() else {
            return Ok(());
        };
        let mut op = std::mem::take(&mut self.scratch);
        op.clear();
        op.push(OP_COPY);
        put_varint(&mut op, u64::from(source));
        put_varint(&mut op, offset);
        put_varint(&mut op, len);
        let r = self.emit(&op);
        self.scratch = op;
        self.copied += len;
        self.used[usize::from(source)] = true;
        r
    }

    fn flush_literal(&mut self) -> Result<(), DeltaError> {
        if self.lit.is_empty() {
            return Ok(());
        }
        let mut op = std::mem::take(&mut self.scratch);
        op.clear();
        op.push(OP_LITERAL);
        put_varint(&mut op, self.lit.len() as u64);
        let mut r = self.emit(&op);
        self.scratch = op;
        if r.is_ok() {
            let lit = std::mem::take(&mut self.lit);
            r = self.emit(&lit);
            self.literal += lit.len() as u64;
            self.lit = lit;
            self.lit.clear();
        }
        r
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), DeltaError> {
        self.enc.write_all(bytes).map_err(DeltaError::Io)?;
        self.check(self.enc.get_ref().len())
    }

    fn check(&self, len: usize) -> Result<(), DeltaError> {
        if len as u64 > self.max_len {
            return Err(DeltaError::TooLarge(format!(
                "it passed the {} bytes allowed for it",
                self.max_len
            )));
        }
        Ok(())
    }
}
