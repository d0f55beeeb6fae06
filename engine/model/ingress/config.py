"""Parsing an Ingress's ``kubernetes.dcos.io/dklb-config`` annotation: text in, a configuration or errors out.

An Ingress arrives from the watcher and ``selection`` found it ours; its configuration is parsed
here (by the Pending handler and the admission webhook alike, with the same messages), and the
Provisioning state composes its frontends from ``IngressFrontends`` next. The base fields (name,
role, network, cpus, memory, size, constraints, strategies) are the Service's, parsed by
``engine.model.parse.parse_config`` with the same defaults and messages; ``frontends`` is a mapping
here (``http.mode``, ``http.port``, ``https.port``), parsed in this module, and the Service
parser's messages about its own ``frontends`` list are dropped. ``cloudProviderConfiguration`` is
refused: the Go dklb accepted it for Ingresses and never used it.

Go's messages are kept inside ours (``123456 is not a valid HTTP port number``, ``invalid is not a
valid HTTP mode``), each after the field's path. An explicit ``null`` is the default, as in the
Service parser.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from engine.model.config import ParseResult, PoolConfig, show
from engine.model.parse import MAX_ANNOTATION_BYTES, parse_config
from engine.model.report import Report, capped, described, is_integer, reject_unknown_fields, without_nulls
from engine.model.services import ANNOTATION
from engine.model.strict_yaml import load_strict

HTTP_MODES = ("enabled", "disabled", "redirect")
DEFAULT_HTTP_MODE = "enabled"
DEFAULT_HTTP_PORT = 80
DEFAULT_HTTPS_PORT = 443
#: Where EdgeLB's ``redirectToHttps`` sends a client: always this port.
REDIRECT_PORT = 443

_FRONTENDS_FIELDS = ("http", "https")
_HTTP_FIELDS = ("mode", "port")
_HTTPS_FIELDS = ("port",)
_PORT_RANGE = "(valid range is between 1 and 65535)"
# A value Go's messages printed bare: shown bare too when it is this plain, quoted otherwise.
_BARE = re.compile(r"[A-Za-z0-9_.+-]{1,40}")
_MISSING: Any = object()


@dataclass(frozen=True)
class IngressFrontends:
    """The frontends an Ingress asks for; ``https_port`` is None when it has no HTTPS frontend."""

    http_mode: str = DEFAULT_HTTP_MODE
    http_port: int = DEFAULT_HTTP_PORT
    https_port: int | None = None

    @property
    def http_enabled(self) -> bool:
        return self.http_mode != "disabled"

    def to_dict(self) -> dict[str, Any]:
        """The annotation's form, in the Go dklb's key order (``https: null`` when there is none)."""
        https = None if self.https_port is None else {"port": self.https_port}
        return {"http": {"mode": self.http_mode, "port": self.http_port}, "https": https}


@dataclass(frozen=True)
class IngressConfigResult:
    config: PoolConfig | None  # None when there is any error; its ``frontends`` are always empty
    frontends: IngressFrontends | None  # None when there is any error
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    defaulted_name: bool

    def to_annotation(self) -> str | None:
        """The defaulted object written back into the annotation (None when there are errors)."""
        if self.config is None or self.frontends is None:
            return None
        data = self.config.to_dict()
        data["frontends"] = self.frontends.to_dict()
        return str(yaml.dump(data, Dumper=_SafeDumper, sort_keys=False))


def parse_ingress_config(
    text: str | None,
    *,
    tls: bool,
    cluster_name: str,
    default_size: int = 1,
    rng: random.Random | None = None,
    pool_group: str | None = None,
) -> IngressConfigResult:
    """Parse, default and validate an Ingress's annotation; ``tls``: whether ``spec.tls`` is non-empty.

    Never raises: any text, however hostile, is a result.
    """
    try:
        return _parse(
            text,
            tls=tls,
            cluster_name=cluster_name,
            default_size=default_size,
            rng=rng,
            pool_group=pool_group,
        )
    except Exception as e:
        error = (
            f"the value of {show(ANNOTATION)} could not be checked ({described(e)}); this is a bug in dklb"
        )
        return IngressConfigResult(None, None, (error,), (), defaulted_name=False)


def _parse(
    text: str | None,
    *,
    tls: bool,
    cluster_name: str,
    default_size: int,
    rng: random.Random | None,
    pool_group: str | None,
) -> IngressConfigResult:
    # No service ports: the Service parser makes no frontend, and what it says about "frontends"
    # (a mapping here, a list for a Service) is dropped: this module judges that field.
    def base_parse(base_text: str | None) -> ParseResult:
        return parse_config(
            base_text,
            service_ports=(),
            cluster_name=cluster_name,
            default_size=default_size,
            rng=rng,
            pool_group=pool_group,
        )

    base = base_parse(text)
    report = Report(
        errors=[m for m in base.errors if not _about_frontends(m)],
        warnings=[m for m in base.warnings if not _about_frontends(m)],
    )
    data = _mapping(text)
    if data is not None and base.config is None and not report.errors:
        # Only "frontends" was wrong for a Service, so every other field is a plain valid value:
        # parsed again without it, the base fields give their configuration.
        base = base_parse(yaml.safe_dump({k: v for k, v in data.items() if k != "frontends"}))
    front = IngressFrontends(https_port=DEFAULT_HTTPS_PORT if tls else None)
    if data is not None:
        if data.get("cloudProviderConfiguration") not in (None, ""):
            report.error(
                "cloudProviderConfiguration",
                "a cloud load balancer is not supported for an Ingress: remove the field",
            )
        front = _frontends(data.get("frontends"), report, tls=tls)
    ok = not report.errors
    return IngressConfigResult(
        base.config if ok else None,
        front if ok else None,
        capped(report.errors),
        capped(report.warnings),
        defaulted_name=base.defaulted_name,
    )


def _about_frontends(message: str) -> bool:
    # Report's messages start with the field's path.
    return message.startswith(("frontends:", "frontends[", "frontends."))


def _mapping(text: str | None) -> Mapping[Any, Any] | None:
    """The annotation's mapping, or None when the base parser already reported why there is none."""
    if text is None or not text.strip():
        return {}
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ANNOTATION_BYTES:
        return None
    try:
        value = load_strict(text)
    except yaml.YAMLError:
        return None
    if value is None:
        return {}
    return value if isinstance(value, dict) else None


def _frontends(value: Any, report: Report, *, tls: bool) -> IngressFrontends:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        report.error(
            "frontends",
            f"{show(value)} is not a mapping (an Ingress takes frontends.http and frontends.https)",
        )
        value = {}
    reject_unknown_fields(value, _FRONTENDS_FIELDS, "frontends", report)
    given = without_nulls(value)
    http = _section(given.get("http", _MISSING), "frontends.http", _HTTP_FIELDS, report)
    https = _section(given.get("https", _MISSING), "frontends.https", _HTTPS_FIELDS, report)
    mode = _mode(http.get("mode", _MISSING), report)
    http_port = _port(http.get("port", _MISSING), "frontends.http.port", "HTTP", report, DEFAULT_HTTP_PORT)
    given_https = https.get("port", _MISSING)
    https_port: int | None = None
    if given_https is not _MISSING:
        https_port = _port(given_https, "frontends.https.port", "HTTPS", report, DEFAULT_HTTPS_PORT)
        if not tls:
            report.error(
                "frontends.https.port",
                f"{show(given_https)}: an HTTPS frontend needs a certificate, and the Ingress has no "
                "spec.tls: add spec.tls or remove frontends.https",
            )
    elif tls:
        https_port = DEFAULT_HTTPS_PORT
    front = IngressFrontends(http_mode=mode, http_port=http_port, https_port=https_port)
    _check_together(front, report)
    return front


def _section(value: Any, path: str, fields: tuple[str, ...], report: Report) -> dict[Any, Any]:
    if value is _MISSING:
        return {}
    if not isinstance(value, dict):
        report.error(path, f"{show(value)} is not a mapping")
        return {}
    reject_unknown_fields(value, fields, path, report)
    return without_nulls(value)


def _mode(value: Any, report: Report) -> str:
    # "" is the Go dklb's default too.
    if value is _MISSING or value == "":
        return DEFAULT_HTTP_MODE
    if isinstance(value, str) and value in HTTP_MODES:
        return value
    hint = f"expected one of {', '.join(HTTP_MODES)}"
    if isinstance(value, str) and value.lower() in HTTP_MODES:
        # The Go dklb accepted "Disabled" and then served HTTP anyway: refused, not guessed.
        hint = f"modes are lower-case: did you mean {show(value.lower())}?"
    report.error("frontends.http.mode", f"{_bare(value)} is not a valid HTTP mode ({hint})")
    return DEFAULT_HTTP_MODE


def _port(value: Any, path: str, what: str, report: Report, fallback: int) -> int:
    if value is _MISSING:
        return fallback
    if not is_integer(value) or not 1 <= value <= 65535:
        report.error(path, f"{show(value)} is not a valid {what} port number {_PORT_RANGE}")
        return fallback
    return int(value)


def _check_together(front: IngressFrontends, report: Report) -> None:
    if front.https_port is not None and front.http_enabled and front.http_port == front.https_port:
        report.error(
            "frontends.https.port",
            f"{front.https_port} is also the HTTP port (frontends.http.port): one port cannot serve "
            "both; change one, or set frontends.http.mode to disabled",
        )
    if front.http_mode == "redirect" and front.https_port not in (None, REDIRECT_PORT):
        report.error(
            "frontends.http.mode",
            f'"redirect" sends clients to port {REDIRECT_PORT} (EdgeLB\'s redirectToHttps), but '
            f"frontends.https.port is {front.https_port}: use port {REDIRECT_PORT}, or another mode",
        )


def _bare(value: Any) -> str:
    """The value as Go's ``%s``/``%d`` printed it when that is safe to show, else ``show``'s form."""
    if isinstance(value, str) and _BARE.fullmatch(value):
        return value
    return show(value)


_SafeDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
