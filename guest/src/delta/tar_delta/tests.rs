use std::io::{Cursor, Read, Write};

use super::*;

/// A small deterministic generator (no rand dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Text-like content: compressible, as most layer files are.
    fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&str; 8] = [
            "import ", "def ", "return ", "self", ".value", "(x)", "\n    ", " = ",
        ];
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(WORDS[(self.next() % 8) as usize].as_bytes());
            out.extend_from_slice(format!("{}", self.next() % 1000).as_bytes());
        }
        out.truncate(n);
        out
    }
}

struct File {
    path: String,
    data: Vec<u8>,
    mtime: u64,
}

fn file(path: &str, data: Vec<u8>) -> File {
    File {
        path: path.into(),
        data,
        mtime: 1_700_000_000,
    }
}

fn tar_of(files: &[File]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(f.data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(f.mtime);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, &f.path, &f.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// 200 files of 1 to 40 KiB in a few directories.
fn files(seed: u64) -> Vec<File> {
    let mut rng = Rng(seed);
    (0..200)
        .map(|i| {
            let len = 1 + (rng.next() % 40_000) as usize;
            file(
                &format!("usr/lib/python3/pkg{}/mod{i}.py", i % 7),
                rng.text(len),
            )
        })
        .collect()
}

fn index_of(sources: &[&[u8]]) -> SourceIndex {
    let mut index = SourceIndex::new();
    for (i, s) in sources.iter().enumerate() {
        index.add(i as u16, &mut Cursor::new(s)).unwrap();
    }
    index
}

/// Diffs `target` against `sources`, feeding it in pieces of `piece` bytes.
fn diff_in(sources: &[&[u8]], target: &[u8], piece: usize) -> Encoded {
    let index = index_of(sources);
    let mut d = Differ::new(&index, u64::MAX);
    for chunk in target.chunks(piece) {
        d.write_all(chunk).unwrap();
    }
    d.finish().unwrap()
}

fn diff(sources: &[&[u8]], target: &[u8]) -> Encoded {
    diff_in(sources, target, 7919)
}

fn apply(sources: &[&[u8]], ops: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let owned: Vec<Vec<u8>> = sources.iter().map(|s| s.to_vec()).collect();
    let n = owned.len() as u16;
    let mut a = Apply::new(
        Box::new(Cursor::new(ops.to_vec())),
        n,
        Box::new(
            move |s| Ok(Box::new(Cursor::new(owned[usize::from(s)].clone())) as Box<dyn Read>),
        ),
    );
    let mut out = Vec::new();
    a.read_to_end(&mut out).map_err(DeltaError::from_io)?;
    Ok(out)
}

/// Diffs and applies, checks the round trip is exact, and returns the delta.
fn round_trip(sources: &[&[u8]], target: &[u8]) -> Encoded {
    let e = diff(sources, target);
    assert_eq!(e.target_len, target.len() as u64);
    assert_eq!(e.copied + e.literal, target.len() as u64);
    let got = apply(sources, &e.ops).unwrap();
    assert!(got == target, "the applied delta differs from the target");
    e
}

#[test]
fn identical_layers_give_a_tiny_delta() {
    let base = tar_of(&files(1));
    let e = round_trip(&[&base], &base);
    assert!(
        e.ops.len() * 100 < base.len() / 100,
        "{} of {}",
        e.ops.len(),
        base.len()
    );
    assert_eq!(
        e.literal, 1024,
        "only the end-of-archive marker goes literal"
    );
    assert_eq!(e.sources_used, vec![0]);
    // Read in pieces of any size, it is the same delta.
    assert_eq!(diff_in(&[&base], &base, 1).ops, e.ops);
}

#[test]
fn three_changed_files_cost_a_few_blocks() {
    let base = files(2);
    let mut new = files(2);
    for i in [20, 100, 150] {
        let d = &mut new[i].data;
        let mid = d.len() / 2;
        d[mid..mid + 10].copy_from_slice(b"CHANGED!!!");
    }
    let (base, new) = (tar_of(&base), tar_of(&new));
    let e = round_trip(&[&base], &new);
    assert!(e.literal <= 3 * 4096 + 1024, "{} literal", e.literal);
    assert!(
        e.ops.len() < base.len() / 500,
        "{} bytes of ops",
        e.ops.len()
    );
}

#[test]
fn bytes_inserted_and_removed_inside_a_file_cost_about_themselves() {
    let data = Rng(14).text(100_000);
    let mut changed = data.clone();
    changed.splice(70_000..70_050, []);
    changed.splice(30_000..30_000, *b"# a line inserted into the file\n");
    let base = tar_of(&[file("big.py", data), file("after", Rng(15).text(5000))]);
    let target = tar_of(&[file("big.py", changed), file("after", Rng(15).text(5000))]);
    let e = round_trip(&[&base], &target);
    // Two blocks around the changes, the changed header and the end marker; the rest,
    // the last partial block too, is found by the rolling search.
    assert!(
        e.literal <= 2 * 4096 + 2 * 512 + 1024,
        "{} literal",
        e.literal
    );
    // A block moved within a file is found too, if it stays ahead of the last copy.
    let mut data = Rng(16).text(40_000);
    let base = tar_of(&[file("f", data.clone())]);
    data.rotate_left(20_000);
    let target = tar_of(&[file("f", data)]);
    let e = round_trip(&[&base], &target);
    assert!(e.copied >= 16_000, "{} copied", e.copied);
}

#[test]
fn repeated_blocks_are_found_after_a_shift() {
    // Every block of the source is alike: the search walks one chain of them, in order.
    let zeros = vec![0u8; 400 * 1024];
    let mut shifted = vec![b'x'];
    shifted.extend_from_slice(&zeros);
    let base = tar_of(&[file("z", zeros.clone())]);
    let target = tar_of(&[file("z", shifted)]);
    let e = round_trip(&[&base], &target);
    assert!(e.copied >= zeros.len() as u64, "{} copied", e.copied);
    // A byte inserted after two blocks: the blocks alike behind the copies so far are passed
    // over, the next ones copied.
    let mut inserted = zeros.clone();
    inserted.insert(8192, b'x');
    let target = tar_of(&[file("z", inserted)]);
    let e = round_trip(&[&base], &target);
    assert!(e.copied >= zeros.len() as u64, "{} copied", e.copied);
}

#[test]
fn the_rolling_checksum_rolls() {
    let data = Rng(17).bytes(BLOCK + 300);
    let mut w = Weak::of(&data[..BLOCK]);
    for p in 0..300 {
        w.roll(data[p], data[p + BLOCK]);
        assert!(w == Weak::of(&data[p + 1..p + 1 + BLOCK]), "at {p}");
    }
}

#[test]
fn added_and_removed_files_round_trip() {
    let base = files(3);
    let mut new = files(3);
    new.remove(50);
    new.remove(120);
    new.insert(80, file("usr/share/new.txt", Rng(9).text(30_000)));
    let (base, new) = (tar_of(&base), tar_of(&new));
    let e = round_trip(&[&base], &new);
    assert!(
        e.literal < 30_000 + 2 * 1024 + 4096,
        "{} literal",
        e.literal
    );
}

#[test]
fn a_renamed_file_is_copied_by_content() {
    let mut base = files(4);
    base[10].data.truncate(3000);
    assert!(base[30].data.len() > 3 * 4096);
    let mut new = files(4);
    new[10].data.truncate(3000);
    new[10].path = "elsewhere/small.py".into();
    new[30].path = "elsewhere/big.py".into();
    let (base, new) = (tar_of(&base), tar_of(&new));
    let e = round_trip(&[&base], &new);
    // Headers of the moved files, their padding and the end marker, but no data.
    assert!(
        e.literal <= 2 * 512 + 2 * 512 + 1024,
        "{} literal",
        e.literal
    );
}

#[test]
fn new_mtimes_make_headers_literal_and_data_copied() {
    let base = files(5);
    let mut new = files(5);
    for f in &mut new {
        f.mtime += 3600;
    }
    let (base, new) = (tar_of(&base), tar_of(&new));
    let e = round_trip(&[&base], &new);
    // Each header and each padding (after data copied, but the copy ended and a literal
    // header follows, so the zero padding is copied along) is all that goes literal.
    assert!(e.literal <= 200 * 512 + 1024, "{} literal", e.literal);
    assert!(e.copied >= new.len() as u64 - 200 * 1024 - 1024);
}

#[test]
fn reordered_entries_still_round_trip() {
    let base = files(6);
    let mut new = files(6);
    new.reverse();
    let (base, new) = (tar_of(&base), tar_of(&new));
    let e = round_trip(&[&base], &new);
    // Copies only go forward in a source: after the first (the last in the base) the rest is
    // behind the cursor and goes literal.
    assert!(e.copied > 0 && e.literal > new.len() as u64 / 2);
}

#[test]
fn two_sources_are_both_used() {
    let all = files(7);
    let (a, b) = all.split_at(100);
    let a = tar_of(a);
    let b = tar_of(b);
    let target = tar_of(&files(7));
    let e = round_trip(&[&a, &b], &target);
    assert_eq!(e.sources_used, vec![0, 1]);
    assert!(e.literal <= 1024, "{} literal", e.literal);
}

#[test]
fn random_data_round_trips_without_saving() {
    let mut rng = Rng(8);
    let base = tar_of(&[file("a", rng.bytes(100_000))]);
    let target = tar_of(&[file("a", rng.bytes(100_000))]);
    let e = round_trip(&[&base], &target);
    assert!(e.copied <= 512, "only the header may be copied");
    // Bytes that are no tar at all round-trip too, as literal.
    let noise = rng.bytes(10_000);
    let e = round_trip(&[&base], &noise);
    assert_eq!(e.literal, noise.len() as u64);
}

#[test]
fn a_pax_long_path_is_matched() {
    let long = format!("usr/{}/file.py", "deep/".repeat(40));
    let data = Rng(10).text(50_000);
    let build = |data: &[u8]| {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // A PAX header with the path, as Docker and BuildKit write long names.
        let mut pax = Vec::new();
        let rec = format!(" path={long}\n");
        let mut len = rec.len() + 1;
        len += format!("{len}").len() - 1;
        pax.extend_from_slice(format!("{len}{rec}").as_bytes());
        let mut ph = tar::Header::new_ustar();
        ph.set_entry_type(tar::EntryType::XHeader);
        ph.set_size(pax.len() as u64);
        ph.set_path("PaxHeaders/x").unwrap();
        ph.set_cksum();
        b.append(&ph, &pax[..]).unwrap();
        h.set_path("short-name").unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
        b.into_inner().unwrap()
    };
    let base = build(&data);
    let mut data2 = data;
    data2[40_000] ^= 1;
    let target = build(&data2);
    let index = index_of(&[&base]);
    assert!(
        index.with_path(long.as_bytes()).next().is_some(),
        "indexed by its PAX path"
    );
    let e = round_trip(&[&base], &target);
    assert!(e.literal <= 4096 + 1024, "{} literal", e.literal);
    // The tar crate reads it back with the long path.
    let mut ar = tar::Archive::new(&target[..]);
    let entry = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.path().unwrap().to_str().unwrap(), long);
}

#[test]
fn a_gnu_long_name_is_matched() {
    let long = format!("usr/{}/file.py", "deep/".repeat(40));
    let data = Rng(11).text(20_000);
    let base = tar_of(&[file(&long, data.clone())]);
    let mut data2 = data;
    data2[0] ^= 1;
    let target = tar_of(&[file(&long, data2)]);
    let e = round_trip(&[&base], &target);
    assert!(e.literal <= 4096 + 1024, "{} literal", e.literal);
}

#[test]
fn the_limit_stops_the_differ() {
    let mut rng = Rng(12);
    let base = tar_of(&[file("a", rng.bytes(1000))]);
    let target = tar_of(&[file("a", rng.bytes(200_000))]);
    let index = index_of(&[&base]);
    let mut d = Differ::new(&index, 10_000);
    let err = d
        .write_all(&target)
        .map_err(DeltaError::from_io)
        .unwrap_err();
    assert!(matches!(err, DeltaError::TooLarge(_)), "{err}");
    assert!(matches!(d.finish(), Err(DeltaError::TooLarge(_))));
}

#[test]
fn damaged_or_truncated_sources_are_refused() {
    let base = tar_of(&files(13)[..5]);
    let mut index = SourceIndex::new();
    let cut = &base[..base.len() - 700];
    let err = index.add(0, &mut Cursor::new(cut)).unwrap_err();
    assert!(matches!(err, DeltaError::Source { source: 0, .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    let mut bad = base.clone();
    bad[600] ^= 0x10; // inside the first entry's data: fine
    bad[100] ^= 0x01; // the first header's mode: its checksum no longer matches
    let err = SourceIndex::new()
        .add(3, &mut Cursor::new(&bad))
        .unwrap_err();
    assert!(matches!(err, DeltaError::Source { source: 3, .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    // A failed source leaves the index as it was: the others still serve, exactly.
    let other = tar_of(&files(13)[5..]);
    let mut index = SourceIndex::new();
    index.add(0, &mut Cursor::new(&other)).unwrap();
    let entries = index.entries();
    assert!(index.add(1, &mut Cursor::new(cut)).is_err());
    assert_eq!(index.entries(), entries);
    let err = index.add(0, &mut Cursor::new(&other)).unwrap_err();
    assert!(err.to_string().contains("indexed twice"), "{err}");
    let third = tar_of(&[file("third", Rng(1).text(100))]);
    index.add(2, &mut Cursor::new(&third)).unwrap();
    let target = tar_of(&files(13));
    let mut d = Differ::new(&index, u64::MAX);
    d.write_all(&target).unwrap();
    let e = d.finish().unwrap();
    assert_eq!(apply(&[&other, b"", &third], &e.ops).unwrap(), target);
    assert_eq!(e.sources_used, vec![0]);
}

// Hostile op streams: each is refused with its own message, never a panic.

/// Encodes ops by hand: the magic, then raw deflate of `body`.
fn ops_of(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(MAGIC.to_vec(), flate2::Compression::fast());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

fn end_of(target: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut op = vec![OP_END];
    put_varint(&mut op, target.len() as u64);
    op.extend_from_slice(&sha2::Sha256::digest(target));
    op
}

fn copy_op(source: u64, offset: u64, len: u64) -> Vec<u8> {
    let mut op = vec![OP_COPY];
    put_varint(&mut op, source);
    put_varint(&mut op, offset);
    put_varint(&mut op, len);
    op
}

fn lit_op(bytes: &[u8]) -> Vec<u8> {
    let mut op = vec![OP_LITERAL];
    put_varint(&mut op, bytes.len() as u64);
    op.extend_from_slice(bytes);
    op
}

fn refused(sources: &[&[u8]], ops: &[u8]) -> String {
    match apply(sources, ops) {
        Ok(_) => panic!("a hostile op stream was applied"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hand_made_ops_apply() {
    let src = b"0123456789abcdef".as_slice();
    let mut body = copy_op(0, 2, 3);
    body.extend(lit_op(b"xy"));
    body.extend(copy_op(0, 10, 2));
    body.extend(end_of(b"234xyab"));
    assert_eq!(apply(&[src], &ops_of(&body)).unwrap(), b"234xyab");
}

#[test]
fn hostile_ops_are_refused() {
    let src = b"0123456789abcdef".as_slice();
    let with_end = |mut body: Vec<u8>, target: &[u8]| {
        body.extend(end_of(target));
        ops_of(&body)
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"IMOTARX\x01".to_vec(),
            "does not start as an imo tar delta",
        ),
        (b"IMOTARD\x07".to_vec(), "version 7"),
        (ops_of(&[0x09]), "unknown op 0x09"),
        (
            with_end(copy_op(1, 0, 1), b"0"),
            "names source 1, and it has only 1",
        ),
        (with_end(copy_op(70_000, 0, 1), b"0"), "names source 70000"),
        (
            with_end([copy_op(0, 5, 2), copy_op(0, 3, 1)].concat(), b"563"),
            "goes back to byte 3 after byte 7",
        ),
        (
            with_end(copy_op(0, 10, 10), b"abcdef"),
            "ends at byte 16, 4 bytes before the end",
        ),
        (
            with_end(copy_op(0, 20, 1), b"x"),
            "before byte 20 a copy starts at",
        ),
        (with_end(copy_op(0, u64::MAX, 2), b"x"), "length overflows"),
        (with_end(copy_op(0, 0, 0), b""), "a copy is empty"),
        (with_end(lit_op(&[]), b""), "a literal of 0 bytes"),
        (
            ops_of(&[OP_LITERAL, 0x81, 0x80, 0x80, 0x01]),
            "a literal of 2097153 bytes",
        ),
        (
            ops_of(&[
                OP_COPY, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ]),
            "overflows 64 bits",
        ),
        (ops_of(&lit_op(b"abc")[..3]), "ends inside a literal"),
        (ops_of(&lit_op(b"abc")), "ends without its END op"),
        (ops_of(&end_of(b"")[..10]), "ends inside its END op"),
        (ops_of(&[OP_COPY, 0x00, 0x80]), "ends inside an op"),
        (
            {
                let mut body = lit_op(b"abc");
                let mut end = end_of(b"abc");
                end[1] = 4;
                body.extend(end);
                ops_of(&body)
            },
            "made 3 bytes of layer where it promised 4",
        ),
        (
            with_end(lit_op(b"abc"), b"abd"),
            "does not have the SHA-256",
        ),
        (
            [with_end(lit_op(b"abc"), b"abc"), b"junk".to_vec()].concat(),
            "bytes follow its compressed ops",
        ),
        (
            ops_of(&[lit_op(b"abc"), end_of(b"abc"), lit_op(b"d")].concat()),
            "ops follow its END op",
        ),
        (
            [MAGIC.as_slice(), &[0xff; 40]].concat(),
            "compressed ops are damaged",
        ),
    ];
    for (ops, want) in cases {
        let got = refused(&[src], &ops);
        assert!(got.contains(want), "expected {want:?} in {got:?}");
    }
}

#[test]
fn a_cut_or_unreadable_op_stream_is_refused() {
    let base = tar_of(&files(18)[..20]);
    let e = diff(&[&base], &base);
    for cut in [1, 5, e.ops.len() - 9] {
        let err = apply(&[&base], &e.ops[..e.ops.len() - cut]).unwrap_err();
        assert!(matches!(err, DeltaError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("truncated"), "cut {cut}: {err}");
    }
    // The reader's own failure is an I/O error, not a corrupt delta.
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("connection reset"))
        }
    }
    let ops = [&e.ops[..20], &[0u8; 0]].concat();
    let mut a = Apply::new(
        Box::new(Cursor::new(ops).chain(Failing)),
        1,
        Box::new(|_| Ok(Box::new(Cursor::new(Vec::new())) as Box<dyn Read>)),
    );
    let err = DeltaError::from_io(a.read_to_end(&mut Vec::new()).unwrap_err());
    assert!(matches!(err, DeltaError::Io(_)), "{err}");
    assert!(err.to_string().contains("connection reset"), "{err}");
}

#[test]
fn sources_are_opened_once_lazily_and_read_to_their_end() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let opened = Rc::new(RefCell::new(Vec::new()));
    let read = Rc::new(RefCell::new(0usize));
    let src: &'static [u8] = b"0123456789abcdef";
    let mut body = copy_op(1, 1, 2);
    body.extend(copy_op(1, 5, 1));
    body.extend(end_of(b"125"));
    let ops = ops_of(&body);
    struct Counting(Cursor<&'static [u8]>, Rc<RefCell<usize>>);
    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            *self.1.borrow_mut() += n;
            Ok(n)
        }
    }
    let (o, r) = (opened.clone(), read.clone());
    let mut a = Apply::new(
        Box::new(Cursor::new(ops)),
        3,
        Box::new(move |s| {
            o.borrow_mut().push(s);
            Ok(Box::new(Counting(Cursor::new(src), r.clone())) as Box<dyn Read>)
        }),
    );
    let mut out = Vec::new();
    a.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"125");
    assert_eq!(*opened.borrow(), vec![1]);
    assert_eq!(*read.borrow(), src.len(), "the source was read to its end");
    // A source that cannot be opened names itself.
    let mut body = copy_op(0, 0, 1);
    body.extend(end_of(b"0"));
    let mut a = Apply::new(
        Box::new(Cursor::new(ops_of(&body))),
        1,
        Box::new(|_| Err(std::io::Error::other("no such layer"))),
    );
    let err = DeltaError::from_io(a.read_to_end(&mut Vec::new()).unwrap_err());
    assert!(matches!(err, DeltaError::Source { source: 0, .. }), "{err}");
    assert!(err.to_string().contains("no such layer"), "{err}");
}
