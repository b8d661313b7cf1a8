import asyncio
import gzip
import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from memcollab.llm.base import ChatRequest, Completion, Usage, user
from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.scripted import ScriptedModel


def _ask(text: str, sample_index: int = 0) -> ChatRequest:
    return ChatRequest(messages=(user(text),), sample_index=sample_index)


def test_second_identical_run_makes_no_model_calls(tmp_path: Path) -> None:
    prompts = [f"question {i}" for i in range(5)]
    first = ScriptedModel(lambda r: "answer to " + r.messages[0].content, name="m")
    gateway = Gateway(CallCache(tmp_path / "calls.sqlite"))
    answers = [gateway.complete(first, _ask(p)).text for p in prompts]
    assert len(first.requests) == 5

    # A new process would open the same file: a fresh cache object and gateway.
    second = ScriptedModel(lambda r: "DIFFERENT", name="m")
    rerun = Gateway(CallCache(tmp_path / "calls.sqlite"))
    replay = [rerun.complete(second, _ask(p)) for p in prompts]
    assert second.requests == []
    assert [c.text for c in replay] == answers
    assert all(c.cached for c in replay)
    assert rerun.stats()["m"].cache_hits == 5
    assert rerun.stats()["m"].calls == 0


def test_sample_index_keeps_samples_distinct(tmp_path: Path) -> None:
    model = ScriptedModel(lambda r: f"sample {r.sample_index}", name="m")
    gateway = Gateway(CallCache(tmp_path / "c.sqlite"))
    texts = [gateway.complete(model, _ask("same", i)).text for i in range(3)]
    assert texts == ["sample 0", "sample 1", "sample 2"]
    assert len(model.requests) == 3
    assert len(gateway.cache or []) == 3


def test_identity_separates_models(tmp_path: Path) -> None:
    gateway = Gateway(CallCache(tmp_path / "c.sqlite"))
    a = ScriptedModel(["from a"], name="a")
    b = ScriptedModel(["from b"], name="b")
    assert gateway.complete(a, _ask("q")).text == "from a"
    assert gateway.complete(b, _ask("q")).text == "from b"


def test_stats_count_calls_tokens_and_errors() -> None:
    model = ScriptedModel(["alpha beta", "gamma"], name="m")
    gateway = Gateway(None)
    gateway.complete(model, _ask("one two three"))
    gateway.complete(model, _ask("four"))
    with pytest.raises(RuntimeError):
        gateway.complete(model, _ask("five"))
    stats = gateway.stats()["m"]
    assert (stats.calls, stats.errors) == (2, 1)
    assert (stats.prompt_tokens, stats.completion_tokens) == (4, 3)


def test_failed_calls_are_not_cached(tmp_path: Path) -> None:
    gateway = Gateway(CallCache(tmp_path / "c.sqlite"))
    with pytest.raises(RuntimeError):
        gateway.complete(ScriptedModel([], name="m"), _ask("q"))
    assert len(gateway.cache or []) == 0


class _SlowModel(ScriptedModel):
    """Records how many calls overlap."""

    def __init__(self, limit: int) -> None:
        super().__init__(lambda r: r.messages[0].content, name="slow", max_concurrency=limit)
        self.active = 0
        self.peak = 0
        self._gauge = threading.Lock()

    def complete(self, request: ChatRequest) -> Completion:
        with self._gauge:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        with self._gauge:
            self.active -= 1
        return super().complete(request)


def test_concurrency_limit_is_applied_to_async_callers() -> None:
    model = _SlowModel(limit=2)
    gateway = Gateway(None)

    async def run_all() -> list[Completion]:
        return await asyncio.gather(*(gateway.acomplete(model, _ask(f"q{i}")) for i in range(8)))

    results = asyncio.run(run_all())
    assert [c.text for c in results] == [f"q{i}" for i in range(8)]
    assert model.peak == 2


class _HeldModel(ScriptedModel):
    """Answers only once `release` is set; counts the calls that reached it; its first
    `failures` calls raise."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__(lambda r: f"answer to {r.messages[0].content}", name="held")
        self.release = threading.Event()
        self.entered = threading.Event()
        self.reached = 0
        self.failures = failures
        self._gauge = threading.Lock()

    def concurrency(self) -> tuple[str, int]:
        return "held", 8

    def complete(self, request: ChatRequest) -> Completion:
        with self._gauge:
            self.reached += 1
            fail = self.reached <= self.failures
        self.entered.set()
        assert self.release.wait(10)
        if fail:
            raise RuntimeError("the backend failed")
        return super().complete(request)


def _ask_in_threads(gateway: Gateway, model: _HeldModel, callers: int) -> list[object]:
    """`callers` threads ask the same request: the first alone until the model holds its
    call, the others while it does; then the model answers. Each thread's completion or
    exception, in order."""
    results: list[object] = [None] * callers

    def ask(i: int) -> None:
        try:
            results[i] = gateway.complete(model, _ask("same"))
        except RuntimeError as err:
            results[i] = err

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(callers)]
    threads[0].start()
    assert model.entered.wait(10)
    for t in threads[1:]:
        t.start()
    time.sleep(0.3)  # the others reach the gateway while the first call is held
    model.release.set()
    for t in threads:
        t.join(10)
    return results


def test_identical_requests_in_flight_make_one_model_call(tmp_path: Path) -> None:
    model = _HeldModel()
    gateway = Gateway(CallCache(tmp_path / "c.sqlite"))
    results = _ask_in_threads(gateway, model, 3)
    assert model.reached == 1
    assert all(isinstance(r, Completion) and r.text == "answer to same" for r in results)
    assert [r.cached for r in results if isinstance(r, Completion)] == [False, True, True]
    stats = gateway.stats()["held"]
    assert (stats.calls, stats.cache_hits) == (1, 2)


def test_a_failed_call_in_flight_fails_its_waiters_and_a_later_request_asks_again(
    tmp_path: Path,
) -> None:
    model = _HeldModel(failures=1)
    gateway = Gateway(CallCache(tmp_path / "c.sqlite"))
    results = _ask_in_threads(gateway, model, 3)
    # The waiters get the call's own error: one failure, not three calls that each fail.
    assert model.reached == 1 and gateway.stats()["held"].errors == 1
    assert all(isinstance(r, RuntimeError) and r is results[0] for r in results)
    later = gateway.complete(model, _ask("same"))  # the failure was not cached
    assert later.text == "answer to same" and not later.cached and model.reached == 2


def test_without_a_cache_identical_requests_each_ask_the_model() -> None:
    model = _HeldModel()
    results = _ask_in_threads(Gateway(None), model, 3)
    assert model.reached == 3
    assert [r.cached for r in results if isinstance(r, Completion)] == [False] * 3


def _writer(path: str, worker: int, count: int) -> None:
    cache = CallCache(path)
    for i in range(count):
        request = _ask(f"w{worker}-{i}")
        key = request.cache_key("m")
        cache.put(
            key,
            "m",
            request,
            Completion(text=str(i), finish_reason="stop", usage=Usage(), model="m"),
        )
        assert cache.get(key) is not None
        # Everyone also writes one shared key: the first writer wins, nobody fails.
        shared = _ask("shared")
        cache.put(
            shared.cache_key("m"),
            "m",
            shared,
            Completion(text=f"w{worker}", finish_reason="stop", model="m"),
        )


def test_concurrent_processes_share_one_cache_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")  # created by the racing processes themselves
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 150)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:  # generous: spawned processes import memcollab first, slow when loaded
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(CallCache(path)) == 4 * 150 + 1


def _filled_cache(path: Path, prompts: list[str]) -> tuple[CallCache, ScriptedModel]:
    model = ScriptedModel(lambda r: "answer to " + r.messages[0].content, name="m")
    gateway = Gateway(CallCache(path))
    for p in prompts:
        gateway.complete(model, _ask(p))
    assert gateway.cache is not None
    return gateway.cache, model


@pytest.mark.parametrize("name", ["calls.jsonl", "calls.jsonl.gz"])
def test_export_import_moves_every_call_losslessly(tmp_path: Path, name: str) -> None:
    source, _ = _filled_cache(tmp_path / "a.sqlite", ["q1", "q2", "q3"])
    assert source.export_jsonl(tmp_path / name) == 3
    target = CallCache(tmp_path / "b.sqlite")
    assert target.import_jsonl(tmp_path / name) == (3, 0)
    assert target.import_jsonl(tmp_path / name) == (0, 3)  # importing twice adds nothing

    def rows(cache: CallCache) -> list[tuple]:
        return cache._conn().execute("SELECT * FROM calls ORDER BY key").fetchall()

    assert rows(target) == rows(source)
    # The imported cache answers the same requests without a model call.
    replay = ScriptedModel(lambda r: "DIFFERENT", name="m")
    gateway = Gateway(target)
    assert gateway.complete(replay, _ask("q2")).text == "answer to q2"
    assert replay.requests == []


def test_export_since_keeps_only_later_calls(tmp_path: Path) -> None:
    cache, model = _filled_cache(tmp_path / "a.sqlite", ["early"])
    cut = time.time()
    time.sleep(0.01)
    Gateway(cache).complete(model, _ask("late"))
    assert cache.export_jsonl(tmp_path / "late.jsonl", since=cut) == 1
    assert "late" in (tmp_path / "late.jsonl").read_text()
    assert "early" not in (tmp_path / "late.jsonl").read_text()


def test_import_rejects_a_tampered_or_broken_file_whole(tmp_path: Path) -> None:
    from memcollab.llm.cache import CacheFormatError

    source, _ = _filled_cache(tmp_path / "a.sqlite", ["q1", "q2"])
    good = tmp_path / "calls.jsonl"
    source.export_jsonl(good)
    first, second = good.read_text().splitlines()
    target = CallCache(tmp_path / "b.sqlite")

    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(first + "\n" + second.replace("q2", "q9") + "\n")
    with pytest.raises(CacheFormatError, match=r"tampered.jsonl:2: the key is not the key"):
        target.import_jsonl(tampered)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(first + "\n" + second[: len(second) // 2] + "\n")
    with pytest.raises(CacheFormatError, match=r"broken.jsonl:2: not a cached call"):
        target.import_jsonl(broken)
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_text(first + "\n")
    with pytest.raises(CacheFormatError, match="cannot read calls file"):
        target.import_jsonl(not_gzip)
    with pytest.raises(CacheFormatError, match="does not exist"):
        target.import_jsonl(tmp_path / "missing.jsonl")
    nested = tmp_path / "nested.jsonl"
    nested.write_text(first + "\n" + "[" * 100_000 + "\n")
    with pytest.raises(CacheFormatError, match=r"nested.jsonl:2: not a cached call"):
        target.import_jsonl(nested)
    assert len(target) == 0  # nothing of a bad file was imported


def test_replay_only_gateway_answers_from_the_cache_and_refuses_a_miss(tmp_path: Path) -> None:
    from memcollab.llm.base import ChatRequest, Message
    from memcollab.llm.cache import CacheMissError, CallCache, Gateway
    from memcollab.llm.scripted import ScriptedModel

    cache = CallCache(tmp_path / "c.sqlite")
    model = ScriptedModel(["recorded"], name="m")
    asked = ChatRequest(messages=(Message(role="user", content="recorded question"),))
    assert Gateway(cache).complete(model, asked).text == "recorded"
    replay = Gateway(cache, replay_only=True)
    assert replay.complete(model, asked).text == "recorded"
    calls_before = len(model.requests)
    new = ChatRequest(messages=(Message(role="user", content="a question never asked"),))
    with pytest.raises(CacheMissError, match="holds no answer of m"):
        replay.complete(model, new)
    assert len(model.requests) == calls_before  # the model was never called
    with pytest.raises(ValueError, match="needs a cache"):
        Gateway(None, replay_only=True)


def test_import_refuses_an_edited_answer(tmp_path: Path) -> None:
    from memcollab.llm.cache import CacheFormatError

    source, _ = _filled_cache(tmp_path / "a.sqlite", ["q1", "q2", "q3"])
    good = tmp_path / "calls.jsonl"
    source.export_jsonl(good)
    rows = [json.loads(line) for line in good.read_text().splitlines()]
    assert all(isinstance(row.get("completion_sha256"), str) for row in rows)
    target = CallCache(tmp_path / "b.sqlite")

    rows[1]["completion"]["text"] = "a different answer"
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(CacheFormatError, match=r"edited.jsonl:2: the answer is not the one"):
        target.import_jsonl(edited)
    assert len(target) == 0  # the whole file imports nothing

    rows = [json.loads(line) for line in good.read_text().splitlines()]
    rows[0]["completion"], rows[2]["completion"] = rows[2]["completion"], rows[0]["completion"]
    swapped = tmp_path / "swapped.jsonl"
    swapped.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(CacheFormatError, match=r"swapped.jsonl:1: the answer is not the one"):
        target.import_jsonl(swapped)
    assert len(target) == 0

    # Key order and spacing do not matter: the digest is over the answer's content.
    rows = [json.loads(line) for line in good.read_text().splitlines()]
    reordered = tmp_path / "reordered.jsonl"
    reordered.write_text(
        "".join(
            json.dumps(
                {**row, "completion": dict(reversed(row["completion"].items()))}, indent=1
            ).replace("\n", " ")
            + "\n"
            for row in rows
        )
    )
    assert target.import_jsonl(reordered) == (3, 0)

    rows[0]["completion_sha256"] = 42
    wrong_type = tmp_path / "wrong_type.jsonl"
    wrong_type.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(CacheFormatError, match=r"wrong_type.jsonl:1: "):
        CallCache(tmp_path / "c.sqlite").import_jsonl(wrong_type)


def test_old_exports_without_a_digest_still_import(tmp_path: Path) -> None:
    source, _ = _filled_cache(tmp_path / "a.sqlite", ["q1", "q2"])
    good = tmp_path / "calls.jsonl"
    source.export_jsonl(good)
    rows = [json.loads(line) for line in good.read_text().splitlines()]
    for row in rows:
        del row["completion_sha256"]
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps(row) + "\n" for row in rows))
    target = CallCache(tmp_path / "b.sqlite")
    assert target.import_jsonl(old) == (2, 0)
    assert Gateway(target).complete(ScriptedModel(["X"], name="m"), _ask("q1")).text == (
        "answer to q1"
    )


def test_the_committed_calls_files_still_import(tmp_path: Path) -> None:
    path = (
        Path(__file__).resolve().parents[2]
        / "benchmarks/results/paper/calls/20261202T040601.jsonl.gz"
    )
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = [line for line in fh if line.strip()]
    assert lines and all("completion_sha256" not in json.loads(line) for line in lines)
    assert CallCache(tmp_path / "b.sqlite").import_jsonl(path) == (len(lines), 0)
