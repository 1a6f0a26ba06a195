//! A SCIM 2.0 service provider as the directory (`kind = "scim"`): an identity
//! provider or HR system that serves its people over SCIM instead of (or besides)
//! pushing them.
//!
//! It is read with the workspace's own client (discovery, index paging with
//! concurrent pages, a rate limit, retries that honour `Retry-After`), with its own
//! URL and token. The token is read at each snapshot, so a rotated credential file
//! is picked up by the next read.
//!
//! Mapping: a User's `id` is the identity id (it becomes the account's
//! `externalId`); `userName`, `name`, `displayName` and the primary email are taken
//! as they are; `active: false` is `suspended`, and `active` sent for some Users
//! but not others fails the snapshot (sent for none, everyone is active: RFC
//! 7643 §4.1.1 makes it optional); `department` comes from the
//! enterprise extension. A person's groups are the `displayName`s of the Groups that
//! list them, directly or through a Group that is itself a member (cycles are
//! harmless); a group the configuration names (scope, mappings,
//! `safety.protected_groups`), or one nested in it, that a listing shows empty is
//! read again on its own, as some providers leave `members` out of listings (with
//! `attributes=members` when the plain read lacks them too), and so is one
//! lacking Users whose own `groups` (RFC 7643 §4.1.2) name it (a provider may
//! cap `members` in listings); disabled Users aside: a provider may list only
//! enabled members, and such a User is counted in the Group its `groups`
//! names (it keeps a protected group's protection). One that still lacks them
//! after a second read of the directory (a removal between the two listings
//! shows on both sides then) fails the snapshot naming how many are missing,
//! as its members were left out or capped, not gone; so does one never sent
//! with a `members` attribute when no Group shows any member, or when another
//! Group comes with `"members": []` (the provider's empty group). A member marked as a Group
//! that the listing lacks is read by its id, or fails the snapshot (not found, or
//! answered under another id: nesting goes by id); an unmarked one (`type` is
//! optional) that is no listed User is read by its id too, and not found, is a
//! User the listing lacks. Every scope group
//! must exist. Anything the provider answers that cannot be read fails the whole
//! snapshot (a User whose `userName` is blank too), and a listing shorter than
//! the `totalResults` it announced makes the snapshot incomplete: a partial
//! directory must never look like people who left.
//!
//! SCIM has no delta that shows deletions, so the daemon's sweep re-reads it whole.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::model::{Account, DirectorySnapshot, Identity, IdentityStatus, WorkspaceGroup};
use crate::retry::RetryPolicy;
use crate::workspace::{
    GroupMembers, GroupRead, Pagination, People, RoleAttribute, ScimClient, ScimSettings,
    WorkspaceError,
};

use super::{DirectoryError, GroupInterest, Secret};

#[derive(Debug, Clone)]
pub struct ScimDirectorySettings {
    /// Up to and including the version, e.g. `https://idp.example.com/scim/v2`.
    pub url: url::Url,
    pub token: Secret,
    /// Requested page size; capped by the provider's `filter.maxResults`.
    pub page_size: u32,
    pub pagination: Pagination,
    pub max_concurrency: usize,
    /// 0 disables rate limiting.
    pub requests_per_second: u32,
    /// Per request (each attempt).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// `policy.scope_groups`: each must be a Group's `displayName`.
    pub scope_groups: Vec<String>,
    /// The other groups the configuration names (mappings,
    /// `safety.protected_groups`).
    pub other_groups: Vec<String>,
    /// `safety.distinct_groups`: directory groups that only look like a
    /// configured one but are declared other groups ([`GroupInterest::new`]).
    pub distinct_groups: Vec<String>,
    /// Groups that must exist (also in `other_groups`): `safety.protected_groups`
    /// and the groups mapped to Owner, where a typo would take protection away or
    /// demote every Owner without a word.
    pub required_groups: Vec<super::RequiredGroup>,
    /// `directory.ca_file`: PEM CAs trusted instead of the system's roots, read
    /// when the connection is made ([`super::remote::ca_pem`]).
    pub ca_file: Option<std::path::PathBuf>,
    /// `directory.missing_active`.
    pub missing_active: MissingActive,
}

/// How a User that comes without `active` is read (`directory.missing_active`):
/// RFC 7643 §4.1.1 makes the attribute optional, and providers leave it out for
/// different reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingActive {
    /// Sent for some Users and not others, the snapshot fails (whether those
    /// people are enabled cannot be told); sent for none, everyone is active.
    #[default]
    Refuse,
    /// Enabled: for a provider that leaves it out for enabled people (an
    /// LDAP-backed server mapping it from an attribute left unset).
    Active,
    /// Disabled: for a provider that sends it only when true. Refused when no
    /// User carries it, as everyone would then be a leaver.
    Inactive,
}

#[derive(Debug, Clone)]
pub struct ScimDirectorySource {
    // Shared: a `Directory` is cloned into the daemon's jobs.
    settings: Arc<ScimDirectorySettings>,
    /// Retries of the clients each read made and dropped ([`Self::retries`]).
    retries: Arc<AtomicU64>,
}

impl ScimDirectorySource {
    pub fn new(settings: ScimDirectorySettings) -> ScimDirectorySource {
        ScimDirectorySource {
            settings: Arc::new(settings),
            retries: Arc::default(),
        }
    }

    /// Requests retried after a transient failure by this source's reads so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub fn url(&self) -> &url::Url {
        &self.settings.url
    }

    pub fn settings(&self) -> &ScimDirectorySettings {
        &self.settings
    }

    /// Every User and Group the provider lists, as identities.
    pub async fn snapshot(&self) -> Result<DirectorySnapshot, DirectoryError> {
        let client = self.client()?;
        let read = self.read(&client).await;
        self.retries
            .fetch_add(client.stats().retries, Ordering::Relaxed);
        read
    }

    /// `check-config --connect`: discovery and one small page of Users and of
    /// Groups ([`ScimClient::probe`]), each object read as a run reads it, and
    /// the Users refused as a run refuses them ([`refuse_blank_user_names`]);
    /// then every User for `active`, sent for some and not others or not as
    /// `directory.missing_active` expects, refused as a run refuses it
    /// ([`read_users_without_active`]): a first run would fail on it, with
    /// `progress` told after each page of that listing.
    /// What it proved, one item a request.
    pub async fn probe(
        &self,
        progress: &(dyn Fn(crate::workspace::Progress) + Send + Sync),
    ) -> Result<Vec<String>, DirectoryError> {
        let url = &self.settings.url;
        let client = self.client()?;
        let (mut proven, accounts) = client.probe_reading().await.map_err(directory_error(url))?;
        refuse_blank_user_names(url, accounts.iter())?;
        let (users, without_active, whole) = client
            .users_and_active(progress)
            .await
            .map_err(directory_error(url))?;
        let counted = format!(
            "GET /Users, all pages ({} Users, {} without active{})",
            users.len(),
            without_active.len(),
            if whole {
                ""
            } else {
                ", short of its totalResults"
            }
        );
        let mut people = People {
            users,
            groups: Vec::new(),
            named_by_users: HashMap::new(),
            listed_without_members: HashSet::new(),
            marked_groups: HashSet::new(),
            marked_users: HashSet::new(),
            without_active,
            whole,
        };
        read_users_without_active(url, self.settings.missing_active, &mut people)?;
        proven.push(counted);
        Ok(proven)
    }

    /// Every Group's `displayName` (`GET /Groups?attributes=displayName`, or
    /// without `attributes` when the provider refuses it, all
    /// pages), for `check-config --connect` to name the groups that only look
    /// like configured ones ([`super::Directory::group_names`]), and whether
    /// the listing reached the `totalResults` it announced; `progress` told
    /// after each page.
    pub async fn group_names(
        &self,
        progress: &(dyn Fn(crate::workspace::Progress) + Send + Sync),
    ) -> Result<super::GroupNames, DirectoryError> {
        let client = self.client()?;
        let url = &self.settings.url;
        client.discover().await.map_err(directory_error(url))?;
        let (names, whole) = client
            .group_names(progress)
            .await
            .map_err(directory_error(url))?;
        Ok(super::GroupNames { names, whole })
    }

    /// A client for the provider, its token and CA file read now.
    fn client(&self) -> Result<ScimClient, DirectoryError> {
        let settings = &self.settings;
        ScimClient::new(ScimSettings {
            base_url: settings.url.clone(),
            token: settings.token.read()?,
            role_attribute: RoleAttribute::None,
            page_size: settings.page_size,
            pagination: settings.pagination,
            max_concurrency: settings.max_concurrency,
            requests_per_second: settings.requests_per_second,
            timeout: settings.timeout,
            retry: settings.retry,
            // Not used by `people`: check_named_groups reads the named groups again.
            managed_groups: Vec::new(),
            group_members: GroupMembers::Listed,
            ca_pem: super::remote::ca_pem(settings.ca_file.as_deref())?,
        })
        .map_err(directory_error(&settings.url))
    }

    async fn read(&self, client: &ScimClient) -> Result<DirectorySnapshot, DirectoryError> {
        let settings = &self.settings;
        client
            .discover()
            .await
            .map_err(directory_error(&settings.url))?;
        let progress = |progress: crate::workspace::Progress| {
            tracing::debug!(
                what = progress.what,
                pages = progress.pages,
                objects = progress.objects,
                total = progress.total,
                "SCIM directory page read"
            );
        };
        let interest = self.interest();
        let missing_active = settings.missing_active;
        let mut people = self.read_people(client, &progress).await?;
        let mut members_unshown = self.check_named_groups(client, &mut people).await?;
        self.read_short_groups_on_their_own(client, &mut people, &interest)
            .await?;
        let short = short_groups(&people, &interest, &inactive_users(&people, missing_active));
        if let Some(short) = short.first() {
            // The Users and the Groups listings are read at the same time: a
            // member removed in between is named by a User read before and
            // missing from a Group read after. Read again, the removal shows on
            // both sides; a provider that caps members shows the same gap.
            tracing::warn!(
                url = %settings.url,
                group = %short.group.display_name,
                missing = short.missing.len(),
                "a Group of the SCIM directory lacks members that Users' own groups name; \
                 reading the directory again"
            );
            people = self.read_people(client, &progress).await?;
            members_unshown = self.check_named_groups(client, &mut people).await?;
            self.read_short_groups_on_their_own(client, &mut people, &interest)
                .await?;
        }
        let inactive = inactive_users(&people, missing_active);
        count_in_inactive_users_left_out(&mut people, &interest, &inactive);
        // Users' own `groups` naming members a Group lacks is the surer sign: said first.
        refuse_groups_without_their_members(&settings.url, &people, &interest, &inactive)?;
        // A Group sent with `"members": []`: this provider's empty group.
        let sent_empty = people.groups.iter().enumerate().find_map(|(i, group)| {
            (group.members.is_empty()
                && !people.listed_without_members.contains(&group.id)
                && !members_unshown.iter().any(|(unshown, _)| *unshown == i))
            .then_some(group)
        });
        refuse_hidden_members(&settings.url, &people.groups, &members_unshown, sent_empty)?;
        refuse_blank_user_names(&settings.url, people.users.iter().map(|(a, _)| a))?;
        read_users_without_active(&settings.url, settings.missing_active, &mut people)?;
        // A short listing is people missing, who must not look like leavers.
        Ok(DirectorySnapshot {
            identities: identities(people.users, &people.groups),
            complete: people.whole,
        })
    }

    /// Every User and Group, read once more when a listing ended short of its
    /// `totalResults`.
    async fn read_people(
        &self,
        client: &ScimClient,
        progress: &(dyn Fn(crate::workspace::Progress) + Send + Sync),
    ) -> Result<People, DirectoryError> {
        let url = &self.settings.url;
        let people = client
            .people(progress)
            .await
            .map_err(directory_error(url))?;
        if people.whole {
            return Ok(people);
        }
        // People moved between pages while they were read: once more usually
        // sees them all, and an incomplete snapshot holds every deprovision.
        tracing::warn!(
            url = %url,
            "the SCIM directory listing ended short of its totalResults; reading it again"
        );
        client.people(progress).await.map_err(directory_error(url))
    }

    /// A Group that lists members but not every User whose own `groups` names
    /// it is read on its own: a provider may cap `members` in listings (RFC
    /// 7644 has no paging of an attribute's values) and send them whole for
    /// one Group. What that read shows replaces the listing's when it shows
    /// more. (An empty Group was read on its own by [`Self::check_named_groups`].)
    async fn read_short_groups_on_their_own(
        &self,
        client: &ScimClient,
        people: &mut People,
        interest: &GroupInterest,
    ) -> Result<(), DirectoryError> {
        let inactive = inactive_users(people, self.settings.missing_active);
        let short: Vec<String> = short_groups(people, interest, &inactive)
            .iter()
            .filter(|short| !short.group.members.is_empty())
            .map(|short| short.group.id.clone())
            .collect();
        for id in short {
            let read = client
                .group_with_members(&id)
                .await
                .map_err(directory_error(&self.settings.url))?;
            if let GroupRead::Found {
                group,
                marked_groups,
                marked_users,
                ..
            } = read
                && let Some(listed) = people.groups.iter_mut().find(|g| g.id == id)
                && group.members.len() > listed.members.len()
            {
                tracing::info!(
                    group = %listed.display_name,
                    listed = listed.members.len(),
                    read = group.members.len(),
                    "a Group read on its own shows more members than the Groups listing"
                );
                listed.members = group.members;
                people.marked_groups.extend(marked_groups);
                people.marked_users.extend(marked_users);
            }
        }
        Ok(())
    }

    /// The groups the configuration names ([`GroupInterest`]).
    fn interest(&self) -> GroupInterest {
        let settings = &self.settings;
        GroupInterest::new(
            &settings.scope_groups,
            &settings.other_groups,
            &settings.distinct_groups,
        )
    }

    /// Every scope group must exist: without it everyone would look out of scope.
    /// A named group, or a group nested in one, listed without members is read
    /// again on its own, as some providers leave `members` out of listings
    /// (asked for with `attributes=members` when the plain read lacks them too);
    /// only what that read shows counts. A member marked as a Group that the
    /// listing lacks is read by its id, and added to `people.groups`. Gives the
    /// groups (index, last request) that never came with a `members` attribute,
    /// for [`refuse_hidden_members`].
    async fn check_named_groups(
        &self,
        client: &ScimClient,
        people: &mut People,
    ) -> Result<Vec<(usize, String)>, DirectoryError> {
        let settings = &self.settings;
        let present = people
            .groups
            .iter()
            .map(|g| g.display_name.as_str())
            .collect();
        let what = format!("the displayName of a Group at {}", settings.url);
        super::check_scope_groups(
            "scim",
            &present,
            &settings.scope_groups,
            &settings.distinct_groups,
            &what,
        )?;
        super::check_named_groups(
            "scim",
            &present,
            &settings.other_groups,
            &settings.required_groups,
            &settings.distinct_groups,
            &what,
        )?;
        let interest = GroupInterest::new(
            &settings.scope_groups,
            &settings.other_groups,
            &settings.distinct_groups,
        );
        if interest.is_everything() {
            // No group decides anything: none is worth a read of its own.
            return Ok(Vec::new());
        }
        super::refuse_ambiguous_names(
            "scim",
            &interest,
            people
                .groups
                .iter()
                .map(|g| (g.id.as_str(), g.display_name.as_str())),
            "rename one of them in the directory",
        )?;
        // From the named groups down through every group nested in them: a nested
        // group listed without members would leave its people out of scope.
        let groups = &mut people.groups;
        let mut index: HashMap<String, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id.clone(), i))
            .collect();
        let user_ids: HashSet<&str> = people.users.iter().map(|(a, _)| a.id.as_str()).collect();
        let mut members_unshown: Vec<(usize, String)> = Vec::new();
        // Unmarked member ids a read as a Group did not find (404).
        let mut not_groups: HashSet<String> = HashSet::new();
        let mut visited: HashSet<usize> = HashSet::new();
        // Groups whose members a read of their own already asked for.
        let mut read_on_its_own: HashSet<usize> = HashSet::new();
        let mut pending: Vec<usize> = (0..groups.len())
            .filter(|&i| interest.wants(&groups[i].display_name))
            .collect();
        while let Some(i) = pending.pop() {
            if !visited.insert(i) {
                continue;
            }
            if groups[i].members.is_empty() && read_on_its_own.insert(i) {
                let id = groups[i].id.clone();
                match client
                    .group_with_members(&id)
                    .await
                    .map_err(directory_error(&settings.url))?
                {
                    // Gone since the listing: what the listing showed is all there is.
                    GroupRead::Gone => {}
                    GroupRead::Found {
                        group,
                        marked_groups,
                        marked_users,
                        members_shown,
                        endpoint,
                    } => {
                        if !members_shown && people.listed_without_members.contains(&id) {
                            members_unshown.push((i, endpoint));
                        }
                        groups[i].members = group.members;
                        people.marked_groups.extend(marked_groups);
                        people.marked_users.extend(marked_users);
                    }
                }
            }
            // A member that is no listed User or Group, marked as a Group or
            // not marked at all (RFC 7643 §4.2 makes `type` optional), is read
            // on its own as a Group: listings can leave groups out, or page
            // past one, and unread, its members would silently fall out of
            // scope. One marked as a User is a User the listing lacks (deleted
            // since, or out of this token's view): no identity, nothing to read.
            let parent = i;
            for member in groups[parent].members.clone() {
                if let Some(&j) = index.get(&member) {
                    pending.push(j);
                    continue;
                }
                let marked_group = people.marked_groups.contains(&member);
                if user_ids.contains(member.as_str())
                    || not_groups.contains(&member)
                    || (!marked_group && people.marked_users.contains(&member))
                {
                    continue;
                }
                match client
                    .group_with_members(&member)
                    .await
                    .map_err(directory_error(&settings.url))?
                {
                    GroupRead::Gone if !marked_group => {
                        // Unmarked and no Group: a User the listing lacks.
                        tracing::info!(
                            member = %member,
                            within = %groups[parent].display_name,
                            "a Group member with no type is no listed User, and no Group \
                             (read by id as a Group: 404): taken as a User the Users \
                             listing does not hold, deleted since or out of this token's view"
                        );
                        not_groups.insert(member);
                    }
                    GroupRead::Gone => {
                        return Err(DirectoryError::Malformed {
                            endpoint: format!("{}/Groups/{member}", base(&settings.url)),
                            what: format!(
                                "Group {:?} has a member {member:?} marked as a Group, which \
                                 the Groups listing does not hold and a read of its own does \
                                 not find (404): read without it, its members would \
                                 silently lose what {:?} gives",
                                groups[parent].display_name, groups[parent].display_name
                            ),
                        });
                    }
                    GroupRead::Found {
                        group,
                        marked_groups,
                        marked_users,
                        members_shown,
                        endpoint,
                    } => {
                        // Nesting is resolved by id: answered under another id,
                        // the Group would join nothing (its members silently
                        // out of what `parent` gives) and each reference to it
                        // would be read again, without end in a cycle.
                        if group.id != member {
                            return Err(DirectoryError::Malformed {
                                endpoint: format!("{}/Groups/{member}", base(&settings.url)),
                                what: format!(
                                    "Group {:?} has a member {member:?}{}, \
                                     which the Groups listing does not hold; read on its own \
                                     it answered with the id {:?}: its members cannot be \
                                     tied to {:?}; a Group's members must name it by its id",
                                    groups[parent].display_name,
                                    if marked_group {
                                        " marked as a Group"
                                    } else {
                                        " with no type, no listed User"
                                    },
                                    group.id,
                                    groups[parent].display_name
                                ),
                            });
                        }
                        tracing::info!(
                            group = %group.display_name,
                            id = %group.id,
                            within = %groups[parent].display_name,
                            "a nested Group missing from the Groups listing was read on its own"
                        );
                        let j = groups.len();
                        if !members_shown {
                            members_unshown.push((j, endpoint));
                        }
                        people.marked_groups.extend(marked_groups);
                        people.marked_users.extend(marked_users);
                        index.insert(group.id.clone(), j);
                        groups.push(group);
                        read_on_its_own.insert(j);
                        pending.push(j);
                    }
                }
            }
        }
        Ok(members_unshown)
    }
}

/// The base URL without its trailing slash, for naming a resource under it.
fn base(url: &url::Url) -> &str {
    url.as_str().trim_end_matches('/')
}

/// Refuses a Group the configuration names (or one nested in it) that never
/// came with a `members` attribute, in the listing, read on its own, nor asked
/// for with `attributes=members`, when no Group of this provider shows any
/// member at all (it cannot be told from a provider that never shows
/// members), or when the provider sends another Group with `"members": []`,
/// `sent_empty` (its way to say empty, so an absent attribute is not): read
/// as empty, everyone in it would lose what it gives. When other Groups show
/// their members and none comes with `[]`, an omitted `members` is the empty
/// group RFC 7643 §2.5 lets a provider leave out, and a provider that does so
/// must not fail every run for a group really empty.
fn refuse_hidden_members(
    url: &url::Url,
    groups: &[WorkspaceGroup],
    members_unshown: &[(usize, String)],
    sent_empty: Option<&WorkspaceGroup>,
) -> Result<(), DirectoryError> {
    let unshown = members_unshown
        .iter()
        .filter_map(|(i, endpoint)| groups.get(*i).map(|g| (g, endpoint)))
        .filter(|(g, _)| g.members.is_empty());
    let shows_members = groups.iter().any(|g| !g.members.is_empty());
    let why = match sent_empty {
        Some(empty) => format!(
            "while this provider sends Group {:?} with \"members\": [] (its way to say \
             empty)",
            empty.display_name
        ),
        None if shows_members => {
            for (group, _) in unshown {
                tracing::info!(
                    group = %group.display_name,
                    id = %group.id,
                    "a Group came without members, listed, read on its own and asked for with \
                     attributes=members, while other Groups show theirs: taken as empty"
                );
            }
            return Ok(());
        }
        None => "and no Group of the provider shows any member".to_owned(),
    };
    let mut unshown = unshown;
    match unshown.next() {
        Some((group, endpoint)) => Err(DirectoryError::Malformed {
            endpoint: format!(
                "{}{}",
                base(url),
                endpoint.strip_prefix("GET ").unwrap_or(endpoint)
            ),
            what: format!(
                "Group {:?} came without a members attribute, in the listing, read on its \
                 own and asked for with attributes=members, {why}: the members may be hidden \
                 from this token, and read as empty everyone in the group would lose what it \
                 gives; check that the directory's token (directory.token, or the file \
                 directory.token_file names) may read group members (a really empty group is \
                 sent with \"members\": [])",
                group.display_name
            ),
        }),
        None => Ok(()),
    }
}

/// A Group the configuration names, or one nested in it, that does not hold
/// every User whose own `groups` attribute (RFC 7643 §4.1.2: direct, nested
/// or dynamic membership) names it.
struct ShortGroup<'a> {
    group: &'a WorkspaceGroup,
    /// The Users naming it that it holds neither directly nor through a
    /// nested Group, sorted.
    missing: Vec<&'a str>,
    /// How many Users name it.
    named: usize,
}

/// The [`ShortGroup`]s, in listing order, leaving out the `inactive` Users
/// ([`inactive_users`]): some providers list only enabled members of a Group
/// while a disabled User's own `groups` still names it, and a disabled
/// person loses access whatever their groups say. With no group named,
/// none: no group decides anything.
fn short_groups<'a>(
    people: &'a People,
    interest: &GroupInterest,
    inactive: &HashSet<String>,
) -> Vec<ShortGroup<'a>> {
    if people.named_by_users.is_empty() || interest.is_everything() {
        return Vec::new();
    }
    let by_id: HashMap<&str, &WorkspaceGroup> =
        people.groups.iter().map(|g| (g.id.as_str(), g)).collect();
    // The groups that decide something, and every group nested in them.
    let mut reached: HashSet<&str> = HashSet::new();
    let mut pending: Vec<&WorkspaceGroup> = people
        .groups
        .iter()
        .filter(|g| interest.wants(&g.display_name))
        .collect();
    while let Some(group) = pending.pop() {
        if reached.insert(group.id.as_str()) {
            pending.extend(
                group
                    .members
                    .iter()
                    .filter_map(|member| by_id.get(member.as_str()).copied()),
            );
        }
    }
    let mut short = Vec::new();
    for group in &people.groups {
        if !reached.contains(group.id.as_str()) {
            continue;
        }
        let Some(naming) = people.named_by_users.get(&group.id) else {
            continue;
        };
        let held = group.members_through_nesting(&by_id);
        let mut missing: Vec<&str> = naming
            .iter()
            .map(String::as_str)
            .filter(|user| !held.contains(user) && !inactive.contains(*user))
            .collect();
        if missing.is_empty() {
            continue;
        }
        missing.sort_unstable();
        missing.dedup();
        short.push(ShortGroup {
            group,
            missing,
            named: naming.len(),
        });
    }
    short
}

/// Refuses a Group the configuration names, or one nested in it, that does
/// not hold every User whose own `groups` attribute names it, after the
/// Group was read on its own and the directory read twice (a member removed
/// between the Users and the Groups listings shows on both sides the second
/// time): the provider leaves the Group's `members` out or caps them (a size
/// limit on multi-valued attributes, a view that hides some from this
/// token), and read short, everyone left out would look out of scope and
/// lose what the Group gives. As the LDAP source refuses a group whose
/// `member` the bind account cannot read.
fn refuse_groups_without_their_members(
    url: &url::Url,
    people: &People,
    interest: &GroupInterest,
    inactive: &HashSet<String>,
) -> Result<(), DirectoryError> {
    let short_groups = short_groups(people, interest, inactive);
    let Some(short) = short_groups.first() else {
        return Ok(());
    };
    let group = short.group;
    let first = short.missing[0];
    let user_name = people
        .users
        .iter()
        .find(|(account, _)| account.id == first)
        .map(|(account, _)| format!(" ({})", account.user_name.trim()))
        .unwrap_or_default();
    let endpoint = format!("{}/Groups/{}", base(url), group.id);
    let token = "check that the directory's token (directory.token, or the file \
                 directory.token_file names) may read group members";
    if group.members.is_empty() {
        let others = match short.missing.len() - 1 {
            0 => String::new(),
            1 => " and 1 other User".to_owned(),
            n => format!(" and {n} other Users"),
        };
        return Err(DirectoryError::Malformed {
            endpoint,
            what: format!(
                "Group {:?} shows no members, in the listing or read on its own, yet the \
                 groups of User {first:?}{user_name}{others} name it: the provider leaves \
                 the Group's members out, and read as empty everyone in it would lose what \
                 it gives; {token}",
                group.display_name
            ),
        });
    }
    Err(DirectoryError::Malformed {
        endpoint,
        what: format!(
            "Group {:?} shows {} member{}, in the listing and read on its own, yet {} of the \
             {} Users whose own groups name it are not among them (User {first:?}{user_name} \
             the first), in two reads of the directory: either the provider caps or leaves \
             out part of the Group's members (read short, everyone left out would lose what \
             it gives), or the Users' own groups are stale (some providers keep naming a \
             Group a User has left); compare the Group's members with the User's groups \
             (`{}/Users/{first}`) and the directory's admin console: if the Group does not \
             hold {first:?}, its groups are stale, for the provider to fix; if it does, check \
             the provider's limit on the members it returns for a Group, and {token}",
            group.display_name,
            group.members.len(),
            if group.members.len() == 1 { "" } else { "s" },
            short.missing.len(),
            short.named,
            base(url),
        ),
    })
}

/// The ids of the Users that are disabled: `active: false`, or without
/// `active` where `directory.missing_active = "inactive"` reads that so.
fn inactive_users(people: &People, missing_active: MissingActive) -> HashSet<String> {
    let mut inactive: HashSet<String> = people
        .users
        .iter()
        .filter(|(account, _)| !account.active)
        .map(|(account, _)| account.id.clone())
        .collect();
    if missing_active == MissingActive::Inactive {
        inactive.extend(people.without_active.iter().cloned());
    }
    inactive
}

/// Puts each `inactive` User back among the members of a Group the
/// configuration names (or one nested in it) that its own `groups` names
/// and the Group's `members` leave out: a provider that lists only enabled
/// members. Whatever groups a disabled person is in, they lose access, but a
/// group still counts for them where it protects (`safety.protected_groups`:
/// read from the Group alone, a disabled break-glass admin would lose that
/// protection and be deactivated).
fn count_in_inactive_users_left_out(
    people: &mut People,
    interest: &GroupInterest,
    inactive: &HashSet<String>,
) {
    let none_aside = HashSet::new();
    let left_out: Vec<(String, Vec<String>)> = short_groups(people, interest, &none_aside)
        .into_iter()
        .map(|short| {
            let users = short
                .missing
                .into_iter()
                .filter(|user| inactive.contains(*user))
                .map(str::to_owned)
                .collect();
            (short.group.id.clone(), users)
        })
        .collect();
    for (id, users) in left_out {
        if users.is_empty() {
            continue;
        }
        if let Some(group) = people.groups.iter_mut().find(|g| g.id == id) {
            tracing::debug!(
                group = %group.display_name,
                users = users.len(),
                "disabled Users whose own groups name a Group its members leave out are \
                 counted in it"
            );
            group.members.extend(users);
        }
    }
}

/// The workspace client's errors, as the directory's: the same endpoint, status,
/// SCIM type and detail, and the same retry classification. A hint to check the
/// base URL, or a redirect's, names `directory.url`, the key this client was made
/// from. A 401 or 403 a web page said (a WAF's, a proxy's block page: the
/// provider answers in JSON) says to check what stands in front of `url`, as
/// the workspace's does, and not the token.
fn directory_error(url: &url::Url) -> impl FnOnce(WorkspaceError) -> DirectoryError + '_ {
    move |error| scim_error(error, url)
}

/// [`directory_error`] of one error, for the provider at `url`.
fn scim_error(error: WorkspaceError, url: &url::Url) -> DirectoryError {
    let in_front = matches!(error.status(), Some(401 | 403)) && error.answered_by_web_page();
    let ours = |text: String| {
        text.replace(
            crate::workspace::WORKSPACE_URL_HINT,
            "`directory.url` must be the SCIM base URL, up to and including the version",
        )
        .replace(crate::workspace::WORKSPACE_URL_KEY, "(directory.url)")
    };
    match error {
        WorkspaceError::Settings(message) => DirectoryError::Settings(message),
        WorkspaceError::Transport {
            endpoint,
            message,
            transient,
        } => DirectoryError::Transport {
            endpoint,
            message,
            transient,
        },
        WorkspaceError::Status {
            endpoint,
            status,
            scim_type,
            detail,
            retry_after,
        } => DirectoryError::Status {
            endpoint,
            status,
            code: scim_type,
            detail: if in_front {
                format!(
                    "{}; {}",
                    ours(detail),
                    super::remote::check_in_front(&url.origin().ascii_serialization())
                )
            } else {
                ours(detail)
            },
            retry_after,
        },
        WorkspaceError::Malformed { endpoint, what }
        | WorkspaceError::NotSent {
            endpoint,
            reason: what,
        } => DirectoryError::Malformed {
            endpoint,
            what: ours(what),
        },
    }
}

/// Users without `active`, read as `directory.missing_active` says: by default
/// [`refuse_some_users_without_active`].
fn read_users_without_active(
    url: &url::Url,
    missing_active: MissingActive,
    people: &mut People,
) -> Result<(), DirectoryError> {
    match missing_active {
        MissingActive::Refuse => refuse_some_users_without_active(url, people),
        // Parsed active already: the attribute's absence reads as enabled.
        MissingActive::Active => Ok(()),
        MissingActive::Inactive => {
            if !people.users.is_empty() && people.without_active.len() == people.users.len() {
                return Err(DirectoryError::Malformed {
                    endpoint: format!("{}/Users", base(url)),
                    what: format!(
                        "none of the {} Users came with an active attribute, and \
                         directory.missing_active = \"inactive\" would read every one as \
                         disabled: a provider that sends active only when true sends it for \
                         its enabled people; check the setting",
                        people.users.len()
                    ),
                });
            }
            let without: HashSet<&str> = people.without_active.iter().map(String::as_str).collect();
            for (account, _) in &mut people.users {
                if without.contains(account.id.as_str()) {
                    account.active = false;
                }
            }
            Ok(())
        }
    }
}

/// `active` is optional (RFC 7643 §4.1.1), and a User without it is taken as
/// active: a provider that sends it for no User has no such notion, and its
/// leavers leave `/Users` (said once a read, at info). Sent for some Users
/// but not others, it is refused: the ones without it may be disabled people
/// the provider leaves it off for (or enabled ones, when only `false` is
/// sent), and guessed either way someone keeps access or loses it.
fn refuse_some_users_without_active(url: &url::Url, people: &People) -> Result<(), DirectoryError> {
    let Some(first) = people.without_active.first() else {
        return Ok(());
    };
    if people.without_active.len() == people.users.len() {
        tracing::info!(
            url = %url,
            users = people.users.len(),
            "no User of the SCIM directory has an active attribute: all are taken as active, \
             and a person leaves by leaving the Users listing"
        );
        return Ok(());
    }
    let user_name = people
        .users
        .iter()
        .find(|(account, _)| &account.id == first)
        .map(|(account, _)| format!(" ({})", account.user_name.trim()))
        .unwrap_or_default();
    let others = match people.without_active.len() - 1 {
        0 => String::new(),
        1 => " and 1 other User".to_owned(),
        n => format!(" and {n} other Users"),
    };
    Err(DirectoryError::Malformed {
        endpoint: format!("{}/Users/{first}", base(url)),
        what: format!(
            "User {first:?}{user_name}{others} came without an active attribute while {} \
             other Users of the listing have one: whether they are enabled cannot be told, \
             and read either way someone would keep or lose access wrongly; map active for \
             every User, or set directory.missing_active to \"active\" or \"inactive\" \
             (what the provider's absent active means)",
            people.users.len() - people.without_active.len()
        ),
    })
}

/// Refuses a User whose `userName` is empty or only spaces, as the other sources
/// refuse a person without one: it could match no account, and would be
/// provisioned with no name to sign in with.
fn refuse_blank_user_names<'a>(
    url: &url::Url,
    mut accounts: impl Iterator<Item = &'a Account>,
) -> Result<(), DirectoryError> {
    match accounts.find(|a| a.user_name.trim().is_empty()) {
        Some(account) => Err(DirectoryError::Malformed {
            endpoint: format!(
                "{}/Users/{}",
                url.as_str().trim_end_matches('/'),
                account.id
            ),
            what: format!(
                "User {:?} has an empty userName{}",
                account.id,
                account
                    .email
                    .as_deref()
                    .map(|email| format!(" (email {email:?})"))
                    .unwrap_or_default()
            ),
        }),
        None => Ok(()),
    }
}

fn identities(people: Vec<(Account, Option<String>)>, groups: &[WorkspaceGroup]) -> Vec<Identity> {
    let memberships = group_names_by_member(groups);
    people
        .into_iter()
        .map(|(account, department)| {
            let groups = memberships
                .get(account.id.as_str())
                .map(|names| {
                    let mut names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
                    names.sort();
                    names
                })
                .unwrap_or_default();
            Identity {
                status: if account.active {
                    IdentityStatus::Active
                } else {
                    IdentityStatus::Suspended
                },
                user_name: account.user_name.trim().to_owned(),
                email: present(account.email),
                given_name: present(account.given_name),
                family_name: present(account.family_name),
                display_name: present(account.display_name),
                department,
                groups,
                id: account.id,
            }
        })
        .collect()
}

/// A value as the other connectors take it: trimmed, and none when empty (an
/// empty `givenName` would otherwise be written to the workspace on every run).
fn present(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// For every member id, the names of the groups it is in, counting a group that is
/// a member of another as being in that one too.
fn group_names_by_member(groups: &[WorkspaceGroup]) -> HashMap<&str, HashSet<&str>> {
    let by_id: HashMap<&str, &WorkspaceGroup> = groups.iter().map(|g| (g.id.as_str(), g)).collect();
    let mut containers: HashMap<&str, Vec<&str>> = HashMap::new();
    for group in groups {
        for member in &group.members {
            if by_id.contains_key(member.as_str()) {
                containers
                    .entry(member.as_str())
                    .or_default()
                    .push(group.id.as_str());
            }
        }
    }
    // Each group's name and the names of every group that contains it, however deep.
    let enclosing = |start: &str| -> HashSet<&str> {
        let mut seen: HashSet<&str> = HashSet::from([start]);
        let mut stack = vec![start];
        while let Some(id) = stack.pop() {
            for &outer in containers.get(id).into_iter().flatten() {
                if seen.insert(outer) {
                    stack.push(outer);
                }
            }
        }
        seen.into_iter()
            .filter_map(|id| by_id.get(id).map(|g| g.display_name.as_str()))
            .collect()
    };
    let mut names: HashMap<&str, HashSet<&str>> = HashMap::new();
    for group in groups {
        let outer = enclosing(group.id.as_str());
        for member in &group.members {
            if !by_id.contains_key(member.as_str()) {
                names.entry(member.as_str()).or_default().extend(&outer);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn group(id: &str, name: &str, members: &[&str]) -> WorkspaceGroup {
        WorkspaceGroup {
            id: id.into(),
            display_name: name.into(),
            members: members.iter().map(|&m| m.to_owned()).collect(),
        }
    }

    fn person(id: &str, active: bool) -> (Account, Option<String>) {
        (
            Account {
                id: id.into(),
                user_name: format!("{id}@example.com"),
                external_id: Some("ignored".into()),
                given_name: Some("Given".into()),
                family_name: None,
                display_name: None,
                email: Some(format!("{id}@example.com")),
                active,
                roles: Vec::new(),
            },
            (id == "u1").then(|| "Engineering".to_owned()),
        )
    }

    #[test]
    fn people_become_identities_with_their_groups_through_nesting() {
        let groups = [
            group("g-all", "Taskade Users", &["g-eng", "u3"]),
            group("g-eng", "Engineering", &["u1", "g-platform"]),
            group("g-platform", "Platform", &["u2"]),
            group("g-empty", "Nobody", &[]),
        ];
        let identities = identities(
            vec![person("u1", true), person("u2", false), person("u3", true)],
            &groups,
        );
        let by_id: HashMap<&str, &Identity> =
            identities.iter().map(|i| (i.id.as_str(), i)).collect();
        assert_eq!(by_id["u1"].groups, ["Engineering", "Taskade Users"]);
        assert_eq!(
            by_id["u2"].groups,
            ["Engineering", "Platform", "Taskade Users"]
        );
        assert_eq!(by_id["u3"].groups, ["Taskade Users"]);
        assert_eq!(by_id["u1"].status, IdentityStatus::Active);
        assert_eq!(by_id["u2"].status, IdentityStatus::Suspended);
        assert_eq!(by_id["u1"].department.as_deref(), Some("Engineering"));
        assert_eq!(by_id["u1"].user_name, "u1@example.com");
        assert_eq!(by_id["u1"].given_name.as_deref(), Some("Given"));
    }

    #[test]
    fn a_user_with_a_blank_user_name_fails_the_snapshot_naming_it() {
        let url = url::Url::parse("https://idp.example.com/scim/v2/").unwrap();
        let (mut blank, _) = person("u2", true);
        blank.user_name = "  ".into();
        blank.email = Some("ben@example.com".into());
        let error =
            refuse_blank_user_names(&url, [person("u1", true).0, blank].iter()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "https://idp.example.com/scim/v2/Users/u2: malformed response: User \"u2\" has an \
             empty userName (email \"ben@example.com\")"
        );
        assert!(!error.is_transient());
        refuse_blank_user_names(&url, [person("u1", true).0].iter()).unwrap();
    }

    /// Empty and padded values are taken as the other connectors take them, so
    /// an empty `givenName` is not planned onto the workspace on every run.
    #[test]
    fn empty_values_are_none_and_values_are_trimmed() {
        let (mut account, department) = person("u1", true);
        account.user_name = " u1@example.com ".into();
        account.given_name = Some("".into());
        account.family_name = Some("  Lovelace ".into());
        account.email = Some("   ".into());
        let identities = identities(vec![(account, department)], &[]);
        let u1 = &identities[0];
        assert_eq!(u1.user_name, "u1@example.com");
        assert_eq!(u1.given_name, None);
        assert_eq!(u1.family_name.as_deref(), Some("Lovelace"));
        assert_eq!(u1.email, None);
    }

    #[test]
    fn a_cycle_of_groups_ends_and_puts_members_in_every_group_of_it() {
        let groups = [
            group("a", "Loop A", &["b", "u1"]),
            group("b", "Loop B", &["a"]),
        ];
        let identities = identities(vec![person("u1", true)], &groups);
        assert_eq!(identities[0].groups, ["Loop A", "Loop B"]);
    }

    #[test]
    fn groups_that_share_a_name_give_it_once() {
        let groups = [group("a", "Sales", &["u1"]), group("b", "Sales", &["u1"])];
        let identities = identities(vec![person("u1", true)], &groups);
        assert_eq!(identities[0].groups, ["Sales"]);
    }

    #[test]
    fn provider_errors_keep_their_endpoint_status_and_retry_class() {
        let throttled = directory_error(&test_url())(WorkspaceError::Status {
            endpoint: "GET /Users?startIndex=1&count=100".into(),
            status: 429,
            scim_type: None,
            detail: "slow down".into(),
            retry_after: Some(Duration::from_secs(3)),
        });
        assert!(throttled.is_transient());
        assert_eq!(
            crate::retry::Transient::retry_after(&throttled),
            Some(Duration::from_secs(3))
        );
        assert!(
            throttled
                .to_string()
                .starts_with("GET /Users?startIndex=1&count=100: HTTP 429")
        );
        let denied = directory_error(&test_url())(WorkspaceError::Status {
            endpoint: "GET /Users".into(),
            status: 401,
            scim_type: None,
            detail: "bad token".into(),
            retry_after: None,
        });
        assert!(!denied.is_transient());
        let malformed = directory_error(&test_url())(WorkspaceError::Malformed {
            endpoint: "GET /Groups".into(),
            what: "Group without id".into(),
        });
        assert_eq!(
            malformed.to_string(),
            "GET /Groups: malformed response: Group without id"
        );
        assert!(!denied.to_string().contains("in front of"), "{denied}");
    }

    /// What the provider listed: `groups`, and Users "u1" and "u2" whose own
    /// `groups` name `named` (group ids).
    fn listed(groups: Vec<WorkspaceGroup>, named: &[&str]) -> crate::workspace::People {
        crate::workspace::People {
            users: vec![person("u1", true), person("u2", true)],
            groups,
            named_by_users: named
                .iter()
                .map(|&g| (g.to_owned(), vec!["u2".to_owned(), "u1".to_owned()]))
                .collect(),
            listed_without_members: HashSet::new(),
            marked_groups: HashSet::new(),
            marked_users: HashSet::new(),
            without_active: Vec::new(),
            whole: true,
        }
    }

    /// `active` sent for no User is the provider's way (all active); sent for
    /// some and not others, the snapshot fails naming the first without it.
    #[test]
    fn users_without_active_among_users_with_it_fail_the_snapshot() {
        let url = test_url();
        let mut people = listed(Vec::new(), &[]);
        people.users.push(person("u3", false));
        refuse_some_users_without_active(&url, &people).unwrap();
        people.without_active = vec!["u1".into(), "u2".into(), "u3".into()];
        refuse_some_users_without_active(&url, &people).unwrap();
        people.without_active = vec!["u2".into()];
        let error = refuse_some_users_without_active(&url, &people).unwrap_err();
        assert_eq!(
            error.to_string(),
            "https://idp.example.com:8443/scim/v2/Users/u2: malformed response: User \"u2\" \
             (u2@example.com) came without an active attribute while 2 other Users of the \
             listing have one: whether they are enabled cannot be told, and read either way \
             someone would keep or lose access wrongly; map active for every User, or set \
             directory.missing_active to \"active\" or \"inactive\" (what the provider's \
             absent active means)"
        );
        assert!(!error.is_transient());
        people.without_active = vec!["u2".into(), "u3".into()];
        let error = refuse_some_users_without_active(&url, &people).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("(u2@example.com) and 1 other User came"),
            "{error}"
        );
    }

    /// A group of interest never shown with a `members` attribute fails the
    /// snapshot when no Group shows any member; when another does, an omitted
    /// `members` is an empty group (RFC 7643 §2.5).
    #[test]
    fn a_group_never_shown_with_members_fails_only_when_no_group_shows_any() {
        let url = test_url();
        let endpoint = "GET /Groups/g-eng?attributes=members".to_owned();
        let hidden = [
            group("g-all", "Taskade Users", &[]),
            group("g-eng", "Engineering", &[]),
        ];
        let error =
            refuse_hidden_members(&url, &hidden, &[(1, endpoint.clone())], None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "https://idp.example.com:8443/scim/v2/Groups/g-eng?attributes=members: malformed \
             response: Group \"Engineering\" came without a members attribute, in the listing, \
             read on its own and asked for with attributes=members, and no Group of the \
             provider shows any member: the members may be hidden from this token, and read \
             as empty everyone in the group would lose what it gives; check that the \
             directory's token (directory.token, or the file directory.token_file names) may \
             read group members (a really empty group is sent with \"members\": [])"
        );
        refuse_hidden_members(&url, &hidden, &[], None).unwrap();
        let shown = [
            group("g-all", "Taskade Users", &["u1"]),
            group("g-eng", "Engineering", &[]),
        ];
        refuse_hidden_members(&url, &shown, &[(1, endpoint.clone())], None).unwrap();
        // The same, from a provider that sends another Group with `[]`.
        let mut shown = shown.to_vec();
        shown.push(group("g-none", "Nobody", &[]));
        let error =
            refuse_hidden_members(&url, &shown, &[(1, endpoint)], Some(&shown[2])).unwrap_err();
        assert!(
            error.to_string().contains(
                "asked for with attributes=members, while this provider sends Group \"Nobody\" \
                 with \"members\": [] (its way to say empty): the members may be hidden"
            ),
            "{error}"
        );
    }

    fn scoped_to(name: &str) -> GroupInterest {
        GroupInterest::new(&[name.to_owned()], &[], &[])
    }

    /// A Group that shows no members while Users' own `groups` name it was
    /// read without its members: refused, naming the Group and a User. A Group
    /// really empty, one holding the Users through a nested Group, one no
    /// configured group reaches, or a configuration naming no group (none
    /// decides anything) is not.
    #[test]
    fn an_empty_group_the_users_name_fails_the_snapshot() {
        let url = test_url();
        let scope = scoped_to("Taskade Users");
        let nested = vec![
            group("g-all", "Taskade Users", &["g-eng"]),
            group("g-eng", "Engineering", &[]),
            group("g-other", "Marketing", &[]),
        ];
        let error = refuse_groups_without_their_members(
            &url,
            &listed(nested.clone(), &["g-eng"]),
            &scope,
            &HashSet::new(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "https://idp.example.com:8443/scim/v2/Groups/g-eng: malformed response: Group \
             \"Engineering\" shows no members, in the listing or read on its own, yet the groups \
             of User \"u1\" (u1@example.com) and 1 other User name it: the provider leaves the \
             Group's members out, and read as empty everyone in it would lose what it gives; \
             check that the directory's token (directory.token, or the file \
             directory.token_file names) may read group members"
        );
        assert!(!error.is_transient());
        for (groups, named, interest) in [
            (nested.clone(), vec![], scope.clone()),
            (nested.clone(), vec!["g-other"], scope.clone()),
            (
                vec![
                    group("g-all", "Taskade Users", &["g-eng"]),
                    group("g-eng", "Engineering", &["u1", "u2"]),
                ],
                vec!["g-all", "g-eng"],
                scope.clone(),
            ),
            (nested, vec!["g-eng"], GroupInterest::new(&[], &[], &[])),
        ] {
            refuse_groups_without_their_members(
                &url,
                &listed(groups, &named),
                &interest,
                &HashSet::new(),
            )
            .unwrap();
        }
    }

    /// A Group holding some of the Users that name it, directly or through a
    /// nested Group, is refused naming how many are missing and the first, and
    /// both causes: a cap on the Group's members, or the Users' own `groups`
    /// left stale, with the User's URL to compare.
    #[test]
    fn a_group_short_of_the_users_that_name_it_fails_the_snapshot() {
        let url = test_url();
        let mut people = listed(
            vec![
                group("g-all", "Taskade Users", &["g-eng"]),
                group("g-eng", "Engineering", &["u1"]),
            ],
            &["g-all"],
        );
        people.users.push(person("u3", true));
        people
            .named_by_users
            .get_mut("g-all")
            .unwrap()
            .push("u3".into());
        let scope = scoped_to("Taskade Users");
        let error = refuse_groups_without_their_members(&url, &people, &scope, &HashSet::new())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "https://idp.example.com:8443/scim/v2/Groups/g-all: malformed response: Group \
             \"Taskade Users\" shows 1 member, in the listing and read on its own, yet 2 of \
             the 3 Users whose own groups name it are not among them (User \"u2\" \
             (u2@example.com) the first), in two reads of the directory: either the provider \
             caps or leaves out part of the Group's members (read short, everyone left out \
             would lose what it gives), or the Users' own groups are stale (some providers \
             keep naming a Group a User has left); compare the Group's members with the \
             User's groups (`https://idp.example.com:8443/scim/v2/Users/u2`) and the \
             directory's admin console: if the Group does not hold \"u2\", its groups are \
             stale, for the provider to fix; if it does, check the provider's limit on the \
             members it returns for a Group, and check that the directory's token \
             (directory.token, or the file directory.token_file names) may read group members"
        );
        assert!(!error.is_transient());
    }

    /// A disabled User (cy) that a Group leaves out while his own `groups`
    /// names it is no cap, and is counted in the Group (a protected group
    /// keeps protecting him); an enabled one left out still fails the
    /// snapshot. `directory.missing_active = "inactive"` makes a User without
    /// `active` disabled here too.
    #[test]
    fn a_disabled_user_left_out_of_a_group_is_counted_in_not_refused() {
        let url = test_url();
        let scope = scoped_to("Taskade Users");
        let mut people = listed(vec![group("g-all", "Taskade Users", &["u1", "u2"])], &[]);
        people.users.push(person("u3", false));
        people
            .named_by_users
            .insert("g-all".into(), vec!["u1".into(), "u2".into(), "u3".into()]);
        let inactive = inactive_users(&people, MissingActive::Refuse);
        assert_eq!(inactive, HashSet::from(["u3".to_owned()]));
        count_in_inactive_users_left_out(&mut people, &scope, &inactive);
        assert_eq!(people.groups[0].members, ["u1", "u2", "u3"]);
        refuse_groups_without_their_members(&url, &people, &scope, &inactive).unwrap();
        let identities = identities(people.users.clone(), &people.groups);
        assert_eq!(identities[2].groups, ["Taskade Users"]);
        assert_eq!(identities[2].status, IdentityStatus::Suspended);

        // ben, enabled, left out: still refused.
        people.groups[0].members = vec!["u1".into()];
        count_in_inactive_users_left_out(&mut people, &scope, &inactive);
        assert_eq!(people.groups[0].members, ["u1", "u3"]);
        let error =
            refuse_groups_without_their_members(&url, &people, &scope, &inactive).unwrap_err();
        assert!(
            error.to_string().contains(
                "yet 1 of the 3 Users whose own groups name it are not among them (User \"u2\""
            ),
            "{error}"
        );

        people.without_active = vec!["u2".into()];
        assert_eq!(inactive_users(&people, MissingActive::Refuse).len(), 1);
        assert_eq!(
            inactive_users(&people, MissingActive::Inactive),
            HashSet::from(["u2".to_owned(), "u3".to_owned()])
        );
    }

    fn test_url() -> url::Url {
        url::Url::parse("https://idp.example.com:8443/scim/v2/").unwrap()
    }

    /// A 401 or 403 a web page said is what stands in front of the provider,
    /// named by its origin, not the token; the same page with a 502 is only
    /// the page.
    #[test]
    fn a_refusal_by_a_web_page_names_what_is_in_front_of_the_provider() {
        let page = |status: u16| {
            directory_error(&test_url())(WorkspaceError::Status {
                endpoint: "GET /Users".into(),
                status,
                scim_type: None,
                detail: format!(
                    "{} (\"Request Rejected\"){}",
                    crate::workspace::WEB_PAGE,
                    crate::workspace::NOT_SCIM_JSON
                ),
                retry_after: None,
            })
            .to_string()
        };
        for status in [401, 403] {
            let said = page(status);
            assert!(
                said.ends_with(
                    "; so not the credential: check the proxy, firewall or WAF in front of \
                     https://idp.example.com:8443 (its rules and allow-list for this machine's \
                     address), and HTTPS_PROXY/NO_PROXY"
                ),
                "{said}"
            );
        }
        assert!(!page(502).contains("in front of"), "{}", page(502));
    }
}
