"""YAML as a configuration object must be written: one document, no duplicate keys, bounded cost.

Where it sits: ``engine.model.parse`` loads the annotation's text here before judging its fields
(and ``engine.runtime.orphans`` reads the pool name the same way). Any Service author writes
this text, so what a load may cost is bounded before anything is built from it:

* libyaml parses (when PyYAML was built with it, as every wheel is); a text it refuses is never
  parsed again by PyYAML's pure-Python parser, which needs seconds of CPU for 256 KiB. The
  message is built from libyaml's own problem and mark instead;
* characters YAML does not allow (control characters, lone surrogates) are found first, with
  their position, since libyaml can only name their byte offset;
* the composed node graph is at most ``MAX_DEPTH`` levels deep and ``MAX_NODES`` nodes large,
  checked without recursion before construction (which recurses, and costs a Python call per
  node);
* an integer literal longer than ``MAX_INTEGER_DIGITS`` is not converted (Python refuses beyond
  4,300 decimal digits; sexagesimal ones cost a multiplication per digit): it becomes a
  ``LongInteger``, which the type checks refuse by size, naming the field;
* duplicate keys are an error (PyYAML silently keeps the last one), named with line and column;
* any error construction raises (``ValueError``, ``TypeError``, ``RecursionError``, ...) becomes
  a ``YAMLError`` with a one-line message: nothing else leaves ``load_strict``.

The size of the text itself is the caller's to cap (``engine.model.parse.MAX_ANNOTATION_BYTES``).
``one_line_problem`` squeezes a message into one line, to fit in an Event.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from engine.model.config import show

FastSafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Deeper than any configuration object (``frontends[0].port`` is 3 levels), far below what the
#: constructor's recursion could bear.
MAX_DEPTH = 32
#: Keys, values and items in all, aliases counted once: a frontend entry is 5, so this is room
#: for hundreds of ports; composing and constructing each costs Python objects (8,000: 40 ms).
MAX_NODES = 2000
#: Longer integer literals are not converted: 2^53 has 16 decimal digits; Python refuses beyond 4,300.
MAX_INTEGER_DIGITS = 100

_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# What the YAML reader refuses (PyYAML's own pattern): C0/C1 controls but tab, line feed, carriage
# return and NEL, DEL, lone surrogates, U+FFFE and U+FFFF.
_NOT_YAML = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class LongInteger(int):
    """An integer literal too long to convert: the value is ±10^(digits-1), at least its magnitude
    (``show`` names it by its digits, never by this value)."""

    digits: int

    def __new__(cls, digits: int, negative: bool) -> LongInteger:
        value = super().__new__(cls, (-1 if negative else 1) * 10 ** (digits - 1))
        value.digits = digits
        return value


class _NoDuplicateKeys:
    """Refuses duplicate keys, which PyYAML would otherwise resolve as last-one-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # merge keys ("<<") are allowed to repeat and to be overridden
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            try:
                hash(key)  # a set key is unhashable, yet ``in`` a set would accept it
            except TypeError:
                continue  # the base class refuses unhashable keys, with their position
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found duplicate key {show(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(node.value)
        digits = _digits(text)
        if digits > MAX_INTEGER_DIGITS:
            return LongInteger(digits, text.startswith("-"))
        value: int = super().construct_yaml_int(node)  # type: ignore[misc]
        return value


def _digits(literal: str) -> int:
    """How many digits an integer literal has, as written (any base; sexagesimal counts its colons)."""
    body = literal.lstrip("+-").replace("_", "")
    if body[:2].lower() in ("0x", "0o", "0b"):
        body = body[2:]
    return len(body.lstrip("0")) or 1


class _FastStrictLoader(_NoDuplicateKeys, FastSafeLoader):
    pass


_FastStrictLoader.add_constructor(_INT_TAG, _NoDuplicateKeys.construct_yaml_int)


def load_strict(text: str) -> Any:
    """One YAML document; a stream holding no document (only comments) means "nothing given".

    Raises ``yaml.YAMLError`` (one-line-able by ``one_line_problem``) and nothing else.
    """
    bad = _NOT_YAML.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start())
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1)
        raise yaml.MarkedYAMLError(
            None,
            None,
            f"found character U+{ord(bad.group()):04X}, which YAML does not allow",
            yaml.Mark("<annotation>", -1, line, column, None, 0),
        )
    if len(text) > 2 * MAX_NODES:
        # A node takes two characters at least ("1,"): a shorter text cannot hold too many, and
        # ``_check_graph`` counts exactly anyway; this pass only stops a large one early.
        _count_events(text)
    loader = _FastStrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        _check_graph(node)
        return loader.construct_document(node)
    except yaml.YAMLError:
        raise
    except RecursionError as e:
        raise yaml.YAMLError("the value is nested too deeply") from e
    except Exception as e:
        # A value PyYAML's constructors cannot build (a month 13, a year 99999, "!!int abc"):
        # the user's text, not a bug. The message may quote all of it: its start is enough.
        problem = " ".join(f"{type(e).__name__}: {e}".split())
        raise yaml.YAMLError(f"cannot read a value: {problem[:200]}") from e
    finally:
        loader.dispose()


def _count_events(text: str) -> None:
    """Refuse a text of more than ``MAX_NODES`` nodes before composing it: libyaml's events cost
    a fraction of the node objects composing makes (7 us each), and the count stops early."""
    for events, event in enumerate(yaml.parse(text, Loader=FastSafeLoader), start=1):
        if events > 2 * MAX_NODES:  # a scalar is one event, a collection two
            mark: Any = event.start_mark  # libyaml's own Mark type: the same fields
            raise yaml.MarkedYAMLError(
                None, None, f"the value holds more than {MAX_NODES:,} keys and values", mark
            )


def _check_graph(root: yaml.Node) -> None:
    """Refuse a graph deeper than ``MAX_DEPTH`` or of more than ``MAX_NODES`` nodes, iteratively,
    before anything is constructed; a node reached through aliases is counted once."""
    depth_of: dict[int, int] = {}  # id(node) -> the shallowest depth it was reached at
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise yaml.MarkedYAMLError(
                None, None, f"the value is nested more than {MAX_DEPTH} levels deep", node.start_mark
            )
        if depth_of.get(id(node), MAX_DEPTH + 1) <= depth:
            continue  # an alias to a node already walked from as high or higher
        depth_of[id(node)] = depth
        if len(depth_of) > MAX_NODES:
            raise yaml.MarkedYAMLError(
                None, None, f"the value holds more than {MAX_NODES:,} keys and values", node.start_mark
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend(((key, depth + 1), (value, depth + 1)))


def one_line_problem(e: yaml.YAMLError | RecursionError, text: str | None = None) -> str:
    """PyYAML's multi-line message squeezed into one line, so that it fits in an Event.

    With ``text``, the character at the problem's position is named too (libyaml does not).
    """
    if isinstance(e, RecursionError):
        return "the value is nested too deeply"
    if not isinstance(e, yaml.MarkedYAMLError) or not e.problem:
        return " ".join(str(e).split())
    message = f"{e.context}: {e.problem}" if e.context else e.problem
    mark = e.problem_mark
    if mark is not None:
        index = getattr(mark, "index", -1)
        if text is not None and isinstance(index, int) and index >= len(text):
            # libyaml places the end of the stream on a line of its own, which the text lacks.
            message += " (at the end of the text)"
        else:
            where = f"line {mark.line + 1}, column {mark.column + 1}"
            if text is not None and isinstance(index, int) and index >= 0 and "character" in message:
                where += f", at {show(text[index])}"
            message += f" ({where})"
    return " ".join(message.split())
