"""The memory's SQL schema (tables and indexes), written for either backend by the column
types it is given; each backend runs these statements when it opens a store."""

from __future__ import annotations

from memcollab.memory import store_changes as changelog
from memcollab.memory.store import SCHEMA_VERSION


def memory_schema(text_type: str, real_type: str, int_type: str, serial: str) -> list[str]:
    """CREATE statements of the memory tables (idempotent: IF NOT EXISTS)."""
    return [
        f"""CREATE TABLE IF NOT EXISTS memory_records (
            id {text_type} PRIMARY KEY,
            namespace {text_type} NOT NULL,
            domain {text_type} NOT NULL,
            category {text_type} NOT NULL,
            subcategory {text_type} NOT NULL,
            task_hash TEXT NOT NULL,
            model_pos {text_type},
            model_neg {text_type},
            pair_type {text_type} NOT NULL,
            distiller {text_type} NOT NULL,
            n_constraints INTEGER NOT NULL,
            json TEXT NOT NULL,
            created_at {real_type} NOT NULL,
            format_version INTEGER NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS memory_records_bucket ON memory_records "
        "(namespace, domain, category, subcategory, created_at, id)",
        "CREATE INDEX IF NOT EXISTS memory_records_task ON memory_records (namespace, task_hash)",
        f"""CREATE TABLE IF NOT EXISTS memory_retrievals (
            record_id {text_type} PRIMARY KEY,
            retrieved {int_type} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS memory_usage (
            record_id {text_type} NOT NULL,
            model {text_type} NOT NULL,
            helped {int_type} NOT NULL,
            harmed {int_type} NOT NULL,
            PRIMARY KEY (record_id, model)
        )""",
        f"""CREATE TABLE IF NOT EXISTS memory_flags (
            record_id {text_type} PRIMARY KEY,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at {real_type} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS memory_flag_history (
            seq {serial},
            record_id {text_type} NOT NULL,
            action {text_type} NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at {real_type} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS memory_flag_history_record ON memory_flag_history "
        "(record_id, at)",
        f"""CREATE TABLE IF NOT EXISTS memory_notes (
            namespace {text_type} NOT NULL,
            key {text_type} NOT NULL,
            json TEXT NOT NULL,
            at {real_type} NOT NULL,
            PRIMARY KEY (namespace, key)
        )""",
        f"""CREATE TABLE IF NOT EXISTS memory_meta (
            key TEXT PRIMARY KEY,
            value {int_type} NOT NULL
        )""",
        *_migration_baselines(text_type, int_type),
        *changelog.schema(text_type, real_type, int_type),
        "INSERT INTO memory_meta (key, value) VALUES ('version', 0) ON CONFLICT (key) DO NOTHING",
        f"INSERT INTO memory_meta (key, value) VALUES ('schema_version', {SCHEMA_VERSION}) "
        "ON CONFLICT (key) DO NOTHING",
        # Each step's tables are created by the same statements on a new or an old store
        # (MIGRATION_STEPS); the schema version then says the newest step. Schema 1 -> 2
        # added the flag tables: a version-1 memcollab would serve flagged records, so it
        # must refuse this store. Schema 2 -> 3 added memory_notes: a version-2 memcollab
        # would export a namespace without its notes (the utility gate's decision). Schema
        # 3 -> 4 added memory_baselines (memory/utility.py). Schema 4 -> 5 added statuses
        # and the change log (memory/store_changes.py): a version-4 memcollab would serve
        # quarantined and archived records and write changes the log does not hold.
        f"UPDATE memory_meta SET value = {SCHEMA_VERSION} WHERE key = 'schema_version' "
        f"AND value < {SCHEMA_VERSION}",
    ]


MIGRATION_STEPS = {2: "flags", 3: "notes", 4: "baselines", 5: "changes"}
"""Schema version -> the named step that reached it (SCHEMA_VERSION is the last one)."""


def _migration_baselines(text_type: str, int_type: str) -> list[str]:
    """Step "baselines" (schema 4, memory/utility.py): per (namespace, bucket, model) the
    model's outcomes on tasks solved without memory. One table, created if missing, so a
    schema-2 store gains it on opening; renumber by moving this step in MIGRATION_STEPS."""
    return [
        f"""CREATE TABLE IF NOT EXISTS memory_baselines (
            namespace {text_type} NOT NULL,
            domain {text_type} NOT NULL,
            category {text_type} NOT NULL,
            subcategory {text_type} NOT NULL,
            model {text_type} NOT NULL,
            successes {int_type} NOT NULL,
            failures {int_type} NOT NULL,
            PRIMARY KEY (namespace, domain, category, subcategory, model)
        )""",
    ]
