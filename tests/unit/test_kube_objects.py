"""``engine.kube.objects`` (compact and encoded objects), the ``ServiceCache`` and the watcher's
``Known`` that keep them."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from engine.kube.objects import compact, decode, encode, slim_service
from engine.kube.watch import Known
from engine.runtime.cache import ServiceCache


def service(
    name: str = "web", *, uid: str = "u1", version: str | None = "10", **extra: Any
) -> dict[str, Any]:
    """A Service as the API server returns it, managedFields included."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "default",
        "uid": uid,
        "annotations": {"kubernetes.dcos.io/dklb-config": "name: web\nsize: 1\n"},
        "finalizers": ["kubernetes.dcos.io/dklb"],
        "managedFields": [
            {
                "manager": "kubectl",
                "operation": "Update",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:ports": {".": {}}}},
            }
        ],
    }
    if version is not None:
        meta["resourceVersion"] = version
    body = {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": meta,
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 31000}],
            "clusterIPs": ["10.96.0.10"],
            "allocateLoadBalancerNodePorts": True,
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}},
    }
    body.update(extra)
    return body


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    del obj["metadata"]["managedFields"]
    return obj


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What the cache and the watch keep of ``service()``: without managedFields and the spec
    fields dklb does not read."""
    obj = without_managed_fields(obj)
    obj["spec"] = {k: v for k, v in obj["spec"].items() if k in ("type", "ports", "loadBalancerClass")}
    return obj


# ---- compact / encode / decode ---------------------------------------------------------------------


def test_compact_drops_managed_fields_and_keeps_everything_else():
    original = service()
    before = copy.deepcopy(original)

    kept = compact(original)

    assert kept == without_managed_fields(before)
    assert original == before, "the object passed in is not modified"


def test_the_load_balancer_class_survives_compact_encode_and_the_cache():
    # The class decides which controller a Service belongs to (engine.model.services.claims):
    # a copy that lost it would make another controller's Service dklb's.
    api = service()
    api["spec"]["loadBalancerClass"] = "example.com/other-lb"
    assert compact(api)["spec"]["loadBalancerClass"] == "example.com/other-lb"
    assert decode(encode(compact(api)))["spec"]["loadBalancerClass"] == "example.com/other-lb"
    cache = ServiceCache()
    key = cache.put(api)
    held = cache.get(key)
    assert held is not None and held["spec"]["loadBalancerClass"] == "example.com/other-lb"


def test_compact_copies_do_not_share_mutable_parts_with_the_original():
    original = service()
    kept = compact(original)

    kept["metadata"]["annotations"]["x"] = "y"
    kept["spec"]["ports"].append({})

    assert "x" not in original["metadata"]["annotations"]
    assert len(original["spec"]["ports"]) == 1


def test_compact_objects_share_their_keys_and_short_strings():
    # Decoded separately, as two watch events are: equal strings, distinct objects.
    a = compact(json.loads(json.dumps(service("a"))))
    b = compact(json.loads(json.dumps(service("b"))))

    key_a = next(k for k in a["metadata"] if k == "namespace")
    key_b = next(k for k in b["metadata"] if k == "namespace")
    assert key_a is key_b
    assert a["spec"]["type"] is b["spec"]["type"]
    assert a["spec"]["ports"][0]["protocol"] is b["spec"]["ports"][0]["protocol"]


def test_compact_of_an_object_without_metadata_or_managed_fields():
    assert compact({}) == {}
    assert compact({"metadata": {"name": "n"}}) == {"metadata": {"name": "n"}}


def test_encode_decode_round_trip_gives_fresh_equal_objects():
    kept = compact(service())
    blob = encode(kept)

    first, second = decode(blob), decode(blob)

    assert isinstance(blob, bytes)
    assert first == kept and second == kept
    assert first is not second and first["metadata"] is not second["metadata"]
    assert type(first["spec"]["ports"]) is list
    assert first["spec"]["allocateLoadBalancerNodePorts"] is True


def test_an_encoded_object_is_much_smaller_than_the_api_json():
    raw = json.dumps(service()).encode()
    assert len(encode(compact(service()))) < len(raw)


# ---- slim_service: what dklb keeps of a Service --------------------------------------------------

# (where, value in the API's Service, kept?): a field dklb reads (engine.model.services, the
# fingerprint, translation, the adapter's patches and Events) is kept; anything else is dropped.
SLIM_CASES = [
    (("kind",), "Service", True),
    (("apiVersion",), "v1", True),
    (("metadata", "name"), "web", True),
    (("metadata", "namespace"), "default", True),
    (("metadata", "uid"), "u1", True),
    (("metadata", "resourceVersion"), "10", True),  # the finalizer patch's test op
    (("metadata", "generation"), 3, True),
    (("metadata", "deletionTimestamp"), "2026-01-01T00:00:00Z", True),
    (("metadata", "deletionGracePeriodSeconds"), 0, True),
    (("metadata", "finalizers"), ["other.io/x", "kubernetes.dcos.io/dklb"], True),  # whole: patch tests it
    (("metadata", "annotations", "kubernetes.dcos.io/dklb-config"), "name: web\n", True),
    (("metadata", "annotations", "kubernetes.dcos.io/dklb-paused"), "true", True),
    (("metadata", "annotations", "kubernetes.dcos.io/dklb-shared-pool-key"), "team-a", True),
    (("metadata", "annotations", "kubectl.kubernetes.io/last-applied-configuration"), "{...}", False),
    (("metadata", "annotations", "example.com/owner"), "me", False),
    (("metadata", "labels"), {"app": "web"}, False),
    (("metadata", "creationTimestamp"), "2026-01-01T00:00:00Z", False),
    (("metadata", "ownerReferences"), [{"kind": "X"}], False),
    (("metadata", "managedFields"), [{"manager": "kubectl"}], False),
    (("spec", "type"), "LoadBalancer", True),
    (("spec", "ports"), [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 31000}], True),
    (("spec", "loadBalancerClass"), "example.com/other-lb", True),
    (("spec", "selector"), {"app": "web"}, False),
    (("spec", "clusterIP"), "10.96.0.10", False),
    (("spec", "clusterIPs"), ["10.96.0.10"], False),
    (("spec", "externalTrafficPolicy"), "Cluster", False),
    (("spec", "sessionAffinity"), "None", False),
    (("spec", "ipFamilies"), ["IPv4"], False),
    (("status", "loadBalancer"), {"ingress": [{"ip": "127.0.0.1", "ports": [{"port": 80}]}]}, True),
    (("status", "conditions"), [{"type": "X"}], False),
    (("extra",), {"a": 1}, False),
]


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "web", "namespace": "default"}}
    node = obj
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return obj


def _at(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


_MISSING = object()


@pytest.mark.parametrize(("path", "value", "kept"), SLIM_CASES, ids=[".".join(c[0]) for c in SLIM_CASES])
def test_slim_service_keeps_what_dklb_reads_and_drops_the_rest(path, value, kept):
    original = _with(path, value)
    before = copy.deepcopy(original)

    slimmed = slim_service(original)

    assert _at(slimmed, path) == (value if kept else _MISSING)
    assert original == before, "the object passed in is not modified"
    assert slim_service(slimmed) == slimmed, "idempotent: an object already slim passes unchanged"


def test_slim_service_keeps_an_annotations_map_that_held_only_foreign_annotations():
    # The finalizer patch adds dklb's annotation into an existing map, and creates the map only
    # when the Service has none: a dropped map would make it replace the user's annotations.
    slimmed = slim_service(_with(("metadata", "annotations", "example.com/owner"), "me"))
    assert slimmed["metadata"]["annotations"] == {}
    assert "annotations" not in slim_service(_with(("metadata", "name"), "web"))["metadata"]


def test_slim_services_share_their_keys_and_short_strings():
    a = slim_service(json.loads(json.dumps(service("a"))))
    b = slim_service(json.loads(json.dumps(service("b"))))
    assert a["spec"]["type"] is b["spec"]["type"]
    key_a = next(k for k in a["metadata"] if k == "namespace")
    key_b = next(k for k in b["metadata"] if k == "namespace")
    assert key_a is key_b


def test_a_slim_service_answers_every_reader_as_the_whole_one_does():
    from engine.model import services
    from engine.model.translation import exposed_ports
    from states.observe import fingerprint

    whole = service()
    whole["metadata"]["annotations"]["kubernetes.dcos.io/dklb-shared-pool-key"] = "k"
    whole["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    whole["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    whole["spec"]["loadBalancerClass"] = "example.com/lb"
    slimmed = slim_service(whole)

    assert fingerprint(slimmed) == fingerprint(whole)
    assert exposed_ports(slimmed) == exposed_ports(whole)
    for read in (
        services.key,
        services.config_text,
        services.shared_pool_key,
        services.service_type,
        services.being_deleted,
        services.load_balancer_class,
        services.has_finalizer,
    ):
        assert read(slimmed) == read(whole), read.__name__
    for lb_class in (None, "example.com/lb", services.ANY_CLASS):
        assert services.handled(slimmed, lb_class) == services.handled(whole, lb_class)


# ---- ServiceCache ----------------------------------------------------------------------------------


def test_cache_keeps_a_compact_copy():
    cache = ServiceCache()
    given = service()

    key = cache.put(given)

    assert key == "default/web"
    assert cache.get(key) == slim(given)
    assert "managedFields" in given["metadata"], "the caller's object is left alone"
    assert cache.keys() == ["default/web"]


def test_cache_an_older_version_does_not_roll_back_a_newer_one():
    cache = ServiceCache()
    cache.put(service(version="12", spec={"type": "LoadBalancer", "ports": []}))

    cache.put(service(version="11"))

    held = cache.get("default/web")
    assert held is not None
    assert held["metadata"]["resourceVersion"] == "12" and held["spec"]["ports"] == []


def test_cache_a_newer_version_replaces_the_held_one():
    cache = ServiceCache()
    cache.put(service(version="11"))

    cache.put(service(version="12", spec={"type": "ClusterIP"}))

    held = cache.get("default/web")
    assert held is not None and held["spec"] == {"type": "ClusterIP"}


def test_cache_the_same_version_again_keeps_the_held_one():
    # The watch event of our own write after the write's response; a resync's redelivery. (The
    # API server never gives one version two contents: a different one here shows which is kept.)
    cache = ServiceCache()
    cache.put(service(version="11"))

    cache.put(service(version="11", spec={"type": "ClusterIP"}))

    held = cache.get("default/web")
    assert held is not None and held["spec"]["type"] == "LoadBalancer"


def test_cache_get_returns_a_fresh_copy_each_time():
    cache = ServiceCache()
    cache.put(service())

    first = cache.get("default/web")
    assert first is not None
    first["spec"]["type"] = "ClusterIP"

    second = cache.get("default/web")
    assert second is not None and second is not first
    assert second["spec"]["type"] == "LoadBalancer"


def test_cache_a_new_object_of_the_same_name_replaces_whatever_its_version():
    cache = ServiceCache()
    cache.put(service(uid="old", version="50"))

    cache.put(service(uid="new", version="7"))

    held = cache.get("default/web")
    assert held is not None and held["metadata"]["uid"] == "new"


def test_cache_objects_without_a_resource_version_always_replace():
    cache = ServiceCache()
    cache.put(service(version=None, spec={"type": "ClusterIP"}))

    cache.put(service(version=None))

    held = cache.get("default/web")
    assert held is not None and held["spec"]["type"] == "LoadBalancer"


def test_cache_remove():
    cache = ServiceCache()
    cache.put(service())

    cache.remove("default/web")
    cache.remove("default/web")

    assert cache.get("default/web") is None and cache.keys() == []


# ---- the watcher's Known ---------------------------------------------------------------------------


def test_known_holds_compact_copies_decoded_afresh_on_every_read():
    known = Known({"default/web": service()})

    assert list(known) == ["default/web"] and len(known) == 1 and "default/web" in known
    assert known["default/web"] == compact(service())
    assert known["default/web"] is not known["default/web"]
    assert Known(known) == known and Known() == {}
