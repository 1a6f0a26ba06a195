#!/usr/bin/env bash
# The interop suite: seatwarden against servers nobody on this team wrote.
# Installs PyPI scim2-server and aiosmtpd into a venv (scripts/interop-setup.sh) and
# Debian's slapd (scripts/interop-ldap.sh) and Prometheus (scripts/interop-prometheus.sh,
# which also checks and unit-tests prometheus/seatwarden.rules.yml with promtool),
# starts the servers on loopback ports, runs the `#[ignore]`d interop tests against
# them, and stops them. (Each Prometheus test starts and stops its own.)
#
#   bash scripts/interop.sh            # SEATWARDEN_INTEROP_PORT overrides the port (18650;
#                                      # port + 5 serves a scim2-server that pages by cursor only)
#                                      # SEATWARDEN_SMTP_PORT the SMTP base port (18660..18663)
#                                      # SEATWARDEN_LDAP_PORT slapd's ports (18680, ldaps 18681)
set -euo pipefail
cd "$(dirname "$0")/.."

port="${SEATWARDEN_INTEROP_PORT:-18650}"
token="interop-$RANDOM-$RANDOM-$$"

ldap_port="${SEATWARDEN_LDAP_PORT:-18680}"
interop_dir="${SEATWARDEN_INTEROP_DIR:-.interop}"
case "$interop_dir" in /*) ;; *) interop_dir="$PWD/$interop_dir" ;; esac

cursor_port=$((port + 5))
smtp_port="${SEATWARDEN_SMTP_PORT:-18660}"

# Set before anything starts, so a server whose start fails half-way (or a step
# cut off by its timeout) is stopped too. Each stop kills only a process its pid
# file names that still runs the program it started.
stop_servers() {
    bash scripts/interop-scim-server.sh stop "$port" >/dev/null 2>&1 || true
    bash scripts/interop-scim-server.sh stop "$cursor_port" >/dev/null 2>&1 || true
    bash scripts/interop-ldap.sh stop "$ldap_port" >/dev/null 2>&1 || true
    bash scripts/interop-smtp.sh stop "$smtp_port" >/dev/null 2>&1 || true
}
trap stop_servers EXIT

bash scripts/interop-setup.sh
SEATWARDEN_PROMETHEUS_BIN="$(bash scripts/interop-prometheus.sh)"
export SEATWARDEN_PROMETHEUS_BIN
bash scripts/interop-scim-server.sh stop "$port" >/dev/null 2>&1 || true
bash scripts/interop-scim-server.sh start "$port" "$token"
bash scripts/interop-scim-server.sh stop "$cursor_port" >/dev/null 2>&1 || true
bash scripts/interop-scim-server.sh start "$cursor_port" "$token" scripts/interop/scim2-server-cursor-config.json
bash scripts/interop-ldap.sh stop "$ldap_port" >/dev/null 2>&1 || true
bash scripts/interop-ldap.sh start "$ldap_port"

# `cargo test` that also fails when fewer than $2 tests ran: a renamed test or
# filter would otherwise "pass" with 0 tests run. Cut off after $1 seconds: a
# server that stops answering mid-test must fail the step, not hang CI until its
# own limit kills everything without a word (timeout exits 124, then the run fails
# through pipefail).
cargo_test_at_least() {
    local limit="$1" least="$2"
    shift 2
    local log ran
    log="$(mktemp)"
    timeout --kill-after=30 "$limit" cargo test "$@" 2>&1 | tee "$log"
    ran="$(sed -n 's/^test result: [A-Za-z]*\. \([0-9][0-9]*\) passed.*/\1/p' "$log" |
        awk '{ n += $1 } END { print n + 0 }')"
    rm -f "$log"
    if [ "$ran" -lt "$least" ]; then
        echo "cargo test $*: $ran tests passed, expected at least $least (a test or filter renamed?)" >&2
        exit 1
    fi
}

export SEATWARDEN_SCIM2_SERVER_URL="http://127.0.0.1:$port"
export SEATWARDEN_SCIM2_SERVER_TOKEN="$token"
export SEATWARDEN_SCIM2_CURSOR_SERVER_URL="http://127.0.0.1:$cursor_port"
export SEATWARDEN_LDAP_URL="ldap://127.0.0.1:$ldap_port"
export SEATWARDEN_LDAPS_URL="ldaps://127.0.0.1:$((ldap_port + 1))"
export SEATWARDEN_LDAP_CA="$interop_dir/ldap-$ldap_port/ca.pem"
# scim2-server is single-threaded with a listen backlog of 5: two tests at a time.
# (The filter also takes the `ldap::interop_*` tests against slapd, and
# `review_s44_connect::interop_ldap_*`: `check-config --connect` against slapd, and
# `review_s50_prometheus::interop_prometheus_*`: Prometheus scraping a daemon.)
# 16 tests: interop::*, ldap::interop_*, sandbox::interop_*, workspace::interop_*,
# review_s44_connect::interop_*, review_s50_prometheus::interop_*.
# About 2 minutes once built; 10 leaves room for building the test binary.
cargo_test_at_least 600 18 --test it interop -- --ignored --test-threads=2

# SMTP: plain, AUTH, STARTTLS+AUTH and SMTPS+AUTH listeners of PyPI aiosmtpd.
bash scripts/interop-smtp.sh stop "$smtp_port" >/dev/null 2>&1 || true
bash scripts/interop-smtp.sh start "$smtp_port"
export SEATWARDEN_SMTP_PORT="$smtp_port"
export SEATWARDEN_SMTP_DIR="$interop_dir/smtp-$smtp_port"
export SEATWARDEN_INTEROP_PYTHON="$interop_dir/venv/bin/python"
# 10 tests: email::smtp_*.
cargo_test_at_least 300 10 --test it email::smtp -- --ignored --test-threads=2
