//! What a registry's authentication answers are read with: the `WWW-Authenticate`
//! challenge parser and the token service's JSON. Both see text from any server imo talks to.
#![no_main]

use imo_guest::auth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Header values reach the parser as text; wasi-http hands over bytes, which the
    // component reads lossily.
    let header = String::from_utf8_lossy(data);
    let challenges = auth::parse_challenges(&header);
    assert!(challenges.len() <= header.len());
    for c in &challenges {
        assert!(!c.scheme.is_empty());
        assert_eq!(c.scheme, c.scheme.to_ascii_lowercase());
        for (k, v) in &c.params {
            assert!(!k.is_empty());
            assert_eq!(k, &k.to_ascii_lowercase());
            assert_eq!(c.param(k), Some(v.as_str()));
            // Token requests carry parameters in the query string.
            let escaped = auth::query_escape(v);
            assert!(escaped.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
    // A trailing comma ends nothing more: the answer is the same with one added (outside
    // quotes, where an unterminated string would swallow it).
    if !header.contains('"') && !header.ends_with(',') {
        let mut more = header.clone().into_owned();
        more.push(',');
        assert_eq!(auth::parse_challenges(&more), challenges, "{header:?}");
    }

    match auth::parse_token_response(data) {
        Ok(t) => assert!(!t.token.is_empty()),
        Err(e) => assert!(!e.is_empty()),
    }
    let basic = auth::basic(&header, "");
    assert!(basic.starts_with("Basic "));
});
