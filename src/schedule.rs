//! Wall-clock scheduling: cron expressions evaluated in a time zone, and the
//! daemon's small loop that fires jobs.
//!
//! Each fire time is computed afresh from the current instant in the configured
//! zone (croner on chrono-tz), so a job at 08:00 Europe/Berlin stays at 08:00 across
//! daylight-saving changes — the failure of schedulers that fix a zone's UTC offset
//! when a job is created. A time skipped by a spring-forward runs right after the
//! gap; a time repeated by a fall-back runs once, as in Vixie cron for every
//! pattern whose seconds, minutes and hours have no wildcard or step (`30 1,13`,
//! not only `30 1`); a pattern with one there is an interval and keeps its
//! spacing through the change.
//!
//! The loop never overlaps a job with itself (a job still running at its next fire
//! is skipped, logged and counted; the log tells a job at work from one still
//! waiting for its turn behind another, see [`JobCounters::waiting`]), and after
//! downtime a missed job runs once at start, not once per missed slot (it
//! stands for the last slot missed, [`previous_fire`]: a clock that was ahead at
//! start and is set right sends no second digest for that slot), and so
//! does one whose last run was stopped before it finished ([`JobSpec::stopped`]). A wall
//! clock stepped back re-plans each job from the new time, but never fires again
//! the slot it fired last (an NTP step or a leap second just after 08:00 sends no
//! second 08:00 digest), nor does the new loop a configuration reload builds
//! (the slot is kept in the [`JobCounters`] the loops share; that loop catches
//! up no job either: [`Scheduler::resumed_from`]), nor a loop started
//! after a restart: the daemon keeps each slot fired in the state database
//! ([`Scheduler::on_fire`], [`JobSpec::fired`]). A kept slot ahead of the clock
//! at start holds only while it is the job's next slot and within a day
//! ([`FiredSlot`]); further ahead it is logged and ignored, so a clock that was
//! wrong when it fired does not stop the job. Time comes from a [`Clock`], so
//! tests drive the loop on tokio's paused clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use futures::future::BoxFuture;

/// A parsed cron expression: standard five fields, or six with leading seconds.
#[derive(Debug, Clone)]
pub struct Schedule {
    pattern: String,
    cron: Cron,
    /// For a pattern that lists several fixed times of day ([`fixed_times_of_day`]):
    /// one schedule per time, which croner treats as fixed-time jobs (once in a
    /// fall-back's repeated hour, right after a spring-forward gap), where the
    /// whole pattern would be an interval to it. Empty otherwise.
    times_of_day: Vec<Cron>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron expression {pattern:?}: {message}")]
pub struct ScheduleError {
    pub pattern: String,
    pub message: String,
}

impl Schedule {
    pub fn parse(pattern: &str) -> Result<Schedule, ScheduleError> {
        // croner's word for another nickname (`@reboot`, `@every 5m`) is "must have
        // between 5 and 7 fields", and a seventh field is refused below.
        let nickname = pattern.trim();
        if nickname.starts_with('@')
            && !NICKNAMES
                .iter()
                .any(|known| known.eq_ignore_ascii_case(nickname))
        {
            return Err(ScheduleError {
                pattern: pattern.to_owned(),
                message: format!(
                    "the nicknames are {}; else expected {FIELD_LAYOUTS} (a job the daemon \
                     has not run yet, or missed while stopped, runs at its start anyway)",
                    NICKNAMES.join(", ")
                ),
            });
        }
        if let Some((five, renumbered)) = eventbridge_without_year(pattern) {
            let renumbered = if renumbered {
                " (EventBridge numbers the days 1-7 from Sunday, cron 0-6 from Sunday: the \
                 days are renumbered, so they mean the same days)"
            } else {
                ""
            };
            return Err(ScheduleError {
                pattern: pattern.to_owned(),
                message: format!(
                    "this is AWS EventBridge's layout (minute hour day-of-month month \
                     day-of-week year), and a year field is not supported: write \
                     {five:?}{renumbered}"
                ),
            });
        }
        let fields: Vec<&str> = pattern.split_whitespace().collect();
        if !(5..=6).contains(&fields.len()) && !pattern.trim_start().starts_with('@') {
            // Quartz and some crontabs take a seventh field, the year.
            let year = if fields.len() == 7 {
                "; a year field is not supported"
            } else {
                ""
            };
            return Err(ScheduleError {
                pattern: pattern.to_owned(),
                message: format!("expected {FIELD_LAYOUTS}, found {}{year}", fields.len()),
            });
        }
        // Read seconds first, `0 8 * * 1-5 2027` would be refused for its
        // day-of-week, where the year is what is wrong.
        if let [.., last] = fields.as_slice()
            && fields.len() == 6
            && looks_like_a_year(last)
        {
            return Err(ScheduleError {
                pattern: pattern.to_owned(),
                message: format!(
                    "its sixth field {last:?} looks like a year, and a year field is not \
                     supported: expected {FIELD_LAYOUTS}"
                ),
            });
        }
        check_steps(pattern)?;
        let schedule = Schedule::parse_syntax(pattern)?;
        // Without a year field a pattern that fires at all fires within any
        // 400-year span: one that finds no time from a fixed start never fires
        // (31 February), and would run once at the daemon's first start, then never.
        if schedule
            .cron
            .find_next_occurrence(&DateTime::<Utc>::UNIX_EPOCH, false)
            .is_err()
        {
            return Err(ScheduleError {
                pattern: pattern.to_owned(),
                message: "it never fires: no date matches it (such as 31 February)".to_owned(),
            });
        }
        Ok(schedule)
    }

    /// The expression as croner reads it, without the checks `parse` adds.
    fn parse_syntax(pattern: &str) -> Result<Schedule, ScheduleError> {
        let parse = |pattern: &str| {
            CronParser::builder()
                .seconds(Seconds::Optional)
                .build()
                .parse(pattern)
                .map_err(|e| ScheduleError {
                    pattern: pattern.to_owned(),
                    message: e.to_string(),
                })
        };
        let cron = parse(pattern)?;
        let times_of_day = fixed_times_of_day(pattern)
            .iter()
            .map(|single| parse(single))
            .collect::<Result<_, _>>()?;
        Ok(Schedule {
            pattern: pattern.to_owned(),
            cron,
            times_of_day,
        })
    }

    /// A schedule that may never fire, for tests of what copes with one.
    #[cfg(test)]
    pub(crate) fn parse_unchecked(pattern: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse_syntax(pattern)
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the expression has a seconds field (six fields): its fire times are
    /// shown to the second, where five-field ones are shown to the minute.
    pub fn has_seconds(&self) -> bool {
        self.pattern.split_whitespace().count() == 6
    }

    /// How many times the schedule fires within a minute it fires in: more than
    /// one only for a seconds field that takes several values (`*/5 * * * * *`,
    /// `0,30 * * * * *`), often a 5-field pattern written with one `*` too many.
    /// Read from the fire times in UTC (a zone's offset has no seconds since
    /// long ago): the first fire from the epoch is its minute's first second,
    /// and the seconds field is the same in every minute.
    pub fn fires_per_minute(&self) -> usize {
        let Ok(first) = self
            .cron
            .find_next_occurrence(&DateTime::<Utc>::UNIX_EPOCH, true)
        else {
            return 0;
        };
        let minute = first.timestamp().div_euclid(60);
        let mut fires = 1;
        let mut at = first;
        while let Ok(next) = self.cron.find_next_occurrence(&at, false) {
            if next.timestamp().div_euclid(60) != minute || fires >= 60 {
                break;
            }
            fires += 1;
            at = next;
        }
        fires
    }

    /// The `chrono` format of a time of day as precise as this schedule fires:
    /// `%H:%M`, or `%H:%M:%S` with a seconds field.
    pub fn time_of_day_format(&self) -> &'static str {
        if self.has_seconds() {
            "%H:%M:%S"
        } else {
            "%H:%M"
        }
    }

    /// A fire time on `tz`'s wall clock for people: `2026-03-02 08:00 +01:00 (CET)`, to the
    /// second when the schedule has seconds.
    pub fn wall_clock(&self, at: DateTime<Utc>, tz: Tz) -> String {
        let layout = format!("%Y-%m-%d {}", self.time_of_day_format());
        crate::model::clock_time(at, tz, &layout)
    }
}

/// An instant for a log field: RFC 3339 in UTC to the second
/// (`2026-03-02T07:00:00Z`), not the nanoseconds the state database keeps.
pub fn log_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The nicknames croner reads (`@weekly` is Sunday 00:00, `@daily` midnight).
const NICKNAMES: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

/// The field layouts [`Schedule::parse`] takes, for its errors.
const FIELD_LAYOUTS: &str = "5 fields (minute hour day-of-month month day-of-week) or 6 \
                             with seconds first (second minute hour day-of-month month \
                             day-of-week)";

/// An AWS EventBridge expression (`cron(0 8 ? * MON-FRI *)`, or its inside
/// alone): minute first and a year last, `?` in day-of-month or day-of-week.
/// Read seconds first, its `?` lands in the hour or the month, and croner's
/// error ("illegal character '?'") blames a character the layout allows. The
/// five fields before the year, which mean what was written (day-of-week
/// numbers renumbered, [`eventbridge_days`]), and whether any was renumbered.
fn eventbridge_without_year(pattern: &str) -> Option<(String, bool)> {
    let trimmed = pattern.trim();
    let wrapped = trimmed
        .get(..5)
        .filter(|head| head.eq_ignore_ascii_case("cron("))
        .and_then(|_| trimmed.get(5..)?.strip_suffix(')'));
    let fields: Vec<&str> = wrapped.unwrap_or(trimmed).split_whitespace().collect();
    let question_mark_in_a_day_field = fields.len() == 6 && (fields[2] == "?" || fields[4] == "?");
    if !((wrapped.is_some() && fields.len() == 6) || question_mark_in_a_day_field) {
        return None;
    }
    let days = eventbridge_days(fields[4]);
    let renumbered = days != fields[4];
    Some((format!("{} {days}", fields[..4].join(" ")), renumbered))
}

/// An EventBridge day-of-week field as cron writes it: EventBridge numbers
/// the days 1-7 from Sunday (`2-6` is Monday to Friday), cron 0-6 from Sunday
/// (`2-6` is Tuesday to Saturday), so each day number is one less; the `n` of
/// `day#n` (the n-th such day of the month) and a step after `/` are no days
/// and stay. Names
/// (`MON-FRI`) mean the same in both; a number past 7 is left for the parser
/// to refuse.
fn eventbridge_days(field: &str) -> String {
    let mut cron = String::with_capacity(field.len());
    let mut digits = String::new();
    let mut after_hash = false;
    let flush = |digits: &mut String, cron: &mut String, after_hash: bool| {
        match digits.parse::<u8>() {
            Ok(day @ 1..=7) if !after_hash => cron.push_str(&(day - 1).to_string()),
            _ => cron.push_str(digits),
        }
        digits.clear();
    };
    for c in field.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        flush(&mut digits, &mut cron, after_hash);
        // The n of `day#n` and a step after `/` count, they name no day.
        after_hash = c == '#' || c == '/';
        cron.push(c);
    }
    flush(&mut digits, &mut cron, after_hash);
    cron
}

/// A four-digit number in a field (`2027`, `2026-2028`, `*/2027`): a year,
/// which no field of a 5- or 6-field expression takes.
fn looks_like_a_year(field: &str) -> bool {
    field
        .split(|c: char| !c.is_ascii_digit())
        .any(|number| number.len() == 4)
}

/// Refuses a value out of its field's range, naming the field, and a step as large
/// as its field (`*/61` or `*/60` in the minutes): croner takes such a step and
/// fires only at the field's first value, hourly where every 61 minutes was meant.
fn check_steps(pattern: &str) -> Result<(), ScheduleError> {
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    // Name, how many values (for steps), and the values allowed.
    let names: &[(&str, u32, std::ops::RangeInclusive<u32>)] = match fields.len() {
        5 => &[
            ("minute", 60, 0..=59),
            ("hour", 24, 0..=23),
            ("day-of-month", 31, 1..=31),
            ("month", 12, 1..=12),
            ("day-of-week", 7, 0..=7),
        ],
        6 => &[
            ("second", 60, 0..=59),
            ("minute", 60, 0..=59),
            ("hour", 24, 0..=23),
            ("day-of-month", 31, 1..=31),
            ("month", 12, 1..=12),
            ("day-of-week", 7, 0..=7),
        ],
        _ => return Ok(()),
    };
    for (field, (name, values, allowed)) in fields.iter().zip(names) {
        // croner's own message for `0 25 * * *` names no field.
        for value in field
            .split(',')
            .filter_map(|part| part.split('/').next())
            .flat_map(|range| range.split('-'))
            .filter_map(|value| value.parse::<u32>().ok())
        {
            if !allowed.contains(&value) {
                return Err(ScheduleError {
                    pattern: pattern.to_owned(),
                    message: format!(
                        "{value} is out of range in the {name} field ({}–{})",
                        allowed.start(),
                        allowed.end()
                    ),
                });
            }
        }
        for part in field.split(',') {
            let Some((_, step)) = part.split_once('/') else {
                continue;
            };
            // What is not a number is croner's to refuse.
            let Ok(step) = step.parse::<u32>() else {
                continue;
            };
            // croner's word for `*/0` is "Step cannot be zero", with no field
            // and nothing to write instead.
            if step == 0 {
                let every = match *name {
                    "day-of-month" | "day-of-week" => "day",
                    unit => unit,
                };
                return Err(ScheduleError {
                    pattern: pattern.to_owned(),
                    message: format!(
                        "the step /0 in the {name} field repeats nothing: write * for every \
                         {every}, or a step from /1 to /{}",
                        values - 1
                    ),
                });
            }
            if step >= *values {
                return Err(ScheduleError {
                    pattern: pattern.to_owned(),
                    message: format!(
                        "the step /{step} in the {name} field is out of range (at most {})",
                        values - 1
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The first fire time strictly after `now`, evaluated on `tz`'s wall clock.
/// `None` only for expressions that never fire again (e.g. February 30th), which
/// [`Schedule::parse`] refuses.
pub fn next_fire(schedule: &Schedule, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(&tz);
    let next = |cron: &Cron| {
        cron.find_next_occurrence(&local, false)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    };
    if schedule.times_of_day.is_empty() {
        next(&schedule.cron)
    } else {
        schedule.times_of_day.iter().filter_map(next).min()
    }
}

/// The last fire time at or before `at`, evaluated on `tz`'s wall clock: the
/// slot a catch-up run at `at` stands for. `None` when there is none.
pub fn previous_fire(schedule: &Schedule, tz: Tz, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = at.with_timezone(&tz);
    let previous = |cron: &Cron| {
        cron.find_previous_occurrence(&local, true)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    };
    if schedule.times_of_day.is_empty() {
        previous(&schedule.cron)
    } else {
        schedule.times_of_day.iter().filter_map(previous).max()
    }
}

/// The most times of day [`fixed_times_of_day`] splits a pattern into; a pattern
/// listing more keeps croner's interval handling at DST changes.
const MAX_TIMES_OF_DAY: usize = 64;

/// `pattern` split into one pattern per time of day it names, when it names
/// several and each is fixed: no wildcard or step in its seconds, minutes and
/// hours, only values, lists and ranges (`30 1,13 * * *`, `0,30 2 * * 1-5`).
/// Vixie cron runs such times once when a fall-back repeats them and right after
/// a spring-forward gap skips them; croner does so only for a single value, and
/// would run `30 1,13` twice on a fall-back day (a second digest) and skip
/// `0,30 2` on a spring-forward day. Empty when the pattern has a wildcard or
/// step there (an interval: it keeps running through a repeated hour), names one
/// time only, or more than [`MAX_TIMES_OF_DAY`].
fn fixed_times_of_day(pattern: &str) -> Vec<String> {
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    let (time, date) = match fields.len() {
        5 => fields.split_at(2),
        6 => fields.split_at(3),
        _ => return Vec::new(),
    };
    // A set: a time listed twice is one time, and the count below multiplies
    // the fields' sizes, which repeats (`0-59,0-59,…`) took past 2^64.
    let values = |field: &str| -> Option<BTreeSet<u32>> {
        let mut values = BTreeSet::new();
        for part in field.split(',') {
            let (first, last) = part.split_once('-').unwrap_or((part, part));
            let (first, last) = (first.parse::<u32>().ok()?, last.parse::<u32>().ok()?);
            // No field has more than 60 values ([`check_steps`] refuses the rest).
            if last.checked_sub(first)? >= 60 {
                return None;
            }
            values.extend(first..=last);
        }
        Some(values)
    };
    let Some(time) = time
        .iter()
        .map(|field| values(field))
        .collect::<Option<Vec<_>>>()
    else {
        return Vec::new();
    };
    // At most 60 × 60 × 24: each field holds only values in its range
    // ([`check_steps`]).
    let count: usize = time.iter().map(BTreeSet::len).product();
    if !(2..=MAX_TIMES_OF_DAY).contains(&count) {
        return Vec::new();
    }
    let mut patterns = vec![String::new()];
    for field in &time {
        patterns = patterns
            .iter()
            .flat_map(|prefix| field.iter().map(move |value| format!("{prefix}{value} ")))
            .collect();
    }
    let date = date.join(" ");
    patterns
        .into_iter()
        .map(|time| format!("{time}{date}"))
        .collect()
}

/// The longest time without a fire of any of `schedules` (merged), from the first
/// fire after `from` through the week after it (every weekly pattern shows its
/// longest gap there), as the fire that starts it and the gap. Patterns that fire
/// more than once a minute are looked at for their first 10,081 fires only.
/// `None` only when none of them fires again.
pub fn longest_gap(
    schedules: &[&Schedule],
    tz: Tz,
    from: DateTime<Utc>,
) -> Option<(DateTime<Utc>, chrono::Duration)> {
    // A fire every minute, all week.
    const MAX_FIRES: usize = 7 * 24 * 60 + 1;
    let next = |after: DateTime<Utc>| {
        schedules
            .iter()
            .filter_map(|schedule| next_fire(schedule, tz, after))
            .min()
    };
    let end = from + chrono::Duration::days(7);
    let mut previous = next(from)?;
    let mut longest: Option<(DateTime<Utc>, chrono::Duration)> = None;
    for _ in 0..MAX_FIRES {
        let Some(following) = next(previous) else {
            break;
        };
        let gap = following - previous;
        if longest.is_none_or(|(_, longest)| gap > longest) {
            longest = Some((previous, gap));
        }
        if following > end {
            break;
        }
        previous = following;
    }
    longest
}

/// The days, within a year after `from`, on which `tz`'s offset from UTC changes
/// (daylight saving, by an hour or Lord Howe's half hour), each as the instant a
/// day before the change at most: a wall-clock schedule's longest gap may lie in
/// such a week and nowhere else.
pub fn offset_changes(tz: Tz, from: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    use chrono::Offset;
    let offset = |at: DateTime<Utc>| at.with_timezone(&tz).offset().fix();
    let day = chrono::Duration::days(1);
    let mut changes = Vec::new();
    let mut at = from;
    for _ in 0..366 {
        let next = at + day;
        if offset(next) != offset(at) {
            changes.push(at);
        }
        at = next;
    }
    changes
}

/// Whether a job last started at `last_started` missed a fire before `now`.
pub fn missed(
    schedule: &Schedule,
    tz: Tz,
    last_started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    match last_started {
        // Never ran: run at start rather than wait for the first slot.
        None => true,
        Some(last) => next_fire(schedule, tz, last).is_some_and(|at| at <= now),
    }
}

/// Whether a job that missed a slot while the daemon was stopped should rather
/// wait for its next one: a daily job (the digest, the prune) whose slot comes
/// within the hour. Caught up at 07:58, an 08:00 digest would go out twice, the
/// second covering minutes. Jobs that run more often than daily always catch up
/// at once: the sweep and the reconcile are the safety net.
fn slot_is_close(schedule: &Schedule, tz: Tz, now: DateTime<Utc>) -> bool {
    let Some(next) = next_fire(schedule, tz, now) else {
        return false;
    };
    let daily = next_fire(schedule, tz, next)
        .is_some_and(|after| after - next >= chrono::Duration::hours(23));
    daily && next - now <= chrono::Duration::hours(1)
}

/// Where the current time comes from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that advances with tokio's clock from a fixed origin: with
/// `tokio::time::pause` a test runs days of schedule in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(origin: DateTime<Utc>) -> TokioClock {
        TokioClock {
            origin,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().duration_since(self.start);
        self.origin + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }
}

/// A named job and when it fires.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: &'static str,
    pub schedule: Schedule,
    /// When it last started (from the state database), to detect a missed fire.
    pub last_started: Option<DateTime<Utc>>,
    /// Its last run was stopped before it finished (SIGTERM: a restart, an
    /// upgrade): it runs at start, as a missed one does. Else a daily reconcile
    /// cut short by a restart just after its slot would not run again until the
    /// next day.
    pub stopped: bool,
    /// The slot it fired last as the state database keeps it (written by the
    /// [`Scheduler::on_fire`] hook, so it outlives the process): a clock that
    /// reads before it at start (stepped back across a restart) does not fire it
    /// again ([`fired_slot_ahead`]), if the job started for it (`last_started`
    /// is not before it).
    pub fired: Option<DateTime<Utc>>,
}

/// How far ahead of the clock at start the slot a job fired last may be and
/// still be held ([`fired_slot_ahead`]).
const FIRED_AHEAD_LIMIT: chrono::Duration = chrono::Duration::days(1);

/// The slot a job fired last, as the loop finds it at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiredSlot {
    /// None, or not after the clock: nothing to hold back.
    Behind,
    /// After the clock, and no later than the job's next slot, within a day of
    /// the clock (a clock stepped back across a restart, a reload or a reboot
    /// just after the fire): the loop fires no slot up to it, so the job waits
    /// for the slot after it (an 08:00 digest sent, then a restart on a clock
    /// reading 07:59:58, sends no second one).
    Holds(DateTime<Utc>),
    /// Further ahead: a whole slot of the job, or more than a day, lies between
    /// the clock and it. More likely a clock that was wrong when it fired (years
    /// ahead, a restored VM) than one stepped back now: held, it would stop the
    /// job for as long, so it is ignored (and logged) and the job fires from the
    /// clock as after any longer step back.
    TooFarAhead(DateTime<Utc>),
}

/// What the slot `fired` (the one a job fired last, by this process or one
/// before a restart) is to the loop starting at `now`: see [`FiredSlot`].
pub fn fired_slot_ahead(
    schedule: &Schedule,
    tz: Tz,
    fired: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> FiredSlot {
    let Some(fired) = fired.filter(|at| *at > now) else {
        return FiredSlot::Behind;
    };
    // A slot no longer the schedule's (the pattern changed since) that lies
    // before the next one holds nothing back either: that next one comes after it.
    let next_is_it = next_fire(schedule, tz, now).is_some_and(|next| next >= fired);
    if next_is_it && fired - now <= FIRED_AHEAD_LIMIT {
        FiredSlot::Holds(fired)
    } else {
        FiredSlot::TooFarAhead(fired)
    }
}

/// `fired`, the slot a job fired last as kept across a restart, if the job
/// started for it (`last_started` not before it). One it never started for (it
/// fired while the job still ran, or the job was stopped while waiting for its
/// turn) is no run to hold back: after a restart on a true clock it would count
/// as missed and run.
fn started_for(
    fired: Option<DateTime<Utc>>,
    last_started: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    fired.filter(|slot| last_started.is_some_and(|at| at >= *slot))
}

/// The next fire after `now` of a job, as a loop started at `now` plans it
/// when it is not run at once (`seatwarden status`): the slot kept as fired last
/// (`fired`, with the job's `last_started`), when it holds, is passed over.
pub fn next_fire_after_kept(
    schedule: &Schedule,
    tz: Tz,
    now: DateTime<Utc>,
    fired: Option<DateTime<Utc>>,
    last_started: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let floor = match fired_slot_ahead(schedule, tz, started_for(fired, last_started), now) {
        FiredSlot::Holds(slot) => Some(slot),
        FiredSlot::Behind | FiredSlot::TooFarAhead(_) => None,
    };
    after_floor(schedule, tz, next_fire(schedule, tz, now), floor)
}

/// `due`, or when it is at or before `floor` (a slot fired already), the first
/// slot after `floor`.
fn after_floor(
    schedule: &Schedule,
    tz: Tz,
    due: Option<DateTime<Utc>>,
    floor: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match (due, floor) {
        (Some(at), Some(floor)) if at <= floor => next_fire(schedule, tz, floor),
        _ => due,
    }
}

/// Counters the loop keeps per job, shared with metrics and tests.
#[derive(Debug, Default)]
pub struct JobCounters {
    pub started: AtomicU64,
    pub skipped: AtomicU64,
    running: AtomicBool,
    waiting: AtomicBool,
    /// A start asked for while the job ran ([`start_or_follow`]): it runs once
    /// more when it ends.
    follow: AtomicBool,
    /// The slot the loop fired last, kept here so that a configuration reload's
    /// new loop, which shares these counters, does not fire it again after a
    /// wall clock stepped back either (see [`Scheduler::run`]).
    fired: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl JobCounters {
    fn fired(&self) -> Option<DateTime<Utc>> {
        *self
            .fired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_fired(&self, slot: DateTime<Utc>) {
        *self
            .fired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(slot);
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Marks the job, started, as waiting for its turn (a lock another job or
    /// process holds) until the guard drops. A fire skipped meanwhile says so:
    /// "still running" would send an operator looking for a hung job.
    pub fn waiting(self: &Arc<Self>) -> Waiting {
        self.waiting.store(true, Ordering::SeqCst);
        Waiting(Arc::clone(self))
    }

    pub fn is_waiting(&self) -> bool {
        self.is_running() && self.waiting.load(Ordering::SeqCst)
    }
}

/// See [`JobCounters::waiting`].
#[must_use = "the job is waiting only while this is held"]
pub struct Waiting(Arc<JobCounters>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.store(false, Ordering::SeqCst);
    }
}

/// Why a fire was skipped: the job is still at work, or still waiting for its
/// turn behind the jobs named (none: behind something outside the scheduler,
/// such as a command run by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    Running,
    Waiting { behind: Vec<&'static str> },
}

/// Starts a job's work; the future runs on its own task.
pub type StartJob = Arc<dyn Fn(&'static str) -> BoxFuture<'static, ()> + Send + Sync>;

/// Told each slot the loop fires, with the job's name, as it fires it (for a
/// catch-up at start, the last slot at or before it, which it stands for; or
/// the slot fired before it kept as the last, see [`FiredSlot::Holds`]; the
/// daemon keeps it in the state database: [`JobSpec::fired`] at the next start).
/// Called on the loop's task: it must not block.
pub type OnFire = Arc<dyn Fn(&'static str, DateTime<Utc>) + Send + Sync>;

/// The scheduling loop.
pub struct Scheduler {
    jobs: Vec<JobSpec>,
    tz: Tz,
    clock: Arc<dyn Clock>,
    /// Longest sleep between two looks at the clock: bounds how late a fire is after
    /// a wall-clock jump, and paces `on_tick` (watchdog, liveness).
    tick: Duration,
    counters: BTreeMap<&'static str, Arc<JobCounters>>,
    on_fire: Option<OnFire>,
    /// For the loop a configuration reload builds: when the loop before it last
    /// looked at the clock ([`Scheduler::resumed_from`]).
    resumed_from: Option<DateTime<Utc>>,
}

impl Scheduler {
    pub fn new(jobs: Vec<JobSpec>, tz: Tz, clock: Arc<dyn Clock>, tick: Duration) -> Scheduler {
        let counters = jobs
            .iter()
            .map(|j| (j.name, Arc::new(JobCounters::default())))
            .collect();
        Scheduler::with_counters(jobs, tz, clock, tick, counters)
    }

    /// Shares counters (and so the "running" flags) with an earlier scheduler: a
    /// configuration reload builds a new loop while jobs of the old one still run.
    pub fn with_counters(
        jobs: Vec<JobSpec>,
        tz: Tz,
        clock: Arc<dyn Clock>,
        tick: Duration,
        mut counters: BTreeMap<&'static str, Arc<JobCounters>>,
    ) -> Scheduler {
        for job in &jobs {
            counters.entry(job.name).or_default();
        }
        Scheduler {
            jobs,
            tz,
            clock,
            tick: tick.max(Duration::from_millis(10)),
            counters,
            on_fire: None,
            resumed_from: None,
        }
    }

    /// Makes this the loop a configuration reload builds in place of one that
    /// last looked at the clock at `since` (it fired every slot up to then): no
    /// job is caught up at its start, as a daemon's start catches up one never
    /// run, missed or stopped (a reload is no start: the jobs table still says
    /// "never run" of a sweep waiting behind the first reconcile, and "missed"
    /// of a job at work past its next slot), and each job's first fire is its
    /// first slot after `since` (one due while the reload was read is not lost).
    pub fn resumed_from(mut self, since: DateTime<Utc>) -> Scheduler {
        self.resumed_from = Some(since);
        self
    }

    /// Calls `hook` with each slot the loop fires ([`OnFire`]).
    pub fn on_fire(mut self, hook: OnFire) -> Scheduler {
        self.on_fire = Some(hook);
        self
    }

    pub fn counters(&self) -> BTreeMap<&'static str, Arc<JobCounters>> {
        self.counters.clone()
    }

    /// Runs until `shutdown` turns true. Fires each due job on its own task unless
    /// it is still running; calls `on_tick` with the current time on every pass.
    /// Returns without waiting for running jobs (see [`wait_idle`]).
    pub async fn run(
        &self,
        start: StartJob,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        on_tick: impl Fn(DateTime<Utc>),
    ) {
        let now = self.clock.now();
        // The slot each job last fired for: by this loop or the one before a
        // reload (they share the counters), else by the process before a restart
        // (the state database's).
        let mut fired: Vec<Option<DateTime<Utc>>> = self
            .jobs
            .iter()
            .map(|job| {
                self.counters
                    .get(job.name)
                    .and_then(|c| c.fired())
                    .or(started_for(job.fired, job.last_started))
            })
            .collect();
        // Such a slot still ahead of the clock (stepped back since it fired) is
        // not fired a second time: not planned at start, nor after a catch-up.
        let mut floor: Vec<Option<DateTime<Utc>>> = self
            .jobs
            .iter()
            .zip(&fired)
            .map(
                |(job, fired)| match fired_slot_ahead(&job.schedule, self.tz, *fired, now) {
                    FiredSlot::Behind => None,
                    FiredSlot::Holds(slot) => {
                        tracing::info!(
                            job = job.name,
                            fired = %log_time(slot),
                            clock = %log_time(now),
                            "the slot it fired last is ahead of the clock (set back since): \
                             that slot does not fire again"
                        );
                        Some(slot)
                    }
                    FiredSlot::TooFarAhead(slot) => {
                        tracing::warn!(
                            job = job.name,
                            fired = %log_time(slot),
                            clock = %log_time(now),
                            "the slot it fired last is more than a day, or more than one of \
                             its intervals, ahead of the clock: the clock was wrong when it \
                             fired, or is wrong now; it is not waited for, and the job runs \
                             on schedule by the clock"
                        );
                        None
                    }
                },
            )
            .collect();
        let mut next: Vec<Option<DateTime<Utc>>> = self
            .jobs
            .iter()
            .zip(&floor)
            .zip(&fired)
            .map(|((job, floor), fired)| {
                if let Some(since) = self.resumed_from {
                    // Past the slot fired last too, should the clock read
                    // before it was fired (set back since).
                    let from = since
                        .min(now)
                        .max(fired.filter(|at| *at <= now).unwrap_or(since.min(now)));
                    return after_floor(
                        &job.schedule,
                        self.tz,
                        next_fire(&job.schedule, self.tz, from),
                        *floor,
                    );
                }
                let next = after_floor(
                    &job.schedule,
                    self.tz,
                    next_fire(&job.schedule, self.tz, now),
                    *floor,
                );
                if job.stopped {
                    tracing::info!(
                        job = job.name,
                        "its last run was stopped before it finished: running it now"
                    );
                    return Some(now);
                }
                if !missed(&job.schedule, self.tz, job.last_started, now) {
                    return next;
                }
                if job.last_started.is_some() && slot_is_close(&job.schedule, self.tz, now) {
                    tracing::info!(
                        job = job.name,
                        "missed while stopped; its next slot is close: running it then"
                    );
                    return next;
                }
                if job.last_started.is_none() {
                    tracing::info!(job = job.name, "never run on this database: running it now");
                } else {
                    tracing::info!(job = job.name, "missed while stopped: running it now");
                }
                Some(now)
            })
            .collect();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = self.clock.now();
            on_tick(now);
            for (((job, due), fired), floor) in self
                .jobs
                .iter()
                .zip(next.iter_mut())
                .zip(fired.iter_mut())
                .zip(floor.iter_mut())
            {
                // Once the clock has passed it, a slot fired before the start
                // holds nothing back: a later step back is handled as below.
                if floor.is_some_and(|at| at < now) {
                    *floor = None;
                }
                // After the wall clock stepped back (NTP correcting a clock that
                // ran ahead, a restored VM), the fire computed before the step
                // is too far off: every job would wait for the clock to catch up.
                // On a clock that only moves forward this changes nothing. The
                // slot just fired is not fired again: a step back of a second
                // (NTP, a leap second) just after 08:00 would otherwise send the
                // 08:00 digest twice, or skip a reconcile still at work as if it
                // had overrun its interval.
                if let Some(at) = *due
                    && let Some(sooner) = next_fire(&job.schedule, self.tz, now)
                    && sooner < at
                    && Some(sooner) != *fired
                {
                    *due = Some(sooner);
                }
                let Some(slot) = due.filter(|at| *at <= now) else {
                    continue;
                };
                // The next slot after now: slots missed while busy are not replayed.
                // After a catch-up at start on a clock behind the slot fired last,
                // that is the slot after it.
                *due = after_floor(
                    &job.schedule,
                    self.tz,
                    next_fire(&job.schedule, self.tz, now),
                    *floor,
                );
                // A catch-up at start stands for the last slot it caught up (a
                // clock that was ahead at start, stepped back since, or a restart
                // on it, must not fire that slot again: a second digest for the
                // day); the time it ran is no slot.
                let slot = previous_fire(&job.schedule, self.tz, slot)
                    .filter(|at| *at <= slot)
                    .unwrap_or(slot);
                // A catch-up at start on a clock behind the slot fired last
                // (before `floor`) leaves that slot the one to keep: a reload
                // before the clock passes it must not fire it either.
                let mark = floor.map_or(slot, |at| at.max(slot));
                *fired = Some(mark);
                if let Some(counters) = self.counters.get(job.name) {
                    counters.set_fired(mark);
                }
                if let Some(on_fire) = &self.on_fire {
                    on_fire(job.name, mark);
                }
                self.fire(job.name, &start);
            }
            let sleep = next
                .iter()
                .flatten()
                .min()
                .and_then(|at| (*at - now).to_std().ok())
                .unwrap_or(self.tick)
                .min(self.tick);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// A scheduled fire: [`start_now`], and a refused start (the job is still
    /// running at its next fire time) is counted and logged as skipped.
    fn fire(&self, name: &'static str, start: &StartJob) {
        let Some(counters) = self.counters.get(name) else {
            return;
        };
        if start_now(name, counters, start) {
            return;
        }
        counters.skipped.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("seatwarden_job_skipped_total", crate::daemon::catalog::JOB_LABEL => name).increment(1);
        match self.busy(name) {
            Busy::Running => tracing::warn!(
                job = name,
                "still running at its next fire time: this fire is skipped"
            ),
            Busy::Waiting { behind } if behind.is_empty() => tracing::warn!(
                job = name,
                "still waiting for its turn at its next fire time (a lock held outside \
                 this daemon, such as a seatwarden command run by hand): this fire is skipped"
            ),
            Busy::Waiting { behind } => tracing::warn!(
                job = name,
                behind = ?behind,
                "still waiting for {} to finish at its next fire time: this fire is skipped",
                behind.join(" and ")
            ),
        }
    }

    /// Why `name`, started, has not finished: at work, or waiting behind the
    /// jobs at work.
    pub fn busy(&self, name: &'static str) -> Busy {
        if !self.counters.get(name).is_some_and(|c| c.is_waiting()) {
            return Busy::Running;
        }
        let behind = self
            .counters
            .iter()
            .filter(|(other, c)| **other != name && c.is_running() && !c.is_waiting())
            .map(|(other, _)| *other)
            .collect();
        Busy::Waiting { behind }
    }
}

/// Starts `name` on its own task unless it is already running; returns whether it
/// started. Used by the loop and by on-demand triggers (a refused trigger is the
/// caller's to report: it is not a skipped scheduled fire), so both respect the
/// no-overlap rule.
pub fn start_now(name: &'static str, counters: &Arc<JobCounters>, start: &StartJob) -> bool {
    if counters.running.swap(true, Ordering::SeqCst) {
        return false;
    }
    launch(name, counters, start);
    true
}

/// Starts `name` now or, when it is running, once more as soon as it ends;
/// returns whether it started now. For a start that must not be lost: what asked
/// for it (a reload releasing the mail a refused login put off, a message just
/// queued) came after the running one began, which may have passed it by, and
/// the next scheduled fire can be a minute away. Several asked for while it runs
/// make one more run, which sees them all.
pub fn start_or_follow(name: &'static str, counters: &Arc<JobCounters>, start: &StartJob) -> bool {
    // Asked first, then tried: a run that ends between the two sees the request
    // (its task takes it over) or has already let go of `running` (taken here).
    counters.follow.store(true, Ordering::SeqCst);
    if counters.running.swap(true, Ordering::SeqCst) {
        return false;
    }
    launch(name, counters, start);
    true
}

/// Runs `name`, `running` already taken, on its own task: again for as long as
/// [`start_or_follow`] asked for it meanwhile.
fn launch(name: &'static str, counters: &Arc<JobCounters>, start: &StartJob) {
    // This run begins after every start asked for so far, and sees what they
    // were for: left asked for (by a run that panicked, or one that found this
    // start had taken the job as it let go), one would make a run more.
    counters.follow.store(false, Ordering::SeqCst);
    counters.started.fetch_add(1, Ordering::SeqCst);
    let mut work = start(name);
    let mut running = Running {
        name,
        counters: Arc::clone(counters),
        held: true,
    };
    let start = Arc::clone(start);
    tokio::spawn(async move {
        loop {
            work.await;
            if !running.hand_on() {
                break;
            }
            work = start(name);
        }
    });
}

/// Marks a job not running when its task ends, however it ends: a job that
/// panicked must still run at its next fire, not be skipped as "still running"
/// until the process restarts.
struct Running {
    name: &'static str,
    counters: Arc<JobCounters>,
    /// Whether `running` is this task's to let go: not after [`Running::hand_on`]
    /// found another start had taken it.
    held: bool,
}

impl Running {
    /// Lets the job go at the end of a run, and takes it again when a start was
    /// asked for meanwhile ([`start_or_follow`]); returns whether to run again.
    /// A request already made is run without letting go: between the two, a stop
    /// waiting for every job to be idle ([`wait_idle`]) would see none running
    /// and end while the run asked for begins. Otherwise let go first, then
    /// looked: a request made after the look finds the job not running and
    /// starts it itself.
    fn hand_on(&mut self) -> bool {
        if self.counters.follow.swap(false, Ordering::SeqCst) {
            self.counters.started.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        self.counters.running.store(false, Ordering::SeqCst);
        self.held = false;
        if !self.counters.follow.load(Ordering::SeqCst)
            || self.counters.running.swap(true, Ordering::SeqCst)
        {
            return false;
        }
        self.held = true;
        self.counters.follow.store(false, Ordering::SeqCst);
        self.counters.started.fetch_add(1, Ordering::SeqCst);
        true
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                job = self.name,
                "the job panicked; it runs again at its next fire"
            );
        }
        if self.held {
            self.counters.running.store(false, Ordering::SeqCst);
        }
    }
}

/// Waits until none of `counters` runs, at most `limit`; true if idle.
pub async fn wait_idle(
    counters: &BTreeMap<&'static str, Arc<JobCounters>>,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if counters.values().all(|c| !c.is_running()) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    /// AWS EventBridge's layout (minute first, a year last, `?` in a day field),
    /// with or without its `cron(…)`, is named, with the five fields that mean
    /// what it says; a seconds-first expression with a `*` last is not taken for it.
    #[test]
    fn an_eventbridge_expression_is_named_with_its_five_fields() {
        for (pattern, five) in [
            ("0 8 ? * MON-FRI *", "0 8 ? * MON-FRI"),
            ("cron(0 8 * * ? *)", "0 8 * * ?"),
            ("CRON(15 10 ? * MON 2026)", "15 10 ? * MON"),
        ] {
            let error = Schedule::parse(pattern).unwrap_err();
            assert_eq!(
                error.message,
                format!(
                    "this is AWS EventBridge's layout (minute hour day-of-month month \
                     day-of-week year), and a year field is not supported: write {five:?}"
                ),
                "{pattern}"
            );
            Schedule::parse(five).unwrap();
        }
        for pattern in ["0 */5 * * * *", "0 0 8 ? * MON-FRI", "*/5 * * * ?"] {
            Schedule::parse(pattern).unwrap();
        }
    }

    /// EventBridge numbers the days of the week 1-7 from Sunday (2-6 is MON-FRI),
    /// cron 0-6 from Sunday (2-6 is TUE-SAT): the five fields suggested for an
    /// EventBridge expression with day numbers renumber them, or the schedule
    /// fires a day late ("0 8 ? * 2-6" was suggested for weekdays). Each
    /// suggestion fires on the days the EventBridge expression means.
    #[test]
    fn an_eventbridge_expression_with_day_numbers_is_suggested_renumbered() {
        for (pattern, five) in [
            ("cron(0 8 ? * 2-6 *)", "0 8 ? * 1-5"),
            ("0 8 ? * 1,7 *", "0 8 ? * 0,6"),
            ("cron(0 9 ? * 3#2 *)", "0 9 ? * 2#2"),
            ("cron(0 9 ? * 6L *)", "0 9 ? * 5L"),
            ("cron(0 9 ? * 2-6/2 *)", "0 9 ? * 1-5/2"),
            ("cron(0 8 ? * MON-FRI *)", "0 8 ? * MON-FRI"),
            ("cron(0 8 1 * ? 2027)", "0 8 1 * ?"),
        ] {
            let error = Schedule::parse(pattern).unwrap_err();
            assert!(
                error.message.contains(&format!("write {five:?}")),
                "{pattern}: {}",
                error.message
            );
            Schedule::parse(five).unwrap();
        }
        let error = Schedule::parse("cron(0 8 ? * 2-6 *)").unwrap_err();
        assert!(
            error
                .message
                .contains("EventBridge numbers the days 1-7 from Sunday"),
            "{}",
            error.message
        );
        let error = Schedule::parse("cron(0 8 ? * MON-FRI *)").unwrap_err();
        assert!(
            !error.message.contains("numbers the days"),
            "{}",
            error.message
        );
        // Weekdays: the suggestion fires on Monday 2026-12-07, not Sunday the 6th.
        let weekdays = Schedule::parse("0 8 ? * 1-5").unwrap();
        let sunday = chrono::NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        let next = next_fire(
            &weekdays,
            chrono_tz::UTC,
            sunday.and_hms_opt(0, 0, 0).unwrap().and_utc(),
        )
        .unwrap();
        assert_eq!(next.date_naive(), sunday.succ_opt().unwrap());
    }

    /// Only a seconds field with several values fires more than once a minute;
    /// minutes, hours and days do not count, nor does a nickname.
    #[test]
    fn fires_per_minute_counts_the_seconds_field_values() {
        for (pattern, fires) in [
            ("*/5 * * * * *", 12),
            ("* * * * * *", 60),
            ("0,30 0 8 * * 1-5", 2),
            ("*/59 * * * * *", 2),
            ("7 * * * * *", 1),
            ("0 */5 * * * *", 1),
            ("* * * * *", 1),
            ("*/5 * * * *", 1),
            ("0 8 * * 1-5", 1),
            ("@hourly", 1),
        ] {
            let schedule = Schedule::parse(pattern).unwrap();
            assert_eq!(schedule.fires_per_minute(), fires, "{pattern}");
        }
    }

    /// A six-field schedule fires at seconds a minute cannot show: `*/30 * * * * *`
    /// shown as 08:00 twice a minute would read as one fire.
    #[test]
    fn fire_times_are_shown_to_the_second_only_when_the_schedule_has_seconds() {
        let at = DateTime::parse_from_rfc3339("2026-03-02T07:00:30.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let minutes = Schedule::parse("*/5 * * * *").unwrap();
        let seconds = Schedule::parse("*/30 * * * * *").unwrap();
        assert!(!minutes.has_seconds() && seconds.has_seconds());
        assert!(!Schedule::parse("@hourly").unwrap().has_seconds());
        assert_eq!(
            minutes.wall_clock(at, berlin),
            "2026-03-02 08:00 +01:00 (CET)"
        );
        assert_eq!(
            seconds.wall_clock(at, berlin),
            "2026-03-02 08:00:30 +01:00 (CET)"
        );
    }

    #[test]
    fn log_times_are_rfc3339_utc_to_the_second() {
        let at = DateTime::parse_from_rfc3339("2026-03-02T08:00:30.123456789+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(log_time(at), "2026-03-02T07:00:30Z");
    }

    use super::*;
    use chrono::TimeZone;
    use std::sync::Mutex;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn fires(pattern: &str, tz: Tz, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let schedule = Schedule::parse(pattern).unwrap();
        let mut out = Vec::new();
        let mut at = from;
        for _ in 0..n {
            at = next_fire(&schedule, tz, at).unwrap();
            out.push(at);
        }
        out
    }

    #[test]
    fn longest_gap_finds_the_weekend_of_a_business_hours_schedule() {
        let berlin = chrono_tz::Europe::Berlin;
        // 2026-12-02 is a Wednesday; 17:00 CET on Friday is 16:00 UTC.
        let wednesday = utc(2026, 12, 2, 12, 0);
        let business = Schedule::parse("0 9-17 * * 1-5").unwrap();
        let (at, gap) = longest_gap(&[&business], berlin, wednesday).unwrap();
        assert_eq!(at, utc(2026, 12, 4, 16, 0));
        assert_eq!(gap, chrono::Duration::hours(64));
        // Another schedule's fires split the gap.
        let saturdays = Schedule::parse("0 12 * * 6").unwrap();
        let (at, gap) = longest_gap(&[&business, &saturdays], berlin, wednesday).unwrap();
        assert_eq!(at, utc(2026, 12, 5, 11, 0));
        assert_eq!(gap, chrono::Duration::hours(45));
        let often = Schedule::parse("*/5 * * * *").unwrap();
        let (_, gap) = longest_gap(&[&often], berlin, wednesday).unwrap();
        assert_eq!(gap, chrono::Duration::minutes(5));
        let monthly = Schedule::parse("0 3 1 * *").unwrap();
        let (at, gap) = longest_gap(&[&monthly], chrono_tz::UTC, wednesday).unwrap();
        assert_eq!(
            (at, gap),
            (utc(2027, 1, 1, 3, 0), chrono::Duration::days(31))
        );
    }

    #[test]
    fn daily_wall_clock_job_keeps_its_local_time_across_berlin_spring_forward() {
        // 2026-03-29 02:00 CET → 03:00 CEST: 08:00 local is 07:00 UTC before, 06:00 after.
        let got = fires(
            "0 8 * * *",
            chrono_tz::Europe::Berlin,
            utc(2026, 3, 27, 12, 0),
            3,
        );
        assert_eq!(
            got,
            vec![
                utc(2026, 3, 28, 7, 0),
                utc(2026, 3, 29, 6, 0),
                utc(2026, 3, 30, 6, 0)
            ]
        );
    }

    #[test]
    fn daily_wall_clock_job_keeps_its_local_time_across_berlin_fall_back() {
        // 2026-10-25 03:00 CEST → 02:00 CET.
        let got = fires(
            "0 8 * * *",
            chrono_tz::Europe::Berlin,
            utc(2026, 10, 23, 12, 0),
            3,
        );
        assert_eq!(
            got,
            vec![
                utc(2026, 10, 24, 6, 0),
                utc(2026, 10, 25, 7, 0),
                utc(2026, 10, 26, 7, 0)
            ]
        );
    }

    #[test]
    fn a_time_inside_the_spring_forward_gap_runs_right_after_it() {
        // 02:30 does not exist in Berlin on 2026-03-29; the job runs once that day.
        let got = fires(
            "30 2 * * *",
            chrono_tz::Europe::Berlin,
            utc(2026, 3, 28, 12, 0),
            2,
        );
        assert_eq!(
            got[0],
            utc(2026, 3, 29, 1, 0),
            "03:00 CEST, right after the gap"
        );
        assert_eq!(got[1], utc(2026, 3, 30, 0, 30));
    }

    #[test]
    fn a_time_repeated_by_fall_back_runs_once_in_new_york() {
        // 2026-11-01 02:00 EDT → 01:00 EST: 01:30 happens twice, the job runs once.
        let got = fires(
            "30 1 * * *",
            chrono_tz::America::New_York,
            utc(2026, 10, 31, 12, 0),
            2,
        );
        assert_eq!(got[0], utc(2026, 11, 1, 5, 30), "01:30 EDT");
        assert_eq!(got[1], utc(2026, 11, 2, 6, 30), "01:30 EST the next day");
    }

    /// Vixie cron's rule, which croner applies only to single values: a pattern
    /// without a wildcard or step in its seconds, minutes and hours names fixed
    /// times of day, each run once on a fall-back day and right after a
    /// spring-forward gap, however many it lists.
    #[test]
    fn listed_times_of_day_run_once_across_both_changes() {
        // New York, 2026-11-01: 01:30 happens twice (EDT, then EST).
        let got = fires(
            "30 1,13 * * *",
            chrono_tz::America::New_York,
            utc(2026, 10, 31, 20, 0),
            3,
        );
        assert_eq!(
            got,
            vec![
                utc(2026, 11, 1, 5, 30),
                utc(2026, 11, 1, 18, 30),
                utc(2026, 11, 2, 6, 30)
            ],
            "01:30 EDT only, then 13:30 EST"
        );
        // Berlin, 2026-03-29: 02:00–03:00 does not exist.
        let got = fires(
            "0,30 2 * * *",
            chrono_tz::Europe::Berlin,
            utc(2026, 3, 28, 12, 0),
            3,
        );
        assert_eq!(
            got,
            vec![
                utc(2026, 3, 29, 1, 0),
                utc(2026, 3, 30, 0, 0),
                utc(2026, 3, 30, 0, 30)
            ],
            "once right after the gap (03:00 CEST), then 02:00 and 02:30 CEST"
        );
        // A range is fixed times too; seconds count as the other two fields.
        let got = fires(
            "0 30 1-2 * * *",
            chrono_tz::America::New_York,
            utc(2026, 11, 1, 4, 0),
            2,
        );
        assert_eq!(got, vec![utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 7, 30)]);
    }

    #[test]
    fn fixed_times_of_day_are_split_only_when_several_and_few() {
        assert_eq!(
            fixed_times_of_day("0,30 2 * * 1-5"),
            ["0 2 * * 1-5", "30 2 * * 1-5"]
        );
        assert_eq!(
            fixed_times_of_day("0 30 1-2 * * *"),
            ["0 30 1 * * *", "0 30 2 * * *"]
        );
        assert_eq!(fixed_times_of_day("0-59 1 * * *").len(), 60);
        for interval in [
            "30 2 * * *",
            "*/5 * * * *",
            "0 */2 * * *",
            "0-59 1-2 * * *",
            "@daily",
        ] {
            assert!(fixed_times_of_day(interval).is_empty(), "{interval}");
        }
    }

    /// A time listed twice is one time. The count multiplied the fields' list
    /// lengths, repeats included: a pattern repeating its ranges (`0-59,0-59,…`,
    /// as a generated configuration may) went past 2^64 and the load of the
    /// configuration panicked (attempt to multiply with overflow).
    #[test]
    fn a_pattern_repeating_its_ranges_is_read_not_overflowed() {
        assert!(fixed_times_of_day("0,0 8,8 * * *").is_empty());
        assert_eq!(
            fixed_times_of_day("0,30,0 8 * * 1-5"),
            ["0 8 * * 1-5", "30 8 * * 1-5"]
        );
        let seconds = vec!["0-59"; 70_000].join(",");
        let hours = vec!["0-23"; 70_000].join(",");
        let schedule = Schedule::parse(&format!("{seconds} {seconds} {hours} * * *")).unwrap();
        assert_eq!(schedule.fires_per_minute(), 60);
    }

    /// A step or wildcard makes an interval: it keeps running through the
    /// repeated hour (the sweep every 5 minutes must not pause for an hour).
    #[test]
    fn a_stepped_hour_keeps_running_through_the_repeated_hour() {
        let got = fires(
            "0 */1 * * *",
            chrono_tz::America::New_York,
            utc(2026, 11, 1, 4, 30),
            3,
        );
        assert_eq!(
            got,
            vec![
                utc(2026, 11, 1, 5, 0),
                utc(2026, 11, 1, 6, 0),
                utc(2026, 11, 1, 7, 0)
            ],
            "01:00 EDT, 01:00 EST, 02:00 EST"
        );
    }

    #[test]
    fn weekday_digest_in_new_york_across_spring_forward() {
        // 2026-03-08 is a Sunday; 08:00 EST = 13:00 UTC, 08:00 EDT = 12:00 UTC.
        let got = fires(
            "0 8 * * 1-5",
            chrono_tz::America::New_York,
            utc(2026, 3, 5, 14, 0),
            2,
        );
        assert_eq!(got, vec![utc(2026, 3, 6, 13, 0), utc(2026, 3, 9, 12, 0)]);
    }

    #[test]
    fn interval_jobs_keep_their_spacing_across_a_change() {
        let got = fires(
            "*/30 * * * *",
            chrono_tz::Europe::Berlin,
            utc(2026, 10, 25, 0, 10),
            4,
        );
        let gaps: Vec<i64> = got
            .windows(2)
            .map(|w| (w[1] - w[0]).num_minutes())
            .collect();
        assert_eq!(gaps, vec![30, 30, 30]);
    }

    #[test]
    fn six_fields_mean_seconds_and_bad_expressions_say_why() {
        let got = fires("*/10 * * * * *", Tz::UTC, utc(2026, 1, 1, 0, 0), 2);
        assert_eq!((got[1] - got[0]).num_seconds(), 10);
        let err = Schedule::parse("*/5 * * *").unwrap_err();
        assert!(err.message.contains("found 4"), "{err}");
        let err = Schedule::parse("61 * * * *").unwrap_err();
        assert_eq!(err.pattern, "61 * * * *");
    }

    /// A pattern no date matches is refused (it would run once at start, then
    /// never), and so is a step as large as its field, which croner takes as the
    /// field's first value alone.
    #[test]
    fn a_step_of_zero_names_its_field_and_what_to_write() {
        let err = Schedule::parse("*/0 * * * *").unwrap_err();
        assert!(
            err.message.contains("/0 in the minute field")
                && err.message.contains("write * for every minute"),
            "{err}"
        );
        let err = Schedule::parse("0 8 */0 * *").unwrap_err();
        assert!(
            err.message.contains("day-of-month field") && err.message.contains("every day"),
            "{err}"
        );
    }

    #[test]
    fn a_schedule_that_never_fires_or_steps_past_its_field_is_refused() {
        let err = Schedule::parse("0 9 31 2 *").unwrap_err();
        assert!(err.message.contains("never fires"), "{err}");
        assert!(
            Schedule::parse_unchecked("0 9 31 2 *").is_ok(),
            "croner takes it"
        );
        assert!(Schedule::parse("0 9 29 2 *").is_ok(), "leap days come");
        let err = Schedule::parse("*/61 * * * *").unwrap_err();
        assert!(
            err.message.contains("/61") && err.message.contains("minute"),
            "{err}"
        );
        assert!(
            Schedule::parse_unchecked("*/61 * * * *").is_ok(),
            "croner takes it"
        );
        assert!(Schedule::parse("*/60 * * * *").is_err());
        assert!(
            Schedule::parse("0 0 */24 * * *").is_err(),
            "hours, after seconds"
        );
        assert!(Schedule::parse("*/59 */23 */30 */11 */6").is_ok());
        assert!(Schedule::parse("0-30/15 * * * *").is_ok());
    }

    /// A nickname croner does not read is refused listing those it does, not with
    /// croner's "between 5 and 7 fields" (a seventh field is refused too).
    #[test]
    fn an_unknown_nickname_is_refused_naming_those_known() {
        for unknown in ["@reboot", "@every 5m", "@midnight"] {
            let err = Schedule::parse(unknown).unwrap_err();
            assert!(
                err.message.starts_with(
                    "the nicknames are @yearly, @annually, @monthly, @weekly, @daily, @hourly; \
                     else expected 5 fields"
                ),
                "{unknown}: {err}"
            );
        }
        for known in NICKNAMES.iter().copied().chain([" @HOURLY ", "@Daily"]) {
            assert!(Schedule::parse(known).is_ok(), "{known}");
        }
    }

    #[test]
    fn a_value_out_of_its_field_is_refused_naming_the_field() {
        for (pattern, field) in [
            ("0 25 * * *", "25 is out of range in the hour field (0–23)"),
            (
                "60 * * * *",
                "60 is out of range in the minute field (0–59)",
            ),
            (
                "0 9 0 * *",
                "0 is out of range in the day-of-month field (1–31)",
            ),
            (
                "0 9 * 1-13 *",
                "13 is out of range in the month field (1–12)",
            ),
            (
                "0 9 * * 1-8",
                "8 is out of range in the day-of-week field (0–7)",
            ),
            (
                "61 0 9 * * *",
                "61 is out of range in the second field (0–59)",
            ),
        ] {
            let err = Schedule::parse(pattern).unwrap_err();
            assert_eq!(err.message, field, "{pattern}");
        }
        for fine in [
            "0 9-17 * * 1-5",
            "0 0 1,15 * SUN",
            "0 23 L * *",
            "59 23 31 12 7",
        ] {
            assert!(Schedule::parse(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn a_job_missed_during_downtime_is_due_once() {
        let schedule = Schedule::parse("0 * * * *").unwrap();
        let now = utc(2026, 5, 1, 12, 10);
        assert!(missed(&schedule, Tz::UTC, Some(utc(2026, 5, 1, 7, 0)), now));
        assert!(!missed(
            &schedule,
            Tz::UTC,
            Some(utc(2026, 5, 1, 12, 0)),
            now
        ));
        assert!(missed(&schedule, Tz::UTC, None, now));
    }

    /// A daily job that missed its slot waits for the next one when it comes
    /// within the hour; a frequent job, or a daily one further from its slot,
    /// catches up at once.
    #[test]
    fn only_a_daily_job_close_to_its_slot_waits_for_it() {
        let daily = Schedule::parse("0 8 * * 1-5").unwrap();
        let berlin = chrono_tz::Europe::Berlin;
        // Tuesday 1 December 2026, 07:58 in Berlin is 06:58 UTC.
        assert!(slot_is_close(&daily, berlin, utc(2026, 12, 1, 6, 58)));
        assert!(!slot_is_close(&daily, berlin, utc(2026, 12, 1, 5, 30)));
        let sweep = Schedule::parse("*/5 * * * *").unwrap();
        assert!(!slot_is_close(&sweep, berlin, utc(2026, 12, 1, 6, 58)));
    }

    type Log = Arc<Mutex<Vec<(&'static str, DateTime<Utc>)>>>;

    fn recording(clock: Arc<dyn Clock>, log: Log, busy: Duration) -> StartJob {
        Arc::new(move |name| {
            let clock = Arc::clone(&clock);
            let log = Arc::clone(&log);
            Box::pin(async move {
                log.lock().unwrap().push((name, clock.now()));
                tokio::time::sleep(busy).await;
            })
        })
    }

    async fn run_for(scheduler: &Scheduler, start: StartJob, how_long: Duration) {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(how_long).await;
            let _ = stop.send(true);
        });
        scheduler.run(start, shutdown, |_| {}).await;
        stopper.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn fires_on_schedule_and_runs_a_missed_job_once_at_start() {
        let origin = utc(2026, 5, 1, 12, 0) + chrono::Duration::seconds(20);
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(origin));
        let jobs = vec![
            JobSpec {
                name: "sweep",
                schedule: Schedule::parse("*/5 * * * *").unwrap(),
                // Down for hours: many slots missed, one catch-up run.
                last_started: Some(utc(2026, 5, 1, 7, 0)),
                stopped: false,
                fired: None,
            },
            JobSpec {
                name: "reconcile",
                schedule: Schedule::parse("0 * * * *").unwrap(),
                last_started: Some(utc(2026, 5, 1, 12, 0)),
                stopped: false,
                fired: None,
            },
        ];
        let scheduler = Scheduler::new(jobs, Tz::UTC, Arc::clone(&clock), Duration::from_secs(5));
        let log: Log = Arc::default();
        let start = recording(Arc::clone(&clock), Arc::clone(&log), Duration::from_secs(1));
        run_for(&scheduler, start, Duration::from_secs(61 * 60)).await;
        let log = log.lock().unwrap();
        let sweeps: Vec<String> = log
            .iter()
            .filter(|(n, _)| *n == "sweep")
            .map(|(_, at)| at.format("%H:%M:%S").to_string())
            .collect();
        assert_eq!(sweeps.len(), 1 + 12, "{sweeps:?}");
        assert_eq!(sweeps[0], "12:00:20", "catch-up at start");
        assert_eq!(sweeps[1], "12:05:00");
        let reconciles: Vec<DateTime<Utc>> = log
            .iter()
            .filter(|(n, _)| *n == "reconcile")
            .map(|(_, at)| *at)
            .collect();
        assert_eq!(reconciles, vec![utc(2026, 5, 1, 13, 0)]);
    }

    /// A daily job whose last run was stopped just after its slot (a restart)
    /// runs again at start; one that finished waits for its next slot.
    #[tokio::test(start_paused = true)]
    async fn a_job_stopped_before_it_finished_runs_again_at_start() {
        let origin = utc(2026, 5, 1, 2, 3);
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(origin));
        let nightly = |name, stopped| JobSpec {
            name,
            schedule: Schedule::parse("0 2 * * *").unwrap(),
            last_started: Some(utc(2026, 5, 1, 2, 0)),
            stopped,
            fired: None,
        };
        let jobs = vec![nightly("reconcile", true), nightly("digest", false)];
        let scheduler = Scheduler::new(jobs, Tz::UTC, Arc::clone(&clock), Duration::from_secs(5));
        let log: Log = Arc::default();
        let start = recording(Arc::clone(&clock), Arc::clone(&log), Duration::from_secs(1));
        run_for(&scheduler, start, Duration::from_secs(60 * 60)).await;
        let log = log.lock().unwrap();
        assert_eq!(*log, [("reconcile", origin)]);
    }

    /// The loop a reload builds catches up nothing: not a job the jobs table
    /// says never ran (a sweep still waiting behind the first reconcile), nor
    /// one stopped or missed. A slot that came between the old loop's last look
    /// and the new loop's start fires at once, once.
    #[tokio::test(start_paused = true)]
    async fn a_reloaded_loop_catches_up_nothing_and_loses_no_slot() {
        let origin = utc(2026, 5, 1, 12, 0) + chrono::Duration::seconds(1);
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(origin));
        let jobs = vec![
            JobSpec {
                name: "sweep",
                schedule: Schedule::parse("*/5 * * * *").unwrap(),
                last_started: None,
                stopped: false,
                fired: None,
            },
            JobSpec {
                name: "reconcile",
                schedule: Schedule::parse("30 * * * *").unwrap(),
                last_started: Some(utc(2026, 5, 1, 10, 30)),
                stopped: true,
                fired: None,
            },
            JobSpec {
                name: "digest",
                schedule: Schedule::parse("0 8 * * *").unwrap(),
                last_started: Some(utc(2026, 4, 29, 8, 0)),
                stopped: false,
                fired: None,
            },
        ];
        let scheduler = Scheduler::new(jobs, Tz::UTC, Arc::clone(&clock), Duration::from_secs(5))
            .resumed_from(origin - chrono::Duration::seconds(2));
        let log: Log = Arc::default();
        let start = recording(Arc::clone(&clock), Arc::clone(&log), Duration::from_secs(1));
        run_for(&scheduler, start, Duration::from_secs(11 * 60)).await;
        let log = log.lock().unwrap();
        assert_eq!(
            *log,
            [
                ("sweep", origin),
                ("sweep", utc(2026, 5, 1, 12, 5)),
                ("sweep", utc(2026, 5, 1, 12, 10)),
            ]
        );
    }

    /// A clock that follows tokio's paused time, and can be stepped back.
    struct SteppedClock {
        inner: TokioClock,
        back: Mutex<chrono::Duration>,
    }

    impl Clock for SteppedClock {
        fn now(&self) -> DateTime<Utc> {
            self.inner.now() - *self.back.lock().unwrap()
        }
    }

    impl SteppedClock {
        /// At 2026-05-01 07:59:50 UTC, not stepped yet.
        fn ten_seconds_before_eight() -> Arc<SteppedClock> {
            Arc::new(SteppedClock {
                inner: TokioClock::starting_at(
                    utc(2026, 5, 1, 7, 59) + chrono::Duration::seconds(50),
                ),
                back: Mutex::new(chrono::Duration::zero()),
            })
        }
    }

    /// A digest at 08:00 every day, last started at `last_started`.
    fn daily_digest_at_eight(last_started: DateTime<Utc>) -> Vec<JobSpec> {
        vec![JobSpec {
            name: "digest",
            schedule: Schedule::parse("0 8 * * *").unwrap(),
            last_started: Some(last_started),
            stopped: false,
            fired: None,
        }]
    }

    /// A host clock two hours ahead at start (a restored VM, a bad time
    /// source): the 08:00 digest missed by that clock is caught up at its 09:00
    /// (true 07:00). The clock is then set right, by NTP while the loop runs or
    /// before a restart seconds later: the 08:00 slot the catch-up stood for is
    /// not fired a second time at the true 08:00 (a second digest that day).
    #[tokio::test(start_paused = true)]
    async fn a_catch_up_on_a_clock_ahead_stands_for_its_slot_when_the_clock_is_set_right() {
        let clock = Arc::new(SteppedClock {
            inner: TokioClock::starting_at(utc(2026, 5, 1, 9, 0)),
            back: Mutex::new(chrono::Duration::zero()),
        });
        let as_clock: Arc<dyn Clock> = clock.clone();
        let log: Log = Arc::default();
        let start = recording(
            Arc::clone(&as_clock),
            Arc::clone(&log),
            Duration::from_secs(1),
        );
        let kept: Arc<Mutex<Option<DateTime<Utc>>>> = Arc::default();
        let before = Scheduler::new(
            daily_digest_at_eight(utc(2026, 4, 30, 8, 0)),
            Tz::UTC,
            Arc::clone(&as_clock),
            Duration::from_secs(5),
        )
        .on_fire({
            let kept = Arc::clone(&kept);
            Arc::new(move |_, slot| *kept.lock().unwrap() = Some(slot))
        });
        // NTP sets the clock right ten seconds after the catch-up, while the
        // loop runs on past the true 08:00.
        let stepper = {
            let clock = Arc::clone(&clock);
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                *clock.back.lock().unwrap() = chrono::Duration::hours(2);
                // The slot kept by the catch-up, as a restart then reads it.
                *kept.lock().unwrap()
            })
        };
        run_for(
            &before,
            Arc::clone(&start),
            Duration::from_secs(2 * 60 * 60),
        )
        .await;
        let kept = stepper.await.unwrap();
        assert_eq!(*log.lock().unwrap(), [("digest", utc(2026, 5, 1, 9, 0))]);
        // Or the daemon restarts on the clock set right (07:00 and a few
        // seconds), with the jobs table and the slot kept as the loop left them.
        *clock.back.lock().unwrap() = chrono::Duration::hours(4);
        let restarted = Scheduler::new(
            vec![JobSpec {
                fired: kept,
                ..daily_digest_at_eight(utc(2026, 5, 1, 9, 0)).remove(0)
            }],
            Tz::UTC,
            Arc::clone(&as_clock),
            Duration::from_secs(5),
        );
        let log: Log = Arc::default();
        let start = recording(
            Arc::clone(&as_clock),
            Arc::clone(&log),
            Duration::from_secs(1),
        );
        run_for(&restarted, start, Duration::from_secs(2 * 60 * 60)).await;
        assert_eq!(*log.lock().unwrap(), []);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backward_clock_step_does_not_stall_the_jobs() {
        let clock = Arc::new(SteppedClock {
            inner: TokioClock::starting_at(utc(2026, 5, 1, 12, 0)),
            back: Mutex::new(chrono::Duration::zero()),
        });
        let jobs = vec![JobSpec {
            name: "sweep",
            schedule: Schedule::parse("*/5 * * * *").unwrap(),
            last_started: Some(utc(2026, 5, 1, 12, 0)),
            stopped: false,
            fired: None,
        }];
        let as_clock: Arc<dyn Clock> = clock.clone();
        let scheduler =
            Scheduler::new(jobs, Tz::UTC, Arc::clone(&as_clock), Duration::from_secs(5));
        let log: Log = Arc::default();
        let start = recording(as_clock, Arc::clone(&log), Duration::from_secs(1));
        let stepper = {
            let clock = Arc::clone(&clock);
            tokio::spawn(async move {
                // At 12:04 the clock is set back an hour, to 11:04.
                tokio::time::sleep(Duration::from_secs(4 * 60)).await;
                *clock.back.lock().unwrap() = chrono::Duration::hours(1);
            })
        };
        run_for(&scheduler, start, Duration::from_secs(12 * 60)).await;
        stepper.await.unwrap();
        let times: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, at)| at.format("%H:%M").to_string())
            .collect();
        // Run until 11:12 by the stepped clock: fires at 11:05 and 11:10, not a
        // wait until 12:05.
        assert_eq!(times, ["11:05", "11:10"]);
    }

    /// A reload just after the 08:00 digest fired, then a step back of ten
    /// seconds: the reload's new loop (sharing the counters, as the daemon's
    /// does) does not fire the 08:00 slot again either.
    #[tokio::test(start_paused = true)]
    async fn a_reload_then_a_small_backward_step_does_not_fire_the_slot_again() {
        let clock = SteppedClock::ten_seconds_before_eight();
        let digest = daily_digest_at_eight;
        let as_clock: Arc<dyn Clock> = clock.clone();
        let log: Log = Arc::default();
        let start = recording(
            Arc::clone(&as_clock),
            Arc::clone(&log),
            Duration::from_secs(1),
        );
        let before = Scheduler::new(
            digest(utc(2026, 4, 30, 8, 0)),
            Tz::UTC,
            Arc::clone(&as_clock),
            Duration::from_secs(5),
        );
        // Fires at 08:00:00; the reload comes at 08:00:02.
        run_for(&before, Arc::clone(&start), Duration::from_secs(12)).await;
        assert_eq!(log.lock().unwrap().len(), 1);
        // The new loop reads the digest's start from the database: 08:00:00.
        let after = Scheduler::with_counters(
            digest(utc(2026, 5, 1, 8, 0)),
            Tz::UTC,
            Arc::clone(&as_clock),
            Duration::from_secs(5),
            before.counters(),
        );
        let stepper = {
            let clock = Arc::clone(&clock);
            tokio::spawn(async move {
                // At 08:00:04 the clock is set back 10 s, to 07:59:54: the loop
                // looks again (every 5 s) before it reads 08:00 again.
                tokio::time::sleep(Duration::from_secs(2)).await;
                *clock.back.lock().unwrap() = chrono::Duration::seconds(10);
            })
        };
        run_for(&after, start, Duration::from_secs(60)).await;
        stepper.await.unwrap();
        let fires: Vec<DateTime<Utc>> = log.lock().unwrap().iter().map(|(_, at)| *at).collect();
        assert_eq!(fires, [utc(2026, 5, 1, 8, 0)]);
    }

    /// The slot a job fired last, kept across a restart, holds when the clock at
    /// start reads before it by less than the job's interval and a day; further
    /// ahead it is ignored, and at or before the clock it holds nothing.
    #[test]
    fn a_fired_slot_ahead_of_the_clock_holds_only_up_to_one_interval_and_a_day() {
        let daily = Schedule::parse("0 8 * * *").unwrap();
        let sweep = Schedule::parse("*/5 * * * *").unwrap();
        let weekly = Schedule::parse("0 8 * * 1").unwrap();
        let eight = utc(2026, 5, 1, 8, 0);
        let seconds = chrono::Duration::seconds;
        let ahead =
            |schedule: &Schedule, fired, now| fired_slot_ahead(schedule, Tz::UTC, Some(fired), now);
        // Restarted on a clock two seconds before the 08:00 it fired.
        assert_eq!(
            ahead(&daily, eight, eight - seconds(2)),
            FiredSlot::Holds(eight)
        );
        assert_eq!(
            ahead(&daily, eight, eight - chrono::Duration::hours(23)),
            FiredSlot::Holds(eight)
        );
        // At or after it: nothing to hold.
        assert_eq!(ahead(&daily, eight, eight), FiredSlot::Behind);
        assert_eq!(ahead(&daily, eight, eight + seconds(30)), FiredSlot::Behind);
        assert_eq!(
            fired_slot_ahead(&daily, Tz::UTC, None, eight),
            FiredSlot::Behind
        );
        // A whole slot between (yesterday's 08:00 still to come), or more than a
        // day: ignored.
        assert_eq!(
            ahead(&daily, eight, eight - chrono::Duration::hours(25)),
            FiredSlot::TooFarAhead(eight)
        );
        let five_past = utc(2026, 5, 1, 8, 5);
        assert_eq!(
            ahead(&sweep, five_past, utc(2026, 5, 1, 8, 1)),
            FiredSlot::Holds(five_past)
        );
        assert_eq!(
            ahead(&sweep, five_past, utc(2026, 5, 1, 7, 58)),
            FiredSlot::TooFarAhead(five_past)
        );
        // 2026-05-04 is a Monday: two days ahead is its next slot, but further
        // than a day.
        let monday = utc(2026, 5, 4, 8, 0);
        assert_eq!(
            ahead(&weekly, monday, monday - chrono::Duration::hours(20)),
            FiredSlot::Holds(monday)
        );
        assert_eq!(
            ahead(&weekly, monday, monday - chrono::Duration::days(2)),
            FiredSlot::TooFarAhead(monday)
        );
        // A clock years ahead when it fired.
        assert_eq!(
            ahead(&sweep, utc(2036, 5, 1, 8, 5), five_past),
            FiredSlot::TooFarAhead(utc(2036, 5, 1, 8, 5))
        );
    }

    /// A fresh loop (a restarted daemon: no counters shared) on a clock set back
    /// across the restart: the digest's 02:00, kept as fired, is not fired again
    /// (the next is the day after); a reconcile stopped by the restart runs at
    /// start, as ever, but not again at the 02:00 it fired before; a sweep whose
    /// slot lies more than an interval ahead fires from the clock; a prune that
    /// never started for its kept slot fires it. The hook is
    /// told the slot to keep: the one before the restart while the clock is
    /// behind it.
    #[tokio::test(start_paused = true)]
    async fn a_restart_on_a_clock_set_back_does_not_fire_the_kept_slot_again() {
        let origin = utc(2026, 5, 1, 1, 59) + chrono::Duration::seconds(30);
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(origin));
        let jobs = vec![
            JobSpec {
                name: "digest",
                schedule: Schedule::parse("0 2 * * *").unwrap(),
                last_started: Some(utc(2026, 5, 1, 2, 0)),
                stopped: false,
                fired: Some(utc(2026, 5, 1, 2, 0)),
            },
            JobSpec {
                name: "reconcile",
                schedule: Schedule::parse("0 2 * * *").unwrap(),
                last_started: Some(utc(2026, 5, 1, 2, 0)),
                stopped: true,
                fired: Some(utc(2026, 5, 1, 2, 0)),
            },
            JobSpec {
                name: "sweep",
                schedule: Schedule::parse("*/5 * * * *").unwrap(),
                last_started: Some(utc(2026, 5, 1, 2, 5)),
                stopped: false,
                fired: Some(utc(2026, 5, 1, 2, 5)),
            },
            // Fired at 02:00 but stopped while waiting for the writer lock: it
            // never started, so 02:00 fires (on a true clock it would be missed,
            // and run at start).
            JobSpec {
                name: "prune",
                schedule: Schedule::parse("0 2 * * *").unwrap(),
                last_started: Some(utc(2026, 4, 30, 2, 0)),
                stopped: false,
                fired: Some(utc(2026, 5, 1, 2, 0)),
            },
        ];
        let kept: Log = Arc::default();
        let scheduler = Scheduler::new(jobs, Tz::UTC, Arc::clone(&clock), Duration::from_secs(5))
            .on_fire({
                let kept = Arc::clone(&kept);
                Arc::new(move |name, slot| kept.lock().unwrap().push((name, slot)))
            });
        let log: Log = Arc::default();
        let start = recording(Arc::clone(&clock), Arc::clone(&log), Duration::from_secs(1));
        run_for(&scheduler, start, Duration::from_secs(11 * 60)).await;
        let fires = |name: &str| -> Vec<DateTime<Utc>> {
            log.lock()
                .unwrap()
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, at)| *at)
                .collect()
        };
        assert_eq!(fires("digest"), Vec::<DateTime<Utc>>::new());
        assert_eq!(fires("reconcile"), [origin]);
        assert_eq!(fires("prune"), [utc(2026, 5, 1, 2, 0)]);
        assert_eq!(
            fires("sweep"),
            [
                utc(2026, 5, 1, 2, 0),
                utc(2026, 5, 1, 2, 5),
                utc(2026, 5, 1, 2, 10)
            ]
        );
        let kept = kept.lock().unwrap();
        let reconcile: Vec<_> = kept.iter().filter(|(n, _)| *n == "reconcile").collect();
        assert_eq!(reconcile, [&("reconcile", utc(2026, 5, 1, 2, 0))]);
        assert_eq!(
            scheduler.counters()["reconcile"].fired(),
            Some(utc(2026, 5, 1, 2, 0))
        );
    }

    /// A reload after the clock was set back past the slot just fired: the new
    /// loop's first plan does not fire it again either (the step came first,
    /// then the SIGHUP).
    #[tokio::test(start_paused = true)]
    async fn a_backward_step_then_a_reload_does_not_fire_the_slot_again() {
        let clock = SteppedClock::ten_seconds_before_eight();
        let digest = daily_digest_at_eight;
        let as_clock: Arc<dyn Clock> = clock.clone();
        let log: Log = Arc::default();
        let start = recording(
            Arc::clone(&as_clock),
            Arc::clone(&log),
            Duration::from_secs(1),
        );
        let before = Scheduler::new(
            digest(utc(2026, 4, 30, 8, 0)),
            Tz::UTC,
            Arc::clone(&as_clock),
            Duration::from_secs(5),
        );
        // Fires at 08:00:00; at 08:00:02 the clock is set back 10 s, to 07:59:52,
        // and the reload comes before the old loop looks again.
        run_for(&before, Arc::clone(&start), Duration::from_secs(12)).await;
        assert_eq!(log.lock().unwrap().len(), 1);
        *clock.back.lock().unwrap() = chrono::Duration::seconds(10);
        let after = Scheduler::with_counters(
            digest(utc(2026, 5, 1, 8, 0)),
            Tz::UTC,
            Arc::clone(&as_clock),
            Duration::from_secs(5),
            before.counters(),
        );
        run_for(&after, start, Duration::from_secs(60)).await;
        let fires: Vec<DateTime<Utc>> = log.lock().unwrap().iter().map(|(_, at)| *at).collect();
        assert_eq!(fires, [utc(2026, 5, 1, 8, 0)]);
    }

    /// A step back of a few seconds just after a fire (an NTP correction, a leap
    /// second) fires no slot twice: the 08:00 digest goes out once, the sweep
    /// fires once per slot. A step back past an earlier slot fires the slots
    /// from there (the sweep must not wait for the clock to catch up).
    #[tokio::test(start_paused = true)]
    async fn a_small_backward_step_after_a_fire_does_not_fire_the_slot_again() {
        let clock = SteppedClock::ten_seconds_before_eight();
        let jobs = vec![
            JobSpec {
                name: "digest",
                schedule: Schedule::parse("0 8 * * *").unwrap(),
                last_started: Some(utc(2026, 4, 30, 8, 0)),
                stopped: false,
                fired: None,
            },
            JobSpec {
                name: "sweep",
                schedule: Schedule::parse("*/5 * * * *").unwrap(),
                last_started: Some(utc(2026, 5, 1, 7, 55)),
                stopped: false,
                fired: None,
            },
        ];
        let as_clock: Arc<dyn Clock> = clock.clone();
        let scheduler =
            Scheduler::new(jobs, Tz::UTC, Arc::clone(&as_clock), Duration::from_secs(5));
        let log: Log = Arc::default();
        let start = recording(as_clock, Arc::clone(&log), Duration::from_secs(1));
        let stepper = {
            let clock = Arc::clone(&clock);
            tokio::spawn(async move {
                // At 08:00:02 the clock is set back 3 s, to 07:59:59.
                tokio::time::sleep(Duration::from_secs(12)).await;
                *clock.back.lock().unwrap() = chrono::Duration::seconds(3);
                // At 08:06:00 (by the stepped clock) it is set back 8 min, to
                // 07:58:00: past the sweep's 08:05 slot and its 08:00 one, which
                // fire again as after any longer step; the digest's slot is still
                // the one it fired last.
                tokio::time::sleep(Duration::from_secs(6 * 60 - 2)).await;
                *clock.back.lock().unwrap() = chrono::Duration::seconds(8 * 60 + 3);
            })
        };
        run_for(&scheduler, start, Duration::from_secs(16 * 60)).await;
        stepper.await.unwrap();
        let fires = |name: &str| -> Vec<String> {
            log.lock()
                .unwrap()
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, at)| at.format("%H:%M:%S").to_string())
                .collect()
        };
        assert_eq!(fires("digest"), ["08:00:00"]);
        assert_eq!(
            fires("sweep"),
            ["08:00:00", "08:05:00", "08:00:00", "08:05:00"]
        );
        assert_eq!(
            scheduler.counters()["sweep"].skipped.load(Ordering::SeqCst),
            0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_that_panicked_runs_again_at_its_next_fire() {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(utc(2026, 5, 1, 12, 0)));
        let jobs = vec![JobSpec {
            name: "prune",
            schedule: Schedule::parse("* * * * *").unwrap(),
            last_started: Some(utc(2026, 5, 1, 12, 0)),
            stopped: false,
            fired: None,
        }];
        let scheduler = Scheduler::new(jobs, Tz::UTC, Arc::clone(&clock), Duration::from_secs(5));
        let start: StartJob = Arc::new(|_| Box::pin(async { panic!("a bug in the job") }));
        run_for(&scheduler, start, Duration::from_secs(3 * 60 + 30)).await;
        let counters = scheduler.counters();
        let c = &counters["prune"];
        assert_eq!(c.started.load(Ordering::SeqCst), 3, "12:01, 12:02, 12:03");
        assert_eq!(c.skipped.load(Ordering::SeqCst), 0);
        assert!(!c.is_running());
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_waiting_behind_another_is_told_from_one_at_work() {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(utc(2026, 5, 1, 12, 0)));
        let every_minute = |name| JobSpec {
            name,
            schedule: Schedule::parse("* * * * *").unwrap(),
            last_started: Some(utc(2026, 5, 1, 12, 0)),
            stopped: false,
            fired: None,
        };
        let jobs = vec![every_minute("reconcile"), every_minute("sweep")];
        let scheduler = Scheduler::new(jobs, Tz::UTC, clock, Duration::from_secs(5));
        let counters = scheduler.counters();
        let writer = Arc::new(tokio::sync::Mutex::new(()));
        let start: StartJob = {
            let counters = counters.clone();
            Arc::new(move |name| {
                let counters = Arc::clone(&counters[name]);
                let writer = Arc::clone(&writer);
                Box::pin(async move {
                    let waiting = counters.waiting();
                    let _writer = writer.lock_owned().await;
                    drop(waiting);
                    tokio::time::sleep(Duration::from_secs(150)).await;
                })
            })
        };
        assert!(start_now("reconcile", &counters["reconcile"], &start));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(start_now("sweep", &counters["sweep"], &start));
        tokio::time::sleep(Duration::from_secs(1)).await;

        assert_eq!(scheduler.busy("reconcile"), Busy::Running);
        assert_eq!(
            scheduler.busy("sweep"),
            Busy::Waiting {
                behind: vec!["reconcile"]
            }
        );
        scheduler.fire("sweep", &start);
        assert_eq!(counters["sweep"].skipped.load(Ordering::SeqCst), 1);

        // Its turn came: from now on it is at work.
        tokio::time::sleep(Duration::from_secs(150)).await;
        assert!(!counters["reconcile"].is_running());
        assert_eq!(scheduler.busy("sweep"), Busy::Running);
    }

    /// A job whose runs take 10 s each, counted; with `first_panics`, the first
    /// panics at its end, as a bug would.
    fn counted_ten_second_job(first_panics: bool) -> (Arc<AtomicU64>, StartJob) {
        let runs = Arc::new(AtomicU64::new(0));
        let start: StartJob = {
            let runs = Arc::clone(&runs);
            Arc::new(move |_| {
                let runs = Arc::clone(&runs);
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let before = runs.fetch_add(1, Ordering::SeqCst);
                    assert!(!(first_panics && before == 0), "a bug");
                })
            })
        };
        (runs, start)
    }

    /// Starts asked for while a job runs (a reload releasing mail, messages
    /// queued by other jobs) make one more run when it ends, not one each, and
    /// not none: the running one may have passed what they asked it to see. A
    /// plain start refused meanwhile (a scheduled fire, `POST /reconcile`) asks
    /// for nothing more.
    #[tokio::test(start_paused = true)]
    async fn starts_asked_for_while_a_job_runs_make_one_more_run_after_it() {
        let counters = Arc::new(JobCounters::default());
        let (runs, start) = counted_ten_second_job(false);
        assert!(start_or_follow("mail", &counters, &start));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!start_now("mail", &counters, &start));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "a refused start_now follows with nothing"
        );
        assert!(!counters.is_running());

        assert!(start_now("mail", &counters, &start));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!start_or_follow("mail", &counters, &start));
        assert!(!start_or_follow("mail", &counters, &start));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(
            counters.is_running(),
            "the run asked for began as the first ended"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "two asked for: one more run"
        );
        assert_eq!(counters.started.load(Ordering::SeqCst), 3);
        assert!(!counters.is_running());
        assert!(
            start_or_follow("mail", &counters, &start),
            "idle: it starts now"
        );
    }

    /// A start asked for while a run panicked is left asked for: the run after
    /// (the next fire) begins after the ask and sees what it was for, but ran
    /// once more on its own when it ended, for nothing. The same when a fire
    /// takes the job between a run's end and its look at the ask.
    #[tokio::test(start_paused = true)]
    async fn a_run_started_after_an_ask_answers_it_and_runs_no_more() {
        let counters = Arc::new(JobCounters::default());
        // The first run panics.
        let (runs, start) = counted_ten_second_job(true);
        assert!(start_now("mail", &counters, &start));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!start_or_follow("mail", &counters, &start));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!counters.is_running(), "the panicked run let go");
        assert!(start_now("mail", &counters, &start), "the next fire");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "the panicked one and the fire"
        );
        assert_eq!(counters.started.load(Ordering::SeqCst), 2);
        assert!(!counters.is_running());
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_still_running_at_its_next_fire_is_skipped_and_counted() {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(utc(2026, 5, 1, 12, 0)));
        let jobs = vec![JobSpec {
            name: "reconcile",
            schedule: Schedule::parse("* * * * *").unwrap(),
            last_started: Some(utc(2026, 5, 1, 12, 0)),
            stopped: false,
            fired: None,
        }];
        let scheduler = Scheduler::new(jobs, Tz::UTC, Arc::clone(&clock), Duration::from_secs(5));
        let log: Log = Arc::default();
        // Each run takes 150 s: of the fires at 12:01, 12:02, 12:03, 12:04, 12:05,
        // 12:02 and 12:03 find it running (started 12:01), 12:05 too (started 12:04).
        let start = recording(
            Arc::clone(&clock),
            Arc::clone(&log),
            Duration::from_secs(150),
        );
        run_for(&scheduler, start, Duration::from_secs(5 * 60 + 30)).await;
        let counters = scheduler.counters();
        let c = &counters["reconcile"];
        assert_eq!(c.started.load(Ordering::SeqCst), 2);
        assert_eq!(c.skipped.load(Ordering::SeqCst), 3);
        let times: Vec<DateTime<Utc>> = log.lock().unwrap().iter().map(|(_, at)| *at).collect();
        assert_eq!(times, vec![utc(2026, 5, 1, 12, 1), utc(2026, 5, 1, 12, 4)]);
    }
}
