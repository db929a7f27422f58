//! What the differ knows about the source tars: per entry, where its header group and data lie,
//! a hash of the header bytes and one hash per block of data.

use std::collections::HashMap;
use std::io::Read;

use sha2::Digest as _;

use super::scan::{Header, Scanner, Sink};
use super::{BLOCK, DeltaError, Hash, MAX_ENTRIES, MAX_INDEX_BYTES, Weak};

/// No entry.
pub(crate) const NONE: u32 = u32::MAX;

pub(crate) struct Entry {
    pub source: u16,
    pub header_offset: u64,
    pub header_len: u64,
    pub header_hash: Hash,
    pub data_offset: u64,
    pub size: u64,
    /// Whether the padding after the data is all zeros (it need not be).
    pub pad_zero: bool,
    /// The entry's block hashes are `blocks[first_block..first_block + nblocks]`.
    pub first_block: usize,
    pub nblocks: usize,
    /// The next entry with the same path, or [`NONE`].
    next: u32,
}

/// Everything the differ needs to know about the source layers (uncompressed tars the
/// destination holds).
#[derive(Default)]
pub struct SourceIndex {
    pub(crate) entries: Vec<Entry>,
    pub(crate) blocks: Vec<Hash>,
    /// The rolling checksum of each block, beside `blocks` (meaningful for full blocks only).
    pub(crate) weak: Vec<u64>,
    /// Path to the first and last entry with that path.
    by_path: HashMap<Box<[u8]>, (u32, u32)>,
    /// First block hash to the first entry whose data starts with it: a moved file.
    pub(crate) by_content: HashMap<Hash, u32>,
    memory: usize,
    /// The highest source number added, plus one.
    pub(crate) sources: usize,
    added: std::collections::BTreeSet<u16>,
}

impl SourceIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one whole source tar (uncompressed) as a stream and indexes it. `source` is the
    /// position of this layer in the list the delta will name (0, 1, ...). Reads to the end of
    /// the stream; a damaged or truncated tar is an error.
    /// Each source is added once; a failed `add` leaves the index as it was before.
    pub fn add(&mut self, source: u16, tar: &mut dyn Read) -> Result<(), DeltaError> {
        if self.added.contains(&source) {
            return Err(DeltaError::Source {
                source,
                message: "it was indexed twice".into(),
            });
        }
        let before = (self.entries.len(), self.blocks.len(), self.memory);
        let r = self.read(source, tar);
        match r {
            Ok(()) => {
                self.added.insert(source);
                self.sources = self.sources.max(usize::from(source) + 1);
            }
            Err(_) => self.truncate(before),
        }
        r
    }

    fn read(&mut self, source: u16, tar: &mut dyn Read) -> Result<(), DeltaError> {
        let mut scan = Scanner::new(true);
        let mut sink = IndexSink {
            index: self,
            source,
            hasher: sha2::Sha256::new(),
            weak: Weak::default(),
            fill: 0,
            current: None,
        };
        let mut buf = vec![0u8; 256 * 1024];
        let named = |e: DeltaError| match e {
            DeltaError::Corrupt(message) => DeltaError::Source { source, message },
            other => other,
        };
        loop {
            let n = match tar.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(DeltaError::Source {
                        source,
                        message: format!("reading it: {e}"),
                    });
                }
            };
            scan.feed(&buf[..n], &mut sink).map_err(named)?;
        }
        scan.finish(&mut sink).map_err(named)
    }

    /// Forgets every entry and block from `entries` and `blocks` on.
    fn truncate(&mut self, (entries, blocks, memory): (usize, usize, usize)) {
        let n = entries as u32;
        self.entries.truncate(entries);
        self.blocks.truncate(blocks);
        self.weak.truncate(blocks);
        self.memory = memory;
        self.by_content.retain(|_, id| *id < n);
        for e in &mut self.entries {
            if e.next >= n {
                e.next = NONE;
            }
        }
        self.by_path.retain(|_, (first, _)| *first < n);
        for (first, last) in self.by_path.values_mut() {
            if *last >= n {
                *last = *first;
                while self.entries[*last as usize].next != NONE {
                    *last = self.entries[*last as usize].next;
                }
            }
        }
    }

    /// How many entries (of all sources) the index holds.
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Entries with this path, first added first.
    pub(crate) fn with_path(&self, path: &[u8]) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.by_path.get(path).map_or(NONE, |&(first, _)| first);
        std::iter::from_fn(move || {
            if at == NONE {
                return None;
            }
            let this = at;
            at = self.entries[at as usize].next;
            Some(this)
        })
    }

    pub(crate) fn block(&self, e: &Entry, i: usize) -> Option<&Hash> {
        if i < e.nblocks {
            self.blocks.get(e.first_block + i)
        } else {
            None
        }
    }

    fn charge(&mut self, bytes: usize) -> Result<(), DeltaError> {
        self.memory += bytes;
        if self.memory > MAX_INDEX_BYTES {
            return Err(DeltaError::TooLarge(format!(
                "the source layers need more than {} MiB to index",
                MAX_INDEX_BYTES >> 20
            )));
        }
        Ok(())
    }
}

struct IndexSink<'i> {
    index: &'i mut SourceIndex,
    source: u16,
    /// Hashes the current block of the current entry's data.
    hasher: sha2::Sha256,
    weak: Weak,
    fill: usize,
    /// The entry whose data is being read (none for a PAX global header).
    current: Option<usize>,
}

impl IndexSink<'_> {
    fn end_block(&mut self) -> Result<(), DeltaError> {
        let d = std::mem::take(&mut self.hasher).finalize();
        let mut h = [0u8; 16];
        h.copy_from_slice(&d[..16]);
        self.fill = 0;
        self.index.charge(size_of::<Hash>() + 8)?;
        self.index.blocks.push(h);
        self.index.weak.push(std::mem::take(&mut self.weak).key());
        if let Some(i) = self.current {
            self.index.entries[i].nblocks += 1;
        }
        Ok(())
    }
}

impl Sink for IndexSink<'_> {
    fn header(&mut self, h: &Header, bytes: &[u8]) -> Result<(), DeltaError> {
        self.current = None;
        let Some(path) = &h.path else { return Ok(()) };
        let index = &mut *self.index;
        if index.entries.len() >= MAX_ENTRIES {
            return Err(DeltaError::TooLarge(format!(
                "the source layers hold more than {MAX_ENTRIES} entries"
            )));
        }
        index.charge(size_of::<Entry>() + 2 * path.len() + 48)?;
        let id = index.entries.len() as u32;
        index.entries.push(Entry {
            source: self.source,
            header_offset: h.offset,
            header_len: bytes.len() as u64,
            header_hash: super::hash(bytes),
            data_offset: h.offset + bytes.len() as u64,
            size: h.size,
            pad_zero: true,
            first_block: index.blocks.len(),
            nblocks: 0,
            next: NONE,
        });
        match index.by_path.get_mut(path.as_slice()) {
            Some((_, last)) => {
                let prev = std::mem::replace(last, id);
                index.entries[prev as usize].next = id;
            }
            None => {
                index
                    .by_path
                    .insert(path.clone().into_boxed_slice(), (id, id));
            }
        }
        self.hasher = sha2::Sha256::new();
        self.weak = Weak::default();
        self.fill = 0;
        self.current = Some(id as usize);
        Ok(())
    }

    fn data(&mut self, mut bytes: &[u8]) -> Result<(), DeltaError> {
        if self.current.is_none() {
            return Ok(());
        }
        while !bytes.is_empty() {
            let n = (BLOCK - self.fill).min(bytes.len());
            self.hasher.update(&bytes[..n]);
            self.weak.add(&bytes[..n]);
            self.fill += n;
            bytes = &bytes[n..];
            if self.fill == BLOCK {
                self.end_block()?;
            }
        }
        Ok(())
    }

    fn data_end(&mut self) -> Result<(), DeltaError> {
        if self.fill > 0 {
            self.end_block()?;
        }
        let index = &mut *self.index;
        let Some(id) = self.current else {
            return Ok(());
        };
        let e = &index.entries[id];
        if e.nblocks > 0 {
            let first = index.blocks[e.first_block];
            let id = id as u32;
            if !index.by_content.contains_key(&first) {
                index.charge(64)?;
                index.by_content.insert(first, id);
            }
        }
        Ok(())
    }

    fn padding(&mut self, bytes: &[u8]) -> Result<(), DeltaError> {
        if let Some(i) = self.current {
            self.index.entries[i].pad_zero = bytes.iter().all(|&b| b == 0);
        }
        Ok(())
    }

    fn tail(&mut self, _bytes: &[u8]) -> Result<(), DeltaError> {
        Ok(())
    }
}
