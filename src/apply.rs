//! The executor: writes a guarded plan to the workspace, journaling every write in
//! SQLite before it is sent, then verifies each change by re-reading the workspace.
//!
//! Actions run in phases so that later actions can refer to objects created by
//! earlier ones: deprovisions, then groups, then accounts, then account updates,
//! then memberships. Within a phase, actions run concurrently up to the workspace's
//! `max_concurrency` (the client also enforces it, with the request rate limit).
//! Renames that take a userName another rename gives up (a chain the plan makes
//! whole) go link by link, each after the one it waits on; a create or rename whose
//! userName a failed rename kept is not sent (journaled failed, "not sent: userName
//! … is still taken"), as it would only meet 409.
//!
//! A deactivation answered 404 is verified like any (a 404 on a write proves
//! nothing); when no read finds the account either, it was deleted in the
//! workspace meanwhile (or deactivated and hidden since: a workspace may list
//! deactivated accounts no more, which seatwarden cannot tell), and the row is
//! journaled applied with a note saying so ([`ALREADY_GONE`]): the access ended
//! before this write, not with it. A
//! deactivation a killed run left in flight is noted the same way when the
//! recovery finds its account gone.
//!
//! Journal states: `planned → in_flight` (row updated before the request leaves),
//! then `applied` once the workspace shows the change, or `failed` with the
//! provider's message. Transient failures are retried inside the client; what
//! reaches this module is final for this run.
//!
//! Circuit breaker ([`apply_with_breaker`]): every write's outcome feeds a
//! [`Breaker`]; once it opens, no further request is sent — the remaining actions of
//! the phase are journaled failed ("not sent"), later phases stay planned. The
//! opening is stored the moment it happens, stamped then, so it survives a run that
//! fails or is killed afterwards; the caller stores it again with the whole run's
//! failures, under the same stamp.
//!
//! A workspace that stops answering mid-apply is not written to write by write:
//! each write against it spends the client's retries (against one that hangs, seven
//! timeouts: about four minutes at the defaults), and a window's share of failures
//! took a dozen minutes to gather. Writes are watched with the [`Outage`] rule
//! verification uses: once one gets no reply past its retries while nothing else
//! was answered, no further write is sent (journaled failed, "not sent: the
//! workspace stopped answering …"; later phases stay planned), the breaker opens
//! saying so once at least three writes failed ([`Breaker::trip`]), and
//! verification, which shares the watch, sends no read. A write
//! refused 401 stops the writes too (the token is at fault, and every later write
//! would be refused alike; a 403 may be one object's), without opening the
//! breaker: nothing is wrong with the workspace, and once the token is fixed the
//! next run writes, with no `resume`. What is not sent says why and what to check:
//! "the workspace refused the token", or, when a web page said the 401 (a WAF's
//! or a proxy's block page), that something in front of the workspace refused a
//! write ([`NOT_SENT_IN_FRONT`]), which no new token fixes.
//!
//! Stopping ([`until_stopped`]): once the [`StopSignal`] is set (the daemon got
//! SIGTERM), no further write is started. Writes already sent finish and are
//! verified and journaled as usual; the rest of the phase is journaled failed ("not
//! sent"), later phases stay planned, and the next run plans them again. A write
//! waiting for a retry when the stop comes is not retried (the client's wait ends
//! at once, [`crate::retry::retry_unless_stopped`]): its attempts so far failed
//! for a transient reason, so it is journaled "not sent" too, counted with those
//! the stop kept back, and neither the breaker nor the outage watch hears of it.
//! Against a workspace answering 429 with `Retry-After: 60`, a SIGTERM waited six
//! minutes for such a write. An attempt on the wire is never cut: a write that
//! may have reached the workspace ends as it would have. The next run plans from
//! what the workspace then shows, so an attempt that timed out but took effect is
//! not made twice (a created account is found by its userName).
//!
//! Linking writes nothing to the workspace: the plan's matched links
//! (`Plan::new_links`) are stored while the changes are verified.
//!
//! Verification re-reads each changed object once (all of them concurrently, before
//! any action is checked, however many actions share one), or lists the workspace
//! once when the latencies measured in this run (a write, a listing page) say that
//! is faster. Objects are re-read about 30 at a time with `id eq … or …` filters;
//! an object such an answer leaves out (a deleted account, or an `or` the provider
//! mishandles) is read on its own, so absence is never taken from a filter. A
//! provider that refuses the filter or answers with what was not asked for is read
//! object by object for the rest of the run, and so is the rest of a verification
//! whose first, four-id filter was slower per object than a single read.
//!
//! A workspace that stops answering is not read row by row: every read that fails
//! for a transient reason has spent the client's retries (about 20 s), and a
//! hundred rows read so against a killed workspace took 17 minutes. Once reads
//! past their retries show the workspace down ([`Outage`]: no reply at all while
//! nothing else was answered, or several distinct objects failing 5xx in a row),
//! no further read is sent; each change left unread is journaled
//! failed ("not verified: not read: the workspace stopped answering …"), as a
//! change whose read failed always was: never applied, never taken as not done,
//! and the next run reads the workspace again and plans what is still missing.
//! The log says once how many were left. A read failing while others are answered
//! is that object's own trouble and fails only its changes. Once the circuit
//! breaker opened, the workspace is not listed again for verification either: the
//! run already found it failing, and a listing is all or nothing.
//!
//! Where groups never show their members (`workspace.group_members =
//! "by_member_filter"`, AWS IAM Identity Center), a membership change is checked by
//! the groups of each member it names (`members.value eq "<id>"`, asked once per
//! member and shared by every action that names it), in verification and in
//! recovery alike; the group itself is read only to see that it exists, and the
//! workspace is never re-listed instead (a listing would ask every account's groups).
//! In the default mode, an add to a group that reads with no members at all fails
//! with a message naming that setting.
//!
//! Progress ([`with_progress`]): a caller that shows it (a run on a terminal) hears
//! of every write answered and of the start of the verification.
//!
//! Crash safety: a row left `in_flight` by a dead process is resolved by
//! [`recover`] at the start of the next reconcile, sweep or retry pass, by
//! re-reading the object (a row whose read fails for a while stays in flight for
//! the next time; one refused for good fails with the reason); a create is never
//! sent twice because a created account is found by its userName first. A crash
//! leaves a whole phase in flight, so recovery reads as verification does: the
//! rows' objects about 30 a request by `id eq … or …`, the creates' userNames by
//! `userName eq … or …`, and on its own what an answer leaves out. A phase of
//! creates cut off early leaves most of them never sent, each left out of its
//! `or` answer: when those outnumber the pages of a listing of `/Users`, one
//! listing settles them instead (absent only from a listing that reached its
//! `totalResults`, as a plan decides who lacks an account; what a short one
//! lacks is still looked up on its own). That is
//! also why a create's link and result may be committed in batches, at most once
//! per `RECORD_INTERVAL`: one commit per create was most of an initial
//! provisioning run. Recovery logs its counts, not a line per row (the journal
//! holds each outcome), and a run on a terminal shows the rows checked.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::circuit::{Breaker, CircuitRecord, FailedWrite};
use crate::model::{
    Account, AccountRef, Action, ActionKind, Attribute, AttributeChange, GroupRef, LinkMethod,
    NewLink, Plan, WorkspaceGroup, WorkspaceSnapshot, fold_case,
};
use crate::policy::FxHashMap;
use crate::retry::Transient;
use crate::store::{JournalEntry, RunId, Store, StoreError};
use crate::workspace::{CHECK_TOKEN, NOT_READ, Outage, ReadStart, ScimClient, WorkspaceError};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    #[error("the state database lock was poisoned by a panicking task")]
    Poisoned,
    #[error("recording created accounts failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("reading the workspace: {0}")]
    Workspace(#[from] crate::workspace::WorkspaceError),
}

impl crate::retry::Transient for ApplyError {
    fn is_transient(&self) -> bool {
        match self {
            ApplyError::Store(e) => e.is_transient(),
            ApplyError::Workspace(e) => e.is_transient(),
            ApplyError::Poisoned | ApplyError::Task(_) => false,
        }
    }
}

/// What happened to the runnable actions of one plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplySummary {
    pub applied: usize,
    pub failed: usize,
    /// Set when the circuit breaker opened during this apply: why, and the failing
    /// writes. Actions not yet sent were journaled failed ("not sent") or left
    /// planned (later phases); the next run re-plans them.
    pub circuit_opened: Option<CircuitRecord>,
}

/// How far an apply has got, for a terminal (see [`with_progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyProgress {
    /// `done` of the plan's `total` runnable actions are written (answered, failed,
    /// or not sent once the circuit breaker opened); none is verified yet.
    Writing { done: usize, total: usize },
    /// The writes are done; `changes` are being verified by re-reading them.
    Verifying { changes: usize },
    /// [`recover`] has decided `checked` of the `total` rows a cut-off run left in
    /// flight.
    Recovering { checked: usize, total: usize },
}

/// What [`with_progress`] hands the progress to.
pub type ProgressHook = Arc<dyn Fn(ApplyProgress) + Send + Sync>;

tokio::task_local! {
    static PROGRESS: ProgressHook;
}

/// Runs `applying` with `hook` told the progress of the apply it makes on this task
/// (through [`apply_with_breaker`]; `bounded` polls the writes on the same task).
/// A task-local, not a parameter: the apply is reached through the safety net's
/// circuit-breaker wrapper, which has no use for it. Without a hook, nothing is
/// reported.
pub async fn with_progress<F: Future>(hook: ProgressHook, applying: F) -> F::Output {
    PROGRESS.scope(hook, applying).await
}

fn report_progress(progress: ApplyProgress) {
    let _ = PROGRESS.try_with(|hook| hook(progress));
}

/// Whether a caller further out already hears this task's progress (see
/// [`with_progress`]): an inner scope would take it from them.
pub fn progress_is_heard() -> bool {
    PROGRESS.try_with(|_| ()).is_ok()
}

/// Set once the process is stopping, or a run must end for another reason (the
/// daemon's `schedule.reconcile_max_duration`, given as [`StopSignal::stop_for`]'s
/// cause): an apply watching it (see [`until_stopped`]) starts no further write,
/// and retries none of those under way (the client's wait between two attempts
/// ends at once). Clones share the one flag.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<StopFlag>);

#[derive(Debug, Default)]
struct StopFlag {
    stopped: AtomicBool,
    /// Wakes those waiting in [`StopSignal::stopped`].
    woken: tokio::sync::Notify,
    /// Why it was set, when not because the process is stopping.
    cause: std::sync::OnceLock<String>,
}

impl StopSignal {
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        self.0.woken.notify_waiters();
    }

    /// [`StopSignal::stop`] for `cause` (the first cause given is kept), which a
    /// run cut short records in place of "seatwarden was stopping".
    pub fn stop_for(&self, cause: String) {
        let _ = self.0.cause.set(cause);
        self.stop();
    }

    /// Why the signal was set, when [`StopSignal::stop_for`] set it.
    pub fn cause(&self) -> Option<String> {
        self.0.cause.get().cloned()
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    /// Resolves once [`StopSignal::stop`] was called (at once if it was already).
    pub async fn stopped(&self) {
        // Made before the flag is read: `notify_waiters` wakes a `Notified` from
        // the moment it exists, so a stop between the two is not missed.
        let woken = self.0.woken.notified();
        if self.is_stopped() {
            return;
        }
        woken.await;
    }
}

/// One flag is one signal.
impl PartialEq for StopSignal {
    fn eq(&self, other: &StopSignal) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StopSignal {}

/// What an apply watching a [`StopSignal`] shares with its caller.
struct StopWatch {
    signal: StopSignal,
    /// Runnable actions left unsent because the signal was set.
    unsent: AtomicUsize,
}

tokio::task_local! {
    static STOP: Arc<StopWatch>;
}

/// Runs `applying` with the applies it makes on this task (through
/// [`apply_with_breaker`]) watching `signal`, and returns how many runnable
/// actions they left unsent because it was set. A task-local, like
/// [`with_progress`]: the safety net's circuit-breaker wrapper sits in between.
pub async fn until_stopped<F: Future>(signal: StopSignal, applying: F) -> (F::Output, usize) {
    let watch = Arc::new(StopWatch {
        signal,
        unsent: AtomicUsize::new(0),
    });
    let output = STOP.scope(Arc::clone(&watch), applying).await;
    (output, watch.unsent.load(Ordering::SeqCst))
}

/// Runs `reading`, a read made before the first write of an apply that watches a
/// stop on this task ([`until_stopped`]), unless that stop is set first: then the
/// read is dropped where it stands (waiting a minute for its retry, say) and
/// `None` is returned. Nothing was sent yet, so giving up loses nothing. Outside
/// [`until_stopped`] the read is simply awaited.
pub async fn read_unless_stopped<F: Future>(reading: F) -> Option<F::Output> {
    let Ok(signal) = STOP.try_with(|watch| watch.signal.clone()) else {
        return Some(reading.await);
    };
    tokio::select! {
        biased;
        () = signal.stopped() => None,
        output = reading => Some(output),
    }
}

/// Why an action the stop kept from being sent was not.
pub const NOT_SENT_STOPPING: &str =
    "not sent: seatwarden was stopping; the next run plans it again";

/// Why an action was not sent once the circuit breaker had opened.
pub const NOT_SENT_BREAKER: &str = "not sent: the circuit breaker opened (too many writes failed)";

/// How an action not sent because an earlier write found the workspace down
/// ([`Outage`]) begins its error; why and what happens next follow.
pub const NOT_SENT_DOWN: &str = "not sent: the workspace stopped answering";

/// How an action not sent because an earlier write was refused 401 begins its
/// error; which write and what to check follow.
pub const NOT_SENT_TOKEN: &str = "not sent: the workspace refused the token";

/// How an action not sent because an earlier write was refused 401 by a web
/// page (a WAF's, a proxy's block or sign-in page: the SCIM service answers in
/// JSON) begins its error; which write and what to check follow. Not the token's
/// fault: "refused the token" sent operators rotating a token that was fine.
pub const NOT_SENT_IN_FRONT: &str =
    "not sent: something in front of the workspace (a proxy, firewall or WAF) refused a write";

/// How every action journaled failed but kept back unsent begins its error:
/// `status` and a sweep's summary count those apart from writes that failed.
pub const NOT_SENT: [&str; 5] = [
    NOT_SENT_STOPPING,
    NOT_SENT_BREAKER,
    NOT_SENT_DOWN,
    NOT_SENT_TOKEN,
    NOT_SENT_IN_FRONT,
];

/// Why the executor kept an action back unsent: journaled `failed` (so that an
/// approval and recovery see it was never applied), yet it never reached the
/// workspace, and the next run plans it again. The report, `status`, the digest
/// and a sweep's summary count these as not sent, never as failed writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeptBack {
    Stopping,
    Breaker,
    Down,
    Token,
    /// A web page's 401 ([`NOT_SENT_IN_FRONT`]): what stands in front of the
    /// workspace refused the writes, not the SCIM service.
    InFront,
}

impl KeptBack {
    /// Why a row journaled with `last_error` was kept back, by its error's prefix
    /// (the workspace-down and token messages go on to say which write showed
    /// it); `None` for a write that was sent, or a row with no error.
    pub fn of(last_error: Option<&str>) -> Option<KeptBack> {
        let error = last_error?;
        [
            (NOT_SENT_STOPPING, KeptBack::Stopping),
            (NOT_SENT_BREAKER, KeptBack::Breaker),
            (NOT_SENT_DOWN, KeptBack::Down),
            (NOT_SENT_TOKEN, KeptBack::Token),
            (NOT_SENT_IN_FRONT, KeptBack::InFront),
        ]
        .into_iter()
        .find(|(prefix, _)| error.starts_with(prefix))
        .map(|(_, why)| why)
    }

    /// The reason in a few words, as counts of rows not sent name it.
    pub fn reason(self) -> &'static str {
        match self {
            KeptBack::Stopping => "seatwarden was stopping",
            KeptBack::Breaker => "the circuit breaker opened",
            KeptBack::Down => "the workspace stopped answering",
            KeptBack::Token => "the workspace refused the token",
            KeptBack::InFront => "something in front of the workspace refused a write",
        }
    }
}

/// Whether a row journaled failed with `last_error` was kept back unsent
/// ([`KeptBack`]) rather than sent and failed.
pub fn not_sent(last_error: Option<&str>) -> bool {
    KeptBack::of(last_error).is_some()
}

/// How [`recover`] begins the error of an interrupted row whose object the
/// workspace showed without the change: most likely never sent (a phase goes in
/// flight before its first write leaves). An approval cut off that way is
/// finished by approving again (`approval::approve` recognises it by this).
pub const NOT_REACHED_INTERRUPTED: &str = "interrupted; the workspace does not show it";

/// `run`'s journal rows by state, as `status` and `report --run` count them: the
/// failed ones kept back unsent ([`NOT_SENT`]) as `not_sent`, those a recovery
/// found the workspace never took ([`NOT_REACHED_INTERRUPTED`]: their process was
/// killed with them in flight) as `cut_off`, neither being a write the workspace
/// refused.
pub fn journal_outcomes(
    store: &Store,
    run: RunId,
) -> Result<std::collections::BTreeMap<String, usize>, StoreError> {
    let mut counts = store.journal_state_counts(run, &NOT_SENT)?;
    let cut_off = store
        .journal_state_counts(run, &[NOT_REACHED_INTERRUPTED])?
        .get("not_sent")
        .copied()
        .unwrap_or(0);
    if cut_off > 0
        && let Some(failed) = counts.get_mut(crate::store::ActionState::Failed.as_str())
    {
        *failed = failed.saturating_sub(cut_off);
        if *failed == 0 {
            counts.remove(crate::store::ActionState::Failed.as_str());
        }
        counts.insert("cut_off".to_owned(), cut_off);
    }
    Ok(counts)
}

/// The key [`journal_outcomes`] counts a row in `state` with `last_error`
/// under: its state's name, but `not_sent` for a failed row kept back unsent
/// and `cut_off` for one a recovery found never reached the workspace.
pub fn journal_outcome(state: crate::store::ActionState, last_error: Option<&str>) -> &'static str {
    match state {
        crate::store::ActionState::Failed
            if last_error.is_some_and(|e| e.starts_with(NOT_REACHED_INTERRUPTED)) =>
        {
            "cut_off"
        }
        crate::store::ActionState::Failed if not_sent(last_error) => "not_sent",
        state => state.as_str(),
    }
}

/// The stop this task's apply watches, if any: the workspace client gives it to
/// the retries of a write (never of a read: a read cut short would leave a plan or
/// a verification to make do with part of the workspace).
pub(crate) fn write_stop() -> Option<StopSignal> {
    STOP.try_with(|watch| watch.signal.clone()).ok()
}

/// Whether this task's apply was told to stop.
pub(crate) fn stop_requested() -> bool {
    STOP.try_with(|watch| watch.signal.is_stopped())
        .unwrap_or(false)
}

/// How many actions this task's applies have left unsent because of the stop so
/// far: what [`until_stopped`] will return. A sweep records its run stopped by it.
pub(crate) fn unsent_by_stop() -> usize {
    STOP.try_with(|watch| watch.unsent.load(Ordering::SeqCst))
        .unwrap_or(0)
}

/// Counts `count` actions left unsent because of the stop.
fn count_unsent(count: usize) {
    let _ = STOP.try_with(|watch| watch.unsent.fetch_add(count, Ordering::SeqCst));
}

/// Objects created during this run, so later phases can refer to them.
#[derive(Default)]
struct Created {
    accounts: HashMap<String, String>,
    groups: HashMap<String, String>,
}

/// A write refused 401, which stops every later write of the apply: the
/// error, what to check, and how the writes kept back say why.
struct Refusal {
    /// The refused write's error.
    error: String,
    /// What to check ([`CHECK_TOKEN`], or [`crate::workspace::CHECK_IN_FRONT`]).
    check: &'static str,
    /// How the writes kept back begin their error: [`NOT_SENT_TOKEN`], or
    /// [`NOT_SENT_IN_FRONT`] when a web page said the 401.
    not_sent: &'static str,
}

impl Refusal {
    fn of(error: &WorkspaceError) -> Refusal {
        // A web page's 401 is a proxy's or a WAF's, not the token's.
        let in_front = error.answered_by_web_page();
        Refusal {
            error: error.to_string(),
            check: error.what_to_check().unwrap_or(CHECK_TOKEN),
            not_sent: if in_front {
                NOT_SENT_IN_FRONT
            } else {
                NOT_SENT_TOKEN
            },
        }
    }

    /// The error of a write kept back after it.
    fn not_sent(&self) -> String {
        format!(
            "{} (an earlier write was answered {}); {}",
            self.not_sent, self.error, self.check
        )
    }
}

struct Executor<'a> {
    client: &'a ScimClient,
    store: &'a Arc<Mutex<Store>>,
    run: RunId,
    concurrency: usize,
    created: Mutex<Created>,
    breaker: Mutex<Breaker>,
    /// The breaker's opening, stamped on the run's clock when it tripped.
    opened: OnceLock<CircuitRecord>,
    /// Set once a write past its retries shows the workspace down: no further
    /// write is sent, and verification, which shares it, sends no read.
    outage: Arc<Outage>,
    /// The first write the workspace refused with 401: the token (or, for a
    /// web page's 401, what is in front of the workspace), not the action, is at
    /// fault, and every later write would be refused the same way.
    token_refused: OnceLock<Refusal>,
    /// Deactivations whose PATCH was answered 404: sent on to verification,
    /// which says whether the account is gone ([`already_gone`]).
    answered_not_found: Mutex<HashSet<u32>>,
    /// Created accounts whose link and journal result are not committed yet.
    unrecorded: Mutex<Vec<(u32, NewLink)>>,
    /// When `unrecorded` was last committed (or the apply started).
    recorded_at: Mutex<Instant>,
    /// How long single-object writes took: the estimate for verifying object by
    /// object.
    write_latency: Mutex<Latency>,
    /// Runnable actions of the plan, and how many are written (for progress).
    total: usize,
    written: AtomicUsize,
    /// The run's clock when the apply began (tests set it), and the instant: a
    /// breaker's opening is stamped on it.
    clock: (DateTime<Utc>, Instant),
    /// How people run seatwarden's commands (`report.admin_command`), for the
    /// `link` a failed create's message tells them to run.
    admin_command: &'a str,
}

/// Created accounts are recorded in SQLite at most this often, and once more after
/// each phase. A crash loses at most this long's worth of records, and [`recover`]
/// finds those accounts by userName. By time rather than by count: a commit
/// rewrites every page its links land on, and links land at random, so against a
/// fast workspace a commit every 256 creates rewrote a large share of the links
/// table each time (these commits were a sixth of a 10k-create phase in perf),
/// while against a remote one 256 creates can take minutes.
const RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// A running mean of request durations.
#[derive(Debug, Default, Clone, Copy)]
struct Latency {
    total: std::time::Duration,
    count: u32,
}

impl Latency {
    fn add(&mut self, took: std::time::Duration) {
        self.total += took;
        self.count = self.count.saturating_add(1);
    }

    fn mean(&self) -> Option<std::time::Duration> {
        (self.count > 0).then(|| self.total / self.count)
    }
}

/// The words of a create's error when the workspace answered 409 and no account
/// with the userName can be read: [`Store::creates_out_of_sight`] finds them, and
/// later runs hold that create instead of sending it again and again.
pub const OUT_OF_SIGHT: &str = "no account with that userName is visible over SCIM";

/// Why an action's write(s) did not go through.
enum WriteFailure {
    /// Failed, with the message the journal keeps.
    Failed(String),
    /// The stop kept a request back ([`WorkspaceError::is_stopped`]): before it
    /// left, or instead of a retry after a transient failure.
    Stopped(WorkspaceError),
}

impl From<String> for WriteFailure {
    fn from(message: String) -> WriteFailure {
        WriteFailure::Failed(message)
    }
}

/// Result of executing one action's write(s): what to verify it against.
enum Written {
    /// The write was accepted; verify against the workspace.
    Sent,
    /// Part of the action could not be done because an earlier action of the run
    /// failed (a member's account or the group was not created): journaled failed,
    /// but not a failed write for the circuit breaker, which counted the earlier one
    /// already. Otherwise one failed create counted again for every group of its
    /// person, and could open the breaker on its own.
    Unfinished(String),
}

impl Executor<'_> {
    fn with_store<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, ApplyError> {
        let mut store = self.store.lock().map_err(|_| ApplyError::Poisoned)?;
        Ok(f(&mut store)?)
    }

    fn created_account(&self, identity_id: &str) -> Option<String> {
        self.created
            .lock()
            .ok()
            .and_then(|c| c.accounts.get(identity_id).cloned())
    }

    fn created_group(&self, name: &str) -> Option<String> {
        self.created
            .lock()
            .ok()
            .and_then(|c| c.groups.get(&name.to_lowercase()).cloned())
    }

    fn resolve_group(&self, group: &GroupRef) -> Result<String, String> {
        match group {
            GroupRef::Existing { id, .. } => Ok(id.clone()),
            GroupRef::Created { display_name } => {
                self.created_group(display_name).ok_or_else(|| {
                    format!("group {display_name:?} was not created earlier in this run")
                })
            }
        }
    }

    fn resolve_members(&self, members: &[AccountRef]) -> (Vec<String>, Vec<String>) {
        let mut ids = Vec::new();
        let mut missing = Vec::new();
        for member in members {
            match member {
                AccountRef::Existing { id } => ids.push(id.clone()),
                AccountRef::Created { identity_id } => match self.created_account(identity_id) {
                    Some(id) => ids.push(id),
                    None => missing.push(identity_id.clone()),
                },
            }
        }
        (ids, missing)
    }

    async fn write(&self, action: &Action) -> Result<Written, WriteFailure> {
        let client = self.client;
        let start = self.outage.start();
        let noted = |e: WorkspaceError| self.noted(start, e);
        match &action.kind {
            // A 404 on a write is no proof the account is gone (a provider that
            // does not route PATCH, a gateway that only passes GET): verification
            // reads the account, and only a read that finds nothing settles it.
            ActionKind::Deactivate { account_id } => {
                match client.set_active(account_id, false).await {
                    Err(e) if e.is_not_found() => {
                        if let Ok(mut answered) = self.answered_not_found.lock() {
                            answered.insert(action.seq);
                        }
                        Ok(Written::Sent)
                    }
                    other => other.map(|()| Written::Sent).map_err(noted),
                }
            }
            ActionKind::Delete {
                account_id,
                deactivated_since,
                ..
            } => {
                // A deletion after the retention period is for a deactivated
                // account only: one re-enabled since the plan is kept.
                if deactivated_since.is_some()
                    && let Some(account) = client.get_account(account_id).await.map_err(noted)?
                    && account.active
                {
                    return Err(format!(
                        "not deleted: account {account_id} is active again; a deletion after \
                         the retention period is only for a deactivated account"
                    )
                    .into());
                }
                match client.delete_account(account_id).await {
                    Err(e) if e.is_not_found() => Ok(Written::Sent),
                    other => other.map(|()| Written::Sent).map_err(noted),
                }
            }
            ActionKind::Reactivate { account_id } => client
                .set_active(account_id, true)
                .await
                .map(|()| Written::Sent)
                .map_err(noted),
            ActionKind::UpdateAttributes {
                account_id,
                changes,
            } => client
                .update_attributes(account_id, changes)
                .await
                .map(|()| Written::Sent)
                .map_err(noted),
            ActionKind::SetRole { account_id, to, .. } => client
                .set_role(account_id, *to)
                .await
                .map(|()| Written::Sent)
                .map_err(noted),
            ActionKind::CreateGroup { display_name } => {
                let group = match client.create_group(display_name).await {
                    Ok(group) => group,
                    // Someone (push SCIM, an admin) created it since the snapshot.
                    Err(e) if e.is_conflict() => client
                        .find_group_by_name(display_name)
                        .await
                        .map_err(noted)?
                        .ok_or_else(|| {
                            format!("{e}; and no group named {display_name:?} can be found")
                        })?,
                    Err(e) => return Err(noted(e)),
                };
                if let Ok(mut created) = self.created.lock() {
                    created
                        .groups
                        .insert(display_name.to_lowercase(), group.id.clone());
                }
                self.with_store(|s| {
                    s.record_result(
                        self.run,
                        action.seq,
                        Utc::now(),
                        &serde_json::json!({"group_id": group.id}),
                    )
                })
                .map_err(|e| e.to_string())?;
                Ok(Written::Sent)
            }
            ActionKind::CreateAccount { identity_id, spec } => {
                let (account, method) = match client.create_account(spec).await {
                    Ok(account) => (account, LinkMethod::Created),
                    // The account exists (push SCIM got there first, or our earlier
                    // attempt timed out after the server had created it): link it.
                    // The client found one before a retry that may not be the one
                    // it made: judged the same way.
                    Err(e) if e.is_conflict() || e.is_taken_after_lost_answer() => {
                        let holders = client
                            .find_accounts_by_user_name(&spec.user_name)
                            .await
                            .map_err(noted)?;
                        let mut judged = Vec::with_capacity(holders.len());
                        for account in holders {
                            let linked_to = self
                                .with_store(|s| s.identity_linked_to(&account.id))
                                .map_err(|e| e.to_string())?;
                            judged.push((account, linked_to));
                        }
                        match claim(judged, identity_id, &spec.user_name, self.admin_command)
                            .map_err(|why| format!("{e}; {why}"))?
                        {
                            Some(account) => (account, LinkMethod::UserName),
                            None => {
                                return Err(WriteFailure::Failed(format!(
                                    "{e}; the workspace says {:?} exists but {OUT_OF_SIGHT} \
                                     (uniqueness on email? an account only its admins see?): find \
                                     it in the workspace's admin console, then `{} link` it to the \
                                     person if it is theirs",
                                    spec.user_name, self.admin_command
                                )));
                            }
                        }
                    }
                    Err(e) => return Err(noted(e)),
                };
                if let Ok(mut created) = self.created.lock() {
                    created
                        .accounts
                        .insert(identity_id.clone(), account.id.clone());
                }
                let link = NewLink {
                    identity_id: identity_id.clone(),
                    account_id: account.id,
                    method,
                };
                self.unrecorded
                    .lock()
                    .map_err(|e| e.to_string())?
                    .push((action.seq, link));
                let due = self
                    .recorded_at
                    .lock()
                    .map_err(|e| e.to_string())?
                    .elapsed()
                    >= RECORD_INTERVAL;
                // The account exists whatever the store says: a commit that fails
                // now (the database busy past its timeout) keeps the batch for the
                // commit at the end of the phase, and this create stays a success.
                if due && let Err(e) = self.record_created().await {
                    tracing::warn!(
                        error = %e,
                        "cannot record created accounts yet; the end of the phase tries again"
                    );
                }
                Ok(Written::Sent)
            }
            ActionKind::AddMembers { group, members } => {
                let group_id = match self.resolve_group(group) {
                    Ok(id) => id,
                    Err(why) => return Ok(Written::Unfinished(why)),
                };
                let (ids, missing) = self.resolve_members(members);
                if !ids.is_empty() {
                    client.add_members(&group_id, &ids).await.map_err(noted)?;
                }
                if missing.is_empty() {
                    Ok(Written::Sent)
                } else {
                    Ok(Written::Unfinished(format!(
                        "added {} members; {} could not be added because their account was not \
                         created: {}",
                        ids.len(),
                        missing.len(),
                        missing.join(", ")
                    )))
                }
            }
            ActionKind::RemoveMembers { group, members } => {
                let group_id = match self.resolve_group(group) {
                    Ok(id) => id,
                    Err(why) => return Ok(Written::Unfinished(why)),
                };
                client
                    .remove_members(&group_id, members)
                    .await
                    .map(|()| Written::Sent)
                    .map_err(noted)
            }
        }
    }

    /// Commits the links and journal results of created accounts in one go, on the
    /// blocking pool: the other writes in flight go on meanwhile.
    async fn record_created(&self) -> Result<(), ApplyError> {
        // Reset first: the creates finishing while this commit runs are not due.
        *self.recorded_at.lock().map_err(|_| ApplyError::Poisoned)? = Instant::now();
        let batch = std::mem::take(&mut *self.unrecorded.lock().map_err(|_| ApplyError::Poisoned)?);
        if batch.is_empty() {
            return Ok(());
        }
        let store = Arc::clone(self.store);
        let run = self.run;
        let kept = batch.clone();
        let committed = tokio::task::spawn_blocking(move || -> Result<(), ApplyError> {
            let links: Vec<NewLink> = batch.iter().map(|(_, link)| link.clone()).collect();
            let mut store = store.lock().map_err(|_| ApplyError::Poisoned)?;
            let now = Utc::now();
            store.upsert_links(&links, now)?;
            Ok(store.batch(|s| {
                batch.iter().try_for_each(|(seq, link)| {
                    s.record_result(
                        run,
                        *seq,
                        now,
                        &serde_json::json!({"account_id": link.account_id}),
                    )
                })
            })?)
        })
        .await
        .map_err(ApplyError::from)
        .and_then(|result| result);
        if committed.is_err() {
            // Not lost: the next commit (at the latest the phase's last) takes it.
            let mut unrecorded = self.unrecorded.lock().map_err(|_| ApplyError::Poisoned)?;
            let later = std::mem::replace(&mut *unrecorded, kept);
            unrecorded.extend(later);
        }
        committed
    }

    fn breaker_open(&self) -> bool {
        self.breaker.lock().map(|b| b.is_open()).unwrap_or(true)
    }

    /// The message of a write's failure, the failure noted first: a write that got
    /// no reply past its retries while nothing else was answered shows the
    /// workspace down, as a read would, and a 401 stops the writes (see
    /// `token_refused`) and says what to check. A transient failure says it was
    /// retried: "HTTP 503" alone reads as one unlucky answer nobody tried again.
    /// A write the stop kept back says nothing of the workspace: it is not noted.
    fn noted(&self, start: ReadStart, error: WorkspaceError) -> WriteFailure {
        if error.is_stopped() {
            return WriteFailure::Stopped(error);
        }
        self.outage.failed(start, &error);
        if error.status() == Some(401) {
            let refusal = Refusal::of(&error);
            let failed = format!("{error}; {}", refusal.check);
            let _ = self.token_refused.set(refusal);
            return WriteFailure::Failed(failed);
        }
        // The client retries every transient failure until its attempts run out.
        let attempts = self.client.attempts_per_request();
        if error.is_transient() && attempts > 1 {
            return WriteFailure::Failed(format!(
                "{error} (still failing after {attempts} attempts)"
            ));
        }
        WriteFailure::Failed(error.to_string())
    }

    /// Whether the writes of this apply have stopped: the breaker opened, a write
    /// found the workspace down, or one was refused 401.
    fn writes_stopped(&self) -> bool {
        self.outage.down().is_some() || self.token_refused.get().is_some() || self.breaker_open()
    }

    async fn execute_numbered(&self, action: &Action) -> (u32, Result<Executed, ApplyError>) {
        let executed = self.execute(action).await;
        report_progress(ApplyProgress::Writing {
            done: self.written.fetch_add(1, Ordering::Relaxed) + 1,
            total: self.total,
        });
        (action.seq, executed)
    }

    /// Write (the row is already `in_flight`) and leave it so until verification.
    /// Once the circuit breaker is open, nothing more is sent: the row is journaled
    /// failed as "not sent", and the next run re-plans it.
    async fn execute(&self, action: &Action) -> Result<Executed, ApplyError> {
        // Before the breaker: a workspace found down also opens it, and "too many
        // writes failed" would hide why.
        if let Some(why) = self.outage.down() {
            let message = format!("{NOT_SENT_DOWN} ({why}); the next run plans it again");
            self.with_store(|s| s.mark_failed(self.run, action.seq, Utc::now(), &message))?;
            return Ok(Executed::Failed);
        }
        // A 403 may be one object's (a provider that forbids touching its primary
        // owner); a 401 is the token's, whatever was asked.
        if let Some(refusal) = self.token_refused.get() {
            let message = refusal.not_sent();
            self.with_store(|s| s.mark_failed(self.run, action.seq, Utc::now(), &message))?;
            return Ok(Executed::Failed);
        }
        if self.breaker_open() {
            self.with_store(|s| s.mark_failed(self.run, action.seq, Utc::now(), NOT_SENT_BREAKER))?;
            return Ok(Executed::Failed);
        }
        // Checked as each write is about to start (`bounded` builds this future only
        // when a slot frees): after the stop, nothing more leaves.
        if stop_requested() {
            self.with_store(|s| {
                s.mark_failed(self.run, action.seq, Utc::now(), NOT_SENT_STOPPING)
            })?;
            count_unsent(1);
            return Ok(Executed::NotSent);
        }
        let started = Instant::now();
        let written = match self.write(action).await {
            Ok(written) => Ok(written),
            Err(WriteFailure::Failed(message)) => Err(message),
            // Its attempts so far failed for a transient reason (or it never
            // left): nothing to verify, nothing for the breaker, and the next run
            // plans it again from what the workspace then shows.
            Err(WriteFailure::Stopped(cut)) => {
                tracing::warn!(seq = action.seq, op = action.kind.name(), subject = %action.subject, error = %cut, "stopping: the write is not retried; the next run plans it again");
                self.with_store(|s| {
                    s.mark_failed(self.run, action.seq, Utc::now(), NOT_SENT_STOPPING)
                })?;
                count_unsent(1);
                return Ok(Executed::NotSent);
            }
        };
        if let Ok(mut latency) = self.write_latency.lock() {
            latency.add(started.elapsed());
        }
        let opened = match self.breaker.lock() {
            Ok(mut breaker) if !matches!(written, Ok(Written::Unfinished(_))) => {
                let failure = written.as_ref().err().map(|message| FailedWrite {
                    op: action.kind.name().to_owned(),
                    subject: action.subject.clone(),
                    message: message.clone(),
                });
                let failed = failure.is_some();
                let tripped = breaker.record(failure);
                // Every write after it would spend its retries against a workspace
                // that answers nothing (four minutes each against one that hangs,
                // at the default timeout): it opens the breaker without waiting for
                // the window's share, once enough writes failed (`Breaker::trip`).
                let tripped = match self.outage.down() {
                    Some(why) if failed => {
                        breaker.trip(format!("the workspace stopped answering: {why}")) || tripped
                    }
                    _ => tripped,
                };
                tripped
                    .then(|| breaker.opened(later_by(self.clock.0, self.clock.1)))
                    .flatten()
            }
            _ => None,
        };
        if let Some(record) = opened {
            let _ = self.opened.set(record.clone());
            tracing::error!(
                run = self.run,
                reason = record.reason.as_deref().unwrap_or_default(),
                "circuit breaker opened; no more writes this run"
            );
            // Stored at once, not only by the caller: a run that ends in an error
            // or is killed before its summary would otherwise leave the breaker
            // closed, and the next run would write to the failing workspace again.
            // The caller stores it again with the whole run's failures.
            if let Err(e) = self.with_store(|s| s.set_circuit(&record)) {
                tracing::warn!(error = %e, "storing the opened circuit breaker failed; the run's summary stores it");
            }
        }
        match written {
            Ok(Written::Sent) => Ok(Executed::ToVerify),
            Ok(Written::Unfinished(message)) | Err(message) => {
                tracing::warn!(seq = action.seq, op = action.kind.name(), subject = %action.subject, error = %message, "action failed");
                self.with_store(|s| s.mark_failed(self.run, action.seq, Utc::now(), &message))?;
                Ok(Executed::Failed)
            }
        }
    }
}

/// Where an action stands after its write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Executed {
    /// Sent and accepted; applied once verification sees it.
    ToVerify,
    /// Journaled failed with the provider's message.
    Failed,
    /// Not sent because the process was stopping: journaled failed ("not sent"),
    /// but no failed write (for the circuit breaker's trial, say).
    NotSent,
}

/// Renames and creates that want a userName another action of the plan gives up:
/// a rename, or a delete ([`ActionKind::Delete`]'s `frees_user_name`). The plan
/// makes a chain of renames whole (Cy takes Bob's old userName while Bob takes a
/// new one), so Bob's rename must have been accepted before Cy's is sent: each
/// link of a chain is written after the one it waits on ([`Self::link`]), and one
/// whose rename failed is not sent. Deletes go in an earlier phase than any
/// rename or create, so only their outcome is waited on. The plan never makes a
/// swap, but a cycle is cut (at any point) rather than followed forever.
struct FreedUserNames<'p> {
    /// Folded userName → the runnable action that gives it up, and the userName
    /// as the account has it.
    by_name: FxHashMap<String, (&'p Action, &'p str)>,
    /// A rename's place in its chain: 0 waits on no rename.
    links: FxHashMap<u32, u32>,
}

impl<'p> FreedUserNames<'p> {
    fn new(plan: &'p Plan) -> Self {
        let by_name: FxHashMap<String, (&Action, &str)> = plan
            .runnable()
            .filter_map(|action| {
                let freed = match &action.kind {
                    ActionKind::Delete {
                        frees_user_name, ..
                    } => frees_user_name.as_deref(),
                    kind => kind.user_name_change()?.0,
                }?;
                // Trimmed, as the plan compares userNames (`plan::name_key`).
                let key = fold_case(freed.trim());
                // A rename in case or spacing only ("USER18 " → "user18") keeps its
                // key: it frees nothing, and must wait like any other taker when
                // another account has the name too (a case-sensitive workspace).
                let keeps_key = action
                    .kind
                    .wanted_user_name()
                    .is_some_and(|wanted| fold_case(wanted.trim()) == key);
                (!keeps_key).then_some((key, (action, freed)))
            })
            .collect();
        let mut freed = FreedUserNames {
            by_name,
            links: FxHashMap::default(),
        };
        if freed.by_name.is_empty() {
            return freed;
        }
        // Every rename, not only those `by_name` kept: two accounts holding one
        // userName (a case-sensitive workspace) free one key, and the rename left
        // out of the map must still be placed after the rename it waits on.
        let renames: Vec<&Action> = plan
            .runnable()
            .filter(|action| action.kind.renames())
            .collect();
        for start in renames {
            if freed.links.contains_key(&start.seq) {
                continue;
            }
            // Walk back to a rename that waits on none (or one already placed),
            // then number the walk from there.
            let mut chain = vec![start.seq];
            let mut on_chain: HashSet<u32> = HashSet::new();
            on_chain.insert(start.seq);
            let mut current = start;
            let first = loop {
                match freed.waits_on(current) {
                    Some((earlier, _)) if earlier.kind.renames() => {
                        if let Some(link) = freed.links.get(&earlier.seq) {
                            break link + 1;
                        }
                        if !on_chain.insert(earlier.seq) {
                            break 0;
                        }
                        chain.push(earlier.seq);
                        current = earlier;
                    }
                    // A delete is written in an earlier phase.
                    _ => break 0,
                }
            };
            for (offset, seq) in chain.iter().rev().enumerate() {
                let offset = u32::try_from(offset).unwrap_or(u32::MAX);
                freed.links.insert(*seq, first.saturating_add(offset));
            }
        }
        freed
    }

    /// The other action (a rename or a delete) that gives up the userName
    /// `action` wants, and that userName as the account has it.
    fn waits_on(&self, action: &Action) -> Option<(&'p Action, &'p str)> {
        if self.by_name.is_empty() {
            return None;
        }
        let wanted = fold_case(action.kind.wanted_user_name()?.trim());
        let &(freeing, name) = self.by_name.get(&wanted)?;
        (freeing.seq != action.seq).then_some((freeing, name))
    }

    /// Where `seq` comes in its phase: renames by their place in a chain, every
    /// other action first.
    fn link(&self, seq: u32) -> u32 {
        self.links.get(&seq).copied().unwrap_or(0)
    }
}

/// The runnable actions of `plan` in the batches the executor writes them in, one
/// after the other; a batch's writes go side by side. No create or rename of a
/// batch wants a userName an account has when the batch starts (property-tested
/// against `simulate`d workspaces).
pub fn write_batches(plan: &Plan) -> Vec<Vec<&Action>> {
    write_order(plan, &FreedUserNames::new(plan))
}

fn write_order<'p>(plan: &'p Plan, freed: &FreedUserNames<'p>) -> Vec<Vec<&'p Action>> {
    let mut batches: BTreeMap<(u8, u32), Vec<&Action>> = BTreeMap::new();
    for action in plan.runnable() {
        batches
            .entry((phase(&action.kind), freed.link(action.seq)))
            .or_default()
            .push(action);
    }
    batches.into_values().collect()
}

/// Why a create or rename was not sent: the rename or delete that was to free its
/// userName failed, so the userName is still taken.
fn not_sent_behind(name: &str, freeing: &Action) -> String {
    let what = match &freeing.kind {
        ActionKind::Delete { account_id, .. } => {
            format!("the delete of account {account_id} ({})", freeing.subject)
        }
        _ => format!("the rename of {}", freeing.subject),
    };
    format!(
        "{NOT_SENT_WHILE_TAKEN} {name:?} is still taken: {what} (action {}) that gives it \
         up failed earlier in this run; the next run plans both again",
        freeing.seq
    )
}

/// How a create or rename not sent because the rename or delete that frees its
/// userName failed begins its journal error.
pub const NOT_SENT_WHILE_TAKEN: &str = "not sent: userName";

/// The order the executor writes in: an approval re-checks held actions in it
/// too, so that a create's decision is known before the memberships that need it.
pub(crate) fn phase(kind: &ActionKind) -> u8 {
    match kind {
        ActionKind::Deactivate { .. } | ActionKind::Delete { .. } => 0,
        // A rename frees its old userName before a create may want it.
        ActionKind::CreateGroup { .. } => 1,
        ActionKind::UpdateAttributes { .. } if kind.renames() => 1,
        ActionKind::CreateAccount { .. } => 2,
        ActionKind::Reactivate { .. }
        | ActionKind::UpdateAttributes { .. }
        | ActionKind::SetRole { .. } => 3,
        ActionKind::AddMembers { .. } | ActionKind::RemoveMembers { .. } => 4,
    }
}

/// Applies every runnable action of `plan` (journaled under `run`), then verifies.
/// `relist_requests` is what one full listing of the workspace costs in requests
/// (after this plan's creates): verification re-lists the workspace once instead of
/// reading each changed object when that is estimated to be faster (see
/// `relist_is_cheaper`). Messages spell seatwarden's commands the default way
/// ([`crate::model::DEFAULT_ADMIN_COMMAND`]).
pub async fn apply(
    client: &ScimClient,
    store: &Arc<Mutex<Store>>,
    run: RunId,
    plan: &Plan,
    concurrency: usize,
    relist_requests: usize,
) -> Result<ApplySummary, ApplyError> {
    apply_with_breaker(
        client,
        store,
        run,
        plan,
        concurrency,
        relist_requests,
        Breaker::disabled(),
        Utc::now(),
        crate::model::DEFAULT_ADMIN_COMMAND,
    )
    .await
}

/// `now` (a run's clock, which tests set) moved on by the time since `started`.
pub fn later_by(now: DateTime<Utc>, started: Instant) -> DateTime<Utc> {
    chrono::Duration::from_std(started.elapsed())
        .ok()
        .and_then(|elapsed| now.checked_add_signed(elapsed))
        .unwrap_or(now)
}

/// [`apply`] watched by a circuit breaker: once it opens, no further write is sent
/// (see [`ApplySummary::circuit_opened`]). The opening is stored when it happens,
/// stamped on the run's clock (`now` when the apply began, moved on since); the
/// caller stores it again from the summary (and a half-open trial's outcome).
/// `admin_command` (`report.admin_command`) spells the commands a failed
/// write's message tells people to run.
#[allow(clippy::too_many_arguments)]
pub async fn apply_with_breaker(
    client: &ScimClient,
    store: &Arc<Mutex<Store>>,
    run: RunId,
    plan: &Plan,
    concurrency: usize,
    relist_requests: usize,
    breaker: Breaker,
    now: DateTime<Utc>,
    admin_command: &str,
) -> Result<ApplySummary, ApplyError> {
    let clock = (now, Instant::now());
    let executor = Executor {
        client,
        store,
        run,
        concurrency: concurrency.max(1),
        created: Mutex::new(Created::default()),
        breaker: Mutex::new(breaker),
        opened: OnceLock::new(),
        outage: Arc::new(Outage::new(client)),
        token_refused: OnceLock::new(),
        answered_not_found: Mutex::default(),
        unrecorded: Mutex::default(),
        recorded_at: Mutex::new(Instant::now()),
        write_latency: Mutex::default(),
        total: plan.runnable().count(),
        written: AtomicUsize::new(0),
        clock,
        admin_command,
    };
    let freed = FreedUserNames::new(plan);
    let mut executed: HashMap<u32, Executed> = HashMap::new();
    let mut phases = write_order(plan, &freed).into_iter();
    while let Some(mut actions) = phases.next() {
        // Later phases stay `planned` (not run): nothing of them was sent.
        if executor.writes_stopped() {
            break;
        }
        if stop_requested() {
            count_unsent(actions.len() + phases.map(|later| later.len()).sum::<usize>());
            tracing::warn!(
                run = executor.run,
                "stopping: no further writes this run; the next run plans the actions not sent again"
            );
            break;
        }
        // Journal-before-write for the whole phase in one commit: a row is
        // `in_flight` before its request can leave. After a crash, rows that were
        // never sent fail verification in `recover` and the next plan redoes them.
        let seqs: Vec<u32> = actions.iter().map(|a| a.seq).collect();
        executor.with_store(|s| s.batch(|s| s.mark_all_in_flight(run, &seqs, Utc::now())))?;
        // A create or rename whose userName a failed rename or delete kept would
        // only meet a 409: not sent, and not a failed write for the breaker, which
        // counted the rename or delete already.
        let blocked: Vec<(u32, String)> = actions
            .iter()
            .filter_map(|action| {
                let (freeing, name) = freed.waits_on(action)?;
                (executed.get(&freeing.seq) != Some(&Executed::ToVerify))
                    .then(|| (action.seq, not_sent_behind(name, freeing)))
            })
            .collect();
        if !blocked.is_empty() {
            executor.with_store(|s| {
                s.batch(|s| {
                    blocked
                        .iter()
                        .try_for_each(|(seq, why)| s.mark_failed(run, *seq, Utc::now(), why))
                })
            })?;
            for (seq, why) in &blocked {
                tracing::warn!(seq, error = %why, "action not sent");
                executed.insert(*seq, Executed::Failed);
            }
            actions.retain(|a| !executed.contains_key(&a.seq));
            executor.written.fetch_add(blocked.len(), Ordering::Relaxed);
        }
        let results = bounded(actions.iter(), executor.concurrency, |action| {
            executor.execute_numbered(action)
        })
        .await;
        // Recorded before any error is returned: those accounts exist.
        executor.record_created().await?;
        for (seq, result) in results {
            executed.insert(seq, result?);
        }
        tracing::debug!(actions = actions.len(), "phase written");
    }
    let count = |what: Executed| executed.values().filter(|e| **e == what).count();
    let mut summary = ApplySummary {
        applied: 0,
        failed: count(Executed::Failed),
        // As stored when it tripped: writes already under way finish after that
        // (a dead workspace's after a whole retry cycle), and the opening is the
        // moment the run decided the workspace was failing.
        circuit_opened: executor.opened.get().cloned(),
    };

    // The links of the accounts the plan matched (every account, on a first run:
    // about 90 ms at 10k people) are stored while the changes are verified: the
    // verification reads leave the store alone, and stored before the writes they
    // delayed the first one.
    let storing_links = store_matched_links(store, plan);
    let to_verify: Vec<&Action> = plan
        .runnable()
        .filter(|a| executed.get(&a.seq) == Some(&Executed::ToVerify))
        .collect();
    if !to_verify.is_empty() {
        report_progress(ApplyProgress::Verifying {
            changes: to_verify.len(),
        });
    }
    let executor_latency = executor.write_latency.lock().ok().and_then(|l| l.mean());
    let answered_not_found = executor
        .answered_not_found
        .into_inner()
        .map_err(|_| ApplyError::Poisoned)?;
    let created = executor
        .created
        .into_inner()
        .map_err(|_| ApplyError::Poisoned)?;
    let mut verifier = Verifier::new(client, &created, Arc::clone(&executor.outage));
    // Every object the actions touch is read once, at the concurrency limit, before
    // any action is checked: otherwise the actions that share an object (a group's
    // membership batches) fill every slot waiting on the same read.
    let mut objects: Vec<Object> = to_verify
        .iter()
        .filter_map(|a| verifier.object_of(a))
        .collect();
    objects.sort();
    objects.dedup();
    let deletes = to_verify
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::Delete { .. }))
        .count();
    // A listing costs a request per account when groups' members are read by
    // filter (`workspace.group_members`): never the cheaper way there. Nor once
    // the breaker opened: the run found the workspace failing, and a listing is
    // all or nothing (one page failing past its retries wastes every page read),
    // where reads of the changed objects verify whatever they can.
    if !client.members_by_filter()
        && summary.circuit_opened.is_none()
        && relist_is_cheaper(
            verifier.object_requests(&objects, deletes),
            relist_requests,
            concurrency.max(1),
            client.listing_concurrency(),
            executor_latency,
            client.mean_page_read(),
        )
    {
        // Boxed: the listing's future is large, and moved into the watch it was
        // held twice in the apply's (a debug build's test thread overflowed).
        let listing = Box::pin(client.snapshot_whole(&|_| {}));
        match verifier.outage.watch(listing).await {
            Ok((snapshot, whole)) => {
                if !whole {
                    tracing::warn!(
                        "the verification listing ended short of its totalResults; \
                         what it left out is read on its own"
                    );
                }
                verifier.preload(snapshot, whole);
                // Absence from a short listing proves nothing: read those objects.
                objects.retain(|object| !verifier.present(object));
            }
            // Reading object by object still verifies; it only costs more requests.
            Err(e) if verifier.outage.down().is_none() => {
                tracing::warn!(error = %e, "re-listing the workspace for verification failed; verifying object by object")
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-listing the workspace for verification failed and it answers nothing")
            }
        }
    }
    if !verifier.relisted() {
        let (one_by_one, omitted) = if client.id_filters_usable() {
            verifier.read_batched(objects, concurrency).await
        } else {
            (objects, Vec::new())
        };
        bounded(one_by_one, concurrency, |object| verifier.read(object)).await;
        if let Some(object) = omitted.iter().find(|o| verifier.present(o)) {
            // Read on its own, an object an `or` filter left out is there: those
            // answers cannot be trusted to be complete.
            client.refuse_id_filters(&format!("a filter by id left out {object:?}, which exists"));
        }
    }
    tracing::debug!(
        objects = to_verify.len(),
        relisted = verifier.relisted(),
        "verification read"
    );
    let results = bounded(to_verify.iter(), concurrency, |action| {
        verifier.verify_numbered(action)
    })
    .await;

    storing_links.await??;
    let mut verified = Vec::with_capacity(results.len());
    let mut gone = Vec::new();
    let mut not_verified = Vec::new();
    for (seq, result) in results {
        match result {
            Ok(Verified::AccountGone { account_id }) if answered_not_found.contains(&seq) => {
                gone.push((seq, already_gone(&account_id)));
            }
            Ok(_) => verified.push(seq),
            Err(message) => not_verified.push((seq, message)),
        }
    }
    if !gone.is_empty() {
        tracing::info!(
            accounts = gone.len(),
            "deactivations answered 404 whose accounts no read finds: already deleted in the \
             workspace, journaled applied with that note"
        );
    }
    summary.applied += verified.len() + gone.len();
    summary.failed += not_verified.len();
    let unread = not_verified
        .iter()
        .filter(|(_, message)| message.contains(NOT_READ))
        .count();
    // The outage may be the writes' (reported with them): said here only when it
    // left changes unread, not for a verification that had nothing to read.
    if let Some(why) = verifier.outage.down()
        && unread > 0
    {
        tracing::warn!(
            error = why,
            unread,
            changes = to_verify.len(),
            "the workspace stopped answering during verification: {unread} of {} changes were \
             not read, and are journaled failed (\"not verified\"); the next run reads the \
             workspace again and plans what is still missing",
            to_verify.len()
        );
    }
    let mut store = store.lock().map_err(|_| ApplyError::Poisoned)?;
    store.batch(|store| {
        let now = Utc::now();
        store.mark_all_applied(run, &verified, now)?;
        gone.iter()
            .try_for_each(|(seq, note)| store.mark_applied_noted(run, *seq, now, note))?;
        not_verified.iter().try_for_each(|(seq, message)| {
            store.mark_failed(run, *seq, now, &format!("not verified: {message}"))
        })
    })?;
    // Only deletes the workspace confirmed: an account still there keeps its
    // link, or it would become an orphan nothing deprovisions again.
    let verified: HashSet<u32> = verified.into_iter().collect();
    let deleted: Vec<String> = plan
        .runnable()
        .filter(|a| verified.contains(&a.seq))
        .filter_map(|a| match &a.kind {
            ActionKind::Delete { account_id, .. } => Some(account_id.clone()),
            _ => None,
        })
        .collect();
    if !deleted.is_empty() {
        store.remove_links_to_accounts(&deleted)?;
    }
    Ok(summary)
}

/// Stores `plan.new_links` on the blocking pool (links to accounts the plan
/// deletes go again once the deletes are verified). A run that dies before they
/// land matches the same accounts again next time.
fn store_matched_links(
    store: &Arc<Mutex<Store>>,
    plan: &Plan,
) -> tokio::task::JoinHandle<Result<(), ApplyError>> {
    let links = plan.new_links.clone();
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || {
        if !links.is_empty() {
            let mut store = store.lock().map_err(|_| ApplyError::Poisoned)?;
            store.upsert_links(&links, Utc::now())?;
        }
        Ok(())
    })
}

/// Runs `start(item)` for every item, at most `limit` at a time, and returns the
/// outputs in completion order. Each future is built only when a slot is free: the
/// futures of a write or a verification are large (each holds its nested reads),
/// and building one per action up front had the kernel zero about 150 MB for the
/// checks of a 10k-create run (perf).
async fn bounded<T, Fut: Future>(
    items: impl IntoIterator<Item = T>,
    limit: usize,
    mut start: impl FnMut(T) -> Fut,
) -> Vec<Fut::Output> {
    let mut items = items.into_iter();
    let mut running = FuturesUnordered::new();
    let mut done = Vec::with_capacity(items.size_hint().0);
    loop {
        while running.len() < limit.max(1) {
            let Some(item) = items.next() else { break };
            running.push(start(item));
        }
        match running.next().await {
            Some(output) => done.push(output),
            None => return done,
        }
    }
}

/// Whether one fresh listing of `relist_pages` pages verifies the changed objects
/// sooner than the `object_requests` that read them without a listing, judged by
/// the latencies this run measured: a single-object request (`object_read`, taken
/// from the writes) and a listing page (`page_read`, from the snapshot). A listing reads its first page
/// alone, then the rest `concurrency` at a time. Against a remote workspace the
/// round trips decide; against a fast one, the size of the pages does. Without both
/// measurements, fewer requests wins.
fn relist_is_cheaper(
    object_requests: usize,
    relist_pages: usize,
    concurrency: usize,
    listing_concurrency: usize,
    object_read: Option<std::time::Duration>,
    page_read: Option<std::time::Duration>,
) -> bool {
    let concurrency = concurrency.max(1);
    match (object_read, page_read) {
        (Some(object), Some(page)) => {
            let one_by_one = object.saturating_mul(to_u32(object_requests.div_ceil(concurrency)));
            let listing_concurrency = listing_concurrency.clamp(1, concurrency);
            let rounds = 1 + relist_pages.saturating_sub(1).div_ceil(listing_concurrency);
            let listing = page.saturating_mul(to_u32(rounds));
            listing < one_by_one
        }
        _ => object_requests > relist_pages,
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Re-reads objects and checks that an action's effect is visible. Each account
/// and group is read at most once per verification pass, however many actions
/// touch it (a 5,000-member group may carry hundreds of membership batches).
struct Verifier<'a> {
    client: &'a ScimClient,
    /// Set once a read shows the workspace down: no further read is sent, and
    /// what is left unread is not verified (see [`Outage`]).
    outage: Arc<Outage>,
    created_accounts: HashMap<String, String>,
    created_groups: HashMap<String, String>,
    accounts: ReadOnce<Account>,
    groups: ReadOnce<Members>,
    /// Account id → the ids of its groups, under `group_members =
    /// "by_member_filter"`.
    memberships: ReadOnce<GroupIds>,
}

/// An object verification reads, by its workspace id. Groups sort first: a group
/// read carries every member and is the slowest, so those start while the account
/// reads fill the other slots, instead of trailing after them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Object {
    Group(String),
    Account(String),
}

/// A group's member ids, as verification checks them.
type Members = HashSet<String>;

/// The ids of the groups an account is a member of.
type GroupIds = HashSet<String>;

/// How many groups one filtered verification read asks for: each answer carries
/// every member of each, and a few large groups are parsed faster on several
/// tasks than in one answer.
const GROUPS_PER_REQUEST: usize = 10;

/// How many ids the first filtered read asks for, which decides whether the rest
/// are read by filter: few, as on a provider that scans every user for each id it
/// costs more than reading them one by one.
const PROBE_IDS: usize = 4;

/// Differences under this between a filtered read and as many single reads are
/// timer and scheduler noise on a busy host (at most half a millisecond an object
/// for a four-id filter), not a provider that scans for each id, which takes tens
/// of milliseconds more. Without it, a hiccup at no latency now and then sent a
/// whole verification back to one request per object (339 objects: 65 ms, against
/// 7 ms by filter).
const FILTER_NOISE: Duration = Duration::from_millis(2);

/// Whether a filter for `asked` ids that took `filtered` is slower per object than
/// a read of one object that took `object_read`, by more than [`FILTER_NOISE`].
fn filters_are_slower(object_read: Duration, filtered: Duration, asked: usize) -> bool {
    filtered > object_read.saturating_mul(to_u32(asked.max(1))) + FILTER_NOISE
}

/// What one filtered read found.
enum Found {
    Account(Account),
    Group(WorkspaceGroup),
}

/// Filtered reads' outcomes ((left out, failed) each) as [`Verifier::read_batched`]
/// returns them: (everything still to read, what was left out).
fn gather(outcomes: Vec<(Vec<Object>, Vec<Object>)>) -> (Vec<Object>, Vec<Object>) {
    let mut unread = Vec::new();
    let mut omitted = Vec::new();
    for (left_out, failed) in outcomes {
        unread.extend(left_out.iter().cloned());
        unread.extend(failed);
        omitted.extend(left_out);
    }
    (unread, omitted)
}

fn object_of_kind(group: bool, id: String) -> Object {
    if group {
        Object::Group(id)
    } else {
        Object::Account(id)
    }
}

/// Group ids and account ids, in `objects`' order.
fn split_objects(objects: Vec<Object>) -> (Vec<String>, Vec<String>) {
    let mut groups = Vec::new();
    let mut accounts = Vec::new();
    for object in objects {
        match object {
            Object::Group(id) => groups.push(id),
            Object::Account(id) => accounts.push(id),
        }
    }
    (groups, accounts)
}

/// Whether a filtered read's failure means the provider cannot serve `id eq …
/// or …` filters (refused as invalid, too long, not implemented; or answered
/// with what was not asked for), rather than that this attempt failed.
fn refuses_id_filters(e: &WorkspaceError) -> bool {
    match e {
        WorkspaceError::Status { status, .. } => {
            !e.is_transient() && !matches!(status, 401 | 403 | 404)
        }
        WorkspaceError::Malformed { .. } => true,
        _ => false,
    }
}

fn members_of(group: WorkspaceGroup) -> Members {
    group.members.into_iter().collect()
}

impl<'a> Verifier<'a> {
    /// `outage` is the apply's: a workspace its writes found down is not read.
    fn new(client: &'a ScimClient, created: &Created, outage: Arc<Outage>) -> Self {
        Verifier {
            client,
            outage,
            created_accounts: created.accounts.clone(),
            created_groups: created.groups.clone(),
            accounts: ReadOnce::default(),
            groups: ReadOnce::default(),
            memberships: ReadOnce::default(),
        }
    }

    /// Verifies against one fresh listing instead of a read per object: far fewer
    /// requests when many objects changed.
    /// Verification reads from `snapshot`, a fresh listing. When it is `whole`,
    /// an object it lacks is gone; otherwise that object is read on its own.
    fn preload(&mut self, snapshot: WorkspaceSnapshot, whole: bool) {
        self.accounts = ReadOnce::preloaded(
            snapshot.accounts.into_iter().map(|a| (a.id.clone(), a)),
            whole,
        );
        self.groups = ReadOnce::preloaded(
            snapshot
                .groups
                .into_iter()
                .map(|g| (g.id.clone(), members_of(g))),
            whole,
        );
    }

    fn relisted(&self) -> bool {
        self.accounts.complete
    }

    /// What reading `objects` costs in requests without a listing: with `id eq …
    /// or …` filters, a request per batch plus one for each deleted account (an
    /// answer leaving an account out is confirmed with a read of its own).
    fn object_requests(&self, objects: &[Object], deletes: usize) -> usize {
        if !self.client.id_filters_usable() {
            return objects.len();
        }
        let (groups, accounts) = split_objects(objects.to_vec());
        self.client.id_batches(groups, GROUPS_PER_REQUEST).len()
            + self.client.id_batches(accounts, usize::MAX).len()
            + deletes
    }

    /// Reads `objects` many at a time with `id eq … or …` filters, at most
    /// `concurrency` requests at once. Returns the objects still to be read one by
    /// one (those the answers left out and those of failed requests), and apart
    /// the ones the answers left out: if one of those exists after all, the
    /// answers were incomplete. A refused or wrong answer turns the filters off for
    /// the client's life; a transient failure only for the objects it asked for.
    ///
    /// When there is more than one request to make, a filter for a few ids goes
    /// first and alone, after a read of a single object of the same kind: if the
    /// filter took longer per object than that read (beyond [`FILTER_NOISE`]), the
    /// rest is read one by one. A provider that evaluates a filter by scanning
    /// every user (PyPI scim2-server does) answers 30 ids slower than 30 reads.
    /// (The two go one after the other: on a provider that serves one request at a
    /// time, a read sent beside the filter would wait for it.)
    async fn read_batched(
        &self,
        objects: Vec<Object>,
        concurrency: usize,
    ) -> (Vec<Object>, Vec<Object>) {
        let (groups, accounts) = split_objects(objects);
        // Account batches first: the probe is then an account batch, compared with
        // the read of an account.
        let mut batches: Vec<(bool, Vec<String>)> = self
            .client
            .id_batches(accounts, usize::MAX)
            .into_iter()
            .map(|ids| (false, ids))
            .chain(
                self.client
                    .id_batches(groups, GROUPS_PER_REQUEST)
                    .into_iter()
                    .map(|ids| (true, ids)),
            )
            .collect();
        let mut outcomes = Vec::new();
        let more_than_one = batches.len() > 1;
        let first_batch = batches.first_mut().filter(|_| more_than_one);
        // The single read and the probe are of the same kind: a group read carries
        // every member and is no measure of an account read.
        if let Some((groups, first)) = first_batch.filter(|(_, ids)| ids.len() > 1) {
            let groups = *groups;
            let single = first.pop().map(|id| object_of_kind(groups, id));
            let probe: Vec<String> = first.drain(..first.len().min(PROBE_IDS)).collect();
            if first.is_empty() {
                batches.remove(0);
            }
            if let Some(single) = single {
                let started = Instant::now();
                self.read(single).await;
                let object_read = started.elapsed();
                let asked = probe.len();
                let started = Instant::now();
                outcomes.push(self.read_batch(groups, probe).await);
                let filtered = started.elapsed();
                if filters_are_slower(object_read, filtered, asked) {
                    tracing::debug!(
                        ?filtered,
                        ?object_read,
                        asked,
                        "a filter by id is slower per object than a read of one; reading the rest one by one"
                    );
                    let one_by_one = batches
                        .into_iter()
                        .flat_map(|(groups, ids)| {
                            ids.into_iter().map(move |id| object_of_kind(groups, id))
                        })
                        .collect();
                    outcomes.push((Vec::new(), one_by_one));
                    return gather(outcomes);
                }
            }
        }
        outcomes.extend(
            bounded(batches, concurrency, |(groups, ids)| {
                self.read_batch(groups, ids)
            })
            .await,
        );
        gather(outcomes)
    }

    /// One filtered read of groups or accounts: (the objects its answer left out,
    /// those of a failed or skipped request).
    async fn read_batch(&self, groups: bool, ids: Vec<String>) -> (Vec<Object>, Vec<Object>) {
        let object = |id: String| object_of_kind(groups, id);
        if !self.client.id_filters_usable() || self.outage.down().is_some() {
            // An earlier batch was refused, or the workspace is down: its objects
            // go to the reads of their own, which know what to do.
            return (Vec::new(), ids.into_iter().map(object).collect());
        }
        let start = self.outage.start();
        let (client, asked) = (self.client.clone(), ids.clone());
        // On a task of its own, like every verification read: answers are parsed
        // on whichever core is free.
        let found = tokio::spawn(async move {
            if groups {
                let found = client.groups_by_id(&asked).await?;
                Ok(found.into_iter().map(Found::Group).collect::<Vec<_>>())
            } else {
                let found = client.accounts_by_id(&asked).await?;
                Ok(found.into_iter().map(Found::Account).collect())
            }
        })
        .await;
        match found {
            Ok(Ok(found)) => {
                let mut seen = HashSet::with_capacity(found.len());
                for found in found {
                    match found {
                        Found::Account(account) => {
                            seen.insert(account.id.clone());
                            self.accounts.found(account.id.clone(), account);
                        }
                        Found::Group(group) => {
                            seen.insert(group.id.clone());
                            self.groups.found(group.id.clone(), members_of(group));
                        }
                    }
                }
                let left_out = ids
                    .into_iter()
                    .filter(|id| !seen.contains(id))
                    .map(object)
                    .collect();
                (left_out, Vec::new())
            }
            Ok(Err(e)) => {
                if refuses_id_filters(&e) {
                    self.client.refuse_id_filters(&e.to_string());
                } else if self.outage.failed(start, &e) {
                    tracing::debug!(error = %e, "a filtered verification read failed and the workspace answers nothing");
                } else {
                    tracing::debug!(error = %e, "a filtered verification read failed; reading its objects one by one");
                }
                (Vec::new(), ids.into_iter().map(object).collect())
            }
            Err(e) => {
                tracing::debug!(error = %e, "a filtered verification read did not finish");
                (Vec::new(), ids.into_iter().map(object).collect())
            }
        }
    }

    /// Whether `object` has been read and is in the workspace.
    fn present(&self, object: &Object) -> bool {
        match object {
            Object::Group(id) => self.groups.present(id),
            Object::Account(id) => self.accounts.present(id),
        }
    }

    /// The object whose re-read shows `action`'s effect, when it is known without
    /// a search (a create whose id was not returned is found by userName).
    fn object_of(&self, action: &Action) -> Option<Object> {
        match &action.kind {
            ActionKind::Deactivate { account_id }
            | ActionKind::Delete { account_id, .. }
            | ActionKind::Reactivate { account_id }
            | ActionKind::UpdateAttributes { account_id, .. }
            | ActionKind::SetRole { account_id, .. } => Some(Object::Account(account_id.clone())),
            ActionKind::CreateAccount { identity_id, .. } => self
                .created_accounts
                .get(identity_id)
                .map(|id| Object::Account(id.clone())),
            ActionKind::CreateGroup { display_name } => self
                .group_id(&GroupRef::Created {
                    display_name: display_name.clone(),
                })
                .map(Object::Group),
            ActionKind::AddMembers { group, .. } | ActionKind::RemoveMembers { group, .. } => {
                self.group_id(group).map(Object::Group)
            }
        }
    }

    fn group_id(&self, group: &GroupRef) -> Option<String> {
        match group {
            GroupRef::Existing { id, .. } => Some(id.clone()),
            GroupRef::Created { display_name } => self
                .created_groups
                .get(&display_name.to_lowercase())
                .cloned(),
        }
    }

    async fn verify_numbered(&self, action: &Action) -> (u32, Result<Verified, String>) {
        let verified = match &action.kind {
            ActionKind::Deactivate { account_id } => {
                verify_deactivation(account_id, action, self).await
            }
            _ => verify_effect(action, self).await.map(|()| Verified::Shown),
        };
        (action.seq, verified)
    }

    /// Reads `object` into the cache. A failed read is not cached: checking the
    /// action reads it again.
    async fn read(&self, object: Object) {
        let _ = match &object {
            Object::Group(id) => self.group(id).await.map(|_| ()),
            Object::Account(id) => self.account(id).await.map(|_| ()),
        };
    }
}

/// Objects read for verification, by id: at most one request per id even when
/// several actions ask for it at once (later askers wait for the first read), and
/// none at all when the cache holds a complete listing (`complete`, where a miss
/// means absent). A failed read is not cached: the next asker tries again.
struct ReadOnce<T> {
    cells: Mutex<HashMap<String, Arc<Cell<T>>>>,
    complete: bool,
}

const CACHE_POISONED: &str = "verification cache poisoned";

/// One object's read: unset until it has been read, then the object or `None`.
type Cell<T> = tokio::sync::OnceCell<Option<Arc<T>>>;

impl<T> Default for ReadOnce<T> {
    fn default() -> Self {
        ReadOnce {
            cells: Mutex::default(),
            complete: false,
        }
    }
}

impl<T> ReadOnce<T> {
    /// Caches `object`, read by a filter, unless a read of `id` already began.
    fn found(&self, id: String, object: T) {
        if let Ok(mut cells) = self.cells.lock() {
            cells
                .entry(id)
                .or_insert_with(|| Arc::new(Cell::new_with(Some(Some(Arc::new(object))))));
        }
    }

    /// Caches that `id` is absent, known without reading it (a complete listing
    /// lacks it), unless a read of `id` already began.
    fn absent(&self, id: String) {
        if let Ok(mut cells) = self.cells.lock() {
            cells
                .entry(id)
                .or_insert_with(|| Arc::new(Cell::new_with(Some(None))));
        }
    }

    /// Whether `id` is known, present or absent, without a read of its own.
    fn settled(&self, id: &str) -> bool {
        self.cells
            .lock()
            .ok()
            .and_then(|cells| cells.get(id).map(|cell| cell.initialized()))
            .unwrap_or(false)
    }

    /// Whether `id` was read and exists.
    fn present(&self, id: &str) -> bool {
        self.cells
            .lock()
            .ok()
            .and_then(|cells| {
                cells
                    .get(id)
                    .map(|cell| matches!(cell.get(), Some(Some(_))))
            })
            .unwrap_or(false)
    }

    /// Objects already read; `complete`: every other one is known to be absent.
    fn preloaded(objects: impl Iterator<Item = (String, T)>, complete: bool) -> Self {
        ReadOnce {
            cells: Mutex::new(
                objects
                    .map(|(id, object)| {
                        let cell = Cell::new_with(Some(Some(Arc::new(object))));
                        (id, Arc::new(cell))
                    })
                    .collect(),
            ),
            complete,
        }
    }

    async fn get(
        &self,
        id: &str,
        fetch: impl std::future::Future<Output = Result<Option<T>, String>>,
    ) -> Result<Option<Arc<T>>, String> {
        let cell = {
            let mut cells = self.cells.lock().map_err(|_| CACHE_POISONED.to_owned())?;
            match cells.get(id) {
                Some(cell) => Arc::clone(cell),
                None if self.complete => return Ok(None),
                None => Arc::clone(cells.entry(id.to_owned()).or_default()),
            }
        };
        cell.get_or_try_init(|| async { fetch.await.map(|object| object.map(Arc::new)) })
            .await
            .cloned()
    }
}

/// Where [`verify_effect`] reads the workspace from.
trait Reader {
    async fn account(&self, id: &str) -> Result<Option<Arc<Account>>, String>;
    /// Every account holding `user_name`
    /// ([`ScimClient::find_accounts_by_user_name`]).
    async fn accounts_by_user_name(&self, user_name: &str) -> Result<Vec<Account>, String>;
    /// See [`ScimClient::find_account_elsewhere`].
    async fn account_elsewhere(&self, id: &str, user_name: &str)
    -> Result<Option<Account>, String>;
    /// A group and its members; under `group_members = "by_member_filter"` the
    /// members are not shown, and only whether the group exists counts.
    async fn group(&self, id: &str) -> Result<Option<Arc<Members>>, String>;
    /// Whether memberships are checked by [`Reader::groups_of_member`].
    fn members_by_filter(&self) -> bool;
    /// See [`ScimClient::roles_by_group`].
    fn roles_by_group(&self) -> bool;
    /// See [`ScimClient::groups_of_member`].
    async fn groups_of_member(&self, account_id: &str) -> Result<Arc<GroupIds>, String>;
    fn created_account(&self, identity_id: &str) -> Option<String>;
    fn group_id(&self, group: &GroupRef) -> Option<String>;
}

/// Runs a verification read on a task of its own (spawned when first polled), so
/// that its response is parsed on whichever core is free. Driven from the one
/// task that verifies, every response in flight was parsed on one core while the
/// other idled.
///
/// Through `outage`: not sent once the workspace is down, and its failure noted.
async fn on_own_task<T: Send + 'static>(
    outage: &Arc<Outage>,
    read: impl Future<Output = Result<T, WorkspaceError>> + Send + 'static,
) -> Result<T, String> {
    let outage = Arc::clone(outage);
    match tokio::spawn(async move { outage.watch(read).await }).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the read did not finish: {e}")),
    }
}

impl Reader for Verifier<'_> {
    async fn account(&self, id: &str) -> Result<Option<Arc<Account>>, String> {
        let (client, owned) = (self.client.clone(), id.to_owned());
        let read = on_own_task(
            &self.outage,
            async move { client.get_account(&owned).await },
        );
        self.accounts.get(id, read).await
    }
    async fn accounts_by_user_name(&self, user_name: &str) -> Result<Vec<Account>, String> {
        self.outage
            .watch(Box::pin(self.client.find_accounts_by_user_name(user_name)))
            .await
            .map_err(|e| e.to_string())
    }
    async fn account_elsewhere(
        &self,
        id: &str,
        user_name: &str,
    ) -> Result<Option<Account>, String> {
        self.outage
            .watch(Box::pin(
                self.client.find_account_elsewhere(id, Some(user_name)),
            ))
            .await
            .map_err(|e| e.to_string())
    }
    async fn group(&self, id: &str) -> Result<Option<Arc<Members>>, String> {
        let (client, owned) = (self.client.clone(), id.to_owned());
        let read = on_own_task(&self.outage, async move {
            client.get_group(&owned).await.map(|g| g.map(members_of))
        });
        self.groups.get(id, read).await
    }
    fn members_by_filter(&self) -> bool {
        self.client.members_by_filter()
    }
    fn roles_by_group(&self) -> bool {
        self.client.roles_by_group()
    }
    async fn groups_of_member(&self, account_id: &str) -> Result<Arc<GroupIds>, String> {
        let (client, owned) = (self.client.clone(), account_id.to_owned());
        let read = on_own_task(&self.outage, async move {
            let found = client.groups_of_member(&owned).await?;
            Ok(Some(found.into_iter().collect::<GroupIds>()))
        });
        self.memberships
            .get(account_id, read)
            .await?
            .ok_or_else(|| format!("the groups of account {account_id} were not read"))
    }
    fn created_account(&self, identity_id: &str) -> Option<String> {
        self.created_accounts.get(identity_id).cloned()
    }
    fn group_id(&self, group: &GroupRef) -> Option<String> {
        Verifier::group_id(self, group)
    }
}

fn same(attribute: Attribute, actual: Option<&str>, wanted: Option<&str>) -> bool {
    match attribute {
        Attribute::UserName | Attribute::Email => match (actual, wanted) {
            (Some(a), Some(w)) => crate::plan::same_ci(a, w),
            (a, w) => a == w,
        },
        _ => actual == wanted,
    }
}

/// Whether `account` already has the value `change` sets, compared as
/// verification compares it: an approval's re-check finds such an update done.
pub(crate) fn account_shows(account: &Account, change: &AttributeChange) -> bool {
    same(
        change.attribute,
        attribute_value(account, change.attribute),
        change.to.as_deref(),
    )
}

fn attribute_value(account: &Account, attribute: Attribute) -> Option<&str> {
    match attribute {
        Attribute::UserName => Some(account.user_name.as_str()),
        Attribute::ExternalId => account.external_id.as_deref(),
        Attribute::GivenName => account.given_name.as_deref(),
        Attribute::FamilyName => account.family_name.as_deref(),
        Attribute::DisplayName => account.display_name.as_deref(),
        Attribute::Email => account.email.as_deref(),
    }
}

/// An account that reads as absent by its id, looked for another way (see
/// [`ScimClient::find_account_elsewhere`]): a deprovision is not taken as done on
/// one route's word.
async fn found_elsewhere(
    reader: &impl Reader,
    account_id: &str,
    user_name: &str,
) -> Result<Option<Account>, String> {
    reader
        .account_elsewhere(account_id, user_name)
        .await
        .map_err(|e| {
            format!(
                "account {account_id} reads as absent by its id, and the search on /Users to \
                 confirm it failed: {e}"
            )
        })
}

/// Whether each of `accounts` is a member of group `group_id`, by the groups the
/// provider names for the account (`members.value eq "<account>"`), read
/// concurrently (each read still waits for a client permit).
///
/// Asked per account rather than per pair (`id eq "<group>" and members eq
/// "<account>"`, which AWS IAM Identity Center also answers): an account in
/// several changed groups (a new hire added to three workspaces) costs one read,
/// cached for the whole verification, instead of one per group; and absence is
/// then read from the same answer that shows presence, the one the snapshot was
/// made from.
async fn members_by_filter(
    reader: &impl Reader,
    group_id: &str,
    accounts: &[String],
) -> Result<Vec<(String, bool)>, String> {
    futures::future::try_join_all(accounts.iter().map(|account| async move {
        let groups = reader.groups_of_member(account).await.map_err(|e| {
            format!("the groups of account {account} could not be read to verify: {e}")
        })?;
        Ok::<_, String>((account.clone(), groups.contains(group_id)))
    }))
    .await
}

/// What verification found of a change the workspace shows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verified {
    /// The workspace shows the change.
    Shown,
    /// A deactivation's account is in the workspace no more, by its id nor by a
    /// search: no access is left, whoever removed it.
    AccountGone { account_id: String },
}

/// How the journal row and the report of a deactivation answered 404 whose
/// account no read finds begin: it was deleted in the workspace (by an admin,
/// push SCIM) between the run's listing and the write, or deactivated there and
/// then hidden (a workspace may list deactivated accounts no more, and nothing
/// tells seatwarden whether this one does). Done, as the person has no access
/// left, but an auditor must not read it as seatwarden's deactivation.
pub const ALREADY_GONE: &str = "the account was already gone from the workspace";

/// The note of such a deactivation ([`ALREADY_GONE`]). Whether it was deleted
/// or is hidden since someone deactivated it is not known: both are said.
fn already_gone(account_id: &str) -> String {
    format!(
        "{ALREADY_GONE}: no read finds account {account_id} (the deactivation was answered \
         404; not by its id, nor by a search on /Users): deleted there, or hidden by the \
         workspace once deactivated, so its access ended before this write, not with it"
    )
}

/// The note of a deactivation a cut-off run left in flight whose account no
/// read finds ([`ALREADY_GONE`]). Its answer was lost with the process, so
/// whether it was answered 404 (the account deleted before it, as is likely
/// when a run is killed between the write and its check) is not known, nor
/// whether a workspace that hides deactivated accounts hides it since this
/// write; either way nobody can sign in with the account, and an auditor
/// reading the row must learn the workspace no longer shows it, not only
/// "applied".
fn already_gone_when_recovered(account_id: &str) -> String {
    format!(
        "{ALREADY_GONE}: no read finds account {account_id} when the deactivation a cut-off \
         run left in flight was checked: deleted there, or hidden by the workspace once \
         deactivated, so its access ended with that deletion or with this write (its answer \
         was lost with the run)"
    )
}

/// Whether an applied row's `last_error` is a note on how it was done
/// ([`ALREADY_GONE`]) rather than an earlier attempt's failure.
pub fn applied_note(last_error: Option<&str>) -> bool {
    last_error.is_some_and(|note| note.starts_with(ALREADY_GONE))
}

/// Whether the workspace shows account `account_id` deactivated (or gone).
async fn verify_deactivation(
    account_id: &str,
    action: &Action,
    reader: &impl Reader,
) -> Result<Verified, String> {
    match reader.account(account_id).await? {
        Some(account) if account.active => Err(format!("account {account_id} is still active")),
        Some(_) => Ok(Verified::Shown),
        None => match found_elsewhere(reader, account_id, &action.subject).await? {
            Some(account) if account.active => Err(format!(
                "account {account_id} reads as absent by its id but is still active \
                 (found by a search on /Users)"
            )),
            Some(_) => Ok(Verified::Shown),
            None => Ok(Verified::AccountGone {
                account_id: account_id.to_owned(),
            }),
        },
    }
}

/// Checks that the workspace shows `action`'s effect. Used right after applying
/// and when resolving actions a crashed run left `in_flight`.
async fn verify_effect(action: &Action, reader: &impl Reader) -> Result<(), String> {
    let missing = |id: &str| format!("account {id} is not in the workspace");
    match &action.kind {
        ActionKind::Deactivate { account_id } => verify_deactivation(account_id, action, reader)
            .await
            .map(|_| ()),
        ActionKind::Delete { account_id, .. } => match reader.account(account_id).await? {
            Some(_) => Err(format!("account {account_id} still exists")),
            None => match found_elsewhere(reader, account_id, &action.subject).await? {
                Some(_) => Err(format!(
                    "account {account_id} reads as absent by its id but still exists \
                     (found by a search on /Users)"
                )),
                None => Ok(()),
            },
        },
        ActionKind::Reactivate { account_id } => match reader.account(account_id).await? {
            Some(account) if account.active => Ok(()),
            Some(_) => Err(format!("account {account_id} is still inactive")),
            None => Err(missing(account_id)),
        },
        ActionKind::UpdateAttributes {
            account_id,
            changes,
        } => {
            let account = reader
                .account(account_id)
                .await?
                .ok_or_else(|| missing(account_id))?;
            let wrong: Vec<String> = changes
                .iter()
                .filter(|c| {
                    !same(
                        c.attribute,
                        attribute_value(&account, c.attribute),
                        c.to.as_deref(),
                    )
                })
                .map(|c| {
                    format!(
                        "{} is {:?}, expected {:?}",
                        c.attribute.as_str(),
                        attribute_value(&account, c.attribute),
                        c.to
                    )
                })
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join("; "))
            }
        }
        ActionKind::SetRole { account_id, to, .. } => {
            let account = reader
                .account(account_id)
                .await?
                .ok_or_else(|| missing(account_id))?;
            // As the plan reads roles: one value, its case aside ("editor").
            if account.role() == Some(*to) {
                Ok(())
            } else {
                Err(format!("roles are {:?}, expected [{to}]", account.roles))
            }
        }
        ActionKind::CreateAccount { identity_id, spec } => {
            let account = match reader.created_account(identity_id) {
                Some(id) => reader.account(&id).await?,
                None => {
                    // Of several holding the userName, the one naming the person.
                    let holders = reader.accounts_by_user_name(&spec.user_name).await?;
                    let own = holders
                        .iter()
                        .position(|a| a.external_id.as_deref() == Some(identity_id.as_str()))
                        .unwrap_or(0);
                    holders.into_iter().nth(own).map(Arc::new)
                }
            };
            match account {
                // A role given by membership is a second write after the POST
                // (`ScimClient::create_account`): a create cut off or failed
                // between the two made an account without it. (With an
                // attribute, the role is in the POST itself.)
                Some(account)
                    if reader.roles_by_group()
                        && spec.role.is_some()
                        && account.role() != spec.role
                        && crate::model::same_name(&account.user_name, &spec.user_name) =>
                {
                    Err(format!(
                        "account {} was created, but its roles (by role group) are {:?}, \
                         expected [{}]; the next run sets the role",
                        account.id,
                        account.roles,
                        spec.role
                            .map(crate::model::Role::as_str)
                            .unwrap_or_default()
                    ))
                }
                Some(account) if crate::model::same_name(&account.user_name, &spec.user_name) => {
                    Ok(())
                }
                Some(account) => Err(format!(
                    "account {} has userName {:?}, expected {:?}",
                    account.id, account.user_name, spec.user_name
                )),
                None => Err(format!("no account with userName {:?}", spec.user_name)),
            }
        }
        ActionKind::CreateGroup { display_name } => {
            let group = GroupRef::Created {
                display_name: display_name.clone(),
            };
            let id = reader
                .group_id(&group)
                .ok_or_else(|| format!("group {display_name:?} was not created"))?;
            match reader.group(&id).await? {
                Some(_) => Ok(()),
                None => Err(format!(
                    "group {display_name:?} ({id}) is not in the workspace"
                )),
            }
        }
        ActionKind::AddMembers { group, members } => {
            let id = reader
                .group_id(group)
                .ok_or_else(|| format!("group {:?} does not exist", group.display_name()))?;
            let current = reader.group(&id).await?.ok_or_else(|| {
                format!("group {:?} is not in the workspace", group.display_name())
            })?;
            // A member whose create left no account is not in the group either:
            // skipping it would report a membership that does not exist.
            let mut not_created = Vec::new();
            let mut added = Vec::new();
            for member in members {
                match member {
                    AccountRef::Existing { id } => added.push(id.clone()),
                    AccountRef::Created { identity_id } => {
                        match reader.created_account(identity_id) {
                            Some(id) => added.push(id),
                            None => not_created.push(identity_id.as_str()),
                        }
                    }
                }
            }
            let absent: Vec<String> = if reader.members_by_filter() {
                members_by_filter(reader, &id, &added)
                    .await?
                    .into_iter()
                    .filter_map(|(member, is_member)| (!is_member).then_some(member))
                    .collect()
            } else {
                added.into_iter().filter(|m| !current.contains(m)).collect()
            };
            match (absent.is_empty(), not_created.is_empty()) {
                (true, true) => Ok(()),
                (true, false) => Err(format!(
                    "not members: the accounts of {} were not created",
                    not_created.join(", ")
                )),
                _ if current.is_empty() && !reader.members_by_filter() => Err(format!(
                    "not members yet: {}; the group reads with no members at all: if the \
                     provider never shows a group's members (AWS IAM Identity Center does \
                     not), set workspace.group_members = \"by_member_filter\"",
                    absent.join(", ")
                )),
                _ => Err(format!("not members yet: {}", absent.join(", "))),
            }
        }
        ActionKind::RemoveMembers { group, members } => {
            let id = reader
                .group_id(group)
                .ok_or_else(|| format!("group {:?} does not exist", group.display_name()))?;
            let Some(current) = reader.group(&id).await? else {
                return Ok(());
            };
            let still: Vec<String> = if reader.members_by_filter() {
                members_by_filter(reader, &id, members)
                    .await?
                    .into_iter()
                    .filter_map(|(member, is_member)| is_member.then_some(member))
                    .collect()
            } else {
                members
                    .iter()
                    .filter(|m| current.contains(*m))
                    .cloned()
                    .collect()
            };
            if still.is_empty() {
                Ok(())
            } else {
                Err(format!("still members: {}", still.join(", ")))
            }
        }
    }
}

/// Resolves journal rows that a dead process left `in_flight`: each object is
/// re-read; the row becomes `applied` when the workspace shows the change and
/// `failed` when it answered without it (the new plan, made from a fresh snapshot,
/// redoes it). A create that did reach the workspace is linked, so it is never sent
/// again, and a delete that did loses its link, as after a run's verification. A
/// row whose read failed (a 5xx after the retries, a network error) stays in flight
/// for the next recovery: an unanswered read is no proof that the write did not
/// arrive. A read refused for good (403, a malformed answer) fails the row with
/// the reason, as it would be refused at every recovery. The caller records the
/// deprovisions found applied in the ledger (`sweep::record_recovered`): the run
/// that sent them never did; and, once an observation has opened the episodes of
/// the ones that run held or did not apply, dates them from it
/// (`sweep::backdate_cut_off`, by [`Recovered::runs`]).
///
/// A crash in a large phase leaves thousands of rows in flight, and the next sweep
/// waits behind their recovery: the journal's results are read once per run, the
/// objects the rows touch are read ahead about 30 a request (`id eq … or …`, and
/// `userName eq … or …` for the creates; see [`RecoveryReads::read_ahead`]), each
/// object at most once however many rows touch it, and the outcomes are journaled
/// in one commit. What a filtered answer leaves out is read on its own when its row
/// is checked, so absence is never taken from a filter, and a provider that refuses
/// `or` is read one row at a time, `RECOVERY_CONCURRENCY` at once.
///
/// But a phase of creates cut off early (534 of 1,991 sent) leaves more than a
/// thousand userNames no `or` answer holds, a lookup each: when the creates left
/// to look up outnumber the pages of a listing of `/Users` (priced by the
/// `totalResults` of the `/Users` check above), they are settled from one listing
/// instead: an account by that userName (case aside) is reached, and absent from
/// a listing that reached its `totalResults` is not reached, the proof a plan
/// takes to create an account. What a short or failed listing leaves unsettled is
/// looked up on its own as before. Each row checked is reported to a
/// [`with_progress`] hook ([`ApplyProgress::Recovering`]).
pub async fn recover(
    client: &ScimClient,
    store: &Mutex<Store>,
    admin_command: &str,
) -> Result<Recovered, ApplyError> {
    let (interrupted, created, linked) = {
        let store = store.lock().map_err(|_| ApplyError::Poisoned)?;
        let interrupted: Vec<JournalEntry> = store.interrupted()?;
        let runs: BTreeSet<RunId> = interrupted.iter().map(|e| e.run).collect();
        let mut created: HashMap<RunId, Created> = HashMap::new();
        for run in runs {
            created.insert(run, created_in(&store, run)?);
        }
        let creates = interrupted
            .iter()
            .any(|e| matches!(e.action.kind, ActionKind::CreateAccount { .. }));
        let linked: HashMap<String, String> = if creates {
            store
                .links()?
                .into_iter()
                .map(|l| (l.account_id, l.identity_id))
                .collect()
        } else {
            HashMap::new()
        };
        (interrupted, created, linked)
    };
    if interrupted.is_empty() {
        return Ok(Recovered::default());
    }
    let total = interrupted.len();
    tracing::info!(
        rows = total,
        "checking the actions a cut-off run left in flight against the workspace"
    );
    report_progress(ApplyProgress::Recovering { checked: 0, total });
    // An interrupted deactivation or deletion is done if its account is gone, and
    // a 404 says so only from a workspace whose /Users answers: after a wrong base
    // URL every one of them would look done. Its totalResults prices a listing.
    let users_total = client.count_users().await?;
    let no_results = Created::default();
    let created_by = |entry: &JournalEntry| created.get(&entry.run).unwrap_or(&no_results);
    let reads = RecoveryReads::read_ahead(
        client,
        interrupted
            .iter()
            .filter_map(|entry| recovery_object(&entry.action, created_by(entry))),
        interrupted
            .iter()
            .filter_map(|entry| match &entry.action.kind {
                ActionKind::CreateAccount { spec, .. } => Some(spec.user_name.clone()),
                _ => None,
            }),
        users_total,
    )
    .await;
    let checked = AtomicUsize::new(0);
    let outcomes = bounded(interrupted.iter(), RECOVERY_CONCURRENCY, |entry| {
        let resolving = resolve_entry(
            entry,
            Recovery {
                reads: &reads,
                created: created_by(entry),
                linked: &linked,
                unanswered: OnceLock::new(),
                admin_command,
            },
        );
        let checked = &checked;
        async move {
            let resolved = resolving.await;
            let checked = checked.fetch_add(1, Ordering::Relaxed) + 1;
            report_progress(ApplyProgress::Recovering { checked, total });
            resolved
        }
    })
    .await;
    reads.check_omitted();

    let mut store = store.lock().map_err(|_| ApplyError::Poisoned)?;
    let links: Vec<NewLink> = outcomes
        .iter()
        .filter_map(|(_, outcome)| match outcome {
            Resolved::Reached(reached) => reached.link.clone(),
            _ => None,
        })
        .collect();
    if !links.is_empty() {
        store.upsert_links(&links, Utc::now())?;
    }
    store.batch(|store| {
        let now = Utc::now();
        for (entry, outcome) in &outcomes {
            let action = &entry.action;
            match outcome {
                Resolved::Reached(Reached {
                    note: Some(note), ..
                }) => {
                    store.mark_applied_noted(entry.run, action.seq, now, note)?;
                }
                Resolved::Reached(_) => {
                    store.mark_applied(entry.run, action.seq, now, None)?;
                }
                Resolved::NotReached(why) => {
                    store.mark_failed(
                        entry.run,
                        action.seq,
                        now,
                        &format!("{NOT_REACHED_INTERRUPTED} ({why}); the next plan redoes it"),
                    )?;
                }
                Resolved::Unanswered(_) => {}
            }
        }
        Ok(())
    })?;
    log_recovered(&outcomes);
    let deleted: Vec<String> = outcomes
        .iter()
        .filter_map(|(entry, outcome)| match (&entry.action.kind, outcome) {
            (ActionKind::Delete { account_id, .. }, Resolved::Reached(_)) => {
                Some(account_id.clone())
            }
            _ => None,
        })
        .collect();
    if !deleted.is_empty() {
        store.remove_links_to_accounts(&deleted)?;
    }
    let mut recovered = Recovered::default();
    for (entry, outcome) in &outcomes {
        recovered.runs.insert(entry.run);
        match outcome {
            Resolved::Reached(_) => {
                recovered.resolved += 1;
                recovered
                    .applied
                    .entry(entry.run)
                    .or_default()
                    .push(entry.action.seq);
            }
            Resolved::NotReached(_) => recovered.resolved += 1,
            Resolved::Unanswered(_) => {}
        }
    }
    Ok(recovered)
}

/// Rows left in flight that are each named in a warning; past them, the rest
/// are counted in one. A workspace failing mid-recovery leaves thousands.
const UNANSWERED_NAMED: usize = 10;

/// The recovery's outcomes in the log. A phase cut off early leaves thousands of
/// rows, most never sent, and a line for each buried the rest at INFO: the counts
/// are at INFO and each row at DEBUG (the journal holds every outcome), but for
/// the rows left in flight, which an operator may have to chase, named in
/// warnings up to [`UNANSWERED_NAMED`].
fn log_recovered(outcomes: &[(&JournalEntry, Resolved)]) {
    let (mut reached, mut not_reached, mut unanswered) = (0, 0, 0);
    for (entry, outcome) in outcomes {
        let action = &entry.action;
        match outcome {
            Resolved::Reached(_) => {
                reached += 1;
                tracing::debug!(
                    run = entry.run,
                    seq = action.seq,
                    op = action.kind.name(),
                    "interrupted action had reached the workspace"
                );
            }
            Resolved::NotReached(why) => {
                not_reached += 1;
                tracing::debug!(
                    run = entry.run,
                    seq = action.seq,
                    op = action.kind.name(),
                    why = %why,
                    "interrupted action had not reached the workspace"
                );
            }
            Resolved::Unanswered(why) => {
                unanswered += 1;
                if unanswered <= UNANSWERED_NAMED {
                    tracing::warn!(
                        run = entry.run,
                        seq = action.seq,
                        op = action.kind.name(),
                        error = %why,
                        "interrupted action left in flight: the workspace did not answer the \
                         read that decides whether it arrived; the next recovery reads it again"
                    );
                } else {
                    tracing::debug!(
                        run = entry.run,
                        seq = action.seq,
                        op = action.kind.name(),
                        error = %why,
                        "interrupted action left in flight"
                    );
                }
            }
        }
    }
    if unanswered > UNANSWERED_NAMED {
        tracing::warn!(
            more = unanswered - UNANSWERED_NAMED,
            "more interrupted actions left in flight for the same reason (each at debug level)"
        );
    }
    tracing::info!(
        reached,
        not_reached,
        left_in_flight = unanswered,
        "actions a cut-off run left in flight checked: those that reached the workspace are \
         applied, the others failed for the next plan to redo"
    );
}

/// What [`recover`] resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Rows journaled applied or failed; those whose read failed stay in flight.
    pub resolved: usize,
    /// The seqs found applied, by run.
    pub applied: BTreeMap<RunId, Vec<u32>>,
    /// Every run with rows left in flight: runs a dead process cut off.
    pub runs: BTreeSet<RunId>,
}

/// What re-reading an interrupted action's object found.
enum Resolved {
    /// The workspace shows the change.
    Reached(Reached),
    /// The workspace answered, without the change.
    NotReached(String),
    /// A read failed: nothing is known.
    Unanswered(String),
}

/// What a recovery knows of an interrupted action the workspace shows.
#[derive(Default)]
struct Reached {
    /// For a create, the link to record.
    link: Option<NewLink>,
    /// For a deactivation whose account no read finds, the note its row keeps
    /// ([`already_gone_when_recovered`]), as the run's own verification notes it.
    note: Option<String>,
}

/// How many interrupted actions [`recover`] checks at once, and how many of its
/// filtered reads run at once (the client's own limit still applies).
const RECOVERY_CONCURRENCY: usize = 8;

/// Whether an interrupted action reached the workspace; for a create that did, the
/// link to record.
async fn resolve_entry<'a>(
    entry: &'a JournalEntry,
    reader: Recovery<'_>,
) -> (&'a JournalEntry, Resolved) {
    let resolved = match resolve_interrupted(&entry.action, &reader).await {
        Ok(reached) => Resolved::Reached(reached),
        // Every read error ends the check with an error, whatever else it said.
        Err(why) if reader.unanswered.get().is_some() => Resolved::Unanswered(why),
        Err(why) => Resolved::NotReached(why),
    };
    (entry, resolved)
}

async fn resolve_interrupted(action: &Action, reader: &Recovery<'_>) -> Result<Reached, String> {
    match &action.kind {
        // Told apart as the run's verification tells them: an account gone is
        // done (no access is left), but the row must not read as though this
        // deactivation ended the access.
        ActionKind::Deactivate { account_id } => Ok(
            match verify_deactivation(account_id, action, reader).await? {
                Verified::Shown => Reached::default(),
                Verified::AccountGone { account_id } => Reached {
                    link: None,
                    note: Some(already_gone_when_recovered(&account_id)),
                },
            },
        ),
        _ => interrupted_link(action, reader)
            .await
            .map(|link| Reached { link, note: None }),
    }
}

/// Whether an interrupted action other than a deactivation reached the
/// workspace; for a create that did, the link to record.
async fn interrupted_link(
    action: &Action,
    reader: &Recovery<'_>,
) -> Result<Option<NewLink>, String> {
    match &action.kind {
        // A create whose answer was lost: the account exists if the server took
        // it. Link it so the new plan updates it instead of creating.
        ActionKind::CreateAccount { identity_id, spec } => {
            let holders = reader
                .accounts_by_user_name(&spec.user_name)
                .await?
                .into_iter()
                .map(|account| {
                    let linked_to = reader.linked.get(&account.id).cloned();
                    (account, linked_to)
                })
                .collect();
            match claim(holders, identity_id, &spec.user_name, reader.admin_command)? {
                Some(account) => {
                    // Not naming the person, it may be one someone made meanwhile
                    // (or the provider keeps no externalId): linked as the 409
                    // path links it, by userName, and not recorded as created.
                    let made = account.external_id.as_deref() == Some(identity_id.as_str());
                    if !made {
                        tracing::warn!(
                            account = %account.id,
                            user_name = %spec.user_name,
                            identity = %identity_id,
                            "an interrupted create's userName is held by an account whose \
                             externalId does not name the person: linked by userName, not as created"
                        );
                    }
                    Ok(Some(NewLink {
                        identity_id: identity_id.clone(),
                        account_id: account.id,
                        method: if made {
                            LinkMethod::Created
                        } else {
                            LinkMethod::UserName
                        },
                    }))
                }
                None => Err(format!("no account with userName {:?}", spec.user_name)),
            }
        }
        // One whose answer was lost before its id was journaled: the group exists
        // if the server took it, found by its name as the create looks it up
        // before it POSTs. Else it would be failed "not reached" and the next
        // plan, finding the group, would correct the journal only by doing nothing.
        ActionKind::CreateGroup { display_name }
            if reader
                .group_id(&GroupRef::Created {
                    display_name: display_name.clone(),
                })
                .is_none() =>
        {
            let found = reader.answered(reader.client().find_group_by_name(display_name).await)?;
            match found {
                Some(_) => Ok(None),
                None => Err(format!("group {display_name:?} was not created")),
            }
        }
        _ => verify_effect(action, reader).await.map(|()| None),
    }
}

/// Whether an account found by the userName a create asked for may be linked to
/// `identity_id`. Not when it is linked to someone else: a userName given again
/// (a rehire under a new id, a recycled address) finds the earlier person's kept
/// account, and linking it would hand that person's projects to the new one. Nor
/// when its externalId names someone else: the create sent `identity_id` as the
/// externalId, so the account is not the one it made, and matching gives an
/// account to the person its externalId names (an account that appeared between
/// the plan and the write is judged by the next run's plan).
fn claimable(
    account: &Account,
    identity_id: &str,
    linked_to: Option<&str>,
    admin_command: &str,
) -> Result<(), String> {
    // An address given again to someone new (a namesake, a rehire under a new
    // id) is the common case, and only the workspace's admins can free it.
    let free_it = format!(
        "if it is not (the address was given again to someone new), free the userName in \
         the workspace (rename or delete account {}) and the next run creates theirs",
        account.id
    );
    match (linked_to, account.external_id.as_deref()) {
        (Some(other), _) if other != identity_id => Err(format!(
            "userName {:?} belongs to account {}, which is linked to identity {other}; \
             seatwarden never moves an account to another person on its own: if it is really \
             theirs, `{}`; {free_it}",
            account.user_name,
            account.id,
            link_command(admin_command, &[identity_id, &account.id], &["--replace"])
        )),
        (None, Some(other)) if !other.is_empty() && other != identity_id => Err(format!(
            "userName {:?} belongs to account {}, whose externalId {other:?} names someone \
             else; seatwarden never gives a person an account another identity claims on its \
             own: the next run plans it as matching finds it, and if it is really theirs, \
             `{}`; {free_it}",
            account.user_name,
            account.id,
            link_command(admin_command, &[identity_id, &account.id], &[])
        )),
        _ => Ok(()),
    }
}

/// The `seatwarden link` a failed create's message tells a person to run,
/// spelled with `admin_command` (`report.admin_command`) as every other message
/// spells it: a command people cannot paste as it is (missing its `sudo -u` or
/// `--config`) fails, or acts on another database.
fn link_command(admin_command: &str, ids: &[&str], options: &[&str]) -> String {
    crate::model::admin_command_line(admin_command, "link", ids, options)
}

/// Of the accounts holding the userName a create asked for (each with the
/// identity it is linked to, if any), the one that may be linked to
/// `identity_id`: none when none holds it. A workspace that keeps userNames
/// unique only case-sensitively, or not at all, can hold several: the one the
/// create made (its externalId is the person's id, as the create sent it) and
/// one someone made under the same address meanwhile, perhaps listed first.
/// Taking the first handed that one the person's role and groups. The one whose
/// externalId names the person is the create's; without exactly one such,
/// which is theirs is for a person to say (`link`), as the plan disputes
/// several accounts matching one person, and none is linked. The one taken is
/// judged by [`claimable`] all the same.
fn claim(
    holders: Vec<(Account, Option<String>)>,
    identity_id: &str,
    user_name: &str,
    admin_command: &str,
) -> Result<Option<Account>, String> {
    let naming = holders
        .iter()
        .filter(|(a, _)| a.external_id.as_deref() == Some(identity_id))
        .count();
    let several = holders.len() > 1;
    let chosen = if several && naming != 1 {
        let ids = holders
            .iter()
            .map(|(a, _)| format!("{} ({:?})", a.id, a.user_name))
            .collect::<Vec<_>>()
            .join(", ");
        let which = if naming == 0 {
            format!("none of which names identity {identity_id} by externalId")
        } else {
            format!("{naming} of which name identity {identity_id} by externalId")
        };
        return Err(format!(
            "userName {user_name:?} is held by {} accounts, {ids}, {which}: seatwarden links \
             none of them on its own; the next run reports them as a disputed match, and \
             `{}` settles it",
            holders.len(),
            link_command(admin_command, &[identity_id, "ACCOUNT"], &[])
        ));
    } else if several {
        holders
            .into_iter()
            .find(|(a, _)| a.external_id.as_deref() == Some(identity_id))
    } else {
        holders.into_iter().next()
    };
    let Some((account, linked_to)) = chosen else {
        return Ok(None);
    };
    claimable(&account, identity_id, linked_to.as_deref(), admin_command)?;
    Ok(Some(account))
}

/// The accounts and groups `run` created, from its journal's results.
fn created_in(store: &Store, run: RunId) -> Result<Created, StoreError> {
    let mut created = Created::default();
    for entry in store.journal(run)? {
        let id_in = |key: &str| -> Result<Option<String>, StoreError> {
            Ok(store
                .action_result(run, entry.action.seq)?
                .and_then(|r| r.get(key)?.as_str().map(str::to_owned)))
        };
        match &entry.action.kind {
            ActionKind::CreateAccount { identity_id, .. } => {
                if let Some(id) = id_in("account_id")? {
                    created.accounts.insert(identity_id.clone(), id);
                }
            }
            ActionKind::CreateGroup { display_name } => {
                if let Some(id) = id_in("group_id")? {
                    created.groups.insert(display_name.to_lowercase(), id);
                }
            }
            _ => {}
        }
    }
    Ok(created)
}

/// The object whose re-read decides an interrupted action, when it is known
/// without a search: a create is looked for by its userName (see
/// [`resolve_interrupted`]); created groups come from the journal's results (a
/// group whose id never reached the journal is looked for by its name).
fn recovery_object(action: &Action, created: &Created) -> Option<Object> {
    match &action.kind {
        ActionKind::Deactivate { account_id }
        | ActionKind::Delete { account_id, .. }
        | ActionKind::Reactivate { account_id }
        | ActionKind::UpdateAttributes { account_id, .. }
        | ActionKind::SetRole { account_id, .. } => Some(Object::Account(account_id.clone())),
        ActionKind::CreateAccount { .. } => None,
        ActionKind::CreateGroup { display_name } => created
            .groups
            .get(&display_name.to_lowercase())
            .cloned()
            .map(Object::Group),
        ActionKind::AddMembers { group, .. } | ActionKind::RemoveMembers { group, .. } => {
            created_group_id(created, group).map(Object::Group)
        }
    }
}

fn created_group_id(created: &Created, group: &GroupRef) -> Option<String> {
    match group {
        GroupRef::Existing { id, .. } => Some(id.clone()),
        GroupRef::Created { display_name } => {
            created.groups.get(&display_name.to_lowercase()).cloned()
        }
    }
}

/// What one recovery has read, shared by every interrupted action: each object at
/// most once, whether by a filter or a listing ahead of the checks or on its own
/// when a check asks for it.
struct RecoveryReads<'a> {
    /// Its caches and filtered reads, as verification uses them; its created
    /// objects are empty (they differ by run: see [`Recovery::created`]).
    objects: Verifier<'a>,
    /// The accounts holding the userName a create asked for, by the name
    /// exactly as asked. Those taken from a listing of `/Users` carry no roles
    /// from role groups: a create's check needs only the accounts' ids,
    /// userNames and externalIds.
    by_user_name: ReadOnce<Vec<Account>>,
    /// Objects an `id eq … or …` answer left out, and userNames a `userName eq
    /// … or …` answer left out: if one of them exists after all, read on its own,
    /// those answers were incomplete.
    omitted: Vec<Object>,
    omitted_names: HashSet<String>,
    found_omitted_name: AtomicBool,
}

impl<'a> RecoveryReads<'a> {
    /// Reads `objects` and the accounts of `user_names` about 30 a request with
    /// `… or …` filters, at most `RECOVERY_CONCURRENCY` requests at once. What
    /// the answers leave out, or a failed request asked for, is read on its own
    /// when a check asks for it: a read that fails then decides that row alone
    /// (in flight or failed, see [`Recovery::answered`]), and absence is never
    /// taken from a filter.
    ///
    /// Except from a complete listing: when more userNames are left to look up
    /// one by one (most creates of a phase cut off early were never sent, and an
    /// `or` answer lacking them proves nothing) than a listing of the
    /// `users_total` accounts on `/Users` takes pages, they are settled from one
    /// listing ([`read_by_listing`]), as a reconcile's plan decides who lacks an
    /// account. Without a `totalResults`, its cost is unknown, and nothing is
    /// listed.
    async fn read_ahead(
        client: &'a ScimClient,
        objects: impl Iterator<Item = Object>,
        user_names: impl Iterator<Item = String>,
        users_total: Option<u64>,
    ) -> RecoveryReads<'a> {
        let verifier = Verifier::new(client, &Created::default(), Arc::new(Outage::new(client)));
        let mut objects: Vec<Object> = objects.collect();
        objects.sort();
        objects.dedup();
        let mut user_names: Vec<String> = user_names.collect();
        user_names.sort();
        user_names.dedup();
        let by_user_name = ReadOnce::default();
        let (omitted, omitted_names) = if client.id_filters_usable() {
            let by_name = read_by_user_names(client, user_names.clone(), &by_user_name);
            let ((_, omitted), omitted_names) = futures::join!(
                verifier.read_batched(objects, RECOVERY_CONCURRENCY),
                by_name
            );
            (omitted, omitted_names)
        } else {
            (Vec::new(), HashSet::new())
        };
        let found_omitted_name = AtomicBool::new(false);
        let unsettled: Vec<String> = user_names
            .into_iter()
            .filter(|name| !by_user_name.settled(name))
            .collect();
        if let Some(total) = users_total
            && unsettled.len() > client.listing_pages(total)
        {
            // Boxed: a listing's future is large, and every caller of `recover`
            // would carry it on its stack (a debug build's test thread overflowed).
            let found = Box::pin(read_by_listing(client, &unsettled, &by_user_name)).await;
            if found.iter().any(|name| omitted_names.contains(name)) {
                found_omitted_name.store(true, Ordering::Relaxed);
            }
        }
        RecoveryReads {
            objects: verifier,
            by_user_name,
            omitted,
            omitted_names,
            found_omitted_name,
        }
    }

    /// Turns `… or …` filters off for the client's life when an answer left out
    /// what exists, as verification does.
    fn check_omitted(&self) {
        let client = self.objects.client;
        if let Some(object) = self.omitted.iter().find(|o| self.objects.present(o)) {
            client.refuse_id_filters(&format!("a filter by id left out {object:?}, which exists"));
        } else if self.found_omitted_name.load(Ordering::Relaxed) {
            client.refuse_id_filters("a filter by userName left out an account that exists");
        }
    }
}

/// Looks `user_names` up with `userName eq … or …` filters into `found`; returns
/// the names the answers left out. A name alone in its request is left to the
/// lookup of its own, which is the same request. A refused filter turns the
/// filters off for the client's life, as for ids; a failed request leaves its
/// names to be looked up on their own.
///
/// The first request goes alone: a provider that refuses `or` would otherwise
/// be sent (and refuse) a whole round of them at once.
async fn read_by_user_names(
    client: &ScimClient,
    user_names: Vec<String>,
    found: &ReadOnce<Vec<Account>>,
) -> HashSet<String> {
    let mut batches = client
        .user_name_batches(user_names)
        .into_iter()
        .filter(|batch| batch.len() > 1);
    let ask = |batch: Vec<String>| async move {
        // Refused by an earlier request (or an id filter): the names are looked
        // up on their own.
        if !client.id_filters_usable() {
            return (batch, None);
        }
        let answer = client.holders_by_user_name(&batch).await;
        if let Err(e) = &answer
            && refuses_id_filters(e)
        {
            client.refuse_id_filters(&e.to_string());
        }
        (batch, Some(answer))
    };
    let mut outcomes = Vec::new();
    if let Some(first) = batches.next() {
        outcomes.push(ask(first).await);
        outcomes.extend(bounded(batches, RECOVERY_CONCURRENCY, ask).await);
    }
    let mut omitted = HashSet::new();
    for (batch, answer) in outcomes {
        let Some(answer) = answer else { continue };
        match answer {
            // One page of more: a name's holders may be on another, so each
            // name is looked up on its own (not as one the filter left out).
            Ok(None) => {}
            Ok(Some(accounts)) => {
                let mut seen = HashSet::with_capacity(accounts.len());
                for (name, holders) in accounts {
                    seen.insert(name.clone());
                    found.found(name, holders);
                }
                omitted.extend(batch.into_iter().filter(|name| !seen.contains(name)));
            }
            // Refused: the filters were turned off as it came in.
            Err(e) if refuses_id_filters(&e) => {}
            Err(e) => {
                tracing::debug!(error = %e, "a filtered recovery read failed; looking its userNames up one by one");
            }
        }
    }
    omitted
}

/// Settles `user_names` from one listing of `/Users` into `found`: a name an
/// account holds (the same but for case and white space at an end, as
/// [`ScimClient::find_account_by_user_name`] matches) is found; a name no
/// account holds is absent only when the listing reached its `totalResults`
/// (objects moved between pages, or the provider stopped early: what a short
/// listing lacks is no proof). What it leaves unsettled, or all of them when
/// the listing fails, is looked up on its own. Returns the names found.
async fn read_by_listing(
    client: &ScimClient,
    user_names: &[String],
    found: &ReadOnce<Vec<Account>>,
) -> Vec<String> {
    tracing::info!(
        creates = user_names.len(),
        "listing the workspace's accounts to check interrupted creates: fewer requests \
         than looking each userName up"
    );
    let (accounts, whole) = match client.users_whole(&|_| {}).await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "listing the workspace's accounts for recovery failed; looking the \
                 interrupted creates' userNames up one by one"
            );
            return Vec::new();
        }
    };
    if !whole {
        tracing::warn!(
            "the recovery's listing of the workspace's accounts ended short of its \
             totalResults; the interrupted creates it lacks are looked up one by one"
        );
    }
    // Every account in the listing holding each name, as a lookup finds them.
    let mut by_name: HashMap<String, Vec<Account>> = HashMap::with_capacity(accounts.len());
    for account in accounts {
        by_name
            .entry(fold_case(account.user_name.trim()))
            .or_default()
            .push(account);
    }
    let mut listed = Vec::new();
    for name in user_names {
        match by_name.get(&fold_case(name.trim())) {
            Some(holders) => {
                found.found(name.clone(), holders.clone());
                listed.push(name.clone());
            }
            None if whole => found.absent(name.clone()),
            None => {}
        }
    }
    listed
}

/// Reads for recovery, one per interrupted action, through the reads shared by
/// all of them; created objects are looked up from the journal's results.
struct Recovery<'a> {
    reads: &'a RecoveryReads<'a>,
    created: &'a Created,
    /// Account id → the identity it is linked to.
    linked: &'a HashMap<String, String>,
    /// The first read that failed (see [`Resolved::Unanswered`]).
    unanswered: OnceLock<String>,
    /// How people run seatwarden's commands (`report.admin_command`), for the
    /// `link` a create it cannot claim tells them to run.
    admin_command: &'a str,
}

impl Recovery<'_> {
    fn client(&self) -> &ScimClient {
        self.reads.objects.client
    }

    /// A read that failed for a while (a 5xx after the retries, a network error)
    /// leaves its row in flight; one refused for good (403, a malformed answer)
    /// would be refused at every recovery, keeping the row in flight forever, so
    /// it fails the row with the reason, and the next plan judges afresh.
    fn answered<T>(&self, read: Result<T, WorkspaceError>) -> Result<T, String> {
        read.map_err(|e| {
            let transient = e.is_transient();
            let e = e.to_string();
            if transient {
                let _ = self.unanswered.set(e.clone());
            }
            e
        })
    }

    /// A read through the shared caches: a failure of the cache itself (a
    /// poisoned lock) says nothing about the workspace, so the row stays in flight.
    fn cached<T>(&self, read: Result<T, String>) -> Result<T, String> {
        if let Err(e) = &read
            && e == CACHE_POISONED
        {
            let _ = self.unanswered.set(e.clone());
        }
        read
    }
}

impl Reader for Recovery<'_> {
    async fn account(&self, id: &str) -> Result<Option<Arc<Account>>, String> {
        let read = async { self.answered(self.client().get_account(id).await) };
        self.cached(self.reads.objects.accounts.get(id, read).await)
    }
    async fn accounts_by_user_name(&self, user_name: &str) -> Result<Vec<Account>, String> {
        let read = async {
            let found = self.answered(self.client().find_accounts_by_user_name(user_name).await)?;
            if !found.is_empty() && self.reads.omitted_names.contains(user_name) {
                self.reads.found_omitted_name.store(true, Ordering::Relaxed);
            }
            Ok(Some(found).filter(|found| !found.is_empty()))
        };
        let found = self.cached(self.reads.by_user_name.get(user_name, read).await)?;
        Ok(found
            .map(|holders| Vec::clone(&holders))
            .unwrap_or_default())
    }
    async fn account_elsewhere(
        &self,
        id: &str,
        user_name: &str,
    ) -> Result<Option<Account>, String> {
        self.answered(
            self.client()
                .find_account_elsewhere(id, Some(user_name))
                .await,
        )
    }
    async fn group(&self, id: &str) -> Result<Option<Arc<Members>>, String> {
        let read = async {
            self.answered(self.client().get_group(id).await)
                .map(|g| g.map(members_of))
        };
        self.cached(self.reads.objects.groups.get(id, read).await)
    }
    fn members_by_filter(&self) -> bool {
        self.client().members_by_filter()
    }
    fn roles_by_group(&self) -> bool {
        self.client().roles_by_group()
    }
    async fn groups_of_member(&self, account_id: &str) -> Result<Arc<GroupIds>, String> {
        let read = async {
            self.answered(self.client().groups_of_member(account_id).await)
                .map(|found| Some(found.into_iter().collect::<GroupIds>()))
        };
        self.cached(self.reads.objects.memberships.get(account_id, read).await)?
            .ok_or_else(|| format!("the groups of account {account_id} were not read"))
    }
    fn created_account(&self, identity_id: &str) -> Option<String> {
        self.created.accounts.get(identity_id).cloned()
    }
    fn group_id(&self, group: &GroupRef) -> Option<String> {
        created_group_id(self.created, group)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// Every message the executor journals for a row it kept back is told apart
    /// from a write that failed, the ones with a suffix (which write showed the
    /// workspace down, or the token refused) by their prefix.
    #[test]
    fn every_kept_back_message_is_not_sent_and_a_sent_failure_is_not() {
        use super::{KeptBack, not_sent};
        let down = format!(
            "{} (POST /Users: connection refused); the next run plans it again",
            super::NOT_SENT_DOWN
        );
        let token = format!(
            "{} (an earlier write was answered HTTP 401); check workspace.token",
            super::NOT_SENT_TOKEN
        );
        assert_eq!(
            KeptBack::of(Some(super::NOT_SENT_STOPPING)),
            Some(KeptBack::Stopping)
        );
        assert_eq!(
            KeptBack::of(Some(super::NOT_SENT_BREAKER)),
            Some(KeptBack::Breaker)
        );
        assert_eq!(KeptBack::of(Some(&down)), Some(KeptBack::Down));
        assert_eq!(KeptBack::of(Some(&token)), Some(KeptBack::Token));
        let in_front = format!(
            "{} (an earlier write was answered HTTP 401: an HTML page); check the proxy",
            super::NOT_SENT_IN_FRONT
        );
        assert_eq!(KeptBack::of(Some(&in_front)), Some(KeptBack::InFront));
        assert!(super::NOT_SENT.iter().all(|prefix| not_sent(Some(prefix))));
        assert!(!not_sent(Some("POST /Users: HTTP 401 Unauthorized")));
        assert!(!not_sent(Some(super::NOT_REACHED_INTERRUPTED)));
        assert!(!not_sent(None));
    }

    /// A create journaled with "alice@ex.com " (planned before userNames were
    /// created trimmed) that the workspace stored as "Alice@ex.com": the
    /// recovery's listing finds it (a name it does not find in a whole listing
    /// is absent, and approving again would send the create a second time).
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn the_recovery_listing_finds_a_created_account_stored_trimmed() {
        use crate::model::{Account, WorkspaceSnapshot};
        use crate::sandbox::{Sandbox, SandboxOptions};
        use crate::workspace::ScimSettings;
        let stored = Account {
            id: "a1".into(),
            user_name: "Alice@ex.com".into(),
            external_id: Some("00u1".into()),
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            active: true,
            roles: Vec::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sandbox = Sandbox::start(
            listener,
            SandboxOptions {
                token: "t".into(),
                ..SandboxOptions::default()
            },
            WorkspaceSnapshot {
                accounts: vec![stored],
                groups: Vec::new(),
            },
        )
        .await
        .unwrap();
        let client =
            crate::workspace::ScimClient::new(ScimSettings::for_test(sandbox.base_url())).unwrap();
        let found = super::ReadOnce::<Vec<Account>>::default();
        let name = "alice@ex.com ".to_owned();
        let listed = super::read_by_listing(&client, std::slice::from_ref(&name), &found).await;
        sandbox.shutdown().await;
        assert_eq!(listed, std::slice::from_ref(&name));
        assert!(found.present(&name));
    }

    /// Several accounts holding a create's userName, none or more than one of
    /// them naming the person: the refusal, which the journal, the report and
    /// `status` show, reads as one sentence (its source lines were joined
    /// without `\`, and it carried their indentation as runs of spaces).
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_claim_refused_for_several_holders_reads_as_one_sentence() {
        let holder = |id: &str, user_name: &str, external_id: Option<&str>| {
            let account = crate::model::Account {
                id: id.into(),
                user_name: user_name.into(),
                external_id: external_id.map(str::to_owned),
                given_name: None,
                family_name: None,
                display_name: None,
                email: None,
                active: true,
                roles: Vec::new(),
            };
            (account, None)
        };
        for holders in [
            vec![
                holder("a1", "Ada@ex.com", None),
                holder("a2", "ada@ex.com", Some("someone-else")),
            ],
            vec![
                holder("a1", "Ada@ex.com", Some("00u1")),
                holder("a2", "ada@ex.com", Some("00u1")),
            ],
        ] {
            let claimed = super::claim(holders, "00u1", "ada@ex.com", "seatwarden");
            assert!(
                claimed.is_err(),
                "several holders were claimed: {claimed:?}"
            );
            let why = claimed.unwrap_err();
            assert!(why.contains("a1") && why.contains("a2"), "{why}");
            assert!(why.contains("link 00u1 ACCOUNT"), "{why}");
            assert!(!why.contains("  "), "{why:?}");
        }
    }

    /// The `link` a refused claim names is spelled with `report.admin_command`,
    /// and takes the provider's ids as one word each, and an id that starts
    /// with `-` after `--`.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_refused_claim_quotes_the_ids_of_its_link_command() {
        const ADMIN: &str = "sudo -u sw seatwarden --config /etc/sw.toml";
        let account = crate::model::Account {
            id: "ws 1".into(),
            user_name: "ada@ex.com".into(),
            external_id: None,
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            active: true,
            roles: Vec::new(),
        };
        let why = super::claimable(&account, "it's $(x)", Some("00u9"), ADMIN).unwrap_err();
        assert!(
            why.contains(&format!(r"`{ADMIN} link 'it'\''s $(x)' 'ws 1' --replace`")),
            "{why}"
        );
        let why = super::claimable(&account, "-abc", Some("00u9"), ADMIN).unwrap_err();
        assert!(
            why.contains(&format!("`{ADMIN} link --replace -- -abc 'ws 1'`")),
            "{why}"
        );
        let holders = vec![(account.clone(), None), (account, None)];
        let why = super::claim(holders, "-abc", "ada@ex.com", ADMIN).unwrap_err();
        assert!(
            why.contains(&format!("`{ADMIN} link -- -abc ACCOUNT`")),
            "{why}"
        );
    }

    /// A recovery's batched `userName eq … or …` read whose answer filled a page
    /// may lack a holder of a name it lists (the provider returns one page, and
    /// a name held twice makes more holders than names): taken as all of that
    /// name's holders, the create's own account could be missing from them and
    /// someone else's linked in its place. Such a name is looked up on its own.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_recovery_batch_answer_cut_by_its_page_settles_no_name() {
        use crate::model::Account;
        use crate::workspace::ScimSettings;
        use wiremock::matchers::{method, path, query_param};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let user = |id: &str, user_name: &str, external_id: &str| {
            serde_json::json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": id, "userName": user_name, "externalId": external_id, "active": true
            })
        };
        let list = |total: usize, resources: Vec<serde_json::Value>| {
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/scim+json")
                .set_body_json(serde_json::json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                    "totalResults": total, "startIndex": 1,
                    "itemsPerPage": resources.len(), "Resources": resources
                }))
        };
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/ServiceProviderConfig"))
            .respond_with(ResponseTemplate::new(404))
            .mount(&server)
            .await;
        // A provider keeping userNames unique only case-sensitively, answering
        // one page of two of the three holders.
        Mock::given(method("GET"))
            .and(path("/Users"))
            .and(query_param(
                "filter",
                "userName eq \"ann@ex.com\" or userName eq \"bob@ex.com\"",
            ))
            .respond_with(list(
                3,
                vec![
                    user("a1", "ann@ex.com", "00ua"),
                    user("b1", "Bob@ex.com", "someone-else"),
                ],
            ))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/Users"))
            .and(query_param("filter", "userName eq \"bob@ex.com\""))
            .respond_with(list(
                2,
                vec![
                    user("b1", "Bob@ex.com", "someone-else"),
                    user("b2", "bob@ex.com", "00ub"),
                ],
            ))
            .mount(&server)
            .await;
        let sandbox_base = server.uri();
        let client = crate::workspace::ScimClient::new(ScimSettings::for_test(
            sandbox_base.parse().unwrap(),
        ))
        .unwrap();
        let found = super::ReadOnce::<Vec<Account>>::default();
        let names = vec!["ann@ex.com".to_owned(), "bob@ex.com".to_owned()];
        super::read_by_user_names(&client, names, &found).await;
        let bob = "bob@ex.com";
        let holders = found
            .get(bob, async {
                client
                    .find_accounts_by_user_name(bob)
                    .await
                    .map(Some)
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap()
            .unwrap();
        let mut ids: Vec<&str> = holders.iter().map(|a| a.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["b1", "b2"]);
    }

    /// Every write is reported, counted up to the plan's runnable actions, then the
    /// verification's start; a run on a terminal prints them (see `run`).
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn progress_counts_every_write_then_announces_the_verification() {
        use super::ApplyProgress;
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hook: super::ProgressHook = {
            let events = std::sync::Arc::clone(&events);
            std::sync::Arc::new(move |p| events.lock().unwrap().push(p))
        };
        let dir = tempfile::tempdir().unwrap();
        let demo = super::with_progress(hook, crate::demo::run(dir.path(), false))
            .await
            .unwrap();
        let events = events.lock().unwrap().clone();
        let written =
            demo.reconcile.summary.actions_applied + demo.reconcile.summary.actions_failed;
        assert!(written > 1, "the demo's reconcile writes");
        let expected: Vec<ApplyProgress> = (1..=written)
            .map(|done| ApplyProgress::Writing {
                done,
                total: written,
            })
            .chain([ApplyProgress::Verifying { changes: written }])
            .collect();
        assert_eq!(events, expected);
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{ReadOnce, filters_are_slower, relist_is_cheaper, same};
    use crate::model::Attribute;
    use crate::workspace::WorkspaceError;

    /// A workspace of at most one account and one group (id `g`), for
    /// [`super::verify_effect`]; no account was created and no search finds more.
    #[derive(Default)]
    struct Fixed {
        account: Option<crate::model::Account>,
        group: Option<super::Members>,
        /// Some: memberships are read by filter, and these are each account's
        /// groups (an account not named is in none).
        member_of: Option<std::collections::HashMap<String, super::GroupIds>>,
        /// Roles travel by membership in role groups.
        roles_by_group: bool,
    }

    impl super::Reader for Fixed {
        async fn account(
            &self,
            id: &str,
        ) -> Result<Option<std::sync::Arc<crate::model::Account>>, String> {
            Ok(self
                .account
                .clone()
                .filter(|a| a.id == id)
                .map(std::sync::Arc::new))
        }
        async fn accounts_by_user_name(
            &self,
            user_name: &str,
        ) -> Result<Vec<crate::model::Account>, String> {
            Ok(self
                .account
                .clone()
                .filter(|a| crate::model::same_name(&a.user_name, user_name))
                .into_iter()
                .collect())
        }
        async fn account_elsewhere(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<crate::model::Account>, String> {
            Ok(None)
        }
        async fn group(&self, _: &str) -> Result<Option<std::sync::Arc<super::Members>>, String> {
            Ok(self.group.clone().map(std::sync::Arc::new))
        }
        fn members_by_filter(&self) -> bool {
            self.member_of.is_some()
        }
        fn roles_by_group(&self) -> bool {
            self.roles_by_group
        }
        async fn groups_of_member(
            &self,
            account_id: &str,
        ) -> Result<std::sync::Arc<super::GroupIds>, String> {
            let member_of = self.member_of.as_ref().ok_or("not by filter")?;
            Ok(std::sync::Arc::new(
                member_of.get(account_id).cloned().unwrap_or_default(),
            ))
        }
        fn created_account(&self, _: &str) -> Option<String> {
            None
        }
        fn group_id(&self, _: &crate::model::GroupRef) -> Option<String> {
            self.group.as_ref().map(|_| "g".to_owned())
        }
    }

    /// Recovery judges a membership add a crash left in flight by the group: a
    /// member whose create never made an account is not in it, and the add is not
    /// "applied" for the members that are.
    #[tokio::test]
    async fn a_member_whose_account_was_not_created_is_not_a_member() {
        use crate::model::{AccountRef, Action, ActionKind, DriftKind, GroupRef};
        let add = |members: Vec<AccountRef>| Action {
            seq: 0,
            kind: ActionKind::AddMembers {
                group: GroupRef::Existing {
                    id: "g".into(),
                    display_name: "Eng".into(),
                },
                members,
            },
            reason: DriftKind::GroupDrift,
            subject: "Eng".into(),
            identity_id: None,
            detail: String::new(),
            held: None,
        };
        let reader = Fixed {
            group: Some(["a".to_owned()].into_iter().collect()),
            ..Fixed::default()
        };
        let existing = AccountRef::Existing { id: "a".into() };
        let created = AccountRef::Created {
            identity_id: "alice".into(),
        };
        assert_eq!(
            super::verify_effect(&add(vec![existing.clone()]), &reader).await,
            Ok(())
        );
        let result = super::verify_effect(&add(vec![existing, created]), &reader).await;
        assert!(
            result.as_ref().is_err_and(|e| e.contains("alice")),
            "{result:?}"
        );
    }

    fn membership_action(add: bool, members: &[&str]) -> crate::model::Action {
        use crate::model::{AccountRef, Action, ActionKind, DriftKind, GroupRef};
        let group = GroupRef::Existing {
            id: "g".into(),
            display_name: "Eng".into(),
        };
        let kind = if add {
            ActionKind::AddMembers {
                group,
                members: members
                    .iter()
                    .map(|m| AccountRef::Existing {
                        id: (*m).to_owned(),
                    })
                    .collect(),
            }
        } else {
            ActionKind::RemoveMembers {
                group,
                members: members.iter().map(|m| (*m).to_owned()).collect(),
            }
        };
        Action {
            seq: 0,
            kind,
            reason: DriftKind::GroupDrift,
            subject: "Eng".into(),
            identity_id: None,
            detail: String::new(),
            held: None,
        }
    }

    /// Under `group_members = "by_member_filter"` the group reads as empty (AWS
    /// IAM Identity Center): an add is verified by the member's groups, and so is
    /// a removal, never by the empty member list.
    #[tokio::test]
    async fn memberships_read_by_filter_decide_adds_and_removals() {
        let reader = Fixed {
            group: Some(super::Members::new()),
            member_of: Some(
                [
                    ("a".to_owned(), ["g".to_owned()].into_iter().collect()),
                    ("c".to_owned(), ["other".to_owned()].into_iter().collect()),
                ]
                .into_iter()
                .collect(),
            ),
            ..Fixed::default()
        };
        let verify = |add: bool, members: &[&str]| {
            let action = membership_action(add, members);
            let reader = &reader;
            async move { super::verify_effect(&action, reader).await }
        };
        assert_eq!(verify(true, &["a"]).await, Ok(()));
        let result = verify(true, &["a", "b", "c"]).await;
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.contains("b, c") && !e.contains("group_members")),
            "{result:?}"
        );
        assert_eq!(verify(false, &["b", "c"]).await, Ok(()));
        let result = verify(false, &["b", "a"]).await;
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.ends_with("still members: a")),
            "{result:?}"
        );
    }

    /// Read from the group (the default), an add to a group that shows no
    /// members at all names the setting for providers that never show them.
    #[tokio::test]
    async fn an_add_to_a_group_showing_no_members_names_the_setting() {
        let empty = Fixed {
            group: Some(super::Members::new()),
            ..Fixed::default()
        };
        let result = super::verify_effect(&membership_action(true, &["a"]), &empty).await;
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.contains("not members yet: a")
                    && e.contains("AWS IAM Identity Center")
                    && e.contains("workspace.group_members = \"by_member_filter\"")),
            "{result:?}"
        );
        let someone = Fixed {
            group: Some(["b".to_owned()].into_iter().collect()),
            ..Fixed::default()
        };
        let result = super::verify_effect(&membership_action(true, &["a"]), &someone).await;
        assert_eq!(result, Err("not members yet: a".to_owned()));
    }

    /// A provider that stores the role in its own case ("editor") shows the role
    /// set: the plan reads it so, and verification must not call it a failure.
    #[tokio::test]
    async fn a_role_the_provider_stores_in_lower_case_is_verified() {
        use crate::model::{Account, Action, ActionKind, DriftKind, Role};
        let account = |roles: &[&str]| Account {
            id: "a1".into(),
            user_name: "ada".into(),
            external_id: None,
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            active: true,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        let action = Action {
            seq: 0,
            kind: ActionKind::SetRole {
                account_id: "a1".into(),
                from: vec!["Viewer".into()],
                to: Role::Editor,
            },
            reason: DriftKind::RoleDrift,
            subject: "ada".into(),
            identity_id: None,
            detail: String::new(),
            held: None,
        };
        let verify = |roles: &'static [&'static str]| {
            let reader = Fixed {
                account: Some(account(roles)),
                ..Fixed::default()
            };
            let action = action.clone();
            async move { super::verify_effect(&action, &reader).await }
        };
        assert_eq!(verify(&["editor"]).await, Ok(()));
        assert_eq!(verify(&["Editor"]).await, Ok(()));
        assert!(verify(&["Viewer"]).await.is_err());
        assert!(verify(&["Editor", "Viewer"]).await.is_err());
    }

    /// A create approved from a plan made before userNames were created trimmed
    /// ("ada@ex.com "), stored trimmed by the workspace: done, not "account a1
    /// has userName \"ada@ex.com\", expected \"ada@ex.com \"" (a failed
    /// write, counted against the circuit breaker).
    #[tokio::test]
    async fn a_create_stored_trimmed_is_verified() {
        use crate::model::{Account, AccountSpec, Action, ActionKind, DriftKind};
        let reader = Fixed {
            account: Some(Account {
                id: "a1".into(),
                user_name: "Ada@ex.com".into(),
                external_id: Some("i1".into()),
                given_name: None,
                family_name: None,
                display_name: None,
                email: None,
                active: true,
                roles: Vec::new(),
            }),
            ..Fixed::default()
        };
        let action = Action {
            seq: 0,
            kind: ActionKind::CreateAccount {
                identity_id: "i1".into(),
                spec: AccountSpec {
                    user_name: "ada@ex.com ".into(),
                    external_id: "i1".into(),
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    email: None,
                    role: None,
                },
            },
            reason: DriftKind::MissingAccount,
            subject: "ada@ex.com".into(),
            identity_id: Some("i1".into()),
            detail: String::new(),
            held: None,
        };
        assert_eq!(super::verify_effect(&action, &reader).await, Ok(()));
    }

    /// With the role given by a role group, a write after the POST, a create is
    /// done only once the account holds its role: an account left without it (a
    /// run cut off between the two writes) is not called created. With an
    /// attribute, the role went in the POST and the create is judged as before.
    #[tokio::test]
    async fn a_create_by_role_group_is_done_only_with_its_role() {
        use crate::model::{Account, AccountSpec, Action, ActionKind, DriftKind, Role};
        let account = |roles: &[&str]| Account {
            id: "a1".into(),
            user_name: "ada".into(),
            external_id: Some("i1".into()),
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            active: true,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        let action = Action {
            seq: 0,
            kind: ActionKind::CreateAccount {
                identity_id: "i1".into(),
                spec: AccountSpec {
                    user_name: "ada".into(),
                    external_id: "i1".into(),
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    email: None,
                    role: Some(Role::Editor),
                },
            },
            reason: DriftKind::MissingAccount,
            subject: "ada".into(),
            identity_id: Some("i1".into()),
            detail: String::new(),
            held: None,
        };
        let verify = |roles: &'static [&'static str], roles_by_group: bool| {
            let reader = Fixed {
                account: Some(account(roles)),
                roles_by_group,
                ..Fixed::default()
            };
            let action = action.clone();
            async move { super::verify_effect(&action, &reader).await }
        };
        assert_eq!(verify(&["Editor"], true).await, Ok(()));
        let without = verify(&[], true).await;
        assert!(
            without
                .as_ref()
                .is_err_and(|e| e.contains("roles (by role group) are []")
                    && e.contains("expected [Editor]")),
            "{without:?}"
        );
        assert!(verify(&["Editor", "Owner"], true).await.is_err());
        assert_eq!(verify(&[], false).await, Ok(()));
    }

    /// Verification compares as the plan does: a provider that lower-cases an
    /// email, accented letters included, shows the change made.
    #[test]
    fn verification_folds_case_as_the_plan_does() {
        assert!(same(
            Attribute::Email,
            Some("élodie@example.com"),
            Some("Élodie@Example.com")
        ));
        assert!(same(Attribute::UserName, Some("ADA"), Some("ada")));
        assert!(!same(Attribute::GivenName, Some("ada"), Some("Ada")));
        assert!(!same(Attribute::Email, None, Some("a@x")));
        // Over the same inputs, verification calls a change made exactly when the
        // plan sees no drift left, the folds that must not turn a non-ASCII
        // letter into ASCII (Kelvin sign, dotted I) and a word-final sigma included.
        let pairs = [
            ("élodie@example.com", "Élodie@Example.com"),
            ("ADA@x.com", "ada@x.com"),
            ("\u{212A}im@ex.com", "kim@ex.com"),
            ("\u{130}da@ex.com", "ida@ex.com"),
            ("ΟΔΟΣ@ex.com", "οδος@ex.com"),
            ("straße@ex.com", "STRASSE@ex.com"),
            ("ada@x.com", "bob@x.com"),
        ];
        for (actual, wanted) in pairs {
            for (a, w) in [(actual, wanted), (wanted, actual)] {
                for attribute in [Attribute::UserName, Attribute::Email] {
                    assert_eq!(
                        same(attribute, Some(a), Some(w)),
                        !plan_sees_drift(attribute, a, w),
                        "{attribute:?}: {a:?} shown, {w:?} wanted"
                    );
                }
            }
        }
    }

    /// Whether the plan finds `attribute` drift on a linked account showing
    /// `actual` where the directory gives `wanted`.
    fn plan_sees_drift(attribute: Attribute, actual: &str, wanted: &str) -> bool {
        use crate::model::{
            Account, ActionKind, DirectorySnapshot, Identity, IdentityStatus, Link, Role,
            WorkspaceSnapshot,
        };
        use crate::plan::{DeprovisionAction, PlanSettings, Retention};
        use crate::policy::{PolicySettings, Protected, UnmatchedAccounts, desired_state};
        let pick = |which: Attribute, value: &str| {
            if which == attribute {
                value
            } else {
                "same@x.com"
            }
            .to_owned()
        };
        let directory = DirectorySnapshot {
            identities: vec![Identity {
                id: "i1".into(),
                user_name: pick(Attribute::UserName, wanted),
                email: Some(pick(Attribute::Email, wanted)),
                given_name: None,
                family_name: None,
                display_name: None,
                status: IdentityStatus::Active,
                department: None,
                groups: vec![],
            }],
            complete: true,
        };
        let workspace = WorkspaceSnapshot {
            accounts: vec![Account {
                id: "a1".into(),
                user_name: pick(Attribute::UserName, actual),
                external_id: Some("i1".into()),
                given_name: None,
                family_name: None,
                display_name: None,
                email: Some(pick(Attribute::Email, actual)),
                active: true,
                roles: vec![],
            }],
            groups: vec![],
        };
        let policy = PolicySettings {
            scope_groups: vec![],
            default_role: Role::Viewer,
            mappings: vec![],
            manage_roles: false,
        };
        let settings = PlanSettings {
            deprovision: DeprovisionAction::Deactivate,
            retention: Retention::default(),
            unmatched_accounts: UnmatchedAccounts::Report,
            manage_roles: false,
            protected: Protected::default(),
            admin_command: crate::model::DEFAULT_ADMIN_COMMAND.to_owned(),
        };
        let links = [Link {
            identity_id: "i1".into(),
            account_id: "a1".into(),
        }];
        let plan = crate::plan::plan(
            &desired_state(&directory, &policy),
            &directory,
            &workspace,
            &links,
            &[],
            &settings,
        );
        plan.actions.iter().any(|a| {
            matches!(&a.kind, ActionKind::UpdateAttributes { changes, .. }
                if changes.iter().any(|c| c.attribute == attribute))
        })
    }

    const MS: Duration = Duration::from_millis(1);

    /// A read that counts itself and yields once, so that concurrent askers really
    /// overlap it.
    async fn counted(
        reads: &AtomicUsize,
        outcome: Result<Option<u32>, WorkspaceError>,
    ) -> Result<Option<u32>, String> {
        reads.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        outcome.map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn concurrent_askers_share_one_read() {
        let cache = ReadOnce::<u32>::default();
        let reads = AtomicUsize::new(0);
        let seen = futures::future::join_all(
            (0..8).map(|_| cache.get("group-1", counted(&reads, Ok(Some(7))))),
        )
        .await;
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert!(
            seen.iter()
                .all(|s| s.as_ref().ok().and_then(|o| o.as_deref()) == Some(&7))
        );
        let absent = cache.get("gone", counted(&reads, Ok(None))).await;
        assert_eq!(absent, Ok(None));
        assert_eq!(
            cache.get("gone", counted(&reads, Ok(Some(1)))).await,
            Ok(None)
        );
        assert_eq!(reads.load(Ordering::SeqCst), 2, "absence is remembered too");
    }

    #[tokio::test]
    async fn a_failed_read_is_tried_again() {
        let cache = ReadOnce::<u32>::default();
        let reads = AtomicUsize::new(0);
        let failed = WorkspaceError::Malformed {
            endpoint: "GET /Groups/g".into(),
            what: "truncated".into(),
        };
        let first = cache.get("g", counted(&reads, Err(failed))).await;
        assert!(first.is_err_and(|e| e.contains("truncated")));
        let second = cache.get("g", counted(&reads, Ok(Some(3)))).await;
        assert_eq!(second.ok().flatten().as_deref(), Some(&3));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_complete_listing_answers_without_reading() {
        let cache = ReadOnce::preloaded([("a".to_owned(), 1u32)].into_iter(), true);
        let reads = AtomicUsize::new(0);
        let listed = cache.get("a", counted(&reads, Ok(Some(9)))).await;
        assert_eq!(listed.ok().flatten().as_deref(), Some(&1));
        assert_eq!(cache.get("b", counted(&reads, Ok(Some(9)))).await, Ok(None));
        assert_eq!(reads.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn without_measurements_fewer_requests_win() {
        assert!(relist_is_cheaper(13, 12, 8, 8, None, Some(MS)));
        assert!(!relist_is_cheaper(12, 12, 8, 8, Some(MS), None));
    }

    #[test]
    fn a_few_changes_in_a_large_fast_workspace_are_read_one_by_one() {
        // 339 changes, 12 pages of 1,000; a single read 2.6 ms, a page 150 ms
        // (the in-process sandbox at 10k people).
        assert!(!relist_is_cheaper(
            339,
            12,
            8,
            8,
            Some(MS * 26 / 10),
            Some(MS * 150)
        ));
    }

    #[test]
    fn many_changes_behind_slow_round_trips_are_relisted() {
        // 1,000 changes, 100 pages of 100; 150 ms a request, 600 ms a page.
        assert!(relist_is_cheaper(
            1_000,
            100,
            4,
            4,
            Some(MS * 150),
            Some(MS * 600)
        ));
        // … but 300 changes are still cheaper one by one.
        assert!(!relist_is_cheaper(
            300,
            100,
            4,
            4,
            Some(MS * 150),
            Some(MS * 600)
        ));
    }

    #[test]
    fn a_listing_paged_by_cursor_costs_one_round_trip_a_page() {
        // 1,000 changes, 100 pages of 100, 150 ms a request, 600 ms a page: with
        // four pages at a time the listing wins (above); one at a time it loses.
        assert!(!relist_is_cheaper(
            1_000,
            100,
            4,
            1,
            Some(MS * 150),
            Some(MS * 600)
        ));
        // Two pages still win one at a time.
        assert!(relist_is_cheaper(
            1_000,
            2,
            4,
            1,
            Some(MS * 150),
            Some(MS * 600)
        ));
    }

    #[test]
    fn a_filter_is_given_up_only_when_it_is_clearly_slower_per_object() {
        // PyPI scim2-server: a read of one account about 5 ms, four ids by filter
        // about 170 ms.
        assert!(filters_are_slower(MS * 5, MS * 170, 4));
        // An indexed provider 20 ms away: one round trip either way.
        assert!(!filters_are_slower(MS * 20, MS * 21, 4));
        // In the same process, sub-millisecond reads: a hiccup is not a verdict.
        assert!(!filters_are_slower(MS / 10, MS * 2, 4));
        assert!(filters_are_slower(MS / 10, MS * 3, 4));
        // Slower per object, but by less than the noise in total.
        assert!(!filters_are_slower(MS * 10, MS * 41, 4));
        assert!(filters_are_slower(MS * 10, MS * 43, 4));
    }

    #[test]
    fn the_sweep_never_relists() {
        assert!(!relist_is_cheaper(
            5_000,
            usize::MAX,
            8,
            8,
            Some(MS),
            Some(MS)
        ));
        assert!(!relist_is_cheaper(5_000, usize::MAX, 8, 8, None, None));
    }

    /// A rename of account `a-{from}` from userName `from` to `to`.
    fn rename(seq: u32, from: &str, to: &str) -> crate::model::Action {
        use crate::model::{Action, ActionKind, Attribute, AttributeChange, DriftKind};
        Action {
            seq,
            kind: ActionKind::UpdateAttributes {
                account_id: format!("a-{from}"),
                changes: vec![AttributeChange {
                    attribute: Attribute::UserName,
                    from: Some(from.to_owned()),
                    to: Some(to.to_owned()),
                }],
            },
            reason: DriftKind::AttributeDrift,
            subject: to.to_owned(),
            identity_id: None,
            detail: String::new(),
            held: None,
        }
    }

    /// Each rename comes one place after the one freeing the userName it wants,
    /// in whatever order the plan lists them; a rename of case only waits on
    /// nothing.
    #[test]
    fn a_chain_of_renames_is_numbered_link_by_link() {
        // u0 → NEW, u1 → u0, …, u199 → u198, listed from the end of the chain.
        let mut actions: Vec<_> = (0..200u32)
            .map(|i| {
                let to = if i == 0 {
                    "NEW".to_owned()
                } else {
                    format!("U{}", i - 1)
                };
                rename(i, &format!("u{i}"), &to)
            })
            .rev()
            .collect();
        actions.push(rename(500, "Solo", "solo"));
        let plan = crate::model::Plan {
            actions,
            ..crate::model::Plan::default()
        };
        let freed = super::FreedUserNames::new(&plan);
        for i in 0..200u32 {
            assert_eq!(freed.link(i), i, "rename {i}");
        }
        assert_eq!(freed.link(500), 0);
        let waited = freed.waits_on(&plan.actions[0]);
        assert_eq!(waited.map(|(a, name)| (a.seq, name)), Some((198, "u198")));
        assert!(
            plan.actions
                .last()
                .is_some_and(|a| freed.waits_on(a).is_none())
        );
    }

    /// A cycle (which no plan makes, but an approval could assemble) is cut, not
    /// walked forever.
    #[test]
    fn a_cycle_of_renames_is_numbered_and_ends() {
        let plan = crate::model::Plan {
            actions: vec![
                rename(0, "a", "b"),
                rename(1, "b", "c"),
                rename(2, "c", "a"),
            ],
            ..crate::model::Plan::default()
        };
        let freed = super::FreedUserNames::new(&plan);
        let mut links: Vec<u32> = (0..3).map(|seq| freed.link(seq)).collect();
        links.sort_unstable();
        assert_eq!(links, [0, 1, 2]);
    }

    /// Two accounts holding one userName in different case (a case-sensitive
    /// workspace) both give it up: the rename the lookup by name does not keep
    /// still waits for the rename that frees the userName it wants (a proptest
    /// seed sent both in one batch, and the workspace answered 409).
    #[test]
    fn a_rename_of_a_duplicate_user_name_still_waits_its_turn() {
        let plan = crate::model::Plan {
            actions: vec![
                rename(0, "mail19", "USER0"),
                rename(1, "USER0", "user14"),
                rename(2, "MAIL19", "other"),
            ],
            ..crate::model::Plan::default()
        };
        let batches: Vec<Vec<u32>> = super::write_batches(&plan)
            .iter()
            .map(|batch| batch.iter().map(|a| a.seq).collect())
            .collect();
        assert_eq!(batches, [vec![1, 2], vec![0]]);
    }

    /// A rename in spacing or case only keeps its userName's key, so it frees
    /// nothing: when another account holds that name too (`USER18 ` and `USER18`
    /// in a case-sensitive workspace), the rename onto `user18` waits for the
    /// other's rename away (a proptest seed sent both in one batch: 409).
    #[test]
    fn a_rename_in_spacing_only_waits_for_the_other_holder_of_its_name() {
        for actions in [
            vec![rename(0, "USER18", "mail0"), rename(1, "USER18 ", "user18")],
            vec![rename(0, "USER18 ", "user18"), rename(1, "USER18", "mail0")],
        ] {
            let taker = u32::from(actions[1].subject == "user18");
            let other = 1 - taker;
            let plan = crate::model::Plan {
                actions,
                ..crate::model::Plan::default()
            };
            let batches: Vec<Vec<u32>> = super::write_batches(&plan)
                .iter()
                .map(|batch| batch.iter().map(|a| a.seq).collect())
                .collect();
            assert_eq!(batches, [vec![other], vec![taker]]);
        }
    }

    /// The plan takes `user9 ` (a trailing space) and `user9` for one userName:
    /// the rename onto `user9` waits for the rename of `user9 ` away, or a
    /// workspace that trims would answer it 409.
    #[test]
    fn a_rename_waits_for_the_user_name_it_wants_held_with_white_space() {
        let plan = crate::model::Plan {
            actions: vec![rename(0, "q", "user9"), rename(1, "user9 ", "z")],
            ..crate::model::Plan::default()
        };
        let batches: Vec<Vec<u32>> = super::write_batches(&plan)
            .iter()
            .map(|batch| batch.iter().map(|a| a.seq).collect())
            .collect();
        assert_eq!(batches, [vec![1], vec![0]]);
    }

    /// A workspace may list a deactivated account no more (nothing tells
    /// seatwarden whether it does): an account no read finds was deleted there,
    /// or is hidden since its deactivation. The notes said "deleted" alone, and
    /// an auditor went looking for a deletion nobody made.
    #[test]
    fn an_account_no_read_finds_is_told_deleted_or_hidden_once_deactivated() {
        for note in [
            super::already_gone("acc-1"),
            super::already_gone_when_recovered("acc-1"),
        ] {
            assert!(note.starts_with(super::ALREADY_GONE), "{note}");
            assert!(super::applied_note(Some(&note)), "{note}");
            assert!(
                note.contains("no read finds account acc-1")
                    && note.contains("deleted there, or hidden by the workspace once deactivated"),
                "{note}"
            );
        }
    }
}
