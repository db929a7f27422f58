//! An OCI image layout directory (`oci:DIR[:TAG]`) as a [`Source`] and a [`Destination`]:
//! images are found by their `org.opencontainers.image.ref.name`, and every file is written
//! through a temporary one, so a blob or `index.json` is always whole.

use super::tempfile;
use super::{Destination, Source};
use crate::digest::{Digest, Verifier, copy_verified};
use crate::error::{Error, Result};
use crate::manifest::{self, Descriptor, Manifest};
use crate::registry::{BlobSource, Committing, Mount, Url};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// An OCI image layout directory.
pub struct OciDir {
    dir: PathBuf,
    /// Whether stale temporary files were looked for.
    swept: AtomicBool,
}

const INDEX: &str = "index.json";
/// The lock file beside `index.json`, held while a push changes it.
const LOCK: &str = tempfile::INDEX_LOCK;
/// How long a push waits for another's lock on `index.json`.
const LOCK_WAIT: Duration = Duration::from_secs(15);
/// How old a lock must be to be taken for a killed run's: a holder reads and writes one small
/// file, though a slow disk may take seconds to sync it.
const LOCK_STALE: Duration = Duration::from_secs(10);

impl OciDir {
    pub fn new(dir: &str) -> Self {
        Self {
            dir: PathBuf::from(dir),
            swept: AtomicBool::new(false),
        }
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    fn io(&self, what: &Path, e: std::io::Error) -> Error {
        Error::Io(format!("{}: {e}", what.display()))
    }

    fn read_index(&self) -> Result<Option<serde_json::Value>> {
        let path = self.dir.join(INDEX);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::InvalidManifest(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(&path, e)),
        }
    }

    fn entries(&self) -> Result<Vec<Descriptor>> {
        let Some(index) = self.read_index()? else {
            return Err(Error::NotFound(format!(
                "oci:{} has no {INDEX}: it is not an OCI image layout",
                self.dir.display()
            )));
        };
        let m = Manifest::parse(
            &serde_json::to_vec(&index).expect("re-serialising JSON"),
            Some(manifest::OCI_INDEX),
        )
        .map_err(|e| Error::InvalidManifest(format!("{}/{INDEX} {e}", self.dir.display())))?;
        Ok(m.children().to_vec())
    }

    /// The index entry a tag names: its `org.opencontainers.image.ref.name`, or the only
    /// entry when no tag is given.
    fn find(&self, tag: Option<&str>) -> Result<Option<Descriptor>> {
        let entries = self.entries()?;
        Ok(match tag {
            Some(t) => entries.into_iter().find(|d| {
                d.annotations
                    .get(crate::archive::REF_NAME)
                    .map(String::as_str)
                    == Some(t)
            }),
            None if entries.len() == 1 => entries.into_iter().next(),
            None => {
                return Err(Error::InvalidReference(format!(
                    "oci:{} holds {} images; name one as oci:DIR:TAG",
                    self.dir.display(),
                    entries.len()
                )));
            }
        })
    }

    fn read_manifest(&self, d: &Descriptor) -> Result<Vec<u8>> {
        if d.size > manifest::MAX_MANIFEST_BYTES {
            return Err(Error::InvalidManifest(format!(
                "manifest {} is larger than 4 MiB",
                d.digest
            )));
        }
        let path = self.blob_path(&d.digest);
        let bytes = std::fs::read(&path).map_err(|e| self.io(&path, e))?;
        let mut v = Verifier::new(&d.digest, d.size);
        v.update(&bytes)
            .and_then(|()| v.finish())
            .map_err(|m| Error::DigestMismatch(format!("{}: {m}", path.display())))?;
        Ok(bytes)
    }

    /// Removes what an interrupted write to this layout left: imo's temporary files older
    /// than a day (see [`tempfile::STALE_AFTER`]). Once per layout and run.
    fn sweep(&self) {
        if !self.swept.swap(true, Ordering::Relaxed) {
            tempfile::remove_stale(&self.dir.join("blobs/sha256"), None);
            tempfile::remove_stale(&self.dir, None);
        }
    }

    /// Writes a blob through a fresh temporary file, so a blob file is always whole. A blob
    /// another writer put there meanwhile has the same bytes: renaming over it is harmless.
    fn write_blob(
        &self,
        d: &Digest,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<()> {
        self.sweep();
        let dir = self.dir.join("blobs/sha256");
        std::fs::create_dir_all(&dir).map_err(|e| self.io(&dir, e))?;
        let path = self.blob_path(d);
        let (mut file, tmp) = tempfile::create(&path).map_err(|e| self.io(&path, e))?;
        let result = fill(&mut file).and_then(|()| file.sync_all().map_err(|e| self.io(&tmp, e)));
        drop(file);
        match result {
            Ok(()) => std::fs::rename(&tmp, &path).map_err(|e| self.io(&tmp, e)),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        let (mut file, tmp) = tempfile::create(&path).map_err(|e| self.io(&path, e))?;
        let result = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io(&path, e));
        }
        Ok(())
    }

    /// Holds `index.json` for one read-change-write: WASI has no file locks, so the lock is a
    /// file beside it, created exclusively and removed when the guard drops. A lock older than
    /// [`LOCK_STALE`] was left by a killed run (a holder keeps it for milliseconds) and is
    /// broken; one held longer than [`LOCK_WAIT`] fails the push.
    fn lock_index(&self) -> Result<IndexLock> {
        let path = self.dir.join(LOCK);
        let started = Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            match tempfile::create_new(&path) {
                Ok(file) => return Ok(IndexLock(path, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.io(&path, e)),
            }
            let stale = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| {
                    SystemTime::now()
                        .duration_since(t)
                        .is_ok_and(|a| a > LOCK_STALE)
                });
            if stale && std::fs::remove_file(&path).is_ok() {
                continue;
            }
            if started.elapsed() > LOCK_WAIT {
                return Err(Error::Io(format!(
                    "{}: another push has held this lock on {INDEX} for over {} s; if no \
                     imo is writing to oci:{}, remove the lock file and push again",
                    path.display(),
                    LOCK_WAIT.as_secs(),
                    self.dir.display()
                )));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }
}

/// The lock on `index.json`, removed when dropped; kept open so that the host, told to stop,
/// finds it among the files its process holds.
struct IndexLock(PathBuf, #[allow(dead_code)] tempfile::NewFile);

impl Drop for IndexLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Source for OciDir {
    fn describe(&self) -> String {
        format!("oci:{}", self.dir.display())
    }

    fn manifest(&self, key: &str) -> Result<(Descriptor, Vec<u8>)> {
        self.manifest_if_exists(key)?.ok_or_else(|| {
            Error::NotFound(format!("oci:{} has no image {key}", self.dir.display()))
        })
    }

    fn manifest_if_exists(&self, key: &str) -> Result<Option<(Descriptor, Vec<u8>)>> {
        let d = if key.starts_with("sha256:") {
            let digest = Digest::parse(key).map_err(Error::InvalidReference)?;
            let path = self.blob_path(&digest);
            let Ok(meta) = std::fs::metadata(&path) else {
                return Ok(None);
            };
            let bytes = std::fs::read(&path).map_err(|e| self.io(&path, e))?;
            let media_type = manifest::declared_media_type(&bytes)
                .unwrap_or_else(|| manifest::OCI_MANIFEST.into());
            Descriptor {
                media_type,
                digest,
                size: meta.len(),
                platform: None,
                annotations: Default::default(),
            }
        } else {
            let tag = (!key.is_empty()).then_some(key);
            match self.find(tag)? {
                Some(d) => d,
                None => return Ok(None),
            }
        };
        let bytes = self.read_manifest(&d)?;
        Ok(Some((
            Descriptor {
                annotations: Default::default(),
                platform: None,
                ..d
            },
            bytes,
        )))
    }

    fn referrers(&self, _: &Digest) -> Result<Vec<Descriptor>> {
        // Referrers in an OCI directory travel as tagged entries, found by tag.
        Ok(vec![])
    }

    fn tags(&self) -> Result<Vec<String>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|d| d.annotations.get(crate::archive::REF_NAME).cloned())
            .collect())
    }

    fn open_blob(&self, d: &Descriptor) -> Result<Box<dyn Read + '_>> {
        let path = self.blob_path(&d.digest);
        let file = std::fs::File::open(&path).map_err(|e| self.io(&path, e))?;
        let what = path.display().to_string();
        Ok(Box::new(crate::digest::verified_reader(
            file, &d.digest, d.size, what,
        )))
    }

    fn blob(&self, d: &Descriptor, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let path = self.blob_path(&d.digest);
        let mut file = std::fs::File::open(&path).map_err(|e| self.io(&path, e))?;
        copy_verified(
            &d.digest,
            d.size,
            &mut vec![0u8; 1 << 20],
            &mut |b| file.read(b).map_err(|e| self.io(&path, e)),
            sink,
            &|m| Error::DigestMismatch(format!("{}: {m}", path.display())),
        )
    }
}

impl Destination for OciDir {
    fn describe(&self) -> String {
        format!("oci:{}", self.dir.display())
    }

    fn repository(&self) -> &str {
        ""
    }

    fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.blob_path(digest).is_file())
    }

    /// A layout has one repository: `from` is ignored.
    fn open_blob_in(&self, _from: Option<&str>, d: &Descriptor) -> Result<Box<dyn Read + '_>> {
        Source::open_blob(self, d)
    }

    fn has_blob_in(&self, _: &str, _: &Digest) -> Result<bool> {
        Ok(false)
    }

    fn mount(&self, _: &Digest, _: &str) -> Result<Mount> {
        Ok(Mount::Declined {
            session: None,
            why: "an OCI layout has no other repositories".into(),
        })
    }

    fn copy_from(
        &self,
        d: &Descriptor,
        from: &str,
        _: Option<Url>,
        _: &mut dyn FnMut(usize),
    ) -> Result<Committing<'_>> {
        // Never asked: a layout holds no other repository for a blob to be found in.
        Err(Error::Io(format!(
            "{}: cannot copy blob {} from {from}: an OCI layout has no other repositories",
            self.dir.display(),
            d.digest
        )))
    }

    fn upload(&self, d: &Descriptor, source: BlobSource<'_>) -> Result<Committing<'_>> {
        // The source verifies what it hands out and fails before the last byte otherwise.
        let mut buf = vec![0u8; 1 << 20];
        self.write_blob(&d.digest, &mut |w| loop {
            let n = source(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            w.write_all(&buf[..n])
                .map_err(|e| self.io(&self.blob_path(&d.digest), e))?;
        })?;
        Ok(Committing::done())
    }

    fn put_manifest(&self, key: &str, d: &Descriptor, bytes: &[u8]) -> Result<()> {
        self.write_blob(&d.digest, &mut |w| {
            w.write_all(bytes).map_err(|e| Error::Io(e.to_string()))
        })?;
        if key.starts_with("sha256:") {
            return Ok(());
        }
        // Tag it: replace any entry of the same name in index.json, keep the rest; under the
        // lock, so a concurrent push's tag is not lost.
        let _lock = self.lock_index()?;
        let mut index = self
            .read_index()?
            .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": []}));
        let list = index["manifests"].as_array_mut().ok_or_else(|| {
            Error::InvalidManifest(format!(
                "{}/{INDEX} has no manifests list",
                self.dir.display()
            ))
        })?;
        list.retain(|e| e["annotations"][crate::archive::REF_NAME] != key);
        let mut entry = serde_json::to_value(Descriptor {
            platform: None,
            annotations: Default::default(),
            ..d.clone()
        })
        .expect("descriptors serialise");
        entry["annotations"] = serde_json::json!({ crate::archive::REF_NAME: key });
        list.push(entry);
        self.write_file("oci-layout", crate::archive::LAYOUT_CONTENT)?;
        self.write_file(INDEX, &serde_json::to_vec(&index).expect("JSON serialises"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oci_dir_round_trips_a_tagged_manifest_and_its_blob() {
        let dir = std::env::temp_dir().join(format!("imo-ocidir-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir_store = OciDir::new(dir.to_str().unwrap());
        let blob = b"layer bytes".to_vec();
        let bd = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            digest: Digest::of(&blob),
            size: blob.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        assert!(!dir_store.has_blob(&bd.digest).unwrap());
        let mut rest = &blob[..];
        dir_store
            .upload(&bd, &mut |b| {
                rest.read(b).map_err(|e| Error::Io(e.to_string()))
            })
            .unwrap()
            .finish()
            .unwrap();
        assert!(dir_store.has_blob(&bd.digest).unwrap());
        let m = crate::manifest::tests::image_json(
            Some(manifest::OCI_MANIFEST),
            &bd.digest,
            &[(&bd.digest, bd.size)],
        );
        let md = Descriptor {
            media_type: manifest::OCI_MANIFEST.into(),
            digest: Digest::of(&m),
            size: m.len() as u64,
            ..bd.clone()
        };
        dir_store.put_manifest("v1", &md, &m).unwrap();
        dir_store.put_manifest("v1", &md, &m).unwrap();
        let (got, bytes) = Source::manifest(&dir_store, "v1").unwrap();
        assert_eq!((got.digest, bytes), (md.digest, m));
        assert_eq!(
            dir_store.entries().unwrap().len(),
            1,
            "re-tagging replaces the entry"
        );
        let mut out = Vec::new();
        dir_store
            .blob(&bd, &mut |c| {
                out.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
        assert_eq!(out, blob);
        // A failed upload leaves no blob file behind.
        let other = Descriptor {
            digest: Digest::of(b"other"),
            ..bd
        };
        assert!(
            dir_store
                .upload(&other, &mut |_| Err(Error::DigestMismatch("no".into())))
                .is_err()
        );
        assert!(!dir_store.has_blob(&other.digest).unwrap());
        assert!(
            Source::manifest_if_exists(&dir_store, "v2")
                .unwrap()
                .is_none()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_tags_are_all_kept_and_a_stale_lock_is_broken() {
        let dir = std::env::temp_dir().join(format!("imo-ocidir-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let m = b"{}".to_vec();
        let md = Descriptor {
            media_type: manifest::OCI_MANIFEST.into(),
            digest: Digest::of(&m),
            size: m.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        // A lock a killed run left a minute ago does not stop the next push.
        let lock = std::fs::File::create(dir.join(LOCK)).unwrap();
        lock.set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        let first = OciDir::new(dir.to_str().unwrap());
        first.put_manifest("first", &md, &m).unwrap();
        std::thread::scope(|s| {
            for writer in 0..4 {
                let (dir, m, md) = (&dir, &m, &md);
                s.spawn(move || {
                    let store = OciDir::new(dir.to_str().unwrap());
                    for n in 0..10 {
                        store
                            .put_manifest(&format!("w{writer}-{n}"), md, m)
                            .unwrap();
                    }
                });
            }
        });
        let store = OciDir::new(dir.to_str().unwrap());
        assert_eq!(store.tags().unwrap().len(), 41, "no tag is lost");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(
            left.is_empty(),
            "no lock or temporary file is left: {left:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
