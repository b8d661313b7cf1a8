# Sourced by the run scripts: where an experiment's committed state and its working folder
# live. The experiment's name is the first argument (default: paper, the committed
# experiment). Leaves the shell in the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
name="${1:-paper}"
results="benchmarks/results/$name"
run="runs/$name"
memcollab="${MEMCOLLAB:-.venv/bin/memcollab}"
# MEMCOLLAB_CODE: a checkout pinned at the commit a long run keeps (e.g. a git worktree at a
# tag), so commits to this one between parts cannot change what a phase does; its src/ goes
# first on the import path (each part records the commit it ran: parts.jsonl "code").
if [ -n "${MEMCOLLAB_CODE:-}" ]; then
  if [ ! -f "$MEMCOLLAB_CODE/src/memcollab/__init__.py" ]; then
    echo "MEMCOLLAB_CODE=$MEMCOLLAB_CODE holds no src/memcollab" >&2
    exit 2
  fi
  MEMCOLLAB_CODE="$(cd "$MEMCOLLAB_CODE" && pwd)"  # absolute: the run may change folders
  export PYTHONPATH="$MEMCOLLAB_CODE/src${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ ! -f "$results/experiment.toml" ]; then
  echo "no experiment named '$name': $results/experiment.toml is missing" >&2
  exit 2
fi
