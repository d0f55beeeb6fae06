"""Services the Go dklb admitted, through the real Reconciler: they are served, not Rejected.

Where it sits: ``tests.engine.harness.World`` (the Reconciler, SQLite, the fake cluster and
EdgeLB). The annotations are verbatim yaml.v2 output of the Go dklb's configuration object (see
``tests/unit/test_go_parity.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.model.services import ANNOTATION, FINALIZER
from engine.model.settings import Settings
from tests.checks import present
from tests.engine.harness import CLUSTER, World
from tests.fakes.kube import make_service

# Verbatim: what the Go webhook wrote into a Service with one port, 6379, mapped to 16379.
GO_DEFAULTED = """\
cloudProviderConfiguration: ""
constraints: null
cpus: 0.1
memory: 128
name: kubernetes-cluster--x7k2p
network: ""
role: slave_public
size: 1
strategies:
  creation: IfNotPresent
frontends:
- port: 16379
  servicePort: 6379
"""
OURS = """\
name: kubernetes-cluster--x7k2p
role: slave_public
network: ''
cpus: 0.1
memory: 128
size: 1
frontends:
- port: 16379
  servicePort: 6379
strategies:
  creation: IfNotPresent
"""
# The same configuration, for another pool, already in our form.
OTHER = OURS.replace("x7k2p", "other").replace("16379", "16380")


def test_a_go_written_annotation_is_served_with_as_many_writes_as_our_own(world: World) -> None:
    world.kube.apply(make_service("ours", config=OTHER))
    world.settle()
    ours_writes = world.kube.writes
    assert ours_writes == 2, "the finalizer, then the address"
    world.kube.apply(make_service("go", config=GO_DEFAULTED))
    world.settle()

    binding = world.binding("default/go")
    assert binding.state == "Ready", binding.last_error
    assert binding.pool == "kubernetes-cluster--x7k2p"
    go = present(world.kube.get("default/go"))
    assert FINALIZER in go["metadata"]["finalizers"]
    # Rewritten in our form in the write that added the finalizer: no write of its own.
    assert go["metadata"]["annotations"][ANNOTATION] == OURS
    assert world.kube.writes - ours_writes == ours_writes
    assert world.kube.events_for("default/go", type="Warning") == []

    before = world.kube.writes
    world.advance(600)  # resyncs
    assert world.kube.writes == before, "a settled annotation is never rewritten"


def test_a_go_spec_with_nulls_and_a_port_less_frontend_is_served(world: World) -> None:
    text = (
        "cloudProviderConfiguration: null\nconstraints: null\ncpus: null\nmemory: null\nname: go-pool\n"
        "network: null\nrole: null\nsize: null\nstrategies: null\n"
        "frontends:\n- port: null\n  servicePort: 6379\n"
    )
    world.kube.apply(make_service("go", config=text))
    world.settle()

    assert world.binding("default/go").state == "Ready"
    pool = present(world.edgelb.stored("go-pool"))
    assert [f["bindPort"] for f in pool["haproxy"]["frontends"]] == [6379]


def cloud_config(link: str) -> str:
    elb = {"name": "redis", "type": "NLB", "listeners": [{"port": 6379, "linkFrontend": link}]}
    return f"name: cloud--redis\ncloudProviderConfiguration: '{json.dumps({'aws': {'elbs': [elb]}})}'\n"


def test_a_cloud_listener_linking_no_frontend_of_the_service_is_rejected_without_edgelb(world: World) -> None:
    world.kube.apply(make_service("redis", config=cloud_config(f"{CLUSTER}:default:other:6379")))
    world.settle()

    binding = world.binding("default/redis")
    assert binding.state == "Rejected"
    assert "linkFrontend" in binding.last_error and "is not a frontend of this Service" in binding.last_error
    assert world.edgelb.calls == {}

    world.kube.apply(make_service("redis", config=cloud_config(f"{CLUSTER}:default:redis:6379")))
    world.settle()
    assert world.binding("default/redis").state == "Ready"
    listeners = present(world.edgelb.stored("cloud--redis"))["cloudProvider"]["aws"]["elbs"][0]["listeners"]
    assert listeners == [{"port": 6379, "linkFrontend": f"{CLUSTER}:default:redis:6379"}]


def test_a_name_too_long_for_the_pool_group_is_rejected_without_edgelb(tmp_path: Path) -> None:
    world = World(tmp_path, settings=Settings(cluster_name=CLUSTER, pool_group="dcos-edgelb/pools/team-a"))
    try:
        world.kube.apply(make_service("redis", config=f"name: {'a' * 42}\n"))
        world.settle()
        binding = world.binding("default/redis")
        assert binding.state == "Rejected"
        assert 'too long for the pool group "dcos-edgelb/pools/team-a"' in binding.last_error
        assert world.edgelb.calls == {}
    finally:
        world.store.close()
