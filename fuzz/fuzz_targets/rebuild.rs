//! The gzip rebuilders (preflate-rs's, and the Go re-encoder by the input's second bit):
//! `Rebuild` over hostile rebuild data and plain text must fail cleanly (no panic, hang or
//! runaway memory), and whatever `analyze` accepts must rebuild to exactly the bytes it read.
#![no_main]

use std::io::Read;

use imo_guest::delta::gzip::{Analysis, RebuildError};
use imo_guest::delta::{goflate, gzip};
use imo_guest::digest::Digest;
use libfuzzer_sys::fuzz_target;

/// Rebuild data this large is far beyond what a fuzz input holds, so it never limits.
const MAX_DATA: u64 = 1 << 30;

/// The reader a rebuilder's `Rebuild::new` gives, with its declared size.
type Rebuilt<'a> = Result<(Box<dyn Read + 'a>, u64), RebuildError>;

fn rebuild<'a>(go: bool, data: &[u8], plain: &'a [u8]) -> Rebuilt<'a> {
    if go {
        let r = goflate::Rebuild::new(data, Box::new(plain))?;
        let len = r.compressed_len();
        Ok((Box::new(r), len))
    } else {
        let r = gzip::Rebuild::new(data, Box::new(plain))?;
        let len = r.compressed_len();
        Ok((Box::new(r), len))
    }
}

fn analyze(go: bool, gz: &[u8], plain: &mut Vec<u8>) -> Result<Analysis, RebuildError> {
    if go {
        goflate::analyze(&mut &gz[..], plain, MAX_DATA)
    } else {
        gzip::analyze(&mut &gz[..], plain, MAX_DATA)
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    // IMO_FUZZ_GO_ONLY=1 fuzzes the Go re-encoder alone: preflate-rs's known aborts on
    // corrupt corrections (README "Security") would otherwise end every run early.
    let go = mode & 2 != 0 || std::env::var_os("IMO_FUZZ_GO_ONLY").is_some();
    if mode & 1 == 0 {
        // Rebuild data, then plain text, split where the next two bytes say.
        let [a, b, rest @ ..] = rest else {
            return;
        };
        let split = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
        let (data, plain) = rest.split_at(split);
        let Ok((mut r, declared)) = rebuild(go, data, plain) else {
            return;
        };
        let mut out = Vec::new();
        if r.read_to_end(&mut out).is_ok() {
            assert_eq!(out.len() as u64, declared, "a rebuild yields its declared size");
        } else {
            assert!(
                (out.len() as u64) < declared,
                "a failed rebuild never yields a whole blob"
            );
        }
    } else {
        let mut plain = Vec::new();
        let Ok(a) = analyze(go, rest, &mut plain) else {
            return;
        };
        assert_eq!(a.compressed_len, rest.len() as u64);
        assert_eq!(a.plain_len, plain.len() as u64);
        let hex: String = a.compressed_sha256.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, Digest::of(rest).hex());
        let (mut r, _) = rebuild(go, &a.data, &plain).expect("analyze's own data");
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("analyze's own data rebuilds");
        assert!(out == rest, "the rebuilt blob is the one analysed");
    }
});
