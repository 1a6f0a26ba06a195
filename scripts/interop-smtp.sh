#!/usr/bin/env bash
# Starts or stops the aiosmtpd servers the SMTP interop tests deliver to
# (scripts/interop-smtp-server.py: plain, AUTH, STARTTLS+AUTH and SMTPS+AUTH on
# BASE_PORT..BASE_PORT+3), in the background. Messages, the throwaway CA
# (ca.pem) and the AUTH password (password, a fresh random one each start) live in
# ${SEATWARDEN_INTEROP_DIR:-.interop}/smtp-BASE_PORT/.
#
#   scripts/interop-smtp.sh start BASE_PORT   # returns once every listener is up
#   scripts/interop-smtp.sh stop BASE_PORT
set -euo pipefail

dir="${SEATWARDEN_INTEROP_DIR:-.interop}"
venv="$dir/venv"
# shellcheck source=scripts/interop-proc.sh
. "$(dirname "$0")/interop-proc.sh"

usage() {
    echo "usage: $0 start BASE_PORT | stop BASE_PORT" >&2
    exit 2
}

[ $# -eq 2 ] || usage
cmd="$1"
port="$2"
case "$port" in '' | *[!0-9]*) usage ;; esac
state="$dir/smtp-$port"
pidfile="$dir/smtp-$port.pid"
logfile="$dir/smtp-$port.log"

# What our server's command line contains (pid_runs): a pid file's pid that runs
# anything else is not ours to report or to kill.
our_cmdline=(interop-smtp-server.py " $state $port ")

running() {
    [ -f "$pidfile" ] && pid_runs "$(cat "$pidfile")" "${our_cmdline[@]}"
}

case "$cmd" in
start)
    if [ ! -x "$venv/bin/python" ]; then
        echo "the interop venv is missing; run scripts/interop-setup.sh first" >&2
        exit 1
    fi
    if running; then
        echo "SMTP servers already running on $port.. (pid $(cat "$pidfile"))"
        exit 0
    fi
    rm -f "$pidfile"
    rm -rf "$state"
    mkdir -p "$state"
    (umask 077 && "$venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(18))' >"$state/password")
    nohup "$venv/bin/python" scripts/interop-smtp-server.py "$state" "$port" \
        seatwarden-interop "$state/password" >"$logfile" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"
    for _ in $(seq 1 100); do
        [ -f "$state/ready" ] && {
            echo "aiosmtpd listening on 127.0.0.1:$port (plain), $((port + 1)) (auth), $((port + 2)) (starttls), $((port + 3)) (smtps)"
            exit 0
        }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "the SMTP servers did not start; log:" >&2
    cat "$logfile" >&2
    exit 1
    ;;
stop)
    stop_pid "$pidfile" "the SMTP servers on $port.." "${our_cmdline[@]}"
    ;;
*) usage ;;
esac
