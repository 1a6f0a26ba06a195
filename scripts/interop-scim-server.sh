#!/usr/bin/env bash
# Starts or stops scim2-server (installed by scripts/interop-setup.sh) in the
# background, one process per port, with dynamic tenants: every test uses its own
# base URL http://127.0.0.1:PORT/<tenant>/v2 and so its own empty store.
#
#   scripts/interop-scim-server.sh start PORT TOKEN [CONFIG]   # returns once it answers
#       CONFIG: a ServiceProviderConfig JSON file to announce instead of the default
#       (scripts/interop/scim2-server-cursor-config.json pages by cursor only)
#   scripts/interop-scim-server.sh stop PORT
#   scripts/interop-scim-server.sh status PORT
set -euo pipefail

dir="${SEATWARDEN_INTEROP_DIR:-.interop}"
venv="$dir/venv"

usage() {
    echo "usage: $0 start PORT TOKEN [CONFIG] | stop PORT | status PORT" >&2
    exit 2
}

[ $# -ge 2 ] || usage
cmd="$1"
port="$2"
case "$port" in '' | *[!0-9]*) usage ;; esac
pidfile="$dir/scim2-server-$port.pid"
logfile="$dir/scim2-server-$port.log"

running() {
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

answers() {
    # Any HTTP answer will do (401 without a token is an answer).
    "$venv/bin/python" - "$port" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ready/v2/ServiceProviderConfig", timeout=1)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
PY
}

case "$cmd" in
start)
    [ $# -eq 3 ] || [ $# -eq 4 ] || usage
    token="$3"
    config=()
    if [ $# -eq 4 ]; then
        [ -f "$4" ] || { echo "no ServiceProviderConfig file $4" >&2; exit 1; }
        config=(--service-provider-config "$4")
    fi
    if [ ! -x "$venv/bin/scim2-server" ]; then
        echo "scim2-server is not installed; run scripts/interop-setup.sh first" >&2
        exit 1
    fi
    if running; then
        echo "scim2-server already running on port $port (pid $(cat "$pidfile"))"
        exit 0
    fi
    mkdir -p "$dir"
    # The token goes on the command line (scim2-server has no other way); it is a
    # throwaway test token for a loopback-only server.
    nohup "$venv/bin/scim2-server" --hostname 127.0.0.1 --port "$port" \
        --bearer-token "$token" --dynamic-tenants "${config[@]}" >"$logfile" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
        if answers; then
            echo "scim2-server listening on http://127.0.0.1:$port (pid $(cat "$pidfile"), log $logfile)"
            exit 0
        fi
        if ! running; then
            echo "scim2-server exited; last log lines:" >&2
            tail -n 20 "$logfile" >&2 || true
            rm -f "$pidfile"
            exit 1
        fi
        sleep 0.1
    done
    echo "scim2-server did not answer on port $port within 10 s; log: $logfile" >&2
    exit 1
    ;;
stop)
    if running; then
        pid="$(cat "$pidfile")"
        kill "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        echo "scim2-server on port $port stopped"
    fi
    rm -f "$pidfile"
    ;;
status)
    if running && answers; then
        echo "scim2-server running on port $port (pid $(cat "$pidfile"))"
    else
        echo "scim2-server not running on port $port"
        exit 1
    fi
    ;;
*) usage ;;
esac
