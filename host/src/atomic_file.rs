//! Files that appear whole or not at all: written under a fresh temporary name beside the
//! final path (created exclusively, so nothing else's file is reused or clobbered) and
//! renamed onto it only when complete.

use std::fs::File;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

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
    /// Creates the temporary file `.NAME.RANDOM.partial` in `path`'s directory.
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
        let name = path
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        loop {
            // std's hasher keys are random per instance: a name no one can guess ahead.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            let temp = path.with_file_name(format!(".{name}.{:016x}.partial", h.finish()));
            // create_new is O_CREAT|O_EXCL: it fails on any existing name, a symlink included.
            match File::options()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&temp)
            {
                Ok(file) => {
                    return Ok(Self {
                        file,
                        temp,
                        path: path.to_owned(),
                        committed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
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
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
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
}
