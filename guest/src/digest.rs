//! Content digests: parsing, and verification of bytes as they stream past.

use sha2::{Digest as _, Sha256};
use std::fmt;

/// A validated `sha256:<64 lowercase hex>` digest. Other algorithms are refused: every
/// registry imo targets uses sha256, and a digest imo cannot verify is worse than none.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates a digest string.
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some(hex) = s.strip_prefix("sha256:") else {
            return Err(format!("digest {s:?} is not of the form sha256:<hex>"));
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "digest {s:?} must have 64 lowercase hexadecimal digits after sha256:"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest of what `hasher` has been fed.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self::from_sha256(hasher.finalize().into())
    }

    /// The digest whose SHA-256 is `sum`.
    pub fn from_sha256(sum: [u8; 32]) -> Self {
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in sum.iter() {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, as used for file names in an OCI layout (`blobs/sha256/<hex>`).
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What went wrong when streamed bytes were checked against a descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// More bytes arrived than the descriptor declares.
    TooLong { expected: u64 },
    /// The stream ended before the declared size.
    TooShort { expected: u64, found: u64 },
    /// The size matched but the content did not.
    Digest { expected: Digest, found: Digest },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::TooLong { expected } => {
                write!(f, "more than the {expected} bytes declared")
            }
            Mismatch::TooShort { expected, found } => {
                write!(f, "{found} bytes where {expected} were declared")
            }
            Mismatch::Digest { expected, found } => {
                write!(f, "content hashes to {found}, expected {expected}")
            }
        }
    }
}

/// Hashes bytes as they pass and checks them against an expected digest and size.
///
/// Feeding more than the declared size fails at once, so a lying server cannot make imo
/// stream without bound.
pub struct Verifier {
    hasher: Sha256,
    expected: Digest,
    size: u64,
    seen: u64,
}

impl Verifier {
    pub fn new(expected: &Digest, size: u64) -> Self {
        Self {
            hasher: Sha256::new(),
            expected: expected.clone(),
            size,
            seen: 0,
        }
    }

    /// Adds a chunk. Fails if the total would exceed the declared size.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), Mismatch> {
        let len = chunk.len() as u64;
        if self.seen + len > self.size {
            return Err(Mismatch::TooLong {
                expected: self.size,
            });
        }
        self.seen += len;
        self.hasher.update(chunk);
        Ok(())
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.size - self.seen
    }

    /// Checks size and digest once the stream has ended.
    pub fn finish(self) -> Result<(), Mismatch> {
        if self.seen != self.size {
            return Err(Mismatch::TooShort {
                expected: self.size,
                found: self.seen,
            });
        }
        let found = Digest::from_hasher(self.hasher);
        if found != self.expected {
            return Err(Mismatch::Digest {
                expected: self.expected,
                found,
            });
        }
        Ok(())
    }
}

/// A pull-style reader that verifies what it hands out: it reads from `read`, hashes and
/// counts the bytes, and before handing out the bytes that complete the declared size checks
/// that the source ends there and that the digest matches, returning the mismatch instead. So
/// a wrong blob never goes out whole: a request carrying it fails before its last byte, an
/// archive entry is left short. A source that ends early fails too. It never asks `read` for
/// more than the declared size, plus one byte to find the end.
pub struct Verifying<F, M> {
    read: F,
    mismatch: M,
    state: State,
}

enum State {
    Reading(Verifier),
    /// Every byte handed out, and verified.
    Done,
    Failed(Mismatch),
}

impl<E, F, M> Verifying<F, M>
where
    F: FnMut(&mut [u8]) -> Result<usize, E>,
    M: Fn(Mismatch) -> E,
{
    pub fn new(expected: &Digest, size: u64, read: F, mismatch: M) -> Self {
        Self {
            read,
            mismatch,
            state: State::Reading(Verifier::new(expected, size)),
        }
    }

    /// Reads into `buf`; 0 only at the verified end (or for an empty `buf`). After a mismatch,
    /// every read fails with it again.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, E> {
        let v = match &mut self.state {
            State::Reading(v) => v,
            State::Done => return Ok(0),
            State::Failed(m) => return Err((self.mismatch)(m.clone())),
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let (size, remaining) = (v.size, v.remaining());
        let n = if remaining == 0 {
            0
        } else {
            let want = buf
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            (self.read)(&mut buf[..want])?
        };
        if let Err(m) = v.update(&buf[..n]) {
            return Err(self.fail(m));
        }
        if n > 0 && v.remaining() > 0 {
            return Ok(n);
        }
        // These bytes complete the blob (or it is empty): the source must end here. Otherwise
        // it ended early, which `finish` reports.
        if (n > 0 || remaining == 0) && (self.read)(&mut [0u8; 1])? > 0 {
            return Err(self.fail(Mismatch::TooLong { expected: size }));
        }
        let State::Reading(v) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("checked above")
        };
        match v.finish() {
            Ok(()) => Ok(n),
            Err(m) => Err(self.fail(m)),
        }
    }

    fn fail(&mut self, m: Mismatch) -> E {
        self.state = State::Failed(m.clone());
        (self.mismatch)(m)
    }
}

impl<F, M> std::io::Read for Verifying<F, M>
where
    F: FnMut(&mut [u8]) -> std::io::Result<usize>,
    M: Fn(Mismatch) -> std::io::Error,
{
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Verifying::read(self, buf)
    }
}

/// `r`, verified as it streams by [`Verifying`]: a mismatch is an `InvalidData` error that
/// names `what`.
pub fn verified_reader<'a>(
    mut r: impl std::io::Read + 'a,
    expected: &Digest,
    size: u64,
    what: String,
) -> impl std::io::Read + 'a {
    let mismatch = move |m: Mismatch| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {m}"))
    };
    Verifying::new(expected, size, move |b: &mut [u8]| r.read(b), mismatch)
}

/// Copies the bytes `read` yields to `sink`, verifying them against `expected` and `size`
/// through [`Verifying`]: the last chunk reaches the sink only once the whole has matched, so
/// a wrong blob never arrives complete (an upload is aborted, an archive entry left short).
/// `read` returns 0 at the end; one more read must find nothing, or the blob is longer than
/// declared.
pub fn copy_verified<E>(
    expected: &Digest,
    size: u64,
    buf: &mut [u8],
    read: &mut dyn FnMut(&mut [u8]) -> Result<usize, E>,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    mismatch: &dyn Fn(Mismatch) -> E,
) -> Result<(), E> {
    let mut source = Verifying::new(expected, size, read, mismatch);
    loop {
        let n = source.read(buf)?;
        if n == 0 {
            return Ok(());
        }
        sink(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(Digest::of(b"").as_str(), EMPTY);
        assert_eq!(Digest::parse(EMPTY).unwrap().hex().len(), 64);
    }

    #[test]
    fn parse_rejects_other_forms() {
        for bad in [
            "",
            "sha256:",
            "sha512:e3b0",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn verifier_accepts_exact_content_in_chunks() {
        let d = Digest::of(b"hello world");
        let mut v = Verifier::new(&d, 11);
        v.update(b"hello").unwrap();
        assert_eq!(v.remaining(), 6);
        v.update(b" world").unwrap();
        v.finish().unwrap();
    }

    #[test]
    fn copy_verified_holds_back_the_last_chunk_of_a_wrong_blob() {
        let copy = |data: &[u8], size: u64| {
            let mut src = data;
            let mut out = Vec::new();
            let r = copy_verified(
                &Digest::of(b"hello world"),
                size,
                &mut [0u8; 4],
                &mut |b: &mut [u8]| std::io::Read::read(&mut src, b).map_err(|e| e.to_string()),
                &mut |c: &[u8]| {
                    out.extend_from_slice(c);
                    Ok(())
                },
                &|m| m.to_string(),
            );
            (r, out)
        };
        assert_eq!(copy(b"hello world", 11), (Ok(()), b"hello world".to_vec()));
        let (r, out) = copy(b"hello worlD", 11);
        assert!(r.unwrap_err().contains("hashes to"));
        assert_eq!(out, b"hello wo", "the last chunk is withheld");
        assert!(
            copy(b"hello world!", 11)
                .0
                .unwrap_err()
                .contains("more than")
        );
        assert!(
            copy(b"hello", 11)
                .0
                .unwrap_err()
                .contains("5 bytes where 11")
        );
    }

    /// Pulls everything a `Verifying` over `data` hands out, `chunk` bytes at a time: what it
    /// handed out, and how it ended.
    fn pull(
        data: &[u8],
        digest_of: &[u8],
        size: u64,
        chunk: usize,
    ) -> (Vec<u8>, Result<(), String>) {
        let mut src = data;
        let mut read = |b: &mut [u8]| std::io::Read::read(&mut src, b).map_err(|e| e.to_string());
        let mismatch = |m: Mismatch| m.to_string();
        let mut v = Verifying::new(&Digest::of(digest_of), size, &mut read, &mismatch);
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            match v.read(&mut buf) {
                Ok(0) => {
                    // The end is sticky.
                    assert_eq!(v.read(&mut buf), Ok(0));
                    return (out, Ok(()));
                }
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    // So is a mismatch.
                    assert_eq!(v.read(&mut buf), Err(e.clone()));
                    return (out, Err(e));
                }
            }
        }
    }

    #[test]
    fn verifying_hands_out_a_blob_only_once_it_checks_out() {
        let hw = b"hello world";
        for chunk in [1, 4, 11, 64] {
            assert_eq!(pull(hw, hw, 11, chunk), (hw.to_vec(), Ok(())), "{chunk}");
        }
        // A wrong last byte: the chunk that would complete it is withheld.
        let (out, r) = pull(b"hello worlD", hw, 11, 4);
        assert_eq!(out, b"hello wo");
        assert!(r.unwrap_err().contains("hashes to"));
        let (out, r) = pull(b"hello worlD", hw, 11, 64);
        assert!(
            out.is_empty(),
            "one read would complete it: nothing handed out"
        );
        assert!(r.is_err());
        // Too long: the extra byte is found before the completing bytes go out, and no more
        // than one byte past the declared size is read.
        let (out, r) = pull(b"hello world!!!", hw, 11, 64);
        assert!(out.is_empty());
        assert_eq!(r.unwrap_err(), "more than the 11 bytes declared");
        // Too short.
        let (out, r) = pull(b"hello", hw, 11, 4);
        assert_eq!(out, b"hello");
        assert_eq!(r.unwrap_err(), "5 bytes where 11 were declared");
        // An empty blob, and an empty blob that is not.
        assert_eq!(pull(b"", b"", 0, 4), (vec![], Ok(())));
        assert!(
            pull(b"x", b"", 0, 4)
                .1
                .unwrap_err()
                .contains("more than the 0")
        );
    }

    #[test]
    fn verifying_reads_no_further_than_the_declared_size() {
        // The source runs on past the blob: only one byte beyond is asked for, to find that
        // it does not end, and the verified bytes are withheld.
        let mut asked = 0;
        let mut read = |b: &mut [u8]| -> Result<usize, String> {
            asked += b.len();
            b.fill(b'a');
            Ok(b.len())
        };
        let mismatch = |m: Mismatch| m.to_string();
        let aaa = Digest::of(b"aaa");
        let mut v = Verifying::new(&aaa, 3, &mut read, &mismatch);
        let mut buf = [0u8; 100];
        assert_eq!(
            v.read(&mut buf).unwrap_err(),
            "more than the 3 bytes declared"
        );
        assert_eq!(asked, 4);
        // An empty buffer hands out nothing and changes nothing.
        let mut src = &b"aaa"[..];
        let mut read = |b: &mut [u8]| std::io::Read::read(&mut src, b).map_err(|e| e.to_string());
        let mut v = Verifying::new(&aaa, 3, &mut read, &mismatch);
        assert_eq!(v.read(&mut []), Ok(0));
        assert_eq!(v.read(&mut buf), Ok(3));
        assert_eq!(v.read(&mut buf), Ok(0));
    }

    #[test]
    fn verifier_reports_each_kind_of_mismatch() {
        let d = Digest::of(b"hello");
        let mut v = Verifier::new(&d, 5);
        assert_eq!(v.update(b"hello!"), Err(Mismatch::TooLong { expected: 5 }));

        let mut v = Verifier::new(&d, 5);
        v.update(b"hel").unwrap();
        assert_eq!(
            v.finish(),
            Err(Mismatch::TooShort {
                expected: 5,
                found: 3
            })
        );

        let mut v = Verifier::new(&d, 5);
        v.update(b"jello").unwrap();
        assert!(
            matches!(v.finish(), Err(Mismatch::Digest { found, .. }) if found == Digest::of(b"jello"))
        );
    }
}
