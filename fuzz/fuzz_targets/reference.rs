//! Image references and locations: `Reference::parse`, `Location::parse` and the small
//! parsers beside them must never panic, and what they accept must survive being written
//! out and read back (imo records references as text in archives and reads them again).
#![no_main]

use imo_guest::digest::Digest;
use imo_guest::platform::PlatformSpec;
use imo_guest::reference::{Location, Reference, is_loopback_host};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(r) = Reference::parse(s) {
        check_reference(&r);
    }

    match Location::parse(s) {
        Ok(Location::Registry(r)) => {
            assert!(!s.starts_with("oci:"), "{s:?} became a registry location");
            assert_eq!(Reference::parse(s).as_ref(), Ok(&r), "{s:?}");
            check_reference(&r);
        }
        Ok(Location::OciDir { dir, tag }) => {
            assert!(!dir.is_empty(), "{s:?} gave an empty directory");
            assert_ne!(tag.as_deref(), Some(""), "{s:?} gave an empty tag");
            let written = match &tag {
                Some(t) => format!("oci:{dir}:{t}"),
                None => format!("oci:{dir}"),
            };
            assert_eq!(written, s, "an oci: location is kept as written");
            let again = Location::parse(&written).expect("an oci: location parses again");
            assert_eq!(again, Location::OciDir { dir, tag }, "{s:?}");
        }
        Err(e) => assert!(!e.is_empty()),
    }

    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.as_str(), s);
        assert_eq!(d.hex().len(), 64);
    }
    if let Ok(p) = PlatformSpec::parse(s) {
        let written = match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        };
        assert_eq!(written, s);
    }
    let _ = is_loopback_host(s);
});

/// What must hold for every reference the parser accepts.
fn check_reference(r: &Reference) {
    let written = r.to_string();
    let again = Reference::parse(&written)
        .unwrap_or_else(|e| panic!("{r:?} is written as {written:?}, which does not parse: {e}"));
    assert_eq!(&again, r, "{written:?} parses to something else");
    assert_eq!(again.to_string(), written);
    assert!(!r.registry.is_empty() && !r.repository.is_empty());
    assert_ne!(r.registry, "index.docker.io");
    let key = r.manifest_key();
    match (&r.digest, &r.tag) {
        (Some(d), _) => assert_eq!(key, d.as_str()),
        (None, Some(t)) => assert_eq!(&key, t),
        (None, None) => assert_eq!(key, "latest"),
    }
    assert!(!r.tag_or_latest().is_empty());
    assert!(!r.api_host().is_empty());
    assert_eq!(r.is_loopback(), is_loopback_host(&r.registry));
}
