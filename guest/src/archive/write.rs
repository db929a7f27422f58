//! Writing an archive: everything before the blobs ([`write_head`]), including the
//! `index.json` that OCI tools read it by.

use super::format::*;
use crate::manifest::{self, Descriptor};
use crate::plan::Fetched;
use crate::tar;
use std::io::Write;

/// Writes everything before the blobs: `oci-layout`, `imo.json`, `index.json` and the
/// manifests.
pub fn write_head<W: Write>(
    w: &mut tar::Writer<W>,
    meta: &Metadata,
    manifests: &[Fetched],
) -> std::io::Result<()> {
    w.file(LAYOUT_FILE, LAYOUT_CONTENT)?;
    w.file(
        METADATA_FILE,
        &serde_json::to_vec_pretty(meta).expect("metadata serialises"),
    )?;
    w.file(INDEX_FILE, &index_json(meta))?;
    for m in manifests {
        w.file(&blob_path(&m.descriptor.digest), &m.bytes)?;
    }
    Ok(())
}

/// The tag of a reference (`r.io/app:v2` gives `v2`), or of an `oci:DIR:TAG` location.
fn tag_of(reference: &str) -> Option<String> {
    crate::reference::Location::parse(reference)
        .ok()
        .and_then(|l| l.tag().map(str::to_owned))
}

/// The `index.json` of an archive: one entry per image, annotated with its reference and
/// bases. `ref.name` is the image's tag, as skopeo and other OCI tools look images up by it,
/// unless two images share a tag.
pub fn index_json(meta: &Metadata) -> Vec<u8> {
    let tags: Vec<Option<String>> = meta.images.iter().map(|i| tag_of(&i.reference)).collect();
    let unique = |t: &String| tags.iter().flatten().filter(|x| *x == t).count() == 1;
    let entries: Vec<Descriptor> = meta
        .images
        .iter()
        .zip(&tags)
        .map(|(image, tag)| {
            let mut top = meta.top(image).clone();
            top.platform = None;
            if let Some(tag) = tag.as_ref().filter(|t| unique(t)) {
                top.annotations.insert(REF_NAME.into(), tag.clone());
            }
            top.annotations
                .insert(ANNOTATION_FINAL.into(), image.reference.clone());
            top.annotations
                .insert(ANNOTATION_BASE.into(), meta.base_description());
            if let [
                Base {
                    digest: Some(d), ..
                },
            ] = meta.bases.as_slice()
            {
                top.annotations
                    .insert(ANNOTATION_BASE_DIGEST.into(), d.to_string());
            }
            top
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": entries,
    });
    serde_json::to_vec(&index).expect("serialising JSON values cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::sample;

    #[test]
    fn index_json_names_each_image_and_tags_only_unique_ones() {
        let (_, mut meta) = sample();
        let first = meta.images[0].clone();
        meta.images.push(Image {
            reference: "r.io/db:v2".into(),
            ..first
        });
        let index: serde_json::Value = serde_json::from_slice(&index_json(&meta)).unwrap();
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e["annotations"][REF_NAME].is_null()));
        assert_eq!(entries[1]["annotations"][ANNOTATION_FINAL], "r.io/db:v2");
        meta.images[1].reference = "r.io/db:v3".into();
        let index: serde_json::Value = serde_json::from_slice(&index_json(&meta)).unwrap();
        assert_eq!(index["manifests"][0]["annotations"][REF_NAME], "v2");
        assert_eq!(index["manifests"][1]["annotations"][REF_NAME], "v3");
    }
}
