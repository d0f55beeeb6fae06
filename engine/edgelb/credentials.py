"""Which credential would travel in the clear to an EdgeLB URL (security rule S6).

Where it sits in the data flow: ``client_from_options`` (``engine.edgelb.client``) and the command
line's option checks (``engine.cli.options``) ask it before any client is built; a credential
named here is refused unless ``--edgelb-allow-insecure-http``. (Moved out of the client module
unchanged, to keep that module within its size.)
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit


def plaintext_credential(
    base_url: str,
    *,
    token_file: str | None = None,
    token_value: str | None = None,
    service_account_secret_file: str | None = None,
    token_env: str = "DKLB_EDGELB_TOKEN",
) -> str | None:
    """The credential (as the flag or variable that gives it) that would go to ``base_url`` in
    the clear, or None: none is given, or the URL is https. (A service account's login endpoint
    is ``ServiceAccountLogin``'s to check: it is inside the secret.)"""
    if urlsplit(base_url).scheme.lower() != "http":
        return None
    if service_account_secret_file:
        return "the service account of --edgelb-service-account-secret-file"
    if token_file:
        return "the bearer token of --edgelb-bearer-token-file"
    if token_value:
        return "the bearer token of --edgelb-bearer-token"
    if token_env and os.environ.get(token_env):
        return f"the bearer token of {token_env}"
    return None
