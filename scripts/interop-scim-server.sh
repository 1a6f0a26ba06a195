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
# shellcheck source=scripts/interop-proc.sh
. "$(dirname "$0")/interop-proc.sh"

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

# What our server's command line contains (pid_runs): a pid file's pid that runs
# anything else is not ours to report or to kill.
our_cmdline=(scim2-server " --port $port ")

running() {
    [ -f "$pidfile" ] && pid_runs "$(cat "$pidfile")" "${our_cmdline[@]}"
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
    rm -f "$pidfile"
    # A leftover server (an earlier run whose pid file is gone) would answer the
    # readiness check below while ours dies on "address already in use".
    if answers; then
        echo "port $port is taken by $(port_listener "$port"); stop it or set SEATWARDEN_INTEROP_PORT" >&2
        exit 1
    fi
    mkdir -p "$dir"
    # The token goes on the command line (scim2-server has no other way); it is a
    # throwaway test token for a loopback-only server.
    nohup "$venv/bin/scim2-server" --hostname 127.0.0.1 --port "$port" \
        --bearer-token "$token" --dynamic-tenants "${config[@]}" >"$logfile" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"
    for _ in $(seq 1 100); do
        # Alive first (kill -0: until the child has exec'd the server, its command
        # line is still this script's), then answering on a socket it holds
        # itself: an answer alone may come from another process that took the port.
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "scim2-server exited; last log lines:" >&2
            tail -n 20 "$logfile" >&2 || true
            rm -f "$pidfile"
            exit 1
        fi
        if answers && port_listener_is "$pid" "$port"; then
            echo "scim2-server listening on http://127.0.0.1:$port (pid $pid, log $logfile)"
            exit 0
        fi
        sleep 0.1
    done
    if answers; then
        echo "port $port answers, but from $(port_listener "$port"), not scim2-server (pid $pid); log: $logfile" >&2
    else
        echo "scim2-server did not answer on port $port within 10 s; log: $logfile" >&2
    fi
    stop_pid "$pidfile" scim2-server "${our_cmdline[@]}" >/dev/null
    exit 1
    ;;
stop)
    stop_pid "$pidfile" "scim2-server on port $port" "${our_cmdline[@]}"
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
