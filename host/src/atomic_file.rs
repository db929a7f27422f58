//! Files that appear whole or not at all: written under a fresh temporary name beside the
//! final path (created exclusively, so nothing else's file is reused or clobbered) and
//! renamed onto it only when complete. Every one is recorded until it is committed or
//! dropped, so that [`remove_temporaries`] can clear them when imo is told to stop.

use imo_guest::store::tempfile;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The temporary files of this process not yet committed or dropped.
static PENDING: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn pending() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    PENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A file being written for `path`; removed unless [`commit`](AtomicFile::commit)ted.
///
/// ```rust
/// use imo::atomic_file::AtomicFile;
///
/// let path = std::env::temp_dir().join(format!("imo-doc-atomic-{}", std::process::id()));
/// let out = AtomicFile::create(&path)?;
/// std::io::Write::write_all(&mut out.file(), b"whole")?;
/// assert!(!path.exists(), "nothing at the final path until committed");
/// out.commit()?;
/// assert_eq!(std::fs::read(&path)?, b"whole");
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    temp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Creates the temporary file `.NAME.imo-RANDOM.partial` in `path`'s directory, first
    /// removing those for the same name a killed run left more than a day ago
    /// ([`tempfile::STALE_AFTER`]: a live writer's file is touched by every write).
    pub fn create(path: &Path) -> io::Result<Self> {
        Self::create_mode(path, 0o666)
    }

    /// As [`create`](AtomicFile::create), readable and writable by the owner only (0600),
    /// from its creation on: for files only the user should see or change.
    pub fn create_private(path: &Path) -> io::Result<Self> {
        Self::create_mode(path, 0o600)
    }

    /// `mode` is masked by the umask, as for any new file.
    fn create_mode(path: &Path, mode: u32) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            tempfile::remove_stale(dir, name.to_str());
        }
        // Registered while the lock is held, so a stop never misses a file just made.
        let mut pending = pending();
        let mut options = File::options();
        // Readable too: a pull spread over several instances has each check the plan
        // against what the file holds.
        options.read(true).mode(mode);
        let (file, temp) = tempfile::create_with(path, options)?;
        pending.insert(temp.clone());
        Ok(Self {
            file,
            temp,
            path: path.to_owned(),
            committed: false,
        })
    }

    /// The file to write.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Flushes the file to disk and renames it onto the final path.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.temp, &self.path)?;
        self.committed = true;
        pending().remove(&self.temp);
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
            pending().remove(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` through an [`AtomicFile`].
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let out = AtomicFile::create(path)?;
    out.file().write_all(bytes)?;
    out.commit()
}

/// Writes `bytes` to `path` through a [private](AtomicFile::create_private) [`AtomicFile`].
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let out = AtomicFile::create_private(path)?;
    out.file().write_all(bytes)?;
    out.commit()
}

/// Removes this process's unfinished temporary files, for a stop on a signal: those made
/// here, and (on Linux, from `/proc/self/fd`) those the component holds open in the layouts
/// it was granted, whose names imo's own pattern tells apart. Leaves the pending list locked,
/// so no new one is made before the process exits.
///
/// The component keeps running meanwhile and may open a new temporary just after a look (it
/// finished one blob, starts the next), so the look is repeated until two in a row, a few
/// milliseconds apart, find nothing; bounded at about a second.
pub fn remove_temporaries() {
    let pending = pending();
    for temp in pending.iter() {
        let _ = std::fs::remove_file(temp);
    }
    let mut quiet = 0;
    for _ in 0..50 {
        let open = open_temporaries();
        quiet = if open.is_empty() { quiet + 1 } else { 0 };
        if quiet == 2 {
            break;
        }
        for temp in open {
            let _ = std::fs::remove_file(temp);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::mem::forget(pending);
}

/// The resumable partials of this process's pulls, which a stop leaves in place.
static RESUMABLE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn resumable() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    RESUMABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The partials of resumable pulls still being written, for the message on a stop.
pub fn resumable_partials() -> Vec<PathBuf> {
    resumable().iter().cloned().collect()
}

/// The partial file of a resumable pull into `path`: `.NAME.imo-resume.partial` beside it, a
/// name that a later run finds again (unlike [`AtomicFile`]'s random one) and that no signal
/// nor sweep removes. Renamed onto `path` when complete.
#[derive(Debug)]
pub struct ResumableFile {
    file: File,
    partial: PathBuf,
    path: PathBuf,
}

impl ResumableFile {
    /// Opens the partial for `path` to read and write: created exclusively when there is
    /// none; else opened without following a symlink, and only if it is a regular file of
    /// this user, so nothing planted there is read or written through.
    pub fn open(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        let partial = Self::partial_for(path);
        let mut register = resumable();
        let file = match File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&partial)
        {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let file = File::options()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&partial)?;
                let meta = file.metadata()?;
                // SAFETY: geteuid has no preconditions and cannot fail.
                let euid = unsafe { libc::geteuid() };
                if !meta.is_file() || meta.uid() != euid {
                    return Err(io::Error::other(format!(
                        "{} is not a regular file of yours, so it is not resumed: remove it \
                         and pull again",
                        partial.display()
                    )));
                }
                file
            }
            other => other?,
        };
        register.insert(partial.clone());
        Ok(Self {
            file,
            partial,
            path: path.to_owned(),
        })
    }

    /// The file to write; empty when new, else the partial of an earlier run.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the partial for `path` lies, whether or not there is one.
    pub fn partial_for(path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        path.with_file_name(format!(".{name}.imo-resume.partial"))
    }

    /// Where the partial lies.
    pub fn partial(&self) -> &Path {
        &self.partial
    }

    /// Flushes the partial to disk and renames it onto the final path.
    pub fn commit(self) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.partial, &self.path)?;
        resumable().remove(&self.partial);
        Ok(())
    }
}

impl Drop for ResumableFile {
    fn drop(&mut self) {
        // The partial stays for the next run, unless nothing was written (a pull that failed
        // before its plan); only the record of it goes.
        if self.file.metadata().is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&self.partial);
        }
        resumable().remove(&self.partial);
    }
}

/// imo's temporary and lock files this process holds open.
fn open_temporaries() -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return vec![];
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| {
            target
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| tempfile::is_temp_name(n, None) || n == tempfile::INDEX_LOCK)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uncommitted_file_leaves_nothing_and_a_committed_one_replaces() {
        let dir = std::env::temp_dir().join(format!("imo-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out");
        std::fs::write(&path, b"old").unwrap();
        let a = AtomicFile::create(&path).unwrap();
        let b = AtomicFile::create(&path).unwrap();
        assert_ne!(a.temp, b.temp, "each writer has its own temporary file");
        a.file().write_all(b"abandoned").unwrap();
        drop(a);
        write(&path, b"new").unwrap();
        drop(b);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files are gone");
        assert!(
            pending().iter().all(|p| !p.starts_with(&dir)),
            "nor recorded"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_private_file_is_the_owners_alone_and_a_planted_name_is_not_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("imo-atomic-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out");
        write_private(&path, b"mine").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        // A symlink at the final path is replaced, never written through.
        let target = dir.join("target");
        std::fs::write(&target, b"untouched").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_private(&path, b"mine").unwrap();
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_resumable_partial_is_found_again_and_a_planted_symlink_is_refused() {
        let dir = std::env::temp_dir().join(format!("imo-atomic-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.tar");
        let first = ResumableFile::open(&path).unwrap();
        first.file().write_all(b"half").unwrap();
        assert_eq!(resumable_partials(), [first.partial().to_owned()]);
        let partial = first.partial().to_owned();
        drop(first);
        assert!(partial.exists(), "a failed pull leaves its partial");
        assert!(resumable_partials().is_empty());
        let again = ResumableFile::open(&path).unwrap();
        assert_eq!(std::fs::read(again.partial()).unwrap(), b"half");
        drop(again);
        std::fs::remove_file(&partial).unwrap();
        drop(ResumableFile::open(&path).unwrap());
        assert!(!partial.exists(), "an empty partial is not left behind");
        // A symlink in its place is never followed.
        let target = dir.join("target");
        std::fs::write(&target, b"untouched").unwrap();
        std::os::unix::fs::symlink(&target, &partial).unwrap();
        assert!(ResumableFile::open(&path).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
        std::fs::remove_file(&partial).unwrap();
        let done = ResumableFile::open(&path).unwrap();
        done.file().write_all(b"whole").unwrap();
        done.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        assert!(!partial.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
