# Sourced by the run scripts: where an experiment's committed state and its working folder
# live. The experiment's name is the first argument (default: paper, the committed
# experiment). Leaves the shell in the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
name="${1:-paper}"
results="benchmarks/results/$name"
run="runs/$name"
memcollab="${MEMCOLLAB:-.venv/bin/memcollab}"
if [ ! -f "$results/experiment.toml" ]; then
  echo "no experiment named '$name': $results/experiment.toml is missing" >&2
  exit 2
fi
