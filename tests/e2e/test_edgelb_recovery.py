"""After an EdgeLB outage, what waits on a retry runs within seconds, not after its grown backoff.

Where it sits: the real processes of the data flow — kube-apiserver + etcd (``localcluster``),
``dklb edgelb-local`` (API only, ``--no-dataplane``) and ``dklb run`` with a 1 s resync period, so
that the pool sweep lists EdgeLB's pools every second. A first Service is Ready; EdgeLB is then
restarted on the same port and state answering 503 to everything (``edgelb_local.faults``:
``5xx=1``), and a second Service is created: its binding fails against EdgeLB and stays so until
its retry backoff (``states/lifecycle.yaml``: 1 s doubling) has grown to 40 s or more. The Ready
one is left alone by the outage (a listing that fails marks nothing: no error, no commit). Then
EdgeLB is restarted healthy: ``engine.runtime.recovery`` notices it with its probe
(``GET /ping``) and the failed binding runs again at once: its ``last_error`` clears within a
deadline far shorter than the backoff it was waiting out. ``/metrics`` says
``dklb_edgelb_outage`` 1 during the outage and 0 after it.

Everything started here is stopped by PID; every wait is a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import kubernetes
from sqlalchemy.exc import SQLAlchemyError

import localcluster
from engine.edgelb.client import EdgeLBClient
from engine.kube.api import response_json
from engine.store import Binding, Store, StoreError, database_url
from tests.checks import present
from tests.e2e.conftest import World
from tests.e2e.invariants import violations
from tests.processes import ControllerProcess, controller_args, scrape, start_edgelb, total, wait_for

NAME = "cache"
POOL = "recovery-pool"
CONFIG = f"name: {POOL}\nfrontends:\n- {{port: 38000, servicePort: 6379}}\n"
# Created during the outage: its binding meets the 503s.
LATE = "late"
LATE_CONFIG = f"name: {POOL}-late\nfrontends:\n- {{port: 38001, servicePort: 6379}}\n"
# The outage lasts until the binding waits this long for its next retry (about 35-110 s).
BACKOFF = 40.0
# How soon after EdgeLB answers again the binding must have run: the probe interval (2 s), the
# restart and one reconcile, with room for a loaded machine; far less than BACKOFF.
DEADLINE = 12.0
LISTENING = re.compile(r"http listening on (http://[\d.]+:\d+)")


@dataclass
class Rig:
    world: World
    database: Path
    edgelb_log: Path

    def binding(self, name: str = NAME) -> Binding | None:
        try:
            store = Store(database_url(str(self.database)), read_only=True)
        except (StoreError, SQLAlchemyError):
            return None  # not created and migrated yet
        try:
            return next((b for b in store.bindings() if b.name == name), None)
        except SQLAlchemyError:
            return None
        finally:
            store.close()

    def binding_where(
        self, condition: Callable[[Binding], bool], name: str = NAME
    ) -> Callable[[], Binding | None]:
        """What ``wait_for`` polls: the binding once ``condition`` holds for it."""

        def found() -> Binding | None:
            binding = self.binding(name)
            return binding if binding is not None and condition(binding) else None

        return found

    def restart_edgelb(self, *args: str) -> None:
        """Stop edgelb-local and start it again on the same port and state with ``args``."""
        old = self.world.edgelb
        old.stop()
        listen = old.url.split("://", 1)[1]
        self.world.edgelb = start_edgelb(
            old.state_dir, extra=["--no-dataplane", *args], log_path=self.edgelb_log, listen=listen
        )

    def outage_gauge(self) -> float:
        found = wait_for(lambda: LISTENING.search(self.world.controller.log()), what="the /metrics address")
        return total(scrape(found.group(1) + "/metrics"), "dklb_edgelb_outage")


@contextlib.contextmanager
def rig(core: kubernetes.client.CoreV1Api, kubeconfig: Path, directory: Path) -> Iterator[Rig]:
    with contextlib.ExitStack() as cleanup:
        edgelb_log = directory / "edgelb.log"
        edgelb = start_edgelb(directory / "edgelb", extra=["--no-dataplane"], log_path=edgelb_log)
        database = directory / "dklb.db"
        args = controller_args(
            kubeconfig=kubeconfig,
            edgelb_url=edgelb.url,
            database=database,
            resync_period="1s",
            edgelb_request_timeout="1s",
            http_listen="127.0.0.1:0",
        )
        world = World(
            core=core,
            namespace=f"e2e-recovery-{uuid.uuid4().hex[:6]}",
            edgelb=edgelb,
            client=EdgeLBClient(edgelb.url),
            controller=ControllerProcess(args=args, log_path=directory / "controller.log"),
            directory=directory,
        )
        cleanup.callback(lambda: world.edgelb.stop())
        cleanup.callback(release, world)
        cleanup.callback(lambda: world.controller.stop())
        # The generated client is typed for its model classes; it takes the plain dict as well.
        core.create_namespace({"metadata": {"name": world.namespace}}, _preload_content=False)  # type: ignore[arg-type]
        world.controller.start()
        yield Rig(world=world, database=database, edgelb_log=edgelb_log)


def release(world: World) -> None:
    """Strip the finalizers of the test's Services and delete them: nothing lingers."""
    response = world.core.list_namespaced_service(world.namespace, _preload_content=False)
    for service in response_json(response)["items"]:
        name = service["metadata"]["name"]
        with contextlib.suppress(kubernetes.client.ApiException):
            if service["metadata"].get("finalizers"):
                world.patch_service(name, {"metadata": {"finalizers": None}})
            world.delete_service(name)


def test_what_retries_runs_soon_after_an_edgelb_outage_and_ready_is_left_alone(
    kube_cluster: localcluster.LocalCluster, core: kubernetes.client.CoreV1Api, tmp_path: Path
) -> None:
    with rig(core, kube_cluster.kubeconfig, tmp_path) as r:
        r.world.create_service(NAME, config=CONFIG)
        wait_for(
            r.binding_where(lambda b: b.state == "Ready" and b.last_error is None),
            timeout=60,
            what="the Service Ready",
        )
        assert r.outage_gauge() == 0.0
        ready = present(r.binding())

        started = time.monotonic()
        r.restart_edgelb("--faults", "5xx=1")
        r.world.create_service(LATE, config=LATE_CONFIG)

        def backed_off(b: Binding) -> bool:
            # The wait its last failure scheduled: what the binding would sit out after the outage.
            waits = None if b.next_wakeup is None else b.next_wakeup - b.updated_at
            return b.last_error is not None and waits is not None and waits >= timedelta(seconds=BACKOFF)

        failed = wait_for(
            r.binding_where(backed_off, LATE),
            timeout=240,
            interval=0.2,
            what=f"a retry backoff of {BACKOFF:g}s",
        )
        outage = time.monotonic() - started
        assert "503" in (failed.last_error or "")
        assert r.outage_gauge() == 1.0
        # The Ready binding saw the outage only through failed listings: nothing was marked on it.
        assert r.binding() == ready, "a listing that fails changes nothing on a Ready binding"

        r.restart_edgelb()
        back = time.monotonic()
        left = present(failed.next_wakeup) - failed.updated_at
        verified = wait_for(
            r.binding_where(lambda b: b.last_error is None, LATE),
            timeout=DEADLINE,
            interval=0.1,
            what="the failed binding run again once EdgeLB answers",
        )
        took = time.monotonic() - back
        assert verified.attempts == 0
        assert verified.updated_at < present(failed.next_wakeup), "it ran before its backoff's wake-up"
        wait_for(
            r.binding_where(lambda b: b.state == "Ready", LATE), timeout=60, what="the late Service Ready"
        )
        wait_for(lambda: r.outage_gauge() == 0.0, timeout=DEADLINE, what="the outage gauge back to 0")
        log = r.world.controller.log()
        assert "EdgeLB has not answered for" in log
        assert "of failures: the retrying bindings run now" in log
        assert "bindings waiting on a retry queued to run now that EdgeLB answers again: 1" in log
        assert (
            violations(core=core, namespace=r.world.namespace, edgelb=r.world.client, database=r.database)
            == []
        )
        print(
            f"\nEdgeLB recovery: 503s for {outage:.0f}s grew the backoff to {left.total_seconds():.0f}s; "
            f"re-verified {took:.1f}s after EdgeLB answered again"
        )
