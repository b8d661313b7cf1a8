#!/usr/bin/env bash
# Rebuild runs/paper from what scripts/snapshot_paper_run.sh committed: the model calls, the
# train and eval trajectories and parts.jsonl. Then `memcollab experiment run
# benchmarks/results/paper/experiment.toml --cache runs/paper/calls.sqlite` resumes where
# the last snapshot left off (the memories are rebuilt from the replayed calls in seconds).
# Safe to run again: every import skips what is already there.
set -euo pipefail
source "$(dirname "$0")/paper_run_paths.sh"
mkdir -p "$run"
"$memcollab" cache import "$results"/calls/*.jsonl.gz --cache "$run/calls.sqlite"
for phase in train eval; do
  archives=("$results/trajectories/$phase"/*.jsonl.gz)
  if [ -e "${archives[0]}" ]; then
    "$memcollab" trajectories import "$run/$phase" "${archives[@]}"
  fi
done
cp "$results/parts.jsonl" "$run/parts.jsonl"
