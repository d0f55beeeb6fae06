"""The PostgreSQL password never leaks: not in the controller's log, /metrics, /readyz, the
operator commands' output, an error message, Events or Services.

Where it sits: the e2e ``world`` (real kube-apiserver, local EdgeLB, ``dklb run`` at log level
debug), its controller moved onto a real PostgreSQL database (``postgres_url``) named by a DSN
file (``--database-url-file``, as deploy/components/ha mounts it). A Service is provisioned and
deleted through it; then every command that reads the database runs, with the DSN file, with
the URL itself on the command line, and with a database that does not exist (an error).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import requests
from sqlalchemy import make_url

from tests.e2e.conftest import World
from tests.integration.conftest import free_port
from tests.processes import ROOT, wait_for

LISTENING = re.compile(r"http listening on (http://\S+)")


def dklb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_database_password_leaks_nowhere(world: World, postgres_url: str, tmp_path: Path) -> None:
    password = make_url(postgres_url).password
    assert password
    dsn_file = tmp_path / "database-url"
    dsn_file.write_text(postgres_url + "\n")
    dsn_file.chmod(0o600)
    args = list(world.controller.args)
    at = args.index("--database")
    del args[at : at + 2]
    offset = world.controller.log_path.stat().st_size
    world.controller.stop()
    world.controller.args = [*args, "--database-url-file", str(dsn_file), "--http-listen", "127.0.0.1:0"]
    world.controller.start()
    http = wait_for(
        lambda: (m := LISTENING.search(world.controller.log()[offset:])) and m.group(1),
        what="the http listening line",
    )
    world.create_service("web", ports=[(free_port(), "TCP")], config="name: pg-pool\n")
    world.create_service("gone", ports=[(free_port(), "TCP")], config="name: pg-gone\n")
    wait_for(lambda: world.ingress("web") and world.ingress("gone"), timeout=90, what="both Ready")
    world.delete_service("gone")
    wait_for(lambda: world.service("gone") is None, timeout=90, what="gone released")
    outputs = {
        "/metrics": requests.get(http + "/metrics", timeout=5).text,
        "/readyz": requests.get(http + "/readyz", timeout=5).text,
    }
    assert "dklb_bindings" in outputs["/metrics"]

    by_file = ["--database-url-file", str(dsn_file)]
    key = f"{world.namespace}/web"
    for command in (["inspect"], ["inspect", key], ["history"], ["history", key], ["pools"]):
        for output in ("table", "json", "yaml"):
            result = dklb(*command, *by_file, "-o", output)
            assert result.returncode == 0, result
            outputs[f"{' '.join(command)} -o {output}"] = result.stdout + result.stderr
    assert key in outputs["inspect -o table"] and "pg-pool" in outputs["pools -o table"]
    # The URL on the command line (visible in the process list: the file is better), and errors.
    result = dklb("inspect", "--database", postgres_url)
    assert result.returncode == 0 and key in result.stdout, result
    outputs["inspect --database URL"] = result.stdout + result.stderr
    result = dklb("inspect", "nobody/nothing", "--database", postgres_url)
    assert result.returncode == 1, result
    outputs["inspect unknown key"] = result.stdout + result.stderr
    missing = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    for command in (["inspect"], ["history"], ["migrate"]):
        result = dklb(*command, "--database", missing)
        assert result.returncode == 1 and "no_such_database" in result.stderr, result
        outputs[f"{command[0]} (no such database)"] = result.stdout + result.stderr
    result = dklb("migrate", *by_file)
    assert result.returncode == 0 and ":***@" in result.stdout, result
    outputs["migrate"] = result.stdout + result.stderr
    world.controller.stop()

    log = world.controller.log()[offset:]
    # The controller named its database, without the password.
    assert f"{make_url(postgres_url).username}:***@" in log
    outputs["controller log"] = log
    for kind in ("event", "service"):
        listing = getattr(world.core, f"list_namespaced_{kind}")(world.namespace, _preload_content=False)
        outputs[f"Kubernetes {kind}s"] = json.dumps(json.loads(listing.data), ensure_ascii=False)
    assert "EnsuredLoadBalancer" in outputs["Kubernetes events"]
    pieces = {password, quote(password, safe=""), quote_plus(password, safe="")}
    found = {where: [p for p in pieces if p in text] for where, text in outputs.items()}
    assert {where: leaked for where, leaked in found.items() if leaked} == {}
    assert all(outputs.values()), {where: len(text) for where, text in outputs.items()}
