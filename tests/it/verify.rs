//! Verification: a write the server accepted but does not show is not `applied`;
//! and what a listing that ended short leaves out is never taken as absent.
//! Exercised both ways the executor verifies: one read per object and one fresh
//! listing. The executor picks the cheaper from the latencies it measured in the
//! run, so each test makes the side it expects clearly cheaper (`Latency`):
//! without that, a stray slow response on a loaded machine flips the choice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use seatwarden::config::Config;
use seatwarden::run::{self, Mode};
use seatwarden::store::Store;

fn scim(body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/scim+json")
        .set_body_json(body)
}

fn leaver(n: usize) -> (serde_json::Value, serde_json::Value) {
    let user = format!("leaver{n}@example.com");
    (
        json!({"id": format!("00u{n}"), "userName": user, "status": "deprovisioned"}),
        json!({"id": format!("acc-{n}"), "userName": user, "externalId": format!("00u{n}"),
               "active": true, "roles": [{"value": "Viewer", "primary": true}]}),
    )
}

/// Which requests the mock workspace answers slowly.
#[derive(Clone, Copy)]
enum Latency {
    /// Listing pages: reading objects one by one is cheaper.
    SlowPages,
    /// Writes (the executor estimates a single-object read from them): one
    /// listing is cheaper.
    SlowWrites,
}

/// Far beyond what a loaded host adds to an answer that should be fast: at 60 ms,
/// 80 ms more on every other answer flipped the executor's choice in one test.
const SLOW: std::time::Duration = std::time::Duration::from_millis(300);

impl Latency {
    fn page(self, template: ResponseTemplate) -> ResponseTemplate {
        match self {
            Latency::SlowPages => template.set_delay(SLOW),
            Latency::SlowWrites => template,
        }
    }

    fn write(self, template: ResponseTemplate) -> ResponseTemplate {
        match self {
            Latency::SlowPages => template,
            Latency::SlowWrites => template.set_delay(SLOW),
        }
    }
}

/// A workspace that accepts every PATCH (204) and never changes.
async fn stubborn_workspace(
    leavers: usize,
    latency: Latency,
) -> (MockServer, tempfile::TempDir, Config) {
    let server = MockServer::start().await;
    let (identities, accounts): (Vec<_>, Vec<_>) = (1..=leavers).map(leaver).unzip();
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(latency.page(scim(
            json!({"totalResults": accounts.len(), "startIndex": 1,
                                   "itemsPerPage": accounts.len(), "Resources": accounts}),
        )))
        .mount(&server)
        .await;
    for account in &accounts {
        Mock::given(method("GET"))
            .and(path(format!("/Users/{}", account["id"].as_str().unwrap())))
            .respond_with(scim(account.clone()))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(latency.page(scim(json!({"totalResults": 0, "Resources": []}))))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex("^/Users/acc-[0-9]+$"))
        .respond_with(latency.write(ResponseTemplate::new(204)))
        .expect(leavers as u64)
        .mount(&server)
        .await;
    let (dir, config) = configure(&server, json!({ "users": identities }), "");
    (server, dir, config)
}

/// A directory file and a configuration for `server` (no settle window, `policy`
/// as given) in a fresh directory.
fn configure(
    server: &MockServer,
    directory: serde_json::Value,
    policy: &str,
) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.json"), directory.to_string()).unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{}\"\ntoken = \"t\"\n\n{policy}\n[safety]\nsettle = \"0s\"\n\
             max_deprovisions = 1000\nmax_deprovision_percent = 100\n\
             max_deprovisions_per_day = 1000\n",
            server.uri()
        ),
    )
    .unwrap();
    let config = Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    (dir, config)
}

/// The filters of the `GET path?filter=…` requests the server received.
async fn filters_read(server: &MockServer, path: &str) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path() == path)
        .filter_map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "filter")
                .map(|(_, v)| v.into_owned())
        })
        .collect()
}

/// How many times the server was asked for `GET path`.
async fn reads_of(server: &MockServer, path: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path() == path)
        .count()
}

async fn reconcile(config: &Config) -> seatwarden::report::Report {
    run::execute(
        config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap()
    .report
}

#[tokio::test]
async fn an_accepted_write_the_workspace_does_not_show_fails_verification() {
    let (server, _dir, config) = stubborn_workspace(1, Latency::SlowPages).await;
    let report = reconcile(&config).await;
    assert_eq!(report.summary.actions_applied, 0);
    assert_eq!(report.summary.actions_failed, 1);
    let error = report.actions[0].error.as_deref().unwrap();
    assert!(
        error.contains("not verified") && error.contains("still active"),
        "{error}"
    );
    // One filtered read of that account, not a relisting of the workspace.
    assert_eq!(filters_read(&server, "/Users").await, [r#"id eq "acc-1""#]);
    assert_eq!(
        reads_of(&server, "/Users").await,
        3,
        "the snapshot (its short page and the look past it) and that read"
    );
    assert_eq!(reads_of(&server, "/Users/acc-1").await, 0);
}

#[tokio::test]
async fn many_changes_are_verified_against_one_fresh_listing() {
    let (server, _dir, config) = stubborn_workspace(5, Latency::SlowWrites).await;
    let report = reconcile(&config).await;
    assert_eq!(report.summary.actions_failed, 5, "{:#?}", report.actions);
    assert!(
        report
            .actions
            .iter()
            .all(|a| a.error.as_deref().unwrap_or("").contains("still active"))
    );
    let requests = server.received_requests().await.unwrap();
    let single_reads = requests
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path().starts_with("/Users/"))
        .count();
    assert_eq!(single_reads, 0, "verified from the listing");
    assert_eq!(
        reads_of(&server, "/Users").await,
        4,
        "one snapshot, one verification listing, each a short page and the look past it"
    );
}

/// A verification listing that ends short of its `totalResults` (accounts moved
/// between pages, or the provider stopped early) proves nothing about what it
/// left out: those accounts are read on their own, and a deactivation the
/// workspace does not show is not taken as done because the account was missing.
#[tokio::test]
async fn accounts_a_short_verification_listing_left_out_are_read_on_their_own() {
    let (server, _dir, config) = stubborn_workspace(5, Latency::SlowWrites).await;
    let (_, accounts): (Vec<_>, Vec<_>) = (1..=5).map(leaver).unzip();
    // The snapshot lists all five; every later listing (the verification's) only
    // the first three, still announcing five.
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(json!({"totalResults": 5, "Resources": accounts})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(
            json!({"totalResults": 5, "Resources": accounts[..3].to_vec()}),
        ))
        .mount(&server)
        .await;
    for account in &accounts {
        Mock::given(method("GET"))
            .and(path(format!("/Users/{}", account["id"].as_str().unwrap())))
            .respond_with(scim(account.clone()))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(scim(json!({"totalResults": 0, "Resources": []})))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex("^/Users/acc-[0-9]+$"))
        .respond_with(ResponseTemplate::new(204).set_delay(SLOW))
        .mount(&server)
        .await;

    let report = reconcile(&config).await;
    assert_eq!(report.summary.actions_applied, 0, "{:#?}", report.actions);
    assert_eq!(report.summary.actions_failed, 5);
    assert!(
        report
            .actions
            .iter()
            .all(|a| a.error.as_deref().unwrap_or("").contains("still active")),
        "{:#?}",
        report.actions
    );
    // The two accounts the listing left out were read by filter or on their own.
    let filtered = filters_read(&server, "/Users").await;
    let read_alone =
        reads_of(&server, "/Users/acc-4").await + reads_of(&server, "/Users/acc-5").await;
    assert!(
        filtered
            .iter()
            .any(|f| f.contains("acc-4") && f.contains("acc-5"))
            || read_alone == 2,
        "{filtered:?}, {read_alone}"
    );
    assert!(
        filtered.iter().all(|f| !f.contains("acc-1")),
        "what the listing showed is not read again: {filtered:?}"
    );
}

/// Three changes, two objects: the account's role and display name, and its
/// membership. Each object is read once, however many actions it verifies.
#[tokio::test]
async fn actions_that_share_an_object_share_its_read() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let account = json!({"id": "acc-1", "userName": "ann@example.com", "externalId": "00u1",
                         "displayName": "Ann Old", "active": true,
                         "roles": [{"value": "Viewer", "primary": true}]});
    let group = json!({"id": "g-eng", "displayName": "Eng", "members": []});
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(Latency::SlowPages.page(scim(
            json!({"totalResults": 1, "startIndex": 1, "itemsPerPage": 1, "Resources": [account]}),
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(Latency::SlowPages.page(scim(
            json!({"totalResults": 1, "startIndex": 1, "itemsPerPage": 1, "Resources": [group]}),
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users/acc-1"))
        .respond_with(scim(account.clone()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Groups/g-eng"))
        .respond_with(scim(group.clone()))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let (_dir, config) = configure(
        &server,
        json!({"users": [{"id": "00u1", "userName": "ann@example.com", "displayName": "Ann New",
                          "status": "active", "groups": ["Taskade Users", "Eng"]}]}),
        "[policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
         [[policy.mapping]]\ngroup = \"Eng\"\nworkspace_group = \"Eng\"\nrole = \"Editor\"\n",
    );

    let report = reconcile(&config).await;
    let kinds: Vec<&str> = report.actions.iter().map(|a| a.op.as_str()).collect();
    assert_eq!(report.actions.len(), 3, "{kinds:?}");
    assert_eq!(
        report.summary.actions_failed, 3,
        "the workspace never changes"
    );
    assert_eq!(
        filters_read(&server, "/Users").await,
        [r#"id eq "acc-1""#],
        "{kinds:?}"
    );
    // One account changed: no read of one account to compare a filter with (a
    // group read, which carries every member, is no measure of it).
    assert_eq!(filters_read(&server, "/Groups").await, [r#"id eq "g-eng""#]);
    assert_eq!(reads_of(&server, "/Users/acc-1").await, 0);
    assert_eq!(reads_of(&server, "/Groups/g-eng").await, 0);
}

/// How a mock workspace answers a `GET /Users?filter=…` (a listing without a
/// filter is always the whole workspace).
#[derive(Clone, Copy)]
enum FilteredUsers {
    /// `400 invalidFilter`, as a provider without `or` answers.
    Refused,
    /// The whole workspace, as a provider that ignores filters answers.
    Ignored,
    /// Only the account the filter names first: `or` mishandled.
    FirstOnly,
    /// None: every account the filter names is gone.
    Gone,
    /// The right accounts, a second late: a provider that scans every user.
    Slow,
}

struct UsersEndpoint {
    accounts: Vec<serde_json::Value>,
    filtered: FilteredUsers,
}

impl wiremock::Respond for UsersEndpoint {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let list = |resources: Vec<serde_json::Value>| {
            scim(json!({"totalResults": resources.len(), "startIndex": 1,
                        "itemsPerPage": resources.len(), "Resources": resources}))
        };
        let Some(filter) = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "filter")
            .map(|(_, v)| v.into_owned())
        else {
            // A slow listing keeps the executor from verifying with a relisting.
            return list(self.accounts.clone()).set_delay(SLOW);
        };
        match self.filtered {
            FilteredUsers::Refused => ResponseTemplate::new(400).set_body_json(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": "400", "scimType": "invalidFilter", "detail": "or is not supported"})),
            FilteredUsers::Ignored => list(self.accounts.clone()),
            FilteredUsers::FirstOnly => list(
                self.accounts
                    .iter()
                    .filter(|a| {
                        filter.split(" or ").next() == Some(&format!("id eq {}", a["id"]) as &str)
                    })
                    .cloned()
                    .collect(),
            ),
            FilteredUsers::Gone => list(Vec::new()),
            FilteredUsers::Slow => list(
                self.accounts
                    .iter()
                    .filter(|a| filter.contains(&format!("id eq {}", a["id"])))
                    .cloned()
                    .collect(),
            )
            .set_delay(std::time::Duration::from_secs(1)),
        }
    }
}

/// `leavers` leavers whose accounts are still active, and one person who stays
/// (so that a listing holds an account no action touches). Writes are accepted
/// and, unless `deleting`, change nothing; a deleted account reads 404 on its own.
/// Writes are slow (a filtered read is then clearly faster per object than a
/// single read, which the executor measures on writes), except with `Slow`.
async fn workspace_answering(
    filtered: FilteredUsers,
    deleting: bool,
    leavers: usize,
) -> (MockServer, tempfile::TempDir, Config) {
    workspace_with_group(filtered, deleting, leavers, None).await
}

/// As [`workspace_answering`]; with `group_read`, the person who stays is also
/// missing from the workspace group "Engineering", which answers a read of its
/// own `group_read` late (a group read carries every member).
async fn workspace_with_group(
    filtered: FilteredUsers,
    deleting: bool,
    leavers: usize,
    group_read: Option<std::time::Duration>,
) -> (MockServer, tempfile::TempDir, Config) {
    let server = MockServer::start().await;
    let (mut identities, mut accounts): (Vec<_>, Vec<_>) = (1..=leavers).map(leaver).unzip();
    identities.push(
        json!({"id": "stayer", "userName": "stayer@example.com", "status": "active",
                           "groups": ["Engineering"]}),
    );
    accounts.push(
        json!({"id": "acc-stayer", "userName": "stayer@example.com", "externalId": "stayer",
                         "active": true, "roles": [{"value": "Viewer", "primary": true}]}),
    );
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(UsersEndpoint {
            accounts: accounts.clone(),
            filtered,
        })
        .mount(&server)
        .await;
    for account in &accounts {
        let id = account["id"].as_str().unwrap();
        let answer = if deleting {
            ResponseTemplate::new(404)
        } else {
            scim(account.clone())
        };
        Mock::given(method("GET"))
            .and(path(format!("/Users/{id}")))
            .respond_with(answer)
            .mount(&server)
            .await;
    }
    let engineering = |members: serde_json::Value| json!({"id": "grp-eng", "displayName": "Engineering", "members": members});
    let groups = match group_read {
        None => Vec::new(),
        Some(late) => {
            Mock::given(method("GET"))
                .and(path("/Groups/grp-eng"))
                .respond_with(scim(engineering(json!([{"value": "acc-stayer"}]))).set_delay(late))
                .mount(&server)
                .await;
            Mock::given(method("PATCH"))
                .and(path("/Groups/grp-eng"))
                .respond_with(ResponseTemplate::new(204))
                .expect(1)
                .mount(&server)
                .await;
            vec![engineering(json!([]))]
        }
    };
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(
            scim(json!({"totalResults": groups.len(), "Resources": groups})).set_delay(SLOW),
        )
        .mount(&server)
        .await;
    let write = ResponseTemplate::new(204);
    let write = match filtered {
        FilteredUsers::Slow => write,
        _ => write.set_delay(SLOW),
    };
    Mock::given(method(if deleting { "DELETE" } else { "PATCH" }))
        .and(path_regex("^/Users/acc-[0-9]+$"))
        .respond_with(write)
        .expect(leavers as u64)
        .mount(&server)
        .await;
    // Unthrottled (this lands in `[workspace]`): the rate limiter's waits would
    // count in the write latency the executor measures.
    let mut policy = String::from("requests_per_second = 1000000\n");
    if deleting {
        policy.push_str("[deprovision]\naction = \"delete\"\ndelete_after = \"0s\"\n");
    }
    if group_read.is_some() {
        policy.push_str(
            "[[policy.mapping]]\ngroup = \"Engineering\"\n\
             workspace_group = \"Engineering\"\nrole = \"Viewer\"\n",
        );
    }
    let (dir, config) = configure(&server, json!({ "users": identities }), &policy);
    (server, dir, config)
}

/// The accounts read on their own, by id, sorted.
async fn single_reads(server: &MockServer) -> Vec<String> {
    let mut reads: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .filter_map(|r| r.url.path().strip_prefix("/Users/").map(str::to_owned))
        .collect();
    reads.sort();
    reads
}

async fn assert_still_active(config: &Config, leavers: usize) {
    let report = reconcile(config).await;
    assert_eq!(
        report.summary.actions_failed, leavers,
        "{:#?}",
        report.actions
    );
    for action in &report.actions {
        let error = action.error.as_deref().unwrap_or("");
        assert!(error.contains("still active"), "{error}");
    }
}

#[tokio::test]
async fn changed_objects_are_read_by_one_filter_naming_them_all() {
    let (server, _dir, config) = workspace_answering(FilteredUsers::Ignored, false, 3).await;
    // `Ignored` answers the whole workspace: acc-9 was not asked for.
    assert_still_active(&config, 3).await;
    assert_eq!(
        filters_read(&server, "/Users").await,
        [r#"id eq "acc-1" or id eq "acc-2" or id eq "acc-3""#]
    );
    assert_eq!(
        single_reads(&server).await,
        ["acc-1", "acc-2", "acc-3"],
        "an answer with an account not asked for is not trusted"
    );
}

#[tokio::test]
async fn a_provider_without_or_filters_is_read_object_by_object() {
    let (server, _dir, config) = workspace_answering(FilteredUsers::Refused, false, 3).await;
    assert_still_active(&config, 3).await;
    assert_eq!(filters_read(&server, "/Users").await.len(), 1);
    assert_eq!(single_reads(&server).await, ["acc-1", "acc-2", "acc-3"]);
}

#[tokio::test]
async fn once_a_filter_is_refused_no_other_is_sent() {
    let (server, _dir, config) = workspace_answering(FilteredUsers::Refused, false, 80).await;
    assert_still_active(&config, 80).await;
    assert_eq!(filters_read(&server, "/Users").await.len(), 1);
    let expected: std::collections::BTreeSet<String> =
        (1..=80).map(|n| format!("acc-{n}")).collect();
    let reads = single_reads(&server).await;
    let read: std::collections::BTreeSet<String> = reads.iter().cloned().collect();
    assert_eq!(read, expected);
    assert_eq!(reads.len(), 80, "each read once");
}

#[tokio::test]
async fn accounts_a_filter_left_out_are_read_on_their_own() {
    let (server, _dir, config) = workspace_answering(FilteredUsers::FirstOnly, false, 3).await;
    // The left-out accounts exist and are still active: reading them on their own
    // catches what a mishandled `or` hid.
    assert_still_active(&config, 3).await;
    assert_eq!(single_reads(&server).await, ["acc-2", "acc-3"]);
}

#[tokio::test]
async fn a_deletion_is_verified_by_a_read_of_its_own_not_by_absence_from_a_filter() {
    let (server, _dir, config) = workspace_answering(FilteredUsers::Gone, true, 3).await;
    let report = reconcile(&config).await;
    assert_eq!(report.summary.actions_applied, 3, "{:#?}", report.actions);
    assert_eq!(report.summary.actions_failed, 0);
    let filters = filters_read(&server, "/Users").await;
    assert_eq!(single_reads(&server).await, ["acc-1", "acc-2", "acc-3"]);
    // One filter for the three, then, absent by the read of its own, each is
    // looked for by a filter of its own before its deletion counts.
    assert_eq!(filters.len(), 4, "{filters:?}");
    for n in 1..=3 {
        let own = format!("id eq \"acc-{n}\"");
        assert!(filters.contains(&own), "{filters:?}");
    }
}

/// A provider that refuses every filter: a deleted account that reads as absent by
/// its id is taken as gone once a `/Users` listing page answers, as before the
/// searches that confirm absence (filters are optional in SCIM).
#[tokio::test]
async fn a_provider_without_filters_still_gets_its_deletions_verified() {
    let (server, _dir, config) = workspace_answering(FilteredUsers::Refused, true, 3).await;
    let report = reconcile(&config).await;
    assert_eq!(report.summary.actions_applied, 3, "{:#?}", report.actions);
    assert_eq!(report.summary.actions_failed, 0);
    assert_eq!(single_reads(&server).await, ["acc-1", "acc-2", "acc-3"]);
}

#[tokio::test]
async fn filters_slower_per_object_than_a_single_read_are_given_up_after_the_first() {
    let (server, _dir, config) = workspace_answering(FilteredUsers::Slow, false, 80).await;
    assert_still_active(&config, 80).await;
    let filters = filters_read(&server, "/Users").await;
    assert_eq!(filters.len(), 1, "only the first, small filter is sent");
    let in_first = filters[0].matches(" or ").count() + 1;
    assert_eq!(in_first, 4, "{}", filters[0]);
    // Everything that filter did not ask for is read on its own, once.
    let mut expected: Vec<String> = (1..=80)
        .map(|n| format!("acc-{n}"))
        .filter(|id| !filters[0].contains(&format!("\"{id}\"")))
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 80 - in_first);
    assert_eq!(single_reads(&server).await, expected);
}

#[tokio::test]
async fn a_slow_group_read_is_not_the_measure_of_an_account_read() {
    // A group that takes a second to read, beside accounts a provider scans for:
    // compared with the group's read, the four-id filter (a second) would look
    // fast per account. Compared with an account's read, it is slow.
    let late = std::time::Duration::from_secs(1);
    let (server, _dir, config) =
        workspace_with_group(FilteredUsers::Slow, false, 80, Some(late)).await;
    let report = reconcile(&config).await;
    assert_eq!(report.summary.actions_failed, 80, "{:#?}", report.actions);
    assert_eq!(
        report.summary.actions_applied, 1,
        "the membership is verified"
    );
    assert_eq!(
        filters_read(&server, "/Users").await.len(),
        1,
        "the rest of the accounts are read one by one"
    );
    assert_eq!(reads_of(&server, "/Groups/grp-eng").await, 1);
}

/// The run's own workspace listing ended short of its `totalResults` (an account
/// deleted meanwhile shifted another past the pages): it is read again, and the
/// account the first listing left out is not reported missing.
#[tokio::test]
async fn a_workspace_listing_that_ended_short_is_read_again_before_planning() {
    let server = MockServer::start().await;
    let person = |n: usize| {
        let user = format!("person{n}@example.com");
        (
            json!({"id": format!("00p{n}"), "userName": user, "status": "active"}),
            json!({"id": format!("acc-{n}"), "userName": user, "externalId": format!("00p{n}"),
                   "active": true, "roles": [{"value": "Viewer", "primary": true}]}),
        )
    };
    let (identities, accounts): (Vec<_>, Vec<_>) = (1..=2).map(person).unzip();
    // The first listing (two requests: the page, then the one it announced) shows
    // only the first account; every later one shows both.
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(json!({"totalResults": 2, "Resources": [accounts[0]]})))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(json!({"totalResults": 2, "Resources": accounts})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(scim(json!({"totalResults": 0, "Resources": []})))
        .mount(&server)
        .await;
    let (_dir, config) = configure(&server, json!({ "users": identities }), "");
    let outcome = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Plan,
    )
    .await
    .unwrap();
    assert!(outcome.plan.is_empty(), "{:#?}", outcome.plan.actions);
    assert!(outcome.plan.drift.is_empty(), "{:#?}", outcome.plan.drift);
    // Two for the short listing, two for the whole one (its page is as long as
    // the total and shorter than asked: the page after it is looked at).
    assert_eq!(reads_of(&server, "/Users").await, 4);
    assert!(!outcome.report.safety.workspace_listing_short);

    // Short every time: planned with, and the report says why person2 shows as
    // missing.
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(json!({"totalResults": 2, "Resources": [accounts[0]]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(scim(json!({"totalResults": 0, "Resources": []})))
        .mount(&server)
        .await;
    let outcome = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Plan,
    )
    .await
    .unwrap();
    assert!(outcome.report.safety.workspace_listing_short);
    let text =
        seatwarden::report::render_text(&outcome.report, chrono_tz::UTC, "seatwarden", false);
    assert!(
        text.contains("SHORT LISTING the workspace listing ended short of its totalResults, twice"),
        "{text}"
    );
    assert_eq!(
        outcome.report.summary.drift_total, 1,
        "person2 shows as missing"
    );
}
