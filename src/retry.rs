//! The one retry policy for every call to a remote system: exponential backoff with
//! jitter (backon), only for errors that say they are transient, and never sooner
//! than the server asked with `Retry-After`.
//!
//! Retrying is never silent: the first failure of a request is logged at warn with
//! its error (which names the endpoint and server) and how long the retries may
//! take, later ones at debug, and a request that runs out of retries says so with
//! its last error. Against a workspace that is down or a wrong port, the operator
//! sees at once what the next 20 s are spent on.

use std::fmt::Display;
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

    /// The longest all the retries of one request wait in all: each delay of the
    /// exponential backoff doubled by the most its jitter adds. A `Retry-After`
    /// may stretch it, and the attempts themselves take their time.
    pub fn longest_backoff(&self) -> Duration {
        let mut delay = self.min_delay;
        let mut total = Duration::ZERO;
        for _ in 0..self.max_retries {
            total = total.saturating_add(delay.min(self.max_delay).saturating_mul(2));
            delay = delay.saturating_mul(2);
        }
        total
    }
}

/// Runs `op` until it succeeds, fails permanently, or the retries run out, and
/// logs the retries (see the module docs). `on_retry` is told about every
/// transient failure that will be retried, with the delay before the next attempt
/// (for retry counters and the caller's own context).
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    op: F,
    mut on_retry: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Transient + Display,
{
    let started = tokio::time::Instant::now();
    let mut retries = 0usize;
    let backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries);
    let max_retry_after = policy.max_retry_after;
    let result = op
        .retry(backoff)
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
        .notify(|e: &E, delay| {
            retries += 1;
            if retries == 1 {
                let longest = policy.longest_backoff();
                tracing::warn!(
                    error = %e,
                    retries = policy.max_retries,
                    longest_wait_s = longest.as_secs(),
                    "request failed; retrying up to {} times over at most {} s",
                    policy.max_retries,
                    longest.as_secs().max(1),
                );
            } else {
                tracing::debug!(error = %e, retry = retries, ?delay, "request failed again; retrying");
            }
            on_retry(e, delay)
        })
        .await;
    if let Err(e) = &result
        && retries > 0
        && e.is_transient()
    {
        let elapsed = started.elapsed();
        tracing::warn!(
            error = %e,
            attempts = retries + 1,
            elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "request failed {} times in {:.1} s; giving up",
            retries + 1,
            elapsed.as_secs_f64(),
        );
    }
    result
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

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("GET /ServiceProviderConfig: connection refused")
        }
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

    /// What `run` logs at debug and above, as text.
    async fn logged<T>(run: impl Future<Output = T>) -> (T, String) {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if let Ok(mut bytes) = self.0.lock() {
                    bytes.extend_from_slice(buf);
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let out = run.await;
        let text = buffer
            .0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        (out, text)
    }

    /// The operator sees the first failure at once (warn, the default level shows
    /// it) with what is retried and for how long, later ones only at debug, and the
    /// end of the retries with the last error.
    #[tokio::test(start_paused = true)]
    async fn retries_are_logged_first_at_warn_then_at_debug_and_the_end_at_warn() {
        let (result, log) = logged(retry(
            RetryPolicy::default(),
            || async {
                Err::<(), _>(Failure {
                    transient: true,
                    retry_after: None,
                })
            },
            |_, _| {},
        ))
        .await;
        assert!(result.is_err());
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 7, "{log}");
        assert!(
            lines[0].contains("WARN")
                && lines[0].contains("GET /ServiceProviderConfig: connection refused")
                && lines[0].contains("retrying up to 6 times over at most 25 s"),
            "{log}"
        );
        assert!(lines[1..6].iter().all(|l| l.contains("DEBUG")), "{log}");
        assert!(
            lines[6].contains("WARN")
                && lines[6].contains("request failed 7 times")
                && lines[6].contains("giving up")
                && lines[6].contains("connection refused"),
            "{log}"
        );
    }

    /// A request that succeeds first time, or fails for good, has no retry to tell.
    #[tokio::test]
    async fn nothing_is_logged_without_a_retry() {
        let (_, log) = logged(retry(
            RetryPolicy::immediate(3),
            || async {
                Err::<(), _>(Failure {
                    transient: false,
                    retry_after: None,
                })
            },
            |_, _| {},
        ))
        .await;
        assert_eq!(log, "");
    }

    #[test]
    fn the_longest_backoff_is_every_delay_at_its_largest_jitter() {
        // 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 6.4 s, each doubled at most by the jitter.
        assert_eq!(
            RetryPolicy::default().longest_backoff(),
            Duration::from_millis(25_200)
        );
        let capped = RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_secs(20),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        };
        assert_eq!(capped.longest_backoff(), Duration::from_secs(160));
        assert_eq!(RetryPolicy::immediate(0).longest_backoff(), Duration::ZERO);
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
