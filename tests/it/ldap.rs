//! The LDAP connector against OpenLDAP's slapd (Debian's package, not ours), seeded
//! from `tests/fixtures/ldap/seed.ldif`.
//!
//! `#[ignore]`d like the other interop tests: `bash scripts/interop.sh` starts a
//! private slapd with `scripts/interop-ldap.sh` and passes `SEATWARDEN_LDAP_URL`
//! (ldap://, StartTLS available), `SEATWARDEN_LDAPS_URL` and `SEATWARDEN_LDAP_CA`
//! (the throwaway CA that signed the server's certificate).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use seatwarden::config::Config;
use seatwarden::directory::DirectoryError;
use seatwarden::model::{Account, IdentityStatus, WorkspaceGroup, WorkspaceSnapshot};
use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions};

const BIND_DN: &str = "cn=seatwarden,ou=services,dc=example,dc=com";
const BIND_PASSWORD: &str = "interop-bind-secret";
const SCIM_TOKEN: &str = "ldap-e2e-scim-token";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the interop suite with `bash scripts/interop.sh`, which starts slapd")
    })
}

/// A configuration reading the seeded slapd at `url` with `directory_extra` keys
/// (`group_base_dn` there replaces ou=groups), writing to `workspace_url`; the
/// password in a file, as in production; `env` as `SEATWARDEN__…` variables.
fn configure(
    dir: &Path,
    url: &str,
    directory_extra: &str,
    workspace_url: &str,
    env: &[(&str, &str)],
) -> Config {
    std::fs::write(dir.join("bind-password"), format!("{BIND_PASSWORD}\n")).unwrap();
    let group_base = if directory_extra.contains("group_base_dn") {
        ""
    } else {
        "group_base_dn = \"ou=groups,dc=example,dc=com\"\n"
    };
    let text = format!(
        "[directory]\nkind = \"ldap\"\nflavor = \"openldap\"\nurl = \"{url}\"\n\
         bind_dn = \"{BIND_DN}\"\nbind_password_file = \"bind-password\"\n\
         base_dn = \"ou=people,dc=example,dc=com\"\n{group_base}\
         page_size = 2\ntimeout = \"10s\"\n{directory_extra}\n\
         [workspace]\nurl = \"{workspace_url}\"\ntoken = \"{SCIM_TOKEN}\"\n\n\
         [state]\npath = \"state.db\"\n\n\
         [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
         [[policy.mapping]]\ngroup = \"Engineering\"\nworkspace_group = \"Engineering\"\nrole = \"Editor\"\n\n\
         [safety]\nsettle = \"0s\"\nmax_deprovisions = 10\nmax_deprovision_percent = 100\n\
         max_deprovisions_per_day = 10\n"
    );
    std::fs::write(dir.join("seatwarden.toml"), text).unwrap();
    let env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(env)).unwrap()
}

/// The identities read with `directory_extra` keys, sorted by userName. The
/// policy names Taskade Users (scope), Engineering (mapped), Sales and Loop A;
/// not Design.
async fn snapshot_with(
    directory_extra: &str,
    url: &str,
) -> Result<Vec<seatwarden::model::Identity>, DirectoryError> {
    snapshot_with_env(directory_extra, url, &[]).await
}

/// [`snapshot_with`], with more `SEATWARDEN__…` variables.
async fn snapshot_with_env(
    directory_extra: &str,
    url: &str,
    env: &[(&str, &str)],
) -> Result<Vec<seatwarden::model::Identity>, DirectoryError> {
    let dir = tempfile::tempdir().unwrap();
    let mut env = env.to_vec();
    env.push((
        "SEATWARDEN__POLICY__SCOPE_GROUPS",
        "Taskade Users,Sales,Loop A",
    ));
    let config = configure(
        dir.path(),
        url,
        directory_extra,
        "https://scim.example.com/scim/v2",
        &env,
    );
    config.directory().snapshot().await.map(|s| {
        assert!(s.complete);
        let mut identities = s.identities;
        identities.sort_by(|a, b| a.user_name.cmp(&b.user_name));
        identities
    })
}

#[tokio::test]
#[ignore = "needs slapd: run `bash scripts/interop.sh`"]
async fn interop_ldap_snapshot_reads_people_nested_groups_and_locks() {
    // Pages of two: four people take two pages, six groups three.
    let people = snapshot_with("", &env("SEATWARDEN_LDAP_URL"))
        .await
        .unwrap();
    let names: Vec<&str> = people.iter().map(|p| p.user_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ada@example.com",
            "ben@example.com",
            "cy@example.com",
            "dee@example.com"
        ],
        "the printer is not a person; build-bot has no mail, which becomes the userName"
    );
    let groups = |i: usize| people[i].groups.clone();
    assert_eq!(groups(0), ["Engineering", "Taskade Users"]);
    assert_eq!(
        groups(1),
        ["Taskade Users"],
        "Design: the policy does not name it"
    );
    assert_eq!(groups(2), ["Sales", "Taskade Users"], "uniqueMember counts");
    assert_eq!(
        groups(3),
        ["Engineering", "Taskade Users"],
        "through the nested Engineering"
    );
    let ada = &people[0];
    assert_eq!(ada.email.as_deref(), Some("ada@example.com"));
    assert_eq!(ada.given_name.as_deref(), Some("Ada"));
    assert_eq!(ada.family_name.as_deref(), Some("Lovelace"));
    assert_eq!(ada.display_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(ada.department.as_deref(), Some("Engineering"));
    let statuses: Vec<IdentityStatus> = people.iter().map(|p| p.status).collect();
    assert_eq!(
        statuses,
        [
            IdentityStatus::Active,
            IdentityStatus::Active,
            IdentityStatus::Suspended,
            IdentityStatus::Active
        ],
        "cy is administratively locked"
    );
    // entryUUID: 36 characters, one per person.
    let mut ids: Vec<&str> = people.iter().map(|p| p.id.as_str()).collect();
    assert!(
        ids.iter()
            .all(|id| id.len() == 36 && id.matches('-').count() == 4),
        "{ids:?}"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);

    // Another attribute as the id, and the uid as userName.
    let by_uid = snapshot_with(
        "id_attribute = \"uid\"\nuser_name_attribute = \"uid\"\n",
        &env("SEATWARDEN_LDAP_URL"),
    )
    .await
    .unwrap();
    let uids: Vec<(&str, &str)> = by_uid
        .iter()
        .map(|p| (p.id.as_str(), p.user_name.as_str()))
        .collect();
    assert_eq!(
        uids,
        [
            ("ada", "ada"),
            ("ben", "ben"),
            ("build-bot", "build-bot"),
            ("cy", "cy"),
            ("dee", "dee")
        ],
        "with uid as the userName, the entry without mail is a person too"
    );
}

/// A group only `safety.protected_groups` names (spelled in another case) is read
/// like a mapped one: without it on ben, his protection would not hold.
#[tokio::test]
#[ignore = "needs slapd: run `bash scripts/interop.sh`"]
async fn interop_ldap_reads_protected_groups() {
    let people = snapshot_with_env(
        "",
        &env("SEATWARDEN_LDAP_URL"),
        &[("SEATWARDEN__SAFETY__PROTECTED_GROUPS", "design")],
    )
    .await
    .unwrap();
    let ben = people
        .iter()
        .find(|p| p.user_name == "ben@example.com")
        .unwrap();
    assert_eq!(ben.groups, ["Design", "Taskade Users"]);
}

/// `disabled_filter` marks accounts suspended the way a server without ppolicy
/// (389 Directory Server's `nsAccountLock`, a department, an OU) does; slapd
/// applies it with the attribute's own matching rule (departmentNumber ignores case).
/// Two groups named Engineering in different OUs: the mapping would count the
/// members of both, so the read is refused and names both DNs.
#[tokio::test]
#[ignore = "needs slapd: run `bash scripts/interop.sh`"]
async fn interop_ldap_two_groups_under_one_configured_name_are_refused() {
    let url = env("SEATWARDEN_LDAP_URL");
    let error = snapshot_with("group_base_dn = \"dc=example,dc=com\"\n", &url)
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("cn=Engineering,ou=groups,dc=example,dc=com")
            && message.contains("cn=Engineering,ou=projects,dc=example,dc=com"),
        "{message}"
    );
    assert!(message.contains("directory.group_base_dn"), "{message}");
}

/// A protected group the server does not have is refused (a typo would take its
/// members' protection away), naming the key; one it has, in another case, is not.
#[tokio::test]
#[ignore = "needs slapd: run `bash scripts/interop.sh`"]
async fn interop_ldap_a_missing_protected_group_is_refused() {
    let url = env("SEATWARDEN_LDAP_URL");
    let with = |protected: &'static str| {
        let url = url.clone();
        async move {
            snapshot_with_env(
                "",
                &url,
                &[("SEATWARDEN__SAFETY__PROTECTED_GROUPS", protected)],
            )
            .await
        }
    };
    let error = with("Desing").await.unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("\"Desing\"") && message.contains("safety.protected_groups"),
        "{message}"
    );
    let people = with("design").await.unwrap();
    let ben = people
        .iter()
        .find(|p| p.user_name == "ben@example.com")
        .unwrap();
    assert!(ben.groups.iter().any(|g| g == "Design"), "{:?}", ben.groups);
}

#[tokio::test]
#[ignore = "needs slapd: run `bash scripts/interop.sh`"]
async fn interop_ldap_disabled_filter_suspends_what_the_server_matches() {
    let people = snapshot_with(
        "disabled_filter = \"(departmentNumber=engineering)\"\n",
        &env("SEATWARDEN_LDAP_URL"),
    )
    .await
    .unwrap();
    let statuses: Vec<(&str, IdentityStatus)> = people
        .iter()
        .map(|p| (p.user_name.as_str(), p.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("ada@example.com", IdentityStatus::Suspended),
            ("ben@example.com", IdentityStatus::Active),
            ("cy@example.com", IdentityStatus::Suspended),
            ("dee@example.com", IdentityStatus::Suspended),
        ],
        "ada and dee by the filter, cy by the ppolicy lock as before"
    );
    assert_eq!(people[0].groups, ["Engineering", "Taskade Users"]);
}

#[tokio::test]
#[ignore = "needs slapd: run `bash scripts/interop.sh`"]
async fn interop_ldap_start_tls_and_ldaps_trust_the_configured_ca() {
    let ca = env("SEATWARDEN_LDAP_CA");
    let start_tls = snapshot_with(
        &format!("start_tls = true\nca_file = \"{ca}\"\n"),
        &env("SEATWARDEN_LDAP_URL"),
    )
    .await
    .unwrap();
    assert_eq!(start_tls.len(), 4);
    let ldaps = snapshot_with(
        &format!("ca_file = \"{ca}\"\n"),
        &env("SEATWARDEN_LDAPS_URL"),
    )
    .await
    .unwrap();
    assert_eq!(ldaps.len(), 4);
    // Without the CA, the system's roots do not trust the throwaway CA: a
    // certificate error, not retried.
    let untrusted = snapshot_with("", &env("SEATWARDEN_LDAPS_URL"))
        .await
        .unwrap_err();
    assert!(!untrusted.is_transient(), "{untrusted}");
    assert!(
        untrusted.to_string().to_lowercase().contains("certificate"),
        "{untrusted}"
    );
}

#[tokio::test]
#[ignore = "needs slapd: run `bash scripts/interop.sh`"]
async fn interop_ldap_errors_name_what_to_check() {
    let url = env("SEATWARDEN_LDAP_URL");
    let dir = tempfile::tempdir().unwrap();
    let config = configure(
        dir.path(),
        &url,
        "",
        "https://scim.example.com/scim/v2",
        &[],
    );
    std::fs::write(dir.path().join("bind-password"), "not-the-password\n").unwrap();
    let wrong = config.directory().snapshot().await.unwrap_err();
    assert!(!wrong.is_transient());
    let message = wrong.to_string();
    assert!(message.contains("invalidCredentials (49)"), "{message}");
    assert!(
        message.contains("directory.bind_password_file"),
        "{message}"
    );
    assert!(!message.contains("not-the-password"), "{message}");

    let nowhere = snapshot_with("group_base_dn = \"ou=nowhere,dc=example,dc=com\"\n", &url)
        .await
        .unwrap_err()
        .to_string();
    assert!(nowhere.contains("noSuchObject (32)"), "{nowhere}");
    assert!(nowhere.contains("directory.base_dn"), "{nowhere}");

    let dir = tempfile::tempdir().unwrap();
    let config = configure(
        dir.path(),
        &url,
        "",
        "https://scim.example.com/scim/v2",
        &[(
            "SEATWARDEN__POLICY__SCOPE_GROUPS",
            "Taskade Users,Contractors",
        )],
    );
    let scope = config.directory().snapshot().await.unwrap_err().to_string();
    assert!(scope.contains("\"Contractors\""), "{scope}");
    assert!(scope.contains("policy.scope_groups"), "{scope}");

    // Nothing listens on the port below slapd's: a connection error, retried.
    let port: u16 = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let closed = format!("ldap://127.0.0.1:{}", port - 1);
    let dir = tempfile::tempdir().unwrap();
    let config = configure(
        dir.path(),
        &closed,
        "",
        "https://scim.example.com/scim/v2",
        &[],
    );
    let refused = seatwarden::directory::LdapSource::new(seatwarden::directory::LdapSettings {
        retry: seatwarden::retry::RetryPolicy::immediate(1),
        ..ldap_settings(&config)
    })
    .snapshot()
    .await
    .unwrap_err();
    assert!(refused.is_transient(), "{refused}");
}

/// The settings `config` builds, to change one of them.
fn ldap_settings(config: &Config) -> seatwarden::directory::LdapSettings {
    match config.directory() {
        seatwarden::directory::Directory::Ldap(source) => source.settings().clone(),
        other => panic!("not LDAP: {other:?}"),
    }
}

/// From the seeded directory into the in-process SCIM workspace: new people are
/// created with their mapped role and folder, the locked person's account is
/// deactivated, and a second run plans nothing.
#[tokio::test]
#[ignore = "needs slapd: run `bash scripts/interop.sh`"]
async fn interop_ldap_to_scim_end_to_end() {
    let cy = Account {
        id: "acc-cy".to_owned(),
        user_name: "cy@example.com".to_owned(),
        external_id: None,
        given_name: Some("Cy".to_owned()),
        family_name: Some("Young".to_owned()),
        display_name: Some("Cy Young".to_owned()),
        email: Some("cy@example.com".to_owned()),
        active: true,
        roles: vec!["Viewer".to_owned()],
    };
    let engineering = WorkspaceGroup {
        id: "grp-eng".to_owned(),
        display_name: "Engineering".to_owned(),
        members: Vec::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: SCIM_TOKEN.to_owned(),
            max_results: 1000,
            or_filters: true,
            faults: Faults::default(),
            ..SandboxOptions::default()
        },
        WorkspaceSnapshot {
            accounts: vec![cy],
            groups: vec![engineering],
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = configure(
        dir.path(),
        &env("SEATWARDEN_LDAP_URL"),
        "",
        sandbox.base_url().as_ref(),
        &[],
    );
    crate::fixtures::assert_converges(&config).await;

    let after = sandbox.snapshot();
    let account = |user: &str| {
        after
            .accounts
            .iter()
            .find(|a| a.user_name == user)
            .unwrap_or_else(|| panic!("no account {user}: {:#?}", after.accounts))
    };
    assert!(!account("cy@example.com").active, "locked in the directory");
    for (user, role) in [
        ("ada@example.com", "Editor"),
        ("ben@example.com", "Viewer"),
        ("dee@example.com", "Editor"),
    ] {
        let created = account(user);
        assert!(created.active, "{user}");
        assert_eq!(created.roles, [role], "{user}");
        assert_eq!(
            created.external_id.as_deref().map(str::len),
            Some(36),
            "entryUUID"
        );
    }
    let members = &after
        .groups
        .iter()
        .find(|g| g.id == "grp-eng")
        .unwrap()
        .members;
    let mut members: Vec<&str> = members
        .iter()
        .map(|id| {
            after
                .accounts
                .iter()
                .find(|a| &a.id == id)
                .unwrap()
                .user_name
                .as_str()
        })
        .collect();
    members.sort();
    assert_eq!(members, ["ada@example.com", "dee@example.com"]);
    sandbox.shutdown().await;
}

/// `check-config --connect`'s group listing against slapd: every group's cn
/// under `group_base_dn`, through pages of two, and none from another
/// container; searched from the top, both groups named Engineering.
#[tokio::test]
#[ignore = "needs slapd: run `bash scripts/interop.sh`"]
async fn interop_ldap_group_names_are_listed_through_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let listed = |directory_extra: &str| {
        let config = configure(
            dir.path(),
            &env("SEATWARDEN_LDAP_URL"),
            directory_extra,
            "https://scim.example.com/scim/v2",
            &[],
        );
        async move {
            let listed = config
                .directory()
                .group_names(&|_| {})
                .await
                .unwrap()
                .unwrap();
            assert!(listed.whole);
            let mut names = listed.names;
            names.sort();
            names
        }
    };
    assert_eq!(
        listed("").await,
        [
            "Design",
            "Engineering",
            "Loop A",
            "Loop B",
            "Sales",
            "Taskade Users"
        ]
    );
    let everywhere = listed("group_base_dn = \"dc=example,dc=com\"\n").await;
    assert_eq!(
        everywhere.iter().filter(|n| *n == "Engineering").count(),
        2,
        "{everywhere:?}"
    );
}
