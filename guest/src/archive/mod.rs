//! The archive format: an OCI image layout as a tar stream, in an order that lets a reader
//! plan in one pass.
//!
//! ```text
//! oci-layout                  {"imageLayoutVersion":"1.0.0"}
//! imo.json                    what the archive carries and leaves out (Metadata)
//! index.json                  the final image's top-level manifest, annotated
//! blobs/sha256/<manifests>    top-level manifest first, then its children, exact bytes
//! blobs/sha256/<blobs>        configs, then the layers the base lacks
//! ```

mod format;
mod inspect;
mod read;
mod write;

pub use format::*;
pub use inspect::*;
pub use read::*;
pub use write::*;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::manifest::tests::image_json;
    use crate::manifest::{self, Descriptor};
    use crate::tar;
    use std::collections::BTreeMap;

    /// A complete archive for an image of a config and two layers, the first omitted.
    pub fn sample() -> (Vec<u8>, Metadata) {
        let config = b"{\"a\":1}".to_vec();
        let l1 = b"layer one".to_vec();
        let l2 = b"layer two".to_vec();
        let (cd, d1, d2) = (Digest::of(&config), Digest::of(&l1), Digest::of(&l2));
        let m = image_json(Some(manifest::OCI_MANIFEST), &cd, &[(&d1, 9), (&d2, 9)]);
        let desc = |mt: &str, d: &Digest, size: usize| Descriptor {
            media_type: mt.into(),
            digest: d.clone(),
            size: size as u64,
            platform: None,
            annotations: Default::default(),
        };
        let md = desc(manifest::OCI_MANIFEST, &Digest::of(&m), m.len());
        let meta = Metadata {
            imo_archive_version: FORMAT_VERSION,
            images: vec![Image {
                reference: "r.io/app:v2".into(),
                manifest: md.digest.clone(),
                attached: vec![],
            }],
            bases: vec![Base {
                reference: "r.io/app:v1".into(),
                digest: None,
            }],
            inventories: vec![],
            manifests: vec![md.clone()],
            blobs: vec![
                desc(
                    "application/vnd.oci.image.config.v1+json",
                    &cd,
                    config.len(),
                ),
                desc("application/vnd.oci.image.layer.v1.tar+gzip", &d2, 9),
            ],
            omitted: vec![desc("application/vnd.oci.image.layer.v1.tar+gzip", &d1, 9)],
            held_in: BTreeMap::new(),
            deltas: vec![],
        };
        let mut w = tar::Writer::new(Vec::new());
        w.file(LAYOUT_FILE, LAYOUT_CONTENT).unwrap();
        w.file(METADATA_FILE, &serde_json::to_vec(&meta).unwrap())
            .unwrap();
        w.file(INDEX_FILE, &index_json(&meta)).unwrap();
        w.file(&blob_path(&md.digest), &m).unwrap();
        w.file(&blob_path(&cd), &config).unwrap();
        w.file(&blob_path(&d2), &l2).unwrap();
        w.finish().unwrap();
        (w.written_into(), meta)
    }

    /// An archive's entries, path and bytes, in order.
    pub type Entries = Vec<(String, Vec<u8>)>;

    /// The [`sample`] archive with its entries changed by `f`.
    pub fn rewritten(f: &dyn Fn(&mut Entries)) -> Vec<u8> {
        let (bytes, _) = sample();
        let mut entries = Vec::new();
        let mut r = tar::Reader::new(&bytes[..]);
        while let Some(e) = r.next_entry().unwrap() {
            let data = r.read_small(&e, 1 << 20).unwrap();
            entries.push((e.path, data));
        }
        f(&mut entries);
        let mut w = tar::Writer::new(Vec::new());
        for (p, d) in &entries {
            w.file(p, d).unwrap();
        }
        w.finish().unwrap();
        w.into_parts().0
    }

    impl tar::Writer<Vec<u8>> {
        fn written_into(self) -> Vec<u8> {
            let (v, _) = self.into_parts();
            v
        }
    }
}
