"""The trained labeller: fitted on a tiny synthetic set, deterministic, abstaining where it is
not confident, the same label for records and queries, and reachable from the experiment
config, the factory and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from memcollab.errors import UserError
from memcollab.experiment.config import ExperimentConfigError, parse_experiment
from memcollab.experiment.runner import Experiment
from memcollab.llm.cache import Gateway
from memcollab.llm.fleet import Fleet
from memcollab.memory import Memory
from memcollab.memory.classify import DomainClassifier
from memcollab.memory.guidance import UNLABELLED
from memcollab.memory.labeller import (
    DescriptionModel,
    LabellerError,
    MathModel,
    TrainedLabeller,
    check_trained_data,
    make_labeller,
    words,
)
from memcollab.memory.labeller_data import LabellerDataError, Splits, labeller_data
from memcollab.memory.record import Constraint, MemoryRecord, task_hash
from memcollab.memory.taxonomy import builtin_taxonomy
from memcollab.tasks.task import Task
from tests.experiment.scripted import experiment_dict, fleet_dict

TEMPLATES = {
    "Geometry": "Find the area of the triangle with sides {a} and {b} inscribed in a circle.",
    "Number Theory": "What is the remainder when {a} is divided by {b}? Use modular arithmetic.",
    "Counting & Probability": "How many ways can {a} people choose {b} marbles at random?",
    "Grade-school word problems": (
        "Sam buys {a} apples for {b} dollars each at the store. How much money does he spend?"
    ),
}


def _rows(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        category = list(TEMPLATES)[i % len(TEMPLATES)]
        texts.append(TEMPLATES[category].format(a=rng.randint(2, 99), b=rng.randint(2, 99)))
        labels.append(category)
    return texts, labels


@pytest.fixture(scope="module")
def model() -> MathModel:
    return MathModel(*_rows(40))


def _labeller(model: MathModel) -> TrainedLabeller:
    return TrainedLabeller({"math": model, "code": DescriptionModel(builtin_taxonomy("code"))})


def _math(text: str, task_id: str = "t") -> Task:
    return Task(id=task_id, domain="math", prompt=text, answer="1")


def test_words_split_identifiers_and_drop_boilerplate() -> None:
    assert words("Write a python function count_Set_Bits(n): isPrime numbers") == [
        "count",
        "set",
        "bit",
        "prime",
    ]


def test_trained_on_a_tiny_set_it_labels_deterministically(model: MathModel) -> None:
    again = MathModel(*_rows(40))
    text = "Find the area and perimeter of the triangle with sides 3 and 4."
    assert model.probabilities(text) == again.probabilities(text)
    label = _labeller(model).classify(_math(text))
    assert (label.category, label.subcategory) == ("Geometry", "area and perimeter of polygons")
    assert label.source == "trained" and label.confidence > 0.6
    assert _labeller(again).classify(_math(text)) == label


def test_it_abstains_below_the_threshold_and_counts_it() -> None:
    unsure = MathModel(*_rows(40), threshold=1.01)  # no probability reaches it
    labeller = _labeller(unsure)
    label = labeller.classify(_math("Find the area of the triangle with sides 3 and 4."))
    assert (label.category, label.subcategory) == (UNLABELLED, UNLABELLED)
    assert label.abstained and label.source == "abstained" and label.guess == "Geometry"
    stats = labeller.stats()["math"]
    assert stats["classifications"] == 1 and stats["category_abstentions"] == 1


def test_a_subcategory_below_its_threshold_keeps_the_category(model: MathModel) -> None:
    labeller = TrainedLabeller({"math": model}, subcategory_threshold=1.01)
    label = labeller.classify(_math("Find the area of a triangle with sides 3 and 4 in a circle."))
    assert (label.category, label.subcategory) == ("Geometry", UNLABELLED)
    assert label.source == "category only" and not label.abstained
    assert labeller.stats()["math"]["subcategory_abstentions"] == 1


def test_code_is_labelled_by_the_nearest_description(model: MathModel) -> None:
    task = Task(
        id="c",
        domain="code",
        prompt="Write a function to check whether a number is prime.\nassert is_prime(7) == True",
        tests=("assert is_prime(7)",),
    )
    label = _labeller(model).classify(task)
    assert (label.category, label.subcategory) == (
        "Arithmetic and number theory",
        "primes and factorization",
    )


def test_a_domain_without_a_model_abstains_counted(model: MathModel) -> None:
    labeller = TrainedLabeller({"math": model})
    task = Task(id="c", domain="code", prompt="def f(): pass", tests=("assert f() is None",))
    assert labeller.classify(task).abstained
    assert labeller.stats()["code"]["unsupported"] == 1


def test_labels_in_memory_are_bad_input_proof() -> None:
    with pytest.raises(LabellerDataError, match="not categories"):
        MathModel(["a b c"] * 6, ["Algebra"] * 3 + ["Cooking"] * 3)
    with pytest.raises(LabellerDataError, match="at least 2 categories"):
        MathModel(["area of a circle"] * 5 + ["remainder"], ["Geometry"] * 5 + ["Algebra"])


def _record(rid: str, category: str, subcategory: str, text: str) -> MemoryRecord:
    return MemoryRecord(
        id=rid,
        domain="math",
        category=category,
        subcategory=subcategory,
        task_text=text,
        task_hash=task_hash(text),
        source_task_id=rid,
        constraints=(Constraint(when=f"case {rid}", enforce="a check", avoid="an error"),),
        pair_type="mixed",
        distiller="d",
        created_at=0.0,
    )


def test_records_and_queries_share_the_label_and_abstaining_widens_the_search(
    tmp_path: Path, model: MathModel
) -> None:
    labeller = _labeller(model)
    texts = {
        "geo": "Find the area of the triangle with sides 5 and 12 in a circle.",
        "mod": "What is the remainder when 77 is divided by 5? Use modular arithmetic.",
    }
    with Memory.open(tmp_path / "m.sqlite") as memory:
        for rid, text in texts.items():  # records: filed by the labeller at build time
            label = labeller.classify(_math(text, rid))
            memory.add(_record(rid, label.category, label.subcategory, text))
        memory.add(_record("unl", UNLABELLED, UNLABELLED, "triangle circle area sides"))
        memory.add(_record("geo-unl", "Geometry", UNLABELLED, "triangle circle sides"))
        query = _math("Find the area of the triangle with sides 6 and 8 in a circle.", "q")
        for asking_model in ("big", "small"):  # queries: the same labeller, whoever asks
            found = memory.search(query, model=asking_model, labeller=labeller, p=1)
            assert found.level == "subcategory" and found.record_ids == ("geo",)
        record = memory.get("geo")
        assert (record.category, record.subcategory) == (found.category, found.subcategory)

        # A query whose category abstained is searched over the whole domain: the
        # unlabelled record is reached there, never as a bucket of its own.
        abstained = _labeller(MathModel(*_rows(40), threshold=1.01))
        wide = memory.search(query, labeller=abstained, p=4)
        assert wide.level == "domain" and set(wide.record_ids) == {"geo", "mod", "unl", "geo-unl"}
        # A query whose subcategory abstained starts at its category.
        only_category = memory.search(query, label=_Label("Geometry", UNLABELLED), p=3)
        assert only_category.level == "category"
        assert set(only_category.record_ids) == {"geo", "geo-unl"}


class _Label:
    def __init__(self, category: str, subcategory: str) -> None:
        self.category, self.subcategory = category, subcategory


# -- data directory, factory, config and CLI -------------------------------------------------
MATH_SUBJECTS = ("Geometry", "Number Theory", "Counting & Probability")


def write_data_dir(root: Path, math_rows: int = 1400, gsm8k_rows: int = 620) -> Path:
    """A data directory shaped like the real one, with synthetic train files."""
    rng = random.Random(1)
    (root / "math").mkdir(parents=True)
    (root / "gsm8k").mkdir()
    with (root / "math" / "train.jsonl").open("w") as fh:
        for i in range(math_rows):
            subject = MATH_SUBJECTS[i % 3]
            text = TEMPLATES[subject].format(a=rng.randint(2, 99), b=rng.randint(2, 99))
            row = {"problem": text, "type": subject, "level": "Level 1"}
            fh.write(json.dumps(row | {"solution": "So \\boxed{1}.", "unique_id": f"m{i}"}) + "\n")
    with (root / "gsm8k" / "train.jsonl").open("w") as fh:
        for _ in range(gsm8k_rows):
            text = TEMPLATES["Grade-school word problems"].format(
                a=rng.randint(2, 99), b=rng.randint(2, 99)
            )
            fh.write(json.dumps({"question": text, "answer": "He spends.\n#### 4"}) + "\n")
    return root


def test_the_split_keeps_every_held_out_row_out_of_training(tmp_path: Path) -> None:
    root = write_data_dir(tmp_path / "data", math_rows=120, gsm8k_rows=60)
    splits = Splits(dev_tail=20, tune=15, dev=25, gsm8k_rows=30)
    data = labeller_data(root, splits)
    assert len(data.tune) == 15 and len(data.dev) == 25 and len(data.math_tail) == 20
    assert data.counts == {"math_train": 60, "gsm8k_train": 30}
    held_texts = {t.prompt for t in data.tune + data.dev + data.math_tail + data.gsm8k_tail}
    assert not held_texts & set(data.texts)
    assert [t.id for t in data.math_tail] == [f"math/m{i}" for i in range(100, 120)]
    assert labeller_data(root, splits).dev == data.dev  # seeded


def test_factory_and_its_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMCOLLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # an empty default data dir
    with pytest.raises(LabellerError, match="unknown labeller 'gpt'"):
        make_labeller("gpt")
    with pytest.raises(LabellerError, match="needs a model client"):
        make_labeller("llm")
    with pytest.raises(LabellerError, match="own taxonomies"):
        make_labeller("trained", data_dir=tmp_path, taxonomies={"math": "x.toml"})
    with pytest.raises(LabellerDataError, match=r"xdg/memcollab/data/math/train\.jsonl.*data get"):
        make_labeller("trained")
    (tmp_path / "math").mkdir()
    (tmp_path / "math" / "train.jsonl").write_text("")
    with pytest.raises(LabellerDataError, match=r"gsm8k/train\.jsonl, which does not exist"):
        make_labeller("trained", data_dir=tmp_path)
    from memcollab.llm.scripted import ScriptedModel

    client = Gateway(None).bind(ScriptedModel(["1"]))
    assert isinstance(make_labeller(client=client), DomainClassifier)  # the default: llm


def test_the_trained_labeller_from_a_data_dir_is_fitted_once(tmp_path: Path) -> None:
    root = write_data_dir(tmp_path / "data")
    first = make_labeller("trained", data_dir=root)
    second = make_labeller("trained", data_dir=root)
    assert isinstance(first, TrainedLabeller) and isinstance(second, TrainedLabeller)
    assert first is not second
    assert first.models is not second.models and first.models["math"] is second.models["math"]
    text = "Sam buys 3 apples for 2 dollars each at the store. How much money does he spend?"
    label = first.classify(_math(text))
    assert label.category == "Grade-school word problems" and label.confidence > 0.9


def test_a_labeller_of_some_domains_fits_only_those_and_reads_data_only_for_math(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEMCOLLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # an empty default data dir
    code = make_labeller("trained", domains={"code", "choice"})  # no data directory at all
    assert isinstance(code, TrainedLabeller) and list(code.models) == ["code"]
    task = Task(id="c", domain="code", prompt="Write a function that sorts a list of words.")
    assert (
        code.classify(task).category
        == make_labeller("trained", data_dir=write_data_dir(tmp_path / "data"))
        .classify(task)
        .category
    )  # the same code label as a labeller of every domain
    assert code.classify(_math("What is 2 + 2?")).abstained  # not fitted: counted
    assert code.stats()["math"]["unsupported"] == 1 and code.stats()["code"]["unsupported"] == 0
    check_trained_data(None, {"code"})
    for domains in ({"code", "math"}, None):  # math (or every domain: the default) needs data
        with pytest.raises(LabellerDataError, match=r"math/train\.jsonl.*data get"):
            make_labeller("trained", domains=domains)
    with pytest.raises(LabellerDataError, match=r"math/train\.jsonl"):
        check_trained_data(tmp_path / "nowhere", {"math"})
    math = make_labeller("trained", data_dir=tmp_path / "data", domains={"math"})
    assert isinstance(math, TrainedLabeller) and list(math.models) == ["math"]


def _experiment(tmp_path: Path, labeller: str | None, conditions: list[str]) -> Experiment:
    raw = experiment_dict(tmp_path, conditions)
    raw["data_dir"] = str(tmp_path / "data")
    if labeller is not None:
        raw["memory"] = {"labeller": labeller}
    return Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet_dict()))


def test_config_field_defaults_to_llm_and_leaves_plan_json_as_it_was(tmp_path: Path) -> None:
    config = parse_experiment(experiment_dict(tmp_path))
    assert config.memory.labeller == "llm"
    assert "labeller" not in config.resolved_json()["memory"]
    raw = experiment_dict(tmp_path) | {"memory": {"labeller": "trained"}}
    assert parse_experiment(raw).resolved_json()["memory"]["labeller"] == "trained"
    with pytest.raises(ExperimentConfigError, match="memory.labeller"):
        parse_experiment(experiment_dict(tmp_path) | {"memory": {"labeller": "gpt"}})


def test_an_experiment_with_the_trained_labeller_files_records_and_queries_alike(
    tmp_path: Path,
) -> None:
    write_data_dir(tmp_path / "data")
    conditions = ["vanilla", "memcollab", "own"]
    trained = _experiment(tmp_path, "trained", conditions)
    llm = _experiment(tmp_path, None, conditions)
    labelled = 6 * 2  # 6 test tasks x 2 models with task-aware retrieval
    label_calls = 2 * labelled + 2 * 4 * len({r.distiller for r in llm.recipes.values()})
    assert llm.estimate()["eval"].calls - trained.estimate()["eval"].calls == 2 * labelled
    assert (
        llm.estimate()["eval"].calls + llm.estimate()["memory"].calls
        == trained.estimate()["eval"].calls + trained.estimate()["memory"].calls + label_calls
    )

    trained.run()
    out = tmp_path / "out"
    labeller = make_labeller("trained", data_dir=tmp_path / "data")
    with Memory.open(out / "memory.sqlite") as memory:
        records = [r for ns in trained.recipes for r in memory.list(ns)]
    assert records
    for record in records:
        label = labeller.classify(_math(record.task_text))
        assert (record.category, record.subcategory) == (label.category, label.subcategory)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_task: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for row in rows:
        if row["condition"] != "vanilla":
            by_task.setdefault((row["task_id"], row["condition"]), set()).add(
                (row["category"], row["subcategory"])
            )
    assert by_task and all(len(labels) == 1 for labels in by_task.values())  # both models
    # The synthetic training set knows no "Add two and two": records and queries abstain
    # alike, and the records are still found, over the whole domain.
    memcollab = [r for r in rows if r["condition"] == "memcollab"]
    assert {(r["category"], r["level"]) for r in memcollab} == {(UNLABELLED, "domain")}
    assert all(r["record_ids"] for r in memcollab)
    stats = json.loads((out / "eval_classifier_stats.json").read_text())
    assert list(stats) == ["trained"] and stats["trained"]["math"]["classifications"] > 0
    summary = json.loads((out / "build_summary.json").read_text())
    assert all("category_abstentions" in s["classifier"]["math"] for s in summary.values())
    assert json.loads((out / "plan.json").read_text())["config"]["memory"]["labeller"] == "trained"

    with pytest.raises(UserError, match="labeller differs"):  # never mix two labellers
        _experiment(tmp_path, None, conditions).run()


def test_cli_labeller_option_reaches_the_labeller(tmp_path: Path) -> None:
    from tests.test_cli import assert_one_line_error, run_cli
    from tests.test_pipeline import _setup

    data = write_data_dir(tmp_path / "data")
    fleet, runs = _setup(tmp_path)
    memory = tmp_path / "mem.sqlite"
    common = ["--runs", str(runs), "--memory", str(memory), "--fleet", fleet, "--no-cache"]
    built = run_cli("distill", *common, "--labeller", "trained", "--data-dir", str(data))
    assert built.returncode == 0, built.stderr
    with Memory.open(memory) as opened:
        records = opened.list()
    labeller = make_labeller("trained", data_dir=data)
    assert records and all(
        r.category == labeller.classify(_math(r.task_text)).category for r in records
    )

    text = "Sam buys 3 apples for 2 dollars each at the store. How much money does he spend?"
    solve = ["solve", text, "--model", "right", "--memory", str(memory), "--fleet", fleet]
    solved = run_cli(*solve, "--labeller", "trained", "--data-dir", str(data), "--no-cache")
    assert solved.returncode == 0, solved.stderr
    assert "label Grade-school word problems /" in solved.stdout
    assert "retrieved at level domain" in solved.stdout  # its records are unlabelled

    assert_one_line_error(run_cli(*solve, "--labeller", "gpt"), "unknown labeller 'gpt'")
    assert_one_line_error(
        run_cli(*solve, "--labeller", "trained", "--data-dir", str(tmp_path / "nowhere")),
        "the trained labeller needs",
    )
    assert_one_line_error(
        run_cli("distill", *common, "--labeller", "gpt"), "unknown labeller 'gpt'"
    )
