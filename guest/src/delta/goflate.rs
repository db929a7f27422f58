//! The Go rebuilder: the exact bytes of a gzip layer written by Go's `compress/gzip` (what
//! Docker and BuildKit write), from its plain tar alone.
//!
//! Go's deflate encoder is deterministic: the same plain text at the same level, written in
//! the same pieces, gives the same bytes. This module is a re-implementation of that encoder
//! (the algorithm of Go 1.19's `compress/flate`: its hash chains, lazy matching and level
//! table, its block cutting, its choice between stored, fixed and dynamic blocks, and its
//! length-limited Huffman code construction with its tie-breaks), written from a reading of
//! the algorithm. So the rebuild data is only the level, the gzip header and the trailer.
//!
//! Go's output depends on how the plain text was cut into `Write` calls in one rare corner
//! (when its window slides; see [`Deflater::write`]). The rebuilder writes the plain text in
//! pieces of [`WRITE`] bytes, as Go's `io.Copy` does; a layer written in other pieces rebuilds
//! all the same unless it hits that corner, and then [`analyze`] finds a mismatch and the
//! layer goes whole.
//!
//! Levels modelled: Go's 2 to 9 (6 is its default, `-1`), 0 (stored) and -2 (Huffman only).
//! Level 1 (Go's separate "best speed" algorithm) is not modelled.
//!
//! # Rebuild data, version 1
//!
//! All integers little-endian.
//!
//! | bytes | what |
//! | --- | --- |
//! | 8 | magic `IMOGOFL` and the version byte 1 |
//! | 1 | Go's compression level, as a signed byte (-2, 0, 2..9) |
//! | 4 | `header_len`, then the gzip header verbatim (validated as a gzip header) |
//! | 8 | bytes of plain text |
//! | 8 | bytes of the deflate stream |
//! | 8 | the gzip trailer verbatim (CRC32, ISIZE) |
//!
//! Nothing may follow the trailer.

use std::io::{self, Read, Write};

use flate2::{Crc, Decompress, FlushDecompress, Status};
use sha2::{Digest as _, Sha256};

use super::gzip::{Analysis, RebuildError};

/// Names this rebuilder (and its version) in archives.
pub const REBUILDER: &str = "gzip+go-flate/1";

/// The size of the pieces the plain text is written to the encoder in: Go's `io.Copy` buffer.
pub const WRITE: usize = 32 << 10;

/// The levels tried by [`analyze`], Go's default first.
pub const LEVELS: [i8; 10] = [6, 2, 3, 4, 5, 7, 8, 9, 0, -2];

const MAGIC: &[u8; 8] = b"IMOGOFL\x01";
const MAX_HEADER: usize = 64 << 10;

// ---------------------------------------------------------------------------------------
// Deflate symbols.

const LENGTH_BASE: [u16; 29] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128,
    160, 192, 224, 255,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
    2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order code-length code lengths are sent in.
const CODEGEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];
const NUM_LIT: usize = 286;
const NUM_DIST: usize = 30;
const END_BLOCK: usize = 256;

/// Length code (0..29, add 257 for the symbol) of a match length minus 3.
fn length_code(xlen: u32) -> usize {
    if xlen < 8 {
        xlen as usize
    } else if xlen == 255 {
        28
    } else {
        let nb = 31 - xlen.leading_zeros();
        (4 * (nb - 1) + ((xlen >> (nb - 2)) & 3)) as usize
    }
}

/// Distance code of a distance minus 1.
fn dist_code(xdist: u32) -> usize {
    if xdist < 4 {
        xdist as usize
    } else {
        let nb = 31 - xdist.leading_zeros();
        (2 * nb + ((xdist >> (nb - 1)) & 1)) as usize
    }
}

/// A token: a literal byte (or the end of block, 256) below `MATCH`; a match otherwise, with
/// its length minus 3 above bit 22 and its distance minus 1 below.
const MATCH: u32 = 1 << 30;

fn match_token(len: usize, dist: usize) -> u32 {
    MATCH | ((len as u32 - 3) << 22) | (dist as u32 - 1)
}

// ---------------------------------------------------------------------------------------
// Huffman codes, built the way Go builds them.

#[derive(Clone, Copy, Default)]
struct Code {
    bits: u16,
    len: u8,
}

/// Canonical codes from code lengths (deflate's assignment, which Go's also is).
fn canonical(lens: &[u8], codes: &mut [Code]) {
    let mut count = [0u16; 17];
    for &l in lens {
        count[usize::from(l)] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; 17];
    let mut code = 0u16;
    for bits in 1..17 {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    for (c, &l) in codes.iter_mut().zip(lens) {
        *c = if l == 0 {
            Code::default()
        } else {
            let v = next[usize::from(l)];
            next[usize::from(l)] += 1;
            Code {
                bits: v.reverse_bits() >> (16 - l),
                len: l,
            }
        };
    }
}

/// Code lengths for `freq`, at most `max_bits` long, as Go's encoder makes them: symbols
/// sorted by frequency (ties by symbol), a boundary package-merge giving how many symbols get
/// each length, the most frequent symbols getting the shortest. One or two used symbols get
/// length 1 each.
fn code_lengths(freq: &[i32], max_bits: usize, lens: &mut [u8], scratch: &mut Vec<(i32, u16)>) {
    scratch.clear();
    for (i, &f) in freq.iter().enumerate() {
        lens[i] = 0;
        if f != 0 {
            scratch.push((f, i as u16));
        }
    }
    let n = scratch.len();
    if n <= 2 {
        for &(_, s) in scratch.iter() {
            lens[usize::from(s)] = 1;
        }
        return;
    }
    scratch.sort_unstable();
    let counts = length_counts(scratch, max_bits);
    // counts[b]: symbols of length b; the last (most frequent) symbols take the short ones.
    let mut end = n;
    for (bits, &c) in counts.iter().enumerate().skip(1) {
        for &(_, s) in &scratch[end - c as usize..end] {
            lens[usize::from(s)] = bits as u8;
        }
        end -= c as usize;
    }
}

/// How many symbols of each length (index 1..=max) the sorted `list` gets. The lazy
/// boundary package-merge of Go's encoder, level by level, which fixes its tie-breaks.
fn length_counts(list: &[(i32, u16)], max_bits: usize) -> Vec<i32> {
    const NONE: i32 = i32::MAX;
    let n = list.len();
    let freq = |i: usize| if i < n { list[i].0 } else { NONE };
    let max_bits = max_bits.min(n - 1);
    #[derive(Clone, Copy, Default)]
    struct Level {
        last: i32,
        next_char: i32,
        next_pair: i32,
        needed: i32,
    }
    let mut levels = [Level::default(); 18];
    let mut leaves = [[0i32; 18]; 18];
    for (level, l) in levels.iter_mut().enumerate().take(max_bits + 1).skip(1) {
        *l = Level {
            last: freq(1),
            next_char: freq(2),
            next_pair: if level == 1 {
                NONE
            } else {
                freq(0).wrapping_add(freq(1))
            },
            needed: 0,
        };
        leaves[level][level] = 2;
    }
    levels[max_bits].needed = 2 * n as i32 - 4;
    let mut level = max_bits;
    loop {
        if levels[level].next_pair == NONE && levels[level].next_char == NONE {
            // This level ran out of leaves and pairs.
            levels[level].needed = 0;
            levels[level + 1].next_pair = NONE;
            level += 1;
            continue;
        }
        let prev = levels[level].last;
        if levels[level].next_char < levels[level].next_pair {
            // A leaf is cheaper.
            let count = leaves[level][level] + 1;
            levels[level].last = levels[level].next_char;
            leaves[level][level] = count;
            levels[level].next_char = freq(count as usize);
        } else {
            // A pair from the level below is cheaper (or as cheap).
            levels[level].last = levels[level].next_pair;
            let below = leaves[level - 1];
            leaves[level][..level].copy_from_slice(&below[..level]);
            levels[level - 1].needed = 2;
        }
        levels[level].needed -= 1;
        if levels[level].needed == 0 {
            if level == max_bits {
                break;
            }
            levels[level + 1].next_pair = prev.wrapping_add(levels[level].last);
            level += 1;
        } else {
            while levels[level - 1].needed > 0 {
                level -= 1;
            }
        }
    }
    let mut counts = vec![0i32; max_bits + 1];
    for (bits, c) in counts.iter_mut().enumerate().skip(1) {
        let level = max_bits + 1 - bits;
        *c = leaves[max_bits][level] - leaves[max_bits][level - 1];
    }
    counts
}

fn bit_length(freq: &[i32], lens: &[u8]) -> i64 {
    freq.iter()
        .zip(lens)
        .map(|(&f, &l)| i64::from(f) * i64::from(l))
        .sum()
}

fn fixed_lit_lens() -> [u8; NUM_LIT] {
    let mut l = [0u8; NUM_LIT];
    for (i, x) in l.iter_mut().enumerate() {
        *x = match i {
            0..=143 => 8,
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
    }
    l
}

// ---------------------------------------------------------------------------------------
// Block writer.

/// Writes deflate blocks the way Go's encoder chooses and lays them out. Output accumulates
/// in `out`, which the owner drains.
struct BlockWriter {
    bits: u64,
    nbits: u32,
    out: Vec<u8>,
    lit_freq: [i32; NUM_LIT],
    dist_freq: [i32; NUM_DIST],
    lit_lens: [u8; NUM_LIT],
    dist_lens: [u8; NUM_DIST],
    lit_codes: [Code; NUM_LIT],
    dist_codes: [Code; NUM_DIST],
    fixed_lit_lens: [u8; NUM_LIT],
    fixed_lit_codes: [Code; NUM_LIT],
    fixed_dist_codes: [Code; NUM_DIST],
    codegen: Vec<u8>,
    codegen_freq: [i32; 19],
    codegen_lens: [u8; 19],
    codegen_codes: [Code; 19],
    scratch: Vec<(i32, u16)>,
}

impl BlockWriter {
    fn new() -> Self {
        let fixed_lit_lens = fixed_lit_lens();
        let mut fixed_lit_codes = [Code::default(); NUM_LIT];
        canonical(&fixed_lit_lens, &mut fixed_lit_codes);
        let mut fixed_dist_codes = [Code::default(); NUM_DIST];
        canonical(&[5; NUM_DIST], &mut fixed_dist_codes);
        Self {
            bits: 0,
            nbits: 0,
            out: Vec::with_capacity(1 << 16),
            lit_freq: [0; NUM_LIT],
            dist_freq: [0; NUM_DIST],
            lit_lens: [0; NUM_LIT],
            dist_lens: [0; NUM_DIST],
            lit_codes: [Code::default(); NUM_LIT],
            dist_codes: [Code::default(); NUM_DIST],
            fixed_lit_lens,
            fixed_lit_codes,
            fixed_dist_codes,
            codegen: Vec::with_capacity(NUM_LIT + NUM_DIST + 1),
            codegen_freq: [0; 19],
            codegen_lens: [0; 19],
            codegen_codes: [Code::default(); 19],
            scratch: Vec::with_capacity(NUM_LIT + 1),
        }
    }

    fn put(&mut self, value: u32, n: u32) {
        self.bits |= u64::from(value) << self.nbits;
        self.nbits += n;
        while self.nbits >= 8 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.nbits -= 8;
        }
    }

    fn put_code(&mut self, c: Code) {
        self.put(u32::from(c.bits), u32::from(c.len));
    }

    /// Pads to a byte boundary.
    fn align(&mut self) {
        if self.nbits > 0 {
            self.out.push(self.bits as u8);
            self.bits = 0;
            self.nbits = 0;
        }
    }

    fn stored(&mut self, data: &[u8], last: bool) {
        self.put(u32::from(last), 3);
        self.align();
        let n = data.len() as u32;
        self.put(n, 16);
        self.put(!n & 0xffff, 16);
        self.out.extend_from_slice(data);
    }

    /// Counts the tokens (the end of block added) and builds their codes; returns how many
    /// literal/length and distance codes the block header declares.
    fn count(&mut self, tokens: &[u32]) -> (usize, usize) {
        self.lit_freq = [0; NUM_LIT];
        self.dist_freq = [0; NUM_DIST];
        for &t in tokens {
            if t < MATCH {
                self.lit_freq[t as usize] += 1;
            } else {
                self.lit_freq[257 + length_code((t >> 22) & 0xff)] += 1;
                self.dist_freq[dist_code(t & 0x3f_ffff)] += 1;
            }
        }
        self.lit_freq[END_BLOCK] += 1;
        let mut num_lit = NUM_LIT;
        while self.lit_freq[num_lit - 1] == 0 {
            num_lit -= 1;
        }
        let mut num_dist = NUM_DIST;
        while num_dist > 0 && self.dist_freq[num_dist - 1] == 0 {
            num_dist -= 1;
        }
        if num_dist == 0 {
            // Go declares one distance code, counted as used, when there is none.
            self.dist_freq[0] = 1;
            num_dist = 1;
        }
        self.build_lit_dist(true);
        (num_lit, num_dist)
    }

    fn build_lit_dist(&mut self, with_dist: bool) {
        code_lengths(&self.lit_freq, 15, &mut self.lit_lens, &mut self.scratch);
        canonical(&self.lit_lens, &mut self.lit_codes);
        if with_dist {
            code_lengths(&self.dist_freq, 15, &mut self.dist_lens, &mut self.scratch);
            canonical(&self.dist_lens, &mut self.dist_codes);
        }
    }

    /// The run-length coded code lengths of the dynamic header, and the code for them.
    fn build_codegen(&mut self, num_lit: usize, num_dist: usize) {
        let mut all = [0u8; NUM_LIT + NUM_DIST];
        all[..num_lit].copy_from_slice(&self.lit_lens[..num_lit]);
        all[num_lit..num_lit + num_dist].copy_from_slice(&self.dist_lens[..num_dist]);
        let all = &all[..num_lit + num_dist];
        self.codegen.clear();
        self.codegen_freq = [0; 19];
        let mut i = 0;
        while i < all.len() {
            let size = all[i];
            let mut run = all[i..].iter().take_while(|&&x| x == size).count();
            i += run;
            if size != 0 {
                self.codegen.push(size);
                self.codegen_freq[usize::from(size)] += 1;
                run -= 1;
                while run >= 3 {
                    let n = run.min(6);
                    self.codegen.extend_from_slice(&[16, (n - 3) as u8]);
                    self.codegen_freq[16] += 1;
                    run -= n;
                }
            } else {
                while run >= 11 {
                    let n = run.min(138);
                    self.codegen.extend_from_slice(&[18, (n - 11) as u8]);
                    self.codegen_freq[18] += 1;
                    run -= n;
                }
                if run >= 3 {
                    self.codegen.extend_from_slice(&[17, (run - 3) as u8]);
                    self.codegen_freq[17] += 1;
                    run = 0;
                }
            }
            for _ in 0..run {
                self.codegen.push(size);
                self.codegen_freq[usize::from(size)] += 1;
            }
        }
        let freq = self.codegen_freq;
        code_lengths(&freq, 7, &mut self.codegen_lens, &mut self.scratch);
        canonical(&self.codegen_lens, &mut self.codegen_codes);
    }

    /// Bits of a dynamic block (header, codes and `extra` bits) and the code-length codes its
    /// header declares.
    fn dynamic_size(&self, extra: i64) -> (i64, usize) {
        let mut num_codegens = 19;
        while num_codegens > 4 && self.codegen_freq[CODEGEN_ORDER[num_codegens - 1]] == 0 {
            num_codegens -= 1;
        }
        let f = &self.codegen_freq;
        let header = 17
            + 3 * num_codegens as i64
            + bit_length(f, &self.codegen_lens)
            + i64::from(f[16]) * 2
            + i64::from(f[17]) * 3
            + i64::from(f[18]) * 7;
        let size = header
            + bit_length(&self.lit_freq, &self.lit_lens)
            + bit_length(&self.dist_freq, &self.dist_lens)
            + extra;
        (size, num_codegens)
    }

    fn dynamic_header(&mut self, num_lit: usize, num_dist: usize, num_codegens: usize) {
        self.put(4, 3);
        self.put((num_lit - 257) as u32, 5);
        self.put((num_dist - 1) as u32, 5);
        self.put((num_codegens - 4) as u32, 4);
        for &s in &CODEGEN_ORDER[..num_codegens] {
            self.put(u32::from(self.codegen_lens[s]), 3);
        }
        let mut i = 0;
        while i < self.codegen.len() {
            let sym = self.codegen[i];
            self.put_code(self.codegen_codes[usize::from(sym)]);
            i += 1;
            let extra = match sym {
                16 => 2,
                17 => 3,
                18 => 7,
                _ => continue,
            };
            self.put(u32::from(self.codegen[i]), extra);
            i += 1;
        }
    }

    /// A block of `tokens` (not the final block), whose plain text is `input` when it is
    /// still in the window: stored, fixed or dynamic, whichever Go finds smallest.
    fn block(&mut self, tokens: &[u32], input: Option<&[u8]>) {
        let (num_lit, num_dist) = self.count(tokens);
        let storable = input.filter(|i| i.len() <= 65535);
        let mut extra = 0i64;
        if storable.is_some() {
            // Go counts the extra bits only when it weighs a stored block.
            for code in 265..num_lit {
                extra += i64::from(self.lit_freq[code]) * i64::from(LENGTH_EXTRA[code - 257]);
            }
            for code in 4..num_dist {
                extra += i64::from(self.dist_freq[code]) * i64::from(DIST_EXTRA[code]);
            }
        }
        let fixed = 3
            + bit_length(&self.lit_freq, &self.fixed_lit_lens)
            + 5 * self.dist_freq.iter().map(|&f| i64::from(f)).sum::<i64>()
            + extra;
        self.build_codegen(num_lit, num_dist);
        let (dynamic, num_codegens) = self.dynamic_size(extra);
        let size = fixed.min(dynamic);
        if let Some(input) = storable
            && (input.len() as i64 + 5) * 8 < size
        {
            self.stored(input, false);
            return;
        }
        if dynamic < fixed {
            self.dynamic_header(num_lit, num_dist, num_codegens);
            self.tokens(tokens, false);
        } else {
            self.put(2, 3);
            self.tokens(tokens, true);
        }
    }

    fn tokens(&mut self, tokens: &[u32], fixed: bool) {
        let (lit, dist) = if fixed {
            (self.fixed_lit_codes, self.fixed_dist_codes)
        } else {
            (self.lit_codes, self.dist_codes)
        };
        for &t in tokens {
            if t < MATCH {
                self.put_code(lit[t as usize]);
                continue;
            }
            let xlen = (t >> 22) & 0xff;
            let lc = length_code(xlen);
            self.put_code(lit[257 + lc]);
            if LENGTH_EXTRA[lc] > 0 {
                self.put(
                    xlen - u32::from(LENGTH_BASE[lc]),
                    u32::from(LENGTH_EXTRA[lc]),
                );
            }
            let xdist = t & 0x3f_ffff;
            let dc = dist_code(xdist);
            self.put_code(dist[dc]);
            if DIST_EXTRA[dc] > 0 {
                self.put(xdist - u32::from(DIST_BASE[dc]), u32::from(DIST_EXTRA[dc]));
            }
        }
        self.put_code(lit[END_BLOCK]);
    }

    /// A block of literals only (Go's Huffman-only mode), or stored when that is not more
    /// than a sixteenth larger.
    fn huffman_only(&mut self, input: &[u8]) {
        self.lit_freq = [0; NUM_LIT];
        for &b in input {
            self.lit_freq[usize::from(b)] += 1;
        }
        self.lit_freq[END_BLOCK] = 1;
        self.dist_freq = [0; NUM_DIST];
        self.dist_freq[0] = 1;
        self.build_lit_dist(false);
        // One distance code of length 1, as Go declares.
        self.dist_lens = [0; NUM_DIST];
        self.dist_lens[0] = 1;
        self.build_codegen(257, 1);
        let (size, num_codegens) = self.dynamic_size(0);
        if input.len() <= 65535 && (input.len() as i64 + 5) * 8 < size + (size >> 4) {
            self.stored(input, false);
            return;
        }
        self.dynamic_header(257, 1, num_codegens);
        for &b in input {
            self.put_code(self.lit_codes[usize::from(b)]);
        }
        self.put_code(self.lit_codes[END_BLOCK]);
    }
}

// ---------------------------------------------------------------------------------------
// The compressor.

const WINDOW: usize = 1 << 15;
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;
const BLOCK_TOKENS: usize = 1 << 14;
const HASH_BITS: u32 = 17;
const HASH_MASK: u32 = (1 << HASH_BITS) - 1;
const MAX_HASH_OFFSET: i64 = 1 << 24;
const SKIP_NEVER: usize = i32::MAX as usize;
const NO_BLOCK: usize = i32::MAX as usize;

/// Go's level table: good, lazy, nice, chain, fast-skip length.
fn params(level: i8) -> Option<(usize, usize, usize, usize, usize)> {
    Some(match level {
        2 => (4, 0, 16, 8, 5),
        3 => (4, 0, 32, 32, 6),
        4 => (4, 4, 16, 16, SKIP_NEVER),
        5 => (8, 16, 32, 32, SKIP_NEVER),
        -1 | 6 => (8, 16, 128, 128, SKIP_NEVER),
        7 => (8, 32, 128, 256, SKIP_NEVER),
        8 => (32, 128, 258, 1024, SKIP_NEVER),
        9 => (32, 258, 258, 4096, SKIP_NEVER),
        _ => return None,
    })
}

fn hash4(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]).wrapping_mul(0x1e35_a7bd) >> (32 - HASH_BITS)
}

enum Mode {
    Stored,
    HuffmanOnly,
    Lazy {
        good: usize,
        lazy: usize,
        nice: usize,
        chain: usize,
        fast_skip: usize,
    },
}

/// A streaming deflate encoder that writes what Go's `compress/flate` writes at one level.
/// Memory: a 64 KiB window, 640 KiB of hash chains, 64 KiB of tokens.
pub struct Deflater {
    mode: Mode,
    w: BlockWriter,
    window: Vec<u8>,
    window_end: usize,
    head: Vec<u32>,
    prev: Vec<u32>,
    hash_offset: i64,
    chain_head: i64,
    index: usize,
    block_start: usize,
    byte_available: bool,
    tokens: Vec<u32>,
    length: usize,
    offset: usize,
    max_insert: usize,
    sync: bool,
    finished: bool,
}

impl Deflater {
    /// An encoder for Go level `level` (-2, -1, 0, 2..9); `None` for levels not modelled.
    pub fn new(level: i8) -> Option<Self> {
        let (mode, window, tables) = match level {
            0 => (Mode::Stored, 65535, false),
            -2 => (Mode::HuffmanOnly, 65535, false),
            _ => {
                let (good, lazy, nice, chain, fast_skip) = params(level)?;
                (
                    Mode::Lazy {
                        good,
                        lazy,
                        nice,
                        chain,
                        fast_skip,
                    },
                    2 * WINDOW,
                    true,
                )
            }
        };
        Some(Self {
            mode,
            w: BlockWriter::new(),
            window: vec![0; window],
            window_end: 0,
            head: if tables {
                vec![0; 1 << HASH_BITS]
            } else {
                Vec::new()
            },
            prev: if tables { vec![0; WINDOW] } else { Vec::new() },
            hash_offset: 1,
            chain_head: -1,
            index: 0,
            block_start: 0,
            byte_available: false,
            tokens: Vec::with_capacity(BLOCK_TOKENS + 1),
            length: MIN_MATCH - 1,
            offset: 0,
            max_insert: 0,
            sync: false,
            finished: false,
        })
    }

    /// Compressed bytes made so far and not yet taken.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.w.out
    }

    /// One `Write` call of Go's writer. Go's output depends on the pieces only in when its
    /// window slides (at the first stop of its matcher past a fixed point), so callers that
    /// want Go's `io.Copy` output write [`WRITE`]-byte pieces.
    pub fn write(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            self.step();
            let n = self.fill(b);
            b = &b[n..];
        }
    }

    /// Compresses what is left and ends the stream (Go's `Close`).
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.sync = true;
        self.step();
        self.w.stored(&[], true);
        self.finished = true;
    }

    fn fill(&mut self, b: &[u8]) -> usize {
        if matches!(self.mode, Mode::Lazy { .. })
            && self.index >= 2 * WINDOW - (MIN_MATCH + MAX_MATCH)
        {
            self.slide();
        }
        let n = b.len().min(self.window.len() - self.window_end);
        self.window[self.window_end..self.window_end + n].copy_from_slice(&b[..n]);
        self.window_end += n;
        n
    }

    fn slide(&mut self) {
        self.window.copy_within(WINDOW..2 * WINDOW, 0);
        self.index -= WINDOW;
        self.window_end -= WINDOW;
        // As Go does: an open block whose start slid out can no longer be stored.
        self.block_start = if self.block_start >= WINDOW {
            self.block_start - WINDOW
        } else {
            NO_BLOCK
        };
        self.hash_offset += WINDOW as i64;
        if self.hash_offset > MAX_HASH_OFFSET {
            // Rebase the stored positions before they outgrow 32 bits.
            let delta = self.hash_offset - 1;
            self.hash_offset -= delta;
            self.chain_head -= delta;
            for v in self.prev.iter_mut().chain(self.head.iter_mut()) {
                *v = if i64::from(*v) > delta {
                    (i64::from(*v) - delta) as u32
                } else {
                    0
                };
            }
        }
    }

    fn step(&mut self) {
        match self.mode {
            Mode::Stored => {
                if self.window_end > 0 && (self.window_end == self.window.len() || self.sync) {
                    self.w.stored(&self.window[..self.window_end], false);
                    self.window_end = 0;
                }
            }
            Mode::HuffmanOnly => {
                if (self.window_end < self.window.len() && !self.sync) || self.window_end == 0 {
                    return;
                }
                self.w.huffman_only(&self.window[..self.window_end]);
                self.window_end = 0;
            }
            Mode::Lazy { .. } => self.deflate(),
        }
    }

    fn insert(&mut self, at: usize) {
        let h = (hash4(&self.window[at..at + 4]) & HASH_MASK) as usize;
        self.prev[at & (WINDOW - 1)] = self.head[h];
        self.head[h] = (at as i64 + self.hash_offset) as u32;
    }

    fn flush_block(&mut self, index: usize) {
        if index > 0 {
            let input = (self.block_start <= index).then(|| &self.window[self.block_start..index]);
            self.w.block(&self.tokens, input);
            self.block_start = index;
        }
        self.tokens.clear();
    }

    fn deflate(&mut self) {
        let Mode::Lazy {
            good,
            lazy,
            nice,
            chain,
            fast_skip,
        } = self.mode
        else {
            return;
        };
        if self.window_end - self.index < MIN_MATCH + MAX_MATCH && !self.sync {
            return;
        }
        self.max_insert = self.window_end.saturating_sub(MIN_MATCH - 1);
        let lazy_mode = fast_skip == SKIP_NEVER;
        loop {
            let lookahead = self.window_end - self.index;
            if lookahead < MIN_MATCH + MAX_MATCH {
                if !self.sync {
                    return;
                }
                if lookahead == 0 {
                    if self.byte_available {
                        self.tokens.push(u32::from(self.window[self.index - 1]));
                        self.byte_available = false;
                    }
                    if !self.tokens.is_empty() {
                        self.flush_block(self.index);
                    }
                    return;
                }
            }
            if self.index < self.max_insert {
                let h = (hash4(&self.window[self.index..self.index + 4]) & HASH_MASK) as usize;
                self.chain_head = i64::from(self.head[h]);
                self.prev[self.index & (WINDOW - 1)] = self.chain_head as u32;
                self.head[h] = (self.index as i64 + self.hash_offset) as u32;
            }
            let prev_length = self.length;
            let prev_offset = self.offset;
            self.length = MIN_MATCH - 1;
            self.offset = 0;
            let min_index = self.index.saturating_sub(WINDOW) as i64;
            let candidate = self.chain_head - self.hash_offset;
            let search = if lazy_mode {
                lookahead > prev_length && prev_length < lazy
            } else {
                lookahead > MIN_MATCH - 1
            };
            if candidate >= min_index && search {
                if let Some((len, off)) =
                    self.find_match(self.index, candidate, lookahead, good, nice, chain)
                {
                    self.length = len;
                    self.offset = off;
                }
            }
            let emit = if lazy_mode {
                prev_length >= MIN_MATCH && self.length <= prev_length
            } else {
                self.length >= MIN_MATCH
            };
            if emit {
                if lazy_mode {
                    self.tokens.push(match_token(prev_length, prev_offset));
                } else {
                    self.tokens.push(match_token(self.length, self.offset));
                }
                if self.length <= fast_skip {
                    let new_index = if lazy_mode {
                        self.index + prev_length - 1
                    } else {
                        self.index + self.length
                    };
                    for at in self.index + 1..new_index {
                        if at < self.max_insert {
                            self.insert(at);
                        }
                    }
                    self.index = new_index.max(self.index + 1);
                    if lazy_mode {
                        self.byte_available = false;
                        self.length = MIN_MATCH - 1;
                    }
                } else {
                    self.index += self.length;
                }
                if self.tokens.len() == BLOCK_TOKENS {
                    self.flush_block(self.index);
                }
            } else {
                if !lazy_mode || self.byte_available {
                    let i = if lazy_mode {
                        self.index - 1
                    } else {
                        self.index
                    };
                    self.tokens.push(u32::from(self.window[i]));
                    if self.tokens.len() == BLOCK_TOKENS {
                        self.flush_block(i + 1);
                    }
                }
                self.index += 1;
                if lazy_mode {
                    self.byte_available = true;
                }
            }
        }
    }

    /// The longest match for `pos` along its hash chain from `head` (a window index), as Go
    /// searches: at most `chain` candidates, stopping at `nice`; 4-byte matches only within
    /// 4096 bytes.
    fn find_match(
        &self,
        pos: usize,
        head: i64,
        lookahead: usize,
        good: usize,
        nice: usize,
        chain: usize,
    ) -> Option<(usize, usize)> {
        let max_look = lookahead.min(MAX_MATCH);
        let win = &self.window[..pos + max_look];
        let nice = nice.min(max_look);
        let mut length = MIN_MATCH - 1;
        let mut tries = chain;
        if length >= good {
            tries >>= 2;
        }
        let mut found = None;
        let mut w_end = win[pos + length];
        let min_index = pos as i64 - WINDOW as i64;
        let mut i = head;
        while tries > 0 {
            let at = i as usize;
            if w_end == win[at + length] {
                let n = win[at..at + max_look]
                    .iter()
                    .zip(&win[pos..])
                    .take_while(|(a, b)| a == b)
                    .count();
                if n > length && (n > MIN_MATCH || pos - at <= 4096) {
                    length = n;
                    found = Some((n, pos - at));
                    if n >= nice {
                        break;
                    }
                    w_end = win[pos + n];
                }
            }
            if i == min_index {
                break;
            }
            i = i64::from(self.prev[at & (WINDOW - 1)]) - self.hash_offset;
            if i < min_index || i < 0 {
                break;
            }
            tries -= 1;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOGZ: &str = "/var/tmp/gogz/gogz";

    /// `plain` gzipped by Go's compress/gzip at `level`, or `None` (with a note) when the
    /// helper tool is not built here.
    fn go_gzip(level: i8, plain: &[u8]) -> Option<Vec<u8>> {
        if !std::path::Path::new(GOGZ).exists() {
            eprintln!("skipped: {GOGZ} (Go's compress/gzip as a command) is not built here");
            return None;
        }
        // A file, not a pipe, so Go reads (and writes) whole 32 KiB pieces.
        let dir = std::env::temp_dir().join(format!(
            "imo-goflate-{}-{}",
            std::process::id(),
            std::thread::current()
                .name()
                .unwrap_or("t")
                .replace(':', "_")
        ));
        std::fs::write(&dir, plain).unwrap();
        let out = std::process::Command::new(GOGZ)
            .arg(level.to_string())
            .stdin(std::fs::File::open(&dir).unwrap())
            .output()
            .unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert!(out.status.success());
        Some(out.stdout)
    }

    fn encode(level: i8, plain: &[u8]) -> Vec<u8> {
        let mut d = Deflater::new(level).unwrap();
        let mut out = Vec::new();
        for piece in plain.chunks(WRITE) {
            d.write(piece);
            out.append(d.output());
        }
        d.finish();
        out.append(d.output());
        out
    }

    /// Where `ours` first departs from Go's deflate stream, if it does.
    fn compare(level: i8, plain: &[u8]) -> Option<String> {
        let gz = go_gzip(level, plain)?;
        let go = &gz[10..gz.len() - 8];
        let ours = encode(level, plain);
        if ours == go {
            return None;
        }
        let at = ours.iter().zip(go).take_while(|(a, b)| a == b).count();
        Some(format!(
            "level {level}, {} plain bytes: ours {} B, Go's {} B, first difference at byte {at}",
            plain.len(),
            ours.len(),
            go.len()
        ))
    }

    fn text(n: usize) -> Vec<u8> {
        let words = [
            "layer", "tar", "gzip", "the", "delta", "imo", "registry", "\n", "a",
        ];
        let mut out = Vec::with_capacity(n + 16);
        let mut x = 12345u32;
        while out.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            out.extend_from_slice(words[(x >> 16) as usize % words.len()].as_bytes());
            out.push(if x & 0x100 == 0 { b' ' } else { b',' });
            if x & 0xf000 == 0 {
                out.extend_from_slice(format!("{x}").as_bytes());
            }
        }
        out.truncate(n);
        out
    }

    fn random(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn json_tar() -> Vec<u8> {
        let root = std::path::Path::new("/usr/lib/python3.11/json");
        let mut files: Vec<_> = std::fs::read_dir(root)
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.is_file());
        files.sort();
        let mut out = tar::Builder::new(Vec::new());
        for path in files {
            let body = std::fs::read(&path).unwrap();
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(1_700_000_000);
            let name = path.strip_prefix(root).unwrap();
            out.append_data(&mut header, name, &body[..]).unwrap();
        }
        out.into_inner().unwrap()
    }

    fn inputs() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("empty", Vec::new()),
            ("1 byte", b"x".to_vec()),
            ("short text", b"hello hello hello hello, world\n".to_vec()),
            ("text 10 KiB", text(10 << 10)),
            ("text 100 KiB", text(100 << 10)),
            ("zeros 200 KiB", vec![0; 200 << 10]),
            ("random 100 KiB", random(100 << 10)),
            ("json tar", json_tar()),
            (
                "mixed 300 KiB",
                [
                    text(70 << 10),
                    random(50 << 10),
                    vec![7; 30 << 10],
                    text(150 << 10),
                ]
                .concat(),
            ),
        ]
    }

    #[test]
    fn go_default_level_is_reproduced_byte_for_byte() {
        let mut failed = Vec::new();
        for (name, plain) in inputs() {
            if let Some(why) = compare(6, &plain) {
                failed.push(format!("{name}: {why}"));
            }
        }
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[test]
    fn every_modelled_go_level_is_reproduced_byte_for_byte() {
        let mut failed = Vec::new();
        let big = [
            json_tar(),
            text(1 << 20),
            random(300 << 10),
            vec![0; 1 << 20],
        ]
        .concat();
        for level in [-2, 0, 2, 3, 4, 5, 7, 8, 9] {
            for (name, plain) in inputs().into_iter().chain([("mixed 2.5 MiB", big.clone())]) {
                if let Some(why) = compare(level, &plain) {
                    failed.push(format!("{name}: {why}"));
                }
            }
        }
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[test]
    fn go_default_level_over_megabytes() {
        let big = [
            json_tar(),
            text(3 << 20),
            random(300 << 10),
            vec![0; 5 << 20],
            text(1 << 20),
        ]
        .concat();
        assert_eq!(compare(6, &big), None);
    }
}
