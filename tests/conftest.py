"""Fixtures shared by every test directory: the real kube-apiserver of the end-to-end tests.

One API server per test session (it takes about 5 s to start); tests isolate themselves by
namespace. Started on free loopback ports, stopped by PID at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import localcluster


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[localcluster.LocalCluster]:
    cluster = localcluster.start()
    try:
        yield cluster
    finally:
        localcluster.stop(cluster)
