//! The small subset of tar that OCI archives need, written and read as a stream.
//!
//! imo writes plain ustar entries (regular files, fixed metadata so archives are
//! reproducible) and reads the same, refusing anything it would have to trust blindly:
//! links, devices, paths that escape the archive, bad checksums.

use std::io::{self, Read, Write};

pub const BLOCK: usize = 512;
/// The largest size the 11 octal digits of a ustar size field hold; larger sizes are
/// written in GNU base-256 form, which every tar reader in use understands.
const MAX_OCTAL_SIZE: u64 = 0o77777777777;

/// The 512-byte header of a regular file entry.
pub fn file_header(path: &str, size: u64) -> [u8; BLOCK] {
    assert!(path.len() < 100, "imo only writes short entry names");
    let mut h = [0u8; BLOCK];
    h[..path.len()].copy_from_slice(path.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    if size <= MAX_OCTAL_SIZE {
        octal(&mut h[124..136], size);
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    h
}

/// Zero bytes that follow `size` bytes of data to fill the last block.
pub fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// For entries of `sizes` written one after another from byte `start`: where each one's data
/// begins, and where the archive ends once the end marker follows; `None` if that end is
/// past `u64::MAX` (sizes a registry declared, never wrapped into small offsets).
pub fn data_offsets(start: u64, sizes: &[u64]) -> Option<(Vec<u64>, u64)> {
    const B: u64 = BLOCK as u64;
    let mut at = start;
    let mut offsets = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let data = at.checked_add(B)?;
        offsets.push(data);
        at = data.checked_add(size)?.checked_add(padding(size) as u64)?;
    }
    Some((offsets, at.checked_add(2 * B)?))
}

/// Writes `value` as zero-padded octal, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// One entry's name and size, as read from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub size: u64,
}

/// Reads tar entries in order from a stream, one at a time.
pub struct Reader<R> {
    inner: R,
    /// Data bytes of the current entry not yet read.
    left: u64,
    /// Padding after the current entry's data.
    pad: usize,
    /// Bytes consumed from `inner`, for error messages and summaries.
    pub offset: u64,
    ended: bool,
    /// The current entry's path, for messages about a cut in its data.
    current: String,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            left: 0,
            pad: 0,
            offset: 0,
            ended: false,
            current: String::new(),
        }
    }

    /// Moves to the next regular-file entry, skipping whatever is left of the current one.
    /// Directories are skipped; `None` at the end-of-archive marker.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, String> {
        if self.ended {
            return Ok(None);
        }
        self.skip_rest()?;
        loop {
            let mut h = [0u8; BLOCK];
            let at = self.offset;
            let n = self
                .read_full(&mut h)
                .map_err(|e| format!("reading at byte {at}: {e}"))?;
            if n == 0 && at == 0 {
                return Err("the archive is empty".into());
            }
            // A ustar header is a tar even when its first name starts like a magic number
            // (`BZh…`).
            if at == 0
                && h[257..262] != *b"ustar"
                && let Some(tool) = compressed_with(&h[..n])
            {
                return Err(format!(
                    "the archive is {tool}-compressed, not a tar: decompress it first \
                     ({tool} -dc FILE | imo push - DESTINATION)"
                ));
            }
            if n < BLOCK {
                return Err(format!(
                    "the archive ends inside a header at byte {at}: it is truncated"
                ));
            }
            if h.iter().all(|&b| b == 0) {
                // The end-of-archive marker is two zero blocks; a cut inside the second is
                // as much a truncation as a cut anywhere else.
                let n = self
                    .read_full(&mut h)
                    .map_err(|e| format!("reading at byte {}: {e}", self.offset))?;
                if n < BLOCK {
                    return Err(format!(
                        "the archive ends at byte {} inside its end-of-archive marker (two \
                         zero blocks from byte {at}): it is truncated",
                        self.offset
                    ));
                }
                self.ended = true;
                return Ok(None);
            }
            let entry = parse_header(&h).map_err(|e| format!("entry header at byte {at}: {e}"))?;
            match h[156] {
                b'0' | 0 => {
                    self.current.clone_from(&entry.path);
                    self.left = entry.size;
                    self.pad = padding(entry.size);
                    return Ok(Some(entry));
                }
                b'5' => {
                    if entry.size != 0 {
                        return Err(format!("directory {:?} at byte {at} has data", entry.path));
                    }
                }
                b'1' | b'2' => {
                    return Err(format!(
                        "entry {:?} at byte {at} is a link; imo archives hold only regular files",
                        entry.path
                    ));
                }
                t => {
                    return Err(format!(
                        "entry {:?} at byte {at} has type {:?}; imo archives hold only regular files",
                        entry.path,
                        char::from(t)
                    ));
                }
            }
        }
    }

    /// Whether the end-of-archive marker has been read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Reads the current entry's data; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self
            .inner
            .read(&mut buf[..want])
            .map_err(|e| format!("reading the archive at byte {}: {e}", self.offset))?;
        if n == 0 {
            return Err(format!(
                "the archive ends at byte {} with {} bytes of entry {:?} still to come: it is \
                 truncated",
                self.offset, self.left, self.current
            ));
        }
        self.left -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }

    /// Reads all of the current entry, refusing entries larger than `limit`.
    pub fn read_small(&mut self, entry: &Entry, limit: u64) -> Result<Vec<u8>, String> {
        if entry.size > limit {
            return Err(format!(
                "entry {:?} declares {} bytes, more than the {limit} allowed for it",
                entry.path, entry.size
            ));
        }
        let mut out = vec![0u8; entry.size as usize];
        let mut filled = 0;
        while filled < out.len() {
            filled += self.read_data(&mut out[filled..])?;
        }
        Ok(out)
    }

    /// Consumes the rest of the current entry and its padding without looking at it.
    fn skip_rest(&mut self) -> Result<(), String> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.left > 0 {
            self.read_data(&mut buf)?;
        }
        if self.pad > 0 {
            let pad = self.pad;
            self.pad = 0;
            let n = self
                .read_full(&mut buf[..pad])
                .map_err(|e| format!("reading at byte {}: {e}", self.offset))?;
            if n < pad {
                return Err(format!(
                    "the archive ends at byte {} inside padding: it is truncated",
                    self.offset
                ));
            }
        }
        Ok(())
    }

    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.offset += filled as u64;
        Ok(filled)
    }
}

fn parse_header(h: &[u8; BLOCK]) -> Result<Entry, String> {
    let stored = parse_octal(&h[148..156]).ok_or("its checksum field is not a number")?;
    let sum: u64 = h[..148]
        .iter()
        .chain(&[b' '; 8])
        .chain(&h[156..])
        .map(|&b| u64::from(b))
        .sum();
    if stored != sum {
        return Err(format!(
            "checksum {stored} does not match the computed {sum}: the header is damaged"
        ));
    }
    if &h[257..262] != b"ustar" {
        return Err("it is not a ustar header".into());
    }
    let name = field_str(&h[0..100])?;
    let prefix = field_str(&h[345..500])?;
    let path = if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    };
    let size = if h[124] & 0x80 != 0 {
        if h[124..128].iter().any(|&b| b != 0x80 && b != 0) {
            return Err("its size does not fit in 64 bits".into());
        }
        u64::from_be_bytes(h[128..136].try_into().expect("8 bytes"))
    } else {
        parse_octal(&h[124..136]).ok_or("its size field is not a number")?
    };
    check_path(&path)?;
    Ok(Entry { path, size })
}

/// The compressor whose magic number starts `head`, if any: a compressed archive is a common
/// mistake, and worth naming.
fn compressed_with(head: &[u8]) -> Option<&'static str> {
    [
        (&[0x1f, 0x8b][..], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd][..], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0][..], "xz"),
        (&b"BZh"[..], "bzip2"),
    ]
    .into_iter()
    .find(|(magic, _)| head.starts_with(magic))
    .map(|(_, tool)| tool)
}

fn field_str(field: &[u8]) -> Result<String, String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec()).map_err(|_| "its name is not UTF-8".to_string())
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Entry names must stay inside the archive: relative, no `..`, no empty components.
fn check_path(path: &str) -> Result<(), String> {
    let trimmed = path.strip_prefix("./").unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty()
        || path.starts_with('/')
        || trimmed
            .split('/')
            .any(|c| c.is_empty() || c == ".." || c == ".")
    {
        return Err(format!(
            "path {path:?} is absolute, empty or escapes the archive"
        ));
    }
    Ok(())
}

/// Normalises a path read from an archive (`./a/b` and `a/b` are the same entry).
pub fn normalise(path: &str) -> &str {
    path.strip_prefix("./").unwrap_or(path)
}

/// Writes tar entries to a stream, counting bytes.
pub struct Writer<W> {
    inner: W,
    pub written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, written: 0 }
    }

    /// Writes a complete small entry.
    pub fn file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.header(path, data.len() as u64)?;
        self.data(data)?;
        self.end_entry(data.len() as u64)
    }

    /// Starts an entry whose `size` bytes follow through [`Writer::data`].
    pub fn header(&mut self, path: &str, size: u64) -> io::Result<()> {
        self.data(&file_header(path, size))
    }

    pub fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Pads the entry that had `size` bytes of data to a whole block.
    pub fn end_entry(&mut self, size: u64) -> io::Result<()> {
        self.data(&[0u8; BLOCK][..padding(size)])
    }

    /// Gives back the inner writer and the byte count.
    pub fn into_parts(self) -> (W, u64) {
        (self.inner, self.written)
    }

    /// Writes the end-of-archive marker and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        self.data(&[0u8; 2 * BLOCK])?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_offsets_are_where_the_writer_puts_the_data() {
        let sizes = [0u64, 1, 511, 512, 513, 70_000];
        let mut w = Writer::new(Vec::new());
        w.file("head", b"some head").unwrap();
        let start = w.written;
        let mut seen = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            w.header(&format!("blob{i}"), size).unwrap();
            seen.push(w.written);
            w.data(&vec![7u8; size as usize]).unwrap();
            w.end_entry(size).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(data_offsets(start, &sizes), Some((seen, w.written)));
        assert_eq!(data_offsets(1024, &[]), Some((vec![], 2048)));
    }

    #[test]
    fn data_offsets_past_u64_are_refused_not_wrapped() {
        let big = i64::MAX as u64;
        assert_eq!(data_offsets(1024, &[u64::MAX]), None);
        assert_eq!(data_offsets(1024, &[big, big]), None);
        assert_eq!(data_offsets(u64::MAX - 600, &[0]), None);
        let (offsets, end) = data_offsets(0, &[big - 2048]).unwrap();
        assert_eq!(offsets, [512]);
        assert!(end > big - 2048);
    }

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        for (p, d) in entries {
            w.file(p, d).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(w.written as usize, w.inner.len());
        w.inner
    }

    #[test]
    fn round_trip() {
        let bytes = archive(&[
            ("a", b"hello"),
            ("blobs/sha256/x", &[7u8; 1000]),
            ("empty", b""),
        ]);
        assert_eq!(bytes.len() % BLOCK, 0);
        let mut r = Reader::new(&bytes[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(
            e,
            Entry {
                path: "a".into(),
                size: 5
            }
        );
        assert_eq!(r.read_small(&e, 10).unwrap(), b"hello");
        // The second entry is skipped without being read.
        assert_eq!(r.next_entry().unwrap().unwrap().path, "blobs/sha256/x");
        assert_eq!(r.next_entry().unwrap().unwrap().size, 0);
        assert_eq!(r.next_entry().unwrap(), None);
        assert_eq!(r.next_entry().unwrap(), None);
    }

    #[test]
    fn gnu_tar_reads_what_imo_writes() {
        // An independent reader: the tar crate parses imo's headers, including a huge size.
        let h = file_header("big", 10 << 30);
        let parsed = tar_crate_size(&h);
        assert_eq!(parsed, 10 << 30);
        let h = file_header("small", 12345);
        assert_eq!(tar_crate_size(&h), 12345);
        let mut r = Reader::new(&h[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.size, 12345);
    }

    fn tar_crate_size(h: &[u8; BLOCK]) -> u64 {
        let header = tar::Header::from_byte_slice(h);
        assert_eq!(header.cksum().unwrap(), {
            let mut copy = header.clone();
            copy.set_cksum();
            copy.cksum().unwrap()
        });
        header.size().unwrap()
    }

    #[test]
    fn large_sizes_round_trip_through_base256() {
        let h = file_header("big", 9 << 30);
        let mut r = Reader::new(&h[..]);
        assert_eq!(r.next_entry().unwrap().unwrap().size, 9 << 30);
    }

    #[test]
    fn refuses_damage_and_tricks() {
        let good = archive(&[("a", b"hello")]);
        let err = |bytes: &[u8]| {
            let mut r = Reader::new(bytes);
            loop {
                match r.next_entry() {
                    Err(e) => return e,
                    Ok(None) => panic!("accepted"),
                    Ok(Some(_)) => {}
                }
            }
        };
        assert!(err(b"").contains("empty"));
        assert!(err(&good[..100]).contains("truncated"));
        assert!(err(&good[..515]).contains("truncated"));
        let cut = err(&good[..good.len() - 1]);
        assert!(cut.contains("end-of-archive marker"), "{cut}");
        assert!(err(&[0x1f, 0x8b, 8, 0, 0]).contains("gzip-compressed"));
        assert!(err(&[0x28, 0xb5, 0x2f, 0xfd, 0]).contains("zstd-compressed"));
        let mut bad = good;
        bad[0] = b'b';
        assert!(err(&bad).contains("checksum"));
        assert!(err(&[b'x'; 1024]).contains("checksum field"));
        for (path, flag, expected) in [
            ("../etc/passwd", b'0', "escapes"),
            ("/abs", b'0', "escapes"),
            ("a/./b", b'0', "escapes"),
            ("link", b'2', "is a link"),
            ("hard", b'1', "is a link"),
            ("dev", b'3', "type '3'"),
        ] {
            let mut h = [0u8; BLOCK];
            h[..path.len()].copy_from_slice(path.as_bytes());
            h[156] = flag;
            h[257..263].copy_from_slice(b"ustar\0");
            h[148..156].fill(b' ');
            let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
            octal(&mut h[148..155], u64::from(sum));
            let mut bytes = h.to_vec();
            bytes.extend_from_slice(&[0u8; 1024]);
            let e = err(&bytes);
            assert!(e.contains(expected), "{path}: {e}");
        }
    }

    #[test]
    fn a_first_name_that_starts_like_a_magic_number_is_still_a_tar() {
        // Found by the archive fuzz target: "BZh.json" was taken for a bzip2 stream.
        let bytes = archive(&[("BZh.json", b"{}")]);
        let mut r = Reader::new(&bytes[..]);
        assert_eq!(r.next_entry().unwrap().unwrap().path, "BZh.json");
        assert_eq!(r.next_entry().unwrap(), None);
        let mut bz = b"BZh91AY&SY".to_vec();
        bz.resize(BLOCK, 0);
        let e = Reader::new(&bz[..]).next_entry().unwrap_err();
        assert!(e.contains("bzip2-compressed"), "{e}");
    }

    #[test]
    fn read_small_enforces_its_limit() {
        let bytes = archive(&[("a", &[1u8; 100])]);
        let mut r = Reader::new(&bytes[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert!(
            r.read_small(&e, 99)
                .unwrap_err()
                .contains("more than the 99")
        );
    }
}
