"""The online distiller's request bound and reply budget are settable (`learn
--prompt-chars/--reply-tokens`, `serve --learn-prompt-chars/--learn-reply-tokens`), so the
online replay can distil as the v2 batch build did (4,000 characters, 200 tokens) instead
of the Distiller's defaults (9,000 and 400)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memcollab import cli_learn
from memcollab.cli import app
from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.server.context import ServerContext
from tests.server.conftest import Storage


def _fleet(path: Path) -> Path:
    path.write_text('[models.d]\nprovider = "scripted"\nresponses = ["1"]\n')
    return path


def test_make_worker_sets_the_request_bound_and_the_reply_budget(storage: Storage) -> None:
    ctx = storage.new("sqlite")
    ctx.fleet = Fleet([ModelSpec(name="d", provider="scripted", responses=["1"])])
    worker = cli_learn.make_worker(
        ctx, "d", labeller="llm", no_cache=True, prompt_chars=4000, reply_tokens=200
    )
    assert worker.distiller.max_prompt_chars == 4000
    assert worker.distiller.decoding.max_tokens == 200
    default = cli_learn.make_worker(ctx, "d", labeller="llm", no_cache=True)
    assert (default.distiller.max_prompt_chars, default.distiller.decoding.max_tokens) == (
        9000,
        400,
    )


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("learn", ["--prompt-chars", "4000", "--reply-tokens", "200", "--once"]),
        ("serve", ["--learn", "--learn-prompt-chars", "4000", "--learn-reply-tokens", "200"]),
    ],
)
def test_the_commands_pass_them_to_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, flags: list[str]
) -> None:
    seen: dict[str, Any] = {}

    def fake_worker(ctx: ServerContext, distiller: str, **kw: Any) -> Any:
        seen.update(kw)
        raise SystemExit(0)  # nothing to run: the options were what this test wanted

    monkeypatch.setattr(cli_learn, "make_worker", fake_worker)
    memory = tmp_path / "m.sqlite"
    ServerContext.open(str(memory)).close()
    args = [command, "--memory", str(memory), "--fleet", str(_fleet(tmp_path / "f.toml"))]
    result = CliRunner().invoke(app, [*args, "--distiller", "d", *flags])
    assert result.exit_code == 0, result.output
    assert (seen["prompt_chars"], seen["reply_tokens"]) == (4000, 200)
