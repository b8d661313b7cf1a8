"""The README's use path, run as printed: the `use-path` block (data get from a local mirror
of the benchmark files, collect, distill, inspect, solve, export, a dry run) and the
`use-path-serve` block (a key, `serve` in the background, a search with curl), in a fresh
folder with fresh data, call cache and memory. Real packaged models; minutes on 2 cores."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from memcollab.paths import models_dir
from tests.support.data import DATA_DIR, needs_data
from tests.support.data_mirror import mirror_of
from tests.support.http_files import serve

pytestmark = [pytest.mark.live, needs_data]

ROOT = Path(__file__).resolve().parents[1]
SERVE_PORT = 8765  # the port the README prints


def readme_block(marker: str) -> str:
    """The shell text between <!-- marker --> and <!-- /marker --> in the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"<!-- {marker} -->\n") + len(f"<!-- {marker} -->\n")
    block = text[start : text.index(f"<!-- /{marker} -->", start)].strip()
    assert block.startswith("```bash\n") and block.endswith("```"), marker
    return block.removeprefix("```bash\n").removesuffix("```")


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `script` in its own session; at the time limit the whole session is killed (a
    plain timeout would leave the commands it started running)."""
    with subprocess.Popen(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=2400)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the session this test started
            out, err = process.communicate()
            pytest.fail(f"timed out after 2400 s:\n{out[-3000:]}\n{err[-3000:]}")
        except BaseException:  # Ctrl-C, or SIGTERM to pytest (tests/conftest.py): no orphans
            os.killpg(process.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture
def user(tmp_path: Path) -> dict[str, str]:
    """A new user's environment: nothing of ours but the assembled weights (assembling them
    is the demo's job, and it takes minutes); `memcollab` from this interpreter's venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMCOLLAB_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        MEMCOLLAB_CACHE_DIR=str(tmp_path / "cache"),
        MEMCOLLAB_MODELS_DIR=str(models_dir()),
        COLUMNS="200",
    )
    return env


@pytest.mark.timeout(3000)
def test_the_readme_use_path_runs_as_printed(tmp_path: Path, user: dict[str, str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "benchmarks").symlink_to(ROOT / "benchmarks")  # the dry run names a committed file
    with serve(mirror_of(DATA_DIR)) as mirror:
        done = _bash(readme_block("use-path"), work, {**user, "MEMCOLLAB_DATA_MIRROR": mirror.url})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = tmp_path / "xdg-data" / "memcollab" / "data"
    assert (data / "math" / "train.jsonl").is_file() and (data / "mbpp" / "mbpp.jsonl").is_file()
    assert (work / "runs" / "first" / "trajectories.sqlite").is_file()
    assert (work / "mem.sqlite").is_file() and (work / "mem.jsonl").is_file()
    assert "Plan of paper" in done.stdout

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", SERVE_PORT)) == 0:
            pytest.skip(f"port {SERVE_PORT}, which the README prints, is in use here")
    lines = []
    for line in readme_block("use-path-serve").splitlines():
        lines.append(line)
        if line.split("#")[0].rstrip().endswith("&"):  # wait until the service answers
            lines.append(
                "for _ in $(seq 120); do curl -sf http://127.0.0.1:8765/v1/ready >/dev/null"
                " && break; sleep 1; done"
            )
    script = "\n".join(lines) + '\nkill "$!"\n'  # ends the service this script started
    served = _bash(script, work, user)
    assert served.returncode == 0, served.stdout[-3000:] + served.stderr[-3000:]
    assert '"hits"' in served.stdout
