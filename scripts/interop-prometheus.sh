#!/usr/bin/env bash
# Checks prometheus/seatwarden.rules.yml with Debian's Prometheus: installs the
# `prometheus` package (apt-get, if promtool or prometheus is missing, without
# leaving the package's own service running), then `promtool check rules` and the
# rules' unit tests (`promtool test rules`). The interop test
# `review_s50_prometheus::interop_prometheus_*` then runs a real Prometheus
# against a running daemon (scripts/interop.sh sets SEATWARDEN_PROMETHEUS_BIN).
#
#   bash scripts/interop-prometheus.sh      # prints the prometheus binary's path last
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "prometheus is not installed and this is not root: apt-get install prometheus" >&2
        exit 1
    fi
}

# The package would start a system Prometheus on port 9090: a policy-rc.d (unless
# one is there already) keeps the postinst from starting it, and one that runs
# all the same is stopped and disabled.
install_prometheus() {
    echo "installing prometheus (for promtool and the server) with apt-get" >&2
    local policy=/usr/sbin/policy-rc.d ours=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# scripts/interop-prometheus.sh: no service starts while prometheus installs\nexit 101\n' |
            as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        ours=1
    fi
    local apt=(apt-get -o Acquire::Retries=3 install -y -q --no-install-recommends prometheus)
    as_root env DEBIAN_FRONTEND=noninteractive "${apt[@]}" >&2 || {
        as_root apt-get -o Acquire::Retries=3 update -q >&2 &&
            as_root env DEBIAN_FRONTEND=noninteractive "${apt[@]}" >&2
    } || rc=$?
    [ "$ours" = 1 ] && as_root rm -f "$policy"
    [ "$rc" = 0 ] || exit "$rc"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
}

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    install_prometheus
fi

promtool --version 2>&1 | head -1 >&2
promtool check rules prometheus/seatwarden.rules.yml >&2
(cd prometheus && promtool test rules seatwarden.rules.test.yml) >&2
command -v prometheus
