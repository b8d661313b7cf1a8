"""`ServerContext`: what one service process holds, built once and shared by every request.

The opened memory (`memcollab.memory.Memory`, one handle for every namespace: each request
names its key's namespace), the key, attempt and provenance stores in the same database,
the fleet (the models the later proxy forwards to), an optional labeller for searches, and
the limits in `Settings`. Nothing here imports FastAPI, so `memcollab keys` works without
the `server` extra.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from memcollab.llm.fleet import Fleet
from memcollab.memory.api import Memory
from memcollab.memory.guidance import UNLABELLED, Labeller
from memcollab.memory.retrieve import Retrieved
from memcollab.memory.store import PostgresMemory
from memcollab.server.attempts import AttemptStore
from memcollab.server.db import ServerDB
from memcollab.server.guard import CounterStore
from memcollab.server.judge import TaskJudge
from memcollab.server.keys import KeyStore
from memcollab.server.learn_queue import LearnQueue
from memcollab.server.provenance import ProvenanceStore
from memcollab.tasks.task import Task

MiB = 1024 * 1024

LabelSource = Literal["request", "labeller", "none"]
"""Where a search's label came from: the request, the service's labeller, or nowhere."""


@dataclass(frozen=True)
class RequestLabel:
    """A (category, subcategory) that a request names itself."""

    category: str
    subcategory: str


@dataclass(frozen=True)
class Settings:
    """Limits of the service (documented in the OpenAPI description and the README)."""

    body_limit: int = 1 * MiB
    """Largest request body, in bytes, except imports; larger gets 413 before parsing."""
    import_limit: int = 64 * MiB
    """Largest body of POST /v1/import (a JSONL export)."""
    max_page: int = 1000
    """Most records or attempts one list request returns."""
    max_p: int = 20
    """Most records one search returns."""
    proxy_body_limit: int = 4 * MiB
    """Largest body of POST /v1/chat/completions (conversations grow)."""
    proxy_p: int = 3
    """Records the proxy injects at most per request."""
    proxy_utility: bool = False
    """Utility retrieval in the proxy (withhold records of confident harm for the model).
    Off by default: its estimates cost about 75 ms per request over 1000 domain records
    (benchmarks/proxy_overhead.py's memory), against a goal of 5 ms."""
    gate: bool | str = True
    """Apply the utility gate a namespace's memory carries (its `gate:CONDITION` note from
    an experiment's dev phase; memory/gate_note.py): a (model, domain) the gate said no to
    gets no constraints from search, MCP or the proxy (proxy status `gated`). A condition
    name picks its note where several disagree; False ignores the gate."""
    memory_timeout_s: float = 5.0
    """Labelling + retrieval longer than this: the request goes on without memory (error)."""
    upstream_timeout_s: float = 300.0
    """An upstream that does not answer (or send the next chunk) within this: 504."""
    data_dir: str | None = None
    """Where feedback's server-side judge reads benchmark tasks (server/judge.py; None:
    MEMCOLLAB_DATA_DIR, else the default data directory)."""
    learn_max_pending: int = 1000
    """Online learning: most pending pairs in the queue (more wait for the backlog scan)."""
    learn_lease_s: float = 600.0
    """Online learning: how long a worker holds a claimed pair before another may take it."""
    learn_max_tries: int = 3
    """Online learning: claims of one pair before it fails."""
    threads: int = 16
    """Request threads of one process (the thread pool that runs the endpoints); a
    PostgreSQL memory's connection pool is sized to match unless MEMCOLLAB_PG_POOL_SIZE
    is set, so the process opens at most this many connections and no thread waits."""


class ServerContext:
    """The memory, the service's stores, the fleet and the settings of one process."""

    def __init__(
        self,
        memory: Memory,
        *,
        fleet: Fleet | None = None,
        settings: Settings | None = None,
        labeller: Labeller | None = None,
    ) -> None:
        self.memory = memory
        self.settings = settings or Settings()
        if self.settings.threads < 1:
            raise ValueError("the service needs at least one request thread")
        store = memory.store
        if isinstance(store, PostgresMemory) and "MEMCOLLAB_PG_POOL_SIZE" not in os.environ:
            store.set_pool_size(self.settings.threads)
        self.db = ServerDB(store)
        self.keys = KeyStore(self.db)
        self.attempts = AttemptStore(self.db)
        self.provenance = ProvenanceStore(self.db)
        self.counters = CounterStore(self.db)
        self.judge = TaskJudge(self.settings.data_dir)
        self.fleet = fleet
        self.labeller = labeller
        # Online learning's queue: every stored verdict offers its task (server/learn_queue.py).
        self.learning = LearnQueue(
            self.db,
            self.attempts,
            self.model_strength,
            max_pending=self.settings.learn_max_pending,
            lease_s=self.settings.learn_lease_s,
            max_tries=self.settings.learn_max_tries,
        )
        self.attempts.listeners.append(self.learning.on_verdict)

    def model_strength(self, model: str) -> int:
        """A model's strength in the fleet (0 for a model the fleet does not name)."""
        if self.fleet is None or model not in self.fleet.names():
            return 0
        return self.fleet.spec(model).strength

    def search(
        self,
        task: Task,
        *,
        namespace: str,
        model: str | None,
        category: str | None = None,
        subcategory: str | None = None,
        **options: Any,
    ) -> tuple[Retrieved, LabelSource]:
        """The retrieval that REST /v1/search, the MCP tool and the proxy share, honouring the
        settings' gate. The label is the request's `category` (and `subcategory`, else
        unlabelled) if it names one; else the service's labeller's, asked only when the
        gate lets memory through to `model` and the strategy is task-aware; else none (the
        whole domain is searched). `options` go to `Memory.search`; raises what the
        labeller or the store raises."""
        if category is not None:
            label = RequestLabel(category, subcategory or UNLABELLED)
            found = self.memory.search(
                task,
                model=model,
                label=label,
                namespace=namespace,
                gate=self.settings.gate,
                **options,
            )
            return found, "request"
        found = self.memory.search(
            task,
            model=model,
            labeller=self.labeller,
            namespace=namespace,
            gate=self.settings.gate,
            **options,
        )
        # A labelled task-aware search reports its label's category; nothing else does.
        return found, "labeller" if found.category is not None else "none"

    @classmethod
    def open(
        cls,
        location: str | Path,
        *,
        fleet: Fleet | str | Path | None = None,
        settings: Settings | None = None,
        labeller: Labeller | None = None,
        create: bool = True,
    ) -> ServerContext:
        """Open the memory at `location` (a path or URL, as `Memory.open`) and the service
        tables beside it. `fleet`: a Fleet, a fleet file, or None for the packaged models
        (loading a fleet reads its file only; no model is loaded)."""
        if not isinstance(fleet, Fleet):
            fleet = Fleet.load(fleet)
        memory = Memory.open(location, create=create)
        try:
            return cls(memory, fleet=fleet, settings=settings, labeller=labeller)
        except BaseException:
            memory.close()
            raise

    @property
    def location(self) -> str:
        """Where the memory lives (no password)."""
        return self.memory.location

    def check_ready(self) -> None:
        """Raise unless the database answers (the memory's and the service's tables)."""
        self.memory.store.version()
        self.db.ping()

    def close(self) -> None:
        """Close the service tables' and the memory's connections."""
        self.db.close()
        self.memory.close()

    def __enter__(self) -> ServerContext:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
