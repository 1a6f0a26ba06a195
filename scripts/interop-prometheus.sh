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

# shellcheck source=scripts/interop-proc.sh
. scripts/interop-proc.sh

# The package would start a system Prometheus on port 9090: a policy-rc.d (unless
# one is there already) keeps the postinst from starting it, and one that runs
# all the same is stopped and disabled.
install_prometheus() {
    echo "installing prometheus (for promtool and the server) with apt-get" >&2
    apt_install_quietly prometheus
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
