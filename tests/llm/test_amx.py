"""The AMX guard: llama.cpp's AMX kernels stay off unless MEMCOLLAB_LLAMA_AMX=1.

On an AMX virtual machine a default build of llama-cpp-python crashed every model; the
live tests of the model layer load models after the guard, so on such a machine they are
the end-to-end check. These tests check the guard's own decisions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from memcollab.errors import ModelUnavailableError
from memcollab.llm import amx
from tests.conftest import live_requirement


def _llama_cpp() -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        live_requirement("llama-cpp-python is not installed (pip install 'memcollab[local]')")


PROBE = """
import json
from memcollab.llm.amx import guard_amx
import llama_cpp
state = guard_amx()
info = llama_cpp.llama_print_system_info().decode()
print(json.dumps({"state": state.__dict__, "amx_in_build": "AMX_INT8 = 1" in info}))
"""


def _probe(keep_amx: bool) -> dict:
    """guard_amx() in a fresh process (the guard acts once per process); loads no model."""
    env = {k: v for k, v in os.environ.items() if k != amx.ENV_KEEP_AMX}
    if keep_amx:
        env[amx.ENV_KEEP_AMX] = "1"
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.live
def test_guard_leaves_no_amx_buffer_type_and_keeps_the_repacked_kernels() -> None:
    _llama_cpp()
    out = _probe(keep_amx=False)
    state = out["state"]
    assert state["built"] == out["amx_in_build"]  # the listing agrees with the build flags
    assert "AMX" not in state["extra_buffer_types"]
    assert not state["active"]
    assert "CPU_REPACK" in state["extra_buffer_types"]  # x86 builds repack Q4_K / Q4_0


@pytest.mark.live
def test_env_keeps_amx_where_it_was_built() -> None:
    _llama_cpp()
    out = _probe(keep_amx=True)
    state = out["state"]
    assert state["active"] == out["amx_in_build"]
    assert ("AMX" in state["extra_buffer_types"]) == out["amx_in_build"]


def test_an_unlistable_amx_build_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_amx = SimpleNamespace(llama_print_system_info=lambda: b"AVX512 = 1 | AMX_INT8 = 1 |")
    monkeypatch.delenv(amx.ENV_KEEP_AMX, raising=False)
    with pytest.raises(ModelUnavailableError, match="cannot turn off") as err:
        amx._unlisted(with_amx, "ggml lacks ggml_backend_buft_name")
    assert "-mno-amx-tile" in (err.value.fix or "")
    monkeypatch.setenv(amx.ENV_KEEP_AMX, "1")
    assert amx._unlisted(with_amx, "why").active
    without = SimpleNamespace(llama_print_system_info=lambda: b"AVX512 = 1 | REPACK = 1 |")
    assert amx._unlisted(without, "why") == amx.AmxState((), built=False, active=False)
