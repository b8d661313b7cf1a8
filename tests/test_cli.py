"""The CLI as a user runs it: a real subprocess, exit codes, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

from memcollab.llm.scripted import ScriptedModel
from tests.support.openai_stub import OpenAIStubServer


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memcollab", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def _fleet(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fleet.toml"
    path.write_text(body)
    return str(path)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]


def test_chat_with_a_scripted_fleet_and_cache(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, '[models.bot]\nprovider = "scripted"\nresponses = ["Hi there"]\n')
    first = run_cli("models", "chat", "bot", "hello", "--fleet", fleet)
    assert first.returncode == 0, first.stderr
    assert "Hi there" in first.stdout
    again = run_cli("models", "chat", "bot", "hello", "--fleet", fleet)
    assert "cache" in again.stdout


def test_unknown_model_name(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, '[models.bot]\nprovider = "scripted"\nresponses = ["x"]\n')
    result = run_cli("models", "chat", "robot", "hi", "--fleet", fleet)
    assert_one_line_error(result, "no model called 'robot'", "known models: bot")


def test_malformed_fleet_toml(tmp_path: Path) -> None:
    result = run_cli("models", "chat", "bot", "hi", "--fleet", _fleet(tmp_path, "[models.bot\n"))
    assert_one_line_error(result, "is not valid TOML")


def test_gguf_path_that_does_not_exist(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, '[models.m]\nprovider = "llamacpp"\npath = "/no/such.gguf"\n')
    result = run_cli("models", "chat", "m", "hi", "--fleet", fleet)
    assert_one_line_error(result, "GGUF file not found: /no/such.gguf")


def test_unreachable_endpoint(tmp_path: Path) -> None:
    fleet = _fleet(
        tmp_path,
        '[models.r]\nprovider = "openai"\nmodel = "m"\n'
        'base_url = "http://127.0.0.1:9/v1"\nmax_retries = 0\n',
    )
    result = run_cli("models", "chat", "r", "hi", "--fleet", fleet)
    assert_one_line_error(result, "cannot reach http://127.0.0.1:9/v1", "is the server running")


def test_bad_api_key(tmp_path: Path) -> None:
    with OpenAIStubServer(ScriptedModel(["ok"], cycle=True), api_key="right") as server:
        fleet = _fleet(
            tmp_path,
            f'[models.r]\nprovider = "openai"\nmodel = "stub-model"\n'
            f'base_url = "{server.base_url}"\napi_key_env = "R_KEY"\n',
        )
        result = run_cli("models", "chat", "r", "hi", "--fleet", fleet, env={"R_KEY": "wrong"})
        assert_one_line_error(result, "refused the API key")
        good = run_cli(
            "models", "chat", "r", "hi", "--fleet", fleet, "--no-cache", env={"R_KEY": "right"}
        )
        assert good.returncode == 0 and "ok" in good.stdout


def test_unknown_packaged_model_in_prepare() -> None:
    assert_one_line_error(run_cli("models", "prepare", "llama-70b"), "unknown packaged model")


def test_models_list_shows_every_packaged_model(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, '[models.bot]\nprovider = "scripted"\nresponses = ["x"]\n')
    result = run_cli("models", "list", "--fleet", fleet)
    assert result.returncode == 0, result.stderr
    for name in ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma3-270m", "bot"):
        assert name in result.stdout


def test_usage_error_is_not_a_traceback() -> None:
    result = run_cli("models", "chat")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Missing argument" in result.stderr


def test_cache_export_import_moves_calls_to_another_machine(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, '[models.bot]\nprovider = "scripted"\nresponses = ["Hi there"]\n')
    here, there = str(tmp_path / "here.sqlite"), str(tmp_path / "there.sqlite")
    chat = run_cli("models", "chat", "bot", "hello", "--fleet", fleet, "--cache", here)
    assert chat.returncode == 0, chat.stderr
    export = str(tmp_path / "calls.jsonl.gz")
    result = run_cli("cache", "export", export, "--cache", here, "--since", "2000-01-01T00:00")
    assert result.returncode == 0, result.stderr
    assert "exported 1 calls" in result.stdout
    result = run_cli("cache", "import", export, "--cache", there)
    assert "imported 1 calls, skipped 0" in result.stdout, result.stderr
    assert "1 calls in" in run_cli("cache", "stats", "--cache", there).stdout
    # A bad file and a bad --since are one error line each.
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert_one_line_error(run_cli("cache", "import", str(bad), "--cache", there), "bad.jsonl:1")
    assert_one_line_error(run_cli("cache", "export", export, "--since", "yesterday"), "--since")


def test_trajectories_export_import_moves_a_run_to_another_machine(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, '[models.bot]\nprovider = "scripted"\nresponses = ["\\\\boxed{4}"]\n')
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "1", "q": "2+2?", "a": "4"}\n')
    spec = f"jsonl:{tasks}#domain=math,prompt=q,answer=a,id=id"
    here, there = tmp_path / "here", tmp_path / "there"
    collected = run_cli("collect", "-t", spec, "--fleet", fleet, "--out", str(here), "--no-cache")
    assert collected.returncode == 0, collected.stderr
    export = str(tmp_path / "run.jsonl.gz")
    result = run_cli("trajectories", "export", str(here), export, "--since", "2000-01-01")
    assert "exported 1 trajectories" in result.stdout, result.stderr
    result = run_cli("trajectories", "import", str(there), export, export)
    assert "imported 1 trajectories, skipped 0" in result.stdout, result.stderr
    assert "imported 0 trajectories, skipped 1" in result.stdout
    # A folder without trajectories and a bad file are one error line each.
    empty = str(tmp_path / "empty")
    assert_one_line_error(run_cli("trajectories", "export", empty, export), "no trajectories")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": 3}\n')
    assert_one_line_error(run_cli("trajectories", "import", str(there), str(bad)), "bad.jsonl:1")


def test_memory_import_conflicts(tmp_path: Path) -> None:
    from memcollab.memory.record import Constraint, MemoryRecord
    from memcollab.memory.store import SQLiteMemory

    def record(n: int, avoid: str = "mixing units") -> MemoryRecord:
        return MemoryRecord(
            id=f"rec-{n}",
            domain="math",
            category="algebra",
            subcategory="linear",
            task_text=f"Task {n}",
            task_hash=f"hash-{n}",
            source_task_id=f"toy/{n}",
            constraints=(Constraint(when="units change", enforce="one unit", avoid=avoid),),
            pair_type="mixed",
            distiller="big",
            created_at=1_700_000_000.0 + n,
        )

    memory = str(tmp_path / "memory.sqlite")
    with SQLiteMemory(memory) as mem:
        mem.add_many([record(1), record(2)])
    source = tmp_path / "in.jsonl"
    lines = [record(1), record(2, avoid="dropping units"), record(3)]
    source.write_text("".join(r.model_dump_json() + "\n" for r in lines))

    refused = run_cli("memory", "import", memory, str(source))
    assert_one_line_error(refused, "rec-2", "1 conflicting record", "--on-conflict")
    with SQLiteMemory(memory) as mem:
        assert [r.id for r in mem.records()] == ["rec-1", "rec-2"]  # nothing written

    skipped = run_cli("memory", "import", memory, str(source), "--on-conflict", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert "imported 1 records" in skipped.stdout
    assert "1 already present" in skipped.stdout
    assert "1 conflicting" in skipped.stdout
    with SQLiteMemory(memory) as mem:
        assert mem.get("rec-2") == record(2)

    replaced = run_cli("memory", "import", memory, str(source), "--on-conflict", "replace")
    assert replaced.returncode == 0, replaced.stderr
    assert "imported 0 records" in replaced.stdout and "replaced 1" in replaced.stdout
    with SQLiteMemory(memory) as mem:
        assert mem.get("rec-2") == lines[1]

    again = run_cli("memory", "import", memory, str(source))
    assert again.returncode == 0, again.stderr
    assert "imported 0 records, skipped 3 already present" in again.stdout
    bad = run_cli("memory", "import", memory, str(source), "--on-conflict", "merge")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_version_and_help_speak_to_users() -> None:
    from memcollab import __version__

    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"memcollab {__version__}"
    helped = run_cli("--help")
    assert "shared memory for LLM agents" in helped.stdout
    assert "Thin: parse" not in helped.stdout
    for group in ("models", "collect", "distill", "solve", "memory", "experiment", "demo", "data"):
        assert group in helped.stdout
