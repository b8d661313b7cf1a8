"""The memory in PostgreSQL (`pip install 'memcollab[postgres]'`): psycopg 3 with a
connection pool (psycopg_pool), for memories shared between machines and processes.

Each process holds one pool of at most `pool_size` connections (default 10, or
MEMCOLLAB_PG_POOL_SIZE), lent for one statement or one transaction at a time, so the
connections a process opens do not grow with its threads: a thread that finds every
connection busy waits for one (up to the connect timeout, then a MemoryConnectionError).
The service's own tables (server/db.py) use the same pool.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from memcollab.errors import UserError
from memcollab.memory.store import MemoryConnectionError, MemoryStore, register_backend
from memcollab.memory.store_sql import _SQLMemory
from memcollab.memory.store_sql_schema import memory_schema

_PG_CONNECT_TIMEOUT_S = 10
DEFAULT_POOL_SIZE = 10
"""Most connections one PostgresMemory opens (PostgreSQL's default limit is 100 in all)."""
_PG_SCHEMA_LOCK = 0x6D656D636F6C6C  # pg_advisory_xact_lock key serialising schema creation


def _psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool  # noqa: F401 - needed at the first statement; checked here
    except ImportError as exc:
        raise UserError(
            f"a PostgreSQL memory needs {exc.name or 'psycopg'}, which is not installed",
            "pip install 'memcollab[postgres]'",
        ) from None
    return psycopg


def _pg_failure(url: str, exc: Exception) -> MemoryConnectionError:
    """One line: where, why, and what to do, from a psycopg connection error."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        info = {}
    host = str(info.get("host") or "localhost")
    port = str(info.get("port") or "5432")
    dbname = str(info.get("dbname") or info.get("user") or "")
    user = str(info.get("user") or "")
    first = (str(exc).strip().splitlines() or ["unknown error"])[0]
    reason = first.rsplit(" failed: ", 1)[-1]
    for prefix in ("connection failed: ", "connection is bad: "):
        reason = reason.removeprefix(prefix)
    reason = " ".join(reason.replace("FATAL:", "").split())
    low = reason.lower()
    if "refused" in low or "no such file" in low or "timeout" in low or "timed out" in low:
        fix = "is PostgreSQL running there? start it, or fix the host and port in the URL"
    elif "password" in low:
        fix = "check the user name and password in the URL"
    elif "database" in low and "does not exist" in low:
        fix = f"create the database (createdb -O {user or 'USER'} {dbname}) or fix the URL"
    elif "role" in low and "does not exist" in low:
        fix = "create that role in PostgreSQL or fix the user name in the URL"
    elif "resolve host" in low:
        fix = "fix the host name in the URL"
    else:
        fix = "check the URL: postgresql://user:password@host:port/dbname"
    return MemoryConnectionError(
        f"cannot connect to PostgreSQL at {host}:{port}/{dbname}: {reason}", fix
    )


def _redact(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, hostpart = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}@{hostpart}"


def _pool_size(value: int | None) -> int:
    """The pool size given, else MEMCOLLAB_PG_POOL_SIZE, else DEFAULT_POOL_SIZE (>= 1)."""
    if value is None:
        raw = os.environ.get("MEMCOLLAB_PG_POOL_SIZE", "").strip()
        try:
            value = int(raw) if raw else DEFAULT_POOL_SIZE
        except ValueError:
            raise UserError(
                f"MEMCOLLAB_PG_POOL_SIZE must be a whole number, not {raw!r}",
                "set it to the most PostgreSQL connections one process may open, e.g. 10",
            ) from None
    if value < 1:
        raise UserError(f"a connection pool needs at least 1 connection, not {value}")
    return value


class PostgresMemory(_SQLMemory):
    """The memory in PostgreSQL (psycopg 3; a pool of at most `pool_size` connections per
    process, autocommit reads).

    `schema`, when given, is created if needed and used as the search path, so several
    memories (or test runs) can share one database.
    """

    def __init__(
        self, url: str, schema: str | None = None, *, pool_size: int | None = None
    ) -> None:
        super().__init__()
        self._pg = _psycopg()
        self.url = url
        self.schema = schema
        self.location = _redact(url) + (f" (schema {schema})" if schema else "")
        self.pool_size = _pool_size(pool_size)
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self._inherited_pools: list[Any] = []  # a parent process's pools: never touched
        try:
            self._init_schema()
        except BaseException:
            self.close()
            raise

    def _options(self) -> dict[str, Any]:
        from psycopg.conninfo import conninfo_to_dict

        try:
            options = conninfo_to_dict(self.url)
        except self._pg.Error as exc:
            raise MemoryConnectionError(
                f"cannot read the PostgreSQL URL {_redact(self.url)!r}: {exc}",
                "write postgresql://user:password@host:port/dbname",
            ) from None
        return {} if "connect_timeout" in options else {"connect_timeout": _PG_CONNECT_TIMEOUT_S}

    def _configure(self, conn: Any) -> None:
        from psycopg import sql

        if self.schema:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    def _connect(self) -> Any:
        """One connection outside the pool (schema creation; clear errors on failure)."""
        pg = self._pg
        extra = self._options()
        try:
            conn = pg.connect(self.url, autocommit=True, **extra)
        except pg.Error as exc:
            raise _pg_failure(self.url, exc) from None
        self._configure(conn)
        return conn

    def _forked(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._inherited_pools.append(self._pool)
            self._pool = None

    def _get_pool(self) -> Any:
        with self._pool_lock:
            if self._closed:
                raise MemoryConnectionError(f"the memory at {self.location} is closed")
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(
                    self.url,
                    kwargs={"autocommit": True, **self._options()},
                    min_size=1,
                    max_size=self.pool_size,
                    configure=self._configure,
                    timeout=_PG_CONNECT_TIMEOUT_S,
                    name="memcollab",
                    open=True,
                )
            return self._pool

    def set_pool_size(self, size: int) -> None:
        """Change the most connections this process opens (the service sizes the pool to
        its thread pool, so no request thread waits for a connection)."""
        self.pool_size = _pool_size(size)
        with self._pool_lock:
            if self._pool is not None:
                self._pool.resize(min_size=1, max_size=self.pool_size)

    def pool_stats(self) -> dict[str, int]:
        """The pool's counters (psycopg_pool's get_stats: pool_size, pool_available, ...)."""
        with self._pool_lock:
            return {} if self._pool is None else dict(self._pool.get_stats())

    @contextmanager
    def _borrow(self) -> Iterator[Any]:
        from psycopg_pool import PoolTimeout

        pool = self._get_pool()
        try:
            conn = pool.getconn()
        except PoolTimeout:
            raise MemoryConnectionError(
                f"no PostgreSQL connection for the memory at {self.location} within "
                f"{_PG_CONNECT_TIMEOUT_S} s (pool of {self.pool_size}: all busy, or the "
                "server does not answer)",
                "check that PostgreSQL runs; under load, raise MEMCOLLAB_PG_POOL_SIZE",
            ) from None
        try:
            yield conn
        finally:
            pool.putconn(conn)  # a connection left broken or mid-transaction is reset or dropped

    def close(self) -> None:
        super().close()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _init_schema(self) -> None:
        from psycopg import sql

        conn = self._connect()  # outside the pool: a failure here is one clear message
        try:
            with conn.transaction(), conn.cursor() as cur:
                # CREATE ... IF NOT EXISTS is not safe against a concurrent CREATE; serialise.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
                if self.schema:
                    cur.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(self.schema)
                        )
                    )
                for statement in memory_schema(
                    'TEXT COLLATE "C"', "DOUBLE PRECISION", "BIGINT", "BIGSERIAL PRIMARY KEY"
                ):
                    cur.execute(statement)
        finally:
            conn.close()
        self._check_schema_version()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    @contextmanager
    def _begin(self) -> Iterator[tuple[Any, Any]]:
        with self._borrow() as conn, conn.transaction(), conn.cursor() as cur:
            yield conn, cur

    def _iter_json(self, namespace: str | None) -> Iterator[str]:
        with self._connection() as conn, conn.cursor() as cur:
            if namespace is None:
                rows = cur.stream("SELECT json FROM memory_records ORDER BY created_at, id")
            else:
                rows = cur.stream(
                    "SELECT json FROM memory_records WHERE namespace = %s ORDER BY created_at, id",
                    (namespace,),
                )
            for (blob,) in rows:
                yield blob


@register_backend("postgresql", "postgres")
def _open_postgres(url: str, create: bool) -> MemoryStore:
    # A PostgreSQL memory is a database that exists; its tables are created on first use.
    return PostgresMemory(url)
