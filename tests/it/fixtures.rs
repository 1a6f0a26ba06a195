//! Shared test setup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;

use seatwarden::config::Config;
use seatwarden::synth::{self, Synth};

/// Writes the synthetic directory and a configuration mapping its groups (scope
/// "Taskade Users", default Viewer, thresholds out of the way) for the workspace
/// at `url`, and loads it.
pub fn synth_config(
    dir: &Path,
    data: &Synth,
    url: &str,
    token: &str,
    max_concurrency: usize,
) -> Config {
    std::fs::write(
        dir.join("directory.json"),
        synth::directory_json(&data.directory),
    )
    .unwrap();
    synth_config_with_directory(
        dir,
        data,
        url,
        token,
        max_concurrency,
        "kind = \"file\"\npath = \"directory.json\"\n",
    )
}

/// [`synth_config`] with the `[directory]` section's body given (a connector).
pub fn synth_config_with_directory(
    dir: &Path,
    data: &Synth,
    url: &str,
    token: &str,
    max_concurrency: usize,
    directory: &str,
) -> Config {
    let mut toml = format!(
        "[directory]\n{directory}\n\
         [workspace]\nurl = \"{url}\"\ntoken = \"{token}\"\nmax_concurrency = {max_concurrency}\n\
         requests_per_second = 10000\n\n\
         [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
         [safety]\nmax_deprovisions = 1000\nmax_deprovision_percent = 100\nmax_deprovisions_per_day = 100000\n\
         max_membership_removals_per_day = 100000\nmax_role_downgrades = 100000\nmax_role_downgrades_per_day = 100000\n\
         max_membership_removals = 100000\nsettle = \"0s\"\n"
    );
    for (group, role) in &data.roles {
        toml.push_str(&format!(
            "\n[[policy.mapping]]\ngroup = \"{group}\"\nworkspace_group = \"{group}\"\nrole = \"{role}\"\n"
        ));
    }
    std::fs::write(dir.join("seatwarden.toml"), toml).unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(HashMap::new())).unwrap()
}

/// A reconcile that did something and left nothing failed, held or unverified.
pub fn assert_clean_reconcile(report: &seatwarden::report::Report) {
    let summary = &report.summary;
    assert_eq!(
        summary.actions_failed,
        0,
        "{:#?}",
        report
            .actions
            .iter()
            .filter(|a| a.error.is_some())
            .collect::<Vec<_>>()
    );
    assert_eq!(summary.actions_held, 0);
    assert!(summary.actions_applied > 0);
    assert!(summary.converged);
}

/// A reconcile that must end clean, then a plan that must be empty: the run
/// converged. Returns the reconcile's outcome.
pub async fn assert_converges(config: &seatwarden::config::Config) -> seatwarden::run::RunOutcome {
    let open = || seatwarden::store::Store::open(&config.state.path).unwrap();
    let first = seatwarden::run::execute(config, open(), seatwarden::run::Mode::Reconcile)
        .await
        .unwrap();
    assert_clean_reconcile(&first.report);
    let second = seatwarden::run::execute(config, open(), seatwarden::run::Mode::Plan)
        .await
        .unwrap();
    assert!(second.plan.is_empty(), "{:#?}", second.plan.actions);
    first
}

/// Every leaver of `data` who has an account in `workspace` finds it inactive;
/// how many had one.
pub fn assert_leavers_inactive(
    data: &Synth,
    workspace: &seatwarden::model::WorkspaceSnapshot,
) -> usize {
    let mut leavers = 0;
    for identity in data
        .directory
        .identities
        .iter()
        .filter(|i| i.status != seatwarden::model::IdentityStatus::Active)
    {
        if let Some(account) = workspace
            .accounts
            .iter()
            .find(|a| a.user_name.eq_ignore_ascii_case(&identity.user_name))
        {
            assert!(!account.active, "{} should be inactive", identity.user_name);
            leavers += 1;
        }
    }
    leavers
}
