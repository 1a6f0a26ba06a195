#!/usr/bin/env bash
# Runs the core benchmarks (one process per size, so peak memory is per size) in
# release mode and prints one JSON line per measurement. BENCHMARKS.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench core --no-run >/dev/null 2>&1 || cargo bench --bench core --no-run
for n in 10000 100000 1000000; do
  cargo bench -q --bench core -- plan "$n"
done
cargo bench -q --bench core -- ingest 100000
