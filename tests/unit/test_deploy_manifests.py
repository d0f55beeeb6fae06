"""The deployment as files: ``Dockerfile``, ``.dockerignore`` and the manifests in ``deploy/``.

No container engine and no cluster here: every manifest is parsed and checked for what the
controller needs and nothing more (kinds, names, namespaces; the exact RBAC rules; one replica
with strategy Recreate on a ReadWriteOnce volume; probes on the port ``--http-listen`` serves;
the database on the mounted volume; non-root and a read-only root filesystem; the admission
webhook served behind the Service dklb-webhook with the certificate of a read-only Secret, its
configurations static (security review S7: the controller may not write them; the optional
component register-webhook grants that, components/address-mode the Nodes); the NetworkPolicy
(S3), the Pod Security label (S11), no EdgeLB credential over the plain-HTTP default (S6)), and
every flag and ``DKLB_*`` variable the Deployment sets is one that ``dklb run`` accepts. The
Dockerfile is parsed the same way: the build context holds every path it copies, the wheel is
built from every package pyproject.toml lists, the base image is pinned by digest, and the final
stage, without pip or the stand-ins, runs ``dklb run`` as uid 65532 with the database on the
volume. ``tests/e2e/test_rbac.py`` applies the RBAC manifests (and the components') to a real
API server.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from engine import cli
from engine.admission import plan as admission
from engine.admission.register import DEFAULT_NAME
from engine.cli import options, run
from engine.edgelb.client import DEFAULT_IN_CLUSTER_HOST

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "base"
COMPONENTS = REPO / "deploy" / "components"
NAMESPACE = "dklb"
UID = 65532
HTTP_PORT = 9420
DATA_DIR = "/var/lib/dklb"

Obj = dict[str, Any]


# ---- loading ------------------------------------------------------------------------------------


def load(name: str) -> list[Obj]:
    with (DEPLOY / name).open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def kustomization() -> Obj:
    (doc,) = load("kustomization.yaml")
    return doc


def manifests() -> Iterator[tuple[str, Obj]]:
    """(file, object) for every object of every resource the kustomization lists."""
    for name in kustomization()["resources"]:
        for obj in load(name):
            yield name, obj


def find(kind: str, name: str) -> Obj:
    found = [obj for _, obj in manifests() if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"exactly one {kind} {name}, found {len(found)}"
    return found[0]


def deployment() -> Obj:
    return find("Deployment", "dklb")


def container() -> Obj:
    (only,) = deployment()["spec"]["template"]["spec"]["containers"]
    return only


def env() -> dict[str, Obj]:
    return {item["name"]: item for item in container()["env"]}


# ---- the manifests ------------------------------------------------------------------------------

EXPECTED = {
    # (kind, name): (file, namespace or None for cluster-scoped, apiVersion)
    ("Namespace", "dklb"): ("namespace.yaml", None, "v1"),
    ("ServiceAccount", "dklb"): ("serviceaccount.yaml", NAMESPACE, "v1"),
    ("ClusterRole", "dklb"): ("rbac.yaml", None, "rbac.authorization.k8s.io/v1"),
    ("ClusterRoleBinding", "dklb"): ("rbac.yaml", None, "rbac.authorization.k8s.io/v1"),
    ("Role", "dklb-leader-election"): ("rbac.yaml", NAMESPACE, "rbac.authorization.k8s.io/v1"),
    ("RoleBinding", "dklb-leader-election"): ("rbac.yaml", NAMESPACE, "rbac.authorization.k8s.io/v1"),
    ("PersistentVolumeClaim", "dklb-data"): ("pvc.yaml", NAMESPACE, "v1"),
    ("NetworkPolicy", "dklb"): ("networkpolicy.yaml", NAMESPACE, "networking.k8s.io/v1"),
    ("Service", "dklb-webhook"): ("webhook.yaml", NAMESPACE, "v1"),
    ("MutatingWebhookConfiguration", "dklb"): ("webhook.yaml", None, "admissionregistration.k8s.io/v1"),
    ("ValidatingWebhookConfiguration", "dklb"): ("webhook.yaml", None, "admissionregistration.k8s.io/v1"),
    ("Deployment", "dklb"): ("deployment.yaml", NAMESPACE, "apps/v1"),
}


def test_the_kustomization_lists_every_manifest_in_deploy_and_nothing_else() -> None:
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    listed = kustomization()["resources"]
    assert sorted(listed) == sorted(on_disk) and len(listed) == len(set(listed))
    # Namespace and RBAC first: `kubectl apply -f` in this order never refers to a missing object.
    assert listed.index("namespace.yaml") < min(listed.index(n) for n in on_disk - {"namespace.yaml"})


def test_every_object_has_the_expected_kind_name_namespace_and_api_version() -> None:
    found = {}
    for file, obj in manifests():
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in found, f"{key} defined twice"
        found[key] = (file, obj["metadata"].get("namespace"), obj["apiVersion"])
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "dklb", key
    assert found == EXPECTED


# The exact permissions of `dklb run`: its adapter (Service GET and PATCH, status PATCH, Events
# create/patch), its Service watcher (LIST + WATCH) and its leader election (one Lease in its own
# namespace: GET, create, PUT). Nothing else: not the Nodes (components/address-mode) and not the
# webhook configurations (components/register-webhook; security review S7).
ADMISSION = "admissionregistration.k8s.io"
WEBHOOK_CONFIGURATIONS = ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
CLUSTER_RULES: dict[tuple[str, str, tuple[str, ...]], set[str]] = {
    # (apiGroup, resource, resourceNames): verbs
    ("", "services", ()): {"get", "list", "watch", "patch"},
    ("", "services/status", ()): {"patch"},
    ("", "events", ()): {"create", "patch"},
}
Rules = dict[tuple[str, str, tuple[str, ...]], set[str]]
NODE_RULES: Rules = {("", "nodes", ()): {"list", "watch"}}
REGISTER_RULES: Rules = {
    **{(ADMISSION, resource, ()): {"create"} for resource in WEBHOOK_CONFIGURATIONS},
    **{(ADMISSION, resource, ("dklb",)): {"get", "update"} for resource in WEBHOOK_CONFIGURATIONS},
}
LEADER_RULES = {
    ("coordination.k8s.io", "leases", ()): {"create"},
    ("coordination.k8s.io", "leases", ("dklb",)): {"get", "update"},
}


def rule_table(rules: list[Obj]) -> dict[tuple[str, str, tuple[str, ...]], set[str]]:
    table: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "resourceNames", "verbs"}, rule
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        names = tuple(rule.get("resourceNames") or ())
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource, names), set()).update(rule["verbs"])
    return table


def test_the_cluster_role_grants_exactly_what_the_controller_calls() -> None:
    role = find("ClusterRole", "dklb")
    assert "aggregationRule" not in role
    assert rule_table(role["rules"]) == CLUSTER_RULES


def test_the_leader_election_role_grants_one_lease_in_the_controllers_namespace() -> None:
    role = find("Role", "dklb-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rule_table(role["rules"]) == LEADER_RULES
    # The Lease the Role names is the one `dklb run` elects on by default.
    assert run_parser().get_default("leader_elect_lease_name") == "dklb"


@pytest.mark.parametrize(
    ("kind", "name", "role_kind", "role_name"),
    [
        ("ClusterRoleBinding", "dklb", "ClusterRole", "dklb"),
        ("RoleBinding", "dklb-leader-election", "Role", "dklb-leader-election"),
    ],
)
def test_each_binding_grants_its_role_to_the_service_account_only(
    kind: str, name: str, role_kind: str, role_name: str
) -> None:
    binding = find(kind, name)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role_kind,
        "name": role_name,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dklb", "namespace": NAMESPACE}]


def test_the_pod_runs_as_the_bound_service_account() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "dklb"
    assert spec.get("automountServiceAccountToken", True) is True
    assert find("ServiceAccount", "dklb").get("automountServiceAccountToken", True) is True


def test_one_replica_replaced_by_recreate_because_the_volume_is_read_write_once() -> None:
    spec = deployment()["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    claim = find("PersistentVolumeClaim", "dklb-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()


def named_port(port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container()["ports"] if p["name"] == port]
    return int(match)


@pytest.mark.parametrize(
    ("probe", "path"),
    [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")],
)
def test_probes_ask_the_http_listener_of_dklb_run(probe: str, path: str) -> None:
    get = container()[probe]["httpGet"]
    assert get["path"] == path
    assert named_port(get["port"]) == HTTP_PORT
    assert get.get("scheme", "HTTP") == "HTTP"
    assert f"--http-listen=0.0.0.0:{HTTP_PORT}" in container()["args"]
    assert run.HTTP_PORT == HTTP_PORT


def test_the_database_lives_on_the_mounted_claim() -> None:
    database = PurePosixPath(env()["DKLB_DATABASE"]["value"])
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment()["spec"]["template"]["spec"]["volumes"]}
    (data,) = [name for name, v in volumes.items() if "persistentVolumeClaim" in v]
    assert volumes[data]["persistentVolumeClaim"]["claimName"] == "dklb-data"
    assert mounts[data]["mountPath"] == str(database.parent) == DATA_DIR
    assert not mounts[data].get("readOnly", False)
    # The same path as the image's ENV and VOLUME and the controller's in-cluster default.
    assert str(database) == options.CONTAINER_DATABASE == dockerfile_env()["DKLB_DATABASE"]
    # Every writable path is a volume: the root filesystem is read-only. (The other mounts,
    # the webhook's certificate, are read-only.)
    assert {m["mountPath"] for m in mounts.values() if not m.get("readOnly")} == {DATA_DIR, "/tmp"}


def test_the_pod_runs_non_root_read_only_without_capabilities() -> None:
    pod = deployment()["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == pod["runAsGroup"] == UID
    assert pod["fsGroup"] == UID, "the claim must be writable for the image's user"
    sc = container()["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert dockerfile_final_stage()["USER"][-1] == f"{UID}:{UID}"


def test_resources_are_requested_and_limited() -> None:
    resources = container()["resources"]
    assert set(resources) == {"requests", "limits"}
    for key in ("requests", "limits"):
        assert set(resources[key]) == {"cpu", "memory"}, key


def test_leader_election_is_on_in_the_pods_own_namespace() -> None:
    args = container()["args"]
    assert args[0] == "run", "replaces the image's CMD; the ENTRYPOINT is dklb"
    assert "--leader-elect=true" in args
    assert "--leader-elect-namespace=$(POD_NAMESPACE)" in args
    assert env()["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # Kubernetes expands $(VAR) only for variables defined before their use: the env list does.
    assert list(env()).index("POD_NAMESPACE") == 0


def test_edgelb_and_the_cluster_name_are_set_explicitly() -> None:
    values = {name: item.get("value") for name, item in env().items()}
    assert values["DKLB_KUBERNETES_CLUSTER_FRAMEWORK_NAME"] == "kubernetes-cluster"
    assert values["DKLB_EDGELB_HOST"] == DEFAULT_IN_CLUSTER_HOST
    assert values["DKLB_EDGELB_SCHEME"] == "http"


def run_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(["run"])
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices["run"]


def test_every_flag_and_variable_the_deployment_sets_is_one_dklb_run_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parser = run_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    variables = {"DKLB_" + f.lstrip("-").replace("-", "_").upper() for f in flags if f.startswith("--")}
    for name in env():
        assert name == "POD_NAMESPACE" or name in variables, f"{name} is no dklb run variable"
    # The arguments and the variables together parse, as the container would run them.
    for name, item in env().items():
        if "value" in item:
            monkeypatch.setenv(name, item["value"])
    monkeypatch.setenv("POD_NAMESPACE", "dklb")
    args = [a.replace("$(POD_NAMESPACE)", "dklb") for a in container()["args"]]
    parsed = cli.build_parser([args[0]]).parse_args(args)
    assert parsed.leader_elect is True and parsed.leader_elect_namespace == "dklb"
    assert parsed.http_listen == ("0.0.0.0", HTTP_PORT)
    assert parsed.database == f"{DATA_DIR}/dklb.db"
    assert parsed.kubernetes_cluster_framework_name == "kubernetes-cluster"
    assert parsed.kubeconfig is None, "in a Pod: the ServiceAccount's in-cluster config"


# ---- the admission webhook ------------------------------------------------------------------------

WEBHOOK_PORT = 8443
WEBHOOK_SECRET = "dklb-webhook-tls"


def admission_plan(monkeypatch: pytest.MonkeyPatch, *extra: str) -> admission.AdmissionPlan:
    """The Deployment's webhook flags (plus ``extra``, a component's) as `dklb run` checks them
    at start-up in the container."""
    for name, item in env().items():
        if "value" in item:
            monkeypatch.setenv(name, item["value"])
    args = [a.replace("$(POD_NAMESPACE)", NAMESPACE) for a in [*container()["args"], *extra]]
    parsed = cli.build_parser([args[0]]).parse_args(args)
    # The certificate files exist only in the Pod (the mounted Secret).
    monkeypatch.setattr(admission.os, "access", lambda path, mode: True)
    return admission.admission_plan(parsed)


def test_the_webhook_service_reaches_the_pods_admission_listener() -> None:
    service = find("Service", "dklb-webhook")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "only the API server calls it"
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 443 and port.get("protocol", "TCP") == "TCP"
    assert named_port(port["targetPort"]) == WEBHOOK_PORT
    assert f"--admission-listen=0.0.0.0:{WEBHOOK_PORT}" in container()["args"]


def test_the_deployment_serves_the_webhook_and_does_not_register_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S7 (security review): the controller cannot rewrite cluster admission: no registration
    flag, and no RBAC on webhook configurations (test_the_cluster_role_...)."""
    plan = admission_plan(monkeypatch)
    assert plan.listen == ("0.0.0.0", WEBHOOK_PORT)
    assert plan.register is False
    assert plan.service is None and plan.url is None and plan.self_signed_dir is None
    assert not [a for a in container()["args"] if "register" in a or "webhook-service" in a]
    assert not any(group == ADMISSION for group, _, _ in rule_table(find("ClusterRole", "dklb")["rules"]))


def test_the_static_webhook_configurations_are_what_dklb_would_register() -> None:
    """S7 (security review): shipped as manifests, the same objects `--register-admission-webhook`
    writes (but the caBundle, which cert-manager's CA injector or a kustomize patch fills in)."""
    from engine.admission.register import webhook_configurations

    service = find("Service", "dklb-webhook")
    ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    generated = webhook_configurations(
        ca_bundle=ca, service=(service["metadata"]["namespace"], service["metadata"]["name"], 443)
    )
    for expected in generated:
        shipped = find(expected["kind"], DEFAULT_NAME)
        for hook in expected["webhooks"]:
            del hook["clientConfig"]["caBundle"]
        assert shipped["webhooks"] == expected["webhooks"]
        assert shipped["apiVersion"] == expected["apiVersion"]
        # cert-manager injects the CA of the Certificate the recipe in webhook.yaml creates.
        assert shipped["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "dklb/dklb-webhook"}
    recipe = (DEPLOY / "webhook.yaml").read_text()
    assert "metadata: {name: dklb-webhook, namespace: dklb}" in recipe and "caBundle" in recipe


def test_the_webhook_certificate_is_the_secrets_mounted_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = admission_plan(monkeypatch)
    volumes = {v["name"]: v for v in deployment()["spec"]["template"]["spec"]["volumes"]}
    (name,) = [n for n, v in volumes.items() if "secret" in v]
    secret = volumes[name]["secret"]
    assert secret["secretName"] == WEBHOOK_SECRET
    # Group-readable for the fsGroup (the image's dklb group), nothing for others.
    assert secret["defaultMode"] == 0o440
    assert not secret.get("items"), "every key of the Secret: ca.crt, tls.crt, tls.key"
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == name]
    assert mount["readOnly"] is True
    directory = PurePosixPath(mount["mountPath"])
    # The key names of a cert-manager Certificate's Secret (and of the openssl recipe).
    assert PurePosixPath(plan.cert_file or "") == directory / "tls.crt"
    assert PurePosixPath(plan.key_file or "") == directory / "tls.key"
    assert WEBHOOK_SECRET in (DEPLOY / "webhook.yaml").read_text(), "the recipe names the Secret"


def test_the_webhook_configurations_it_would_register_call_the_service() -> None:
    from engine.admission.register import webhook_configurations

    ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    for obj, path in zip(
        webhook_configurations(ca_bundle=ca, service=(NAMESPACE, "dklb-webhook", 443)),
        ("/mutate", "/validate"),
        strict=True,
    ):
        assert obj["metadata"]["name"] == DEFAULT_NAME
        (hook,) = obj["webhooks"]
        assert hook["clientConfig"]["service"] == {
            "namespace": NAMESPACE,
            "name": "dklb-webhook",
            "port": 443,
            "path": path,
        }


def built_with_components(tmp_path: Path, *names: str) -> list[Obj]:
    """``kubectl kustomize`` of an overlay as a user writes one, outside the repository: the base
    and the named components."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(DEPLOY, tmp_path)],
                "components": [os.path.relpath(COMPONENTS / name, tmp_path) for name in names],
            }
        )
    )
    return kustomize(tmp_path, "--load-restrictor=LoadRestrictionsNone")


def kustomize(directory: Path, *options: str) -> list[Obj]:
    """The objects ``kubectl kustomize`` builds from ``directory``."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: `./dev test` installs it (apt-get install kubernetes-client)")
    command = [kubectl, "kustomize", *options, str(directory)]
    built = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(built) if doc is not None]


def test_kustomize_builds_every_object_with_the_image_it_sets(tmp_path: Path) -> None:
    objects = built_with_components(tmp_path)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == sorted(EXPECTED)
    (built_deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    entry = kustomization()["images"][0]
    image = built_deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{entry['newName']}:{entry['newTag']}"


def test_the_image_is_the_one_kustomize_sets() -> None:
    with (REPO / "pyproject.toml").open("rb") as stream:
        version = tomllib.load(stream)["project"]["version"]
    image, tag = container()["image"].rsplit(":", 1)
    (entry,) = kustomization()["images"]
    assert entry["name"] == image
    assert tag == entry["newTag"] == version


# ---- the Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, comments dropped and continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, rest = text.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation"
    return result


def dockerfile_stages() -> list[dict[str, list[str]]]:
    stages: list[dict[str, list[str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            stages.append({})
        if stages:  # the ARGs before the first FROM belong to no stage (dockerfile_args)
            stages[-1].setdefault(keyword, []).append(rest)
    return stages


def dockerfile_final_stage() -> dict[str, list[str]]:
    return dockerfile_stages()[-1]


def dockerfile_env() -> dict[str, str]:
    values: dict[str, str] = {}
    for rest in dockerfile_final_stage().get("ENV", []):
        for word in shlex.split(rest):
            key, _, value = word.partition("=")
            values[key] = value
    return values


def copy_sources(rest: str) -> list[str]:
    words = shlex.split(rest)
    options = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    if any(o.startswith("--from") for o in options):
        return []
    return paths[:-1]


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        candidates = [glob, glob.removeprefix("**/")]
        if any(fnmatch.fnmatch(path, c) for c in candidates):
            verdict = not negate
    return verdict


def dockerfile_args() -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    values: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, value = rest.partition("=")
            values[name] = value
    return values


def test_the_dockerfile_has_two_python_311_slim_stages_pinned_by_digest() -> None:
    """S11 (security review): both FROM lines name python:3.11-slim by digest, not a movable tag."""
    stages = dockerfile_stages()
    assert len(stages) == 2
    assert stages[0]["FROM"] == ["${PYTHON_IMAGE} AS build"]
    assert stages[1]["FROM"] == ["${PYTHON_IMAGE}"]
    image = dockerfile_args()["PYTHON_IMAGE"]
    name, _, digest = image.partition("@")
    assert name == "python:3.11-slim"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
    assert "docker buildx imagetools inspect python:3.11-slim" in (REPO / "Dockerfile").read_text()


def test_the_runtime_stage_has_no_pip_and_no_stand_ins() -> None:
    """S11 (security review): pip, setuptools and wheel are uninstalled after the one install,
    and the stand-ins (edgelb_local drives HAProxy) are neither copied nor installed."""
    build, final = dockerfile_stages()
    (install,) = [r for r in final["RUN"] if "pip install" in r]
    assert install.index("pip install") < install.index("pip uninstall -y setuptools wheel pip")
    assert "!  python -m pip --version" in install or "! python -m pip --version" in install
    after = install[install.index("pip uninstall") :]
    assert "pip install" not in after, "nothing is installed after pip is gone"
    assert not [r for r in final["RUN"] if r is not install and "pip" in r]
    copied = {s for stage in (build, final) for rest in stage.get("COPY", []) for s in copy_sources(rest)}
    with (REPO / "pyproject.toml").open("rb") as stream:
        packages = tomllib.load(stream)["tool"]["setuptools"]["packages"]
    for stand_in in ("edgelb_local", "localcluster", "standins"):
        assert stand_in not in copied and stand_in not in {p.split(".")[0] for p in packages}
        if stand_in != "standins":
            assert f'! python -c "import {stand_in}"' in install


def test_every_path_the_dockerfile_copies_is_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    sources = [
        s for stage in dockerfile_stages() for rest in stage.get("COPY", []) for s in copy_sources(rest)
    ]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path"
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_the_wheel_is_built_from_every_package_pyproject_lists() -> None:
    with (REPO / "pyproject.toml").open("rb") as stream:
        project = tomllib.load(stream)
    top_level = {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]}
    build = dockerfile_stages()[0]
    copied = {s for rest in build["COPY"] for s in copy_sources(rest)}
    assert top_level | {"pyproject.toml"} <= copied
    assert project["project"]["scripts"]["dklb"] == "engine.cli:main"
    assert any("pip wheel" in r for r in build["RUN"])
    # Every package of the controller is listed (one left out would be missing from the image).
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in sorted(top_level)
        for init in (REPO / top).rglob("__init__.py")
    }
    assert on_disk == set(project["tool"]["setuptools"]["packages"])


def test_the_final_stage_runs_dklb_run_as_uid_65532_with_the_database_on_the_volume() -> None:
    final = dockerfile_final_stage()
    assert final["USER"] == [f"{UID}:{UID}"]
    assert [json.loads(v) for v in final["VOLUME"]] == [[DATA_DIR]]
    assert dockerfile_env()["DKLB_DATABASE"] == f"{DATA_DIR}/dklb.db"
    assert final["EXPOSE"] == [str(HTTP_PORT)]
    assert dockerfile_env()["DKLB_HTTP_LISTEN"] == f"0.0.0.0:{HTTP_PORT}"
    assert [json.loads(v) for v in final["ENTRYPOINT"]] == [["dklb"]]
    assert [json.loads(v) for v in final["CMD"]] == [["run"]]
    assert "HEALTHCHECK" not in final, "the Deployment's probes do that"
    assert any("pip install" in r and "--no-index" in r for r in final["RUN"]), "only the built wheels"
    assert any(f"--uid {UID}" in r and DATA_DIR in r for r in final["RUN"]), "the user owns the volume"


def test_the_dockerignore_keeps_local_state_out_of_the_context() -> None:
    patterns = dockerignore_patterns()
    for path in (".git", ".venv", ".pytest_cache", ".ruff_cache", ".hypothesis", "dklb.egg-info", "dklb.db"):
        assert ignored(path, patterns), path
    assert ignored("engine/__pycache__", patterns)


# ---- the optional components ------------------------------------------------------------------------


def component(name: str) -> Obj:
    with (COMPONENTS / name / "kustomization.yaml").open(encoding="utf-8") as stream:
        doc: Obj = yaml.safe_load(stream)
    return doc


def component_objects(name: str) -> list[Obj]:
    objects: list[Obj] = []
    for resource in component(name)["resources"]:
        with (COMPONENTS / name / resource).open(encoding="utf-8") as stream:
            objects += [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    return objects


def added_args(name: str) -> list[str]:
    (patch,) = component(name)["patches"]
    assert patch["target"] == {"group": "apps", "version": "v1", "kind": "Deployment", "name": "dklb"}
    operations = yaml.safe_load(patch["patch"])
    assert {op["op"] for op in operations} == {"add"}
    assert {op["path"] for op in operations} == {"/spec/template/spec/containers/0/args/-"}
    return [op["value"] for op in operations]


@pytest.mark.parametrize(
    ("name", "role", "rules", "args"),
    [
        ("address-mode", "dklb-nodes", NODE_RULES, ["--backend-mode=address"]),
        (
            "register-webhook",
            "dklb-register-webhook",
            REGISTER_RULES,
            [
                "--register-admission-webhook",
                "--admission-webhook-service=dklb/dklb-webhook:443",
                "--admission-ca-bundle-file=/etc/dklb/webhook/ca.crt",
            ],
        ),
    ],
)
def test_each_component_grants_its_rules_to_the_service_account_and_sets_its_flags(
    name: str, role: str, rules: dict[tuple[str, str, tuple[str, ...]], set[str]], args: list[str]
) -> None:
    """S7 (security review): Nodes only for the address mode, webhook registration only for
    those who add it; each with exactly the rules it needs and the flags that use them."""
    assert component(name)["kind"] == "Component"
    objects = {(o["kind"], o["metadata"]["name"]): o for o in component_objects(name)}
    assert set(objects) == {("ClusterRole", role), ("ClusterRoleBinding", role)}
    assert rule_table(objects[("ClusterRole", role)]["rules"]) == rules
    binding = objects[("ClusterRoleBinding", role)]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dklb", "namespace": NAMESPACE}]
    assert added_args(name) == args


def test_with_the_register_component_the_deployment_registers_under_the_name_rbac_grants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = admission_plan(monkeypatch, *added_args("register-webhook"))
    assert plan.register is True
    service = find("Service", "dklb-webhook")
    assert plan.service == (service["metadata"]["namespace"], service["metadata"]["name"], 443)
    assert plan.failure_policy == "Ignore" and plan.namespace_selector is None
    assert PurePosixPath(plan.ca_bundle_file or "") == PurePosixPath("/etc/dklb/webhook/ca.crt")
    (role,) = [o for o in component_objects("register-webhook") if o["kind"] == "ClusterRole"]
    (named,) = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named["resourceNames"] == [plan.name] == [DEFAULT_NAME]
    assert run_parser().get_default("admission_webhook_name") == DEFAULT_NAME


def test_kustomize_builds_the_components_into_the_base(tmp_path: Path) -> None:
    objects = built_with_components(tmp_path, "address-mode", "register-webhook")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert names == set(EXPECTED) | {
        ("ClusterRole", "dklb-nodes"),
        ("ClusterRoleBinding", "dklb-nodes"),
        ("ClusterRole", "dklb-register-webhook"),
        ("ClusterRoleBinding", "dklb-register-webhook"),
    }
    (built_deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    args = built_deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == container()["args"] + added_args("address-mode") + added_args("register-webhook")
    parsed = cli.build_parser(["run"]).parse_args([a.replace("$(POD_NAMESPACE)", NAMESPACE) for a in args])
    assert parsed.backend_mode == "address" and parsed.register_admission_webhook is True


# ---- the NetworkPolicy, the namespace, the EdgeLB connection -----------------------------------------


def ports_of(rule: Obj) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])}


def test_the_network_policy_isolates_the_dklb_pod_both_ways() -> None:
    """S3 (security review): "every Pod in the cluster can reach both ports": now only the API
    server's range reaches 8443 and only labelled scrapers reach 9420; nothing else gets in."""
    policy = find("NetworkPolicy", "dklb")
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == deployment()["metadata"]["namespace"]
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    webhook, metrics = spec["ingress"]
    # Every ingress rule names both its peers and its port: no rule admits "anyone" or "any port".
    assert ports_of(webhook) == {("TCP", WEBHOOK_PORT)} == {("TCP", named_port("webhook"))}
    assert ports_of(metrics) == {("TCP", HTTP_PORT)} == {("TCP", named_port("http"))}
    (api_server,) = webhook["from"]
    assert set(api_server) == {"ipBlock"} and api_server["ipBlock"]["cidr"] == "192.0.2.0/24"
    (scraper,) = metrics["from"]
    label = {"dklb.dcos.io/scraper": "true"}
    assert scraper == {"namespaceSelector": {"matchLabels": label}, "podSelector": {"matchLabels": label}}
    # Egress: DNS, the API server (443/6443, also EdgeLB through Admin Router), EdgeLB (80).
    assert set().union(*(ports_of(rule) for rule in spec["egress"])) == {
        ("UDP", 53),
        ("TCP", 53),
        ("TCP", 443),
        ("TCP", 6443),
        ("TCP", 80),
    }
    text = (DEPLOY / "networkpolicy.yaml").read_text()
    for documented in ("/spec/ingress/0/from/0/ipBlock/cidr", "kubectl label namespace", "RFC 5737"):
        assert documented in text


def test_the_namespace_enforces_pod_security_restricted() -> None:
    """S11 (security review): the restricted profile, enforced and also audited and warned."""
    labels = find("Namespace", NAMESPACE)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    # What `restricted` demands of the Pod, which the Deployment already meets.
    pod = deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container()["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    volumes = pod["volumes"]
    assert all(set(v) - {"name"} <= {"persistentVolumeClaim", "emptyDir", "secret"} for v in volumes)


def test_the_in_cluster_default_is_plain_http_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """S6 (security review): no credential goes out over the shipped plain-HTTP default, and the
    Deployment says that credentials need https."""
    names = set(env())
    credentials = {"DKLB_EDGELB_BEARER_TOKEN", "DKLB_EDGELB_BEARER_TOKEN_FILE", "DKLB_EDGELB_TOKEN"}
    credentials |= {"DKLB_EDGELB_SERVICE_ACCOUNT_SECRET_FILE", "DKLB_EDGELB_ALLOW_INSECURE_HTTP"}
    assert not names & credentials
    assert not [a for a in container()["args"] if "token" in a or "service-account" in a or "insecure" in a]
    text = (DEPLOY / "deployment.yaml").read_text()
    assert "plain HTTP and WITHOUT" in text and "DKLB_EDGELB_ALLOW_INSECURE_HTTP" in text
    for name, item in env().items():
        if "value" in item:
            monkeypatch.setenv(name, item["value"])
    args = [a.replace("$(POD_NAMESPACE)", NAMESPACE) for a in container()["args"]]
    chosen = options.edgelb_options(cli.build_parser(["run"]).parse_args(args))
    assert chosen is not None and chosen.scheme == "http" and chosen.allow_insecure_http is False


def test_the_kustomization_says_how_to_pin_the_image_by_digest() -> None:
    """S11 (security review): the image is a tag here (no digest exists before you push it); the
    kustomization says how to pin yours."""
    text = (DEPLOY / "kustomization.yaml").read_text()
    assert "kustomize edit set image dklb=registry.example.com/dklb@sha256:" in text


# ---- the high-availability component ---------------------------------------------------------------


def test_deploy_and_deploy_ha_are_the_base_and_the_base_with_the_ha_component(tmp_path: Path) -> None:
    """What a user applies, ``kubectl apply -k deploy/`` or ``-k deploy/ha/``, as shipped (no
    load restrictor: every path stays inside deploy/)."""
    assert kustomize(REPO / "deploy") == kustomize(DEPLOY)
    assert kustomize(REPO / "deploy" / "ha") == built_with_components(tmp_path, "ha")


def test_the_ha_component_runs_two_replicas_on_two_nodes_without_the_volume(tmp_path: Path) -> None:
    assert component("ha")["kind"] == "Component"
    objects = {(o["kind"], o["metadata"]["name"]): o for o in built_with_components(tmp_path, "ha")}
    assert set(objects) == (set(EXPECTED) - {("PersistentVolumeClaim", "dklb-data")}) | {
        ("PodDisruptionBudget", "dklb"),
        ("NetworkPolicy", "dklb-database"),
    }
    spec = objects[("Deployment", "dklb")]["spec"]
    labels = spec["selector"]["matchLabels"]
    assert spec["replicas"] == 2
    # Old before new: a surge Pod would find no node free of a replica on a two-node cluster.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    pod = spec["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term == {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": labels}}
    budget = objects[("PodDisruptionBudget", "dklb")]
    assert budget["apiVersion"] == "policy/v1" and budget["metadata"]["namespace"] == NAMESPACE
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": labels}}
    # Nothing left of the SQLite volume.
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    (only,) = pod["containers"]
    assert DATA_DIR not in {m["mountPath"] for m in only["volumeMounts"]}


def test_the_ha_component_reads_the_dsn_and_the_ca_from_mounted_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in built_with_components(tmp_path, "ha")}
    pod = objects[("Deployment", "dklb")]["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    variables = {item["name"]: item for item in only["env"]}
    assert "DKLB_DATABASE" not in variables and not any("postgresql" in str(v) for v in variables.values())
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in only["volumeMounts"]}
    assert volumes["database"]["secret"] == {"secretName": "dklb-database", "defaultMode": 0o440}
    assert volumes["database-ca"]["configMap"] == {"name": "dklb-database-ca"}
    assert mounts["database"]["readOnly"] is True and mounts["database-ca"]["readOnly"] is True
    url_file = PurePosixPath(variables["DKLB_DATABASE_URL_FILE"]["value"])
    ca_file = PurePosixPath(variables["DKLB_DATABASE_CA_FILE"]["value"])
    assert url_file == PurePosixPath(mounts["database"]["mountPath"]) / "url"
    assert ca_file == PurePosixPath(mounts["database-ca"]["mountPath"]) / "ca.crt"
    # As `dklb run` parses them in the container.
    for name, item in variables.items():
        if "value" in item:
            monkeypatch.setenv(name, item["value"])
    monkeypatch.setenv("POD_NAMESPACE", NAMESPACE)
    args = [a.replace("$(POD_NAMESPACE)", NAMESPACE) for a in only["args"]]
    parsed = cli.build_parser([args[0]]).parse_args(args)
    assert parsed.leader_elect is True and parsed.database is None
    assert (parsed.database_url_file, parsed.database_ca_file) == (str(url_file), str(ca_file))
    # PostgreSQL's port is open on the way out, for the dklb Pods.
    policy = objects[("NetworkPolicy", "dklb-database")]["spec"]
    assert policy["podSelector"] == {
        "matchLabels": objects[("Deployment", "dklb")]["spec"]["selector"]["matchLabels"]
    }
    assert policy["policyTypes"] == ["Egress"] and [ports_of(rule) for rule in policy["egress"]] == [
        {("TCP", 5432)}
    ]
