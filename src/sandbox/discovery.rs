//! `/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas` (RFC 7644 §4): minimal
//! but valid, and truthful about what the sandbox supports.

use std::time::Duration;

use serde_json::{Value, json};

use super::SandboxPaging;

use super::store::{SCHEMA_GROUP, SCHEMA_USER};

const SCHEMA_SPC: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const SCHEMA_RT: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const SCHEMA_LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

pub(crate) fn service_provider_config(
    base: &str,
    max_results: usize,
    paging: SandboxPaging,
    cursor_timeout: Option<Duration>,
    patch_supported: bool,
) -> Value {
    // RFC 9865 §4.
    let mut pagination = json!({
        "cursor": paging != SandboxPaging::Index,
        "index": paging != SandboxPaging::Cursor,
        "defaultPaginationMethod": if paging == SandboxPaging::Cursor { "cursor" } else { "index" },
        "defaultPageSize": max_results,
        "maxPageSize": max_results,
    });
    if let (Some(timeout), Some(p)) = (
        cursor_timeout.filter(|_| paging != SandboxPaging::Index),
        pagination.as_object_mut(),
    ) {
        p.insert("cursorTimeout".to_owned(), json!(timeout.as_secs()));
    }
    json!({
        "schemas": [SCHEMA_SPC],
        "patch": {"supported": patch_supported},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": max_results},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "pagination": pagination,
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token (the workspace's SCIM token)",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        },
    })
}

fn resource_type(base: &str, name: &str, endpoint: &str, schema: &str) -> Value {
    json!({
        "schemas": [SCHEMA_RT],
        "id": name,
        "name": name,
        "endpoint": endpoint,
        "schema": schema,
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{name}")},
    })
}

pub(crate) fn resource_types(base: &str) -> Vec<Value> {
    vec![
        resource_type(base, "User", "/Users", SCHEMA_USER),
        resource_type(base, "Group", "/Groups", SCHEMA_GROUP),
    ]
}

fn attribute(name: &str, kind: &str, multi: bool, required: bool, case_exact: bool) -> Value {
    json!({
        "name": name,
        "type": kind,
        "multiValued": multi,
        "required": required,
        "caseExact": case_exact,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    })
}

/// `attribute` as one the sandbox keeps unique case-insensitively (a create or
/// rename to a taken value is 409 `uniqueness`).
fn unique_on_server(mut attribute: Value) -> Value {
    attribute["uniqueness"] = json!("server");
    attribute
}

fn with_subs(mut attribute: Value, subs: Vec<Value>) -> Value {
    attribute["subAttributes"] = Value::Array(subs);
    attribute
}

fn multi_subs() -> Vec<Value> {
    vec![
        attribute("value", "string", false, false, false),
        attribute("type", "string", false, false, false),
        attribute("display", "string", false, false, false),
        attribute("primary", "boolean", false, false, false),
    ]
}

/// `attribute` as the service provider sets it and a client cannot write.
fn read_only(mut attribute: Value) -> Value {
    attribute["mutability"] = json!("readOnly");
    attribute
}

/// A User's `groups` (RFC 7643 §4.1.2, schema in §8.7.1): the Groups it is a
/// member of, directly or through a Group that is one, which the sandbox
/// serves; read-only, as membership is written on the Group. Its `$ref` is
/// said to lead to a Group alone (§8.7.1 lists `User` too, but the sandbox's
/// lead only to Groups, and §4.1.2 calls it "the corresponding Group").
fn user_groups() -> Value {
    let mut reference = read_only(attribute("$ref", "reference", false, false, false));
    reference["referenceTypes"] = json!(["Group"]);
    let mut kind = read_only(attribute("type", "string", false, false, false));
    kind["canonicalValues"] = json!(["direct", "indirect"]);
    read_only(with_subs(
        attribute("groups", "complex", true, false, false),
        vec![
            read_only(attribute("value", "string", false, false, false)),
            reference,
            read_only(attribute("display", "string", false, false, false)),
            kind,
        ],
    ))
}

pub(crate) fn schemas(base: &str) -> Vec<Value> {
    let user = json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": SCHEMA_USER,
        "name": "User",
        "description": "User Account",
        "attributes": [
            unique_on_server(attribute("userName", "string", false, true, false)),
            attribute("externalId", "string", false, false, true),
            attribute("displayName", "string", false, false, false),
            with_subs(attribute("name", "complex", false, false, false), vec![
                attribute("givenName", "string", false, false, false),
                attribute("familyName", "string", false, false, false),
                attribute("formatted", "string", false, false, false),
            ]),
            with_subs(attribute("emails", "complex", true, false, false), multi_subs()),
            with_subs(attribute("roles", "complex", true, false, false), multi_subs()),
            attribute("active", "boolean", false, false, false),
            user_groups(),
        ],
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{SCHEMA_USER}")},
    });
    let group = json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": SCHEMA_GROUP,
        "name": "Group",
        "description": "Group (a Taskade workspace or folder)",
        "attributes": [
            unique_on_server(attribute("displayName", "string", false, true, false)),
            attribute("externalId", "string", false, false, true),
            with_subs(attribute("members", "complex", true, false, false), vec![
                attribute("value", "string", false, false, true),
                attribute("$ref", "reference", false, false, true),
                attribute("type", "string", false, false, false),
            ]),
        ],
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{SCHEMA_GROUP}")},
    });
    vec![user, group]
}

pub(crate) fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [SCHEMA_LIST],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// The User schema names `groups`, which the sandbox serves on Users
    /// (session 63), as RFC 7643 §8.7.1 defines it: multi-valued, complex,
    /// read-only, with `value`, `$ref`, `display` and `type` (direct or
    /// indirect), each read-only. Before, it was missing: a client reading the
    /// schema took the attribute for one the sandbox does not have.
    #[test]
    fn the_user_schema_names_groups_read_only_with_their_sub_attributes() {
        let schemas = schemas("http://h/scim/v2");
        let user = schemas.iter().find(|s| s["id"] == SCHEMA_USER).unwrap();
        let groups = user["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "groups")
            .expect("the User schema names groups");
        assert_eq!(groups["type"], "complex");
        assert_eq!(groups["multiValued"], true);
        assert_eq!(groups["required"], false);
        assert_eq!(groups["mutability"], "readOnly");
        assert_eq!(groups["returned"], "default");
        let subs = groups["subAttributes"].as_array().unwrap();
        let names: Vec<&str> = subs.iter().map(|a| a["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["value", "$ref", "display", "type"]);
        for sub in subs {
            assert_eq!(sub["mutability"], "readOnly", "{sub}");
            assert_eq!(sub["multiValued"], false, "{sub}");
        }
        let sub = |name: &str| subs.iter().find(|a| a["name"] == name).unwrap();
        assert_eq!(sub("value")["type"], "string");
        assert_eq!(sub("$ref")["type"], "reference");
        assert_eq!(sub("$ref")["referenceTypes"], json!(["Group"]));
        assert_eq!(sub("display")["type"], "string");
        assert_eq!(
            sub("type")["canonicalValues"],
            json!(["direct", "indirect"])
        );
        // The attributes a client may write stay so.
        let user_name = user["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "userName")
            .unwrap();
        assert_eq!(user_name["mutability"], "readWrite");
    }
}
