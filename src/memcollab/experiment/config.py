"""The experiment file: fleet, training pool, evaluation sets, conditions, seeds.

```toml
name = "paper"
out = "runs/paper"                 # relative to this file (default: next to it, named after it)
fleet = "fleet.toml"               # optional; default: the three packaged models
data_dir = "/data"                 # optional, absolute only (a relative path is refused);
                                   # --data-dir / MEMCOLLAB_DATA_DIR win over it; default:
                                   # where `memcollab data get` puts the files
seed = 1                           # retrieval and placebo draws
eval_models = ["qwen-1.5b"]        # optional: evaluate only these (all build memory)
conditions = ["vanilla", "own", "other", "memcollab", "placebo"]   # before any [table]

[agent]
max_turns = 4
max_tokens = 384
repair = "v1"                      # or "live": richer code feedback, repeats resampled

[train]                            # memory is built from these tasks only
tasks = ["gsm8k:train[~100@1]", "math:train[~100@1]", "mbpp:train[~100@1]"]

[memory]
k = 3                              # constraints per distilled pair
# (the distiller is a condition's field: [condition.memcollab] distiller = "MODEL")
prompt_chars = 9000                # size bound of a distillation request
reply_tokens = 400                 # the distiller's reply budget
labeller = "llm"                   # who files records and queries: llm (each model asks
                                   # itself; default) or trained (one deterministic
                                   # classifier for all, trained on data_dir's train files)
screen = "v1"                      # "v2": also the semantic screen (memory/semantic.py)
merge = false                      # true: near-duplicate constraints merge (memory/merge.py)

[eval]                             # benchmark name -> dataset spec
gsm8k = "gsm8k:test[~50@1]"
humaneval = "humaneval:test[~50@1]"
exclude = ["../v2/eval_tasks.json"]   # optional: task ids left out of every benchmark (files
                                   # relative to this one: a JSON list of ids, or an object
                                   # with "tasks" / "train_tasks" lists and/or "benchmarks":
                                   # name -> list; counted in plan.json)

[condition.memcollab-p1]           # parameters of a condition (built-in or your own name)
kind = "memcollab"
p = 1

[condition.memcollab-paper]        # serve a committed memory export instead of building one
kind = "memcollab"
memory = "../paper/memories/memcollab.by.qwen2.5-coder-1.5b.jsonl"   # relative to this file
labeller = "llm"                   # label its queries as its records were (default: [memory])

[dev]                              # optional: the per-model utility gate (experiment/gate.py)
gate = ["memcollab-p1"]            # conditions whose memory each (model, domain) must earn
rule = "non_negative"              # memory iff dev accuracy with it >= without (GATE_RULES)
follow = { placebo = "memcollab-p1" }   # optional: serve memory where that one's gate says
[dev.tasks]                        # development slices (benchmark -> spec); tasks of the
gsm8k = "gsm8k:train[-500:]"       # [train] pool are left out (counted in plan.json)
humaneval = "humaneval:train"

[analysis]                         # optional: the pre-registered primary comparison
primary = "memcollab-p1"           # against baseline (default vanilla), per model, pooled
```
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from memcollab.agent import RepairMode
from memcollab.errors import UserError

# Settings that change behaviour only when set; their defaults are the committed experiment's.
OPT_IN_DEFAULTS: dict[str, dict[str, Any]] = {
    "memory": {"labeller": "llm", "screen": "v1", "merge": False},
    "agent": {"repair": "v1"},
}


class ExperimentConfigError(UserError):
    """An experiment file that cannot be used."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentSettings(_Section):
    max_turns: int = Field(default=5, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    repair: RepairMode = "v1"  # the solve loop's repair mode (memcollab.agent)


class TrainSettings(_Section):
    tasks: list[str] = Field(default_factory=list)


class MemorySettings(_Section):
    k: int = Field(default=3, ge=1)
    # Never read: each condition names its distiller ([condition.NAME] distiller = ...).
    # Accepted only as "strongest" (what conditions default to) so older files still load
    # and no file can believe it chose another distiller here.
    distiller: str = "strongest"
    prompt_chars: int = Field(default=9000, ge=1000)
    reply_tokens: int = Field(default=400, ge=16)  # the distiller's reply budget
    tie_break: bool = False
    # Who labels records and queries (memcollab.memory.labeller.make_labeller).
    labeller: Literal["llm", "trained"] = "llm"
    # "v2" adds the semantic screen to the distiller's (opt-in; memory/semantic.py).
    screen: Literal["v1", "v2"] = "v1"
    # Near-duplicate constraints of a bucket merge, counting support (memory/merge.py).
    merge: bool = False

    @field_validator("distiller")
    @classmethod
    def _only_the_default(cls, value: str) -> str:
        if value != "strongest":
            raise ValueError(
                "[memory] distiller is not read; set the distiller of a condition instead:"
                ' [condition.memcollab] distiller = "MODEL"'
            )
        return value


class AnalysisSettings(_Section):
    """The pre-registered primary comparison: `primary` - `baseline` on every evaluated
    model's pooled tasks, Holm-adjusted across the models (the report's own section)."""

    primary: str | None = None
    baseline: str = "vanilla"


class DevSettings(_Section):
    """The development phase: the utility gate's slices, conditions and rule."""

    tasks: dict[str, str] = Field(min_length=1)  # benchmark name -> dataset spec
    gate: list[str] = Field(min_length=1)  # the conditions gated
    rule: str = "non_negative"  # a name of experiment.gate.GATE_RULES
    follow: dict[str, str] = Field(default_factory=dict)  # condition -> a gated condition


class ExperimentConfig(_Section):
    """A parsed experiment file (paths already resolved against the file's folder)."""

    name: str = "experiment"
    out: Path
    fleet: Path | None = None
    data_dir: Path | None = None
    seed: int = 0
    workers: int | None = Field(default=None, ge=1)
    agent: AgentSettings = AgentSettings()
    train: TrainSettings = TrainSettings()
    memory: MemorySettings = MemorySettings()
    eval: dict[str, str]
    eval_exclude: list[Path] = Field(default_factory=list)  # [eval] exclude: id files
    eval_models: list[str] | None = None  # default: every fleet model
    conditions: list[str] = Field(min_length=1)
    condition: dict[str, dict[str, Any]] = Field(default_factory=dict)
    analysis: AnalysisSettings = AnalysisSettings()
    dev: DevSettings | None = None  # the development phase and utility gate (opt-in)
    source: str = "inline"

    def resolved_json(self) -> dict[str, Any]:
        """What the run was made of, for plan.json (paths as strings). Settings added after
        the committed experiment are left out at their defaults (`OPT_IN_DEFAULTS`), so the
        plan.json of a run that does not set them stays as it was before they existed."""
        data = self.model_dump(mode="json")
        for section, defaults in OPT_IN_DEFAULTS.items():
            for key, default in defaults.items():
                if data[section].get(key) == default:
                    del data[section][key]
        if self.analysis == AnalysisSettings():
            del data["analysis"]
        if data["dev"] is None:
            del data["dev"]
        if not data["eval_exclude"]:
            del data["eval_exclude"]
        return data


def excluded_task_ids(paths: list[Path]) -> set[str]:
    """The task ids that `[eval] exclude` files name (see the module docstring)."""
    ids: set[str] = set()
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ExperimentConfigError(f"[eval] exclude: cannot read {path} ({exc})") from None
        lists: list[Any] = [data] if isinstance(data, list) else []
        if isinstance(data, dict):
            lists += [data.get(key) for key in ("tasks", "train_tasks") if key in data]
            benchmarks = data.get("benchmarks", {})
            lists += list(benchmarks.values()) if isinstance(benchmarks, dict) else [benchmarks]
        if not lists or not all(
            isinstance(ids_, list) and all(isinstance(i, str) for i in ids_) for ids_ in lists
        ):
            raise ExperimentConfigError(
                f"[eval] exclude: {path} holds no list of task ids",
                'write a JSON list of ids, or an object with "tasks", "train_tasks" or'
                ' "benchmarks" (name -> list of ids)',
            )
        for found in lists:
            ids.update(found)
    return ids


def load_experiment(path: str | Path, data_dir: Path | None = None) -> ExperimentConfig:
    """Read and check an experiment file; relative paths are taken from its folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExperimentConfigError(f"experiment file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentConfigError(f"{path}: not valid TOML ({exc})") from None
    base = path.resolve().parent
    raw.setdefault("out", str(base / "runs" / path.stem))
    for key in ("out", "fleet"):
        if isinstance(raw.get(key), str):
            raw[key] = str((base / raw[key]).resolve())
    given = raw.get("data_dir")
    if isinstance(given, str):
        # The data live outside any repository: a path relative to the file would tie the
        # experiment to one checkout's neighbours.
        if not Path(given).expanduser().is_absolute():
            raise ExperimentConfigError(
                f"{path}: data_dir {given!r} is a relative path",
                "remove it and pass --data-dir or set MEMCOLLAB_DATA_DIR"
                " (an experiment file may name only an absolute data_dir)",
            )
        raw["data_dir"] = str(Path(given).expanduser())
    if data_dir is not None:
        raw["data_dir"] = str(data_dir)
    evaluated = raw.get("eval")
    if isinstance(evaluated, dict) and isinstance(evaluated.get("exclude"), list):
        # Like the file's other paths, the id files are relative to it.
        evaluated["exclude"] = [
            str((base / p).resolve()) if isinstance(p, str) else p for p in evaluated["exclude"]
        ]
    for params in (raw.get("condition") or {}).values():
        # A condition's memory export, like the file's other paths, is relative to it.
        if isinstance(params, dict) and isinstance(params.get("memory"), str):
            params["memory"] = str((base / params["memory"]).resolve())
    raw["source"] = str(path)
    return parse_experiment(raw, str(path))


def parse_experiment(raw: dict[str, Any], source: str = "inline") -> ExperimentConfig:
    """Check a dict shaped like the experiment file."""
    for table, value in raw.items():
        if isinstance(value, dict) and table != "condition" and "conditions" in value:
            raise ExperimentConfigError(
                f"{source}: `conditions` landed in the [{table}] table",
                "TOML puts a key in the table above it: write top-level keys before any [table]",
            )
    evaluated = raw.get("eval")
    if isinstance(evaluated, dict) and "exclude" in evaluated:
        # [eval] maps benchmark names to specs; `exclude` is the one other key it takes.
        raw = {**raw, "eval": {k: v for k, v in evaluated.items() if k != "exclude"}}
        raw["eval_exclude"] = evaluated["exclude"]
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ExperimentConfigError(
            f"{source}: {where}: {first['msg']}",
            "see the example at the top of src/memcollab/experiment/config.py",
        ) from None
    if not config.eval:
        raise ExperimentConfigError(f"{source}: [eval] names no benchmark")
    if len(set(config.conditions)) != len(config.conditions):
        raise ExperimentConfigError(f"{source}: a condition is listed twice in `conditions`")
    for role, name in (
        ("primary", config.analysis.primary),
        ("baseline", config.analysis.baseline),
    ):
        if config.analysis.primary is not None and name not in config.conditions:
            raise ExperimentConfigError(
                f"{source}: [analysis] {role} = {name!r} is not in `conditions`"
            )
    for name in config.condition:
        if name not in config.conditions:
            raise ExperimentConfigError(
                f"{source}: [condition.{name}] is not in `conditions`",
                "add it to the list or remove the table",
            )
    return config
