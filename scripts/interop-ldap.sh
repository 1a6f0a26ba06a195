#!/usr/bin/env bash
# Starts or stops a private OpenLDAP slapd (Debian's slapd package, installed with
# apt-get if missing, without leaving the package's own system slapd running) that
# the LDAP connector's interop tests read. Everything lives in
# ${SEATWARDEN_INTEROP_DIR:-.interop}/ldap-PORT/: its slapd.conf, an mdb database
# seeded with slapadd from LDIF (default tests/fixtures/ldap/seed.ldif, suffix
# dc=example,dc=com), a throwaway CA (ca.pem) and server certificate for 127.0.0.1
# and localhost made with trustme from the interop venv, the pid file and slapd.log.
#
# Listeners: ldap://127.0.0.1:PORT (StartTLS available) and ldaps://127.0.0.1:PORT+1.
# Binding: cn=seatwarden,ou=services,dc=example,dc=com / interop-bind-secret reads
# everything but userPassword; an anonymous client sees no entries.
#
#   scripts/interop-ldap.sh start PORT [LDIF]   # returns once a bound search answers
#   scripts/interop-ldap.sh stop PORT           # stops it and removes ldap-PORT/
set -euo pipefail

dir="${SEATWARDEN_INTEROP_DIR:-.interop}"
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
venv="$dir/venv"
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/interop-proc.sh
. "$here/interop-proc.sh"

suffix="dc=example,dc=com"
bind_dn="cn=seatwarden,ou=services,$suffix"
bind_pw="interop-bind-secret"

usage() {
    echo "usage: $0 start PORT [LDIF] | stop PORT" >&2
    exit 2
}

[ $# -ge 2 ] || usage
cmd="$1"
port="$2"
case "$port" in '' | *[!0-9]*) usage ;; esac
[ "$port" -ge 1 ] && [ "$port" -le 65534 ] || usage
tls_port=$((port + 1))
state="$dir/ldap-$port"
pidfile="$state/slapd.pid"
logfile="$state/slapd.log"

# What our slapd's command line contains (pid_runs): a pid file's pid that runs
# anything else is not ours to report or to kill.
our_cmdline=(/usr/sbin/slapd " -f $state/slapd.conf ")

running() {
    [ -f "$pidfile" ] && pid_runs "$(cat "$pidfile")" "${our_cmdline[@]}"
}

# Installs slapd and ldap-utils. The package would set up and start a system slapd
# on port 389: debconf is told to skip its configuration, a policy-rc.d (unless one
# is there already) keeps the postinst from starting it, and a system slapd that
# runs all the same is stopped and disabled.
install_slapd() {
    echo "installing slapd and ldap-utils with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    echo "slapd slapd/no_configuration boolean true" | as_root debconf-set-selections
    apt_install_quietly slapd ldap-utils
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        as_root systemctl disable --now slapd >/dev/null 2>&1 || true
    fi
    local sys_pid
    sys_pid="$(cat /run/slapd/slapd.pid 2>/dev/null || true)"
    if [ -n "$sys_pid" ] && kill -0 "$sys_pid" 2>/dev/null; then
        echo "stopping the system slapd the package started (pid $sys_pid)"
        as_root kill "$sys_pid" || true
    fi
}

# Prints the python that has trustme: $SEATWARDEN_INTEROP_PYTHON, or the interop venv
# (made by scripts/interop-setup.sh when it has no trustme yet).
trustme_python() {
    if [ -n "${SEATWARDEN_INTEROP_PYTHON:-}" ]; then
        echo "$SEATWARDEN_INTEROP_PYTHON"
        return
    fi
    if ! "$venv/bin/python" -c 'import trustme' >/dev/null 2>&1; then
        SEATWARDEN_INTEROP_DIR="$dir" bash "$here/interop-setup.sh" >&2
    fi
    echo "$venv/bin/python"
}

# Whatever the LDIF holds, it has the suffix entry and the service account.
bound_search_finds_suffix() {
    LDAPNOINIT=1 ldapsearch -x -LLL -o nettimeout=2 -H "ldap://127.0.0.1:$port" \
        -D "$bind_dn" -w "$bind_pw" -s base -b "$suffix" '(objectClass=*)' dn 2>/dev/null |
        grep -q "^dn: $suffix"
}

case "$cmd" in
start)
    [ $# -le 3 ] || usage
    ldif="${3:-$here/../tests/fixtures/ldap/seed.ldif}"
    [ -r "$ldif" ] || {
        echo "cannot read $ldif" >&2
        exit 1
    }
    if [ ! -x /usr/sbin/slapd ] || ! command -v ldapsearch >/dev/null || ! command -v slapadd >/dev/null; then
        install_slapd
    fi
    if running; then
        echo "slapd already running on ldap://127.0.0.1:$port (pid $(cat "$pidfile"))"
        exit 0
    fi
    # A leftover slapd (an earlier run whose state is gone) would pass the
    # readiness check below while ours dies on "address already in use".
    if bound_search_finds_suffix; then
        echo "port $port is taken by $(port_listener "$port"); stop it or set SEATWARDEN_LDAP_PORT" >&2
        exit 1
    fi
    python="$(trustme_python)"
    rm -rf "$state"
    mkdir -p "$state/db"

    (umask 077 && "$python" - "$state" <<'PY'
import os, sys, trustme
state = sys.argv[1]
ca = trustme.CA()
cert = ca.issue_cert("127.0.0.1", "localhost")
ca.cert_pem.write_to_path(os.path.join(state, "ca.pem"))
with open(os.path.join(state, "server.pem"), "wb") as f:
    for pem in cert.cert_chain_pems:
        f.write(pem.bytes())
cert.private_key_pem.write_to_path(os.path.join(state, "server-key.pem"))
PY
    )
    chmod 644 "$state/ca.pem" "$state/server.pem"

    cat >"$state/slapd.conf" <<EOF
# Written by scripts/interop-ldap.sh for the LDAP interop tests; removed by stop.
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema

modulepath /usr/lib/ldap
moduleload back_mdb
# ppolicy: pwdAccountLockedTime (its schema is built into the module since 2.5).
moduleload ppolicy

pidfile $pidfile
argsfile $state/slapd.args

TLSCACertificateFile $state/ca.pem
TLSCertificateFile $state/server.pem
TLSCertificateKeyFile $state/server-key.pem

database mdb
suffix "$suffix"
rootdn "cn=admin,$suffix"
rootpw interop-admin-secret
directory $state/db
maxsize 104857600
sizelimit unlimited
index objectClass eq
index uid,cn eq
index member,uniqueMember eq

overlay ppolicy

# userPassword: usable to bind, readable by nobody. Everything else: bound users
# read, anonymous clients see nothing.
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by users read
    by * none
EOF

    if ! slapadd -f "$state/slapd.conf" -b "$suffix" -l "$ldif" >"$state/slapadd.log" 2>&1; then
        echo "slapadd could not load $ldif:" >&2
        cat "$state/slapadd.log" >&2
        exit 1
    fi

    # -d keeps slapd in the foreground with its log (stats: connections and
    # operations) on stderr, which goes to slapd.log.
    nohup /usr/sbin/slapd -d stats -f "$state/slapd.conf" \
        -h "ldap://127.0.0.1:$port/ ldaps://127.0.0.1:$tls_port/" >"$logfile" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"
    for _ in $(seq 1 150); do
        # Alive first (kill -0: until the child has exec'd slapd, its command line
        # is still this script's), then answering on a socket it holds itself.
        kill -0 "$pid" 2>/dev/null || break
        if bound_search_finds_suffix && port_listener_is "$pid" "$port"; then
            echo "slapd listening on ldap://127.0.0.1:$port (StartTLS) and ldaps://127.0.0.1:$tls_port (pid $pid, CA $state/ca.pem, log $logfile)"
            exit 0
        fi
        sleep 0.1
    done
    if running; then
        echo "slapd on port $port did not answer a bound search within 15 s; log:" >&2
    else
        echo "slapd exited; log:" >&2
    fi
    tail -n 40 "$logfile" >&2 || true
    stop_pid "$pidfile" slapd "${our_cmdline[@]}" >/dev/null
    exit 1
    ;;
stop)
    [ $# -eq 2 ] || usage
    stop_pid "$pidfile" "slapd on port $port" "${our_cmdline[@]}"
    rm -rf "$state"
    ;;
*) usage ;;
esac
