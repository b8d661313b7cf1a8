"""The proxy through FastAPI's TestClient, forwarding to a stub upstream served by uvicorn
(and to an in-process scripted model): memory statuses and their headers, the injected
system message, pass-through, attempts, feedback, namespaces, bad input, upstream errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from memcollab.server.context import Settings
from tests.server.conftest import CountingLabeller, Service, Storage
from tests.server.proxy_fixtures import MATH, Stub, proxy_service

SIMILAR = "A shop sells apples at 2 for $1. How much do 10 apples cost?"
CHAT = "/v1/chat/completions"


@pytest.fixture
def svc(storage: Storage, stub: Stub) -> Service:
    return proxy_service(storage, stub)


def chat(svc: Service, body: dict[str, Any], ns: str = "a", **headers: str) -> Any:
    return svc.client.post(CHAT, json=body, headers={**svc.key(ns, "write"), **headers})


def body_for(model: str = "stubbed", text: str = MATH, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


# --------------------------------------------------------------------------- memory


def test_applied_injects_one_system_message_after_the_system_ones(svc: Service, stub: Stub) -> None:
    rid = svc.add("a", SIMILAR)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in dollars."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": MATH},
    ]
    r = chat(
        svc,
        {
            "model": "stubbed",
            "messages": messages,
            "temperature": 0.3,
            "top_p": 0.9,
            "n": 1,
            "seed": 7,
            "response_format": {"type": "text"},
            "max_tokens": 20,
            "user": "u-1",
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-memcollab-memory"] == "applied"
    assert r.headers["x-memcollab-records"] == rid
    sent = stub.state.requests[-1]
    assert sent["model"] == "stub-upstream"  # the upstream's own name
    assert sent["messages"][:2] == messages[:2] and sent["messages"][3:] == messages[2:]
    injected = sent["messages"][2]
    assert injected["role"] == "system" and injected["content"].startswith("<memory>")
    assert "undo operations in reverse" in injected["content"]
    given = json.loads(r.request.content)
    for key in ("temperature", "top_p", "n", "seed", "response_format", "max_tokens", "user"):
        assert sent[key] == given[key]
    # The client's Bearer key never reaches the upstream; the hop header does.
    assert svc.secrets["a/write"] not in json.dumps(stub.state.headers[-1])
    assert stub.state.headers[-1]["x-memcollab-hop"] == "1"
    # The answer is the upstream's JSON, byte for byte.
    assert r.json()["choices"][0]["message"]["content"] == "stub says hi"
    assert r.json()["model"] == "stub-upstream"


def test_none_when_nothing_is_found_and_no_message_is_added(svc: Service, stub: Stub) -> None:
    r = chat(svc, body_for())
    assert r.headers["x-memcollab-memory"] == "none"
    assert "x-memcollab-records" not in r.headers
    assert stub.state.requests[-1]["messages"] == [{"role": "user", "content": MATH}]


@pytest.mark.parametrize("how", ["header", "metadata"])
def test_skipped_when_the_client_opts_out(svc: Service, stub: Stub, how: str) -> None:
    svc.add("a", SIMILAR)
    if how == "header":
        r = chat(svc, body_for(), **{"x-memcollab-memory": "off"})
    else:
        r = chat(svc, body_for(metadata={"memcollab": "off", "team": "x"}))
    assert r.status_code == 200 and r.headers["x-memcollab-memory"] == "skipped"
    sent = stub.state.requests[-1]
    assert sent["messages"] == [{"role": "user", "content": MATH}]
    # The proxy's own metadata keys are removed, the client's others kept.
    assert sent.get("metadata") == ({"team": "x"} if how == "metadata" else None)
    attempt = svc.context.attempts.get("a", r.headers["x-memcollab-attempt"])
    assert attempt.metadata["memory"] == "skipped" and attempt.injected_ids == ()


GATE = {
    "condition": "v2",
    "rule": "non_negative",
    "decisions": {"stubbed": {"math": {"memory": False}}, "local": {"math": {"memory": True}}},
}


def test_gated_when_the_memorys_utility_gate_withholds_it_from_the_model(
    svc: Service, stub: Stub
) -> None:
    rid = svc.add("a", SIMILAR)
    svc.context.memory.set_note("a", "gate:v2", GATE)
    labeller = CountingLabeller()
    svc.context.labeller = labeller
    r = chat(svc, body_for("stubbed"))
    assert r.status_code == 200 and r.headers["x-memcollab-memory"] == "gated"
    assert "x-memcollab-records" not in r.headers
    assert stub.state.requests[-1]["messages"] == [{"role": "user", "content": MATH}]
    attempt = svc.context.attempts.get("a", r.headers["x-memcollab-attempt"])
    assert attempt.metadata["memory"] == "gated" and attempt.injected_ids == ()
    assert svc.context.memory.usage(rid)["retrieved"] == 0
    # A withheld memory needs no label: the labeller (a model call, with the LLM one) is not asked.
    assert labeller.asked == [] and attempt.metadata["label_source"] == "none"
    # The model the gate serves gets the memory, its task labelled.
    r = chat(svc, body_for("local"))
    assert r.headers["x-memcollab-memory"] == "applied" and r.headers["x-memcollab-records"] == rid
    assert labeller.asked == [MATH]
    attempt = svc.context.attempts.get("a", r.headers["x-memcollab-attempt"])
    assert attempt.metadata["label_source"] == "labeller"


def test_a_service_told_to_ignore_the_gate_applies_memory(storage: Storage, stub: Stub) -> None:
    svc = proxy_service(storage, stub, Settings(memory_timeout_s=30.0, gate=False))
    rid = svc.add("a", SIMILAR)
    svc.context.memory.set_note("a", "gate:v2", GATE)
    r = chat(svc, body_for("stubbed"))
    assert r.headers["x-memcollab-memory"] == "applied" and r.headers["x-memcollab-records"] == rid


def test_disagreeing_gates_are_an_error_status_until_the_service_names_one(
    storage: Storage, stub: Stub
) -> None:
    other = {"rule": "positive", "decisions": {"stubbed": {"math": {"memory": True}}}}
    for gate, status in ((True, "error"), ("v2", "gated"), ("placebo", "applied")):
        svc = proxy_service(storage, stub, Settings(memory_timeout_s=30.0, gate=gate))
        svc.add("a", SIMILAR)
        svc.context.memory.set_note("a", "gate:v2", GATE)
        svc.context.memory.set_note("a", "gate:placebo", other)
        r = chat(svc, body_for("stubbed"))
        assert r.status_code == 200 and r.headers["x-memcollab-memory"] == status, gate


def test_memory_failure_forwards_without_memory(
    svc: Service, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc.add("a", SIMILAR)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the store fell over")

    monkeypatch.setattr(svc.context.memory, "search", broken)
    r = chat(svc, body_for())
    assert r.status_code == 200, r.text
    assert r.headers["x-memcollab-memory"] == "error"
    assert stub.state.requests[-1]["messages"] == [{"role": "user", "content": MATH}]
    assert svc.context.attempts.get("a", r.headers["x-memcollab-attempt"]).answer == "stub says hi"


def test_a_failing_labeller_is_an_error_status_too(svc: Service, stub: Stub) -> None:
    class Broken:
        def classify(self, task: Any) -> Any:
            raise ValueError("labeller crashed")

    svc.context.labeller = Broken()
    r = chat(svc, body_for())
    assert r.status_code == 200 and r.headers["x-memcollab-memory"] == "error"


def test_a_slow_memory_is_cut_off(storage: Storage, stub: Stub) -> None:
    import time

    svc = proxy_service(storage, stub, Settings(memory_timeout_s=0.05))

    class Slow:
        def classify(self, task: Any) -> Any:
            time.sleep(0.5)
            raise AssertionError("too late")

    svc.context.labeller = Slow()
    r = chat(svc, body_for())
    assert r.status_code == 200 and r.headers["x-memcollab-memory"] == "error"


def test_the_labeller_files_the_query(svc: Service, stub: Stub) -> None:
    rid = svc.add("a", SIMILAR, category="algebra", subcategory="linear equations")
    svc.add("a", "Find the area of a circle of radius 2.", category="geometry", subcategory="area")

    class Fixed:
        category, subcategory = "algebra", "linear equations"

        def classify(self, task: Any) -> Any:
            assert task.domain == "math"
            return self

    svc.context.labeller = Fixed()
    r = chat(svc, body_for())
    assert r.headers["x-memcollab-records"] == rid
    meta = svc.context.attempts.get("a", r.headers["x-memcollab-attempt"]).metadata
    assert (meta["category"], meta["label_source"]) == ("algebra", "labeller")


def test_served_records_are_counted_and_a_code_task_searches_code(svc: Service) -> None:
    math_id = svc.add("a", SIMILAR)
    code_id = svc.add(
        "a", "Write a function that reverses a list.", domain="code", category="lists"
    )
    r = chat(svc, body_for("local", "Write a python function that sorts a list."))
    assert r.headers["x-memcollab-records"] == code_id
    assert svc.context.memory.usage(code_id)["retrieved"] == 1
    assert svc.context.memory.usage(math_id)["retrieved"] == 0
    # The client may name the domain.
    r = chat(svc, body_for("local", "Sort these numbers.", metadata={"domain": "code"}))
    assert r.headers["x-memcollab-records"] == code_id


# --------------------------------------------------------------------------- attempts


def test_every_exchange_is_an_attempt_grouped_by_task(svc: Service) -> None:
    rid = svc.add("a", SIMILAR)
    one = chat(svc, body_for("stubbed"))
    two = chat(
        svc, body_for("local", "  A shop sells pens at 3 for $2.\nHow much do 12 pens cost? ")
    )
    three = chat(svc, body_for("local", "Other words entirely."), **{"x-memcollab-task-id": "t-9"})
    four = chat(svc, body_for("stubbed", "Still other words.", metadata={"task_id": "t-9"}))
    ids = [r.headers["x-memcollab-attempt"] for r in (one, two, three, four)]
    got = [svc.context.attempts.get("a", i) for i in ids]
    assert got[0].task_id == got[1].task_id and got[0].task_id.startswith("text:")
    assert got[2].task_id == got[3].task_id == "t-9"
    first = got[0]
    assert first.model == "stubbed" and first.answer == "stub says hi"
    assert first.injected_ids == (rid,) and first.response_id == one.json()["id"]
    assert first.messages == [{"role": "user", "content": MATH}]  # as the client sent them
    assert got[1].answer == "The answer is 8."


def test_a_reused_response_id_still_stores_the_attempt(svc: Service, stub: Stub) -> None:
    stub.state.fixed_id = "chatcmpl-fixed"
    one, two = chat(svc, body_for()), chat(svc, body_for())
    assert one.json()["id"] == two.json()["id"] == "chatcmpl-fixed"
    first = svc.context.attempts.get("a", one.headers["x-memcollab-attempt"])
    second = svc.context.attempts.get("a", two.headers["x-memcollab-attempt"])
    assert (first.response_id, second.response_id) == ("chatcmpl-fixed", None)
    assert svc.context.attempts.by_response_id("a", "chatcmpl-fixed").id == first.id


# --------------------------------------------------------------------------- feedback


def test_feedback_counts_outcomes_once(svc: Service) -> None:
    rid = svc.add("a", SIMILAR)
    h = svc.key("a", "write")
    r = chat(svc, body_for("stubbed"))
    fb = svc.client.post(
        "/v1/feedback", json={"response_id": r.json()["id"], "verdict": "correct"}, headers=h
    )
    assert fb.status_code == 200, fb.text
    assert fb.json()["counted"] is True and fb.json()["outcomes"] == 1
    assert fb.json()["attempt"]["verdict"] == "correct"
    usage = svc.context.memory.usage(rid)["models"]
    assert usage == {"stubbed": {"helped": 1, "harmed": 0}}
    again = svc.client.post(
        "/v1/feedback", json={"response_id": r.json()["id"], "verdict": "correct"}, headers=h
    )
    assert again.status_code == 200 and again.json()["counted"] is False
    other = svc.client.post(
        "/v1/feedback", json={"response_id": r.json()["id"], "verdict": "incorrect"}, headers=h
    )
    assert other.status_code == 409
    assert svc.context.memory.usage(rid)["models"] == usage
    # Another model, wrong, by task id: harm for that model.
    r2 = chat(svc, body_for("local"))
    task_id = svc.context.attempts.get("a", r2.headers["x-memcollab-attempt"]).task_id
    fb2 = svc.client.post(
        "/v1/feedback",
        json={"task_id": task_id, "model": "local", "verdict": "incorrect"},
        headers=h,
    )
    assert fb2.status_code == 200 and fb2.json()["outcomes"] == 1
    assert svc.context.memory.usage(rid)["models"]["local"] == {"helped": 0, "harmed": 1}
    contrast = svc.context.attempts.tasks_with_contrast("a")
    assert [(t.correct_models, t.incorrect_models) for t in contrast] == [
        (("stubbed",), ("local",))
    ]


def test_feedback_without_memory_counts_a_baseline(svc: Service) -> None:
    svc.add("a", SIMILAR)
    h = svc.key("a", "write")
    r = chat(svc, body_for("local"), **{"x-memcollab-memory": "off"})
    fb = svc.client.post(
        "/v1/feedback",
        json={"attempt_id": r.headers["x-memcollab-attempt"], "verdict": "incorrect"},
        headers=h,
    )
    assert fb.json()["baseline"] is True and fb.json()["outcomes"] == 0
    baselines = svc.context.memory.store.baselines("a")
    assert baselines == {("local", "math", "unlabelled", "unlabelled"): (0, 1)}


@pytest.mark.parametrize(
    "body",
    [
        {"response_id": "chatcmpl-nope", "verdict": "correct"},
        {"attempt_id": "att_nope", "verdict": "correct"},
        {"task_id": "t-nope", "model": "local", "verdict": "correct"},
    ],
)
def test_feedback_on_an_unknown_id_is_404_and_writes_nothing(
    svc: Service, body: dict[str, Any]
) -> None:
    r = svc.client.post("/v1/feedback", json=body, headers=svc.key("a", "write"))
    assert r.status_code == 404, r.text
    assert svc.context.attempts.counts("a")["total"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"verdict": "correct"},
        {"response_id": "x", "attempt_id": "y", "verdict": "correct"},
        {"task_id": "t", "verdict": "correct"},
        {"response_id": "x", "verdict": "maybe"},
    ],
)
def test_feedback_needs_one_target_and_a_verdict(svc: Service, body: dict[str, Any]) -> None:
    r = svc.client.post("/v1/feedback", json=body, headers=svc.key("a", "write"))
    assert r.status_code == 422, r.text


# --------------------------------------------------------------------------- namespaces


def test_a_key_never_gets_another_namespaces_memory_or_attempts(svc: Service, stub: Stub) -> None:
    b_rid = svc.add("b", SIMILAR)
    rb = chat(svc, body_for(), ns="b")
    assert rb.headers["x-memcollab-records"] == b_rid
    ra = chat(svc, body_for(), ns="a")
    assert ra.headers["x-memcollab-memory"] == "none"
    assert b_rid not in json.dumps(stub.state.requests[-1])
    ha = svc.key("a", "write")
    for body in (
        {"response_id": rb.json()["id"], "verdict": "incorrect"},
        {"attempt_id": rb.headers["x-memcollab-attempt"], "verdict": "incorrect"},
    ):
        assert svc.client.post("/v1/feedback", json=body, headers=ha).status_code == 404
    b_attempt = svc.context.attempts.get("b", rb.headers["x-memcollab-attempt"])
    assert b_attempt.verdict == "unknown"
    assert svc.context.memory.usage(b_rid)["models"] == {}
    listed = svc.client.get("/v1/attempts", headers=ha).json()
    assert [a["id"] for a in listed["attempts"]] == [ra.headers["x-memcollab-attempt"]]


def test_scopes(svc: Service) -> None:
    read = svc.key("a", "read")
    assert svc.client.post(CHAT, json=body_for(), headers=read).status_code == 403
    assert svc.client.get("/v1/models", headers=read).status_code == 200
    assert svc.client.get("/v1/models").status_code == 401
    assert svc.client.post(CHAT, json=body_for()).status_code == 401


def test_models_lists_the_fleet(svc: Service) -> None:
    r = svc.client.get("/v1/models", headers=svc.key("a", "read"))
    assert r.json()["object"] == "list"
    assert [(m["id"], m["owned_by"]) for m in r.json()["data"]] == [
        ("stubbed", "memcollab:openai"),
        ("local", "memcollab:scripted"),
        ("down", "memcollab:openai"),
    ]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b'{"model": "stubbed", "messages": [', 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "'model' is required"),
        (b'{"model": "stubbed", "messages": []}', 400, "'messages' is required"),
        (b'{"model": "stubbed", "messages": ["hi"]}', 400, "messages[0]"),
        (b'{"model": "stubbed", "messages": [{"role": "user"}], "stream": "yes"}', 400, "stream"),
        (
            b'{"model": "stubbed", "messages": [{"role": "user"}], "metadata": {"memcollab": "x"}}',
            400,
            "metadata.memcollab",
        ),
        (
            b'{"model": "stubbed", "messages": [{"role": "user"}], "metadata": {"domain": "x"}}',
            400,
            "unknown domain",
        ),
        (b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}', 404, "gpt-9"),
    ],
)
def test_bad_requests_are_clear_and_write_nothing(
    svc: Service, stub: Stub, content: bytes, status: int, needle: str
) -> None:
    r = svc.client.post(
        CHAT,
        content=content,
        headers={**svc.key("a", "write"), "Content-Type": "application/json"},
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"
    if status == 404:
        assert error["code"] == "model_not_found"
    assert stub.state.requests == []
    assert svc.context.attempts.counts("a")["total"] == 0


def test_an_oversized_body_is_413(storage: Storage, stub: Stub) -> None:
    svc = proxy_service(storage, stub, Settings(proxy_body_limit=10_000))
    r = chat(svc, body_for(text="x" * 20_000))
    assert r.status_code == 413
    chunked = svc.client.post(
        CHAT,
        content=iter(
            [
                json.dumps(body_for(text="x" * 20_000)).encode()[i : i + 1000]
                for i in range(0, 20_100, 1000)
            ]
        ),
        headers={**svc.key("a", "write"), "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert stub.state.requests == [] and svc.context.attempts.counts("a")["total"] == 0
    # The general limit does not apply to the proxy: 1.5 MiB under a 4 MiB proxy limit.
    big = proxy_service(storage, stub)
    assert chat(big, body_for(text="y " * 750_000)).status_code == 200


def test_an_upstream_that_is_down_is_502(svc: Service) -> None:
    svc.add("a", SIMILAR)
    for stream in (False, True):
        r = chat(svc, body_for("down", stream=stream))
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "upstream_unreachable"
        assert r.headers["x-memcollab-memory"] == "applied"  # memory ran; nothing stored
    assert svc.context.attempts.counts("a")["total"] == 0


def test_an_upstream_that_is_too_slow_is_504(storage: Storage, stub: Stub) -> None:
    svc = proxy_service(storage, stub, Settings(upstream_timeout_s=0.3))
    stub.state.delay_s = 2.0
    for stream in (False, True):
        r = chat(svc, body_for(stream=stream))
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "upstream_timeout"
        assert "0.3 s" in r.json()["error"]["message"]
    assert svc.context.attempts.counts("a")["total"] == 0


def test_an_upstream_error_passes_through_and_stores_nothing(svc: Service, stub: Stub) -> None:
    stub.state.status = 400
    r = chat(svc, body_for())
    assert r.status_code == 400 and r.json()["error"]["message"] == "stub failure"
    stub.state.status = 401  # the service's credentials: not the client's problem
    r = chat(svc, body_for())
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_auth"
    assert svc.context.attempts.counts("a")["total"] == 0


def test_a_request_from_our_own_upstream_call_is_a_loop(svc: Service) -> None:
    r = chat(svc, body_for(), **{"x-memcollab-hop": "1"})
    assert r.status_code == 508 and r.json()["error"]["code"] == "loop_detected"


# --------------------------------------------------------------------------- in process


def test_local_models_refuse_tools_clearly(svc: Service) -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    r = chat(svc, body_for("local", tools=tools))
    assert r.status_code == 400 and r.json()["error"]["code"] == "tools_unsupported"
    assert "cannot call tools" in r.json()["error"]["message"]
    messages = [
        {"role": "user", "content": "add 1 and 2"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
    ]
    r = chat(svc, {"model": "local", "messages": messages})
    assert r.status_code == 400 and "tool" in r.json()["error"]["message"]
    r = chat(svc, body_for("local", response_format={"type": "json_object"}))
    assert r.status_code == 400 and "response_format" in r.json()["error"]["message"]
    assert svc.context.attempts.counts("a")["total"] == 0


def test_local_answers_are_openai_shaped(svc: Service) -> None:
    r = chat(svc, body_for("local", n=2, stop="\n", max_completion_tokens=5))
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "local"
    assert [c["message"]["content"] for c in body["choices"]] == ["The answer is 8."] * 2
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 8
    r = chat(svc, body_for("local", stream=True, stream_options={"include_usage": True}))
    events = [line[6:] for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "The answer is 8."
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
