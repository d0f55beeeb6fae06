"""The real webhook and metrics servers in a process of their own, for ``test_endpoint_load``.

``python -m tests.integration.endpoints_server CERT_DIR`` serves the admission webhook (TLS, the
certificate generated into CERT_DIR) and ``/metrics`` + probes on free loopback ports, with the
limits and the ``Metrics`` hooks ``dklb run`` uses (so ``/metrics`` shows their
``dklb_http_refused_total``), prints one JSON line ``{"pid", "admission", "http"}`` once both listen, and
serves until it is killed. Its own process, so that its peak RSS (VmHWM) is the servers' alone.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from engine.admission.certs import generate_self_signed
from engine.admission.server import AdmissionServer
from engine.model.settings import Settings
from engine.telemetry.health import HealthServer, Probes
from engine.telemetry.metrics import Metrics


def main(cert_dir: str) -> None:
    _, cert, key = generate_self_signed(Path(cert_dir), hosts=["127.0.0.1"])
    metrics = Metrics()
    admission = AdmissionServer(
        host="127.0.0.1",
        port=0,
        cert_file=str(cert),
        key_file=str(key),
        settings=Settings(),
        on_request=metrics.admission_review,
        on_refused=metrics.http_refused,
    )
    probes = Probes(
        threads=lambda: [],
        stopping=lambda: False,
        synced=lambda: True,
        database=lambda: None,
        leader=lambda: True,
    )
    http = HealthServer(
        "127.0.0.1", 0, registry=metrics.registry, probes=probes, on_refused=metrics.http_refused
    ).start()
    admission_port = admission.start()[1]
    print(json.dumps({"pid": os.getpid(), "admission": admission_port, "http": http.address[1]}), flush=True)
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main(sys.argv[1])
