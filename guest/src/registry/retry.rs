//! Retries: backoff with jitter, the statuses worth another try, and `Retry-After`.

use super::Client;
use super::error::{ERROR_BODY_LIMIT, registry_detail};
use super::http::{Request, Response};
use crate::error::{Error, Result};
use crate::text::printable;
use std::io::Read;

/// How hard to try when the network or the registry fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt; 0 for none.
    pub attempts: u32,
    /// The first delay; each retry doubles it, plus up to as much again of jitter.
    pub base_delay_ms: u64,
    /// No retry starts once this much time has gone into waiting.
    pub max_wait_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            base_delay_ms: 200,
            max_wait_ms: 60_000,
        }
    }
}

impl Retry {
    /// The delay before retry `n` (1-based): exponential, with jitter from `random`.
    pub fn delay_ms(&self, n: u32, random: u64) -> u64 {
        let base = self.base_delay_ms.saturating_mul(1 << (n - 1).min(16));
        base + if base == 0 { 0 } else { random % base }
    }
}

/// The statuses worth another try: the registry is overloaded or briefly broken.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Whether an error answer's text says the server does not implement what was asked, which
/// no retry changes, whatever its status (one registry answers a whole-body `PUT` with `500
/// missing content length not implemented`).
pub fn says_unimplemented(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    ["not implemented", "not supported", "unsupported"]
        .iter()
        .any(|s| d.contains(s))
}

/// Reads the start of an error answer's body for its text, leaving the body whole to read.
pub(super) fn peek_body(resp: &mut Response) -> Vec<u8> {
    let head = resp.read_limited(ERROR_BODY_LIMIT).unwrap_or_default();
    let rest = std::mem::replace(&mut resp.body, Box::new(std::io::empty()));
    resp.body = Box::new(std::io::Cursor::new(head.clone()).chain(rest));
    head
}

/// `Retry-After` in seconds (the HTTP-date form is rare from registries and ignored).
pub fn retry_after_ms(value: Option<&str>) -> Option<u64> {
    value?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.saturating_mul(1000))
}

/// Whether a transport's failure is a timeout (the wasi-http error codes say `Timeout`).
fn timed_out(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("timeout") || m.contains("timed out")
}

impl Client<'_> {
    /// Runs one exchange, again after a delay while it fails with a connection error or a
    /// retryable status, within the retry budget. Every retry is reported.
    pub(super) fn with_retries(
        &self,
        request: &Request,
        replayable: bool,
        exchange: &mut dyn FnMut(u32) -> Result<Response>,
    ) -> Result<Response> {
        let started = self.transport.now();
        let mut waited: u64 = 0;
        let mut attempt = 0;
        loop {
            let mut result = exchange(attempt);
            if let Ok(r) = &mut result
                && retryable_status(r.status)
                && says_unimplemented(&registry_detail(&peek_body(r)))
            {
                // Not a passing failure: the registry lacks what was asked for.
                return result;
            }
            let (why, after) = match &result {
                // A server that refused the TLS handshake will refuse it again.
                Err(Error::Unreachable(e)) if super::speaks_tls(e).is_some() => return result,
                Err(Error::Unreachable(e)) => (printable(e).into_owned(), None),
                Ok(r) if retryable_status(r.status) => (
                    format!("HTTP {}", r.status),
                    retry_after_ms(r.header("retry-after")),
                ),
                _ => return result,
            };
            attempt += 1;
            let retry = self.net.retry;
            let delay = after.unwrap_or_else(|| retry.delay_ms(attempt, self.transport.random()));
            if !replayable
                || attempt > retry.attempts
                || waited.saturating_add(delay) > retry.max_wait_ms
            {
                return result.map_err(|e| self.gave_up(e, started, attempt));
            }
            self.net.report.line(&format!(
                "retrying {} {} in {delay} ms after {why} (retry {attempt} of {})",
                request.method.as_str(),
                printable(&request.url.to_string()),
                retry.attempts
            ));
            drop(result);
            self.transport.sleep_ms(delay);
            waited += delay;
        }
    }

    /// The final error of a request whose tries are used up: after timeouts, it says which
    /// registry stopped answering and for how long, measured with [`super::Transport::now`].
    fn gave_up(&self, e: Error, started: u64, attempts: u32) -> Error {
        match e {
            Error::Unreachable(m) if timed_out(&m) => Error::Unreachable(format!(
                "{m} ({} stopped answering: no answer in {} s over {attempts} attempt(s))",
                self.registry,
                self.transport.now().saturating_sub(started)
            )),
            e => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_with_jitter_and_honour_retry_after() {
        let r = Retry {
            attempts: 3,
            base_delay_ms: 100,
            max_wait_ms: 1000,
        };
        assert_eq!(r.delay_ms(1, 0), 100);
        assert_eq!(r.delay_ms(2, 0), 200);
        assert_eq!(r.delay_ms(3, 50), 450);
        assert!((100..200).contains(&r.delay_ms(1, u64::MAX)));
        assert_eq!(retry_after_ms(Some(" 3 ")), Some(3000));
        assert_eq!(retry_after_ms(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert!(
            retryable_status(503)
                && retryable_status(429)
                && !retryable_status(404)
                && !retryable_status(401)
        );
    }

    /// Every request times out after 30 s, as a host's first-byte timeout would.
    struct Silent {
        now: std::cell::Cell<u64>,
    }

    impl crate::registry::Transport for Silent {
        fn send(
            &self,
            req: &Request,
            _: Option<crate::registry::BodyWriter<'_>>,
        ) -> Result<Response> {
            self.now.set(self.now.get() + 30);
            Err(Error::Unreachable(format!(
                "GET {}: ConnectionReadTimeout",
                req.url
            )))
        }
        fn now(&self) -> u64 {
            self.now.get()
        }
        fn sleep_ms(&self, ms: u64) {
            self.now.set(self.now.get() + ms / 1000);
        }
        fn random(&self) -> u64 {
            0
        }
    }

    #[test]
    fn a_registry_that_stops_answering_is_named_with_how_long() {
        let silent = Silent {
            now: std::cell::Cell::new(1_000_000),
        };
        let net = crate::registry::Net {
            retry: Retry {
                attempts: 2,
                base_delay_ms: 1000,
                max_wait_ms: 60_000,
            },
            ..crate::registry::Net::testing(0, 0, &|_: &str| {})
        };
        let reference = crate::reference::Reference::parse("r.io/app").unwrap();
        let access = crate::registry::Access::pull();
        let e = Client::connect(&silent, &reference, None, access, &[], net)
            .err()
            .unwrap()
            .to_string();
        // Three tries of 30 s, and 1 s and 2 s between them.
        assert!(
            e.contains("r.io stopped answering: no answer in 93 s over 3 attempt(s)"),
            "{e}"
        );
        assert!(timed_out("Connection timed out") && !timed_out("connection refused"));
    }

    /// Answers every request with a 503 and the next `Retry-After`, logging each sleep.
    struct Later {
        after: std::cell::RefCell<Vec<&'static str>>,
        slept: std::cell::RefCell<Vec<u64>>,
    }

    impl crate::registry::Transport for Later {
        fn send(
            &self,
            _: &Request,
            _: Option<crate::registry::BodyWriter<'_>>,
        ) -> Result<Response> {
            let after = self.after.borrow_mut().remove(0);
            Ok(Response {
                status: 503,
                headers: vec![("retry-after".into(), after.into())],
                body: Box::new(std::io::empty()),
            })
        }
        fn now(&self) -> u64 {
            0
        }
        fn sleep_ms(&self, ms: u64) {
            self.slept.borrow_mut().push(ms);
        }
        fn random(&self) -> u64 {
            0
        }
    }

    #[test]
    fn a_retry_after_of_u64_max_gives_up_rather_than_wrapping_into_a_wait() {
        let later = Later {
            after: std::cell::RefCell::new(vec!["1", "18446744073709551615", "1"]),
            slept: Default::default(),
        };
        let report = |_: &str| {};
        let net = crate::registry::Net {
            retry: Retry::default(),
            report: &report,
            chunk_size: 0,
        };
        let reference = crate::reference::Reference::parse("r.io/app").unwrap();
        let access = crate::registry::Access::pull();
        let e = Client::connect(&later, &reference, None, access, &[], net).err();
        assert!(e.is_some());
        assert_eq!(later.slept.into_inner(), [1000]);
    }

    /// Answers every request with a 500 and this text, counting them.
    struct Failing {
        text: &'static str,
        sent: std::cell::Cell<u32>,
    }

    impl crate::registry::Transport for Failing {
        fn send(
            &self,
            _: &Request,
            _: Option<crate::registry::BodyWriter<'_>>,
        ) -> Result<Response> {
            self.sent.set(self.sent.get() + 1);
            Ok(Response {
                status: 500,
                headers: vec![],
                body: Box::new(std::io::Cursor::new(self.text.as_bytes())),
            })
        }
        fn now(&self) -> u64 {
            0
        }
        fn sleep_ms(&self, _: u64) {}
        fn random(&self) -> u64 {
            0
        }
    }

    #[test]
    fn a_500_saying_a_feature_is_missing_is_not_retried() {
        let report = |_: &str| {};
        for (text, tries) in [
            ("missing content length not implemented", 1),
            ("disk full", 3),
        ] {
            let failing = Failing {
                text,
                sent: Default::default(),
            };
            let net = crate::registry::Net::testing(2, 60_000, &report);
            let reference = crate::reference::Reference::parse("r.io/app").unwrap();
            let access = crate::registry::Access::pull();
            let e = Client::connect(&failing, &reference, None, access, &[], net)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("HTTP 500") && e.contains(text), "{e}");
            assert_eq!(failing.sent.get(), tries, "{text}");
        }
    }

    /// A registry whose token service refuses the TLS handshake, counting token requests.
    struct UntrustedRealm {
        token_requests: std::cell::Cell<u32>,
    }

    impl crate::registry::Transport for UntrustedRealm {
        fn send(
            &self,
            request: &Request,
            _: Option<crate::registry::BodyWriter<'_>>,
        ) -> Result<Response> {
            if request.url.authority == "auth.r.io" {
                self.token_requests.set(self.token_requests.get() + 1);
                return Err(Error::Unreachable(
                    "TLS handshake failed: auth.r.io speaks TLS with a certificate that is not \
                     trusted: invalid peer certificate: UnknownIssuer"
                        .into(),
                ));
            }
            Ok(Response {
                status: 401,
                headers: vec![(
                    "www-authenticate".into(),
                    r#"Bearer realm="https://auth.r.io/token",service="r.io""#.into(),
                )],
                body: Box::new(std::io::empty()),
            })
        }
        fn now(&self) -> u64 {
            0
        }
        fn sleep_ms(&self, _: u64) {}
        fn random(&self) -> u64 {
            0
        }
    }

    #[test]
    fn a_token_service_that_refuses_the_handshake_is_asked_once() {
        let realm = UntrustedRealm {
            token_requests: Default::default(),
        };
        let net = crate::registry::Net::testing(4, 60_000, &|_: &str| {});
        let reference = crate::reference::Reference::parse("r.io/app").unwrap();
        let access = crate::registry::Access::pull();
        let e = Client::connect(&realm, &reference, None, access, &[], net)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not trusted") && e.contains("--cert-dir"), "{e}");
        assert_eq!(realm.token_requests.get(), 1, "{e}");
    }
}
