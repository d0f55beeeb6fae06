"""Collecting what is wrong with a configuration object, field by field (pure).

Where it sits: ``engine.model.parse`` (the annotation) and ``engine.model.cloud`` (the
``cloudProviderConfiguration`` it holds) judge values with these helpers and gather every error
and warning in one ``Report``, each prefixed by the path of the field it is about, so that one
Warning Event (or one admission refusal) tells the user everything to fix.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.model.config import show


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}" if path else message)

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}" if path else message)


def reject_unknown_fields(data: Mapping[Any, Any], known: Iterable[str], path: str, report: Report) -> None:
    known = list(known)
    for key in data:
        if key in known:
            continue
        hint = _hint(key, known)
        report.error(path, f"unknown field {show(key)}{hint}")


def _hint(key: Any, known: list[str]) -> str:
    """`` (did you mean "elbs"?)`` for a near miss: a case slip or a letter or two off."""
    if not isinstance(key, str):
        return ""
    close = [k for k in known if k.lower() == key.lower()] or difflib.get_close_matches(
        key, known, n=1, cutoff=0.8
    )
    return f" (did you mean {show(close[0])}?)" if close else ""


def without_nulls(data: Mapping[Any, Any]) -> dict[Any, Any]:
    """``data`` less its null fields: an explicit null asks for the default, as leaving it out does.

    The Go dklb wrote every unset field as ``null`` (yaml.v2, no omitempty), into every Service.
    """
    return {k: v for k, v in data.items() if v is not None}


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # YAML booleans are never numbers


def is_number(value: Any) -> bool:
    return is_integer(value) or isinstance(value, float)


def string(path: str, value: Any, report: Report) -> str | None:
    if isinstance(value, str):
        return value
    report.error(path, f"{show(value)} is not a string")
    return None


def integer(path: str, value: Any, report: Report, *, fallback: int) -> int:
    if is_integer(value):
        return int(value)
    report.error(path, f"{show(value)} is not an integer")
    return fallback


def number(path: str, value: Any, report: Report, *, fallback: float) -> float:
    if not is_number(value):
        report.error(path, f"{show(value)} is not a number")
        return fallback
    try:
        return float(value)
    except OverflowError:
        return math.inf  # an integer too large for a float is no sensible request either


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"
