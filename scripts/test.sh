#!/usr/bin/env bash
# Install memcollab with every extra into a virtual environment, then lint and run the tests.
# The live tests (Gemma 3 270M through llama.cpp) are required here: a missing local stack
# fails the run instead of skipping. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MEMCOLLAB_VENV:-.venv}"
python="${PYTHON:-python3}"
# The code sandbox (memcollab.tasks.sandbox) prefers bubblewrap; install it where we can.
if ! command -v bwrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
# The first build of llama-cpp-python compiles llama.cpp: about 6 minutes on 2 cores.
# On CPUs with AMX tiles (Intel Sapphire Rapids and later) a native build uses llama.cpp's AMX
# kernels, which crashed every model with a general protection fault on such a virtual machine
# (2026-12-03); build without them there (the AVX-512 kernels remain). pip reuses a wheel it
# has cached, so a wheel built before this check must be removed once:
# `pip cache remove 'llama_cpp_python*'`. All three flags: these come before llama.cpp's
# -march=native, and -mno-amx-tile alone there still leaves __AMX_INT8__ defined.
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
  no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  export CFLAGS="${CFLAGS:-} $no_amx" CXXFLAGS="${CXXFLAGS:-} $no_amx"
fi
"$venv/bin/python" -m pip install -q -e ".[local,server,postgres,dev]"
"$venv/bin/ruff" check src tests benchmarks
"$venv/bin/ruff" format --check src tests benchmarks
MEMCOLLAB_REQUIRE_LIVE=1 "$venv/bin/python" -m pytest "$@"
