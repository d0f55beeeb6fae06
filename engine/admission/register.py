"""Telling the API server to call dklb's admission webhook: the two webhook configurations.

Where it sits in the data flow: ``dklb run`` serves ``/mutate`` and ``/validate``
(``engine.admission.server``, whose answers come from ``engine.admission.review``), and then
calls ``register`` once. From then on the API server sends every CREATE and UPDATE of a
Service (in the namespaces ``namespace_selector`` matches) to the mutating webhook first, which
writes the defaulted ``kubernetes.dcos.io/dklb-config`` annotation into the object before it is
stored, then to the validating webhook, which refuses an invalid configuration or a change of
a field that cannot change. The controller (``states/pending.py``) still checks everything
itself: with ``failurePolicy: Ignore`` (the default, as the Go dklb had) a write made while the
webhook is down is stored unchecked.

Both objects are cluster-scoped and named ``name`` (``dklb`` by default; the ClusterRole of
``deploy/components/register-webhook`` lets the controller GET and PUT only that name; the
base ``deploy/`` ships the objects statically instead). ``register`` is idempotent: it reads
each object, creates it when missing, replaces it (with the ``resourceVersion`` it read, so a
concurrent writer makes it retry, never overwrite blindly) when it differs from what it should
be, and writes nothing when it is already right, so restarting the controller does not churn
the API server's webhook cache.

Like every call dklb makes, requests go with ``_preload_content=False`` and raw JSON bodies: no
generated model class decodes anything.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import urllib3
from kubernetes.client import ApiClient, ApiException

if TYPE_CHECKING:
    from kubernetes.client import AdmissionregistrationV1Api

log = logging.getLogger("dklb.admission")

API_VERSION = "admissionregistration.k8s.io/v1"
MUTATE_PATH = "/mutate"
VALIDATE_PATH = "/validate"
FAILURE_POLICIES = ("Ignore", "Fail")
DEFAULT_NAME = "dklb"
# The API server's bounds for timeoutSeconds (admissionregistration/v1 validation).
MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS = 1, 30
# A write that lost a race (409: created or changed by another replica between our GET and our
# write) is retried from a fresh GET; more lost races in a row than this means something fights us.
ATTEMPTS = 5
LABELS = {"app.kubernetes.io/name": "dklb", "app.kubernetes.io/managed-by": "dklb"}

# Label keys: an optional DNS-subdomain prefix and "/", then a name of up to 63 characters.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}")
_LABEL_VALUE = re.compile(rf"({_LABEL_NAME})?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

ServiceReference = tuple[str, str, int]  # (namespace, name, port)


class RegistrationError(Exception):
    """The API server refused or could not store a webhook configuration; the message says which."""


# ---- parsing what the flags say -----------------------------------------------------------------


def parse_service_reference(text: str) -> ServiceReference:
    """``NAMESPACE/NAME:PORT`` (``--admission-webhook-service``) → ``(namespace, name, port)``."""
    reference, colon, port_text = text.strip().rpartition(":")
    namespace, slash, name = reference.partition("/")
    if not (colon and slash and namespace and name):
        raise ValueError(f"{text!r} is not NAMESPACE/NAME:PORT (e.g. dklb/dklb-webhook:443)")
    for part in (namespace, name):
        if not _DNS_LABEL.fullmatch(part):
            raise ValueError(f"{part!r} in {text!r} is not a valid namespace or Service name")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{port_text!r} in {text!r} is not a port number (1-65535)")
    return namespace, name, int(port_text)


def parse_namespace_selector(text: str) -> dict[str, str]:
    """``KEY=VALUE[,KEY=VALUE...]`` (``--admission-namespace-selector``) → ``matchLabels``."""
    labels: dict[str, str] = {}
    for item in text.split(","):
        key, equals, value = item.strip().partition("=")
        if not equals or not _LABEL_KEY.fullmatch(key):
            raise ValueError(f"{item.strip()!r} in {text!r} is not KEY=VALUE with a valid label key")
        if not _LABEL_VALUE.fullmatch(value):
            raise ValueError(f"{value!r} in {text!r} is not a valid label value")
        if key in labels:
            raise ValueError(f"label {key!r} appears twice in {text!r}")
        labels[key] = value
    return labels


def check_url(url: str) -> str:
    """The webhook's base URL without a trailing slash; raises ``ValueError`` when the API server
    would refuse it (it calls webhooks over HTTPS only, and a URL may carry neither a query, a
    fragment nor user info)."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{url!r} is not an https:// URL (the API server calls webhooks over HTTPS only)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url!r}: a webhook URL may carry no query, fragment or user info")
    return url.strip().rstrip("/")


# ---- the objects ----------------------------------------------------------------------------------


def webhook_configurations(
    *,
    name: str = DEFAULT_NAME,
    ca_bundle: bytes,
    url: str | None = None,
    service: ServiceReference | None = None,
    failure_policy: str = "Ignore",
    timeout_seconds: int = 5,
    namespace_selector: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The MutatingWebhookConfiguration and the ValidatingWebhookConfiguration, as JSON dicts.

    Raises ``ValueError`` for arguments the API server would refuse or that could never work.
    """
    if (url is None) == (service is None):
        raise ValueError("exactly one of url and service must be given")
    if failure_policy not in FAILURE_POLICIES:
        raise ValueError(f"failure policy {failure_policy!r} is not one of {', '.join(FAILURE_POLICIES)}")
    if not MIN_TIMEOUT_SECONDS <= timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise ValueError(
            f"timeout {timeout_seconds}s is not within {MIN_TIMEOUT_SECONDS}-{MAX_TIMEOUT_SECONDS} seconds"
        )
    if b"-----BEGIN CERTIFICATE-----" not in ca_bundle:
        # The API server stores any bytes, then fails every call with a TLS error: refuse it here.
        raise ValueError("the CA bundle holds no PEM certificate")
    if not _DNS_LABEL.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid name for a webhook configuration")
    base = check_url(url) if url is not None else None

    def webhook(path: str) -> dict[str, Any]:
        client: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode("ascii")}
        if base is not None:
            client["url"] = base + path
        else:
            assert service is not None
            namespace, service_name, port = service
            client["service"] = {"namespace": namespace, "name": service_name, "port": port, "path": path}
        return {
            # Webhook names must be fully qualified; unique per configuration is enough.
            "name": f"{name}.kubernetes.dcos.io",
            "clientConfig": client,
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["services"],
                    "scope": "Namespaced",
                }
            ],
            "failurePolicy": failure_policy,
            # Written out although they are the API server's defaults: every field compared by
            # _differs is one we set, so a stored object that matches needs no write.
            "matchPolicy": "Equivalent",
            "namespaceSelector": {"matchLabels": dict(namespace_selector)} if namespace_selector else {},
            "objectSelector": {},
            # Reviews only compute an answer: calling the webhook changes nothing anywhere else,
            # so dry-run requests may call it too.
            "sideEffects": "None",
            "timeoutSeconds": timeout_seconds,
            "admissionReviewVersions": ["v1"],
        }

    mutating = webhook(MUTATE_PATH)
    # Another mutating webhook running after ours may change the ports (hence the frontends) or
    # drop the annotation: then ours runs once more on the result.
    mutating["reinvocationPolicy"] = "IfNeeded"
    return (
        {
            "apiVersion": API_VERSION,
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name, "labels": dict(LABELS)},
            "webhooks": [mutating],
        },
        {
            "apiVersion": API_VERSION,
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name, "labels": dict(LABELS)},
            "webhooks": [webhook(VALIDATE_PATH)],
        },
    )


# ---- the API calls --------------------------------------------------------------------------------


def _api(api_client: ApiClient | AdmissionregistrationV1Api) -> AdmissionregistrationV1Api:
    # Imported here: the generated module (and the models it pulls in) is ~4 MB of RSS, and a
    # controller without the admission webhook never registers one.
    from kubernetes.client import AdmissionregistrationV1Api

    if isinstance(api_client, AdmissionregistrationV1Api):
        return api_client
    return AdmissionregistrationV1Api(api_client)


_METHODS = {
    # kind: the suffix of the generated client's read_/create_/replace_/delete_ methods
    "MutatingWebhookConfiguration": "mutating_webhook_configuration",
    "ValidatingWebhookConfiguration": "validating_webhook_configuration",
}


def _call(api: AdmissionregistrationV1Api, verb: str, kind: str, *args: Any) -> dict[str, Any]:
    response = getattr(api, f"{verb}_{_METHODS[kind]}")(*args, _preload_content=False)
    data = response.data
    return json.loads(data) if data else {}


def _status_message(exc: ApiException) -> str:
    """The API server's own explanation (its Status object's message), else what the client has."""
    try:
        return str(json.loads(exc.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.reason or exc.body or exc)


def _differs(wanted: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Whether ``stored`` must be replaced by ``wanted``: one of our labels is missing or another
    webhook list, or a webhook field we set holds anything else (compared whole: a selector with
    an extra label is a difference). Fields only the API server sets are not compared."""
    labels = (stored.get("metadata") or {}).get("labels") or {}
    if any(labels.get(key) != value for key, value in wanted["metadata"]["labels"].items()):
        return True
    hooks = stored.get("webhooks") or []
    if len(hooks) != len(wanted["webhooks"]):
        return True
    return any(
        hook.get(key) != value
        for want, hook in zip(wanted["webhooks"], hooks, strict=True)
        for key, value in want.items()
    )


def _apply(api: AdmissionregistrationV1Api, body: dict[str, Any]) -> str:
    """Create or replace one configuration; returns what was done ("created", "updated", "unchanged")."""
    kind, name = body["kind"], body["metadata"]["name"]
    for attempt in range(1, ATTEMPTS + 1):
        try:
            try:
                stored: dict[str, Any] | None = _call(api, "read", kind, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                stored = None
            if stored is None:
                _call(api, "create", kind, body)
                return "created"
            if not _differs(body, stored):
                return "unchanged"
            # Replace, not patch: the stored object must become exactly ours (a webhook someone
            # added by hand goes away); the resourceVersion makes a concurrent change a 409.
            replacement = json.loads(json.dumps(body))
            replacement["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
            _call(api, "replace", kind, name, replacement)
            return "updated"
        except ApiException as exc:
            if exc.status == 409 and attempt < ATTEMPTS:
                log.debug("%s %s: lost a race (%s), retrying", kind, name, _status_message(exc))
                continue
            raise RegistrationError(
                f"cannot register the {kind} {name!r}: HTTP {exc.status}: {_status_message(exc)}"
            ) from exc
    raise AssertionError("unreachable")  # the last attempt returns or raises


def register(
    api_client: ApiClient | AdmissionregistrationV1Api,
    *,
    name: str = DEFAULT_NAME,
    ca_bundle: bytes,
    url: str | None = None,
    service: ServiceReference | None = None,
    failure_policy: str = "Ignore",
    timeout_seconds: int = 5,
    namespace_selector: dict[str, str] | None = None,
) -> None:
    """Create or update the MutatingWebhookConfiguration and the ValidatingWebhookConfiguration
    ``name`` so that the API server calls ``<url>/mutate`` and ``<url>/validate`` (or the Service
    ``service`` at those paths), trusting ``ca_bundle`` (PEM).

    Raises ``ValueError`` for unusable arguments, ``RegistrationError`` when the API server
    refuses a write (e.g. 403 without the RBAC of ``deploy/components/register-webhook``) or
    cannot be reached.
    """
    bodies = webhook_configurations(
        name=name,
        ca_bundle=ca_bundle,
        url=url,
        service=service,
        failure_policy=failure_policy,
        timeout_seconds=timeout_seconds,
        namespace_selector=namespace_selector,
    )
    api = _api(api_client)
    target = "service {}/{}:{}".format(*service) if service is not None else str(url)
    for body in bodies:
        try:
            done = _apply(api, body)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            # No HTTP answer at all (connection refused, timeout, TLS failure), or an answer
            # that is not JSON.
            raise RegistrationError(f"cannot register the {body['kind']} {name!r}: {exc}") from exc
        log.info(
            "%s %s %s: %s, failurePolicy %s",
            body["kind"],
            name,
            done,
            target,
            failure_policy,
        )


def unregister(api_client: ApiClient | AdmissionregistrationV1Api, name: str = DEFAULT_NAME) -> None:
    """Delete both configurations ``name``; missing ones are fine (so is calling this twice)."""
    api = _api(api_client)
    for kind in _METHODS:
        try:
            _call(api, "delete", kind, name)
        except ApiException as exc:
            if exc.status != 404:
                raise RegistrationError(
                    f"cannot delete the {kind} {name!r}: HTTP {exc.status}: {_status_message(exc)}"
                ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RegistrationError(f"cannot delete the {kind} {name!r}: {exc}") from exc
        else:
            log.info("%s %s deleted", kind, name)
