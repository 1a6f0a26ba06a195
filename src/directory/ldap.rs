//! LDAP directories (`kind = "ldap"`): Active Directory and OpenLDAP, read-only.
//!
//! - Connection: `ldaps://`, or `ldap://` upgraded with StartTLS (`start_tls`), or
//!   plain `ldap://`; a simple bind as `bind_dn` with the password from
//!   `bind_password_file`. TLS trusts the system's roots (every one that loads:
//!   ldap3's own loading trusted none when one file failed; each that does not is
//!   logged with its file), or only `ca_file` when
//!   it is set (a private CA). One connection per snapshot; every operation, and every
//!   entry of a search, is bounded by `timeout`. Errors name the server and the
//!   operation, and what to check where the cause is known: `ldaps://` to a port
//!   that answers in plain LDAP, `ldap://` to one that hangs up on it (a TLS port),
//!   a certificate issued to another name, a bind Active Directory refuses for a
//!   reason a right password does not fix (`data 532`, expired), a bind that wants
//!   encryption, a referral (with the URLs it refers to), a StartTLS the server
//!   refuses as `unavailable` (52: it has no certificate; failed at once, not
//!   retried as a busy server's 52 is).
//! - Users: one subtree search of `base_dn` with `user_filter` (by default the
//!   flavor's people that have the userName attribute), in pages of
//!   `page_size` (Simple Paged Results, RFC 2696; Active Directory answers at most
//!   1,000 entries a page). Groups: one search of `group_base_dn` (default
//!   `base_dn`) with `group_filter`; members from `member` (and on OpenLDAP
//!   `uniqueMember`, without its optional `#'…'B`, and `memberUid`, by `uid`). A
//!   member value is compared with the entries' DNs as RFC 4514 compares DNs:
//!   case, spaces, escapes (`\2C` or `\,`, `\C3\A9` or `é`) and the order of a
//!   multi-valued RDN do not matter. Active Directory sends the members of a group
//!   of more than 1,500 as `member;range=0-1499`; the rest is read range by
//!   range, each read with the group's `uSNChanged`: when it moved on since the
//!   first range (a member removed or added in between shifts the positions), the
//!   group is read again from its first range, up to three times, then the
//!   snapshot fails.
//! - A person's groups are the groups the configuration names (`scope_groups`, the
//!   mappings and `safety.protected_groups`; every group when it names none) and
//!   the groups nested in them: a
//!   member that is a group brings its members (a cycle is harmless). Only those
//!   groups' further member ranges are read. A member that is neither a user of the
//!   user search nor a group of the group search is looked for among the groups
//!   of the domain (the `DC=` root of `group_base_dn`, listed once, with the
//!   flavor's group classes whatever `group_filter` says): a group found there
//!   (Domain Admins in `CN=Users`, or one a narrowed `group_filter` leaves out) is
//!   read with its members, and logged. Other members
//!   (computers, contacts, people outside `base_dn`) are left out. A group's
//!   name is its `cn`; of several `cn` values (OpenLDAP allows aliases), the one
//!   its DN is named by, else the first in alphabetical order, never the first
//!   the server sends. A group in use that shows no members, yet a user's
//!   `memberOf` names (one search each), fails the snapshot: its `member` is
//!   not readable by the bind account (left out, as from an empty group).
//!   Membership through Active Directory's primary group
//!   (`primaryGroupID`, usually "Domain Users"), which is not in `member`, counts:
//!   the user is a member of the group whose `objectSid` is the user's own domain
//!   SID with that RID.
//! - Status, Active Directory: ACCOUNTDISABLE (0x2) in `userAccountControl`, or an
//!   `accountExpires` in the past → suspended; otherwise active. A user without
//!   either attribute fails the snapshot (AD sets both on every user; absent, they
//!   were not readable, e.g. from a Global Catalog, which config refuses).
//!   OpenLDAP: an administrative lock (`pwdAccountLockedTime: 000001010000Z`, ppolicy)
//!   or a `shadowExpire` day (RFC 2307 `shadowAccount`, as `chage -E` sets it) that
//!   has come → suspended; a lock after failed logins (any other time) ends by
//!   itself and is not. A deleted entry is absent. There is no "deprovisioned" status.
//! - Ids: `objectGUID` (16 bytes, written as the usual GUID text) on Active
//!   Directory, `entryUUID` on OpenLDAP, or `id_attribute`. userName:
//!   `userPrincipalName` on Active Directory, `mail` on OpenLDAP, or
//!   `user_name_attribute`. LDAP does not order an attribute's values, so an id or
//!   userName attribute with several values (repeats in another case aside) fails
//!   the snapshot, naming them, rather than follow whichever came first; the email
//!   of several `mail` values is the one that is the userName, else the first in
//!   alphabetical order. Of several `givenName`, `sn`, `displayName` or department
//!   values (OpenLDAP's `inetOrgPerson` allows several, say `Müller` and
//!   `Mueller`), the first in alphabetical order (ignoring case) is taken, whatever
//!   order the server sends them in.
//! - Anything wrong fails the whole snapshot, never a partial directory: a search
//!   that ends with an error (or any page of it: a server may cut a page short,
//!   say at a time limit, and still hand out a cookie for the next), a paged
//!   search that would never end (a cookie handed back with no entry since it
//!   was last handed out, or an entry sent twice: a page replayed), an entry
//!   that cannot be decoded, a user without an id or a userName (narrow `user_filter`, e.g. `(mail=*)`, to leave such entries
//!   out), two users with one id, a `scope_groups` name no group has.
//! - No `changes_since` delta: the daemon's sweep reads the whole directory (a
//!   deleted entry is only seen as absent without access to tombstones).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ldap3::adapters::{Adapter, PagedResults};
use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapError, ResultEntry, Scope, SearchEntry,
    SearchOptions, SearchResult, SearchStream,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{DirectoryError, GroupInterest, Secret};
use crate::model::{DirectorySnapshot, Identity, IdentityStatus};
use crate::retry::RetryPolicy;

/// Which server family the defaults (filters, attributes, status) are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum LdapFlavor {
    #[default]
    #[serde(rename = "active_directory")]
    ActiveDirectory,
    #[serde(rename = "openldap")]
    OpenLdap,
}

impl LdapFlavor {
    /// People who have the attribute that becomes their userName. Built-in
    /// accounts (Active Directory's Guest, krbtgt) and service entries without
    /// one would otherwise fail every snapshot.
    pub fn default_user_filter(self, user_name_attribute: &str) -> String {
        let people = match self {
            LdapFlavor::ActiveDirectory => "(objectCategory=person)(objectClass=user)",
            LdapFlavor::OpenLdap => "(objectClass=inetOrgPerson)",
        };
        format!("(&{people}({user_name_attribute}=*))")
    }

    pub fn default_group_filter(self) -> &'static str {
        match self {
            LdapFlavor::ActiveDirectory => "(objectClass=group)",
            LdapFlavor::OpenLdap => "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))",
        }
    }

    pub fn default_id_attribute(self) -> &'static str {
        match self {
            LdapFlavor::ActiveDirectory => "objectGUID",
            LdapFlavor::OpenLdap => "entryUUID",
        }
    }

    pub fn default_user_name_attribute(self) -> &'static str {
        match self {
            LdapFlavor::ActiveDirectory => "userPrincipalName",
            LdapFlavor::OpenLdap => "mail",
        }
    }

    fn department_attribute(self) -> &'static str {
        match self {
            LdapFlavor::ActiveDirectory => "department",
            LdapFlavor::OpenLdap => "departmentNumber",
        }
    }

    fn member_attributes(self) -> &'static [&'static str] {
        match self {
            LdapFlavor::ActiveDirectory => &["member"],
            LdapFlavor::OpenLdap => &["member", "uniqueMember"],
        }
    }

    /// What tells a user's primary group: its `primaryGroupID` (the group's RID)
    /// and the user's own `objectSid` (whose domain the group shares).
    fn primary_group_attributes(self) -> &'static [&'static str] {
        match self {
            LdapFlavor::ActiveDirectory => &["primaryGroupID", "objectSid"],
            LdapFlavor::OpenLdap => &[],
        }
    }

    /// What names a user in a group's `memberUid` (RFC 2307 `posixGroup`).
    fn uid_attributes(self) -> &'static [&'static str] {
        match self {
            LdapFlavor::ActiveDirectory => &[],
            LdapFlavor::OpenLdap => &["uid"],
        }
    }

    /// What changes on a group entry with every change to it, its members
    /// included: member ranges read in several requests are one version of the
    /// group only if each answer carries the same value. Active Directory:
    /// `uSNChanged` (the domain controller's own update counter; a snapshot reads
    /// one server over one connection). OpenLDAP, which sends no ranges: `entryCSN`.
    fn change_attribute(self) -> &'static str {
        match self {
            LdapFlavor::ActiveDirectory => "uSNChanged",
            LdapFlavor::OpenLdap => "entryCSN",
        }
    }

    fn status_attributes(self) -> &'static [&'static str] {
        match self {
            LdapFlavor::ActiveDirectory => &["userAccountControl", "accountExpires"],
            LdapFlavor::OpenLdap => &["pwdAccountLockedTime", "shadowExpire"],
        }
    }
}

/// Everything a snapshot needs, filters and attributes already defaulted.
#[derive(Debug, Clone)]
pub struct LdapSettings {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    pub start_tls: bool,
    /// PEM file of the only CA trusted for the server, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    pub bind_dn: String,
    pub bind_password: Secret,
    pub base_dn: String,
    pub group_base_dn: String,
    pub flavor: LdapFlavor,
    pub user_filter: String,
    pub group_filter: String,
    /// Users matching it (within `user_filter`) are suspended, besides the
    /// flavor's own rule: for servers that mark disabled accounts otherwise, e.g.
    /// `(nsAccountLock=TRUE)` on 389 Directory Server and FreeIPA.
    pub disabled_filter: Option<String>,
    pub id_attribute: String,
    pub user_name_attribute: String,
    pub page_size: u32,
    /// `policy.scope_groups`: each must be a group the group search finds.
    pub scope_groups: Vec<String>,
    /// The other groups the configuration names (mappings,
    /// `safety.protected_groups`); with `scope_groups`, the groups whose members
    /// (and nested groups) are read in full.
    pub other_groups: Vec<String>,
    /// `safety.distinct_groups`: directory groups that only look like a
    /// configured one but are declared other groups ([`GroupInterest::new`]).
    pub distinct_groups: Vec<String>,
    /// Groups that must exist (also in `other_groups`): `safety.protected_groups`
    /// and the groups mapped to Owner, where a typo would take protection away or
    /// demote every Owner without a word.
    pub required_groups: Vec<super::RequiredGroup>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// A configured LDAP directory; cheap to clone.
#[derive(Debug, Clone)]
pub struct LdapSource {
    settings: Arc<LdapSettings>,
    /// Reads retried after a transient failure ([`Self::retries`]).
    retries: Arc<AtomicU64>,
}

impl LdapSource {
    pub fn new(settings: LdapSettings) -> LdapSource {
        LdapSource {
            settings: Arc::new(settings),
            retries: Arc::default(),
        }
    }

    /// Reads retried after a transient failure so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Reads the bind password file and parses the CA file: what `check-config`
    /// can prove without the network.
    pub fn check_files(&self) -> Result<(), DirectoryError> {
        self.settings.bind_password.read()?;
        if let Some(ca_file) = &self.settings.ca_file {
            tls_config(ca_file)?;
        }
        Ok(())
    }

    pub fn url(&self) -> &str {
        &self.settings.url
    }

    pub fn settings(&self) -> &LdapSettings {
        &self.settings
    }

    /// Every user of the user search, with the groups they are in, directly or
    /// through nested groups. Transient failures (connection, timeout, a busy or
    /// unavailable server) are retried with a new connection.
    pub async fn snapshot(&self) -> Result<DirectorySnapshot, DirectoryError> {
        let url = &self.settings.url;
        let mut log = crate::retry::RetryLog::default();
        let outcome = crate::retry::retry(
            self.settings.retry,
            || self.read(),
            |e, delay| {
                self.retries.fetch_add(1, Ordering::Relaxed);
                log.retrying(url, &self.settings.retry, e, delay);
            },
        )
        .await;
        log.finished(url, &outcome);
        outcome
    }

    async fn read(&self) -> Result<DirectorySnapshot, DirectoryError> {
        let mut ldap = self.connect().await?;
        let read = self.read_connected(&mut ldap).await;
        // The snapshot is complete or failed either way; a failed unbind only means
        // the connection is already gone.
        if let Err(e) = ldap.unbind().await {
            tracing::debug!(error = %e, "LDAP unbind failed");
        }
        read
    }

    /// `check-config --connect`: connect (TLS as configured), bind, and one search
    /// of the users and one of the groups for a single entry each (size limit 1),
    /// with the attributes a run asks for and the settings' timeout; unbind. The
    /// entry found is read as a run reads it ([`LdapSource::person`],
    /// [`LdapSource::group`]): a user a run would refuse (no id, no userName, no
    /// `accountExpires` on Active Directory) fails the check, naming the entry.
    /// What it proved, one item a step. A user search that finds nobody fails: a
    /// run would read no one and refuse the directory as a source fault.
    pub async fn probe(&self) -> Result<Vec<String>, DirectoryError> {
        let mut ldap = self.connect().await?;
        let probed = self.probe_connected(&mut ldap).await;
        if let Err(e) = ldap.unbind().await {
            tracing::debug!(error = %e, "LDAP unbind failed");
        }
        probed
    }

    async fn probe_connected(&self, ldap: &mut Ldap) -> Result<Vec<String>, DirectoryError> {
        let s = &self.settings;
        let mut proven = vec![format!("bind as {:?}", s.bind_dn)];
        let now = Utc::now();
        for (what, base, filter, attributes) in [
            ("users", &s.base_dn, &s.user_filter, self.user_attributes()),
            (
                "groups",
                &s.group_base_dn,
                &s.group_filter,
                self.group_attributes(),
            ),
        ] {
            let operation = format!("search {what} under {base:?} with {filter}");
            ldap.with_timeout(s.timeout);
            ldap.with_search_options(SearchOptions::new().sizelimit(1));
            let SearchResult(entries, result) = ldap
                .search(base, Scope::Subtree, filter, attributes)
                .await
                .map_err(|e| self.failure(&operation, e))?;
            // 4 sizeLimitExceeded: more entries than the one asked for.
            if result.rc != 4 {
                result.success().map_err(|e| self.failure(&operation, e))?;
            }
            let mut found = 0_usize;
            for raw in entries
                .into_iter()
                .filter(|raw| !raw.is_ref() && !raw.is_intermediate())
            {
                let entry = decode(raw, &s.url, &operation)?;
                if what == "users" {
                    self.person(&entry, now)?;
                } else {
                    self.group(entry)?;
                }
                found += 1;
            }
            if found == 0 && what == "users" {
                return Err(DirectoryError::Scope {
                    provider: "ldap",
                    message: format!(
                        "{} {operation} found no one: a run would read nobody and refuse \
                         the directory (exit 5); check directory.base_dn and \
                         directory.user_filter, and that the bind DN may read them",
                        s.url
                    ),
                });
            }
            proven.push(match found {
                0 => format!("{operation} (none found)"),
                _ => operation,
            });
        }
        Ok(proven)
    }

    /// Every group's `cn` under `group_base_dn` matching `group_filter` (a paged
    /// search asking `cn` alone: no member lists), for `check-config --connect`
    /// to name the groups that only look like configured ones
    /// ([`super::Directory::group_names`]).
    pub async fn group_names(&self) -> Result<Vec<String>, DirectoryError> {
        let mut ldap = self.connect().await?;
        let s = &self.settings;
        let listed = self
            .search(
                &mut ldap,
                "groups",
                &s.group_base_dn,
                &s.group_filter,
                vec!["cn".to_owned()],
            )
            .await;
        if let Err(e) = ldap.unbind().await {
            tracing::debug!(error = %e, "LDAP unbind failed");
        }
        Ok(listed?.iter().filter_map(group_name).collect())
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let s = &self.settings;
        // Another component may have installed it already; either way one is there.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut connection = LdapConnSettings::new()
            .set_conn_timeout(s.timeout)
            .set_starttls(s.start_tls);
        if let Some(ca_file) = &s.ca_file {
            connection = connection.set_config(tls_config(ca_file)?);
        } else if uses_tls(&s.url, s.start_tls) {
            connection = connection.set_config(system_tls_config()?);
        }
        if sends_password_in_clear(&s.url, s.start_tls) {
            tracing::warn!(
                url = %s.url,
                "the LDAP bind password goes over the network unencrypted: use ldaps:// or start_tls = true"
            );
        }
        let (driver, mut ldap) = LdapConnAsync::with_settings(connection, &s.url)
            .await
            .map_err(|e| match start_tls_unavailable(&s.url, s.start_tls, &e) {
                Some(refused) => refused,
                None => self.first_message_failure("connect", e),
            })?;
        tokio::spawn(async move {
            if let Err(e) = driver.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        let password = s.bind_password.read()?;
        ldap.with_timeout(s.timeout);
        ldap.simple_bind(&s.bind_dn, password.expose_secret())
            .await
            .and_then(|result| result.success())
            .map_err(|e| self.first_message_failure(&format!("bind as {:?}", s.bind_dn), e))?;
        Ok(ldap)
    }

    /// The failure of the first LDAP message over `ldap://` (the StartTLS request,
    /// else the bind). A server that hangs up on it is most often a TLS port (636,
    /// LDAPS) asked in plain LDAP, which no retry mends: the message says so. Still
    /// transient, as a connection cut in passing is.
    fn first_message_failure(&self, operation: &str, e: LdapError) -> DirectoryError {
        let plain = url::Url::parse(&self.settings.url).is_ok_and(|url| url.scheme() == "ldap");
        let hung_up = matches!(e, LdapError::ResultRecv { .. } | LdapError::EndOfStream);
        let mut error = self.failure(operation, e);
        if plain
            && hung_up
            && let DirectoryError::Transport { message, .. } = &mut error
        {
            message.push_str(
                "; the server hung up on the first LDAP message: if that port speaks TLS \
                 (LDAPS, usually 636), write ldaps:// in directory.url",
            );
        }
        error
    }

    async fn read_connected(&self, ldap: &mut Ldap) -> Result<DirectorySnapshot, DirectoryError> {
        let s = &self.settings;
        let users = self
            .search(
                ldap,
                "users",
                &s.base_dn,
                &s.user_filter,
                self.user_attributes(),
            )
            .await?;
        let group_attributes = self.group_attributes();
        let mut groups = Vec::new();
        for entry in self
            .search(
                ldap,
                "groups",
                &s.group_base_dn,
                &s.group_filter,
                group_attributes,
            )
            .await?
        {
            groups.push(self.group(entry)?);
        }
        let user_dns: HashSet<String> = users.iter().map(|e| normalize_dn(&e.dn)).collect();
        let groups = self.groups_in_use(ldap, groups, &user_dns).await?;
        for group in groups
            .iter()
            .filter(|g| g.members.is_empty() && g.member_uids.is_empty())
        {
            self.check_members_readable(ldap, group).await?;
        }
        let disabled = self.disabled_ids(ldap).await?;
        let now = Utc::now();
        let mut people = Vec::with_capacity(users.len());
        for entry in &users {
            let mut person = self.person(entry, now)?;
            if disabled.contains(&person.identity.id) {
                person.identity.status = IdentityStatus::Suspended;
            }
            people.push(person);
        }
        let present = groups.iter().map(|g| g.name.as_str()).collect();
        let what = format!(
            "the cn of a group under {:?} matching {} (directory.group_filter)",
            s.group_base_dn, s.group_filter
        );
        super::check_scope_groups("ldap", &present, &s.scope_groups, &s.distinct_groups, &what)?;
        super::check_named_groups(
            "ldap",
            &present,
            &s.other_groups,
            &s.required_groups,
            &s.distinct_groups,
            &what,
        )?;
        identities(people, &groups, &s.url).map(|identities| DirectorySnapshot {
            identities,
            complete: true,
        })
    }

    /// The ids of the users `disabled_filter` matches: one more search, for the
    /// id alone, so the server applies the filter with its own matching rules.
    async fn disabled_ids(&self, ldap: &mut Ldap) -> Result<HashSet<String>, DirectoryError> {
        let s = &self.settings;
        let Some(disabled_filter) = &s.disabled_filter else {
            return Ok(HashSet::new());
        };
        let filter = format!(
            "(&{}{})",
            parenthesized(&s.user_filter),
            parenthesized(disabled_filter)
        );
        let entries = self
            .search(
                ldap,
                "disabled users",
                &s.base_dn,
                &filter,
                vec![s.id_attribute.clone()],
            )
            .await?;
        entries
            .iter()
            .map(|entry| {
                entry_id(entry, &s.id_attribute).map_err(|what| DirectoryError::Malformed {
                    endpoint: format!("{} user {:?}", s.url, entry.dn),
                    what,
                })
            })
            .collect()
    }

    /// Fails the snapshot when `group`, which shows no members, is named by a
    /// user's `memberOf`: the bind account may then not read the group's member
    /// attribute, which a server leaves out of the answer without a word (Active
    /// Directory and OpenLDAP alike), and everyone in the group would lose what
    /// it gives. One search for one user of the user search whose `memberOf` is
    /// the group (Active Directory's back link; OpenLDAP's memberof overlay).
    /// Where `memberOf` is not there to tell (no overlay, not readable either),
    /// nothing comes back and the group is taken as empty: the README says which
    /// read permission the bind account needs.
    async fn check_members_readable(
        &self,
        ldap: &mut Ldap,
        group: &Group,
    ) -> Result<(), DirectoryError> {
        let s = &self.settings;
        let filter = format!(
            "(&{}(memberOf={}))",
            parenthesized(&s.user_filter),
            ldap3::ldap_escape(&group.raw_dn)
        );
        let operation = format!("search a user of {:?} under {:?}", group.raw_dn, s.base_dn);
        ldap.with_timeout(s.timeout);
        ldap.with_search_options(ldap3::SearchOptions::new().sizelimit(1));
        let answer = ldap
            .search(&s.base_dn, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .map_err(|e| self.failure(&operation, e))?;
        let ldap3::SearchResult(entries, result) = answer;
        let member = entries
            .into_iter()
            .find(|raw| !raw.is_ref() && !raw.is_intermediate())
            .map(|raw| decode(raw, &s.url, &operation))
            .transpose()?;
        match member {
            Some(member) => Err(self.malformed_group(
                &group.raw_dn,
                format!(
                    "the group shows no members, yet the memberOf of {:?} names it: the bind \
                     account ({:?}) may not read the group's members; grant it read access to \
                     the member attribute of groups (Active Directory: Read Members), as read \
                     the group is empty and everyone in it would lose what it gives",
                    member.dn, s.bind_dn
                ),
            )),
            None => {
                // Success, sizeLimitExceeded (4) with an entry is handled above;
                // an error (memberOf unknown to the server, say) only means it
                // cannot tell.
                if result.rc != 0 {
                    tracing::debug!(
                        group = %group.raw_dn,
                        rc = result.rc,
                        text = %result.text,
                        "memberOf could not be searched to tell an empty group from one whose \
                         members may not be read"
                    );
                }
                Ok(())
            }
        }
    }

    /// What a user is read with: the id, the userName, the names, mail and
    /// department, and what the flavor's status, primary group and uids need.
    fn user_attributes(&self) -> Vec<String> {
        let s = &self.settings;
        let flavor = s.flavor;
        let mut attributes = vec![
            s.id_attribute.clone(),
            s.user_name_attribute.clone(),
            "mail".to_owned(),
            "givenName".to_owned(),
            "sn".to_owned(),
            "displayName".to_owned(),
            flavor.department_attribute().to_owned(),
        ];
        attributes.extend(flavor.status_attributes().iter().map(|a| (*a).to_owned()));
        attributes.extend(
            flavor
                .primary_group_attributes()
                .iter()
                .map(|a| (*a).to_owned()),
        );
        attributes.extend(flavor.uid_attributes().iter().map(|a| (*a).to_owned()));
        attributes
    }

    /// A user entry as a person, or why it cannot be read, naming the entry.
    fn person(&self, entry: &SearchEntry, now: DateTime<Utc>) -> Result<Person, DirectoryError> {
        person(entry, &self.settings, now).map_err(|what| DirectoryError::Malformed {
            endpoint: format!("{} user {:?}", self.settings.url, entry.dn),
            what,
        })
    }

    /// What a group is read with: its name, its members (the first range of a
    /// ranged attribute), its SID or `memberUid`, and its change attribute.
    fn group_attributes(&self) -> Vec<String> {
        let flavor = self.settings.flavor;
        let mut attributes = vec!["cn".to_owned()];
        attributes.extend(flavor.member_attributes().iter().map(|a| (*a).to_owned()));
        match flavor {
            LdapFlavor::ActiveDirectory => attributes.push("objectSid".to_owned()),
            LdapFlavor::OpenLdap => attributes.push("memberUid".to_owned()),
        }
        attributes.push(flavor.change_attribute().to_owned());
        attributes
    }

    /// A group entry with the members it carries; a ranged attribute's further
    /// ranges are read by [`LdapSource::groups_in_use`] if the group is needed.
    fn group(&self, entry: SearchEntry) -> Result<Group, DirectoryError> {
        let name = group_name(&entry)
            .ok_or_else(|| self.malformed_group(&entry.dn, "the group has no cn".to_owned()))?;
        let mut members = Vec::new();
        let mut unfinished = Vec::new();
        for attribute in self.settings.flavor.member_attributes() {
            let mut ranged = RangedValues::new(attribute);
            let next = ranged
                .take(&entry.attrs)
                .map_err(|what| self.malformed_group(&entry.dn, what))?;
            match next {
                Some(range) => unfinished.push((ranged, range)),
                None => members.extend(
                    ranged
                        .values
                        .iter()
                        .map(|v| member_dn(attribute, v).to_owned()),
                ),
            }
        }
        let member_uids = texts(&entry, "memberUid")
            .map(|values| {
                values
                    .iter()
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let sid = match first_bytes(&entry, "objectSid") {
            Some(bytes) => Some(sid_text(bytes).ok_or_else(|| {
                self.malformed_group(&entry.dn, "objectSid is not a valid SID".to_owned())
            })?),
            None => None,
        };
        let version =
            first_text(&entry, self.settings.flavor.change_attribute()).map(str::to_owned);
        Ok(Group {
            name,
            sid,
            version,
            raw_dn: entry.dn.clone(),
            dn: normalize_dn(&entry.dn),
            members: members.iter().map(|m| normalize_dn(m)).collect(),
            member_uids,
            unfinished,
        })
    }

    /// The groups the configuration names (see [`GroupInterest`]; every group
    /// when it names none) and the groups nested in them, each with all its
    /// members: a huge group nobody maps ("Domain Users") costs no range reads.
    ///
    /// A member that is neither a user of the user search nor a group of the group
    /// search may be a group elsewhere in the domain ("Domain Admins" in
    /// `CN=Users`, nested in a protected group) or one `group_filter` leaves out
    /// (`Backend` nested in `Taskade-Users` under `(cn=Taskade-*)`): the domain's
    /// groups, whatever `group_filter` says, are then listed once (DNs only, from
    /// the `DC=` root of `group_base_dn`), and those that are such members are read
    /// with their members (one base search each), recursively.
    async fn groups_in_use(
        &self,
        ldap: &mut Ldap,
        mut groups: Vec<Group>,
        user_dns: &HashSet<String>,
    ) -> Result<Vec<Group>, DirectoryError> {
        let s = &self.settings;
        let interest = GroupInterest::new(&s.scope_groups, &s.other_groups, &s.distinct_groups);
        super::refuse_ambiguous_names(
            "ldap",
            &interest,
            groups.iter().map(|g| (g.raw_dn.as_str(), g.name.as_str())),
            "narrow directory.group_base_dn or directory.group_filter to one of them",
        )?;
        let named = |g: &Group| interest.wants(&g.name);
        let mut group_at: HashMap<String, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.dn.clone(), i))
            .collect();
        let mut used = vec![false; groups.len()];
        let mut pending: Vec<usize> = (0..groups.len()).filter(|&i| named(&groups[i])).collect();
        let root = domain_root(&s.group_base_dn);
        // The domain's groups, by normalized DN (raw DN as the value); listed the
        // first time a member is neither a user nor a known group, unless the
        // group search already was that listing.
        let mut elsewhere: Option<HashMap<String, String>> = (normalize_dn(&root)
            == normalize_dn(&s.group_base_dn)
            && is_flavor_group_filter(s.flavor, &s.group_filter))
        .then(HashMap::new);
        let mut unresolved: BTreeSet<String> = BTreeSet::new();
        loop {
            while let Some(i) = pending.pop() {
                if std::mem::replace(&mut used[i], true) {
                    continue;
                }
                self.read_remaining_ranges(ldap, &mut groups[i]).await?;
                for member in &groups[i].members {
                    match group_at.get(member) {
                        Some(&nested) if !used[nested] => pending.push(nested),
                        Some(_) => {}
                        None if !user_dns.contains(member) => {
                            unresolved.insert(member.clone());
                        }
                        None => {}
                    }
                }
            }
            if unresolved.is_empty() {
                break;
            }
            let listing = match &mut elsewhere {
                Some(listing) => listing,
                None => elsewhere.insert(self.domain_groups(ldap, &root).await?),
            };
            let found: Vec<(String, String)> = unresolved
                .iter()
                .filter_map(|dn| listing.remove_entry(dn))
                .collect();
            if found.is_empty() {
                break;
            }
            for (dn, raw_dn) in found {
                unresolved.remove(&dn);
                // Read whole here (members and change attribute in one answer): a
                // read that fails fails the snapshot, never drops its members.
                let mut group = self.read_group(ldap, &raw_dn).await?;
                group.dn = dn;
                tracing::info!(
                    group = %group.raw_dn,
                    "a group nested in a group in use is read with its members, though the \
                     group search (directory.group_base_dn, directory.group_filter) leaves it out"
                );
                group_at.insert(group.dn.clone(), groups.len());
                pending.push(groups.len());
                groups.push(group);
                used.push(false);
            }
        }
        if !unresolved.is_empty() {
            // Contacts, computers, people outside base_dn: not people of the user
            // search. Never silent, though a group of another domain is among them.
            let root = normalize_dn(&root);
            let foreign: Vec<&String> = unresolved
                .iter()
                .filter(|dn| !dn.ends_with(&format!(",{root}")))
                .collect();
            tracing::debug!(
                count = unresolved.len(),
                "members that are neither users of the user search nor groups are left out"
            );
            if !foreign.is_empty() {
                tracing::warn!(
                    count = foreign.len(),
                    first = %foreign[0],
                    "group members outside the domain are left out (a group of another \
                     domain is not read): their members get nothing through it"
                );
            }
        }
        let groups: Vec<Group> = groups
            .into_iter()
            .zip(used)
            .filter_map(|(group, used)| used.then_some(group))
            .collect();
        // Groups found outside the group search answer to names too: a look-alike
        // "IT Admins" elsewhere, nested in a scope group, would hand its members
        // the protection or the mapping of the real one.
        super::refuse_ambiguous_names(
            "ldap",
            &interest,
            groups.iter().map(|g| (g.raw_dn.as_str(), g.name.as_str())),
            "rename one of them, or narrow directory.group_filter",
        )?;
        if s.flavor == LdapFlavor::ActiveDirectory
            && let Some(group) = groups.iter().find(|g| g.sid.is_none())
        {
            // Without it, the people whose primary group this is (primaryGroupID)
            // are not seen as its members and would drop out of it.
            return Err(self.malformed_group(
                &group.raw_dn,
                "the group has no objectSid (can the bind account read it?); the users whose \
                 primary group it is could not be told"
                    .to_owned(),
            ));
        }
        Ok(groups)
    }

    /// The groups under `root` (the domain), by normalized DN with the DN as
    /// written, without their members (read only for those needed): every group
    /// of the flavor's classes and every group `group_filter` matches, so a nested
    /// group a narrowed `group_filter` leaves out is found too.
    async fn domain_groups(
        &self,
        ldap: &mut Ldap,
        root: &str,
    ) -> Result<HashMap<String, String>, DirectoryError> {
        let s = &self.settings;
        let filter = any_group_filter(s.flavor, &s.group_filter);
        let entries = self
            .search(
                ldap,
                "groups of the domain",
                root,
                &filter,
                vec!["cn".to_owned()],
            )
            .await?;
        Ok(entries
            .into_iter()
            .map(|entry| (normalize_dn(&entry.dn), entry.dn))
            .collect())
    }

    /// Reads the rest of each ranged member attribute of `group`.
    ///
    /// Each range is a request of its own, and its positions are those of the
    /// values at the time of that request (MS-ADTS 3.1.1.3.1.3.3): a member
    /// removed (or added) between two of them shifts a value across a boundary,
    /// where it is never read, and an active employee would look out of scope. So
    /// each range read asks for the group's change attribute (`uSNChanged`) too;
    /// when it is not the one the first range came with, the group is read again
    /// from its first range. After [`RANGE_RESTARTS`] such restarts in a row the
    /// snapshot fails, naming the group, rather than read on for ever.
    async fn read_remaining_ranges(
        &self,
        ldap: &mut Ldap,
        group: &mut Group,
    ) -> Result<(), DirectoryError> {
        let mut restarts = 0;
        while !self.read_ranges_of_one_version(ldap, group).await? {
            if restarts == RANGE_RESTARTS {
                return Err(self.malformed_group(
                    &group.raw_dn,
                    format!(
                        "its members changed while they were read in ranges ({} moved on), \
                         {} times in a row; the next run reads it again",
                        self.settings.flavor.change_attribute(),
                        RANGE_RESTARTS + 1
                    ),
                ));
            }
            restarts += 1;
            tracing::info!(
                group = %group.raw_dn,
                restarts,
                "the group changed while its member ranges were read; reading it again from \
                 its first range"
            );
            *group = self.read_group(ldap, &group.raw_dn).await?;
        }
        Ok(())
    }

    /// Reads `group`'s further member ranges; `false` (and the group's members
    /// left as they are) when an answer carries another version of the group than
    /// its first range did.
    async fn read_ranges_of_one_version(
        &self,
        ldap: &mut Ldap,
        group: &mut Group,
    ) -> Result<bool, DirectoryError> {
        if group.unfinished.is_empty() {
            return Ok(true);
        }
        let change = self.settings.flavor.change_attribute();
        let Some(version) = group.version.clone() else {
            return Err(self.malformed_group(
                &group.raw_dn,
                format!(
                    "the group has no {change} (can the bind account read it?); its members, \
                     sent in ranges, could not be told to come from one version of it"
                ),
            ));
        };
        let mut members = Vec::new();
        for (mut ranged, range) in std::mem::take(&mut group.unfinished) {
            let mut next = Some(range);
            while let Some(range) = next {
                let answer = self.read_range(ldap, &group.raw_dn, &range).await?;
                let answered = answer
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(change))
                    .and_then(|(_, values)| values.first())
                    .map(|value| value.trim());
                match answered {
                    None => {
                        return Err(self.malformed_group(
                            &group.raw_dn,
                            format!("the answer to {range} has no {change}"),
                        ));
                    }
                    Some(answered) if answered != version => {
                        tracing::debug!(
                            group = %group.raw_dn,
                            range,
                            first = %version,
                            now = %answered,
                            "the group changed between two range reads"
                        );
                        return Ok(false);
                    }
                    Some(_) => {}
                }
                next = ranged
                    .take(&answer)
                    .map_err(|what| self.malformed_group(&group.raw_dn, what))?;
            }
            let attribute = ranged.attribute;
            members.extend(
                ranged
                    .values
                    .iter()
                    .map(|m| normalize_dn(member_dn(attribute, m))),
            );
        }
        group.members.extend(members);
        Ok(true)
    }

    /// A group read anew by a base search: its first range of members (or all of
    /// them) and its change attribute in one answer.
    async fn read_group(&self, ldap: &mut Ldap, dn: &str) -> Result<Group, DirectoryError> {
        let operation = format!("read group {dn:?}");
        let entry = self
            .base_entries(ldap, dn, self.group_attributes(), &operation)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                self.malformed_group(dn, "the group's entry did not come back".to_owned())
            })?;
        self.group(entry)
    }

    fn malformed_group(&self, dn: &str, what: String) -> DirectoryError {
        DirectoryError::Malformed {
            endpoint: format!("{} group {dn:?}", self.settings.url),
            what,
        }
    }

    /// One more range of a group's members: a base search asking for `range`
    /// (`member;range=1500-*`) and the group's change attribute.
    async fn read_range(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        range: &str,
    ) -> Result<HashMap<String, Vec<String>>, DirectoryError> {
        let operation = format!("read {range} of {dn:?}");
        let attributes = vec![
            range.to_owned(),
            self.settings.flavor.change_attribute().to_owned(),
        ];
        let mut attrs = HashMap::new();
        for entry in self.base_entries(ldap, dn, attributes, &operation).await? {
            attrs.extend(entry.attrs);
        }
        Ok(attrs)
    }

    /// A base search of `dn` for `attributes`: the entries of the answer.
    async fn base_entries(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        attributes: Vec<String>,
        operation: &str,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        ldap.with_timeout(self.settings.timeout);
        let (entries, result) = ldap
            .search(dn, Scope::Base, "(objectClass=*)", attributes)
            .await
            .and_then(|answer| answer.success())
            .map_err(|e| self.failure(operation, e))?;
        drop(result);
        entries
            .into_iter()
            .filter(|raw| !raw.is_ref() && !raw.is_intermediate())
            .map(|raw| decode(raw, &self.settings.url, operation))
            .collect()
    }

    /// A paged subtree search; every entry, or an error.
    async fn search(
        &self,
        ldap: &mut Ldap,
        what: &str,
        base: &str,
        filter: &str,
        attributes: Vec<String>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let operation = format!("search {what} under {base:?} with {filter}");
        let page_size = i32::try_from(self.settings.page_size).unwrap_or(i32::MAX);
        ldap.with_timeout(self.settings.timeout);
        // Closer to the server than the paging adapter: each page's result is
        // seen before the paging adapter follows its cookie.
        let adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> = vec![
            Box::new(PagedResults::new(page_size)),
            Box::new(PageChecks::default()),
        ];
        let mut stream = ldap
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attributes)
            .await
            .map_err(|e| self.failure(&operation, e))?;
        let mut entries = Vec::new();
        // No search answers an entry twice (RFC 4511 §4.5.2): one that comes again
        // came from a page handed out again under a cookie already followed.
        let mut dns: HashSet<String> = HashSet::new();
        let mut references = 0_usize;
        let mut elsewhere: BTreeSet<String> = BTreeSet::new();
        loop {
            match stream.next().await {
                Ok(Some(raw)) if raw.is_ref() => {
                    references += 1;
                    elsewhere.extend(
                        reference_urls(raw)
                            .into_iter()
                            .filter(|url| !is_ad_partition(url)),
                    );
                }
                Ok(Some(raw)) if raw.is_intermediate() => references += 1,
                Ok(Some(raw)) => {
                    let entry = decode(raw, &self.settings.url, &operation)?;
                    if !dns.insert(entry.dn.clone()) {
                        return Err(self.paging_loop(
                            &operation,
                            format!(
                                "the server sent {:?} twice in one search: a page of a paged \
                                 search (RFC 2696) came again under a cookie already followed",
                                entry.dn
                            ),
                        ));
                    }
                    entries.push(entry);
                }
                Ok(None) => break,
                Err(LdapError::AdapterInit(what)) => {
                    // Only [`PageChecks`] fails a search under way so (a looping cookie,
                    // or a paged-results control that is not valid BER).
                    return Err(self.paging_loop(&operation, what));
                }
                Err(e) => return Err(self.failure(&operation, e)),
            }
        }
        stream
            .finish()
            .await
            .success()
            .map_err(|e| self.failure(&operation, e))?;
        if references > 0 {
            // Active Directory refers a search at the domain root to its DNS and
            // configuration partitions, which hold no users or groups.
            tracing::debug!(references, operation, "LDAP search references not followed");
        }
        if !elsewhere.is_empty() {
            // A child domain or an OU held by another server: its people are not
            // read. Not an error (a forest may keep people out of scope there),
            // but never silent.
            let elsewhere: Vec<String> = elsewhere.into_iter().collect();
            tracing::warn!(
                operation,
                referred_to = %elsewhere.join(", "),
                "part of the search base is held by another server and is not read: narrow \
                 directory.base_dn to the domain directory.url serves (a Global Catalog cannot \
                 stand in: it lacks accountExpires and other domains' group members)"
            );
        }
        tracing::debug!(entries = entries.len(), operation, "LDAP search done");
        Ok(entries)
    }

    fn failure(&self, operation: &str, e: LdapError) -> DirectoryError {
        ldap_failure(&self.settings.url, operation, e)
    }

    /// A paged search the server would keep going for ever: a failure, never
    /// followed on. Not transient: a directory or proxy that replays a page does
    /// so again; the next run reads again.
    fn paging_loop(&self, operation: &str, what: String) -> DirectoryError {
        DirectoryError::Malformed {
            endpoint: format!("{} {operation}", self.settings.url),
            what: format!(
                "{what}; the search is given up rather than followed for ever (a proxy \
                 between seatwarden and the directory replaying answers, or a fault of the \
                 directory server)"
            ),
        }
    }
}

type AdapterFuture<'f, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'f>>;

/// The search adapter that checks each page as it ends, before the paging
/// adapter follows its cookie. It fails the search at the first page whose
/// SearchResultDone is not a success: ldap3's paging adapter follows a page's
/// cookie whatever the page's result code, and only the last page's reaches
/// `finish`, so a page a server cut short (timeLimitExceeded,
/// adminLimitExceeded) but handed a cookie for would leave its missing entries
/// out of a search that ends in success, and the people in them would look
/// deleted. And it fails a paged search whose server hands back a cookie it
/// already handed out when no entry has come since: followed, the same page
/// would be asked for again and again, for ever (ldap3's paging adapter follows
/// any cookie that is not empty). A cookie that comes back after entries did is
/// no loop: 389 Directory Server (and FreeIPA) hand out the same cookie for every
/// page of a search; a page that comes again with its entries is caught by
/// [`LdapSource::search`] as an entry sent twice.
#[derive(Debug, Clone, Default)]
struct PageChecks {
    /// The entries passed on so far.
    entries: usize,
    /// Each cookie handed out, with [`Self::entries`] when it last was.
    cookies: HashMap<Vec<u8>, usize>,
}

impl PageChecks {
    /// Takes note of the cookie a page ended with; what repeated when the
    /// search would loop on it.
    fn page_ended(&mut self, cookie: &[u8]) -> Result<(), String> {
        if cookie.is_empty() {
            return Ok(());
        }
        match self.cookies.insert(cookie.to_vec(), self.entries) {
            Some(then) if then == self.entries => Err(format!(
                "the server handed back the paged-results cookie {} again with no entry \
                 since it last handed it out (RFC 2696): following it would ask for the same \
                 page for ever",
                cookie_text(cookie)
            )),
            _ => Ok(()),
        }
    }
}

/// A cookie for an error message: its text when it is printable ASCII (short),
/// else its bytes in hex; at most 64 bytes of it.
fn cookie_text(cookie: &[u8]) -> String {
    let shown = &cookie[..cookie.len().min(64)];
    let more = if shown.len() < cookie.len() {
        "…"
    } else {
        ""
    };
    if shown.iter().all(|b| b.is_ascii_graphic()) {
        format!("{:?}{more}", String::from_utf8_lossy(shown))
    } else {
        let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}{more}")
    }
}

impl<'a> Adapter<'a, String, Vec<String>> for PageChecks {
    fn start<'s, 'st, 'b, 'f, 'fut>(
        &'s mut self,
        stream: &'st mut SearchStream<'a, String, Vec<String>>,
        base: &'b str,
        scope: Scope,
        filter: &'f str,
        attrs: Vec<String>,
    ) -> AdapterFuture<'fut, ldap3::result::Result<()>>
    where
        'a: 'fut,
        's: 'fut,
        'st: 'fut,
        'b: 'fut,
        'f: 'fut,
        Self: 'fut,
    {
        Box::pin(async move { stream.start(base, scope, filter, attrs).await })
    }

    fn next<'s, 'st, 'fut>(
        &'s mut self,
        stream: &'st mut SearchStream<'a, String, Vec<String>>,
    ) -> AdapterFuture<'fut, ldap3::result::Result<Option<ResultEntry>>>
    where
        'a: 'fut,
        's: 'fut,
        'st: 'fut,
        Self: 'fut,
    {
        Box::pin(async move {
            let item = stream.next().await?;
            match &item {
                Some(entry) if !entry.is_ref() && !entry.is_intermediate() => self.entries += 1,
                Some(_) => {}
                None => {
                    if let Some(result) = stream.res.as_ref().filter(|result| result.rc != 0) {
                        return Err(LdapError::LdapResult {
                            result: result.clone(),
                        });
                    }
                    for control in stream.res.iter().flat_map(|result| &result.ctrls) {
                        let Some(cookie) = paged_results_cookie(control) else {
                            continue;
                        };
                        self.page_ended(&cookie?).map_err(LdapError::AdapterInit)?;
                    }
                }
            }
            Ok(item)
        })
    }

    fn finish<'s, 'st, 'fut>(
        &'s mut self,
        stream: &'st mut SearchStream<'a, String, Vec<String>>,
    ) -> AdapterFuture<'fut, ldap3::LdapResult>
    where
        'a: 'fut,
        's: 'fut,
        'st: 'fut,
        Self: 'fut,
    {
        Box::pin(async move { stream.finish().await })
    }
}

/// The cookie of a paged-results response control; `None` for another control.
/// ldap3's parser panics on a value that is not valid BER: a server's bytes must
/// not take the daemon down, so that is an error here, before the paging adapter
/// parses it.
fn paged_results_cookie(
    control: &ldap3::controls::Control,
) -> Option<ldap3::result::Result<Vec<u8>>> {
    use ldap3::controls::{Control, ControlType, PagedResults as PagedControl};
    let Control(Some(ControlType::PagedResults), raw) = control else {
        return None;
    };
    let parsed = raw.val.as_ref().and_then(|_| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            raw.parse::<PagedControl>().cookie
        }))
        .ok()
    });
    Some(parsed.ok_or_else(|| {
        LdapError::AdapterInit(
            "the server's paged-results control (RFC 2696) is not valid BER".to_owned(),
        )
    }))
}

/// How many times in a row a group whose members changed while they were read
/// in ranges is read again before the snapshot fails.
const RANGE_RESTARTS: u32 = 3;

/// Whether `filter` is the flavor's own group filter, which every group matches.
fn is_flavor_group_filter(flavor: LdapFlavor, filter: &str) -> bool {
    filter
        .trim()
        .eq_ignore_ascii_case(flavor.default_group_filter())
}

/// Every group, whatever a narrowed `group_filter` says: the flavor's group
/// classes, or what `group_filter` matches (a class of its own, e.g. posixGroup).
fn any_group_filter(flavor: LdapFlavor, group_filter: &str) -> String {
    let flavor_groups = flavor.default_group_filter();
    if is_flavor_group_filter(flavor, group_filter) {
        flavor_groups.to_owned()
    } else {
        format!("(|{flavor_groups}{})", parenthesized(group_filter))
    }
}

/// Whether a bind to `url` crosses a network in clear text: `ldap://` without
/// StartTLS to a host that is not loopback.
fn sends_password_in_clear(url: &str, start_tls: bool) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    url.scheme() == "ldap" && !start_tls && !crate::config::host_is_loopback(&url)
}

/// Whether a connection to `url` speaks TLS: `ldaps://`, or StartTLS.
fn uses_tls(url: &str, start_tls: bool) -> bool {
    start_tls || url::Url::parse(url).is_ok_and(|url| url.scheme().eq_ignore_ascii_case("ldaps"))
}

/// The client TLS configuration trusting the system's CA certificates, for a
/// connection without `ca_file`; loaded once. ldap3 loads them itself, but trusts
/// none at all when any one fails to load (a file in `/etc/ssl/certs` that is not
/// PEM, or that this user may not read): every `ldaps://` and StartTLS connection
/// then failed as "UnknownIssuer". Here the certificates that load are trusted, and
/// those that did not are logged, each with its file.
fn system_tls_config() -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = system_roots(
                rustls_native_certs::load_native_certs(),
                &CertLocations::of_this_host(),
            )?;
            client_config(roots).map_err(|e| format!("LDAP over TLS: {e}"))
        })
        .clone()
        .map_err(DirectoryError::Settings)
}

/// Where rustls-native-certs reads the system's CA certificates from on this host.
#[derive(Debug, Default)]
struct CertLocations {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl CertLocations {
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR` (`:`-separated) when either is set, else
    /// what openssl-probe finds: rustls-native-certs' own choice on Unix, made the
    /// same way, so the files searched are the files it read.
    fn of_this_host() -> CertLocations {
        let file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        let dirs: Vec<PathBuf> = std::env::var_os("SSL_CERT_DIR")
            .map(|dirs| {
                std::env::split_paths(&dirs)
                    .filter(|dir| !dir.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if file.is_some() || !dirs.is_empty() {
            return CertLocations {
                files: file.into_iter().collect(),
                dirs,
            };
        }
        let probed = openssl_probe::probe();
        CertLocations {
            files: probed.cert_file.into_iter().collect(),
            dirs: probed.cert_dir,
        }
    }

    /// The locations, for an error that cannot name its file.
    fn describe(&self) -> String {
        let all: Vec<String> = self
            .files
            .iter()
            .chain(&self.dirs)
            .map(|path| path.display().to_string())
            .collect();
        if all.is_empty() {
            "SSL_CERT_FILE or SSL_CERT_DIR".to_owned()
        } else {
            all.join(", ")
        }
    }

    /// Every file whose PEM does not parse, each once (by its real path, not the
    /// hash-named links `c_rehash` leaves beside it), with each error it gave.
    fn malformed_pem(&self) -> Vec<(PathBuf, String)> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut seen = HashSet::new();
        let mut candidates: Vec<PathBuf> = self.files.clone();
        for dir in &self.dirs {
            if let Ok(entries) = std::fs::read_dir(dir) {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .collect();
                found.sort();
                candidates.extend(found);
            }
        }
        let mut malformed = Vec::new();
        for path in candidates {
            let real = std::fs::canonicalize(&path).unwrap_or(path);
            if !real.is_file() || !seen.insert(real.clone()) {
                continue;
            }
            match CertificateDer::pem_file_iter(&real) {
                Err(e) => malformed.push((real, e.to_string())),
                Ok(items) => malformed.extend(
                    items
                        .filter_map(Result::err)
                        .map(|e| (real.clone(), e.to_string())),
                ),
            }
        }
        malformed
    }
}

/// Each of `errors` as said to an operator, naming its file. rustls-native-certs
/// names the file of an I/O error, not of malformed PEM (a truncated or mangled
/// certificate, say one an admin added to the system's store): that file is
/// found again in `locations` by its error.
fn describe_load_errors(
    errors: &[rustls_native_certs::Error],
    locations: &CertLocations,
) -> Vec<String> {
    let mut malformed: Option<Vec<(PathBuf, String)>> = None;
    errors
        .iter()
        .map(|error| match &error.kind {
            rustls_native_certs::ErrorKind::Pem(pem) => {
                let pem = pem.to_string();
                let malformed = malformed.get_or_insert_with(|| locations.malformed_pem());
                match malformed.iter().position(|(_, e)| *e == pem) {
                    Some(i) => {
                        let (file, _) = malformed.remove(i);
                        format!("{} {}: {pem}", error.context, file.display())
                    }
                    None => format!("{error} (a file under {})", locations.describe()),
                }
            }
            _ => error.to_string(),
        })
        .collect()
}

/// The trusted roots among the system's certificates as `loaded` from
/// `locations`: every one that loaded, whatever failed beside it (logged, naming
/// the file).
fn system_roots(
    loaded: rustls_native_certs::CertificateResult,
    locations: &CertLocations,
) -> Result<rustls::RootCertStore, String> {
    let errors = describe_load_errors(&loaded.errors, locations);
    for error in &errors {
        tracing::warn!(
            error = %error,
            "a system CA certificate could not be loaded; LDAP over TLS trusts the others"
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(loaded.certs);
    if roots.is_empty() {
        let mut why = errors;
        if unusable > 0 {
            why.push(format!(
                "{unusable} certificate(s) found but not usable as roots"
            ));
        }
        let why = if why.is_empty() {
            "none found".to_owned()
        } else {
            why.join("; ")
        };
        return Err(format!(
            "LDAP over TLS: no system CA certificate could be loaded ({why}): set \
             directory.ca_file to the PEM file of the CA that issued the server's certificate"
        ));
    }
    Ok(roots)
}

fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The client TLS configuration trusting only the CA certificates in `ca_file`.
fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let settings = |what: String| {
        DirectoryError::Settings(format!("directory.ca_file {}: {what}", ca_file.display()))
    };
    // Read and checked as every connection's `ca_file` is: what it holds instead
    // of certificates (DER, a key) is said the same way.
    let pem = super::remote::ca_pem(Some(ca_file))?.unwrap_or_default();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|e| settings(e.to_string()))?;
        roots
            .add(certificate)
            .map_err(|e| settings(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(settings("no PEM certificate in the file".to_owned()));
    }
    client_config(roots).map_err(|e| settings(e.to_string()))
}

/// Decodes a search result entry. ldap3 panics on an entry that is not valid BER;
/// a server's bytes must not take the daemon down.
fn decode(raw: ResultEntry, url: &str, operation: &str) -> Result<SearchEntry, DirectoryError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(raw))).map_err(
        |_| DirectoryError::Malformed {
            endpoint: format!("{url} {operation}"),
            what: "an entry that is not a valid SearchResultEntry (RFC 4511)".to_owned(),
        },
    )
}

/// An LDAP failure as a directory error: result codes keep their number and name;
/// connection trouble is transient unless it is a TLS or certificate problem.
fn ldap_failure(url: &str, operation: &str, e: LdapError) -> DirectoryError {
    let endpoint = format!("{url} {operation}");
    match e {
        LdapError::LdapResult { result } => {
            let mut detail = describe_result(result.rc, &result.text);
            // A referral's URLs name the server that holds the base (OpenLDAP's
            // text is empty; Active Directory's names only a host).
            if !result.refs.is_empty() {
                detail.push_str(&format!("; referred to {}", result.refs.join(", ")));
            }
            DirectoryError::Ldap {
                endpoint,
                code: result.rc,
                detail,
            }
        }
        // The TLS handshake's failures come as InvalidData, the rustls error inside.
        LdapError::Io { source } if source.kind() == std::io::ErrorKind::InvalidData => {
            let tls = crate::http::tls_error(&source);
            let message = if tls.is_some_and(crate::http::not_tls) {
                // `ldaps://dc1:389`: the domain controller answers the TLS hello in
                // LDAP. No CA file would help.
                format!(
                    "TLS handshake failed: {source}; the server on that port does not speak \
                     TLS (ldaps:// to a plain LDAP port such as 389?): use its LDAPS port \
                     (636), or ldap:// with start_tls = true"
                )
            } else if tls.is_some_and(not_valid_for_name) {
                // `ldaps://10.0.0.5`: the certificate is trusted but names the
                // domain controller's DNS name. No CA file would help.
                format!(
                    "TLS certificate refused: {source}; the certificate must name the host \
                     in directory.url: write the name it was issued for (a domain \
                     controller's is its DNS name, e.g. dc1.corp.example.com, seldom an IP \
                     address)"
                )
            } else {
                format!(
                    "TLS: {source}; if a private CA signed the server's certificate, \
                     set directory.ca_file to it"
                )
            };
            DirectoryError::Transport {
                endpoint,
                transient: false,
                message,
            }
        }
        LdapError::Io { source } => DirectoryError::Transport {
            endpoint,
            transient: true,
            message: format!("I/O error: {source}"),
        },
        e @ (LdapError::Timeout { .. }
        | LdapError::OpSend { .. }
        | LdapError::ResultRecv { .. }
        | LdapError::EndOfStream) => DirectoryError::Transport {
            endpoint,
            message: e.to_string(),
            transient: true,
        },
        e @ (LdapError::UrlParsing { .. } | LdapError::UnknownScheme(_)) => {
            DirectoryError::Settings(format!("directory.url {url}: {e}"))
        }
        other => DirectoryError::Transport {
            endpoint,
            message: other.to_string(),
            transient: false,
        },
    }
}

/// The StartTLS request answered `unavailable` (52): a server with no certificate
/// to offer (Active Directory: "Error initializing SSL/TLS", a domain controller
/// without a server-authentication certificate; OpenLDAP: "TLS not configured").
/// Not transient, unlike a busy server's 52: no retry gives it a certificate.
/// Only StartTLS answers with a result while connecting (an `ldaps://` handshake
/// has none), so any result there is StartTLS's.
fn start_tls_unavailable(url: &str, start_tls: bool, e: &LdapError) -> Option<DirectoryError> {
    let LdapError::LdapResult { result } = e else {
        return None;
    };
    (start_tls && result.rc == 52).then(|| DirectoryError::Transport {
        endpoint: format!("{url} StartTLS"),
        transient: false,
        message: format!(
            "{}; the server has no certificate for StartTLS: install one on it (a domain \
             controller needs a server-authentication certificate in its computer store), \
             or point directory.url at a server that has one",
            describe_result(result.rc, &result.text)
        ),
    })
}

/// A certificate refused because it does not name the host the URL does.
fn not_valid_for_name(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. }
        )
    )
}

/// The URLs of a search result reference (RFC 4511 §4.5.3), without trusting the
/// encoding: what does not decode is left out.
fn reference_urls(raw: ResultEntry) -> Vec<String> {
    raw.0
        .expect_constructed()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|tag| tag.expect_primitive())
        .filter_map(|bytes| String::from_utf8(bytes).ok())
        .collect()
}

/// Whether a referral URL names one of the partitions Active Directory refers every
/// domain-root search to (DNS zones, configuration), which hold no people.
fn is_ad_partition(url: &str) -> bool {
    let dn = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split_once('/')
        .map_or("", |(_, dn)| dn);
    let dn = dn
        .split('?')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let dn = dn.replace("%20", " ");
    [
        "dc=domaindnszones,",
        "dc=forestdnszones,",
        "cn=configuration,",
    ]
    .iter()
    .any(|partition| dn.starts_with(partition))
}

/// RFC 4511 result code names, and what to check for the usual ones.
fn describe_result(code: u32, text: &str) -> String {
    let (name, hint) = match code {
        1 => ("operationsError", ""),
        2 => ("protocolError", ""),
        3 => ("timeLimitExceeded", ""),
        4 => (
            "sizeLimitExceeded",
            "; the server limits results: is the paged results control allowed?",
        ),
        // Active Directory requiring LDAP signing, OpenLDAP a security strength
        // factor: a simple bind over plain ldap:// is refused.
        8 => (
            "strongerAuthRequired",
            "; the server wants the connection encrypted: use ldaps:// or start_tls = true",
        ),
        10 => (
            "referral",
            "; the base DN is held by another server (another domain?): point directory.url at it",
        ),
        11 => ("adminLimitExceeded", ""),
        12 => ("unavailableCriticalExtension", ""),
        13 => (
            "confidentialityRequired",
            "; the server wants the connection encrypted: use ldaps:// or start_tls = true",
        ),
        32 => (
            "noSuchObject",
            "; check directory.base_dn and directory.group_base_dn",
        ),
        34 => (
            "invalidDNSyntax",
            "; check directory.bind_dn and directory.base_dn",
        ),
        48 => ("inappropriateAuthentication", ""),
        49 => (
            "invalidCredentials",
            active_directory_bind_refusal(text).unwrap_or(
                "; check directory.bind_dn and its password (directory.bind_password_file or bind_password)",
            ),
        ),
        50 => (
            "insufficientAccessRights",
            "; the bind account may not read these entries",
        ),
        51 => ("busy", ""),
        52 => ("unavailable", ""),
        53 => ("unwillingToPerform", ""),
        80 => ("other", ""),
        _ => ("", ""),
    };
    // One line without control characters: Active Directory ends its text with a
    // NUL (`…, data 52e, v4563\0`), which a terminal hides and journald takes for
    // a line break (the hint after it logged as a line of its own), and breaks a
    // referral's text into lines (`1 access points\n\tref 1: 'emea…'\n`).
    let text = text
        .split(char::is_control)
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let server = if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    };
    if name.is_empty() {
        format!("result code {code}{server}")
    } else {
        format!("{name} ({code}){server}{hint}")
    }
}

/// Why Active Directory refused a bind whose password may well be right: its
/// invalidCredentials text carries the Windows reason as `data 532`
/// (`80090308: LdapErr: DSID-…, comment: AcceptSecurityContext error, data 532,
/// v4563`). A service account's password that expired, or an account disabled or
/// locked out, is not fixed by checking the password file.
fn active_directory_bind_refusal(text: &str) -> Option<&'static str> {
    let data = text
        .split(',')
        .find_map(|part| part.trim().strip_prefix("data "))?
        .trim()
        .to_ascii_lowercase();
    Some(match data.as_str() {
        "525" => "; Active Directory: no such user (data 525): check directory.bind_dn",
        "530" | "531" | "534" => {
            "; Active Directory: the bind account may not log on from here or at this time \
             (logon hours, workstations or logon type restrictions): check its account options"
        }
        "532" => {
            "; Active Directory: the bind account's password has expired (data 532): set a new \
             one in Active Directory and in directory.bind_password_file (or bind_password)"
        }
        "533" => "; Active Directory: the bind account is disabled (data 533): enable it",
        "701" => {
            "; Active Directory: the bind account has expired (data 701, accountExpires): \
             extend it"
        }
        "773" => {
            "; Active Directory: the bind account must change its password at next logon \
             (data 773): set a new one in Active Directory and in \
             directory.bind_password_file (or bind_password)"
        }
        "775" => {
            "; Active Directory: the bind account is locked out (data 775) after wrong \
             passwords: unlock it, and check directory.bind_password_file (or bind_password) \
             and anything else still binding with an old password"
        }
        _ => return None,
    })
}

/// The values of an attribute that Active Directory may send in ranges
/// (`member;range=0-1499`, then `member;range=1500-*` for the last), gathered
/// across the answers. [`RangedValues::take`] says which range to ask for next.
#[derive(Debug)]
struct RangedValues {
    attribute: &'static str,
    values: Vec<String>,
}

impl RangedValues {
    fn new(attribute: &'static str) -> RangedValues {
        RangedValues {
            attribute,
            values: Vec::new(),
        }
    }

    /// Takes this attribute's values from one answer's attributes; returns the
    /// attribute description to ask for next (`member;range=1500-*`), or `None`
    /// when every value is in.
    fn take(&mut self, attrs: &HashMap<String, Vec<String>>) -> Result<Option<String>, String> {
        let mut next = None;
        let mut found = false;
        for (name, values) in attrs {
            let name = name.as_str();
            let (base, options) = name.split_once(';').unwrap_or((name, ""));
            if !base.eq_ignore_ascii_case(self.attribute) {
                continue;
            }
            found = true;
            let Some(range) = options.split(';').find_map(|o| {
                o.get(..6)
                    .filter(|p| p.eq_ignore_ascii_case("range="))
                    .and_then(|_| o.get(6..))
            }) else {
                self.values.extend(values.iter().cloned());
                continue;
            };
            let (start, end) = range
                .split_once('-')
                .ok_or_else(|| format!("attribute {name:?}: a range that is not start-end"))?;
            let start: u64 = start
                .parse()
                .map_err(|_| format!("attribute {name:?}: range start is not a number"))?;
            let expected = self.values.len() as u64;
            if start != expected {
                return Err(format!(
                    "attribute {name:?} starts at value {start}, after {expected} values"
                ));
            }
            self.values.extend(values.iter().cloned());
            if end != "*" {
                let end: u64 = end
                    .parse()
                    .map_err(|_| format!("attribute {name:?}: range end is not a number"))?;
                // In u128: a server's range may end at u64::MAX, where `end + 1`
                // overflowed (and wrapped to 0 in a release build).
                let count = u128::from(end) + 1;
                if end < start || u128::from(self.values.len() as u64) != count {
                    return Err(format!(
                        "attribute {name:?} holds {} values in all, not {count}",
                        self.values.len(),
                    ));
                }
                next = Some(format!("{};range={}-*", self.attribute, self.values.len()));
            }
        }
        if !found && !self.values.is_empty() {
            // More values were announced, then none came.
            return Err(format!(
                "the server announced more {} values after {}, then sent none",
                self.attribute,
                self.values.len()
            ));
        }
        Ok(next)
    }
}

/// A group as read: its `cn`, its DN as the server wrote it, and normalized DNs
/// (its own, its members').
#[derive(Debug)]
struct Group {
    name: String,
    /// Active Directory: `objectSid` as text (`S-1-5-21-…-513`), matched against
    /// the users' primary groups.
    sid: Option<String>,
    /// The change attribute's value in the answer that carried the first range of
    /// members (`uSNChanged` on Active Directory): see [`LdapFlavor::change_attribute`].
    version: Option<String>,
    raw_dn: String,
    dn: String,
    members: Vec<String>,
    /// RFC 2307 `memberUid` values: users by their `uid`, not their DN.
    member_uids: Vec<String>,
    /// Member attributes sent in ranges, with the range to ask for next.
    unfinished: Vec<(RangedValues, String)>,
}

/// A user entry as read, with its normalized DN.
#[derive(Debug)]
struct Person {
    dn: String,
    /// Active Directory: the SID (text) of the user's primary group, whose
    /// membership is not in its `member` attribute.
    primary_group: Option<String>,
    /// OpenLDAP: the user's `uid` values, which a `posixGroup`'s `memberUid` names.
    uids: Vec<String>,
    identity: Identity,
}

/// Case-insensitive lookup of an attribute's text values (ldap3 keys attributes as
/// the server spells them).
fn texts<'a>(entry: &'a SearchEntry, attribute: &str) -> Option<&'a Vec<String>> {
    entry
        .attrs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(attribute))
        .map(|(_, values)| values)
}

fn first_text<'a>(entry: &'a SearchEntry, attribute: &str) -> Option<&'a str> {
    texts(entry, attribute)
        .and_then(|values| values.first())
        .map(String::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// An attribute's values, trimmed, without empty ones and without repeats that
/// differ only in case, sorted: LDAP does not order an attribute's values (a
/// server may send them in another order after any change to the entry), so
/// "the first value" is not one to rely on.
fn distinct_texts<'a>(entry: &'a SearchEntry, attribute: &str) -> Vec<&'a str> {
    let mut values: Vec<&str> = texts(entry, attribute)
        .into_iter()
        .flatten()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    values.sort_by_cached_key(|v| (v.to_lowercase(), *v));
    values.dedup_by(|later, earlier| crate::model::same_ci(later, earlier));
    values
}

/// A group's name: its `cn`; of several (OpenLDAP allows aliases), the one its
/// DN is named by, else the first in alphabetical order. Never the first the
/// server sends: the name decides whom a mapping or a scope group takes in, and
/// a name that followed the order of the values would change with it.
fn group_name(entry: &SearchEntry) -> Option<String> {
    let names = distinct_texts(entry, "cn");
    if let [one] = names.as_slice() {
        return Some((*one).to_owned());
    }
    let normalized = normalize_dn(&entry.dn);
    let rdn = first_rdn(&normalized);
    names
        .iter()
        .find(|name| {
            let part = normalized_part("cn", Some(name.as_bytes()));
            unescaped_splits(rdn, b'+').any(|rdn_part| rdn_part == part)
        })
        .or(names.first())
        .map(|name| (*name).to_owned())
}

/// The first RDN of a DN [`normalize_dn`] wrote.
fn first_rdn(normalized: &str) -> &str {
    unescaped_splits(normalized, b',')
        .next()
        .unwrap_or_default()
}

/// The parts of `text` between the separators `separator` not escaped by a `\`.
fn unescaped_splits(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut at = 0;
    std::iter::from_fn(move || {
        if start > bytes.len() {
            return None;
        }
        while at < bytes.len() {
            match bytes[at] {
                b'\\' => at += 2,
                byte if byte == separator => {
                    let part = text.get(start..at);
                    at += 1;
                    start = at;
                    return part;
                }
                _ => at += 1,
            }
        }
        let part = text.get(start..);
        start = bytes.len() + 1;
        part
    })
}

/// The one value of an attribute that must have one (the id, the userName): two
/// that differ, whichever the server sent first, would make the person another
/// account on one run and this one on the next.
fn one_text<'a>(
    entry: &'a SearchEntry,
    attribute: &str,
    key: &str,
    what: &str,
) -> Result<Option<&'a str>, String> {
    match distinct_texts(entry, attribute).as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        several => Err(format!(
            "{attribute} has {} values ({}), and the {what} is one: LDAP does not order \
             values, so the account would follow whichever the server sent first. Keep \
             one value in {attribute} or set {key} to an attribute that holds one",
            several.len(),
            several
                .iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The raw bytes of an attribute's first value, text or binary (ldap3 files a
/// binary value that happens to be valid UTF-8 under text).
fn first_bytes<'a>(entry: &'a SearchEntry, attribute: &str) -> Option<&'a [u8]> {
    entry
        .bin_attrs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(attribute))
        .and_then(|(_, values)| values.first())
        .map(Vec::as_slice)
        .or_else(|| {
            texts(entry, attribute)
                .and_then(|values| values.first())
                .map(String::as_bytes)
        })
}

/// Active Directory's binary GUID attributes, written as GUID text.
const GUID_ATTRIBUTES: [&str; 2] = ["objectGUID", "mS-DS-ConsistencyGuid"];

/// A GUID's 16 bytes in Microsoft's order (the first three fields little-endian)
/// as lower-case text, as `Get-ADUser` shows `ObjectGUID`.
fn guid_text(bytes: &[u8]) -> Option<String> {
    let b: &[u8; 16] = bytes.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    ))
}

/// A binary SID (revision, sub-authority count, 48-bit big-endian authority,
/// little-endian 32-bit sub-authorities) as text: `S-1-5-21-1-2-3-513`.
fn sid_text(bytes: &[u8]) -> Option<String> {
    let (&revision, rest) = bytes.split_first()?;
    let (&count, rest) = rest.split_first()?;
    let authority = rest.get(..6)?;
    let subs = rest.get(6..)?;
    if subs.len() != usize::from(count) * 4 || count == 0 {
        return None;
    }
    let authority = authority
        .iter()
        .fold(0_u64, |acc, b| acc << 8 | u64::from(*b));
    let mut text = format!("S-{revision}-{authority}");
    for sub in subs.chunks_exact(4) {
        let value = u32::from_le_bytes([sub[0], sub[1], sub[2], sub[3]]);
        text.push_str(&format!("-{value}"));
    }
    Some(text)
}

/// Active Directory: the SID of the user's primary group, from the user's own
/// `objectSid` (the group is in the user's domain) and `primaryGroupID` (its RID).
fn primary_group_sid(entry: &SearchEntry) -> Result<String, String> {
    let rid = first_text(entry, "primaryGroupID")
        .ok_or("no primaryGroupID (can the bind account read it?)")?;
    let rid: u32 = rid
        .parse()
        .map_err(|_| format!("primaryGroupID {rid:?} is not a number"))?;
    let sid =
        first_bytes(entry, "objectSid").ok_or("no objectSid (can the bind account read it?)")?;
    let sid = sid_text(sid).ok_or("objectSid is not a valid SID")?;
    let domain = sid
        .rsplit_once('-')
        .map(|(domain, _)| domain)
        .ok_or("objectSid is not a valid SID")?;
    Ok(format!("{domain}-{rid}"))
}

/// The user's id: GUID text for Active Directory's binary GUIDs, else the text.
fn entry_id(entry: &SearchEntry, attribute: &str) -> Result<String, String> {
    if GUID_ATTRIBUTES
        .iter()
        .any(|a| a.eq_ignore_ascii_case(attribute))
    {
        let bytes = first_bytes(entry, attribute).ok_or_else(|| format!("no {attribute}"))?;
        return guid_text(bytes)
            .ok_or_else(|| format!("{attribute} is {} bytes, not a 16-byte GUID", bytes.len()));
    }
    if let Some(id) = one_text(entry, attribute, "directory.id_attribute", "id")? {
        return Ok(id.to_owned());
    }
    if first_bytes(entry, attribute).is_some() {
        return Err(format!(
            "{attribute} is binary; set directory.id_attribute to a text attribute"
        ));
    }
    Err(format!("no {attribute} (directory.id_attribute)"))
}

/// Active Directory: 100-ns intervals since 1601-01-01 UTC; 0 and i64::MAX mean
/// never.
fn account_expired(value: &str, now: DateTime<Utc>) -> Result<bool, String> {
    let ticks: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("accountExpires {value:?} is not a number"))?;
    if ticks <= 0 || ticks == i64::MAX {
        return Ok(false);
    }
    const TICKS_PER_SECOND: i64 = 10_000_000;
    const UNIX_EPOCH_IN_WINDOWS_SECONDS: i64 = 11_644_473_600;
    let seconds = ticks / TICKS_PER_SECOND - UNIX_EPOCH_IN_WINDOWS_SECONDS;
    Ok(DateTime::from_timestamp(seconds, 0).is_some_and(|expires| expires <= now))
}

/// The status an entry's attributes give, at `now`.
fn status(
    entry: &SearchEntry,
    flavor: LdapFlavor,
    now: DateTime<Utc>,
) -> Result<IdentityStatus, String> {
    match flavor {
        LdapFlavor::ActiveDirectory => {
            const ACCOUNTDISABLE: i64 = 0x2;
            let control = first_text(entry, "userAccountControl")
                .ok_or("no userAccountControl (can the bind account read it?)")?;
            let control: i64 = control
                .parse()
                .map_err(|_| format!("userAccountControl {control:?} is not a number"))?;
            // Every Active Directory user carries it (never-expiring ones too):
            // absent, it was not readable (a Global Catalog, or the bind account's
            // rights), and taking that as "never" keeps expired leavers active.
            let expires = first_text(entry, "accountExpires").ok_or(
                "no accountExpires (can the bind account read it? a Global Catalog does not hold it)",
            )?;
            let expired = account_expired(expires, now)?;
            Ok(if control & ACCOUNTDISABLE != 0 || expired {
                IdentityStatus::Suspended
            } else {
                IdentityStatus::Active
            })
        }
        LdapFlavor::OpenLdap => {
            // RFC draft behera-ppolicy: this value locks the account until an
            // administrator unlocks it.
            const ADMINISTRATIVE_LOCK: &str = "000001010000Z";
            let locked = texts(entry, "pwdAccountLockedTime")
                .is_some_and(|values| values.iter().any(|v| v.trim() == ADMINISTRATIVE_LOCK));
            let expired = match first_text(entry, "shadowExpire") {
                Some(day) => shadow_expired(day, now)?,
                None => false,
            };
            Ok(if locked || expired {
                IdentityStatus::Suspended
            } else {
                IdentityStatus::Active
            })
        }
    }
}

/// `shadowExpire`: the day (counted from 1970-01-01, UTC) from which the account
/// no longer logs in. `-1`, and `0` (which shadow(5) says not to use, and some
/// tools write for "never"), do not expire it.
fn shadow_expired(day: &str, now: DateTime<Utc>) -> Result<bool, String> {
    let day: i64 = day
        .trim()
        .parse()
        .map_err(|_| format!("shadowExpire {day:?} is not a number of days"))?;
    Ok(day > 0 && now.timestamp().div_euclid(86_400) >= day)
}

/// A user entry as an identity (groups filled in later).
fn person(entry: &SearchEntry, s: &LdapSettings, now: DateTime<Utc>) -> Result<Person, String> {
    let id = entry_id(entry, &s.id_attribute)?;
    let user_name = one_text(
        entry,
        &s.user_name_attribute,
        "directory.user_name_attribute",
        "userName",
    )?
    .ok_or_else(|| {
        format!(
            "no {} (the userName); leave such entries out with directory.user_filter, \
                 e.g. (&{}({}=*))",
            s.user_name_attribute, s.user_filter, s.user_name_attribute
        )
    })?
    .to_owned();
    // Of several values, the first in alphabetical order, as for `mail`: the first
    // the server sends may differ from one run to the next, and each change would
    // be planned as an update of the account.
    let text = |attribute: &str| {
        distinct_texts(entry, attribute)
            .first()
            .map(|value| (*value).to_owned())
    };
    let primary_group = match s.flavor {
        LdapFlavor::ActiveDirectory => Some(primary_group_sid(entry)?),
        LdapFlavor::OpenLdap => None,
    };
    let uids = s
        .flavor
        .uid_attributes()
        .iter()
        .filter_map(|a| texts(entry, a))
        .flatten()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    Ok(Person {
        dn: normalize_dn(&entry.dn),
        primary_group,
        uids,
        identity: Identity {
            id,
            email: email(entry, &user_name),
            user_name,
            given_name: text("givenName"),
            family_name: text("sn"),
            display_name: text("displayName"),
            status: status(entry, s.flavor, now)?,
            department: text(s.flavor.department_attribute()),
            groups: Vec::new(),
        },
    })
}

/// The person's email: `mail`, or when it has several values (aliases, on
/// OpenLDAP), the one that is the userName, else the first in alphabetical order.
/// Not the first the server sends: that may change from one run to the next, and
/// each change would be planned as an update of the account's email.
fn email(entry: &SearchEntry, user_name: &str) -> Option<String> {
    let mails = distinct_texts(entry, "mail");
    mails
        .iter()
        .find(|mail| crate::model::same_ci(mail, user_name))
        .or(mails.first())
        .map(|mail| (*mail).to_owned())
}

/// A filter as an operand of `&`: RFC 4515 wants it in parentheses, which a
/// single comparison such as `nsAccountLock=TRUE` may be written without.
fn parenthesized(filter: &str) -> String {
    let filter = filter.trim();
    if filter.starts_with('(') {
        filter.to_owned()
    } else {
        format!("({filter})")
    }
}

/// A member value's DN: `uniqueMember` (RFC 4519 NameAndOptionalUID) may end in
/// `#'0101'B`, a bit string that is not part of the DN.
fn member_dn<'a>(attribute: &str, value: &'a str) -> &'a str {
    if !attribute.eq_ignore_ascii_case("uniqueMember") {
        return value;
    }
    let trimmed = value.trim_end();
    let Some(bits) = trimmed.strip_suffix("'B") else {
        return value;
    };
    // `#'B` alone (the `'` of `#'` is the one before `B`) is no bit string.
    match bits.rfind("#'") {
        Some(at)
            if bits
                .get(at + 2..)
                .is_some_and(|b| b.chars().all(|c| c == '0' || c == '1'))
                && !trimmed[..at].ends_with('\\') =>
        {
            &trimmed[..at]
        }
        _ => value,
    }
}

/// The domain a DN is in: its trailing `DC=` RDNs as written (the DN itself when
/// it has none).
fn domain_root(dn: &str) -> String {
    let mut rdns = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in dn.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            rdns.push(std::mem::take(&mut current));
            continue;
        }
        current.push(c);
    }
    rdns.push(current);
    let is_dc = |rdn: &String| {
        rdn.split_once('=')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("dc"))
    };
    let keep = rdns.iter().rev().take_while(|rdn| is_dc(rdn)).count();
    if keep == 0 {
        return dn.to_owned();
    }
    rdns[rdns.len() - keep..]
        .iter()
        .map(|rdn| rdn.trim())
        .collect::<Vec<_>>()
        .join(",")
}

/// A DN in one spelling for comparison (RFC 4514 semantics): attribute types and
/// values lower case, no unescaped spaces around `,`, `+` and `=` or at either end
/// of a value, escapes decoded (`\2C` and `\,` are one comma, `\C3\A9` is `é`),
/// and the parts of a multi-valued RDN (`cn=Ann+uid=ann`) in one order. Servers
/// write member values as they were stored (slapadd keeps an LDIF's spelling),
/// which need not be how the entry's own DN comes back: a member that compares
/// unequal is left out, out of scope, to be deactivated.
fn normalize_dn(dn: &str) -> String {
    let mut rdns: Vec<String> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    let mut attribute = String::new();
    let mut value: Vec<u8> = Vec::new();
    // The value's length up to its last escaped or non-space byte: unescaped
    // trailing spaces are not part of it.
    let mut kept = 0;
    let mut in_value = false;
    let bytes = dn.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        at += 1;
        if !in_value {
            match byte {
                b'=' => in_value = true,
                b',' | b'+' => {
                    parts.push(normalized_part(&attribute, None));
                    attribute.clear();
                    if byte == b',' {
                        rdns.push(one_rdn(&mut parts));
                    }
                }
                _ => attribute.push(char::from(byte)),
            }
            continue;
        }
        match byte {
            b'\\' => {
                let hex = bytes
                    .get(at..at + 2)
                    .and_then(|pair| std::str::from_utf8(pair).ok())
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok());
                match (hex, bytes.get(at)) {
                    (Some(decoded), _) => {
                        value.push(decoded);
                        at += 2;
                    }
                    (None, Some(&escaped)) => {
                        value.push(escaped);
                        at += 1;
                    }
                    (None, None) => value.push(byte),
                }
                kept = value.len();
            }
            b',' | b'+' => {
                value.truncate(kept);
                parts.push(normalized_part(&attribute, Some(&value)));
                attribute.clear();
                value.clear();
                kept = 0;
                in_value = false;
                if byte == b',' {
                    rdns.push(one_rdn(&mut parts));
                }
            }
            b' ' if value.is_empty() => {}
            b' ' => value.push(byte),
            _ => {
                value.push(byte);
                kept = value.len();
            }
        }
    }
    value.truncate(kept);
    parts.push(normalized_part(
        &attribute,
        in_value.then_some(value.as_slice()),
    ));
    rdns.push(one_rdn(&mut parts));
    rdns.join(",")
}

/// One `type=value` of a DN, lower case, with the characters that separate parts
/// escaped again so that two different DNs never come out alike.
fn normalized_part(attribute: &str, value: Option<&[u8]>) -> String {
    let attribute = attribute.trim().to_lowercase();
    let Some(value) = value else {
        return attribute;
    };
    let mut part = attribute;
    part.push('=');
    for c in String::from_utf8_lossy(value).to_lowercase().chars() {
        if matches!(c, '\\' | ',' | '+') {
            part.push('\\');
        }
        part.push(c);
    }
    part
}

/// The parts of one RDN, in one order whatever order the DN wrote them in.
fn one_rdn(parts: &mut Vec<String>) -> String {
    parts.sort();
    let rdn = parts.join("+");
    parts.clear();
    rdn
}

/// The identities with their groups, nested groups expanded. Fails on two users
/// with one id, naming the server at `url`.
fn identities(
    people: Vec<Person>,
    groups: &[Group],
    url: &str,
) -> Result<Vec<Identity>, DirectoryError> {
    let person_at: HashMap<&str, usize> = people
        .iter()
        .enumerate()
        .map(|(i, p)| (p.dn.as_str(), i))
        .collect();
    let group_at: HashMap<&str, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.dn.as_str(), i))
        .collect();
    // Active Directory: members through their primary group, not in its `member`.
    let mut by_primary_group: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, person) in people.iter().enumerate() {
        if let Some(sid) = &person.primary_group {
            by_primary_group.entry(sid.as_str()).or_default().push(i);
        }
    }
    // RFC 2307 posixGroup: members by uid.
    let mut by_uid: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, person) in people.iter().enumerate() {
        for uid in &person.uids {
            by_uid.entry(uid.as_str()).or_default().push(i);
        }
    }
    let mut names: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); people.len()];
    for group in groups {
        // Every group reachable from this one through members that are groups.
        let mut seen = vec![false; groups.len()];
        let mut pending = vec![group];
        while let Some(current) = pending.pop() {
            if let Some(primary) = current
                .sid
                .as_deref()
                .and_then(|sid| by_primary_group.get(sid))
            {
                for &person in primary {
                    names[person].insert(&group.name);
                }
            }
            for uid in &current.member_uids {
                for &person in by_uid.get(uid.as_str()).into_iter().flatten() {
                    names[person].insert(&group.name);
                }
            }
            for member in &current.members {
                if let Some(&person) = person_at.get(member.as_str()) {
                    names[person].insert(&group.name);
                } else if let Some(&nested) = group_at.get(member.as_str())
                    && !std::mem::replace(&mut seen[nested], true)
                {
                    pending.push(&groups[nested]);
                }
            }
        }
    }
    let mut by_id: HashMap<&str, &str> = HashMap::with_capacity(people.len());
    for person in &people {
        if let Some(other) = by_id.insert(&person.identity.id, &person.dn) {
            return Err(DirectoryError::Malformed {
                endpoint: format!("{url} users"),
                what: format!(
                    "{:?} and {other:?} have the same id {:?}; set directory.id_attribute to \
                     an attribute unique to each user",
                    person.dn, person.identity.id
                ),
            });
        }
    }
    let names: Vec<Vec<String>> = names
        .into_iter()
        .map(|set| set.into_iter().map(str::to_owned).collect())
        .collect();
    Ok(people
        .into_iter()
        .zip(names)
        .map(|(person, groups)| Identity {
            groups,
            ..person.identity
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::collections::HashMap;

    use chrono::{TimeZone, Utc};
    use ldap3::SearchEntry;

    use super::{
        Duration, Group, LdapFlavor, LdapSettings, PageChecks, Person, RangedValues, RetryPolicy,
        Secret, account_expired, any_group_filter, describe_result, domain_root, entry_id,
        guid_text, identities, is_ad_partition, ldap_failure, member_dn, normalize_dn,
        parenthesized, primary_group_sid, sends_password_in_clear, sid_text, start_tls_unavailable,
        status,
    };

    #[test]
    fn an_active_directory_bind_refusal_says_why_when_the_password_may_be_right() {
        let text = |data: &str| {
            format!(
                "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, \
                 data {data}, v4563\u{0}"
            )
        };
        let expired = describe_result(49, &text("532"));
        assert!(
            expired.starts_with("invalidCredentials (49): 80090308"),
            "{expired}"
        );
        assert!(expired.contains("password has expired"), "{expired}");
        assert!(!expired.contains("check directory.bind_dn"), "{expired}");
        // Active Directory's trailing NUL is not passed on.
        assert!(
            expired.starts_with(
                "invalidCredentials (49): 80090308: LdapErr: DSID-0C09044E, comment: \
                 AcceptSecurityContext error, data 532, v4563; Active Directory:"
            ),
            "{expired:?}"
        );
        let referral = describe_result(
            10,
            "0000202B: RefErr: DSID-0310082F, data 0, 1 access points\n\tref 1: \
             'emea.corp.example.com'\n\u{0}",
        );
        assert!(
            referral.starts_with(
                "referral (10): 0000202B: RefErr: DSID-0310082F, data 0, 1 access points \
                 ref 1: 'emea.corp.example.com'; the base DN"
            ),
            "{referral:?}"
        );
        assert!(describe_result(49, &text("533")).contains("is disabled"));
        assert!(describe_result(49, &text("701")).contains("has expired (data 701"));
        assert!(describe_result(49, &text("773")).contains("must change its password"));
        assert!(describe_result(49, &text("775")).contains("locked out"));
        assert!(describe_result(49, &text("525")).contains("no such user"));
        // A wrong password (52e), another server's text, or none: the usual hint.
        for text in [text("52e"), "invalid credentials".to_owned(), String::new()] {
            let detail = describe_result(49, &text);
            assert!(
                detail.ends_with(
                    "check directory.bind_dn and its password \
                     (directory.bind_password_file or bind_password)"
                ),
                "{detail}"
            );
        }
    }

    #[test]
    fn a_bind_refused_over_plain_ldap_says_to_encrypt() {
        // Active Directory with "LDAP server signing requirements: Require signing".
        let signing = describe_result(
            8,
            "00002028: LdapErr: DSID-0C090259, comment: The server requires binds to turn on \
             integrity checking if SSL\\TLS are not already active on the connection",
        );
        assert!(
            signing.starts_with("strongerAuthRequired (8): 00002028"),
            "{signing}"
        );
        assert!(
            signing.ends_with("use ldaps:// or start_tls = true"),
            "{signing}"
        );
        // OpenLDAP with `security ssf=…`.
        let ssf = describe_result(13, "confidentiality required");
        assert!(ssf.starts_with("confidentialityRequired (13)"), "{ssf}");
        assert!(ssf.ends_with("use ldaps:// or start_tls = true"), "{ssf}");
    }

    /// A domain controller without a certificate answers StartTLS with
    /// `unavailable` (52), which elsewhere is a server that may come back: here it
    /// fails at once and says why, instead of being retried for nothing.
    #[test]
    fn a_start_tls_refused_as_unavailable_says_the_server_has_no_certificate() {
        let refused = |rc: u32, text: &str| ldap3::LdapError::LdapResult {
            result: ldap3::LdapResult {
                rc,
                matched: String::new(),
                text: text.to_owned(),
                refs: Vec::new(),
                ctrls: Vec::new(),
            },
        };
        let ad = refused(
            52,
            "00000000: LdapErr: DSID-0C09120C, comment: Error initializing SSL/TLS, data 0, v4563\0",
        );
        let error = start_tls_unavailable("ldap://dc1.corp.example.com", true, &ad).unwrap();
        assert!(!error.is_transient(), "{error}");
        let text = error.to_string();
        assert!(
            text.starts_with("ldap://dc1.corp.example.com StartTLS: unavailable (52): 00000000"),
            "{text}"
        );
        assert!(
            text.contains("the server has no certificate for StartTLS"),
            "{text}"
        );
        // Without StartTLS, or another result, it is not this refusal.
        assert!(start_tls_unavailable("ldap://dc1", false, &ad).is_none());
        assert!(start_tls_unavailable("ldap://dc1", true, &refused(51, "busy")).is_none());
        assert!(
            start_tls_unavailable("ldap://dc1", true, &ldap3::LdapError::EndOfStream).is_none()
        );
    }

    #[test]
    fn a_referral_names_the_server_it_refers_to() {
        let referred = "ldap://emea.corp.example.com/OU=Staff,DC=emea,DC=corp,DC=example,DC=com";
        let error = ldap_failure(
            "ldap://dc1.corp.example.com",
            "search users",
            ldap3::LdapError::LdapResult {
                result: ldap3::LdapResult {
                    rc: 10,
                    matched: String::new(),
                    text: String::new(),
                    refs: vec![referred.to_owned()],
                    ctrls: Vec::new(),
                },
            },
        )
        .to_string();
        assert!(
            error.starts_with("ldap://dc1.corp.example.com search users: referral (10)"),
            "{error}"
        );
        assert!(
            error.ends_with(&format!("referred to {referred}")),
            "{error}"
        );
    }

    #[test]
    fn nested_groups_are_listed_whatever_a_narrowed_group_filter_says() {
        let ad = LdapFlavor::ActiveDirectory;
        assert_eq!(
            any_group_filter(ad, " (objectclass=group) "),
            "(objectClass=group)"
        );
        let narrowed = any_group_filter(ad, "(&(objectClass=group)(cn=Taskade-*))");
        assert_eq!(
            narrowed,
            "(|(objectClass=group)(&(objectClass=group)(cn=Taskade-*)))"
        );
        let posix = any_group_filter(LdapFlavor::OpenLdap, "objectClass=posixGroup");
        assert_eq!(
            posix,
            "(|(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))(objectClass=posixGroup))"
        );
        for filter in [narrowed, posix] {
            assert!(ldap3::parse_filter(&filter).is_ok(), "{filter}");
        }
    }

    #[test]
    fn active_directory_partition_referrals_are_told_from_child_domains() {
        for partition in [
            "ldap://ForestDnsZones.corp.example.com/DC=ForestDnsZones,DC=corp,DC=example,DC=com",
            "ldap://DomainDnsZones.corp.example.com/DC=DomainDnsZones,DC=corp,DC=example,DC=com",
            "ldap://corp.example.com/CN=Configuration,DC=corp,DC=example,DC=com",
        ] {
            assert!(is_ad_partition(partition), "{partition}");
        }
        for elsewhere in [
            "ldap://emea.corp.example.com/DC=emea,DC=corp,DC=example,DC=com",
            "ldap://other.example.com/OU=Contractors,DC=corp,DC=example,DC=com??sub",
            "not a url",
        ] {
            assert!(!is_ad_partition(elsewhere), "{elsewhere}");
        }
    }
    use crate::model::{Identity, IdentityStatus};

    fn entry(attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: "uid=x,dc=example,dc=com".to_owned(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
            bin_attrs: HashMap::new(),
        }
    }

    fn attrs(pairs: &[(&str, usize, usize)]) -> HashMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(name, from, to)| {
                (
                    (*name).to_owned(),
                    (*from..*to).map(|n| format!("m{n}")).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn ranged_members_are_read_range_by_range_until_the_last() {
        let mut ranged = RangedValues::new("member");
        let next = ranged.take(&attrs(&[("member;range=0-1499", 0, 1500), ("cn", 0, 1)]));
        assert_eq!(next, Ok(Some("member;range=1500-*".to_owned())));
        let next = ranged.take(&attrs(&[("member;range=1500-2999", 1500, 3000)]));
        assert_eq!(next, Ok(Some("member;range=3000-*".to_owned())));
        let next = ranged.take(&attrs(&[("Member;Range=3000-*", 3000, 3210)]));
        assert_eq!(next, Ok(None));
        assert_eq!(ranged.values.len(), 3210);
        assert_eq!(ranged.values[2999], "m2999");
        assert_eq!(ranged.values[3209], "m3209");
    }

    /// A range ending at the largest number (`member;range=0-18446744073709551615`)
    /// overflowed `end + 1`: a panic in a debug build, and in a release build a
    /// count compared with 0 and a message saying the group should hold 0 values.
    #[test]
    fn a_range_ending_at_the_largest_number_is_an_error_naming_the_attribute() {
        let mut ranged = RangedValues::new("member");
        let error = ranged
            .take(&attrs(&[("member;range=0-18446744073709551615", 0, 3)]))
            .unwrap_err();
        assert!(
            error.contains("member;range=0-18446744073709551615")
                && error.contains("holds 3 values")
                && !error.contains("not 0"),
            "{error}"
        );
    }

    #[test]
    fn unranged_members_need_no_second_read() {
        let mut ranged = RangedValues::new("member");
        assert_eq!(ranged.take(&attrs(&[("member", 0, 3)])), Ok(None));
        assert_eq!(ranged.values, ["m0", "m1", "m2"]);
        let mut none = RangedValues::new("member");
        assert_eq!(none.take(&attrs(&[("cn", 0, 1)])), Ok(None));
        assert!(none.values.is_empty());
    }

    #[test]
    fn a_range_that_does_not_follow_on_is_an_error_not_fewer_members() {
        let mut gap = RangedValues::new("member");
        gap.take(&attrs(&[("member;range=0-1499", 0, 1500)]))
            .unwrap();
        let error = gap
            .take(&attrs(&[("member;range=1600-*", 1600, 1700)]))
            .unwrap_err();
        assert!(
            error.contains("starts at value 1600, after 1500"),
            "{error}"
        );

        let mut short = RangedValues::new("member");
        let error = short
            .take(&attrs(&[("member;range=0-1499", 0, 1000)]))
            .unwrap_err();
        assert!(error.contains("1000 values in all, not 1500"), "{error}");

        let mut vanished = RangedValues::new("member");
        vanished
            .take(&attrs(&[("member;range=0-1499", 0, 1500)]))
            .unwrap();
        let error = vanished.take(&attrs(&[("cn", 0, 1)])).unwrap_err();
        assert!(error.contains("then sent none"), "{error}");
    }

    #[test]
    fn object_guid_is_written_as_active_directory_shows_it() {
        // objectGUID holds a GUID in .NET's `Guid(byte[])` order: the first three
        // fields little-endian, the last eight bytes as they are.
        let bytes = [
            0xe9, 0xa4, 0x3e, 0x0e, 0xf1, 0xb3, 0x4e, 0x4b, 0x9e, 0x4b, 0x56, 0xf8, 0xe3, 0x9f,
            0x5a, 0x11,
        ];
        assert_eq!(
            guid_text(&bytes).as_deref(),
            Some("0e3ea4e9-b3f1-4b4e-9e4b-56f8e39f5a11")
        );
        assert_eq!(guid_text(&bytes[..15]), None);
        let mut binary = entry(&[]);
        binary
            .bin_attrs
            .insert("objectGUID".to_owned(), vec![bytes.to_vec()]);
        assert_eq!(
            entry_id(&binary, "objectguid").as_deref(),
            Ok("0e3ea4e9-b3f1-4b4e-9e4b-56f8e39f5a11")
        );
        // A GUID whose bytes are all ASCII arrives as text; it is still a GUID.
        let ascii = entry(&[("objectGUID", &["0123456789abcdef"])]);
        assert_eq!(
            entry_id(&ascii, "objectGUID").as_deref(),
            Ok("33323130-3534-3736-3839-616263646566")
        );
        let uuid = entry(&[("entryUUID", &["6f1b1f0e-5e0b-103f-8b1a-8f2b6f1e2a3c"])]);
        assert_eq!(
            entry_id(&uuid, "entryuuid").as_deref(),
            Ok("6f1b1f0e-5e0b-103f-8b1a-8f2b6f1e2a3c")
        );
        assert!(
            entry_id(&uuid, "objectGUID")
                .unwrap_err()
                .contains("no objectGUID")
        );
    }

    #[test]
    fn active_directory_status_comes_from_the_disabled_flag_and_the_expiry() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let ad = |control: &str, expires: Option<&str>| {
            let mut pairs: Vec<(&str, &[&str])> = Vec::new();
            let control = [control];
            pairs.push(("userAccountControl", &control));
            let expires_value;
            if let Some(e) = expires {
                expires_value = [e];
                pairs.push(("accountExpires", &expires_value));
            }
            status(&entry(&pairs), LdapFlavor::ActiveDirectory, now)
        };
        let never = Some("9223372036854775807");
        assert_eq!(ad("512", never), Ok(IdentityStatus::Active));
        assert_eq!(ad("514", never), Ok(IdentityStatus::Suspended));
        assert_eq!(
            ad("66050", never),
            Ok(IdentityStatus::Suspended),
            "DONT_EXPIRE_PASSWORD|ACCOUNTDISABLE|NORMAL"
        );
        assert_eq!(ad("512", Some("0")), Ok(IdentityStatus::Active));
        // Not readable is not "never expires": an expired leaver would stay active.
        assert!(ad("512", None).unwrap_err().contains("no accountExpires"));
        assert_eq!(
            ad("512", Some("9223372036854775807")),
            Ok(IdentityStatus::Active)
        );
        // 2026-11-30 00:00 UTC and 2026-12-02 00:00 UTC in Windows file time.
        assert_eq!(
            ad("512", Some("134404704000000000")),
            Ok(IdentityStatus::Suspended)
        );
        assert_eq!(
            ad("512", Some("134406432000000000")),
            Ok(IdentityStatus::Active)
        );
        assert!(ad("x", never).unwrap_err().contains("not a number"));
        assert!(status(&entry(&[]), LdapFlavor::ActiveDirectory, now).is_err());
    }

    #[test]
    fn account_expiry_converts_windows_file_time() {
        let before = Utc.with_ymd_and_hms(2026, 11, 29, 23, 59, 59).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        assert_eq!(account_expired("134404704000000000", before), Ok(false));
        assert_eq!(account_expired("134404704000000000", at), Ok(true));
    }

    #[test]
    fn only_an_administrative_lock_suspends_on_openldap() {
        let now = Utc::now();
        let locked = entry(&[("pwdAccountLockedTime", &["000001010000Z"])]);
        let failed_logins = entry(&[("pwdAccountLockedTime", &["20261130101500Z"])]);
        assert_eq!(
            status(&locked, LdapFlavor::OpenLdap, now),
            Ok(IdentityStatus::Suspended)
        );
        assert_eq!(
            status(&failed_logins, LdapFlavor::OpenLdap, now),
            Ok(IdentityStatus::Active)
        );
        assert_eq!(
            status(&entry(&[]), LdapFlavor::OpenLdap, now),
            Ok(IdentityStatus::Active)
        );
    }

    #[test]
    fn a_shadow_expiry_day_that_has_come_suspends_on_openldap() {
        // 2026-12-02 is day 20,789.
        let last_evening = Utc.with_ymd_and_hms(2026, 12, 1, 23, 59, 59).unwrap();
        let morning = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
        let expiring = entry(&[("shadowExpire", &["20789"])]);
        assert_eq!(
            status(&expiring, LdapFlavor::OpenLdap, last_evening),
            Ok(IdentityStatus::Active)
        );
        assert_eq!(
            status(&expiring, LdapFlavor::OpenLdap, morning),
            Ok(IdentityStatus::Suspended)
        );
        for never in ["-1", "0"] {
            assert_eq!(
                status(
                    &entry(&[("shadowExpire", &[never])]),
                    LdapFlavor::OpenLdap,
                    morning
                ),
                Ok(IdentityStatus::Active),
                "{never}"
            );
        }
        let garbled = status(
            &entry(&[("shadowExpire", &["soon"])]),
            LdapFlavor::OpenLdap,
            morning,
        );
        assert!(garbled.is_err_and(|e| e.contains("shadowExpire")));
    }

    #[test]
    fn a_clear_text_bind_is_only_acceptable_on_loopback() {
        assert!(sends_password_in_clear(
            "ldap://dc1.corp.example.com",
            false
        ));
        assert!(!sends_password_in_clear(
            "ldap://dc1.corp.example.com",
            true
        ));
        assert!(!sends_password_in_clear(
            "ldaps://dc1.corp.example.com",
            false
        ));
        assert!(!sends_password_in_clear("ldap://127.0.0.1:389", false));
        assert!(!sends_password_in_clear("ldap://localhost", false));
        assert!(!sends_password_in_clear("ldap://[::1]:389", false));
    }

    #[test]
    fn a_bare_comparison_becomes_an_operand() {
        assert_eq!(
            parenthesized(" nsAccountLock=TRUE "),
            "(nsAccountLock=TRUE)"
        );
        assert_eq!(parenthesized("(&(a=1)(b=2))"), "(&(a=1)(b=2))");
        for filter in ["nsAccountLock=TRUE", "(&(objectClass=user)(mail=*))"] {
            let combined = format!("(&{}{})", parenthesized(filter), parenthesized("x=1"));
            assert!(ldap3::parse_filter(&combined).is_ok(), "{combined}");
        }
    }

    #[test]
    fn dns_compare_in_one_spelling() {
        assert_eq!(
            normalize_dn("CN=Ada Lovelace, OU=People,DC=Example, DC=com"),
            "cn=ada lovelace,ou=people,dc=example,dc=com"
        );
        assert_eq!(
            normalize_dn("cn = Smith\\, John ,ou=people"),
            "cn=smith\\, john,ou=people"
        );
    }

    #[test]
    fn dns_compare_whatever_the_escapes_spaces_and_rdn_order() {
        let same = [
            ("cn=Smith\\, John,ou=people", "cn=Smith\\2C John,ou=people"),
            (
                "cn=Smith\\2c John,ou=people",
                "CN=smith\\, john , OU=People",
            ),
            ("uid=jos\\C3\\A9,ou=people", "uid=jos\u{e9},ou=people"),
            ("cn=Ann+uid=ann,ou=people", "uid=ann + cn=Ann,ou=people"),
            ("cn=\\ Lead,ou=people", "cn=\\20Lead,ou=people"),
            ("cn=Trail\\ ,ou=people", "cn=Trail\\20 ,ou=people"),
        ];
        for (a, b) in same {
            assert_eq!(normalize_dn(a), normalize_dn(b), "{a} and {b}");
        }
        let different = [
            ("cn=a\\,b=c,ou=x", "cn=a,b=c,ou=x"),
            ("cn=a\\+uid=b,ou=x", "cn=a+uid=b,ou=x"),
            ("cn=\\ Lead,ou=people", "cn=Lead,ou=people"),
            ("cn=Jos\\C3\\A9,ou=people", "cn=Jose,ou=people"),
        ];
        for (a, b) in different {
            assert_ne!(normalize_dn(a), normalize_dn(b), "{a} and {b}");
        }
    }

    #[test]
    fn members_spelt_otherwise_than_their_entry_still_count() {
        // slapadd keeps an LDIF's spelling of member values, while slapd answers
        // with its own spelling of each entry's DN.
        let people = vec![
            person("cn=Smith\\2C John,ou=people", "s"),
            person("uid=jos\u{e9},ou=people", "j"),
            person("cn=Ann+uid=ann,ou=people", "a"),
        ];
        let groups = vec![group(
            "Users",
            &[
                "cn=Smith\\, John,ou=people",
                "uid=jos\\C3\\A9,ou=people",
                "uid=ann+cn=Ann,ou=people",
            ],
        )];
        let identities = identities(people, &groups, URL).unwrap();
        for identity in &identities {
            assert_eq!(identity.groups, ["Users"], "{}", identity.id);
        }
    }

    const URL: &str = "ldaps://dc1.corp.example.com";

    fn person(dn: &str, id: &str) -> Person {
        Person {
            dn: normalize_dn(dn),
            primary_group: None,
            uids: Vec::new(),
            identity: Identity {
                id: id.to_owned(),
                user_name: format!("{id}@example.com"),
                email: None,
                given_name: None,
                family_name: None,
                display_name: None,
                status: IdentityStatus::Active,
                department: None,
                groups: Vec::new(),
            },
        }
    }

    fn group(name: &str, members: &[&str]) -> Group {
        let dn = format!("cn={name},ou=groups");
        Group {
            name: name.to_owned(),
            sid: None,
            version: None,
            dn: normalize_dn(&dn),
            member_uids: Vec::new(),
            raw_dn: dn,
            members: members.iter().map(|m| normalize_dn(m)).collect(),
            unfinished: Vec::new(),
        }
    }

    #[test]
    fn nested_groups_count_and_cycles_end() {
        let people = vec![
            person("uid=ada,ou=people", "a"),
            person("uid=dee,ou=people", "d"),
        ];
        let groups = vec![
            group("Users", &["uid=ada,ou=people", "cn=Engineering,ou=groups"]),
            group(
                "Engineering",
                &["UID=dee, ou=people", "cn=printer,ou=people"],
            ),
            group("Loop A", &["cn=Loop B,ou=groups", "uid=dee,ou=people"]),
            group("Loop B", &["cn=Loop A,ou=groups"]),
        ];
        let identities = identities(people, &groups, URL).unwrap();
        assert_eq!(identities[0].groups, ["Users"]);
        assert_eq!(
            identities[1].groups,
            ["Engineering", "Loop A", "Loop B", "Users"]
        );
    }

    #[test]
    fn a_sid_is_written_as_text_and_a_primary_group_shares_the_users_domain() {
        // S-1-5-21-1004336348-1177238915-682003330-1105
        let mut bytes = vec![1, 5, 0, 0, 0, 0, 0, 5];
        for sub in [21_u32, 1_004_336_348, 1_177_238_915, 682_003_330, 1105] {
            bytes.extend(sub.to_le_bytes());
        }
        assert_eq!(
            sid_text(&bytes).as_deref(),
            Some("S-1-5-21-1004336348-1177238915-682003330-1105")
        );
        assert_eq!(sid_text(&bytes[..bytes.len() - 1]), None);
        assert_eq!(sid_text(&[1]), None);
        let mut user = entry(&[("primaryGroupID", &["513"])]);
        user.bin_attrs.insert("objectSid".to_owned(), vec![bytes]);
        assert_eq!(
            primary_group_sid(&user).as_deref(),
            Ok("S-1-5-21-1004336348-1177238915-682003330-513")
        );
        let unreadable = entry(&[("primaryGroupID", &["513"])]);
        assert!(
            primary_group_sid(&unreadable)
                .unwrap_err()
                .contains("no objectSid")
        );
    }

    #[test]
    fn members_through_their_primary_group_count_nested_too() {
        let mut dee = person("cn=dee,ou=staff", "d");
        dee.primary_group = Some("S-1-5-21-1-2-3-1200".to_owned());
        let mut eve = person("cn=eve,ou=staff", "e");
        // Another domain's group with the same RID.
        eve.primary_group = Some("S-1-5-21-9-9-9-1200".to_owned());
        let mut contractors = group("Contractors", &[]);
        contractors.sid = Some("S-1-5-21-1-2-3-1200".to_owned());
        let groups = vec![
            contractors,
            group("Everyone", &["cn=Contractors,ou=groups"]),
        ];
        let identities = identities(vec![dee, eve], &groups, URL).unwrap();
        assert_eq!(identities[0].groups, ["Contractors", "Everyone"]);
        assert!(identities[1].groups.is_empty());
    }

    #[test]
    fn posix_group_members_are_found_by_uid() {
        let mut ada = person("uid=ada,ou=people", "a");
        ada.uids = vec!["ada".to_owned()];
        let mut bob = person("uid=bob,ou=people", "b");
        bob.uids = vec!["bob".to_owned()];
        let mut developers = group("developers", &[]);
        developers.member_uids = vec!["ada".to_owned(), "nobody".to_owned()];
        let groups = vec![developers, group("Staff", &["cn=developers,ou=groups"])];
        let identities = identities(vec![ada, bob], &groups, URL).unwrap();
        assert_eq!(identities[0].groups, ["Staff", "developers"]);
        assert!(identities[1].groups.is_empty());
    }

    #[test]
    fn a_unique_member_uid_suffix_is_not_part_of_the_dn() {
        assert_eq!(
            member_dn("uniqueMember", "uid=cy,ou=people,dc=example,dc=com#'0101'B"),
            "uid=cy,ou=people,dc=example,dc=com"
        );
        assert_eq!(
            member_dn("UNIQUEMEMBER", "uid=cy,ou=people#''B"),
            "uid=cy,ou=people"
        );
        assert_eq!(member_dn("uniqueMember", "cn=a\\#'1'B"), "cn=a\\#'1'B");
        assert_eq!(member_dn("member", "cn=x#'1'B"), "cn=x#'1'B");
        assert_eq!(member_dn("uniqueMember", "cn=x"), "cn=x");
        // `#'B`: the quote of `#'` is the one before `B`; no bit string, no panic.
        assert_eq!(member_dn("uniqueMember", "cn=x#'B"), "cn=x#'B");
        assert_eq!(member_dn("uniqueMember", "'B"), "'B");
    }

    #[test]
    fn the_domain_of_a_dn_is_its_dc_suffix() {
        assert_eq!(
            domain_root("OU=Groups, DC=corp,DC=example,DC=com"),
            "DC=corp,DC=example,DC=com"
        );
        assert_eq!(
            domain_root("ou=a\\,dc=x,o=example"),
            "ou=a\\,dc=x,o=example"
        );
        assert_eq!(domain_root("dc=example"), "dc=example");
    }

    fn openldap_settings(user_name_attribute: &str, id_attribute: &str) -> LdapSettings {
        let flavor = LdapFlavor::OpenLdap;
        LdapSettings {
            url: "ldap://127.0.0.1:389".to_owned(),
            start_tls: false,
            ca_file: None,
            bind_dn: "cn=seatwarden,dc=example,dc=com".to_owned(),
            bind_password: Secret::Inline(String::new().into()),
            base_dn: "ou=people,dc=example,dc=com".to_owned(),
            group_base_dn: "ou=groups,dc=example,dc=com".to_owned(),
            flavor,
            user_filter: flavor.default_user_filter(user_name_attribute),
            group_filter: flavor.default_group_filter().to_owned(),
            disabled_filter: None,
            id_attribute: id_attribute.to_owned(),
            user_name_attribute: user_name_attribute.to_owned(),
            page_size: 500,
            scope_groups: Vec::new(),
            other_groups: Vec::new(),
            distinct_groups: Vec::new(),
            required_groups: Vec::new(),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::immediate(0),
        }
    }

    /// Whatever order the server sends an entry's values in, the person is the
    /// same: a userName or id that followed the first value would rename or
    /// replace the account whenever the order changed.
    #[test]
    fn several_values_of_the_user_name_or_the_id_fail_the_entry_naming_them() {
        let s = openldap_settings("mail", "entryUUID");
        let now = Utc::now();
        let aliases = entry(&[
            ("entryUUID", &["6f1b1f0e"]),
            ("mail", &["ada.lovelace@example.com", "ada@example.com"]),
        ]);
        let error = super::person(&aliases, &s, now).err().unwrap();
        assert!(
            error.contains(
                "mail has 2 values (\"ada.lovelace@example.com\", \"ada@example.com\"), and \
                 the userName is one"
            ),
            "{error}"
        );
        assert!(error.contains("directory.user_name_attribute"), "{error}");

        // A value repeated in another case, or blank, is no second value.
        for mails in [
            ["Ada@Example.com", "ada@example.com", " "],
            ["ada@example.com", "Ada@Example.com", ""],
        ] {
            let one = entry(&[("entryUUID", &["6f1b1f0e"]), ("mail", &mails)]);
            let ada = super::person(&one, &s, now).unwrap().identity;
            assert_eq!(ada.user_name, "Ada@Example.com", "{mails:?}");
        }

        let s = openldap_settings("mail", "uid");
        let two_uids = entry(&[
            ("uid", &["ada", "alovelace"]),
            ("mail", &["ada@example.com"]),
        ]);
        let error = super::person(&two_uids, &s, now).err().unwrap();
        assert!(
            error.contains("uid has 2 values (\"ada\", \"alovelace\"), and the id is one"),
            "{error}"
        );
        assert!(error.contains("directory.id_attribute"), "{error}");
    }

    #[test]
    fn the_email_of_several_mail_values_does_not_depend_on_their_order() {
        let s = openldap_settings("uid", "entryUUID");
        let now = Utc::now();
        let email = |uid: &str, mails: &[&str]| {
            let one = entry(&[
                ("entryUUID", &["6f1b1f0e"]),
                ("uid", &[uid]),
                ("mail", mails),
            ]);
            super::person(&one, &s, now).unwrap().identity.email
        };
        // The one that is the userName, when one is.
        for mails in [
            ["ada@example.com", "a.lovelace@example.com"],
            ["a.lovelace@example.com", "ada@example.com"],
        ] {
            assert_eq!(
                email("Ada@example.com", &mails).as_deref(),
                Some("ada@example.com")
            );
        }
        // Else the first in alphabetical order, whichever came first.
        for mails in [
            ["lovelace@example.com", "ada@example.com"],
            ["ada@example.com", "lovelace@example.com"],
        ] {
            assert_eq!(email("ada", &mails).as_deref(), Some("ada@example.com"));
        }
    }

    /// A group's name decides who a mapping or a scope group takes in: with
    /// several `cn` values (OpenLDAP allows aliases), following whichever the
    /// server sent first would rename the group whenever the order changed.
    #[test]
    fn a_group_with_several_cn_values_is_named_by_its_rdn_whatever_their_order() {
        let source = super::LdapSource::new(openldap_settings("uid", "entryUUID"));
        let group_named = |dn: &str, cns: &[&str]| {
            let mut group = entry(&[("cn", cns), ("member", &[])]);
            group.dn = dn.to_owned();
            source.group(group).unwrap().name
        };
        let by_cn = "cn=Engineering,ou=groups,dc=example,dc=com";
        assert_eq!(group_named(by_cn, &["eng", "Engineering"]), "Engineering");
        assert_eq!(group_named(by_cn, &["Engineering", "eng"]), "Engineering");
        // The RDN spelt otherwise (case, escapes, a multi-valued RDN) is still it.
        let spelt = "CN=engineering\\2C EMEA+businessCategory=rd,ou=groups,dc=example,dc=com";
        assert_eq!(
            group_named(spelt, &["eng", "Engineering, EMEA"]),
            "Engineering, EMEA"
        );
        // Named otherwise than by a cn value: the first in alphabetical order.
        let by_uuid = "entryUUID=6f1b,ou=groups,dc=example,dc=com";
        assert_eq!(group_named(by_uuid, &["Zeta", "alpha"]), "alpha");
        assert_eq!(group_named(by_uuid, &["alpha", "Zeta"]), "alpha");
        // One value is that value, whatever the DN.
        assert_eq!(group_named(by_uuid, &[" Ops "]), "Ops");
    }

    #[test]
    fn several_name_values_give_the_first_in_alphabetical_order_whatever_their_order() {
        let s = openldap_settings("uid", "entryUUID");
        let now = Utc::now();
        let names = |given: &[&str], family: &[&str], display: &[&str]| {
            let one = entry(&[
                ("entryUUID", &["6f1b1f0e"]),
                ("uid", &["ines"]),
                ("givenName", given),
                ("sn", family),
                ("displayName", display),
                ("departmentNumber", &["R&D", "Engineering"]),
            ]);
            let ines = super::person(&one, &s, now).unwrap().identity;
            (
                ines.given_name,
                ines.family_name,
                ines.display_name,
                ines.department,
            )
        };
        let expected = (
            Some("In\u{e8}s".to_owned()),
            Some("Mueller".to_owned()),
            Some("In\u{e8}s Mueller".to_owned()),
            Some("Engineering".to_owned()),
        );
        assert_eq!(
            names(
                &["In\u{e8}s", "Yn\u{e8}s"],
                &["Mueller", "M\u{fc}ller"],
                &["In\u{e8}s Mueller", "In\u{e8}s M\u{fc}ller"]
            ),
            expected
        );
        assert_eq!(
            names(
                &["Yn\u{e8}s", "In\u{e8}s"],
                &["M\u{fc}ller", "Mueller"],
                &["In\u{e8}s M\u{fc}ller", "In\u{e8}s Mueller"]
            ),
            expected
        );
        // One value is that value; blanks are none.
        assert_eq!(
            names(&["In\u{e8}s"], &[" "], &[]).0.as_deref(),
            Some("In\u{e8}s")
        );
        assert_eq!(names(&["In\u{e8}s"], &[" "], &[]).1, None);
    }

    #[test]
    fn two_users_with_one_id_fail_the_snapshot() {
        let people = vec![
            person("uid=a,ou=people", "same"),
            person("uid=b,ou=people", "same"),
        ];
        let error = identities(people, &[], URL).unwrap_err().to_string();
        assert!(error.contains("the same id \"same\""), "{error}");
        // Which server: a fleet may read several.
        assert!(error.starts_with(&format!("{URL} users: ")), "{error}");
    }

    /// ldap3 trusted no system root at all when any one failed to load: a file
    /// in the certificate folder that is not PEM made every `ldaps://` fail as
    /// "UnknownIssuer". The roots that load are trusted; the others are logged.
    #[test]
    fn system_roots_keep_the_certificates_that_load_beside_one_that_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let ca = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls"))
            .join("ca.pem");
        std::fs::copy(&ca, dir.path().join("test-ca.pem")).unwrap();
        std::fs::write(
            dir.path().join("broken.pem"),
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let loaded = rustls_native_certs::load_certs_from_paths(None, Some(dir.path()));
        assert_eq!(loaded.certs.len(), 1, "{:?}", loaded.errors);
        assert_eq!(loaded.errors.len(), 1, "the broken file is an error");
        let roots = super::system_roots(loaded, &in_dir(dir.path())).unwrap();
        assert_eq!(roots.len(), 1);
    }

    fn in_dir(dir: &std::path::Path) -> super::CertLocations {
        super::CertLocations {
            files: Vec::new(),
            dirs: vec![dir.to_owned()],
        }
    }

    /// rustls-native-certs names no file for malformed PEM ("failed to read PEM
    /// from file: base64 decode error"): which of the hundreds in the folder? The
    /// log and the error name it, as they do a file that cannot be read; the
    /// hash-named link `c_rehash` made to it is the same file, named once.
    #[test]
    fn a_system_certificate_that_does_not_load_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls"))
            .join("ca.pem");
        std::fs::copy(&ca, dir.path().join("test-ca.pem")).unwrap();
        let broken = dir.path().join("corp-proxy-ca.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nMIIB not base64 at all!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(&broken, dir.path().join("5e2f1a0b.0")).unwrap();
        let truncated = dir.path().join("truncated.crt");
        std::fs::write(&truncated, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let broken = std::fs::canonicalize(&broken).unwrap();
        let truncated = std::fs::canonicalize(&truncated).unwrap();
        let loaded = rustls_native_certs::load_certs_from_paths(None, Some(dir.path()));
        assert_eq!(loaded.errors.len(), 2, "{:?}", loaded.errors);
        // What the log says of each (tested apart from the log: another test
        // sharing the callsite can race tracing's interest cache).
        let said = super::describe_load_errors(&loaded.errors, &in_dir(dir.path())).join("\n");
        for file in [&broken, &truncated] {
            assert_eq!(
                said.matches(&file.display().to_string()).count(),
                1,
                "{file:?}: {said}"
            );
        }
        assert!(!said.contains("5e2f1a0b.0"), "{said}");
        let roots = super::system_roots(loaded, &in_dir(dir.path())).unwrap();
        assert_eq!(roots.len(), 1);
        std::fs::remove_file(dir.path().join("test-ca.pem")).unwrap();
        let loaded = rustls_native_certs::load_certs_from_paths(None, Some(dir.path()));
        let error = super::system_roots(loaded, &in_dir(dir.path())).unwrap_err();
        assert!(
            error.contains(&format!(
                "failed to read PEM from file {}: base64 decode error",
                broken.display()
            )),
            "{error}"
        );
        // Not found again (it changed since): the error says where to look.
        let loaded = rustls_native_certs::load_certs_from_paths(None, Some(dir.path()));
        std::fs::write(&truncated, "").unwrap();
        let elsewhere = super::describe_load_errors(&loaded.errors, &in_dir(dir.path()));
        assert!(
            elsewhere
                .iter()
                .any(|e| e.ends_with(&format!("(a file under {})", dir.path().display()))),
            "{elsewhere:?}"
        );
    }

    #[test]
    fn no_system_root_at_all_says_to_set_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broken.pem"),
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let loaded = rustls_native_certs::load_certs_from_paths(None, Some(dir.path()));
        let error = super::system_roots(loaded, &in_dir(dir.path())).unwrap_err();
        assert!(
            error.contains("no system CA certificate could be loaded"),
            "{error}"
        );
        assert!(
            error.contains("failed to read PEM"),
            "says what failed: {error}"
        );
        assert!(error.contains("set directory.ca_file"), "{error}");
        let empty = super::system_roots(
            rustls_native_certs::CertificateResult::default(),
            &super::CertLocations::default(),
        );
        assert!(empty.unwrap_err().contains("(none found)"));
    }

    #[test]
    fn a_cookie_handed_back_loops_only_when_no_entry_came_since() {
        // 389 Directory Server: one cookie for every page of a search.
        let mut constant = PageChecks::default();
        for _ in 0..3 {
            constant.entries += 2;
            assert_eq!(constant.page_ended(b"1"), Ok(()));
        }
        // The last page's empty cookie ends the search, whatever came before.
        assert_eq!(constant.page_ended(b""), Ok(()));
        assert_eq!(constant.page_ended(b""), Ok(()));
        // A cookie handed back with nothing since, also after another one.
        let mut looping = PageChecks {
            entries: 2,
            ..PageChecks::default()
        };
        assert_eq!(looping.page_ended(b"a"), Ok(()));
        assert_eq!(looping.page_ended(b"b"), Ok(()));
        let error = looping.page_ended(b"a").unwrap_err();
        assert!(error.contains("cookie \"a\" again"), "{error}");
        let mut binary = PageChecks::default();
        assert_eq!(binary.page_ended(&[0, 0xff]), Ok(()));
        let error = binary.page_ended(&[0, 0xff]).unwrap_err();
        assert!(error.contains("cookie 0x00ff again"), "{error}");
    }

    #[test]
    fn tls_is_ldaps_or_start_tls() {
        assert!(super::uses_tls("ldaps://dc1.example.com", false));
        assert!(super::uses_tls("LDAPS://dc1.example.com:636", false));
        assert!(super::uses_tls("ldap://dc1.example.com", true));
        assert!(!super::uses_tls("ldap://dc1.example.com", false));
    }
}
