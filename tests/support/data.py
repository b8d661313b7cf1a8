"""Where the benchmark files are for tests: MEMCOLLAB_DATA_DIR, else ../shared/data."""

import os
from pathlib import Path

import pytest

DATA_DIR = Path(
    os.environ.get("MEMCOLLAB_DATA_DIR") or Path(__file__).parents[2].parent / "shared" / "data"
)
needs_data = pytest.mark.skipif(
    not (DATA_DIR / "gsm8k").is_dir(), reason=f"no benchmark data in {DATA_DIR}"
)
