# shellcheck shell=bash
# Sourced by the interop start/stop scripts (bash): which process a pid file names,
# and who listens on a port. A pid file can outlive its process (a crash, a reboot,
# a killed CI job), and the kernel reuses pids: before it is signalled, a pid must
# still run the program the script started, and a server that answers on the port
# must be the one just started, not a leftover from an earlier run. Also how a
# Debian package a script needs is installed (apt_install_quietly).

# as_root COMMAND…: runs it as root: directly, or through sudo.
as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "this needs root, and there is no sudo: $*" >&2
        exit 1
    fi
}

# apt_install_quietly PACKAGE…: apt-get installs them without starting the
# services they ship: a policy-rc.d (unless one is there already) keeps their
# postinst from starting one (a system slapd on 389, a Prometheus on 9090). Each
# download is tried up to three more times (a mirror that drops a connection
# once should not fail the suite); a failed install is tried again once after an
# apt-get update. apt's output goes to stderr.
apt_install_quietly() {
    local policy=/usr/sbin/policy-rc.d ours=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# seatwarden interop scripts: no service starts while packages install\nexit 101\n' |
            as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        ours=1
    fi
    local apt=(apt-get -o Acquire::Retries=3 install -y -q --no-install-recommends "$@")
    {
        as_root env DEBIAN_FRONTEND=noninteractive "${apt[@]}" || {
            as_root apt-get -o Acquire::Retries=3 update -q &&
                as_root env DEBIAN_FRONTEND=noninteractive "${apt[@]}"
        }
    } >&2 || rc=$?
    if [ "$ours" = 1 ]; then
        as_root rm -f "$policy"
    fi
    return "$rc"
}

# pid_runs PID FRAGMENT…: PID is alive and its command line (arguments joined by
# spaces, with one after the last) contains every FRAGMENT.
pid_runs() {
    local pid="$1" cmdline fragment
    shift
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
    [ -n "$cmdline" ] || return 1 # a zombie: already gone
    for fragment in "$@"; do
        case "$cmdline" in *"$fragment"*) ;; *) return 1 ;; esac
    done
}

# port_listener_is PID PORT: a TCP socket listening on PORT belongs to PID. Where
# /proc/net/tcp cannot be read (not Linux) nothing can be told: true.
port_listener_is() {
    local pid="$1" port="$2" inode fd
    [ -r /proc/net/tcp ] || return 0
    # shellcheck disable=SC2013 # socket inodes: one number a word
    for inode in $(awk -v p="$(printf ':%04X' "$port")" \
        '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
        for fd in /proc/"$pid"/fd/*; do
            [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ] && return 0
        done
    done
    return 1
}

# port_listener PORT: prints "pid N" (or "another user's process" when the socket is
# not ours to look at) for what listens on PORT, for error messages.
port_listener() {
    local port="$1" inode fd
    # shellcheck disable=SC2013 # socket inodes: one number a word
    for inode in $(awk -v p="$(printf ':%04X' "$port")" \
        '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
        for fd in /proc/[0-9]*/fd/*; do
            if [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ]; then
                fd="${fd#/proc/}"
                echo "pid ${fd%%/*}: $(tr '\0' ' ' 2>/dev/null <"/proc/${fd%%/*}/cmdline")"
                return 0
            fi
        done
        echo "another user's process"
        return 0
    done
    echo "an unknown process"
}

# stop_pid PIDFILE NAME FRAGMENT…: stops the process PIDFILE names if it still runs
# the program (see pid_runs), TERM then KILL after 5 s; a pid file naming another
# process is only removed. Prints what it did; always removes PIDFILE.
stop_pid() {
    local pidfile="$1" name="$2" pid
    shift 2
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if pid_runs "$pid" "$@"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            pid_runs "$pid" "$@" || break
            sleep 0.1
        done
        if pid_runs "$pid" "$@"; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        echo "$name stopped (pid $pid)"
    elif [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "$pidfile names pid $pid, which is not $name: left alone, pid file removed" >&2
    fi
    rm -f "$pidfile"
}
