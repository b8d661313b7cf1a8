"""llama-cpp-python's OpenAI-compatible server with memcollab's AMX guard applied.

`python -m memcollab.llm.llama_server --model M.gguf [llama_cpp.server options]` is
`python -m llama_cpp.server` with the same options, except that llama.cpp's AMX buffer type
is removed first (memcollab.llm.amx): on a CPU with AMX tiles where those kernels crash, the
plain server dies with a segmentation fault at its first request. `MEMCOLLAB_LLAMA_AMX=1`
keeps them. Written here because llama_cpp.server has no hook to run code before it loads
its model.
"""

from __future__ import annotations

import runpy
import sys

from memcollab.llm.amx import guard_amx


def main() -> None:
    """Guard AMX, then run llama_cpp.server's command line with this process's arguments."""
    guard_amx()
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
