//! Retries: backoff with jitter, the statuses worth another try, and `Retry-After`.

use super::Client;
use super::http::{Request, Response};
use crate::error::{Error, Result};
use crate::text::printable;

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

/// `Retry-After` in seconds (the HTTP-date form is rare from registries and ignored).
pub fn retry_after_ms(value: Option<&str>) -> Option<u64> {
    value?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.saturating_mul(1000))
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
        let mut waited = 0;
        let mut attempt = 0;
        loop {
            let result = exchange(attempt);
            let (why, after) = match &result {
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
            if !replayable || attempt > retry.attempts || waited + delay > retry.max_wait_ms {
                return result;
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
}
