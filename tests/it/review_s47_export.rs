//! Session 47: the access-review export as an IT/security engineer running an
//! access review meets it: written to a file of its own (`--output`), and an
//! account seatwarden deleted or deactivated after the newest snapshot was read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Utc};
use seatwarden::config::Config;
use seatwarden::model::{
    Account, Action, ActionKind, DirectorySnapshot, DriftKind, Identity, IdentityStatus,
    LinkMethod, NewLink, Plan, WorkspaceSnapshot,
};
use seatwarden::store::{RunKind, RunStatus, Store};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn config(dir: &std::path::Path) -> Config {
    std::fs::write(dir.join("directory.json"), "{\"users\": []}").unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
         [workspace]\nurl = \"https://example.invalid/scim/v2\"\ntoken = \"t\"\n",
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default())).unwrap()
}

fn person(id: &str, status: IdentityStatus) -> Identity {
    Identity {
        id: id.into(),
        user_name: format!("{id}@example.com"),
        email: None,
        given_name: None,
        family_name: None,
        display_name: None,
        status,
        department: None,
        groups: vec![],
    }
}

fn account(id: &str, user: &str, active: bool) -> Account {
    Account {
        id: id.into(),
        user_name: format!("{user}@example.com"),
        external_id: Some(user.into()),
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        active,
        roles: vec!["Viewer".into()],
    }
}

fn action(seq: u32, kind: ActionKind, identity: &str) -> Action {
    Action {
        seq,
        kind,
        reason: DriftKind::StaleAccess,
        subject: format!("{identity}@example.com"),
        identity_id: Some(identity.into()),
        detail: String::new(),
        held: None,
    }
}

/// A plan run read the workspace at 08:00: `gone`'s account a1 deactivated,
/// `left`'s a2 active, `stays`' a3 active. At 09:30 a later run (no snapshots
/// of its own: the daemon's sweep, an approval) deleted a1, its retention
/// passed, and deactivated a2; the delete took a1's link with it, as it does.
/// The export must not show a1 as an account that still exists (unlinked, so
/// matched again or called orphaned), and says of both what seatwarden did
/// since the snapshot, and when.
#[test]
fn an_account_seatwarden_deleted_or_deactivated_since_the_snapshot_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let t0 = at("2026-11-29T08:00:00Z");
    let t1 = at("2026-11-29T09:30:00Z");
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Plan, t0).unwrap();
    store
        .save_directory_snapshot(
            run,
            &DirectorySnapshot {
                identities: vec![
                    person("gone", IdentityStatus::Deprovisioned),
                    person("left", IdentityStatus::Active),
                    person("stays", IdentityStatus::Active),
                ],
                complete: true,
            },
        )
        .unwrap();
    store
        .save_workspace_snapshot(
            run,
            &WorkspaceSnapshot {
                accounts: vec![
                    account("a1", "gone", false),
                    account("a2", "left", true),
                    account("a3", "stays", true),
                ],
                groups: vec![],
            },
        )
        .unwrap();
    store
        .finish_run(run, t0, RunStatus::Succeeded, None)
        .unwrap();
    let link = |identity: &str, account: &str| NewLink {
        identity_id: identity.into(),
        account_id: account.into(),
        method: LinkMethod::ExternalId,
    };
    store
        .upsert_links(
            &[link("gone", "a1"), link("left", "a2"), link("stays", "a3")],
            t0,
        )
        .unwrap();

    let later = store.begin_run(RunKind::Sweep, t1).unwrap();
    let plan = Plan {
        actions: vec![
            action(
                0,
                ActionKind::Delete {
                    account_id: "a1".into(),
                    deactivated_since: Some(t0),
                    frees_user_name: None,
                },
                "gone",
            ),
            action(
                1,
                ActionKind::Deactivate {
                    account_id: "a2".into(),
                },
                "left",
            ),
        ],
        ..Plan::default()
    };
    store.save_plan(later, &plan, t1).unwrap();
    for seq in [0, 1] {
        store.mark_in_flight(later, seq, t1).unwrap();
        store.mark_applied(later, seq, t1, None).unwrap();
    }
    store.remove_links_to_accounts(&["a1".into()]).unwrap();
    store
        .finish_run(later, t1, RunStatus::Succeeded, None)
        .unwrap();

    let export = seatwarden::export::access(&store, &config).unwrap();
    let row = |id: &str| {
        export
            .accounts
            .iter()
            .find(|r| r.account_id == id)
            .unwrap_or_else(|| panic!("no row for {id}: {export:#?}"))
    };
    let deleted = row("a1");
    assert!(!deleted.active);
    assert_eq!(deleted.identity_id.as_deref(), Some("gone"), "{deleted:#?}");
    assert_eq!(
        deleted.justification,
        format!(
            "deleted by seatwarden (run {later}) after run {run} read the workspace: \
             the account is gone, no access"
        )
    );
    assert_eq!(
        deleted.since_snapshot.as_deref(),
        Some(format!("deleted 2026-11-29 09:30:00 UTC (run {later})").as_str())
    );
    let deactivated = row("a2");
    assert!(!deactivated.active);
    assert_eq!(
        deactivated.since_snapshot.as_deref(),
        Some(format!("deactivated 2026-11-29 09:30:00 UTC (run {later})").as_str())
    );
    assert_eq!(row("a3").since_snapshot, None);

    let csv = export.to_csv().unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = headers.iter().position(|h| h == "since_snapshot").unwrap();
    let cells: Vec<(String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_owned(), r[column].to_owned())
        })
        .collect();
    assert_eq!(
        cells,
        [
            (
                "a1".to_owned(),
                format!("deleted 2026-11-29 09:30:00 UTC (run {later})")
            ),
            (
                "a2".to_owned(),
                format!("deactivated 2026-11-29 09:30:00 UTC (run {later})")
            ),
            ("a3".to_owned(), String::new()),
        ]
    );
}

/// `export --output FILE`: the export a reviewer keeps, written as `backup`
/// writes its copy. `export access > review.csv` was the only way, and a shell
/// creates that file before seatwarden runs: a failure left it empty or cut
/// short under the name asked for, and an existing review was overwritten
/// without a word.
mod output {
    use crate::qa_cli::{account, first_plan_stored, person, seatwarden};
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn stored(dir: &Path) -> std::path::PathBuf {
        first_plan_stored(
            dir,
            vec![person("00u1", "ada@example.com", "ada@example.com")],
            vec![
                account("w1", "ada@example.com", "ada@example.com"),
                account("w2", "old.contractor@example.com", "old@example.com"),
            ],
        )
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// What a killed or failed export left beside its file, if anything.
    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".export-"))
            .collect()
    }

    /// Written whole and owner-only, the same bytes stdout gets, with stderr
    /// still saying which run's snapshots it is, and where it went. An existing
    /// file is kept (named, exit 1) unless --force, which replaces it with a
    /// private one, whatever its mode was.
    #[test]
    fn the_export_is_written_to_a_private_file_and_an_existing_one_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let config = stored(dir.path());
        let (ok, on_stdout, err) = seatwarden(&config, &["export", "access"]);
        assert!(ok, "{err}");
        assert!(
            on_stdout.contains("old.contractor@example.com"),
            "{on_stdout}"
        );

        let review = dir.path().join("review.csv");
        let out = review.to_str().unwrap();
        let (ok, stdout, err) = seatwarden(&config, &["export", "access", "--output", out]);
        assert!(ok, "{err}");
        assert_eq!(stdout, "");
        assert!(
            err.lines()
                .any(|line| line.starts_with("access as run 1 read it at ")),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "the access export is written to {out} ({} bytes, owner-only)",
                on_stdout.len()
            )),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&review).unwrap(), on_stdout);
        assert_eq!(mode(&review), 0o600);

        std::fs::write(&review, "last quarter's review\n").unwrap();
        std::fs::set_permissions(&review, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (ok, _, err) = seatwarden(&config, &["export", "access", "--output", out]);
        assert!(!ok);
        assert!(
            err.contains(&format!(
                "error: the access export {out} already exists; nothing was written: give \
                 another name, or --force to replace it"
            )),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&review).unwrap(),
            "last quarter's review\n"
        );

        let (ok, _, err) = seatwarden(
            &config,
            &["export", "access", "--format", "json", "-o", out, "--force"],
        );
        assert!(ok, "{err}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&review).unwrap()).unwrap();
        assert_eq!(json["run_id"], 1);
        assert_eq!(mode(&review), 0o600);
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );

        // --force says what to replace: alone it is a usage error.
        let (ok, _, err) = seatwarden(&config, &["export", "access", "--force"]);
        assert!(!ok);
        assert!(err.contains("--output"), "{err}");
    }

    /// A FILE that is a symbolic link is refused, as `backup` refuses one
    /// (session 62: followed, it had root replace any file a link in another
    /// user's folder led to); `export workspace` takes --output too. The link
    /// and its file are left as they were.
    #[test]
    fn a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = stored(dir.path());
        let reviews = dir.path().join("reviews");
        std::fs::create_dir(&reviews).unwrap();
        let target = reviews.join("latest.json");
        std::fs::write(&target, "{}").unwrap();
        let link = dir.path().join("seed.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (ok, _, err) = seatwarden(
            &config,
            &[
                "export",
                "workspace",
                "--output",
                link.to_str().unwrap(),
                "--force",
            ],
        );
        assert!(!ok, "{err}");
        assert!(
            err.contains(&format!(
                "the workspace export {} is a symbolic link to {}",
                link.display(),
                target.display()
            )),
            "{err}"
        );
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
    }

    /// A write that fails names the file, exits 1 and leaves nothing: not under
    /// its name, not a temporary file beside it. The state database is never
    /// written over, --force or not.
    #[test]
    fn a_failed_write_names_the_file_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = stored(dir.path());

        let missing = dir.path().join("no-such-folder").join("review.csv");
        let (ok, _, err) = seatwarden(
            &config,
            &["export", "access", "--output", missing.to_str().unwrap()],
        );
        assert!(!ok);
        assert!(
            err.contains(&format!(
                "error: cannot write the access export {}: ",
                missing.display()
            )),
            "{err}"
        );
        assert!(err.contains("its folder does not exist"), "{err}");

        // A folder where the file was meant to be: refused as one, --force or
        // not, before a temporary file is written (review_s60_walk).
        let folder = dir.path().join("review.csv");
        std::fs::create_dir(&folder).unwrap();
        let (ok, _, err) = seatwarden(
            &config,
            &[
                "export",
                "access",
                "--output",
                folder.to_str().unwrap(),
                "--force",
            ],
        );
        assert!(!ok);
        assert!(
            err.contains(&format!(
                "error: the access export {} is a folder; nothing was written",
                folder.display()
            )),
            "{err}"
        );
        assert!(folder.is_dir());
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );

        let database = dir.path().join("state.db");
        let before = std::fs::read(&database).unwrap();
        let (ok, _, err) = seatwarden(
            &config,
            &[
                "export",
                "access",
                "--output",
                database.to_str().unwrap(),
                "--force",
            ],
        );
        assert!(!ok);
        assert!(err.contains("would replace the state database"), "{err}");
        assert_eq!(std::fs::read(&database).unwrap(), before);
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
    }
}
