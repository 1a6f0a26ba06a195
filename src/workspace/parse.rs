//! Turning SCIM JSON into model types, tolerantly: strings where booleans belong,
//! numbers where strings belong, absent optional attributes.
//!
//! Users go through `serde_json::Value`, holding only the attributes [`account`]
//! reads ([`UserBody`]). Groups and the `ListResponse` around them
//! are deserialized straight into what the client keeps ([`GroupBody`], [`Page`]):
//! a group's member list is the largest thing a workspace sends, and as `Value`s
//! every member was a map of three owned strings before its id was copied out.
//! Those visitors accept any JSON value where they expect an object or an array
//! (and read it as absent or "not an object"), so the only error left to serde is
//! a body that is not JSON.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;

use super::RoleAttribute;
use super::error::{MAX_DETAIL_CHARS, WorkspaceError, truncate};
use crate::model::{Account, WorkspaceGroup};

/// One page of a `ListResponse`, its resources as `R`.
#[derive(Debug)]
pub(crate) struct Page<R> {
    pub total_results: Option<u64>,
    pub resources: Vec<R>,
    /// RFC 9865 `nextCursor`: absent (or empty) on the last page of a cursor listing.
    pub next_cursor: Option<String>,
}

/// Reads a number that a provider may send as a JSON number or a string.
fn loose_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads a boolean that a provider may send as `true`, `"true"` or `"False"`.
pub(crate) fn loose_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Reads an attribute case-insensitively (SCIM attribute names are).
fn attr<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    let map = obj.as_object()?;
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn attr_str(obj: &Value, name: &str) -> Option<String> {
    scalar_string(attr(obj, name)?)
}

/// A string attribute that a provider may send as a number.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses a body the caller needs as JSON, into `Value` or one of this module's
/// tolerant shapes.
pub(crate) fn json_body<R: DeserializeOwned>(
    endpoint: &str,
    text: &str,
) -> Result<R, WorkspaceError> {
    if text.trim().is_empty() {
        return Err(WorkspaceError::malformed(endpoint, "empty body"));
    }
    serde_json::from_str(text).map_err(|e| {
        WorkspaceError::malformed(
            endpoint,
            format!(
                "body is not JSON ({e}): {}",
                truncate(text, MAX_DETAIL_CHARS)
            ),
        )
    })
}

/// A `ListResponse` body as read: its `totalResults`, `Resources` and
/// `nextCursor`, or not an object at all.
pub(crate) enum ListBody<R> {
    NotObject,
    Object {
        total_results: Option<u64>,
        resources: Resources<R>,
        next_cursor: Option<String>,
    },
}

/// `Resources` of a `ListResponse`: absent or `null`, something other than an
/// array, or the resources.
pub(crate) enum Resources<R> {
    Absent,
    NotArray,
    Items(Vec<R>),
}

/// The page a `ListResponse` body holds, checked.
pub(crate) fn page<R>(
    endpoint: &str,
    body: ListBody<R>,
    start_index: u64,
) -> Result<Page<R>, WorkspaceError> {
    let ListBody::Object {
        total_results,
        resources,
        next_cursor,
    } = body
    else {
        return Err(WorkspaceError::malformed(
            endpoint,
            "ListResponse is not a JSON object",
        ));
    };
    let resources = match resources {
        Resources::Items(items) => items,
        Resources::Absent => {
            // RFC 7644 §3.4.2: Resources is required when totalResults is non-zero;
            // a page past the end may leave it out. A first page with neither
            // (`{}` from a gateway, a stub) says nothing: taken as an empty
            // listing, it would be a workspace with nobody in it (everyone planned
            // as missing) or a directory that lost everyone.
            if total_results.is_none() && start_index <= 1 {
                return Err(WorkspaceError::malformed(
                    endpoint,
                    "ListResponse has neither totalResults nor Resources: not a listing",
                ));
            }
            if total_results.is_some_and(|t| t > 0 && start_index <= t) {
                return Err(WorkspaceError::malformed(
                    endpoint,
                    format!(
                        "ListResponse has no Resources but totalResults is {}",
                        total_results.unwrap_or_default()
                    ),
                ));
            }
            Vec::new()
        }
        Resources::NotArray => {
            return Err(WorkspaceError::malformed(
                endpoint,
                "ListResponse Resources is not an array",
            ));
        }
    };
    Ok(Page {
        total_results,
        resources,
        next_cursor: next_cursor.filter(|c| !c.is_empty()),
    })
}

/// A Group body as read: the attributes the client keeps, or not an object.
#[derive(Debug)]
pub(crate) enum GroupBody {
    NotObject,
    Object {
        id: Option<String>,
        display_name: Option<String>,
        /// The `value` of every member that has one, in order; `None` when
        /// `members` was not sent (or was null), which some providers do for a
        /// group that has members.
        members: Option<Vec<String>>,
        /// The `value` of every member marked as a Group (`"type": "Group"`, or
        /// a `$ref` to `/Groups/…`): RFC 7643 §4.2 lets Groups nest, and a
        /// nested one the listing lacks must be read on its own.
        nested_groups: Vec<String>,
        /// The `value` of every member marked as a User (`"type": "User"`, or
        /// a `$ref` to `/Users/…`): one the Users listing lacks is no Group
        /// to read, where an unmarked one may be.
        user_members: Vec<String>,
    },
}

impl GroupBody {
    /// Whether the body carried a `members` attribute.
    pub(crate) fn sends_members(&self) -> bool {
        matches!(
            self,
            GroupBody::Object {
                members: Some(_),
                ..
            }
        )
    }
}

/// A User as [`account`] reads it: the object with only the attributes `account`
/// looks at (the core ones it maps and every extension schema, in any spelling);
/// `meta`, `schemas`, `groups` and whatever else a provider sends are skipped
/// without being built. A page of users is the bulk of every snapshot and of a
/// verification re-listing. Anything but an object reads as `null`, which
/// `account` rejects as it rejects any non-object.
#[derive(Debug)]
pub(crate) struct UserBody(pub Value);

/// The User attributes `account` reads, besides extension schemas (`urn:…`).
const USER_ATTRIBUTES: [&str; 8] = [
    "id",
    "userName",
    "externalId",
    "name",
    "displayName",
    "emails",
    "active",
    "roles",
];

fn id_of(endpoint: &str, what: &str, v: &Value) -> Result<String, WorkspaceError> {
    if !v.is_object() {
        return Err(WorkspaceError::malformed(
            endpoint,
            format!("{what} is not a JSON object"),
        ));
    }
    match attr_str(v, "id") {
        Some(id) if !id.is_empty() => Ok(id),
        _ => Err(WorkspaceError::malformed(
            endpoint,
            format!("{what} without id"),
        )),
    }
}

pub(crate) fn account(
    endpoint: &str,
    v: &Value,
    role_attribute: &RoleAttribute,
) -> Result<Account, WorkspaceError> {
    let id = id_of(endpoint, "User", v)?;
    let user_name = attr_str(v, "userName").ok_or_else(|| {
        WorkspaceError::malformed(endpoint, format!("User {id} without userName"))
    })?;
    let name = attr(v, "name");
    let active = match attr(v, "active") {
        None | Some(Value::Null) => true,
        Some(raw) => loose_bool(raw).ok_or_else(|| {
            WorkspaceError::malformed(
                endpoint,
                format!("User {id} has a non-boolean active: {raw}"),
            )
        })?,
    };
    Ok(Account {
        user_name,
        external_id: attr_str(v, "externalId"),
        given_name: name.and_then(|n| attr_str(n, "givenName")),
        family_name: name.and_then(|n| attr_str(n, "familyName")),
        display_name: attr_str(v, "displayName"),
        email: email(v),
        active,
        roles: roles(v, role_attribute),
        id,
    })
}

/// The enterprise extension's `department` (RFC 7643 §4.3), when the User has one.
pub(crate) fn department(v: &Value) -> Option<String> {
    attr(v, ENTERPRISE_USER)
        .and_then(|ext| attr_str(ext, "department"))
        .filter(|d| !d.trim().is_empty())
}

const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The email seatwarden reads: see [`email_index`].
fn email(v: &Value) -> Option<String> {
    let emails = emails(v)?;
    attr_str(emails.get(email_index(emails)?)?, "value")
}

/// `meta.version`: the resource's ETag, for an answer without an `ETag` header.
pub(crate) fn version(v: &Value) -> Option<String> {
    attr(attr(v, "meta")?, "version")?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A User's `emails`, when it is an array.
pub(crate) fn emails(v: &Value) -> Option<&Vec<Value>> {
    attr(v, "emails")?.as_array()
}

/// Where in `emails` the email seatwarden reads and writes is: the primary one,
/// else one of type work, else any with a value; among several alike (two
/// marked primary, two work addresses, none marked) the smallest value, compared
/// case-insensitively, then as written. Never the first by position: a provider
/// may list a User's emails in any order (RFC 7643 §2.4: multi-valued attributes
/// are unordered), and an email that changed with the order would be drift, an
/// update written, and a different match by email, from one read to the next.
pub(crate) fn email_index(emails: &[Value]) -> Option<usize> {
    let tier = |e: &Value| {
        if attr(e, "primary").and_then(loose_bool) == Some(true) {
            0
        } else if attr_str(e, "type").is_some_and(|t| t.eq_ignore_ascii_case("work")) {
            1
        } else {
            2
        }
    };
    emails
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let value = attr_str(e, "value")?;
            Some((tier(e), crate::model::fold_case(&value), value, i))
        })
        .min()
        .map(|(_, _, _, i)| i)
}

fn role_values(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(s) => Some(s.clone()),
                other => attr_str(other, "value"),
            })
            .collect(),
        Value::Object(_) => attr_str(v, "value").into_iter().collect(),
        _ => Vec::new(),
    }
}

fn roles(v: &Value, role_attribute: &RoleAttribute) -> Vec<String> {
    match role_attribute {
        // Roles are not managed, but the core `roles` are still read when the
        // provider sends them: the last-Owner rule must see who is an Owner.
        RoleAttribute::None | RoleAttribute::Roles => {
            attr(v, "roles").map(role_values).unwrap_or_default()
        }
        RoleAttribute::Extension { schema, attribute } => attr(v, schema)
            .and_then(|ext| attr(ext, attribute))
            .map(role_values)
            .unwrap_or_default(),
        // The client fills them from the role groups' members.
        RoleAttribute::Groups { .. } => Vec::new(),
    }
}

pub(crate) fn group(endpoint: &str, body: GroupBody) -> Result<WorkspaceGroup, WorkspaceError> {
    let GroupBody::Object {
        id,
        display_name,
        members,
        ..
    } = body
    else {
        return Err(WorkspaceError::malformed(
            endpoint,
            "Group is not a JSON object",
        ));
    };
    let id = id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| WorkspaceError::malformed(endpoint, "Group without id"))?;
    let display_name = display_name.ok_or_else(|| {
        WorkspaceError::malformed(endpoint, format!("Group {id} without displayName"))
    })?;
    Ok(WorkspaceGroup {
        id,
        display_name,
        members: members.unwrap_or_default(),
    })
}

/// A SCIM error body's `scimType` and `detail`, or the start of a non-SCIM body,
/// passed through `redact` before they are cut to length (a piece of a secret
/// would no longer match). The raw body is redacted, and so is the decoded text: a
/// provider that JSON-escapes an echoed token (`\/`, `\u003d`) hides it from the
/// first.
pub(crate) fn error_body(text: &str, redact: &dyn Fn(&str) -> String) -> (Option<String>, String) {
    let text = redact(text);
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => {
            let scim_type = attr_str(&v, "scimType")
                .filter(|t| !t.is_empty())
                .map(|t| redact(&t));
            let detail = attr_str(&v, "detail")
                .or_else(|| attr_str(&v, "message"))
                .or_else(|| attr_str(&v, "error"))
                .unwrap_or_else(|| v.to_string());
            (scim_type, truncate(&redact(&detail), MAX_DETAIL_CHARS))
        }
        _ if text.trim().is_empty() => (None, "(empty body)".to_owned()),
        _ => (None, truncate(&text, MAX_DETAIL_CHARS)),
    }
}

/// The error status a 2xx body claims when it is a SCIM Error (RFC 7644 §3.12):
/// some providers answer a refused write with 200 and the error in the body, and
/// taking that for success records a change that was never made. `Some(None)`
/// when the body is an Error without a usable 4xx/5xx `status`.
pub(crate) fn error_in_success(text: &str) -> Option<Option<u16>> {
    // An Error is a few fields; a listing page is up to megabytes, parsed once
    // already by its own reader. Parsed here as a `Value` it would be parsed twice.
    if text.len() > MAX_ERROR_BODY || !contains_ignoring_ascii_case(text, "messages:2.0:error") {
        return None;
    }
    let v = serde_json::from_str::<Value>(text).ok()?;
    let is_error = attr(&v, "schemas")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .any(|s| s.trim().eq_ignore_ascii_case(ERROR_SCHEMA));
    if !is_error {
        return None;
    }
    Some(
        attr_str(&v, "status")
            .and_then(|s| s.trim().parse::<u16>().ok())
            .filter(|s| (400..600).contains(s)),
    )
}

const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The largest 2xx body looked at for a SCIM Error in it.
const MAX_ERROR_BODY: usize = 64 * 1024;

fn contains_ignoring_ascii_case(text: &str, needle: &str) -> bool {
    text.as_bytes()
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Quotes a filter value as a JSON string (RFC 7644 §3.4.2.2, RFC 8259 §7): `"`,
/// `\` and control characters (a tab pasted into an HR export) are escaped, so a
/// strict server does not refuse the filter.
pub(crate) fn filter_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---- Tolerant visitors for GroupBody and ListBody ----

/// Visitor methods for JSON scalars a tolerant visitor did not ask for: each is
/// read as `$value`.
macro_rules! scalars_are {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// The visitor methods for every JSON value but an object: each is consumed and
/// read as `$value` (`null` as `$null`, when given). `$de` is the visitor's lifetime.
macro_rules! all_but_objects_are {
    ($de:lifetime, $value:expr) => {
        all_but_objects_are!($de, $value, $value);
    };
    ($de:lifetime, $value:expr, $null:expr) => {
        scalars_are!($value);
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($null)
        }
        fn visit_seq<A: SeqAccess<$de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            skip_seq(seq).map(|()| $value)
        }
    };
}

/// The visitor methods for every JSON value but an array, as
/// [`all_but_objects_are`] has them for every value but an object.
macro_rules! all_but_arrays_are {
    ($de:lifetime, $value:expr) => {
        all_but_arrays_are!($de, $value, $value);
    };
    ($de:lifetime, $value:expr, $null:expr) => {
        scalars_are!($value);
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($null)
        }
        fn visit_map<A: MapAccess<$de>>(self, map: A) -> Result<Self::Value, A::Error> {
            skip_map(map).map(|()| $value)
        }
    };
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A map key, read as which of `names` it spells (SCIM attribute names are
/// case-insensitive) and whether it spells it exactly; `None` for other keys.
struct Names(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Names {
    type Value = Option<(usize, bool)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Names {
    type Value = Option<(usize, bool)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attribute name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().enumerate().find_map(|(i, name)| {
            if key == *name {
                Some((i, true))
            } else {
                key.eq_ignore_ascii_case(name).then_some((i, false))
            }
        }))
    }
}

/// One attribute's value while a map is read. Like `attr` on a `Value`: the exact
/// spelling wins over any other; of other spellings, the first is kept.
struct Slot<T>(Option<T>);

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot(None)
    }
}

impl<T> Slot<T> {
    fn wants(&self, exact: bool) -> bool {
        exact || self.0.is_none()
    }
}

/// A string attribute that may come as a number (like `scalar_string`); any other
/// value is absent.
struct ScalarString;

impl<'de> DeserializeSeed<'de> for ScalarString {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarString {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Some(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Some(s))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Some(n.to_string()))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Some(n.to_string()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(n).map(|n| n.to_string()))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq).map(|()| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map).map(|()| None)
    }
}

impl<'de> Deserialize<'de> for UserBody {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UserVisitor { with_groups: false })
            .map(UserBody)
    }
}

/// A User read with its `groups` too: what [`UserBody`] keeps, and its
/// `groups` (RFC 7643 §4.1.2: read-only, the groups the User is in directly,
/// through nesting or dynamically), to tell an empty Group from one whose
/// members the provider leaves out or caps ([`group_ids`]). The SCIM
/// directory reads its Users so, and so does a workspace snapshot's listing
/// (for its managed and role groups); the workspace's other reads of Users
/// skip it, as it can be long.
#[derive(Debug)]
pub(crate) struct PersonBody(pub Value);

impl<'de> Deserialize<'de> for PersonBody {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UserVisitor { with_groups: true })
            .map(PersonBody)
    }
}

/// Whether a User carries `active` (RFC 7643 §4.1.1 makes it optional; null
/// is unassigned, §2.5).
pub(crate) fn sends_active(v: &Value) -> bool {
    attr(v, "active").is_some_and(|active| !active.is_null())
}

/// The ids (`value`) of the Groups a User's `groups` attribute names; none when
/// it is absent or not an array, and items without a `value` are passed over.
pub(crate) fn group_ids(v: &Value) -> Vec<String> {
    named_groups(v, |_| true)
}

/// [`group_ids`] but those marked `"type": "indirect"` (RFC 7643 §4.1.2:
/// a membership through a nested group): the Groups a User is a member of
/// itself, or may be (an entry without a type).
pub(crate) fn group_ids_not_indirect(v: &Value) -> Vec<String> {
    named_groups(v, |g| {
        !attr_str(g, "type").is_some_and(|kind| kind.trim().eq_ignore_ascii_case("indirect"))
    })
}

fn named_groups(v: &Value, keep: impl Fn(&Value) -> bool) -> Vec<String> {
    attr(v, "groups")
        .and_then(Value::as_array)
        .map(|groups| {
            groups
                .iter()
                .filter(|g| keep(g))
                .filter_map(|g| attr_str(g, "value"))
                .filter(|id| !id.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

struct UserVisitor {
    /// Whether the User's `groups` is kept ([`PersonBody`]).
    with_groups: bool,
}

impl<'de> Visitor<'de> for UserVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a SCIM User")
    }

    all_but_objects_are!('de, Value::Null);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kept = serde_json::Map::new();
        let seed = UserAttribute {
            with_groups: self.with_groups,
        };
        while let Some(key) = map.next_key_seed(seed)? {
            match key {
                Some(key) => {
                    kept.insert(key, map.next_value()?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }
}

/// A User's map key, owned if `account` reads that attribute (or it is
/// `groups` and `with_groups`), else `None`.
#[derive(Clone, Copy)]
struct UserAttribute {
    with_groups: bool,
}

impl<'de> DeserializeSeed<'de> for UserAttribute {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for UserAttribute {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attribute name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let read = USER_ATTRIBUTES
            .iter()
            .any(|name| key.eq_ignore_ascii_case(name))
            || key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
            || (self.with_groups && key.eq_ignore_ascii_case("groups"));
        Ok(read.then(|| key.to_owned()))
    }
}

impl<'de> Deserialize<'de> for GroupBody {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(GroupVisitor)
    }
}

struct GroupVisitor;

impl<'de> Visitor<'de> for GroupVisitor {
    type Value = GroupBody;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a SCIM Group")
    }

    all_but_objects_are!('de, GroupBody::NotObject);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = Slot::default();
        let mut display_name = Slot::default();
        let mut members = Slot::default();
        while let Some(key) = map.next_key_seed(Names(&["id", "displayName", "members"]))? {
            match key {
                Some((0, exact)) if id.wants(exact) => {
                    id.0 = Some(map.next_value_seed(ScalarString)?)
                }
                Some((1, exact)) if display_name.wants(exact) => {
                    display_name.0 = Some(map.next_value_seed(ScalarString)?);
                }
                Some((2, exact)) if members.wants(exact) => {
                    members.0 = Some(map.next_value_seed(MembersSeed)?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (members, nested_groups, user_members) = match members.0.flatten() {
            Some(Members {
                values,
                groups,
                users,
            }) => (Some(values), groups, users),
            None => (None, Vec::new(), Vec::new()),
        };
        Ok(GroupBody::Object {
            id: id.0.flatten(),
            display_name: display_name.0.flatten(),
            members,
            nested_groups,
            user_members,
        })
    }
}

/// A group's `members` as read: every member's `value`, and those of the
/// members marked as Groups and as Users.
#[derive(Debug, Default)]
struct Members {
    values: Vec<String>,
    groups: Vec<String>,
    users: Vec<String>,
}

/// A group's `members`: the `value` of each element that is an object with one;
/// anything but an array is no members, and null is not sent.
struct MembersSeed;

impl<'de> DeserializeSeed<'de> for MembersSeed {
    type Value = Option<Members>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MembersSeed {
    type Value = Option<Members>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of members")
    }

    all_but_arrays_are!('de, Some(Members::default()), None);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut members = Members {
            values: Vec::with_capacity(seq.size_hint().unwrap_or(0)),
            groups: Vec::new(),
            users: Vec::new(),
        };
        while let Some(member) = seq.next_element_seed(MemberSeed)? {
            if let Some((value, mark)) = member {
                match mark {
                    MemberMark::Group => members.groups.push(value.clone()),
                    MemberMark::User => members.users.push(value.clone()),
                    MemberMark::None => {}
                }
                members.values.push(value);
            }
        }
        Ok(Some(members))
    }
}

/// Whether a member's `type` or `$ref` marks it as a Group (RFC 7643 §4.2:
/// `type` is "User" or "Group", `$ref` the member's URI; both optional).
pub(crate) fn marks_a_group(member_type: Option<&str>, reference: Option<&str>) -> bool {
    member_type.is_some_and(|t| t.trim().eq_ignore_ascii_case("Group"))
        || reference.is_some_and(|r| r.contains("/Groups/"))
}

/// Whether a member's `type` or `$ref` marks it as a User, and not as a Group.
pub(crate) fn marks_a_user(member_type: Option<&str>, reference: Option<&str>) -> bool {
    !marks_a_group(member_type, reference)
        && (member_type.is_some_and(|t| t.trim().eq_ignore_ascii_case("User"))
            || reference.is_some_and(|r| r.contains("/Users/")))
}

/// What a member's `type` or `$ref` says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberMark {
    Group,
    User,
    /// Neither sent (both are optional): a User or a Group.
    None,
}

/// One element of `members`: its `value` and what it is marked as, if it is
/// an object that has a `value`.
struct MemberSeed;

impl<'de> DeserializeSeed<'de> for MemberSeed {
    type Value = Option<(String, MemberMark)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MemberSeed {
    type Value = Option<(String, MemberMark)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member")
    }

    all_but_objects_are!('de, None);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut value = Slot::default();
        let mut member_type = Slot::default();
        let mut reference = Slot::default();
        while let Some(key) = map.next_key_seed(Names(&["value", "type", "$ref"]))? {
            match key {
                Some((0, exact)) if value.wants(exact) => {
                    value.0 = Some(map.next_value_seed(ScalarString)?);
                }
                Some((1, exact)) if member_type.wants(exact) => {
                    member_type.0 = Some(map.next_value_seed(ScalarString)?);
                }
                Some((2, exact)) if reference.wants(exact) => {
                    reference.0 = Some(map.next_value_seed(ScalarString)?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (member_type, reference) = (member_type.0.flatten(), reference.0.flatten());
        let mark = if marks_a_group(member_type.as_deref(), reference.as_deref()) {
            MemberMark::Group
        } else if marks_a_user(member_type.as_deref(), reference.as_deref()) {
            MemberMark::User
        } else {
            MemberMark::None
        };
        Ok(value.0.flatten().map(|value| (value, mark)))
    }
}

impl<'de, R: Deserialize<'de>> Deserialize<'de> for ListBody<R> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor(PhantomData))
    }
}

struct ListVisitor<R>(PhantomData<R>);

impl<'de, R: Deserialize<'de>> Visitor<'de> for ListVisitor<R> {
    type Value = ListBody<R>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a SCIM ListResponse")
    }

    all_but_objects_are!('de, ListBody::NotObject);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut total = Slot::default();
        let mut resources = Slot::default();
        let mut next_cursor = Slot::default();
        while let Some(key) =
            map.next_key_seed(Names(&["totalResults", "Resources", "nextCursor"]))?
        {
            match key {
                Some((0, exact)) if total.wants(exact) => {
                    total.0 = Some(loose_u64(&map.next_value::<Value>()?));
                }
                Some((1, exact)) if resources.wants(exact) => {
                    resources.0 = Some(map.next_value_seed(ResourcesSeed(PhantomData))?);
                }
                Some((2, exact)) if next_cursor.wants(exact) => {
                    next_cursor.0 = Some(map.next_value_seed(ScalarString)?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(ListBody::Object {
            total_results: total.0.flatten(),
            resources: resources.0.unwrap_or(Resources::Absent),
            next_cursor: next_cursor.0.flatten(),
        })
    }
}

struct ResourcesSeed<R>(PhantomData<R>);

impl<'de, R: Deserialize<'de>> DeserializeSeed<'de> for ResourcesSeed<R> {
    type Value = Resources<R>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, R: Deserialize<'de>> Visitor<'de> for ResourcesSeed<R> {
    type Value = Resources<R>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of resources")
    }

    all_but_arrays_are!('de, Resources::NotArray, Resources::Absent);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<R>()? {
            items.push(item);
        }
        Ok(Resources::Items(items))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn an_error_in_a_2xx_body_is_found_whatever_the_schema_case() {
        let error = |schema: &str, status: Value| {
            json!({"schemas": [schema], "status": status, "detail": "no"}).to_string()
        };
        assert_eq!(
            error_in_success(&error(
                "urn:ietf:params:scim:api:messages:2.0:Error",
                json!("409")
            )),
            Some(Some(409))
        );
        assert_eq!(
            error_in_success(&error(
                "URN:IETF:PARAMS:SCIM:API:MESSAGES:2.0:ERROR",
                json!(400)
            )),
            Some(Some(400))
        );
        assert_eq!(
            error_in_success(&error(
                "urn:ietf:params:scim:api:messages:2.0:Error",
                json!("200")
            )),
            Some(None)
        );
        // A listing that only mentions the schema (a user named after it) is no error.
        let listing = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 1,
            "Resources": [{"id": "1", "userName": "urn:ietf:params:scim:api:messages:2.0:Error"}]
        });
        assert_eq!(error_in_success(&listing.to_string()), None);
    }

    #[test]
    fn account_tolerates_string_booleans_and_picks_emails() {
        let v = json!({
            "id": "1", "userName": "a", "active": "False",
            "emails": [{"value": "x@o"}, {"value": "w@o", "type": "work"}],
            "roles": [{"value": "Editor"}, "Viewer"]
        });
        let a = account("GET /Users/1", &v, &RoleAttribute::Roles).unwrap();
        assert!(!a.active);
        assert_eq!(a.email.as_deref(), Some("w@o"));
        assert_eq!(a.roles, vec!["Editor", "Viewer"]);
        let v = json!({"id": "1", "userName": "a",
            "emails": [{"value": "x@o", "type": "work"}, {"value": "p@o", "primary": "true"}]});
        let a = account("GET /Users/1", &v, &RoleAttribute::Roles).unwrap();
        assert!(a.active, "absent active means active");
        assert_eq!(a.email.as_deref(), Some("p@o"));
    }

    /// The email read does not depend on the order the provider lists a User's
    /// emails in (RFC 7643 §2.4: multi-valued attributes are unordered): a
    /// reordering would otherwise be drift, an email update, and another match.
    #[test]
    fn the_email_read_is_the_same_in_every_order() {
        let cases: [(&[Value], &str); 4] = [
            // Neither primary nor work: the smallest value, not the first.
            (
                &[
                    json!({"value": "zed@home.example", "type": "home"}),
                    json!({"value": "Ada@other.example", "type": "other"}),
                    json!({"value": "bea@other.example"}),
                ],
                "Ada@other.example",
            ),
            // Two of type work, one without a value.
            (
                &[
                    json!({"value": "old@corp.example", "type": "work"}),
                    json!({"value": "new@corp.example", "type": "Work"}),
                    json!({"type": "work"}),
                    json!({"value": "a@home.example", "type": "home"}),
                ],
                "new@corp.example",
            ),
            // Two marked primary (a provider's bug): still one answer.
            (
                &[
                    json!({"value": "y@corp.example", "primary": true}),
                    json!({"value": "x@corp.example", "primary": "true"}),
                    json!({"value": "a@corp.example", "type": "work"}),
                ],
                "x@corp.example",
            ),
            // One primary beats work.
            (
                &[
                    json!({"value": "w@corp.example", "type": "work"}),
                    json!({"value": "p@home.example", "type": "home", "primary": true}),
                    json!({"value": "a@corp.example", "type": "work", "primary": false}),
                ],
                "p@home.example",
            ),
        ];
        for (emails, expected) in cases {
            let mut order: Vec<usize> = (0..emails.len()).collect();
            // Every permutation (Heap's algorithm, iteratively).
            let mut c = vec![0; order.len()];
            let mut seen = 0;
            let mut check = |order: &[usize]| {
                let listed: Vec<Value> = order.iter().map(|&i| emails[i].clone()).collect();
                let v = json!({"id": "1", "userName": "a", "emails": listed});
                let a = account("GET /Users/1", &v, &RoleAttribute::None).unwrap();
                assert_eq!(a.email.as_deref(), Some(expected), "{listed:?}");
                seen += 1;
            };
            check(&order);
            let mut i = 0;
            while i < order.len() {
                if c[i] < i {
                    order.swap(if i % 2 == 0 { 0 } else { c[i] }, i);
                    check(&order);
                    c[i] += 1;
                    i = 0;
                } else {
                    c[i] = 0;
                    i += 1;
                }
            }
            assert_eq!(seen, (1..=emails.len()).product::<usize>());
        }
    }

    /// Roles not managed (`role_attribute = "none"`) are still read, so the guard
    /// knows the Owners and never deactivates the last one.
    #[test]
    fn unmanaged_roles_are_still_read_for_the_last_owner_rule() {
        let v = json!({"id": "1", "userName": "a", "roles": [{"value": "Owner"}]});
        let owner = account("GET /Users/1", &v, &RoleAttribute::None).unwrap();
        assert!(owner.is_owner());
        let plan = crate::model::Plan {
            actions: vec![crate::model::Action {
                seq: 0,
                kind: crate::model::ActionKind::Deactivate {
                    account_id: "1".into(),
                },
                reason: crate::model::DriftKind::StaleAccess,
                subject: "a".into(),
                identity_id: None,
                detail: String::new(),
                held: None,
            }],
            ..crate::model::Plan::default()
        };
        let workspace = crate::model::WorkspaceSnapshot {
            accounts: vec![owner],
            groups: vec![],
        };
        let out = crate::guard::guard(
            plan,
            &workspace,
            &crate::guard::GuardSettings::default(),
            &crate::guard::GuardInput {
                directory_complete: true,
                ..crate::guard::GuardInput::default()
            },
        );
        assert_eq!(
            out.actions[0].held,
            Some(crate::model::HoldReason::LastOwner)
        );
    }

    #[test]
    fn extension_role() {
        let schema = "urn:ietf:params:scim:schemas:extension:taskade:2.0:User".to_string();
        let v = json!({"id": "1", "userName": "a", schema.clone(): {"role": "Owner"}});
        let ra = RoleAttribute::Extension {
            schema,
            attribute: "role".into(),
        };
        assert_eq!(account("e", &v, &ra).unwrap().roles, vec!["Owner"]);
    }

    /// The SCIM directory's read of a User keeps its `groups` (any spelling), and
    /// [`group_ids`] takes their `value`s, passing over items without one.
    #[test]
    fn a_person_body_keeps_the_groups_the_user_names() {
        let kept = json_body::<PersonBody>(
            "GET /Users",
            r#"{"id": "u", "userName": "a", "Groups": [
                {"value": "g1", "$ref": "https://idp/scim/v2/Groups/g1", "display": "Eng",
                 "type": "direct"},
                {"display": "no value"}, {"value": ""}, {"value": 7, "type": "indirect"}],
                "meta": {"version": "W/\"1\""}}"#,
        )
        .unwrap()
        .0;
        assert_eq!(group_ids(&kept), ["g1", "7"]);
        assert_eq!(
            account("GET /Users", &kept, &RoleAttribute::None)
                .unwrap()
                .id,
            "u"
        );
        let none = json_body::<PersonBody>("GET /Users", r#"{"id": "u", "groups": {}}"#)
            .unwrap()
            .0;
        assert!(group_ids(&none).is_empty());
    }

    #[test]
    fn a_user_body_keeps_only_what_account_reads() {
        let kept = json_body::<UserBody>(
            "GET /Users/u",
            r#"{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "ID": "u",
                "userName": "a", "groups": [{"value": "g1"}], "meta": {"version": "W/\"1\""},
                "URN:x:y": {"role": "Owner"}, "phoneNumbers": [], "Active": "true"}"#,
        )
        .unwrap()
        .0;
        assert_eq!(
            kept,
            json!({"ID": "u", "userName": "a", "URN:x:y": {"role": "Owner"}, "Active": "true"})
        );
        let not_an_object = json_body::<UserBody>("GET /Users/u", r#"["u"]"#).unwrap().0;
        assert_eq!(
            account("GET /Users/u", &not_an_object, &RoleAttribute::Roles)
                .unwrap_err()
                .to_string(),
            "GET /Users/u: malformed response: User is not a JSON object"
        );
    }

    #[test]
    fn user_without_id_is_malformed() {
        let err = account(
            "GET /Users",
            &json!({"userName": "a"}),
            &RoleAttribute::Roles,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GET /Users: malformed response: User without id"
        );
    }

    /// What `GroupBody` must equal: the same body read through `Value` with the
    /// helpers users are read with.
    fn group_via_value(v: &Value) -> GroupBody {
        if !v.is_object() {
            return GroupBody::NotObject;
        }
        GroupBody::Object {
            id: attr_str(v, "id"),
            display_name: attr_str(v, "displayName"),
            members: match attr(v, "members") {
                Some(Value::Array(items)) => {
                    Some(items.iter().filter_map(|m| attr_str(m, "value")).collect())
                }
                None | Some(Value::Null) => None,
                Some(_) => Some(Vec::new()),
            },
            nested_groups: match attr(v, "members") {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter(|m| {
                        marks_a_group(
                            attr_str(m, "type").as_deref(),
                            attr_str(m, "$ref").as_deref(),
                        )
                    })
                    .filter_map(|m| attr_str(m, "value"))
                    .collect(),
                _ => Vec::new(),
            },
            user_members: match attr(v, "members") {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter(|m| {
                        marks_a_user(
                            attr_str(m, "type").as_deref(),
                            attr_str(m, "$ref").as_deref(),
                        )
                    })
                    .filter_map(|m| attr_str(m, "value"))
                    .collect(),
                _ => Vec::new(),
            },
        }
    }

    fn read_group(text: &str) -> GroupBody {
        json_body::<GroupBody>("GET /Groups/g", text).unwrap()
    }

    fn same(a: &GroupBody, b: &GroupBody) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    /// Any JSON value, up to two levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6..1e6f64).prop_map(Value::from),
            "[a-z0-9\\\\\"é ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-zA-Z$]{1,6}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// `name` as a provider may spell it.
    fn spelled(name: &'static str) -> impl Strategy<Value = String> {
        prop_oneof![
            3 => Just(name.to_owned()),
            1 => Just(name.to_uppercase()),
            1 => Just(name.to_lowercase()),
        ]
    }

    fn member() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => (spelled("value"), any_json(), proptest::option::of(any_json())).prop_map(
                |(key, value, display)| {
                    let mut m = serde_json::Map::new();
                    m.insert(key, value);
                    if let Some(d) = display {
                        m.insert("display".into(), d);
                    }
                    m.insert("$ref".into(), "https://x/Users/1".into());
                    Value::Object(m)
                }
            ),
            1 => any_json(),
        ]
    }

    fn group_json() -> impl Strategy<Value = Value> {
        let attribute = |name: &'static str, value: BoxedStrategy<Value>| {
            proptest::option::of((spelled(name), value))
        };
        prop_oneof![
            8 => (
                attribute("id", any_json().boxed()),
                attribute("displayName", any_json().boxed()),
                attribute(
                    "members",
                    prop_oneof![
                        4 => prop::collection::vec(member(), 0..6).prop_map(Value::from),
                        1 => any_json(),
                    ]
                    .boxed()
                ),
                proptest::option::of(any_json()),
            )
                .prop_map(|(id, display_name, members, meta)| {
                    let mut m = serde_json::Map::new();
                    for (key, value) in [id, display_name, members].into_iter().flatten() {
                        m.insert(key, value);
                    }
                    if let Some(meta) = meta {
                        m.insert("meta".into(), meta);
                    }
                    Value::Object(m)
                }),
            1 => any_json(),
        ]
    }

    const EXTENSION: &str = "urn:ietf:params:scim:schemas:extension:acme:2.0:User";

    fn user_json() -> impl Strategy<Value = Value> {
        let names = prop_oneof![
            spelled("id"),
            spelled("userName"),
            spelled("externalId"),
            spelled("name"),
            spelled("displayName"),
            spelled("emails"),
            spelled("active"),
            spelled("roles"),
            Just(EXTENSION.to_owned()),
            Just(EXTENSION.to_uppercase()),
            Just("meta".to_owned()),
            Just("schemas".to_owned()),
            Just("groups".to_owned()),
            "[a-zA-Z:]{1,8}",
        ];
        // Any value, or one shaped like what some attribute holds, under any name.
        let text = || "[a-z0-9]{1,4}".prop_map(Value::from);
        let element = (spelled("value"), text(), any::<bool>(), spelled("type"))
            .prop_map(|(key, value, primary, kind)| {
                serde_json::json!({ key: value, "primary": primary, kind: "work" })
            });
        let value = prop_oneof![
            2 => any_json(),
            1 => text(),
            1 => prop_oneof![Just(json!(true)), Just(json!("False")), Just(json!("x"))],
            2 => prop::collection::vec(prop_oneof![element.boxed(), text().boxed()], 0..3)
                .prop_map(Value::from),
            1 => (spelled("role"), text()).prop_map(|(k, v)| json!({ k: v })),
            1 => (spelled("givenName"), spelled("familyName"), text())
                .prop_map(|(g, f, v)| json!({ g: v.clone(), f: v })),
        ];
        // Mostly users `account` accepts (an id and a userName, as strings), so the
        // comparison reaches the attributes after them.
        let readable = (spelled("id"), spelled("userName"), "[a-z0-9]{1,4}");
        prop_oneof![
            8 => (proptest::option::weighted(0.9, readable), prop::collection::vec((names, value), 0..10))
                .prop_map(|(readable, attributes)| {
                    let mut m: serde_json::Map<String, Value> = attributes.into_iter().collect();
                    if let Some((id, user_name, text)) = readable {
                        m.insert(id, Value::from(text.clone()));
                        m.insert(user_name, Value::from(text));
                    }
                    Value::Object(m)
                }),
            1 => any_json(),
        ]
    }

    proptest::proptest! {
        #[test]
        fn a_user_reads_as_it_does_through_value(v in user_json()) {
            let text = v.to_string();
            let whole: Value = serde_json::from_str(&text).unwrap();
            let kept = json_body::<UserBody>("GET /Users/u", &text).unwrap().0;
            for role_attribute in [
                RoleAttribute::Roles,
                RoleAttribute::None,
                RoleAttribute::Extension { schema: EXTENSION.into(), attribute: "role".into() },
            ] {
                let expected = account("GET /Users/u", &whole, &role_attribute);
                let got = account("GET /Users/u", &kept, &role_attribute);
                proptest::prop_assert_eq!(
                    format!("{got:?}"), format!("{expected:?}"), "{} with {:?}", text, role_attribute
                );
            }
        }

        #[test]
        fn a_group_reads_as_it_does_through_value(v in group_json()) {
            let text = v.to_string();
            let typed = read_group(&text);
            let expected = group_via_value(&serde_json::from_str(&text).unwrap());
            proptest::prop_assert!(same(&typed, &expected), "{text}: {typed:?} != {expected:?}");
        }
    }

    #[test]
    fn a_group_keeps_member_ids_and_tolerates_odd_members() {
        let typed = read_group(
            r#"{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "ID": 17,
                "DisplayName": "Eng", "Members": [
                    {"value": "u1", "display": "A", "$ref": "https://x/Users/u1"},
                    {"Value": 2}, {"display": "no value"}, "u3", null, {"value": null},
                    {"value": "u4", "type": "User", "extra": {"value": "not me"}}
                ], "meta": {"version": "W/\"1\""}}"#,
        );
        let GroupBody::Object {
            id,
            display_name,
            members,
            nested_groups,
            ..
        } = typed
        else {
            panic!("an object")
        };
        assert_eq!(id.as_deref(), Some("17"));
        assert_eq!(display_name.as_deref(), Some("Eng"));
        assert_eq!(members.unwrap_or_default(), ["u1", "2", "u4"]);
        assert!(nested_groups.is_empty(), "{nested_groups:?}");
    }

    /// RFC 7643 §4.2: a member is a Group by its `type` or its `$ref`, either
    /// optional and spelled as a provider spells it.
    #[test]
    fn members_marked_as_groups_are_told_apart() {
        let typed = read_group(
            r#"{"id": "g1", "displayName": "All", "members": [
                {"value": "u1", "type": "User", "$ref": "https://idp/scim/v2/Users/u1"},
                {"value": "g2", "type": "Group"},
                {"Value": "g3", "$Ref": "https://idp/scim/v2/Groups/g3"},
                {"value": "g4", "TYPE": "group"},
                {"value": "u5"}, {"type": "Group"}
            ]}"#,
        );
        let GroupBody::Object {
            members,
            nested_groups,
            user_members,
            ..
        } = typed
        else {
            panic!("an object")
        };
        assert_eq!(members.unwrap_or_default(), ["u1", "g2", "g3", "g4", "u5"]);
        assert_eq!(nested_groups, ["g2", "g3", "g4"]);
        assert_eq!(user_members, ["u1"]);
    }

    #[test]
    fn a_group_without_members_is_told_from_an_empty_one() {
        assert!(!read_group(r#"{"id": "1", "displayName": "a"}"#).sends_members());
        assert!(!read_group(r#"{"id": "1", "displayName": "a", "members": null}"#).sends_members());
        assert!(read_group(r#"{"id": "1", "displayName": "a", "members": []}"#).sends_members());
    }

    #[test]
    fn the_exact_spelling_of_an_attribute_wins() {
        let typed = read_group(
            r#"{"DISPLAYNAME": "a", "displayName": "b", "displayname": "c", "id": "1"}"#,
        );
        let expected = group_via_value(
            &serde_json::from_str(
                r#"{"DISPLAYNAME": "a", "displayName": "b", "displayname": "c", "id": "1"}"#,
            )
            .unwrap(),
        );
        assert!(same(&typed, &expected), "{typed:?} != {expected:?}");
        let GroupBody::Object { display_name, .. } = typed else {
            panic!("an object")
        };
        assert_eq!(display_name.as_deref(), Some("b"));
    }

    #[test]
    fn malformed_groups_and_pages_name_the_endpoint_and_the_fault() {
        let e = |r: Result<WorkspaceGroup, WorkspaceError>| r.unwrap_err().to_string();
        let endpoint = "GET /Groups/g";
        assert_eq!(
            e(group(endpoint, read_group("[1, 2]"))),
            "GET /Groups/g: malformed response: Group is not a JSON object"
        );
        assert_eq!(
            e(group(
                endpoint,
                read_group(r#"{"id": "", "displayName": "x"}"#)
            )),
            "GET /Groups/g: malformed response: Group without id"
        );
        assert_eq!(
            e(group(endpoint, read_group(r#"{"id": "7", "members": []}"#))),
            "GET /Groups/g: malformed response: Group 7 without displayName"
        );
        let not_json = json_body::<GroupBody>(endpoint, r#"{"id": "7", "members": [{"value": }]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            not_json.starts_with("GET /Groups/g: malformed response: body is not JSON (expected value at line 1 column"),
            "{not_json}"
        );

        let listing = "GET /Groups?startIndex=1&count=100";
        let page_of = |text: &str| {
            json_body::<ListBody<GroupBody>>(listing, text)
                .and_then(|body| page(listing, body, 1))
                .map(|p| (p.total_results, p.resources.len()))
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            page_of(r#"{"totalResults": "2", "Resources": [{"id": "a"}, {"id": "b"}]}"#),
            Ok((Some(2), 2))
        );
        assert_eq!(
            page_of(r#"{"TotalResults": 0, "Resources": null}"#),
            Ok((Some(0), 0))
        );
        assert_eq!(
            page_of(r#"{"totalResults": 0, "itemsPerPage": 0}"#),
            Ok((Some(0), 0)),
            "an empty listing may leave Resources out"
        );
        assert_eq!(
            page_of(r#"{"totalResults": 5}"#),
            Err(format!(
                "{listing}: malformed response: ListResponse has no Resources but totalResults is 5"
            ))
        );
        assert_eq!(
            page_of(r#"{"totalResults": 5, "resources": {"id": "a"}}"#),
            Err(format!(
                "{listing}: malformed response: ListResponse Resources is not an array"
            ))
        );
        assert_eq!(
            page_of(r#""ok""#),
            Err(format!(
                "{listing}: malformed response: ListResponse is not a JSON object"
            ))
        );
        assert_eq!(
            page_of("  "),
            Err(format!("{listing}: malformed response: empty body"))
        );
    }

    #[test]
    fn a_page_carries_its_next_cursor_unless_it_is_empty() {
        let listing = "GET /Users?cursor=&count=2";
        let cursor_of = |text: &str| {
            json_body::<ListBody<Value>>(listing, text)
                .and_then(|body| page(listing, body, 1))
                .map(|p| (p.next_cursor, p.resources.len()))
                .unwrap()
        };
        assert_eq!(
            cursor_of(
                r#"{"totalResults": 3, "nextCursor": "VZUTiyhEQJ94IR", "Resources": [{}, {}]}"#
            ),
            (Some("VZUTiyhEQJ94IR".to_owned()), 2)
        );
        // Keys are case-insensitive; the exact spelling wins over another.
        assert_eq!(
            cursor_of(r#"{"NEXTCURSOR": "x", "nextCursor": "y", "Resources": [{}]}"#),
            (Some("y".to_owned()), 1)
        );
        assert_eq!(
            cursor_of(r#"{"nextCursor": "", "Resources": [{}]}"#),
            (None, 1)
        );
        assert_eq!(
            cursor_of(r#"{"nextCursor": null, "Resources": []}"#),
            (None, 0)
        );
        assert_eq!(
            cursor_of(r#"{"totalResults": 1, "Resources": [{}]}"#),
            (None, 1)
        );
    }

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(filter_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(
            filter_string("tab\there\nand\u{1}"),
            r#""tab\there\nand\u0001""#
        );
        let decoded: String = serde_json::from_str(&filter_string("a\tb\r\u{1f}é\"")).unwrap();
        assert_eq!(decoded, "a\tb\r\u{1f}é\"");
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_body(
                r#"{"status": 400, "scimType": "invalidFilter", "detail": "bad"}"#,
                &str::to_owned
            ),
            (Some("invalidFilter".into()), "bad".into())
        );
        assert_eq!(
            error_body("<html><body>\n  Bad Gateway </body></html>", &str::to_owned),
            (None, "<html><body> Bad Gateway </body></html>".into())
        );
    }
}
