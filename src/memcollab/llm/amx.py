"""Keep llama.cpp off its AMX kernels unless the user asks for them.

A llama-cpp-python built on a CPU with AMX tiles (Intel Sapphire Rapids and later) compiles
llama.cpp's AMX kernels and offers them as an extra CPU buffer type ("AMX") ahead of the
repacked AVX kernels ("CPU_REPACK"). On a virtual machine of that kind (2026-12-03) every
model then crashed with a segmentation fault at its first decode, while the same build with
the AMX buffer type left out ran normally at the speed of a build without AMX.

llama.cpp has no switch for one extra buffer type: `use_extra_bufts = false` drops the
repacked kernels too (about 20% slower decoding). So, before the first model loads, this
module removes "AMX" from the NULL-terminated list that the CPU backend hands every model
loader (`ggml_backend_dev_get_extra_bufts`, a static array, so the change holds for the
process). `MEMCOLLAB_LLAMA_AMX=1` keeps the AMX kernels, for machines where they work.
Written here because neither llama.cpp nor llama-cpp-python offers this setting.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from memcollab.errors import ModelUnavailableError

log = logging.getLogger(__name__)

AMX_BUFFER_TYPE = b"AMX"
ENV_KEEP_AMX = "MEMCOLLAB_LLAMA_AMX"
_CPU_DEVICE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU
REBUILD_FIX = (
    "rebuild llama-cpp-python without AMX: CFLAGS/CXXFLAGS='-mno-amx-tile -mno-amx-int8"
    " -mno-amx-bf16' pip install --no-cache-dir --force-reinstall llama-cpp-python"
)


@dataclass(frozen=True)
class AmxState:
    """What the CPU backend offers after `guard_amx`: the extra buffer types, whether
    AMX was built in, and whether its kernels are in use."""

    extra_buffer_types: tuple[str, ...]
    built: bool
    active: bool


_STATE: AmxState | None = None
_LOCK = threading.Lock()


def guard_amx() -> AmxState:
    """Remove llama.cpp's AMX buffer type (once per process) unless MEMCOLLAB_LLAMA_AMX=1.

    Raises ModelUnavailableError when AMX is built in and cannot be removed."""
    global _STATE
    with _LOCK:
        if _STATE is None:
            _STATE = _guard()
        return _STATE


def _guard() -> AmxState:
    import llama_cpp

    llama_cpp.llama_backend_init()  # registers the CPU backend; idempotent
    try:
        from llama_cpp._ggml import libggml
    except ImportError as exc:  # an older llama-cpp-python without its ggml handle
        return _unlisted(llama_cpp, f"no llama_cpp._ggml: {exc}")
    try:
        by_type = _fn(libggml, "ggml_backend_dev_by_type", ctypes.c_void_p, [ctypes.c_int])
        reg_of = _fn(libggml, "ggml_backend_dev_backend_reg", ctypes.c_void_p, [ctypes.c_void_p])
        proc = _fn(
            libggml,
            "ggml_backend_reg_get_proc_address",
            ctypes.c_void_p,
            [ctypes.c_void_p, ctypes.c_char_p],
        )
        name_of = _fn(libggml, "ggml_backend_buft_name", ctypes.c_char_p, [ctypes.c_void_p])
    except AttributeError as exc:
        return _unlisted(llama_cpp, f"ggml lacks {exc}")
    device = by_type(_CPU_DEVICE)
    address = proc(reg_of(device), b"ggml_backend_dev_get_extra_bufts") if device else None
    if not address:
        return _unlisted(llama_cpp, "the CPU backend lists no extra buffer types")
    extra_bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)

    def listed() -> list[tuple[int, bytes]]:
        array = extra_bufts(device)
        out: list[tuple[int, bytes]] = []
        while array and array[len(out)]:
            out.append((array[len(out)], name_of(array[len(out)]) or b"?"))
        return out

    before = listed()
    names = tuple(name.decode(errors="replace") for _, name in before)
    built = any(name == AMX_BUFFER_TYPE for _, name in before)
    if not built:
        return AmxState(extra_buffer_types=names, built=False, active=False)
    if os.environ.get(ENV_KEEP_AMX) == "1":
        log.info("llama.cpp's AMX kernels are in use (%s=1)", ENV_KEEP_AMX)
        return AmxState(extra_buffer_types=names, built=True, active=True)
    keep = [pointer for pointer, name in before if name != AMX_BUFFER_TYPE]
    array = extra_bufts(device)
    for i in range(len(before)):  # shift left in place; the freed tail becomes NULL
        array[i] = keep[i] if i < len(keep) else None
    after = listed()
    if any(name == AMX_BUFFER_TYPE for _, name in after):
        raise ModelUnavailableError(
            "llama.cpp's AMX kernels could not be turned off (they crashed every model on"
            f" an AMX virtual machine); set {ENV_KEEP_AMX}=1 to use them anyway",
            REBUILD_FIX,
        )
    remaining = tuple(name.decode(errors="replace") for _, name in after)
    log.info(
        "llama.cpp's AMX kernels turned off (extra CPU buffer types now: %s); set %s=1 to use them",
        ", ".join(remaining) or "none",
        ENV_KEEP_AMX,
    )
    return AmxState(extra_buffer_types=remaining, built=True, active=False)


def _fn(lib: ctypes.CDLL, name: str, restype: type, argtypes: list[type]) -> Any:
    function = getattr(lib, name)
    function.restype = restype
    function.argtypes = argtypes
    return function


def _unlisted(llama_cpp: Any, why: str) -> AmxState:
    """An older or differently built ggml whose buffer types cannot be listed: fine
    without AMX; with AMX built in (its system info says so) it cannot be kept off."""
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    if "AMX_INT8 = 1" not in info:
        log.debug("AMX guard: nothing to do (%s)", why)
        return AmxState(extra_buffer_types=(), built=False, active=False)
    if os.environ.get(ENV_KEEP_AMX) == "1":
        return AmxState(extra_buffer_types=(), built=True, active=True)
    raise ModelUnavailableError(
        f"this llama-cpp-python has AMX kernels that memcollab cannot turn off ({why}); they"
        f" crashed every model on an AMX virtual machine. Set {ENV_KEEP_AMX}=1 to use them",
        REBUILD_FIX,
    )
