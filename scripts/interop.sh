#!/usr/bin/env bash
# The interop suite: seatwarden against servers nobody on this team wrote.
# Installs PyPI scim2-server into a venv (scripts/interop-setup.sh), starts it on a
# loopback port, runs the `#[ignore]`d interop tests against it, and stops it.
#
#   bash scripts/interop.sh            # SEATWARDEN_INTEROP_PORT overrides the port (18650)
set -euo pipefail
cd "$(dirname "$0")/.."

port="${SEATWARDEN_INTEROP_PORT:-18650}"
token="interop-$RANDOM-$RANDOM-$$"

bash scripts/interop-setup.sh
bash scripts/interop-scim-server.sh stop "$port" >/dev/null 2>&1 || true
bash scripts/interop-scim-server.sh start "$port" "$token"
trap 'bash scripts/interop-scim-server.sh stop "$port" >/dev/null 2>&1 || true' EXIT

export SEATWARDEN_SCIM2_SERVER_URL="http://127.0.0.1:$port"
export SEATWARDEN_SCIM2_SERVER_TOKEN="$token"
# scim2-server is single-threaded with a listen backlog of 5: two tests at a time.
cargo test --test it interop -- --ignored --test-threads=2
