"""The streamed pool listing: ``array_items`` as a table of bodies cut into chunks of every size,
``EdgeLBClient.iter_pools`` against a raw HTTP server (whole, refused, cut mid-answer), and
``stream.pools`` choosing the streamed or the whole listing."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from engine.edgelb import stream
from engine.edgelb.client import EdgeLBClient
from engine.edgelb.errors import Unavailable, Unexpected
from engine.edgelb.stream import array_items, pools
from engine.runtime.fence import Fence, FencedEdgeLB
from engine.runtime.sharedmetadata import SharedMetadata
from tests.fakes.edgelb import FakeEdgeLB

POOLS: list[Any] = [
    {"name": f"p{i}", "haproxy": {"frontends": [{"name": f"c:ns:s{i}:80", "bindPort": 10000 + i}]}}
    for i in range(40)
]


def _cut(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


SIZES = [1, 2, 3, 7, 64, 4096, 1 << 20]

GOOD = [
    ("the pools, compact", json.dumps(POOLS).encode(), POOLS),
    ("the pools, indented", json.dumps(POOLS, indent=2).encode(), POOLS),
    ("an empty list, blanks around", b" \n[ \t] \r\n", []),
    (
        "multi-byte characters cut anywhere",
        json.dumps(["é☃𝄞", {"k": "ü"}], ensure_ascii=False).encode(),
        ["é☃𝄞", {"k": "ü"}],
    ),
    ("a number at the end of a chunk is read whole", b"[12345678,9]", [12345678, 9]),
    ("scalars and nested lists", b'[null,true,"]",[1,[2]],{"a":[]}]', [None, True, "]", [1, [2]], {"a": []}]),
]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("case", "body", "items"), GOOD, ids=[c[0] for c in GOOD])
def test_array_items_decodes_every_element(case: str, body: bytes, items: list[Any], size: int) -> None:
    assert list(array_items(_cut(body, size), what="GET /v2/pools")) == items


BAD = [
    ("an empty body", b"", "the answer is empty"),
    ("an object", b'{"pools": []}', "the answer is not a JSON list"),
    ("cut after a comma", b"[1,", r"the answer is not JSON \(or ends early\)"),
    ("cut inside an element", b'[{"name": "p"', r"the answer is not JSON \(or ends early\)"),
    ("an opening bracket only", b"[", r"the answer is not JSON \(or ends early\)"),
    ("a trailing comma", b"[1,]", r"the answer is not JSON \(or ends early\)"),
    ("no comma between elements", b"[1 2]", r"the answer is not JSON \(or ends early\)"),
    ("text after the list", b"[1] x", r"the answer is not JSON \(text after the list\)"),
    ("not UTF-8", b'["\xff"]', "the answer is not UTF-8"),
]


@pytest.mark.parametrize("size", [1, 3, 4096])
@pytest.mark.parametrize(("case", "body", "message"), BAD, ids=[c[0] for c in BAD])
def test_array_items_refuses_what_is_no_json_list(case: str, body: bytes, message: str, size: int) -> None:
    with pytest.raises(Unexpected, match=f"^GET /v2/pools: {message}"):
        list(array_items(_cut(body, size), what="GET /v2/pools"))


def test_a_large_element_is_not_decoded_once_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ~1 MB element read 1 KB at a time: the attempts to decode it grow with the log of its
    size (the text read is doubled between attempts), not with the number of chunks."""
    element = {"name": "big", "objects": [{"name": f"o{i}", "x": "y" * 50} for i in range(12_000)]}
    body = json.dumps([element]).encode()
    attempts = 0
    decode = stream._DECODER.raw_decode

    def counted(text: str, start: int) -> tuple[Any, int]:
        nonlocal attempts
        attempts += 1
        return decode(text, start)

    monkeypatch.setattr(stream._DECODER, "raw_decode", counted)
    assert list(array_items(_cut(body, 1024), what="t")) == [element]
    assert len(body) // 1024 > 900
    assert attempts <= 12


# ---- the HTTP client --------------------------------------------------------------------------


class RawServer:
    """Answers every request with ``answer`` (raw bytes: status line, headers, body), then closes."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


def _answer(status: str, body: bytes, length: int | None = None) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {length or len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[RawServer] = []

    def start(answer: bytes) -> EdgeLBClient:
        servers.append(RawServer(answer))
        return EdgeLBClient(servers[-1].url)

    yield start
    for server in servers:
        server.close()


def test_iter_pools_gives_what_list_pools_gives(serve: Any) -> None:
    reported: list[tuple[str, str, int]] = []
    body = json.dumps(POOLS * 50).encode()  # several chunks
    client = serve(_answer("200 OK", body))
    client._on_response = lambda method, route, status, _: reported.append((method, route, status))
    assert list(client.iter_pools()) == POOLS * 50
    assert client.list_pools() == POOLS * 50
    assert reported == [("GET", "/v2/pools", 200)] * 2


def test_iter_pools_cut_mid_answer_is_unavailable(serve: Any) -> None:
    body = json.dumps(POOLS * 50).encode()
    client = serve(_answer("200 OK", body[: len(body) // 2], length=len(body)))
    got: list[Any] = []
    with pytest.raises(Unavailable, match=r"^GET /v2/pools: connection failed mid-answer"):
        got.extend(client.iter_pools())
    assert 0 < len(got) < len(POOLS) * 50  # what came before the cut was given, then the error


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (
            "503 Service Unavailable",
            b'{"code": 503, "message": "busy"}',
            Unavailable,
            "GET /v2/pools: 503 busy",
        ),
        ("200 OK", b'{"pools": []}', Unexpected, "GET /v2/pools: the answer is not a JSON list"),
        ("200 OK", b"not json", Unexpected, "GET /v2/pools: the answer is not a JSON list"),
    ],
)
def test_iter_pools_refusals(serve: Any, status: str, body: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=f"^{message}"):
        list(serve(_answer(status, body)).iter_pools())


# ---- choosing the streamed listing ---------------------------------------------------------------


class Streaming(FakeEdgeLB):
    def __init__(self) -> None:
        super().__init__()
        self.streamed = 0

    def iter_pools(self) -> Iterator[dict[str, Any]]:
        self.streamed += 1
        return iter(self.list_pools())


@pytest.mark.parametrize(
    "wrap", [lambda e: e, lambda e: SharedMetadata(FencedEdgeLB(e, Fence(lambda: True)))]
)
def test_pools_streams_through_the_wrappers_when_it_can(wrap: Any) -> None:
    streaming, plain = Streaming(), FakeEdgeLB()
    for edgelb in (streaming, plain):
        edgelb.create_pool({"name": "p", "haproxy": {"frontends": [], "backends": []}})
    assert [p["name"] for p in pools(wrap(streaming))] == ["p"]
    assert streaming.streamed == 1
    assert [p["name"] for p in pools(wrap(plain))] == ["p"]  # no iter_pools: the whole listing
