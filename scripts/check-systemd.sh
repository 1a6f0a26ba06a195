#!/usr/bin/env bash
# Checks systemd/seatwarden.service the way CI should:
#   1. `systemd-analyze verify` — syntax, unknown keys, executables; any warning
#      about the unit counts as a failure (verify itself exits 0 on unknown keys);
#   2. `systemd-analyze security --offline=true` — overall exposure must stay
#      below 2.0 (override with SEATWARDEN_MAX_EXPOSURE, e.g. 1.5).
# The unit is checked from a temporary copy whose ExecStart points at a
# placeholder executable, so nothing needs to be installed.
# Skips (exit 0, with a message) when systemd-analyze is absent; needs systemd
# 252 or later for every directive used (verify warns about unknown keys).
#
#   bash scripts/check-systemd.sh [path/to/seatwarden.service]
set -euo pipefail
cd "$(dirname "$0")/.."

unit="${1:-systemd/seatwarden.service}"
max="${SEATWARDEN_MAX_EXPOSURE:-2.0}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-systemd: SKIPPED: systemd-analyze not found (install the systemd package to run this check)"
    exit 0
fi
[[ -f "$unit" ]] || { echo "check-systemd: $unit not found" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
name="$(basename "$unit")"
printf '#!/bin/sh\nexit 0\n' >"$tmp/seatwarden"
chmod 0755 "$tmp/seatwarden"
chmod 0755 "$tmp"    # readable when systemd-analyze runs as another user
sed "s#/usr/local/bin/seatwarden#$tmp/seatwarden#g" "$unit" >"$tmp/$name"

echo "check-systemd: $(systemd-analyze --version | head -n1)"
status=0

# 1. verify. Messages about other units on this host (its own unit files) are
# shown but do not fail the check; anything naming our unit does.
set +e
verify_out="$(systemd-analyze verify --man=no "$tmp/$name" 2>&1)"
verify_rc=$?
set -e
if [[ -n "$verify_out" ]]; then
    printf '%s\n' "$verify_out" | sed "s#$tmp/#<tmp>/#g"
fi
if (( verify_rc != 0 )); then
    echo "check-systemd: FAIL: systemd-analyze verify exited $verify_rc"
    status=1
elif grep -q -e "$tmp/$name" -e "$name" <<<"$verify_out"; then
    echo "check-systemd: FAIL: systemd-analyze verify reported problems with $name"
    status=1
else
    echo "check-systemd: verify OK"
fi

# 2. exposure.
set +e
security_out="$(systemd-analyze security --offline=true --no-pager "$tmp/$name" 2>&1)"
security_rc=$?
set -e
if [[ -n "${VERBOSE:-}" ]]; then
    printf '%s\n' "$security_out"
fi
line="$(grep -E 'Overall exposure level for' <<<"$security_out" || true)"
exposure="$(sed -nE 's/.*Overall exposure level for [^:]+: ([0-9]+\.[0-9]+).*/\1/p' <<<"$line")"
if [[ -z "$exposure" ]]; then
    printf '%s\n' "$security_out"
    echo "check-systemd: FAIL: no exposure level in the output of systemd-analyze security (exit $security_rc)"
    status=1
elif awk -v e="$exposure" -v m="$max" 'BEGIN { exit !(e + 0 >= m + 0) }'; then
    grep -E '^✗' <<<"$security_out" || true
    echo "check-systemd: FAIL: exposure $exposure is not below $max"
    status=1
else
    echo "check-systemd: exposure $exposure (below $max) OK"
fi

# 3. The nightly backup pair (systemd/seatwarden-backup.service and .timer):
# verify only. The service is a root oneshot that hands the work to
# seatwarden-admin, whose transient unit carries the service's sandbox; its own
# exposure score says nothing about that sandbox.
if [[ -z "${1:-}" ]]; then
    for extra in seatwarden-backup.service seatwarden-backup.timer; do
        [[ -f "systemd/$extra" ]] || { echo "check-systemd: systemd/$extra not found" >&2; exit 1; }
        sed "s#/usr/local/sbin/seatwarden-admin#$tmp/seatwarden#g" "systemd/$extra" >"$tmp/$extra"
    done
    set +e
    backup_out="$(systemd-analyze verify --man=no "$tmp/seatwarden-backup.service" "$tmp/seatwarden-backup.timer" 2>&1)"
    backup_rc=$?
    set -e
    if [[ -n "$backup_out" ]]; then
        printf '%s\n' "$backup_out" | sed "s#$tmp/#<tmp>/#g"
    fi
    if (( backup_rc != 0 )); then
        echo "check-systemd: FAIL: systemd-analyze verify exited $backup_rc for the backup units"
        status=1
    elif grep -q -e "seatwarden-backup" <<<"$backup_out"; then
        echo "check-systemd: FAIL: systemd-analyze verify reported problems with the backup units"
        status=1
    else
        echo "check-systemd: backup service and timer verify OK"
    fi
fi

exit "$status"
