//! The one retry policy for every call to a remote system: exponential backoff with
//! jitter (backon), only for errors that say they are transient, and never sooner
//! than the server asked with `Retry-After`.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// What the retry loop needs to know about an error.
pub trait Transient {
    /// Connect errors, timeouts, 429 and 5xx: worth another attempt.
    fn is_transient(&self) -> bool;
    /// The server's `Retry-After`, when it sent one.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is capped, so one server cannot park a run.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// No waiting between attempts; for tests that exercise the retry rules.
    pub fn immediate(max_retries: usize) -> Self {
        RetryPolicy {
            max_retries,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retry_after: Duration::from_millis(50),
        }
    }
}

/// Runs `op` until it succeeds, fails permanently, or the retries run out.
/// `on_retry` is told about every transient failure that will be retried, with the
/// delay before the next attempt (for logs and retry counters).
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    op: F,
    mut on_retry: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Transient,
{
    let backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries);
    let max_retry_after = policy.max_retry_after;
    op.retry(backoff)
        .when(|e: &E| e.is_transient())
        // backon ends the loop when the backoff is exhausted (`None`); a Retry-After
        // only stretches a delay that was going to happen anyway. It never shortens
        // one: `Retry-After: 0`, or a date already past on a skewed clock, would
        // otherwise send every retry back to back.
        .adjust(move |e: &E, delay| {
            delay.map(|d| match e.retry_after() {
                Some(asked) => asked.min(max_retry_after).max(d),
                None => d,
            })
        })
        .notify(|e: &E, delay| on_retry(e, delay))
        .await
}

/// Parses a `Retry-After` header value: delay-seconds or an HTTP-date.
/// `now` is passed in so the result is testable.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug)]
    struct Failure {
        transient: bool,
        retry_after: Option<Duration>,
    }

    impl Transient for Failure {
        fn is_transient(&self) -> bool {
            self.transient
        }
        fn retry_after(&self) -> Option<Duration> {
            self.retry_after
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = Cell::new(0);
        let result: Result<u32, Failure> = retry(
            RetryPolicy::immediate(5),
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Err(Failure {
                            transient: true,
                            retry_after: None,
                        })
                    } else {
                        Ok(n)
                    }
                }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(result.ok(), Some(3));
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = Cell::new(0);
        let result: Result<(), Failure> = retry(
            RetryPolicy::immediate(5),
            || {
                calls.set(calls.get() + 1);
                async {
                    Err(Failure {
                        transient: false,
                        retry_after: None,
                    })
                }
            },
            |_, _| {},
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_of_zero_keeps_the_backoff() {
        let mut delays = Vec::new();
        let policy = RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
        };
        let _: Result<(), Failure> = retry(
            policy,
            || async {
                Err(Failure {
                    transient: true,
                    retry_after: Some(Duration::ZERO),
                })
            },
            |_, d| delays.push(d),
        )
        .await;
        assert_eq!(delays.len(), 3);
        assert!(
            delays.iter().all(|d| *d >= Duration::from_millis(200)),
            "{delays:?}"
        );
    }

    #[tokio::test]
    async fn retry_after_stretches_the_delay_but_never_past_the_cap_or_the_budget() {
        let mut delays = Vec::new();
        let calls = Cell::new(0);
        let result: Result<(), Failure> = retry(
            RetryPolicy::immediate(2),
            || {
                calls.set(calls.get() + 1);
                async {
                    Err(Failure {
                        transient: true,
                        retry_after: Some(Duration::from_secs(3600)),
                    })
                }
            },
            |_, d| delays.push(d),
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 3, "one attempt plus two retries");
        assert_eq!(delays, vec![Duration::from_millis(50); 2]);
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 29 Nov 2026 10:00:00 GMT")
            .unwrap_or(std::time::UNIX_EPOCH);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
