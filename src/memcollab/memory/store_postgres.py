"""The memory in PostgreSQL (`pip install 'memcollab[postgres]'`): psycopg 3, a connection
per thread, for memories shared between machines and processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from memcollab.errors import UserError
from memcollab.memory.store import MemoryConnectionError, MemoryStore, register_backend
from memcollab.memory.store_sql import _schema, _SQLMemory

_PG_CONNECT_TIMEOUT_S = 10
_PG_SCHEMA_LOCK = 0x6D656D636F6C6C  # pg_advisory_xact_lock key serialising schema creation


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise UserError(
            "a PostgreSQL memory needs psycopg, which is not installed",
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


class PostgresMemory(_SQLMemory):
    """The memory in PostgreSQL (psycopg 3; a connection per thread, autocommit reads).

    `schema`, when given, is created if needed and used as the search path, so several
    memories (or test runs) can share one database.
    """

    def __init__(self, url: str, schema: str | None = None) -> None:
        super().__init__()
        self._pg = _psycopg()
        self.url = url
        self.schema = schema
        self.location = _redact(url) + (f" (schema {schema})" if schema else "")
        try:
            self._init_schema()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> Any:
        from psycopg import sql
        from psycopg.conninfo import conninfo_to_dict

        pg = self._pg
        try:
            options = conninfo_to_dict(self.url)
        except pg.Error as exc:
            raise MemoryConnectionError(
                f"cannot read the PostgreSQL URL {_redact(self.url)!r}: {exc}",
                "write postgresql://user:password@host:port/dbname",
            ) from None
        extra = {} if "connect_timeout" in options else {"connect_timeout": _PG_CONNECT_TIMEOUT_S}
        try:
            conn = pg.connect(self.url, autocommit=True, **extra)
        except pg.Error as exc:
            raise _pg_failure(self.url, exc) from None
        if self.schema:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return conn

    def _init_schema(self) -> None:
        from psycopg import sql

        with self._write() as cur:
            # CREATE ... IF NOT EXISTS is not safe against a concurrent CREATE; serialise.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
            if self.schema:
                cur.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
            for statement in _schema(
                'TEXT COLLATE "C"', "DOUBLE PRECISION", "BIGINT", "BIGSERIAL PRIMARY KEY"
            ):
                cur.execute(statement)
        self._check_schema_version()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    @contextmanager
    def _write(self) -> Iterator[Any]:
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def _iter_json(self, namespace: str | None) -> Iterator[str]:
        conn = self._conn()
        with conn.cursor() as cur:
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
