"""Token sources of the EdgeLB client, above all the DC/OS service-account login.

Where it sits: ``EdgeLBClient`` asks its token source for a bearer token before each request
and for a fresh one after a 401. The login tests run against the scripted ``StubServer`` of the
client tests, whose login route verifies the RS256 JWT with the public key of an RSA key made at
test time, the way DC/OS IAM does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.edgelb.auth import EnvToken, FileToken, LoginError, ServiceAccountLogin, StaticToken, TokenSource
from engine.edgelb.client import EdgeLBClient, client_from_options
from engine.edgelb.errors import EdgeLBError, Unavailable
from tests.unit.test_edgelb_client import POOL, Recorded, Reply, StubServer, free_port

UID = "dklb-principal"
LOGIN = "/acs/api/v1/auth/login"


def pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_fragments(key_pem: str) -> list[str]:
    """Pieces of key material that must never show up in a message."""
    body = [line for line in key_pem.splitlines() if "-----" not in line]
    return ["PRIVATE KEY", body[0], body[len(body) // 2]]


class Iam:
    """The login route of the stub: verifies the JWT like DC/OS IAM and hands out acs-1, acs-2, ..."""

    def __init__(self, public_key: Any, uid: str = UID) -> None:
        self.public_key = public_key
        self.uid = uid
        self.logins = 0
        self.claims: list[dict[str, Any]] = []

    def __call__(self, rec: Recorded) -> Reply:
        body = rec.json()
        try:
            claims = jwt.decode(body["token"], self.public_key, algorithms=["RS256"])
        except jwt.InvalidTokenError as exc:
            return Reply(
                401, {"title": "Unauthorized", "description": f"invalid token: {exc}", "code": "ERR"}
            )
        if claims.get("uid") != self.uid or body.get("uid") != self.uid:
            return Reply(401, {"title": "Unauthorized", "description": "unknown uid", "code": "ERR"})
        self.claims.append(claims)
        self.logins += 1
        return Reply(200, {"token": f"acs-{self.logins}"})


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


@pytest.fixture
def iam(stub, rsa_key) -> Iam:
    handler = Iam(rsa_key.public_key())
    stub.script("POST", LOGIN, handler)
    return handler


def login(secret: Any, **kwargs: Any) -> ServiceAccountLogin:
    """The stub speaks plain HTTP: these tests consent to it (S6 is tested in test_plaintext_credentials)."""
    return ServiceAccountLogin(secret, allow_insecure_http=True, **kwargs)


def secret(stub: StubServer, key: Any, **override: Any) -> dict[str, Any]:
    return {"uid": UID, "private_key": pem(key), "login_endpoint": stub.url + LOGIN, **override}


# --- service-account login -----------------------------------------------------------------------


def test_login_obtains_caches_and_renews_the_token(stub, iam, rsa_key):
    sa = login(secret(stub, rsa_key))
    assert iam.logins == 0  # lazy: building the source does not log in
    assert sa.token() == "acs-1"
    assert sa.token() == "acs-1"
    assert iam.logins == 1
    assert sa.renew() == "acs-2"
    assert sa.token() == "acs-2"
    assert iam.logins == 2
    # The JWT carries the uid and a near expiry, as the contract says.
    now = time.time()
    assert all(c["uid"] == UID and now < c["exp"] <= now + 301 for c in iam.claims)
    [req, *_] = stub.requests
    assert req.method == "POST" and req.headers["Content-Type"] == "application/json"
    assert set(req.json()) == {"uid", "token"}


def test_login_from_a_secret_file_rereads_it_on_renew(stub, iam, rsa_key, other_rsa_key, tmp_path):
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(secret(stub, rsa_key)))
    sa = login(path)
    assert sa.token() == "acs-1"
    # The key was rotated: the secret file now holds a key IAM does not know yet.
    path.write_text(json.dumps(secret(stub, other_rsa_key)))
    with pytest.raises(LoginError, match="refused: 401 invalid token"):
        sa.renew()
    iam.public_key = other_rsa_key.public_key()
    assert sa.renew() == "acs-2"


def test_refused_login_is_a_clear_login_error_without_secrets(stub, iam, rsa_key, other_rsa_key):
    bad = secret(stub, other_rsa_key)
    with pytest.raises(LoginError) as info:
        login(bad).token()
    msg = str(info.value)
    assert msg.startswith(
        f"DC/OS login of service account '{UID}' at {stub.url}{LOGIN} refused: 401 invalid token"
    )
    assert info.value.status == 401
    for fragment in key_fragments(bad["private_key"]):
        assert fragment not in msg


def test_unknown_uid_is_refused(stub, iam, rsa_key):
    with pytest.raises(LoginError, match="unknown uid"):
        login(secret(stub, rsa_key, uid="someone-else")).token()


def test_a_jwt_echoed_by_the_login_endpoint_is_scrubbed(stub, rsa_key):
    stub.script("POST", LOGIN, lambda rec: Reply(403, {"description": f"nope for {rec.json()['token']}"}))
    with pytest.raises(LoginError) as info:
        login(secret(stub, rsa_key)).token()
    assert "nope for <redacted>" in str(info.value)
    assert "eyJ" not in str(info.value)  # no JWT (base64url of '{"') left


@pytest.mark.parametrize(
    ("reply", "cls", "message"),
    [
        (Reply(500, {"description": "IAM is down"}), Unavailable, "500 IAM is down"),
        (Reply(503), Unavailable, "503 Service Unavailable"),
        (Reply(200, {"no": "token"}), LoginError, "the answer carries no token"),
        (Reply(200, "<html>", content_type="text/html"), LoginError, "the answer carries no token"),
    ],
)
def test_login_endpoint_failures(stub, rsa_key, reply, cls, message):
    stub.script("POST", LOGIN, reply)
    with pytest.raises(EdgeLBError, match=message) as info:
        login(secret(stub, rsa_key)).token()
    assert type(info.value) is cls


def test_unreachable_or_slow_login_endpoint_is_unavailable(stub, rsa_key):
    refused = secret(stub, rsa_key, login_endpoint=f"http://127.0.0.1:{free_port()}{LOGIN}")
    with pytest.raises(Unavailable, match="refused") as info:
        login(refused).token()
    assert info.value.status is None
    stub.script("POST", LOGIN, Reply(200, {"token": "late"}, hold=True))
    with pytest.raises(Unavailable, match=r"no answer within 0\.2s"):
        login(secret(stub, rsa_key), timeout=0.2).token()


def _write(tmp_path, name: str, content: str | None):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda s, tmp: {k: v for k, v in s.items() if k != "uid"}, "lacks the string field\\(s\\) uid$"),
        (
            lambda s, tmp: {"uid": "u"},
            "lacks the string field\\(s\\) private_key, login_endpoint$",
        ),
        (lambda s, tmp: {**s, "uid": 42}, "lacks the string field\\(s\\) uid$"),
        (
            lambda s, tmp: {**s, "login_endpoint": "leader.mesos/acs"},
            "login_endpoint .* must be an http\\(s\\) URL",
        ),
        (
            lambda s, tmp: {**s, "private_key": s["private_key"].replace("A", "B", 40)},
            "private_key .* is not an unencrypted PEM private key",
        ),
        (
            lambda s, tmp: {**s, "private_key": pem(ec.generate_private_key(ec.SECP256R1()))},
            "private_key .* is not an RSA key",
        ),
        (lambda s, tmp: _write(tmp, "list.json", json.dumps([s])), "must be a JSON object"),
        (
            lambda s, tmp: _write(tmp, "broken.json", json.dumps(s)[:-30]),
            r"secret file .*broken\.json is not valid JSON \(line 1, column \d+\)$",
        ),
        (lambda s, tmp: _write(tmp, "missing.json", None), "cannot read the .*missing.json: No such file"),
        (lambda s, tmp: tmp, "cannot read the service account secret file .*: Is a directory"),
        (lambda s, tmp: _write(tmp, "empty.json", ""), "is not valid JSON"),
    ],
)
def test_bad_secrets_give_clear_errors_without_key_material(stub, rsa_key, tmp_path, make, message):
    good = secret(stub, rsa_key)
    with pytest.raises(LoginError, match=message) as info:
        login(make(good, tmp_path))
    for fragment in key_fragments(good["private_key"]):
        assert fragment not in str(info.value)
    assert stub.requests == []  # nothing was sent


def test_repr_and_logs_hold_no_secret(stub, iam, rsa_key, caplog):
    caplog.set_level(logging.DEBUG)
    good = secret(stub, rsa_key)
    sa = login(good)
    token = sa.token()
    assert repr(sa) == f"ServiceAccountLogin(uid='{UID}', login_endpoint='{stub.url}{LOGIN}')"
    for text in (repr(sa), caplog.text):
        assert token not in text
        for fragment in key_fragments(good["private_key"]):
            assert fragment not in text


# --- the client with a service account -----------------------------------------------------------


def test_client_logs_in_again_on_401(stub, iam, rsa_key, tmp_path):
    # EdgeLB accepts only the newest ACS token: the first one "expired".
    stub.script(
        "GET",
        "/service/edgelb/v2/pools/dklb-redis",
        lambda rec: (
            Reply(200, POOL)
            if rec.headers.get("Authorization") == f"Bearer acs-{iam.logins}" and iam.logins > 1
            else Reply(401, {"code": 401, "message": "expired"})
        ),
    )
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(secret(stub, rsa_key)))
    client = client_from_options(
        url=stub.url + "/service/edgelb", service_account_secret_file=str(path), allow_insecure_http=True
    )
    assert isinstance(client.token_source, ServiceAccountLogin)
    assert client.get_pool("dklb-redis") == POOL
    assert iam.logins == 2
    assert [r.path for r in stub.requests] == [
        LOGIN,
        "/service/edgelb/v2/pools/dklb-redis",
        LOGIN,
        "/service/edgelb/v2/pools/dklb-redis",
    ]
    assert "acs-" not in repr(client)


def test_client_surfaces_login_errors_as_edgelb_errors(stub, rsa_key, tmp_path):
    stub.script("POST", LOGIN, Reply(401, {"description": "account disabled"}))
    client = EdgeLBClient(stub.url, token=login(secret(stub, rsa_key)))
    with pytest.raises(LoginError, match="account disabled"):
        client.list_pools()
    assert [r.path for r in stub.requests] == [LOGIN]


def test_service_account_secret_file_is_checked_by_the_factory(tmp_path):
    with pytest.raises(LoginError, match="cannot read"):
        client_from_options(
            host="h", service_account_secret_file=str(tmp_path / "nope.json"), allow_insecure_http=True
        )


# --- simple sources ------------------------------------------------------------------------------


def test_file_token_caches_and_rereads_on_renew(tmp_path):
    path = tmp_path / "token"
    path.write_text("first\n")
    source = FileToken(path)
    assert source.token() == "first"
    path.write_text("second\n")
    assert source.token() == "first"  # cached: no disk read per request
    assert source.renew() == "second"
    assert source.token() == "second"
    assert repr(source) == f"FileToken(path='{path}')"


def test_file_token_errors(tmp_path):
    with pytest.raises(LoginError, match=r"cannot read the EdgeLB token file .*: No such file"):
        FileToken(tmp_path / "missing").token()
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(LoginError, match="is empty"):
        FileToken(tmp_path / "empty").token()


def test_env_token(monkeypatch):
    source = EnvToken("DKLB_TEST_TOKEN")
    monkeypatch.delenv("DKLB_TEST_TOKEN", raising=False)
    assert source.token() is None
    monkeypatch.setenv("DKLB_TEST_TOKEN", "abc")
    assert source.token() == "abc"
    monkeypatch.setenv("DKLB_TEST_TOKEN", "def")
    assert source.renew() == "def"
    assert "def" not in repr(source)


def test_static_token():
    source = StaticToken("s3cr3t")
    assert source.token() == source.renew() == "s3cr3t"
    assert "s3cr3t" not in repr(source)


def test_all_sources_satisfy_the_protocol(stub, rsa_key, tmp_path):
    (tmp_path / "t").write_text("x")
    for source in (
        StaticToken("x"),
        FileToken(tmp_path / "t"),
        EnvToken("X"),
        login(secret(stub, rsa_key)),
    ):
        assert isinstance(source, TokenSource)
