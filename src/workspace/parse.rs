//! Turning SCIM JSON into model types, tolerantly: strings where booleans belong,
//! numbers where strings belong, absent optional attributes.

use serde_json::Value;

use super::RoleAttribute;
use super::error::{MAX_DETAIL_CHARS, WorkspaceError, truncate};
use crate::model::{Account, WorkspaceGroup};

/// One page of a `ListResponse`.
#[derive(Debug, Default)]
pub(crate) struct Page {
    pub total_results: Option<u64>,
    pub resources: Vec<Value>,
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
fn loose_bool(v: &Value) -> Option<bool> {
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

fn attr_mut<'a>(obj: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    let map = obj.as_object_mut()?;
    let key = if map.contains_key(name) {
        name.to_owned()
    } else {
        map.keys().find(|k| k.eq_ignore_ascii_case(name))?.clone()
    };
    map.get_mut(&key)
}

fn attr_str(obj: &Value, name: &str) -> Option<String> {
    match attr(obj, name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses a body the caller needs as JSON.
pub(crate) fn json_body(endpoint: &str, text: &str) -> Result<Value, WorkspaceError> {
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

/// Takes the page apart by value: `Resources` is moved out, not copied.
pub(crate) fn page(
    endpoint: &str,
    mut body: Value,
    start_index: u64,
) -> Result<Page, WorkspaceError> {
    if !body.is_object() {
        return Err(WorkspaceError::malformed(
            endpoint,
            "ListResponse is not a JSON object",
        ));
    }
    let total_results = attr(&body, "totalResults").and_then(loose_u64);
    let resources = match attr_mut(&mut body, "Resources").map(Value::take) {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => {
            // RFC 7644 §3.4.2: Resources is required when totalResults is non-zero;
            // a page past the end may leave it out.
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
        Some(_) => {
            return Err(WorkspaceError::malformed(
                endpoint,
                "ListResponse Resources is not an array",
            ));
        }
    };
    Ok(Page {
        total_results,
        resources,
    })
}

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

/// The primary email, else the first of type work, else the first.
fn email(v: &Value) -> Option<String> {
    let emails: Vec<&Value> = attr(v, "emails")?
        .as_array()?
        .iter()
        .filter(|e| attr_str(e, "value").is_some())
        .collect();
    let primary = emails
        .iter()
        .find(|e| attr(e, "primary").and_then(loose_bool) == Some(true));
    let work = || {
        emails
            .iter()
            .find(|e| attr_str(e, "type").is_some_and(|t| t.eq_ignore_ascii_case("work")))
    };
    primary
        .or_else(work)
        .or_else(|| emails.first())
        .and_then(|e| attr_str(e, "value"))
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
        RoleAttribute::None => Vec::new(),
        RoleAttribute::Roles => attr(v, "roles").map(role_values).unwrap_or_default(),
        RoleAttribute::Extension { schema, attribute } => attr(v, schema)
            .and_then(|ext| attr(ext, attribute))
            .map(role_values)
            .unwrap_or_default(),
    }
}

pub(crate) fn group(endpoint: &str, v: &Value) -> Result<WorkspaceGroup, WorkspaceError> {
    let id = id_of(endpoint, "Group", v)?;
    let display_name = attr_str(v, "displayName").ok_or_else(|| {
        WorkspaceError::malformed(endpoint, format!("Group {id} without displayName"))
    })?;
    let members = match attr(v, "members") {
        Some(Value::Array(items)) => items.iter().filter_map(|m| attr_str(m, "value")).collect(),
        _ => Vec::new(),
    };
    Ok(WorkspaceGroup {
        id,
        display_name,
        members,
    })
}

/// A SCIM error body's `scimType` and `detail`, or the start of a non-SCIM body.
pub(crate) fn error_body(text: &str) -> (Option<String>, String) {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => {
            let scim_type = attr_str(&v, "scimType").filter(|t| !t.is_empty());
            let detail = attr_str(&v, "detail")
                .or_else(|| attr_str(&v, "message"))
                .or_else(|| attr_str(&v, "error"))
                .unwrap_or_else(|| v.to_string());
            (scim_type, truncate(&detail, MAX_DETAIL_CHARS))
        }
        _ if text.trim().is_empty() => (None, "(empty body)".to_owned()),
        _ => (None, truncate(text, MAX_DETAIL_CHARS)),
    }
}

/// Quotes a filter value: `"` and `\` are escaped (RFC 7644 §3.4.2.2, JSON string rules).
pub(crate) fn filter_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

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

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(filter_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_body(r#"{"status": 400, "scimType": "invalidFilter", "detail": "bad"}"#),
            (Some("invalidFilter".into()), "bad".into())
        );
        assert_eq!(
            error_body("<html><body>\n  Bad Gateway </body></html>"),
            (None, "<html><body> Bad Gateway </body></html>".into())
        );
    }
}
