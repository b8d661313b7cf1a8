"""Is the v1 screen unchanged? Distil the committed memory's 169 pairs with the default
distiller (replay-only) and print a digest of every result (status, kept constraints,
rejection counts, candidates) and of the counters.

    python benchmarks/screen_v1_check.py --cache CALLS.sqlite

Run it with this code and with the code before the v2 screen (a `git archive` of that
commit's src/ on PYTHONPATH, this file run from the working tree): equal digests mean
the same inputs give the same outputs (benchmarks/results/screen/COMMAND.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screen_pairs import DISTILLER, paper_pairs, training  # noqa: E402

from memcollab.llm.base import Decoding  # noqa: E402
from memcollab.llm.cache import CallCache, Gateway  # noqa: E402
from memcollab.llm.fleet import Fleet  # noqa: E402
from memcollab.memory.distill import Distiller, DistillStats  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    args = parser.parse_args()
    trajectories, tasks, strengths = training()
    gateway = Gateway(CallCache(args.cache), replay_only=True)
    distiller = Distiller(  # no screen argument: older code has none
        gateway.bind(Fleet.default().model(DISTILLER)),
        max_constraints=3,
        max_prompt_chars=4000,
        decoding=Decoding(temperature=0.0, max_tokens=200),
    )
    stats = DistillStats()
    results = []
    for pair in paper_pairs(trajectories, strengths):
        r = distiller.distill(tasks[pair.task_id], pair)
        stats.add(r)
        results.append(
            [
                pair.task_id,
                r.status,
                [[c.when, c.enforce, c.avoid] for c in r.constraints],
                dict(sorted(r.rejected.items())),
                r.candidates,
            ]
        )
    blob = json.dumps({"stats": stats.as_dict(), "results": results}, sort_keys=True)
    print(json.dumps({"pairs": len(results), "sha256": hashlib.sha256(blob.encode()).hexdigest()}))


if __name__ == "__main__":
    main()
