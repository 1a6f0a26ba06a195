#!/usr/bin/env bash
# LDAP connector benchmark: a private slapd (scripts/interop-ldap.sh) seeded with
# USERS people in GROUPS groupOfNames (each person in two groups, 1% locked), then
# `cargo bench --bench connectors -- ldap`: one full snapshot over plain LDAP and one
# over StartTLS, pages of 500, every group named (all expanded).
#
#   scripts/bench-ldap.sh [USERS] [GROUPS]      # default 50000 200; port 18690
set -euo pipefail
cd "$(dirname "$0")/.."

users="${1:-50000}"
groups="${2:-200}"
port="${SEATWARDEN_LDAP_BENCH_PORT:-18690}"
dir="${SEATWARDEN_INTEROP_DIR:-.interop}"
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
mkdir -p "$dir"
ldif="$dir/bench-ldap-$users-$groups.ldif"

python3 - "$users" "$groups" "$ldif" <<'PY'
import sys
users, groups, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
base = "dc=example,dc=com"
members = [[] for _ in range(groups)]
with open(path, "w") as f:
    f.write(f"dn: {base}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n")
    for ou in ("people", "groups", "services"):
        f.write(f"dn: ou={ou},{base}\nobjectClass: organizationalUnit\nou: {ou}\n\n")
    f.write(f"dn: cn=seatwarden,ou=services,{base}\nobjectClass: organizationalRole\n"
            "objectClass: simpleSecurityObject\ncn: seatwarden\nuserPassword: interop-bind-secret\n\n")
    for n in range(users):
        uid = f"u{n:06d}"
        f.write(f"dn: uid={uid},ou=people,{base}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                f"cn: Person {n}\nsn: {n}\ngivenName: Person\ndisplayName: Person {n}\n"
                f"mail: {uid}@example.com\ndepartmentNumber: Dept {n % 20}\n")
        if n % 100 == 0:
            f.write("pwdAccountLockedTime: 000001010000Z\n")
        f.write("\n")
        for g in {n % groups, (n * 7 + 3) % groups}:
            members[g].append(f"uid={uid},ou=people,{base}")
    for g in range(groups):
        f.write(f"dn: cn=Group {g:03d},ou=groups,{base}\nobjectClass: groupOfNames\ncn: Group {g:03d}\n")
        for m in members[g] or [f"cn=seatwarden,ou=services,{base}"]:
            f.write(f"member: {m}\n")
        f.write("\n")
PY

bash scripts/interop-ldap.sh stop "$port" >/dev/null 2>&1 || true
started=$(date +%s.%N)
bash scripts/interop-ldap.sh start "$port" "$ldif"
echo "slapadd + start: $(python3 -c "import time; print(round(time.time() - $started, 1))") s"
trap 'bash scripts/interop-ldap.sh stop "$port" >/dev/null 2>&1 || true' EXIT

SEATWARDEN_LDAP_URL="ldap://127.0.0.1:$port" SEATWARDEN_LDAP_CA="$dir/ldap-$port/ca.pem" \
    cargo bench --bench connectors -- ldap "$users" "$groups"
