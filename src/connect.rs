//! `check-config --connect`: a live test of each configured connection, after
//! the offline checks. For each side, the first requests a run (or a delivery)
//! would make, cheap and read-only, through the connectors' own request paths
//! (`probe`), so an error reads as a run's would: the endpoint, the permission
//! missing, the provider's reference.
//!
//! - directory: [`crate::directory::Directory::probe`] (a token and one small
//!   page of users, groups and the app's assignments; an LDAP bind and two
//!   searches of one entry; a file was read whole already);
//! - workspace: [`crate::workspace::ScimClient::probe`] (discovery, one page of
//!   `/Users` and of `/Groups`);
//! - mail, with `[report.email]`: [`crate::mail::Mailer::probe`] (connect, TLS,
//!   AUTH, QUIT: no message).
//!
//! Every side is tried, concurrently, whatever another's outcome, so one run
//! shows every problem; each is bounded by its own configured timeouts and
//! retries. Nothing is written anywhere: no workspace write, no message, and no
//! state database is opened.

use crate::config::Config;

/// One side's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `directory`, `workspace` or `mail`.
    pub side: &'static str,
    /// What was asked: `okta https://acme.okta.com`, the SCIM base URL, the relay.
    pub target: String,
    /// What each request proved, or the error that stopped the side.
    pub outcome: Result<Vec<String>, String>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }

    /// One line: side, `ok` or `FAILED`, target, and what was proven or the
    /// error, made printable (it can quote a provider's answer).
    pub fn line(&self) -> String {
        let (verdict, detail) = match &self.outcome {
            Ok(proven) => ("ok", proven.join(", ")),
            Err(error) => ("FAILED", error.clone()),
        };
        crate::report::printable_field(&format!(
            "{:<10} {verdict:<6} {}: {detail}",
            self.side, self.target
        ))
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

async fn directory(config: &Config) -> Check {
    let source = config.directory();
    let outcome = source.probe().await.map_err(|e| e.to_string());
    Check {
        side: "directory",
        target: source.describe(),
        outcome,
    }
}

async fn workspace(config: &Config) -> Check {
    let target = config.workspace.url.trim_end_matches('/').to_owned();
    let outcome = async {
        let client =
            crate::workspace::ScimClient::new(config.scim_settings().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        client.probe().await.map_err(|e| match e.what_to_check() {
            // A 401 or 403 is the token's: say so, as a run does.
            Some(check) => format!("{e}; {check}"),
            None => e.to_string(),
        })
    }
    .await;
    Check {
        side: "workspace",
        target,
        outcome,
    }
}

async fn mail(config: &Config) -> Option<Check> {
    let email = config.report.email.as_ref()?;
    let target = email.smtp_url.clone();
    let outcome = async {
        let Some(settings) = config.mail_settings().map_err(|e| e.to_string())? else {
            return Err("no [report.email]".to_owned());
        };
        let mailer = crate::mail::Mailer::new(&settings).map_err(|e| e.to_string())?;
        mailer
            .probe()
            .await
            .map(|proven| vec![proven])
            .map_err(|e| e.to_string())
    }
    .await;
    Some(Check {
        side: "mail",
        target,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_line_names_the_side_the_verdict_and_what_was_proven_or_the_error() {
        let ok = Check {
            side: "workspace",
            target: "https://w.example.com/scim/v2".into(),
            outcome: Ok(vec!["GET /Users (3 accounts)".into(), "GET /Groups".into()]),
        };
        assert!(ok.passed());
        assert_eq!(
            ok.line(),
            "workspace  ok     https://w.example.com/scim/v2: GET /Users (3 accounts), GET /Groups"
        );
        let failed = Check {
            side: "mail",
            target: "smtp://relay".into(),
            outcome: Err("535 refused\x1b[2J".into()),
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
