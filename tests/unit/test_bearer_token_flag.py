"""The Go dklb's ``--edgelb-bearer-token TOKEN``: used as the EdgeLB bearer token, warned about
once, and shown nowhere.

A whole run of the command line's side of it: the parser (flag or ``DKLB_EDGELB_BEARER_TOKEN``),
``--help``, ``edgelb_options`` and the ``AppConfig`` ``dklb run`` would start, the client, and
requests that fail (a server echoing the Authorization header into its error message, a refused
connection, a contradiction with the token file). Everything that could carry the token is
collected (stdout, stderr, every log record at DEBUG, exception texts, reprs) and searched.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable, Iterator

import pytest

from engine import cli
from engine.app import AppConfig
from engine.cli import options
from engine.cli import run as run_command
from engine.cli.options import UsageError
from engine.edgelb.errors import EdgeLBError
from tests.unit.test_edgelb_client import Recorded, Reply, StubServer, free_port

pytestmark = pytest.mark.usefixtures("no_dklb_environment")

TOKEN = "go-T0KEN-5b1f0c9e-visible-nowhere"
WARNING = "prefer --edgelb-bearer-token-file"


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


def echo(status: int) -> Callable[[Recorded], Reply]:
    def answer(rec: Recorded) -> Reply:
        # A hostile or buggy server quoting the request's credentials back.
        return Reply(status, {"code": status, "message": f"bad {rec.headers.get('Authorization')}"})

    return answer


class Recorder:
    """Stands in for ``engine.app.App``: keeps the config ``dklb run`` built, runs nothing."""

    def __init__(self, configs: list[AppConfig]) -> None:
        self.configs = configs

    def __call__(self, config: AppConfig) -> Recorder:
        self.configs.append(config)
        return self

    def run(self) -> int:
        return 0


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser(["run"]).parse_args(["run", *argv])


@pytest.mark.parametrize("source", ["flag", "environment"])
def test_a_command_line_token_is_used_warned_about_once_and_shown_nowhere(
    source: str,
    stub: StubServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    # The stub speaks plain HTTP: consent to it (S6), as every local EdgeLB setup does.
    token_args = ["--edgelb-allow-insecure-http"]
    token_args += ["--edgelb-bearer-token", TOKEN] if source == "flag" else []
    if source == "environment":
        monkeypatch.setenv("DKLB_EDGELB_BEARER_TOKEN", TOKEN)

    with pytest.raises(SystemExit):
        cli.main(["run", "--help", *token_args])
    # dklb run, up to the AppConfig it would start (no cluster needed).
    configs: list[AppConfig] = []
    monkeypatch.setattr("engine.app.App", Recorder(configs))
    monkeypatch.setattr(run_command, "configure_logging", lambda level, fmt: None)
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    assert cli.main(["run", "--edgelb-url", stub.url, "--database", "unused.db", *token_args]) == 0
    assert sum(WARNING in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records) == 1
    (config,) = configs
    chosen = config.edgelb
    assert chosen.token_value == TOKEN
    args = parse("--edgelb-url", stub.url, *token_args)
    seen += [repr(args), str(vars(args))]
    client = chosen.client()
    seen += [repr(chosen), repr(config), repr(client), repr(client.token_source)]

    stub.script("GET", "/v2/pools", echo(500))
    stub.script("GET", "/v2/pools/p", echo(401))
    for call in (client.list_pools, lambda: client.get_pool("p")):
        with pytest.raises(EdgeLBError) as failed:
            call()
        seen += [str(failed.value), repr(failed.value)]
    # The token is the one sent, as a bearer token.
    assert {r.headers.get("Authorization") for r in stub.requests} == {f"Bearer {TOKEN}"}

    unreachable = options.edgelb_options(
        parse("--edgelb-url", f"http://127.0.0.1:{free_port()}", *token_args)
    )
    assert unreachable is not None
    with pytest.raises(EdgeLBError) as refused:
        unreachable.client().list_pools()
    seen += [str(refused.value)]

    with pytest.raises(UsageError) as contradiction:
        options.edgelb_options(parse("--edgelb-bearer-token-file", "/t", *token_args))
    seen += [str(contradiction.value)]
    assert "give one" in str(contradiction.value)

    out, err = capsys.readouterr()
    records = caplog.records
    seen += [out, err]
    seen += [r.getMessage() for r in records]
    seen += [logging.Formatter().format(r) for r in records]
    assert "--edgelb-bearer-token TOKEN" in out  # the help was printed, so it was searched
    assert [TOKEN in text for text in seen] == [False] * len(seen)
    # Once per start (dklb run above), once more for the unreachable EdgeLB's options.
    assert sum(WARNING in r.getMessage() and r.levelno == logging.WARNING for r in records) == 2


def test_without_a_token_nothing_is_warned_and_no_header_sent(
    stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    chosen = options.edgelb_options(parse("--edgelb-url", stub.url))
    assert chosen is not None and chosen.token_value is None
    stub.script("GET", "/v2/pools", Reply(200, []))
    assert chosen.client().list_pools() == []
    assert "Authorization" not in stub.requests[0].headers
    assert not [r for r in caplog.records if WARNING in r.getMessage()]
