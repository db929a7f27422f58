//! The component's temporary files: created exclusively beside their final path under a
//! random name `.NAME.imo-RANDOM.partial`, so a file or symlink planted there is never
//! followed and two writers never share one; and the sweep of those an interrupted run left.
//!
//! A leftover is removed once it is older than [`STALE_AFTER`]: a live writer touches its file
//! with every write, while a process id says nothing across machines sharing a directory or
//! inside a container, and the component has none to give.
//!
//! In the component every file imo creates is opened through `wasi:filesystem` `open-at` with
//! only `write` ([`create_new`]): std's `File::create` goes through wasi-libc, which asks for
//! `mutate-directory` on every file it opens for writing, a flag WASI says only directories
//! take and that hosts other than wasmtime (jco's preview2-shim for Node) refuse.

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

/// A file imo creates and writes: std's natively, a `wasi:filesystem` descriptor in the
/// component. Either writes, syncs (`sync_all`) and closes when dropped.
#[cfg(not(target_arch = "wasm32"))]
pub type NewFile = std::fs::File;
#[cfg(target_arch = "wasm32")]
pub use wasi_file::NewFile;

/// Creates `path` for writing, failing if anything is there (a symlink included).
pub fn create_new(path: &Path) -> io::Result<NewFile> {
    #[cfg(target_arch = "wasm32")]
    return wasi_file::create_new(path);
    #[cfg(not(target_arch = "wasm32"))]
    std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Creates a fresh temporary file for `path` in its directory, exclusively.
pub fn create(path: &Path) -> io::Result<(NewFile, PathBuf)> {
    fresh(path, &mut create_new)
}

/// As [`create`], with `options` besides writing and exclusive creation (a mode, say); for
/// the host, which has no WASI between it and the file system.
#[cfg(not(target_arch = "wasm32"))]
pub fn create_with(
    path: &Path,
    mut options: std::fs::OpenOptions,
) -> io::Result<(std::fs::File, PathBuf)> {
    options.write(true).create_new(true);
    fresh(path, &mut |temp| options.open(temp))
}

/// Opens a temporary name for `path` with `open`, another while one is taken.
fn fresh<F>(path: &Path, open: &mut dyn FnMut(&Path) -> io::Result<F>) -> io::Result<(F, PathBuf)> {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    loop {
        let temp = path.with_file_name(temp_name(&name, random()));
        match open(&temp) {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Which of the preopened directories `names` holds `path`, and the path within it, as
/// wasi-libc resolves a path for `open`: the working directory is `/`, so a relative path is
/// read from the root; leading `/` and `./` count for nothing on either side (a preopen `.` or
/// `/` holds every path); the longest name that is a whole-component prefix wins. `None`:
/// no preopen holds the path (wasi-libc's ENOENT).
pub fn preopen_relative<'a>(path: &'a str, names: &[&str]) -> Option<(usize, &'a str)> {
    fn strip(mut p: &str) -> &str {
        loop {
            if let Some(rest) = p.strip_prefix('/').or_else(|| p.strip_prefix("./")) {
                p = rest;
            } else if p == "." {
                return "";
            } else {
                return p;
            }
        }
    }
    let path = strip(path);
    names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let prefix = strip(name).trim_end_matches('/');
            let rest = if prefix.is_empty() {
                path
            } else {
                let rest = path.strip_prefix(prefix)?;
                if !(rest.is_empty() || rest.starts_with('/')) {
                    return None;
                }
                rest
            };
            Some((i, prefix.len(), rest.trim_start_matches('/')))
        })
        .max_by_key(|&(i, len, _)| (len, std::cmp::Reverse(i)))
        .map(|(i, _, rest)| (i, if rest.is_empty() { "." } else { rest }))
}

/// Files created through `wasi:filesystem` `open-at` with only `write`.
#[cfg(target_arch = "wasm32")]
mod wasi_file {
    use std::io::{self, Write};
    use std::path::Path;
    use wasip2::filesystem::preopens;
    use wasip2::filesystem::types::{
        Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags, filesystem_error_code,
    };
    use wasip2::io::streams::{OutputStream, StreamError};

    thread_local! {
        /// The preopened directories, asked for once: each answer hands over new handles,
        /// and a host may close a preopen whose handle the component drops.
        static PREOPENS: Vec<(Descriptor, String)> = preopens::get_directories();
    }

    /// A new file: its descriptor and the stream writing it from the start.
    pub struct NewFile {
        // Declared first so it is dropped first: a stream outlives no descriptor.
        stream: OutputStream,
        file: Descriptor,
    }

    impl NewFile {
        /// Flushes what was written and syncs the file to storage.
        pub fn sync_all(&self) -> io::Result<()> {
            self.stream.blocking_flush().map_err(stream_error)?;
            self.file.sync().map_err(os_error)
        }
    }

    impl Write for NewFile {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            loop {
                match self.stream.check_write() {
                    Ok(0) => self.stream.subscribe().block(),
                    Ok(n) => {
                        let n = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                        self.stream.write(&buf[..n]).map_err(stream_error)?;
                        return Ok(n);
                    }
                    Err(e) => return Err(stream_error(e)),
                }
            }
        }

        fn flush(&mut self) -> io::Result<()> {
            self.stream.blocking_flush().map_err(stream_error)
        }
    }

    pub fn create_new(path: &Path) -> io::Result<NewFile> {
        let path = path
            .to_str()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"))?;
        let file = PREOPENS.with(|dirs| {
            let names: Vec<&str> = dirs.iter().map(|(_, name)| name.as_str()).collect();
            let (i, relative) = super::preopen_relative(path, &names)
                .ok_or_else(|| io::Error::from_raw_os_error(errno(ErrorCode::NoEntry)))?;
            dirs[i]
                .0
                .open_at(
                    PathFlags::empty(),
                    relative,
                    OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                    DescriptorFlags::WRITE,
                )
                .map_err(os_error)
        })?;
        let stream = file.write_via_stream(0).map_err(os_error)?;
        Ok(NewFile { stream, file })
    }

    fn stream_error(e: StreamError) -> io::Error {
        match e {
            StreamError::Closed => {
                io::Error::new(io::ErrorKind::BrokenPipe, "the file's stream was closed")
            }
            StreamError::LastOperationFailed(e) => match filesystem_error_code(&e) {
                Some(code) => os_error(code),
                None => io::Error::other(e.to_debug_string()),
            },
        }
    }

    /// As the error wasi-libc would report: its errno, so messages read as they did.
    fn os_error(code: ErrorCode) -> io::Error {
        io::Error::from_raw_os_error(errno(code))
    }

    /// WASI's errno for each `wasi:filesystem` error code, as wasi-libc translates them.
    fn errno(code: ErrorCode) -> i32 {
        use ErrorCode as E;
        match code {
            E::Access => 2,
            E::WouldBlock => 6,
            E::Already => 7,
            E::BadDescriptor => 8,
            E::Busy => 10,
            E::Deadlock => 16,
            E::Quota => 19,
            E::Exist => 20,
            E::FileTooLarge => 22,
            E::IllegalByteSequence => 25,
            E::InProgress => 26,
            E::Interrupted => 27,
            E::Invalid => 28,
            E::Io => 29,
            E::IsDirectory => 31,
            E::Loop => 32,
            E::TooManyLinks => 34,
            E::MessageSize => 35,
            E::NameTooLong => 37,
            E::NoDevice => 43,
            E::NoEntry => 44,
            E::NoLock => 46,
            E::InsufficientMemory => 48,
            E::InsufficientSpace => 51,
            E::NotDirectory => 54,
            E::NotEmpty => 55,
            E::NotRecoverable => 56,
            E::Unsupported => 58,
            E::NoTty => 59,
            E::NoSuchDevice => 60,
            E::Overflow => 61,
            E::NotPermitted => 63,
            E::Pipe => 64,
            E::ReadOnly => 69,
            E::InvalidSeek => 70,
            E::TextFileBusy => 74,
            E::CrossDevice => 75,
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
    use std::fs::File;

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
    fn paths_are_found_under_preopens_as_wasi_libc_finds_them() {
        let names = ["/data", ".", "/data/out", "/w/", "/other"];
        let find = |p| preopen_relative(p, &names);
        assert_eq!(find("/data/out/a.tar"), Some((2, "a.tar")), "longest wins");
        assert_eq!(
            find("/data/outer/a.tar"),
            Some((0, "outer/a.tar")),
            "whole names"
        );
        assert_eq!(find("/data/a.tar"), Some((0, "a.tar")));
        assert_eq!(
            find("data//a.tar"),
            Some((0, "a.tar")),
            "relative means from /"
        );
        assert_eq!(find("./w/x"), Some((3, "x")));
        assert_eq!(find("/data"), Some((0, ".")));
        assert_eq!(find("a.tar"), Some((1, "a.tar")), "`.` holds the rest");
        assert_eq!(find("/elsewhere/a.tar"), Some((1, "elsewhere/a.tar")));
        assert_eq!(
            preopen_relative("/elsewhere/a.tar", &["/data", "/w"]),
            None,
            "outside every preopen"
        );
        assert_eq!(
            preopen_relative("x", &["/", "."]),
            Some((0, "x")),
            "first of equals"
        );
        assert_eq!(preopen_relative("x", &[]), None);
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
