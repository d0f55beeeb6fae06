"""Typed EdgeLB errors: what every EdgeLB implementation raises, and what handlers branch on.

A handler never looks at HTTP status codes; it catches one of these classes and decides between
"retry later", "the pool is gone" and "the request itself is wrong".
"""

from __future__ import annotations


class EdgeLBError(Exception):
    """Base class; ``status`` is the HTTP status when one was received."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class NotFound(EdgeLBError):
    """The pool does not exist (404)."""


class Conflict(EdgeLBError):
    """The pool already exists (409)."""


class Invalid(EdgeLBError):
    """EdgeLB refused the request body: 400 (malformed, or refused by EdgeLB's checks) or 422 (a value
    outside the API schema: an enum, a minimum, a missing body). A refusal: sending it again fails
    again. The message is EdgeLB's."""


class Unavailable(EdgeLBError):
    """EdgeLB could not answer now (5xx, timeout, connection error); retrying may help.

    For metadata, a 504 means "not available yet" and is raised as this class too.
    """


class Unexpected(EdgeLBError):
    """Any other answer, carrying the server's ``{code, message}``."""
