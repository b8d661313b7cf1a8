#!/usr/bin/env bash
# Save the committed experiment's state into benchmarks/results/paper, ready to commit:
# the model calls stored since the last snapshot (one gzip JSONL file; `memcollab cache
# import` of all of them restores the run on any machine) and parts.jsonl. Safe while the
# run is going: the cache is read, never locked for long.
set -euo pipefail
cd "$(dirname "$0")/.."
results=benchmarks/results/paper
run=runs/paper
memcollab="${MEMCOLLAB:-.venv/bin/memcollab}"
mkdir -p "$results/calls"
since="$(cat "$results/calls/LAST_EXPORT" 2>/dev/null || echo 0)"
now="$(date +%s)"  # taken before the export: the next one overlaps a little (import skips)
"$memcollab" cache export "$results/calls/$(date -u +%Y%m%dT%H%M%S).jsonl.gz" \
  --since "$since" --cache "$run/calls.sqlite"
echo "$now" > "$results/calls/LAST_EXPORT"
if [ -f "$run/parts.jsonl" ]; then cp "$run/parts.jsonl" "$results/parts.jsonl"; fi
