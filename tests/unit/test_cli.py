"""The ``dklb`` command line as a user meets it: ``plan`` and ``lifecycle``.

Proves that ``dklb plan`` turns the seed's Redis example into the expected configuration and
EdgeLB pool, in YAML and in JSON, both through ``engine.cli.main`` and through the installed
console script; that an invalid Service exits 1 listing every error on stderr; that unreadable
input (no Service, missing file, bad YAML) exits 1 with a message naming the file; that a
Service without annotation gets a generated pool name shaped by ``--cluster-name``; and that
``dklb lifecycle`` draws a Mermaid diagram or lists the states as JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "redis-service.yaml"
DKLB = Path(sys.executable).with_name("dklb")
REDIS = "kubernetes-cluster:default:redis:6379"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_redis_plan(plan: dict[str, Any]) -> None:
    config = plan["configuration"]
    assert config["name"] == "dklb-redis"
    assert config["frontends"] == [{"port": 16379, "servicePort": 6379}]
    pool = plan["pool"]
    assert (pool["name"], pool["role"], pool["cpus"], pool["mem"], pool["count"]) == (
        "dklb-redis",
        "slave_public",
        0.1,
        128,
        1,
    )
    assert pool["namespace"] == "dcos-edgelb/pools"
    [frontend] = pool["haproxy"]["frontends"]
    assert (frontend["name"], frontend["bindPort"], frontend["protocol"]) == (REDIS, 16379, "TCP")
    [backend] = pool["haproxy"]["backends"]
    assert frontend["linkBackend"]["defaultBackend"] == backend["name"] == REDIS
    assert (backend["protocol"], backend["balance"]) == ("TCP", "leastconn")
    [service] = backend["services"]
    assert service["endpoint"]["port"] == 32213
    assert service["mesos"]["frameworkName"] == "kubernetes-cluster"
    assert "warnings" not in plan, plan.get("warnings")


def test_plan_prints_the_redis_pool_as_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "-f", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert out.startswith("configuration:\n")
    assert_redis_plan(yaml.safe_load(out))


def test_plan_prints_the_same_plan_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "-f", str(EXAMPLE), "-o", "json")
    assert (code, err) == (0, "")
    plan = json.loads(out)
    assert_redis_plan(plan)
    _, yaml_out, _ = run(capsys, "plan", "-f", str(EXAMPLE))
    assert plan == yaml.safe_load(yaml_out)


def test_plan_through_the_installed_console_script(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(DKLB), "plan", "-f", str(EXAMPLE)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert_redis_plan(yaml.safe_load(result.stdout))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: {name}
{annotations}spec:
  type: LoadBalancer
  ports:
  - port: 6379
    nodePort: 32213
"""


def service_yaml(config: str | None = None, name: str = "svc") -> str:
    annotations = ""
    if config is not None:
        body = "".join(f"      {line}\n" for line in config.splitlines())
        annotations = f"  annotations:\n    kubernetes.dcos.io/dklb-config: |\n{body}"
    return SERVICE.format(name=name, annotations=annotations)


INVALID = """\
name: "__foo__"
cpus: -0.1
role: slave_public
network: dcos
frontends:
- port: 123456
  servicePort: 6379
"""


def test_an_invalid_service_exits_1_listing_every_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "bad.yaml", service_yaml(INVALID))
    code, out, err = run(capsys, "plan", "-f", str(path))
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert all(line.startswith("error: ") for line in lines), err
    expected = [
        '"__foo__" is not a valid edgelb pool name',
        "-0.100000 is not a valid cpu request",
        "123456 is not a valid port number",
        'cannot join a virtual network when the pool\'s role is "slave_public"',
    ]
    for fragment in expected:
        assert sum(fragment in line for line in lines) == 1, f"{fragment!r} reported once in:\n{err}"
    assert len(lines) == len(expected)


UNREADABLE: list[tuple[str, str | None, str]] = [
    (
        "no-service",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        "must hold exactly one object of kind Service (found 0)",
    ),
    ("two-services", service_yaml(name="a") + "---\n" + service_yaml(name="b"), "(found 2)"),
    ("empty-file", "", "(found 0)"),
    ("missing-file", None, "cannot read {path}: No such file or directory"),
    ("bad-yaml", "kind: Service\nmetadata: [\n", "{path} is not valid YAML"),
    ("no-name", "kind: Service\nmetadata: {namespace: x}\n", "{path}: metadata.name is required"),
]


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for _, t, m in UNREADABLE], ids=[i for i, _, _ in UNREADABLE]
)
def test_unreadable_input_exits_1_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, message: str
) -> None:
    path = tmp_path / "input.yaml"
    if text is not None:
        path.write_text(text)
    code, out, err = run(capsys, "plan", "-f", str(path))
    assert (code, out) == (1, "")
    assert err.startswith("error: ")
    assert message.format(path=path) in err
    assert "Traceback" not in err


NAMES: list[tuple[list[str], str]] = [
    ([], r"kubernetes-cluster--[a-z0-9]{5}"),
    (["--cluster-name", "/dev/kube01"], r"dev--kube01--[a-z0-9]{5}"),
]


@pytest.mark.parametrize(("flags", "pattern"), NAMES, ids=["default-cluster", "dev-kube01"])
def test_a_service_without_annotation_gets_a_generated_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], pattern: str
) -> None:
    path = write(tmp_path, "web.yaml", service_yaml())
    code, out, err = run(capsys, "plan", "-f", str(path), *flags, "-o", "json")
    assert (code, err) == (0, "")
    plan = json.loads(out)
    name = plan["configuration"]["name"]
    assert re.fullmatch(pattern, name), name
    assert plan["pool"]["name"] == name
    assert plan["warnings"] == [f"name {name!r} was generated; the controller records it in the annotation"]


def test_lifecycle_prints_a_mermaid_diagram(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "lifecycle")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> Pending: observed" in lines
    assert "    Deleting --> [*]: deleted" in lines


def test_lifecycle_as_json_lists_the_states(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "lifecycle", "-o", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert (data["initial"], data["final"]) == ("Pending", "Removed")
    assert list(data["states"]) == [
        "Pending",
        "Provisioning",
        "AwaitingMetadata",
        "Ready",
        "Rejected",
        "Paused",
        "Moving",
        "Deleting",
    ]
    assert data["states"]["Provisioning"]["serialize"] == "pool"
    assert data["states"]["Ready"]["resync"] == 86400.0
    assert data["states"]["Pending"]["retry"] == {"base": 1.0, "factor": 2.0, "cap": 120.0, "jitter": 0.5}
    accept = next(t for t in data["transitions"] if t["trigger"] == "accept")
    assert accept == {
        "trigger": "accept",
        "source": ["Pending"],
        "dest": "Provisioning",
        "guards": [
            "states.guards.may_use_pool",
            "states.guards.shares_pool_settings",
            "states.guards.no_frontend_port_clash",
        ],
        "else": {"trigger": "reject", "reason": "PoolConflict"},
    }
    assert data["states"]["Ready"]["settled"] is True
    assert data["states"]["Deleting"]["wants_objects"] is False
    assert "annotation" in data["states"]["Paused"]["user_action"]


def test_a_sub_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main([])
    assert caught.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_lifecycle_as_a_table_has_one_row_per_transition(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.runtime import lifecycle as lifecycle_module

    assert cli.main(["lifecycle", "-o", "table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TRIGGER", "FROM", "TO", "GUARDS"]
    assert len(lines) == 1 + len(lifecycle_module.load().transitions)
    assert any(line.split()[:3] == ["accept", "Pending", "Provisioning"] for line in lines)
