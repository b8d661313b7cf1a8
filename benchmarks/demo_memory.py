"""Peak memory and wall time of `memcollab demo`, before and after its engine settings
changed (issue 29: at most 4 GB), side by side.

Two measurements, each in a child process so the peak is the child's own:

* `load`: the demo's model-loading path. For each setting set, each packaged model alone,
  then the three at once (as the demo's train phase holds them): build the engine, run one
  short greedy generation, read VmHWM / RssAnon / RssFile from /proc and the load seconds
  from the loading events. The "before" set is the demo of commit 2e1b8fd (packaged widths,
  the 1.5B at 4, n_ctx 4096, mapped weights); "after" is DEMO_MODEL_SETTINGS.
* `speed`: generation alone (load excluded), `rows` requests at once on each evaluated
  model, before and after alternating, wall and CPU seconds: did the smaller engines cost
  the demo time?
* `demo`: the whole `memcollab demo` in a fresh, empty MEMCOLLAB_CACHE_DIR (so the call
  cache answers nothing and every model loads), models taken from the assembled
  MEMCOLLAB_MODELS_DIR; records the child's maximum RSS (wait4, what `/usr/bin/time -v`
  reports), the peak of the summed RSS of its process tree (sampled every 0.25 s: sandbox
  subprocesses included), the wall time, and the phases' seconds from parts.jsonl.

    python benchmarks/demo_memory.py load [--settings before after]
    python benchmarks/demo_memory.py speed [--rounds 2 --rows 4]
    python benchmarks/demo_memory.py demo [--settings after] [--train 4 --test 3]

Writes benchmarks/results/demo/memory_{load,speed,demo}.json. Wall times on a
shared machine are noisy (the JSON records the load average and what else ran).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).parent)
RESULTS = Path(__file__).parent / "results" / "demo"
MODELS = ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma3-270m"]

# Engine settings per model. "before": the demo as it was (demo.py at 2e1b8fd: packaged
# widths 16, the 1.5B at 4, ModelSpec's n_ctx 4096, llama.cpp's mapped weights).
BEFORE: dict[str, dict[str, Any]] = {
    "qwen2.5-coder-1.5b": {"batch_width": 4},
    "qwen2.5-coder-0.5b": {},
    "gemma3-270m": {},
}


def settings(name: str) -> dict[str, dict[str, Any]]:
    """The per-model engine settings of a named set."""
    if name == "before":
        return BEFORE
    from memcollab.experiment.demo import DEMO_MODEL_SETTINGS

    return {m: dict(DEMO_MODEL_SETTINGS) for m in MODELS}


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile of a process, in MB."""
    wanted = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0]) // 1024
    return out


def machine() -> dict[str, Any]:
    """What the numbers depend on, and what else was running."""
    meminfo = {
        line.split(":")[0]: int(line.split()[1]) // 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith(("MemTotal", "MemAvailable"))
    }
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": version("llama-cpp-python"),
        "loadavg_1_5_15": list(os.getloadavg()),
        "mem_total_mb": meminfo.get("MemTotal"),
        "mem_available_mb": meminfo.get("MemAvailable"),
    }


# ---- load: runs in the child --------------------------------------------------------------


def child_load(names: list[str], per_model: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Load `names` at once with their settings, one short generation each; report memory."""
    from memcollab.llm import loading
    from memcollab.llm.base import ChatRequest, Decoding, user
    from memcollab.llm.fleet import Fleet

    start = proc_status()
    base = Fleet.default()
    fleet = Fleet([base.spec(n).model_copy(update=per_model[n]) for n in names])
    loads: dict[str, float] = {}
    began = time.perf_counter()
    with loading.listening(lambda e: loads.update({e.name: round(e.seconds, 2)} if e.done else {})):
        models = [fleet.model(n) for n in names]
        for model in models:
            model.engine()  # type: ignore[attr-defined]
    loaded = proc_status()
    loaded_s = time.perf_counter() - began
    request = ChatRequest(messages=(user("def add(a, b):"),), decoding=Decoding(max_tokens=8))
    for model in models:
        model.complete(request)
    return {
        "models": names,
        "settings": {n: per_model[n] for n in names},
        "load_seconds": loads,
        "load_wall_s": round(loaded_s, 2),
        "start": start,
        "loaded": loaded,
        "after_generation": proc_status(),
    }


def child_speed(name: str, per_model: dict[str, dict[str, Any]], rows: int) -> dict[str, Any]:
    """`rows` greedy requests at once on one model (as the demo's phases send them): wall
    and CPU seconds of the generation alone (the load is excluded)."""
    import resource
    from concurrent.futures import ThreadPoolExecutor

    from memcollab.llm.base import ChatRequest, Decoding, user
    from memcollab.llm.fleet import Fleet

    spec = Fleet.default().spec(name).model_copy(update=per_model[name])
    model: Any = Fleet([spec]).model(name)
    model.engine()
    requests = [
        ChatRequest(
            messages=(user(f"Write a Python function that returns the {i + 2}-th prime."),),
            decoding=Decoding(max_tokens=48),
        )
        for i in range(rows)
    ]
    cpu0, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with ThreadPoolExecutor(rows) as pool:
        done = list(pool.map(model.complete, requests))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": round(time.perf_counter() - began, 2),
        "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
        "completion_tokens": sum(c.usage.completion_tokens for c in done),
    }


def measure_speed(rounds: int, rows: int) -> dict[str, Any]:
    """Generation speed of each demo model before and after, alternating the two settings
    round by round so a shared machine's load falls on both alike."""
    out: dict[str, Any] = {}
    for name in MODELS[:2]:  # the evaluated models (Gemma only supplies contrast)
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for _ in range(rounds):
            for set_name in ("before", "after"):
                code = (
                    f"import json, sys; sys.path.insert(0, {HERE!r}); import demo_memory as d;"
                    f" print('RESULT' + json.dumps(d.child_speed({name!r},"
                    f" d.settings({set_name!r}), {rows})))"
                )
                done = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                )
                line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
                runs[set_name].append(json.loads(line[6:]))
        out[name] = {
            "rows_at_once": rows,
            **runs,
            "cpu_s_after_over_before": round(
                sum(r["cpu_s"] for r in runs["after"]) / sum(r["cpu_s"] for r in runs["before"]),
                3,
            ),
            "wall_s_after_over_before": round(
                sum(r["wall_s"] for r in runs["after"]) / sum(r["wall_s"] for r in runs["before"]),
                3,
            ),
        }
    return out


def run_child_load(names: list[str], set_name: str) -> dict[str, Any]:
    """`child_load` in a fresh interpreter; adds the child's maximum RSS from wait4."""
    code = (
        f"import json, sys; sys.path.insert(0, {HERE!r}); import demo_memory as d;"
        f" print('RESULT' + json.dumps(d.child_load({names!r}, d.settings({set_name!r}))))"
    )
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate()
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({names}, {set_name}): {err[-2000:]}")
    result = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT"))[6:])
    result["child_wall_s"] = round(wall, 2)
    return result


def measure_load(set_names: list[str], headroom_mb: int) -> dict[str, Any]:
    """Each model alone, then all three at once, per setting set."""
    out: dict[str, Any] = {}
    for set_name in set_names:
        alone = {m: run_child_load([m], set_name) for m in MODELS}
        # The three at once: skipped where the sum of the parts would leave the shared
        # machine less than `headroom_mb` (an OOM kill would hit another run).
        expected = sum(r["after_generation"]["VmHWM"] for r in alone.values())
        available = machine()["mem_available_mb"] or 0
        if available - expected >= headroom_mb:
            together: dict[str, Any] = run_child_load(MODELS, set_name)
        else:
            together = {
                "skipped": f"sum of the models alone {expected} MB; {available} MB available,"
                f" {headroom_mb} MB headroom asked"
            }
        out[set_name] = {
            "alone": alone,
            "sum_of_alone_peaks_mb": expected,
            "together": together,
        }
    return out


# ---- demo: the whole command --------------------------------------------------------------


def _tree_rss_mb(root: int) -> int:
    """Summed VmRSS of `root` and its descendants, in MB (0 for vanished processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        with contextlib.suppress(OSError):
            total += proc_status(pid).get("VmRSS", 0)
    return total


def measure_demo(set_name: str, train: int, test: int) -> dict[str, Any]:
    """`memcollab demo` in a child with a fresh cache dir; its peaks and wall time."""
    from memcollab.paths import models_dir

    cache = Path(tempfile.mkdtemp(prefix="memcollab-demo-memory-"))
    env = {
        **os.environ,
        "MEMCOLLAB_CACHE_DIR": str(cache),
        "MEMCOLLAB_MODELS_DIR": str(models_dir()),
        "COLUMNS": "160",
    }
    patch = ""
    if set_name == "before":  # the old demo fleet, in the child only
        patch = (
            f"import sys; sys.path.insert(0, {HERE!r}); import demo_memory as d;"
            " import memcollab.experiment.demo as demo; from memcollab.llm.fleet import Fleet;"
            " base = Fleet.default();"
            " demo.demo_fleet = lambda: Fleet([base.spec(n).model_copy(update=d.BEFORE[n])"
            " for n in base.names()]);"
        )
    args = ["demo", "--train", str(train), "--test", str(test)]
    code = patch + f"from memcollab.cli import main; raise SystemExit(main({args!r}))"
    command = [sys.executable, "-c", code]
    before = machine()
    began = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = {"tree_mb": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["tree_mb"] = max(peak["tree_mb"], _tree_rss_mb(proc.pid))
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    output = proc.stdout.read().decode("utf-8", errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    wall = time.perf_counter() - began
    parts = [json.loads(x) for x in (cache / "demo" / "parts.jsonl").read_text().splitlines()]
    return {
        "settings": settings(set_name),
        "command": f"MEMCOLLAB_CACHE_DIR={cache} memcollab demo --train {train} --test {test}",
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "max_rss_mb": usage.ru_maxrss // 1024,  # the demo process (as /usr/bin/time -v)
        # CPU seconds of the demo and its reaped subprocesses: less noisy than wall time on
        # a shared machine (2 busy llama.cpp threads: about 2 CPU-seconds per second).
        "cpu_user_s": round(usage.ru_utime, 1),
        "cpu_system_s": round(usage.ru_stime, 1),
        "peak_tree_rss_mb": peak["tree_mb"],  # with its sandbox subprocesses, sampled
        "phases": {p: v["seconds"] for p, v in parts[-1]["phases"].items()},
        "machine_before": before,
        "machine_after": machine(),
        "output_tail": output[-3000:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["load", "speed", "demo"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--settings", nargs="+", default=None, choices=["before", "after"])
    parser.add_argument("--train", type=int, default=4)
    parser.add_argument("--test", type=int, default=3)
    parser.add_argument("--headroom-mb", type=int, default=3000)
    args = parser.parse_args()
    command = "python benchmarks/demo_memory.py " + " ".join(sys.argv[1:])
    note = (
        "Wall times are noisy: the 2-core machine was shared with a niced experiment run and"
        " other workers (see machine.loadavg_1_5_15). Memory figures are not: they are the"
        " child's own peaks."
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.mode == "load":
        result: dict[str, Any] = {
            "command": command,
            "note": note,
            "machine": machine(),
            "results": measure_load(args.settings or ["before", "after"], args.headroom_mb),
        }
        path = RESULTS / "memory_load.json"
    elif args.mode == "speed":
        result = {
            "command": command,
            "note": note,
            "machine": machine(),
            "results": measure_speed(args.rounds, args.rows),
            "machine_after": machine(),
        }
        path = RESULTS / "memory_speed.json"
    else:
        result = {
            "command": command,
            "note": note,
            "results": {
                s: measure_demo(s, args.train, args.test) for s in args.settings or ["after"]
            },
        }
        path = RESULTS / "memory_demo.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2)[:4000])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
