"""Development only (MBPP validation): on the live repair arm's resampled steps whose
resample still repeated an earlier candidate, how often does another re-ask give a new one?

Usage: python benchmarks/repair_variants.py [MODEL [VARIANT ...]]. Reads the live-arm
trajectories and call cache that benchmarks/repair_loop.py left in its --work folder
(REPAIR_WORK, default /work/cache-repair, as there); writes
benchmarks/results/repair/variants.MODEL.json.
"""

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from memcollab.agent import resample_seed
from memcollab.collect import TrajectoryStore
from memcollab.domains import python_blocks
from memcollab.domains.code_repair import normalise_code
from memcollab.llm.base import ChatRequest, Message
from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.fleet import Fleet

WORK = Path(os.environ.get("REPAIR_WORK", "/work/cache-repair"))
NUDGE = (
    "Your reply repeats code you already sent, which fails this test in the same way. "
    "Do not send that code again: find the actual mistake (compare what the code returned "
    "with what the test expects) and write a different, corrected solution in one "
    "```python block."
)
model_name = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-1.5b"
fleet = Fleet.default()
gw = Gateway(CallCache(str(WORK / "calls.sqlite")))
client = gw.bind(fleet.model(model_name))
dec = fleet.spec(model_name).decoding.model_copy(update={"max_tokens": 384})
cases = []
for t in TrajectoryStore.in_dir(WORK / f"{model_name}-live"):
    seen = []
    assistant_idx = [i for i, m in enumerate(t.messages) if m.role == "assistant"]
    for st, ai in zip(t.steps, assistant_idx, strict=False):
        b = python_blocks(st.reply)
        c = normalise_code(b[-1]) if b else None
        if st.resampled and c in seen:
            cases.append((t.task_id, st.turn, t.messages[:ai], st.reply, set(seen)))
        if c:
            seen.append(c)
print(len(cases), "cases", flush=True)
variants = {
    "temp1.0": lambda ctx, rep, tid, turn: ChatRequest(
        messages=tuple(ctx),
        decoding=dec.model_copy(update={"temperature": 1.0, "seed": resample_seed(tid, turn)}),
    ),
    "nudge0.7": lambda ctx, rep, tid, turn: ChatRequest(
        messages=tuple(ctx)
        + (Message(role="assistant", content=rep), Message(role="user", content=NUDGE)),
        decoding=dec.model_copy(update={"temperature": 0.7, "seed": resample_seed(tid, turn)}),
    ),
    "nudge0": lambda ctx, rep, tid, turn: ChatRequest(
        messages=tuple(ctx)
        + (Message(role="assistant", content=rep), Message(role="user", content=NUDGE)),
        decoding=dec,
    ),
}
chosen = sys.argv[2:] or list(variants)
out = {}
for name in chosen:
    make = variants[name]

    def run(case, make=make):
        tid, turn, ctx, rep, seen = case
        text = client.complete(make(ctx, rep, tid, turn)).text
        b = python_blocks(text)
        return b and normalise_code(b[-1]) not in seen

    with ThreadPoolExecutor(8) as ex:
        res = list(ex.map(run, cases))
    out[name] = {"cases": len(cases), "new": sum(bool(r) for r in res)}
    print(name, out[name], flush=True)
out["command"] = "python " + " ".join(sys.argv)
out["inputs"] = f"live-arm trajectories and call cache of benchmarks/repair_loop.py (--work {WORK})"
with open(f"benchmarks/results/repair/variants.{model_name}.json", "w") as fh:
    json.dump(out, fh, indent=1)
