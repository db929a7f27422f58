//! Manifest and index parsing: `Manifest::parse` under every media type hint a registry or a
//! parent descriptor may give, the accessors, and platform selection over what parses.
#![no_main]

use imo_guest::manifest::{
    self, DOCKER_LIST, DOCKER_MANIFEST, Descriptor, Manifest, OCI_INDEX, OCI_MANIFEST,
};
use imo_guest::platform::{self, PlatformSpec, Selection};
use libfuzzer_sys::fuzz_target;

const HINTS: [Option<&str>; 7] = [
    None,
    Some(OCI_MANIFEST),
    Some(OCI_INDEX),
    Some(DOCKER_MANIFEST),
    Some(DOCKER_LIST),
    Some(""),
    Some("application/octet-stream"),
];

fuzz_target!(|data: &[u8]| {
    let declared = manifest::declared_media_type(data);
    if let Some(t) = &declared {
        let _ = manifest::is_manifest_type(t);
    }
    let unhinted = Manifest::parse(data, None);
    for hint in HINTS {
        let parsed = Manifest::parse(data, hint);
        let Ok(m) = &parsed else { continue };
        // The mediaType inside the bytes wins over any hint.
        if declared.is_some() {
            assert_eq!(
                &parsed, &unhinted,
                "hint {hint:?} changed a declared manifest"
            );
        }
        check(data, m);
    }
});

fn check(bytes: &[u8], m: &Manifest) {
    match m {
        Manifest::Image { config, layers } => {
            assert!(m.children().is_empty());
            let blobs: Vec<&Descriptor> = m.blobs().collect();
            assert_eq!(blobs.len(), layers.len() + 1);
            assert_eq!(blobs[0], config);
        }
        Manifest::Index { manifests } => {
            assert_eq!(m.blobs().count(), 0);
            assert_eq!(m.children(), &manifests[..]);
            select(bytes, manifests);
        }
    }
    // Descriptors are written back out (layouts, archives): they must read back the same.
    for d in m.blobs().chain(m.children()) {
        let json = serde_json::to_vec(d).expect("a descriptor serialises");
        let back: Descriptor = serde_json::from_slice(&json).expect("and reads back");
        assert_eq!(&back, d);
    }
}

/// Platform selection works on the raw index bytes beside the parsed children.
fn select(bytes: &[u8], children: &[Descriptor]) {
    let specs: Vec<PlatformSpec> = ["linux/amd64", "linux/arm64/v8", "windows/amd64"]
        .iter()
        .map(|s| PlatformSpec::parse(s).expect("valid spec"))
        .collect();
    for d in children {
        let _ = platform::describe(&d.platform);
    }
    for n in 1..=specs.len() {
        match platform::select(bytes, OCI_INDEX, children, &specs[..n]) {
            Ok(Selection::One(d)) => assert!(children.contains(&d)),
            Ok(Selection::Subset { bytes, descriptor }) => {
                assert_eq!(descriptor.size, bytes.len() as u64);
                let sub = Manifest::parse(&bytes, Some(OCI_INDEX))
                    .expect("a subset of an index is an index");
                assert!(sub.children().len() >= 2);
                assert!(sub.children().iter().all(|c| children.contains(c)));
            }
            Err(e) => assert!(!e.is_empty()),
        }
    }
}
