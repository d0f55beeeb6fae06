"""Where the EdgeLB client's bearer token comes from.

Data flow: state handlers call the EdgeLB port; in production that is ``engine.edgelb.client``'s
``EdgeLBClient``, which asks its token source for a token before every request (``token()``) and,
when EdgeLB (or DC/OS Admin Router in front of it) answers 401, once for a fresh one
(``renew()``). The sources here cover the ways a deployment hands dklb a credential:

* ``StaticToken``   - a value given in code (tests, embedding);
* ``FileToken``     - a file, e.g. a mounted Kubernetes Secret, re-read on renew so rotation works;
* ``EnvToken``      - an environment variable;
* ``ServiceAccountLogin`` - the DC/OS Enterprise service-account login of ``edgelb-api.md``:
  an RS256 JWT signed with the account's private key is exchanged for an ACS token.

Failures raise ``LoginError`` (a refused login, an unusable secret: retrying will not help until
someone fixes the configuration) or ``Unavailable`` (the login endpoint could not answer now).
Both are ``EdgeLBError`` so handlers treat them like any other EdgeLB failure. No message, log
line or ``repr`` ever contains a token, a JWT or key material.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import jwt
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from engine.edgelb.errors import EdgeLBError, Unavailable

log = logging.getLogger("dklb.edgelb")

#: The operator's consent to credentials over plain HTTP (S6 of the security review).
ALLOW_INSECURE_HTTP_FLAG = "--edgelb-allow-insecure-http"


def plaintext_refusal(what: str, url: str) -> str:
    """The message refusing ``what`` (a credential) over the plain-HTTP ``url``: names the flag."""
    return (
        f"{what} would cross the network in the clear to {url} (plain http://): use https, "
        f"or give {ALLOW_INSECURE_HTTP_FLAG} to accept that (e.g. a local EdgeLB in a test)"
    )


SECRET_FIELDS = ("uid", "private_key", "login_endpoint")


class LoginError(EdgeLBError):
    """A credential could not be obtained: unusable secret or token file, or the login was refused."""


@runtime_checkable
class TokenSource(Protocol):
    def token(self) -> str | None:
        """The token to send now (may be cached); None means "send no Authorization header"."""
        ...

    def renew(self) -> str | None:
        """Obtain a fresh token (called after a 401) and return it."""
        ...


class StaticToken:
    """A fixed token; renewing returns the same value (there is nothing to renew from)."""

    def __init__(self, value: str) -> None:
        self._value = value

    def token(self) -> str | None:
        return self._value or None

    def renew(self) -> str | None:
        return self.token()

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"


class FileToken:
    """A token read from a file; cached, and re-read on renew so a rotated file is picked up.

    Kubernetes updates mounted Secrets by swapping a symlink, so the file is never half written;
    an empty file is therefore a configuration error, not a transient state.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._cached: str | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def _read(self) -> str:
        try:
            text = self._path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise LoginError(f"cannot read the EdgeLB token file {self._path}: {_os_reason(exc)}") from None
        if not text:
            raise LoginError(f"the EdgeLB token file {self._path} is empty")
        return text

    def token(self) -> str | None:
        with self._lock:
            if self._cached is None:
                self._cached = self._read()
            return self._cached

    def renew(self) -> str | None:
        with self._lock:
            self._cached = self._read()
            return self._cached

    def __repr__(self) -> str:
        return f"FileToken(path={str(self._path)!r})"


class EnvToken:
    """A token from an environment variable, read at every call (cheap; follows changes in tests)."""

    def __init__(self, var: str) -> None:
        self._var = var

    @property
    def var(self) -> str:
        return self._var

    def token(self) -> str | None:
        value = os.environ.get(self._var, "").strip()
        return value or None

    def renew(self) -> str | None:
        return self.token()

    def __repr__(self) -> str:
        return f"EnvToken(var={self._var!r})"


class ServiceAccountLogin:
    """DC/OS service-account login: sign a JWT with the account's key, exchange it for an ACS token.

    ``secret`` is the secret's JSON already parsed (a mapping) or the path of a file holding it
    (``{"uid", "private_key", "login_endpoint"}``). The secret is checked when the object is
    built, so a broken deployment fails at start-up; a file is read again before every login so a
    rotated key is used. The ACS token is cached until ``renew()`` (the client calls it on 401).

    A plain ``http://`` login endpoint is refused (``LoginError`` naming
    ``--edgelb-allow-insecure-http``) unless ``allow_insecure_http``: the signed JWT and the
    long-lived ACS token it buys would cross the network in the clear. Checked at every (re)load,
    so a rotated secret cannot switch to plain HTTP either.
    """

    def __init__(
        self,
        secret: Mapping[str, Any] | str | os.PathLike[str],
        *,
        verify: bool | str = True,
        timeout: float = 10.0,
        jwt_lifetime: float = 300.0,
        allow_insecure_http: bool = False,
    ) -> None:
        self._allow_insecure_http = allow_insecure_http
        self._secret_path: Path | None = None
        self._secret: Mapping[str, Any] | None = None
        if isinstance(secret, Mapping):
            self._secret = secret
        else:
            self._secret_path = Path(secret)
        self._verify = verify
        self._timeout = timeout
        # The JWT only has to survive the login round trip; a short life limits what a leaked one
        # is worth.
        self._jwt_lifetime = jwt_lifetime
        self._lock = threading.Lock()
        self._cached: str | None = None
        self._uid, self._key, self._endpoint = self._load()

    @property
    def uid(self) -> str:
        return self._uid

    @property
    def login_endpoint(self) -> str:
        return self._endpoint

    def _where(self) -> str:
        return (
            f"service account secret file {self._secret_path}"
            if self._secret_path
            else "service account secret"
        )

    def _load(self) -> tuple[str, RSAPrivateKey, str]:
        where = self._where()
        if self._secret_path is not None:
            try:
                text = self._secret_path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise LoginError(f"cannot read the {where}: {_os_reason(exc)}") from None
            try:
                data: Any = json.loads(text)
            except json.JSONDecodeError as exc:
                # Position only: the parser's message never quotes the content, and neither do we.
                raise LoginError(
                    f"the {where} is not valid JSON (line {exc.lineno}, column {exc.colno})"
                ) from None
        else:
            data = self._secret
        if not isinstance(data, Mapping):
            raise LoginError(f"the {where} must be a JSON object with fields {', '.join(SECRET_FIELDS)}")
        missing = [f for f in SECRET_FIELDS if not isinstance(data.get(f), str) or not data.get(f)]
        if missing:
            raise LoginError(f"the {where} lacks the string field(s) {', '.join(missing)}")
        endpoint = data["login_endpoint"]
        if not endpoint.startswith(("http://", "https://")):
            raise LoginError(f"the login_endpoint of the {where} must be an http(s) URL")
        if endpoint.startswith("http://") and not self._allow_insecure_http:
            raise LoginError(plaintext_refusal(f"the DC/OS login (login_endpoint) of the {where}", endpoint))
        try:
            key = serialization.load_pem_private_key(data["private_key"].encode("utf-8"), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise LoginError(
                f"the private_key of the {where} is not an unencrypted PEM private key"
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise LoginError(f"the private_key of the {where} is not an RSA key (RS256 needs one)")
        return data["uid"], key, endpoint

    def _login(self) -> str:
        if self._secret_path is not None:
            self._uid, self._key, self._endpoint = self._load()
        assertion = jwt.encode(
            {"uid": self._uid, "exp": int(time.time() + self._jwt_lifetime)}, self._key, algorithm="RS256"
        )
        what = f"DC/OS login of service account {self._uid!r} at {self._endpoint}"
        try:
            resp = requests.post(
                self._endpoint,
                json={"uid": self._uid, "token": assertion},
                timeout=self._timeout,
                verify=self._verify,
                # A redirect would carry the assertion somewhere we were not told to send it.
                allow_redirects=False,
            )
        except requests.Timeout:
            raise Unavailable(f"{what}: no answer within {self._timeout}s") from None
        except requests.RequestException as exc:
            raise Unavailable(f"{what}: {scrub(transport_reason(exc), assertion)}") from None
        if resp.status_code >= 500:
            raise Unavailable(
                f"{what}: {resp.status_code} {scrub(server_detail(resp), assertion)}",
                status=resp.status_code,
            )
        if resp.status_code != 200:
            raise LoginError(
                f"{what} refused: {resp.status_code} {scrub(server_detail(resp), assertion)}",
                status=resp.status_code,
            )
        try:
            body = resp.json()
        except ValueError:
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise LoginError(f"{what}: the answer carries no token", status=resp.status_code)
        log.debug("logged in to DC/OS as service account %r", self._uid)
        return token

    def token(self) -> str | None:
        with self._lock:
            if self._cached is None:
                self._cached = self._login()
            return self._cached

    def renew(self) -> str | None:
        with self._lock:
            self._cached = None  # a failed login must not leave the refused token in use
            self._cached = self._login()
            return self._cached

    def __repr__(self) -> str:
        return f"ServiceAccountLogin(uid={self._uid!r}, login_endpoint={self._endpoint!r})"


# --- helpers shared with the client (no secrets in, none out) ---------------------------------


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return type(exc).__name__


def transport_reason(exc: BaseException) -> str:
    """The useful part of a requests/urllib3 transport error (e.g. "certificate verify failed")."""
    reason: Any = exc.args[0] if exc.args else exc
    # requests wraps urllib3's MaxRetryError, whose ``reason`` is the real cause.
    reason = getattr(reason, "reason", reason)
    text = str(reason) or type(reason).__name__
    return text[:300]


def server_detail(resp: requests.Response) -> str:
    """The server's explanation: ``message`` of an EdgeLB ``{code, message}`` body (or the DC/OS ACS
    ``description``/``title``), else the start of the body, else the reason phrase."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for field in ("message", "description", "title"):
            value = body.get(field)
            if isinstance(value, str) and value:
                return value[:500]
    text = " ".join((resp.text or "").split())
    return text[:200] if text else (resp.reason or "")


def scrub(text: str, *secrets: str | None) -> str:
    """Replace secrets a server might echo back (e.g. in an error message) before text goes anywhere."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text
