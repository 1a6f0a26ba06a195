//! The sandbox's state: Users and Groups in memory with the indexes that keep every
//! request O(page) or O(log n), and the SCIM semantics on top of them (create, read,
//! list, replace, PATCH, delete), independent of HTTP.
//!
//! Every write is atomic: PATCH and PUT work on a copy of the resource, which is
//! validated (uniqueness, members) before it replaces the original and the indexes
//! are updated. Versions (`meta.version`, the ETag) bump only when a resource really
//! changed, so an idempotent retry does not invalidate other clients' ETags.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::filter::{self, Comparison, Conjunction, Filter, Literal, Path};
use crate::model::{Account, WorkspaceGroup, WorkspaceSnapshot};

pub(crate) const SCHEMA_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const SCHEMA_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const SCHEMA_LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SCHEMA_PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A SCIM error: HTTP status, `scimType` and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    pub fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        ScimError::new(400, Some(scim_type), detail)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        ScimError::new(404, None, format!("{what} {id} not found"))
    }

    pub fn body(&self) -> Value {
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = t.into();
        }
        body
    }
}

type Result<T> = std::result::Result<T, ScimError>;

/// A rendered resource (its JSON) and its ETag.
pub(crate) struct Rendered {
    pub json: Vec<u8>,
    pub etag: String,
    pub location: String,
}

impl Rendered {
    #[cfg(test)]
    pub fn body(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

/// An element of a multi-valued complex attribute (`emails`, `roles`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MultiValue {
    value: String,
    kind: Option<String>,
    display: Option<String>,
    primary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    version: u64,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct User {
    id: String,
    user_name: String,
    external_id: Option<String>,
    display_name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    formatted: Option<String>,
    emails: Vec<MultiValue>,
    roles: Vec<MultiValue>,
    active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    id: String,
    display_name: String,
    external_id: Option<String>,
    members: BTreeSet<String>,
}

/// A resource a list filter can test.
trait Filterable {
    fn matches(&self, c: &Comparison) -> Result<bool>;
}

impl Filterable for User {
    fn matches(&self, c: &Comparison) -> Result<bool> {
        User::matches(self, c)
    }
}

impl Filterable for Group {
    fn matches(&self, c: &Comparison) -> Result<bool> {
        Group::matches(self, c)
    }
}

impl<T: Filterable> Table<T> {
    /// Ids of the resources matching every comparison of one of the filter's
    /// conjunctions, in id order. `candidates` (from an index) narrows the scan;
    /// `None` scans everything.
    fn matching(&self, filter: &Filter, candidates: Option<Vec<String>>) -> Result<Vec<String>> {
        let keep = |id: &str| -> Result<bool> {
            let Some((item, _)) = self.items.get(id) else {
                return Ok(false);
            };
            'alternatives: for conjunction in filter {
                for c in conjunction {
                    if !item.matches(c)? {
                        continue 'alternatives;
                    }
                }
                return Ok(true);
            }
            Ok(false)
        };
        let mut ids = Vec::new();
        match candidates {
            Some(candidates) => {
                for id in candidates {
                    if keep(&id)? {
                        ids.push(id);
                    }
                }
                ids.sort();
                // Alternatives may select the same resource.
                ids.dedup();
            }
            None => {
                for id in self.items.keys() {
                    if keep(id)? {
                        ids.push(id.clone());
                    }
                }
            }
        }
        Ok(ids)
    }
}

/// Resources by id, with a positional index for paging that is rebuilt lazily
/// after inserts and deletes (updates keep it), so a listing after a burst of
/// writes pays O(n) once and every page after that is O(page). The index is built
/// behind a shared reference, so listings run under the store's read lock.
struct Table<T> {
    items: BTreeMap<String, (T, Meta)>,
    order: OnceLock<Vec<String>>,
}

impl<T> Table<T> {
    fn new() -> Self {
        Table {
            items: BTreeMap::new(),
            order: OnceLock::new(),
        }
    }

    fn insert(&mut self, id: String, item: T, meta: Meta) {
        self.items.insert(id, (item, meta));
        self.order.take();
    }

    fn remove(&mut self, id: &str) -> Option<(T, Meta)> {
        let removed = self.items.remove(id);
        if removed.is_some() {
            self.order.take();
        }
        removed
    }

    fn order(&self) -> &[String] {
        self.order
            .get_or_init(|| self.items.keys().cloned().collect())
    }
}

/// Ids for new resources: uuid-shaped, from a fixed-seed splitmix64, so one
/// instance hands out the same sequence every time.
struct IdGen(super::SplitMix64);

impl IdGen {
    fn next(&mut self) -> String {
        let a = self.0.next_u64();
        let b = self.0.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

/// How a list request was asked.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    pub start_index: usize,
    pub count: usize,
    pub filter: Option<String>,
    pub excluded: Vec<String>,
    /// Paged by cursor (RFC 9865): the page starts after `after`, not at
    /// `start_index`.
    pub by_cursor: bool,
    /// The id a cursor stands for: the last one of the page before.
    pub after: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

pub(crate) struct Store {
    users: Table<User>,
    groups: Table<Group>,
    /// Lowercased userName → id: uniqueness and `userName eq`.
    user_names: HashMap<String, String>,
    external_ids: HashMap<String, BTreeSet<String>>,
    /// Lowercased displayName → the groups of that name: uniqueness and
    /// `displayName eq`. More than one only from a seed: a copy of a workspace
    /// whose folders share a name (seatwarden calls such a match disputed).
    group_names: HashMap<String, BTreeSet<String>>,
    /// User id → the groups it is a member of: `members[value eq]` and cleanup on delete.
    memberships: HashMap<String, BTreeSet<String>>,
    ids: IdGen,
    /// Base URL for `meta.location` and `$ref`, without a trailing slash.
    base: String,
    /// Whether list filters may use `or` (see [`Store::set_or_filters`]).
    or_filters: bool,
    /// List filters refused for their `or` (an observation for tests; lists take
    /// the store shared, hence atomic).
    or_refused: std::sync::atomic::AtomicU64,
    /// Whether groups are served with `"members": []` (see
    /// [`Store::set_members_hidden`]).
    members_hidden: bool,
    /// How many of a group's members it is served with at most (see
    /// [`Store::set_members_cap`]).
    members_cap: Option<usize>,
    /// User id → groups its `groups` names whether they hold it or not (see
    /// [`Store::name_stale_groups`]).
    stale_groups: HashMap<String, BTreeSet<String>>,
}

/// What a group whose members are hidden shows.
static NO_MEMBERS: BTreeSet<String> = BTreeSet::new();

fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// Reads an attribute case-insensitively (SCIM attribute names are).
fn attr<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn opt_string(v: Option<&Value>, name: &str) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(ScimError::bad(
            "invalidValue",
            format!("{name} must be a string, not {other}"),
        )),
    }
}

fn required_string(v: Option<&Value>, name: &str) -> Result<String> {
    match opt_string(v, name)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(ScimError::bad(
            "invalidValue",
            format!("{name} is required"),
        )),
    }
}

/// `true`, `"true"`, `"False"`: Entra sends booleans as strings.
fn loose_bool(v: &Value, name: &str) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ScimError::bad(
            "invalidValue",
            format!("{name} must be a boolean, not {other}"),
        )),
    }
}

fn multi_value(v: &Value, name: &str) -> Result<MultiValue> {
    match v {
        Value::String(s) => Ok(MultiValue {
            value: s.clone(),
            ..MultiValue::default()
        }),
        Value::Object(o) => Ok(MultiValue {
            value: required_string(attr(o, "value"), &format!("{name}.value"))?,
            kind: opt_string(attr(o, "type"), &format!("{name}.type"))?,
            display: opt_string(attr(o, "display"), &format!("{name}.display"))?,
            primary: match attr(o, "primary") {
                None | Some(Value::Null) => false,
                Some(p) => loose_bool(p, &format!("{name}.primary"))?,
            },
        }),
        other => Err(ScimError::bad(
            "invalidValue",
            format!("{name} must be an object, not {other}"),
        )),
    }
}

fn multi_values(v: Option<&Value>, name: &str) -> Result<Vec<MultiValue>> {
    let mut out = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| multi_value(i, name))
            .collect::<Result<Vec<_>>>()?,
        Some(single) => vec![multi_value(single, name)?],
    };
    one_primary(&mut out);
    Ok(out)
}

/// At most one element is primary (RFC 7643 §2.4): the last one marked wins.
fn one_primary(values: &mut [MultiValue]) {
    if let Some(last) = values.iter().rposition(|v| v.primary) {
        for (i, v) in values.iter_mut().enumerate() {
            v.primary = i == last;
        }
    }
}

fn render_multi(values: &[MultiValue]) -> Value {
    Value::Array(
        values
            .iter()
            .map(|v| {
                let mut o = json!({"value": v.value});
                if let Some(t) = &v.kind {
                    o["type"] = t.clone().into();
                }
                if let Some(d) = &v.display {
                    o["display"] = d.clone().into();
                }
                if v.primary {
                    o["primary"] = true.into();
                }
                o
            })
            .collect(),
    )
}

fn as_object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| ScimError::bad("invalidSyntax", format!("{what} must be a JSON object")))
}

impl User {
    /// From a POST/PUT body. Attributes the sandbox does not model are ignored,
    /// as RFC 7644 lets a service provider do.
    fn from_json(id: String, v: &Value) -> Result<User> {
        let o = as_object(v, "User")?;
        let name = match attr(o, "name") {
            None | Some(Value::Null) => None,
            Some(n) => Some(as_object(n, "name")?),
        };
        let sub = |key: &str| -> Result<Option<String>> {
            match name {
                Some(n) => opt_string(attr(n, key), &format!("name.{key}")),
                None => Ok(None),
            }
        };
        Ok(User {
            id,
            user_name: required_string(attr(o, "userName"), "userName")?,
            external_id: opt_string(attr(o, "externalId"), "externalId")?,
            display_name: opt_string(attr(o, "displayName"), "displayName")?,
            given_name: sub("givenName")?,
            family_name: sub("familyName")?,
            formatted: sub("formatted")?,
            emails: multi_values(attr(o, "emails"), "emails")?,
            roles: multi_values(attr(o, "roles"), "roles")?,
            active: match attr(o, "active") {
                None | Some(Value::Null) => true,
                Some(a) => loose_bool(a, "active")?,
            },
        })
    }

    fn from_account(a: &Account) -> User {
        User {
            id: a.id.clone(),
            user_name: a.user_name.clone(),
            external_id: a.external_id.clone(),
            display_name: a.display_name.clone(),
            given_name: a.given_name.clone(),
            family_name: a.family_name.clone(),
            formatted: None,
            emails: a
                .email
                .iter()
                .map(|e| MultiValue {
                    value: e.clone(),
                    kind: Some("work".to_owned()),
                    display: None,
                    primary: true,
                })
                .collect(),
            roles: a
                .roles
                .iter()
                .enumerate()
                .map(|(i, r)| MultiValue {
                    value: r.clone(),
                    kind: None,
                    display: None,
                    primary: i == 0,
                })
                .collect(),
            active: a.active,
        }
    }

    /// The same reading our client makes: primary, else first work, else first email.
    fn to_account(&self) -> Account {
        let email = self
            .emails
            .iter()
            .find(|e| e.primary)
            .or_else(|| {
                self.emails.iter().find(|e| {
                    e.kind
                        .as_deref()
                        .is_some_and(|t| t.eq_ignore_ascii_case("work"))
                })
            })
            .or_else(|| self.emails.first())
            .map(|e| e.value.clone());
        Account {
            id: self.id.clone(),
            user_name: self.user_name.clone(),
            external_id: self.external_id.clone(),
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            display_name: self.display_name.clone(),
            email,
            active: self.active,
            roles: self.roles.iter().map(|r| r.value.clone()).collect(),
        }
    }

    fn matches(&self, c: &Comparison) -> std::result::Result<bool, ScimError> {
        let s = |v: &str| matches!(&c.value, Literal::Str(x) if x == v);
        let s_ci =
            |v: &str| matches!(&c.value, Literal::Str(x) if x.to_lowercase() == v.to_lowercase());
        let opt = |v: &Option<String>, ci: bool| match (&c.value, v) {
            (Literal::Null, None) => true,
            (_, Some(v)) => {
                if ci {
                    s_ci(v)
                } else {
                    s(v)
                }
            }
            _ => false,
        };
        Ok(match c.attr.as_str() {
            "id" => s(&self.id),
            "username" => s_ci(&self.user_name),
            "externalid" => opt(&self.external_id, false),
            "displayname" => opt(&self.display_name, true),
            "name.givenname" => opt(&self.given_name, true),
            "name.familyname" => opt(&self.family_name, true),
            "active" => matches!(c.value, Literal::Bool(b) if b == self.active),
            "emails" | "emails.value" => self.emails.iter().any(|e| s_ci(&e.value)),
            "roles" | "roles.value" => self.roles.iter().any(|r| s(&r.value)),
            other => {
                return Err(ScimError::bad(
                    "invalidFilter",
                    format!("filtering Users on {other:?} is not supported"),
                ));
            }
        })
    }
}

impl Group {
    fn from_json(id: String, v: &Value) -> Result<(Group, Vec<String>)> {
        let o = as_object(v, "Group")?;
        let members = member_ids(attr(o, "members"))?;
        Ok((
            Group {
                id,
                display_name: required_string(attr(o, "displayName"), "displayName")?,
                external_id: opt_string(attr(o, "externalId"), "externalId")?,
                members: BTreeSet::new(),
            },
            members,
        ))
    }

    fn matches(&self, c: &Comparison) -> Result<bool> {
        let Literal::Str(x) = &c.value else {
            return Ok(false);
        };
        Ok(match c.attr.as_str() {
            "id" => &self.id == x,
            "displayname" => self.display_name.to_lowercase() == x.to_lowercase(),
            "externalid" => self.external_id.as_ref() == Some(x),
            "members" | "members.value" => self.members.contains(x),
            other => {
                return Err(ScimError::bad(
                    "invalidFilter",
                    format!("filtering Groups on {other:?} is not supported"),
                ));
            }
        })
    }
}

/// `members` values: `[{"value": id}, …]`, a single object, or bare strings.
fn member_ids(v: Option<&Value>) -> Result<Vec<String>> {
    let one = |m: &Value| -> Result<String> {
        match m {
            Value::String(s) => Ok(s.clone()),
            Value::Object(o) => required_string(attr(o, "value"), "members.value"),
            other => Err(ScimError::bad(
                "invalidValue",
                format!("a member must be an object with a value, not {other}"),
            )),
        }
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(single) => Ok(vec![one(single)?]),
    }
}

/// One PATCH operation, parsed: op, path (absent for whole-resource ops), value.
/// op, path (absent for whole-resource ops), value.
type Operation = (Op, Option<Path>, Option<Value>);

fn parse_ops(body: &Value) -> Result<Vec<Operation>> {
    let o = as_object(body, "PATCH body")?;
    if let Some(Value::Array(schemas)) = attr(o, "schemas")
        && !schemas.iter().any(|s| s.as_str() == Some(SCHEMA_PATCH))
    {
        return Err(ScimError::bad(
            "invalidSyntax",
            format!("PATCH schemas must include {SCHEMA_PATCH}"),
        ));
    }
    let Some(Value::Array(ops)) = attr(o, "Operations") else {
        return Err(ScimError::bad(
            "invalidSyntax",
            "PATCH body needs an Operations array",
        ));
    };
    ops.iter()
        .map(|op| {
            let op_obj = as_object(op, "PATCH operation")?;
            let name = opt_string(attr(op_obj, "op"), "op")?.unwrap_or_default();
            // Entra sends "Replace"; op names are case-insensitive in practice.
            let kind = match name.to_ascii_lowercase().as_str() {
                "add" => Op::Add,
                "replace" => Op::Replace,
                "remove" => Op::Remove,
                _ => {
                    return Err(ScimError::bad(
                        "invalidSyntax",
                        format!("unknown PATCH op {name:?}"),
                    ));
                }
            };
            let path = match opt_string(attr(op_obj, "path"), "path")? {
                Some(p) if !p.trim().is_empty() => Some(
                    filter::parse_path(&p)
                        .map_err(|e| ScimError::bad("invalidPath", format!("{p:?}: {e}")))?,
                ),
                _ => None,
            };
            let value = attr(op_obj, "value").cloned();
            if path.is_none() && kind == Op::Remove {
                return Err(ScimError::bad("noTarget", "remove needs a path"));
            }
            if kind != Op::Remove && value.is_none() {
                return Err(ScimError::bad(
                    "invalidValue",
                    format!("{name} needs a value"),
                ));
            }
            Ok((kind, path, value))
        })
        .collect()
}

/// Splits a path-less add/replace value object into (path, value) pairs. Keys may
/// be dotted (`name.givenName`, as Entra sends); read-only and unknown attributes
/// are skipped by the callers' `known` check.
fn pathless(value: &Value) -> Result<Vec<(Path, Value)>> {
    let o = as_object(value, "a PATCH value without path")?;
    let mut out = Vec::new();
    for (k, v) in o {
        if ["schemas", "id", "meta"]
            .iter()
            .any(|r| k.eq_ignore_ascii_case(r))
        {
            continue;
        }
        let path = filter::parse_path(k)
            .map_err(|e| ScimError::bad("invalidPath", format!("{k:?}: {e}")))?;
        out.push((path, v.clone()));
    }
    Ok(out)
}

fn no_filter(path: &Path) -> Result<()> {
    if path.filter.is_some() || path.sub.is_some() {
        return Err(ScimError::bad(
            "invalidPath",
            format!("{} has no sub-attributes or values to filter", path.attr),
        ));
    }
    Ok(())
}

fn set_opt(slot: &mut Option<String>, op: Op, value: Option<&Value>, name: &str) -> Result<()> {
    *slot = match op {
        Op::Remove => None,
        Op::Add | Op::Replace => opt_string(value, name)?,
    };
    Ok(())
}

fn multi_matches(item: &MultiValue, filter: &Conjunction) -> Result<bool> {
    for c in filter {
        let ok = match (c.attr.as_str(), &c.value) {
            ("value", Literal::Str(s)) => &item.value == s,
            ("type", Literal::Str(s)) => item
                .kind
                .as_ref()
                .is_some_and(|k| k.eq_ignore_ascii_case(s)),
            ("type", Literal::Null) => item.kind.is_none(),
            ("display", Literal::Str(s)) => item.display.as_ref() == Some(s),
            ("primary", Literal::Bool(b)) => item.primary == *b,
            (other, _) => {
                return Err(ScimError::bad(
                    "invalidFilter",
                    format!("cannot filter values on {other:?}"),
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn set_sub(item: &mut MultiValue, sub: &str, value: Option<&Value>, name: &str) -> Result<()> {
    match sub {
        "value" => item.value = required_string(value, &format!("{name}.value"))?,
        "type" => item.kind = opt_string(value, &format!("{name}.type"))?,
        "display" => item.display = opt_string(value, &format!("{name}.display"))?,
        "primary" => {
            item.primary = match value {
                None | Some(Value::Null) => false,
                Some(v) => loose_bool(v, &format!("{name}.primary"))?,
            }
        }
        other => {
            return Err(ScimError::bad(
                "invalidPath",
                format!("{name} has no sub-attribute {other:?}"),
            ));
        }
    }
    Ok(())
}

/// add/replace/remove on `emails` or `roles`, with optional value filter and
/// sub-attribute.
fn patch_multi(
    list: &mut Vec<MultiValue>,
    op: Op,
    path: &Path,
    value: Option<&Value>,
) -> Result<()> {
    let name = path.attr.as_str();
    match (&path.filter, &path.sub, op) {
        (None, None, Op::Replace) => *list = multi_values(value, name)?,
        (None, None, Op::Add) => {
            for item in multi_values(value, name)? {
                if item.primary {
                    list.iter_mut().for_each(|v| v.primary = false);
                }
                match list
                    .iter_mut()
                    .find(|v| v.value == item.value && v.kind == item.kind)
                {
                    Some(existing) => *existing = item,
                    None => list.push(item),
                }
            }
        }
        // Entra removes specific values with `path: "roles", value: [...]`.
        (None, None, Op::Remove) => match value {
            Some(v) if !v.is_null() => {
                let gone = multi_values(Some(v), name)?;
                list.retain(|item| !gone.iter().any(|g| g.value == item.value));
            }
            _ => list.clear(),
        },
        (None, Some(sub), Op::Remove) if sub == "value" => list.clear(),
        (None, Some(sub), Op::Remove) => {
            for item in list.iter_mut() {
                set_sub(item, sub, None, name)?;
            }
        }
        (None, Some(sub), _) => {
            if list.is_empty() {
                // `emails.value` on a user without emails creates one; any other
                // sub-attribute would create an element without a value.
                if sub != "value" {
                    return Err(ScimError::bad(
                        "noTarget",
                        format!("{name} has no values to set {sub} on"),
                    ));
                }
                list.push(MultiValue::default());
            }
            for item in list.iter_mut() {
                set_sub(item, sub, value, name)?;
            }
        }
        (Some(filter), sub, _) => {
            let mut hits = Vec::new();
            for (i, item) in list.iter().enumerate() {
                if multi_matches(item, filter)? {
                    hits.push(i);
                }
            }
            match (op, sub) {
                // Removing the value removes the element.
                (Op::Remove, None) | (Op::Remove, Some(_))
                    if sub.as_deref().is_none_or(|s| s == "value") =>
                {
                    let mut i = 0;
                    list.retain(|_| {
                        let keep = !hits.contains(&i);
                        i += 1;
                        keep
                    });
                }
                (Op::Remove, Some(sub)) => {
                    for &i in &hits {
                        if let Some(item) = list.get_mut(i) {
                            set_sub(item, sub, None, name)?;
                        }
                    }
                }
                (_, Some(sub)) if hits.is_empty() => {
                    // `emails[type eq "work"].value` on a user without a work email:
                    // Entra expects the element to be created, so it is, with the
                    // filter's equalities as its other sub-attributes.
                    let mut item = MultiValue::default();
                    for c in filter {
                        if let Literal::Str(s) = &c.value {
                            let v = Value::String(s.clone());
                            set_sub(&mut item, &c.attr, Some(&v), name)?;
                        }
                    }
                    set_sub(&mut item, sub, value, name)?;
                    list.push(item);
                }
                (_, Some(sub)) => {
                    for &i in &hits {
                        if let Some(item) = list.get_mut(i) {
                            set_sub(item, sub, value, name)?;
                        }
                    }
                }
                (_, None) => {
                    if hits.is_empty() {
                        return Err(ScimError::bad(
                            "noTarget",
                            format!("no {name} value matches the filter"),
                        ));
                    }
                    let o = match value {
                        Some(Value::Object(o)) => o,
                        _ => {
                            return Err(ScimError::bad(
                                "invalidValue",
                                format!("a filtered {name} path needs an object value"),
                            ));
                        }
                    };
                    for &i in &hits {
                        if let Some(item) = list.get_mut(i) {
                            for (k, v) in o {
                                set_sub(item, &k.to_lowercase(), Some(v), name)?;
                            }
                        }
                    }
                }
            }
        }
    }
    one_primary(list);
    Ok(())
}

/// A PATCH path at `id` or `meta` (read-only, RFC 7643 §3.1) is a `mutability`
/// error (RFC 7644 §3.5.2): the attribute exists, and cannot be changed.
fn writable(path: &Path) -> Result<()> {
    match path.attr.as_str() {
        "id" | "meta" => Err(ScimError::bad(
            "mutability",
            format!("{} is read-only", path.attr),
        )),
        _ => Ok(()),
    }
}

fn patch_user_attr(user: &mut User, op: Op, path: &Path, value: Option<&Value>) -> Result<()> {
    writable(path)?;
    match path.attr.as_str() {
        "username" => {
            no_filter(path)?;
            if op == Op::Remove {
                return Err(ScimError::bad("invalidValue", "userName is required"));
            }
            user.user_name = required_string(value, "userName")?;
        }
        "externalid" => {
            no_filter(path)?;
            set_opt(&mut user.external_id, op, value, "externalId")?;
        }
        "displayname" => {
            no_filter(path)?;
            set_opt(&mut user.display_name, op, value, "displayName")?;
        }
        "active" => {
            no_filter(path)?;
            match (op, value) {
                (Op::Remove, _) => {
                    return Err(ScimError::bad(
                        "invalidValue",
                        "active cannot be removed; replace it with false",
                    ));
                }
                (_, Some(v)) => user.active = loose_bool(v, "active")?,
                (_, None) => return Err(ScimError::bad("invalidValue", "active needs a value")),
            }
        }
        "name" => {
            if path.filter.is_some() {
                return Err(ScimError::bad("invalidPath", "name is not multi-valued"));
            }
            match (&path.sub, op) {
                (Some(sub), _) => {
                    let slot = match sub.as_str() {
                        "givenname" => &mut user.given_name,
                        "familyname" => &mut user.family_name,
                        "formatted" => &mut user.formatted,
                        other => {
                            return Err(ScimError::bad(
                                "invalidPath",
                                format!("name.{other} is not supported"),
                            ));
                        }
                    };
                    set_opt(slot, op, value, &format!("name.{sub}"))?;
                }
                (None, Op::Remove) => {
                    user.given_name = None;
                    user.family_name = None;
                    user.formatted = None;
                }
                // Replace on a complex attribute leaves unspecified sub-attributes
                // alone (RFC 7644 §3.5.2.3), so add and replace both merge.
                (None, _) => {
                    let o = match value {
                        Some(Value::Object(o)) => o,
                        _ => return Err(ScimError::bad("invalidValue", "name must be an object")),
                    };
                    for (k, v) in o {
                        let sub = Path {
                            attr: "name".to_owned(),
                            filter: None,
                            sub: Some(k.to_lowercase()),
                        };
                        patch_user_attr(user, op, &sub, Some(v))?;
                    }
                }
            }
        }
        "emails" => patch_multi(&mut user.emails, op, path, value)?,
        "roles" => patch_multi(&mut user.roles, op, path, value)?,
        other => {
            return Err(ScimError::bad(
                "invalidPath",
                format!("User attribute {other:?} is not supported"),
            ));
        }
    }
    Ok(())
}

const USER_ATTRS: [&str; 7] = [
    "username",
    "externalid",
    "displayname",
    "active",
    "name",
    "emails",
    "roles",
];
const GROUP_ATTRS: [&str; 3] = ["displayname", "externalid", "members"];

fn check_if_match(if_match: Option<&str>, meta: &Meta) -> Result<()> {
    let Some(wanted) = if_match else {
        return Ok(());
    };
    let current = etag(meta.version);
    let ok = wanted.split(',').any(|t| {
        let t = t.trim();
        // Weak comparison: `W/"3"` and `"3"` name the same version.
        t == "*" || t.trim_start_matches("W/") == current.trim_start_matches("W/")
    });
    if ok {
        Ok(())
    } else {
        Err(ScimError::new(
            412,
            None,
            format!("If-Match {wanted} does not match the current version {current}"),
        ))
    }
}

fn bump(meta: &Meta, now: DateTime<Utc>) -> Meta {
    Meta {
        version: meta.version + 1,
        created: meta.created,
        modified: now,
    }
}

impl Store {
    pub fn new(
        base: &str,
        snapshot: WorkspaceSnapshot,
        now: DateTime<Utc>,
    ) -> std::result::Result<Store, String> {
        let mut store = Store {
            users: Table::new(),
            groups: Table::new(),
            user_names: HashMap::new(),
            external_ids: HashMap::new(),
            group_names: HashMap::new(),
            memberships: HashMap::new(),
            ids: IdGen(super::SplitMix64(0x5EA7_0A2D_5C1D_0001)),
            base: base.trim_end_matches('/').to_owned(),
            or_filters: true,
            or_refused: std::sync::atomic::AtomicU64::new(0),
            members_hidden: false,
            members_cap: None,
            stale_groups: HashMap::new(),
        };
        let meta = Meta {
            version: 1,
            created: now,
            modified: now,
        };
        for account in &snapshot.accounts {
            if account.id.is_empty() || account.user_name.trim().is_empty() {
                return Err(format!(
                    "account {:?} needs an id and a userName",
                    account.id
                ));
            }
            if store.users.items.contains_key(&account.id) {
                return Err(format!("account id {:?} appears twice", account.id));
            }
            if store
                .user_names
                .contains_key(&account.user_name.to_lowercase())
            {
                return Err(format!(
                    "userName {:?} appears twice (userName is unique case-insensitively)",
                    account.user_name
                ));
            }
            let user = User::from_account(account);
            store.index_user(&user, None);
            store.users.insert(account.id.clone(), user, meta.clone());
        }
        // A seed may nest groups (a member that is a group's id); writes may
        // not: Taskade's groups do not nest, and members a client adds must be
        // Users.
        let group_ids: HashSet<&str> = snapshot
            .groups
            .iter()
            .map(|g| g.id.as_str())
            .filter(|id| !store.users.items.contains_key(*id))
            .collect();
        for group in &snapshot.groups {
            if group.id.is_empty() || group.display_name.trim().is_empty() {
                return Err(format!(
                    "group {:?} needs an id and a displayName",
                    group.id
                ));
            }
            if store.groups.items.contains_key(&group.id) {
                return Err(format!("group id {:?} appears twice", group.id));
            }
            for m in &group.members {
                if !store.users.items.contains_key(m) && !group_ids.contains(m.as_str()) {
                    return Err(format!(
                        "group {:?} has member {m:?}, which is not an account or a group",
                        group.display_name
                    ));
                }
            }
            let g = Group {
                id: group.id.clone(),
                display_name: group.display_name.clone(),
                external_id: None,
                members: group.members.iter().cloned().collect(),
            };
            store.index_group(&g, None);
            store.groups.insert(g.id.clone(), g, meta.clone());
        }
        Ok(store)
    }

    pub fn snapshot(&self) -> WorkspaceSnapshot {
        WorkspaceSnapshot {
            accounts: self
                .users
                .items
                .values()
                .map(|(u, _)| u.to_account())
                .collect(),
            groups: self
                .groups
                .items
                .values()
                .map(|(g, _)| WorkspaceGroup {
                    id: g.id.clone(),
                    display_name: g.display_name.clone(),
                    members: g.members.iter().cloned().collect(),
                })
                .collect(),
        }
    }

    fn fresh_id(&mut self) -> String {
        loop {
            let id = self.ids.next();
            if !self.users.items.contains_key(&id) && !self.groups.items.contains_key(&id) {
                return id;
            }
        }
    }

    /// Moves a user's index entries from `old` (if any) to `new`.
    fn index_user(&mut self, new: &User, old: Option<&User>) {
        if let Some(old) = old {
            self.user_names.remove(&old.user_name.to_lowercase());
            if let Some(ext) = &old.external_id
                && let Some(set) = self.external_ids.get_mut(ext)
            {
                set.remove(&old.id);
                if set.is_empty() {
                    self.external_ids.remove(ext);
                }
            }
        }
        self.user_names
            .insert(new.user_name.to_lowercase(), new.id.clone());
        if let Some(ext) = &new.external_id {
            self.external_ids
                .entry(ext.clone())
                .or_default()
                .insert(new.id.clone());
        }
    }

    fn unindex_user(&mut self, user: &User) {
        self.user_names.remove(&user.user_name.to_lowercase());
        if let Some(ext) = &user.external_id
            && let Some(set) = self.external_ids.get_mut(ext)
        {
            set.remove(&user.id);
            if set.is_empty() {
                self.external_ids.remove(ext);
            }
        }
    }

    fn index_group(&mut self, new: &Group, old: Option<&Group>) {
        let empty = BTreeSet::new();
        let old_members = old.map_or(&empty, |g| &g.members);
        if let Some(old) = old {
            unname(&mut self.group_names, &old.display_name, &old.id);
        }
        name(&mut self.group_names, &new.display_name, &new.id);
        for gone in old_members.difference(&new.members) {
            if let Some(set) = self.memberships.get_mut(gone) {
                set.remove(&new.id);
                if set.is_empty() {
                    self.memberships.remove(gone);
                }
            }
        }
        for added in new.members.difference(old_members) {
            self.memberships
                .entry(added.clone())
                .or_default()
                .insert(new.id.clone());
        }
    }

    fn user_location(&self, id: &str) -> String {
        Location(&self.base, "Users", id).to_string()
    }

    fn group_location(&self, id: &str) -> String {
        Location(&self.base, "Groups", id).to_string()
    }

    fn render_user(&self, user: &User, meta: &Meta) -> Value {
        let mut o = json!({
            "schemas": [SCHEMA_USER],
            "id": user.id,
            "userName": user.user_name,
            "active": user.active,
            "meta": {
                "resourceType": "User",
                "created": timestamp(&meta.created),
                "lastModified": timestamp(&meta.modified),
                "location": self.user_location(&user.id),
                "version": etag(meta.version),
            },
        });
        if let Some(v) = &user.external_id {
            o["externalId"] = v.clone().into();
        }
        if let Some(v) = &user.display_name {
            o["displayName"] = v.clone().into();
        }
        let mut name = Map::new();
        for (k, v) in [
            ("givenName", &user.given_name),
            ("familyName", &user.family_name),
            ("formatted", &user.formatted),
        ] {
            if let Some(v) = v {
                name.insert(k.to_owned(), v.clone().into());
            }
        }
        if !name.is_empty() {
            o["name"] = Value::Object(name);
        }
        if !user.emails.is_empty() {
            o["emails"] = render_multi(&user.emails);
        }
        if !user.roles.is_empty() {
            o["roles"] = render_multi(&user.roles);
        }
        let groups = self.groups_of(&user.id);
        if !groups.1.is_empty() {
            o["groups"] = serde_json::to_value(&groups).unwrap_or(Value::Null);
        }
        o
    }

    /// What a User's `groups` (RFC 7643 §4.1.2, read-only) shows: every group
    /// holding it, `direct`ly or through groups nested in it however deep
    /// (`indirect`), in id order; none while members are hidden (AWS IAM
    /// Identity Center sends no `groups`).
    fn groups_of(&self, user_id: &str) -> UserGroupsView<'_> {
        let mut groups: BTreeMap<&str, bool> = BTreeMap::new();
        if self.members_hidden {
            return UserGroupsView(&self.base, Vec::new());
        }
        let mut pending: Vec<&str> = self
            .memberships
            .get(user_id)
            .into_iter()
            .flatten()
            .map(|group| {
                groups.insert(group.as_str(), true);
                group.as_str()
            })
            .collect();
        while let Some(group) = pending.pop() {
            for outer in self.memberships.get(group).into_iter().flatten() {
                if !groups.contains_key(outer.as_str()) {
                    groups.insert(outer.as_str(), false);
                    pending.push(outer.as_str());
                }
            }
        }
        for stale in self.stale_groups.get(user_id).into_iter().flatten() {
            groups.insert(stale.as_str(), true);
        }
        UserGroupsView(
            &self.base,
            groups
                .into_iter()
                .filter_map(|(id, direct)| {
                    self.groups
                        .items
                        .get(id)
                        .map(|(group, _)| (id, group.display_name.as_str(), direct))
                })
                .collect(),
        )
    }

    /// A group's members as they are served: all, none while they are hidden,
    /// the first `members_cap` under that fault.
    fn served_members<'a>(&self, group: &'a Group) -> impl Iterator<Item = &'a String> + 'a {
        let members = if self.members_hidden {
            &NO_MEMBERS
        } else {
            &group.members
        };
        members.iter().take(self.members_cap.unwrap_or(usize::MAX))
    }

    fn render_group(&self, group: &Group, meta: &Meta, with_members: bool) -> Value {
        let mut o = json!({
            "schemas": [SCHEMA_GROUP],
            "id": group.id,
            "displayName": group.display_name,
            "meta": {
                "resourceType": "Group",
                "created": timestamp(&meta.created),
                "lastModified": timestamp(&meta.modified),
                "location": self.group_location(&group.id),
                "version": etag(meta.version),
            },
        });
        if let Some(v) = &group.external_id {
            o["externalId"] = v.clone().into();
        }
        if with_members {
            o["members"] = Value::Array(
                self.served_members(group)
                    .map(|m| {
                        if self.groups.items.contains_key(m) {
                            json!({"value": m, "$ref": self.group_location(m), "type": "Group"})
                        } else {
                            json!({"value": m, "$ref": self.user_location(m), "type": "User"})
                        }
                    })
                    .collect(),
            );
        }
        o
    }

    fn user_rendered(&self, id: &str) -> Result<Rendered> {
        let (user, meta) = self
            .users
            .items
            .get(id)
            .ok_or_else(|| ScimError::not_found("User", id))?;
        Ok(Rendered {
            json: written(&UserView {
                base: &self.base,
                user,
                meta,
                groups: self.groups_of(id),
            })?,
            etag: etag(meta.version),
            location: self.user_location(id),
        })
    }

    fn group_rendered(&self, id: &str, with_members: bool) -> Result<Rendered> {
        let (group, meta) = self
            .groups
            .items
            .get(id)
            .ok_or_else(|| ScimError::not_found("Group", id))?;
        Ok(Rendered {
            json: written(&GroupView {
                store: self,
                group,
                meta,
                with_members,
            })?,
            etag: etag(meta.version),
            location: self.group_location(id),
        })
    }

    // ---- Users ----

    pub fn get_user(&self, id: &str) -> Result<Rendered> {
        self.user_rendered(id)
    }

    fn check_user_name(&self, user: &User) -> Result<()> {
        match self.user_names.get(&user.user_name.to_lowercase()) {
            Some(other) if *other != user.id => Err(ScimError::new(
                409,
                Some("uniqueness"),
                format!("userName {:?} is already taken", user.user_name),
            )),
            _ => Ok(()),
        }
    }

    pub fn create_user(&mut self, body: &Value, now: DateTime<Utc>) -> Result<Rendered> {
        let id = self.fresh_id();
        let user = User::from_json(id.clone(), body)?;
        self.check_user_name(&user)?;
        self.index_user(&user, None);
        self.users.insert(
            id.clone(),
            user,
            Meta {
                version: 1,
                created: now,
                modified: now,
            },
        );
        self.user_rendered(&id)
    }

    /// Commits a changed copy of a user: uniqueness, indexes, version.
    fn commit_user(
        &mut self,
        new: User,
        if_match: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Rendered> {
        let id = new.id.clone();
        let (old, meta) = self
            .users
            .items
            .get(&id)
            .ok_or_else(|| ScimError::not_found("User", &id))?;
        check_if_match(if_match, meta)?;
        if *old != new {
            self.check_user_name(&new)?;
            let old = old.clone();
            let meta = bump(meta, now);
            self.index_user(&new, Some(&old));
            if let Some(slot) = self.users.items.get_mut(&id) {
                *slot = (new, meta);
            }
        }
        self.user_rendered(&id)
    }

    pub fn replace_user(
        &mut self,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Rendered> {
        if !self.users.items.contains_key(id) {
            return Err(ScimError::not_found("User", id));
        }
        let user = User::from_json(id.to_owned(), body)?;
        self.commit_user(user, if_match, now)
    }

    pub fn patch_user(
        &mut self,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Rendered> {
        let mut user = self
            .users
            .items
            .get(id)
            .map(|(u, _)| u.clone())
            .ok_or_else(|| ScimError::not_found("User", id))?;
        for (op, path, value) in parse_ops(body)? {
            match path {
                Some(path) => patch_user_attr(&mut user, op, &path, value.as_ref())?,
                None => {
                    for (path, v) in pathless(value.as_ref().unwrap_or(&Value::Null))? {
                        if USER_ATTRS.contains(&path.attr.as_str()) {
                            patch_user_attr(&mut user, op, &path, Some(&v))?;
                        }
                    }
                }
            }
        }
        self.commit_user(user, if_match, now)
    }

    pub fn delete_user(
        &mut self,
        id: &str,
        if_match: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let meta = self
            .users
            .items
            .get(id)
            .map(|(_, m)| m)
            .ok_or_else(|| ScimError::not_found("User", id))?;
        check_if_match(if_match, meta)?;
        if let Some((user, _)) = self.users.remove(id) {
            self.unindex_user(&user);
        }
        // Referential integrity: a deleted user leaves every group it was in.
        for group_id in self.memberships.remove(id).unwrap_or_default() {
            if let Some((group, meta)) = self.groups.items.get_mut(&group_id) {
                group.members.remove(id);
                *meta = bump(meta, now);
            }
        }
        Ok(())
    }

    // ---- Groups ----

    pub fn get_group(&self, id: &str, with_members: bool) -> Result<Rendered> {
        self.group_rendered(id, with_members)
    }

    /// `old_name`: the group's name before this write (`None`: a new group). A
    /// name is checked when it is given or changed, so groups a seed gave one
    /// name can still be written to.
    fn check_group(
        &self,
        group: &Group,
        old_name: Option<&str>,
        members: &BTreeSet<String>,
    ) -> Result<()> {
        if old_name.is_none_or(|old| !old.eq_ignore_ascii_case(&group.display_name)) {
            name_free(&self.group_names, &group.display_name, &group.id)?;
        }
        // Referential integrity, as a real workspace keeps it: members must be
        // existing Users (groups do not nest in Taskade).
        for m in members {
            if !self.users.items.contains_key(m) {
                return Err(ScimError::bad(
                    "invalidValue",
                    format!("member {m:?} is not an existing User"),
                ));
            }
        }
        Ok(())
    }

    pub fn create_group(&mut self, body: &Value, now: DateTime<Utc>) -> Result<Rendered> {
        let id = self.fresh_id();
        let (mut group, members) = Group::from_json(id.clone(), body)?;
        group.members = members.into_iter().collect();
        self.check_group(&group, None, &group.members)?;
        self.index_group(&group, None);
        self.groups.insert(
            id.clone(),
            group,
            Meta {
                version: 1,
                created: now,
                modified: now,
            },
        );
        self.group_rendered(&id, true)
    }

    fn commit_group(
        &mut self,
        new: Group,
        if_match: Option<&str>,
        now: DateTime<Utc>,
        with_members: bool,
    ) -> Result<Rendered> {
        let id = new.id.clone();
        let (old, meta) = self
            .groups
            .items
            .get(&id)
            .ok_or_else(|| ScimError::not_found("Group", &id))?;
        check_if_match(if_match, meta)?;
        if *old != new {
            let added: BTreeSet<String> = new.members.difference(&old.members).cloned().collect();
            self.check_group(&new, Some(&old.display_name), &added)?;
            let old = old.clone();
            let meta = bump(meta, now);
            self.index_group(&new, Some(&old));
            if let Some(slot) = self.groups.items.get_mut(&id) {
                *slot = (new, meta);
            }
        }
        self.group_rendered(&id, with_members)
    }

    pub fn replace_group(
        &mut self,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Rendered> {
        if !self.groups.items.contains_key(id) {
            return Err(ScimError::not_found("Group", id));
        }
        let (mut group, members) = Group::from_json(id.to_owned(), body)?;
        group.members = members.into_iter().collect();
        self.commit_group(group, if_match, now, true)
    }

    /// Patches a group in place (see [`GroupEdit`]): O(changed members), not
    /// O(members), apart from rendering the answer.
    pub fn patch_group(
        &mut self,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
        now: DateTime<Utc>,
        with_members: bool,
    ) -> Result<Rendered> {
        let ops = parse_ops(body)?;
        let Store {
            groups,
            users,
            group_names,
            memberships,
            ..
        } = self;
        let (group, meta) = groups
            .items
            .get_mut(id)
            .ok_or_else(|| ScimError::not_found("Group", id))?;
        check_if_match(if_match, meta)?;
        let mut edit = GroupEdit {
            display_name: group.display_name.clone(),
            external_id: group.external_id.clone(),
            members: &mut group.members,
            journal: Vec::new(),
            users: &users.items,
        };
        let outcome = apply_group_ops(&mut edit, ops).and_then(|()| {
            if edit.display_name.eq_ignore_ascii_case(&group.display_name) {
                Ok(())
            } else {
                name_free(group_names, &edit.display_name, id)
            }
        });
        if let Err(e) = outcome {
            edit.undo();
            return Err(e);
        }
        let GroupEdit {
            display_name,
            external_id,
            journal,
            ..
        } = edit;
        let renamed = display_name != group.display_name;
        if renamed || external_id != group.external_id || !journal.is_empty() {
            if renamed {
                unname(group_names, &group.display_name, id);
                name(group_names, &display_name, id);
            }
            group.display_name = display_name;
            group.external_id = external_id;
            // Replaying the journal in order leaves the index as the members are.
            for change in journal {
                match change {
                    Change::Added(m) => {
                        memberships.entry(m).or_default().insert(id.to_owned());
                    }
                    Change::Removed(m) => unlink(memberships, &m, id),
                    Change::Replaced(old) => {
                        for m in old {
                            unlink(memberships, &m, id);
                        }
                    }
                }
            }
            *meta = bump(meta, now);
        }
        self.group_rendered(id, with_members)
    }

    pub fn delete_group(
        &mut self,
        id: &str,
        if_match: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let meta = self
            .groups
            .items
            .get(id)
            .map(|(_, m)| m)
            .ok_or_else(|| ScimError::not_found("Group", id))?;
        check_if_match(if_match, meta)?;
        if let Some((group, _)) = self.groups.remove(id) {
            unname(&mut self.group_names, &group.display_name, id);
            for m in &group.members {
                if let Some(set) = self.memberships.get_mut(m) {
                    set.remove(id);
                    if set.is_empty() {
                        self.memberships.remove(m);
                    }
                }
            }
        }
        // A group a seed nested in others leaves them, as a deleted user does.
        for outer in self.memberships.remove(id).unwrap_or_default() {
            if let Some((group, meta)) = self.groups.items.get_mut(&outer) {
                group.members.remove(id);
                *meta = bump(meta, now);
            }
        }
        Ok(())
    }

    // ---- Listing ----

    /// The ids a filter can select, from the indexes when each of its
    /// conjunctions has a comparison with one; `None` when the whole table must be
    /// scanned.
    fn user_candidates(&self, filter: &Filter) -> Option<Vec<String>> {
        candidates(filter, |c| {
            let Literal::Str(v) = &c.value else {
                return None;
            };
            match c.attr.as_str() {
                "id" => Some(vec![v.clone()]),
                "username" => Some(
                    self.user_names
                        .get(&v.to_lowercase())
                        .cloned()
                        .into_iter()
                        .collect(),
                ),
                "externalid" => Some(
                    self.external_ids
                        .get(v)
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default(),
                ),
                _ => None,
            }
        })
    }

    fn group_candidates(&self, filter: &Filter) -> Option<Vec<String>> {
        candidates(filter, |c| {
            let Literal::Str(v) = &c.value else {
                return None;
            };
            match c.attr.as_str() {
                "id" => Some(vec![v.clone()]),
                "displayname" => Some(
                    self.group_names
                        .get(&v.to_lowercase())
                        .map(|ids| ids.iter().cloned().collect())
                        .unwrap_or_default(),
                ),
                "members" | "members.value" => Some(
                    self.memberships
                        .get(v)
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default(),
                ),
                _ => None,
            }
        })
    }

    /// Whether list filters may say `or`. Off, the sandbox answers such a filter
    /// `400 invalidFilter`, as eq-only providers (AWS IAM Identity Center) do.
    pub fn set_or_filters(&mut self, allowed: bool) {
        self.or_filters = allowed;
    }

    /// Whether groups are served as AWS IAM Identity Center serves them: every
    /// listing, read and PATCH answer shows `"members": []`, members are found
    /// only by the `members` filters (`members.value eq "<user>"`, `id eq "<g>"
    /// and members eq "<user>"`), and such a filter naming a User that does not
    /// exist is 404, as AWS documents for ListGroups.
    pub fn set_members_hidden(&mut self, hidden: bool) {
        self.members_hidden = hidden;
    }

    /// Serves at most `cap` of a group's members, in listings and reads alike,
    /// with no marker (`None`: all): a provider that caps a multi-valued
    /// attribute, as RFC 7644 pages resources and not an attribute's values.
    /// Users' own `groups` still name every group they are in.
    pub fn set_members_cap(&mut self, cap: Option<usize>) {
        self.members_cap = cap;
    }

    /// Makes `user`'s `groups` name each of `groups` (ids; one that does not
    /// exist is left out, as ever) as a direct membership, whatever the groups'
    /// members say: a provider that leaves a User's `groups` stale (it keeps
    /// naming a group the User was taken out of).
    pub fn name_stale_groups(&mut self, user: &str, groups: &[&str]) {
        self.stale_groups
            .entry(user.to_owned())
            .or_default()
            .extend(groups.iter().map(|&g| g.to_owned()));
    }

    /// How many list filters were refused for their `or`.
    pub fn or_refused(&self) -> u64 {
        self.or_refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Refuses a filter with `or` when the sandbox plays an eq-only provider.
    fn parse_list_filter(&self, f: &str) -> Result<Filter> {
        let filter = parse(f)?;
        if filter.len() > 1 && !self.or_filters {
            self.or_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ScimError::bad(
                "invalidFilter",
                format!("{f:?}: \"or\" is not supported"),
            ));
        }
        Ok(filter)
    }

    pub fn list_users(&self, q: &ListQuery) -> Result<ListPage> {
        let page = match &q.filter {
            None => page_of(self.users.order(), q),
            Some(f) => {
                let filter = self.parse_list_filter(f)?;
                let candidates = self.user_candidates(&filter);
                page_of(&self.users.matching(&filter, candidates)?, q)
            }
        };
        let users = page.ids.iter().filter_map(|id| self.users.items.get(id));
        let list = if q.excluded.is_empty() {
            ListPage::written(page.total, q.start_index, users, |(user, meta)| UserView {
                base: &self.base,
                user,
                meta,
                groups: self.groups_of(&user.id),
            })
        } else {
            ListPage::written(page.total, q.start_index, users, |(u, m)| {
                excluded(self.render_user(u, m), &q.excluded)
            })
        };
        list.map(|list| list.paged_by(q, page.more_after))
    }

    /// AWS IAM Identity Center answers a ListGroups filter on a member that does
    /// not exist with 404 ResourceNotFound, not with an empty list.
    fn refuse_unknown_members(&self, filter: &Filter) -> Result<()> {
        for comparison in filter.iter().flatten() {
            if let ("members" | "members.value", Literal::Str(member)) =
                (comparison.attr.as_str(), &comparison.value)
                && !self.users.items.contains_key(member)
            {
                return Err(ScimError::new(
                    404,
                    None,
                    format!("member {member} not found"),
                ));
            }
        }
        Ok(())
    }

    pub fn list_groups(&self, q: &ListQuery) -> Result<ListPage> {
        let with_members = !q.excluded.iter().any(|e| e.eq_ignore_ascii_case("members"));
        let page = match &q.filter {
            None => page_of(self.groups.order(), q),
            Some(f) => {
                let filter = self.parse_list_filter(f)?;
                if self.members_hidden {
                    self.refuse_unknown_members(&filter)?;
                }
                let candidates = self.group_candidates(&filter);
                page_of(&self.groups.matching(&filter, candidates)?, q)
            }
        };
        let groups = page.ids.iter().filter_map(|id| self.groups.items.get(id));
        let list = if q.excluded.is_empty() {
            ListPage::written(page.total, q.start_index, groups, |(group, meta)| {
                GroupView {
                    store: self,
                    group,
                    meta,
                    with_members: true,
                }
            })
        } else {
            ListPage::written(page.total, q.start_index, groups, |(g, m)| {
                excluded(self.render_group(g, m, with_members), &q.excluded)
            })
        };
        list.map(|list| list.paged_by(q, page.more_after))
    }
}

/// Group `id` is named `display_name` in the name index.
fn name(names: &mut HashMap<String, BTreeSet<String>>, display_name: &str, id: &str) {
    names
        .entry(display_name.to_lowercase())
        .or_default()
        .insert(id.to_owned());
}

/// Group `id` is no longer named `display_name`.
fn unname(names: &mut HashMap<String, BTreeSet<String>>, display_name: &str, id: &str) {
    unlink(names, &display_name.to_lowercase(), id);
}

/// 409 `uniqueness` when a group other than `id` is named `display_name`.
fn name_free(
    names: &HashMap<String, BTreeSet<String>>,
    display_name: &str,
    id: &str,
) -> Result<()> {
    let taken = names
        .get(&display_name.to_lowercase())
        .is_some_and(|ids| ids.iter().any(|other| other != id));
    if taken {
        return Err(ScimError::new(
            409,
            Some("uniqueness"),
            format!("a group named {display_name:?} already exists"),
        ));
    }
    Ok(())
}

fn unlink(memberships: &mut HashMap<String, BTreeSet<String>>, member: &str, group: &str) {
    if let Some(set) = memberships.get_mut(member) {
        set.remove(group);
        if set.is_empty() {
            memberships.remove(member);
        }
    }
}

/// One membership change of a PATCH, in order.
enum Change {
    Added(String),
    Removed(String),
    /// The whole set was replaced or cleared; this is what it held.
    Replaced(BTreeSet<String>),
}

/// A group being patched in place. Groups may hold 100k members while a PATCH
/// adds 100, so instead of copying the member set, changes are journaled: a failed
/// PATCH is undone from the journal (PATCH stays atomic) and a successful one
/// updates the membership index from it.
struct GroupEdit<'a> {
    display_name: String,
    external_id: Option<String>,
    members: &'a mut BTreeSet<String>,
    journal: Vec<Change>,
    users: &'a BTreeMap<String, (User, Meta)>,
}

impl GroupEdit<'_> {
    /// Referential integrity, as a real workspace keeps it: members must be
    /// existing Users (groups do not nest in Taskade).
    fn check_member(&self, m: &str) -> Result<()> {
        if self.users.contains_key(m) {
            Ok(())
        } else {
            Err(ScimError::bad(
                "invalidValue",
                format!("member {m:?} is not an existing User"),
            ))
        }
    }

    fn add(&mut self, m: String) {
        if self.members.insert(m.clone()) {
            self.journal.push(Change::Added(m));
        }
    }

    fn remove(&mut self, m: &str) {
        if self.members.remove(m) {
            self.journal.push(Change::Removed(m.to_owned()));
        }
    }

    fn clear(&mut self) {
        let old = std::mem::take(self.members);
        self.journal.push(Change::Replaced(old));
    }

    fn undo(&mut self) {
        while let Some(change) = self.journal.pop() {
            match change {
                Change::Added(m) => {
                    self.members.remove(&m);
                }
                Change::Removed(m) => {
                    self.members.insert(m);
                }
                Change::Replaced(old) => *self.members = old,
            }
        }
    }
}

fn apply_group_ops(edit: &mut GroupEdit<'_>, ops: Vec<Operation>) -> Result<()> {
    for (op, path, value) in ops {
        match path {
            Some(path) => patch_group_attr(edit, op, &path, value.as_ref())?,
            None => {
                for (path, v) in pathless(value.as_ref().unwrap_or(&Value::Null))? {
                    if GROUP_ATTRS.contains(&path.attr.as_str()) {
                        patch_group_attr(edit, op, &path, Some(&v))?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn patch_group_attr(
    edit: &mut GroupEdit<'_>,
    op: Op,
    path: &Path,
    value: Option<&Value>,
) -> Result<()> {
    writable(path)?;
    match path.attr.as_str() {
        "displayname" => {
            no_filter(path)?;
            if op == Op::Remove {
                return Err(ScimError::bad("invalidValue", "displayName is required"));
            }
            edit.display_name = required_string(value, "displayName")?;
        }
        "externalid" => {
            no_filter(path)?;
            set_opt(&mut edit.external_id, op, value, "externalId")?;
        }
        "members" => {
            if path.sub.is_some() {
                return Err(ScimError::bad(
                    "invalidPath",
                    "members sub-attributes are read-only",
                ));
            }
            match (&path.filter, op) {
                (None, Op::Add) => {
                    for m in member_ids(value)? {
                        edit.check_member(&m)?;
                        edit.add(m);
                    }
                }
                (None, Op::Replace) => {
                    let new = member_ids(value)?;
                    for m in &new {
                        edit.check_member(m)?;
                    }
                    edit.clear();
                    for m in new {
                        edit.add(m);
                    }
                }
                // Entra removes specific members with `path: "members", value: [...]`.
                (None, Op::Remove) => match value {
                    Some(v) if !v.is_null() => {
                        for m in member_ids(Some(v))? {
                            edit.remove(&m);
                        }
                    }
                    _ => edit.clear(),
                },
                (Some(filter), Op::Remove) => {
                    let mut target = None;
                    for c in filter {
                        match (c.attr.as_str(), &c.value) {
                            ("value", Literal::Str(v)) => target = Some(v.clone()),
                            (other, _) => {
                                return Err(ScimError::bad(
                                    "invalidFilter",
                                    format!("members can be selected by value only, not {other:?}"),
                                ));
                            }
                        }
                    }
                    // Removing a member that is not there is a no-op: retries of a
                    // removal must succeed.
                    if let Some(t) = target {
                        edit.remove(&t);
                    }
                }
                (Some(_), _) => {
                    return Err(ScimError::bad(
                        "invalidPath",
                        "a members value filter is only supported with remove",
                    ));
                }
            }
        }
        other => {
            return Err(ScimError::bad(
                "invalidPath",
                format!("Group attribute {other:?} is not supported"),
            ));
        }
    }
    Ok(())
}

/// The union of what `indexed` finds for each conjunction (from the first of its
/// comparisons it has an index for); `None` when a conjunction has none.
fn candidates(
    filter: &Filter,
    indexed: impl Fn(&Comparison) -> Option<Vec<String>>,
) -> Option<Vec<String>> {
    let mut all = Vec::new();
    for conjunction in filter {
        all.extend(conjunction.iter().find_map(&indexed)?);
    }
    Some(all)
}

fn parse(f: &str) -> Result<Filter> {
    filter::parse_filter(f).map_err(|e| ScimError::bad("invalidFilter", format!("{f:?}: {e}")))
}

struct Page {
    total: usize,
    ids: Vec<String>,
    /// Paged by cursor with more to come: the page's last id.
    more_after: Option<String>,
}

/// `startIndex` is 1-based; `count` 0 gives an empty page with the true total.
/// By cursor, the page starts after the cursor's id: `ids` are in id order, so a
/// resource created or deleted meanwhile shifts no other one into or out of reach.
fn page_of(ids: &[String], q: &ListQuery) -> Page {
    let start = if q.by_cursor {
        q.after
            .as_deref()
            .map_or(0, |after| ids.partition_point(|id| id.as_str() <= after))
    } else {
        q.start_index.max(1) - 1
    };
    let page: Vec<String> = ids
        .get(start..)
        .unwrap_or_default()
        .iter()
        .take(q.count)
        .cloned()
        .collect();
    let more_after = (q.by_cursor && start + page.len() < ids.len())
        .then(|| page.last().cloned())
        .flatten();
    Page {
        total: ids.len(),
        ids: page,
        more_after,
    }
}

/// One page of a listing, its resources already serialised: a page of 1,000 users
/// built as `Value` trees, serialised and dropped cost the sandbox (and so every
/// benchmark that shares its process) more CPU than the client spent reading it.
#[derive(Debug)]
pub(crate) struct ListPage {
    pub total: usize,
    start_index: usize,
    pub items: usize,
    /// The resources' JSON, comma-separated.
    resources: Vec<u8>,
    by_cursor: bool,
    /// Paged by cursor with more to come: the id the next page starts after.
    pub more_after: Option<String>,
    /// Written as `nextCursor`.
    pub next_cursor: Option<String>,
}

impl ListPage {
    fn written<I, T, V, R>(total: usize, start_index: usize, items: I, render: R) -> Result<Self>
    where
        I: Iterator<Item = T>,
        V: serde::Serialize,
        R: Fn(T) -> V,
    {
        let mut page = ListPage {
            total,
            start_index: start_index.max(1),
            items: 0,
            resources: Vec::new(),
            by_cursor: false,
            more_after: None,
            next_cursor: None,
        };
        for item in items {
            if page.items > 0 {
                page.resources.push(b',');
            }
            serde_json::to_writer(&mut page.resources, &render(item)).map_err(unrenderable)?;
            page.items += 1;
        }
        Ok(page)
    }

    fn paged_by(mut self, q: &ListQuery, more_after: Option<String>) -> Self {
        self.by_cursor = q.by_cursor;
        self.more_after = more_after;
        self
    }

    /// Drops the resources (a page past what the workspace admits to).
    pub fn clear(&mut self) {
        self.items = 0;
        self.resources.clear();
    }

    /// The ListResponse, keys in the order `serde_json` gives a `Value`.
    pub fn into_json(self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.resources.len() + 160);
        body.extend_from_slice(b"{\"Resources\":[");
        body.extend_from_slice(&self.resources);
        if self.by_cursor {
            // A cursor is opaque, made of RFC 3986 unreserved characters: no escaping.
            let next = self
                .next_cursor
                .map(|c| format!(",\"nextCursor\":\"{c}\""))
                .unwrap_or_default();
            body.extend_from_slice(
                format!(
                    "],\"itemsPerPage\":{}{next},\"schemas\":[\"{SCHEMA_LIST}\"],\"totalResults\":{}}}",
                    self.items, self.total
                )
                .as_bytes(),
            );
            return body;
        }
        body.extend_from_slice(
            format!(
                "],\"itemsPerPage\":{},\"schemas\":[\"{SCHEMA_LIST}\"],\"startIndex\":{},\"totalResults\":{}}}",
                self.items, self.start_index, self.total
            )
            .as_bytes(),
        );
        body
    }
}

/// `meta.location` (and a member's `$ref`): where a resource lives. Displayed,
/// so the member list of a large group is written without a string per member.
struct Location<'a>(&'a str, &'static str, &'a str);

impl std::fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.0, self.1, self.2)
    }
}

impl serde::Serialize for Location<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn written(resource: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(resource).map_err(unrenderable)
}

fn unrenderable(e: serde_json::Error) -> ScimError {
    ScimError::new(500, None, format!("rendering a resource: {e}"))
}

/// `render_user` written straight out, without building a `Value`: the same keys
/// in the same (sorted) order.
struct UserView<'a> {
    base: &'a str,
    user: &'a User,
    meta: &'a Meta,
    groups: UserGroupsView<'a>,
}

impl serde::Serialize for UserView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let u = self.user;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("active", &u.active)?;
        if let Some(v) = &u.display_name {
            m.serialize_entry("displayName", v)?;
        }
        if !u.emails.is_empty() {
            m.serialize_entry("emails", &MultiView(&u.emails))?;
        }
        if let Some(v) = &u.external_id {
            m.serialize_entry("externalId", v)?;
        }
        if !self.groups.1.is_empty() {
            m.serialize_entry("groups", &self.groups)?;
        }
        m.serialize_entry("id", &u.id)?;
        m.serialize_entry(
            "meta",
            &MetaView {
                resource_type: "User",
                location: Location(self.base, "Users", &u.id),
                meta: self.meta,
            },
        )?;
        if u.given_name.is_some() || u.family_name.is_some() || u.formatted.is_some() {
            m.serialize_entry("name", &NameView(u))?;
        }
        if !u.roles.is_empty() {
            m.serialize_entry("roles", &MultiView(&u.roles))?;
        }
        m.serialize_entry("schemas", &[SCHEMA_USER])?;
        m.serialize_entry("userName", &u.user_name)?;
        m.end()
    }
}

/// A User's `groups` ([`Store::groups_of`]): the base URL, and each group's
/// id, displayName and whether the membership is direct.
struct UserGroupsView<'a>(&'a str, Vec<(&'a str, &'a str, bool)>);

impl serde::Serialize for UserGroupsView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.1.len()))?;
        for &(id, display, direct) in &self.1 {
            seq.serialize_element(&OneGroup(self.0, id, display, direct))?;
        }
        return seq.end();

        struct OneGroup<'a>(&'a str, &'a str, &'a str, bool);
        impl serde::Serialize for OneGroup<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("$ref", &Location(self.0, "Groups", self.1))?;
                m.serialize_entry("display", self.2)?;
                m.serialize_entry("type", if self.3 { "direct" } else { "indirect" })?;
                m.serialize_entry("value", self.1)?;
                m.end()
            }
        }
    }
}

/// `render_group` written straight out.
struct GroupView<'a> {
    /// For the base URL, which members are groups, and how members are served
    /// ([`Store::served_members`]).
    store: &'a Store,
    group: &'a Group,
    meta: &'a Meta,
    with_members: bool,
}

impl serde::Serialize for GroupView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let g = self.group;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("displayName", &g.display_name)?;
        if let Some(v) = &g.external_id {
            m.serialize_entry("externalId", v)?;
        }
        m.serialize_entry("id", &g.id)?;
        if self.with_members {
            m.serialize_entry(
                "members",
                &MembersView {
                    store: self.store,
                    group: g,
                },
            )?;
        }
        m.serialize_entry(
            "meta",
            &MetaView {
                resource_type: "Group",
                location: Location(&self.store.base, "Groups", &g.id),
                meta: self.meta,
            },
        )?;
        m.serialize_entry("schemas", &[SCHEMA_GROUP])?;
        m.end()
    }
}

struct MetaView<'a> {
    resource_type: &'static str,
    location: Location<'a>,
    meta: &'a Meta,
}

impl serde::Serialize for MetaView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("created", &timestamp(&self.meta.created))?;
        m.serialize_entry("lastModified", &timestamp(&self.meta.modified))?;
        m.serialize_entry("location", &self.location)?;
        m.serialize_entry("resourceType", self.resource_type)?;
        m.serialize_entry("version", &etag(self.meta.version))?;
        m.end()
    }
}

struct NameView<'a>(&'a User);

impl serde::Serialize for NameView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (key, value) in [
            ("familyName", &self.0.family_name),
            ("formatted", &self.0.formatted),
            ("givenName", &self.0.given_name),
        ] {
            if let Some(v) = value {
                m.serialize_entry(key, v)?;
            }
        }
        m.end()
    }
}

struct MultiView<'a>(&'a [MultiValue]);

impl serde::Serialize for MultiView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&OneMulti(v))?;
        }
        return seq.end();

        struct OneMulti<'a>(&'a MultiValue);
        impl serde::Serialize for OneMulti<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                let v = self.0;
                let mut m = s.serialize_map(None)?;
                if let Some(d) = &v.display {
                    m.serialize_entry("display", d)?;
                }
                if v.primary {
                    m.serialize_entry("primary", &true)?;
                }
                if let Some(t) = &v.kind {
                    m.serialize_entry("type", t)?;
                }
                m.serialize_entry("value", &v.value)?;
                m.end()
            }
        }
    }
}

struct MembersView<'a> {
    store: &'a Store,
    group: &'a Group,
}

impl serde::Serialize for MembersView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let mut seq = s.serialize_seq(None)?;
        for member in self.store.served_members(self.group) {
            let collection = if self.store.groups.items.contains_key(member) {
                "Groups"
            } else {
                "Users"
            };
            seq.serialize_element(&OneMember(&self.store.base, collection, member))?;
        }
        return seq.end();

        struct OneMember<'a>(&'a str, &'static str, &'a str);
        impl serde::Serialize for OneMember<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("$ref", &Location(self.0, self.1, self.2))?;
                m.serialize_entry("type", if self.1 == "Groups" { "Group" } else { "User" })?;
                m.serialize_entry("value", self.2)?;
                m.end()
            }
        }
    }
}

/// A resource read by id without its `excludedAttributes` (see [`excluded`]).
/// Rendered again as a `Value` only when some are named: reads without them, the
/// ones the benchmarks make, keep the straight serialisation.
pub(crate) fn without_excluded(mut r: Rendered, excluded_attrs: &[String]) -> Result<Rendered> {
    // `members` is left out while rendering (`with_members`), not here.
    if excluded_attrs
        .iter()
        .all(|e| e.eq_ignore_ascii_case("members"))
    {
        return Ok(r);
    }
    let value: Value = serde_json::from_slice(&r.json).map_err(unrenderable)?;
    r.json = serde_json::to_vec(&excluded(value, excluded_attrs)).map_err(unrenderable)?;
    Ok(r)
}

/// Drops `excludedAttributes` (top-level, or `name.givenName`-style sub-attributes);
/// `id` and `schemas` are always returned.
fn excluded(mut v: Value, excluded: &[String]) -> Value {
    if let Some(o) = v.as_object_mut() {
        for e in excluded {
            let (top, sub) = match e.split_once('.') {
                Some((t, s)) => (t, Some(s)),
                None => (e.as_str(), None),
            };
            if top.eq_ignore_ascii_case("id") || top.eq_ignore_ascii_case("schemas") {
                continue;
            }
            let key = o.keys().find(|k| k.eq_ignore_ascii_case(top)).cloned();
            if let Some(key) = key {
                match sub {
                    None => {
                        o.remove(&key);
                    }
                    // `name.givenName`, or `emails.type` from every element.
                    Some(sub) => {
                        let drop_sub = |inner: &mut Map<String, Value>| {
                            let sk = inner.keys().find(|k| k.eq_ignore_ascii_case(sub)).cloned();
                            if let Some(sk) = sk {
                                inner.remove(&sk);
                            }
                        };
                        match o.get_mut(&key) {
                            Some(Value::Object(inner)) => drop_sub(inner),
                            Some(Value::Array(items)) => items
                                .iter_mut()
                                .filter_map(Value::as_object_mut)
                                .for_each(drop_sub),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    v
}

/// Parses a seed file's resources into a snapshot (ids kept; missing ids made up).
/// Only `users` and `groups` are read, and at least one must be there: a file of
/// another shape (a SCIM ListResponse, a directory export) would otherwise seed an
/// empty workspace, and a rehearsal against it would plan to create everyone.
/// What the workspace keeps unique (ids, and userNames case-insensitively) and
/// members that are no user of the seed are refused here, naming both records,
/// rather than by [`Store::new`] naming neither. Groups may share a name: folders
/// in a real workspace do, and seatwarden's plan calls such a match disputed.
pub(crate) fn seed_from_json(v: &Value) -> std::result::Result<WorkspaceSnapshot, String> {
    const KEYS: [&str; 2] = ["users", "groups"];
    let o = v.as_object().ok_or("the seed must be a JSON object")?;
    if let Some(key) = o.keys().find(|k| k.eq_ignore_ascii_case("Resources")) {
        return Err(format!(
            "{key:?} is a SCIM ListResponse, not a seed: put the Users it lists under \
             \"users\" and the Groups under \"groups\" (every page of each listing, or \
             the accounts left out are planned as missing)"
        ));
    }
    if let Some(key) = o
        .keys()
        .find(|k| !KEYS.iter().any(|known| k.eq_ignore_ascii_case(known)))
    {
        return Err(format!(
            "unknown top-level key {key:?}: a seed has only \"users\" (SCIM Users) and \
             \"groups\" (SCIM Groups)"
        ));
    }
    if o.is_empty() {
        return Err(
            "neither \"users\" nor \"groups\": a seed lists the workspace's SCIM \
            Users under \"users\" and its Groups under \"groups\" (`[]` for an empty one)"
                .to_owned(),
        );
    }
    let list = |key: &str| -> std::result::Result<Vec<Value>, String> {
        match attr(o, key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => Err(format!("{key} must be an array")),
        }
    };
    let mut snapshot = WorkspaceSnapshot::default();
    // What the workspace keeps unique, checked here so that a refusal names the
    // records (`users[7]`), not only the value the sandbox would refuse at start.
    let mut user_ids: HashMap<String, (usize, bool)> = HashMap::new();
    let mut user_names: HashMap<String, usize> = HashMap::new();
    for (i, u) in list("users")?.iter().enumerate() {
        let given = seed_id(u);
        let made_up = given.is_none();
        let id = given.unwrap_or_else(|| format!("seed-user-{}", i + 1));
        let user = User::from_json(id, u).map_err(|e| format!("users[{i}]: {}", e.detail))?;
        if let Some(earlier) = user_ids.insert(user.id.clone(), (i, made_up)) {
            return Err(duplicate_id("users", (i, made_up), earlier, &user.id));
        }
        if let Some(j) = user_names.insert(user.user_name.to_lowercase(), i) {
            return Err(format!(
                "users[{i}] (id {:?}) has userName {:?}, as users[{j}] (id {:?}) has: \
                 userNames are unique case-insensitively",
                user.id,
                user.user_name,
                snapshot.accounts.get(j).map_or("", |a| a.id.as_str()),
            ));
        }
        snapshot.accounts.push(user.to_account());
    }
    let mut group_ids: HashMap<String, (usize, bool)> = HashMap::new();
    for (i, g) in list("groups")?.iter().enumerate() {
        let given = seed_id(g);
        let made_up = given.is_none();
        let id = given.unwrap_or_else(|| format!("seed-group-{}", i + 1));
        let (group, members) =
            Group::from_json(id, g).map_err(|e| format!("groups[{i}]: {}", e.detail))?;
        if let Some(earlier) = group_ids.insert(group.id.clone(), (i, made_up)) {
            return Err(duplicate_id("groups", (i, made_up), earlier, &group.id));
        }
        if let Some(m) = members.iter().find(|m| !user_ids.contains_key(*m)) {
            return Err(format!(
                "groups[{i}] ({:?}) has member {m:?}, which is the id of no user in \
                 \"users\": a member's value is the id of a User of the same seed",
                group.display_name
            ));
        }
        snapshot.groups.push(WorkspaceGroup {
            id: group.id,
            display_name: group.display_name,
            members,
        });
    }
    Ok(snapshot)
}

/// Two records of a seed's `users` (or `groups`) with one id: `i` has it, or had
/// it made up (`seed-user-N`) because it has none; so did `j`, the earlier one.
fn duplicate_id(
    list: &str,
    (i, made_up): (usize, bool),
    (j, earlier_made_up): (usize, bool),
    id: &str,
) -> String {
    match (made_up, earlier_made_up) {
        (true, _) => format!(
            "{list}[{i}] has no id, and the one made up for it, {id:?}, is {list}[{j}]'s: \
             give {list}[{i}] an id"
        ),
        (false, true) => format!(
            "{list}[{i}] has id {id:?}, the id made up for {list}[{j}], which has none: \
             give {list}[{j}] an id"
        ),
        (false, false) => format!("{list}[{i}] has id {id:?}, as {list}[{j}] has: ids are unique"),
    }
}

/// A seed resource's `id`, a string or (as some exports write it) a number.
fn seed_id(resource: &Value) -> Option<String> {
    match resource.as_object().and_then(|o| attr(o, "id"))? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn store() -> Store {
        let account = Account {
            id: "u1".into(),
            user_name: "ada@example.com".into(),
            external_id: Some("p1".into()),
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            active: true,
            roles: vec!["Viewer".into(), "Editor".into()],
        };
        let snapshot = WorkspaceSnapshot {
            accounts: vec![account],
            groups: Vec::new(),
        };
        Store::new("http://h/scim/v2", snapshot, Utc::now()).unwrap()
    }

    fn patch(store: &mut Store, ops: Value) -> Result<Value> {
        let body = json!({"schemas": [SCHEMA_PATCH], "Operations": ops});
        store
            .patch_user("u1", &body, None, Utc::now())
            .map(|r| r.body())
    }

    #[test]
    fn entra_style_email_paths_create_the_element_they_name() {
        let mut s = store();
        let v = patch(
            &mut s,
            json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "a@w"}]),
        )
        .unwrap();
        assert_eq!(v["emails"], json!([{"value": "a@w", "type": "work"}]));
        let v = patch(
            &mut s,
            json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "b@w"}]),
        )
        .unwrap();
        assert_eq!(v["emails"], json!([{"value": "b@w", "type": "work"}]));
        assert_eq!(s.snapshot().accounts[0].email.as_deref(), Some("b@w"));
    }

    #[test]
    fn remove_with_a_value_removes_only_those_values() {
        let mut s = store();
        let v = patch(
            &mut s,
            json!([{"op": "remove", "path": "roles", "value": [{"value": "Viewer"}]}]),
        )
        .unwrap();
        assert_eq!(v["roles"], json!([{"value": "Editor"}]));
        let v = patch(&mut s, json!([{"op": "remove", "path": "roles"}])).unwrap();
        assert!(v.get("roles").is_none());
    }

    #[test]
    fn only_one_primary_survives() {
        let mut s = store();
        let v = patch(
            &mut s,
            json!([{"op": "replace", "path": "roles", "value": [
                {"value": "Viewer", "primary": true}, {"value": "Owner", "primary": "True"}]}]),
        )
        .unwrap();
        assert_eq!(
            v["roles"],
            json!([{"value": "Viewer"}, {"value": "Owner", "primary": true}])
        );
    }

    #[test]
    fn external_id_index_follows_changes() {
        let mut s = store();
        patch(
            &mut s,
            json!([{"op": "replace", "value": {"externalId": "p2", "schemas": [], "nickName": "x"}}]),
        )
        .unwrap();
        let q = |f: &str| ListQuery {
            start_index: 1,
            count: 10,
            filter: Some(f.to_owned()),
            ..ListQuery::default()
        };
        assert_eq!(s.list_users(&q(r#"externalId eq "p1""#)).unwrap().total, 0);
        assert_eq!(s.list_users(&q(r#"externalId eq "p2""#)).unwrap().total, 1);
    }

    #[test]
    fn a_failed_group_patch_is_undone_and_leaves_the_index_alone() {
        let mut s = store();
        let body = |ops: Value| json!({"schemas": [SCHEMA_PATCH], "Operations": ops});
        let g = s
            .create_group(
                &json!({"displayName": "G", "members": [{"value": "u1"}]}),
                Utc::now(),
            )
            .unwrap();
        let gid = g.body()["id"].as_str().unwrap().to_owned();
        let err = s
            .patch_group(
                &gid,
                &body(json!([
                    {"op": "replace", "path": "members", "value": []},
                    {"op": "replace", "path": "displayName", "value": "H"},
                    {"op": "add", "path": "members", "value": [{"value": "ghost"}]}
                ])),
                None,
                Utc::now(),
                true,
            )
            .err()
            .unwrap();
        assert_eq!(err.scim_type, Some("invalidValue"));
        let snapshot = s.snapshot();
        assert_eq!(snapshot.groups[0].members, vec!["u1"]);
        assert_eq!(snapshot.groups[0].display_name, "G");
        assert_eq!(s.memberships["u1"].len(), 1);
        let ok = s
            .patch_group(
                &gid,
                &body(json!([{"op": "remove", "path": "members"}])),
                None,
                Utc::now(),
                true,
            )
            .unwrap();
        assert_eq!(ok.etag, "W/\"2\"");
        assert!(!s.memberships.contains_key("u1"));
    }

    #[test]
    fn errors_render_as_scim_bodies() {
        let e = ScimError::new(409, Some("uniqueness"), "taken");
        assert_eq!(
            e.body(),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                   "status": "409", "scimType": "uniqueness", "detail": "taken"})
        );
    }

    fn account(id: &str) -> Account {
        Account {
            id: id.into(),
            user_name: format!("{id}@example.com"),
            external_id: None,
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            active: true,
            roles: Vec::new(),
        }
    }

    /// A User's `groups` (RFC 7643 §4.1.2) names every group holding it,
    /// directly or through a group a seed nested, kept as members change and
    /// groups go; a nested group is served as a `Group` member. Under
    /// `members_cap` a group shows its first N members while the Users still
    /// name it; hidden members hide `groups` too. Written straight out, as
    /// the `Value` rendering gives it.
    #[test]
    fn users_name_their_groups_direct_and_through_nesting() {
        let group = |id: &str, name: &str, members: &[&str]| WorkspaceGroup {
            id: id.into(),
            display_name: name.into(),
            members: members.iter().map(|&m| m.to_owned()).collect(),
        };
        let seed = WorkspaceSnapshot {
            accounts: vec![account("u1"), account("u2"), account("u3")],
            groups: vec![
                group("g-all", "Everyone", &["u1", "g-eng"]),
                group("g-eng", "Engineering", &["u2", "u3"]),
            ],
        };
        let mut s = Store::new("http://h/scim/v2", seed, Utc::now()).unwrap();
        let groups_of = |s: &Store, id: &str| s.get_user(id).unwrap().body()["groups"].clone();
        assert_eq!(
            groups_of(&s, "u2"),
            json!([
                {"$ref": "http://h/scim/v2/Groups/g-all", "display": "Everyone",
                 "type": "indirect", "value": "g-all"},
                {"$ref": "http://h/scim/v2/Groups/g-eng", "display": "Engineering",
                 "type": "direct", "value": "g-eng"},
            ])
        );
        assert_eq!(
            groups_of(&s, "u1"),
            json!([{"$ref": "http://h/scim/v2/Groups/g-all", "display": "Everyone",
                    "type": "direct", "value": "g-all"}])
        );
        let all = s.get_group("g-all", true).unwrap().body();
        assert_eq!(
            all["members"],
            json!([
                {"$ref": "http://h/scim/v2/Groups/g-eng", "type": "Group", "value": "g-eng"},
                {"$ref": "http://h/scim/v2/Users/u1", "type": "User", "value": "u1"},
            ])
        );
        let (u, m) = &s.users.items["u2"];
        assert_eq!(
            s.get_user("u2").unwrap().json,
            serde_json::to_vec(&s.render_user(u, m)).unwrap()
        );
        let (g, m) = &s.groups.items["g-all"];
        assert_eq!(
            s.get_group("g-all", true).unwrap().json,
            serde_json::to_vec(&s.render_group(g, m, true)).unwrap()
        );

        // Members change: u3 leaves Engineering, and names no group.
        let remove = json!({"schemas": [SCHEMA_PATCH], "Operations": [
            {"op": "remove", "path": "members[value eq \"u3\"]"}]});
        s.patch_group("g-eng", &remove, None, Utc::now(), true)
            .unwrap();
        assert_eq!(groups_of(&s, "u3"), Value::Null);
        // Writes add Users only: groups do not nest in Taskade.
        let nest = json!({"schemas": [SCHEMA_PATCH], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": "g-all"}]}]});
        assert!(
            s.patch_group("g-eng", &nest, None, Utc::now(), true)
                .is_err()
        );

        // Capped at one member: Everyone shows g-eng only; u1 still names it.
        s.set_members_cap(Some(1));
        let capped = s.get_group("g-all", true).unwrap().body();
        assert_eq!(capped["members"].as_array().unwrap().len(), 1);
        let listed = s
            .list_groups(&ListQuery {
                start_index: 1,
                count: 10,
                ..ListQuery::default()
            })
            .unwrap()
            .into_json();
        let listed: Value = serde_json::from_slice(&listed).unwrap();
        assert!(
            listed["Resources"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["members"].as_array().unwrap().len() <= 1),
            "{listed}"
        );
        assert_eq!(groups_of(&s, "u1")[0]["value"], "g-all");
        s.set_members_cap(None);

        // Engineering deleted: it leaves Everyone, and u2 names no group.
        s.delete_group("g-eng", None, Utc::now()).unwrap();
        assert_eq!(
            s.get_group("g-all", true).unwrap().body()["members"],
            json!([{"$ref": "http://h/scim/v2/Users/u1", "type": "User", "value": "u1"}])
        );
        assert_eq!(groups_of(&s, "u2"), Value::Null);

        // Hidden members: no groups either (AWS IAM Identity Center sends none).
        s.set_members_hidden(true);
        assert_eq!(groups_of(&s, "u1"), Value::Null);
    }

    /// A stale `groups` names a group that does not hold the User (one that
    /// does not exist is left out), in reads and listings alike, while the
    /// group's members stay as they are.
    #[test]
    fn stale_groups_name_a_group_that_does_not_hold_the_user() {
        let seed = WorkspaceSnapshot {
            accounts: vec![account("u1"), account("u2")],
            groups: vec![WorkspaceGroup {
                id: "g-eng".into(),
                display_name: "Engineering".into(),
                members: vec!["u1".into()],
            }],
        };
        let mut s = Store::new("http://h/scim/v2", seed, Utc::now()).unwrap();
        s.name_stale_groups("u2", &["g-eng", "g-gone"]);
        let engineering = json!([{"$ref": "http://h/scim/v2/Groups/g-eng",
            "display": "Engineering", "type": "direct", "value": "g-eng"}]);
        assert_eq!(s.get_user("u2").unwrap().body()["groups"], engineering);
        let listed = s
            .list_users(&ListQuery {
                start_index: 1,
                count: 10,
                ..ListQuery::default()
            })
            .unwrap()
            .into_json();
        let listed: Value = serde_json::from_slice(&listed).unwrap();
        assert_eq!(listed["Resources"][1]["groups"], engineering, "{listed}");
        assert_eq!(
            s.get_group("g-eng", true).unwrap().body()["members"],
            json!([{"$ref": "http://h/scim/v2/Users/u1", "type": "User", "value": "u1"}])
        );
    }

    #[test]
    fn resources_are_written_byte_for_byte_as_their_value_rendering() {
        let mut s =
            Store::new("http://h/scim/v2", WorkspaceSnapshot::default(), Utc::now()).unwrap();
        let now = Utc::now();
        let full = s
            .create_user(
                &json!({"userName": "Zoë \"Q\" <z@x>", "externalId": "p\\9", "displayName": "Zoë",
                    "active": false,
                    "name": {"givenName": "Zoë", "familyName": "Quux", "formatted": "Zoë Quux"},
                    "emails": [{"value": "z@x", "type": "work", "primary": true, "display": "Z"},
                               {"value": "z@home"}],
                    "roles": [{"value": "Editor", "display": "Ed"}, {"value": "Viewer", "type": "t"}]}),
                now,
            )
            .unwrap();
        let full_id = full.body()["id"].as_str().unwrap().to_owned();
        s.create_user(&json!({"userName": "min@x"}), now).unwrap();
        s.create_user(
            &json!({"userName": "half@x", "name": {"familyName": "Half"}}),
            now,
        )
        .unwrap();
        s.create_group(
            &json!({"displayName": "Eng \u{1F600}", "externalId": "g1",
                "members": [{"value": full_id}]}),
            now,
        )
        .unwrap();
        s.create_group(&json!({"displayName": "Empty"}), now)
            .unwrap();
        let everything = ListQuery {
            start_index: 1,
            count: 100,
            ..ListQuery::default()
        };
        let as_values = |resources: Vec<Value>, total: usize| {
            serde_json::to_vec(&json!({
                "schemas": [SCHEMA_LIST],
                "totalResults": total,
                "startIndex": 1,
                "itemsPerPage": resources.len(),
                "Resources": resources,
            }))
            .unwrap()
        };
        let users: Vec<Value> = s
            .users
            .order()
            .iter()
            .map(|id| {
                let (u, m) = &s.users.items[id];
                s.render_user(u, m)
            })
            .collect();
        assert_eq!(users.len(), 3);
        let written = s.list_users(&everything).unwrap().into_json();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(as_values(users, 3)).unwrap()
        );
        let groups: Vec<Value> = s
            .groups
            .order()
            .iter()
            .map(|id| {
                let (g, m) = &s.groups.items[id];
                s.render_group(g, m, true)
            })
            .collect();
        assert_eq!(groups.len(), 2);
        let written = s.list_groups(&everything).unwrap().into_json();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(as_values(groups, 2)).unwrap()
        );
        for id in s.users.order() {
            let (u, m) = &s.users.items[id];
            let expected = serde_json::to_string(&s.render_user(u, m)).unwrap();
            let got = s.get_user(id).unwrap().json;
            assert_eq!(String::from_utf8(got).unwrap(), expected);
        }
        for id in s.groups.order() {
            let (g, m) = &s.groups.items[id];
            for with_members in [true, false] {
                let expected = serde_json::to_string(&s.render_group(g, m, with_members)).unwrap();
                let got = s.get_group(id, with_members).unwrap().json;
                assert_eq!(String::from_utf8(got).unwrap(), expected);
            }
        }
    }
}
