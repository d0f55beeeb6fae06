"""Small checks shared by the tests."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def present(value: T | None) -> T:
    """``value``, which the test needs to exist (a Service, a pool): the test fails where it is None."""
    assert value is not None, "expected an object, got None"
    return value
