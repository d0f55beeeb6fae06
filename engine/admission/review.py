"""The admission webhook's decisions: AdmissionReview in, AdmissionReview response out (pure).

Where it sits in the data flow: the API server sends every CREATE and UPDATE of a Service to
``engine.admission.server``, which decodes the body and calls ``review`` here, first with
``mutate=True`` (path ``/mutate``), then, on the object the mutations produced, with
``mutate=False`` (path ``/validate``). Only afterwards is the Service stored, watched, and
handed to the controller's Pending handler. Nothing here performs I/O: no EdgeLB, no Kubernetes
(and no uniqueness loop for the random pool name): an answer takes microseconds.

* Mutating: writes the fully defaulted configuration object into the
  ``kubernetes.dcos.io/dklb-config`` annotation, so the random default pool name is fixed when
  the Service is created, before any controller runs, and the user sees every default. It never
  refuses: an invalid configuration is left alone and the validating webhook says why, so that
  every error message is produced in one place.
* Validating: refuses what the controller would reject (``check_service``, the very functions
  Pending calls, so the messages are identical) and the forbidden transitions of an UPDATE
  (name, role, network changed, annotation removed), compared with the old object's annotation.
  One exception: a Service with no TCP port (UDP only) is let in with a warning. dklb has nothing
  to expose for it (the controller leaves it Rejected), but another load-balancer controller may
  serve it, and a cluster-wide webhook must not stand in that controller's way.
  It also refuses a Service naming a pool it may not use (the tenancy rule,
  ``engine.model.tenancy``, with the controller's message), judged against the facts
  ``pool_tenancy`` hands in: what the database knows of the pool (``engine.admission.tenancy``
  reads them). A pool the database does not know is let in (only EdgeLB knows it; the controller
  judges it), and so is one whose facts could not be read, with a warning.

The old object's annotation stands in for the configuration the controller recorded: once the
webhooks are in place, every annotation a LoadBalancer Service holds passed through them, and
the controller writes back exactly what it records.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from engine.model.checks import NO_TCP_PORT, ConfigCheck, check_service
from engine.model.config import PoolConfig
from engine.model.parse import parse_config
from engine.model.report import described
from engine.model.services import (
    ANNOTATION,
    SHARED_POOL_KEY_ANNOTATION,
    annotations_of,
    config_text,
    json_pointer,
    shared_pool_key,
    wants_load_balancer,
)
from engine.model.settings import Settings
from engine.model.strict_yaml import load_strict
from engine.model.tenancy import PoolTenancy, recorded_refusal
from engine.model.translation import exposed_ports

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
CREATE, UPDATE = "CREATE", "UPDATE"

FORBIDDEN = 403  # a request the rules refuse
BAD_REQUEST = 400  # a request whose Service is not shaped like a Service
NOT_OURS = f"{NO_TCP_PORT}: dklb makes no load balancer for it (allowed: another controller may)"


class InvalidReview(ValueError):
    """The document is no ``admission.k8s.io/v1`` AdmissionReview request: there is nobody to answer."""


class TenancyUnknown(Exception):
    """What the database knows of a pool could not be read (locked, unreachable, too slow)."""


#: Pool name -> what the database knows of it (None: nothing); raises ``TenancyUnknown``.
PoolLookup = Callable[[str], PoolTenancy | None]
#: Told ``(Service key, pool, details)`` of a tenancy refusal: who uses the pool, for the
#: operator's log (the answer itself never says).
OnTenancyRefusal = Callable[[str, str, str], None]


# --- the review ----------------------------------------------------------------------------------


class _Malformed(Exception):
    """A Service the API server would never send; answered 400 rather than guessed at."""


@dataclass(frozen=True)
class _Answer:
    allowed: bool = True
    code: int | None = None
    message: str = ""
    patch: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Tenancy:
    """What the tenancy rule needs of one request besides the configuration."""

    namespace: str
    name: str
    key: str | None  # digest of the new object's sharing key
    changed: bool  # CREATE, or an UPDATE of the configuration or the sharing key
    lookup: PoolLookup | None
    on_refusal: OnTenancyRefusal | None


_ALLOW = _Answer()


def review(
    review: dict[str, Any],
    *,
    settings: Settings,
    mutate: bool,
    rng: random.Random | None = None,
    pool_tenancy: PoolLookup | None = None,
    on_tenancy_refusal: OnTenancyRefusal | None = None,
) -> dict[str, Any]:
    """The AdmissionReview answering ``review``; ``mutate`` picks the mutating or validating webhook.

    ``rng`` draws the random default pool name (a system RNG when None). ``pool_tenancy``: what
    the database knows of a pool, for the tenancy rule (None: the rule is left to the
    controller); ``on_tenancy_refusal`` hears the details of a refusal by it. Raises
    ``InvalidReview`` when ``review`` is not an AdmissionReview v1 request with a uid (the server
    answers HTTP 400); any other input, however odd, gets a well-formed answer (an unexpected
    failure included).
    """
    request = _request(review)
    try:
        answer = _decide(
            request,
            settings=settings,
            mutate=mutate,
            rng=rng,
            lookup=pool_tenancy,
            on_refusal=on_tenancy_refusal,
        )
    except _Malformed as e:
        answer = _Answer(allowed=False, code=BAD_REQUEST, message=f"malformed Service: {e}")
    except Exception as e:
        answer = _unexpected(e, mutate=mutate)
    return _response(request["uid"], answer)


def _unexpected(e: Exception, *, mutate: bool) -> _Answer:
    """A bug met on some input: the mutating webhook lets the Service through unchanged (it never
    refuses); the validating one refuses it, as the controller would reject it."""
    problem = described(e)
    if mutate:
        return _Answer(warnings=(f"dklb could not default the Service's configuration ({problem})",))
    return _Answer(
        allowed=False,
        code=FORBIDDEN,
        message=f"dklb could not check the Service's configuration ({problem}); this is a bug in dklb",
    )


def _request(review: Any) -> dict[str, Any]:
    if not isinstance(review, dict):
        raise InvalidReview(f"expected a JSON object, got {type(review).__name__}")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise InvalidReview(
            f"expected apiVersion {API_VERSION} and kind {KIND}, "
            f"got {review.get('apiVersion')!r} and {review.get('kind')!r}"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise InvalidReview("the AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise InvalidReview("the AdmissionReview's request has no uid")
    return request


def _decide(
    request: dict[str, Any],
    *,
    settings: Settings,
    mutate: bool,
    rng: random.Random | None,
    lookup: PoolLookup | None = None,
    on_refusal: OnTenancyRefusal | None = None,
) -> _Answer:
    operation = request.get("operation")
    if operation not in (CREATE, UPDATE) or not _is_service(request):
        # DELETE and CONNECT carry no configuration; other kinds are a registration mistake,
        # which must not block them.
        return _ALLOW
    new = request.get("object")
    if not isinstance(new, dict):
        raise _Malformed(f"the {operation} request has no object")
    if not _wants_load_balancer(new, settings):
        # Not ours (or no longer, or being deleted: the finalizer's removal must always pass).
        return _ALLOW
    old = request.get("oldObject")
    if operation == UPDATE and not isinstance(old, dict):
        # Without it the forbidden transitions could not be checked: refuse rather than let them by.
        raise _Malformed("the UPDATE request has no oldObject")
    old_lb = isinstance(old, dict) and operation == UPDATE and _wants_load_balancer(old, settings)
    _check_shape(new, "object")
    if old_lb:
        assert isinstance(old, dict)
        _check_shape(old, "oldObject")
    previous = _recorded(old, settings) if old_lb and isinstance(old, dict) else None
    if mutate:
        return _mutate(new, previous, settings, rng)
    tenancy = _Tenancy(
        namespace=_namespace(request, new),
        name=str(_mapping(new, "metadata", "object").get("name") or request.get("name") or ""),
        key=shared_pool_key(new),
        changed=not (old_lb and isinstance(old, dict) and _tenancy_inputs(old) == _tenancy_inputs(new)),
        lookup=lookup,
        on_refusal=on_refusal,
    )
    return _validate(new, old if old_lb else None, previous, settings, rng, tenancy)


def _mutate(
    new: dict[str, Any], previous: PoolConfig | None, settings: Settings, rng: random.Random | None
) -> _Answer:
    text = config_text(new)
    if previous is not None and not text:
        # A removal: re-injecting would silently move the Service to a new random pool; the
        # validating webhook refuses it instead.
        return _ALLOW
    check = _check(new, previous, settings, rng)
    if previous is not None and check.result.defaulted_name and check.result.config is not None:
        # A partial re-apply ("kubectl apply" of a manifest that never had the name): keep the
        # pool the Service is on instead of drawing a new random name the transition check refuses.
        candidate = _with_annotation(new, _with_name(text, previous.name))
        check = _check(candidate, previous, settings, rng)
    if check.config is None:
        return _ALLOW  # invalid: one place for the error, the validating webhook
    written = check.config.to_annotation()
    if written == text:
        return _ALLOW
    # The patched text no longer shows what the warnings are about (a misspelt field, a stale
    # frontend), so the validating webhook will not repeat them: say them here. Port warnings are
    # about the Service's spec, which the validating webhook still sees.
    return _Answer(patch=_annotation_patch(new, written), warnings=check.result.warnings)


def _validate(
    new: dict[str, Any],
    old: dict[str, Any] | None,
    previous: PoolConfig | None,
    settings: Settings,
    rng: random.Random | None,
    tenancy: _Tenancy | None = None,
) -> _Answer:
    check = _check(new, previous, settings, rng)
    errors = [e for e in check.errors if e != NO_TCP_PORT]
    warnings = (*check.warnings, NOT_OURS) if check.no_tcp_port else check.warnings
    if not errors:
        if tenancy is None or check.config is None or check.result.defaulted_name:
            # Invalid (no TCP port: not dklb's to judge), or a pool name just drawn: nobody uses it.
            return _Answer(warnings=warnings)
        return _judge_tenancy(check.config, tenancy, settings, warnings)
    message = "; ".join(errors)
    if old is not None and _inputs(old) == _inputs(new):
        # An update leaving the configuration's inputs as they were cannot make them worse.
        # Refusing it would block the controller's own writes (finalizer, pause) and every label
        # change on a Service that became invalid before the webhook was installed.
        note = f"the Service's configuration is invalid ({message}); allowed: the update leaves it as is"
        return _Answer(warnings=(*warnings, note))
    return _Answer(allowed=False, code=FORBIDDEN, message=message, warnings=warnings)


def _judge_tenancy(
    config: PoolConfig, tenancy: _Tenancy, settings: Settings, warnings: tuple[str, ...]
) -> _Answer:
    """The tenancy rule against what the database knows of the pool: refused with the
    controller's own message, or allowed (a pool it does not know; facts that could not be read,
    with a warning: the controller judges both)."""
    if not tenancy.changed or tenancy.lookup is None or not tenancy.namespace:
        # An update leaving the configuration and the sharing key as they were (the controller's
        # own writes: finalizer, status, pause) changes nothing the rule judges.
        return _Answer(warnings=warnings)
    pool = config.name
    try:
        facts = tenancy.lookup(pool)
    except TenancyUnknown as e:
        note = (
            f'dklb could not check who may use EdgeLB pool "{pool}" ({e}); '
            "allowed: the controller checks it and rejects the Service if it may not"
        )
        return _Answer(warnings=(*warnings, note))
    if facts is None:
        return _Answer(warnings=warnings)
    refused = recorded_refusal(
        pool,
        namespace=tenancy.namespace,
        name=tenancy.name,
        key=tenancy.key,
        cloud=config.cloud_provider_configuration is not None,
        facts=facts,
        settings=settings,
    )
    if refused is None:
        return _Answer(warnings=warnings)
    message, details = refused
    if tenancy.on_refusal is not None:
        tenancy.on_refusal(f"{tenancy.namespace}/{tenancy.name}", pool, details)
    return _Answer(allowed=False, code=FORBIDDEN, message=message, warnings=warnings)


def _check(
    service: Mapping[str, Any],
    previous: PoolConfig | None,
    settings: Settings,
    rng: random.Random | None,
) -> ConfigCheck:
    return check_service(
        service,
        previous=previous,
        cluster_name=settings.cluster_name,
        default_size=settings.default_pool_size,
        pool_group=settings.pool_group,
        rng=rng,
        limits=settings.limits,
    )


def _recorded(old: dict[str, Any], settings: Settings) -> PoolConfig | None:
    """The configuration in force on the old object: its annotation, if valid and naming its pool.

    A nameless annotation fixes no pool (parsing it would draw a random name, and comparing with
    that would be meaningless); an invalid one was never accepted. The name's fit in the pool
    group and the cloud listeners' frontends are not judged: what was in force is what counts.
    """
    text = config_text(old)
    if not text:
        return None
    ports, _ = exposed_ports(old)
    result = parse_config(
        text,
        service_ports=[p.port for p in ports],
        cluster_name=settings.cluster_name,
        default_size=settings.default_pool_size,
        rng=random.Random(0),  # never drawn from (the name is given); keeps the caller's rng untouched
    )
    if result.config is None or result.defaulted_name:
        return None
    return result.config


def _with_name(text: str | None, name: str) -> str:
    """``text`` (a valid configuration object whose name was drawn) with ``name: <name>`` first.

    The name was drawn because the text has none, or (cloud) one without the "cloud" prefix,
    which is replaced.
    """
    # As the parser reads it: blank text (Python's idea of blank, which includes what YAML keeps,
    # such as a no-break space) is the empty object; valid text loads to a mapping (None for a
    # stream of comments only), duplicates excluded.
    data = (load_strict(text) if text and text.strip() else None) or {}
    return yaml.safe_dump({"name": name, **{k: v for k, v in data.items() if k != "name"}}, sort_keys=False)


def _inputs(service: dict[str, Any]) -> tuple[str | None, tuple[int, ...]]:
    """What the configuration's validity depends on: the annotation's text and the TCP ports."""
    ports, _ = exposed_ports(service)
    return config_text(service), tuple(p.port for p in ports)


def _tenancy_inputs(service: dict[str, Any]) -> tuple[str | None, Any]:
    """What the tenancy rule's verdict on an UPDATE depends on: the configuration and the
    sharing key (its value as given: a changed key is judged anew)."""
    return config_text(service), annotations_of(service).get(SHARED_POOL_KEY_ANNOTATION)


# --- reading and patching the Service ------------------------------------------------------------


def _namespace(request: dict[str, Any], service: dict[str, Any]) -> str:
    """The Service's namespace: the request's (a CREATE's object often has none of its own);
    empty when neither says (the API server always does; without it the rule is not judged)."""
    namespace = request.get("namespace") or _mapping(service, "metadata", "object").get("namespace")
    return namespace if isinstance(namespace, str) else ""


def _is_service(request: dict[str, Any]) -> bool:
    kind = request.get("kind")
    if isinstance(kind, dict):
        return kind.get("group", "") == "" and kind.get("kind") == "Service"
    obj = request.get("object")
    return isinstance(obj, dict) and obj.get("kind") == "Service" and obj.get("apiVersion") == "v1"


def _mapping(parent: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Malformed(f"{where}.{key} is not an object")
    return value


def _wants_load_balancer(service: Any, settings: Settings) -> bool:
    """The controller's own test (``services.wants_load_balancer``), on a Service checked to be one."""
    if not isinstance(service, dict):
        return False
    _mapping(service, "spec", "")
    _mapping(service, "metadata", "")
    return wants_load_balancer(service, settings.load_balancer_class)


def _check_shape(service: dict[str, Any], where: str) -> None:
    """What ``exposed_ports`` and the annotation lookup rely on, checked rather than crashed on."""
    annotations = _mapping(_mapping(service, "metadata", where), "annotations", f"{where}.metadata")
    text = annotations.get(ANNOTATION)
    if text is not None and not isinstance(text, str):
        raise _Malformed(f"{where}.metadata.annotations[{ANNOTATION!r}] is not a string")
    ports = _mapping(service, "spec", where).get("ports")
    if ports is None:
        return
    if not isinstance(ports, list):
        raise _Malformed(f"{where}.spec.ports is not a list")
    for i, entry in enumerate(ports):
        if not isinstance(entry, dict):
            raise _Malformed(f"{where}.spec.ports[{i}] is not an object")
        port = entry.get("port")
        if not isinstance(port, int) or isinstance(port, bool):
            raise _Malformed(f"{where}.spec.ports[{i}].port is not an integer")
        protocol = entry.get("protocol")
        if protocol is not None and not isinstance(protocol, str):
            raise _Malformed(f"{where}.spec.ports[{i}].protocol is not a string")
        node_port = entry.get("nodePort")
        if node_port is not None and (not isinstance(node_port, int) or isinstance(node_port, bool)):
            raise _Malformed(f"{where}.spec.ports[{i}].nodePort is not an integer")


def _with_annotation(service: dict[str, Any], text: str) -> dict[str, Any]:
    """A copy of ``service`` whose annotation is ``text``; ``service`` itself is left alone."""
    metadata = dict(service.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), ANNOTATION: text}
    return {**service, "metadata": metadata}


def _annotation_patch(service: dict[str, Any], text: str) -> tuple[dict[str, Any], ...]:
    """The RFC 6902 operations setting the annotation to ``text``."""
    metadata = service.get("metadata")
    if not isinstance(metadata, dict):
        return ({"op": "add", "path": "/metadata", "value": {"annotations": {ANNOTATION: text}}},)
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        # "add" on an existing member replaces it, which covers an explicit null.
        return ({"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION: text}},)
    op = "replace" if ANNOTATION in annotations else "add"
    return ({"op": op, "path": json_pointer("metadata", "annotations", ANNOTATION), "value": text},)


def _response(uid: str, answer: _Answer) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": answer.allowed}
    if not answer.allowed:
        response["status"] = {"code": answer.code or FORBIDDEN, "message": answer.message}
    if answer.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(answer.patch)).encode()).decode("ascii")
    warnings = _unique(answer.warnings)
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))
