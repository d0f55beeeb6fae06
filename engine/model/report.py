"""Collecting what is wrong with a configuration object, field by field (pure).

Where it sits: ``engine.model.parse`` (the annotation) and ``engine.model.cloud`` (the
``cloudProviderConfiguration`` it holds) judge values with these helpers and gather every error
and warning in one ``Report``, each prefixed by the path of the field it is about, so that one
Warning Event (or one admission refusal) tells the user everything to fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.model.config import show

#: The largest integer any field takes, in absolute value (2^53: exact in a float and in JSON).
MAX_INTEGER = 2**53
#: A report lists this many errors (or warnings), then "and N more": a hostile annotation makes
#: thousands, and the message goes into an Event, the history, the log and the webhook's answer.
MAX_MESSAGES = 20
#: Any one message, in characters (values in it are already cut by ``show``).
MAX_MESSAGE_LENGTH = 400
# C0 and C1 controls, DEL, line and paragraph separators, bidirectional overrides (what
# ``show`` escapes).
_UNPRINTABLE = "\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x1f{_UNPRINTABLE}]")
_CONTROL_IN_TEXT = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f{_UNPRINTABLE}]")  # tab, LF, CR allowed


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


def string(path: str, value: Any, report: Report, *, multiline: bool = False) -> str | None:
    """``value`` if it is a string free of control characters (``multiline``: tab, CR, LF allowed)."""
    if not isinstance(value, str):
        report.error(path, f"{show(value)} is not a string")
        return None
    control = (_CONTROL_IN_TEXT if multiline else _CONTROL).search(value)
    if control is not None:
        # These values reach EdgeLB, Marathon, HAProxy's configuration and every terminal that
        # shows them; none has a use for a control character.
        report.error(
            path,
            f"{show(value)} holds the control character U+{ord(control.group()):04X} "
            f"(at character {control.start() + 1}): only printable characters are allowed",
        )
        return None
    return value


def integer(path: str, value: Any, report: Report, *, fallback: int) -> int:
    if not is_integer(value):
        report.error(path, f"{show(value)} is not an integer")
        return fallback
    if not _in_range(value, path, report):
        return fallback
    return int(value)


def number(path: str, value: Any, report: Report, *, fallback: float) -> float:
    if not is_number(value):
        report.error(path, f"{show(value)} is not a number")
        return fallback
    if is_integer(value) and not _in_range(value, path, report):
        return fallback
    return float(value)


def _in_range(value: int, path: str, report: Report) -> bool:
    """Integers beyond ±2^53 are refused whatever the field: no request needs one, JSON readers
    (and EdgeLB's Go ints) do not all hold one, and their decimal text costs CPU to write."""
    if -MAX_INTEGER <= value <= MAX_INTEGER:
        return True
    report.error(
        path, f"{show(value)} is out of range: integers are at most 2^53 ({MAX_INTEGER}) in absolute value"
    )
    return False


def capped(messages: Sequence[str], limit: int = MAX_MESSAGES) -> tuple[str, ...]:
    """The first ``limit`` messages, each at most ``MAX_MESSAGE_LENGTH`` characters, then "and N more"."""
    shown = tuple(cut(m, MAX_MESSAGE_LENGTH) for m in messages[:limit])
    more = len(messages) - limit
    if more <= 0:
        return shown
    return (*shown, f"and {more:,} more")


def cut(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and how much was cut."""
    if len(text) <= limit:
        return text
    marker = f"... ({len(text) - limit:,} more characters)"
    return text[: max(limit - len(marker), 0)] + marker


def described(exc: BaseException, limit: int = 200) -> str:
    """An unexpected exception as one bounded line: its type and message, whitespace folded."""
    return cut(" ".join(f"{type(exc).__name__}: {exc}".split()), limit)


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
