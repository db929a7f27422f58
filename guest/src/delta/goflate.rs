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
//! layer goes whole. (Measured: a 53 MB tar of /usr/lib/python3.11 gzipped by Go in 7-, 333-,
//! 512- and 1000-byte writes, and by `archive/tar` writing straight into the gzip writer as
//! Docker's differ does, gave the same bytes as in 32 KiB writes.)
//!
//! Levels modelled: all of Go's: 1 (its separate "best speed" matcher), 2 to 9 (6 is its
//! default, `-1`), 0 (stored) and -2 (Huffman only).
//!
//! # Rebuild data, version 1
//!
//! All integers little-endian.
//!
//! | bytes | what |
//! | --- | --- |
//! | 8 | magic `IMOGOFL` and the version byte 1 |
//! | 1 | Go's compression level, as a signed byte (-2, 0..9) |
//! | 4 | `header_len`, then the gzip header verbatim (validated as a gzip header) |
//! | 8 | bytes of plain text |
//! | 8 | bytes of the deflate stream |
//! | 8 | the gzip trailer verbatim (CRC32, ISIZE) |
//!
//! Nothing may follow the trailer.

use std::io::{self, Read, Write};

use flate2::{Crc, Decompress, FlushDecompress, Status};
use sha2::{Digest as _, Sha256};

use super::gzip::{
    Analysis, RebuildError, Staged, header_len, read_some, read_staged, trailer_fields, unsupported,
};

/// Names this rebuilder (and its version) in archives.
pub const REBUILDER: &str = "gzip+go-flate/1";

/// The size of the pieces the plain text is written to the encoder in: Go's `io.Copy` buffer.
pub const WRITE: usize = 32 << 10;

/// The levels tried by [`analyze`], Go's default first.
pub const LEVELS: [i8; 11] = [6, 2, 3, 4, 5, 7, 8, 9, 1, 0, -2];

const MAGIC: &[u8; 8] = b"IMOGOFL\x01";

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

/// How many leading bytes `a` and `b` share, 8 at a time.
fn common_len(a: &[u8], b: &[u8]) -> usize {
    let max = a.len().min(b.len());
    let mut n = 0;
    while n + 8 <= max {
        let x = u64::from_le_bytes(a[n..n + 8].try_into().unwrap_or_default());
        let y = u64::from_le_bytes(b[n..n + 8].try_into().unwrap_or_default());
        if x != y {
            return n + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + a[n..max]
        .iter()
        .zip(&b[n..max])
        .take_while(|(x, y)| x == y)
        .count()
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
        // The fixed code has 288 symbols (286 and 287 unused, 8 bits long); the 9-bit codes
        // come after all 152 8-bit ones.
        let mut all_lens = [8u8; 288];
        all_lens[..NUM_LIT].copy_from_slice(&fixed_lit_lens);
        let mut all_codes = [Code::default(); 288];
        canonical(&all_lens, &mut all_codes);
        let mut fixed_lit_codes = [Code::default(); NUM_LIT];
        fixed_lit_codes.copy_from_slice(&all_codes[..NUM_LIT]);
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
            for (f, &e) in self.dist_freq[..num_dist].iter().zip(&DIST_EXTRA).skip(4) {
                extra += i64::from(*f) * i64::from(e);
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

    /// A dynamic block of `tokens`, or stored when that is not more than a sixteenth larger
    /// (Go's level 1).
    fn dynamic_block(&mut self, tokens: &[u32], input: &[u8]) {
        let (num_lit, num_dist) = self.count(tokens);
        self.build_codegen(num_lit, num_dist);
        let (size, num_codegens) = self.dynamic_size(0);
        if input.len() <= 65535 && (input.len() as i64 + 5) * 8 < size + (size >> 4) {
            self.stored(input, false);
            return;
        }
        self.dynamic_header(num_lit, num_dist, num_codegens);
        self.tokens(tokens, false);
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
    /// Go's level 1: a separate single-probe matcher over 64 KiB blocks ([`Fast`]).
    Fast,
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
    fast: Option<Box<Fast>>,
}

impl Deflater {
    /// An encoder for Go level `level` (-2, -1, 0..9); `None` for other numbers.
    pub fn new(level: i8) -> Option<Self> {
        let (mode, window, tables) = match level {
            0 => (Mode::Stored, 65535, false),
            -2 => (Mode::HuffmanOnly, 65535, false),
            1 => (Mode::Fast, 65535, false),
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
            fast: (level == 1).then(|| Box::new(Fast::new())),
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
            Mode::Fast => self.fast_step(),
        }
    }

    fn fast_step(&mut self) {
        let Some(fast) = self.fast.as_mut() else {
            return;
        };
        let end = self.window_end;
        let input = &self.window[..end];
        if end < self.window.len() {
            if !self.sync {
                return;
            }
            // A short last block: no matching at all.
            if end < 128 {
                match end {
                    0 => return,
                    1..=16 => self.w.stored(input, false),
                    _ => self.w.huffman_only(input),
                }
                self.window_end = 0;
                fast.reset();
                return;
            }
        }
        self.tokens.clear();
        fast.encode(&mut self.tokens, input);
        if self.tokens.len() > end - (end >> 4) {
            self.w.huffman_only(input);
        } else {
            self.w.dynamic_block(&self.tokens, input);
        }
        self.tokens.clear();
        self.window_end = 0;
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
            if candidate >= min_index
                && search
                && let Some((len, off)) =
                    self.find_match(self.index, candidate, lookahead, good, nice, chain)
            {
                self.length = len;
                self.offset = off;
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
                let n = common_len(&win[at..at + max_look], &win[pos..]);
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

/// Go's level 1 matcher: one probe per position in a 16K-entry table of (4 bytes, position),
/// a probe stride that grows over incompressible runs, matches reaching into the previous
/// 64 KiB block.
struct Fast {
    table: Vec<(u32, i32)>,
    prev: Vec<u8>,
    cur: i32,
}

const FAST_BITS: u32 = 14;
const FAST_MARGIN: usize = 15;
const FAST_RESET: i32 = i32::MAX - 2 * 65535;

fn fast_hash(u: u32) -> usize {
    (u.wrapping_mul(0x1e35_a7bd) >> (32 - FAST_BITS)) as usize
}

fn load32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl Fast {
    fn new() -> Self {
        Self {
            table: vec![(0, 0); 1 << FAST_BITS],
            prev: Vec::with_capacity(65535),
            cur: 65535,
        }
    }

    fn reset(&mut self) {
        self.prev.clear();
        self.cur += WINDOW as i32;
        if self.cur >= FAST_RESET {
            self.shift();
        }
    }

    /// Rebases the stored positions before they outgrow 31 bits.
    fn shift(&mut self) {
        if self.prev.is_empty() {
            self.table.fill((0, 0));
        } else {
            for e in &mut self.table {
                e.1 = (e.1 - self.cur + WINDOW as i32 + 1).max(0);
            }
        }
        self.cur = WINDOW as i32 + 1;
    }

    /// Tokens for one block `src`, matches possibly reaching into the previous block.
    fn encode(&mut self, dst: &mut Vec<u32>, src: &[u8]) {
        if self.cur >= FAST_RESET {
            self.shift();
        }
        if src.len() < 2 + FAST_MARGIN {
            self.cur += 65535;
            self.prev.clear();
            dst.extend(src.iter().map(|&b| u32::from(b)));
            return;
        }
        let limit = (src.len() - FAST_MARGIN) as i32;
        let mut next_emit = 0i32;
        let mut s = 0i32;
        let mut cv = load32(src, 0);
        let mut next_hash = fast_hash(cv);
        'blocks: loop {
            let mut skip = 32i32;
            let mut next_s = s;
            let mut candidate;
            // Probe until a 4-byte match within reach, striding further the longer it fails.
            loop {
                s = next_s;
                let stride = skip >> 5;
                next_s = s + stride;
                skip += stride;
                if next_s > limit {
                    break 'blocks;
                }
                candidate = self.table[next_hash];
                let now = load32(src, next_s as usize);
                self.table[next_hash] = (cv, s + self.cur);
                next_hash = fast_hash(now);
                let offset = s - (candidate.1 - self.cur);
                if offset > WINDOW as i32 || cv != candidate.0 {
                    cv = now;
                    continue;
                }
                break;
            }
            dst.extend(
                src[next_emit as usize..s as usize]
                    .iter()
                    .map(|&b| u32::from(b)),
            );
            // Matches, back to back, as long as the position after one starts another.
            loop {
                s += 4;
                let t = candidate.1 - self.cur + 4;
                let l = self.match_len(s, t, src);
                dst.push(MATCH | ((l as u32 + 1) << 22) | (s - t - 1) as u32);
                s += l;
                next_emit = s;
                if s >= limit {
                    break 'blocks;
                }
                let at = (s - 1) as usize;
                let mut x = u64::from_le_bytes(src[at..at + 8].try_into().unwrap_or_default());
                self.table[fast_hash(x as u32)] = (x as u32, self.cur + s - 1);
                x >>= 8;
                let h = fast_hash(x as u32);
                candidate = self.table[h];
                self.table[h] = (x as u32, self.cur + s);
                let offset = s - (candidate.1 - self.cur);
                if offset > WINDOW as i32 || x as u32 != candidate.0 {
                    cv = (x >> 8) as u32;
                    next_hash = fast_hash(cv);
                    s += 1;
                    break;
                }
            }
        }
        if (next_emit as usize) < src.len() {
            dst.extend(src[next_emit as usize..].iter().map(|&b| u32::from(b)));
        }
        self.cur += src.len() as i32;
        self.prev.clear();
        self.prev.extend_from_slice(src);
    }

    /// Length of the match at `s` against `t` (negative: in the previous block, running on
    /// into this one), at most 254 (the 4 bytes already matched make 258).
    fn match_len(&self, s: i32, t: i32, src: &[u8]) -> i32 {
        let s = s as usize;
        let end = (s + MAX_MATCH - 4).min(src.len());
        let common = common_len;
        if t >= 0 {
            return common(&src[s..end], &src[t as usize..]) as i32;
        }
        let tp = self.prev.len() as i32 + t;
        if tp < 0 {
            return 0;
        }
        let a = &src[s..end];
        let b = &self.prev[tp as usize..];
        let b = &b[..b.len().min(a.len())];
        let n = common(&a[..b.len()], b);
        if n < b.len() || s + n == end {
            return n as i32;
        }
        (n + common(&src[s + n..end], src)) as i32
    }
}

// ---------------------------------------------------------------------------------------
// Gzip: analysis and rebuild.

/// A level still in the running during [`analyze`]: its output so far matched the blob.
struct Candidate {
    level: i8,
    encoder: Deflater,
    /// Deflate bytes matched so far.
    matched: u64,
}

/// The most deflate bytes [`analyze`] holds that the leading candidate has not yet matched.
/// Go emits a block at most every 16384 tokens (a few hundred KiB compressed at worst) and
/// holds at most 64 KiB of plain text unencoded; a blob further ahead is not Go's.
const MAX_AHEAD: usize = 4 << 20;

/// Deflate bytes after which levels that all still match give way to the first of them.
const SETTLE: u64 = 8 << 20;

/// Reads a whole gzip blob, writes its plain text to `plain` as it goes, and returns the data
/// that rebuilds the blob byte for byte when Go's `compress/gzip` wrote it at a level this
/// module models. Every candidate level re-encodes the plain text as it is decompressed and
/// is dropped at its first byte that differs from the blob: a result is never a guess. The
/// level the header's XFL byte names (9 or 1) is the only one tried; otherwise Go's default
/// first, and when several levels still match after [`SETTLE`] bytes, only the first goes on. `max_data`: fail with [`RebuildError::TooLarge`] if the rebuild data exceeds it.
pub fn analyze(
    gz: &mut dyn Read,
    plain: &mut dyn Write,
    max_data: u64,
) -> Result<Analysis, RebuildError> {
    let mut sha = Sha256::new();
    let mut total = 0u64;
    // Compressed bytes read and not yet matched by every candidate; `base` is the deflate
    // offset of `comp[0]`, `used` how many of them the decompressor consumed.
    let mut comp: Vec<u8> = Vec::with_capacity(1 << 17);
    let mut eof = false;
    let mut read_more = |comp: &mut Vec<u8>, eof: &mut bool| -> Result<(), RebuildError> {
        let old = comp.len();
        let got = (&mut *gz).take(64 << 10).read_to_end(comp)?;
        sha.update(&comp[old..]);
        total += got as u64;
        *eof = got == 0;
        Ok(())
    };
    let header = loop {
        if let Some(n) = header_len(&comp, eof)? {
            break comp[..n].to_vec();
        }
        read_more(&mut comp, &mut eof)?;
    };
    comp.drain(..header.len());
    let levels: Vec<i8> = match header[8] {
        2 => vec![9],
        4 => vec![1],
        _ => LEVELS
            .iter()
            .copied()
            .filter(|&l| l != 9 && l != 1)
            .collect(),
    };
    let mut alive: Vec<Candidate> = levels
        .iter()
        .filter_map(|&level| {
            Some(Candidate {
                level,
                encoder: Deflater::new(level)?,
                matched: 0,
            })
        })
        .collect();
    let not_go = || {
        unsupported(
            "its deflate stream is not what Go's compress/gzip writes at any level imo models",
        )
    };

    let mut inflate = Decompress::new(false);
    let mut base = 0u64;
    let mut used = 0usize;
    let mut piece = vec![0u8; WRITE];
    let mut filled = 0usize;
    let mut crc = Crc::new();
    let mut plain_len = 0u64;
    let mut stalled = false;
    loop {
        if (used == comp.len() || stalled) && !eof {
            read_more(&mut comp, &mut eof)?;
        }
        let had = comp.len() - used;
        let before_in = inflate.total_in();
        let before_out = inflate.total_out();
        let status = inflate
            .decompress(&comp[used..], &mut piece[filled..], FlushDecompress::None)
            .map_err(|e| RebuildError::Damaged(format!("its deflate stream is invalid: {e}")))?;
        used += (inflate.total_in() - before_in) as usize;
        let made = (inflate.total_out() - before_out) as usize;
        filled += made;
        let end = status == Status::StreamEnd;
        // No progress: more input is needed, or the stream is cut short.
        stalled = !end && made == 0 && used == comp.len() - had;
        if stalled && eof {
            return Err(RebuildError::Damaged(
                "it ends inside its deflate stream".into(),
            ));
        }
        if filled == WRITE || (end && filled > 0) {
            let text = &piece[..filled];
            plain.write_all(text)?;
            crc.update(text);
            plain_len += filled as u64;
            for c in &mut alive {
                c.encoder.write(text);
            }
            filled = 0;
        }
        if end {
            for c in &mut alive {
                c.encoder.finish();
            }
        }
        // Compare what each candidate made with the blob.
        // The decompressor and an encoder may each be a few bytes ahead of the other (the
        // end of a block); compare what both have, keep the rest for the next round.
        let known = &comp[..used];
        alive.retain_mut(|c| {
            let out = c.encoder.output();
            let at = (c.matched - base) as usize;
            let n = out.len().min(used - at);
            if known[at..at + n] != out[..n] {
                return false;
            }
            c.matched += n as u64;
            out.drain(..n);
            !end || (out.is_empty() && c.matched == base + used as u64)
        });
        if alive.is_empty() {
            return Err(not_go());
        }
        if alive.len() > 1 && alive.iter().all(|c| c.matched >= SETTLE) {
            // Levels still tied after this much are tied on incompressible text; running
            // them all to the end costs CPU for nothing but a rare rescue, so the first in
            // order (Go's default before the rest) goes on alone.
            alive.truncate(1);
        }
        let low = alive.iter().map(|c| c.matched).min().unwrap_or(base);
        let drop = (low - base) as usize;
        if drop > 0 {
            comp.drain(..drop);
            base = low;
            used -= drop;
        }
        if used > MAX_AHEAD {
            return Err(not_go());
        }
        if end {
            break;
        }
    }
    let deflate_len = inflate.total_in();
    let winner = &alive[0];

    comp.drain(..used);
    while comp.len() < 9 && !eof {
        read_more(&mut comp, &mut eof)?;
    }
    let Some(trailer) = comp.get(..8) else {
        return Err(RebuildError::Damaged(
            "it ends before its 8-byte trailer".into(),
        ));
    };
    let (want_crc, want_size) = trailer_fields(trailer);
    if want_crc != crc.sum() || want_size != crc.amount() {
        return Err(RebuildError::Damaged(format!(
            "its trailer says CRC32 {want_crc:08x} and size {want_size} (mod 2^32), its plain \
             text has {:08x} and {}",
            crc.sum(),
            crc.amount()
        )));
    }
    match comp.get(8..10) {
        None | Some([]) => {}
        Some([0x1f, 0x8b]) => return Err(unsupported("the layer holds several gzip members")),
        Some(_) => return Err(unsupported("the layer has bytes after its gzip trailer")),
    }
    if comp.len() > 8 {
        return Err(unsupported("the layer has bytes after its gzip trailer"));
    }
    let mut data = Vec::with_capacity(64 + header.len());
    data.extend_from_slice(MAGIC);
    data.push(winner.level as u8);
    data.extend_from_slice(&(header.len() as u32).to_le_bytes());
    data.extend_from_slice(&header);
    data.extend_from_slice(&plain_len.to_le_bytes());
    data.extend_from_slice(&deflate_len.to_le_bytes());
    data.extend_from_slice(&comp[..8]);
    if data.len() as u64 > max_data {
        return Err(RebuildError::TooLarge { limit: max_data });
    }
    debug_assert!(Parsed::parse(&data).is_ok());
    Ok(Analysis {
        data,
        plain_len,
        compressed_len: total,
        compressed_sha256: sha.finalize().into(),
    })
}

/// Rebuild data, validated.
#[derive(Debug)]
struct Parsed {
    level: i8,
    header: Vec<u8>,
    plain_len: u64,
    deflate_len: u64,
    trailer: [u8; 8],
}

impl Parsed {
    fn parse(data: &[u8]) -> Result<Self, String> {
        let mut at = 0usize;
        let mut take = |n: usize, what: &str| -> Result<&[u8], String> {
            let end = at
                .checked_add(n)
                .filter(|&end| end <= data.len())
                .ok_or_else(|| format!("it ends inside {what}"))?;
            let r = &data[at..end];
            at = end;
            Ok(r)
        };
        let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        let magic = take(8, "its magic number")?;
        if magic[..7] != MAGIC[..7] {
            return Err("it is not imo Go-gzip rebuild data".into());
        }
        if magic[7] != MAGIC[7] {
            return Err(format!(
                "it is version {} and this imo reads version {}; use a matching imo",
                magic[7], MAGIC[7]
            ));
        }
        let level = take(1, "the level")?[0] as i8;
        if level == -1 || Deflater::new(level).is_none() {
            return Err(format!(
                "it names Go level {level}, which imo does not model"
            ));
        }
        let n = take(4, "the header length")?;
        let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
        let header = take(n, "the gzip header")?.to_vec();
        match header_len(&header, true) {
            Ok(Some(h)) if h == header.len() => {}
            _ => return Err("its gzip header is not a valid gzip header".into()),
        }
        let plain_len = u64_of(take(8, "the plain length")?);
        let deflate_len = u64_of(take(8, "the deflate length")?);
        let trailer: [u8; 8] = take(8, "the gzip trailer")?.try_into().unwrap_or_default();
        if at != data.len() {
            return Err(format!("{} bytes follow its end", data.len() - at));
        }
        if trailer_fields(&trailer).1 != plain_len as u32 {
            return Err("its plain length disagrees with the trailer's size".into());
        }
        // Go's smallest stream is 5 bytes; its largest about 5 bytes per 64 KiB stored block
        // over the plain text, or 2 per byte in Huffman codes.
        if deflate_len < 5 || deflate_len > plain_len.saturating_mul(2).saturating_add(1024) {
            return Err(format!(
                "it claims {deflate_len} deflate bytes for {plain_len} bytes of plain text"
            ));
        }
        Ok(Self {
            level,
            header,
            plain_len,
            deflate_len,
            trailer,
        })
    }
}

#[derive(PartialEq)]
enum Phase {
    Header,
    Body,
    Trailer,
    Done,
    Failed,
}

/// Pull-model rebuilder: reading it yields the exact gzip blob, re-encoded from the plain
/// text at the level the rebuild data names. The plain text is checked as it is read (its
/// length, then its CRC32 and the deflate stream's length against the data); a mismatch fails
/// the read before the trailer is yielded, so the output is never a complete wrong blob.
/// Errors from `read` carry a [`RebuildError`] ([`RebuildError::of_io`]). Memory: one
/// [`Deflater`] (under 1 MiB) and a [`WRITE`]-byte buffer.
pub struct Rebuild<'a> {
    parsed: Parsed,
    plain: Box<dyn Read + 'a>,
    phase: Phase,
    encoder: Deflater,
    piece: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
    crc: Crc,
    read: u64,
    made: u64,
}

impl<'a> Rebuild<'a> {
    /// Validates `data` whole before anything is read from `plain`.
    pub fn new(data: &[u8], plain: Box<dyn Read + 'a>) -> Result<Self, RebuildError> {
        let parsed = Parsed::parse(data).map_err(RebuildError::Corrupt)?;
        let encoder = Deflater::new(parsed.level)
            .ok_or_else(|| RebuildError::Corrupt("it names an unknown level".into()))?;
        Ok(Self {
            parsed,
            plain,
            phase: Phase::Header,
            encoder,
            piece: Vec::with_capacity(WRITE),
            out: Vec::new(),
            out_at: 0,
            crc: Crc::new(),
            read: 0,
            made: 0,
        })
    }

    /// Bytes the rebuilt blob has.
    pub fn compressed_len(&self) -> u64 {
        self.parsed.header.len() as u64 + self.parsed.deflate_len + 8
    }

    /// Bytes of plain text the rebuild reads.
    pub fn plain_len(&self) -> u64 {
        self.parsed.plain_len
    }

    fn advance(&mut self) -> Result<(), RebuildError> {
        self.out.clear();
        self.out_at = 0;
        match self.phase {
            Phase::Header => {
                self.out.extend_from_slice(&self.parsed.header);
                self.phase = Phase::Body;
            }
            Phase::Body => {
                self.piece.clear();
                let want = (self.parsed.plain_len - self.read).min(WRITE as u64);
                let got = self
                    .plain
                    .by_ref()
                    .take(want)
                    .read_to_end(&mut self.piece)? as u64;
                if got < want {
                    return Err(RebuildError::PlainMismatch(format!(
                        "it ends {} bytes early",
                        self.parsed.plain_len - self.read - got
                    )));
                }
                self.read += got;
                self.crc.update(&self.piece);
                self.encoder.write(&self.piece);
                if self.read == self.parsed.plain_len {
                    let mut extra = [0u8; 1];
                    if read_some(&mut self.plain, &mut extra)? > 0 {
                        return Err(RebuildError::PlainMismatch(format!(
                            "it is longer than the {} bytes the layer holds",
                            self.parsed.plain_len
                        )));
                    }
                    let (crc, size) = trailer_fields(&self.parsed.trailer);
                    if crc != self.crc.sum() || size != self.crc.amount() {
                        return Err(RebuildError::PlainMismatch(
                            "its CRC32 disagrees with the gzip trailer".into(),
                        ));
                    }
                    self.encoder.finish();
                    self.phase = Phase::Trailer;
                }
                std::mem::swap(&mut self.out, self.encoder.output());
                self.made += self.out.len() as u64;
                if self.made > self.parsed.deflate_len
                    || (self.phase == Phase::Trailer && self.made != self.parsed.deflate_len)
                {
                    return Err(RebuildError::Corrupt(format!(
                        "the deflate stream rebuilt to {} bytes or more, the data says {}",
                        self.made, self.parsed.deflate_len
                    )));
                }
            }
            Phase::Trailer => {
                self.out.extend_from_slice(&self.parsed.trailer);
                self.phase = Phase::Done;
            }
            Phase::Done | Phase::Failed => {}
        }
        Ok(())
    }
}

impl Staged for Rebuild<'_> {
    fn stage(&mut self) -> Result<(), RebuildError> {
        self.advance()
    }
    fn staged(&mut self) -> (&mut Vec<u8>, &mut usize) {
        (&mut self.out, &mut self.out_at)
    }
    fn ended(&self) -> Option<bool> {
        match self.phase {
            Phase::Done => Some(true),
            Phase::Failed => Some(false),
            _ => None,
        }
    }
    fn fail(&mut self) {
        self.phase = Phase::Failed;
    }
}

impl Read for Rebuild<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_staged(self, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's compress/gzip as a command (`gogz LEVEL < plain > gz`), built once per test run
    /// with the Go toolchain (scripts/setup installs it); `None` without one.
    fn gogz() -> Option<&'static std::path::Path> {
        static TOOL: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
        const MAIN: &str = "package main\n\nimport (\n\t\"bufio\"\n\t\"compress/gzip\"\n\t\"io\"\n\
                            \t\"os\"\n\t\"strconv\"\n)\n\nfunc main() {\n\tlevel, _ := \
                            strconv.Atoi(os.Args[1])\n\tout := bufio.NewWriter(os.Stdout)\n\t\
                            w, err := gzip.NewWriterLevel(out, level)\n\tif err != nil {\n\t\t\
                            panic(err)\n\t}\n\tif _, err := io.Copy(w, os.Stdin); err != nil \
                            {\n\t\tpanic(err)\n\t}\n\tw.Close()\n\tout.Flush()\n}\n";
        TOOL.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("imo-gogz-{}", std::process::id()));
            std::fs::create_dir_all(&dir).ok()?;
            std::fs::write(dir.join("main.go"), MAIN).ok()?;
            let built = std::process::Command::new("go")
                .args(["build", "-o", "gogz", "main.go"])
                .current_dir(&dir)
                .status();
            match built {
                Ok(s) if s.success() => Some(dir.join("gogz")),
                _ => {
                    eprintln!("skipped: no Go toolchain to build Go's compress/gzip with");
                    None
                }
            }
        })
        .as_deref()
    }

    /// `plain` gzipped by Go's compress/gzip at `level`, or `None` (with a note) without Go.
    fn go_gzip(level: i8, plain: &[u8]) -> Option<Vec<u8>> {
        let tool = gogz()?;
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
        let out = std::process::Command::new(tool)
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
            // A fixed-code block with literals of 9-bit codes.
            (
                "fixed block",
                [text(150), random(106), vec![b'z'; 60], random(106)].concat(),
            ),
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
        for level in [-2, 0, 1, 2, 3, 4, 5, 7, 8, 9] {
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

    fn rebuild(data: &[u8], plain: Vec<u8>) -> Result<Vec<u8>, io::Error> {
        let mut r = Rebuild::new(data, Box::new(io::Cursor::new(plain))).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Analyses `gz`, checks the plain text, rebuilds it and checks the bytes; the data.
    fn round_trip(gz: &[u8], plain: &[u8]) -> Analysis {
        let mut written = Vec::new();
        let a = analyze(&mut &gz[..], &mut written, u64::MAX).unwrap();
        assert!(written == plain, "plain text");
        assert_eq!(a.plain_len, plain.len() as u64);
        assert_eq!(a.compressed_len, gz.len() as u64);
        assert_eq!(a.compressed_sha256, <[u8; 32]>::from(Sha256::digest(gz)));
        let r = Rebuild::new(&a.data, Box::new(io::empty())).unwrap();
        assert_eq!(r.compressed_len(), gz.len() as u64);
        assert!(rebuild(&a.data, written).unwrap() == gz, "rebuilt bytes");
        a
    }

    #[test]
    fn go_gzip_blobs_round_trip_at_every_modelled_level() {
        let plain = [json_tar(), text(200 << 10), random(40 << 10)].concat();
        for level in [-1, 6, 1, 2, 4, 5, 7, 8, 9, 0, -2, 3] {
            let Some(gz) = go_gzip(level, &plain) else {
                return;
            };
            let a = round_trip(&gz, &plain);
            let want = if level == -1 { 6 } else { level };
            // Levels may coincide on some text; the one found must rebuild all the same.
            eprintln!(
                "level {level}: found {}, data {} B",
                a.data[8] as i8,
                a.data.len()
            );
            if level != 3 && level != 2 {
                assert_eq!(a.data[8] as i8, want, "level {level}");
            }
        }
        for (name, plain) in inputs() {
            let gz = go_gzip(6, &plain).unwrap();
            eprintln!("{name}");
            round_trip(&gz, &plain);
        }
    }

    #[test]
    fn other_encoders_are_refused() {
        let plain = [json_tar(), text(100 << 10)].concat();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&plain).unwrap();
        let gz = e.finish().unwrap();
        let err = analyze(&mut &gz[..], &mut io::sink(), u64::MAX).unwrap_err();
        assert!(matches!(err, RebuildError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("Go's compress/gzip"), "{err}");
        assert!(matches!(
            analyze(&mut &plain[..], &mut io::sink(), u64::MAX).unwrap_err(),
            RebuildError::NotGzip
        ));
        let Some(gz) = go_gzip(6, &plain) else {
            return;
        };
        for cut in [5, 20, gz.len() / 2, gz.len() - 3] {
            let e = analyze(&mut &gz[..cut], &mut io::sink(), u64::MAX).unwrap_err();
            assert!(matches!(e, RebuildError::Damaged(_)), "cut at {cut}: {e}");
        }
        let mut bad = gz.clone();
        let at = gz.len() - 8;
        bad[at] ^= 1;
        let e = analyze(&mut &bad[..], &mut io::sink(), u64::MAX).unwrap_err();
        assert!(matches!(e, RebuildError::Damaged(_)), "{e}");
        let e = analyze(
            &mut &[&gz[..], &gz[..]].concat()[..],
            &mut io::sink(),
            u64::MAX,
        )
        .unwrap_err();
        assert!(e.to_string().contains("several gzip members"), "{e}");
        // A flipped bit in the middle of the deflate stream: damaged or not Go's, never Ok.
        let mut flipped = gz.clone();
        flipped[gz.len() / 2] ^= 4;
        assert!(analyze(&mut &flipped[..], &mut io::sink(), u64::MAX).is_err());
    }

    #[test]
    fn wrong_plain_text_fails_before_the_trailer() {
        let plain = [json_tar(), text(300 << 10)].concat();
        let Some(gz) = go_gzip(6, &plain) else {
            return;
        };
        let a = round_trip(&gz, &plain);
        let mut altered = plain.clone();
        altered[plain.len() - 1000] ^= 0x20;
        let cases = [
            ("altered", altered),
            ("truncated", plain[..plain.len() - 1].to_vec()),
            ("extended", [&plain[..], b"x"].concat()),
            ("empty", Vec::new()),
        ];
        for (what, wrong) in cases {
            let mut r = Rebuild::new(&a.data, Box::new(io::Cursor::new(wrong))).unwrap();
            let mut out = Vec::new();
            let e = r.read_to_end(&mut out).unwrap_err();
            let e = RebuildError::of_io(&e).unwrap();
            assert!(matches!(e, RebuildError::PlainMismatch(_)), "{what}: {e}");
            assert!(out.len() <= gz.len() - 8, "{what}: no trailer");
        }
    }

    #[test]
    fn corrupt_rebuild_data_is_an_error() {
        let plain = text(100 << 10);
        let Some(gz) = go_gzip(6, &plain) else {
            return;
        };
        let data = round_trip(&gz, &plain).data;
        let corrupt = |d: &[u8]| match Rebuild::new(d, Box::new(io::empty())) {
            Err(RebuildError::Corrupt(why)) => why,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted"),
        };
        assert!(corrupt(b"").contains("ends inside"));
        assert!(corrupt(&data[..data.len() - 1]).contains("ends inside"));
        assert!(corrupt(&[&data[..], &[0]].concat()).contains("follow its end"));
        assert!(corrupt(&[b"IMOGOFL\x02", &data[8..]].concat()).contains("version 2"));
        let mut level = data.clone();
        level[8] = 10;
        assert!(corrupt(&level).contains("level 10"));
        let mut header = data.clone();
        header[14] = 0x8c;
        assert!(corrupt(&header).contains("gzip header"));
        // A wrong deflate length passes the checks up front, fails at the end of the text.
        let at = data.len() - 16;
        let mut len = data;
        len[at] ^= 1;
        let e = rebuild(&len, plain).unwrap_err();
        assert!(
            matches!(RebuildError::of_io(&e), Some(RebuildError::Corrupt(_))),
            "{e}"
        );
    }

    /// Analyses and rebuilds real blobs, in release:
    /// `IMO_GOFLATE_BENCH=a.gz,b.gz cargo test --release -p imo-guest --lib
    /// goflate::tests::measure -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; needs IMO_GOFLATE_BENCH"]
    fn measure() {
        let paths = std::env::var("IMO_GOFLATE_BENCH").expect("IMO_GOFLATE_BENCH=blob.gz,...");
        for path in paths.split(',') {
            let gz = std::fs::read(path).unwrap();
            let start = std::time::Instant::now();
            let mut plain = Vec::new();
            let a = match analyze(&mut &gz[..], &mut plain, u64::MAX) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("{path}: {e}");
                    continue;
                }
            };
            let analysed = start.elapsed().as_secs_f64();
            let start = std::time::Instant::now();
            let mut r = Rebuild::new(&a.data, Box::new(&plain[..])).unwrap();
            let mut sha = Sha256::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
            }
            let rebuilt = start.elapsed().as_secs_f64();
            assert_eq!(<[u8; 32]>::from(sha.finalize()), a.compressed_sha256);
            let mb = plain.len() as f64 / 1e6;
            eprintln!(
                "{path}: level {}, blob {} B, plain {} B, rebuild data {} B; analyze {:.1} MB/s, \
                 rebuild+sha256 {:.1} MB/s of plain",
                a.data[8] as i8,
                gz.len(),
                plain.len(),
                a.data.len(),
                mb / analysed,
                mb / rebuilt
            );
        }
    }

    /// A reader that hands out a few bytes at a time.
    struct Trickle<'b>(&'b [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn named_headers_and_tiny_reads_round_trip() {
        let plain = [json_tar(), text(80 << 10)].concat();
        let Some(gz) = go_gzip(6, &plain) else {
            return;
        };
        // What Go writes with Name, Comment and Extra set: the same stream after a longer
        // header.
        let mut named = gz[..10].to_vec();
        named[3] = 4 | 8 | 16;
        named.extend_from_slice(&[3, 0, 1, 2, 3]);
        named.extend_from_slice(b"layer.tar\0made by a test\0");
        named.extend_from_slice(&gz[10..]);
        let a = round_trip(&named, &plain);
        assert_eq!(a.data[8], 6);
        let mut written = Vec::new();
        let a = analyze(&mut Trickle(&named), &mut written, u64::MAX).unwrap();
        assert!(written == plain);
        let mut out = Vec::new();
        Rebuild::new(&a.data, Box::new(Trickle(&plain)))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == named);
    }

    /// Without Go at hand: every level's output inflates back to its input, over sizes and
    /// mixtures that cross blocks, window slides and the short-input paths.
    #[test]
    fn every_level_inflates_back() {
        let mut seed = 7u64;
        let mut cases = vec![Vec::new(), vec![1], vec![0; 17], text(127), text(128)];
        for n in [300, 5000, 70_000, 200_000] {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let r = random(n / 3 + (seed >> 60) as usize);
            cases.push([text(n / 2), r.clone(), vec![b'z'; n / 5], r].concat());
        }
        for level in [-2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9] {
            for plain in &cases {
                let stream = encode(level, plain);
                let mut back = Vec::new();
                flate2::read::DeflateDecoder::new(&stream[..])
                    .read_to_end(&mut back)
                    .unwrap();
                assert!(
                    back == *plain,
                    "level {level}, {} bytes, {:?}",
                    plain.len(),
                    compare(level, plain)
                );
            }
        }
    }

    /// Many small mixtures (text, noise, runs, repeats at near and far distances) at every
    /// level against Go: the rare paths (fixed blocks, short tails, 4-byte matches beyond
    /// 4096) show up here. `cargo test -p imo-guest --lib goflate::tests::many_small -- --ignored`.
    #[test]
    #[ignore = "spawns Go a few hundred times"]
    fn many_small_mixtures_match_go() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let mut failed = Vec::new();
        let cases = std::env::var("IMO_GOFLATE_CASES").map_or(60, |n| n.parse().unwrap());
        for case in 0..cases {
            let mut plain = Vec::new();
            let target = [100, 1000, 5000, 40_000, 100_000][case % 5];
            while plain.len() < target {
                match next(5) {
                    0 => plain.extend(text(next(3000) as usize + 1)),
                    1 => plain.extend(
                        random(next(2000) as usize + 1)
                            .iter()
                            .map(|b| b ^ case as u8),
                    ),
                    2 => plain.extend(std::iter::repeat_n(next(256) as u8, next(600) as usize + 1)),
                    _ if !plain.is_empty() => {
                        let from = next(plain.len() as u64) as usize;
                        let len = (next(300) as usize + 4).min(plain.len() - from);
                        let piece = plain[from..from + len].to_vec();
                        plain.extend(piece);
                    }
                    _ => {}
                }
            }
            for level in [-2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9] {
                if let Some(why) = compare(level, &plain) {
                    failed.push(format!("case {case}: {why}"));
                }
            }
        }
        assert!(failed.is_empty(), "{failed:#?}");
    }
}
