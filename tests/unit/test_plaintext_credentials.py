"""S6 (security review): EdgeLB credentials never go out over plain HTTP without the operator's word.

Where it sits: ``client_from_options`` (the command line's only way to build an EdgeLB client),
``ServiceAccountLogin`` (the DC/OS login endpoint inside the secret) and ``options.edgelb_options``
(``dklb run`` refuses before it migrates anything). The review's reproduction: an HTTP server
records the ``Authorization`` header it receives while the client lists pools with a token file.
Here that server must receive nothing, the error must name ``--edgelb-allow-insecure-http``, and
with that flag the request goes out and a WARNING says so.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from engine import cli
from engine.app import AppConfig
from engine.cli import run as run_command
from engine.edgelb.auth import ALLOW_INSECURE_HTTP_FLAG, LoginError, ServiceAccountLogin
from engine.edgelb.client import client_from_options, plaintext_credential
from tests.unit.test_edgelb_auth import LOGIN, pem
from tests.unit.test_edgelb_client import Reply, StubServer

pytestmark = pytest.mark.usefixtures("no_dklb_environment")

SENTINEL = "SENTINEL-TOKEN-never-in-the-clear"


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    server.script("GET", "/v2/pools", Reply(200, []))
    server.script("POST", LOGIN, Reply(200, {"token": SENTINEL}))
    yield server
    server.stop()


def credentials(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, login_url: str) -> dict[str, Any]:
    """The client_from_options arguments (and environment) that give a credential of this kind."""
    if kind == "token file":
        (tmp_path / "token").write_text(SENTINEL + "\n")
        return {"token_file": str(tmp_path / "token")}
    if kind == "token value":
        return {"token_value": SENTINEL}
    if kind == "DKLB_EDGELB_TOKEN":
        monkeypatch.setenv("DKLB_EDGELB_TOKEN", SENTINEL)
        return {}
    assert kind == "service account"
    return {"service_account_secret_file": str(secret_file(tmp_path, login_url))}


@functools.cache
def service_account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def secret_file(tmp_path: Path, login_url: str) -> Path:
    key = service_account_key()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"uid": "dklb", "private_key": pem(key), "login_endpoint": login_url}))
    return path


KINDS = ["token file", "token value", "DKLB_EDGELB_TOKEN", "service account"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_credential_over_plain_http_is_refused_before_anything_is_sent(
    kind: str, stub: StubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S6 (security review): the review's sniffing server gets no request, let alone a token."""
    given = credentials(kind, tmp_path, monkeypatch, stub.url + LOGIN)
    with pytest.raises(ValueError, match=ALLOW_INSECURE_HTTP_FLAG) as refused:
        client_from_options(url=stub.url, **given).list_pools()
    assert "in the clear" in str(refused.value) and stub.url in str(refused.value)
    assert SENTINEL not in str(refused.value)
    assert stub.requests == []


@pytest.mark.parametrize("kind", KINDS)
def test_with_the_flag_it_goes_out_and_a_warning_says_so(
    kind: str,
    stub: StubServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """S6 (security review): the local test EdgeLB keeps working, loudly."""
    caplog.set_level(logging.WARNING, logger="dklb.edgelb")
    given = credentials(kind, tmp_path, monkeypatch, stub.url + LOGIN)
    assert client_from_options(url=stub.url, allow_insecure_http=True, **given).list_pools() == []
    assert stub.requests[-1].headers.get("Authorization") == f"Bearer {SENTINEL}"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "plain HTTP" in warnings[0] and ALLOW_INSECURE_HTTP_FLAG in warnings[0]
    assert SENTINEL not in warnings[0]


def test_a_plain_http_login_endpoint_is_refused_even_with_https_to_edgelb(
    stub: StubServer, tmp_path: Path
) -> None:
    """S6 (security review): the JWT assertion and the long-lived ACS token would cross in the clear."""
    path = secret_file(tmp_path, stub.url + LOGIN)
    with pytest.raises(LoginError, match=ALLOW_INSECURE_HTTP_FLAG):
        client_from_options(url="https://edgelb.example", service_account_secret_file=str(path))
    with pytest.raises(LoginError, match="login_endpoint"):
        ServiceAccountLogin(path)
    assert stub.requests == []


def test_a_rotated_secret_cannot_switch_the_login_to_plain_http(tmp_path: Path) -> None:
    """S6 (security review): the secret file is re-read before every login; so is the check."""
    path = tmp_path / "sa.json"
    good = {
        "uid": "dklb",
        "private_key": pem(service_account_key()),
        "login_endpoint": "https://127.0.0.1:1/acs/api/v1/auth/login",
    }
    path.write_text(json.dumps(good))
    login = ServiceAccountLogin(path)
    path.write_text(json.dumps({**good, "login_endpoint": "http://127.0.0.1:1/acs/api/v1/auth/login"}))
    with pytest.raises(LoginError, match=ALLOW_INSECURE_HTTP_FLAG):
        login.token()


@pytest.mark.parametrize(
    ("url", "given", "expected"),
    [
        ("http://e", {}, None),  # the in-cluster default: plain HTTP, no credential
        ("https://e", {"token_value": "t"}, None),
        ("HTTPS://e", {"token_file": "/t"}, None),
        ("http://e", {"token_value": "t"}, "the bearer token of --edgelb-bearer-token"),
        ("HTTP://e/service/edgelb", {"token_file": "/t"}, "the bearer token of --edgelb-bearer-token-file"),
        (
            "http://e",
            {"service_account_secret_file": "/s"},
            "the service account of --edgelb-service-account-secret-file",
        ),
    ],
)
def test_which_credential_would_go_in_the_clear(
    url: str, given: dict[str, str], expected: str | None
) -> None:
    assert plaintext_credential(url, **given) == expected


def test_dklb_run_refuses_before_it_touches_the_database(
    stub: StubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """S6 (security review): a UsageError naming the flag, exit 1, and no migration, no thread."""
    started: list[AppConfig] = []
    monkeypatch.setattr("engine.app.App", lambda config: started.append(config))
    monkeypatch.setattr(run_command, "configure_logging", lambda level, fmt: None)
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    (tmp_path / "token").write_text(SENTINEL)
    database = tmp_path / "dklb.db"
    argv = ["run", "--edgelb-url", stub.url, "--edgelb-bearer-token-file", str(tmp_path / "token")]
    assert cli.main([*argv, "--database", str(database)]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ") and ALLOW_INSECURE_HTTP_FLAG in err and "--edgelb-bearer-token-file" in err
    )
    assert started == [] and not database.exists() and stub.requests == []
