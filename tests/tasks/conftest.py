"""Fixtures shared by the sandbox tests."""

from typing import cast

import pytest

from memcollab.tasks.sandbox import BackendName, SandboxError, isolation_report


@pytest.fixture(params=["bwrap", "fallback"])
def backend(request: pytest.FixtureRequest) -> BackendName:
    """Each backend usable on this machine (bubblewrap is skipped where it cannot run)."""
    try:
        isolation_report(request.param)
    except SandboxError as exc:
        pytest.skip(f"{request.param} backend unavailable here: {exc}")
    return cast(BackendName, request.param)
