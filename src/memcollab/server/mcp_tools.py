"""The MCP tools of memcollab: `search_constraints`, `record_outcome`, `memory_stats`,
`add_constraint`.

One low-level `mcp.server.lowlevel.Server` (the official MCP SDK, major version 1) serves
them over both transports: stdio (`memcollab mcp`, server/mcp_stdio.py) and streamable
HTTP at /mcp of `memcollab serve` (server/mcp_http.py). Each tool is a thin call into
`memcollab.Memory` and the service's stores, and acts on one namespace only: the caller's
API key's, exactly as the REST API (server/auth.py). No tool takes a namespace argument.

Scopes: `search_constraints` and `memory_stats` need a read key, `record_outcome` and
`add_constraint` a write key. `add_constraint` takes the REST add's path (server/guard.py:
content screen with counted refusals, dedup, quarantine for an untrusted key, provenance
"mcp"). Arguments are validated against each tool's JSON schema by pydantic (not by the
SDK's jsonschema check, whose messages do not name the argument); any bad argument, a
key of too low a scope, a record or attempt that is not the key's, ends as one tool error
result (`isError`) with one clear message, never a protocol error or a crash.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio.to_thread
from mcp import types
from mcp.server.lowlevel import Server
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from memcollab import __version__
from memcollab.errors import UserError
from memcollab.memory.record import Constraint, MemoryRecord, record_id, task_hash
from memcollab.memory.store import MemoryConnectionError, MemoryNotFoundError
from memcollab.server import guard
from memcollab.server.attempts import AttemptNotFoundError, derive_task_id
from memcollab.server.auth import Principal
from memcollab.server.context import ServerContext
from memcollab.server.keys import SCOPE_RANK, Scope
from memcollab.server.schemas import (
    AttemptId,
    DomainName,
    Hit,
    LongText,
    MergedOut,
    Name,
    Phrase,
    RecordId,
    SearchResponse,
    Stats,
    gate_out,
    record_fields,
)
from memcollab.tasks.task import Task

log = logging.getLogger("memcollab.server.mcp")

INSTRUCTIONS = (
    "memcollab: a memory shared by agents on different models. Before solving a task, call "
    "search_constraints with the task text, its domain and your model name; follow the "
    "constraints of the hits. When the task is judged, call record_outcome with the "
    "record ids you were given (or the attempt id) and the verdict, so the memory learns "
    "which records help which model. add_constraint files a lesson of your own. Every "
    "tool acts on your API key's namespace only."
)


class ToolError(Exception):
    """A tool call that cannot be done; its message is what the caller sees."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchArgs(_Args):
    task: LongText = Field(description="The task's full text (what the agent must solve).")
    domain: DomainName = Field(description="The task's domain.")
    model: Name | None = Field(
        None, description="The model that will solve it (recorded with outcomes later)."
    )
    k: int = Field(3, ge=1, le=20, description="Most records returned.")
    category: Name | None = Field(
        None, description="The task's category in the domain's taxonomy, if known."
    )
    subcategory: Name | None = Field(None, description="Its subcategory (needs category).")

    @model_validator(mode="after")
    def _label(self) -> SearchArgs:
        if self.subcategory is not None and self.category is None:
            raise ValueError("a subcategory needs its category")
        return self


class OutcomeArgs(_Args):
    verdict: Literal["correct", "incorrect"] = Field(
        description="How the task ended: correct counts as 'helped' for each record given, "
        "incorrect as 'harmed'."
    )
    record_ids: list[RecordId] | None = Field(
        None,
        min_length=1,
        max_length=50,
        description="The records the model was given (ids from search_constraints). Needs "
        "model. Each call counts once more: send an outcome once.",
    )
    model: Name | None = Field(
        None, description="The model that solved the task (with record_ids)."
    )
    attempt_id: AttemptId | None = Field(
        None,
        description="Instead of record_ids: an attempt recorded through the service "
        "(POST /v1/attempts); its model and injected records are used, its verdict set. "
        "Counted once: a retry changes nothing.",
    )
    response_id: Name | None = Field(
        None, description="Instead of record_ids: the response id of a proxied exchange."
    )

    @model_validator(mode="after")
    def _one_target(self) -> OutcomeArgs:
        given = [
            name
            for name in ("record_ids", "attempt_id", "response_id")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of record_ids, attempt_id or response_id")
        if self.record_ids is not None and self.model is None:
            raise ValueError("record_ids needs model (the model the records were given to)")
        return self


class StatsArgs(_Args):
    pass


class AddArgs(_Args):
    when: Phrase = Field(description="The situation: 'When <when>, ...'.")
    enforce: Phrase = Field(description="What to do: '..., enforce <enforce>; ...'.")
    avoid: Phrase = Field(description="The error to avoid: '...; avoid <avoid>.'")
    domain: DomainName = Field(description="The domain of the tasks it is for.")
    category: Name = Field(description="The category in the domain's taxonomy.")
    subcategory: Name = Field(description="The subcategory.")
    task: LongText | None = Field(
        None,
        description="The task it was learnt on (searches rank records by their task's "
        "text; default: the constraint's own sentence).",
    )
    model: Name | None = Field(None, description="The model that wrote it.")
    dedup: bool = Field(
        True,
        description="Merge into a stored near-duplicate of the bucket instead of "
        "storing it again (false: store it as given).",
    )


class AddOutcome(BaseModel):
    record_id: str = Field(description="The submitted record's id (deterministic).")
    created: bool = Field(description="false: the same submission was stored already")
    status: str = Field(description="active, or quarantined (an untrusted key's)")
    added: str | None = Field(description="The new record's id if stored with its constraint")
    merged: list[MergedOut] = Field(description="Where the constraint merged instead")
    released: list[str] = Field(description="Quarantined records this add corroborated")


class Counted(BaseModel):
    record_id: str
    helped: int = Field(description="Outcomes of this model with this record: successes.")
    harmed: int = Field(description="... and failures.")


class OutcomeResult(BaseModel):
    verdict: Literal["correct", "incorrect"]
    model: str
    attempt_id: str | None = None
    already_recorded: bool = Field(
        False, description="The attempt already had a verdict: nothing was counted."
    )
    counted: list[Counted] = Field(description="The records counted, with their new counts.")


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its arguments, result, the scope it needs and what it says it does."""

    name: str
    scope: Scope
    args: type[_Args]
    result: type[BaseModel]
    description: str
    read_only: bool


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "search_constraints",
            "read",
            SearchArgs,
            SearchResponse,
            'Constraints ("When ..., enforce ...; avoid ...") that other models\' successes '
            "and failures taught, for a task as `model` would be given them: task-aware "
            "retrieval (the task's bucket, backing off to its category, then its domain; "
            "TF-IDF top k). Returns hits with record id, bucket, score, back-off level and "
            "constraints, and `gate`: where the memory carries a utility gate, its verdict "
            "for this model and domain (withheld: no hits by design, not for want of "
            "records). Counts no usage. Needs a read key.",
            True,
        ),
        ToolSpec(
            "record_outcome",
            "write",
            OutcomeArgs,
            OutcomeResult,
            "Record how a task ended for a model that was given memory records: either the "
            "record ids and the model, or an attempt id / response id the service recorded. "
            "Counts per (record, model) how often the record helped or harmed; returns the "
            "new counts. Needs a write key.",
            False,
        ),
        ToolSpec(
            "add_constraint",
            "write",
            AddArgs,
            AddOutcome,
            'Add one constraint ("When <when>, enforce <enforce>; avoid <avoid>.") to the '
            "memory under domain / category / subcategory. It passes the content screen "
            "(reasoning only: no instructions, links, commands or secrets; a refusal names "
            "its reason); if it nearly duplicates a stored constraint of the bucket it "
            "merges into it, raising its support (`merged`); a key created untrusted stores "
            "it quarantined (never served until released). Needs a write key.",
            False,
        ),
        ToolSpec(
            "memory_stats",
            "read",
            StatsArgs,
            Stats,
            "The namespace's memory: records and constraints per bucket, model pair, pair "
            "type and distiller; flagged records; attempts per verdict and model. Needs a "
            "read key.",
            True,
        ),
    )
}


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema


def tool_definitions() -> list[types.Tool]:
    """The tools as `tools/list` shows them (input and output JSON schemas included)."""
    from memcollab.domains import DOMAINS  # registers the built-in domains

    out = []
    for spec in TOOLS.values():
        inputs = _schema(spec.args)
        if "domain" in inputs.get("properties", {}):
            inputs["properties"]["domain"]["enum"] = sorted(DOMAINS)
        out.append(
            types.Tool(
                name=spec.name,
                description=spec.description,
                inputSchema=inputs,
                outputSchema=_schema(spec.result),
                annotations=types.ToolAnnotations(
                    readOnlyHint=spec.read_only,
                    destructiveHint=False,
                    idempotentHint=spec.read_only,
                    openWorldHint=False,
                ),
            )
        )
    return out


def _invalid(tool: str, exc: ValidationError) -> ToolError:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden" and where == "namespace":
        message = "there is no namespace argument: every tool acts on the API key's namespace"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ToolError(
        f"invalid arguments for {tool}: {f'{where}: ' if where else ''}{message}{more}"
    )


class McpTools:
    """The tools over one ServerContext; `call` runs one for a caller (blocking: the
    database is read and written here)."""

    def __init__(self, context: ServerContext) -> None:
        self.context = context

    def call(self, name: str, arguments: dict[str, Any], who: Principal) -> dict[str, Any]:
        """Run tool `name` for `who`; ToolError with one clear message when it cannot."""
        spec = TOOLS.get(name)
        if spec is None:
            raise ToolError(f"unknown tool {name!r} (tools: {', '.join(TOOLS)})")
        if SCOPE_RANK[who.scope] < SCOPE_RANK[spec.scope]:
            raise ToolError(f"this key's scope is {who.scope!r}; {name} needs {spec.scope!r}")
        try:
            args = spec.args.model_validate(arguments)
        except ValidationError as exc:
            raise _invalid(name, exc) from None
        result: BaseModel = getattr(self, name)(who, args)
        return result.model_dump(mode="json")

    def search_constraints(self, who: Principal, args: SearchArgs) -> SearchResponse:
        """The same retrieval as POST /v1/search (routes_memory.search)."""
        ctx = self.context
        task = Task(id="query", domain=args.domain, prompt=args.task)
        found, source = ctx.search(
            task,
            namespace=who.namespace,
            model=args.model,
            category=args.category,
            subcategory=args.subcategory,
            p=args.k,
            count_usage=False,
        )
        hits = [
            Hit(
                record_id=hit.record.id,
                domain=hit.record.domain,
                category=hit.record.category,
                subcategory=hit.record.subcategory,
                score=float(hit.score),
                level=hit.level,
                constraints=record_fields(hit.record)["constraints"],
                model_pos=hit.record.model_pos,
                model_neg=hit.record.model_neg,
            )
            for hit in found.hits
        ]
        return SearchResponse(
            hits=hits,
            level=found.level,
            strategy=found.mode,
            category=found.category,
            subcategory=found.subcategory,
            label_source=source,
            gate=gate_out(found.gate),
        )

    def record_outcome(self, who: Principal, args: OutcomeArgs) -> OutcomeResult:
        """Count the outcome per (record, model) through `Memory.record_outcome`; for an
        attempt, first settle its verdict (once) through the AttemptStore."""
        ctx = self.context
        helped = args.verdict == "correct"
        attempt_id = None
        already = False
        if args.record_ids is not None:
            assert args.model is not None  # the validator's rule
            model = args.model
            ids = list(dict.fromkeys(args.record_ids))
            for rid in ids:  # every id first: a foreign or unknown id counts nothing
                self._own_record(who, rid)
        else:
            try:
                attempt = (
                    ctx.attempts.get(who.namespace, args.attempt_id)
                    if args.attempt_id is not None
                    else ctx.attempts.by_response_id(who.namespace, str(args.response_id))
                )
            except AttemptNotFoundError as exc:
                raise ToolError(str(exc)) from None
            if args.model is not None and args.model != attempt.model:
                raise ToolError(
                    f"attempt {attempt.id!r} is of model {attempt.model!r}, not {args.model!r}"
                )
            model, attempt_id = attempt.model, attempt.id
            ids = list(dict.fromkeys(attempt.injected_ids))
            stored, settled = ctx.attempts.settle(
                who.namespace, attempt.id, args.verdict, who.key_id
            )
            if not settled:
                if stored.verdict != args.verdict:
                    raise ToolError(
                        f"attempt {attempt.id!r} already has the verdict {stored.verdict!r}; "
                        "an outcome is counted once"
                    )
                already, ids = True, []
        for rid in ids:
            ctx.memory.record_outcome(rid, model, helped)
        counted = []
        for rid in ids:
            counts = ctx.memory.usage(rid)["models"].get(model, {})
            counted.append(
                Counted(
                    record_id=rid,
                    helped=int(counts.get("helped", 0)),
                    harmed=int(counts.get("harmed", 0)),
                )
            )
        return OutcomeResult(
            verdict=args.verdict,
            model=model,
            attempt_id=attempt_id,
            already_recorded=already,
            counted=counted,
        )

    def memory_stats(self, who: Principal, args: StatsArgs) -> Stats:
        """The same numbers as GET /v1/stats."""
        ctx = self.context
        return Stats(
            namespace=who.namespace,
            memory=ctx.memory.stats(who.namespace),
            flagged=len(ctx.memory.flagged(who.namespace)),
            attempts=ctx.attempts.counts(who.namespace),
            guard=guard.guard_summary(ctx.counters.of(who.namespace)),
        )

    def add_constraint(self, who: Principal, args: AddArgs) -> AddOutcome:
        """The REST add's path (server/guard.py) for one constraint, provenance "mcp"."""
        constraint = Constraint(when=args.when, enforce=args.enforce, avoid=args.avoid)
        text = args.task or constraint.text()
        source = derive_task_id(text)
        distiller = args.model or "mcp"
        record = MemoryRecord(
            id=record_id(who.namespace, source, "mixed", None, None, distiller),
            namespace=who.namespace,
            domain=args.domain,
            category=args.category,
            subcategory=args.subcategory,
            task_text=text,
            task_hash=task_hash(text),
            source_task_id=source,
            constraints=(constraint,),
            pair_type="mixed",
            distiller=distiller,
            created_at=time.time(),
        )
        submitter = guard.Submitter.of(who, "mcp")
        try:
            result = guard.submit(self.context, submitter, record, dedup=args.dedup)
        except guard.SubmissionConflict as exc:
            raise ToolError(f"{exc}: give another `task` or `model` for a new constraint") from None
        return AddOutcome(
            record_id=result.record_id,
            created=result.created,
            status=result.status,
            added=result.added,
            merged=[MergedOut(**m.__dict__) for m in result.merged],
            released=list(result.released),
        )

    def _own_record(self, who: Principal, rid: str) -> None:
        try:
            record = self.context.memory.get(rid)
        except MemoryNotFoundError:
            record = None
        if record is None or record.namespace != who.namespace:
            raise ToolError(f"no record with id {rid!r}; nothing was counted")


PrincipalOf = Callable[[Any], Principal]
"""The caller of a tool call, from the transport's request (a Starlette Request over HTTP,
None over stdio); raises ToolError when there is none."""


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)], isError=True
    )


def run_tool(
    tools: McpTools,
    principal_of: PrincipalOf,
    name: str,
    arguments: dict[str, Any],
    request: Any,
) -> dict[str, Any] | types.CallToolResult:
    """One tool call: the structured result, or an error result with one clear message
    (an unexpected failure is logged with an incident id and named only by it)."""
    location = tools.context.location
    try:
        return tools.call(name, arguments, principal_of(request))
    except ToolError as exc:
        return _error(str(exc))
    except MemoryConnectionError as exc:
        log.warning("memory unavailable: %s", exc)
        return _error("the memory's database is unavailable; try again")
    except UserError as exc:
        message = str(exc)
        return _error(message.replace(location, "the memory") if location else message)
    except sqlite3.OperationalError as exc:
        log.warning("database error: %s", exc)
        return _error("the memory's database is busy or unavailable; try again")
    except Exception as exc:
        if type(exc).__name__ == "OperationalError":  # psycopg's, without importing it
            log.warning("database error: %s", exc)
            return _error("the memory's database is busy or unavailable; try again")
        incident = uuid.uuid4().hex[:12]
        log.error("internal error %s in MCP tool %s", incident, name, exc_info=exc)
        return _error(f"internal error (incident {incident}; details in the service log)")


def build_server(context: ServerContext, principal_of: PrincipalOf) -> Server[Any, Any]:
    """The MCP server of the tools over `context`; `principal_of` names each call's caller."""
    server: Server[Any, Any] = Server("memcollab", version=__version__, instructions=INSTRUCTIONS)
    tools = McpTools(context)
    definitions = tool_definitions()

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return definitions

    # validate_input=False: McpTools validates with pydantic, whose messages name the
    # argument (the SDK's jsonschema messages do not).
    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        request = server.request_context.request
        return await anyio.to_thread.run_sync(
            run_tool, tools, principal_of, name, arguments, request
        )

    return server
