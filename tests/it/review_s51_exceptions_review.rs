//! Review of session 51's time-bound exceptions (`[[safety.exceptions]]`): the
//! sweep keeps a person excepted by their directory userName past its first
//! look, an exception taken out or shortened moves the episode's due time and
//! SLA start to when it ended, `link` treats an exception as the passing thing it
//! is, and what people read has no stray runs of spaces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use seatwarden::config::Config;
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::daemon::reconciled_demo;
use crate::review_s51_exceptions::{
    PutOff, active, episode, except, put_off_for_ten_days, suspend_someone,
};

/// A time (whole seconds) after the machine's clock, so the passes' "verified
/// at" (the later of the clock and `now`) is `now` itself.
fn later_than_the_clock() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp() + 30 * 86_400, 0).unwrap()
}

/// An exception names the person's directory userName, which their account does
/// not have (the directory renamed them; the account keeps its name). The first
/// look puts the deprovision off, and the ledger takes the account's name then:
/// the next look must still find the exception, not deactivate the account
/// 15 minutes later while the reconcile keeps leaving it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_excepted_by_directory_user_name_stays_excepted_after_the_first_look() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (person, user_name) =
        suspend_someone(dir.path(), &sandbox, Some("renamed.leaver@example.com"));
    let now = later_than_the_clock();
    let until = now + Duration::days(3);
    except(&mut config, &user_name, until, "handover, HR-4711");
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();

    let swept = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &client,
        &store,
        now,
        Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!((swept.excepted, swept.enforced), (1, 0), "{swept:?}");
    assert!(active(&sandbox, &person));

    for minutes in [15, 30, 45] {
        let retried =
            seatwarden::sweep::enforce(&config, &client, &store, now + Duration::minutes(minutes))
                .await
                .unwrap();
        assert_eq!(
            (retried.excepted, retried.enforced),
            (1, 0),
            "{minutes} min: {retried:?}"
        );
        assert!(
            active(&sandbox, &person),
            "{minutes} min: kept until {until}"
        );
    }
    let put_off = episode(&store, &person);
    assert_eq!(put_off.due_at, until + Duration::hours(1), "{put_off:?}");

    let ended = seatwarden::sweep::enforce(&config, &client, &store, until)
        .await
        .unwrap();
    assert_eq!(ended.enforced, 1, "{ended:?}");
    assert!(!active(&sandbox, &person));
    sandbox.shutdown().await;
}

/// Taken out of the configuration days before its end, an exception ends when
/// the sweep finds it gone: the deactivation's latency counts from then (not
/// from the end it no longer has, which made it negative), and an episode still
/// open is due the SLA after then, not after the old end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_taken_out_early_ends_its_put_off_there() {
    let now = later_than_the_clock();
    let sla = Duration::hours(1);
    let PutOff {
        sandbox,
        dir: _dir,
        mut config,
        person,
        store,
        client,
        ..
    } = put_off_for_ten_days(now).await;

    config.safety.exceptions.clear();
    let next = now + Duration::minutes(15);
    let retried = seatwarden::sweep::enforce(&config, &client, &store, next)
        .await
        .unwrap();
    assert_eq!(retried.enforced, 1, "{retried:?}");
    assert!(!active(&sandbox, &person));
    assert_eq!(retried.latencies, [Duration::zero()], "{retried:?}");
    let done = episode(&store, &person);
    assert_eq!(done.latency(), Some(Duration::zero()), "{done:?}");
    assert_eq!(done.excepted_until, Some(next), "{done:?}");
    assert_eq!(done.due_at, next + sla, "{done:?}");
    sandbox.shutdown().await;
}

/// An exception moved to an earlier end (still ahead): the episode is due the
/// SLA after the new end, so a deactivation that then fails is escalated on
/// time, not when the old end would have made it due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortened_exception_brings_the_due_time_forward() {
    let now = later_than_the_clock();
    let sla = Duration::hours(1);
    let PutOff {
        sandbox,
        dir: _dir,
        mut config,
        person,
        user_name,
        store,
        client,
    } = put_off_for_ten_days(now).await;
    assert_eq!(
        episode(&store, &person).due_at,
        now + Duration::days(10) + sla
    );

    let sooner = now + Duration::hours(2);
    except(&mut config, &user_name, sooner, "notice period, cut short");
    let next = now + Duration::minutes(15);
    let retried = seatwarden::sweep::enforce(&config, &client, &store, next)
        .await
        .unwrap();
    assert_eq!(retried.excepted, 1, "{retried:?}");
    let put_off = episode(&store, &person);
    assert_eq!(put_off.excepted_until, Some(sooner), "{put_off:?}");
    assert_eq!(put_off.due_at, sooner + sla, "{put_off:?}");
    assert!(active(&sandbox, &person));
    sandbox.shutdown().await;
}

fn load(extra: &str, env: &[(&str, &str)]) -> Result<Config, String> {
    crate::config::load(&format!("{}\n{extra}", crate::config::MINIMAL), env)
}

/// The refusals of a pattern, an empty reason and a repeated name read as
/// sentences: no run of spaces from a string broken across source lines.
#[test]
fn exception_errors_read_without_runs_of_spaces() {
    let entry = |user_name: &str, reason: &str| {
        format!(
            "[[safety.exceptions]]\nuser_name = {user_name:?}\nuntil = 2026-12-15\nreason = {reason:?}\n"
        )
    };
    for (toml, says) in [
        (
            entry("*@contractor.example.com", "x"),
            "an exception names one account exactly; a pattern that keeps accounts for good \
             belongs in safety.protected",
        ),
        (
            entry("erin@example.com", " "),
            "is empty: say why the account is kept (a ticket, who approved it); reports and the \
             ledger show it",
        ),
        (
            format!(
                "{}\n{}",
                entry("dana@example.com", "x"),
                entry("Dana@example.com", "y")
            ),
            "is safety.exceptions[0]'s too: one exception per account (change the earlier \
             entry's until and reason)",
        ),
    ] {
        let error = load(&toml, &[]).unwrap_err();
        assert!(error.contains(says), "{says}\n{error}");
    }
}

/// An exception is no protection for good: it keeps every account of the person
/// it names until its end, then they are managed like any other. `link` refused
/// to tie an excepted person (Dana, left) to her own account under another
/// userName, saying she "is protected (safety.protected / protected_groups)",
/// which no list says: the person the exception was for could not be linked
/// to the account it was meant to keep, nor an excepted account to its person.
#[test]
fn link_ties_an_excepted_person_or_account_like_any_other() {
    use crate::qa_cli::{account, first_plan_stored, person};
    let dir = tempfile::tempdir().unwrap();
    let mut dana = person("00u2", "dana@example.com", "dana@example.com");
    dana.status = seatwarden::model::IdentityStatus::Suspended;
    let config_path = first_plan_stored(
        dir.path(),
        vec![dana, person("00u3", "erin@example.com", "erin@example.com")],
        vec![
            account("w8", "d.lee@example.com", "d.lee@corp.example.com"),
            account("w9", "erin.contractor@example.com", "ec@corp.example.com"),
        ],
    );
    let until = (Utc::now() + Duration::days(20)).format("%Y-%m-%d");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        format!(
            "{text}\n[[safety.exceptions]]\nuser_name = \"dana@example.com\"\nuntil = {until}\n\
             reason = \"handover\"\n\n\
             [[safety.exceptions]]\nuser_name = \"erin.contractor@example.com\"\n\
             until = {until}\nreason = \"project end\"\n"
        ),
    )
    .unwrap();
    let config = Config::load_with_env(&config_path, Some(Default::default())).unwrap();
    let mut store = Store::open(&config.state.path).unwrap();
    for (identity, account) in [("00u2", "w8"), ("00u3", "w9")] {
        let linked = seatwarden::approval::link_checked(
            &config,
            &mut store,
            identity,
            account,
            false,
            Utc::now(),
        );
        assert!(linked.is_ok(), "{identity} → {account}: {linked:?}");
    }
    assert_eq!(store.links().unwrap().len(), 2);
}

/// `[[safety.exceptions]]` tables come from the file only, as
/// `[[policy.mapping]]` do: a `SEATWARDEN__SAFETY__EXCEPTIONS…` variable is
/// refused naming itself, not blamed on the file.
#[test]
fn an_exceptions_variable_is_refused_naming_itself() {
    for (name, value) in [
        ("SEATWARDEN__SAFETY__EXCEPTIONS", "dana@example.com"),
        (
            "SEATWARDEN__SAFETY__EXCEPTIONS__0__USER_NAME",
            "dana@example.com",
        ),
    ] {
        let error = load("", &[(name, value)]).unwrap_err();
        assert!(
            error.contains(&format!("environment variable {name}")),
            "{error}"
        );
        assert!(error.contains("read from the file only"), "{error}");
    }
}

/// A leaver's deactivation held by the threshold; HR then asks to keep them and
/// an exception names their directory userName, which their account does not
/// have. `approve` of the run must leave the account alone (as the reconcile
/// and the sweep do), saying it is kept by an exception: it re-checked only the
/// account's own userName and deactivated it. Named by the account's userName,
/// the refusal said "is protected", which no list says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_leaves_alone_an_account_an_exception_keeps() {
    use seatwarden::run::{self, Mode};

    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (person, user_name) =
        suspend_someone(dir.path(), &sandbox, Some("renamed.leaver@example.com"));
    config.safety.max_deprovisions = 0;
    let held = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    let deactivate = held_deactivation(&held, &person);
    let account_name = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.external_id.as_deref() == Some(person.as_str()))
        .unwrap()
        .user_name;
    assert_ne!(account_name, user_name);

    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let now = Utc::now();
    for name in [user_name.as_str(), account_name.as_str()] {
        except(&mut config, name, now + Duration::days(3), "legal hold");
        let refused = refusal_of_approving(&config, &client, held.run_id, deactivate).await;
        assert!(active(&sandbox, &person), "{name}");
        assert!(
            refused.contains("exception (safety.exceptions)")
                && refused.contains("legal hold")
                && !refused.contains("is protected"),
            "{name}: {refused:?}"
        );
    }
    sandbox.shutdown().await;
}

/// An exception is a decision already made: while it keeps a leaver's account,
/// the digest did not call the put-off deprovision a "held deprovision" and the
/// whole digest "Needs attention" every day until the end, while the run's own
/// report said "in sync; 1 account kept active by an exception". It is listed as
/// put off by an exception, and the digest says drift, not an alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_does_not_call_an_exception_a_hold_needing_attention() {
    use seatwarden::report::State;

    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (_, user_name) = suspend_someone(dir.path(), &sandbox, None);
    let now = Utc::now();
    except(&mut config, &user_name, now + Duration::days(5), "handover");
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let kept = crate::fixtures::reconcile_at(&config, now).await;
    assert_eq!(kept.report.safety.excepted.len(), 1);
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let swept = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &client,
        &store,
        now,
        Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(swept.excepted, 1, "{swept:?}");

    let digest = {
        let store = store.lock().unwrap();
        let deprovisions = seatwarden::daemon::notify::digest_deprovisions(&store).unwrap();
        seatwarden::report::digest::build_from_store_after(
            &store,
            "acme",
            chrono_tz::UTC,
            now + Duration::minutes(5),
            std::time::Duration::from_secs(24 * 3600),
            None,
            &deprovisions,
            "seatwarden",
        )
        .unwrap()
    };
    assert_ne!(digest.state, State::NeedsAttention, "{}", digest.headline);
    assert!(
        !digest.headline.contains("held deprovision")
            && digest.headline.contains("put off by an exception"),
        "{}",
        digest.headline
    );
    sandbox.shutdown().await;
}

/// `unlink`'s preview of an account and a person an exception keeps: it said
/// "protected by its own userName … (safety.protected / protected_groups): left
/// alone, as before" and "protected (safety.protected / protected_groups)",
/// which no list says and which is not for good. It names the exception.
#[test]
fn unlink_previews_an_excepted_account_and_person_as_excepted() {
    use crate::qa_cli::{account, first_plan_stored, person};
    let dir = tempfile::tempdir().unwrap();
    let mut dana = person("00u2", "dana@example.com", "dana@example.com");
    dana.status = seatwarden::model::IdentityStatus::Suspended;
    let config_path = first_plan_stored(
        dir.path(),
        vec![dana],
        vec![account("w2", "d.lee@example.com", "d.lee@corp.example.com")],
    );
    let until = (Utc::now() + Duration::days(20)).format("%Y-%m-%d");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        format!(
            "{text}\n[[safety.exceptions]]\nuser_name = \"dana@example.com\"\nuntil = {until}\n\
             reason = \"handover\"\n\n\
             [[safety.exceptions]]\nuser_name = \"d.lee@example.com\"\nuntil = {until}\n\
             reason = \"handover\"\n"
        ),
    )
    .unwrap();
    let config = Config::load_with_env(&config_path, Some(Default::default())).unwrap();
    let mut store = Store::open(&config.state.path).unwrap();
    let now = Utc::now();
    seatwarden::approval::link_checked(&config, &mut store, "00u2", "w2", false, now).unwrap();
    let link = store.links().unwrap().remove(0);
    let after = seatwarden::explain::after_unlink(&config, &store, &link, now).unwrap();
    for said in [&after.account, &after.person] {
        assert!(
            !said.contains("protected") && said.contains("exception (safety.exceptions)"),
            "{said}"
        );
        assert!(said.contains("handover"), "{said}");
    }
}

/// The reconcile side of a person excepted by a directory userName their
/// account does not have: left alone and listed under EXCEPTIONS with the
/// account's own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_keeps_a_person_excepted_by_directory_user_name() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (person, user_name) =
        suspend_someone(dir.path(), &sandbox, Some("renamed.leaver@example.com"));
    let now = Utc::now();
    except(&mut config, &user_name, now + Duration::days(2), "handover");
    let kept = crate::fixtures::reconcile_at(&config, now).await;
    assert!(active(&sandbox, &person));
    let listed = &kept.report.safety.excepted;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].identity_id.as_deref(), Some(person.as_str()));
    assert_ne!(listed[0].user_name, user_name, "the account's own name");
    sandbox.shutdown().await;
}

/// An episode already escalated (overdue: its deactivation held by the guard)
/// when an exception puts it off: once the exception has ended and the
/// deprovision is overdue again, it is escalated again (log, metric, alert).
/// The old escalation stayed on the episode, so the second overdue passed
/// without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_episode_put_off_is_escalated_again_when_overdue_after_the_end() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (person, user_name) = suspend_someone(dir.path(), &sandbox, None);
    config.safety.max_deprovisions = 0;
    let now = later_than_the_clock();
    let sla = Duration::hours(1);
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    seatwarden::sweep::sweep(&config, &config.directory(), &client, &store, now, sla)
        .await
        .unwrap();
    let overdue = now + Duration::hours(2);
    let escalated = seatwarden::sweep::enforce(&config, &client, &store, overdue)
        .await
        .unwrap();
    assert_eq!(escalated.escalated.len(), 1, "{escalated:?}");

    let until = overdue + Duration::days(1);
    except(&mut config, &user_name, until, "legal hold");
    let put_off =
        seatwarden::sweep::enforce(&config, &client, &store, overdue + Duration::minutes(15))
            .await
            .unwrap();
    assert_eq!(put_off.excepted, 1, "{put_off:?}");
    assert!(active(&sandbox, &person));

    // Ended; the guard still holds the deactivation, so it goes overdue again.
    config.safety.exceptions.clear();
    let mut again = Vec::new();
    for minutes in [1, 30, 61, 62] {
        let pass = seatwarden::sweep::enforce(
            &config,
            &client,
            &store,
            until + Duration::minutes(minutes),
        )
        .await
        .unwrap();
        again.extend(pass.escalated);
    }
    assert_eq!(again.len(), 1, "{:?}", episode(&store, &person));
    sandbox.shutdown().await;
}

/// The seq of the held deactivation of `person`'s account in `run`'s plan.
pub(crate) fn held_deactivation(run: &seatwarden::run::RunOutcome, person: &str) -> u32 {
    let deactivate = run
        .plan
        .actions
        .iter()
        .find(|a| {
            a.identity_id.as_deref() == Some(person)
                && matches!(a.kind, seatwarden::model::ActionKind::Deactivate { .. })
        })
        .unwrap_or_else(|| panic!("{:?}", run.plan.actions));
    assert!(deactivate.held.is_some(), "{deactivate:?}");
    deactivate.seq
}

/// Why `approve` of all of `run` now refused its action `seq` (it must).
pub(crate) async fn refusal_of_approving(
    config: &Config,
    client: &ScimClient,
    run: seatwarden::store::RunId,
    seq: u32,
) -> String {
    let approval = seatwarden::approval::approve(
        config,
        client,
        Store::open(&config.state.path).unwrap(),
        run,
        &seatwarden::approval::Only::All,
        Utc::now(),
    )
    .await
    .unwrap();
    approval
        .refused
        .iter()
        .find(|(refused, _)| *refused == seq)
        .unwrap_or_else(|| panic!("{approval:?}"))
        .1
        .clone()
}
