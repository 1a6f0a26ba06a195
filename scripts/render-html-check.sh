#!/usr/bin/env bash
# Renders seatwarden's HTML report and digest in headless Chromium (Debian's
# `chromium` package, installed with apt when missing: CI runs as root on a fresh
# machine) and checks the screenshots are not blank. The HTML is written by the
# binary from the demo's state (`seatwarden demo`), so what is checked is what a
# mail client would get.
#
#   bash scripts/render-html-check.sh        # PNGs in target/render-check/
set -euo pipefail
cd "$(dirname "$0")/.."

out="target/render-check"
rm -rf "$out"
mkdir -p "$out"

if ! command -v chromium >/dev/null 2>&1; then
    echo "installing Debian's chromium package"
    export DEBIAN_FRONTEND=noninteractive
    # A mirror that drops a connection once should not fail CI: each download is
    # tried up to three more times.
    apt-get -o Acquire::Retries=3 update -qq
    apt-get -o Acquire::Retries=3 install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

# `cargo test --no-run` builds the binary with the same features as the test suite
# (dev-dependencies unify features), so after `cargo test` nothing is rebuilt.
cargo test --no-run --quiet
bin="target/debug/seatwarden"
# The demo runs in seconds; a hang must fail this step, not eat the CI budget.
timeout --kill-after=10 300 "$bin" demo --dir "$out/demo" >"$out/demo.txt"
config="$out/demo/seatwarden.toml"
# The demo's reconcile run: the report with the most to show.
reconcile_run="$(sed -n 's/.*run \([0-9][0-9]*\) (reconcile).*/\1/p' "$out/demo.txt" | head -1)"
"$bin" --config "$config" report --run "${reconcile_run:-latest}" --format html >"$out/report.html"
"$bin" --config "$config" digest --period 24h --format html >"$out/digest.html"

# A throwaway profile: nothing read from or left in the invoking user's ~/.config.
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT

for page in report digest; do
    # --no-sandbox: Chromium refuses to run its sandbox as root (CI is root).
    # --disable-background-networking: no update, safe-browsing or metrics requests
    # from CI. A screenshot takes seconds; a Chromium that hangs (a GPU or D-Bus
    # wait) is cut off after 2 minutes, its helper processes with it (timeout
    # signals its whole process group), and the step fails with its log.
    if ! timeout --kill-after=10 120 chromium --headless --no-sandbox --disable-gpu \
        --disable-background-networking --user-data-dir="$profile" --hide-scrollbars \
        --window-size=800,1400 --screenshot="$PWD/$out/$page.png" \
        "file://$PWD/$out/$page.html" >"$out/$page-chromium.log" 2>&1; then
        echo "chromium failed or timed out on $page.html; log:" >&2
        tail -n 40 "$out/$page-chromium.log" >&2 || true
        exit 1
    fi
    python3 scripts/png-not-blank.py "$out/$page.png"
done
