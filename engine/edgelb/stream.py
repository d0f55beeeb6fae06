"""A JSON array answer decoded one element at a time, as it streams in.

Where it sits in the data flow: under ``EdgeLBClient.iter_pools`` (``GET /v2/pools``), read by
the pool sweep and the orphan sweep (``engine.runtime.poolsweep``, ``engine.runtime.orphans``)
through ``pools``. At 20,000 Services the listing is ~13.5 MB of JSON: read whole, its bytes,
its text and its decoded pools (~60 MB) are all held at once, every resync period. Decoded here,
what is held is a chunk or two of text and the one pool being decoded; the caller keeps what it
compares of each pool and drops the rest.

``array_items`` is pure (chunks of bytes in, elements out); a body that is not a JSON array, or
ends early, raises ``Unexpected`` after the elements before the fault were given: a caller must
use nothing of a listing until it has iterated to the end without error.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import requests

from engine.edgelb.auth import transport_reason
from engine.edgelb.errors import Unavailable, Unexpected
from engine.edgelb.port import EdgeLB, Pool

#: Bytes read from the socket at a time.
CHUNK = 64 * 1024

_DECODER = json.JSONDecoder()
_BLANK = re.compile(r"[ \t\n\r]*")


class _Text:
    """The decoded text not consumed yet, refilled from ``chunks`` on demand."""

    def __init__(self, chunks: Iterable[bytes], what: str) -> None:
        self._chunks = iter(chunks)
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self.what = what
        self.buf = ""
        self.pos = 0
        self.ended = False

    def more(self) -> bool:
        """Append the next chunk (dropping what was consumed); False at the end of the body."""
        if self.ended:
            return False
        if self.pos:
            self.buf, self.pos = self.buf[self.pos :], 0
        try:
            chunk = next(self._chunks, None)
            text = self._utf8.decode(chunk or b"", final=chunk is None)
        except UnicodeDecodeError:
            raise self.fault("is not UTF-8") from None
        self.ended = chunk is None
        self.buf += text
        return True

    def peek(self) -> str:
        """The next character that is not blank (consumed up to it), "" at the end of the body."""
        while True:
            found = _BLANK.match(self.buf, self.pos)
            self.pos = found.end() if found else self.pos
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def value(self) -> Any:
        """Decode the JSON value at ``pos`` (after ``peek``), reading more until it is whole."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError:
                value, end = None, -1
            # A value that reaches the end of the text may be cut short (a number): read on.
            if end != -1 and (end < len(self.buf) or self.ended):
                self.pos = end
                return value
            if self.ended:
                raise self.fault("is not JSON (or ends early)")
            # Read until the text not yet decoded has doubled: a large element costs a few
            # attempts, not one per chunk.
            wanted = 2 * (len(self.buf) - self.pos) + 1
            while len(self.buf) - self.pos < wanted and self.more():
                pass

    def fault(self, reason: str) -> Unexpected:
        return Unexpected(f"{self.what}: the answer {reason}")


def array_items(chunks: Iterable[bytes], *, what: str) -> Iterator[Any]:
    """The elements of the JSON array that ``chunks`` spell, one at a time. ``what`` names the
    request in error messages ("GET /v2/pools")."""
    text = _Text(chunks, what)
    first = text.peek()
    if first != "[":
        raise text.fault("is not a JSON list" if first else "is empty")
    text.pos += 1
    if text.peek() == "]":
        text.pos += 1
    else:
        while True:
            yield text.value()
            following = text.peek()
            text.pos += 1
            if following == "]":
                break
            if following != ",":
                raise text.fault("is not JSON (or ends early)")
            text.peek()
    if text.peek():
        raise text.fault("is not JSON (text after the list)")


def response_items(resp: requests.Response, *, what: str, scrub: Callable[[str], str]) -> Iterator[Any]:
    """``array_items`` of a streamed answer; closes it. A connection lost mid-answer is
    ``Unavailable``, like one lost before the answer."""
    try:
        yield from array_items(_chunks(resp, what=what, scrub=scrub), what=what)
    finally:
        resp.close()


def _chunks(resp: requests.Response, *, what: str, scrub: Callable[[str], str]) -> Iterator[bytes]:
    try:
        yield from resp.iter_content(CHUNK)
    except requests.RequestException as exc:
        raise Unavailable(f"{what}: connection failed mid-answer: {scrub(transport_reason(exc))}") from None


def pools(edgelb: EdgeLB) -> Iterator[Pool]:
    """The pools listed, one at a time when ``edgelb`` can stream them (``iter_pools``: the HTTP
    client and the wrappers of the port), else from ``list_pools`` (fakes, stubs)."""
    stream = getattr(edgelb, "iter_pools", None)
    return stream() if callable(stream) else iter(edgelb.list_pools())
