"""YAML as a configuration object must be written: one document, no duplicate keys.

Where it sits: ``engine.model.parse`` loads the annotation's text here before judging its fields.
PyYAML resolves a duplicate key as last-one-wins, silently: here it is an error, named with its
line and column. libyaml parses when PyYAML was built with it (every Service's annotation is
parsed, and the pure-Python parser costs more CPU than the rest of Pending); a text libyaml
refuses is parsed again by PyYAML's own parser, whose messages say more about what is wrong.
``one_line_problem`` squeezes those messages into one line, to fit in an Event.
"""

from __future__ import annotations

from typing import Any

import yaml

from engine.model.config import show

FastSafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _NoDuplicateKeys:
    """Refuses duplicate keys, which PyYAML would otherwise resolve as last-one-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # merge keys ("<<") are allowed to repeat and to be overridden
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: the base class reports it properly
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found duplicate key {show(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


class _StrictLoader(_NoDuplicateKeys, yaml.SafeLoader):
    pass


class _FastStrictLoader(_NoDuplicateKeys, FastSafeLoader):
    pass


def load_strict(text: str) -> Any:
    """One YAML document; a stream holding no document (only comments) means "nothing given"."""
    try:
        return _load_with(_FastStrictLoader, text)
    except yaml.YAMLError:
        if FastSafeLoader is yaml.SafeLoader:
            raise
        return _load_with(_StrictLoader, text)


def _load_with(loader_class: Any, text: str) -> Any:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return {} if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


def one_line_problem(e: yaml.YAMLError | RecursionError) -> str:
    """PyYAML's multi-line message squeezed into one line, so that it fits in an Event."""
    if isinstance(e, RecursionError):
        return "the value is nested too deeply"
    if not isinstance(e, yaml.MarkedYAMLError) or not e.problem:
        return " ".join(str(e).split())
    text = f"{e.context}: {e.problem}" if e.context else e.problem
    if e.problem_mark is not None:
        text += f" (line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1})"
    return " ".join(text.split())
