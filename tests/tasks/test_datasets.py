"""Loaders on the real benchmark files (../shared/data) and on malformed ones."""

import json
from pathlib import Path

import pytest

from memcollab.tasks.datasets import (
    DataError,
    humaneval_examples,
    load_humaneval,
    load_tasks,
    parse_spec,
)
from tests.support.data import DATA_DIR, needs_data

DATA = DATA_DIR


@needs_data
def test_gsm8k_train_and_test() -> None:
    train = load_tasks("gsm8k:train[:5]", DATA)
    assert [t.id for t in train] == [f"gsm8k/train/{i}" for i in range(5)]
    assert train[0].answer == "72"  # Natalia sold 48 + 24 clips
    assert train[0].domain == "math" and train[0].metadata["answer_style"] == "gsm8k"
    assert len(load_tasks("gsm8k:test", DATA)) == 1319


@needs_data
def test_math_train_and_math500() -> None:
    math500 = load_tasks("math500:test", DATA)
    assert len(math500) == 500
    subjects = {t.metadata["subject"] for t in math500}
    assert len(subjects) == 7
    assert all(isinstance(t.metadata["level"], int) for t in math500)
    train = load_tasks("math:train[:3]", DATA)
    assert train[0].answer  # the last \boxed{} of the solution
    assert train[0].id.startswith("math/train/")
    assert load_tasks("math:test[:2]", DATA) == math500[:2]
    assert not {t.prompt for t in math500} & {t.prompt for t in load_tasks("math:train", DATA)}


@needs_data
def test_development_splits_are_held_out_train_rows() -> None:
    """`:dev` = the rows the trained labeller never learns from: GSM8K's last 500 train
    rows; 500 MATH train rows drawn across subjects (the file's tail is one subject)."""
    from memcollab.memory.labeller_data import labeller_data

    train = load_tasks("gsm8k:train", DATA)
    assert load_tasks("gsm8k:dev", DATA) == train[-500:]
    math_dev = load_tasks("math:dev", DATA)
    assert len(math_dev) == 500
    assert {t.id for t in math_dev} <= {t.id for t in load_tasks("math:train", DATA)}
    assert len({t.metadata["subject"] for t in math_dev}) == 7
    learned = set(labeller_data(DATA).texts)
    assert not learned & {t.prompt for t in math_dev + train[-500:]}
    sample = load_tasks("math:dev[~100@1]", DATA)
    assert len(sample) == 100 and {t.id for t in sample} <= {t.id for t in math_dev}


@needs_data
def test_mbpp_standard_split() -> None:
    test = load_tasks("mbpp:test", DATA)
    train = load_tasks("mbpp:train", DATA)
    assert (len(test), len(train)) == (500, 374)
    assert test[0].id == "mbpp/11" and train[0].id == "mbpp/601"
    task = test[0]
    assert task.visible_tests == task.tests[:1]
    assert task.tests[0] in task.prompt
    assert task.entry_point == "remove_Occ"


def test_humaneval_from_the_package_and_its_split() -> None:
    everything = load_tasks("humaneval")
    assert len(everything) == 164
    train, test = load_tasks("humaneval:train"), load_tasks("humaneval:test")
    assert (len(train), len(test)) == (64, 100)
    assert not {t.id for t in train} & {t.id for t in test}
    first = everything[0]
    assert first.entry_point == "has_close_elements"
    assert first.tests[0].endswith("check(has_close_elements)")
    assert "from typing import List" in first.setup_code
    assert first.visible_tests[0].startswith("assert has_close_elements(")
    with_examples = sum(bool(t.visible_tests) for t in everything)
    assert with_examples > 120


def test_humaneval_examples_parse_doctests() -> None:
    prompt = 'def f(x):\n    """\n    >>> f(2)\n    4\n    >>> f(3)\n    9\n    """\n'
    assert humaneval_examples(prompt, "f") == ("assert f(2) == 4", "assert f(3) == 9")


@needs_data
def test_slices_and_seeded_samples_are_deterministic() -> None:
    a = load_tasks("gsm8k:test[~20]", DATA, seed=3)
    assert a == load_tasks("gsm8k:test[~20]", DATA, seed=3)
    assert a != load_tasks("gsm8k:test[~20@4]", DATA)
    assert len({t.id for t in a}) == 20
    assert load_tasks("gsm8k:test[10:12]", DATA) == load_tasks("gsm8k:test", DATA)[10:12]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gsm8k:holdout", "unknown GSM8K split"),
        ("squad:train", "unknown dataset 'squad'"),
        ("gsm8k:train[1:2:3]", "cannot parse dataset spec"),
        ("mbpp:holdout", "unknown MBPP split"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_tasks(spec, DATA)


def test_missing_data_dir_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMCOLLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    # No folder named: the default one `data get` fills, and the command that fills it.
    with pytest.raises(
        DataError, match=r"xdg/memcollab/data/gsm8k/train\.jsonl, .*`memcollab data get gsm8k`"
    ):
        load_tasks("gsm8k:train")
    with pytest.raises(DataError, match=r"gsm8k/train.jsonl, which does not exist"):
        load_tasks("gsm8k:train", tmp_path)
    monkeypatch.setenv("MEMCOLLAB_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(DataError, match=r"env/math/math500_test\.jsonl.*data get math --data-dir"):
        load_tasks("math500:test")


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "train.jsonl:2: not valid JSON"),
        ('{"question": "q"}', "train.jsonl:2: missing field 'answer'"),
        ('{"question": "q", "answer": "no final line"}', "train.jsonl:2: answer has no '#### N'"),
        ('["a list"]', "train.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_gsm8k_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})
    _write(tmp_path / "gsm8k" / "train.jsonl", [good, line])
    with pytest.raises(DataError, match=message):
        load_tasks("gsm8k:train", tmp_path)


def test_bad_math_and_mbpp_lines(tmp_path: Path) -> None:
    _write(
        tmp_path / "math" / "train.jsonl",
        [json.dumps({"problem": "p", "solution": "none", "type": "Algebra"})],
    )
    with pytest.raises(DataError, match=r"train.jsonl:1: no `answer` and no \\boxed"):
        load_tasks("math:train", tmp_path)
    _write(
        tmp_path / "mbpp" / "mbpp.jsonl",
        [json.dumps({"task_id": 11, "text": "t", "test_list": []})],
    )
    with pytest.raises(DataError, match="mbpp.jsonl:1: test_list must be a non-empty list"):
        load_tasks("mbpp:test", tmp_path)


def test_generic_jsonl_with_field_mapping(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mine.jsonl",
        [
            json.dumps({"q": "What is 6*7?", "final": 42, "key": "a"}),
            json.dumps({"q": "What is 1+1?", "final": "2", "key": "b"}),
        ],
    )
    tasks = load_tasks(f"jsonl:{path}#domain=math,prompt=q,answer=final,id=key")
    assert [(t.id, t.answer, t.prompt) for t in tasks] == [
        ("a", "42", "What is 6*7?"),
        ("b", "2", "What is 1+1?"),
    ]
    with pytest.raises(DataError, match="mine.jsonl:1: missing field 'question'"):
        load_tasks(f"jsonl:{path}#domain=math,prompt=question")
    with pytest.raises(DataError, match="needs domain=math or domain=code"):
        load_tasks(f"jsonl:{path}#prompt=q")


def test_parse_spec() -> None:
    spec = parse_spec("gsm8k:train[~50@9]")
    assert (spec.name, spec.split, spec.sample, spec.seed) == ("gsm8k", "train", 50, 9)
    assert parse_spec("mbpp:test[:100]").stop == 100
    assert load_humaneval(split="train")[0].id == "humaneval/0"


@pytest.mark.parametrize("spec", ["gsm8k[:5]", "math[:3]", "mbpp[~4@1]"])
def test_a_benchmark_with_several_splits_needs_one(spec: str) -> None:
    name = spec.split("[")[0]
    with pytest.raises(DataError, match=f"{name} has several splits"):
        load_tasks(spec, None)
