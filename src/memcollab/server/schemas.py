"""Request and response bodies of the REST API (pydantic; they make the OpenAPI document).

Every text field refuses NUL characters and lone surrogates (PostgreSQL and UTF-8 cannot
store them), so such input is a 422 on every backend rather than a database error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from memcollab.memory.gate_note import GateCheck
from memcollab.memory.record import MemoryRecord, PairType
from memcollab.memory.retrieve import Level
from memcollab.server.attempts import ID_PATTERN, Verdict
from memcollab.server.keys import NAMESPACE_PATTERN, Scope
from memcollab.tasks.task import known_domain


def storable(value: str) -> str:
    """`value` if a database can store it: no NUL character, valid UTF-8."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(storable)]
"""A short name: a model, category, distiller, task id."""
LongText = Annotated[str, Field(min_length=1, max_length=100_000), AfterValidator(storable)]
Phrase = Annotated[
    str, Field(min_length=1, max_length=2000), AfterValidator(storable), AfterValidator(_nonblank)
]
DomainName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(known_domain)]
NamespaceName = Annotated[str, Field(pattern=NAMESPACE_PATTERN)]
AttemptId = Annotated[str, Field(pattern=ID_PATTERN)]
RecordId = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(storable)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- errors


class ErrorBody(BaseModel):
    type: str = Field(description="not_found, invalid_request, unauthorized, forbidden, ...")
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """Every error: `{"error": {"type": ..., "message": ...}}` (the OpenAI error shape)."""

    error: ErrorBody


# --------------------------------------------------------------------------- records


class ConstraintIn(_In):
    when: Phrase
    enforce: Phrase
    avoid: Phrase


class ConstraintOut(BaseModel):
    when: str
    enforce: str
    avoid: str
    support: int = 1
    text: str = Field(description="The constraint as the agent sees it.")


class LearnedProvenance(BaseModel):
    """How the online-learning worker made a record: the pair of attempts, their models,
    the distiller and its prompt version, the worker, the time, the namespace."""

    namespace: str
    task_id: str
    pos_attempt: str
    neg_attempt: str
    model_pos: str
    model_neg: str
    distiller: str
    prompt_version: str
    worker: str
    at: float


class Learning(BaseModel):
    """Online learning in the key's namespace (server/learn_queue.py)."""

    namespace: str
    queue: dict[str, int] = Field(description="rows by state: pending, claimed, done, ...")
    distilled: int = Field(description="pairs distilled into a record (queue rows done)")
    refused: dict[str, int] = Field(description="refused pairs by reason (screens, empty, ...)")
    failed: dict[str, int] = Field(description="failed pairs by reason (error, lease_expired)")
    deferred: int = Field(description="offers put off by a full queue (the scan files them later)")
    distillations: int = Field(
        0,
        description="distiller runs that returned (a pair redone after a crash counts again)",
    )
    waiting: int = Field(description="tasks with a contrast and no queue row yet")


class Provenance(BaseModel):
    """Where a record came from: its namespace, models and time, and (when it came in
    through the service) the key that added or imported it."""

    namespace: str
    model_pos: str | None
    model_neg: str | None
    distiller: str
    created_at: float
    key_id: str | None = None
    via: str | None = Field(
        None, description="add | import | mcp | learn; none for records built offline"
    )
    added_at: float | None = None
    learned: LearnedProvenance | None = Field(
        None, description="for records the online-learning worker distilled"
    )


class RecordOut(BaseModel):
    id: str
    namespace: str
    domain: str
    category: str
    subcategory: str
    task_text: str
    source_task_id: str
    pair_type: str
    constraints: list[ConstraintOut]
    flagged: bool
    flag_reason: str | None = None
    status: str = Field(
        "active",
        description="active (served), quarantined (from an untrusted key: never "
        "served until released), or another status of the memory's records",
    )
    provenance: Provenance


class Usage(BaseModel):
    retrieved: int
    models: dict[str, dict[str, int]] = Field(description="model -> {helped, harmed}")


class RecordDetail(RecordOut):
    usage: Usage


class RecordPage(BaseModel):
    records: list[RecordOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class RecordIn(_In):
    """A record to add. Its id is derived from (namespace, source task id, pair type,
    models, distiller), so adding the same record twice stores it once."""

    namespace: NamespaceName | None = Field(None, description="must be the key's namespace")
    domain: DomainName
    category: Name
    subcategory: Name
    task_text: LongText
    source_task_id: Name | None = Field(None, description="default: derived from task_text")
    constraints: list[ConstraintIn] = Field(min_length=1, max_length=20)
    model_pos: Name | None = None
    model_neg: Name | None = None
    pair_type: PairType = "mixed"
    distiller: Name = "api"
    dedup: bool = Field(
        True,
        description="merge constraints that nearly duplicate a stored one of the same bucket "
        "into it (raising its support) instead of storing them again; false: store all",
    )


class MergedOut(BaseModel):
    """A submitted constraint merged into a stored near-duplicate."""

    position: int = Field(description="its position in the submitted constraints (0-based)")
    record_id: str = Field(description="the record it merged into")
    index: int = Field(description="the constraint's position in that record (0-based)")
    support: int = Field(description="that constraint's support now")
    status: str = Field(description="that record's status (quarantined: not served yet)")


class AddResult(BaseModel):
    created: bool = Field(description="false: the same record was already stored")
    status: str = Field("active", description="active, or quarantined (untrusted key)")
    added: str | None = Field(
        None, description="the new record's id if it was stored with constraints of its own"
    )
    merged: list[MergedOut] = Field(
        default_factory=list, description="submitted constraints merged into stored ones"
    )
    released: list[str] = Field(
        default_factory=list,
        description="quarantined records this add corroborated (each constraint nearly "
        "duplicated by a trusted source) and so released",
    )
    record: RecordOut


class ReleaseRequest(_In):
    reason: Phrase


class ReleaseResult(BaseModel):
    record_id: str
    status: str = Field(description="the record's status after the call")
    changed: bool = Field(description="false: it was not quarantined")


class FlagRequest(_In):
    reason: Phrase


class FlagResult(BaseModel):
    record_id: str
    flagged: bool = Field(description="the record's state after the call")
    changed: bool = Field(description="false: it was already in that state")


class FlagEvent(BaseModel):
    """One status change of a record (memory/store_changes.py)."""

    action: Literal["flag", "unflag", "quarantine", "release", "archive", "restore", "rollback"]
    reason: str
    actor: str
    at: float
    version: int | None = Field(default=None, description="the namespace's version it made")
    status: str | None = Field(default=None, description="the record's status after it")


class History(BaseModel):
    record_id: str
    events: list[FlagEvent]


class ImportResult(BaseModel):
    added: int
    present: int
    conflicts_skipped: int
    replaced: int
    changes: int = Field(
        default=0, description="history changes reproduced (a namespace new to this memory)"
    )


# --------------------------------------------------------------------------- search


class SearchRequest(_In):
    """A task (its text and domain) and the model that would be given the constraints."""

    task: LongText
    domain: DomainName
    model: Name | None = None
    category: Name | None = Field(None, description="the task's category, if the client knows it")
    subcategory: Name | None = None
    p: int = Field(3, ge=1, le=20, description="most records returned")
    strategy: Literal["task_aware", "global_tfidf", "random", "none"] = "task_aware"

    @model_validator(mode="after")
    def _label(self) -> SearchRequest:
        if self.subcategory is not None and self.category is None:
            raise ValueError("a subcategory needs its category")
        return self


class Hit(BaseModel):
    record_id: str
    domain: str
    category: str
    subcategory: str
    score: float = Field(description="TF-IDF cosine to the stored task (0 for unranked draws)")
    level: Level = Field(description="the back-off level the record came from")
    constraints: list[ConstraintOut]
    model_pos: str | None
    model_neg: str | None


class GateOut(BaseModel):
    """A utility gate's verdict (memory/gate_note.py), stored with the memory by an
    experiment's dev phase."""

    verdict: Literal["served", "withheld", "undecided"]
    condition: str = Field(description="the experiment condition whose gate decided")
    rule: str | None = Field(description="the gate's rule, fixed before its dev phase")


def gate_out(check: GateCheck | None) -> GateOut | None:
    """The response's form of a gate check."""
    if check is None:
        return None
    return GateOut(verdict=check.verdict, condition=check.condition, rule=check.rule)


class SearchResponse(BaseModel):
    hits: list[Hit]
    level: Level
    strategy: str
    category: str | None
    subcategory: str | None
    label_source: Literal["request", "labeller", "none"]
    gate: GateOut | None = Field(
        None,
        description="the namespace's utility gate for this model and domain, where it has"
        " one: `withheld` means the gate said this model gets no memory here (no hits)",
    )


# --------------------------------------------------------------------------- attempts


class MessageIn(BaseModel):
    """One chat message (OpenAI shape; other fields such as tool_calls are kept)."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[str, AfterValidator(storable)] | list[dict[str, Any]] | None = None


class AttemptIn(_In):
    """An attempt: a model's messages and/or final answer on a task."""

    id: AttemptId | None = Field(None, description="client-given: a retry never duplicates")
    namespace: NamespaceName | None = Field(None, description="must be the key's namespace")
    model: Name
    task: LongText
    task_id: Name | None = Field(None, description="groups attempts; default: from the text")
    domain: DomainName | None = None
    messages: list[MessageIn] | None = Field(None, max_length=1000)
    answer: Annotated[str, Field(max_length=200_000), AfterValidator(storable)] | None = None
    injected_ids: list[RecordId] = Field(default_factory=list, max_length=100)
    verdict: Verdict = "unknown"
    response_id: Name | None = None
    metadata: dict[Name, Annotated[str, Field(max_length=2000), AfterValidator(storable)]] = Field(
        default_factory=dict, max_length=50
    )

    @model_validator(mode="after")
    def _something(self) -> AttemptIn:
        if self.messages is None and self.answer is None:
            raise ValueError("an attempt needs its messages or its final answer")
        return self


class AttemptOut(BaseModel):
    id: str
    namespace: str
    key_id: str
    model: str
    task_id: str
    task_text: str
    domain: str | None
    messages: list[dict[str, Any]] | None
    answer: str | None
    injected_ids: list[str]
    verdict: Verdict
    response_id: str | None
    metadata: dict[str, str]
    created_at: float
    verdict_at: float | None
    verdict_key_id: str | None


class AttemptResult(BaseModel):
    created: bool = Field(description="false: the same attempt was already recorded")
    attempt: AttemptOut


class VerdictRequest(_In):
    verdict: Verdict


class AttemptPage(BaseModel):
    attempts: list[AttemptOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class ContrastTask(BaseModel):
    task_id: str
    correct_models: list[str]
    incorrect_models: list[str]
    attempts: int


class ContrastPage(BaseModel):
    tasks: list[ContrastTask]
    total: int
    limit: int
    offset: int
    next_offset: int | None


# --------------------------------------------------------------------------- ops


class Stats(BaseModel):
    namespace: str
    memory: dict[str, Any] = Field(description="records and constraints per bucket, pair, ...")
    flagged: int
    attempts: dict[str, Any] = Field(description="total, by_verdict, by_model")
    guard: dict[str, Any] = Field(
        default_factory=dict,
        description="the write path: refused (total) and refusals per screen reason, "
        "records stored, constraints merged (dedup), quarantined, released, auto_released",
    )


class WhoAmI(BaseModel):
    key_id: str
    namespace: str
    scope: Scope


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Ready(BaseModel):
    status: Literal["ready", "unavailable"]


def record_fields(record: MemoryRecord) -> dict[str, Any]:
    """The plain fields of a record as RecordOut has them (flags and provenance apart)."""
    return {
        "id": record.id,
        "namespace": record.namespace,
        "domain": record.domain,
        "category": record.category,
        "subcategory": record.subcategory,
        "task_text": record.task_text,
        "source_task_id": record.source_task_id,
        "pair_type": record.pair_type,
        "constraints": [
            ConstraintOut(
                when=c.when, enforce=c.enforce, avoid=c.avoid, support=c.support, text=c.text()
            )
            for c in record.constraints
        ],
    }
