//! A push-model tar scanner: fed a tar in pieces of any size, it tells a [`Sink`] about each
//! entry's header bytes (with PAX and GNU long-name extensions), data, padding, and the tail
//! from the end-of-archive marker on. Shared by the index (strict: a damaged tar is an error)
//! and the differ (lenient: whatever does not parse is passed on as tail, so it goes literal).

use super::{DeltaError, MAX_EXTENSION};

const TB: usize = 512;

/// An entry's header group: every block from its first extension header to its data.
pub(crate) struct Header {
    /// The effective path; `None` for a PAX global header, which belongs to no entry.
    pub path: Option<Vec<u8>>,
    /// Where the group starts in the tar.
    pub offset: u64,
    /// The data bytes that follow.
    pub size: u64,
}

pub(crate) trait Sink {
    /// A complete header group, `bytes` being all of it.
    fn header(&mut self, h: &Header, bytes: &[u8]) -> Result<(), DeltaError>;
    /// Data of the current entry, in pieces.
    fn data(&mut self, bytes: &[u8]) -> Result<(), DeltaError>;
    /// The current entry's data is over (called after each header, even with no data).
    fn data_end(&mut self) -> Result<(), DeltaError>;
    /// The padding after the data, whole (1 to 511 bytes).
    fn padding(&mut self, bytes: &[u8]) -> Result<(), DeltaError>;
    /// Bytes from the end-of-archive marker on (or, lenient, from where parsing stopped).
    fn tail(&mut self, bytes: &[u8]) -> Result<(), DeltaError>;
}

enum State {
    /// Filling the next header block.
    Header,
    /// Reading an extension header's data and padding into the group.
    Ext {
        left: u64,
        start: usize,
        len: usize,
        kind: u8,
    },
    Data {
        left: u64,
    },
    Pad {
        left: usize,
    },
    Tail,
}

pub(crate) struct Scanner {
    strict: bool,
    /// Bytes consumed.
    pos: u64,
    state: State,
    block: [u8; TB],
    fill: usize,
    /// The header group so far (complete blocks and extension data).
    group: Vec<u8>,
    group_start: u64,
    path: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
    pad: Vec<u8>,
    pad_len: usize,
    /// Zero bytes at the start of the tail, up to 1024 (the end-of-archive marker).
    tail_zeros: u64,
    tail_nonzero: bool,
}

/// Why a header was refused: a damaged tar (an error when strict, the tail when lenient), or
/// the sink's own error, which always stops the scan.
enum Stop {
    Bad(String),
    Sink(DeltaError),
}

impl From<DeltaError> for Stop {
    fn from(e: DeltaError) -> Self {
        Stop::Sink(e)
    }
}

fn bad(why: String) -> Stop {
    Stop::Bad(why)
}

impl Scanner {
    pub fn new(strict: bool) -> Self {
        Scanner {
            strict,
            pos: 0,
            state: State::Header,
            block: [0; TB],
            fill: 0,
            group: Vec::new(),
            group_start: 0,
            path: None,
            pax_path: None,
            pax_size: None,
            pad: Vec::new(),
            pad_len: 0,
            tail_zeros: 0,
            tail_nonzero: false,
        }
    }

    pub fn feed(&mut self, mut data: &[u8], sink: &mut dyn Sink) -> Result<(), DeltaError> {
        while !data.is_empty() {
            let n = match &mut self.state {
                State::Header => {
                    let n = (TB - self.fill).min(data.len());
                    self.block[self.fill..self.fill + n].copy_from_slice(&data[..n]);
                    self.fill += n;
                    self.pos += n as u64;
                    if self.fill == TB {
                        self.fill = 0;
                        match self.header_block(sink) {
                            Ok(()) => {}
                            Err(Stop::Bad(why)) => self.go_tail(why, false, sink)?,
                            Err(Stop::Sink(e)) => return Err(e),
                        }
                    }
                    n
                }
                State::Ext { left, .. } => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                    *left -= n as u64;
                    let done = *left == 0;
                    self.group.extend_from_slice(&data[..n]);
                    self.pos += n as u64;
                    if done {
                        match self.ext_done(sink) {
                            Ok(()) => {}
                            Err(Stop::Bad(why)) => self.go_tail(why, false, sink)?,
                            Err(Stop::Sink(e)) => return Err(e),
                        }
                    }
                    n
                }
                State::Data { left } => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                    *left -= n as u64;
                    let done = *left == 0;
                    self.pos += n as u64;
                    sink.data(&data[..n])?;
                    if done {
                        sink.data_end()?;
                        self.after_data();
                    }
                    n
                }
                State::Pad { left } => {
                    let n = (*left).min(data.len());
                    *left -= n;
                    let done = *left == 0;
                    self.pad.extend_from_slice(&data[..n]);
                    self.pos += n as u64;
                    if done {
                        sink.padding(&self.pad)?;
                        self.pad.clear();
                        self.state = State::Header;
                    }
                    n
                }
                State::Tail => {
                    self.tail(data, sink)?;
                    data.len()
                }
            };
            data = &data[n..];
        }
        Ok(())
    }

    /// The tar has ended: strict, it must have ended with its end-of-archive marker; lenient,
    /// whatever was held back goes to the tail.
    pub fn finish(&mut self, sink: &mut dyn Sink) -> Result<(), DeltaError> {
        if self.strict {
            if matches!(self.state, State::Tail) && self.tail_zeros >= 2 * TB as u64 {
                return Ok(());
            }
            return Err(self.corrupt(format!(
                "it ends at byte {} without the end-of-archive marker: it is truncated",
                self.pos
            )));
        }
        match self.state {
            State::Tail => Ok(()),
            State::Data { .. } => {
                sink.data_end()?;
                Ok(())
            }
            State::Pad { .. } => {
                let pad = std::mem::take(&mut self.pad);
                sink.tail(&pad)
            }
            State::Header | State::Ext { .. } => {
                self.go_tail(String::new(), self.fill > 0, sink)?;
                Ok(())
            }
        }
    }

    fn corrupt(&self, why: String) -> DeltaError {
        // The index names the source; this message says what is wrong with it.
        DeltaError::Corrupt(format!("not a tar the delta can read: {why}"))
    }

    /// Lenient: hands what was held back (the group, and with `partial` the partial block) to
    /// the tail and passes everything after it there too. Strict: the error.
    fn go_tail(
        &mut self,
        why: String,
        partial: bool,
        sink: &mut dyn Sink,
    ) -> Result<(), DeltaError> {
        if self.strict {
            return Err(self.corrupt(why));
        }
        let group = std::mem::take(&mut self.group);
        let block = self.block;
        self.state = State::Tail;
        self.tail_nonzero = true;
        sink.tail(&group)?;
        if partial {
            sink.tail(&block[..self.fill])?;
        }
        self.fill = 0;
        Ok(())
    }

    fn tail(&mut self, bytes: &[u8], sink: &mut dyn Sink) -> Result<(), DeltaError> {
        if !self.tail_nonzero {
            let zeros = bytes.iter().take_while(|&&b| b == 0).count();
            self.tail_zeros += zeros as u64;
            self.tail_nonzero = zeros < bytes.len();
        }
        self.pos += bytes.len() as u64;
        sink.tail(bytes)
    }

    fn after_data(&mut self) {
        self.state = if self.pad_len > 0 {
            State::Pad { left: self.pad_len }
        } else {
            State::Header
        };
    }

    /// A complete header block is in `self.block`.
    fn header_block(&mut self, sink: &mut dyn Sink) -> Result<(), Stop> {
        let at = self.pos - TB as u64;
        if self.group.is_empty() {
            if self.block.iter().all(|&b| b == 0) {
                self.state = State::Tail;
                let block = self.block;
                // The block was counted in `pos` already.
                self.pos -= TB as u64;
                self.tail(&block, sink)?;
                return Ok(());
            }
            self.group_start = at;
        }
        // From here on the block is part of the group, which goes to the tail whole if refused.
        self.group.extend_from_slice(&self.block);
        let h = &self.block;
        if h.iter().all(|&b| b == 0) {
            return Err(bad(format!(
                "an extension header is followed by the end-of-archive marker at byte {at}"
            )));
        }
        let stored = octal(&h[148..156])
            .ok_or_else(|| bad(format!("the header at byte {at} has no checksum")))?;
        let sum = |f: fn(u8) -> i64| -> i64 {
            h[..148]
                .iter()
                .chain(&[b' '; 8])
                .chain(&h[156..])
                .map(|&b| f(b))
                .sum()
        };
        let unsigned = sum(i64::from);
        let signed = sum(|b| i64::from(b as i8));
        if i64::try_from(stored).ok() != Some(unsigned)
            && i64::try_from(stored).ok() != Some(signed)
        {
            return Err(bad(format!("the header at byte {at} has a wrong checksum")));
        }
        let size = size(&h[124..136])
            .ok_or_else(|| bad(format!("the header at byte {at} has a bad size")))?;
        let kind = h[156];
        match kind {
            b'x' | b'X' | b'g' | b'L' | b'K' => {
                if size > MAX_EXTENSION {
                    return Err(bad(format!(
                        "the extension header at byte {at} has {size} bytes, more than the \
                         {MAX_EXTENSION} read"
                    )));
                }
                let start = self.group.len();
                let left = size + padding(size) as u64;
                self.state = State::Ext {
                    left,
                    start,
                    len: size as usize,
                    kind,
                };
                if left == 0 {
                    return self.ext_done(sink);
                }
                Ok(())
            }
            _ => {
                let path = match (self.pax_path.take(), self.path.take()) {
                    (Some(p), _) | (None, Some(p)) => p,
                    (None, None) => {
                        let name = cstr(&h[..100]);
                        let prefix = cstr(&h[345..500]);
                        if &h[257..263] == b"ustar\0" && !prefix.is_empty() {
                            let mut p = prefix.to_vec();
                            p.push(b'/');
                            p.extend_from_slice(name);
                            p
                        } else {
                            name.to_vec()
                        }
                    }
                };
                let size = self.pax_size.take().unwrap_or(size);
                // Links, devices, directories and FIFOs carry no data whatever their size field
                // says (as Go's archive/tar and Python's tarfile read them).
                let size = if (b'1'..=b'6').contains(&kind) {
                    0
                } else {
                    size
                };
                self.emit(Some(path), size, sink)
            }
        }
    }

    fn emit(&mut self, path: Option<Vec<u8>>, size: u64, sink: &mut dyn Sink) -> Result<(), Stop> {
        let h = Header {
            path,
            offset: self.group_start,
            size,
        };
        let group = std::mem::take(&mut self.group);
        let r = sink.header(&h, &group);
        self.group = group;
        self.group.clear();
        r?;
        self.pad_len = padding(size);
        if size > 0 {
            self.state = State::Data { left: size };
        } else {
            sink.data_end()?;
            self.after_data();
        }
        Ok(())
    }

    /// An extension header's data is complete.
    fn ext_done(&mut self, sink: &mut dyn Sink) -> Result<(), Stop> {
        let State::Ext {
            start, len, kind, ..
        } = self.state
        else {
            unreachable!("called in the Ext state")
        };
        let data = &self.group[start..start + len];
        self.state = State::Header;
        match kind {
            b'L' => self.path = Some(cstr(data).to_vec()),
            b'K' => {}
            b'x' | b'X' => {
                let (path, size) =
                    pax(data).ok_or_else(|| bad("a PAX header is malformed".into()))?;
                if path.is_some() {
                    self.pax_path = path;
                }
                if size.is_some() {
                    self.pax_size = size;
                }
            }
            _ => {
                // A global header stands alone: it belongs to no entry.
                return self.emit(None, 0, sink);
            }
        }
        Ok(())
    }
}

/// Zero bytes after `size` bytes of data, to the next 512-byte boundary.
pub(crate) fn padding(size: u64) -> usize {
    ((TB as u64 - size % TB as u64) % TB as u64) as usize
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// A size field: octal, or GNU base-256 (high bit of the first byte set).
fn size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 == 0 {
        return octal(field);
    }
    if field[0] != 0x80 || field[1..4].iter().any(|&b| b != 0) {
        return None;
    }
    Some(u64::from_be_bytes(field[4..12].try_into().ok()?))
}

/// The `path` and `size` records of a PAX extended header; `None` if it is malformed.
fn pax(mut data: &[u8]) -> Option<(Option<Vec<u8>>, Option<u64>)> {
    let (mut path, mut size) = (None, None);
    while !data.is_empty() {
        // Some writers pad the records with NULs.
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let sp = data.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..sp]).ok()?.parse().ok()?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return None;
        }
        let record = &data[sp + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=')?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => path = Some(value.to_vec()),
            b"size" => size = Some(std::str::from_utf8(value).ok()?.parse().ok()?),
            _ => {}
        }
        data = &data[len..];
    }
    Some((path, size))
}
