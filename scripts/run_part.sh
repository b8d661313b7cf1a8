#!/usr/bin/env bash
# Run one part of an experiment (argument 1: its name; 2: the part's limit in seconds; the
# rest: extra `experiment run` options such as --phase train), niced so interactive work
# keeps the cores, and snapshot its state every 20 minutes and at the end
# (scripts/snapshot_paper_run.sh). The part stops cleanly (SIGTERM) at the limit; the next
# part resumes where it stopped. The data directory comes from MEMCOLLAB_DATA_DIR.
set -euo pipefail
name="${1:?experiment name}"; limit="${2:?limit in seconds}"; shift 2
source "$(dirname "$0")/paper_run_paths.sh" "$name"
: "${MEMCOLLAB_DATA_DIR:?set MEMCOLLAB_DATA_DIR to the folder holding gsm8k/, math/, mbpp/}"
mkdir -p "$run"
# --foreground: `timeout` signals only the run, once; without it, it also signals its own
# process group, and the run's second SIGTERM could cut short the shutdown that writes the
# part's line in parts.jsonl (part 14 of the v2 run lost its line that way).
nice -n 10 timeout --foreground -s TERM "$limit" "$memcollab" experiment run "$results/experiment.toml" \
  --cache "$run/calls.sqlite" "$@" &
pid=$!
echo "part of $name: pid $pid, limit ${limit}s"
while kill -0 "$pid" 2>/dev/null; do
  for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null && sleep 10; done
  scripts/snapshot_paper_run.sh "$name" || echo "snapshot failed; the next one retries"
done
wait "$pid" && status=0 || status=$?
scripts/snapshot_paper_run.sh "$name"
echo "part of $name ended with status $status"
exit "$status"
