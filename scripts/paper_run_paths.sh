# Sourced by the paper-run scripts: where the committed state and the working folder live.
# Leaves the shell in the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
results=benchmarks/results/paper
run=runs/paper
memcollab="${MEMCOLLAB:-.venv/bin/memcollab}"
