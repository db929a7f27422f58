// Hidden setup shared by the doc tests of crate `imo` (each pulls it in with `include!`):
// small OCI image layouts on disk, as skopeo or buildah write them, so that the examples run
// with no registry at all. Not part of the crate.

/// A fresh, empty directory for one example, under the system's temporary directory.
#[allow(dead_code)]
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("imo-doc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Writes an image with one small layer per name in `layers` into the OCI layout `dir`
/// (created if need be), tagged `tag`, and returns its reference, `oci:DIR:TAG`. The same
/// layer name gives the same layer bytes, so two images can share layers.
#[allow(dead_code)]
fn layout(dir: &std::path::Path, tag: &str, layers: &[&str]) -> String {
    use sha2::Digest as _;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("a layout directory");
    let put = |data: &[u8]| -> serde_json::Value {
        let hex: String = sha2::Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(blobs.join(&hex), data).expect("a blob");
        serde_json::json!({"digest": format!("sha256:{hex}"), "size": data.len()})
    };
    let with_type = |mut d: serde_json::Value, media_type: &str| {
        d["mediaType"] = media_type.into();
        d
    };
    let layers: Vec<_> = layers
        .iter()
        .map(|name| {
            let bytes = format!("the layer named {name}\n").repeat(64);
            with_type(
                put(bytes.as_bytes()),
                "application/vnd.oci.image.layer.v1.tar",
            )
        })
        .collect();
    let diff_ids: Vec<_> = layers.iter().map(|l| l["digest"].clone()).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": with_type(config, "application/vnd.oci.image.config.v1+json"),
        "layers": layers,
    });
    let mut top = with_type(
        put(manifest.to_string().as_bytes()),
        "application/vnd.oci.image.manifest.v1+json",
    );
    top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let index_path = dir.join("index.json");
    let mut index = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
    index["manifests"]
        .as_array_mut()
        .expect("manifests")
        .push(top);
    std::fs::write(&index_path, index.to_string()).expect("index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    format!("oci:{}:{tag}", dir.display())
}
