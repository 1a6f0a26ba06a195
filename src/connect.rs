//! `check-config --connect`: a live test of each configured connection, after
//! the offline checks. For each side, the first requests a run (or a delivery)
//! would make, cheap and read-only, through the connectors' own request paths
//! (`probe`), so an error reads as a run's would: the endpoint, the permission
//! missing, the provider's reference.
//!
//! - directory: [`crate::directory::Directory::probe`] (a token and one small
//!   page of users, groups and the app's assignments; an LDAP bind and two
//!   searches of one entry, with the attributes a run asks for; a SCIM
//!   directory's discovery and one page of Users and of Groups; a file was
//!   read whole already), each page read with the run's own parsing, so an
//!   object a run refuses (an Okta user without `status`, a Graph user without
//!   `accountEnabled`, an Active Directory user without `accountExpires`, a
//!   SCIM User with a blank `userName`) fails the check with the run's error;
//!   then every group's name ([`crate::directory::Directory::group_names`]):
//!   one that only looks like a configured group is a warning, one declared
//!   another group (`safety.distinct_groups`) a note;
//! - workspace: [`crate::workspace::ScimClient::probe`] (discovery, or why a
//!   run would go on without it; one page of `/Users` and of `/Groups`, each
//!   object read as a run reads it);
//! - mail, with `[report.email]`: [`crate::mail::Mailer::probe`] (connect, TLS,
//!   AUTH, QUIT: no message).
//!
//! Every side is tried, concurrently, whatever another's outcome, so one run
//! shows every problem. A probe is meant to answer at once: each request is
//! sent once, never retried, and bounded by [`PROBE_TIMEOUT`] when the configured
//! timeout is longer (against a workspace that does not answer, the configured
//! retries made the check take 20 s and more, a blackholed one minutes). What
//! the daemon would do instead is said ([`attempts`], and on each line a
//! transient failure fails). A 429, or a 503 with `Retry-After`, is told apart
//! as `THROTTLED`: the endpoint answered (URL, TLS, and the credential when the
//! provider checks it first), but what comes after it was not checked. Nothing
//! is written anywhere: no workspace write, no message, and no state database
//! is opened.
//!
//! A SCIM directory's listings of every User and every Group (minutes for
//! 100,000 people) count their pages on stderr when it is a terminal, on the
//! line a run's workspace read uses ([`crate::run::ReadProgress`]); elsewhere
//! the log says when each read starts and ends.

use std::fmt::Display;
use std::time::Duration;

use crate::config::Config;
use crate::retry::{RetryPolicy, Transient};

/// The longest one request (or the SMTP relay's connect) of a probe may take:
/// the configured timeout, when shorter.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One side's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `directory`, `workspace` or `mail`.
    pub side: &'static str,
    /// What was asked: `okta https://acme.okta.com`, the SCIM base URL, the relay.
    pub target: String,
    pub outcome: Outcome,
    /// What passed but a run would hold or report: a directory group whose name
    /// differs from a configured one only in what does not show.
    pub warnings: Vec<String>,
    /// What the configuration settled and a run acts on as said: such a group
    /// declared another group (`safety.distinct_groups`).
    pub notes: Vec<String>,
}

/// What a side's probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// What each request proved.
    Passed(Vec<String>),
    /// The endpoint answered 429 (or 503 with `Retry-After`): reachable, but
    /// the rest was not checked.
    Throttled(String),
    /// The error that stopped the side.
    Failed(String),
}

impl Check {
    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Passed(_))
    }

    /// One line: side, `ok`, `THROTTLED` or `FAILED`, target, and what was
    /// proven or the error, made printable (it can quote a provider's answer).
    pub fn line(&self) -> String {
        let (verdict, detail) = match &self.outcome {
            Outcome::Passed(proven) => ("ok", proven.join(", ")),
            Outcome::Throttled(error) => ("THROTTLED", error.clone()),
            Outcome::Failed(error) => ("FAILED", error.clone()),
        };
        crate::report::printable_field(&format!(
            "{:<10} {verdict:<6} {}: {detail}",
            self.side, self.target
        ))
    }
}

/// How the probes try, against how the daemon does, for the header of the
/// output: `each request once, …, no retries: the daemon retries …`.
pub fn attempts(config: &Config) -> String {
    let mut retried = vec![format!(
        "a workspace request {}",
        times(config.workspace.retries)
    )];
    if !matches!(
        config.directory,
        crate::config::DirectoryConfig::File { .. }
    ) {
        retried.push(format!(
            "a directory request {}",
            times(RetryPolicy::default().max_retries)
        ));
    }
    if let Ok(Some(mail)) = config.mail_settings() {
        retried.push(format!(
            "a delivery {}, then from the outbox",
            times(mail.retry.max_retries)
        ));
    }
    format!(
        "each request once, within {} s, no retries: the daemon retries {}",
        PROBE_TIMEOUT.as_secs(),
        retried.join(", ")
    )
}

/// How many times the daemon retries, said as a person would: `once`, `3 times`.
fn times(n: usize) -> String {
    match n {
        1 => "once".to_owned(),
        n => format!("{n} times"),
    }
}

/// Tests every configured connection; the checks in order directory,
/// workspace, mail (absent without `[report.email]`).
pub async fn check(config: &Config) -> Vec<Check> {
    let (directory, workspace, mail) =
        futures::join!(directory(config), workspace(config), mail(config));
    [Some(directory), Some(workspace), mail]
        .into_iter()
        .flatten()
        .collect()
}

/// The outcome of a probe that failed with `error` (said as `detail`):
/// throttled, or failed, with a note when a retry might have passed it.
fn failure<E: Transient + Display>(
    error: &E,
    status: Option<u16>,
    detail: String,
    retried: &str,
) -> Outcome {
    let asked = error.retry_after();
    if status == Some(429) || (status == Some(503) && asked.is_some()) {
        let again = match asked {
            Some(wait) => format!("run it again in {} s", wait.as_secs().max(1)),
            None => "run it again later".to_owned(),
        };
        return Outcome::Throttled(format!(
            "reachable but throttled: {detail}; what comes after it was not checked: {again} \
             (the daemon waits and retries)"
        ));
    }
    if error.is_transient() {
        return Outcome::Failed(format!(
            "{detail} (tried once, no retries; the daemon retries {retried})"
        ));
    }
    Outcome::Failed(detail)
}

async fn directory(config: &Config) -> Check {
    let source = config.probe_directory(PROBE_TIMEOUT);
    let failed = |e: crate::directory::DirectoryError| {
        failure(
            &e,
            e.status(),
            e.to_string(),
            &times(RetryPolicy::default().max_retries),
        )
    };
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    // The check's long reads (a SCIM directory's every User, every group's name)
    // take minutes on a large directory, and its lines are printed only once
    // every side is done: said on stderr as a run's directory read says it
    // ([`crate::run::read_directory`]), with a SCIM directory's pages counted
    // on a terminal as a run's workspace listing counts them, so the command
    // does not look hung.
    let started = std::time::Instant::now();
    let elapsed = || format!("{:.1}s", started.elapsed().as_secs_f64());
    let listing = crate::run::ReadProgress::of_directory_on_terminal();
    let page = |p| listing.page(p);
    tracing::info!(source = %source.describe(), "checking the directory");
    let probed = source.probe(&page).await;
    // Ended before a log line, which would be written after the count.
    listing.done();
    let outcome = match probed {
        Ok(proven) => {
            tracing::info!(
                source = %source.describe(),
                elapsed = %elapsed(),
                "directory probed; listing every group's name"
            );
            // What the probe proved stands: a listing that fails here is said,
            // not made the check's failure (a run would fail on it, and say so).
            let listed = source.group_names(&page).await;
            listing.done();
            if let Ok(Some(listed)) = &listed {
                tracing::info!(
                    groups = listed.names.len(),
                    source = %source.describe(),
                    elapsed = %elapsed(),
                    "directory groups listed"
                );
            }
            match listed {
                Ok(Some(listed)) => {
                    warnings = look_alike_warnings(config, &listed.names);
                    notes = distinct_notes(config, &listed.names);
                    if !listed.whole {
                        // Else "no warning" would read as "no look-alike".
                        warnings.push(format!(
                            "the listing of the directory's groups ended short of the \
                             totalResults it announced ({} listed): the groups not listed \
                             were not looked at for names that differ from the \
                             configuration's only in characters that do not show; run the \
                             check again, or check the provider's paging",
                            listed.names.len()
                        ));
                    }
                }
                Ok(None) => {}
                Err(e) => warnings.push(format!(
                    "the groups could not be listed to look for names that differ from the \
                     configuration's only in characters that do not show: {e}"
                )),
            }
            Outcome::Passed(proven)
        }
        Err(e) => failed(e),
    };
    Check {
        side: "directory",
        target: source.describe(),
        outcome,
        warnings,
        notes,
    }
}

/// What `find` says of each directory group of `names` (composed as a run
/// composes them): every configured group it looks like, once per directory
/// group, in the groups' order; groups it finds nothing for are left out.
fn found_once(
    names: &[String],
    find: impl Fn(&str) -> Vec<crate::names::LookAlike>,
) -> Vec<Vec<crate::names::LookAlike>> {
    let mut found: Vec<Vec<crate::names::LookAlike>> = names
        .iter()
        .map(|name| find(&crate::model::compose_name(name)))
        .filter(|look_alikes| !look_alikes.is_empty())
        .collect();
    let group = |look_alikes: &Vec<crate::names::LookAlike>| {
        look_alikes
            .first()
            .map(|l| l.directory_group.clone())
            .unwrap_or_default()
    };
    found.sort_by_key(group);
    found.dedup_by(|a, b| group(a) == group(b));
    found
}

/// The directory group and what differs, of `look_alikes` (all of one group).
fn group_and_differs(look_alikes: &[crate::names::LookAlike]) -> (&str, &str) {
    look_alikes.first().map_or(("", ""), |l| {
        (l.directory_group.as_str(), l.differs.as_str())
    })
}

/// One note per directory group of `names` that would be a look-alike of
/// configured groups had `safety.distinct_groups` not declared it another
/// group, naming every one of them: said, so that whoever reads the check sees
/// which look-alikes are settled.
fn distinct_notes(config: &Config, names: &[String]) -> Vec<String> {
    let configured = crate::safety::configured_groups(config);
    found_once(names, |name| configured.declared_distinct(name))
        .into_iter()
        .map(|look_alikes| {
            let (group, differs) = group_and_differs(&look_alikes);
            format!(
                "directory group {group:?} differs from {} only in {differs}, and is declared \
                 another group (safety.distinct_groups): reconciled as any unrelated group, \
                 nothing held for it",
                crate::names::configured_of(&look_alikes),
            )
        })
        .collect()
}

/// One warning per directory group of `names` whose name differs from groups
/// the configuration names only in what does not show: the directory group,
/// every configured group it looks like with its keys (a name configured as a
/// scope group and as a mapping's is both, and a run holds what each would
/// give), and what differs ([`crate::names`]).
fn look_alike_warnings(config: &Config, names: &[String]) -> Vec<String> {
    let configured = crate::safety::configured_groups(config);
    found_once(names, |name| configured.look_alikes(name))
        .into_iter()
        .map(|look_alikes| {
            let (group, differs) = group_and_differs(&look_alikes);
            let rename_to = look_alikes.first().map_or("", |l| l.configured.as_str());
            let keys: Vec<&str> = look_alikes.iter().map(|l| l.key.as_str()).collect();
            let them = if look_alikes.iter().all(|l| l.configured == rename_to) {
                "it"
            } else {
                "them"
            };
            format!(
                "directory group {group:?} is not {} but differs from {them} only in {differs}: \
                 names are compared exactly, so a run holds what it would take from its \
                 members (look_alike_group); rename it in the directory to {rename_to:?}, or \
                 correct {}",
                crate::names::configured_of(&look_alikes),
                keys.join(", ")
            )
        })
        .collect()
}

async fn workspace(config: &Config) -> Check {
    let target = config.workspace.url.trim_end_matches('/').to_owned();
    let outcome = async {
        let mut settings = config
            .scim_settings()
            .map_err(|e| Outcome::Failed(e.to_string()))?;
        settings.retry.max_retries = 0;
        settings.timeout = settings.timeout.min(PROBE_TIMEOUT);
        let client = crate::workspace::ScimClient::new(settings)
            .map_err(|e| Outcome::Failed(e.to_string()))?;
        client.probe().await.map_err(|e| {
            let detail = match e.what_to_check() {
                // A 401 or 403 is the token's: say so, as a run does.
                Some(check) => format!("{e}; {check}"),
                None => e.to_string(),
            };
            let retried = times(config.workspace.retries);
            failure(&e, e.status(), detail, &retried)
        })
    }
    .await;
    Check {
        side: "workspace",
        target,
        outcome: outcome.map_or_else(|failed| failed, Outcome::Passed),
        warnings: Vec::new(),
        notes: Vec::new(),
    }
}

async fn mail(config: &Config) -> Option<Check> {
    let email = config.report.email.as_ref()?;
    let target = email.smtp_url.clone();
    let outcome = async {
        let Some(mut settings) = config
            .mail_settings()
            .map_err(|e| Outcome::Failed(e.to_string()))?
        else {
            return Err(Outcome::Failed("no [report.email]".to_owned()));
        };
        // The probe's session is one attempt already (Mailer::probe).
        settings.timeout = settings.timeout.min(PROBE_TIMEOUT);
        let retried = format!(
            "a delivery {}, then from the outbox",
            times(settings.retry.max_retries)
        );
        let mailer =
            crate::mail::Mailer::new(&settings).map_err(|e| Outcome::Failed(e.to_string()))?;
        mailer
            .probe()
            .await
            .map(|proven| vec![proven])
            .map_err(|e| failure(&e, None, e.to_string(), &retried))
    }
    .await;
    Some(Check {
        side: "mail",
        target,
        outcome: outcome.map_or_else(|failed| failed, Outcome::Passed),
        warnings: Vec::new(),
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// An error as a provider's answer carries it.
    struct Answered(Option<Duration>, bool);
    impl Display for Answered {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("answered")
        }
    }
    impl Transient for Answered {
        fn is_transient(&self) -> bool {
            self.1
        }
        fn retry_after(&self) -> Option<Duration> {
            self.0
        }
    }

    /// 429 is throttling with or without `Retry-After`; 503 only with it (a
    /// 503 alone is an outage: FAILED, tried once); a 401 is failed without a
    /// word about retries, which would not help.
    #[test]
    fn throttling_is_told_apart_from_an_outage_and_a_refusal() {
        let wait = Some(Duration::from_secs(7));
        let outcome =
            |e: Answered, status| failure(&e, Some(status), "GET /Users".into(), "6 times");
        for (error, status, again) in [
            (Answered(wait, true), 429, "run it again in 7 s"),
            (Answered(None, true), 429, "run it again later"),
            (Answered(wait, true), 503, "run it again in 7 s"),
        ] {
            let Outcome::Throttled(text) = outcome(error, status) else {
                panic!("{status} not throttled");
            };
            assert!(
                text.starts_with("reachable but throttled: GET /Users"),
                "{text}"
            );
            assert!(text.contains(again), "{text}");
        }
        assert_eq!(
            outcome(Answered(None, true), 503),
            Outcome::Failed(
                "GET /Users (tried once, no retries; the daemon retries 6 times)".into()
            )
        );
        assert_eq!(
            outcome(Answered(None, false), 401),
            Outcome::Failed("GET /Users".into())
        );
    }

    #[test]
    fn a_line_names_the_side_the_verdict_and_what_was_proven_or_the_error() {
        let ok = Check {
            side: "workspace",
            target: "https://w.example.com/scim/v2".into(),
            outcome: Outcome::Passed(vec!["GET /Users (3 accounts)".into(), "GET /Groups".into()]),
            warnings: Vec::new(),
            notes: Vec::new(),
        };
        assert!(ok.passed());
        assert_eq!(
            ok.line(),
            "workspace  ok     https://w.example.com/scim/v2: GET /Users (3 accounts), GET /Groups"
        );
        let failed = Check {
            side: "mail",
            target: "smtp://relay".into(),
            outcome: Outcome::Failed("535 refused\x1b[2J".into()),
            warnings: Vec::new(),
            notes: Vec::new(),
        };
        assert!(!failed.passed());
        let line = failed.line();
        assert!(
            line.starts_with("mail       FAILED smtp://relay: 535 refused"),
            "{line}"
        );
        assert!(!line.contains('\x1b'), "{line}");
    }
}
