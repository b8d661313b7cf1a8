#!/usr/bin/env bash
# Save an experiment's state (argument: its name, default paper) into
# benchmarks/results/NAME, ready to commit:
# the model calls and the train, dev and eval trajectories stored since the last snapshot (one
# gzip JSONL file each), parts.jsonl, and once they exist gate.json, build_summary.json and
# the memory exports (memories/). Restoring is `memcollab cache import` of every
# calls file and `memcollab trajectories import` of every trajectories file (see
# COMMAND.md); the trajectories make a resume skip replaying the run. Safe while the run is
# going: the SQLite files are read, never locked for long.
set -euo pipefail
source "$(dirname "$0")/paper_run_paths.sh" "$@"
stamp="$(date -u +%Y%m%dT%H%M%S)"

# Runs one `... export FILE ...` command; drops FILE when it exported nothing new.
export_new() {
  local file="$1"; shift
  local said
  said="$("$@")"
  echo "$said"
  if [[ "$said" == "exported 0 "* ]]; then rm -f "$file"; fi
}

# Each export takes its start time before reading, so the next one overlaps a little (an
# import skips what it already has) and nothing stored during an export is missed.
mkdir -p "$results/calls"
since="$(cat "$results/calls/LAST_EXPORT" 2>/dev/null || echo 0)"
now="$(date +%s)"
export_new "$results/calls/$stamp.jsonl.gz" "$memcollab" cache export \
  "$results/calls/$stamp.jsonl.gz" --since "$since" --cache "$run/calls.sqlite"
echo "$now" > "$results/calls/LAST_EXPORT"

for phase in train dev eval; do
  if [ ! -f "$run/$phase/trajectories.sqlite" ]; then continue; fi
  out="$results/trajectories/$phase"
  mkdir -p "$out"
  since="$(cat "$out/LAST_EXPORT" 2>/dev/null || echo 0)"
  now="$(date +%s)"
  export_new "$out/$stamp.jsonl.gz" "$memcollab" trajectories export \
    "$run/$phase" "$out/$stamp.jsonl.gz" --since "$since"
  echo "$now" > "$out/LAST_EXPORT"
done

if [ -f "$run/parts.jsonl" ]; then cp "$run/parts.jsonl" "$results/parts.jsonl"; fi
# The utility gate's decisions (with [dev]): committed before the evaluation starts.
if [ -f "$run/gate.json" ]; then cp "$run/gate.json" "$results/gate.json"; fi
# The built memory: its summary and exports (the gate's decisions ride in their notes).
if [ -f "$run/build_summary.json" ]; then cp "$run/build_summary.json" "$results/build_summary.json"; fi
for export in "$run"/memories/*.jsonl; do
  if [ -f "$export" ]; then mkdir -p "$results/memories" && cp "$export" "$results/memories/"; fi
done
