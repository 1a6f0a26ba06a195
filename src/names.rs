//! Names that differ only in what does not show: a no-break or zero-width space,
//! two spaces in a row, a tab, quotes, a space at either end. Policy compares
//! group names exactly (case folded, NFC), so a directory group "Taskade Users"
//! written with a no-break space is not the configured "Taskade Users": its
//! members would silently be in none of the configured groups, out of scope (to
//! be deactivated) or without the role and workspace groups a mapping gives.
//!
//! Shared by every source: the file directory refuses such an export
//! ([`crate::directory::file`]); for a live directory (Okta, Entra, LDAP, SCIM),
//! which a person cannot correct as quickly and which must keep deprovisioning
//! everyone else, [`look_alike_members`] finds the people who carry such a group
//! and the guard holds what would take access from them
//! ([`crate::model::HoldReason::LookAlikeGroup`]). Such a group is never matched
//! as the configured one: a different group could be meant.
//!
//! A group an operator knows to be another group ("Founder's Club" beside the
//! configured "Founders Club") is declared so in `safety.distinct_groups`
//! ([`ConfiguredGroups::declare_distinct`]): it is then no look-alike anywhere
//! (no hold, no refused export, no read of its members for it), an unrelated
//! group like any other.
//!
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::{Identity, Role};
use crate::policy::{PolicySettings, fold_group_name};

/// Characters that take no room on screen: zero-width spaces and joiners, the
/// word joiner, a byte-order mark inside a value, the soft hyphen.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{ad}'
    )
}

/// Straight, typographic and angle quotes, which exports and word processors put
/// around a value.
pub fn is_quote(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '\u{2018}' | '\u{2019}' | '\u{201c}' | '\u{201d}' | '\u{ab}' | '\u{bb}'
    )
}

/// A character that does not show as itself: whitespace other than the space,
/// control characters, [`is_invisible`] ones. The configuration refuses them in
/// the names it compares too (`Config::validate`).
pub fn is_hidden(c: char) -> bool {
    (c.is_whitespace() && c != ' ') || c.is_control() || is_invisible(c)
}

/// The first [`is_hidden`] character of `value`, if any: the rule for what
/// identifies an account (a userName, an email, an externalId or directory id)
/// wherever one is read or written (the file export, the guard's
/// `hidden_character`, `safety.protected` and an exception's `user_name`).
/// Joiners too, even between letters of a script that writes words with them:
/// logins and addresses are not written with one (an address's domain is
/// ASCII once encoded for DNS, and its local part is what a person types), and
/// one there makes two names that read the same.
pub fn hidden_in(value: &str) -> Option<char> {
    value.chars().find(|&c| is_hidden(c))
}

/// The first [`is_hidden`] character of `name` that is no part of how the name
/// is written, if any: the rule for group names (and a person's names, which
/// seatwarden writes but never compares). Some are part of writing: the
/// zero-width non-joiner and joiner between two characters outside ASCII
/// (inside a Persian or an Indic word, an emoji sequence), and the ideographic
/// space, which shows as a wide space and is what a Japanese or Chinese input
/// method types. A directory group so named must stay nameable in the
/// configuration. Not for what identifies an account: see [`hidden_in`].
pub fn hidden_in_written_name(name: &str) -> Option<char> {
    let chars: Vec<char> = name.chars().collect();
    let written =
        |c: Option<&char>| c.is_some_and(|&c| !c.is_ascii() && !c.is_whitespace() && !is_hidden(c));
    chars.iter().enumerate().find_map(|(i, &c)| {
        let part_of_writing = match c {
            '\u{3000}' => true,
            '\u{200c}' | '\u{200d}' => {
                i > 0 && written(chars.get(i - 1)) && written(chars.get(i + 1))
            }
            _ => false,
        };
        (is_hidden(c) && !part_of_writing).then_some(c)
    })
}

/// A [`is_hidden`] character, named so that it can be found.
pub fn describe(c: char) -> String {
    match c {
        '\u{a0}' => "a no-break space (U+00A0)".to_owned(),
        '\u{200b}' => "a zero-width space (U+200B)".to_owned(),
        '\u{200c}' => "a zero-width non-joiner (U+200C)".to_owned(),
        '\u{200d}' => "a zero-width joiner (U+200D)".to_owned(),
        '\u{3000}' => "an ideographic space (U+3000)".to_owned(),
        '\t' => "a tab".to_owned(),
        '\n' | '\r' => "a line break".to_owned(),
        c => format!("the character U+{:04X}", u32::from(c)),
    }
}

/// A group name as it reads: invisible characters and quotes dropped, each run
/// of whitespace (no-break spaces and tabs too) one space, none at either end,
/// in lower case.
pub fn loosened(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if is_invisible(c) || is_quote(c) {
            continue;
        }
        if c.is_whitespace() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            continue;
        }
        out.extend(c.to_lowercase());
    }
    out.truncate(out.trim_end().len());
    out
}

/// What [`loosened`] drops or changes in `name`, said so that it can be found.
pub fn oddities(name: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    if name.starts_with(' ') {
        found.push("a space at the start".to_owned());
    }
    let mut previous_space = false;
    for c in name.chars() {
        let odd = match c {
            ' ' if previous_space => Some("two spaces in a row".to_owned()),
            ' ' => None,
            c if is_quote(c) => Some(format!("the quote {c}")),
            c if is_hidden(c) => Some(describe(c)),
            _ => None,
        };
        previous_space = c == ' ';
        if let Some(odd) = odd.filter(|odd| !found.contains(odd)) {
            found.push(odd);
        }
    }
    if name.ends_with(' ') && !name.ends_with("  ") {
        found.push("a space at the end".to_owned());
    }
    found
}

/// [`oddities`] as one phrase.
fn differences(name: &str) -> String {
    let oddities = oddities(name);
    if oddities.is_empty() {
        "characters that do not show".to_owned()
    } else {
        oddities.join(", ")
    }
}

/// The configured groups of `look_alikes` (all of one directory group), each
/// name once with every key that names it, in their order:
/// `"Taskade Users" (policy.scope_groups, policy.mapping[1].group)`, several
/// joined by "nor". What each gives differs, and a run holds for each.
pub fn configured_of(look_alikes: &[LookAlike]) -> String {
    let mut named: Vec<(&str, Vec<&str>)> = Vec::new();
    for look_alike in look_alikes {
        match named
            .iter_mut()
            .find(|(name, _)| *name == look_alike.configured)
        {
            Some((_, keys)) => keys.push(&look_alike.key),
            None => named.push((&look_alike.configured, vec![&look_alike.key])),
        }
    }
    named
        .iter()
        .map(|(name, keys)| format!("{name:?} ({})", keys.join(", ")))
        .collect::<Vec<_>>()
        .join(" nor ")
}

/// A directory group whose name differs from a configured group's only in what
/// does not show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookAlike {
    /// The name as the directory spells it.
    pub directory_group: String,
    /// The configured name it looks like.
    pub configured: String,
    /// The configuration key that names it: `policy.scope_groups`,
    /// `policy.mapping[2].group`, `safety.protected_groups`.
    pub key: String,
    /// What differs, from [`oddities`]: "a no-break space (U+00A0)".
    pub differs: String,
}

impl std::fmt::Display for LookAlike {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "directory group {:?} is not {:?} ({}) but differs from it only in {}",
            self.directory_group, self.configured, self.key, self.differs
        )
    }
}

/// The groups the configuration names, with the key that names each, to
/// recognise one written so that policy, which compares names exactly, would not
/// find it.
#[derive(Debug, Clone, Default)]
pub struct ConfiguredGroups {
    /// (name, the key that names it), in configuration order.
    groups: Vec<(String, String)>,
    /// Folded name ([`fold_group_name`]) → index in `groups`.
    folded: HashMap<String, usize>,
    /// [`loosened`] name → the indices in `groups` of every configured group
    /// so loosened (one name can be a scope group and a mapping's group).
    loosened: HashMap<String, Vec<usize>>,
    /// Folded names of the directory groups declared other groups
    /// (`safety.distinct_groups`): never look-alikes.
    distinct: HashSet<String>,
}

impl ConfiguredGroups {
    pub fn add(&mut self, name: &str, key: String) {
        let index = self.groups.len();
        self.folded.entry(fold_group_name(name)).or_insert(index);
        self.loosened.entry(loosened(name)).or_default().push(index);
        self.groups.push((name.to_owned(), key));
    }

    /// Declares the directory group `name` another group than the configured
    /// one it looks like (`safety.distinct_groups`): [`Self::look_alikes`] no
    /// longer finds it. Compared as policy compares names: case aside, not
    /// trimmed (a no-break space at the end is what may set it apart).
    pub fn declare_distinct(&mut self, name: &str) {
        self.distinct.insert(policy_key(name));
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// (name, key) of each configured group, in configuration order.
    pub fn groups(&self) -> &[(String, String)] {
        &self.groups
    }

    /// The configured group (name, key) whose folded name is `folded`.
    pub fn named(&self, folded: &str) -> Option<&(String, String)> {
        self.groups.get(*self.folded.get(folded)?)
    }

    /// Whether `group` is a configured group as policy would find it, case
    /// aside. Not trimmed: "Taskade Users" with a no-break space at its end is
    /// not "Taskade Users" to policy.
    fn names(&self, group: &str) -> bool {
        self.folded.contains_key(&policy_key(group))
    }

    /// The configured group (name, key) that `group` is to policy, case aside
    /// and not trimmed ([`Self::names`]).
    pub fn is_named(&self, group: &str) -> Option<&(String, String)> {
        self.groups.get(*self.folded.get(&policy_key(group))?)
    }

    /// The configured group that `group` looks like without being it, if any: the
    /// same once [`loosened`], another name to policy (a difference in case alone
    /// is not one: it shows, and the sources report it on their own).
    pub fn look_alike(&self, group: &str) -> Option<LookAlike> {
        self.look_alikes(group).into_iter().next()
    }

    /// Every configured group (each with its key, in configuration order) that
    /// `group` looks like without being it: a name configured as a scope group
    /// and as a mapping's group is both, and what each would give differs.
    /// A group declared distinct ([`Self::declare_distinct`]) looks like none,
    /// and a protected group spelt with spaces at its ends is that group (it
    /// is compared trimmed), not a look-alike of it.
    pub fn look_alikes(&self, group: &str) -> Vec<LookAlike> {
        if self.distinct.contains(&policy_key(group)) {
            return Vec::new();
        }
        self.look_alikes_by_name(group)
    }

    /// Every configured group that `group` would look like had it not been
    /// declared distinct (as [`Self::look_alikes`]): for `check-config` to say
    /// which look-alikes the declaration settles. Empty for a group not
    /// declared.
    pub fn declared_distinct(&self, group: &str) -> Vec<LookAlike> {
        if !self.distinct.contains(&policy_key(group)) {
            return Vec::new();
        }
        self.look_alikes_by_name(group)
    }

    /// [`Self::look_alikes`], declared distinct or not.
    fn look_alikes_by_name(&self, group: &str) -> Vec<LookAlike> {
        if self.groups.is_empty() || self.names(group) {
            return Vec::new();
        }
        let Some(indices) = self.loosened.get(&loosened(group)) else {
            return Vec::new();
        };
        let differs = differences(group);
        indices
            .iter()
            .filter_map(|&index| self.groups.get(index))
            // A protected group is compared trimmed (`Protected::with_members_of`):
            // spelt with spaces at its ends it is the group itself, its members
            // protected, and nothing of theirs is taken that a hold should keep.
            .filter(|(name, key)| {
                key != PROTECTED_GROUPS_KEY || fold_group_name(name) != fold_group_name(group)
            })
            .map(|(name, key)| LookAlike {
                directory_group: group.to_owned(),
                configured: name.clone(),
                key: key.clone(),
                differs: differs.clone(),
            })
            .collect()
    }

    /// Whether `group` is a configured group or looks like one: a live directory
    /// reads the members of both (see [`look_alike_members`]).
    pub fn wants(&self, group: &str) -> bool {
        self.named(&fold_group_name(group)).is_some() || self.look_alike(group).is_some()
    }
}

/// `group` as policy compares it: composed, case folded, not trimmed.
fn policy_key(group: &str) -> String {
    crate::model::compose(group).to_lowercase()
}

/// The key of `safety.protected_groups`: a look-alike of one of them matters
/// even to a person suspended in the directory, whom it would have protected.
pub const PROTECTED_GROUPS_KEY: &str = "safety.protected_groups";

/// The key of `policy.scope_groups`.
pub const SCOPE_GROUPS_KEY: &str = "policy.scope_groups";

/// What a person's look-alike groups may have cost them, by what policy does
/// with the configured group each looks like. A look-alike that could not have
/// changed the decision holds nothing: a look-alike of a mapping group gives no
/// scope, so a person out of scope in it is a leaver, deactivated the same day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookAlikeMember {
    /// Holds the deactivation and deletion of their accounts: a look-alike of a
    /// scope group while they are in none by its exact name (out of scope only
    /// for it), or of a protected group.
    pub deprovision: Option<LookAlike>,
    /// Hold their role downgrades and membership removals, each what it gives:
    /// a look-alike of a mapping's group they are not in by its exact name, or
    /// of a protected group. In the order of their groups.
    pub access: Vec<AccessLookAlike>,
}

/// A look-alike that could have kept a person's role or workspace groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLookAlike {
    pub look_alike: LookAlike,
    /// What the mappings of the configured group give: (workspace group, role).
    /// `None` for a protected group's look-alike, which would have kept all.
    pub gives: Option<Vec<(String, Role)>>,
}

impl AccessLookAlike {
    /// Whether the configured group would have kept the person in workspace
    /// group `workspace_group` (named as the workspace names it).
    pub fn keeps_group(&self, workspace_group: &str) -> bool {
        self.gives.as_ref().is_none_or(|gives| {
            gives
                .iter()
                .any(|(group, _)| crate::model::same_name(group, workspace_group))
        })
    }

    /// Whether the configured group would have kept the person above `role`.
    pub fn keeps_above(&self, role: Role) -> bool {
        self.gives
            .as_ref()
            .is_none_or(|gives| gives.iter().any(|(_, given)| *given > role))
    }
}

impl LookAlikeMember {
    /// The look-alike groups named, each once.
    fn groups(&self) -> Vec<&LookAlike> {
        let mut groups: Vec<&LookAlike> = Vec::new();
        for look_alike in self
            .deprovision
            .iter()
            .chain(self.access.iter().map(|a| &a.look_alike))
        {
            if !groups
                .iter()
                .any(|g| g.directory_group == look_alike.directory_group)
            {
                groups.push(look_alike);
            }
        }
        groups
    }
}

/// The people of `identities` who carry a group that looks like a configured
/// one (see [`ConfiguredGroups::look_alike`]) in a way that could have changed
/// what `policy` decides for them ([`LookAlikeMember`]), by identity id. The
/// guard holds what would take access from them: the group they are in may be
/// the configured one, mistyped. Groups are compared exactly, as policy compares
/// them. A person suspended or deprovisioned in the directory loses access
/// whatever their groups, so only a look-alike of a protected group counts for
/// them.
pub fn look_alike_members(
    identities: &[Identity],
    configured: &ConfiguredGroups,
    policy: &PolicySettings,
) -> BTreeMap<String, LookAlikeMember> {
    let mut members = BTreeMap::new();
    if configured.is_empty() {
        return members;
    }
    let scope: HashSet<&str> = policy.scope_groups.iter().map(String::as_str).collect();
    // Configured group → what its mappings give.
    let mut gives: HashMap<&str, Vec<(String, Role)>> = HashMap::new();
    for mapping in &policy.mappings {
        gives
            .entry(mapping.group.as_str())
            .or_default()
            .push((mapping.workspace_group.clone(), mapping.role));
    }
    // Few distinct group names, many people: each name is looked at once.
    let mut seen: HashMap<&str, Vec<LookAlike>> = HashMap::new();
    for identity in identities {
        let active = identity.status == crate::model::IdentityStatus::Active;
        let out_of_scope =
            !scope.is_empty() && !identity.groups.iter().any(|g| scope.contains(g.as_str()));
        let mut member = LookAlikeMember::default();
        for group in &identity.groups {
            let look_alikes = seen
                .entry(group.as_str())
                .or_insert_with(|| configured.look_alikes(group));
            for look_alike in look_alikes.iter() {
                let protected = look_alike.key == PROTECTED_GROUPS_KEY;
                let scope_lost = active && out_of_scope && look_alike.key == SCOPE_GROUPS_KEY;
                let mapping_lost = active
                    && look_alike.key.starts_with("policy.mapping")
                    && !identity.groups.contains(&look_alike.configured);
                if (protected || scope_lost) && member.deprovision.is_none() {
                    member.deprovision = Some(look_alike.clone());
                }
                let already = member.access.iter().any(|a| {
                    a.look_alike.directory_group == look_alike.directory_group
                        && a.look_alike.configured == look_alike.configured
                        && a.gives.is_none() == protected
                });
                if (protected || mapping_lost) && !already {
                    member.access.push(AccessLookAlike {
                        look_alike: look_alike.clone(),
                        gives: (!protected).then(|| {
                            gives
                                .get(look_alike.configured.as_str())
                                .cloned()
                                .unwrap_or_default()
                        }),
                    });
                }
            }
        }
        if member != LookAlikeMember::default() {
            members.insert(identity.id.clone(), member);
        }
    }
    members
}

/// The distinct look-alike groups of `members` (see [`look_alike_members`]),
/// each with how many people carry it, sorted by directory group.
pub fn look_alike_groups(members: &BTreeMap<String, LookAlikeMember>) -> Vec<(LookAlike, usize)> {
    let mut groups: BTreeMap<&str, (LookAlike, usize)> = BTreeMap::new();
    for look_alike in members.values().flat_map(LookAlikeMember::groups) {
        groups
            .entry(look_alike.directory_group.as_str())
            .or_insert_with(|| (look_alike.clone(), 0))
            .1 += 1;
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::model::IdentityStatus;

    /// Scope "Taskade Users"; "Engineering" gives the workspace group
    /// "Engineering" and Editor.
    fn policy() -> PolicySettings {
        PolicySettings {
            scope_groups: vec!["Taskade Users".into()],
            default_role: Role::Viewer,
            mappings: vec![crate::policy::Mapping {
                group: "Engineering".into(),
                workspace_group: "Engineering".into(),
                role: Role::Editor,
            }],
            manage_roles: true,
        }
    }

    fn configured() -> ConfiguredGroups {
        let mut configured = ConfiguredGroups::default();
        configured.add("Taskade Users", "policy.scope_groups".to_owned());
        configured.add("Engineering", "policy.mapping[0].group".to_owned());
        configured
    }

    #[test]
    fn a_group_differing_only_in_what_does_not_show_looks_alike() {
        let configured = configured();
        for (group, differs) in [
            ("Taskade Users\u{a0}", "a no-break space (U+00A0)"),
            ("Taskade\u{a0}Users", "a no-break space (U+00A0)"),
            ("Taskade  Users", "two spaces in a row"),
            ("Taskade\u{200b} Users", "a zero-width space (U+200B)"),
            ("Taskade\tUsers", "a tab"),
            ("\"Taskade Users\"", "the quote \""),
            ("Taskade Users ", "a space at the end"),
            (" Taskade Users", "a space at the start"),
        ] {
            let found = configured
                .look_alike(group)
                .unwrap_or_else(|| panic!("{group:?}"));
            assert_eq!(found.configured, "Taskade Users");
            assert_eq!(found.key, "policy.scope_groups");
            assert_eq!(found.differs, differs, "{group:?}");
            assert!(found.to_string().contains(differs), "{found}");
        }
        // The configured name in any case is policy's to compare, and a
        // different name is not alike.
        for group in [
            "Taskade Users",
            "taskade users",
            "Taskade Admins",
            "Engineers",
        ] {
            assert_eq!(configured.look_alike(group), None, "{group:?}");
        }
        assert!(configured.wants("engineering"));
        assert!(configured.wants("Engi\u{200b}neering"));
        assert!(!configured.wants("Finance"));
    }

    /// `safety.distinct_groups`: a group declared another group is no
    /// look-alike (nobody held, its members not read for it), and the others
    /// that look like the same configured group still are.
    #[test]
    fn a_group_declared_distinct_is_no_look_alike() {
        let mut configured = configured();
        configured.add("Founders Club", SCOPE_GROUPS_KEY.to_owned());
        let founder = Identity {
            id: "f".to_owned(),
            user_name: "f@example.com".to_owned(),
            email: None,
            given_name: None,
            family_name: None,
            display_name: None,
            status: IdentityStatus::Active,
            department: None,
            groups: vec!["Founder's Club".to_owned()],
        };
        let held = look_alike_members(std::slice::from_ref(&founder), &configured, &policy());
        assert!(held.contains_key("f"), "{held:?}");

        configured.declare_distinct("founder's club");
        assert_eq!(configured.look_alike("Founder's Club"), None);
        assert!(!configured.wants("Founder's Club"));
        let declared = configured.declared_distinct("Founder's Club");
        assert_eq!(declared.len(), 1);
        assert_eq!(declared[0].configured, "Founders Club");
        assert!(look_alike_members(&[founder], &configured, &policy()).is_empty());
        // Only the name declared: another look-alike of the group still is one.
        assert!(configured.look_alike("Founders\u{a0}Club").is_some());
        assert_eq!(configured.declared_distinct("Founders\u{a0}Club"), []);
        assert_eq!(configured.declared_distinct("Finance"), []);
        // Not trimmed, as policy does not trim: a no-break space at the end is
        // what sets this one apart.
        configured.declare_distinct("Engineering\u{a0}");
        assert_eq!(configured.look_alike("Engineering\u{a0}"), None);
        assert!(configured.look_alike("Engineering ").is_some());
    }

    /// A protected group is compared trimmed (`Protected::with_members_of`):
    /// "IT Admins" with a space or a no-break space at its end is the protected
    /// group, its members protected, and no look-alike of it (a check warned
    /// that a run holds what it would take from them, and the sweep ended
    /// their episodes as held, not as protected). Inside the name, or a
    /// zero-width space at its end, it still is one; and such a name is still
    /// a scope group's look-alike, which policy compares untrimmed.
    #[test]
    fn a_protected_group_spelt_with_spaces_at_its_ends_is_no_look_alike_of_it() {
        let mut configured = configured();
        configured.add("IT Admins", PROTECTED_GROUPS_KEY.to_owned());
        for group in [
            "IT Admins ",
            "IT Admins\u{a0}",
            " IT Admins",
            "it admins\u{3000}",
        ] {
            assert_eq!(configured.look_alikes(group), [], "{group:?}");
        }
        for group in ["IT\u{a0}Admins", "IT  Admins", "IT Admins\u{200b}"] {
            assert_eq!(configured.look_alikes(group).len(), 1, "{group:?}");
        }
        assert_eq!(configured.look_alikes("Taskade Users\u{a0}").len(), 1);
    }

    /// Every configured group a look-alike resembles, each name once with all
    /// its keys: a name that is a scope group and a mapping's group is both.
    #[test]
    fn configured_of_names_every_configured_group_once_with_its_keys() {
        let mut configured = configured();
        configured.add("Taskade Users", "policy.mapping[1].group".to_owned());
        configured.add("taskade users", PROTECTED_GROUPS_KEY.to_owned());
        let look_alikes = configured.look_alikes("Taskade\u{a0}Users");
        assert_eq!(
            configured_of(&look_alikes),
            "\"Taskade Users\" (policy.scope_groups, policy.mapping[1].group) nor \
             \"taskade users\" (safety.protected_groups)"
        );
        configured.declare_distinct("Taskade\u{a0}Users");
        assert_eq!(configured.declared_distinct("Taskade\u{a0}Users").len(), 3);
    }

    /// A joiner inside a Persian word or an emoji sequence, and the
    /// ideographic space, are part of a group name as written, and taken; in
    /// what identifies an account (a userName, an email) every one of them is
    /// hidden, as anywhere else in a group name.
    #[test]
    fn joiners_are_writing_in_a_group_name_and_hidden_in_a_user_name() {
        let persian = "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}";
        for name in [
            persian,
            "\u{1f469}\u{200d}\u{1f4bb} Devs",
            "\u{55b6}\u{696d}\u{90e8}\u{3000}\u{6771}\u{4eac}",
        ] {
            assert_eq!(hidden_in_written_name(name), None, "{name:?}");
            assert!(hidden_in(name).is_some(), "{name:?}");
            assert!(
                hidden_in(&format!("{name}@example.com")).is_some(),
                "{name:?}"
            );
        }
        for (name, hidden) in [
            ("Eng\u{200c}ineering", '\u{200c}'),
            ("\u{200d}\u{62a}\u{6cc}", '\u{200d}'),
            ("Ops\u{200b}", '\u{200b}'),
        ] {
            assert_eq!(hidden_in_written_name(name), Some(hidden), "{name:?}");
            assert_eq!(hidden_in(name), Some(hidden), "{name:?}");
        }
        assert_eq!(describe('\u{200d}'), "a zero-width joiner (U+200D)");
    }

    #[test]
    fn members_of_a_look_alike_are_found_once_each() {
        let person = |id: &str, groups: &[&str]| Identity {
            id: id.to_owned(),
            user_name: format!("{id}@example.com"),
            email: None,
            given_name: None,
            family_name: None,
            display_name: None,
            status: IdentityStatus::Active,
            department: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        let identities = [
            person("a", &["Taskade Users", "Engineering"]),
            person("b", &["Taskade Users", "Engineering\u{a0}"]),
            person("c", &["Taskade\u{200b} Users"]),
            person("d", &["Finance"]),
        ];
        let members = look_alike_members(&identities, &configured(), &policy());
        assert_eq!(members.keys().collect::<Vec<_>>(), ["b", "c"]);
        let b = &members["b"];
        assert_eq!(b.access[0].look_alike.key, "policy.mapping[0].group");
        assert_eq!(b.deprovision, None, "b is in scope");
        let c = &members["c"];
        assert_eq!(c.deprovision.as_ref().unwrap().key, "policy.scope_groups");
        assert!(c.access.is_empty());
        let groups = look_alike_groups(&members);
        assert_eq!(groups.len(), 2);
        assert!(groups.iter().all(|(_, count)| *count == 1));
    }

    /// A look-alike holds only what it could have changed: a mapping group's
    /// gives no scope (a leaver out of scope in it is no member), one whose
    /// configured group the person is in by name changes nothing, and a name
    /// configured as a scope group and as a mapping's is both.
    #[test]
    fn a_look_alike_holds_only_what_it_could_have_changed() {
        let person = |id: &str, status: IdentityStatus, groups: &[&str]| Identity {
            id: id.to_owned(),
            user_name: format!("{id}@example.com"),
            email: None,
            given_name: None,
            family_name: None,
            display_name: None,
            status,
            department: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        let mut configured = configured();
        configured.add("Taskade Users", "policy.mapping[1].group".to_owned());
        configured.add("IT Admins", PROTECTED_GROUPS_KEY.to_owned());
        let mut policy = policy();
        policy.mappings.push(crate::policy::Mapping {
            group: "Taskade Users".into(),
            workspace_group: "Everyone".into(),
            role: Role::Commenter,
        });
        let identities = [
            // Removed from the scope group; still in a mapping's look-alike.
            person("leaver", IdentityStatus::Active, &["Engineering\u{a0}"]),
            // In both the mapping group and its look-alike.
            person(
                "both",
                IdentityStatus::Active,
                &["Taskade Users", "Engineering", "Engineering\u{a0}"],
            ),
            // Only in the look-alike of a name that is a scope and a mapping group.
            person("scoped", IdentityStatus::Active, &["Taskade\u{a0}Users"]),
            // Suspended: only a protected group's look-alike counts.
            person(
                "suspended",
                IdentityStatus::Suspended,
                &["Taskade\u{a0}Users"],
            ),
            person("admin", IdentityStatus::Suspended, &["IT\u{200b} Admins"]),
        ];
        let members = look_alike_members(&identities, &configured, &policy);
        assert_eq!(
            members.keys().collect::<Vec<_>>(),
            ["admin", "leaver", "scoped"]
        );
        assert_eq!(members["leaver"].deprovision, None);
        // What a mapping's look-alike would have kept: its workspace group and
        // anything below its role, nothing else.
        let leaver = &members["leaver"].access;
        assert_eq!(leaver.len(), 1);
        assert!(leaver[0].keeps_group("engineering"));
        assert!(!leaver[0].keeps_group("Sales"));
        assert!(leaver[0].keeps_above(Role::Viewer));
        assert!(!leaver[0].keeps_above(Role::Editor));
        let scoped = &members["scoped"];
        assert_eq!(
            scoped.deprovision.as_ref().unwrap().key,
            "policy.scope_groups"
        );
        assert_eq!(scoped.access[0].look_alike.key, "policy.mapping[1].group");
        assert!(scoped.access[0].keeps_group("Everyone"));
        let admin = &members["admin"];
        assert_eq!(
            admin.deprovision.as_ref().unwrap().key,
            PROTECTED_GROUPS_KEY
        );
        assert_eq!(admin.access[0].look_alike.key, PROTECTED_GROUPS_KEY);
        assert!(admin.access[0].keeps_group("Sales") && admin.access[0].keeps_above(Role::Owner));
        // Counted once per person and group.
        let groups = look_alike_groups(&members);
        let counts: Vec<(&str, usize)> = groups
            .iter()
            .map(|(g, n)| (g.directory_group.as_str(), *n))
            .collect();
        assert_eq!(
            counts,
            [
                ("Engineering\u{a0}", 1),
                ("IT\u{200b} Admins", 1),
                ("Taskade\u{a0}Users", 1)
            ]
        );
    }
}
