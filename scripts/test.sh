#!/usr/bin/env bash
# Install memcollab with every extra into a virtual environment, then lint (ruff), type-check
# (mypy) and run the tests.
# The live tests (Gemma 3 270M through llama.cpp) are required here: a missing local stack
# fails the run instead of skipping. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MEMCOLLAB_VENV:-.venv}"
python="${PYTHON:-python3}"
# The code sandbox (memcollab.tasks.sandbox) prefers bubblewrap, and the browser page's test
# drives Debian's headless Chromium (Playwright downloads no browser); install them where we can.
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v chromium >/dev/null || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# With a Chromium here, its test must run rather than skip.
if command -v chromium >/dev/null; then export MEMCOLLAB_REQUIRE_BROWSER=1; fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
# The first build of llama-cpp-python compiles llama.cpp: about 6 minutes on 2 cores. It is
# the default build users get; on CPUs with AMX tiles memcollab keeps llama.cpp's AMX kernels
# off at run time (memcollab.llm.amx), and the live tests check that.
"$venv/bin/python" -m pip install -q -e ".[local,postgres,server,dev]"
"$venv/bin/ruff" check src tests benchmarks
"$venv/bin/ruff" format --check src tests benchmarks
"$venv/bin/mypy" src
MEMCOLLAB_REQUIRE_LIVE=1 "$venv/bin/python" -m pytest -rs "$@"  # -rs: why each skip
