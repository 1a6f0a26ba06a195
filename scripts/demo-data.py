#!/usr/bin/env python3
"""Writes config/demo/directory.json and config/demo/workspace.json: the example
company `seatwarden demo` reconciles. Deterministic; rerun after editing the lists.

The workspace is what push SCIM left behind, with the drift a real workspace
collects: an ex-employee still active, an account someone added by hand, a wrong
role, a missing folder membership, a new hire never provisioned, a returner whose
account is still deactivated, a renamed person, and one person matched by two
accounts (disputed). A protected break-glass Owner sits outside the directory.
"""
import json, os

DEPARTMENTS = {
    # department: (directory group, workspace group, role)
    "Engineering": ("Engineering", "Engineering", "Editor"),
    "Design": ("Design", "Design", "Commenter"),
    "Marketing": ("Marketing", "Marketing", "Collaborator"),
    "Sales": ("Sales", "Sales", "Participant"),
    "Support": ("Support", "Support", "Viewer"),
    "Finance": ("Finance", "Finance", "Commenter"),
}
EXTRA = [("Taskade Admins", "Administration", "Owner"), ("Engineering Leads", "Engineering", "Maintainer")]
FIRST = ["ava", "ben", "chloe", "daniel", "emma", "felix", "grace", "henry", "isla", "jack",
         "kate", "liam", "mia", "noah", "olivia", "peter", "quinn", "ruby", "sam", "tara",
         "uma", "victor", "wendy", "xavier", "yara", "zoe", "adam", "bella", "carl", "diana",
         "eric", "fiona", "george", "hannah", "ivan", "julia", "kevin", "lucy", "marco", "nina",
         "oscar", "paula", "rafael", "sofia", "tom", "ursula", "vera", "will", "xena", "yusuf"]
LAST = ["smith", "jones", "chen", "garcia", "kim", "hart", "brown", "wong", "novak", "silva",
        "patel", "müller", "rossi", "dubois", "okafor", "larsen", "tanaka", "kowalski", "haddad", "reyes"]
DEPTS = list(DEPARTMENTS)

people = []
for i, first in enumerate(FIRST):
    last = LAST[(i * 7) % len(LAST)]
    dept = DEPTS[i % len(DEPTS)]
    user = f"{first}.{last}@example.com".replace("ü", "u")
    groups = ["Taskade Users", DEPARTMENTS[dept][0]]
    if i in (0, 1):
        groups.append("Taskade Admins")
    if dept == "Engineering" and i % 12 == 0:
        groups.append("Engineering Leads")
    people.append({
        "id": f"00u{1000 + i}", "userName": user, "email": user,
        "givenName": first.capitalize(), "familyName": last.capitalize(),
        "displayName": f"{first.capitalize()} {last.capitalize()}",
        "status": "active", "department": dept, "groups": groups,
    })

by_first = {p["givenName"].lower(): p for p in people}
by_first["olivia"]["status"] = "deprovisioned"   # left last week; account still active
by_first["peter"]["status"] = "suspended"        # on leave; account already inactive
by_first["quinn"]["groups"].remove("Taskade Users")  # contractor, out of scope, no account
new_hire = by_first["noah"]                      # joined Monday, never provisioned
returner = by_first["mia"]                       # came back; account still deactivated
wrong_role = by_first["liam"]                    # Viewer in Taskade; his department maps higher
missing_folder = by_first["sofia"]               # missing from her department's folder
renamed = by_first["julia"]                      # married; the workspace has the old name
disputed = by_first["emma"]                      # two accounts claim her

def role_for(p):
    order = ["Viewer", "Participant", "Collaborator", "Commenter", "Editor", "Maintainer", "Owner"]
    roles = [r for g, _, r in list(DEPARTMENTS.values()) + EXTRA if g in p["groups"]]
    return max(roles, key=order.index) if roles else "Viewer"

def groups_for(p):
    return sorted({w for g, w, _ in list(DEPARTMENTS.values()) + EXTRA if g in p["groups"]})

users, members = [], {}
def add_user(uid, p, active=True, role=None, display=None, user_name=None, external=True, email=None):
    users.append({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": uid,
        "userName": user_name or p["userName"],
        **({"externalId": p["id"]} if external else {}),
        "name": {"givenName": p["givenName"], "familyName": p["familyName"]},
        "displayName": display or p["displayName"],
        "emails": [{"value": email or p["email"], "type": "work", "primary": True}],
        "active": active,
        "roles": [{"value": role or role_for(p), "primary": True}],
    })

for n, p in enumerate(people):
    if p is new_hire or "Taskade Users" not in p["groups"]:
        continue
    uid = f"ws-{n + 1:04d}"
    if p is disputed:
        # Added by hand before SCIM was on, and again by push SCIM under an alias.
        add_user(uid, p, external=False)
        add_user("ws-0901", p, external=False, user_name="e.jones@example.com")
        continue
    add_user(uid, p,
             active=not (p is returner or p["status"] == "suspended"),
             role="Viewer" if p is wrong_role else None,
             display="Julia Smith-Old" if p is renamed else None)
    for g in groups_for(p):
        if p is missing_folder and g == DEPARTMENTS[p["department"]][1]:
            continue
        members.setdefault(g, []).append(uid)

# Nobody in the directory justifies these two.
users.append({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "ws-0902",
              "userName": "freelancer.max@gmail.com", "displayName": "Max (freelancer)",
              "emails": [{"value": "freelancer.max@gmail.com", "primary": True}],
              "active": True, "roles": [{"value": "Editor", "primary": True}]})
members.setdefault("Engineering", []).append("ws-0902")
users.append({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "ws-0999",
              "userName": "breakglass@example.com", "displayName": "Break-glass admin",
              "active": True, "roles": [{"value": "Owner", "primary": True}]})

groups = []
for k, name in enumerate(sorted({w for _, w, _ in list(DEPARTMENTS.values()) + EXTRA} - {"Finance"})):
    groups.append({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": f"grp-{k + 1:02d}",
                   "displayName": name, "members": [{"value": m} for m in members.get(name, [])]})
# "Finance" does not exist yet: the plan creates it.

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config", "demo")
with open(os.path.join(here, "directory.json"), "w") as f:
    json.dump({"users": people}, f, indent=1, ensure_ascii=False)
    f.write("\n")
with open(os.path.join(here, "workspace.json"), "w") as f:
    json.dump({"users": users, "groups": groups}, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"{len(people)} people, {len(users)} accounts, {len(groups)} groups")
