//! The one retry policy for every call to a remote system: exponential backoff with
//! jitter (backon), only for errors that say they are transient, and never sooner
//! than the server asked with `Retry-After`.
//!
//! Retrying is never silent: [`RetryLog`] logs the first failure of a request at
//! warn with its endpoint, its error and how long the retries may wait (or the
//! wait the server's `Retry-After` sets, and that it was cut to
//! [`RetryPolicy::max_retry_after`] when it asked for more), later
//! ones at debug, and a request that runs out of retries at warn. Against a
//! workspace that is down or a wrong port, the operator sees at once what the
//! next 20 s are spent on. The callers log from their `on_retry` closures and
//! after [`retry`] returns, never inside it: state and logging inside the retried
//! future made it, and every future that awaits it, bigger, and a debug build ran
//! out of stack in the deepest of them (the apply loop).
//!
//! Stopping ([`retry_unless_stopped`]): a write's retries watch the process's
//! [`StopSignal`]. Once it is set, the wait before the next attempt ends at once
//! and no attempt is retried; the attempt under way, which may already have
//! reached the server, is never cut. Against a workspace answering 429 or 503
//! with a long `Retry-After`, SIGTERM took effect only after every retry of the
//! write under way (six minutes at a `Retry-After` of 60 s, past systemd's
//! 90 s before SIGKILL). Reads are given no stop (`crate::workspace`): a read
//! cut short would leave a plan, or a verification, with part of the workspace.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::apply::StopSignal;

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
    /// exponential backoff at most doubled by its jitter. A `Retry-After` may
    /// stretch it, and the attempts themselves take their time.
    pub fn longest_backoff(&self) -> Duration {
        let mut delay = self.min_delay;
        let mut total = Duration::ZERO;
        for done in 0..self.max_retries {
            if delay >= self.max_delay {
                // Every delay left is the longest: counted one by one, a
                // `workspace.retries` in the billions spun here for good.
                let longest = self.max_delay.saturating_mul(2);
                let rest = match u32::try_from(self.max_retries - done) {
                    Ok(left) => longest.saturating_mul(left),
                    // Over four billion waits of a positive delay: past any clock.
                    Err(_) if !longest.is_zero() => Duration::MAX,
                    Err(_) => Duration::ZERO,
                };
                return total.saturating_add(rest);
            }
            total = total.saturating_add(delay.saturating_mul(2));
            delay = delay.saturating_mul(2);
        }
        total
    }
}

/// What the log says of one request's retries (see the module docs). Made before
/// [`retry`], told of each retry from its `on_retry` and of the outcome after it.
#[derive(Debug, Default)]
pub struct RetryLog {
    retries: usize,
}

impl RetryLog {
    /// A transient failure of the request to `endpoint` that will be retried in
    /// `delay`.
    pub fn retrying<E: Transient + Display>(
        &mut self,
        endpoint: &str,
        policy: &RetryPolicy,
        error: &E,
        delay: Duration,
    ) {
        self.retries += 1;
        if self.retries == 1 {
            tracing::warn!(
                endpoint,
                "{}",
                first_failure_message(policy, error, delay, error.retry_after())
            );
        } else {
            tracing::debug!(
                endpoint,
                retry = self.retries,
                delay_ms = millis(delay),
                "{error}; retrying"
            );
        }
    }

    /// How the request ended: a transient failure after retries means they ran out.
    pub fn finished<T, E: Transient + Display>(&self, endpoint: &str, outcome: &Result<T, E>) {
        match outcome {
            Err(error) if self.retries > 0 && error.is_transient() => tracing::warn!(
                endpoint,
                attempts = self.retries + 1,
                "{}",
                given_up_message(self.retries, error)
            ),
            Ok(_) if self.retries > 0 => tracing::debug!(
                endpoint,
                retries = self.retries,
                "request succeeded after retrying"
            ),
            _ => {}
        }
    }
}

// The callers' errors name their endpoint ("GET /Users: …"); the `endpoint` field
// carries it for log searches. A `Retry-After` that sets the wait (`asked`, as the
// server sent it) is said instead of the backoff's total, which it may stretch to
// minutes: "at most 26 s in all" over a 60 s wait sent the operator looking for a
// hang; and one past `max_retry_after` is said to be cut short.
fn first_failure_message(
    policy: &RetryPolicy,
    error: &dyn Display,
    delay: Duration,
    asked: Option<Duration>,
) -> String {
    let retries = policy.max_retries;
    match asked {
        Some(asked) if asked.min(policy.max_retry_after) >= delay => {
            let first = seconds(delay);
            if asked > policy.max_retry_after {
                format!(
                    "{error}; retrying up to {retries} times, the first in {first} s: the \
                     server asked for {} s (Retry-After), longer than the {} s seatwarden \
                     waits for it",
                    seconds(asked),
                    seconds(policy.max_retry_after)
                )
            } else {
                format!(
                    "{error}; retrying up to {retries} times, the first in {first} s as the \
                     server asked (Retry-After)"
                )
            }
        }
        _ => {
            // Rounded up: "at most 0 s" would read as no wait at all.
            let longest = policy.longest_backoff().as_secs_f64().ceil();
            format!(
                "{error}; retrying up to {retries} times, waiting at most {longest:.0} s in all"
            )
        }
    }
}

/// Whole seconds, rounded up ("0 s" would read as no wait).
fn seconds(delay: Duration) -> u64 {
    delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
}

fn given_up_message(retries: usize, error: &dyn Display) -> String {
    format!("{error}; giving up after {} attempts", retries + 1)
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

/// Runs `op` until it succeeds, fails permanently, or the retries run out.
/// `on_retry` is told about every transient failure that will be retried, with the
/// delay before the next attempt (for the [`RetryLog`] and retry counters).
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    op: F,
    on_retry: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Transient,
{
    retry_unless_stopped(policy, None, op, on_retry, std::convert::identity).await
}

/// [`retry`], except that once `stop` is set no attempt is retried: a wait
/// between two attempts ends at once, and `stopped` turns the last attempt's
/// error into the one returned. An attempt under way is never cut (a write may
/// have reached the server): it ends as it would have, and only the retry it
/// would have earned is not made. Without a `stop`, exactly [`retry`].
///
/// `on_retry` is told before the wait (the log says at once what the wait is
/// for), so a stop that ends the wait withdraws a retry it was told of: retries
/// are counted where `op` makes them, not in `on_retry`. Counted there, every
/// write a stop cut short counted one retry too many.
pub async fn retry_unless_stopped<T, E, F, Fut>(
    policy: RetryPolicy,
    stop: Option<&StopSignal>,
    mut op: F,
    mut on_retry: impl FnMut(&E, Duration),
    stopped: impl FnOnce(E) -> E,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Transient,
{
    // backon caps only the delays after the first: a `min_delay` above `max_delay`
    // (`workspace.retry_delay = "5m"`) made the first wait up to twice that, past
    // the "at most 30 s" a retry waits and the longest wait the log announces.
    let mut delays = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(policy.min_delay.min(policy.max_delay))
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .build();
    loop {
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if !error.is_transient() {
            return Err(error);
        }
        // The loop ends when the backoff is exhausted; a Retry-After only
        // stretches a delay that was going to happen anyway. It never shortens
        // one: `Retry-After: 0`, or a date already past on a skewed clock, would
        // otherwise send every retry back to back.
        let Some(delay) = delays.next() else {
            return Err(error);
        };
        let delay = match error.retry_after() {
            Some(asked) => asked.min(policy.max_retry_after).max(delay),
            None => delay,
        };
        if stop.is_some_and(StopSignal::is_stopped) {
            return Err(stopped(error));
        }
        on_retry(&error, delay);
        if !waited(delay, stop).await {
            return Err(stopped(error));
        }
    }
}

/// Sleeps `delay`; false when `stop` was set first.
async fn waited(delay: Duration, stop: Option<&StopSignal>) -> bool {
    match stop {
        None => {
            tokio::time::sleep(delay).await;
            true
        }
        Some(stop) => tokio::select! {
            () = stop.stopped() => false,
            () = tokio::time::sleep(delay) => true,
        },
    }
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

/// What `run` logs at debug and above, as text: for tests of what the log says.
#[cfg(test)]
pub(crate) async fn logged<T>(run: impl Future<Output = T>) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut buffer) = self.0.lock() {
                buffer.extend_from_slice(bytes);
            }
            Ok(bytes.len())
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
    let out = {
        let _guard = tracing::subscriber::set_default(subscriber);
        run.await
    };
    let text = buffer
        .0
        .lock()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    (out, text)
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

    /// The first failure says what is retried, why and for how long at most; the
    /// end of the retries says how many attempts failed and the last error.
    #[test]
    fn the_retry_messages_name_the_endpoint_the_error_and_the_longest_wait() {
        let refused = "GET /Users: error sending request: connection refused";
        assert_eq!(
            first_failure_message(
                &RetryPolicy::default(),
                &refused,
                Duration::from_millis(300),
                None
            ),
            "GET /Users: error sending request: connection refused; retrying up to 6 times, \
             waiting at most 26 s in all"
        );
        assert_eq!(
            given_up_message(6, &refused),
            "GET /Users: error sending request: connection refused; giving up after 7 attempts"
        );
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("GET /Users: connection refused")
        }
    }

    async fn failing(transient: bool, log: &mut RetryLog) -> Result<(), Failure> {
        let policy = RetryPolicy::immediate(3);
        let outcome = retry(
            policy,
            || async {
                Err::<(), _>(Failure {
                    transient,
                    retry_after: None,
                })
            },
            |e, delay| log.retrying("GET /Users", &policy, e, delay),
        )
        .await;
        log.finished("GET /Users", &outcome);
        outcome
    }

    /// The operator sees the first failure at once (warn, shown by default), later
    /// ones only at debug, and the end of the retries at warn with the last error.
    #[tokio::test]
    async fn retries_are_logged_first_at_warn_then_at_debug_and_the_end_at_warn() {
        let mut log = RetryLog::default();
        let (outcome, text) = logged(failing(true, &mut log)).await;
        assert!(outcome.is_err());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].contains("WARN")
                && lines[0].contains("GET /Users: connection refused; retrying up to 3 times"),
            "{text}"
        );
        assert!(lines[1..3].iter().all(|l| l.contains("DEBUG")), "{text}");
        assert!(
            lines[3].contains("WARN")
                && lines[3].contains("connection refused; giving up after 4 attempts"),
            "{text}"
        );
    }

    /// The first warning says the wait a `Retry-After` sets, and that one longer
    /// than `max_retry_after` is cut to it; it said "at most 26 s in all" over
    /// waits of two minutes each. A `Retry-After` the backoff outlasts changes
    /// nothing.
    #[tokio::test(start_paused = true)]
    async fn the_first_warning_says_the_wait_a_retry_after_sets_and_its_cap() {
        let policy = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        let warning = |asked: Option<Duration>| async move {
            let mut log = RetryLog::default();
            let (_, text) = logged(async {
                let outcome: Result<(), Failure> = retry(
                    policy,
                    || async {
                        Err(Failure {
                            transient: true,
                            retry_after: asked,
                        })
                    },
                    |e, delay| log.retrying("GET /Users", &policy, e, delay),
                )
                .await;
                log.finished("GET /Users", &outcome);
            })
            .await;
            text.lines()
                .find(|line| line.contains("WARN"))
                .unwrap_or_default()
                .to_owned()
        };
        let hour = warning(Some(Duration::from_secs(3600))).await;
        assert!(
            hour.contains(
                "retrying up to 2 times, the first in 120 s: the server asked for 3600 s \
                 (Retry-After), longer than the 120 s seatwarden waits for it"
            ),
            "{hour}"
        );
        let minute = warning(Some(Duration::from_secs(60))).await;
        assert!(
            minute.contains(
                "retrying up to 2 times, the first in 60 s as the server asked (Retry-After)"
            ),
            "{minute}"
        );
        for asked in [None, Some(Duration::ZERO)] {
            let backoff = warning(asked).await;
            assert!(
                backoff.contains("retrying up to 2 times, waiting at most 2 s in all"),
                "{backoff}"
            );
        }
    }

    /// A request that fails for good at once has no retry to tell.
    #[tokio::test]
    async fn nothing_is_logged_without_a_retry() {
        let (outcome, text) = logged(failing(false, &mut RetryLog::default())).await;
        assert!(outcome.is_err());
        assert_eq!(text, "");
    }

    #[test]
    fn the_longest_backoff_is_every_delay_at_its_largest_jitter() {
        // 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 6.4 s, each at most doubled by the jitter.
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

    /// `workspace.retries` takes any count: summed retry by retry, a count like
    /// 9223372036854775807 spun the first retry's warning (which states the
    /// longest wait) for good, and the run with it.
    #[test]
    fn the_longest_backoff_of_a_huge_retry_count_is_computed_at_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let huge = RetryPolicy {
                max_retries: usize::MAX,
                ..RetryPolicy::default()
            };
            let many = RetryPolicy {
                max_retries: 1_000,
                ..RetryPolicy::default()
            };
            let _ = tx.send((huge.longest_backoff(), many.longest_backoff()));
        });
        let Ok((huge, many)) = rx.recv_timeout(Duration::from_secs(10)) else {
            unreachable!("longest_backoff still running after 10 s");
        };
        assert_eq!(huge, Duration::MAX);
        // 0.2 + 0.4 + … + 25.6 s (eight doublings), then 992 × 30 s, all doubled.
        assert_eq!(many, Duration::from_millis(2 * (51_000 + 992 * 30_000)));
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

    /// A first delay configured above `max_delay` is cut to it like every later
    /// one, so no wait is longer than the policy's longest (jitter included), and
    /// the total stays within `longest_backoff`.
    #[tokio::test(start_paused = true)]
    async fn a_first_delay_above_the_longest_is_cut_to_it() {
        let policy = RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_secs(300),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        };
        let mut delays = Vec::new();
        let _: Result<(), Failure> = retry(
            policy,
            || async {
                Err(Failure {
                    transient: true,
                    retry_after: None,
                })
            },
            |_, d| delays.push(d),
        )
        .await;
        assert_eq!(delays.len(), 3);
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(60)),
            "{delays:?}"
        );
        assert!(
            delays.iter().sum::<Duration>() <= policy.longest_backoff(),
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

    /// Always fails, transiently, after `takes` (on the paused clock).
    fn failing_after<'a>(
        calls: &'a Cell<u32>,
        takes: Duration,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<u32, Failure>> + 'a>> + 'a
    {
        move || {
            calls.set(calls.get() + 1);
            Box::pin(async move {
                tokio::time::sleep(takes).await;
                Err(Failure {
                    transient: true,
                    retry_after: None,
                })
            })
        }
    }

    /// A minute between attempts, six times.
    fn slow_policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 6,
            min_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(120),
        }
    }

    /// What the stop makes of the last error: permanent, so nobody retries it.
    fn stopped(last: Failure) -> Failure {
        Failure {
            transient: false,
            ..last
        }
    }

    /// Stopped a second into the minute before the first retry: the wait ends
    /// then, and the retry is not made.
    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_before_a_retry() {
        let stop = StopSignal::new();
        let calls = Cell::new(0);
        let started = tokio::time::Instant::now();
        let stopping = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.stop();
        };
        let retrying = retry_unless_stopped(
            slow_policy(),
            Some(&stop),
            failing_after(&calls, Duration::ZERO),
            |_, _| {},
            stopped,
        );
        let (outcome, ()) = tokio::join!(retrying, stopping);
        assert!(matches!(
            outcome,
            Err(Failure {
                transient: false,
                ..
            })
        ));
        assert_eq!(calls.get(), 1);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    /// An attempt under way when the stop comes is not cut (a write may have
    /// reached the server): it ends as it would have, and is not retried.
    #[tokio::test(start_paused = true)]
    async fn a_stop_lets_the_attempt_under_way_finish_and_retries_nothing() {
        let stop = StopSignal::new();
        let calls = Cell::new(0);
        let started = tokio::time::Instant::now();
        let stopping = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.stop();
        };
        let retrying = retry_unless_stopped(
            slow_policy(),
            Some(&stop),
            failing_after(&calls, Duration::from_secs(5)),
            |_, _| {},
            stopped,
        );
        let (outcome, ()) = tokio::join!(retrying, stopping);
        assert!(matches!(
            outcome,
            Err(Failure {
                transient: false,
                ..
            })
        ));
        assert_eq!(calls.get(), 1);
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        // Its success is a success.
        let answered = retry_unless_stopped(
            slow_policy(),
            Some(&stop),
            || async { Ok::<_, Failure>(7) },
            |_, _| {},
            stopped,
        )
        .await;
        assert_eq!(answered.ok(), Some(7));
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
