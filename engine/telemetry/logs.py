"""Logging set-up for ``dklb run``: text for people, JSON lines for machines.

Every module logs under ``dklb.*``; this decides the format once, at start-up. In JSON mode every
line the process writes is a JSON object: warnings and uncaught exceptions (main thread or any
other) go through logging too.

Levels: Python's names (debug, info, warning, error, critical) and the Go dklb's (logrus: trace,
debug, info, warn, warning, error, fatal, panic), in any case, so that its ``--log-level`` values
keep working: ``level_name`` maps them.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

_log = logging.getLogger("dklb.run")

#: Every accepted ``--log-level`` (lower case) -> the Python level it means. logrus' trace is
#: finer than debug, which is our finest; its fatal and panic log only what ends the process,
#: our critical.
LEVELS: dict[str, str] = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "critical",
    "panic": "critical",
    "critical": "critical",
}


def level_name(text: str) -> str:
    """The Python level (``debug`` ... ``critical``) a level name means; ValueError naming it."""
    try:
        return LEVELS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not a log level (one of {', '.join(LEVELS)})") from None


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(*, level: str = "info", fmt: str = "text") -> None:
    """One handler on stderr, text or JSON lines; in JSON, stray output is logged too."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_name(level).upper())
    # Scheduling chatter ("Running job ...") would drown the transitions.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if fmt == "json":
        route_stray_output_through_logging()


def route_stray_output_through_logging() -> None:
    """Warnings and uncaught exceptions would go to stderr as plain text, breaking JSON lines."""
    logging.captureWarnings(True)

    def thread_hook(hook: threading.ExceptHookArgs) -> None:
        if hook.exc_type is SystemExit:
            return  # what the default hook does too
        name = hook.thread.name if hook.thread is not None else "?"
        _log.critical("uncaught exception in thread %s", name, exc_info=hook.exc_value or True)

    def main_hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        _log.critical("uncaught exception", exc_info=(kind, value, tb))

    def unraisable_hook(hook: Any) -> None:
        # "Exception ignored in ...": errors in __del__ or finalizers, often at shutdown.
        _log.error(
            "%s: %r",
            hook.err_msg or "Exception ignored in",
            hook.object,
            exc_info=(hook.exc_type, hook.exc_value, hook.exc_traceback),
        )

    threading.excepthook = thread_hook
    sys.excepthook = main_hook
    sys.unraisablehook = unraisable_hook
