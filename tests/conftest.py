"""Fixtures shared by every test directory: the real kube-apiserver of the end-to-end tests and
the real PostgreSQL server of the store's second dialect.

One API server per test session (it takes about 5 s to start); tests isolate themselves by
namespace. One PostgreSQL cluster per session (``localpg``, about 1 s); tests isolate themselves
by database (``postgres_url``: a fresh, empty one per test). Both on free loopback ports, stopped
by PID at the end of the session.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

import localcluster
import localpg

# Hypothesis' per-example deadline (200 ms) measures the machine, not the code: on a loaded CI
# runner a pure parser example can take longer and fail with DeadlineExceeded. Every property
# test keeps its example count; none is timed.
settings.register_profile("dklb", deadline=None)
settings.load_profile("dklb")


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[localcluster.LocalCluster]:
    cluster = localcluster.start()
    try:
        yield cluster
    finally:
        localcluster.stop(cluster)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[localpg.LocalPostgres]:
    server = localpg.start()
    try:
        yield server
    finally:
        localpg.remove(server)


_databases = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: localpg.LocalPostgres) -> Iterator[str]:
    """A fresh, empty database of the session's server, as a ``postgresql://`` URL with its
    password (dropped after the test)."""
    name = f"t{os.getpid()}_{next(_databases)}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
def no_dklb_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``DKLB_*`` variable of the shell running the tests: an operator's exported
    ``DKLB_EDGELB_URL`` must not change what a test of flags and defaults sees."""
    for name in [n for n in os.environ if n.startswith("DKLB_")]:
        monkeypatch.delenv(name)
