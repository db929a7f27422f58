//! The archive reader: `archive::open` over the bytes, then every blob read to its end; and
//! the tar reader alone over the same bytes. Neither may panic, loop or allocate without
//! bound, whatever the archive holds.
//!
//! Inputs are whole tar archives (the corpus holds real imo archives). A custom mutator keeps
//! most mutants readable past the tar layer: it recomputes header checksums, and edits one
//! entry at a time (its bytes, one node of its JSON, or its place in the archive) before
//! writing the archive anew, sometimes renaming a changed blob to its new digest everywhere
//! it is referenced, so that changed manifests still verify.
#![no_main]

use imo_guest::digest::Digest;
use imo_guest::manifest::Manifest;
use imo_guest::{archive, tar};
use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    walk_archive(data);
    walk_tar(data);
});

fn walk_archive(data: &[u8]) {
    let Ok(mut o) = archive::open(data) else {
        return;
    };
    assert!(!o.meta.manifests.is_empty());
    assert_eq!(o.manifests.len(), o.meta.manifests.len());
    for (m, d) in o.manifests.iter().zip(&o.meta.manifests) {
        assert_eq!(&m.descriptor, d);
        assert_eq!(Digest::of(&m.bytes), d.digest);
    }
    // What push and vet do with the metadata of an archive that opened.
    assert!(!o.meta.images.is_empty());
    for image in &o.meta.images {
        assert_eq!(o.meta.top(image).digest, image.manifest);
    }
    // (An empty base reference is read as given: its description may be empty.)
    let _ = o.meta.base_description();
    let index = archive::index_json(&o.meta);
    let index = Manifest::parse(&index, None).expect("imo reads the index.json it writes");
    let pointed: Vec<&Digest> = index.children().iter().map(|d| &d.digest).collect();
    let named: Vec<&Digest> = o.meta.images.iter().map(|i| &i.manifest).collect();
    assert_eq!(pointed, named);
    let mut buf = [0u8; 509];
    let mut seen = 0;
    loop {
        match o.next_blob() {
            Ok(Some(d)) => {
                seen += 1;
                assert!(seen <= o.meta.blobs.len(), "more blobs than imo.json lists");
                let mut total = 0u64;
                loop {
                    match o.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                assert_eq!(total, d.size);
            }
            Ok(None) => {
                assert_eq!(seen, o.meta.blobs.len(), "a listed blob was never seen");
                break;
            }
            Err(_) => return,
        }
        assert!(o.offset() <= data.len() as u64);
    }
    assert!(matches!(o.next_blob(), Ok(None)));
}

fn walk_tar(data: &[u8]) {
    let mut r = tar::Reader::new(data);
    let mut buf = [0u8; 700];
    for i in 0.. {
        let e = match r.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => {
                assert_eq!(r.next_entry(), Ok(None));
                return;
            }
            Err(_) => return,
        };
        assert!(!tar::normalise(&e.path).is_empty());
        assert!(r.offset <= data.len() as u64);
        // What imo writes, it reads back as written.
        if e.path.len() < 100 {
            let h = tar::file_header(&e.path, e.size);
            let mut again = tar::Reader::new(&h[..]);
            assert_eq!(again.next_entry(), Ok(Some(e.clone())));
        }
        match i % 3 {
            0 => {} // skipped by the next call
            1 => {
                let mut total = 0;
                loop {
                    match r.read_data(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                assert_eq!(total, e.size);
            }
            _ => match r.read_small(&e, 4096) {
                Ok(v) => assert_eq!(v.len() as u64, e.size),
                Err(_) => return,
            },
        }
    }
}

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    // Half the time edit one entry; otherwise mutate the bytes, and mostly give the headers
    // correct checksums afterwards (the rest test the checksum check itself).
    let mode = seed % 8;
    if mode < 4
        && let Some(n) = mutate_entries(data, size, max_size, seed / 8)
    {
        return n;
    }
    let n = fuzzer_mutate(data, size, max_size);
    if mode != 7 {
        fix_checksums(&mut data[..n]);
    }
    n
});

/// Gives every header the tar reader would reach its correct checksum.
fn fix_checksums(buf: &mut [u8]) {
    let mut at = 0usize;
    while let Some(h) = at
        .checked_add(tar::BLOCK)
        .and_then(|end| buf.get_mut(at..end))
    {
        if h.iter().all(|&b| b == 0) {
            return;
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let digits = format!("{sum:06o}");
        h[148..154].copy_from_slice(&digits.as_bytes()[digits.len() - 6..]);
        h[154] = 0;
        let Some(size) = header_size(h) else { return };
        let Some(next) = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_add(tar::padding(size)))
            .and_then(|s| s.checked_add(at + tar::BLOCK))
        else {
            return;
        };
        at = next;
    }
}

fn header_size(h: &[u8]) -> Option<u64> {
    if h[124] & 0x80 != 0 {
        return Some(u64::from_be_bytes(h[128..136].try_into().ok()?));
    }
    let s = std::str::from_utf8(&h[124..136]).ok()?;
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Edits one entry of a readable archive and writes the archive anew; `None` when the input
/// is not one the tar reader reads whole.
fn mutate_entries(data: &mut [u8], size: usize, max_size: usize, seed: u32) -> Option<usize> {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut r = tar::Reader::new(&data[..size]);
    while let Some(e) = r.next_entry().ok()? {
        let bytes = r.read_small(&e, max_size as u64).ok()?;
        entries.push((e.path, bytes));
    }
    if entries.is_empty() {
        return None;
    }
    let mut rng = Rng(u64::from(seed));
    let i = rng.below(entries.len());
    match rng.below(10) {
        0 => {
            entries.remove(i);
        }
        1 => {
            let e = entries[i].clone();
            entries.insert(i, e);
        }
        2 => {
            let j = (i + 1) % entries.len();
            entries.swap(i, j);
        }
        op => {
            let (name, old) = entries[i].clone();
            let mut new = if op >= 7 {
                mutate_json(&old, &mut rng)?
            } else {
                let mut new = old.clone();
                let room = old.len() * 2 + 64;
                new.resize(room, 0);
                let n = fuzzer_mutate(&mut new, old.len(), room);
                new.truncate(n);
                new
            };
            let blob_hex = name
                .strip_prefix("./")
                .unwrap_or(&name)
                .strip_prefix("blobs/sha256/")
                .filter(|h| Digest::parse(&format!("sha256:{h}")).is_ok());
            match blob_hex {
                // Keep the size (JSON takes trailing spaces) and rename the blob to its new
                // digest in every entry that names it, so manifests still verify.
                Some(hex) if op % 2 == 1 && new.len() <= old.len() => {
                    new.resize(old.len(), b' ');
                    let from = hex.to_owned();
                    let to = Digest::of(&new).hex().to_owned();
                    entries[i].1 = new;
                    for (p, d) in &mut entries {
                        *p = p.replace(&from, &to);
                        *d = replace(d, from.as_bytes(), to.as_bytes());
                    }
                }
                _ => entries[i].1 = new,
            }
        }
    }
    let mut w = tar::Writer::new(Vec::new());
    for (p, d) in &entries {
        if p.len() >= 100 {
            return None;
        }
        w.file(p, d).ok()?;
    }
    w.finish().ok()?;
    let (out, _) = w.into_parts();
    if out.len() > max_size {
        return None;
    }
    data[..out.len()].copy_from_slice(&out);
    Some(out.len())
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// A small deterministic generator, so a mutation follows from libFuzzer's seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % n.max(1) as u64) as usize
    }
}

/// Edits one node of a JSON document (imo.json, index.json, a manifest): removes,
/// duplicates or replaces it with another node, or nudges its value. `None` if the bytes
/// are not JSON.
fn mutate_json(bytes: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(bytes).ok()?;
    let mut nodes = Vec::new();
    pointers(&v, String::new(), &mut nodes);
    if nodes.is_empty() {
        return None;
    }
    let target = nodes[rng.below(nodes.len())].clone();
    let donor = v.pointer(&nodes[rng.below(nodes.len())])?.clone();
    let (parent, key) = target.rsplit_once('/')?;
    let key = key.replace("~1", "/").replace("~0", "~");
    match rng.below(5) {
        0 => match v.pointer_mut(parent)? {
            Value::Object(m) => {
                m.remove(&key);
            }
            Value::Array(a) => {
                a.remove(key.parse().ok()?);
            }
            _ => return None,
        },
        1 => match v.pointer_mut(parent)? {
            Value::Array(a) => {
                let at: usize = key.parse().ok()?;
                let copy = a[at].clone();
                a.insert(at, copy);
            }
            Value::Object(m) => {
                m.insert(format!("{key}x"), donor);
            }
            _ => return None,
        },
        2 => *v.pointer_mut(&target)? = donor,
        3 => {
            let node = v.pointer_mut(&target)?;
            *node = match node.take() {
                Value::Number(n) => {
                    let n = n.as_u64().unwrap_or(0);
                    let choices = [0, 1, n.wrapping_add(1), n.saturating_sub(1), u64::MAX];
                    match rng.below(choices.len() + 2) {
                        5 => serde_json::json!(-1),
                        6 => serde_json::json!(0.5),
                        c => choices[c].into(),
                    }
                }
                Value::String(s) => match rng.below(3) {
                    0 => Value::String(String::new()),
                    1 => Value::String(format!("{s}x")),
                    _ => Value::String(s.chars().take(s.chars().count() / 2).collect()),
                },
                Value::Bool(b) => Value::Bool(!b),
                Value::Null => 0.into(),
                Value::Array(_) => Value::Array(vec![]),
                Value::Object(_) => Value::Object(Default::default()),
            };
        }
        _ => *v.pointer_mut(&target)? = Value::Null,
    }
    serde_json::to_vec(&v).ok()
}

/// The JSON pointers of every node below `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, c)| (k.replace('~', "~0").replace('/', "~1"), c))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, c)| (i.to_string(), c))
            .collect(),
        _ => return,
    };
    for (k, c) in children {
        let p = format!("{at}/{k}");
        out.push(p.clone());
        pointers(c, p, out);
    }
}
