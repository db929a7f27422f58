//! The tar delta: op streams as archives carry them (hostile input to the applier), and tars
//! as layers are (input to the source index and the differ).
#![no_main]

use std::io::{Cursor, Read, Write};
use std::sync::OnceLock;

use imo_guest::delta::tar_delta::{Apply, DeltaError, Differ, MAGIC, SourceIndex};
use imo_guest::tar;
use libfuzzer_sys::fuzz_target;

/// The most output read from one op stream: copies and literals a small input can name add up
/// to far more, and that proves nothing more.
const MAX_OUT: u64 = 8 << 20;

/// Two small source tars, as the destination would hold them.
fn sources() -> &'static [Vec<u8>; 2] {
    static SOURCES: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    SOURCES.get_or_init(|| {
        let tar_of = |files: &[(&str, Vec<u8>)]| {
            let mut out = Vec::new();
            for (path, data) in files {
                out.extend_from_slice(&tar::file_header(path, data.len() as u64));
                out.extend_from_slice(data);
                out.resize(out.len() + tar::padding(data.len() as u64), 0);
            }
            out.resize(out.len() + 1024, 0);
            out
        };
        let text = |n: usize, seed: u8| -> Vec<u8> {
            (0..n)
                .map(|i| b"abcdefgh\n"[(i * 7 + usize::from(seed)) % 9])
                .collect()
        };
        [
            tar_of(&[
                ("a", text(5000, 1)),
                ("b", text(100, 2)),
                ("empty", Vec::new()),
            ]),
            tar_of(&[("c", text(9000, 3)), ("b", text(100, 2))]),
        ]
    })
}

/// Applies `ops` over `srcs`; the target, or the error, or `None` if it ran past `MAX_OUT`.
fn apply(ops: &[u8], srcs: &[&[u8]]) -> Option<Result<Vec<u8>, DeltaError>> {
    let owned: Vec<Vec<u8>> = srcs.iter().map(|s| s.to_vec()).collect();
    let mut opened = vec![false; owned.len()];
    let mut a = Apply::new(
        Box::new(Cursor::new(ops.to_vec())),
        owned.len() as u16,
        Box::new(move |s| {
            let s = usize::from(s);
            assert!(!opened[s], "source {s} opened twice");
            opened[s] = true;
            Ok(Box::new(Cursor::new(owned[s].clone())) as Box<dyn Read>)
        }),
    );
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match a.read(&mut buf) {
            Ok(0) => return Some(Ok(out)),
            Ok(n) => {
                assert!(n <= buf.len());
                out.extend_from_slice(&buf[..n]);
                if out.len() as u64 > MAX_OUT {
                    return None;
                }
            }
            Err(e) => {
                let e = DeltaError::from_io(e);
                // Nothing here fails to read, so every refusal is the delta's own.
                assert!(!matches!(e, DeltaError::Io(_)), "{e}");
                assert!(!e.to_string().is_empty());
                // A failed applier stays failed.
                assert!(a.read(&mut buf).is_err());
                return Some(Err(e));
            }
        }
    }
}

/// Raw deflate of `body` in stored blocks, so the fuzzer edits ops directly.
fn stored(body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let mut chunks = body.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        let len = c.len() as u16;
        out.push(u8::from(chunks.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// Diffs `target` against `srcs` (written in pieces of `piece` bytes) and checks the ops apply
/// back to exactly `target`.
fn round_trip(index: &SourceIndex, srcs: &[&[u8]], target: &[u8], piece: usize) {
    let mut d = Differ::new(index, u64::MAX);
    for chunk in target.chunks(piece.max(1)) {
        d.write_all(chunk).expect("the differ takes any bytes");
    }
    let e = d.finish().expect("the differ takes any bytes");
    assert_eq!(e.target_len, target.len() as u64);
    assert_eq!(e.copied + e.literal, e.target_len);
    match apply(&e.ops, srcs) {
        Some(Ok(got)) => assert!(got == target, "the delta does not apply back to its target"),
        Some(Err(err)) => panic!("the differ's own ops were refused: {err}"),
        None => assert!(target.len() as u64 > MAX_OUT),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixed = sources();
    let srcs = [fixed[0].as_slice(), fixed[1].as_slice()];
    match mode % 4 {
        // The input is an op stream.
        0 => {
            apply(rest, &srcs);
        }
        // The input is the ops inside the compression.
        1 => {
            apply(&stored(rest), &srcs);
        }
        // The input is a source tar: when it indexes, deltas against it apply exactly.
        2 => {
            let mut index = SourceIndex::new();
            if index.add(0, &mut Cursor::new(rest)).is_ok() {
                round_trip(&index, &[rest], rest, 4096);
                round_trip(&index, &[rest], &fixed[1], 1000);
            }
        }
        // The input is a target tar: its delta against the fixed sources applies exactly.
        _ => {
            let mut index = SourceIndex::new();
            for (i, s) in srcs.iter().enumerate() {
                index
                    .add(i as u16, &mut Cursor::new(s))
                    .expect("the fixed sources index");
            }
            let piece = usize::from(mode / 4) * 97 + 1;
            round_trip(&index, &srcs, rest, piece);
        }
    }
});
