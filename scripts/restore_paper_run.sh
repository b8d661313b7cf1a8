#!/usr/bin/env bash
# Rebuild runs/NAME (default: paper) from what scripts/snapshot_paper_run.sh NAME committed:
# the model calls, the train, dev and eval trajectories and parts.jsonl; first those of the
# experiment named in benchmarks/results/NAME/BASED_ON, if any (or only the calls of the one
# named in CALLS_FROM). Then `memcollab experiment run
# benchmarks/results/NAME/experiment.toml --cache runs/NAME/calls.sqlite` resumes where
# the last snapshot left off (a finished memory phase's memory comes from its exports).
# Safe to run again: every import skips what is already there.
set -euo pipefail
source "$(dirname "$0")/paper_run_paths.sh" "$@"
mkdir -p "$run"

# Imports one experiment's committed calls and trajectories into $run.
import_state() {
  local from="$1" phase
  local calls=("$from"/calls/*.jsonl.gz)
  if [ -e "${calls[0]}" ]; then
    "$memcollab" cache import "${calls[@]}" --cache "$run/calls.sqlite"
  fi
  for phase in train dev eval; do
    local archives=("$from/trajectories/$phase"/*.jsonl.gz)
    if [ -e "${archives[0]}" ]; then
      "$memcollab" trajectories import "$run/$phase" "${archives[@]}"
    fi
  done
}

# An experiment that extends another (BASED_ON names it) starts from that one's state.
if [ -f "$results/BASED_ON" ]; then
  import_state "benchmarks/results/$(cat "$results/BASED_ON")"
fi
# One that only reuses another's model calls (CALLS_FROM names it; its agent differs, so
# that run's trajectories are not its own) imports those calls and nothing else.
if [ -f "$results/CALLS_FROM" ]; then
  from_calls=("benchmarks/results/$(cat "$results/CALLS_FROM")"/calls/*.jsonl.gz)
  "$memcollab" cache import "${from_calls[@]}" --cache "$run/calls.sqlite"
fi
import_state "$results"
if [ -f "$results/parts.jsonl" ]; then cp "$results/parts.jsonl" "$run/parts.jsonl"; fi
# A finished memory phase: its memory from the committed exports (an import reproduces each
# record and the change log, so it is the memory the phase wrote, gate notes included once
# the dev phase has added them), then gate.json and build_summary.json beside it, so a
# resumed dev or eval phase finds the memory built. build_summary.json is copied last, so a
# restore cut off before it imports again (the imports skip what is already there).
if [ -f "$results/build_summary.json" ] && [ ! -e "$run/build_summary.json" ]; then
  for export in "$results"/memories/*.jsonl; do
    if [ -f "$export" ]; then "$memcollab" memory import "$run/memory.sqlite" "$export"; fi
  done
  if [ -f "$results/gate.json" ]; then cp "$results/gate.json" "$run/gate.json"; fi
  cp "$results/build_summary.json" "$run/build_summary.json"
fi
