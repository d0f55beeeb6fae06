"""Telling "the Kubernetes API server does not answer" from a bug, in one line.

Where it sits: the reconciler asks ``kubernetes_unavailable`` about an exception a state handler
raised (a retry with reason ``KubernetesUnavailable`` and one log line, instead of a traceback),
and the adapter asks it about an Event it could not post. Anything it does not recognize is a bug
and keeps its traceback.
"""

from __future__ import annotations

import re

import urllib3
from kubernetes.client import ApiException

# The retry reason of a handler that failed because the Kubernetes API server did not answer.
KUBERNETES_UNAVAILABLE = "KubernetesUnavailable"
# urllib3 errors of a request that got no (complete) answer: refused, reset, timed out, retries
# exhausted. The Kubernetes client lets them through unwrapped.
_NO_ANSWER = (
    urllib3.exceptions.MaxRetryError,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
# "<urllib3.connection.HTTPSConnection object at 0x7f...>: " in front of urllib3's messages.
_OBJECT_REPR = re.compile(r"<[^<>]* object at 0x[0-9a-fA-F]+>:?\s*")


def kubernetes_unavailable(exc: BaseException) -> str | None:
    """A one-line message when ``exc`` (or what it was raised from) means the Kubernetes API server
    does not answer, or answers 5xx/429; None for anything else, which is a bug worth a traceback.

    Only Kubernetes calls can raise these in a handler: EdgeLB failures arrive as ``EdgeLBError``.
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, ApiException):
            status = int(current.status or 0)
            if status >= 500 or status == 429:
                reason = " ".join(str(current.reason or "").split())
                return f"the Kubernetes API server answered {status} {reason}".rstrip()
            return None
        if isinstance(current, _NO_ANSWER):
            cause = getattr(current, "reason", None)
            detail = _one_line(current)
            if isinstance(current, urllib3.exceptions.MaxRetryError) and isinstance(cause, BaseException):
                detail = f"{type(cause).__name__}: {_one_line(cause)}"
            return f"the Kubernetes API server does not answer ({type(current).__name__}: {detail})"
        current = current.__cause__
        seen += 1
    return None


def _one_line(exc: BaseException) -> str:
    text = _OBJECT_REPR.sub("", str(exc))
    # MaxRetryError: "HTTPSConnectionPool(host=..., port=...): Max retries exceeded with url: ..."
    return " ".join(text.split()) or type(exc).__name__
