#!/usr/bin/env python3
"""Same-day deprovisioning latency of the real daemon (issue 4's benchmark).

Starts `seatwarden sandbox` (empty), provisions PEOPLE synthetic people into it with
one `seatwarden reconcile`, starts `seatwarden daemon` with the sweep on SWEEP, then
removes LEAVERS people from the directory file at random moments over SPREAD seconds
(atomic rename, as an export job would) and polls `GET /status` until every one is
verified deactivated. Prints one JSON line: the latency from the directory change to
the verified deactivation (p50, p99, max), and from the sweep's detection to
verification. Goal: p99 under the sweep interval + 30 s.

    python3 scripts/bench-deprovision.py [--bin target/release/seatwarden]
        [--people 2000] [--leavers 100] [--spread 300] [--sweep "0 * * * * *"]
"""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_ts(text):
    # RFC 3339 with nanoseconds: keep microseconds for Python.
    date, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(date + "." + (frac + "000000")[:6] + "+00:00").timestamp()


def write_directory(path, users):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"users": users}, f)
    os.replace(tmp, path)


def quantile(values, q):
    values = sorted(values)
    rank = max(1, int(-(-q * len(values) // 1)))
    return values[rank - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/seatwarden")
    ap.add_argument("--people", type=int, default=2000)
    ap.add_argument("--leavers", type=int, default=100)
    ap.add_argument("--spread", type=float, default=300.0)
    ap.add_argument("--sweep", default="0 * * * * *")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    binary = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="seatwarden-bench-")
    token = "bench-token"
    scim_port, http_port = free_port(), free_port()
    users = [
        {
            "id": f"00u{i:06}",
            "userName": f"person{i}@example.com",
            "email": f"person{i}@example.com",
            "givenName": f"Person{i}",
            "familyName": "Bench",
            "status": "active",
            "groups": ["Taskade Users"],
        }
        for i in range(args.people)
    ]
    directory = os.path.join(work, "directory.json")
    write_directory(directory, users)
    config = os.path.join(work, "seatwarden.toml")
    with open(config, "w") as f:
        f.write(f"""[directory]
kind = "file"
path = "directory.json"

[workspace]
url = "http://127.0.0.1:{scim_port}/scim/v2"
token = "{token}"
max_concurrency = 8
requests_per_second = 2000

[policy]
scope_groups = ["Taskade Users"]

[safety]
max_deprovisions = 1000
max_deprovision_percent = 100

[state]
path = "state.db"

[schedule]
reconcile = "0 0 1 1 *"
sweep = "{args.sweep}"

[http]
listen = "127.0.0.1:{http_port}"
""")
    procs = []
    try:
        procs.append(subprocess.Popen(
            [binary, "sandbox", "--port", str(scim_port), "--token", token],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        subprocess.run([binary, "--config", config, "reconcile"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = open(os.path.join(work, "daemon.log"), "w")
        procs.append(subprocess.Popen([binary, "--config", config, "daemon"],
                                      stdout=subprocess.DEVNULL, stderr=log))
        base = f"http://127.0.0.1:{http_port}"
        for _ in range(300):
            try:
                if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                    break
            except Exception:
                pass
            time.sleep(0.2)
        else:
            sys.exit("daemon never became ready")

        leavers = rng.sample(range(args.people), args.leavers)
        moments = sorted(rng.uniform(0, args.spread) for _ in leavers)
        removed_at = {}
        gone = set()
        t0 = time.time()
        for index, moment in zip(leavers, moments):
            delay = t0 + moment - time.time()
            if delay > 0:
                time.sleep(delay)
            gone.add(index)
            write_directory(directory, [u for i, u in enumerate(users) if i not in gone])
            removed_at[users[index]["userName"]] = time.time()
            print(f"\r{len(gone)}/{args.leavers} removed", end="", file=sys.stderr)
        print(file=sys.stderr)

        deadline = time.time() + 300
        verified = {}
        while time.time() < deadline:
            status = json.load(urllib.request.urlopen(base + "/status", timeout=5))
            for line in status["deprovisions"]["verified_last_24h"]:
                if line["user_name"] in removed_at:
                    verified[line["user_name"]] = line
            print(f"\r{len(verified)}/{args.leavers} verified", end="", file=sys.stderr)
            if len(verified) == len(removed_at):
                break
            time.sleep(1.0)
        print(file=sys.stderr)
        if len(verified) < len(removed_at):
            sys.exit(f"only {len(verified)} of {len(removed_at)} verified within 300 s")

        end_to_end = [parse_ts(v["verified_at"]) - removed_at[u] for u, v in verified.items()]
        ledger = [parse_ts(v["verified_at"]) - parse_ts(v["detected_at"])
                  for v in verified.values()]
        sweep_s = {"0 * * * * *": 60}.get(args.sweep)
        print(json.dumps({
            "bench": "deprovision_latency",
            "people": args.people,
            "leavers": args.leavers,
            "spread_s": args.spread,
            "sweep": args.sweep,
            "change_to_verified_p50_s": round(quantile(end_to_end, 0.5), 1),
            "change_to_verified_p99_s": round(quantile(end_to_end, 0.99), 1),
            "change_to_verified_max_s": round(max(end_to_end), 1),
            "detected_to_verified_p50_s": round(quantile(ledger, 0.5), 2),
            "detected_to_verified_p99_s": round(quantile(ledger, 0.99), 2),
            "goal_p99_s": sweep_s + 30 if sweep_s else None,
        }))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
