#!/usr/bin/env bash
# The end-to-end benchmark against PyPI scim2-server (issue 3): 2,000 people from
# an empty workspace and from a 5%-drift one, each compared with its own floor.
# Installs and starts scim2-server like the interop suite (scripts/interop-setup.sh),
# on its own port, and stops it afterwards. Prints one JSON line per scenario.
#
#   scripts/bench-scim2.sh [PEOPLE] [REPEAT]     # defaults: 2000 people, best of 3
set -euo pipefail
cd "$(dirname "$0")/.."

people="${1:-2000}"
repeat="${2:-3}"
port="${SEATWARDEN_BENCH_SCIM2_PORT:-18670}"
token="bench-$RANDOM-$RANDOM-$$"

bash scripts/interop-setup.sh >/dev/null
bash scripts/interop-scim-server.sh stop "$port" >/dev/null 2>&1 || true
bash scripts/interop-scim-server.sh start "$port" "$token"
trap 'bash scripts/interop-scim-server.sh stop "$port" >/dev/null 2>&1 || true' EXIT

export SEATWARDEN_SCIM2_SERVER_URL="http://127.0.0.1:$port"
export SEATWARDEN_SCIM2_SERVER_TOKEN="$token"
cargo bench --bench e2e --no-run >/dev/null 2>&1 || cargo bench --bench e2e --no-run
for scenario in drift empty; do
  cargo bench -q --bench e2e -- "$scenario" "$people" 0 --server scim2 --repeat "$repeat"
done
