"""What every ``dklb`` command prints: aligned tables, times, ``-o table|json|yaml``.

Where it sits in the data flow: a command (``engine.cli.<command>``) reads bindings, pools and
history from the store (and pools from EdgeLB), turns them into rows or plain dicts, and hands
them here to become the text an operator reads: ``table`` for ``-o table``, ``emit`` for
``-o json`` and ``-o yaml`` (stdout), ``note`` for what a pipe should not see (stderr). Times are
shown both ways people need them at 3 a.m.: absolute UTC (``timestamp``) to correlate with other
logs, relative (``relative``: "3m ago", "in 40s") to see at a glance what is old or overdue.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import yaml

from engine.model.durations import format_duration

#: Between two columns: two spaces, as kubectl and ``dcos edgelb list`` do.
GAP = "  "
#: Shown for an absent value, so that no cell is empty and every column stays visible to ``awk``.
NONE = "-"


def _unicode_ok() -> bool:
    # A C-locale terminal (or a pipe in some containers) cannot encode "→" or "…": fall back to
    # ASCII rather than crash with UnicodeEncodeError in the middle of an incident.
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    return encoding.startswith("utf")


def arrow() -> str:
    return "→" if _unicode_ok() else "->"


def ellipsis() -> str:
    return "…" if _unicode_ok() else "..."


def width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide (CJK) characters count 2, combining marks 0."""
    total = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


def one_line(value: object) -> str:
    """A cell's text: never empty, never spanning lines (a newline would break every column after it)."""
    if value is None:
        return NONE
    text = " ".join(str(value).split())
    return text or NONE


def truncate(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` columns, ending in an ellipsis when it was cut."""
    if limit is None or width(text) <= limit:
        return text
    mark = ellipsis()
    room = max(0, limit - width(mark))
    out: list[str] = []
    used = 0
    for ch in text:
        w = width(ch)
        if used + w > room:
            break
        out.append(ch)
        used += w
    return "".join(out) + mark


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Iterable[int] = (),
    limits: Mapping[int, int | None] | None = None,
) -> str:
    """An aligned table: every column starts at the same offset on every line.

    ``right`` lists the indexes of columns aligned right (counts); ``limits`` caps the width of
    some columns (long messages), cutting with an ellipsis. The last column is not padded, so
    lines carry no trailing spaces.
    """
    limits = limits or {}
    right_set = set(right)
    cells = [[one_line(h) for h in headers]]
    for row in rows:
        texts = [one_line(v) for v in row]
        if len(texts) != len(headers):
            raise ValueError(f"row has {len(texts)} cells for {len(headers)} columns: {texts}")
        cells.append([truncate(t, limits.get(i)) if i in limits else t for i, t in enumerate(texts)])
    widths = [max(width(line[i]) for line in cells) for i in range(len(headers))]
    lines = []
    for line in cells:
        parts = []
        for i, text in enumerate(line):
            pad = " " * (widths[i] - width(text))
            last = i == len(line) - 1
            if i in right_set:
                parts.append(pad + text)
            else:
                parts.append(text if last else text + pad)
        lines.append(GAP.join(parts).rstrip())
    return "\n".join(lines)


# ---- times ------------------------------------------------------------------------------------


def timestamp(when: datetime | None) -> str:
    """Absolute UTC to the second, e.g. ``2026-11-28 12:03:07Z`` (sortable, greppable in logs)."""
    if when is None:
        return NONE
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def relative(when: datetime | None, now: datetime) -> str:
    """``3m12s ago``, ``in 40s`` or ``now`` (within a second); ``-`` for no time."""
    if when is None:
        return NONE
    seconds = (when - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    if seconds < 0:
        return f"{format_duration(-seconds)} ago"
    return f"in {format_duration(seconds)}"


def iso(when: datetime | None) -> str | None:
    """RFC 3339 UTC with a ``Z`` (what ``jq`` and Go parse) for machine output."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---- machine output ---------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` with datetimes as RFC 3339 strings and tuples as lists: JSON and YAML ready."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


def dump_json(value: Any) -> str:
    return json.dumps(plain(value), indent=2, ensure_ascii=False)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (error messages, diffs) as ``|`` blocks, readable as they were written."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Only a request: PyYAML falls back to quoting text a block cannot hold exactly (trailing
    # spaces), so the value always loads back unchanged.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(value: Any) -> str:
    return yaml.dump(
        plain(value), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    ).rstrip()


def emit(data: Any, output: str) -> None:
    """``data`` on stdout as JSON (``-o json``) or YAML (anything else)."""
    print(dump_json(data) if output == "json" else dump_yaml(data))


def note(text: str) -> None:
    """A remark for the operator on stderr: ``dklb inspect | awk ...`` sees only the table."""
    print(text, file=sys.stderr)


def yes_no(value: bool | None) -> str:
    return NONE if value is None else ("yes" if value else "no")


def indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())
