//! The LDAP connector against a fake server answering as Active Directory does,
//! written here from RFC 4511 (messages in BER), RFC 2696 (the paged results
//! control) and Microsoft's documented range retrieval: a group of more than 1,500
//! members sends `member;range=0-1499`, and each further range is asked for with
//! a base search for `member;range=N-*`. There is no domain controller here; this
//! fake covers what slapd cannot show: binary `objectGUID`s, `userAccountControl`,
//! `accountExpires`, and ranged members.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use seatwarden::directory::{LdapFlavor, LdapSettings, LdapSource, Secret};
use seatwarden::model::IdentityStatus;
use seatwarden::retry::RetryPolicy;

const PAGED_RESULTS: &str = "1.2.840.113556.1.4.319";
pub(crate) const USERS_BASE: &str = "OU=Staff,DC=corp,DC=example,DC=com";
const GROUPS_BASE: &str = "OU=Groups,DC=corp,DC=example,DC=com";
const BIG_GROUP: &str = "CN=All Staff,OU=Groups,DC=corp,DC=example,DC=com";
const DOMAIN_ROOT: &str = "DC=corp,DC=example,DC=com";
/// A protected group whose only member is Domain Admins, a group outside
/// `group_base_dn` (in `CN=Users`, where Active Directory keeps it).
pub(crate) const IT_ADMINS: &str = "CN=IT Admins,OU=Groups,DC=corp,DC=example,DC=com";
const DOMAIN_ADMINS: &str = "CN=Domain Admins,CN=Users,DC=corp,DC=example,DC=com";
/// Passed as `withheld`: the fake names its group outside the group search
/// "it admins", a look-alike of the configured "IT Admins".
const LOOKALIKE: &str = "lookalike";
/// Members of All Staff: mostly DNs of contacts and computers (not users), with
/// the three users at positions 0, 1,500 and 3,100, so each range holds one (Ben
/// the first of the second).
const BIG_GROUP_SIZE: usize = 3_200;
const RANGE: usize = 1_500;

// ---- BER, as much as LDAP needs ----

fn length(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(length(content.len()));
    out.extend_from_slice(content);
    out
}

fn seq(tag: u8, parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

fn octets(value: &[u8]) -> Vec<u8> {
    tlv(0x04, value)
}

fn integer(tag: u8, n: i64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    tlv(tag, &bytes[start..])
}

/// One decoded TLV: tag and content.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
}

fn children(mut data: &[u8]) -> Vec<Tlv<'_>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let tag = data[0];
        let (len, header) = if data[1] & 0x80 == 0 {
            (data[1] as usize, 2)
        } else {
            let n = (data[1] & 0x7f) as usize;
            let len = data[2..2 + n]
                .iter()
                .fold(0usize, |acc, b| acc << 8 | *b as usize);
            (len, 2 + n)
        };
        out.push(Tlv {
            tag,
            content: &data[header..header + len],
        });
        data = &data[header + len..];
    }
    out
}

fn int_value(content: &[u8]) -> i64 {
    content.iter().fold(0i64, |acc, b| acc << 8 | *b as i64)
}

async fn read_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.ok()?;
    let mut whole = head.to_vec();
    let len = if head[1] & 0x80 == 0 {
        head[1] as usize
    } else {
        let mut bytes = vec![0u8; (head[1] & 0x7f) as usize];
        stream.read_exact(&mut bytes).await.ok()?;
        whole.extend(&bytes);
        bytes.iter().fold(0usize, |acc, b| acc << 8 | *b as usize)
    };
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.ok()?;
    whole.extend(body);
    Some(whole)
}

fn message(id: i64, op: Vec<u8>, controls: Option<Vec<u8>>) -> Vec<u8> {
    let mut parts = vec![integer(0x02, id), op];
    parts.extend(controls);
    seq(0x30, &parts)
}

fn result(tag: u8, code: i64) -> Vec<u8> {
    seq(tag, &[integer(0x0a, code), octets(b""), octets(b"")])
}

fn entry(dn: &str, attributes: &[(&str, Vec<Vec<u8>>)]) -> Vec<u8> {
    let attributes: Vec<Vec<u8>> = attributes
        .iter()
        .map(|(name, values)| {
            let values: Vec<Vec<u8>> = values.iter().map(|v| octets(v)).collect();
            seq(0x30, &[octets(name.as_bytes()), seq(0x31, &values)])
        })
        .collect();
    seq(0x64, &[octets(dn.as_bytes()), seq(0x30, &attributes)])
}

fn paged_control(cookie: &[u8]) -> Vec<u8> {
    let value = seq(0x30, &[integer(0x02, 0), octets(cookie)]);
    seq(
        0xa0,
        &[seq(
            0x30,
            &[octets(PAGED_RESULTS.as_bytes()), octets(&value)],
        )],
    )
}

// ---- The directory ----

/// (DN, objectGUID bytes, userPrincipalName, userAccountControl, accountExpires)
fn users() -> Vec<(String, [u8; 16], &'static str, &'static str, &'static str)> {
    let guid = |n: u8| {
        let mut g = [0u8; 16];
        g[0] = n;
        g[15] = 0xf0 | n;
        g
    };
    vec![
        (
            format!("CN=Ada Lovelace,{USERS_BASE}"),
            guid(1),
            "ada@corp.example.com",
            "512",
            "0",
        ),
        // 0x202: ACCOUNTDISABLE | NORMAL_ACCOUNT.
        (
            format!("CN=Ben Wong,{USERS_BASE}"),
            guid(2),
            "ben@corp.example.com",
            "514",
            "0",
        ),
        // Expired on 2001-01-01.
        (
            format!("CN=Cy Young,{USERS_BASE}"),
            guid(3),
            "cy@corp.example.com",
            "512",
            "126227808000000000",
        ),
        // In All Staff only through her primary group (primaryGroupID).
        (
            format!("CN=Dee Park,{USERS_BASE}"),
            guid(4),
            "dee@corp.example.com",
            "512",
            "0",
        ),
    ]
}

/// A SID of the fake's domain, S-1-5-21-1-2-3-`rid`, in its binary form.
fn sid(rid: u32) -> Vec<u8> {
    let mut bytes = vec![1, 5, 0, 0, 0, 0, 0, 5];
    for sub in [21, 1, 2, 3, rid] {
        bytes.extend(u32::to_le_bytes(sub));
    }
    bytes
}

/// All Staff's RID; Dee's primary group. Everyone else's is Domain Users (513).
const ALL_STAFF_RID: u32 = 1100;

fn big_group_member(n: usize) -> String {
    let users = users();
    match n {
        0 => users[0].0.clone(),
        1_500 => users[1].0.clone(),
        3_100 => users[2].0.clone(),
        _ => format!("CN=Contact {n},OU=Contacts,DC=corp,DC=example,DC=com"),
    }
}

/// `Taskade-Users` holds Backend, which `(cn=Taskade-*)` leaves out; Backend
/// holds Ben and Platform, Platform holds Cy and Backend (a cycle).
const TASKADE_USERS: &str = "CN=Taskade-Users,OU=Groups,DC=corp,DC=example,DC=com";
pub(crate) const BACKEND: &str = "CN=Backend,OU=Groups,DC=corp,DC=example,DC=com";
const PLATFORM: &str = "CN=Platform,OU=Groups,DC=corp,DC=example,DC=com";
const NARROWED_GROUP_FILTER: &str = "(&(objectClass=group)(cn=Taskade-*))";

/// How All Staff changes while it is read.
#[derive(Clone, Copy, Default, PartialEq)]
enum Churn {
    #[default]
    Never,
    /// A member before the first range boundary is removed when a further range
    /// is first asked for: Ben, the first value of the second range, shifts into
    /// the first.
    Once,
    /// A member is removed before every further range read.
    Always,
}

/// How the fake answers.
#[derive(Clone, Copy, Default)]
pub(crate) struct Fake {
    /// A user attribute left out of every user entry, as a server that does not
    /// hold it (or may not show it) answers; `uSNChanged`, left out of group
    /// entries; or [`LOOKALIKE`].
    withheld: Option<&'static str>,
    churn: Churn,
    /// The first page of users ends after Ada with this result code, yet with a
    /// cookie for the next page, as a server that stopped a page at a time or
    /// administrative limit may.
    cut_first_page: Option<i64>,
    /// The page asked for with the cookie `page-2` hands `page-2` back again,
    /// as a buggy directory or proxy may, with this page.
    cookie_loop: Option<CookieLoop>,
    /// The DN of a group whose `member` values are left out, as a server answers
    /// a bind account that may not read them; users' `memberOf` still names it.
    members_withheld: Option<&'static str>,
}

/// What a page that hands its own cookie back again holds.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum CookieLoop {
    /// Cy, each time again.
    SameEntries,
    /// No entry at all.
    NoEntries,
}

/// All Staff's members as they are now, and its `uSNChanged`.
struct AllStaff {
    usn: u64,
    members: Vec<String>,
    churned: bool,
}

impl AllStaff {
    fn new() -> AllStaff {
        AllStaff {
            usn: 40_000,
            members: (0..BIG_GROUP_SIZE).map(big_group_member).collect(),
            churned: false,
        }
    }
}

/// A group of the fake: DN, cn, RID, members.
struct FakeGroup {
    dn: &'static str,
    cn: &'static str,
    rid: u32,
    members: Vec<String>,
    usn: u64,
    /// `uSNChanged` is not sent (the bind account may not read it).
    usn_withheld: bool,
    /// `member` is not sent (the bind account may not read it).
    members_withheld: bool,
}

fn groups(fake: Fake, all_staff: &AllStaff) -> Vec<FakeGroup> {
    let users = users();
    // `LOOKALIKE`: the group outside the group search answers to the name of one
    // inside it.
    let outside = if fake.withheld == Some(LOOKALIKE) {
        "it admins"
    } else {
        "Domain Admins"
    };
    let group = |dn, cn, rid, members: Vec<String>| FakeGroup {
        dn,
        cn,
        rid,
        members,
        usn: 20_000 + u64::from(rid),
        usn_withheld: fake.withheld == Some("uSNChanged"),
        members_withheld: fake.members_withheld == Some(dn),
    };
    vec![
        FakeGroup {
            usn: all_staff.usn,
            ..group(
                BIG_GROUP,
                "All Staff",
                ALL_STAFF_RID,
                all_staff.members.clone(),
            )
        },
        group(IT_ADMINS, "IT Admins", 1300, vec![DOMAIN_ADMINS.to_owned()]),
        group(DOMAIN_ADMINS, outside, 512, vec![users[0].0.clone()]),
        group(
            TASKADE_USERS,
            "Taskade-Users",
            1400,
            vec![BACKEND.to_owned()],
        ),
        group(
            BACKEND,
            "Backend",
            1401,
            vec![users[1].0.clone(), PLATFORM.to_owned()],
        ),
        group(
            PLATFORM,
            "Platform",
            1402,
            vec![users[2].0.clone(), BACKEND.to_owned()],
        ),
    ]
}

/// The entry of `group` with the `attributes` asked for; `member` is sent as
/// Active Directory does: in ranges of [`RANGE`] past that many.
fn group_entry(group: &FakeGroup, attributes: &[String]) -> Vec<u8> {
    let mut out: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    let members = &group.members;
    for asked in attributes {
        let lower = asked.to_ascii_lowercase();
        if group.members_withheld && lower.starts_with("member") {
            continue;
        }
        let start = match lower.as_str() {
            "cn" => {
                out.push(("cn".to_owned(), vec![group.cn.as_bytes().to_vec()]));
                continue;
            }
            "objectsid" => {
                out.push(("objectSid".to_owned(), vec![sid(group.rid)]));
                continue;
            }
            "usnchanged" if group.usn_withheld => continue,
            "usnchanged" => {
                let usn = group.usn.to_string().into_bytes();
                out.push(("uSNChanged".to_owned(), vec![usn]));
                continue;
            }
            "member" if members.len() <= RANGE => {
                let values = members.iter().map(|m| m.as_bytes().to_vec()).collect();
                out.push(("member".to_owned(), values));
                continue;
            }
            "member" => 0,
            _ => match lower
                .strip_prefix("member;range=")
                .and_then(|r| r.strip_suffix("-*"))
            {
                Some(start) => start.parse().unwrap(),
                None => continue,
            },
        };
        let end = (start + RANGE).min(members.len());
        let name = if end == members.len() {
            format!("member;range={start}-*")
        } else {
            format!("member;range={start}-{}", end - 1)
        };
        let values = members[start..end]
            .iter()
            .map(|m| m.as_bytes().to_vec())
            .collect();
        out.push((name, values));
    }
    let out: Vec<(&str, Vec<Vec<u8>>)> = out.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    entry(group.dn, &out)
}

/// Whether an entry with `attributes` matches a search filter (RFC 4511
/// §4.5.1.7): and, or, not, equality, substrings, presence; case ignored.
fn matches(filter: &Tlv<'_>, attributes: &[(&str, &str)]) -> bool {
    let values = |name: &[u8]| -> Vec<String> {
        attributes
            .iter()
            .filter(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
            .collect()
    };
    let parts = || children(filter.content);
    match filter.tag {
        0xa0 => parts().iter().all(|f| matches(f, attributes)),
        0xa1 => parts().iter().any(|f| matches(f, attributes)),
        0xa2 => !matches(&parts()[0], attributes),
        0xa3 => {
            let parts = parts();
            let wanted = String::from_utf8_lossy(parts[1].content).to_ascii_lowercase();
            values(parts[0].content).contains(&wanted)
        }
        0xa4 => {
            let parts = parts();
            values(parts[0].content).iter().any(|value| {
                let mut rest = value.as_str();
                children(parts[1].content).iter().all(|piece| {
                    let text = String::from_utf8_lossy(piece.content).to_ascii_lowercase();
                    let at = match piece.tag {
                        0x80 => rest.starts_with(&text).then_some(0),
                        0x82 => rest.ends_with(&text).then(|| rest.len() - text.len()),
                        _ => rest.find(&text),
                    };
                    at.map(|at| rest = &rest[at + text.len()..]).is_some()
                })
            })
        }
        0x87 => !values(filter.content).is_empty(),
        other => panic!("the fake does not evaluate filter tag {other:#x}"),
    }
}

/// The group DN a filter asks `memberOf` to equal, anywhere in an and or an or.
fn member_of(filter: &Tlv<'_>) -> Option<String> {
    match filter.tag {
        0xa0 | 0xa1 => children(filter.content).iter().find_map(member_of),
        0xa3 => {
            let parts = children(filter.content);
            parts[0]
                .content
                .eq_ignore_ascii_case(b"memberOf")
                .then(|| String::from_utf8(parts[1].content.to_vec()).unwrap())
        }
        _ => None,
    }
}

/// What the fake was asked, for the assertions.
#[derive(Default)]
pub(crate) struct Asked {
    binds: Vec<String>,
    /// (base DN, attributes, paged cookie)
    searches: Vec<(String, Vec<String>, Option<Vec<u8>>)>,
}

/// Serves one connection.
async fn serve(
    mut stream: TcpStream,
    asked: Arc<Mutex<Asked>>,
    fake: Fake,
    all_staff: Arc<Mutex<AllStaff>>,
) {
    let withheld = fake.withheld;
    while let Some(raw) = read_message(&mut stream).await {
        let top = children(&raw);
        let parts = children(top[0].content);
        let id = int_value(parts[0].content);
        let op = &parts[1];
        let cookie = parts.get(2).and_then(|controls| {
            children(controls.content).iter().find_map(|control| {
                let fields = children(control.content);
                (fields[0].content == PAGED_RESULTS.as_bytes()).then(|| {
                    let value = children(fields.last().unwrap().content);
                    children(value[0].content)[1].content.to_vec()
                })
            })
        });
        let mut out = Vec::new();
        match op.tag {
            0x60 => {
                let fields = children(op.content);
                asked
                    .lock()
                    .unwrap()
                    .binds
                    .push(String::from_utf8(fields[1].content.to_vec()).unwrap());
                out.extend(message(id, result(0x61, 0), None));
            }
            0x42 => return,
            0x63 => {
                let fields = children(op.content);
                let base = String::from_utf8(fields[0].content.to_vec()).unwrap();
                let filter = &fields[6];
                let attributes: Vec<String> = children(fields[7].content)
                    .iter()
                    .map(|a| String::from_utf8(a.content.to_vec()).unwrap())
                    .collect();
                asked.lock().unwrap().searches.push((
                    base.clone(),
                    attributes.clone(),
                    cookie.clone(),
                ));
                let mut done_controls = None;
                let mut code = 0;
                if base == USERS_BASE
                    && let Some(group) = member_of(filter)
                {
                    // Users by memberOf, Active Directory's back link of the
                    // groups' `member`: the group's direct members, by DN alone.
                    let all_staff = all_staff.lock().unwrap();
                    let members = groups(fake, &all_staff)
                        .into_iter()
                        .find(|g| g.dn.eq_ignore_ascii_case(&group))
                        .map(|g| g.members)
                        .unwrap_or_default();
                    for (dn, ..) in users() {
                        if members.iter().any(|m| m.eq_ignore_ascii_case(&dn)) {
                            out.extend(message(id, entry(&dn, &[]), None));
                        }
                    }
                } else if base == USERS_BASE {
                    // Two pages: Ada and Ben, then Cy.
                    let page: Vec<_> = match cookie.as_deref() {
                        Some(b"page-2") if fake.cookie_loop == Some(CookieLoop::NoEntries) => {
                            Vec::new()
                        }
                        Some(b"page-2") => users().into_iter().skip(2).collect(),
                        _ => match fake.cut_first_page {
                            Some(cut) => {
                                code = cut;
                                users().into_iter().take(1).collect()
                            }
                            None => users().into_iter().take(2).collect(),
                        },
                    };
                    for (dn, guid, upn, control, expires) in page {
                        let primary = if upn.starts_with("dee") {
                            ALL_STAFF_RID
                        } else {
                            513
                        };
                        let attributes: Vec<(&str, Vec<Vec<u8>>)> = [
                            ("objectSid", vec![sid(1100 + u32::from(guid[0]))]),
                            ("primaryGroupID", vec![primary.to_string().into_bytes()]),
                            ("objectGUID", vec![guid.to_vec()]),
                            ("userPrincipalName", vec![upn.as_bytes().to_vec()]),
                            ("mail", vec![upn.as_bytes().to_vec()]),
                            ("userAccountControl", vec![control.as_bytes().to_vec()]),
                            ("accountExpires", vec![expires.as_bytes().to_vec()]),
                            ("department", vec![b"Engineering".to_vec()]),
                        ]
                        .into_iter()
                        .filter(|(name, _)| Some(*name) != withheld)
                        .collect();
                        out.extend(message(id, entry(&dn, &attributes), None));
                    }
                    let next: &[u8] =
                        if cookie.as_deref() == Some(b"page-2") && fake.cookie_loop.is_none() {
                            b""
                        } else {
                            b"page-2"
                        };
                    done_controls = Some(paged_control(next));
                } else if base == GROUPS_BASE || base == DOMAIN_ROOT {
                    // The groups under the base that the filter matches.
                    let all_staff = all_staff.lock().unwrap();
                    for group in groups(fake, &all_staff) {
                        let classes = [("objectClass", "top"), ("objectClass", "group")];
                        let mut attributes_of = classes.to_vec();
                        attributes_of.push(("cn", group.cn));
                        if group.dn.ends_with(&format!(",{base}"))
                            && matches(filter, &attributes_of)
                        {
                            out.extend(message(id, group_entry(&group, &attributes), None));
                        }
                    }
                    done_controls = Some(paged_control(b""));
                } else {
                    // A base search of one group: one of its ranges, or the group
                    // read anew.
                    let further_range = attributes.iter().any(|a| {
                        a.starts_with("member;range=") && !a.starts_with("member;range=0-")
                    });
                    let mut all_staff = all_staff.lock().unwrap();
                    if base == BIG_GROUP
                        && further_range
                        && match fake.churn {
                            Churn::Never => false,
                            Churn::Once => !all_staff.churned,
                            Churn::Always => true,
                        }
                    {
                        // Someone removes a contact from the first range between
                        // two range reads.
                        all_staff.members.remove(10);
                        all_staff.usn += 1;
                        all_staff.churned = true;
                    }
                    if let Some(group) = groups(fake, &all_staff).iter().find(|g| g.dn == base) {
                        out.extend(message(id, group_entry(group, &attributes), None));
                    }
                }
                out.extend(message(id, result(0x65, code), done_controls));
            }
            // Abandon and anything else: no answer.
            _ => {}
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The fake on a local port.
pub(crate) async fn start_fake(fake: Fake) -> (u16, Arc<Mutex<Asked>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = Arc::new(Mutex::new(Asked::default()));
    let server_asked = Arc::clone(&asked);
    let all_staff = Arc::new(Mutex::new(AllStaff::new()));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(
                stream,
                Arc::clone(&server_asked),
                fake,
                Arc::clone(&all_staff),
            ));
        }
    });
    (port, asked)
}

/// A fake whose first page of users ends after Ada with result `code`, and a
/// cookie for the next.
pub(crate) fn cutting_first_page(code: i64) -> Fake {
    Fake {
        cut_first_page: Some(code),
        ..Fake::default()
    }
}

/// A fake whose page of users asked for with the cookie `page-2` hands that
/// cookie back again, with `page` each time.
pub(crate) fn looping_cookie(page: CookieLoop) -> Fake {
    Fake {
        cookie_loop: Some(page),
        ..Fake::default()
    }
}

/// A fake that leaves out the `member` values of the group at `dn`.
pub(crate) fn withholding_members_of(dn: &'static str) -> Fake {
    Fake {
        members_withheld: Some(dn),
        ..Fake::default()
    }
}

/// A fake leaving `withheld` out of user entries.
pub(crate) fn withholding(withheld: &'static str) -> Fake {
    Fake {
        withheld: Some(withheld),
        ..Fake::default()
    }
}

/// The Active Directory defaults, reading the fake at `port`.
pub(crate) fn source(port: u16) -> LdapSource {
    let flavor = LdapFlavor::ActiveDirectory;
    LdapSource::new(LdapSettings {
        url: format!("ldap://127.0.0.1:{port}"),
        start_tls: false,
        ca_file: None,
        bind_dn: "CN=svc-seatwarden,OU=Service Accounts,DC=corp,DC=example,DC=com".to_owned(),
        bind_password: Secret::Inline("ad-bind-password".to_owned().into()),
        base_dn: USERS_BASE.to_owned(),
        group_base_dn: GROUPS_BASE.to_owned(),
        flavor,
        user_filter: flavor.default_user_filter(flavor.default_user_name_attribute()),
        group_filter: flavor.default_group_filter().to_owned(),
        disabled_filter: None,
        id_attribute: flavor.default_id_attribute().to_owned(),
        user_name_attribute: flavor.default_user_name_attribute().to_owned(),
        page_size: 2,
        scope_groups: vec!["All Staff".to_owned()],
        other_groups: Vec::new(),
        distinct_groups: Vec::new(),
        required_groups: Vec::new(),
        timeout: std::time::Duration::from_secs(10),
        retry: RetryPolicy::immediate(0),
    })
}

#[tokio::test]
async fn active_directory_guids_status_and_ranged_members() {
    let (port, asked) = start_fake(Fake::default()).await;
    let snapshot = source(port).snapshot().await.unwrap();
    assert!(snapshot.complete);
    let people: Vec<(&str, &str, IdentityStatus, Vec<String>)> = snapshot
        .identities
        .iter()
        .map(|i| {
            (
                i.id.as_str(),
                i.user_name.as_str(),
                i.status,
                i.groups.clone(),
            )
        })
        .collect();
    let all_staff = vec!["All Staff".to_owned()];
    assert_eq!(
        people,
        [
            (
                "00000001-0000-0000-0000-0000000000f1",
                "ada@corp.example.com",
                IdentityStatus::Active,
                all_staff.clone()
            ),
            (
                "00000002-0000-0000-0000-0000000000f2",
                "ben@corp.example.com",
                IdentityStatus::Suspended,
                all_staff.clone()
            ),
            (
                "00000003-0000-0000-0000-0000000000f3",
                "cy@corp.example.com",
                IdentityStatus::Suspended,
                all_staff.clone()
            ),
            (
                "00000004-0000-0000-0000-0000000000f4",
                "dee@corp.example.com",
                IdentityStatus::Active,
                all_staff
            ),
        ],
        "Ben is disabled, Cy expired; Ben and Cy are members only in later ranges; Dee \
         through her primary group"
    );
    assert_eq!(
        snapshot.identities[0].department.as_deref(),
        Some("Engineering")
    );

    let asked = asked.lock().unwrap();
    assert_eq!(
        asked.binds,
        ["CN=svc-seatwarden,OU=Service Accounts,DC=corp,DC=example,DC=com"]
    );
    let searches: Vec<(&str, Option<&[u8]>)> = asked
        .searches
        .iter()
        .map(|(base, _, cookie)| (base.as_str(), cookie.as_deref()))
        .collect();
    assert_eq!(
        searches,
        [
            (USERS_BASE, Some(&b""[..])),
            (USERS_BASE, Some(&b"page-2"[..])),
            (GROUPS_BASE, Some(&b""[..])),
            (BIG_GROUP, None),
            (BIG_GROUP, None),
            (DOMAIN_ROOT, Some(&b""[..])),
        ],
        "users in two pages, groups in one, then two more ranges of All Staff, then the \
         domain's groups once (All Staff's contacts are neither users nor groups)"
    );
    let ranges: Vec<&str> = asked.searches[3..5]
        .iter()
        .map(|(_, attributes, _)| attributes[0].as_str())
        .collect();
    assert_eq!(ranges, ["member;range=1500-*", "member;range=3000-*"]);
    let user_attributes = &asked.searches[0].1;
    for wanted in [
        "objectGUID",
        "userPrincipalName",
        "userAccountControl",
        "accountExpires",
        "primaryGroupID",
        "objectSid",
    ] {
        assert!(
            user_attributes.iter().any(|a| a == wanted),
            "{user_attributes:?}"
        );
    }
}

/// A group nested in a protected group but outside `group_base_dn` (Domain
/// Admins in `CN=Users`) is found in the domain and read: its members stay
/// protected instead of dropping out silently.
#[tokio::test]
async fn a_nested_group_outside_the_group_base_is_read() {
    let (port, asked) = start_fake(Fake::default()).await;
    let mut source = source(port).settings().clone();
    source.other_groups = vec!["IT Admins".to_owned()];
    let snapshot = LdapSource::new(source.clone()).snapshot().await.unwrap();
    let ada = &snapshot.identities[0];
    assert_eq!(ada.user_name, "ada@corp.example.com");
    assert_eq!(ada.groups, ["All Staff", "Domain Admins", "IT Admins"]);
    assert_eq!(snapshot.identities[1].groups, ["All Staff"]);
    {
        let asked = asked.lock().unwrap();
        let domain_admins: Vec<&Vec<String>> = asked
            .searches
            .iter()
            .filter(|(base, _, _)| base == DOMAIN_ADMINS)
            .map(|(_, attributes, _)| attributes)
            .collect();
        assert_eq!(
            domain_admins,
            [&vec![
                "cn".to_owned(),
                "member".to_owned(),
                "objectSid".to_owned(),
                "uSNChanged".to_owned()
            ]],
            "read whole, its change attribute with its members"
        );
        assert_eq!(
            asked
                .searches
                .iter()
                .filter(|(base, _, _)| base == DOMAIN_ROOT)
                .count(),
            1,
            "the domain's groups are listed once"
        );
    }

    // A group found outside the group search that answers to a configured name
    // is a look-alike as much as one inside it: the read fails.
    let (port, _) = start_fake(withholding(LOOKALIKE)).await;
    let mut lookalike = source.clone();
    lookalike.url = format!("ldap://127.0.0.1:{port}");
    let error = LdapSource::new(lookalike)
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("two groups answer to the name"), "{error}");
    assert!(error.contains("CN=Domain Admins,CN=Users"), "{error}");
}

/// A user without `accountExpires` (a Global Catalog does not hold it, or the bind
/// account may not read it) fails the snapshot: read as "never expires", a leaver
/// offboarded by expiry would stay active.
#[tokio::test]
async fn a_user_without_account_expires_fails_the_snapshot() {
    let (port, _asked) = start_fake(withholding("accountExpires")).await;
    let error = source(port).snapshot().await.unwrap_err().to_string();
    assert!(error.contains("no accountExpires"), "{error}");
    assert!(error.contains("CN=Ada Lovelace"), "{error}");
}

/// The searches of one base DN: the attributes each asked for.
pub(crate) fn asked_of(asked: &Mutex<Asked>, base: &str) -> Vec<Vec<String>> {
    asked
        .lock()
        .unwrap()
        .searches
        .iter()
        .filter(|(b, _, _)| b == base)
        .map(|(_, attributes, _)| attributes.clone())
        .collect()
}

fn group_names(snapshot: &seatwarden::model::DirectorySnapshot) -> Vec<(&str, Vec<String>)> {
    snapshot
        .identities
        .iter()
        .map(|i| (i.user_name.as_str(), i.groups.clone()))
        .collect()
}

/// A member removed from All Staff between two range reads shifts Ben, the first
/// value of the second range, into the first, already read: each range read
/// carries `uSNChanged`, and when it moved on the group is read again from its
/// first range, so Ben is still in scope.
#[tokio::test]
async fn a_group_that_changes_between_range_reads_is_read_again() {
    let (port, asked) = start_fake(Fake {
        churn: Churn::Once,
        ..Fake::default()
    })
    .await;
    let snapshot = source(port).snapshot().await.unwrap();
    assert!(snapshot.complete);
    let all_staff = vec!["All Staff".to_owned()];
    assert_eq!(
        group_names(&snapshot),
        [
            ("ada@corp.example.com", all_staff.clone()),
            ("ben@corp.example.com", all_staff.clone()),
            ("cy@corp.example.com", all_staff.clone()),
            ("dee@corp.example.com", all_staff),
        ],
        "Ben moved from position 1,500 to 1,499 between the reads"
    );
    let range = |r: &str| vec![r.to_owned(), "uSNChanged".to_owned()];
    assert_eq!(
        asked_of(&asked, BIG_GROUP),
        [
            range("member;range=1500-*"),
            vec![
                "cn".to_owned(),
                "member".to_owned(),
                "objectSid".to_owned(),
                "uSNChanged".to_owned()
            ],
            range("member;range=1500-*"),
            range("member;range=3000-*"),
        ],
        "the first range read saw another uSNChanged: All Staff is read again, then its \
         further ranges"
    );
    let groups_search = &asked.lock().unwrap().searches[2];
    assert_eq!(groups_search.0, GROUPS_BASE);
    assert!(
        groups_search.1.iter().any(|a| a == "uSNChanged"),
        "the first range comes with the version it belongs to: {:?}",
        groups_search.1
    );
}

/// A group that changes before every range read is not read for ever: after
/// three restarts the snapshot fails, naming the group (not retried: the next run
/// reads it again).
#[tokio::test]
async fn a_group_that_keeps_changing_between_range_reads_fails_the_snapshot() {
    let (port, asked) = start_fake(Fake {
        churn: Churn::Always,
        ..Fake::default()
    })
    .await;
    let error = source(port).snapshot().await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let message = error.to_string();
    assert!(message.contains(BIG_GROUP), "{message}");
    assert!(
        message.contains("its members changed while they were read in ranges (uSNChanged moved on), 4 times in a row"),
        "{message}"
    );
    assert_eq!(
        asked_of(&asked, BIG_GROUP).len(),
        7,
        "a range read, then three times the group and a range read"
    );
}

/// With a narrowed `group_filter`, Backend (nested in the scope group
/// Taskade-Users) and Platform (nested in Backend, and Backend in it) are not
/// groups of the group search; they are found among the domain's groups all the
/// same and read, so their members are in scope through Taskade-Users.
#[tokio::test]
async fn a_nested_group_a_narrowed_group_filter_leaves_out_counts() {
    for group_base_dn in [GROUPS_BASE, DOMAIN_ROOT] {
        let (port, asked) = start_fake(Fake::default()).await;
        let mut settings = source(port).settings().clone();
        settings.group_filter = NARROWED_GROUP_FILTER.to_owned();
        settings.group_base_dn = group_base_dn.to_owned();
        settings.scope_groups = vec!["Taskade-Users".to_owned()];
        let snapshot = LdapSource::new(settings).snapshot().await.unwrap();
        assert!(snapshot.complete);
        let nested = vec![
            "Backend".to_owned(),
            "Platform".to_owned(),
            "Taskade-Users".to_owned(),
        ];
        assert_eq!(
            group_names(&snapshot),
            [
                ("ada@corp.example.com", Vec::new()),
                ("ben@corp.example.com", nested.clone()),
                ("cy@corp.example.com", nested),
                ("dee@corp.example.com", Vec::new()),
            ],
            "group_base_dn {group_base_dn}"
        );
        let whole = vec![
            "cn".to_owned(),
            "member".to_owned(),
            "objectSid".to_owned(),
            "uSNChanged".to_owned(),
        ];
        assert_eq!(
            asked_of(&asked, BACKEND),
            std::slice::from_ref(&whole),
            "read once"
        );
        assert_eq!(asked_of(&asked, PLATFORM), [whole], "read once");
        assert!(
            asked_of(&asked, BIG_GROUP).is_empty(),
            "All Staff is not in use"
        );
        let listings = asked
            .lock()
            .unwrap()
            .searches
            .iter()
            .filter(|(base, attributes, _)| base == DOMAIN_ROOT && attributes == &["cn"])
            .count();
        assert_eq!(listings, 1, "the domain's groups are listed once");
    }
}

/// Without `uSNChanged` the ranges of a group cannot be told to come from one
/// version of it: the snapshot fails rather than trust them.
#[tokio::test]
async fn a_ranged_group_without_usn_changed_fails_the_snapshot() {
    let (port, _asked) = start_fake(withholding("uSNChanged")).await;
    let error = source(port).snapshot().await.unwrap_err().to_string();
    assert!(error.contains(BIG_GROUP), "{error}");
    assert!(
        error.contains("the group has no uSNChanged (can the bind account read it?)"),
        "{error}"
    );
}
