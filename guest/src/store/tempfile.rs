//! The component's temporary files: created exclusively beside their final path under a
//! random name `.NAME.imo-RANDOM.partial`, so a file or symlink planted there is never
//! followed and two writers never share one; and the sweep of those an interrupted run left.
//!
//! A leftover is removed once it is older than [`STALE_AFTER`]: a live writer touches its file
//! with every write, while a process id says nothing across machines sharing a directory or
//! inside a container, and the component has none to give.

use std::fs::File;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How old an unfinished temporary file must be to count as a killed run's.
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The lock file an `oci:` layout's `index.json` is changed under.
pub const INDEX_LOCK: &str = ".index.json.imo.lock";

/// The temporary name for `name` made from `random`.
pub fn temp_name(name: &str, random: u64) -> String {
    format!(".{name}.imo-{random:016x}.partial")
}

/// Whether `file` is one of imo's temporary names, for `name` or (with `None`) for any name.
pub fn is_temp_name(file: &str, name: Option<&str>) -> bool {
    let Some(rest) = file
        .strip_prefix('.')
        .and_then(|f| f.strip_suffix(".partial"))
    else {
        return false;
    };
    let Some((stem, random)) = rest.rsplit_once(".imo-") else {
        return false;
    };
    random.len() == 16
        && random.bytes().all(|b| b.is_ascii_hexdigit())
        && !stem.is_empty()
        && name.is_none_or(|n| n == stem)
}

/// A random number, from the system's random source (WASI `random` in the component): std
/// seeds each hasher's keys from it.
pub fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// Creates a fresh temporary file for `path` in its directory, exclusively.
pub fn create(path: &Path) -> io::Result<(File, PathBuf)> {
    create_with(path, File::options())
}

/// As [`create`], with `options` besides writing and exclusive creation (a mode, say).
pub fn create_with(path: &Path, mut options: std::fs::OpenOptions) -> io::Result<(File, PathBuf)> {
    options.write(true).create_new(true);
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    loop {
        let temp = path.with_file_name(temp_name(&name, random()));
        match options.open(&temp) {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Removes imo's temporary files in `dir` (for `name`, or any) last written more than
/// [`STALE_AFTER`] ago. Best effort: a file that cannot be read or removed stays.
pub fn remove_stale(dir: &Path, name: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let file = entry.file_name();
        if !file.to_str().is_some_and(|f| is_temp_name(f, name)) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > STALE_AFTER));
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised_only_as_imo_writes_them() {
        let t = temp_name("index.json", 0xabc);
        assert_eq!(t, ".index.json.imo-0000000000000abc.partial");
        assert!(is_temp_name(&t, Some("index.json")));
        assert!(is_temp_name(&t, None));
        assert!(!is_temp_name(&t, Some("index")));
        for other in [
            "index.json.partial",
            ".index.json.partial",
            ".index.json.imo-xyz.partial",
            ".imo-0000000000000abc.partial",
            ".a.imo-0000000000000abc.partial.x",
        ] {
            assert!(!is_temp_name(other, None), "{other}");
        }
    }

    #[test]
    fn temporary_files_are_fresh_and_only_stale_ones_are_swept() {
        let dir = std::env::temp_dir().join(format!("imo-tempfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (_, a) = create(&dir.join("out")).unwrap();
        let (_, b) = create(&dir.join("out")).unwrap();
        assert_ne!(a, b, "each writer has its own file");
        let old = dir.join(temp_name("out", 1));
        let mine_not_imo = dir.join(".out.partial");
        for p in [&old, &mine_not_imo] {
            File::create(p)
                .unwrap()
                .set_modified(SystemTime::now() - STALE_AFTER - Duration::from_secs(60))
                .unwrap();
        }
        remove_stale(&dir, Some("out"));
        assert!(!old.exists(), "a day-old temporary file is removed");
        assert!(a.exists() && b.exists(), "fresh ones stay");
        assert!(mine_not_imo.exists(), "a name imo never writes stays");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
