//! Plain data shared by every layer: identities (directory side), accounts and
//! groups (workspace side), links between them, and the plan vocabulary (drift
//! kinds, actions). No behaviour beyond parsing and display lives here.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Taskade's seven tiers. The derive order is the privilege order: `Viewer` is the
/// lowest, `Owner` the highest, so `max()` picks the strongest role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Viewer,
    Participant,
    Collaborator,
    Commenter,
    Editor,
    Maintainer,
    Owner,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Viewer,
        Role::Participant,
        Role::Collaborator,
        Role::Commenter,
        Role::Editor,
        Role::Maintainer,
        Role::Owner,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "Viewer",
            Role::Participant => "Participant",
            Role::Collaborator => "Collaborator",
            Role::Commenter => "Commenter",
            Role::Editor => "Editor",
            Role::Maintainer => "Maintainer",
            Role::Owner => "Owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown role {0:?}; expected one of Owner, Maintainer, Editor, Commenter, Collaborator, Participant, Viewer"
)]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// Case-insensitive: workspaces and directory exports disagree on casing.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A directory person's status, normalised across providers. A person absent from
/// the directory snapshot is "deleted"; that is not a status but an absence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityStatus {
    Active,
    Suspended,
    Deprovisioned,
}

impl IdentityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityStatus::Active => "active",
            IdentityStatus::Suspended => "suspended",
            IdentityStatus::Deprovisioned => "deprovisioned",
        }
    }
}

impl FromStr for IdentityStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "active" => Ok(IdentityStatus::Active),
            "suspended" => Ok(IdentityStatus::Suspended),
            "deprovisioned" => Ok(IdentityStatus::Deprovisioned),
            other => Err(format!(
                "unknown status {other:?}; expected active, suspended or deprovisioned"
            )),
        }
    }
}

/// A person in the directory (the source of truth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Stable directory id; becomes the account's `externalId`.
    pub id: String,
    pub user_name: String,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub display_name: Option<String>,
    pub status: IdentityStatus,
    pub department: Option<String>,
    /// Directory group names (not ids) this person is a member of.
    pub groups: Vec<String>,
}

/// Everything the directory said in one read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorySnapshot {
    pub identities: Vec<Identity>,
    /// False when the connector could not read every object. An incomplete snapshot
    /// never produces deprovisioning (design invariant 3).
    pub complete: bool,
}

/// A user in the workspace, as the SCIM service provider shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// SCIM `id`, assigned by the workspace.
    pub id: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub display_name: Option<String>,
    /// The primary (else a work, else any) email value; among several alike the
    /// smallest, so that the order a provider lists them in does not matter
    /// (`workspace::parse::email_index`).
    pub email: Option<String>,
    pub active: bool,
    /// Role values exactly as the workspace reports them (`roles[].value`, or the
    /// configured extension attribute as a single entry). Empty when none.
    pub roles: Vec<String>,
}

impl Account {
    /// The account a workspace holds after creating `spec` as `id`.
    pub fn created(id: String, spec: &AccountSpec) -> Account {
        Account {
            id,
            user_name: spec.user_name.clone(),
            external_id: Some(spec.external_id.clone()),
            given_name: spec.given_name.clone(),
            family_name: spec.family_name.clone(),
            display_name: spec.display_name.clone(),
            email: spec.email.clone(),
            active: true,
            roles: spec.role.iter().map(|r| r.as_str().to_owned()).collect(),
        }
    }

    /// The account's role when it carries exactly one known role.
    pub fn role(&self) -> Option<Role> {
        match self.roles.as_slice() {
            [only] => only.parse().ok(),
            _ => None,
        }
    }

    /// Whether any of the account's role values is Owner. A provider may send
    /// several (`["Owner", "Editor"]`): such an account is an Owner all the same,
    /// and the last-Owner rule must count it.
    pub fn is_owner(&self) -> bool {
        self.roles
            .iter()
            .any(|value| value.parse::<Role>() == Ok(Role::Owner))
    }
}

/// A SCIM Group in the workspace: a Taskade workspace or folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceGroup {
    pub id: String,
    pub display_name: String,
    /// Member account ids (SCIM `members[].value`).
    pub members: Vec<String>,
}

impl WorkspaceGroup {
    /// The members that are no group of `by_id`: its own, and those of the
    /// groups nested in it however deep (cycles are harmless). What a
    /// resource's own `groups` attribute counts it in (RFC 7643 §4.1.2 names
    /// memberships through nesting too).
    pub fn members_through_nesting<'a>(
        &'a self,
        by_id: &HashMap<&str, &'a WorkspaceGroup>,
    ) -> HashSet<&'a str> {
        let mut held = HashSet::new();
        let mut seen = HashSet::from([self.id.as_str()]);
        let mut stack = vec![self];
        while let Some(group) = stack.pop() {
            for member in &group.members {
                match by_id.get(member.as_str()) {
                    Some(&nested) => {
                        if seen.insert(nested.id.as_str()) {
                            stack.push(nested);
                        }
                    }
                    None => {
                        held.insert(member.as_str());
                    }
                }
            }
        }
        held
    }
}

/// Everything the workspace said in one read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSnapshot {
    pub accounts: Vec<Account>,
    pub groups: Vec<WorkspaceGroup>,
}

/// How a link was first established; kept for audits and `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkMethod {
    ExternalId,
    UserName,
    Email,
    /// The account was created by seatwarden for this identity.
    Created,
    /// An unmatched account adopted under `unmatched_accounts = "adopt"`.
    Adopted,
    /// Set by a person with `seatwarden link` (a disputed match resolved).
    Manual,
}

impl LinkMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkMethod::ExternalId => "external_id",
            LinkMethod::UserName => "user_name",
            LinkMethod::Email => "email",
            LinkMethod::Created => "created",
            LinkMethod::Adopted => "adopted",
            LinkMethod::Manual => "manual",
        }
    }
}

/// identity id ↔ account id, stored once matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Link {
    pub identity_id: String,
    pub account_id: String,
}

/// A link the plan proposes (a match found this run, not yet stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewLink {
    pub identity_id: String,
    pub account_id: String,
    pub method: LinkMethod,
}

/// The attributes seatwarden manages on an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSpec {
    pub user_name: String,
    /// Always the directory identity id.
    pub external_id: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// `None` when roles are not managed (`role_attribute = "none"`).
    pub role: Option<Role>,
}

/// One managed attribute, for attribute drift and the PATCH that repairs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    UserName,
    ExternalId,
    GivenName,
    FamilyName,
    DisplayName,
    Email,
}

impl Attribute {
    pub fn as_str(self) -> &'static str {
        match self {
            Attribute::UserName => "userName",
            Attribute::ExternalId => "externalId",
            Attribute::GivenName => "name.givenName",
            Attribute::FamilyName => "name.familyName",
            Attribute::DisplayName => "displayName",
            Attribute::Email => "emails",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeChange {
    pub attribute: Attribute,
    pub from: Option<String>,
    /// `None` clears the attribute.
    pub to: Option<String>,
}

impl AttributeChange {
    /// `account` as it reads once this change is made. userName is required in
    /// SCIM: a change clearing it is refused, so it leaves the name as it was.
    pub fn apply_to(&self, account: &mut Account) {
        match self.attribute {
            Attribute::UserName => {
                if let Some(to) = &self.to {
                    account.user_name = to.clone();
                }
            }
            Attribute::ExternalId => account.external_id = self.to.clone(),
            Attribute::GivenName => account.given_name = self.to.clone(),
            Attribute::FamilyName => account.family_name = self.to.clone(),
            Attribute::DisplayName => account.display_name = self.to.clone(),
            Attribute::Email => account.email = self.to.clone(),
        }
    }
}

/// Why something differs between desired and actual state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    MissingAccount,
    StaleAccess,
    OrphanedAccount,
    RoleDrift,
    GroupDrift,
    AttributeDrift,
    ReactivationDue,
    DisputedMatch,
    /// A deactivated account of someone without access, past
    /// `deprovision.delete_after`: deleted. Not `stale_access`: no access is left.
    RetentionExpired,
}

impl DriftKind {
    pub const ALL: [DriftKind; 9] = [
        DriftKind::StaleAccess,
        DriftKind::MissingAccount,
        DriftKind::ReactivationDue,
        DriftKind::RoleDrift,
        DriftKind::GroupDrift,
        DriftKind::AttributeDrift,
        DriftKind::OrphanedAccount,
        DriftKind::RetentionExpired,
        DriftKind::DisputedMatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::MissingAccount => "missing_account",
            DriftKind::StaleAccess => "stale_access",
            DriftKind::OrphanedAccount => "orphaned_account",
            DriftKind::RoleDrift => "role_drift",
            DriftKind::GroupDrift => "group_drift",
            DriftKind::AttributeDrift => "attribute_drift",
            DriftKind::ReactivationDue => "reactivation_due",
            DriftKind::DisputedMatch => "disputed_match",
            DriftKind::RetentionExpired => "retention_expired",
        }
    }
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One observed difference, with the person concerned. Every action has a drift
/// item as its reason; some drift items (disputed matches, reported orphans,
/// userName conflicts) have no action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredDriftItem")]
pub struct DriftItem {
    pub kind: DriftKind,
    pub identity_id: Option<String>,
    pub account_id: Option<String>,
    /// The person's userName (directory side if known, else the account's).
    pub user_name: String,
    /// Human-readable why, e.g. "identity is deprovisioned in the directory".
    pub detail: String,
    /// Set on a `missing_account` or `attribute_drift` item whose create or
    /// userName change the plan did not make because the userName (the item's
    /// `user_name`) is taken or wanted by others: who. Absent (not serialised) on
    /// every other item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<UserNameConflict>,
}

/// Who is in the way of the userName a [`DriftItem`] wanted (its `user_name`,
/// compared as matching compares it), so no create or rename was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNameConflict {
    /// Every account that holds the userName and keeps it in this plan (ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<String>,
    /// Other people (identity ids) whose create or rename wants it too: the
    /// first few, as the detail names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wanted_by: Vec<String>,
    /// How many other people want it besides those `wanted_by` names.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wanted_by_more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// How the detail of a create not made because of its userName begins.
pub const NOT_CREATED: &str = "not created: userName ";
/// How the detail of a userName change not made begins.
pub const NOT_RENAMED: &str = "not renamed: account ";

/// A [`DriftItem`] as stored: plans and reports written before
/// [`DriftItem::conflict`] existed lack it.
#[derive(Deserialize)]
struct StoredDriftItem {
    kind: DriftKind,
    identity_id: Option<String>,
    account_id: Option<String>,
    user_name: String,
    detail: String,
    #[serde(default)]
    conflict: Option<UserNameConflict>,
}

impl From<StoredDriftItem> for DriftItem {
    /// An older version said a userName conflict only by how the detail begins
    /// (which the planner still writes): such an item loads as a conflict, with
    /// nobody recorded (the detail names them). Only stored items are read so;
    /// the planner sets `conflict` itself.
    fn from(stored: StoredDriftItem) -> Self {
        let StoredDriftItem {
            kind,
            identity_id,
            account_id,
            user_name,
            detail,
            conflict,
        } = stored;
        let legacy = match kind {
            DriftKind::MissingAccount => detail.starts_with(NOT_CREATED),
            DriftKind::AttributeDrift => detail.starts_with(NOT_RENAMED),
            _ => false,
        };
        DriftItem {
            conflict: conflict.or_else(|| legacy.then(UserNameConflict::default)),
            kind,
            identity_id,
            account_id,
            user_name,
            detail,
        }
    }
}

/// A workspace group an action writes to: one that exists, or one an earlier
/// `CreateGroup` action of the same plan creates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GroupRef {
    Existing { id: String, display_name: String },
    Created { display_name: String },
}

impl GroupRef {
    pub fn display_name(&self) -> &str {
        match self {
            GroupRef::Existing { display_name, .. } | GroupRef::Created { display_name } => {
                display_name
            }
        }
    }
}

/// An account an action refers to: one that exists, or the one an earlier
/// `CreateAccount` action of the same plan creates for an identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AccountRef {
    Existing { id: String },
    Created { identity_id: String },
}

/// What one action writes to the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ActionKind {
    Deactivate {
        account_id: String,
    },
    Delete {
        account_id: String,
        /// Set when the account has been deactivated this long already
        /// (`deprovision.delete_after` has passed): the delete removes no access,
        /// so it opens no deprovisioning episode. `None`: the account loses its
        /// access by this delete.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deactivated_since: Option<chrono::DateTime<chrono::Utc>>,
        /// The account's userName, set when a create or rename of the same plan
        /// takes it: the plan counted it as freed by this delete, so the executor
        /// sends that write only once the delete was accepted (a failed delete
        /// leaves the name taken, and the write would only meet 409).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frees_user_name: Option<String>,
    },
    CreateGroup {
        display_name: String,
    },
    CreateAccount {
        identity_id: String,
        spec: AccountSpec,
    },
    Reactivate {
        account_id: String,
    },
    UpdateAttributes {
        account_id: String,
        changes: Vec<AttributeChange>,
    },
    SetRole {
        account_id: String,
        from: Vec<String>,
        to: Role,
    },
    AddMembers {
        group: GroupRef,
        members: Vec<AccountRef>,
    },
    RemoveMembers {
        group: GroupRef,
        members: Vec<String>,
    },
}

impl ActionKind {
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::Deactivate { .. } => "deactivate",
            ActionKind::Delete { .. } => "delete",
            ActionKind::CreateGroup { .. } => "create_group",
            ActionKind::CreateAccount { .. } => "create_account",
            ActionKind::Reactivate { .. } => "reactivate",
            ActionKind::UpdateAttributes { .. } => "update_attributes",
            ActionKind::SetRole { .. } => "set_role",
            ActionKind::AddMembers { .. } => "add_members",
            ActionKind::RemoveMembers { .. } => "remove_members",
        }
    }

    /// Deactivations and deletions: what the deprovision thresholds count.
    pub fn is_deprovision(&self) -> bool {
        matches!(
            self,
            ActionKind::Deactivate { .. } | ActionKind::Delete { .. }
        )
    }

    /// A role change to a lower tier than the account's highest known role now
    /// (mass Owner→Viewer is as dangerous as deletion), or away from a role value
    /// seatwarden does not know (`Admin`, a localised name): that could be
    /// anything, and a workspace that names its roles otherwise would otherwise
    /// have every role rewritten past the downgrade limits. An account with no
    /// role at all has nothing to lose.
    pub fn is_role_downgrade(&self) -> bool {
        match self {
            ActionKind::SetRole { from, to, .. } => {
                let unknown = from.iter().any(|r| r.parse::<Role>().is_err());
                from.iter()
                    .filter_map(|r| r.parse::<Role>().ok())
                    .max()
                    .is_some_and(|current| current > *to)
                    || (unknown && *to != Role::Owner)
            }
            _ => false,
        }
    }

    /// The threshold class this action counts against, and how much it counts
    /// (a membership removal counts each member removed).
    pub fn threshold_class(&self) -> Option<(ActionClass, usize)> {
        match self {
            ActionKind::Delete {
                deactivated_since: Some(_),
                ..
            } => Some((ActionClass::Deletion, 1)),
            ActionKind::Deactivate { .. } | ActionKind::Delete { .. } => {
                Some((ActionClass::Deprovision, 1))
            }
            ActionKind::RemoveMembers { members, .. } => {
                Some((ActionClass::MembershipRemoval, members.len()))
            }
            ActionKind::SetRole { .. } if self.is_role_downgrade() => {
                Some((ActionClass::RoleDowngrade, 1))
            }
            ActionKind::UpdateAttributes { .. } if self.renames() => Some((ActionClass::Rename, 1)),
            _ => None,
        }
    }

    /// An attribute update that changes the account's userName: it runs before the
    /// creates, one of which may want the name it gives up.
    pub fn renames(&self) -> bool {
        matches!(
            self,
            ActionKind::UpdateAttributes { changes, .. }
                if changes.iter().any(|c| c.attribute == Attribute::UserName)
        )
    }

    /// A rename's userName before and after.
    pub fn user_name_change(&self) -> Option<(Option<&str>, Option<&str>)> {
        match self {
            ActionKind::UpdateAttributes { changes, .. } => changes.iter().find_map(|c| {
                (c.attribute == Attribute::UserName).then_some((c.from.as_deref(), c.to.as_deref()))
            }),
            _ => None,
        }
    }

    /// The userName a create or a rename wants.
    pub fn wanted_user_name(&self) -> Option<&str> {
        match self {
            ActionKind::CreateAccount { spec, .. } => Some(spec.user_name.as_str()),
            kind => kind.user_name_change().and_then(|(_, to)| to),
        }
    }

    /// The existing account this action writes to, if any.
    pub fn account_id(&self) -> Option<&str> {
        match self {
            ActionKind::Deactivate { account_id }
            | ActionKind::Delete { account_id, .. }
            | ActionKind::Reactivate { account_id }
            | ActionKind::UpdateAttributes { account_id, .. }
            | ActionKind::SetRole { account_id, .. } => Some(account_id),
            _ => None,
        }
    }
}

/// The classes of mass changes the thresholds limit, each on its own: the
/// destructive ones, and renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionClass {
    /// Deactivations, and deletions that take access away (`delete_after = "0s"`).
    Deprovision,
    /// Members removed from workspace groups (counted per member).
    MembershipRemoval,
    /// Role changes to a lower tier.
    RoleDowngrade,
    /// Deletions of accounts deactivated for the whole retention period: no access
    /// is left to remove, so they neither hold nor use up the same-day
    /// deprovisioning budget, and have limits of their own (they are irreversible).
    Deletion,
    /// userName changes. They take no access away, but the userName is what people
    /// sign in with: a mass rename is a changed `directory.user_name_attribute` or
    /// a mapping gone wrong far more often than a whole company renamed in a day.
    Rename,
}

impl ActionClass {
    pub const ALL: [ActionClass; 5] = [
        ActionClass::Deprovision,
        ActionClass::MembershipRemoval,
        ActionClass::RoleDowngrade,
        ActionClass::Deletion,
        ActionClass::Rename,
    ];

    /// Whether the class takes access away: what an incomplete directory snapshot
    /// must not cause. A rename only follows what the directory says of someone
    /// it did read.
    pub fn takes_access_away(self) -> bool {
        !matches!(self, ActionClass::Rename)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActionClass::Deprovision => "deprovision",
            ActionClass::MembershipRemoval => "membership_removal",
            ActionClass::RoleDowngrade => "role_downgrade",
            ActionClass::Deletion => "deletion",
            ActionClass::Rename => "rename",
        }
    }

    /// Plural noun for messages.
    pub fn noun(self) -> &'static str {
        match self {
            ActionClass::Deprovision => "deprovisions",
            ActionClass::MembershipRemoval => "membership removals",
            ActionClass::RoleDowngrade => "role downgrades",
            ActionClass::Deletion => "deletions after retention",
            ActionClass::Rename => "renames",
        }
    }

    /// [`Self::noun`] for `count` of them: "1 deprovision planned", not
    /// "1 deprovisions planned" (a limit of 0 holds a single leaver).
    pub fn noun_for(self, count: usize) -> &'static str {
        if count != 1 {
            return self.noun();
        }
        match self {
            ActionClass::Deprovision => "deprovision",
            ActionClass::MembershipRemoval => "membership removal",
            ActionClass::RoleDowngrade => "role downgrade",
            ActionClass::Deletion => "deletion after retention",
            ActionClass::Rename => "rename",
        }
    }
}

impl fmt::Display for ActionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which window a threshold limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdWindow {
    /// One run.
    Run,
    /// The rolling 24 hours before the run, this run included.
    Day,
}

/// Writes of each [`ActionClass`] already made (applied or in flight) in the
/// rolling 24 h window; the store counts them, the guard adds the plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentCounts {
    pub deprovisions: usize,
    pub membership_removals: usize,
    pub role_downgrades: usize,
    pub deletions: usize,
    #[serde(default)]
    pub renames: usize,
}

impl RecentCounts {
    pub fn get(&self, class: ActionClass) -> usize {
        match class {
            ActionClass::Deprovision => self.deprovisions,
            ActionClass::MembershipRemoval => self.membership_removals,
            ActionClass::RoleDowngrade => self.role_downgrades,
            ActionClass::Deletion => self.deletions,
            ActionClass::Rename => self.renames,
        }
    }
}

/// Why the guard held an action back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum HoldReason {
    /// The directory snapshot was incomplete: nothing that takes access away
    /// (deprovisions, deletions, membership removals, role downgrades) from it.
    IncompleteDirectory,
    /// More deprovisions than `max_deprovisions` / `max_deprovision_percent` allow.
    /// Written by earlier versions; [`HoldReason::Threshold`] replaces it.
    DeprovisionThreshold {
        planned: usize,
        limit: usize,
        managed: usize,
    },
    /// The action would leave the workspace without an active Owner.
    LastOwner,
    /// Its class of actions is over a limit: `planned` this run (plus `recent` in
    /// the last 24 h for the `day` window) exceeds `limit`, the count or (when
    /// `by_percent`) the percentage of `managed` for that window.
    Threshold {
        class: ActionClass,
        window: ThresholdWindow,
        planned: usize,
        /// Already made in the 24 h before this run (0 for the `run` window).
        recent: usize,
        limit: usize,
        managed: usize,
        /// True when the percentage of `managed` (not the count) gave the limit.
        #[serde(default)]
        by_percent: bool,
    },
    /// Creates and updates wait until the same drift is seen again `settle` after
    /// it was first seen (so seatwarden does not race push SCIM).
    Settling {
        first_seen: chrono::DateTime<chrono::Utc>,
        settles_at: chrono::DateTime<chrono::Utc>,
    },
    /// The workspace listing shrank suspiciously and a filter read could not
    /// confirm that this account is really missing.
    WorkspaceShrunk { previous: usize, current: usize },
    /// An earlier create of this account met a 409 although no account with its
    /// userName is visible over SCIM: it exists out of sight, and sending the
    /// create again changes nothing until a person resolves it.
    OutOfSight,
    /// A deletion after the retention period of an account whose userName a new
    /// identity's create wants (someone re-hired under a new directory id): deleting
    /// it would free the name and give them an empty account, their projects gone.
    UserNameWanted {
        identity_id: String,
        account_id: String,
    },
    /// The demotion of an Owner while no mapping gives Owner: every Owner but the
    /// last would be planned down, which is more often a forgotten mapping than
    /// a decision.
    OwnerWithoutMapping,
    /// The removal of members from a managed workspace group that no mapping gives
    /// to anyone in the directory: the plan would empty it, which is more often a
    /// misspelt or renamed directory group than a decision.
    GroupGrantedToNobody { group: String },
    /// A create or userName change that wants the userName of an account whose
    /// delete in the same plan is held (`held` says why): the plan counted the name
    /// as freed by that delete, but the account keeps it until the delete is made,
    /// so the write would only meet 409. Also on a create or rename further down a
    /// chain of renames that starts at such a rename.
    WaitsForDelete {
        account_id: String,
        held: Box<HoldReason>,
    },
    /// Takes access from a person who is in a directory group whose name differs
    /// from a configured group's (`key`) only in what does not show (`differs`:
    /// a no-break or zero-width space, two spaces, quotes). Policy compares names
    /// exactly, so the group counted for nothing; it may be the configured group
    /// mistyped, or another one: a person decides (see [`crate::names`]).
    LookAlikeGroup {
        directory_group: String,
        configured: String,
        key: String,
        differs: String,
    },
    /// A create or an attribute update would write `value` to `field` (userName,
    /// email, externalId) with `character`, which does not show: the account
    /// would be named, and matched, with it.
    HiddenCharacter {
        field: String,
        value: String,
        character: String,
    },
}

impl HoldReason {
    /// Short rule name, as in the JSON `rule` tag.
    pub fn rule(&self) -> &'static str {
        match self {
            HoldReason::IncompleteDirectory => "incomplete_directory",
            HoldReason::DeprovisionThreshold { .. } => "deprovision_threshold",
            HoldReason::LastOwner => "last_owner",
            HoldReason::Threshold { .. } => "threshold",
            HoldReason::Settling { .. } => "settling",
            HoldReason::WorkspaceShrunk { .. } => "workspace_shrunk",
            HoldReason::OutOfSight => "out_of_sight",
            HoldReason::UserNameWanted { .. } => "user_name_wanted",
            HoldReason::OwnerWithoutMapping => "owner_without_mapping",
            HoldReason::GroupGrantedToNobody { .. } => "group_granted_to_nobody",
            HoldReason::WaitsForDelete { .. } => "waits_for_delete",
            HoldReason::LookAlikeGroup { .. } => "look_alike_group",
            HoldReason::HiddenCharacter { .. } => "hidden_character",
        }
    }

    /// Holds that clear by themselves on a later run (no human needed).
    pub fn is_waiting(&self) -> bool {
        matches!(self, HoldReason::Settling { .. })
    }

    /// Why it is held and what releases it, the commands a person is told to run
    /// spelled with `admin_command` (`report.admin_command`). The `Display` text
    /// spells them with [`DEFAULT_ADMIN_COMMAND`].
    pub fn describe<'h>(&'h self, admin_command: &'h str) -> HoldDescription<'h> {
        HoldDescription {
            reason: self,
            admin_command,
        }
    }
}

/// How [`HoldReason::IncompleteDirectory`] reads: the `error` of such a held
/// action in a stored report begins with it, in reports of every version (one an
/// approval refused goes on with why), which is how a report stored before
/// [`crate::report::ActionOutcome::held_incomplete_directory`] is read.
pub const INCOMPLETE_DIRECTORY_HOLD: &str =
    "the directory snapshot was incomplete; nothing that takes access away is done from it";

/// How a held action `approve`'s re-check refused begins its journal row's
/// `last_error` (the reason follows), and goes on in its report's `error`
/// after the hold: it stays held, and approving again re-checks the same
/// workspace and directory, so nothing waits for an approval any more.
pub const REFUSED_BY_APPROVAL: &str = "refused by the re-check of `approve`: ";

/// How a held action `seatwarden reject RUN` decided on ends its report's
/// `error`, after `rejected (ADMIN reject): ` (the operator's command spelled
/// as `report.admin_command` spells it): the report, its headline and subject
/// count such actions as rejected ([`crate::report::Report::rejected`]), not as
/// planned ones still to come.
pub const REJECTED_NEVER_APPLIED: &str = "this run never applies it";

/// How a held action an approval found done already (`obsolete`) begins its
/// report's `error` (what the re-check found follows): nothing was sent.
pub const OBSOLETE_WHEN_APPROVED: &str = "obsolete when approved: ";

/// How seatwarden's commands are run when `report.admin_command` is not set.
pub const DEFAULT_ADMIN_COMMAND: &str = "seatwarden";

/// A [`HoldReason`] as people read it, from [`HoldReason::describe`].
#[derive(Debug, Clone, Copy)]
pub struct HoldDescription<'h> {
    reason: &'h HoldReason,
    admin_command: &'h str,
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(DEFAULT_ADMIN_COMMAND).fmt(f)
    }
}

impl fmt::Display for HoldDescription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let admin = self.admin_command;
        match self.reason {
            HoldReason::IncompleteDirectory => f.write_str(INCOMPLETE_DIRECTORY_HOLD),
            HoldReason::DeprovisionThreshold {
                planned,
                limit,
                managed,
            } => write!(
                f,
                "{planned} {} planned, limit is {limit} (of {managed} managed accounts)",
                ActionClass::Deprovision.noun_for(*planned)
            ),
            HoldReason::LastOwner => {
                f.write_str("would leave the workspace without an active Owner")
            }
            HoldReason::Threshold {
                class,
                window: ThresholdWindow::Run,
                planned,
                limit,
                managed,
                by_percent,
                ..
            } => write!(
                f,
                "{planned} {} planned, the per-run limit is {limit} ({}of {managed} managed accounts)",
                class.noun_for(*planned),
                if *by_percent { "by percentage, " } else { "" }
            ),
            HoldReason::Threshold {
                class,
                window: ThresholdWindow::Day,
                planned,
                recent,
                limit,
                managed,
                by_percent,
            } => {
                write!(
                    f,
                    "{planned} {noun} planned + {recent} in the last 24 h = {}, the 24 h limit is {limit}",
                    planned.saturating_add(*recent),
                    noun = class.noun_for(*planned)
                )?;
                // The count's reason reads as it always did; the percentage's
                // says so, and of how many, as the per-run one does.
                if *by_percent {
                    write!(f, " (by percentage, of {managed} managed accounts)")?;
                }
                Ok(())
            }
            HoldReason::Settling {
                first_seen,
                settles_at,
            } => write!(
                f,
                "waiting for the settle window: first seen {}, acted on from {}",
                first_seen.format("%Y-%m-%d %H:%M:%SZ"),
                settles_at.format("%Y-%m-%d %H:%M:%SZ")
            ),
            HoldReason::WorkspaceShrunk { previous, current } => write!(
                f,
                "the workspace listing shrank from {previous} to {current} accounts and a filter read could not confirm this account is missing"
            ),
            HoldReason::OutOfSight => write!(
                f,
                "an earlier create met a 409 but no account with this userName is visible over \
                 SCIM: find it in the workspace's admin console (`{admin} link` it if it is \
                 this person's), then `{admin} approve` to create it again",
            ),
            HoldReason::UserNameWanted {
                identity_id,
                account_id,
            } => write!(
                f,
                "identity {identity_id} (new in the directory) has this account's userName: \
                 `{}` hands them the account and its projects; `{admin} approve` deletes it",
                admin_command_line(admin, "link", &[identity_id, account_id], &["--replace"])
            ),
            HoldReason::OwnerWithoutMapping => write!(
                f,
                "demotes an Owner, and no policy.mapping gives Owner to anyone in the \
                 directory, so every Owner is planned down: map the group that should keep \
                 Owner to Owner (check its spelling, and that it has members), or \
                 `{admin} approve` the demotion",
            ),
            HoldReason::GroupGrantedToNobody { group } => write!(
                f,
                "removes members from workspace group {group:?}, which no policy.mapping gives \
                 to anyone in the directory, so it would be emptied: check the spelling of the \
                 directory group its mappings name (and that it has members), or `{admin} \
                 approve` the removal"
            ),
            HoldReason::WaitsForDelete { account_id, held } => write!(
                f,
                "waits for the delete of account {account_id}, which frees the userName this \
                 needs and is held: {}. Once that delete is made, the next reconcile sends this",
                held.describe(admin)
            ),
            HoldReason::LookAlikeGroup {
                directory_group,
                configured,
                key,
                differs,
            } => write!(
                f,
                "the person is in directory group {directory_group:?}, which is not \
                 {configured:?} ({key}) but differs from it only in {differs}: group names \
                 are compared exactly, so it counted for nothing. If it is {configured:?} \
                 mistyped, rename it in the directory; if it is another group, `{admin} \
                 approve` this"
            ),
            HoldReason::HiddenCharacter {
                field,
                value,
                character,
            } => write!(
                f,
                "would write {field} {value:?}, which holds {character}, a character that \
                 does not show: the account would be named and matched with it. Correct it \
                 in the directory, or `{admin} approve` to write it as it is"
            ),
        }
    }
}

/// One step of a plan, with the drift that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Position in the plan, from 0; also the journal key within a run.
    pub seq: u32,
    pub kind: ActionKind,
    pub reason: DriftKind,
    /// The person concerned (or the group name for group-only actions).
    pub subject: String,
    pub identity_id: Option<String>,
    /// Human-readable why.
    pub detail: String,
    /// Set by the guard: the action is reported and not applied.
    pub held: Option<HoldReason>,
}

/// The ordered result of diffing desired against actual state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub drift: Vec<DriftItem>,
    /// Matches found this run that are not stored links yet.
    pub new_links: Vec<NewLink>,
    /// With `deprovision.action = "delete"` and a retention period: the
    /// deactivated accounts of people without access, whose deletion waits for
    /// it (due in this plan or not), sorted. The store starts each one's clock
    /// when it first appears here and forgets those that leave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained: Vec<String>,
    /// People who lost access whose match is disputed while an account that may
    /// be theirs is still active, sorted by identity id. No action deactivates any
    /// of those accounts (a human must say which is theirs), so the ledger keeps
    /// an episode for each, held, that goes overdue like any other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disputed_leavers: Vec<DisputedLeaver>,
    /// Accounts no action names only because the person they are tied to is
    /// protected, their own userName not being so, sorted by account id: no
    /// drift item stands for them, so without this nobody would see them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_by_person: Vec<ProtectedByPerson>,
    /// Active accounts kept only by an exception in force, sorted by account id
    /// ([`ExceptedAccount`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excepted: Vec<ExceptedAccount>,
    /// Active accounts of people who lost access, left alone because
    /// `safety.protected` names the account for good, sorted by account id
    /// ([`ProtectedLeaver`]): no action and no drift item stands for them.
    /// From an incomplete directory read, only people the read shows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_leavers: Vec<ProtectedLeaver>,
    /// The accounts each disputed person may have, and each linked person's
    /// duplicates ([`DisputedCandidate::duplicate_of`]), active or deactivated,
    /// sorted: what the store remembers so that a person deleted from the
    /// directory is still tied to them (the next plan's `remembered` input); a
    /// deactivated one forgotten would be an orphan the run after, a duplicate
    /// forgotten an orphan as soon as the person is deleted. Not part of the
    /// stored plan: the store keeps it in a table of its own.
    #[serde(skip)]
    pub disputed_candidates: Vec<DisputedCandidate>,
}

/// Why someone lost access, as the directory showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    Suspended,
    Deprovisioned,
    OutOfScope,
    Deleted,
}

impl LossReason {
    pub const ALL: [LossReason; 4] = [
        LossReason::Suspended,
        LossReason::Deprovisioned,
        LossReason::OutOfScope,
        LossReason::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::Suspended => "suspended",
            LossReason::Deprovisioned => "deprovisioned",
            LossReason::OutOfScope => "out_of_scope",
            LossReason::Deleted => "deleted",
        }
    }
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossReason::Suspended => "suspended in the directory",
            LossReason::Deprovisioned => "deprovisioned in the directory",
            LossReason::OutOfScope => "no longer in a scope group",
            LossReason::Deleted => "deleted from the directory",
        })
    }
}

/// A person who lost access whose workspace match is disputed, and who may still
/// have access through one of the accounts that match them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputedLeaver {
    pub identity_id: String,
    /// The directory userName; for someone deleted from it, the one it last
    /// had when a dispute was remembered, else the identity id.
    pub user_name: String,
    pub reason: LossReason,
    /// Every account that may be theirs, sorted by id.
    pub accounts: Vec<String>,
    /// Those of `accounts` that are active: never empty.
    pub active: Vec<String>,
}

/// A time-bound exception (`[[safety.exceptions]]`): one userName that seatwarden
/// leaves as it is, as if protected, until `until`; from then on the account is
/// managed like any other (a leaver's is deprovisioned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// As configured (trimmed); compared folded, like a protected name.
    pub user_name: String,
    pub until: chrono::DateTime<chrono::Utc>,
    /// Why access is kept (a ticket, who approved it): shown wherever the
    /// exception keeps an account.
    pub reason: String,
}

/// An active account a plan leaves alone only because an exception in force
/// names it (or its person), while without the exception its access would be
/// taken away: its person lost access in the directory, or no one in the
/// directory owns it. The report lists it every run until the exception ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptedAccount {
    pub account_id: String,
    /// The account's own userName.
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
    /// Why it would lose access: "deprovisioned in the directory", "identity was
    /// deleted from the directory", "no directory identity matches this account".
    pub why: String,
    pub exception: Exception,
}

/// An active account of someone who lost access that a plan leaves alone because
/// `safety.protected` (or a `protected_groups` membership) names it for good, no
/// exception keeping it for a time: its own userName, or its person's and its
/// own. seatwarden never deactivates a protected account, so someone has to end
/// that access by hand, unless the account is a shared or break-glass one wrongly
/// tied to the leaver (a leaver may also have renamed theirs into a protected
/// name to keep it). Without this list a reconcile's report would show nothing of
/// it; the report lists it every run
/// ([`crate::report::SafetyReport::protected_leavers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedLeaver {
    pub account_id: String,
    /// The account's own userName.
    pub user_name: String,
    pub identity_id: String,
    /// Why the person lost access, as a deprovision of theirs would say.
    pub why: String,
}

/// An account the plan leaves alone only because the person it is tied to is
/// protected: `safety.protected` (or a `protected_groups` membership) names the
/// person's directory userName and not the account's own. A reconcile leaves
/// every account of a protected person alone, so such an account is never
/// deactivated, renamed, regrouped or deleted, not even when it is due, and no
/// drift item names it. It stays protected (protection only ever adds: an account
/// an admin's externalId or email finds under another userName is the admin's,
/// and treating it by its own name would rename, regroup or demote it); the
/// report lists it every run ([`crate::report::SafetyReport::protected_by_person`])
/// so a link that should not be (made by `link` before it refused such links, or
/// found by a rule) does not go unseen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedByPerson {
    pub account_id: String,
    /// The account's own userName, which protection does not name.
    pub account_user_name: String,
    /// Whether the account is active (a deactivated one gives no access, but is
    /// never reactivated nor deleted either).
    pub active: bool,
    pub identity_id: String,
    /// The protected person's directory userName.
    pub user_name: String,
    /// How the account is tied to them: `None` for a stored link (made by
    /// `link`, or a match an earlier run stored), else the rule that matches it
    /// this run (stored as a link once a reconcile applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<LinkMethod>,
    /// The person is linked to another account and this one only matches them
    /// (a duplicate, which a leaver's deprovisioning would take along).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Why the person has no access in the directory, when they have none: their
    /// account stays as it is all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<LossReason>,
}

impl ProtectedByPerson {
    /// `by a stored link`, `by email (matched this run)`, `as a duplicate
    /// matched by email`.
    pub fn tie(&self) -> String {
        let rule = |m: LinkMethod| match m {
            LinkMethod::ExternalId => "externalId",
            LinkMethod::UserName => "userName",
            LinkMethod::Email => "email",
            other => other.as_str(),
        };
        match (self.duplicate, self.matched_by) {
            (true, Some(m)) => format!(
                "as a duplicate (matches them by {}; they are linked to another account)",
                rule(m)
            ),
            (true, None) => "as a duplicate (they are linked to another account)".to_owned(),
            (false, Some(m)) => format!("by {} (matched this run)", rule(m)),
            (false, None) => "by a stored link".to_owned(),
        }
    }
}

/// An account that may be a disputed person's, or that is a linked person's
/// duplicate, and the rule that matched it to them. Once the directory no
/// longer has the person, nothing else ties them to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputedCandidate {
    pub identity_id: String,
    /// The directory userName when the directory last had the person.
    pub user_name: String,
    pub account_id: String,
    pub method: LinkMethod,
    /// The account the person was linked to when this one was remembered as
    /// their duplicate (a match or `seatwarden link` said which was theirs);
    /// None while their match is disputed. Once that account is gone (deleted
    /// after the retention period, or by hand), this is what still says the
    /// dispute was settled: the duplicate goes on down the person's
    /// deprovisioning path instead of being disputed again, with a `link` to
    /// run for someone who is gone. While that account exists unlinked (`unlink`
    /// took the decision back) the person's match is disputed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    /// The person's directory email when the directory last had them: with
    /// their id and `user_name`, what matching's rules find their accounts by.
    /// A remembered duplicate that no longer matches them by any rule (renamed
    /// since, repurposed for someone else) is theirs no more. None: they had
    /// none, or it was remembered before it was kept (store migration 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn runnable(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| a.held.is_none())
    }

    pub fn held(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| a.held.is_some())
    }
}

/// Equal without regard to case, as the plan compares userNames and emails;
/// verification and the workspace client's look-ups use it too, so what the plan
/// takes as the same account is the same everywhere. See [`fold_case`].
pub fn same_ci(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a == b || fold_case(a) == fold_case(b)
}

/// The same userName or email as matching takes it (`plan::name_key`): white
/// space at either end aside (a typo, never part of the name), then [`same_ci`].
pub fn same_name(a: &str, b: &str) -> bool {
    same_ci(a.trim(), b.trim())
}

/// Lower-cased as SCIM providers compare userNames (`É` and `é` are one letter),
/// and composed (Unicode NFC), so `e` followed by U+0301 COMBINING ACUTE ACCENT is
/// the `é` it renders as: directories on macOS and some HR exports decompose names
/// that the workspace stores composed, and the same person would otherwise be a
/// new hire and an orphaned account. Except that a character outside ASCII never
/// becomes an ASCII one, by either step: lower-casing turns U+212A KELVIN SIGN into
/// `k` (and U+0130 into `i` and a combining dot), and NFC turns the Kelvin sign
/// into `K`, and an account named with such a look-alike would be taken for, and
/// given the access of, the person it imitates.
pub fn fold_case(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let composed = compose_keeping_non_ascii(s);
    let becomes_ascii = |c: char| !c.is_ascii() && c.to_lowercase().any(|l| l.is_ascii());
    if !composed.chars().any(becomes_ascii) {
        // Whole, so that context rules hold (a word-final Σ lowers to ς).
        return composed.to_lowercase();
    }
    let mut folded = String::with_capacity(composed.len());
    for c in composed.chars() {
        if c.is_ascii() {
            folded.push(c.to_ascii_lowercase());
        } else if becomes_ascii(c) {
            folded.push(c);
        } else {
            folded.extend(c.to_lowercase());
        }
    }
    folded
}

/// `s` in Unicode NFC: combining sequences composed (`e` + U+0301 is `é`), and
/// canonical singletons replaced, U+212A KELVIN SIGN by `K` among them. For
/// comparisons where matching more is the safe side (protected accounts);
/// [`fold_case`] keeps the singletons that would become ASCII.
pub fn compose(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_ascii() {
        return std::borrow::Cow::Borrowed(s);
    }
    icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(s)
}

/// `s` in NFC as a name that grants something is compared (a directory group
/// that a mapping gives a role for, a scope group): combining sequences composed,
/// but a character outside ASCII never made ASCII, as [`fold_case`] does for
/// userNames. A group named with U+212A KELVIN SIGN is not the configuration's
/// group spelt with `K`; matching more would widen a mapping.
pub fn compose_name(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_ascii() {
        return std::borrow::Cow::Borrowed(s);
    }
    compose_keeping_non_ascii(s)
}

/// Replaces `s` by its [`compose_name`] form where that differs.
pub fn compose_in_place(s: &mut String) {
    if let std::borrow::Cow::Owned(composed) = compose_name(s) {
        *s = composed;
    }
}

/// `s` in NFC, but for the few characters outside ASCII whose canonical form is
/// ASCII (U+212A KELVIN SIGN, U+037E GREEK QUESTION MARK, U+1FEF GREEK VARIA),
/// which stay as they are: the text between them is composed on its own.
fn compose_keeping_non_ascii(s: &str) -> std::borrow::Cow<'_, str> {
    let nfc = icu_normalizer::ComposingNormalizerBorrowed::new_nfc();
    let becomes_ascii = |c: char| {
        let mut buffer = [0u8; 4];
        !c.is_ascii() && nfc.normalize(c.encode_utf8(&mut buffer)).is_ascii()
    };
    if !s.chars().any(becomes_ascii) {
        return nfc.normalize(s);
    }
    let mut kept = String::with_capacity(s.len());
    let mut run_start = 0;
    for (at, c) in s.char_indices() {
        if becomes_ascii(c) {
            kept.push_str(&nfc.normalize(&s[run_start..at]));
            kept.push(c);
            run_start = at + c.len_utf8();
        }
    }
    kept.push_str(&nfc.normalize(&s[run_start..]));
    std::borrow::Cow::Owned(kept)
}

/// Whether `c`, printed to a terminal, would act rather than show, or change
/// how what follows shows: a control character (a line break, a carriage
/// return that overwrites the line, ESC starting an escape sequence, C1
/// controls), a bidi embedding, override, isolate or mark (a name reordered
/// reads as another), a line or paragraph separator. The one list of what
/// [`crate::report::printable`] shows as U+FFFD and [`shell_word`] escapes, so
/// that a printed command passes through `printable` whole.
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{061c}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `text` as one word of a shell command a person copies from seatwarden's
/// output (`seatwarden link IDENTITY ACCOUNT`): as it is when it holds only
/// letters, digits and `/._-+:@,`, else in single quotes, a `'` in it written
/// `'\''`. Ids are the providers' strings (a sandbox's or a SCIM provider's
/// may hold a space, a quote or a `;`): pasted bare, the command would get
/// other arguments, or run another command.
///
/// One holding a character that [`acts_on_terminal`] (a line break, ESC, a
/// bidi override) is written in bash's and zsh's ANSI-C quotes instead (not
/// every `sh`'s: dash, Debian's, reads `$'…'` as a `$` and a quoted word): `$'a\nb'`,
/// `\n`, `\t` and `\r` by name, every other such character as its UTF-8
/// bytes `\xHH`, `\` and `'` escaped. Raw, the character would drive the
/// reader's terminal, break the command where it is pasted, or, made
/// printable (U+FFFD), name another id; bytes rather than `\u` escapes, which
/// bash leaves as they are in the C locale. A NUL, which no shell can pass in
/// an argument (bash would cut the id short there, naming another), is
/// written U+FFFD: the command names no id rather than a wrong one.
pub fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,".contains(c));
    if plain {
        return text.to_owned();
    }
    if !text.chars().any(acts_on_terminal) {
        return format!("'{}'", text.replace('\'', "'\\''"));
    }
    let mut word = String::from("$'");
    for c in text.chars() {
        match c {
            '\\' => word.push_str("\\\\"),
            '\'' => word.push_str("\\'"),
            '\n' => word.push_str("\\n"),
            '\t' => word.push_str("\\t"),
            '\r' => word.push_str("\\r"),
            '\0' => word.push('\u{fffd}'),
            c if acts_on_terminal(c) => {
                let mut utf8 = [0u8; 4];
                for byte in c.encode_utf8(&mut utf8).bytes() {
                    word.push_str(&format!("\\x{byte:02x}"));
                }
            }
            c => word.push(c),
        }
    }
    word.push('\'');
    word
}

/// A seatwarden command a person copies from seatwarden's output into a shell,
/// the one way every message writes one with an id in it: `admin` (the
/// configured `report.admin_command`, the operator's own shell text, as it is),
/// the `subcommand`, then `ids` (provider-chosen ids, or placeholders such as
/// `ACCOUNT`) each a [`shell_word`], then `options`:
/// `seatwarden link 00u1 'ws 1' --replace`. Quoting does not stop an id that
/// starts with `-` (an LDAP or SCIM provider's `-abc`) from being read as an
/// option, so when one does, the options come first and `--` ends them:
/// `seatwarden link --replace -- -abc ws-1`.
pub fn admin_command_line(admin: &str, subcommand: &str, ids: &[&str], options: &[&str]) -> String {
    let mut line = format!("{admin} {subcommand}");
    let words: Vec<String> = ids.iter().map(|id| shell_word(id)).collect();
    if ids.iter().any(|id| id.starts_with('-')) {
        for option in options {
            line.push(' ');
            line.push_str(option);
        }
        line.push_str(" --");
        for word in &words {
            line.push(' ');
            line.push_str(word);
        }
    } else {
        for word in words
            .iter()
            .map(String::as_str)
            .chain(options.iter().copied())
        {
            line.push(' ');
            line.push_str(word);
        }
    }
    line
}

/// A time for people to read, on `tz`'s clock: `layout` (a `chrono` format of the
/// date and time of day), then the UTC offset, then the zone's abbreviation:
/// `2026-12-04 09:00 +05:30 (IST)`. The abbreviation alone does not name an
/// instant (IST is India's, Ireland's and Israel's; CST the US's and China's), the
/// offset does. Zones whose abbreviation is only a number (`+04`) get no second
/// copy of it: `2026-12-04 09:00 +04:00`; UTC itself is its own offset:
/// `2026-12-04 03:30 UTC`. Reports, the digest, alerts, `status` and
/// configuration messages all show times so; logs and JSON instants stay
/// RFC 3339 in UTC.
pub fn clock_time(at: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz, layout: &str) -> String {
    let local = at.with_timezone(&tz);
    let abbreviation = local.format("%Z").to_string();
    // Offsets with seconds (Monrovia kept −00:44:30 until 1972) are shown whole:
    // cut to minutes, the text would name another instant.
    let offset = if chrono::Offset::fix(local.offset()).local_minus_utc() % 60 == 0 {
        local.format("%:z")
    } else {
        local.format("%::z")
    };
    if abbreviation == "UTC" {
        format!("{} UTC", local.format(layout))
    } else if abbreviation.starts_with(['+', '-']) {
        format!("{} {offset}", local.format(layout))
    } else {
        format!("{} {offset} ({abbreviation})", local.format(layout))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Ids are shell words; options go after them, or, when an id starts with
    /// `-` (read as an option even quoted), before a `--` that ends them.
    #[test]
    fn an_admin_command_line_quotes_its_ids_and_ends_options_before_a_dash_id() {
        assert_eq!(
            admin_command_line(
                "sudo seatwarden-admin",
                "link",
                &["00u1", "ws-1"],
                &["--replace"]
            ),
            "sudo seatwarden-admin link 00u1 ws-1 --replace"
        );
        assert_eq!(
            admin_command_line("seatwarden", "link", &["it's $(x)", "ACCOUNT"], &[]),
            r"seatwarden link 'it'\''s $(x)' ACCOUNT"
        );
        assert_eq!(
            admin_command_line("seatwarden", "link", &["00u1", "-abc"], &["--replace"]),
            "seatwarden link --replace -- 00u1 -abc"
        );
        assert_eq!(
            admin_command_line("seatwarden", "unlink", &["-a b"], &[]),
            "seatwarden unlink -- '-a b'"
        );
    }

    /// The words bash makes of `words` under the locale `locale`, as bytes.
    fn bash_words(words: &str, locale: &str) -> Vec<Vec<u8>> {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("printf '%s\\0' {words}"))
            .env("LC_ALL", locale)
            .output()
            .unwrap();
        assert!(out.status.success(), "{words}: {out:?}");
        let mut words: Vec<Vec<u8>> = out.stdout.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
        assert_eq!(words.pop(), Some(Vec::new()));
        words
    }

    /// An id holding a control character (a line break, a carriage return, ESC,
    /// a tab, DEL, a C1 control) or a bidi override is written in `$'…'`, with
    /// nothing in it a terminal acts on: bash, in a UTF-8 locale or the C one,
    /// gives back the exact id, and [`crate::report::printable`] leaves the
    /// command as it is. Before, the id was printed raw inside single quotes
    /// (an escape sequence reached the terminal, a line break cut the command),
    /// and made printable it named another id (U+FFFD for the character).
    #[test]
    fn an_id_with_control_characters_is_an_ansi_c_quoted_word_bash_reads_back_whole() {
        let ids = [
            "a\nb",
            "x\x1b[2J\x1b]0;owned\x07",
            "tab\there\r",
            "del\x7f c1\u{85}\u{9b}31m",
            "bidi\u{202e}txt.exe",
            "it's \\ $(x) `y` \"z\"\x01",
            "é\x1bñ",
            "\x1f-",
            "\u{2028}\u{2066}",
        ];
        for id in ids {
            let word = shell_word(id);
            assert!(word.starts_with("$'") && word.ends_with('\''), "{word}");
            assert!(!word.chars().any(acts_on_terminal), "{word:?}");
            assert_eq!(crate::report::printable(&word, false), word);
            for locale in ["C.UTF-8", "C"] {
                assert_eq!(
                    bash_words(&word, locale),
                    [id.as_bytes()],
                    "{id:?} as {word} ({locale})"
                );
            }
        }
        // A whole command: each id one word, as it was.
        let line = admin_command_line("seatwarden", "link", &["00u\n1", "-w\x1b"], &["--replace"]);
        assert_eq!(line, "seatwarden link --replace -- $'00u\\n1' $'-w\\x1b'");
        let words = bash_words(line.strip_prefix("seatwarden ").unwrap(), "C.UTF-8");
        assert_eq!(
            words,
            [&b"link"[..], b"--replace", b"--", b"00u\n1", b"-w\x1b"]
        );
        // Without such a character, plain single quotes as before.
        assert_eq!(shell_word("it's é"), r"'it'\''s é'");
    }

    /// A NUL cannot be in an argument: bash would cut the id short there,
    /// naming another id (`a` for `a\0b`). It is written U+FFFD, naming none.
    #[test]
    fn a_nul_in_an_id_names_no_other_id() {
        let word = shell_word("a\0b\n");
        assert_eq!(word, "$'a\u{fffd}b\\n'");
        assert_eq!(bash_words(&word, "C.UTF-8"), ["a\u{fffd}b\n".as_bytes()]);
    }

    /// A guard's hold of an account a new hire's userName wants names the
    /// `link --replace` that hands it over, ids as words.
    #[test]
    fn a_user_name_wanted_hold_quotes_its_link_command() {
        let reason = HoldReason::UserNameWanted {
            identity_id: "-n1".into(),
            account_id: "old one".into(),
        };
        let text = reason.describe("seatwarden").to_string();
        assert!(
            text.contains("`seatwarden link --replace -- -n1 'old one'` hands them"),
            "{text}"
        );
    }

    #[test]
    fn an_offset_with_seconds_is_shown_with_them() {
        let at = chrono::DateTime::from_timestamp(0, 0).unwrap_or_default();
        assert_eq!(
            clock_time(at, chrono_tz::Africa::Monrovia, "%Y-%m-%d %H:%M:%S"),
            "1969-12-31 23:15:30 -00:44:30 (MMT)"
        );
    }

    #[test]
    fn names_are_composed_but_a_look_alike_of_ascii_stays() {
        let mut group = "Caf\u{65}\u{301} Team".to_owned();
        compose_in_place(&mut group);
        assert_eq!(group, "Caf\u{e9} Team");
        let mut kelvin = "\u{212A}elvin Admins".to_owned();
        compose_in_place(&mut kelvin);
        assert_eq!(kelvin, "\u{212A}elvin Admins");
        assert_eq!(compose_name("Ops"), "Ops");
    }

    #[test]
    fn fold_case_composes_but_never_turns_a_non_ascii_character_ascii() {
        assert_eq!(fold_case("JOSE\u{301}"), "jos\u{e9}");
        assert_eq!(fold_case("A\u{30A}sa"), "\u{e5}sa");
        // Canonical singletons to ASCII stay: NFC would make them `K`, `;`, `` ` ``.
        assert_eq!(fold_case("\u{212A}im"), "\u{212A}im");
        assert_eq!(fold_case("a\u{37E}b"), "a\u{37E}b");
        assert_eq!(fold_case("\u{1FEF}x"), "\u{1FEF}x");
        // The text around one is still composed, on either side.
        assert_eq!(
            fold_case("E\u{301}\u{212A}e\u{301}"),
            "\u{e9}\u{212A}\u{e9}"
        );
        assert_eq!(fold_case("MiXeD"), "mixed");
    }

    #[test]
    fn roles_order_by_privilege_and_parse_case_insensitively() {
        assert!(Role::Owner > Role::Maintainer);
        assert!(Role::Commenter > Role::Collaborator);
        assert!(Role::Participant > Role::Viewer);
        assert_eq!("editor".parse::<Role>(), Ok(Role::Editor));
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn account_role_needs_exactly_one_known_value() {
        let mut account = Account {
            id: "1".into(),
            user_name: "a".into(),
            external_id: None,
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            active: true,
            roles: vec!["Editor".into()],
        };
        assert_eq!(account.role(), Some(Role::Editor));
        account.roles.push("Viewer".into());
        assert_eq!(account.role(), None);
    }

    /// The holds a person releases tell the commands to run with the configured
    /// admin command; plain `Display` keeps the default.
    #[test]
    fn hold_reasons_name_the_configured_admin_command() {
        let admin = "sudo -u seatwarden seatwarden --config /etc/seatwarden/seatwarden.toml";
        let releasing = [
            (HoldReason::OutOfSight, vec!["link", "approve"]),
            (
                HoldReason::UserNameWanted {
                    identity_id: "00u9".into(),
                    account_id: "ws-7".into(),
                },
                vec!["link 00u9 ws-7 --replace", "approve"],
            ),
            (HoldReason::OwnerWithoutMapping, vec!["approve"]),
            (
                HoldReason::GroupGrantedToNobody {
                    group: "Finance".into(),
                },
                vec!["approve"],
            ),
        ];
        for (reason, commands) in releasing {
            let text = reason.describe(admin).to_string();
            for command in commands {
                assert!(text.contains(&format!("`{admin} {command}")), "{text}");
            }
            assert!(!text.contains("`seatwarden "), "{text}");
            assert_eq!(
                reason.to_string(),
                reason.describe(DEFAULT_ADMIN_COMMAND).to_string()
            );
            assert!(reason.to_string().contains("`seatwarden "), "{reason}");
        }
    }

    /// Three zones abbreviate to IST; the offset tells the instants apart. A zone
    /// whose abbreviation is a number shows it once.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn clock_time_names_the_offset_beside_an_ambiguous_abbreviation() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-07-01T08:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let cases = [
            (chrono_tz::Asia::Kolkata, "2026-07-01 13:30 +05:30 (IST)"),
            (chrono_tz::Europe::Dublin, "2026-07-01 09:00 +01:00 (IST)"),
            (chrono_tz::Asia::Jerusalem, "2026-07-01 11:00 +03:00 (IDT)"),
            (chrono_tz::America::Chicago, "2026-07-01 03:00 -05:00 (CDT)"),
            (chrono_tz::Asia::Dubai, "2026-07-01 12:00 +04:00"),
            (chrono_tz::America::Sao_Paulo, "2026-07-01 05:00 -03:00"),
            (chrono_tz::UTC, "2026-07-01 08:00 UTC"),
            (chrono_tz::Europe::London, "2026-07-01 09:00 +01:00 (BST)"),
        ];
        for (tz, shown) in cases {
            assert_eq!(clock_time(at, tz, "%Y-%m-%d %H:%M"), shown, "{tz}");
        }
        let winter = at - chrono::Duration::days(180);
        assert_eq!(
            clock_time(winter, chrono_tz::Asia::Jerusalem, "%Y-%m-%d %H:%M:%S"),
            "2026-01-02 10:00:00 +02:00 (IST)"
        );
    }

    proptest::proptest! {
        /// Whatever the zone and the instant (clock changes, half-hour and
        /// 45-minute offsets, zones whose abbreviation is a number), the time as
        /// shown, read back with its offset, is the instant it shows: the text
        /// alone names it, as an ambiguous abbreviation does not.
        #[test]
        fn a_clock_time_read_back_is_the_instant_it_shows(
            zone in 0..chrono_tz::TZ_VARIANTS.len(),
            seconds in 0_i64..4_102_444_800,
        ) {
            let tz = chrono_tz::TZ_VARIANTS[zone];
            let at = chrono::DateTime::from_timestamp(seconds, 0).unwrap_or_default();
            let shown = clock_time(at, tz, "%Y-%m-%d %H:%M:%S");
            // `… UTC` is UTC's own way of showing its offset.
            let text = shown.strip_suffix(" UTC").map_or_else(
                || shown.split(" (").next().unwrap_or_default().to_owned(),
                |utc| format!("{utc} +00:00"),
            );
            // Read by hand: chrono parses no offset with seconds (`%::z` stops
            // at the minutes), which Monrovia's −00:44:30 of 1970–72 has.
            let read = text.rsplit_once(' ').and_then(|(local, offset)| {
                let local =
                    chrono::NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S").ok()?;
                let sign = if offset.starts_with('-') { -1 } else { 1 };
                let mut parts = offset.get(1..)?.split(':').map(str::parse::<i64>);
                let hours = parts.next()?.ok()?;
                let minutes = parts.next()?.ok()?;
                let seconds = parts.next().transpose().ok()?.unwrap_or(0);
                let offset = sign * (hours * 3600 + minutes * 60 + seconds);
                Some((local - chrono::Duration::seconds(offset)).and_utc())
            });
            proptest::prop_assert_eq!(read, Some(at), "{}: {}", tz, shown);
        }
    }
}
