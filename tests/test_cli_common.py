"""cli_common: how a long command takes SIGTERM."""

from __future__ import annotations

import os
import signal

import pytest

from memcollab.cli_common import stop_on_sigterm


def test_the_first_sigterm_interrupts_and_later_ones_cannot_cut_the_shutdown() -> None:
    before_term, before_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    shutdown_done = False
    try:
        stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
        # The shutdown (the runner's `finally`, writing the part's line) gets a second
        # SIGTERM, as a run under GNU `timeout` can: it is ignored.
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except KeyboardInterrupt:
            pytest.fail("a second SIGTERM interrupted the shutdown")
        shutdown_done = True
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before_term)
        signal.signal(signal.SIGINT, before_int)
    assert shutdown_done
