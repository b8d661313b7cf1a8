"""Classifier replies are model output: whatever they hold, parsing ends in a choice or None."""

from __future__ import annotations

import pytest

from memcollab.memory.classify import parse_choice

NAMES = ["Algebra", "Geometry", "Number Theory"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("9" * 5000, None),  # past int()'s 4300-digit limit
        ("Answer: " + "9" * 5000, None),
        ("The options are " + "1" * 4400 + " and more", None),
        ("0" * 5000 + "2", 1),  # leading zeros: still option 2
        ("[" * 5000, None),
        ("{" * 5000 + "1" + "}" * 5000, 0),
        ("\\boxed{" * 3000, None),
    ],
)
def test_hostile_replies_do_not_raise(reply: str, expected: int | None) -> None:
    assert parse_choice(reply, NAMES) == expected
